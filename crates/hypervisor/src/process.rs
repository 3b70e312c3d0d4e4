//! Helpers every backend needs for its detached VMM (or helper) processes: is a pid still
//! ours and alive, kill it, reap it, read its pidfile, and open the log its output goes to.
//! VMMs run in their own process group so they outlive the engine; after an engine restart
//! they are no longer its children, so liveness is read from `/proc` (Linux) or `kill(pid, 0)`.

use std::fs::File;
use std::path::Path;

/// A pid that names one process (0, 1 and values past `i32::MAX` address groups or init).
fn valid(pid: u32) -> Option<libc::pid_t> {
    libc::pid_t::try_from(pid).ok().filter(|p| *p > 1)
}

/// Whether `pid` is a live (not zombie) process whose command line mentions `needle` (an API
/// socket, a runtime dir), which rules out a reused pid.
#[cfg(target_os = "linux")]
pub fn is_alive(pid: u32, needle: &str) -> bool {
    let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
        return false;
    };
    // State is the first field after the parenthesised command name.
    let state = stat
        .rsplit_once(')')
        .and_then(|(_, rest)| rest.split_whitespace().next());
    if matches!(state, Some("Z") | Some("X") | None) {
        return false;
    }
    let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
    String::from_utf8_lossy(&cmdline).contains(needle)
}

/// Whether `pid` exists (no `/proc` here: the command line cannot be checked).
#[cfg(not(target_os = "linux"))]
pub fn is_alive(pid: u32, _needle: &str) -> bool {
    let Some(pid) = valid(pid) else { return false };
    // SAFETY: kill(2) with signal 0 only checks the pid.
    #[allow(unsafe_code)]
    unsafe {
        libc::kill(pid, 0) == 0
    }
}

/// Sends SIGKILL to `pid` (which the caller checked is its process).
pub fn kill(pid: u32) {
    let Some(pid) = valid(pid) else { return };
    // SAFETY: kill(2) on one pid; no memory is involved.
    #[allow(unsafe_code)]
    unsafe {
        libc::kill(pid, libc::SIGKILL);
    }
}

/// Reaps `pid` if it is an exited child of this process; harmless otherwise.
pub fn reap(pid: u32) {
    let Some(pid) = valid(pid) else { return };
    // SAFETY: non-blocking waitpid(2) on one pid with a valid status pointer.
    #[allow(unsafe_code)]
    unsafe {
        let mut status = 0;
        libc::waitpid(pid, &mut status, libc::WNOHANG);
    }
}

/// The pid in a pidfile, if any.
pub fn read_pid(pidfile: &Path) -> Option<u32> {
    std::fs::read_to_string(pidfile).ok()?.trim().parse().ok()
}

/// The log a detached process writes its stdout and stderr to (appending): one handle each.
pub fn append_log(path: &Path) -> std::io::Result<(File, File)> {
    let out = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)?;
    let err = out.try_clone()?;
    Ok((out, err))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn liveness_needs_the_command_line_and_rejects_group_pids() {
        let me = std::process::id();
        let exe = std::env::current_exe().expect("exe");
        assert!(is_alive(me, &exe.display().to_string()));
        if cfg!(target_os = "linux") {
            assert!(!is_alive(me, "/no/such/needle"));
        }
        assert!(valid(0).is_none() && valid(1).is_none() && valid(u32::MAX).is_none());
        assert_eq!(read_pid(Path::new("/no/such/pidfile")), None);
        // A zero pid is never signalled (it would address our own process group).
        kill(0);
        reap(0);
    }

    #[test]
    fn a_log_is_appended_to() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("vmm.log");
        std::fs::write(&path, "before\n").expect("write");
        let (mut out, mut err) = append_log(&path).expect("open");
        use std::io::Write;
        writeln!(out, "out").expect("out");
        writeln!(err, "err").expect("err");
        assert_eq!(
            std::fs::read_to_string(&path).expect("read"),
            "before\nout\nerr\n"
        );
    }
}
