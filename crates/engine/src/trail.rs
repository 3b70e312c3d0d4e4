//! The credential usage trail on disk: one JSON line per [`UsageEvent`] in the instance's
//! `credentials.jsonl`, moved to `credentials.jsonl.1` when it passes [`TRAIL_MAX_BYTES`], so an
//! instance keeps at most about twice that. Events name credentials and fingerprints, never
//! values (the proxy builds them that way).
//!
//! The proxy hands events to [`CredentialTrail::record`] on its request path; one background
//! thread writes them, so a request never waits for the disk. When the queue is full events
//! are dropped and counted in the log rather than slowing traffic down.

use std::fs::{File, OpenOptions};
use std::io::{BufRead, BufReader, Write};
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{SyncSender, TrySendError, sync_channel};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

use hypedeck_egress::{UsageEvent, UsageSink};
use hypedeck_model::InstanceId;
use hypedeck_store::Paths;

/// Size at which the trail file is rotated.
pub const TRAIL_MAX_BYTES: u64 = 256 * 1024;

/// Events waiting for the writer.
const QUEUE: usize = 4096;

/// How long [`CredentialTrail::settle`] waits for the writer at most (a stuck disk must not
/// hang a read of the trail).
const SETTLE_MAX: Duration = Duration::from_secs(2);

/// The proxy's sink: queues events for the writer thread.
#[derive(Debug)]
pub struct CredentialTrail {
    tx: SyncSender<(String, UsageEvent)>,
    dropped: AtomicU64,
    /// Events queued so far (the writer's progress is in `written`).
    queued: AtomicU64,
    written: Arc<Written>,
}

/// The writer's count of events handled (written or not), and a wake-up for
/// [`CredentialTrail::settle`].
#[derive(Debug, Default)]
struct Written {
    count: Mutex<u64>,
    changed: Condvar,
}

impl CredentialTrail {
    /// Starts the writer thread for the data dir's instances.
    pub fn start(paths: Paths) -> std::io::Result<CredentialTrail> {
        let (tx, rx) = sync_channel::<(String, UsageEvent)>(QUEUE);
        let written = Arc::new(Written::default());
        let progress = written.clone();
        std::thread::Builder::new()
            .name("credential-trail".into())
            .spawn(move || {
                for (instance, event) in rx {
                    if let Err(error) = append(&paths, &instance, &event) {
                        // A deleted instance's directory is gone: nothing to record.
                        tracing::debug!(%instance, %error, "credential event not written");
                    }
                    let mut count = progress.count.lock().unwrap_or_else(|p| p.into_inner());
                    *count += 1;
                    progress.changed.notify_all();
                }
            })?;
        Ok(CredentialTrail {
            tx,
            dropped: AtomicU64::new(0),
            queued: AtomicU64::new(0),
            written,
        })
    }
}

impl UsageSink for CredentialTrail {
    fn record(&self, instance: &str, event: UsageEvent) {
        // Counted before the send, so the writer's count never passes it.
        self.queued.fetch_add(1, Ordering::SeqCst);
        match self.tx.try_send((instance.to_string(), event)) {
            Ok(()) => {}
            Err(TrySendError::Full(_)) => {
                self.queued.fetch_sub(1, Ordering::SeqCst);
                let n = self.dropped.fetch_add(1, Ordering::Relaxed) + 1;
                if n == 1 || n.is_multiple_of(1000) {
                    tracing::warn!(dropped = n, "credential trail queue full; events dropped");
                }
            }
            Err(TrySendError::Disconnected(_)) => {
                self.queued.fetch_sub(1, Ordering::SeqCst);
            }
        }
    }

    fn settle(&self) {
        let target = self.queued.load(Ordering::SeqCst);
        let deadline = Instant::now() + SETTLE_MAX;
        let mut count = self.written.count.lock().unwrap_or_else(|p| p.into_inner());
        while *count < target {
            let Some(left) = deadline.checked_duration_since(Instant::now()) else {
                tracing::warn!(
                    behind = target - *count,
                    "credential trail writer is behind"
                );
                return;
            };
            count = self
                .written
                .changed
                .wait_timeout(count, left)
                .unwrap_or_else(|p| p.into_inner())
                .0;
        }
    }
}

/// Appends one event to the instance's trail, rotating first when the file is full. Never
/// creates the instance's directory.
fn append(paths: &Paths, instance: &str, event: &UsageEvent) -> std::io::Result<()> {
    let id = InstanceId::parse(instance)
        .map_err(|_| std::io::Error::new(std::io::ErrorKind::InvalidInput, "bad instance id"))?;
    let path = paths.credential_events(&id);
    if std::fs::metadata(&path).is_ok_and(|m| m.len() >= TRAIL_MAX_BYTES) {
        std::fs::rename(&path, rotated(&path))?;
    }
    let mut line = serde_json::to_vec(event).map_err(std::io::Error::other)?;
    line.push(b'\n');
    let mut options = OpenOptions::new();
    options.append(true).create(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    options.open(&path)?.write_all(&line)
}

fn rotated(path: &Path) -> std::path::PathBuf {
    let mut name = path.as_os_str().to_owned();
    name.push(".1");
    name.into()
}

/// The instance's events, oldest first (the rotated file, then the current one). Lines that
/// do not parse (a torn write after a crash) are skipped.
pub fn read(paths: &Paths, id: &InstanceId) -> Vec<UsageEvent> {
    let path = paths.credential_events(id);
    let mut events = Vec::new();
    for file in [rotated(&path), path] {
        let Ok(f) = File::open(&file) else { continue };
        events.extend(
            BufReader::new(f)
                .lines()
                .map_while(Result::ok)
                .filter_map(|l| serde_json::from_str::<UsageEvent>(&l).ok()),
        );
    }
    events
}

#[cfg(test)]
mod tests {
    use super::*;
    use hypedeck_egress::Outcome;

    fn event(n: u16) -> UsageEvent {
        UsageEvent {
            time: time::OffsetDateTime::UNIX_EPOCH,
            credential: "KEY".into(),
            fingerprint: "0badf00d".into(),
            host: "api.example.com".into(),
            method: "GET".into(),
            status: Some(n),
            outcome: Outcome::Injected,
            reason: None,
        }
    }

    #[test]
    fn rotates_at_the_limit_and_reads_back_in_order() {
        let dir = tempfile::tempdir().unwrap();
        let paths = Paths::new(dir.path());
        let id = InstanceId::parse("abcdefghijklmnopqrstuvwx").unwrap();
        std::fs::create_dir_all(paths.instance_dir(&id)).unwrap();
        let per_line = serde_json::to_vec(&event(200)).unwrap().len() as u64 + 1;
        let n = (TRAIL_MAX_BYTES / per_line) * 2 + 10;
        for i in 0..n {
            append(
                &paths,
                id.as_str(),
                &event(u16::try_from(100 + i % 500).unwrap()),
            )
            .unwrap();
        }
        let file = paths.credential_events(&id);
        assert!(std::fs::metadata(&file).unwrap().len() < TRAIL_MAX_BYTES);
        assert!(std::fs::metadata(rotated(&file)).unwrap().len() <= TRAIL_MAX_BYTES + per_line);
        let events = read(&paths, &id);
        assert!(
            events.len() as u64 <= (2 * TRAIL_MAX_BYTES) / per_line + 2,
            "bounded"
        );
        // The newest is last.
        assert_eq!(
            events.last().unwrap().status,
            Some(u16::try_from(100 + (n - 1) % 500).unwrap())
        );
        // A torn line is skipped.
        std::fs::OpenOptions::new()
            .append(true)
            .open(&file)
            .unwrap()
            .write_all(b"{\"time\":")
            .unwrap();
        assert_eq!(read(&paths, &id).len(), events.len());
    }

    #[test]
    fn a_deleted_instance_gets_no_directory_back() {
        let dir = tempfile::tempdir().unwrap();
        let paths = Paths::new(dir.path());
        let id = InstanceId::parse("abcdefghijklmnopqrstuvwx").unwrap();
        assert!(append(&paths, id.as_str(), &event(200)).is_err());
        assert!(!paths.instance_dir(&id).exists());
        assert!(append(&paths, "../escape", &event(200)).is_err());
    }

    #[test]
    fn settle_makes_every_recorded_event_readable() {
        use hypedeck_egress::UsageSink;
        let dir = tempfile::tempdir().unwrap();
        let paths = Paths::new(dir.path());
        let id = InstanceId::parse("abcdefghijklmnopqrstuvwx").unwrap();
        std::fs::create_dir_all(paths.instance_dir(&id)).unwrap();
        let trail = CredentialTrail::start(paths.clone()).unwrap();
        for round in 0..20u16 {
            for i in 0..50 {
                trail.record(id.as_str(), event(100 + round * 50 + i));
            }
            trail.settle();
            // Every event recorded before the call, the newest included, reads back.
            let events = read(&paths, &id);
            assert_eq!(events.len(), usize::from(round + 1) * 50);
            assert_eq!(events.last().unwrap().status, Some(100 + round * 50 + 49));
        }
    }
}
