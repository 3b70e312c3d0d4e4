//! The agent channel's host side: which channel a VM uses (recorded in its runtime dir so a
//! new engine re-attaches to the same one), and the `vhost-device-vsock` daemon that serves
//! vhost-user-vsock VMs. The daemon runs in its own process group, like QEMU, so it outlives
//! the engine; it is stopped with its VM.

use std::path::Path;
use std::process::Stdio;
use std::time::Duration;

use hypedeck_hypervisor::{AgentChannel, HypervisorError};

use crate::config::RuntimeFiles;

/// Records how the VM's agent is reached.
pub fn write_channel(files: &RuntimeFiles, channel: &AgentChannel) -> std::io::Result<()> {
    let text = match channel {
        AgentChannel::Serial(_) => "serial".to_string(),
        AgentChannel::Vsock { cid, .. } => format!("vsock {cid}"),
        AgentChannel::HybridVsock { .. } => "hybrid".to_string(),
    };
    std::fs::write(&files.channel, text)
}

/// The channel recorded for a VM (virtio-serial when none was: VMs started before vsock).
pub fn read_channel(files: &RuntimeFiles) -> AgentChannel {
    let text = std::fs::read_to_string(&files.channel).unwrap_or_default();
    let port = hypedeck_guest_init::agent_proto::AGENT_VSOCK_PORT;
    match text.trim().split_once(' ') {
        Some(("vsock", cid)) => match cid.parse() {
            Ok(cid) => AgentChannel::Vsock { cid, port },
            Err(_) => AgentChannel::Serial(files.agent.clone()),
        },
        _ if text.trim() == "hybrid" => AgentChannel::HybridVsock {
            socket: files.vsock.clone(),
            port,
        },
        _ => AgentChannel::Serial(files.agent.clone()),
    }
}

/// Starts `vhost-device-vsock` for a VM and waits for its vhost-user socket. Any daemon an
/// earlier run left behind is stopped first.
pub async fn start_daemon(
    binary: &Path,
    cid: u32,
    files: &RuntimeFiles,
) -> Result<(), HypervisorError> {
    stop_daemon(files);
    let _ = std::fs::remove_file(&files.vhost_user);
    let _ = std::fs::remove_file(&files.vsock);
    let (log, log2) =
        hypedeck_hypervisor::process::append_log(&files.vmm_log).map_err(HypervisorError::Start)?;
    let mut command = tokio::process::Command::new(binary);
    command
        .arg("--guest-cid")
        .arg(cid.to_string())
        .arg("--socket")
        .arg(&files.vhost_user)
        .arg("--uds-path")
        .arg(&files.vsock)
        .stdin(Stdio::null())
        .stdout(log)
        .stderr(log2)
        .process_group(0);
    let mut child = command.spawn().map_err(HypervisorError::Start)?;
    let Some(pid) = child.id() else {
        return Err(fail("vhost-device-vsock exited at once".into()));
    };
    std::fs::write(&files.vsock_pidfile, pid.to_string()).map_err(HypervisorError::Start)?;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    while !files.vhost_user.exists() {
        let exited = child.try_wait().ok().flatten();
        if exited.is_some() || tokio::time::Instant::now() >= deadline {
            stop_daemon(files);
            let _ = child.wait().await;
            let detail = std::fs::read_to_string(&files.vmm_log).unwrap_or_default();
            let last = detail.lines().rev().find(|l| !l.trim().is_empty());
            return Err(fail(format!(
                "vhost-device-vsock did not create its socket ({}){}",
                exited.map_or("timed out".to_string(), |s| s.to_string()),
                last.map(|l| format!(": {l}")).unwrap_or_default()
            )));
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    // Reap it whenever it ends, so it never lingers as a zombie of the engine.
    tokio::spawn(async move {
        let _ = child.wait().await;
    });
    Ok(())
}

fn fail(detail: String) -> HypervisorError {
    HypervisorError::Operation {
        operation: "start vsock device",
        detail,
    }
}

fn daemon_pid(files: &RuntimeFiles) -> Option<u32> {
    let pid = hypedeck_hypervisor::process::read_pid(&files.vsock_pidfile)?;
    // Only ours: its command line names this VM's vhost-user socket (pid reuse).
    hypedeck_hypervisor::process::is_alive(pid, &files.vhost_user.display().to_string())
        .then_some(pid)
}

/// Stops the VM's `vhost-device-vsock`, if one runs. Idempotent.
pub fn stop_daemon(files: &RuntimeFiles) {
    if let Some(pid) = daemon_pid(files) {
        crate::process::kill(pid);
        crate::process::reap(pid);
    }
    let _ = std::fs::remove_file(&files.vsock_pidfile);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn channel_round_trips_through_the_runtime_dir() {
        let dir = tempfile::tempdir().expect("tempdir");
        let files = RuntimeFiles::in_dir(dir.path());
        assert_eq!(
            read_channel(&files),
            AgentChannel::Serial(files.agent.clone())
        );
        for channel in [
            AgentChannel::Serial(files.agent.clone()),
            AgentChannel::Vsock {
                cid: 4660,
                port: 1024,
            },
            AgentChannel::HybridVsock {
                socket: files.vsock.clone(),
                port: 1024,
            },
        ] {
            write_channel(&files, &channel).expect("write");
            assert_eq!(read_channel(&files), channel);
        }
        std::fs::write(&files.channel, "vsock nonsense").expect("write");
        assert_eq!(
            read_channel(&files),
            AgentChannel::Serial(files.agent.clone())
        );
    }

    #[tokio::test]
    async fn a_daemon_that_cannot_start_is_a_clear_error() {
        let dir = tempfile::tempdir().expect("tempdir");
        let files = RuntimeFiles::in_dir(dir.path());
        let e = start_daemon(Path::new("/bin/false"), 4660, &files)
            .await
            .expect_err("no socket");
        assert!(e.to_string().contains("start vsock device failed"), "{e}");
        assert!(!files.vsock_pidfile.exists());
    }
}
