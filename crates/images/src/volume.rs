//! Volume disks: a sparse ext4 file of a fixed size, empty or filled from a tar archive
//! (gzip, zstd or plain), unpacked with the same traversal-safe rules as image layers.
//!
//! Unlike image root disks, volumes are written by guests, so they keep ext4's journal.

use std::fs;
use std::path::Path;

use crate::disk::{find_tool, fix_ownership, measure, run};
use crate::error::ImageError;
use crate::unpack::{Ownership, Rootfs, decompress};

const MIB: u64 = 1024 * 1024;

/// Creates (or truncates) `out` as a sparse ext4 disk of `size_bytes`, holding the files of
/// `archive` when given. `work` is a scratch directory the caller removes. Blocking.
///
/// Refuses an archive whose files do not fit (`ImageError::Convert`, with the sizes).
pub fn build_volume(
    out: &Path,
    size_bytes: u64,
    archive: Option<&Path>,
    work: &Path,
) -> Result<(), ImageError> {
    let mkfs = find_tool("mkfs.ext4").ok_or(ImageError::MkfsMissing)?;
    let rootfs = match archive {
        Some(archive) => {
            let mut rootfs = Rootfs::create(work).map_err(ImageError::Archive)?;
            let file = fs::File::open(archive).map_err(|e| ImageError::io("open", archive, e))?;
            let reader = decompress(file).map_err(ImageError::Archive)?;
            rootfs
                .apply_tar(reader, None)
                .map_err(ImageError::Archive)?;
            let usage = measure(rootfs.path()).map_err(|e| ImageError::io("measure", work, e))?;
            // ext4's own metadata (journal, tables) needs room too.
            let needed = usage.used_bytes + size_bytes / 20 + 16 * MIB;
            if needed > size_bytes {
                return Err(ImageError::Convert(format!(
                    "the archive needs about {} MiB but the volume is {} MiB",
                    needed.div_ceil(MIB),
                    size_bytes / MIB
                )));
            }
            Some(rootfs)
        }
        None => None,
    };
    let file = fs::File::create(out).map_err(|e| ImageError::io("create", out, e))?;
    file.set_len(size_bytes)
        .map_err(|e| ImageError::io("truncate", out, e))?;
    drop(file);
    let mut cmd = std::process::Command::new(mkfs);
    cmd.args(["-q", "-F", "-b", "4096", "-E", "root_owner=0:0"]);
    if let Some(rootfs) = &rootfs {
        cmd.arg("-d").arg(rootfs.path());
    }
    cmd.arg(out).arg(format!("{}M", size_bytes / MIB));
    run(cmd, "mkfs.ext4")?;
    if let Some(rootfs) = &rootfs
        && rootfs.ownership() == Ownership::Recorded
    {
        fix_ownership(rootfs, out)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::io::Write;

    use super::*;

    fn tar_gz(entries: &[(&str, &[u8])]) -> Vec<u8> {
        let mut builder = tar::Builder::new(Vec::new());
        for (path, data) in entries {
            let mut header = tar::Header::new_gnu();
            header.set_size(data.len() as u64);
            header.set_mode(0o644);
            header.set_uid(0);
            header.set_gid(0);
            header.set_mtime(0);
            header.set_entry_type(tar::EntryType::Regular);
            // Written raw so that hostile names reach the unpacker unchanged.
            let name = header.as_old_mut().name.as_mut_slice();
            name[..path.len()].copy_from_slice(path.as_bytes());
            header.set_cksum();
            builder.append(&header, *data).unwrap();
        }
        let tar = builder.into_inner().unwrap();
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        gz.write_all(&tar).unwrap();
        gz.finish().unwrap()
    }

    fn debugfs_cat(disk: &Path, path: &str) -> String {
        let out = std::process::Command::new(find_tool("debugfs").unwrap())
            .args(["-R", &format!("cat {path}")])
            .arg(disk)
            .output()
            .unwrap();
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    #[test]
    fn an_archive_becomes_a_disk_of_the_asked_size() {
        let dir = tempfile::tempdir().unwrap();
        let archive = dir.path().join("a.tar.gz");
        fs::write(
            &archive,
            tar_gz(&[("hello.txt", b"hi from a volume\n"), ("sub/x", b"x")]),
        )
        .unwrap();
        let out = dir.path().join("data.raw");
        build_volume(&out, 64 * MIB, Some(&archive), &dir.path().join("work")).unwrap();
        assert_eq!(fs::metadata(&out).unwrap().len(), 64 * MIB);
        assert_eq!(debugfs_cat(&out, "/hello.txt"), "hi from a volume\n");
        assert_eq!(debugfs_cat(&out, "/sub/x"), "x");
    }

    #[test]
    fn traversal_and_oversized_archives_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let archive = dir.path().join("evil.tar.gz");
        fs::write(&archive, tar_gz(&[("../../etc/evil", b"x")])).unwrap();
        let err = build_volume(
            &dir.path().join("d.raw"),
            64 * MIB,
            Some(&archive),
            &dir.path().join("w1"),
        )
        .unwrap_err();
        assert!(err.to_string().contains("escapes"), "{err}");
        assert!(!dir.path().join("etc").exists());

        let big = vec![7u8; 80 * MIB as usize];
        fs::write(&archive, tar_gz(&[("big", &big)])).unwrap();
        let err = build_volume(
            &dir.path().join("d.raw"),
            64 * MIB,
            Some(&archive),
            &dir.path().join("w2"),
        )
        .unwrap_err();
        assert!(err.to_string().contains("needs about"), "{err}");
    }

    #[test]
    fn an_empty_volume_is_a_formatted_sparse_file() {
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path().join("data.raw");
        build_volume(&out, 128 * MIB, None, &dir.path().join("w")).unwrap();
        let meta = fs::metadata(&out).unwrap();
        assert_eq!(meta.len(), 128 * MIB);
        use std::os::unix::fs::MetadataExt;
        assert!(
            meta.blocks() * 512 < 32 * MIB,
            "not sparse: {} blocks",
            meta.blocks()
        );
    }
}
