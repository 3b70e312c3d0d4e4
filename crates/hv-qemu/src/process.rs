//! The QEMU process: spawn detached, find again from the pidfile, tell whether it lives.

use std::process::Stdio;

use hypedeck_hypervisor::HypervisorError;

use crate::config::RuntimeFiles;

/// Starts QEMU with `-daemonize`: returns once QEMU has set up its sockets and detached (or
/// failed, with its error output in `vmm.log`).
pub async fn spawn(
    binary: &str,
    argv: &[String],
    files: &RuntimeFiles,
) -> Result<u32, HypervisorError> {
    let _ = std::fs::remove_file(&files.pidfile);
    let _ = std::fs::remove_file(&files.qmp);
    let _ = std::fs::remove_file(&files.control);
    let _ = std::fs::remove_file(&files.agent);
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&files.vmm_log)
        .map_err(HypervisorError::Start)?;
    let log2 = log.try_clone().map_err(HypervisorError::Start)?;
    let mut command = tokio::process::Command::new(binary);
    command
        .args(argv)
        .stdin(Stdio::null())
        .stdout(log)
        .stderr(log2);
    #[cfg(unix)]
    command.process_group(0);
    let status = command.status().await.map_err(HypervisorError::Start)?;
    if !status.success() {
        let detail = std::fs::read_to_string(&files.vmm_log).unwrap_or_default();
        let last = detail
            .lines()
            .rev()
            .find(|l| !l.trim().is_empty())
            .unwrap_or("")
            .to_string();
        return Err(HypervisorError::Operation {
            operation: "start qemu",
            detail: format!("{binary} exited with {status}: {last}"),
        });
    }
    read_pid(files).ok_or_else(|| HypervisorError::Operation {
        operation: "start qemu",
        detail: "qemu did not write its pidfile".into(),
    })
}

/// The pid QEMU wrote, if any.
pub fn read_pid(files: &RuntimeFiles) -> Option<u32> {
    std::fs::read_to_string(&files.pidfile)
        .ok()?
        .trim()
        .parse()
        .ok()
}

/// Whether `pid` is a live (not zombie) QEMU serving this runtime dir. Guards against pid
/// reuse by checking the command line mentions the runtime dir's QMP socket.
pub fn is_alive(pid: u32, files: &RuntimeFiles) -> bool {
    let stat = match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(s) => s,
        Err(_) => return false,
    };
    // State is the first field after the parenthesised command name.
    let state = stat
        .rsplit_once(')')
        .and_then(|(_, rest)| rest.split_whitespace().next());
    if matches!(state, Some("Z") | Some("X") | None) {
        return false;
    }
    let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
    let needle = files.qmp.display().to_string().replace(',', ",,");
    String::from_utf8_lossy(&cmdline).contains(&needle)
}

/// Sends SIGKILL to `pid`.
pub fn kill(pid: u32) {
    #[cfg(unix)]
    // SAFETY: kill(2) with a pid we verified belongs to our QEMU.
    #[allow(unsafe_code)]
    unsafe {
        libc::kill(pid as libc::pid_t, libc::SIGKILL);
    }
}

/// Reaps `pid` if it is our child and has exited (avoids zombies when the engine started it
/// without `-daemonize` semantics). Harmless otherwise.
pub fn reap(pid: u32) {
    #[cfg(unix)]
    // SAFETY: non-blocking waitpid on a specific pid.
    #[allow(unsafe_code)]
    unsafe {
        let mut status = 0;
        libc::waitpid(pid as libc::pid_t, &mut status, libc::WNOHANG);
    }
}
