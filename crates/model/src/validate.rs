//! Validation at the edge: a wire request in, typed domain values (or upstream's error) out.
//!
//! Two kinds of rejection mirror upstream's two layers:
//! - schema violations (upstream's OpenAPI validator): code `"Bad Request"`, message
//!   `request body has an error: doesn't match schema: Error at "/field": …`;
//! - handler checks: snake_case codes (`invalid_size`, `invalid_request`, …).

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;

use crate::error::ErrorCode;
use crate::instance::{HypervisorKind, PortForward, PortProtocol, VolumeMount};
use crate::request::{
    CreateInstanceRequest, CredentialInject, CredentialPolicy, PortMapping, UpdateInstanceRequest,
};
use crate::size::{GIB, parse_bandwidth, parse_disk_io, parse_size};

/// Default base memory (1 GiB).
pub const DEFAULT_MEMORY: u64 = GIB;
/// Default overlay disk (10 GiB).
pub const DEFAULT_OVERLAY: u64 = 10 * GIB;
/// Default vCPUs.
pub const DEFAULT_VCPUS: u32 = 2;
/// Upper bound on vCPUs per instance (upstream `limits.max_vcpus_per_instance`).
pub const MAX_VCPUS: u32 = 16;
/// Upper bound on overlay size (upstream `limits.max_overlay_size`).
pub const MAX_OVERLAY: u64 = 100 * GIB;
/// Upper bound on memory per instance (upstream default limit).
pub const MAX_MEMORY: u64 = 32 * GIB;
/// The instance name pattern, as the spec spells it.
pub const NAME_PATTERN: &str = "^[a-z0-9]([a-z0-9-]*[a-z0-9])?$";
/// Maximum name length.
pub const NAME_MAX_LEN: usize = 63;
/// The platform pattern, as the spec spells it.
pub const PLATFORM_PATTERN: &str = "^[a-z0-9]+/[a-z0-9]+(/[a-z0-9.]+)?$";
/// Tag key pattern.
pub const TAG_KEY_PATTERN: &str = "^[A-Za-z0-9 _.:/=+@-]+$";
/// Tag value pattern.
pub const TAG_VALUE_PATTERN: &str = "^[A-Za-z0-9 _.:/=+@-]*$";

/// A refused request: the code and message the API answers with.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rejection {
    /// Error code.
    pub code: ErrorCode,
    /// Message (never contains a secret value).
    pub message: String,
}

impl Rejection {
    /// A handler-level rejection.
    pub fn new(code: ErrorCode, message: impl Into<String>) -> Self {
        Rejection {
            code,
            message: message.into(),
        }
    }

    /// A schema violation of component `schema` at JSON pointer `pointer` (e.g. `/name`).
    pub fn schema(schema: &str, pointer: &str, reason: impl fmt::Display) -> Self {
        Rejection {
            code: ErrorCode::SchemaViolation,
            message: format!(
                "request body has an error: doesn't match schema #/components/schemas/{schema}: Error at \"{pointer}\": {reason}"
            ),
        }
    }

    /// An `invalid_request` rejection with upstream's `invalid request: ` prefix.
    pub fn invalid_request(detail: impl fmt::Display) -> Self {
        Rejection::new(
            ErrorCode::InvalidRequest,
            format!("invalid request: {detail}"),
        )
    }
}

impl fmt::Display for Rejection {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for Rejection {}

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

/// Whether `name` matches the name pattern (length is checked separately by `maxLength`).
pub fn is_valid_name_pattern(name: &str) -> bool {
    let b = name.as_bytes();
    let edge = |c: &u8| c.is_ascii_lowercase() || c.is_ascii_digit();
    !b.is_empty()
        && b.first().is_some_and(edge)
        && b.last().is_some_and(edge)
        && b.iter().all(|c| edge(c) || *c == b'-')
}

/// Whether `name` matches `^[a-z0-9]([a-z0-9-]*[a-z0-9])?$` and is at most 63 characters.
pub fn is_valid_name(name: &str) -> bool {
    name.len() <= NAME_MAX_LEN && is_valid_name_pattern(name)
}

/// Whether `platform` matches `^[a-z0-9]+/[a-z0-9]+(/[a-z0-9.]+)?$`.
pub fn is_valid_platform_syntax(platform: &str) -> bool {
    let parts: Vec<&str> = platform.split('/').collect();
    let word = |s: &str| {
        !s.is_empty()
            && s.bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit())
    };
    match parts.as_slice() {
        [os, arch] => word(os) && word(arch),
        [os, arch, variant] => {
            word(os)
                && word(arch)
                && !variant.is_empty()
                && variant
                    .bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'.')
        }
        _ => false,
    }
}

/// An image reference that does not follow the distribution grammar.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct InvalidReference;

impl fmt::Display for InvalidReference {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("invalid image reference")
    }
}

impl std::error::Error for InvalidReference {}

/// A conservative check of the OCI distribution reference grammar:
/// `[host[:port]/]path[:tag][@algo:hex]`, lower-case path components.
pub fn check_image_reference(reference: &str) -> Result<(), InvalidReference> {
    if reference.is_empty() || reference.len() > 4096 || reference.trim() != reference {
        return Err(InvalidReference);
    }
    let (name_tag, digest) = match reference.split_once('@') {
        Some((n, d)) => (n, Some(d)),
        None => (reference, None),
    };
    if let Some(d) = digest {
        let (algo, hex) = d.split_once(':').ok_or(InvalidReference)?;
        let algo_ok = !algo.is_empty()
            && algo
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"+._-".contains(&b));
        let hex_ok = hex.len() >= 32 && hex.bytes().all(|b| b.is_ascii_hexdigit());
        if !algo_ok || !hex_ok {
            return Err(InvalidReference);
        }
    }
    // A tag is after the last ':' that follows the last '/'.
    let last_slash = name_tag.rfind('/').map_or(0, |i| i + 1);
    let (name, tag) = match name_tag[last_slash..].rfind(':') {
        Some(i) => (
            &name_tag[..last_slash + i],
            Some(&name_tag[last_slash + i + 1..]),
        ),
        None => (name_tag, None),
    };
    if let Some(tag) = tag {
        let b = tag.as_bytes();
        let ok = !b.is_empty()
            && b.len() <= 128
            && (b[0].is_ascii_alphanumeric() || b[0] == b'_')
            && b.iter()
                .all(|c| c.is_ascii_alphanumeric() || b"_.-".contains(c));
        if !ok {
            return Err(InvalidReference);
        }
    }
    let mut components: Vec<&str> = name.split('/').collect();
    if components.len() > 1 {
        let first = components[0];
        let is_host = first.contains('.') || first.contains(':') || first == "localhost";
        if is_host {
            let (host, port) = match first.rsplit_once(':') {
                Some((h, p)) => (h, Some(p)),
                None => (first, None),
            };
            let host_ok = !host.is_empty()
                && host
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'.' || b == b'-');
            let port_ok =
                port.is_none_or(|p| !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit()));
            if !host_ok || !port_ok {
                return Err(InvalidReference);
            }
            components.remove(0);
        }
    }
    if components.is_empty() {
        return Err(InvalidReference);
    }
    for component in components {
        let b = component.as_bytes();
        let alnum = |c: &u8| c.is_ascii_lowercase() || c.is_ascii_digit();
        if b.is_empty() || !alnum(&b[0]) || !alnum(&b[b.len() - 1]) {
            return Err(InvalidReference);
        }
        if !b.iter().all(|c| alnum(c) || b"._-".contains(c)) {
            return Err(InvalidReference);
        }
    }
    Ok(())
}

/// Normalizes a credential host pattern like upstream `NormalizeAllowedDomainPattern`:
/// lower-case, no scheme/path/port, `*.` only as a prefix of a ≥2-label name.
pub fn normalize_host_pattern(pattern: &str) -> Result<String, String> {
    let p = pattern.trim().to_ascii_lowercase();
    let invalid = || {
        format!(
            "invalid host pattern {pattern:?}: allowed domain pattern {pattern:?} must be a host pattern without scheme/path"
        )
    };
    if p.is_empty() || p.contains("://") || p.contains('/') || p.contains(':') || p.contains('@') {
        return Err(invalid());
    }
    let (wildcard, host) = match p.strip_prefix("*.") {
        Some(rest) => (true, rest),
        None => (false, p.as_str()),
    };
    if host.contains('*') {
        return Err(invalid());
    }
    let labels: Vec<&str> = host.split('.').collect();
    let label_ok = |l: &&str| {
        !l.is_empty()
            && l.len() <= 63
            && l.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
            && !l.starts_with('-')
            && !l.ends_with('-')
    };
    if !labels.iter().all(label_ok) {
        return Err(invalid());
    }
    if wildcard && labels.len() < 2 {
        return Err(invalid());
    }
    Ok(p)
}

fn parse_or(
    value: Option<&str>,
    default: u64,
    code: ErrorCode,
    what: &str,
    parse: impl Fn(&str) -> Result<u64, String>,
) -> Result<u64, Rejection> {
    match value {
        None | Some("") => Ok(default),
        Some(v) => {
            parse(v).map_err(|e| Rejection::new(code, format!("invalid {what} format: {e}")))
        }
    }
}

/// Upstream's text for a datasize error: `strconv.UnmarshalText: parsing "abc": invalid syntax`.
fn size_error(input: &str, error: crate::size::SizeError) -> String {
    format!("strconv.UnmarshalText: parsing {input:?}: {error}")
}

fn bandwidth_error(input: &str, error: crate::size::BandwidthError) -> String {
    match error {
        crate::size::BandwidthError::InvalidNumber(n) => format!("invalid number: {n}"),
        crate::size::BandwidthError::Bytes(e) => {
            let lower = input.trim().to_ascii_lowercase();
            let stripped = lower.strip_suffix("/s").unwrap_or(&lower);
            let stripped = stripped.strip_suffix("ps").unwrap_or(stripped);
            format!("parse as bytes: {}", size_error(stripped, e))
        }
    }
}

impl CreateInstanceRequest {
    /// Validates the request in upstream's order and returns typed values.
    pub fn validate(&self) -> Result<InstanceSpec, Rejection> {
        let memory_bytes = parse_or(
            self.size.as_deref(),
            DEFAULT_MEMORY,
            ErrorCode::InvalidSize,
            "size",
            |v| parse_size(v).map_err(|e| size_error(v, e)),
        )?;
        let hotplug_bytes = parse_or(
            self.hotplug_size.as_deref(),
            0,
            ErrorCode::InvalidHotplugSize,
            "hotplug_size",
            |v| parse_size(v).map_err(|e| size_error(v, e)),
        )?;
        let overlay_bytes = parse_or(
            self.overlay_size.as_deref(),
            DEFAULT_OVERLAY,
            ErrorCode::InvalidOverlaySize,
            "overlay_size",
            |v| parse_size(v).map_err(|e| size_error(v, e)),
        )?;
        let disk_io_bps = parse_or(
            self.disk_io_bps.as_deref(),
            0,
            ErrorCode::InvalidDiskIoBps,
            "disk_io_bps",
            |v| {
                let stripped = v.strip_suffix("/s").unwrap_or(v);
                let stripped = stripped.strip_suffix("ps").unwrap_or(stripped);
                parse_disk_io(v).map_err(|e| size_error(stripped, e))
            },
        )?;
        let network_req = self.network.clone().unwrap_or_default();
        let bandwidth_download = parse_or(
            network_req.bandwidth_download.as_deref(),
            0,
            ErrorCode::InvalidBandwidthDownload,
            "bandwidth_download",
            |v| parse_bandwidth(v).map_err(|e| bandwidth_error(v, e)),
        )?;
        let bandwidth_upload = parse_or(
            network_req.bandwidth_upload.as_deref(),
            0,
            ErrorCode::InvalidBandwidthUpload,
            "bandwidth_upload",
            |v| parse_bandwidth(v).map_err(|e| bandwidth_error(v, e)),
        )?;

        for v in self.volumes.iter().flatten() {
            if let Some(size) = v.overlay_size.as_deref().filter(|s| !s.is_empty()) {
                parse_size(size).map_err(|e| {
                    Rejection::new(
                        ErrorCode::InvalidOverlaySize,
                        format!(
                            "invalid overlay_size for volume {}: {}",
                            v.volume_id,
                            size_error(size, e)
                        ),
                    )
                })?;
            }
        }

        if self.image.trim().is_empty() {
            return Err(Rejection::invalid_request("image is required"));
        }
        if check_image_reference(&self.image).is_err() {
            return Err(Rejection::new(
                ErrorCode::InvalidName,
                "invalid image reference",
            ));
        }

        if let Some(platform) = &self.platform {
            let supported = matches!(platform.as_str(), "linux/amd64" | "linux/arm64");
            if !supported {
                return Err(Rejection::new(
                    ErrorCode::InvalidPlatform,
                    format!(
                        "unsupported platform {platform:?}: only linux/amd64 and linux/arm64 are supported"
                    ),
                ));
            }
        }

        let vcpus = match self.vcpus {
            None | Some(0) => DEFAULT_VCPUS,
            Some(n) if n < 0 => {
                return Err(Rejection::invalid_request("vcpus cannot be negative"));
            }
            Some(n) => u32::try_from(n).unwrap_or(u32::MAX),
        };
        if vcpus > MAX_VCPUS {
            return Err(Rejection::invalid_request(format!(
                "vcpus {vcpus} exceeds maximum allowed {MAX_VCPUS} per instance"
            )));
        }
        // Upstream's manager treats an explicit zero like an omitted value.
        let memory_bytes = if memory_bytes == 0 {
            DEFAULT_MEMORY
        } else {
            memory_bytes
        };
        let overlay_bytes = if overlay_bytes == 0 {
            DEFAULT_OVERLAY
        } else {
            overlay_bytes
        };
        if memory_bytes.saturating_add(hotplug_bytes) > MAX_MEMORY {
            return Err(Rejection::invalid_request(format!(
                "total memory {} exceeds the maximum of {} per instance",
                crate::size::format_size(memory_bytes.saturating_add(hotplug_bytes)),
                crate::size::format_size(MAX_MEMORY)
            )));
        }
        if overlay_bytes > MAX_OVERLAY {
            return Err(Rejection::invalid_request(format!(
                "overlay_size {} exceeds the maximum of {}",
                crate::size::format_size(overlay_bytes),
                crate::size::format_size(MAX_OVERLAY)
            )));
        }

        let network_enabled = network_req.enabled.unwrap_or(true);
        let egress = match &network_req.egress {
            Some(e) if e.enabled.unwrap_or(false) => {
                if !network_enabled {
                    return Err(Rejection::invalid_request(
                        "network.egress requires network.enabled=true",
                    ));
                }
                let mode = e
                    .enforcement
                    .as_ref()
                    .and_then(|x| x.mode.as_deref())
                    .unwrap_or("");
                Some(match mode {
                    "" | "all" => EgressMode::All,
                    "http_https_only" => EgressMode::HttpHttpsOnly,
                    other => {
                        return Err(Rejection::invalid_request(format!(
                            "invalid network.egress.enforcement.mode {other:?}"
                        )));
                    }
                })
            }
            _ => None,
        };

        let allow = match network_req.egress.as_ref().and_then(|e| e.allow.as_ref()) {
            Some(_) if !network_enabled => {
                return Err(Rejection::invalid_request(
                    "network.egress.allow requires network.enabled=true",
                ));
            }
            Some(entries) => Some(crate::AllowList::parse(entries)?),
            None => None,
        };

        let env = self.env.clone().unwrap_or_default();
        let credentials = normalize_credentials(self.credentials.as_ref(), egress.is_some(), &env)?;

        let mut volumes = Vec::new();
        let mut mount_paths = BTreeSet::new();
        let volume_devices: usize = self
            .volumes
            .iter()
            .flatten()
            .map(|v| if v.overlay == Some(true) { 2 } else { 1 })
            .sum();
        if volume_devices > 23 {
            return Err(Rejection::invalid_request(
                "cannot attach more than 23 volume devices per instance (overlay volumes count as 2)",
            ));
        }
        for v in self.volumes.iter().flatten() {
            check_volume(v, &mut mount_paths)?;
            volumes.push(v.clone());
        }

        let ports = check_ports(self.ports.as_deref().unwrap_or_default(), network_enabled)?;

        let mut policies = BTreeMap::new();
        for (key, value) in [
            ("snapshot_policy", &self.snapshot_policy),
            ("auto_standby", &self.auto_standby),
            ("health_check", &self.health_check),
            ("restart_policy", &self.restart_policy),
        ] {
            if let Some(v) = value {
                policies.insert(key.to_string(), v.clone());
            }
        }

        Ok(InstanceSpec {
            name: self.name.clone(),
            image: self.image.clone(),
            platform: self.platform.clone(),
            vcpus,
            memory_bytes,
            hotplug_bytes,
            overlay_bytes,
            disk_io_bps,
            env,
            credentials,
            tags: self.tags.clone().unwrap_or_default(),
            network: NetworkSpec {
                enabled: network_enabled,
                bandwidth_download,
                bandwidth_upload,
                egress,
                allow,
            },
            volumes,
            devices: self.devices.clone().unwrap_or_default(),
            gpu_profile: self
                .gpu
                .as_ref()
                .and_then(|g| g.profile.clone())
                .filter(|p| !p.is_empty()),
            hypervisor: self.hypervisor.as_deref().and_then(HypervisorKind::parse),
            entrypoint: self.entrypoint.clone(),
            cmd: self.cmd.clone(),
            ports,
            skip_kernel_headers: self.skip_kernel_headers.unwrap_or(false),
            skip_guest_agent: self.skip_guest_agent.unwrap_or(false),
            policies,
        })
    }
}

/// Port forwards: ports in 1–65535, a known protocol, each host port (per protocol) once, and a
/// network to forward into.
pub fn check_ports(
    ports: &[PortMapping],
    network_enabled: bool,
) -> Result<Vec<PortForward>, Rejection> {
    if !ports.is_empty() && !network_enabled {
        return Err(Rejection::invalid_request(
            "ports require network.enabled=true",
        ));
    }
    let mut seen = BTreeSet::new();
    let mut out = Vec::with_capacity(ports.len());
    for (i, p) in ports.iter().enumerate() {
        let port = |what: &str, value: i64| {
            u16::try_from(value)
                .ok()
                .filter(|v| *v != 0)
                .ok_or_else(|| {
                    Rejection::invalid_request(format!(
                        "ports[{i}].{what} {value} is not a port (1-65535)"
                    ))
                })
        };
        let host_port = port("host_port", p.host_port)?;
        let guest_port = port("guest_port", p.guest_port)?;
        let protocol = match p.protocol.as_deref() {
            None | Some("") | Some("tcp") => PortProtocol::Tcp,
            Some("udp") => PortProtocol::Udp,
            Some(other) => {
                return Err(Rejection::invalid_request(format!(
                    "ports[{i}].protocol {other:?} must be tcp or udp"
                )));
            }
        };
        if !seen.insert((host_port, protocol)) {
            return Err(Rejection::invalid_request(format!(
                "ports[{i}]: host port {host_port}/{} is declared twice",
                protocol.as_str()
            )));
        }
        out.push(PortForward {
            host_port,
            guest_port,
            protocol,
        });
    }
    Ok(out)
}

fn normalize_credentials(
    credentials: Option<&BTreeMap<String, CredentialPolicy>>,
    egress_enabled: bool,
    env: &BTreeMap<String, String>,
) -> Result<BTreeMap<String, CredentialPolicy>, Rejection> {
    let Some(credentials) = credentials.filter(|c| !c.is_empty()) else {
        return Ok(BTreeMap::new());
    };
    if !egress_enabled {
        return Err(Rejection::invalid_request(
            "credentials require network.egress.enabled=true",
        ));
    }
    let mut out = BTreeMap::new();
    for (raw_key, policy) in credentials {
        let key = raw_key.trim();
        if key.is_empty() {
            return Err(Rejection::invalid_request(
                "credentials key must be non-empty",
            ));
        }
        if out.contains_key(key) {
            return Err(Rejection::invalid_request(format!(
                "duplicate credentials key {key:?} after normalization"
            )));
        }
        let source = policy.source.env.trim();
        if source.is_empty() {
            return Err(Rejection::invalid_request(format!(
                "credentials[{key:?}].source.env is required"
            )));
        }
        let mut inject = Vec::new();
        for (i, rule) in policy.inject.iter().enumerate() {
            let header = rule.as_.header.trim();
            if header.is_empty() {
                return Err(Rejection::invalid_request(format!(
                    "credentials[{key:?}].inject[{i}].as.header is required"
                )));
            }
            if rule.as_.format.trim().is_empty() {
                return Err(Rejection::invalid_request(format!(
                    "credentials[{key:?}].inject[{i}].as.format is required"
                )));
            }
            if !rule.as_.format.contains("${value}") {
                return Err(Rejection::invalid_request(format!(
                    "credentials[{key:?}].inject[{i}].as.format must include ${{value}}"
                )));
            }
            let hosts = match &rule.hosts {
                None => None,
                Some(hosts) => {
                    let mut seen = Vec::new();
                    for h in hosts {
                        let normalized = normalize_host_pattern(h).map_err(|e| {
                            Rejection::invalid_request(format!(
                                "credentials[{key:?}].inject[{i}].hosts: {e}"
                            ))
                        })?;
                        if !seen.contains(&normalized) {
                            seen.push(normalized);
                        }
                    }
                    Some(seen)
                }
            };
            inject.push(CredentialInject {
                hosts,
                as_: crate::request::CredentialInjectAs {
                    header: header.to_string(),
                    format: rule.as_.format.clone(),
                },
            });
        }
        match env.get(source) {
            None => {
                return Err(Rejection::invalid_request(format!(
                    "credentials[{key:?}].source.env {source:?} must be present in env"
                )));
            }
            Some(v) if v.trim().is_empty() => {
                return Err(Rejection::invalid_request(format!(
                    "env var {source:?} must be non-empty when referenced by credentials[{key:?}]"
                )));
            }
            Some(_) => {}
        }
        out.insert(
            key.to_string(),
            CredentialPolicy {
                source: crate::request::CredentialSource {
                    env: source.to_string(),
                },
                inject,
            },
        );
    }
    Ok(out)
}

const SYSTEM_DIRS: [&str; 15] = [
    "/", "/bin", "/boot", "/dev", "/etc", "/lib", "/lib64", "/proc", "/root", "/run", "/sbin",
    "/sys", "/tmp", "/usr", "/var",
];

/// Volume rules (upstream answers these with a 500; Hypedeck answers 400 `invalid_request`
/// with upstream's message text).
fn check_volume(v: &VolumeMount, seen: &mut BTreeSet<String>) -> Result<(), Rejection> {
    let id = &v.volume_id;
    if id.trim().is_empty() {
        return Err(Rejection::invalid_request("volume_id is required"));
    }
    if id.starts_with("volumes-") {
        return Err(Rejection::invalid_request(format!(
            "volume {id}: volume IDs with the prefix \"volumes-\" are reserved for internal use"
        )));
    }
    let path = &v.mount_path;
    if !path.starts_with('/') {
        return Err(Rejection::invalid_request(format!(
            "volume {id}: mount path {path:?} must be absolute"
        )));
    }
    if path.split('/').any(|c| c == "..") {
        return Err(Rejection::invalid_request(format!(
            "volume {id}: mount path {path:?} must not contain '..'"
        )));
    }
    let clean = path.trim_end_matches('/');
    let clean = if clean.is_empty() { "/" } else { clean };
    if SYSTEM_DIRS.contains(&clean) {
        return Err(Rejection::invalid_request(format!(
            "volume {id}: cannot mount to system directory {clean:?}"
        )));
    }
    if !seen.insert(clean.to_string()) {
        return Err(Rejection::invalid_request(format!(
            "duplicate mount path {clean:?}"
        )));
    }
    if v.overlay == Some(true) {
        if v.readonly != Some(true) {
            return Err(Rejection::invalid_request(format!(
                "volume {id}: overlay mode requires readonly=true"
            )));
        }
        if v.overlay_size.as_deref().is_none_or(str::is_empty) {
            return Err(Rejection::invalid_request(format!(
                "volume {id}: overlay_size is required when overlay=true"
            )));
        }
    }
    Ok(())
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

impl UpdateInstanceRequest {
    /// Instance-independent checks (schema + "something to do").
    pub fn validate(&self) -> Result<InstanceUpdate, Rejection> {
        if let Some(env) = &self.env
            && env.is_empty()
        {
            return Err(Rejection::schema(
                "UpdateInstanceRequest",
                "/env",
                "there must be at least 1 properties",
            ));
        }
        let mut policies = BTreeMap::new();
        for (key, value) in [
            ("auto_standby", &self.auto_standby),
            ("health_check", &self.health_check),
            ("restart_policy", &self.restart_policy),
        ] {
            if let Some(v) = value {
                policies.insert(key.to_string(), v.clone());
            }
        }
        let allow = match self
            .network
            .as_ref()
            .and_then(|n| n.egress.as_ref())
            .and_then(|e| e.allow.as_ref())
        {
            Some(entries) => Some(crate::AllowList::parse(entries)?),
            None => None,
        };
        if self.env.is_none() && policies.is_empty() && allow.is_none() {
            return Err(Rejection::invalid_request(
                "request must include env, auto_standby, health_check, and/or restart_policy",
            ));
        }
        Ok(InstanceUpdate {
            env: self.env.clone(),
            policies,
            allow,
        })
    }
}

/// Checks an env update against an instance's credential policies, in upstream's order:
/// the instance must have credentials and egress, and every key must be a credential source.
pub fn check_env_update(
    env: &BTreeMap<String, String>,
    credentials: &BTreeMap<String, CredentialPolicy>,
    egress_enabled: bool,
) -> Result<(), Rejection> {
    if credentials.is_empty() || !egress_enabled {
        return Err(Rejection::invalid_request(
            "instance has no credential-backed env vars to update",
        ));
    }
    let allowed = credential_source_keys(credentials);
    let bad: Vec<&str> = env
        .keys()
        .filter(|k| !allowed.contains(*k))
        .map(String::as_str)
        .collect();
    if !bad.is_empty() {
        let allowed: Vec<&str> = allowed.iter().map(String::as_str).collect();
        return Err(Rejection::invalid_request(format!(
            "env keys [{}] are not credential source env vars; allowed keys: [{}]",
            bad.join(" "),
            allowed.join(" ")
        )));
    }
    Ok(())
}

/// After merging, every credential source must still be non-empty.
pub fn check_bindings_non_empty(
    merged_env: &BTreeMap<String, String>,
    credentials: &BTreeMap<String, CredentialPolicy>,
) -> Result<(), Rejection> {
    for (key, policy) in credentials {
        let source = &policy.source.env;
        if merged_env.get(source).is_none_or(|v| v.trim().is_empty()) {
            return Err(Rejection::invalid_request(format!(
                "env var {source:?} must be non-empty when referenced by credentials[{key:?}]"
            )));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests;
