//! Snapshot schedules (upstream's `GET|PUT|DELETE /instances/{id}/snapshot-schedule`) and the
//! runner that takes them: every minute, each due schedule takes a snapshot of its instance
//! (Standby of a Running or Standby one, Stopped of a Stopped one), named
//! `<prefix>-<UTC YYYYMMDD-HHMMSS>` and tagged as scheduled, then prunes the scheduled
//! snapshots its retention no longer keeps (manual snapshots never). Upstream's rules, texts
//! and JSON; see docs/design/snapshots.md §1.7.
//!
//! Stored at `snapshot-schedules/<instance id>.json`; a schedule outlives its instance until
//! its snapshots are pruned away, as upstream's does.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use hypedeck_model::duration::{format as go_format, parse_signed};
use hypedeck_model::{
    CreateSnapshotRequest, ErrorCode, InstanceId, InstanceState, SetSnapshotScheduleRequest,
    Snapshot, SnapshotKind, SnapshotRetention, SnapshotSchedule,
};
use serde::{Deserialize, Serialize};
use time::OffsetDateTime;

use crate::{Engine, EngineError, rejected};

/// How often the runner looks for due schedules (upstream: every minute).
pub const SCHEDULE_TICK: Duration = Duration::from_secs(60);
/// The tag every scheduled snapshot carries.
pub const SCHEDULED_TAG: &str = "hypeman.scheduled";
/// The tag naming the instance whose schedule took it.
pub const SCHEDULE_INSTANCE_TAG: &str = "hypeman.schedule_instance_id";
/// The shortest interval.
const MIN_INTERVAL: Duration = Duration::from_secs(60);

/// A schedule as stored.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct Stored {
    instance_id: String,
    interval_ns: u64,
    #[serde(default)]
    name_prefix: Option<String>,
    #[serde(default)]
    metadata: BTreeMap<String, String>,
    #[serde(default)]
    max_count: u64,
    #[serde(default)]
    max_age_ns: u64,
    #[serde(with = "time::serde::rfc3339")]
    next_run_at: OffsetDateTime,
    #[serde(default, with = "time::serde::rfc3339::option")]
    last_run_at: Option<OffsetDateTime>,
    #[serde(default)]
    last_snapshot_id: Option<String>,
    #[serde(default)]
    last_error: Option<String>,
    #[serde(with = "time::serde::rfc3339")]
    created_at: OffsetDateTime,
    #[serde(with = "time::serde::rfc3339")]
    updated_at: OffsetDateTime,
}

impl Stored {
    fn interval(&self) -> Duration {
        Duration::from_nanos(self.interval_ns)
    }

    fn render(&self) -> SnapshotSchedule {
        SnapshotSchedule {
            instance_id: self.instance_id.clone(),
            interval: go_format(self.interval()),
            name_prefix: self.name_prefix.clone(),
            metadata: self.metadata.clone(),
            retention: SnapshotRetention {
                max_count: self.max_count,
                max_age: (self.max_age_ns > 0)
                    .then(|| go_format(Duration::from_nanos(self.max_age_ns))),
            },
            next_run_at: self.next_run_at,
            last_run_at: self.last_run_at,
            last_snapshot_id: self.last_snapshot_id.clone(),
            last_error: self.last_error.clone(),
            created_at: self.created_at,
            updated_at: self.updated_at,
        }
    }
}

fn invalid(message: impl Into<String>) -> EngineError {
    rejected(ErrorCode::InvalidRequest, message)
}

/// Upstream's jitter: FNV-1a-64 of the instance id, modulo min(interval / 10, 5 minutes).
fn jitter(instance_id: &str, interval: Duration) -> Duration {
    let max = (interval / 10).min(Duration::from_secs(300)).as_nanos() as u64;
    if max == 0 {
        return Duration::ZERO;
    }
    let h = instance_id.bytes().fold(0xcbf2_9ce4_8422_2325u64, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x100_0000_01b3)
    });
    Duration::from_nanos(h % max)
}

/// The first run after `now` on the schedule's grid (no catch-up burst after a pause).
fn next_run(previous: OffsetDateTime, interval: Duration, now: OffsetDateTime) -> OffsetDateTime {
    if previous > now || interval.is_zero() {
        return previous;
    }
    let behind = (now - previous).whole_nanoseconds().max(0) as u128;
    let steps = behind / interval.as_nanos() + 1;
    let step_ns = i128::try_from(steps * interval.as_nanos()).unwrap_or(i128::MAX);
    previous + time::Duration::nanoseconds_i128(step_ns)
}

impl Engine {
    fn schedules_dir(&self) -> PathBuf {
        self.paths.root().join("snapshot-schedules")
    }

    fn schedule_path(&self, instance_id: &str) -> Result<PathBuf, EngineError> {
        let id = InstanceId::parse(instance_id).map_err(|_| EngineError::NotFound)?;
        Ok(self.schedules_dir().join(format!("{}.json", id.as_str())))
    }

    fn load_schedule(&self, instance_id: &str) -> Option<Stored> {
        let bytes = std::fs::read(self.schedule_path(instance_id).ok()?).ok()?;
        serde_json::from_slice(&bytes).ok()
    }

    fn save_schedule(&self, schedule: &Stored) -> Result<(), EngineError> {
        hypedeck_store::create_private_dir(&self.schedules_dir())?;
        hypedeck_store::write_json(&self.schedule_path(&schedule.instance_id)?, schedule)?;
        Ok(())
    }

    /// The id a schedule is filed under: the instance's, or the id given when the instance
    /// is gone (a schedule outlives its instance).
    fn schedule_owner(&self, id_or_name: &str) -> String {
        self.resolve(id_or_name)
            .map(|r| r.id)
            .unwrap_or_else(|_| id_or_name.to_string())
    }

    /// Sets (creates or replaces) instance `id_or_name`'s snapshot schedule.
    pub async fn set_snapshot_schedule(
        &self,
        id_or_name: &str,
        request: SetSnapshotScheduleRequest,
    ) -> Result<SnapshotSchedule, EngineError> {
        // Upstream's order of checks.
        let interval = parse_signed(&request.interval)
            .ok_or_else(|| invalid("interval must be a valid duration"))?;
        if request.retention.max_count.is_none() && request.retention.max_age.is_none() {
            return Err(invalid("retention must include max_count or max_age"));
        }
        let max_age = match &request.retention.max_age {
            None => None,
            Some(text) => Some(
                parse_signed(text)
                    .ok_or_else(|| invalid("retention.max_age must be a valid duration"))?,
            ),
        };
        if interval.negative || interval.magnitude < MIN_INTERVAL {
            return Err(invalid(format!(
                "invalid request: interval must be at least {}",
                go_format(MIN_INTERVAL)
            )));
        }
        let prefix = request.name_prefix.clone();
        if let Some(prefix) = &prefix {
            if prefix.len() > 47 {
                return Err(invalid(
                    "invalid request: name_prefix must be at most 47 characters",
                ));
            }
            if !hypedeck_model::validate::is_valid_name_pattern(prefix) {
                return Err(invalid(
                    "invalid request: name_prefix must contain only lowercase letters, digits, and dashes, and cannot start or end with a dash",
                ));
            }
        }
        let max_count = request.retention.max_count.unwrap_or(0);
        if max_count < 0 {
            return Err(invalid("invalid request: retention.max_count must be >= 0"));
        }
        if max_age.is_some_and(|a| a.negative && !a.magnitude.is_zero()) {
            return Err(invalid("invalid request: retention.max_age must be >= 0"));
        }
        let max_age = max_age.map_or(Duration::ZERO, |a| a.magnitude);
        if max_count == 0 && max_age.is_zero() {
            return Err(invalid(
                "invalid request: retention.max_count or retention.max_age must be set",
            ));
        }
        let (_guard, record, _) = self
            .lock_and_observe(id_or_name)
            .await
            .map_err(|e| match e {
                EngineError::NotFound => rejected(ErrorCode::NotFound, "instance not found"),
                other => other,
            })?;
        let _schedules = self.schedules.lock().await;
        let now = OffsetDateTime::now_utc();
        let interval = interval.magnitude;
        let existing = self.load_schedule(&record.id);
        let next_run_at = match &existing {
            Some(e) if e.interval() == interval => e.next_run_at,
            _ => now + interval + jitter(&record.id, interval),
        };
        let schedule = Stored {
            instance_id: record.id.clone(),
            interval_ns: u64::try_from(interval.as_nanos()).unwrap_or(u64::MAX),
            name_prefix: prefix,
            metadata: request.metadata.unwrap_or_default(),
            max_count: max_count as u64,
            max_age_ns: u64::try_from(max_age.as_nanos()).unwrap_or(u64::MAX),
            next_run_at,
            last_run_at: existing.as_ref().and_then(|e| e.last_run_at),
            last_snapshot_id: existing.as_ref().and_then(|e| e.last_snapshot_id.clone()),
            last_error: existing.as_ref().and_then(|e| e.last_error.clone()),
            created_at: existing.as_ref().map_or(now, |e| e.created_at),
            updated_at: now,
        };
        self.save_schedule(&schedule)?;
        self.ops_log(
            &record.id,
            &format!("snapshot schedule set: every {}", go_format(interval)),
        );
        Ok(schedule.render())
    }

    /// Instance `id_or_name`'s snapshot schedule.
    pub fn get_snapshot_schedule(&self, id_or_name: &str) -> Result<SnapshotSchedule, EngineError> {
        self.load_schedule(&self.schedule_owner(id_or_name))
            .map(|s| s.render())
            .ok_or_else(|| rejected(ErrorCode::NotFound, "snapshot schedule not found"))
    }

    /// Removes instance `id_or_name`'s snapshot schedule (its snapshots stay).
    pub async fn delete_snapshot_schedule(&self, id_or_name: &str) -> Result<(), EngineError> {
        let owner = self.schedule_owner(id_or_name);
        let _schedules = self.schedules.lock().await;
        if self.load_schedule(&owner).is_none() {
            return Err(rejected(ErrorCode::NotFound, "snapshot schedule not found"));
        }
        std::fs::remove_file(self.schedule_path(&owner)?).map_err(|source| EngineError::Io {
            what: "remove the snapshot schedule".into(),
            source,
        })
    }

    /// Runs every schedule due at `now`; returns how many ran. The runner calls it every
    /// [`SCHEDULE_TICK`]; tests call it with a clock of their own.
    pub async fn run_snapshot_schedules(&self, now: OffsetDateTime) -> usize {
        let Ok(entries) = std::fs::read_dir(self.schedules_dir()) else {
            return 0;
        };
        let owners: Vec<String> = entries
            .flatten()
            .filter_map(|e| {
                e.file_name()
                    .to_str()?
                    .strip_suffix(".json")
                    .map(str::to_string)
            })
            .collect();
        let mut ran = 0;
        for owner in owners {
            let _schedules = self.schedules.lock().await;
            let Some(mut schedule) = self.load_schedule(&owner) else {
                continue;
            };
            if now < schedule.next_run_at {
                continue;
            }
            ran += 1;
            // Saved before the snapshot is taken, as upstream does: a slow or failing one
            // never runs twice for one due time.
            schedule.next_run_at = next_run(schedule.next_run_at, schedule.interval(), now);
            schedule.last_run_at = Some(now);
            schedule.last_snapshot_id = None;
            schedule.last_error = None;
            if let Err(e) = self.save_schedule(&schedule) {
                tracing::error!(instance = %owner, error = %e, "could not save a snapshot schedule");
                continue;
            }
            let exists = self.resolve(&schedule.instance_id).is_ok();
            if exists {
                match self.take_scheduled(&schedule, now).await {
                    Ok(snapshot) => schedule.last_snapshot_id = Some(snapshot.id),
                    Err(e) => schedule.last_error = Some(e.to_string()),
                }
                if let Err(e) = self.save_schedule(&schedule) {
                    tracing::error!(instance = %owner, error = %e, "could not save a snapshot schedule");
                }
            }
            let left = self.prune_scheduled(&schedule, now).await;
            // A schedule whose instance is gone stays while it has snapshots to prune.
            let done = left == 0 || (schedule.max_age_ns == 0 && left as u64 <= schedule.max_count);
            if !exists
                && done
                && let Ok(path) = self.schedule_path(&owner)
            {
                let _ = std::fs::remove_file(path);
            }
        }
        ran
    }

    async fn take_scheduled(
        &self,
        schedule: &Stored,
        now: OffsetDateTime,
    ) -> Result<Snapshot, EngineError> {
        let mut record = self.resolve(&schedule.instance_id)?;
        let kind = match self.observe(&mut record).await.state {
            InstanceState::Running | InstanceState::Standby => SnapshotKind::Standby,
            InstanceState::Stopped => SnapshotKind::Stopped,
            other => {
                return Err(EngineError::InvalidState(format!(
                    "scheduled snapshot requires source in Running, Standby, or Stopped, got {other}"
                )));
            }
        };
        let stamp = format!(
            "{:04}{:02}{:02}-{:02}{:02}{:02}",
            now.year(),
            u8::from(now.month()),
            now.day(),
            now.hour(),
            now.minute(),
            now.second()
        );
        let name = format!(
            "{}-{stamp}",
            schedule.name_prefix.as_deref().unwrap_or("scheduled")
        );
        let mut tags = schedule.metadata.clone();
        tags.insert(SCHEDULED_TAG.into(), "true".into());
        tags.insert(SCHEDULE_INSTANCE_TAG.into(), schedule.instance_id.clone());
        self.create_snapshot(
            &schedule.instance_id,
            CreateSnapshotRequest {
                kind: Some(kind),
                name: Some(name),
                tags: Some(tags),
                compression: None,
            },
        )
        .await
    }

    /// Deletes the schedule's snapshots its retention no longer keeps; returns how many
    /// remain.
    async fn prune_scheduled(&self, schedule: &Stored, now: OffsetDateTime) -> usize {
        let Ok(all) = self.list_snapshots(&crate::SnapshotFilter {
            tags: [
                (SCHEDULED_TAG.to_string(), "true".to_string()),
                (
                    SCHEDULE_INSTANCE_TAG.to_string(),
                    schedule.instance_id.clone(),
                ),
            ]
            .into(),
            ..crate::SnapshotFilter::default()
        }) else {
            return 0;
        };
        let mut scheduled = all;
        scheduled.sort_by_key(|s| std::cmp::Reverse(s.created_at));
        let oldest_kept =
            (schedule.max_age_ns > 0).then(|| now - Duration::from_nanos(schedule.max_age_ns));
        let mut left = 0;
        for (i, snapshot) in scheduled.iter().enumerate() {
            let too_many = schedule.max_count > 0 && i as u64 >= schedule.max_count;
            let too_old = oldest_kept.is_some_and(|t| snapshot.created_at < t);
            if !(too_many || too_old) {
                left += 1;
                continue;
            }
            match self.delete_snapshot(&snapshot.id).await {
                Ok(()) => self.ops_log(
                    &schedule.instance_id,
                    &format!("scheduled snapshot {} pruned", snapshot.id),
                ),
                Err(e) => {
                    left += 1;
                    tracing::warn!(snapshot = %snapshot.id, error = %e, "could not prune a scheduled snapshot");
                }
            }
        }
        left
    }

    /// Runs due snapshot schedules every [`SCHEDULE_TICK`] (the first tick one tick after
    /// start, like upstream's), until the returned task is aborted.
    pub fn spawn_snapshot_schedules(self: &Arc<Self>) -> tokio::task::JoinHandle<()> {
        let engine = Arc::downgrade(self);
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(SCHEDULE_TICK).await;
                let Some(engine) = engine.upgrade() else {
                    return;
                };
                engine
                    .run_snapshot_schedules(OffsetDateTime::now_utc())
                    .await;
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn runs_stay_on_the_grid_without_catching_up() {
        let t = |s: i64| OffsetDateTime::UNIX_EPOCH + time::Duration::seconds(s);
        let hour = Duration::from_secs(3600);
        assert_eq!(next_run(t(3600), hour, t(3600)), t(7200));
        // Five hours late: one run, the next on the grid after now.
        assert_eq!(next_run(t(3600), hour, t(5 * 3600 + 10)), t(6 * 3600));
        assert_eq!(next_run(t(7200), hour, t(100)), t(7200));
        // Jitter: at most a tenth of the interval, at most 5 minutes, stable per instance.
        let j = jitter("abc", Duration::from_secs(600));
        assert!(j < Duration::from_secs(60));
        assert_eq!(j, jitter("abc", Duration::from_secs(600)));
        assert!(jitter("abc", Duration::from_secs(86_400)) < Duration::from_secs(300));
    }
}
