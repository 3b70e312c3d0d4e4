//! start / stop / wait, with upstream's allowed-state rules, no-ops and 409 messages.

use std::time::Duration;

use hypedeck_model::{Instance, InstanceId, InstanceState};
use time::OffsetDateTime;

use crate::{Engine, EngineError};

/// How long stop waits for the guest to power off before killing the VMM (upstream: 5 s).
pub const STOP_TIMEOUT: Duration = Duration::from_secs(5);

/// Longest `wait` (upstream clamps to 5 minutes).
pub const MAX_WAIT: Duration = Duration::from_secs(300);

/// Optional overrides for `start`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct StartOverrides {
    /// Entrypoint override.
    pub entrypoint: Option<Vec<String>>,
    /// Cmd override.
    pub cmd: Option<Vec<String>>,
}

impl StartOverrides {
    fn is_empty(&self) -> bool {
        self.entrypoint.is_none() && self.cmd.is_none()
    }
}

/// Result of a wait.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WaitOutcome {
    /// State when the wait ended.
    pub state: InstanceState,
    /// Why the state is Unknown, if it is.
    pub state_error: Option<String>,
    /// The deadline passed first.
    pub timed_out: bool,
}

impl Engine {
    /// Starts a Stopped instance. Running/Initializing without overrides is a no-op.
    pub async fn start(
        &self,
        id_or_name: &str,
        overrides: StartOverrides,
    ) -> Result<Instance, EngineError> {
        let (_guard, mut record, observed) = self.lock_and_observe(id_or_name).await?;
        match observed.state {
            InstanceState::Stopped => {}
            InstanceState::Running | InstanceState::Initializing if overrides.is_empty() => {
                return self.render(&record, &observed).await;
            }
            other => {
                return Err(EngineError::InvalidState(format!(
                    "cannot start from state {other}, must be Stopped"
                )));
            }
        }
        if let Some(ep) = overrides.entrypoint {
            record.entrypoint = Some(ep);
        }
        if let Some(cmd) = overrides.cmd {
            record.cmd = Some(cmd);
        }
        // Re-read the exit of the previous run before it is cleared.
        self.ops_log(&record.id, "start requested");
        self.boot(&mut record).await?;
        let observed = self.observe(&mut record).await;
        self.render(&record, &observed).await
    }

    /// Stops a Running/Initializing instance: graceful power-off, then kill after
    /// [`STOP_TIMEOUT`]. Stopped is a no-op.
    pub async fn stop(&self, id_or_name: &str) -> Result<Instance, EngineError> {
        let (_guard, mut record, observed) = self.lock_and_observe(id_or_name).await?;
        match observed.state {
            InstanceState::Stopped => return self.render(&record, &observed).await,
            InstanceState::Running | InstanceState::Initializing => {}
            other => {
                return Err(EngineError::InvalidState(format!(
                    "cannot stop from state {other}, must be Running or Initializing"
                )));
            }
        }
        self.ops_log(&record.id, "stop requested");
        if let Some(vm) = self.runtime.vm(&record.id) {
            if vm.request_shutdown().await.is_ok() {
                let deadline = tokio::time::Instant::now() + STOP_TIMEOUT;
                while vm.is_alive().await && tokio::time::Instant::now() < deadline {
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            }
            vm.kill().await?;
            self.runtime.ended(&record.id);
        }
        self.unregister_egress(&record.id).await;
        self.detach_network(&record.id).await;
        self.settle_exit(&mut record);
        record.stopped_at = Some(OffsetDateTime::now_utc());
        self.records.save(&record)?;
        self.ops_log(&record.id, "vm stopped");
        let observed = self.observe(&mut record).await;
        self.render(&record, &observed).await
    }

    /// Reads the exit sentinel of the last run into the record (if the guest printed one).
    pub(crate) fn settle_exit(&self, record: &mut hypedeck_store::InstanceRecord) {
        let Ok(id) = InstanceId::parse(&record.id) else {
            return;
        };
        let log = self.paths.instance_logs(&id).join("app.log");
        // Only this run's output: an earlier run's sentinel is not this run's exit.
        if let Some((code, message)) = log_since(&log, record.log_offset, 64 * 1024)
            .and_then(|t| hypedeck_guest_init::parse_exit_line(&t))
        {
            record.exit_code = Some(code);
            record.exit_message = Some(message);
        }
    }

    /// Waits until the instance reaches `target`, a state it cannot leave on its own, or the
    /// timeout (clamped to [`MAX_WAIT`]).
    pub async fn wait(
        &self,
        id_or_name: &str,
        target: InstanceState,
        timeout: Duration,
    ) -> Result<WaitOutcome, EngineError> {
        let deadline = tokio::time::Instant::now() + timeout.min(MAX_WAIT);
        loop {
            let mut record = self.resolve(id_or_name)?;
            let observed = self.observe(&mut record).await;
            let terminal = match observed.state {
                s if s == target => true,
                InstanceState::Unknown => true,
                InstanceState::Stopped
                | InstanceState::Standby
                | InstanceState::Shutdown
                | InstanceState::Paused => true,
                _ => false,
            };
            if terminal {
                return Ok(WaitOutcome {
                    state: observed.state,
                    state_error: observed.state_error,
                    timed_out: false,
                });
            }
            if tokio::time::Instant::now() >= deadline {
                return Ok(WaitOutcome {
                    state: observed.state,
                    state_error: observed.state_error,
                    timed_out: true,
                });
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

/// A log's text from byte `start` on, at most its last `max` bytes (`None` if unreadable).
pub(crate) fn log_since(path: &std::path::Path, start: u64, max: u64) -> Option<String> {
    use std::io::{Read, Seek, SeekFrom};
    let mut f = std::fs::File::open(path).ok()?;
    let len = f.metadata().ok()?.len();
    f.seek(SeekFrom::Start(start.max(len.saturating_sub(max))))
        .ok()?;
    let mut buf = Vec::new();
    f.read_to_end(&mut buf).ok()?;
    Some(String::from_utf8_lossy(&buf).into_owned())
}
