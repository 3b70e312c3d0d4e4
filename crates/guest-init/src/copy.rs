//! Files in and out of the guest for `cp` (the agent's `Put*` and `Get*` frames; upstream's
//! `CopyToGuest` and `CopyFromGuest`).
//!
//! A put writes one file or makes one directory: `PutOpen`, the file's bytes as `PutData`,
//! `PutEnd`, answered by one `PutResult`. It is handled on the link's reader thread (a write to
//! a local file is quick, and the host's frames come in order).
//!
//! A get streams a path, and for a directory everything under it, from a thread of its own:
//! per entry a `GetHeader`, its bytes as `GetData`, and a `GetEnd` (marked final on the last
//! entry); then `GetDone`. The first entry that cannot be read is a `GetError` and ends the get.
//! The thread keeps at most [`GET_WINDOW`] bytes beyond the host's last `GetAck` in flight, so a
//! slow client slows the reads, not the host's memory. Paths are the guest's own: the agent runs
//! chrooted into the instance's root.

use std::collections::{HashMap, HashSet};
use std::fs::File;
use std::io::{Read, Write};
use std::os::unix::fs::{MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Condvar, Mutex};

use hypedeck_guest_init::agent_proto::{
    CopyError, CopyHeader, GET_WINDOW, GetRequest, Kind, PutRequest, PutResult,
};

use crate::agent::Link;

/// A directory walk goes no deeper than this (a loop of followed links ends here too).
const MAX_DEPTH: usize = 128;
/// Bytes per `GetData` frame.
const CHUNK: usize = 64 * 1024;

/// A put in progress.
struct Put {
    request: PutRequest,
    file: Option<File>,
    written: u64,
    /// The first thing that went wrong: answered at `PutEnd`, and later bytes are dropped.
    error: Option<String>,
}

/// How far the host has read a get, and whether it still wants it.
#[derive(Default)]
struct Flow {
    state: Mutex<(u64, bool)>,
    changed: Condvar,
}

impl Flow {
    /// Waits until `sent` is within the window of the host's acknowledgement; false once the
    /// host cancelled.
    fn admit(&self, sent: u64) -> bool {
        let mut state = self.state.lock().unwrap_or_else(|e| e.into_inner());
        while !state.1 && sent.saturating_sub(state.0) > GET_WINDOW {
            let (next, timeout) = self
                .changed
                .wait_timeout(state, std::time::Duration::from_secs(60))
                .unwrap_or_else(|e| e.into_inner());
            state = next;
            if timeout.timed_out() && sent.saturating_sub(state.0) > GET_WINDOW {
                // The host stopped reading for a minute: give up.
                state.1 = true;
            }
        }
        !state.1
    }

    fn update(&self, acked: Option<u64>, cancel: bool) {
        let mut state = self.state.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(acked) = acked {
            state.0 = state.0.max(acked);
        }
        state.1 |= cancel;
        self.changed.notify_all();
    }
}

/// The link's puts and gets.
#[derive(Default)]
pub(crate) struct Copies {
    puts: Mutex<HashMap<u32, Put>>,
    gets: Mutex<HashMap<u32, Arc<Flow>>>,
}

impl Copies {
    /// Handles a copy frame; false when `kind` is not one.
    pub(crate) fn handle(
        self: &Arc<Self>,
        kind: Kind,
        session: u32,
        payload: &[u8],
        link: &Link,
    ) -> bool {
        match kind {
            Kind::PutOpen => {
                let put = match serde_json::from_slice::<PutRequest>(payload) {
                    Ok(request) => open_put(request),
                    Err(e) => Put {
                        request: PutRequest::default(),
                        file: None,
                        written: 0,
                        error: Some(format!("bad put request: {e}")),
                    },
                };
                self.puts_lock().insert(session, put);
            }
            Kind::PutData => {
                if let Some(put) = self.puts_lock().get_mut(&session)
                    && put.error.is_none()
                    && let Some(file) = put.file.as_mut()
                {
                    match file.write_all(payload) {
                        Ok(()) => put.written += payload.len() as u64,
                        Err(e) => put.error = Some(format!("write: {e}")),
                    }
                }
            }
            Kind::PutEnd => {
                let result = match self.puts_lock().remove(&session) {
                    Some(put) => finish_put(put),
                    None => PutResult {
                        error: "no put in progress".into(),
                        ..PutResult::default()
                    },
                };
                link.send(
                    Kind::PutResult,
                    session,
                    &serde_json::to_vec(&result).unwrap_or_default(),
                );
            }
            Kind::GetOpen => {
                let flow = Arc::new(Flow::default());
                self.gets_lock().insert(session, flow.clone());
                let (copies, link, payload) = (self.clone(), link.clone(), payload.to_vec());
                std::thread::spawn(move || {
                    match serde_json::from_slice::<GetRequest>(&payload) {
                        Ok(request) => get(&request, session, &link, &flow),
                        Err(e) => send_error(&link, session, &format!("bad get request: {e}"), ""),
                    }
                    copies.gets_lock().remove(&session);
                    link.send(Kind::GetDone, session, b"");
                });
            }
            Kind::GetAck if payload.len() == 8 => {
                let acked = u64::from_be_bytes(payload.try_into().unwrap_or([0; 8]));
                if let Some(flow) = self.gets_lock().get(&session) {
                    flow.update(Some(acked), false);
                }
            }
            _ => return false,
        }
        true
    }

    /// The host gave up on `session` (a `Signal` for it): a get stops; a put's partial file
    /// stays, as upstream leaves it.
    pub(crate) fn cancel(&self, session: u32) {
        self.puts_lock().remove(&session);
        if let Some(flow) = self.gets_lock().remove(&session) {
            flow.update(None, true);
        }
    }

    /// The host left: every copy ends.
    pub(crate) fn cancel_all(&self) {
        self.puts_lock().clear();
        for (_, flow) in self.gets_lock().drain() {
            flow.update(None, true);
        }
    }

    fn puts_lock(&self) -> std::sync::MutexGuard<'_, HashMap<u32, Put>> {
        self.puts.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn gets_lock(&self) -> std::sync::MutexGuard<'_, HashMap<u32, Arc<Flow>>> {
        self.gets.lock().unwrap_or_else(|e| e.into_inner())
    }
}

fn open_put(request: PutRequest) -> Put {
    let mut put = Put {
        request,
        file: None,
        written: 0,
        error: None,
    };
    let path = PathBuf::from(&put.request.path);
    let existing = std::fs::metadata(&path).ok();
    if !path.is_absolute() {
        put.error = Some(format!("{} is not an absolute path", path.display()));
    } else if put.request.is_dir {
        if existing.as_ref().is_some_and(|m| !m.is_dir()) {
            put.error = Some(format!(
                "cannot create directory: {} is a file",
                path.display()
            ));
        } else if let Err(e) = std::fs::create_dir_all(&path) {
            put.error = Some(format!("create directory: {e}"));
        }
    } else if existing.as_ref().is_some_and(std::fs::Metadata::is_dir) {
        put.error = Some(format!(
            "cannot copy file: {} is a directory",
            path.display()
        ));
    } else {
        let parent = path.parent().unwrap_or(Path::new("/"));
        let opened = std::fs::create_dir_all(parent)
            .map_err(|e| format!("create parent directory: {e}"))
            .and_then(|()| {
                std::fs::OpenOptions::new()
                    .write(true)
                    .create(true)
                    .truncate(true)
                    .mode(mode_or(put.request.mode, 0o644))
                    .open(&path)
                    .map_err(|e| format!("create file: {e}"))
            });
        match opened {
            Ok(file) => put.file = Some(file),
            Err(e) => put.error = Some(e),
        }
    }
    put
}

fn mode_or(mode: u32, default: u32) -> u32 {
    if mode == 0 { default } else { mode & 0o7777 }
}

fn finish_put(mut put: Put) -> PutResult {
    if let Some(error) = put.error.take() {
        return PutResult {
            success: false,
            error,
            bytes_written: put.written,
        };
    }
    let request = &put.request;
    let path = Path::new(&request.path);
    let default = if request.is_dir { 0o755 } else { 0o644 };
    let mut error = None;
    if let Some(file) = put.file.take() {
        if let Err(e) = file.sync_all() {
            error = Some(format!("write: {e}"));
        }
        if request.mtime > 0 {
            let time = std::time::UNIX_EPOCH
                + std::time::Duration::from_secs(u64::try_from(request.mtime).unwrap_or(0));
            let _ = file.set_modified(time);
        }
    }
    // The exact mode, whatever the agent's umask.
    let _ = std::fs::set_permissions(
        path,
        std::fs::Permissions::from_mode(mode_or(request.mode, default)),
    );
    if request.uid > 0 && request.gid > 0 {
        let _ = std::os::unix::fs::chown(path, Some(request.uid), Some(request.gid));
    }
    PutResult {
        success: error.is_none(),
        error: error.unwrap_or_default(),
        bytes_written: put.written,
    }
}

fn send_error(link: &Link, session: u32, message: &str, path: &str) {
    let error = CopyError {
        message: message.to_string(),
        path: path.to_string(),
    };
    link.send(
        Kind::GetError,
        session,
        &serde_json::to_vec(&error).unwrap_or_default(),
    );
}

/// One entry of a get: where it is, its name in the stream, and what it is.
struct Entry {
    full: PathBuf,
    relative: String,
    meta: std::fs::Metadata,
}

/// A path's metadata: its target's (`follow`) or the link's own.
pub(crate) fn describe(path: &Path, follow: bool) -> std::io::Result<std::fs::Metadata> {
    if follow {
        std::fs::metadata(path)
    } else {
        std::fs::symlink_metadata(path)
    }
}

/// Every entry under `root` (itself first, then depth first, names sorted); the first error
/// ends the walk.
fn walk(
    root: &Path,
    base: &str,
    follow: bool,
    meta: std::fs::Metadata,
) -> Result<Vec<Entry>, (String, String)> {
    let mut out = Vec::new();
    let mut seen = HashSet::new();
    let mut stack = vec![(root.to_path_buf(), base.to_string(), meta, 0usize)];
    while let Some((full, relative, meta, depth)) = stack.pop() {
        let is_dir = meta.is_dir();
        if is_dir {
            if depth > MAX_DEPTH || !seen.insert((meta.dev(), meta.ino())) {
                return Err((
                    "directory loop or too deep (followed links?)".into(),
                    full.display().to_string(),
                ));
            }
            let mut children = Vec::new();
            let listing = std::fs::read_dir(&full)
                .map_err(|e| (format!("walk: {e}"), full.display().to_string()))?;
            for child in listing {
                let child =
                    child.map_err(|e| (format!("walk: {e}"), full.display().to_string()))?;
                let path = child.path();
                let meta = describe(&path, follow)
                    .map_err(|e| (format!("info: {e}"), path.display().to_string()))?;
                let name = child.file_name().to_string_lossy().into_owned();
                children.push((path, format!("{relative}/{name}"), meta, depth + 1));
            }
            // Popped in name order.
            children.sort_by(|a, b| b.1.cmp(&a.1));
            stack.extend(children);
        }
        out.push(Entry {
            full,
            relative,
            meta,
        });
    }
    Ok(out)
}

fn get(request: &GetRequest, session: u32, link: &Link, flow: &Flow) {
    let root = Path::new(&request.path);
    let meta = match describe(root, request.follow_links) {
        Ok(m) => m,
        Err(e) => return send_error(link, session, &format!("stat: {e}"), &request.path),
    };
    let base = root
        .file_name()
        .map_or_else(|| ".".to_string(), |n| n.to_string_lossy().into_owned());
    let entries = if meta.is_dir() {
        match walk(root, &base, request.follow_links, meta) {
            Ok(entries) => entries,
            Err((message, path)) => return send_error(link, session, &message, &path),
        }
    } else {
        vec![Entry {
            full: root.to_path_buf(),
            relative: base,
            meta,
        }]
    };
    let mut sent = 0u64;
    let last = entries.len().saturating_sub(1);
    for (i, entry) in entries.into_iter().enumerate() {
        let kind = entry.meta.file_type();
        let symlink = kind.is_symlink();
        let header = CopyHeader {
            path: entry.relative,
            mode: entry.meta.permissions().mode() & 0o7777,
            is_dir: kind.is_dir(),
            is_symlink: symlink,
            link_target: if symlink {
                std::fs::read_link(&entry.full)
                    .map(|t| t.to_string_lossy().into_owned())
                    .unwrap_or_default()
            } else {
                String::new()
            },
            size: if kind.is_file() { entry.meta.len() } else { 0 },
            mtime: entry.meta.mtime(),
            uid: entry.meta.uid(),
            gid: entry.meta.gid(),
        };
        link.send(
            Kind::GetHeader,
            session,
            &serde_json::to_vec(&header).unwrap_or_default(),
        );
        if kind.is_file() {
            let mut file = match File::open(&entry.full) {
                Ok(f) => f,
                Err(e) => {
                    return send_error(
                        link,
                        session,
                        &format!("open: {e}"),
                        &entry.full.display().to_string(),
                    );
                }
            };
            let mut buf = vec![0u8; CHUNK];
            loop {
                match file.read(&mut buf) {
                    Ok(0) => break,
                    Ok(n) => {
                        if !flow.admit(sent) {
                            return;
                        }
                        link.send(Kind::GetData, session, &buf[..n]);
                        sent += n as u64;
                    }
                    Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                    Err(e) => {
                        return send_error(
                            link,
                            session,
                            &format!("read: {e}"),
                            &entry.full.display().to_string(),
                        );
                    }
                }
            }
        }
        link.send(Kind::GetEnd, session, &[u8::from(i == last)]);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_put_writes_the_exact_mode_and_refuses_a_directory_in_the_way() {
        let dir = std::env::temp_dir().join(format!("hypedeck-put-{}", std::process::id()));
        let path = dir.join("a/b/file");
        let request = PutRequest {
            path: path.display().to_string(),
            mode: 0o750,
            ..PutRequest::default()
        };
        let mut put = open_put(request.clone());
        put.file.as_mut().unwrap().write_all(b"hello").unwrap();
        put.written = 5;
        let result = finish_put(put);
        assert!(result.success, "{result:?}");
        assert_eq!(std::fs::read(&path).unwrap(), b"hello");
        let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o7777;
        assert_eq!(mode, 0o750);
        let onto_dir = open_put(PutRequest {
            path: dir.join("a").display().to_string(),
            ..request
        });
        assert!(onto_dir.error.unwrap().contains("is a directory"));
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn a_walk_is_in_order_and_a_followed_loop_ends() {
        let dir = std::env::temp_dir().join(format!("hypedeck-walk-{}", std::process::id()));
        std::fs::create_dir_all(dir.join("t/b")).unwrap();
        std::fs::write(dir.join("t/a"), "").unwrap();
        std::fs::write(dir.join("t/b/c"), "").unwrap();
        std::os::unix::fs::symlink("..", dir.join("t/b/up")).unwrap();
        let root = dir.join("t");
        let meta = std::fs::metadata(&root).unwrap();
        let names: Vec<_> = walk(&root, "t", false, meta.clone())
            .unwrap()
            .into_iter()
            .map(|e| e.relative)
            .collect();
        assert_eq!(names, ["t", "t/a", "t/b", "t/b/c", "t/b/up"]);
        let (message, _) = walk(&root, "t", true, meta).err().unwrap();
        assert!(message.contains("loop"), "{message}");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
