//! The helper's pidfile doubles as its liveness lock: the helper holds an exclusive `flock` on
//! it for its whole life, and the kernel drops the lock when the process dies, however it
//! dies. So "alive" is "the lock is held", which a stale pidfile (crash, reboot, pid reuse)
//! can never fake, and which needs no `/proc` (macOS has none).

use std::fs::{File, OpenOptions};
use std::io::{self, Write};
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};

/// The held lock. Dropping it (or the process ending) releases it.
#[derive(Debug)]
pub struct PidLock {
    path: PathBuf,
    file: File,
}

impl PidLock {
    /// Takes the lock on `path` (created if missing) and writes this process's pid into it.
    /// Fails with `WouldBlock` if another live process holds it.
    pub fn acquire(path: &Path) -> io::Result<PidLock> {
        let mut file = OpenOptions::new()
            .create(true)
            .truncate(false)
            .read(true)
            .write(true)
            .open(path)?;
        flock(&file, libc::LOCK_EX | libc::LOCK_NB)?;
        file.set_len(0)?;
        writeln!(file, "{}", std::process::id())?;
        file.sync_all()?;
        Ok(PidLock {
            path: path.to_path_buf(),
            file,
        })
    }

    /// Removes the pidfile (while still holding the lock, so nobody sees a live helper
    /// without one), then releases the lock.
    pub fn remove(self) {
        let _ = std::fs::remove_file(&self.path);
        drop(self.file);
    }
}

/// Whether a live process holds the lock on `path`.
pub fn is_held(path: &Path) -> bool {
    let Ok(file) = File::open(path) else {
        return false;
    };
    match flock(&file, libc::LOCK_SH | libc::LOCK_NB) {
        // Nobody holds it; our shared lock goes away with `file`.
        Ok(()) => false,
        Err(e) => e.kind() == io::ErrorKind::WouldBlock,
    }
}

/// The pid written in `path`, if any.
pub fn read_pid(path: &Path) -> Option<u32> {
    std::fs::read_to_string(path).ok()?.trim().parse().ok()
}

fn flock(file: &File, operation: libc::c_int) -> io::Result<()> {
    // SAFETY: flock(2) on a descriptor borrowed from `file`, open for the whole call; it does
    // not touch memory.
    #[allow(unsafe_code)]
    let rc = unsafe { libc::flock(file.as_raw_fd(), operation) };
    if rc == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lock_means_alive_and_stale_files_mean_dead() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("vz.pid");
        assert!(!is_held(&path), "missing file");

        // A stale pidfile naming a live pid (ours) is still dead: nobody holds the lock.
        std::fs::write(&path, format!("{}\n", std::process::id())).unwrap();
        assert!(!is_held(&path));

        let lock = PidLock::acquire(&path).unwrap();
        assert!(is_held(&path));
        assert_eq!(read_pid(&path), Some(std::process::id()));
        // flock locks belong to the open file, so a second holder conflicts even in-process.
        let second = PidLock::acquire(&path).unwrap_err();
        assert_eq!(second.kind(), io::ErrorKind::WouldBlock);

        lock.remove();
        assert!(!path.exists());
        assert!(!is_held(&path));
    }

    #[test]
    fn dropping_releases_the_lock() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("vz.pid");
        drop(PidLock::acquire(&path).unwrap());
        assert!(!is_held(&path));
        assert!(PidLock::acquire(&path).is_ok());
    }
}
