//! The helper process: spawn detached in its own process group, wait until its control socket
//! answers, kill it. Liveness is the pidfile lock ([`crate::pidfile`]).

use std::io::{Read, Seek, SeekFrom};
use std::path::Path;
use std::process::Stdio;
use std::time::Duration;

use hypedeck_hypervisor::HypervisorError;

use crate::control::{self, Request};
use crate::plan::{Launch, RuntimeFiles};

/// How often readiness is polled.
const POLL: Duration = Duration::from_millis(50);

/// Kills a helper that has not become ready, however `start` ends (error or cancellation).
struct StartGuard(Option<tokio::process::Child>);

impl Drop for StartGuard {
    fn drop(&mut self) {
        if let Some(child) = self.0.as_mut() {
            // Tokio reaps the killed child in the background once it is dropped.
            let _ = child.start_kill();
        }
    }
}

/// Spawns `helper` for `launch` and returns its pid once its control socket answers. On error
/// (or if the future is dropped) the helper is killed; the error carries the helper's last
/// log line.
pub async fn start(
    helper: &Path,
    launch: &Launch,
    files: &RuntimeFiles,
    timeout: Duration,
) -> Result<u32, HypervisorError> {
    for stale in [&files.control, &files.vsock, &files.pidfile] {
        let _ = std::fs::remove_file(stale);
    }
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&files.log)
        .map_err(HypervisorError::Start)?;
    let log_start = log.metadata().map(|m| m.len()).unwrap_or(0);
    let log2 = log.try_clone().map_err(HypervisorError::Start)?;
    let mut command = tokio::process::Command::new(helper);
    command
        .args(launch.args())
        .stdin(Stdio::null())
        .stdout(log)
        .stderr(log2)
        // Its own process group: a Ctrl-C or a signal to the app's group never reaches VMs.
        .process_group(0)
        .kill_on_drop(false);
    let child = command.spawn().map_err(HypervisorError::Start)?;
    let mut guard = StartGuard(Some(child));
    let fail = |detail: String| HypervisorError::Operation {
        operation: "start vz",
        detail,
    };
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        let Some(child) = guard.0.as_mut() else {
            return Err(fail("helper lost".into()));
        };
        if let Some(status) = child.try_wait().map_err(HypervisorError::Start)? {
            guard.0 = None;
            let why = last_log_line(&files.log, log_start)
                .unwrap_or_else(|| "no output (see the helper's log)".into());
            return Err(fail(format!(
                "{} exited with {status}: {why}",
                helper.display()
            )));
        }
        if control::request(&files.control, &Request::State, Duration::from_secs(1))
            .await
            .is_ok()
        {
            break;
        }
        if tokio::time::Instant::now() >= deadline {
            return Err(fail(format!(
                "the helper did not open its control socket within {}s",
                timeout.as_secs()
            )));
        }
        tokio::time::sleep(POLL).await;
    }
    let pid = guard.0.as_ref().and_then(|c| c.id());
    // Ready: from here on the helper outlives this process; dropping the child detaches it.
    guard.0 = None;
    pid.ok_or_else(|| fail("the helper has no pid".into()))
}

/// The last non-empty line the helper wrote to its log after `from`.
fn last_log_line(log: &Path, from: u64) -> Option<String> {
    let mut file = std::fs::File::open(log).ok()?;
    file.seek(SeekFrom::Start(from)).ok()?;
    let mut text = String::new();
    file.take(64 * 1024).read_to_string(&mut text).ok()?;
    text.lines()
        .rev()
        .map(str::trim)
        .find(|l| !l.is_empty())
        .map(str::to_string)
}

pub use hypedeck_hypervisor::process::{kill, reap};

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn last_log_line_reads_only_this_run() {
        let dir = tempfile::tempdir().unwrap();
        let log = dir.path().join("vmm.log");
        std::fs::write(&log, "old run: error A\n").unwrap();
        let from = std::fs::metadata(&log).unwrap().len();
        assert_eq!(last_log_line(&log, from), None);
        std::fs::write(&log, "old run: error A\nstarting\nerror: boom\n\n").unwrap();
        assert_eq!(last_log_line(&log, from).as_deref(), Some("error: boom"));
        assert_eq!(last_log_line(&dir.path().join("missing"), 0), None);
    }
}
