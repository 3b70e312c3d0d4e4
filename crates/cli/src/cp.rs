//! `hypedeck cp`: files between the local filesystem and a running instance, over the API's cp
//! WebSocket (upstream's protocol; see `crates/api/src/routes/cp.rs`). Paths are upstream's:
//! `<instance>:/path` is in the instance, anything else (and anything starting with `/`, `./`,
//! `../` or `~`) is local; `-` is a tar stream on stdin or stdout. `src/.` copies a directory's
//! contents rather than the directory.
//!
//! What comes out of an instance is the guest's to choose, and the guest may be hostile: every
//! entry's path must stay below the destination (no absolute paths, no `..`), and nothing is
//! written through a symbolic link the copy itself made, or any link below the destination.
//! Files land with their permission bits only (no setuid, setgid or sticky bits).

use std::io::{Read as _, Write as _};
use std::os::unix::fs::{OpenOptionsExt as _, PermissionsExt as _};
use std::path::{Component, Path, PathBuf};

use futures_util::{SinkExt as _, StreamExt as _};
use serde::Deserialize;
use serde_json::{Value, json};
use tokio_tungstenite::tungstenite::Message;

use crate::client::{Api, CliError, instance_path};
use crate::exec::connect;

/// `cp`'s flags.
#[derive(Debug, Clone, Copy, Default)]
pub struct CpOptions {
    /// `-a`: keep owners (uid/gid).
    pub archive: bool,
    /// `-L`: follow symbolic links in the source.
    pub follow_links: bool,
    /// `-q`: no progress lines.
    pub quiet: bool,
}

/// Splits a `cp` argument into its instance (if it names one) and path, by upstream's rules.
pub fn parse_cp_path(arg: &str) -> (Option<&str>, &str) {
    let local =
        ["/", "./", "../", "~"].iter().any(|p| arg.starts_with(p)) || arg == "." || arg == "..";
    if !local
        && let Some((instance, path)) = arg.split_once(':')
        && !instance.is_empty()
        && !instance.contains(['/', '\\'])
    {
        return (Some(instance), path);
    }
    (None, arg)
}

/// Runs `hypedeck cp <src> <dst>`.
pub async fn cp(api: &Api, src: &str, dst: &str, options: CpOptions) -> Result<(), CliError> {
    match (parse_cp_path(src), parse_cp_path(dst)) {
        ((Some(_), _), (Some(_), _)) => Err(CliError::Usage(
            "cannot copy between two instances; one path must be local".into(),
        )),
        ((None, _), (None, _)) => Err(CliError::Usage(
            "at least one path must reference an instance (use instance:/path format)".into(),
        )),
        ((Some(instance), path), (None, local)) => {
            let path = absolute(path)?;
            if local == "-" {
                copy_out_as_tar(api, instance, &path, options).await
            } else {
                copy_out(api, instance, &path, local, options).await
            }
        }
        ((None, local), (Some(instance), path)) => {
            let path = absolute(path)?;
            if local == "-" {
                copy_in_from_tar(api, instance, &path, options).await
            } else {
                copy_in(api, instance, local, &path, options).await
            }
        }
    }
}

fn absolute(path: &str) -> Result<String, CliError> {
    if path.starts_with('/') {
        Ok(path.to_string())
    } else {
        Err(CliError::Usage(format!(
            "the instance path must be absolute (instance:/path), not {path:?}"
        )))
    }
}

/// `PathInfo` from `GET /instances/{id}/stat`.
#[derive(Debug, Default, Deserialize)]
struct PathInfo {
    #[serde(default)]
    exists: bool,
    #[serde(default)]
    is_dir: bool,
    #[serde(default)]
    is_file: bool,
    #[serde(default)]
    error: Option<String>,
}

async fn stat(api: &Api, instance: &str, path: &str, follow: bool) -> Result<PathInfo, CliError> {
    let follow = if follow { "true" } else { "false" };
    let info: PathInfo = api
        .get_query(
            &format!("{}/stat", instance_path(instance)),
            &[("path", path), ("follow_links", follow)],
        )
        .await?
        .json()
        .await
        .map_err(|e| CliError::Other(format!("the stat answer is not a PathInfo: {e}")))?;
    match info.error {
        Some(e) => Err(CliError::Other(format!("stat path {path}: {e}"))),
        None => Ok(info),
    }
}

fn guest_join(dir: &str, name: &str) -> String {
    format!("{}/{name}", dir.trim_end_matches('/'))
}

fn io_error(what: &str, path: &Path, e: std::io::Error) -> CliError {
    CliError::Other(format!("{what} {}: {e}", path.display()))
}

/// One local entry to put: where it goes and what it is.
enum Item {
    Dir {
        mode: u32,
        uid: u32,
        gid: u32,
    },
    File {
        local: PathBuf,
        mode: u32,
        size: u64,
        uid: u32,
        gid: u32,
    },
}

// ---- into the instance ----

async fn copy_in(
    api: &Api,
    instance: &str,
    src: &str,
    dst: &str,
    options: CpOptions,
) -> Result<(), CliError> {
    let contents_only = src.ends_with("/.");
    let src_path = PathBuf::from(src.strip_suffix("/.").unwrap_or(src));
    let meta =
        std::fs::metadata(&src_path).map_err(|e| io_error("cannot stat source", &src_path, e))?;
    let target = stat(api, instance, dst, true).await?;
    let base = src_path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let resolved = if !meta.is_dir() {
        if !target.exists && dst.ends_with('/') {
            return Err(CliError::Other(format!(
                "destination directory {dst} does not exist"
            )));
        }
        if target.exists && target.is_dir {
            guest_join(dst, &base)
        } else {
            dst.to_string()
        }
    } else if target.exists && target.is_file {
        return Err(CliError::Other("cannot copy a directory to a file".into()));
    } else if !target.exists || contents_only {
        dst.to_string()
    } else {
        guest_join(dst, &base)
    };
    let mut items = Vec::new();
    collect(
        &src_path,
        &resolved,
        &meta,
        options,
        &mut items,
        contents_only,
    )?;
    let single_file = !meta.is_dir();
    for (guest, item) in items {
        let written = put(api, instance, &guest, &item).await?;
        if !options.quiet {
            if single_file {
                println!("Copied {} -> {guest} ({written} bytes)", src_path.display());
            } else if matches!(item, Item::File { .. }) {
                println!("Copied {guest}");
            }
        }
    }
    Ok(())
}

fn owner(meta: &std::fs::Metadata, options: CpOptions) -> (u32, u32) {
    use std::os::unix::fs::MetadataExt as _;
    if options.archive {
        (meta.uid(), meta.gid())
    } else {
        (0, 0)
    }
}

/// The local tree at `local` as puts to `guest` (directories before what is in them).
fn collect(
    local: &Path,
    guest: &str,
    meta: &std::fs::Metadata,
    options: CpOptions,
    out: &mut Vec<(String, Item)>,
    contents_only: bool,
) -> Result<(), CliError> {
    let (uid, gid) = owner(meta, options);
    let mode = meta.permissions().mode() & 0o777;
    if !meta.is_dir() {
        out.push((
            guest.to_string(),
            Item::File {
                local: local.to_path_buf(),
                mode,
                size: meta.len(),
                uid,
                gid,
            },
        ));
        return Ok(());
    }
    if !contents_only {
        out.push((guest.to_string(), Item::Dir { mode, uid, gid }));
    }
    let mut children: Vec<_> = std::fs::read_dir(local)
        .map_err(|e| io_error("read directory", local, e))?
        .collect::<Result<_, _>>()
        .map_err(|e| io_error("read directory", local, e))?;
    children.sort_by_key(std::fs::DirEntry::file_name);
    for child in children {
        let path = child.path();
        let link = child
            .file_type()
            .map_err(|e| io_error("stat", &path, e))?
            .is_symlink();
        if link && !options.follow_links {
            let target = std::fs::read_link(&path).unwrap_or_default();
            eprintln!(
                "Warning: skipping symlink {} -> {} (-L follows links)",
                path.display(),
                target.display()
            );
            continue;
        }
        let meta = std::fs::metadata(&path).map_err(|e| io_error("stat", &path, e))?;
        let name = child.file_name().to_string_lossy().into_owned();
        collect(&path, &guest_join(guest, &name), &meta, options, out, false)?;
    }
    Ok(())
}

type Socket =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

/// Opens a cp WebSocket and sends its request.
async fn open(api: &Api, instance: &str, request: Value) -> Result<Socket, CliError> {
    let mut socket = connect(api, instance, "cp").await?;
    socket
        .send(Message::text(request.to_string()))
        .await
        .map_err(|e| CliError::Unreachable(format!("cp: {e}")))?;
    Ok(socket)
}

/// Sends one put's bytes (none for a directory) and reads its result.
async fn put_with(
    api: &Api,
    instance: &str,
    request: Value,
    mut data: impl FnMut(&mut [u8]) -> std::io::Result<usize>,
) -> Result<u64, CliError> {
    let mut socket = open(api, instance, request).await?;
    let broken = |e| CliError::Unreachable(format!("cp: {e}"));
    let mut buf = vec![0u8; 32 * 1024];
    loop {
        let n = data(&mut buf).map_err(|e| CliError::Other(format!("read: {e}")))?;
        if n == 0 {
            break;
        }
        socket
            .send(Message::binary(buf[..n].to_vec()))
            .await
            .map_err(broken)?;
    }
    socket
        .send(Message::text(json!({"type": "end"}).to_string()))
        .await
        .map_err(broken)?;
    while let Some(message) = socket.next().await {
        let Message::Text(text) = message.map_err(broken)? else {
            continue;
        };
        let answer: Value = serde_json::from_str(text.as_str()).unwrap_or(Value::Null);
        let field = |k: &str| {
            answer
                .get(k)
                .and_then(Value::as_str)
                .unwrap_or("")
                .to_string()
        };
        match answer.get("type").and_then(Value::as_str) {
            Some("result") if answer["success"] == true => {
                return Ok(answer["bytes_written"].as_u64().unwrap_or(0));
            }
            Some("result") => {
                return Err(CliError::Other(format!("copy failed: {}", field("error"))));
            }
            Some("error") => {
                return Err(CliError::Other(format!(
                    "copy failed: {}",
                    field("message")
                )));
            }
            _ => {}
        }
    }
    Err(CliError::Unreachable(
        "the cp session ended without a result".into(),
    ))
}

async fn put(api: &Api, instance: &str, guest: &str, item: &Item) -> Result<u64, CliError> {
    match item {
        Item::Dir { mode, uid, gid } => {
            let request = json!({"direction": "to", "guest_path": guest, "is_dir": true, "mode": mode, "uid": uid, "gid": gid});
            put_with(api, instance, request, |_| Ok(0)).await
        }
        Item::File {
            local,
            mode,
            size,
            uid,
            gid,
        } => {
            let mut file = std::fs::File::open(local).map_err(|e| io_error("open", local, e))?;
            let request = json!({"direction": "to", "guest_path": guest, "mode": mode, "uid": uid, "gid": gid});
            let written = put_with(api, instance, request, |buf| file.read(buf)).await?;
            if written != *size {
                return Err(CliError::Other(format!(
                    "{}: {written} of {size} bytes written (the file changed while copying?)",
                    local.display()
                )));
            }
            Ok(written)
        }
    }
}

async fn copy_in_from_tar(
    api: &Api,
    instance: &str,
    dst: &str,
    options: CpOptions,
) -> Result<(), CliError> {
    // The tar stream is read in order; each entry is one put.
    let mut archive = tar::Archive::new(std::io::stdin().lock());
    let entries = archive
        .entries()
        .map_err(|e| CliError::Other(format!("read tar: {e}")))?;
    for entry in entries {
        let mut entry = entry.map_err(|e| CliError::Other(format!("read tar header: {e}")))?;
        let name = entry
            .path()
            .map_err(|e| CliError::Other(format!("read tar header: {e}")))?
            .into_owned();
        let relative = below(&name.to_string_lossy())?;
        let guest = if relative.as_os_str().is_empty() {
            dst.to_string()
        } else {
            guest_join(dst, &relative.to_string_lossy())
        };
        let header = entry.header();
        let mode = header.mode().unwrap_or(0o644) & 0o777;
        let (uid, gid) = if options.archive {
            (
                u32::try_from(header.uid().unwrap_or(0)).unwrap_or(0),
                u32::try_from(header.gid().unwrap_or(0)).unwrap_or(0),
            )
        } else {
            (0, 0)
        };
        match header.entry_type() {
            tar::EntryType::Directory => {
                let request = json!({"direction": "to", "guest_path": guest, "is_dir": true, "mode": mode, "uid": uid, "gid": gid});
                put_with(api, instance, request, |_| Ok(0)).await?;
            }
            tar::EntryType::Regular => {
                let request = json!({"direction": "to", "guest_path": guest, "mode": mode, "uid": uid, "gid": gid});
                put_with(api, instance, request, |buf| entry.read(buf)).await?;
            }
            tar::EntryType::Symlink => {
                let target = entry
                    .link_name()
                    .ok()
                    .flatten()
                    .map(|l| l.display().to_string())
                    .unwrap_or_default();
                eprintln!("Warning: skipping symlink {} -> {target}", name.display());
            }
            other => eprintln!("Warning: skipping {} ({other:?})", name.display()),
        }
    }
    Ok(())
}

// ---- out of the instance ----

/// An entry's header, as the server sends it.
#[derive(Debug, Deserialize)]
struct Header {
    path: String,
    mode: u32,
    is_dir: bool,
    #[serde(default)]
    is_symlink: bool,
    #[serde(default)]
    link_target: String,
    size: u64,
    mtime: i64,
    #[serde(default)]
    uid: u32,
    #[serde(default)]
    gid: u32,
}

/// What the server sends on a get.
enum Frame {
    Header(Header),
    Data(Vec<u8>),
    End { last: bool },
}

/// Reads the next frame of a get; the server's `error` is the copy's.
async fn frame(socket: &mut Socket) -> Result<Option<Frame>, CliError> {
    while let Some(message) = socket.next().await {
        match message.map_err(|e| CliError::Unreachable(format!("cp: {e}")))? {
            Message::Binary(bytes) => return Ok(Some(Frame::Data(bytes.to_vec()))),
            Message::Text(text) => {
                let value: Value = serde_json::from_str(text.as_str())
                    .map_err(|e| CliError::Other(format!("cp: a message is not JSON: {e}")))?;
                match value.get("type").and_then(Value::as_str) {
                    Some("header") => {
                        let header = serde_json::from_value(value)
                            .map_err(|e| CliError::Other(format!("cp: a bad header: {e}")))?;
                        return Ok(Some(Frame::Header(header)));
                    }
                    Some("end") => {
                        return Ok(Some(Frame::End {
                            last: value["final"] == true,
                        }));
                    }
                    Some("error") => {
                        let message = value["message"].as_str().unwrap_or("unknown error");
                        return Err(match value["path"].as_str().filter(|p| !p.is_empty()) {
                            Some(path) => CliError::Other(format!(
                                "copy from guest failed: {path}: {message}"
                            )),
                            None => CliError::Other(format!("copy from guest failed: {message}")),
                        });
                    }
                    _ => {}
                }
            }
            Message::Close(_) => return Ok(None),
            _ => {}
        }
    }
    Ok(None)
}

/// Opens a get of `src` (upstream's `from` direction).
async fn open_get(
    api: &Api,
    instance: &str,
    src: &str,
    options: CpOptions,
) -> Result<Socket, CliError> {
    let request =
        json!({"direction": "from", "guest_path": src, "follow_links": options.follow_links});
    open(api, instance, request).await
}

/// The next frame of a get: the stream ending before its last entry is an error.
async fn next_frame(socket: &mut Socket) -> Result<Frame, CliError> {
    frame(socket)
        .await?
        .ok_or_else(|| CliError::Unreachable("the copy ended before its last entry".into()))
}

/// `relative` as a path with normal components only (a guest's entry path is checked before
/// anything is written: no absolute path, no `..`, nothing empty).
fn below(relative: &str) -> Result<PathBuf, CliError> {
    let mut out = PathBuf::new();
    for component in Path::new(relative).components() {
        match component {
            Component::Normal(c) => out.push(c),
            Component::CurDir => {}
            _ => {
                return Err(CliError::Other(format!(
                    "refusing the entry {relative:?}: it would land outside the destination"
                )));
            }
        }
    }
    Ok(out)
}

/// Makes `relative`'s parent directories below `root`, each a real directory: never through a
/// symbolic link (one the guest sent, say) or a file. Returns the entry's full path.
fn prepare(root: &Path, relative: &Path) -> Result<PathBuf, CliError> {
    let mut at = root.to_path_buf();
    let components: Vec<_> = relative.components().collect();
    let Some((last, parents)) = components.split_last() else {
        return Ok(at);
    };
    for component in parents {
        at.push(component);
        match std::fs::symlink_metadata(&at) {
            Ok(m) if m.is_dir() => {}
            Ok(_) => {
                return Err(CliError::Other(format!(
                    "refusing to write below {}: it is not a directory (a link from the guest?)",
                    at.display()
                )));
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                std::fs::create_dir(&at).map_err(|e| io_error("create directory", &at, e))?;
            }
            Err(e) => return Err(io_error("stat", &at, e)),
        }
    }
    at.push(last);
    Ok(at)
}

/// An entry being written.
struct Open {
    path: PathBuf,
    file: Option<std::fs::File>,
    header: Header,
    received: u64,
}

async fn copy_out(
    api: &Api,
    instance: &str,
    src: &str,
    dst: &str,
    options: CpOptions,
) -> Result<(), CliError> {
    let contents_only = src.ends_with("/.");
    let src = src.strip_suffix("/.").unwrap_or(src);
    let source = stat(api, instance, src, options.follow_links).await?;
    if !source.exists {
        return Err(CliError::Other(format!(
            "source path {src} does not exist in guest"
        )));
    }
    let dst_meta = std::fs::metadata(dst).ok();
    let dst_is_dir = dst_meta.as_ref().is_some_and(std::fs::Metadata::is_dir);
    let base = Path::new(src)
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let resolved = if !source.is_dir {
        if dst_meta.is_none() && (dst.ends_with('/')) {
            return Err(CliError::Other(format!(
                "destination directory {dst} does not exist"
            )));
        }
        if dst_is_dir {
            Path::new(dst).join(&base)
        } else {
            PathBuf::from(dst)
        }
    } else if dst_meta.is_some() && !dst_is_dir {
        return Err(CliError::Other("cannot copy a directory to a file".into()));
    } else if dst_meta.is_none() || contents_only {
        PathBuf::from(dst)
    } else {
        Path::new(dst).join(&base)
    };
    let mut socket = open_get(api, instance, src, options).await?;
    let (mut files, mut bytes) = (0u64, 0u64);
    let mut current: Option<Open> = None;
    loop {
        match next_frame(&mut socket).await? {
            Frame::Header(header) => {
                if current.is_some() {
                    return Err(CliError::Other(
                        "cp: a header before the last entry's end".into(),
                    ));
                }
                // The first component is the source's own name: the destination stands for it.
                let relative = below(&header.path)?;
                let inner: PathBuf = relative.components().skip(1).collect();
                if !source.is_dir && !inner.as_os_str().is_empty() {
                    return Err(CliError::Other(format!(
                        "refusing the entry {:?} of a single file",
                        header.path
                    )));
                }
                let path = prepare(&resolved, &inner)?;
                current = Some(begin(path, header, options)?);
            }
            Frame::Data(data) => {
                let Some(open) = current.as_mut() else {
                    return Err(CliError::Other("cp: data before a header".into()));
                };
                let Some(file) = open.file.as_mut() else {
                    return Err(CliError::Other(format!(
                        "cp: data for {}, which is not a file",
                        open.path.display()
                    )));
                };
                open.received += data.len() as u64;
                if open.received > open.header.size {
                    return Err(CliError::Other(format!(
                        "{}: more bytes than the header said",
                        open.path.display()
                    )));
                }
                file.write_all(&data)
                    .map_err(|e| io_error("write", &open.path, e))?;
            }
            Frame::End { last } => {
                let Some(open) = current.take() else {
                    return Err(CliError::Other("cp: an end before a header".into()));
                };
                if open.file.is_some() {
                    files += 1;
                    bytes += open.received;
                }
                finish(open, options)?;
                if last {
                    break;
                }
            }
        }
    }
    if !options.quiet {
        println!(
            "Copied {src} -> {} ({files} files, {bytes} bytes)",
            resolved.display()
        );
    }
    Ok(())
}

/// Creates an entry's directory, link or (empty, open) file at `path`.
fn begin(path: PathBuf, header: Header, options: CpOptions) -> Result<Open, CliError> {
    let existing = std::fs::symlink_metadata(&path).ok();
    let mut file = None;
    if header.is_dir {
        match existing {
            Some(m) if m.is_dir() => {}
            Some(_) => {
                return Err(CliError::Other(format!(
                    "cannot make directory {}: something else is there",
                    path.display()
                )));
            }
            None => {
                std::fs::create_dir(&path).map_err(|e| io_error("create directory", &path, e))?
            }
        }
    } else {
        if existing.as_ref().is_some_and(std::fs::Metadata::is_dir) {
            return Err(CliError::Other(format!(
                "cannot copy file: {} is a directory",
                path.display()
            )));
        }
        if existing
            .as_ref()
            .is_some_and(|m| m.file_type().is_symlink())
            || (header.is_symlink && existing.is_some())
        {
            // Replaced, never written through.
            std::fs::remove_file(&path).map_err(|e| io_error("replace", &path, e))?;
        }
        if header.is_symlink {
            std::os::unix::fs::symlink(&header.link_target, &path)
                .map_err(|e| io_error("create link", &path, e))?;
        } else {
            let opened = std::fs::OpenOptions::new()
                .write(true)
                .create(true)
                .truncate(true)
                .mode(0o600)
                .custom_flags(rustix::fs::OFlags::NOFOLLOW.bits() as i32)
                .open(&path)
                .map_err(|e| io_error("create", &path, e))?;
            file = Some(opened);
        }
    }
    let _ = options;
    Ok(Open {
        path,
        file,
        header,
        received: 0,
    })
}

/// Completes an entry: its size checked, then mode, times and (with `-a`) owner.
fn finish(open: Open, options: CpOptions) -> Result<(), CliError> {
    let Open {
        path,
        file,
        header,
        received,
    } = open;
    if header.is_symlink {
        return Ok(());
    }
    if let Some(file) = &file {
        if received != header.size {
            return Err(CliError::Other(format!(
                "{}: expected {} bytes, got {received}",
                path.display(),
                header.size
            )));
        }
        let time = std::time::UNIX_EPOCH
            + std::time::Duration::from_secs(u64::try_from(header.mtime).unwrap_or(0));
        let _ = file.set_modified(time);
    }
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(header.mode & 0o777))
        .map_err(|e| io_error("set the mode of", &path, e))?;
    if options.archive {
        // Only root may give files away; as anyone else the owner stays the user.
        let _ = std::os::unix::fs::lchown(&path, Some(header.uid), Some(header.gid));
    }
    Ok(())
}

async fn copy_out_as_tar(
    api: &Api,
    instance: &str,
    src: &str,
    options: CpOptions,
) -> Result<(), CliError> {
    let mut socket = open_get(api, instance, src, options).await?;
    let mut out = tar::Builder::new(std::io::stdout().lock());
    let mut current: Option<(Header, Vec<u8>)> = None;
    loop {
        match next_frame(&mut socket).await? {
            Frame::Header(header) => {
                below(&header.path)?;
                current = Some((header, Vec::new()));
            }
            Frame::Data(data) => {
                if let Some((header, buf)) = current.as_mut() {
                    if buf.len() as u64 + data.len() as u64 > header.size {
                        return Err(CliError::Other(format!(
                            "{}: more bytes than the header said",
                            header.path
                        )));
                    }
                    buf.extend_from_slice(&data);
                }
            }
            Frame::End { last } => {
                if let Some((header, data)) = current.take() {
                    append(&mut out, &header, &data, options)?;
                }
                if last {
                    break;
                }
            }
        }
    }
    out.into_inner()
        .and_then(|mut w| w.flush())
        .map_err(|e| CliError::Other(format!("write the tar stream: {e}")))
}

fn append(
    out: &mut tar::Builder<std::io::StdoutLock<'static>>,
    header: &Header,
    data: &[u8],
    options: CpOptions,
) -> Result<(), CliError> {
    let mut entry = tar::Header::new_gnu();
    entry.set_mode(header.mode & 0o777);
    entry.set_mtime(u64::try_from(header.mtime).unwrap_or(0));
    if options.archive {
        entry.set_uid(u64::from(header.uid));
        entry.set_gid(u64::from(header.gid));
    }
    let failed = |e: std::io::Error| CliError::Other(format!("write the tar stream: {e}"));
    if header.is_dir {
        entry.set_entry_type(tar::EntryType::Directory);
        entry.set_size(0);
        out.append_data(&mut entry, format!("{}/", header.path), std::io::empty())
            .map_err(failed)
    } else if header.is_symlink {
        entry.set_entry_type(tar::EntryType::Symlink);
        entry.set_size(0);
        out.append_link(&mut entry, &header.path, &header.link_target)
            .map_err(failed)
    } else {
        if data.len() as u64 != header.size {
            return Err(CliError::Other(format!(
                "{}: expected {} bytes, got {}",
                header.path,
                header.size,
                data.len()
            )));
        }
        entry.set_entry_type(tar::EntryType::Regular);
        entry.set_size(header.size);
        out.append_data(&mut entry, &header.path, data)
            .map_err(failed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_are_upstreams() {
        assert_eq!(parse_cp_path("box:/etc/hosts"), (Some("box"), "/etc/hosts"));
        assert_eq!(parse_cp_path("./a:b"), (None, "./a:b"));
        assert_eq!(parse_cp_path("/tmp/x"), (None, "/tmp/x"));
        assert_eq!(parse_cp_path("dir/a:b"), (None, "dir/a:b"));
        assert_eq!(parse_cp_path("file.txt"), (None, "file.txt"));
        assert_eq!(parse_cp_path("-"), (None, "-"));
        assert_eq!(parse_cp_path(":x"), (None, ":x"));
    }

    #[test]
    fn a_guests_entry_must_stay_below_the_destination() {
        assert_eq!(below("d/a/b").unwrap(), PathBuf::from("d/a/b"));
        assert_eq!(below("./d").unwrap(), PathBuf::from("d"));
        for bad in ["../x", "d/../../x", "/etc/passwd", "d/.."] {
            assert!(below(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn nothing_is_written_through_a_link() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("out");
        std::fs::create_dir(&root).unwrap();
        let outside = dir.path().join("outside");
        std::fs::create_dir(&outside).unwrap();
        std::os::unix::fs::symlink(&outside, root.join("link")).unwrap();
        let err = prepare(&root, Path::new("link/pwned")).unwrap_err();
        assert!(err.to_string().contains("not a directory"), "{err}");
        // A link where a file goes is replaced, not followed.
        std::fs::write(outside.join("target"), "keep").unwrap();
        std::os::unix::fs::symlink(outside.join("target"), root.join("file")).unwrap();
        let header = Header {
            path: "d/file".into(),
            mode: 0o4755,
            is_dir: false,
            is_symlink: false,
            link_target: String::new(),
            size: 2,
            mtime: 0,
            uid: 0,
            gid: 0,
        };
        let mut open = begin(
            prepare(&root, Path::new("file")).unwrap(),
            header,
            CpOptions::default(),
        )
        .unwrap();
        open.file.as_mut().unwrap().write_all(b"hi").unwrap();
        open.received = 2;
        finish(open, CpOptions::default()).unwrap();
        assert_eq!(
            std::fs::read_to_string(outside.join("target")).unwrap(),
            "keep"
        );
        assert_eq!(std::fs::read_to_string(root.join("file")).unwrap(), "hi");
        let mode = std::fs::metadata(root.join("file"))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o7777, 0o755, "no setuid from a guest");
    }
}
