//! The QEMU process: spawn detached, find again from the pidfile, tell whether it lives.

use std::process::Stdio;

use hypedeck_hypervisor::HypervisorError;
use hypedeck_hypervisor::process::append_log;

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
    let (log, log2) = append_log(&files.vmm_log).map_err(HypervisorError::Start)?;
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
    hypedeck_hypervisor::process::read_pid(&files.pidfile)
}

/// Whether `pid` is a live (not zombie) QEMU serving this runtime dir. Guards against pid
/// reuse by checking the command line mentions the runtime dir's QMP socket.
pub fn is_alive(pid: u32, files: &RuntimeFiles) -> bool {
    hypedeck_hypervisor::process::is_alive(pid, &files.qmp.display().to_string().replace(',', ",,"))
}

pub use hypedeck_hypervisor::process::{kill, reap};
