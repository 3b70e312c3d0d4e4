//! The runtime at the front of `Hypedeck_<version>_<arch>.AppImage`.
//!
//! An AppImage (type 2) is this static ELF followed by a SquashFS image of an AppDir. The image
//! starts where the ELF ends: after its section header table, the last thing a linker writes.
//! Instead of mounting the image with FUSE (absent on many desktops and in every container),
//! this runtime unpacks it once into `$XDG_CACHE_HOME/hypedeck/appimage/<image key>/` and runs
//! `AppRun` from there; later starts reuse that directory, so they cost no unpacking. The key
//! is derived from the image's superblock (its build time, size and table offsets), so a new
//! AppImage gets a new directory and an old one is never half-overwritten.
//!
//! Like the reference runtime it sets `APPIMAGE` (this file), `APPDIR` (the unpacked AppDir),
//! `ARGV0` and `OWD` (the directory it was started from), and it answers
//! `--appimage-help`, `--appimage-offset`, `--appimage-extract [PREFIX]` and
//! `--appimage-version`; every other argument goes to `AppRun`.

use std::ffi::OsString;
use std::fs::{self, File};
use std::io::{self, BufReader, Read, Seek, SeekFrom};
use std::os::unix::fs::{PermissionsExt, symlink};
use std::os::unix::process::CommandExt;
use std::path::{Component, Path, PathBuf};
use std::process::{Command, ExitCode};

use backhand::{FilesystemReader, InnerNode};

/// Where an update tool looks for update information (empty: none). The AppImage
/// specification reserves this section; it must exist, even if it says nothing.
#[allow(unsafe_code)] // placing a plain byte array in a named section
#[unsafe(link_section = ".upd_info")]
#[used]
static UPDATE_INFORMATION: [u8; 1024] = [0; 1024];

const HELP: &str = "\
This is Hypedeck packaged as an AppImage: run it to start Hypedeck.

  --appimage-help            this text
  --appimage-offset          the byte offset of the AppDir image in this file
  --appimage-extract [PATH]  unpack the AppDir (or only PATH and what is under it) into
                             ./squashfs-root
  --appimage-version         the runtime's version
  hypedeck ARGS...           run the bundled command-line `hypedeck` (e.g. `hypedeck doctor`)

The AppDir is unpacked once into $XDG_CACHE_HOME/hypedeck/appimage (~/.cache when unset);
delete that directory to reclaim the space of older versions.";

fn main() -> ExitCode {
    let mut args = std::env::args_os();
    let argv0 = args.next().unwrap_or_default();
    let rest: Vec<OsString> = args.collect();
    match run(argv0, rest) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("hypedeck AppImage: {e}");
            ExitCode::FAILURE
        }
    }
}

fn run(argv0: OsString, args: Vec<OsString>) -> Result<ExitCode, String> {
    let me = std::env::current_exe().map_err(|e| format!("cannot find this file: {e}"))?;
    let first = args.first().and_then(|a| a.to_str()).unwrap_or("");
    if let Some(option) = first.strip_prefix("--appimage-") {
        return appimage_option(&me, option, &args[1..]);
    }
    let offset = image_offset(&me)?;
    let appdir = unpacked(&me, offset)?;
    let apprun = appdir.join("AppRun");
    let mut command = Command::new(&apprun);
    command
        .args(&args)
        .env("APPIMAGE", &me)
        .env("APPDIR", &appdir)
        .env("ARGV0", &argv0);
    if let Ok(cwd) = std::env::current_dir() {
        command.env("OWD", cwd);
    }
    // Only returns on failure.
    let e = command.exec();
    Err(format!("cannot run {}: {e}", apprun.display()))
}

fn appimage_option(me: &Path, option: &str, rest: &[OsString]) -> Result<ExitCode, String> {
    match option {
        "help" => println!("{HELP}"),
        "version" => println!("hypedeck-appimage-runtime {}", env!("CARGO_PKG_VERSION")),
        "offset" => println!("{}", image_offset(me)?),
        "extract" => {
            let prefix = rest.first().map(PathBuf::from);
            let dest = PathBuf::from("squashfs-root");
            let image = open_image(me, image_offset(me)?)?;
            unpack(&image, &dest, prefix.as_deref())?;
            println!("{}", dest.display());
        }
        other => {
            return Err(format!(
                "unknown option --appimage-{other} (see --appimage-help)"
            ));
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// Where the image starts: the end of the ELF, i.e. the end of its section header table.
fn image_offset(me: &Path) -> Result<u64, String> {
    let mut header = [0u8; 64];
    File::open(me)
        .and_then(|mut f| f.read_exact(&mut header))
        .map_err(|e| format!("cannot read {}: {e}", me.display()))?;
    elf_end(&header)
        .ok_or_else(|| format!("{} is not an ELF file this runtime knows", me.display()))
}

/// The end of the section header table of a little-endian ELF file, from its header.
fn elf_end(header: &[u8; 64]) -> Option<u64> {
    if &header[..4] != b"\x7fELF" || header[5] != 1 {
        return None;
    }
    let u16_at = |at: usize| u64::from(u16::from_le_bytes([header[at], header[at + 1]]));
    let (shoff, entsize, count) = match header[4] {
        // ELFCLASS32
        1 => (
            u64::from(u32::from_le_bytes(header[0x20..0x24].try_into().ok()?)),
            u16_at(0x2e),
            u16_at(0x30),
        ),
        // ELFCLASS64
        2 => (
            u64::from_le_bytes(header[0x28..0x30].try_into().ok()?),
            u16_at(0x3a),
            u16_at(0x3c),
        ),
        _ => return None,
    };
    shoff.checked_add(entsize.checked_mul(count)?)
}

fn open_image(me: &Path, offset: u64) -> Result<FilesystemReader<'static>, String> {
    let file = File::open(me).map_err(|e| format!("cannot open {}: {e}", me.display()))?;
    FilesystemReader::from_reader_with_offset(BufReader::new(file), offset).map_err(|e| {
        format!(
            "{} has no readable AppDir image at byte {offset}: {e}",
            me.display()
        )
    })
}

/// The unpacked AppDir of this image, unpacking it first when this is its first run.
fn unpacked(me: &Path, offset: u64) -> Result<PathBuf, String> {
    let cache = cache_root()?;
    let dir = cache.join(image_key(me, offset)?);
    if dir.join("AppRun").exists() {
        return Ok(dir);
    }
    fs::create_dir_all(&cache).map_err(|e| format!("cannot create {}: {e}", cache.display()))?;
    remove_abandoned(&cache);
    // Unpack beside the final name and rename, so a second start running at the same time, or
    // an interrupted first one, never sees half an AppDir.
    let partial = cache.join(format!(
        ".{}.partial-{}",
        dir.file_name().and_then(|n| n.to_str()).unwrap_or("appdir"),
        std::process::id()
    ));
    let _ = fs::remove_dir_all(&partial);
    let image = open_image(me, offset)?;
    if let Err(e) = unpack(&image, &partial, None) {
        let _ = fs::remove_dir_all(&partial);
        return Err(e);
    }
    if fs::rename(&partial, &dir).is_err() {
        // Another start finished first: use its copy.
        let _ = fs::remove_dir_all(&partial);
        if !dir.join("AppRun").exists() {
            return Err(format!(
                "cannot move the unpacked AppDir to {}",
                dir.display()
            ));
        }
    }
    Ok(dir)
}

/// Removes what interrupted starts left: `.<key>.partial-<pid>` whose process is gone.
fn remove_abandoned(cache: &Path) {
    let Ok(entries) = fs::read_dir(cache) else {
        return;
    };
    for entry in entries.flatten() {
        let name = entry.file_name();
        let Some(pid) = name
            .to_str()
            .and_then(|n| n.strip_prefix('.'))
            .and_then(|n| n.rsplit_once(".partial-"))
            .and_then(|(_, pid)| pid.parse::<u32>().ok())
        else {
            continue;
        };
        if !Path::new("/proc").join(pid.to_string()).exists() {
            let _ = fs::remove_dir_all(entry.path());
        }
    }
}

fn cache_root() -> Result<PathBuf, String> {
    let base = match std::env::var_os("XDG_CACHE_HOME").filter(|v| !v.is_empty()) {
        Some(dir) => PathBuf::from(dir),
        None => std::env::var_os("HOME")
            .filter(|v| !v.is_empty())
            .map(|home| PathBuf::from(home).join(".cache"))
            .ok_or("neither XDG_CACHE_HOME nor HOME is set: nowhere to unpack the AppDir")?,
    };
    Ok(base.join("hypedeck").join("appimage"))
}

/// A name for this image: FNV-1a over its 96-byte superblock (build time, bytes used, inode
/// count, table offsets), which differs between any two builds.
fn image_key(me: &Path, offset: u64) -> Result<String, String> {
    let mut superblock = [0u8; 96];
    File::open(me)
        .and_then(|mut f| {
            f.seek(SeekFrom::Start(offset))?;
            f.read_exact(&mut superblock)
        })
        .map_err(|e| format!("cannot read the AppDir image in {}: {e}", me.display()))?;
    if &superblock[..4] != b"hsqs" {
        return Err(format!(
            "{} has no SquashFS image at byte {offset}",
            me.display()
        ));
    }
    Ok(format!("{:016x}", fnv1a(&superblock)))
}

fn fnv1a(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |hash, &b| {
        (hash ^ u64::from(b)).wrapping_mul(0x0000_0100_0000_01b3)
    })
}

/// Writes the image's files (those under `only`, when given) below `dest`, with their modes.
fn unpack(image: &FilesystemReader<'_>, dest: &Path, only: Option<&Path>) -> Result<(), String> {
    let only = only.map(|p| p.strip_prefix("/").unwrap_or(p).to_path_buf());
    fs::create_dir_all(dest).map_err(|e| format!("cannot create {}: {e}", dest.display()))?;
    let mut dirs = Vec::new();
    for node in image.files() {
        let Some(relative) = safe_relative(&node.fullpath) else {
            return Err(format!(
                "the image names an unsafe path {}",
                node.fullpath.display()
            ));
        };
        if let Some(prefix) = &only
            && !relative.starts_with(prefix)
            && !prefix.starts_with(&relative)
        {
            continue;
        }
        let target = dest.join(&relative);
        let mode = u32::from(node.header.permissions) & 0o7777;
        let failed = |what: &str, e: io::Error| format!("cannot {what} {}: {e}", target.display());
        match &node.inner {
            InnerNode::Dir(_) => {
                fs::create_dir_all(&target).map_err(|e| failed("create", e))?;
                // Modes last: a read-only directory would refuse its own entries.
                dirs.push((target, mode));
            }
            InnerNode::File(file) => {
                let mut out = File::create(&target).map_err(|e| failed("create", e))?;
                io::copy(&mut image.file(file).reader(), &mut out)
                    .map_err(|e| failed("write", e))?;
                out.set_permissions(fs::Permissions::from_mode(mode))
                    .map_err(|e| failed("set the mode of", e))?;
            }
            InnerNode::Symlink(link) => {
                let _ = fs::remove_file(&target);
                symlink(&link.link, &target).map_err(|e| failed("create the link", e))?;
            }
            // An AppDir holds no devices, pipes or sockets; unpacking one would need privileges.
            _ => {
                return Err(format!(
                    "the image holds a special file {}; an AppDir never should",
                    node.fullpath.display()
                ));
            }
        }
    }
    for (dir, mode) in dirs.into_iter().rev() {
        fs::set_permissions(&dir, fs::Permissions::from_mode(mode))
            .map_err(|e| format!("cannot set the mode of {}: {e}", dir.display()))?;
    }
    Ok(())
}

/// `fullpath` relative to the image root, or `None` when it would leave it.
fn safe_relative(fullpath: &Path) -> Option<PathBuf> {
    let mut out = PathBuf::new();
    for part in fullpath.components() {
        match part {
            Component::RootDir | Component::CurDir => {}
            Component::Normal(name) => out.push(name),
            Component::ParentDir | Component::Prefix(_) => return None,
        }
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_image_starts_after_the_section_headers_of_this_very_binary() {
        let me = std::env::current_exe().unwrap_or_default();
        let offset = image_offset(&me).unwrap_or_default();
        // A test binary has no image appended: its ELF ends where the file ends.
        let len = fs::metadata(&me).map(|m| m.len()).unwrap_or_default();
        assert_eq!(offset, len);
    }

    #[test]
    fn not_elf_is_refused() {
        let mut header = [0u8; 64];
        assert_eq!(elf_end(&header), None);
        header[..4].copy_from_slice(b"\x7fELF");
        header[4] = 2;
        header[5] = 2; // big-endian
        assert_eq!(elf_end(&header), None);
        header[5] = 1;
        header[0x28..0x30].copy_from_slice(&1000u64.to_le_bytes());
        header[0x3a..0x3c].copy_from_slice(&64u16.to_le_bytes());
        header[0x3c..0x3e].copy_from_slice(&3u16.to_le_bytes());
        assert_eq!(elf_end(&header), Some(1192));
    }

    /// A SquashFS image with an executable, a read-only directory with a file, and a link.
    fn image(extra: impl FnOnce(&mut backhand::FilesystemWriter<'_, '_, '_>)) -> Vec<u8> {
        use backhand::{FilesystemWriter, NodeHeader};
        let mut fs = FilesystemWriter::default();
        // What scripts/appimage.sh asks mksquashfs for (the default, xz, is not built in).
        let gzip =
            backhand::FilesystemCompressor::new(backhand::compression::Compressor::Gzip, None);
        assert!(gzip.is_ok());
        fs.set_compressor(gzip.unwrap_or_else(|_| unreachable!()));
        let header = |mode| NodeHeader::new(mode, 0, 0, 0);
        let ok = |r: Result<(), backhand::BackhandError>| assert!(r.is_ok(), "{r:?}");
        ok(fs.push_dir("usr", header(0o755)));
        ok(fs.push_file(
            io::Cursor::new(b"#!/bin/sh\necho hi\n".to_vec()),
            "usr/tool",
            header(0o755),
        ));
        ok(fs.push_dir("ro", header(0o555)));
        ok(fs.push_file(
            io::Cursor::new(vec![7u8; 300_000]),
            "ro/data",
            header(0o444),
        ));
        ok(fs.push_symlink("usr/tool", "AppRun", header(0o777)));
        extra(&mut fs);
        let mut out = io::Cursor::new(Vec::new());
        let written = fs.write(&mut out);
        assert!(written.is_ok(), "{:?}", written.err());
        out.into_inner()
    }

    fn read(bytes: &[u8]) -> FilesystemReader<'static> {
        let reader = FilesystemReader::from_reader(io::Cursor::new(bytes.to_vec()));
        assert!(reader.is_ok());
        reader.unwrap_or_else(|_| unreachable!())
    }

    #[test]
    fn unpacks_files_modes_and_links() {
        let bytes = image(|_| {});
        let dest = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let root = dest.path().join("appdir");
        assert_eq!(unpack(&read(&bytes), &root, None), Ok(()));
        let mode = |p: &str| {
            fs::symlink_metadata(root.join(p))
                .map(|m| m.permissions().mode() & 0o7777)
                .unwrap_or_default()
        };
        assert_eq!(
            fs::read_to_string(root.join("AppRun")).unwrap_or_default(),
            "#!/bin/sh\necho hi\n"
        );
        assert_eq!(mode("usr/tool"), 0o755);
        assert_eq!(mode("ro"), 0o555);
        assert_eq!(mode("ro/data"), 0o444);
        assert_eq!(
            fs::read(root.join("ro/data")).unwrap_or_default(),
            vec![7u8; 300_000]
        );
        assert_eq!(
            fs::read_link(root.join("AppRun")).unwrap_or_default(),
            PathBuf::from("usr/tool")
        );
        // A read-only directory is still removable by its owner after a chmod; tidy up.
        let _ = fs::set_permissions(root.join("ro"), fs::Permissions::from_mode(0o755));
    }

    #[test]
    fn extracts_only_what_is_under_the_prefix() {
        let bytes = image(|_| {});
        let dest = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let root = dest.path().join("squashfs-root");
        assert_eq!(unpack(&read(&bytes), &root, Some(Path::new("usr"))), Ok(()));
        assert!(root.join("usr/tool").is_file());
        assert!(!root.join("ro").exists());
        assert!(!root.join("AppRun").exists());
    }

    #[test]
    fn special_files_are_refused() {
        let bytes = image(|fs| {
            assert!(
                fs.push_fifo("pipe", backhand::NodeHeader::new(0o644, 0, 0, 0))
                    .is_ok()
            );
        });
        let dest = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let err = unpack(&read(&bytes), &dest.path().join("x"), None).unwrap_err();
        assert!(err.contains("special file /pipe"), "{err}");
    }

    #[test]
    fn leftovers_of_dead_starts_are_removed_and_live_ones_kept() {
        let cache = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let live = cache
            .path()
            .join(format!(".abc.partial-{}", std::process::id()));
        // Far above any pid_max (2^22): no such process.
        let dead = cache.path().join(".abc.partial-4294967295");
        let done = cache.path().join("abc");
        for dir in [&live, &dead, &done] {
            assert!(fs::create_dir_all(dir.join("usr")).is_ok());
        }
        remove_abandoned(cache.path());
        assert!(live.exists());
        assert!(!dead.exists());
        assert!(done.exists());
    }

    #[test]
    fn paths_that_leave_the_root_are_refused() {
        assert_eq!(
            safe_relative(Path::new("/usr/bin/x")),
            Some(PathBuf::from("usr/bin/x"))
        );
        assert_eq!(safe_relative(Path::new("/")), Some(PathBuf::new()));
        assert_eq!(safe_relative(Path::new("/usr/../../etc")), None);
    }
}
