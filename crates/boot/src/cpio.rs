//! A `newc` cpio writer: enough to build an initramfs without root or external tools.

use std::io::Write;

/// One entry of the archive.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Entry {
    /// A directory with mode bits.
    Dir(String, u32),
    /// A regular file with mode bits and content.
    File(String, u32, Vec<u8>),
}

fn header(out: &mut Vec<u8>, ino: u32, mode: u32, size: usize, name: &str) {
    let fields = [
        ino,
        mode,
        0,
        0,
        1,
        0,
        size as u32,
        0,
        0,
        0,
        0,
        (name.len() + 1) as u32,
        0,
    ];
    out.extend_from_slice(b"070701");
    for f in fields {
        out.extend_from_slice(format!("{f:08x}").as_bytes());
    }
    out.extend_from_slice(name.as_bytes());
    out.push(0);
    pad(out);
}

fn pad(out: &mut Vec<u8>) {
    while !out.len().is_multiple_of(4) {
        out.push(0);
    }
}

/// The archive bytes (uncompressed), entries in the given order, owned by root.
pub fn archive(entries: &[Entry]) -> Vec<u8> {
    let mut out = Vec::new();
    for (i, entry) in entries.iter().enumerate() {
        let ino = i as u32 + 1;
        match entry {
            Entry::Dir(name, mode) => header(&mut out, ino, 0o040000 | mode, 0, name),
            Entry::File(name, mode, data) => {
                header(&mut out, ino, 0o100000 | mode, data.len(), name);
                out.extend_from_slice(data);
                pad(&mut out);
            }
        }
    }
    header(&mut out, 0, 0, 0, "TRAILER!!!");
    out
}

/// The archive gzip-compressed (what kernels accept as `-initrd`).
pub fn archive_gz(entries: &[Entry]) -> std::io::Result<Vec<u8>> {
    let mut encoder = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    encoder.write_all(&archive(entries))?;
    encoder.finish()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn newc_layout() {
        let a = archive(&[
            Entry::Dir("dev".into(), 0o755),
            Entry::File("init".into(), 0o755, b"#!x".to_vec()),
        ]);
        assert!(a.starts_with(b"070701"));
        assert_eq!(a.len() % 4, 0);
        let text = String::from_utf8_lossy(&a);
        assert!(text.contains("dev\0"));
        assert!(text.contains("init\0"));
        assert!(text.contains("TRAILER!!!"));
        // File header: mode 0100755 in hex, size 3.
        assert!(text.contains(&format!("{:08x}", 0o100755)));
    }
}
