//! The Hypedeck data dir on disk.
//!
//! This crate is the only code that spells a file name. It owns:
//! - [`Paths`]: every path under the data dir;
//! - [`write_atomic`]: tmp file + fsync + rename + directory fsync, so a crash leaves either the
//!   old or the new file, never a torn one;
//! - [`InstanceRecord`]: the versioned `metadata.json` of one instance (`schema_version`);
//! - [`EngineLock`]: an exclusive lock so only one engine owns a data dir.
//!
//! Invariants: instance directories are named by validated ids only (no path traversal);
//! metadata never holds a secret value, only keychain account names.

mod lock;
mod paths;
mod record;

use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};

pub use lock::{EngineLock, LockHolder};
pub use paths::{DATA_DIR_ENV, Paths, default_data_dir};
pub use record::{
    BootRecord, EgressRecord, InstanceRecord, NetworkRecord, PinnedAddress, RecordCache,
    SCHEMA_VERSION, SecretRef,
};

/// Errors of the store.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// Creating or opening a directory failed.
    #[error("prepare directory {path}")]
    CreateDir {
        /// The directory.
        path: PathBuf,
        /// Cause.
        #[source]
        source: std::io::Error,
    },
    /// Writing a file failed.
    #[error("write {path}")]
    Write {
        /// The file.
        path: PathBuf,
        /// Cause.
        #[source]
        source: std::io::Error,
    },
    /// Reading a file failed.
    #[error("read {path}")]
    Read {
        /// The file.
        path: PathBuf,
        /// Cause.
        #[source]
        source: std::io::Error,
    },
    /// A metadata file is not valid JSON of the expected shape.
    #[error("decode {path}")]
    Decode {
        /// The file.
        path: PathBuf,
        /// Cause.
        #[source]
        source: serde_json::Error,
    },
    /// A metadata file was written by a newer Hypedeck.
    #[error("{path} has schema_version {found}, newer than this build understands ({supported})")]
    SchemaTooNew {
        /// The file.
        path: PathBuf,
        /// Version found.
        found: u32,
        /// Newest version this build reads.
        supported: u32,
    },
    /// Another engine owns the data dir.
    #[error("data dir {path} is in use by another hypedeck engine{}", holder_suffix(.holder))]
    Locked {
        /// The data dir.
        path: PathBuf,
        /// Who holds it, when known.
        holder: Option<LockHolder>,
    },
    /// A file name that is not a valid instance id.
    #[error("invalid instance id")]
    InvalidId,
}

fn holder_suffix(holder: &Option<LockHolder>) -> String {
    match holder {
        Some(h) => format!(" (pid {})", h.pid),
        None => String::new(),
    }
}

/// Creates `dir` and its parents with owner-only permissions where the platform supports it.
pub fn create_private_dir(dir: &Path) -> Result<(), StoreError> {
    let mut builder = fs::DirBuilder::new();
    builder.recursive(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::DirBuilderExt;
        builder.mode(0o700);
    }
    builder.create(dir).map_err(|source| StoreError::CreateDir {
        path: dir.to_path_buf(),
        source,
    })
}

/// Writes `bytes` to `path` atomically: a temporary file in the same directory is written and
/// fsynced, renamed over `path`, then the directory is fsynced. Readers see the old or the new
/// content, never a mix.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<(), StoreError> {
    let err = |source| StoreError::Write {
        path: path.to_path_buf(),
        source,
    };
    let dir = path
        .parent()
        .ok_or_else(|| err(std::io::ErrorKind::InvalidInput.into()))?;
    let file_name = path
        .file_name()
        .ok_or_else(|| err(std::io::ErrorKind::InvalidInput.into()))?
        .to_string_lossy()
        .into_owned();
    // Unique per write, also between threads of one process, and never an existing file: two
    // writers of one path must not share (and truncate) one temporary file.
    let mut random = [0u8; 8];
    getrandom::fill(&mut random).map_err(|e| err(std::io::Error::other(e.to_string())))?;
    let tmp = dir.join(format!(
        ".{file_name}.tmp-{}-{}",
        std::process::id(),
        u64::from_le_bytes(random)
    ));
    let result = (|| {
        let mut options = fs::OpenOptions::new();
        options.write(true).create_new(true);
        #[cfg(unix)]
        {
            use std::os::unix::fs::OpenOptionsExt;
            options.mode(0o600);
        }
        let mut file = options.open(&tmp)?;
        file.write_all(bytes)?;
        file.sync_all()?;
        drop(file);
        fs::rename(&tmp, path)?;
        fs::File::open(dir)?.sync_all()
    })();
    if result.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    result.map_err(err)
}

/// Whether `name` is a temporary file [`write_atomic`] makes (`.<name>.tmp-<pid>-<random>`,
/// or `.<name>.tmp-<pid>` from earlier versions).
pub fn is_temp_file(name: &str) -> bool {
    let digits = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit());
    name.starts_with('.')
        && name.rsplit_once(".tmp-").is_some_and(|(_, rest)| {
            let (pid, random) = rest.split_once('-').unwrap_or((rest, "0"));
            digits(pid) && digits(random)
        })
}

/// Removes the temporary files a crash left in `dir` (not below it). Only for a dir no live
/// writer uses (the engine holds the data dir's lock and has not started serving). Returns
/// how many were removed.
pub fn remove_temp_files(dir: &Path) -> usize {
    let Ok(entries) = fs::read_dir(dir) else {
        return 0;
    };
    entries
        .flatten()
        .filter(|e| e.file_name().to_str().is_some_and(is_temp_file))
        .filter(|e| fs::remove_file(e.path()).is_ok())
        .count()
}

/// Serializes `value` as pretty JSON and writes it with [`write_atomic`].
pub fn write_json<T: serde::Serialize>(path: &Path, value: &T) -> Result<(), StoreError> {
    let mut bytes = serde_json::to_vec_pretty(value).map_err(|source| StoreError::Decode {
        path: path.to_path_buf(),
        source,
    })?;
    bytes.push(b'\n');
    write_atomic(path, &bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn atomic_write_replaces_whole_file_and_leaves_no_tmp() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("metadata.json");
        write_atomic(&path, b"first version, long content").unwrap();
        write_atomic(&path, b"second").unwrap();
        assert_eq!(fs::read(&path).unwrap(), b"second");
        let names: Vec<_> = fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        assert_eq!(names, vec!["metadata.json".to_string()]);
    }

    #[test]
    fn temp_files_a_crash_left_are_recognised_and_removed() {
        let dir = tempfile::tempdir().unwrap();
        for name in [
            ".metadata.json.tmp-4242",
            ".engine.json.tmp-7-1234567890",
            "metadata.json",
            ".hidden",
            "x.tmp-1",
            ".a.tmp-",
        ] {
            fs::write(dir.path().join(name), b"x").unwrap();
        }
        assert_eq!(remove_temp_files(dir.path()), 2);
        let mut left: Vec<String> = fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        left.sort();
        assert_eq!(left, [".a.tmp-", ".hidden", "metadata.json", "x.tmp-1"]);
    }

    /// Two writers of one file in one process (two pollers saving a record) must not share a
    /// temporary file: every read sees one whole version, and nothing is left behind.
    #[test]
    fn concurrent_writers_in_one_process_never_tear_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("metadata.json");
        let versions: Vec<Vec<u8>> = (0..16u8)
            .map(|i| vec![b'a' + i; 1000 + 997 * usize::from(i)])
            .collect();
        write_atomic(&path, &versions[0]).unwrap();
        let torn = std::sync::atomic::AtomicUsize::new(0);
        std::thread::scope(|scope| {
            for version in &versions {
                let (path, torn) = (&path, &torn);
                scope.spawn(move || {
                    for _ in 0..50 {
                        // A failed write is allowed (it says so); a torn file is not.
                        let _ = write_atomic(path, version);
                        let now = fs::read(path).unwrap();
                        let whole = now.first().is_some_and(|&c| {
                            now.len() == 1000 + 997 * usize::from(c - b'a')
                                && now.iter().all(|&b| b == c)
                        });
                        if !whole {
                            torn.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                        }
                    }
                });
            }
        });
        assert_eq!(torn.into_inner(), 0, "a reader saw a torn file");
        let names: Vec<_> = fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        assert_eq!(names, vec!["metadata.json".to_string()]);
    }

    #[test]
    fn atomic_write_into_missing_dir_fails_cleanly() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("absent").join("metadata.json");
        let err = write_atomic(&path, b"x").unwrap_err();
        assert!(matches!(err, StoreError::Write { .. }));
        assert!(!path.exists());
    }

    #[cfg(unix)]
    #[test]
    fn metadata_and_dirs_are_private() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let sub = dir.path().join("a/b");
        create_private_dir(&sub).unwrap();
        assert_eq!(
            fs::metadata(&sub).unwrap().permissions().mode() & 0o777,
            0o700
        );
        let file = sub.join("f.json");
        write_atomic(&file, b"{}").unwrap();
        assert_eq!(
            fs::metadata(&file).unwrap().permissions().mode() & 0o777,
            0o600
        );
    }
}
