//! Domain values a validated request becomes: what the engine is given instead of wire shapes.
//!
//! [`crate::validate`] builds these; nothing else constructs them from a request.

use std::collections::{BTreeMap, BTreeSet};

use crate::instance::{HypervisorKind, PortForward, VolumeMount};
use crate::request::CredentialPolicy;

/// Egress enforcement mode.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EgressMode {
    /// Reject all direct TCP egress.
    All,
    /// Reject direct egress on ports 80 and 443 only.
    HttpHttpsOnly,
}

impl EgressMode {
    /// Wire spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            EgressMode::All => "all",
            EgressMode::HttpHttpsOnly => "http_https_only",
        }
    }
}

/// Validated network settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NetworkSpec {
    /// Attached to the default network.
    pub enabled: bool,
    /// Download limit in bytes/s (0 = default share).
    pub bandwidth_download: u64,
    /// Upload limit in bytes/s (0 = default share).
    pub bandwidth_upload: u64,
    /// Mediated egress, when enabled.
    pub egress: Option<EgressMode>,
    /// The names the guest may reach (`None`: any public destination).
    pub allow: Option<crate::AllowList>,
}

/// A validated create request.
#[derive(Debug, Clone, PartialEq)]
pub struct InstanceSpec {
    /// Name.
    pub name: String,
    /// Image reference.
    pub image: String,
    /// Platform.
    pub platform: Option<String>,
    /// vCPUs.
    pub vcpus: u32,
    /// Memory bytes.
    pub memory_bytes: u64,
    /// Hotplug bytes.
    pub hotplug_bytes: u64,
    /// Overlay bytes.
    pub overlay_bytes: u64,
    /// Disk I/O limit (0 = default share).
    pub disk_io_bps: u64,
    /// Env (including credential source values).
    pub env: BTreeMap<String, String>,
    /// Normalized credential policies.
    pub credentials: BTreeMap<String, CredentialPolicy>,
    /// Tags.
    pub tags: BTreeMap<String, String>,
    /// Network.
    pub network: NetworkSpec,
    /// Volumes.
    pub volumes: Vec<VolumeMount>,
    /// Devices.
    pub devices: Vec<String>,
    /// vGPU profile.
    pub gpu_profile: Option<String>,
    /// Requested backend (`None` = server default).
    pub hypervisor: Option<HypervisorKind>,
    /// Entrypoint override (empty = image default).
    pub entrypoint: Option<Vec<String>>,
    /// Cmd override (empty = image default).
    pub cmd: Option<Vec<String>>,
    /// Forwarded ports (Hypedeck extension).
    pub ports: Vec<PortForward>,
    /// Skip kernel headers.
    pub skip_kernel_headers: bool,
    /// Skip the guest agent.
    pub skip_guest_agent: bool,
    /// Policies kept verbatim.
    pub policies: BTreeMap<String, serde_json::Value>,
}

impl InstanceSpec {
    /// Env keys whose values are real credentials (`credentials[*].source.env`), sorted.
    pub fn credential_source_keys(&self) -> BTreeSet<String> {
        credential_source_keys(&self.credentials)
    }
}

/// The placeholder the guest sees instead of a real credential value (upstream: `mock-<KEY>`).
pub fn mock_value(credential_key: &str) -> String {
    format!("mock-{credential_key}")
}

/// Sorted unique `credentials[*].source.env`.
pub fn credential_source_keys(
    credentials: &BTreeMap<String, CredentialPolicy>,
) -> BTreeSet<String> {
    credentials.values().map(|c| c.source.env.clone()).collect()
}

/// A validated `PATCH` request: only the parts present.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct InstanceUpdate {
    /// Env values to merge (credential sources only; checked against the instance later).
    pub env: Option<BTreeMap<String, String>>,
    /// Policies to replace.
    pub policies: BTreeMap<String, serde_json::Value>,
    /// A new allow-list (`network.egress.allow`).
    pub allow: Option<crate::AllowList>,
}

#[cfg(test)]
mod tests {
    #[test]
    fn mock_value_matches_upstream() {
        assert_eq!(
            super::mock_value("OUTBOUND_OPENAI_KEY"),
            "mock-OUTBOUND_OPENAI_KEY"
        );
    }
}
