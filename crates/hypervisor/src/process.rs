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

/// What a process has used, as the kernel counts it.
#[derive(Debug, Clone, Copy, PartialEq, Default, serde::Serialize)]
pub struct Usage {
    /// CPU time in user and kernel mode, all threads (seconds).
    pub cpu_seconds: f64,
    /// Resident set size (bytes).
    pub rss_bytes: u64,
    /// Virtual memory size (bytes).
    pub vms_bytes: u64,
}

/// The CPU and memory `pid` has used (`/proc/<pid>/stat` and `statm` on Linux,
/// `proc_pidinfo` on macOS). `None`: the process is gone (or this OS has no way).
#[cfg(target_os = "linux")]
pub fn usage(pid: u32) -> Option<Usage> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let statm = std::fs::read_to_string(format!("/proc/{pid}/statm")).ok()?;
    parse_usage(&stat, &statm, clock_ticks(), page_size())
}

#[cfg(target_os = "linux")]
fn clock_ticks() -> f64 {
    // SAFETY: sysconf only reads a configuration value.
    #[allow(unsafe_code)]
    let ticks = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    if ticks > 0 { ticks as f64 } else { 100.0 }
}

#[cfg(target_os = "linux")]
fn page_size() -> u64 {
    // SAFETY: sysconf only reads a configuration value.
    #[allow(unsafe_code)]
    let size = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
    u64::try_from(size).ok().filter(|s| *s > 0).unwrap_or(4096)
}

/// `utime` and `stime` (fields 14 and 15 of `stat`, counted after the parenthesised name, which
/// may hold spaces) and `statm`'s size and resident pages.
#[cfg(any(target_os = "linux", test))]
fn parse_usage(stat: &str, statm: &str, ticks: f64, page: u64) -> Option<Usage> {
    let fields: Vec<&str> = stat.rsplit_once(')')?.1.split_whitespace().collect();
    // After the name: state is field 3, so utime (14) and stime (15) are at 11 and 12.
    let utime: u64 = fields.get(11)?.parse().ok()?;
    let stime: u64 = fields.get(12)?.parse().ok()?;
    let mut pages = statm.split_whitespace().map(|f| f.parse::<u64>().ok());
    let size = pages.next()??;
    let resident = pages.next()??;
    Some(Usage {
        cpu_seconds: (utime + stime) as f64 / ticks,
        rss_bytes: resident * page,
        vms_bytes: size * page,
    })
}

/// See the Linux version. (`mach_timebase_info` is deprecated in `libc` in favour of the `mach2`
/// crate; one call does not warrant the dependency.)
#[cfg(target_os = "macos")]
#[allow(deprecated)]
pub fn usage(pid: u32) -> Option<Usage> {
    let pid = valid(pid)?;
    // SAFETY: proc_taskinfo is plain old data; proc_pidinfo fills at most `size` bytes of it.
    #[allow(unsafe_code)]
    unsafe {
        let mut info: libc::proc_taskinfo = std::mem::zeroed();
        let size = std::mem::size_of::<libc::proc_taskinfo>() as libc::c_int;
        let got = libc::proc_pidinfo(
            pid,
            libc::PROC_PIDTASKINFO,
            0,
            (&mut info as *mut libc::proc_taskinfo).cast(),
            size,
        );
        if got != size {
            return None;
        }
        // Mach absolute time units; on Apple silicon they are not nanoseconds.
        let mut timebase: libc::mach_timebase_info = std::mem::zeroed();
        libc::mach_timebase_info(&mut timebase);
        let ratio = if timebase.denom == 0 {
            1.0
        } else {
            f64::from(timebase.numer) / f64::from(timebase.denom)
        };
        Some(Usage {
            cpu_seconds: (info.pti_total_user + info.pti_total_system) as f64 * ratio / 1e9,
            rss_bytes: info.pti_resident_size,
            vms_bytes: info.pti_virtual_size,
        })
    }
}

/// See the Linux version.
#[cfg(not(any(target_os = "linux", target_os = "macos")))]
pub fn usage(_pid: u32) -> Option<Usage> {
    None
}

#[cfg(test)]
mod usage_tests {
    #[test]
    fn stat_and_statm_give_cpu_seconds_and_memory() {
        // A name with spaces and parentheses, as a process may set.
        let stat = "4242 (qemu (sys) x) S 1 4242 4242 0 -1 4194624 5000 0 12 0 250 130 0 0 20 0 \
                    3 0 1234 4330745856 108237 18446744073709551615";
        let usage =
            super::parse_usage(stat, "1057311 108237 2000 700 0 300000 0\n", 100.0, 4096).unwrap();
        assert!((usage.cpu_seconds - 3.8).abs() < 1e-9, "{usage:?}");
        assert_eq!(usage.rss_bytes, 108_237 * 4096);
        assert_eq!(usage.vms_bytes, 1_057_311 * 4096);
        assert_eq!(super::parse_usage("garbage", "1 2", 100.0, 4096), None);
    }

    #[cfg(target_os = "linux")]
    #[test]
    fn this_process_has_used_something() {
        let usage = super::usage(std::process::id()).unwrap();
        assert!(
            usage.rss_bytes > 0 && usage.vms_bytes >= usage.rss_bytes,
            "{usage:?}"
        );
        assert_eq!(super::usage(u32::MAX), None);
    }
}
