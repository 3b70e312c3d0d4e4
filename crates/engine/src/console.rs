//! Console logs a guest cannot grow without bound: every running instance's `logs/app.log`
//! is checked once a second, and one over the cap (default [`DEFAULT_CONSOLE_LOG_MAX`],
//! `HYPEDECK_CONSOLE_LOG_MAX` for the daemon) is copied to `app.log.1` (replacing the previous
//! one) and truncated, like logrotate's `copytruncate`: every backend's VMM writes the log in
//! append mode, so its next write lands at the new end. The current run's offset moves to 0
//! and its boot markers are kept, so the state does not go back to Initializing.
//!
//! Bytes the guest writes between the copy and the truncation are lost (milliseconds); the
//! disk holds at most twice the cap per instance.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use hypedeck_model::InstanceId;

use crate::Engine;

/// The console log size at which it is rotated, unless set otherwise.
pub const DEFAULT_CONSOLE_LOG_MAX: u64 = 64 << 20;

/// How often running instances' console logs are checked.
const CHECK_EVERY: Duration = Duration::from_secs(1);

impl Engine {
    /// Sets the console log cap (bytes; at least 64 KiB).
    pub fn set_console_log_max(&self, bytes: u64) {
        self.console_log_max
            .store(bytes.max(64 * 1024), Ordering::Relaxed);
    }

    /// Checks running instances' console logs every second and rotates those over the cap,
    /// until the returned task is aborted.
    pub fn spawn_console_rotation(self: &Arc<Self>) -> tokio::task::JoinHandle<()> {
        let engine = Arc::downgrade(self);
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(CHECK_EVERY).await;
                let Some(engine) = engine.upgrade() else {
                    return;
                };
                engine.rotate_console_logs().await;
            }
        })
    }

    /// Rotates every running instance's console log that is over the cap; returns how many.
    /// An instance whose lock is held (a verb is running) is left for the next check.
    pub async fn rotate_console_logs(&self) -> usize {
        let cap = self.console_log_max.load(Ordering::Relaxed);
        let mut rotated = 0;
        for id in self.runtime.running_ids() {
            let Ok(parsed) = InstanceId::parse(&id) else {
                continue;
            };
            let log = self.paths.instance_logs(&parsed).join("app.log");
            if std::fs::metadata(&log).map_or(true, |m| m.len() <= cap) {
                continue;
            }
            let lock = self.lock_for(&id);
            let Ok(_guard) = lock.try_lock() else {
                continue;
            };
            let Ok(Some(mut record)) = self.records.get(&id) else {
                continue;
            };
            let copy = log.clone();
            let moved = tokio::task::spawn_blocking(move || copy_truncate(&copy)).await;
            let size = match moved {
                Ok(Ok(size)) => size,
                Ok(Err(e)) => {
                    tracing::warn!(%id, error = %e, "could not rotate the console log");
                    continue;
                }
                Err(_) => continue,
            };
            self.runtime.rebase_markers(&id, record.log_offset, 0);
            record.log_offset = 0;
            if let Err(e) = self.records.save(&record) {
                tracing::warn!(%id, error = %e, "could not record the console log rotation");
            }
            self.ops_log(
                &id,
                &format!("console log rotated at {size} bytes (the previous part is app.log.1)"),
            );
            rotated += 1;
        }
        rotated
    }
}

/// Copies `log` to `<log>.1` (through a temporary file) and truncates it; returns the size
/// copied.
fn copy_truncate(log: &std::path::Path) -> std::io::Result<u64> {
    let old = log.with_extension("log.1");
    let temp = log.with_extension("log.1.tmp");
    let size = std::fs::copy(log, &temp)?;
    std::fs::rename(&temp, &old)?;
    std::fs::OpenOptions::new()
        .write(true)
        .open(log)?
        .set_len(0)?;
    Ok(size)
}
