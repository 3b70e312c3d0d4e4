//! `POST /resources/memory/reclaim` (upstream's `MemoryReclaimRequest` / `Response`).

use serde::{Deserialize, Serialize};

/// Upstream's `MemoryReclaimRequest`.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct MemoryReclaimRequest {
    /// Bytes of guest memory to reclaim across eligible VMs.
    pub reclaim_bytes: i64,
    /// How long the reclaim holds (Go duration, default 5m, at most 1h).
    #[serde(default)]
    pub hold_for: Option<String>,
    /// Plan only.
    #[serde(default)]
    pub dry_run: Option<bool>,
    /// For the logs.
    #[serde(default)]
    pub reason: Option<String>,
}

/// One VM's part of a reclaim.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MemoryReclaimAction {
    /// Instance id.
    pub instance_id: String,
    /// Instance name.
    pub instance_name: String,
    /// Backend.
    pub hypervisor: String,
    /// The VM's RAM.
    pub assigned_memory_bytes: i64,
    /// What the guest always keeps.
    pub protected_floor_bytes: i64,
    /// The guest's memory before.
    pub previous_target_guest_memory_bytes: i64,
    /// What the plan wanted.
    pub planned_target_guest_memory_bytes: i64,
    /// What it got (one step at most).
    pub target_guest_memory_bytes: i64,
    /// `assigned - target` after this step (0 for a dry run).
    pub applied_reclaim_bytes: i64,
    /// `applied`, `planned`, `unchanged`, `unsupported` or `error`.
    pub status: String,
    /// Why, for `error` and `unsupported`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// Upstream's `MemoryReclaimResponse`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MemoryReclaimResponse {
    /// As asked.
    pub requested_reclaim_bytes: i64,
    /// What the plan reclaims.
    pub planned_reclaim_bytes: i64,
    /// What is reclaimed now.
    pub applied_reclaim_bytes: i64,
    /// When the hold ends (the balloons deflate after).
    #[serde(
        default,
        with = "time::serde::rfc3339::option",
        skip_serializing_if = "Option::is_none"
    )]
    pub hold_until: Option<time::OffsetDateTime>,
    /// The host's available memory.
    pub host_available_bytes: i64,
    /// `healthy` or `pressure`.
    pub host_pressure_state: String,
    /// Per VM.
    pub actions: Vec<MemoryReclaimAction>,
}
