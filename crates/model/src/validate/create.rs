//! `POST /instances`: a [`CreateInstanceRequest`] into an [`InstanceSpec`], in upstream's order,
//! with upstream's defaults and limits.

use std::collections::BTreeMap;

use super::Rejection;
use super::credentials::normalize_credentials;
use super::ports::check_ports;
use super::volumes::check_volumes;
use crate::error::ErrorCode;
use crate::instance::HypervisorKind;
use crate::reference::check_image_reference;
use crate::request::CreateInstanceRequest;
use crate::size::{GIB, parse_bandwidth, parse_disk_io, parse_size};
use crate::spec::{EgressMode, InstanceSpec, NetworkSpec};

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

/// `value` parsed with `parse` (`None` or empty: `default`); a failure is `code` with upstream's
/// `invalid <what> format: …`.
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

/// Upstream's text for a bandwidth error (a datasize error on the rate without its `/s`/`ps`).
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

        let volumes = check_volumes(self.volumes.as_deref().unwrap_or_default())?;

        let ports = check_ports(self.ports.as_deref().unwrap_or_default(), network_enabled)?;

        let mut policies = BTreeMap::new();
        for (key, value) in [
            ("snapshot_policy", &self.snapshot_policy),
            ("auto_standby", &self.auto_standby),
            ("health_check", &self.health_check),
            ("restart_policy", &self.restart_policy),
        ] {
            if let Some(v) = value {
                let v = if key == "auto_standby" {
                    crate::autostandby::normalize(v)?
                } else {
                    v.clone()
                };
                policies.insert(key.to_string(), v);
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

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use serde_json::json;

    use super::*;
    use crate::validate::test_support::{create, rejected};

    #[test]
    fn defaults_match_upstream() {
        let spec = create(json!({"name": "a", "image": "alpine"})).unwrap();
        assert_eq!(spec.memory_bytes, GIB);
        assert_eq!(spec.overlay_bytes, 10 * GIB);
        assert_eq!(spec.hotplug_bytes, 0);
        assert_eq!(spec.vcpus, 2);
        assert!(spec.network.enabled);
        assert_eq!(spec.network.egress, None);
        let empty = create(
            json!({"name": "a", "image": "alpine", "size": "", "overlay_size": "0", "vcpus": 0}),
        )
        .unwrap();
        assert_eq!(
            (empty.memory_bytes, empty.overlay_bytes, empty.vcpus),
            (GIB, 10 * GIB, 2)
        );
        let sized = create(
            json!({"name": "a", "image": "alpine", "size": "512MB", "hotplug_size": "1G",
            "overlay_size": "20GB", "disk_io_bps": "100MB/s", "vcpus": 4,
            "network": {"bandwidth_download": "1Gbps", "bandwidth_upload": "125MB/s"}}),
        )
        .unwrap();
        assert_eq!(sized.memory_bytes, 512 * crate::size::MIB);
        assert_eq!(sized.hotplug_bytes, GIB);
        assert_eq!(sized.overlay_bytes, 20 * GIB);
        assert_eq!(sized.disk_io_bps, 100 * crate::size::MIB);
        assert_eq!(sized.network.bandwidth_download, 125_000_000);
        assert_eq!(sized.network.bandwidth_upload, 131_072_000);
        assert_eq!(sized.vcpus, 4);
    }

    #[test]
    fn schema_errors_use_validator_shape() {
        let prefix = "request body has an error: doesn't match schema #/components/schemas/CreateInstanceRequest: ";
        let cases = [
            (
                json!({"name": "Bad_Name", "image": "alpine"}),
                "Error at \"/name\": string doesn't match the regular expression \"^[a-z0-9]([a-z0-9-]*[a-z0-9])?$\"",
            ),
            (
                json!({"name": "a".repeat(64), "image": "alpine"}),
                "Error at \"/name\": maximum string length is 63",
            ),
            (
                json!({"name": "-a", "image": "alpine"}),
                "Error at \"/name\": string doesn't match the regular expression \"^[a-z0-9]([a-z0-9-]*[a-z0-9])?$\"",
            ),
            (
                json!({"image": "alpine"}),
                "Error at \"/name\": property \"name\" is missing",
            ),
            (
                json!({"name": "a"}),
                "Error at \"/image\": property \"image\" is missing",
            ),
            (
                json!({"name": "a", "image": "x", "vcpus": "two"}),
                "Error at \"/vcpus\": value must be an integer",
            ),
            (
                json!({"name": "a", "image": "x", "vcpus": 2.5}),
                "Error at \"/vcpus\": value must be an integer",
            ),
            (
                json!({"name": "a", "image": "x", "hypervisor": "kvm"}),
                "Error at \"/hypervisor\": value is not one of the allowed values [\"cloud-hypervisor\",\"firecracker\",\"qemu\",\"qemu-microvm\",\"vz\"]",
            ),
            (
                json!({"name": "a", "image": "x", "platform": "Linux/AMD64"}),
                "Error at \"/platform\": string doesn't match the regular expression \"^[a-z0-9]+/[a-z0-9]+(/[a-z0-9.]+)?$\"",
            ),
            (
                json!({"name": "a", "image": "x", "env": {"A": 1}}),
                "Error at \"/env/A\": value must be a string",
            ),
            (
                json!({"name": "a", "image": "x", "network": {"enabled": "yes"}}),
                "Error at \"/network/enabled\": value must be a boolean",
            ),
            (
                json!({"name": "a", "image": "x", "network": {"egress": {"enabled": true, "enforcement": {"mode": "some"}}}}),
                "Error at \"/network/egress/enforcement/mode\": value is not one of the allowed values [\"all\",\"http_https_only\"]",
            ),
            (
                json!({"name": "a", "image": "x", "credentials": {"K": {"source": {"env": "K"}, "inject": []}}}),
                "Error at \"/credentials/K/inject\": minimum number of items is 1",
            ),
            (
                json!({"name": "a", "image": "x", "volumes": [{"mount_path": "/data"}]}),
                "Error at \"/volumes/0/volume_id\": property \"volume_id\" is missing",
            ),
            (
                json!({"name": "a", "image": "x", "tags": {"k": "bad\u{1}value"}}),
                "Error at \"/tags/k\": string doesn't match the regular expression \"^[A-Za-z0-9 _.:/=+@-]*$\"",
            ),
            (
                json!({"name": "a", "image": "x", "tags": {"k": "v".repeat(257)}}),
                "Error at \"/tags/k\": maximum string length is 256",
            ),
            (
                json!({"name": "a", "image": "x", "cmd": "echo hi"}),
                "Error at \"/cmd\": value must be an array",
            ),
            (
                json!({"name": "a", "image": 7}),
                "Error at \"/image\": value must be a string",
            ),
        ];
        for (body, want) in cases {
            let (code, message) = rejected(body.clone());
            assert_eq!(code, "Bad Request", "{body}");
            assert_eq!(message, format!("{prefix}{want}"), "{body}");
        }
        let many: BTreeMap<String, String> = (0..51)
            .map(|i| (format!("k{i}"), "v".to_string()))
            .collect();
        let (code, message) = rejected(json!({"name": "a", "image": "x", "tags": many}));
        assert_eq!(code, "Bad Request");
        assert!(
            message.ends_with("Error at \"/tags\": there must be at most 50 properties"),
            "{message}"
        );
    }

    #[test]
    fn unknown_fields_are_ignored_and_nulls_rejected() {
        let spec = create(json!({"name": "a", "image": "alpine", "port_mappings": [1]})).unwrap();
        assert_eq!(spec.memory_bytes, GIB);
        // Like upstream's validator: no request property is nullable, so null is a type error
        // (found by contract fuzzing: `{"id": null}` used to create a volume).
        let (code, message) = rejected(json!({"name": "a", "image": "alpine", "size": null}));
        assert_eq!(code, "Bad Request");
        assert!(
            message.ends_with("Error at \"/size\": Value is not nullable"),
            "{message}"
        );
        let (_, message) = rejected(json!({"name": "a", "image": "alpine", "env": {"A": null}}));
        assert!(
            message.ends_with("Error at \"/env/A\": Value is not nullable"),
            "{message}"
        );
    }

    #[test]
    fn handler_errors_match_upstream_codes_and_text() {
        let cases = [
            (
                json!({"name": "a", "image": "x", "size": "lots"}),
                "invalid_size",
                "invalid size format: strconv.UnmarshalText: parsing \"lots\": invalid syntax",
            ),
            (
                json!({"name": "a", "image": "x", "size": "1.5GB"}),
                "invalid_size",
                "invalid size format: strconv.UnmarshalText: parsing \"1.5GB\": invalid syntax",
            ),
            (
                json!({"name": "a", "image": "x", "size": "1Gb"}),
                "invalid_size",
                "invalid size format: strconv.UnmarshalText: parsing \"1Gb\": unit with capital unit prefix and lower case unit (b) - bits, not bytes",
            ),
            (
                json!({"name": "a", "image": "x", "hotplug_size": "x"}),
                "invalid_hotplug_size",
                "invalid hotplug_size format: strconv.UnmarshalText: parsing \"x\": invalid syntax",
            ),
            (
                json!({"name": "a", "image": "x", "overlay_size": "big"}),
                "invalid_overlay_size",
                "invalid overlay_size format: strconv.UnmarshalText: parsing \"big\": invalid syntax",
            ),
            (
                json!({"name": "a", "image": "x", "disk_io_bps": "fast/s"}),
                "invalid_disk_io_bps",
                "invalid disk_io_bps format: strconv.UnmarshalText: parsing \"fast\": invalid syntax",
            ),
            (
                json!({"name": "a", "image": "x", "network": {"bandwidth_download": "1.5Gbps"}}),
                "invalid_bandwidth_download",
                "invalid bandwidth_download format: invalid number: 1.5",
            ),
            (
                json!({"name": "a", "image": "x", "network": {"bandwidth_upload": "lots"}}),
                "invalid_bandwidth_upload",
                "invalid bandwidth_upload format: parse as bytes: strconv.UnmarshalText: parsing \"lots\": invalid syntax",
            ),
            (
                json!({"name": "a", "image": "x", "volumes": [{"volume_id": "v", "mount_path": "/d", "overlay_size": "x"}]}),
                "invalid_overlay_size",
                "invalid overlay_size for volume v: strconv.UnmarshalText: parsing \"x\": invalid syntax",
            ),
            (
                json!({"name": "a", "image": "x", "network": {"enabled": false, "egress": {"enabled": true}}}),
                "invalid_request",
                "invalid request: network.egress requires network.enabled=true",
            ),
            (
                json!({"name": "a", "image": "x", "env": {"K": "v"},
                    "credentials": {"K": {"source": {"env": "K"}, "inject": [{"as": {"header": "A", "format": "${value}"}}]}}}),
                "invalid_request",
                "invalid request: credentials require network.egress.enabled=true",
            ),
            (
                json!({"name": "a", "image": "x", "network": {"egress": {"enabled": true}},
                    "credentials": {"OUTBOUND_OPENAI_KEY": {"source": {"env": "OUTBOUND_OPENAI_KEY"},
                        "inject": [{"as": {"header": "Authorization", "format": "Bearer ${value}"}}]}}}),
                "invalid_request",
                "invalid request: credentials[\"OUTBOUND_OPENAI_KEY\"].source.env \"OUTBOUND_OPENAI_KEY\" must be present in env",
            ),
            (
                json!({"name": "a", "image": "x", "env": {"K": "  "}, "network": {"egress": {"enabled": true}},
                    "credentials": {"K": {"source": {"env": "K"}, "inject": [{"as": {"header": "A", "format": "${value}"}}]}}}),
                "invalid_request",
                "invalid request: env var \"K\" must be non-empty when referenced by credentials[\"K\"]",
            ),
            (
                json!({"name": "a", "image": "x", "env": {"K": "v"}, "network": {"egress": {"enabled": true}},
                    "credentials": {"K": {"source": {"env": "K"}, "inject": [{"as": {"header": "A", "format": "Bearer"}}]}}}),
                "invalid_request",
                "invalid request: credentials[\"K\"].inject[0].as.format must include ${value}",
            ),
            (
                json!({"name": "a", "image": "x", "env": {"K": "v"}, "network": {"egress": {"enabled": true}},
                    "credentials": {"K": {"source": {"env": "K"}, "inject": [{"hosts": ["https://x"], "as": {"header": "A", "format": "${value}"}}]}}}),
                "invalid_request",
                "invalid request: credentials[\"K\"].inject[0].hosts: invalid host pattern \"https://x\": allowed domain pattern \"https://x\" must be a host pattern without scheme/path",
            ),
            (
                json!({"name": "a", "image": "x", "vcpus": -1}),
                "invalid_request",
                "invalid request: vcpus cannot be negative",
            ),
            (
                json!({"name": "a", "image": "x", "vcpus": 17}),
                "invalid_request",
                "invalid request: vcpus 17 exceeds maximum allowed 16 per instance",
            ),
            (
                json!({"name": "a", "image": ""}),
                "invalid_request",
                "invalid request: image is required",
            ),
            (
                json!({"name": "a", "image": "UPPER::bad"}),
                "invalid_name",
                "invalid image reference",
            ),
            (
                json!({"name": "a", "image": "x", "platform": "linux/s390x"}),
                "invalid_platform",
                "unsupported platform \"linux/s390x\": only linux/amd64 and linux/arm64 are supported",
            ),
            (
                json!({"name": "a", "image": "x", "volumes": [{"volume_id": "v", "mount_path": "data"}]}),
                "invalid_request",
                "invalid request: volume v: mount path \"data\" must be absolute",
            ),
            (
                json!({"name": "a", "image": "x", "volumes": [{"volume_id": "v", "mount_path": "/etc"}]}),
                "invalid_request",
                "invalid request: volume v: cannot mount to system directory \"/etc\"",
            ),
            (
                json!({"name": "a", "image": "x", "volumes": [{"volume_id": "v", "mount_path": "/d", "overlay": true, "overlay_size": "1GB"}]}),
                "invalid_request",
                "invalid request: volume v: overlay mode requires readonly=true",
            ),
        ];
        for (body, code, message) in cases {
            let (got_code, got_message) = rejected(body.clone());
            assert_eq!(
                (got_code.as_str(), got_message.as_str()),
                (code, message),
                "{body}"
            );
        }
    }
}
