//! Snapshots (upstream's `Snapshot`, `CreateSnapshotRequest`, `RestoreSnapshotRequest`): a
//! saved copy of an instance's disks (kind `Stopped`) or of its whole VM (kind `Standby`).

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use time::OffsetDateTime;

use crate::HypervisorKind;

/// What a snapshot captured.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum SnapshotKind {
    /// The whole VM (memory and devices) and its disks, taken from a Running or Standby
    /// instance; restores to Running by default.
    Standby,
    /// The disks of a Stopped instance; restores to Stopped by default.
    Stopped,
}

impl std::fmt::Display for SnapshotKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            SnapshotKind::Standby => "Standby",
            SnapshotKind::Stopped => "Stopped",
        })
    }
}

/// Where a restore (or a fork) leaves the instance.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum SnapshotTargetState {
    /// Stopped.
    Stopped,
    /// Standby (a Standby snapshot only).
    Standby,
    /// Running.
    Running,
}

/// A snapshot as the API returns it (and as `snapshot.json` keeps it).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Snapshot {
    /// Its id (24 lowercase alphanumerics, like an instance's).
    pub id: String,
    /// Optional name, unique per source instance.
    pub name: Option<String>,
    /// What it captured.
    pub kind: SnapshotKind,
    /// User tags (omitted when none, like upstream).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub tags: BTreeMap<String, String>,
    /// The instance it was taken from (its id then).
    pub source_instance_id: String,
    /// That instance's name then.
    pub source_instance_name: String,
    /// That instance's hypervisor then.
    pub source_hypervisor: HypervisorKind,
    /// When it was taken.
    #[serde(with = "time::serde::rfc3339")]
    pub created_at: OffsetDateTime,
    /// The apparent size of its files (a sparse overlay counts its whole length, like
    /// upstream).
    pub size_bytes: u64,
    /// Compression of its memory file: `none`, `compressing`, `compressed` or `error`.
    pub compression_state: String,
    /// Why compression failed.
    #[serde(default)]
    pub compression_error: Option<String>,
    /// The compression asked for (`{enabled, algorithm, level}`; omitted when none).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub compression: Option<serde_json::Value>,
    /// The compressed memory file's size.
    #[serde(default)]
    pub compressed_size_bytes: Option<u64>,
    /// The memory file's size before compression.
    #[serde(default)]
    pub uncompressed_size_bytes: Option<u64>,
}

/// `POST /instances/{id}/snapshots`.
#[derive(Debug, Clone, Default, Deserialize)]
pub struct CreateSnapshotRequest {
    /// What to capture (required).
    pub kind: Option<SnapshotKind>,
    /// Optional name.
    #[serde(default)]
    pub name: Option<String>,
    /// Optional tags.
    #[serde(default)]
    pub tags: Option<BTreeMap<String, String>>,
    /// Compression of a Standby snapshot's memory (`{enabled, algorithm, level}`).
    #[serde(default)]
    pub compression: Option<serde_json::Value>,
}

/// `POST /instances/{id}/snapshots/{snapshot_id}/restore`.
#[derive(Debug, Clone, Default, Deserialize)]
pub struct RestoreSnapshotRequest {
    /// Where to leave the instance (default: Running for Standby snapshots, Stopped for
    /// Stopped ones).
    #[serde(default)]
    pub target_state: Option<SnapshotTargetState>,
    /// Another hypervisor (Stopped snapshots only).
    #[serde(default)]
    pub target_hypervisor: Option<HypervisorKind>,
}

/// `POST /instances/{id}/fork`.
#[derive(Debug, Clone, Default, Deserialize)]
pub struct ForkInstanceRequest {
    /// The fork's name (required; the instance name rule).
    pub name: String,
    /// Allow forking a Running source (upstream: standby, fork, restore).
    #[serde(default)]
    pub from_running: bool,
    /// Where to leave the fork (default: the source's state).
    #[serde(default)]
    pub target_state: Option<SnapshotTargetState>,
}

/// `POST /snapshots/{id}/fork`.
#[derive(Debug, Clone, Default, Deserialize)]
pub struct ForkSnapshotRequest {
    /// The new instance's name (required; the instance name rule).
    pub name: String,
    /// Where to leave it (default: Running for Standby snapshots, Stopped for Stopped ones).
    #[serde(default)]
    pub target_state: Option<SnapshotTargetState>,
    /// Another hypervisor (Stopped snapshots only).
    #[serde(default)]
    pub target_hypervisor: Option<HypervisorKind>,
}

/// Hypedeck extension on a forked instance (`Instance.forked_from`): what it was forked from.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ForkOrigin {
    /// The instance forked (or whose snapshot was forked), its id then.
    pub source_instance_id: String,
    /// That instance's name then.
    pub source_instance_name: String,
    /// The snapshot forked, when the fork was made from one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub snapshot_id: Option<String>,
}

/// `PUT /instances/{id}/snapshot-schedule`.
#[derive(Debug, Clone, Default, Deserialize)]
pub struct SetSnapshotScheduleRequest {
    /// How often (a Go duration, at least `1m`).
    pub interval: String,
    /// Names are `<prefix>-<UTC YYYYMMDD-HHMMSS>` (default prefix `scheduled`).
    #[serde(default)]
    pub name_prefix: Option<String>,
    /// Tags every scheduled snapshot gets.
    #[serde(default)]
    pub metadata: Option<BTreeMap<String, String>>,
    /// Which scheduled snapshots are kept.
    pub retention: SnapshotRetentionRequest,
}

/// `SnapshotScheduleRetention` as a request gives it.
#[derive(Debug, Clone, Default, Deserialize)]
pub struct SnapshotRetentionRequest {
    /// Keep at most this many (the newest).
    #[serde(default)]
    pub max_count: Option<i64>,
    /// Delete those older than this (a Go duration).
    #[serde(default)]
    pub max_age: Option<String>,
}

/// An instance's snapshot schedule as the API returns it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SnapshotSchedule {
    /// The instance.
    pub instance_id: String,
    /// How often (Go's `Duration.String()`, e.g. `"1h0m0s"`).
    pub interval: String,
    /// The name prefix (`null` when the default is used).
    pub name_prefix: Option<String>,
    /// Tags every scheduled snapshot gets (omitted when none).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub metadata: BTreeMap<String, String>,
    /// Which scheduled snapshots are kept.
    pub retention: SnapshotRetention,
    /// When the next one is due.
    #[serde(with = "time::serde::rfc3339")]
    pub next_run_at: OffsetDateTime,
    /// When the last one was attempted.
    #[serde(with = "time::serde::rfc3339::option")]
    pub last_run_at: Option<OffsetDateTime>,
    /// The last one taken.
    pub last_snapshot_id: Option<String>,
    /// Why the last one failed.
    pub last_error: Option<String>,
    /// When the schedule was first set.
    #[serde(with = "time::serde::rfc3339")]
    pub created_at: OffsetDateTime,
    /// When it was last set.
    #[serde(with = "time::serde::rfc3339")]
    pub updated_at: OffsetDateTime,
}

/// `SnapshotScheduleRetention` as the API returns it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SnapshotRetention {
    /// Keep at most this many (0: no count limit).
    pub max_count: u64,
    /// Delete those older than this (omitted when there is no age limit).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_age: Option<String>,
}

/// `POST /instances/{id}/standby` (optional body).
#[derive(Debug, Clone, Default, Deserialize)]
pub struct StandbyInstanceRequest {
    /// Compression of the saved memory (`{enabled, algorithm, level}`).
    #[serde(default)]
    pub compression: Option<serde_json::Value>,
    /// How long after the standby to compress (a Go duration; default the instance's
    /// `snapshot_policy.standby_compression_delay`, else at once).
    #[serde(default)]
    pub compression_delay: Option<String>,
}
