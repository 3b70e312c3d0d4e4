//! Request bodies of the instance routes, as the spec declares them.
//!
//! These are the *unvalidated* wire shapes: unknown fields are ignored like upstream, and every
//! optional field stays an `Option` so validation can tell "absent" from "empty".
//! [`crate::validate`] turns them into typed domain values.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::instance::VolumeMount;

/// `network.egress.enforcement`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct EgressEnforcement {
    /// `all` (default) or `http_https_only`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mode: Option<String>,
}

/// `network.egress`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct EgressRequest {
    /// Route egress through the host proxy.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub enabled: Option<bool>,
    /// Enforcement policy.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub enforcement: Option<EgressEnforcement>,
    /// The names the guest may reach (Hypedeck extension; absent: any public destination).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub allow: Option<Vec<String>>,
}

/// `network` of an update request (Hypedeck extension).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct NetworkUpdate {
    /// Egress changes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub egress: Option<EgressUpdate>,
}

/// `network.egress` of an update request (Hypedeck extension).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct EgressUpdate {
    /// Replaces the allow-list; an empty list means "no names": nothing by name; `null` is
    /// refused like every explicit null (send the whole list).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub allow: Option<Vec<String>>,
}

/// `network` of a create request.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct NetworkRequest {
    /// Attach to the default network (default true).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub enabled: Option<bool>,
    /// Download limit (`"1Gbps"`, `"125MB/s"`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bandwidth_download: Option<String>,
    /// Upload limit.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bandwidth_upload: Option<String>,
    /// Mediated egress.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub egress: Option<EgressRequest>,
}

/// `credentials[K].source`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CredentialSource {
    /// Name of the real value in the request `env`.
    pub env: String,
}

/// `credentials[K].inject[i].as`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CredentialInjectAs {
    /// Header to set on matching requests.
    pub header: String,
    /// Template containing `${value}`.
    pub format: String,
}

/// `credentials[K].inject[i]`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CredentialInject {
    /// Host patterns; absent means every destination.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hosts: Option<Vec<String>>,
    /// The header transform.
    #[serde(rename = "as")]
    pub as_: CredentialInjectAs,
}

/// One credential policy, keyed by the guest-visible env var name.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CredentialPolicy {
    /// Where the real value comes from.
    pub source: CredentialSource,
    /// How it is injected (at least one entry).
    pub inject: Vec<CredentialInject>,
}

/// `gpu` of a create request.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct GpuRequest {
    /// vGPU profile name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub profile: Option<String>,
}

/// `POST /instances` body.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct CreateInstanceRequest {
    /// Instance name.
    pub name: String,
    /// OCI image reference.
    pub image: String,
    /// `os/arch[/variant]`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub platform: Option<String>,
    /// Base memory.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub size: Option<String>,
    /// Hotplug memory.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hotplug_size: Option<String>,
    /// Writable overlay disk size.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub overlay_size: Option<String>,
    /// Disk I/O limit.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub disk_io_bps: Option<String>,
    /// Virtual CPUs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub vcpus: Option<i64>,
    /// Environment.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub env: Option<BTreeMap<String, String>>,
    /// Credential policies keyed by guest env var name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub credentials: Option<BTreeMap<String, CredentialPolicy>>,
    /// Tags.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tags: Option<BTreeMap<String, String>>,
    /// Network.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub network: Option<NetworkRequest>,
    /// PCI devices.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub devices: Option<Vec<String>>,
    /// vGPU.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gpu: Option<GpuRequest>,
    /// Volumes to attach.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub volumes: Option<Vec<VolumeMount>>,
    /// Hypervisor backend.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hypervisor: Option<String>,
    /// Snapshot policy.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub snapshot_policy: Option<serde_json::Value>,
    /// Auto-standby policy.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub auto_standby: Option<serde_json::Value>,
    /// Health check policy.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub health_check: Option<serde_json::Value>,
    /// Restart policy.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub restart_policy: Option<serde_json::Value>,
    /// Skip kernel headers.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub skip_kernel_headers: Option<bool>,
    /// Skip the guest agent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub skip_guest_agent: Option<bool>,
    /// Entrypoint override.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub entrypoint: Option<Vec<String>>,
    /// Cmd override.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cmd: Option<Vec<String>>,
    /// Hypedeck extension: guest ports to expose on the host's loopback.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ports: Option<Vec<PortMapping>>,
}

/// Hypedeck extension, in upstream's `PortMapping` shape: expose `guest_port` of the instance
/// on `127.0.0.1:<host_port>` of the host. Validated into a [`crate::PortForward`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PortMapping {
    /// Port on the host's loopback.
    pub host_port: i64,
    /// Port in the guest.
    pub guest_port: i64,
    /// `tcp` (default) or `udp`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub protocol: Option<String>,
}

/// `PATCH /instances/{id}` body.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct UpdateInstanceRequest {
    /// Credential source env values to merge (at least one key when present).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub env: Option<BTreeMap<String, String>>,
    /// Auto-standby policy.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub auto_standby: Option<serde_json::Value>,
    /// Health check policy.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub health_check: Option<serde_json::Value>,
    /// Restart policy.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub restart_policy: Option<serde_json::Value>,
    /// Network policy changes (Hypedeck extension: `network.egress.allow`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub network: Option<NetworkUpdate>,
}

/// `POST /instances/{id}/volumes/{volumeId}` body.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AttachVolumeRequest {
    /// Where the volume is mounted in the guest.
    pub mount_path: String,
    /// Mount read-only.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub readonly: Option<bool>,
}

/// `POST /volumes` body (and the query of `POST /volumes/from-archive`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CreateVolumeRequest {
    /// Optional id (generated when absent).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
    /// Name.
    pub name: String,
    /// Size in GiB.
    pub size_gb: i64,
    /// User tags.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tags: Option<BTreeMap<String, String>>,
}
