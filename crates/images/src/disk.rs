//! Root filesystem directory -> ext4 disk image, with e2fsprogs.
//!
//! `mkfs.ext4 -q -F -b 4096 -O ^has_journal -N <inodes> -E root_owner=0:0 -d <rootfs> <file>
//! <size>`: no journal (the disk is the image's read-only lower layer), 4 KiB blocks. Size is
//! `max(64 MiB, used * 1.5 + 32 MiB)` rounded up to a MiB, where `used` counts data in whole
//! blocks plus an inode per entry; the inode count is given explicitly so trees of many small
//! files never run out of inodes.
//!
//! `mkfs.ext4 -d` copies the host's uid/gid/mode. When the rootfs was unpacked without root,
//! the wanted ownership and modes are applied afterwards with one scripted `debugfs -w` run.

use std::ffi::OsString;
use std::fs;
use std::io::{self, Write};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use crate::error::ImageError;
use crate::unpack::{Ownership, Rootfs};

const MIB: u64 = 1024 * 1024;
const BLOCK: u64 = 4096;
const INODE_SIZE: u64 = 256;
/// Smallest disk built.
pub const MIN_DISK_BYTES: u64 = 64 * MIB;

/// What a rootfs tree needs on an ext4 disk.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Usage {
    /// Data blocks (whole 4 KiB blocks per file, directory and long symlink) plus inodes.
    pub used_bytes: u64,
    /// Files, directories, symlinks (the root included).
    pub entries: u64,
}

/// Walks `root` without following symlinks; hardlinked files count once.
pub(crate) fn measure(root: &Path) -> io::Result<Usage> {
    let mut usage = Usage {
        used_bytes: 0,
        entries: 0,
    };
    let mut seen = std::collections::HashSet::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(dir) = stack.pop() {
        usage.entries += 1;
        usage.used_bytes += BLOCK + INODE_SIZE;
        for child in fs::read_dir(&dir)? {
            let child = child?;
            let m = fs::symlink_metadata(child.path())?;
            if m.is_dir() {
                stack.push(child.path());
                continue;
            }
            if m.nlink() > 1 && !seen.insert((m.dev(), m.ino())) {
                continue;
            }
            usage.entries += 1;
            usage.used_bytes += INODE_SIZE;
            // Symlinks under 60 bytes live in the inode ("fast" symlinks).
            if !(m.file_type().is_symlink() && m.len() < 60) {
                usage.used_bytes += m.len().div_ceil(BLOCK) * BLOCK;
            }
        }
    }
    Ok(usage)
}

/// `max(64 MiB, used * 1.5 + 32 MiB)`, rounded up to a whole MiB.
pub(crate) fn disk_size(used_bytes: u64) -> u64 {
    let want = used_bytes.saturating_mul(3) / 2 + 32 * MIB;
    want.max(MIN_DISK_BYTES).div_ceil(MIB) * MIB
}

/// Inodes to create: every entry plus half again and a margin.
pub(crate) fn inode_count(entries: u64) -> u64 {
    entries + entries / 2 + 1024
}

/// Where an e2fsprogs tool lives: `$PATH` first, then the sbin directories that a non-root
/// `$PATH` on Debian lacks, then Homebrew's keg-only prefixes.
pub(crate) fn find_tool(name: &str) -> Option<PathBuf> {
    let mut dirs: Vec<PathBuf> = std::env::var_os("PATH")
        .map(|p| std::env::split_paths(&p).collect())
        .unwrap_or_default();
    for extra in [
        "/usr/sbin",
        "/sbin",
        "/usr/local/sbin",
        "/opt/homebrew/opt/e2fsprogs/sbin",
        "/usr/local/opt/e2fsprogs/sbin",
    ] {
        dirs.push(PathBuf::from(extra));
    }
    dirs.into_iter()
        .map(|d| d.join(name))
        .find(|p| fs::metadata(p).is_ok_and(|m| m.is_file()))
}

/// Builds `out` from the rootfs. `out` is created (sparse) or truncated. Blocking: run it on
/// a blocking thread. Returns the disk's virtual size.
pub(crate) fn build_ext4(rootfs: &Rootfs, out: &Path) -> Result<u64, ImageError> {
    let mkfs = find_tool("mkfs.ext4").ok_or(ImageError::MkfsMissing)?;
    let usage = measure(rootfs.path()).map_err(|e| ImageError::io("measure", rootfs.path(), e))?;
    let size = disk_size(usage.used_bytes);
    let file = fs::File::create(out).map_err(|e| ImageError::io("create", out, e))?;
    file.set_len(size)
        .map_err(|e| ImageError::io("truncate", out, e))?;
    drop(file);

    let mut cmd = std::process::Command::new(&mkfs);
    cmd.args(["-q", "-F", "-b", "4096", "-O", "^has_journal", "-N"])
        .arg(inode_count(usage.entries).to_string())
        .args(["-E", "root_owner=0:0", "-d"])
        .arg(rootfs.path())
        .arg(out)
        .arg(format!("{}M", size / MIB));
    run(cmd, "mkfs.ext4")?;

    if rootfs.ownership() == Ownership::Recorded {
        fix_ownership(rootfs, out)?;
    }
    Ok(size)
}

pub(crate) fn run(mut cmd: std::process::Command, tool: &str) -> Result<String, ImageError> {
    cmd.env("LC_ALL", "C").stdin(std::process::Stdio::null());
    let output = cmd.output().map_err(|e| {
        if e.kind() == io::ErrorKind::NotFound {
            ImageError::MkfsMissing
        } else {
            ImageError::Convert(format!("run {tool}: {e}"))
        }
    })?;
    let stderr = String::from_utf8_lossy(&output.stderr).trim().to_owned();
    if !output.status.success() {
        return Err(ImageError::Convert(format!(
            "{tool} failed ({}): {stderr}",
            output.status
        )));
    }
    Ok(stderr)
}

/// Applies the recorded uid/gid/mode of every path whose host copy differs.
pub(crate) fn fix_ownership(rootfs: &Rootfs, disk: &Path) -> Result<(), ImageError> {
    let script = fixup_script(rootfs)?;
    if script.is_empty() {
        return Ok(());
    }
    let debugfs = find_tool("debugfs").ok_or(ImageError::MkfsMissing)?;
    let script_path = disk.with_extension("debugfs");
    let mut f =
        fs::File::create(&script_path).map_err(|e| ImageError::io("create", &script_path, e))?;
    f.write_all(&script)
        .map_err(|e| ImageError::io("write", &script_path, e))?;
    drop(f);
    let mut cmd = std::process::Command::new(debugfs);
    cmd.arg("-w").arg("-f").arg(&script_path).arg(disk);
    let result = run(cmd, "debugfs");
    let _ = fs::remove_file(&script_path);
    let stderr = result?;
    // debugfs exits 0 even when a command fails; its only other stderr line is the banner.
    let errors: Vec<&str> = stderr
        .lines()
        .filter(|l| !l.trim().is_empty() && !l.starts_with("debugfs "))
        .collect();
    if !errors.is_empty() {
        return Err(ImageError::Convert(format!(
            "debugfs: {}",
            errors.join("; ")
        )));
    }
    Ok(())
}

/// `sif` commands for every recorded path whose host uid/gid/mode differ from the wanted ones.
pub(crate) fn fixup_script(rootfs: &Rootfs) -> Result<Vec<u8>, ImageError> {
    let mut script = Vec::new();
    let mut skipped = 0usize;
    for (rel, wanted) in rootfs.wanted() {
        let host = rootfs.path().join(rel);
        let m = match fs::symlink_metadata(&host) {
            Ok(m) => m,
            Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
            Err(e) => return Err(ImageError::io("stat", host, e)),
        };
        let mut guest = OsString::from("/");
        guest.push(rel.as_os_str());
        let bytes = guest.as_bytes();
        if bytes
            .iter()
            .any(|b| matches!(b, b'"' | b'\\' | b'\n' | b'\r'))
        {
            skipped += 1;
            continue;
        }
        let mut line = |field: &str, value: String| {
            script.extend_from_slice(b"sif \"");
            script.extend_from_slice(bytes);
            script.extend_from_slice(format!("\" {field} {value}\n").as_bytes());
        };
        if u64::from(m.uid()) != wanted.uid {
            line("uid", wanted.uid.to_string());
        }
        if u64::from(m.gid()) != wanted.gid {
            line("gid", wanted.gid.to_string());
        }
        if !m.file_type().is_symlink() && m.mode() & 0o7777 != wanted.mode {
            line(
                "mode",
                format!("0{:o}", (m.mode() & 0o170000) | wanted.mode),
            );
        }
    }
    if skipped > 0 {
        tracing::warn!(
            skipped,
            "paths with quotes or backslashes keep the unpacker's owner"
        );
    }
    Ok(script)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::unpack::tests::TarBuilder;

    #[test]
    fn sizes() {
        assert_eq!(disk_size(0), 64 * MIB);
        assert_eq!(disk_size(10 * MIB), 64 * MIB);
        assert_eq!(disk_size(100 * MIB), 182 * MIB);
        assert_eq!(disk_size(100 * MIB + 1), 183 * MIB);
        assert_eq!(inode_count(100), 1174);
    }

    #[test]
    fn measure_counts_blocks_and_inodes_once_per_hardlink() {
        let dir = tempfile::tempdir().unwrap();
        let r = dir.path();
        fs::write(r.join("a"), vec![0u8; 5000]).unwrap();
        fs::hard_link(r.join("a"), r.join("b")).unwrap();
        fs::create_dir(r.join("d")).unwrap();
        std::os::unix::fs::symlink("short", r.join("s")).unwrap();
        let u = measure(r).unwrap();
        assert_eq!(u.entries, 4); // root, d, a(=b), s
        assert_eq!(
            u.used_bytes,
            2 * (BLOCK + INODE_SIZE) + (2 * BLOCK + INODE_SIZE) + INODE_SIZE
        );
    }

    #[test]
    fn script_only_for_differences() {
        let dir = tempfile::tempdir().unwrap();
        let mut rootfs =
            Rootfs::with_ownership(&dir.path().join("r"), Ownership::Recorded).unwrap();
        let me = fs::metadata(rootfs.path()).unwrap();
        let tar = TarBuilder::new()
            .owned_file("etc/shadow", 0, 42, 0o000)
            .owned_file("mine", u64::from(me.uid()), u64::from(me.gid()), 0o644)
            .owned_file("q\"uote", 7, 7, 0o644)
            .build();
        rootfs.apply_tar(&tar[..], None).unwrap();
        let script = String::from_utf8(fixup_script(&rootfs).unwrap()).unwrap();
        assert!(script.contains("sif \"/etc/shadow\" gid 42\n"), "{script}");
        assert!(
            script.contains("sif \"/etc/shadow\" mode 0100000\n"),
            "{script}"
        );
        assert!(!script.contains("/mine"), "{script}");
        assert!(!script.contains("uote"), "{script}");
    }

    #[test]
    fn builds_an_ext4_with_recorded_ownership() {
        if find_tool("mkfs.ext4").is_none() || find_tool("debugfs").is_none() {
            eprintln!("e2fsprogs missing: skipped");
            return;
        }
        let dir = tempfile::tempdir().unwrap();
        let mut rootfs =
            Rootfs::with_ownership(&dir.path().join("r"), Ownership::Recorded).unwrap();
        let tar = TarBuilder::new()
            .dir("./", 0o755)
            .owned_file("bin/su", 0, 0, 0o4755)
            .owned_file("home/u/f", 1000, 1001, 0o600)
            .build();
        rootfs.apply_tar(&tar[..], None).unwrap();
        let disk = dir.path().join("d.ext4");
        let size = build_ext4(&rootfs, &disk).unwrap();
        assert_eq!(size, MIN_DISK_BYTES);
        let out = std::process::Command::new(find_tool("debugfs").unwrap())
            .args(["-R", "stat /home/u/f"])
            .arg(&disk)
            .output()
            .unwrap();
        let stat = String::from_utf8_lossy(&out.stdout);
        assert!(stat.contains("User:  1000   Group:  1001"), "{stat}");
        assert!(stat.contains("Mode:  0600"), "{stat}");
        let out = std::process::Command::new(find_tool("debugfs").unwrap())
            .args(["-R", "stat /bin/su"])
            .arg(&disk)
            .output()
            .unwrap();
        let stat = String::from_utf8_lossy(&out.stdout);
        assert!(stat.contains("Mode:  04755"), "{stat}");
        assert!(stat.contains("User:     0   Group:     0"), "{stat}");
    }
}
