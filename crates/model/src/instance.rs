//! The `Instance` resource exactly as upstream serializes it.
//!
//! Optional fields are `Option`s that are *omitted* when `None` (upstream's generated Go types
//! use pointers with `omitempty`), so "absent" and "present" survive a round trip.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use time::OffsetDateTime;

use crate::state::InstanceState;

/// Hypervisor backends named by the API.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum HypervisorKind {
    /// Cloud Hypervisor.
    #[serde(rename = "cloud-hypervisor")]
    CloudHypervisor,
    /// Firecracker (accepted on the wire; not a Hypedeck backend).
    #[serde(rename = "firecracker")]
    Firecracker,
    /// QEMU with the architecture's standard board.
    #[serde(rename = "qemu")]
    Qemu,
    /// QEMU's microvm board (accepted on the wire; not a Hypedeck backend).
    #[serde(rename = "qemu-microvm")]
    QemuMicrovm,
    /// Apple Virtualization.framework.
    #[serde(rename = "vz")]
    Vz,
}

impl HypervisorKind {
    /// Every kind, in spec order.
    pub const ALL: [HypervisorKind; 5] = [
        HypervisorKind::CloudHypervisor,
        HypervisorKind::Firecracker,
        HypervisorKind::Qemu,
        HypervisorKind::QemuMicrovm,
        HypervisorKind::Vz,
    ];

    /// The wire spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            HypervisorKind::CloudHypervisor => "cloud-hypervisor",
            HypervisorKind::Firecracker => "firecracker",
            HypervisorKind::Qemu => "qemu",
            HypervisorKind::QemuMicrovm => "qemu-microvm",
            HypervisorKind::Vz => "vz",
        }
    }

    /// Parses the wire spelling.
    pub fn parse(value: &str) -> Option<HypervisorKind> {
        HypervisorKind::ALL
            .into_iter()
            .find(|k| k.as_str() == value)
    }
}

impl std::fmt::Display for HypervisorKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Transport of a forwarded port.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum PortProtocol {
    /// TCP.
    Tcp,
    /// UDP.
    Udp,
}

impl PortProtocol {
    /// `"tcp"` or `"udp"`.
    pub fn as_str(self) -> &'static str {
        match self {
            PortProtocol::Tcp => "tcp",
            PortProtocol::Udp => "udp",
        }
    }
}

/// Hypedeck extension: a guest port reachable on the host at `127.0.0.1:<host_port>`, in
/// upstream's `PortMapping` shape. Validated (ports 1–65535), stored and returned as is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct PortForward {
    /// Port on the host's loopback.
    pub host_port: u16,
    /// Port in the guest.
    pub guest_port: u16,
    /// Transport.
    pub protocol: PortProtocol,
}

/// A volume attached to an instance (request and response share this shape; fields in
/// upstream's serialization order).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct VolumeMount {
    /// Absolute mount path in the guest.
    pub mount_path: String,
    /// A per-instance writable overlay on top of a read-only volume.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub overlay: Option<bool>,
    /// Overlay size (request: `"1GB"`; response: upstream's human-readable form).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub overlay_size: Option<String>,
    /// Mounted read-only.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub readonly: Option<bool>,
    /// Volume id.
    pub volume_id: String,
}

/// Network facts of an instance. Keys serialize in upstream's (alphabetical) order; `ip` and
/// `mac` are always present and `null` when the network is disabled.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct InstanceNetwork {
    /// Download limit, human-readable (`"125.0 MB/s"`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bandwidth_download: Option<String>,
    /// Upload limit, human-readable.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bandwidth_upload: Option<String>,
    /// Attached to the default network.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub enabled: Option<bool>,
    /// Guest IP address (`null` without a network).
    #[serde(default)]
    pub ip: Option<String>,
    /// Guest MAC address (`null` without a network).
    #[serde(default)]
    pub mac: Option<String>,
    /// Network name (`"default"` when enabled).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
}

/// GPU facts of an instance.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct InstanceGpu {
    /// mdev device UUID.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mdev_uuid: Option<String>,
    /// vGPU profile name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub profile: Option<String>,
}

/// The Instance resource.
///
/// Fields are declared in upstream's serialization order (alphabetical, as its generated Go
/// type). Optional fields are omitted when `None`, except `exit_code`, `started_at`,
/// `state_error` and `stopped_at`, which upstream always sends (as `null` when unset).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Instance {
    /// Auto-standby policy (passed through as stored).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub auto_standby: Option<serde_json::Value>,
    /// Creation time (RFC 3339).
    #[serde(with = "time::serde::rfc3339")]
    pub created_at: OffsetDateTime,
    /// Current lower-case phase.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub current_phase: Option<String>,
    /// When the current phase began.
    #[serde(
        default,
        with = "time::serde::rfc3339::option",
        skip_serializing_if = "Option::is_none"
    )]
    pub current_phase_since: Option<OffsetDateTime>,
    /// Disk I/O limit, human-readable (`"100.0 MB/s"`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub disk_io_bps: Option<String>,
    /// Environment variables (upstream echoes real credential values here).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub env: Option<BTreeMap<String, String>>,
    /// Exit code of the guest program, once it exited (`null` before).
    #[serde(default)]
    pub exit_code: Option<i32>,
    /// Human-readable exit description (`"killed by signal 9 (killed)"`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exit_message: Option<String>,
    /// Hypedeck extension: what this instance was forked from (omitted when not a fork).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub forked_from: Option<crate::ForkOrigin>,
    /// Hypedeck extension: the template this run started from (omitted after a cold boot).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub template_id: Option<String>,
    /// GPU facts.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gpu: Option<InstanceGpu>,
    /// Whether a standby snapshot exists.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub has_snapshot: Option<bool>,
    /// Health check policy (passed through as stored).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub health_check: Option<serde_json::Value>,
    /// Health status.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub health_status: Option<serde_json::Value>,
    /// Hotplug memory, human-readable.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hotplug_size: Option<String>,
    /// Hypervisor backend.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hypervisor: Option<HypervisorKind>,
    /// CUID2-format id.
    pub id: String,
    /// OCI image reference as supplied at create.
    pub image: String,
    /// Unique human-readable name.
    pub name: String,
    /// Network facts.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub network: Option<InstanceNetwork>,
    /// Writable overlay disk, human-readable.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub overlay_size: Option<String>,
    /// Cumulative milliseconds per lower-case phase.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub phase_durations_ms: Option<BTreeMap<String, i64>>,
    /// Resolved image platform (`os/arch[/variant]`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub platform: Option<String>,
    /// Hypedeck extension: forwarded ports (omitted when none).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ports: Option<Vec<PortForward>>,
    /// Restart policy (passed through as stored).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub restart_policy: Option<serde_json::Value>,
    /// Restart status.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub restart_status: Option<serde_json::Value>,
    /// Base memory, human-readable.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub size: Option<String>,
    /// Snapshot policy (passed through as stored).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub snapshot_policy: Option<serde_json::Value>,
    /// Boot time of the current run (`null` when never started).
    #[serde(default, with = "time::serde::rfc3339::option")]
    pub started_at: Option<OffsetDateTime>,
    /// Derived state.
    pub state: InstanceState,
    /// Why the state is `Unknown` (`null` otherwise).
    #[serde(default)]
    pub state_error: Option<String>,
    /// Time of the last stop or standby (`null` when never stopped).
    #[serde(default, with = "time::serde::rfc3339::option")]
    pub stopped_at: Option<OffsetDateTime>,
    /// User tags.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tags: Option<BTreeMap<String, String>>,
    /// Virtual CPUs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub vcpus: Option<u32>,
    /// Attached volumes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub volumes: Option<Vec<VolumeMount>>,
}

/// The health status upstream reports for an instance without a health check.
pub fn disabled_health_status() -> serde_json::Value {
    serde_json::json!({
        "consecutive_failures": 0,
        "consecutive_successes": 0,
        "last_checked_at": null,
        "last_error": null,
        "last_failure_at": null,
        "last_success_at": null,
        "status": "disabled"
    })
}

/// `GET /health` body.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Health {
    /// Always `"ok"`.
    pub status: String,
}

/// The Image resource (`GET /images`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ImageInfo {
    /// Entrypoint from the image config.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cmd: Option<Vec<String>>,
    /// When the pull started.
    #[serde(with = "time::serde::rfc3339")]
    pub created_at: OffsetDateTime,
    /// Manifest digest.
    pub digest: String,
    /// Entrypoint from the image config.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub entrypoint: Option<Vec<String>>,
    /// Env from the image config.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub env: Option<BTreeMap<String, String>>,
    /// Why the pull failed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// Normalized reference.
    pub name: String,
    /// `os/arch[/variant]`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub platform: Option<String>,
    /// Position in the pull queue.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub queue_position: Option<u32>,
    /// Bytes of the root disk on the host.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub size_bytes: Option<u64>,
    /// `pending`, `pulling`, `converting`, `ready` or `failed`.
    pub status: String,
    /// Working directory from the image config.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub working_dir: Option<String>,
    /// Hypedeck extension: blob bytes downloaded so far while pulling.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bytes_done: Option<u64>,
    /// Hypedeck extension: blob bytes to download in total while pulling.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bytes_total: Option<u64>,
}

/// One resource's capacity and use (`GET /resources`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ResourceStatus {
    /// `cpu`, `memory`, `disk`, `network`, `disk_io`.
    #[serde(rename = "type")]
    pub kind: String,
    /// What the host has.
    pub capacity: i64,
    /// Capacity times the oversubscription ratio.
    pub effective_limit: i64,
    /// Reserved by active instances.
    pub allocated: i64,
    /// `effective_limit - allocated`, never negative.
    pub available: i64,
    /// Oversubscription ratio.
    pub oversub_ratio: f64,
    /// Where the capacity figure comes from.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source: Option<String>,
}

/// Disk use by category.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct DiskBreakdown {
    /// Image root disks.
    pub images_bytes: i64,
    /// OCI blob cache.
    pub oci_cache_bytes: i64,
    /// Volumes.
    pub volumes_bytes: i64,
    /// Instance overlays.
    pub overlays_bytes: i64,
}

/// What one instance reserves.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ResourceAllocation {
    /// Instance id.
    pub instance_id: String,
    /// Instance name.
    pub instance_name: String,
    /// vCPUs.
    pub cpu: i64,
    /// Memory (boot + hotplug).
    pub memory_bytes: i64,
    /// Overlay disk.
    pub disk_bytes: i64,
    /// Download limit.
    pub network_download_bps: i64,
    /// Upload limit.
    pub network_upload_bps: i64,
    /// Disk I/O limit.
    pub disk_io_bps: i64,
}

/// `GET /resources`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Resources {
    /// CPU threads.
    pub cpu: ResourceStatus,
    /// Memory bytes.
    pub memory: ResourceStatus,
    /// Disk bytes of the data dir's filesystem.
    pub disk: ResourceStatus,
    /// Network bytes/s.
    pub network: ResourceStatus,
    /// Disk use by category.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub disk_breakdown: Option<DiskBreakdown>,
    /// Per-instance reservations.
    pub allocations: Vec<ResourceAllocation>,
}

/// Where a volume is attached.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct VolumeAttachment {
    /// The instance.
    pub instance_id: String,
    /// Mount path in the guest.
    pub mount_path: String,
    /// Mounted read-only.
    pub readonly: bool,
}

/// The Volume resource (upstream's field order).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Volume {
    /// Unique identifier.
    pub id: String,
    /// Name.
    pub name: String,
    /// Size in GiB.
    pub size_gb: u32,
    /// User tags.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tags: Option<BTreeMap<String, String>>,
    /// Current attachments (empty when detached).
    pub attachments: Vec<VolumeAttachment>,
    /// Creation time.
    #[serde(with = "time::serde::rfc3339")]
    pub created_at: OffsetDateTime,
}
