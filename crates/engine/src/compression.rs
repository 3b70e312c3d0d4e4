//! Compression of saved VM memory (upstream's `compression` of Standby snapshots and of
//! `POST /instances/{id}/standby`): `memory.bin` becomes `memory.bin.zst` (a Zstandard frame)
//! or `memory.bin.lz4` (an LZ4 frame), and is decompressed back before a restore or a fork
//! uses it. Both are pure Rust (`ruzstd`, `lz4_flex`) and the files are standard frames the
//! `zstd` and `lz4` tools read. Levels are upstream's ranges (zstd 1–19, lz4 0–9); the
//! encoders have one speed each (ruzstd's is zstd's level 1, lz4_flex's is LZ4's fast mode),
//! so a level is checked and kept in the snapshot's JSON but does not change the output.

use std::fs::File;
use std::io::{BufReader, BufWriter, Write};
use std::path::{Path, PathBuf};

use hypedeck_model::ErrorCode;
use serde::{Deserialize, Serialize};

use crate::{EngineError, rejected};

/// The file of a saved VM's memory (QEMU's migration stream).
const MEMORY: &str = "memory.bin";

/// An algorithm.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub(crate) enum Algorithm {
    /// Zstandard.
    Zstd,
    /// LZ4.
    Lz4,
}

impl Algorithm {
    fn extension(self) -> &'static str {
        match self {
            Algorithm::Zstd => "zst",
            Algorithm::Lz4 => "lz4",
        }
    }
}

/// A compression setting in force (`{"enabled": true, "algorithm": …, "level": …}`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct Compression {
    pub enabled: bool,
    pub algorithm: Algorithm,
    pub level: i64,
}

/// Reads a `SnapshotCompressionConfig` the way upstream converts it (its ranges are checked
/// even when it is disabled): `None` for none given.
pub(crate) fn parse(value: Option<&serde_json::Value>) -> Result<Option<Compression>, EngineError> {
    let Some(value) = value.filter(|v| !v.is_null()) else {
        return Ok(None);
    };
    let enabled = value
        .get("enabled")
        .and_then(serde_json::Value::as_bool)
        .unwrap_or(false);
    let algorithm = match value.get("algorithm").and_then(serde_json::Value::as_str) {
        None | Some("zstd") => Algorithm::Zstd,
        Some("lz4") => Algorithm::Lz4,
        Some(other) => {
            return Err(rejected(
                ErrorCode::InvalidSnapshotCompression,
                format!("algorithm must be one of zstd or lz4, got {other:?}"),
            ));
        }
    };
    let level = value.get("level").and_then(serde_json::Value::as_i64);
    let level = match (algorithm, level) {
        (Algorithm::Zstd, None) => 1,
        (Algorithm::Lz4, None) => 0,
        (Algorithm::Zstd, Some(l)) if !(1..=19).contains(&l) => {
            return Err(rejected(
                ErrorCode::InvalidSnapshotCompression,
                format!("level must be between 1 and 19 for zstd, got {l}"),
            ));
        }
        (Algorithm::Lz4, Some(l)) if !(0..=9).contains(&l) => {
            return Err(rejected(
                ErrorCode::InvalidSnapshotCompression,
                format!("level must be between 0 and 9 for lz4, got {l}"),
            ));
        }
        (_, Some(l)) => l,
    };
    Ok(Some(Compression {
        enabled,
        algorithm,
        level,
    }))
}

/// The compressed memory file in a saved-VM directory, if there is one.
pub(crate) fn compressed_memory(dir: &Path) -> Option<PathBuf> {
    [Algorithm::Zstd, Algorithm::Lz4]
        .iter()
        .map(|a| dir.join(format!("{MEMORY}.{}", a.extension())))
        .find(|p| p.is_file())
}

/// Compresses `dir`'s `memory.bin` into `memory.bin.<ext>` (written aside, then renamed) and
/// removes the original; returns (compressed, uncompressed) sizes.
pub(crate) fn compress_memory(dir: &Path, how: Compression) -> std::io::Result<(u64, u64)> {
    let raw = dir.join(MEMORY);
    let target = dir.join(format!("{MEMORY}.{}", how.algorithm.extension()));
    let partial = target.with_extension(format!("{}.tmp", how.algorithm.extension()));
    let uncompressed = std::fs::metadata(&raw)?.len();
    let written = (|| {
        let source = BufReader::with_capacity(1 << 20, File::open(&raw)?);
        let out = BufWriter::with_capacity(1 << 20, File::create(&partial)?);
        match how.algorithm {
            Algorithm::Zstd => {
                // ruzstd's encoder panics on a write error: keep that a plain error.
                let encoded = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                    let mut out = out;
                    ruzstd::encoding::compress(
                        source,
                        &mut out,
                        ruzstd::encoding::CompressionLevel::Fastest,
                    );
                    out.flush()
                }));
                encoded.map_err(|_| std::io::Error::other("the zstd encoder failed"))??;
            }
            Algorithm::Lz4 => {
                let mut source = source;
                let mut encoder = lz4_flex::frame::FrameEncoder::new(out);
                std::io::copy(&mut source, &mut encoder)?;
                encoder.finish().map_err(std::io::Error::other)?.flush()?;
            }
        }
        File::open(&partial)?.sync_all()?;
        std::fs::rename(&partial, &target)
    })();
    if let Err(e) = written {
        let _ = std::fs::remove_file(&partial);
        return Err(e);
    }
    std::fs::remove_file(&raw)?;
    Ok((std::fs::metadata(&target)?.len(), uncompressed))
}

/// Makes sure `dir` has a plain `memory.bin` (what QEMU reads): decompresses the compressed
/// one when it is all there is, then removes it.
pub(crate) fn ensure_raw_memory(dir: &Path) -> std::io::Result<()> {
    let raw = dir.join(MEMORY);
    if raw.is_file() {
        return Ok(());
    }
    let Some(compressed) = compressed_memory(dir) else {
        return Ok(());
    };
    let partial = dir.join(format!("{MEMORY}.partial"));
    let done = (|| {
        let source = BufReader::with_capacity(1 << 20, File::open(&compressed)?);
        let mut out = BufWriter::with_capacity(1 << 20, File::create(&partial)?);
        if compressed.extension().is_some_and(|e| e == "zst") {
            let mut decoder =
                ruzstd::decoding::StreamingDecoder::new(source).map_err(std::io::Error::other)?;
            std::io::copy(&mut decoder, &mut out)?;
        } else {
            let mut decoder = lz4_flex::frame::FrameDecoder::new(source);
            std::io::copy(&mut decoder, &mut out)?;
        }
        out.flush()?;
        std::fs::rename(&partial, &raw)
    })();
    if let Err(e) = done {
        let _ = std::fs::remove_file(&partial);
        return Err(e);
    }
    std::fs::remove_file(&compressed)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn memory_round_trips_through_both_algorithms_and_levels_are_upstreams() {
        let dir = tempfile::tempdir().unwrap();
        // Compressible like guest memory: zero pages and repeated text.
        let mut memory = vec![0u8; 4 << 20];
        for (i, chunk) in memory
            .chunks_mut(4096)
            .enumerate()
            .filter(|(i, _)| i % 3 == 0)
        {
            chunk[..64].copy_from_slice(&[(i % 251) as u8; 64]);
        }
        for algorithm in [Algorithm::Zstd, Algorithm::Lz4] {
            std::fs::write(dir.path().join(MEMORY), &memory).unwrap();
            let how = Compression {
                enabled: true,
                algorithm,
                level: 1,
            };
            let (small, big) = compress_memory(dir.path(), how).unwrap();
            assert_eq!(big, memory.len() as u64);
            assert!(small < big / 10, "{algorithm:?}: {small} of {big}");
            assert!(!dir.path().join(MEMORY).exists());
            assert!(compressed_memory(dir.path()).is_some());
            ensure_raw_memory(dir.path()).unwrap();
            assert!(
                std::fs::read(dir.path().join(MEMORY)).unwrap() == memory,
                "{algorithm:?}"
            );
            assert!(compressed_memory(dir.path()).is_none());
        }
        let v = |j: serde_json::Value| parse(Some(&j));
        let message = |j| match v(j).unwrap_err() {
            EngineError::Rejected(r) => (r.code, r.message),
            other => panic!("{other}"),
        };
        assert_eq!(
            message(serde_json::json!({"enabled": false, "level": 0})),
            (
                ErrorCode::InvalidSnapshotCompression,
                "level must be between 1 and 19 for zstd, got 0".into()
            )
        );
        assert_eq!(
            message(serde_json::json!({"enabled": true, "algorithm": "lz4", "level": 12})).1,
            "level must be between 0 and 9 for lz4, got 12"
        );
        assert_eq!(
            v(serde_json::json!({"enabled": true, "algorithm": "lz4"})).unwrap(),
            Some(Compression {
                enabled: true,
                algorithm: Algorithm::Lz4,
                level: 0
            })
        );
        assert_eq!(parse(None).unwrap(), None);
    }
}
