//! The exclusive engine lock: one engine per data dir.

use std::fs::{self, File, OpenOptions};
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::Path;

use crate::{Paths, StoreError};

/// Who holds a data dir.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LockHolder {
    /// Process id written by the holder.
    pub pid: u32,
}

/// Holds the data dir's engine lock until dropped (the OS releases it if the process dies).
#[derive(Debug)]
pub struct EngineLock {
    _file: File,
}

impl EngineLock {
    /// Takes the lock without waiting. A second engine gets [`StoreError::Locked`].
    pub fn acquire(paths: &Paths) -> Result<EngineLock, StoreError> {
        crate::create_private_dir(paths.root())?;
        let path = paths.engine_lock();
        let mut file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&path)
            .map_err(|source| StoreError::Write {
                path: path.clone(),
                source,
            })?;
        // `holder()` probes with a momentary shared lock; retry briefly so such a probe never
        // makes a starting engine give up.
        let mut attempts = 0;
        loop {
            match file.try_lock() {
                Ok(()) => break,
                Err(fs::TryLockError::WouldBlock) if attempts < 10 => {
                    attempts += 1;
                    std::thread::sleep(std::time::Duration::from_millis(20));
                }
                Err(fs::TryLockError::WouldBlock) => {
                    return Err(StoreError::Locked {
                        path: paths.root().to_path_buf(),
                        holder: read_holder(&path),
                    });
                }
                Err(fs::TryLockError::Error(source)) => {
                    return Err(StoreError::Write { path, source });
                }
            }
        }
        let write = |file: &mut File| -> std::io::Result<()> {
            file.set_len(0)?;
            file.seek(SeekFrom::Start(0))?;
            writeln!(file, "{}", std::process::id())?;
            file.sync_all()
        };
        write(&mut file).map_err(|source| StoreError::Write { path, source })?;
        Ok(EngineLock { _file: file })
    }

    /// Whether some process holds the lock right now (without taking it).
    pub fn holder(paths: &Paths) -> Option<LockHolder> {
        let path = paths.engine_lock();
        let file = File::open(&path).ok()?;
        match file.try_lock_shared() {
            Ok(()) => {
                let _ = file.unlock();
                None
            }
            Err(_) => read_holder(&path).or(Some(LockHolder { pid: 0 })),
        }
    }
}

fn read_holder(path: &Path) -> Option<LockHolder> {
    let mut text = String::new();
    File::open(path).ok()?.read_to_string(&mut text).ok()?;
    text.trim().parse().ok().map(|pid| LockHolder { pid })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn second_engine_gets_a_clear_error_and_can_take_over_after_release() {
        let dir = tempfile::tempdir().unwrap();
        let paths = Paths::new(dir.path().join("data"));
        let first = EngineLock::acquire(&paths).unwrap();
        assert_eq!(
            EngineLock::holder(&paths),
            Some(LockHolder {
                pid: std::process::id()
            })
        );
        let err = EngineLock::acquire(&paths).unwrap_err();
        let text = err.to_string();
        assert!(
            text.contains("is in use by another hypedeck engine"),
            "{text}"
        );
        assert!(
            text.contains(&format!("pid {}", std::process::id())),
            "{text}"
        );
        drop(first);
        assert_eq!(EngineLock::holder(&paths), None);
        let _again = EngineLock::acquire(&paths).unwrap();
    }
}
