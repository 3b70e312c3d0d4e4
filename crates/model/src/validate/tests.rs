use std::collections::BTreeMap;

use serde_json::json;

use super::*;
use crate::schema;

fn create(body: serde_json::Value) -> Result<InstanceSpec, Rejection> {
    schema::check_body(
        "CreateInstanceRequest",
        &schema::create_instance_request(),
        &body,
    )?;
    let request: CreateInstanceRequest = serde_json::from_value(body).expect("schema-valid body");
    request.validate()
}

fn rejected(body: serde_json::Value) -> (String, String) {
    let r = create(body).unwrap_err();
    (r.code.as_str().to_string(), r.message)
}

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

#[test]
fn credentials_are_normalized() {
    let spec = create(json!({
        "name": "agent-1", "image": "docker.io/library/alpine:latest",
        "env": {"OUTBOUND_OPENAI_KEY": "sk-real-123", "PORT": "3000"},
        "network": {"enabled": true, "egress": {"enabled": true}},
        "credentials": {" OUTBOUND_OPENAI_KEY ": {"source": {"env": "OUTBOUND_OPENAI_KEY"},
            "inject": [{"hosts": ["API.openai.com", "*.openai.com", "api.openai.com"],
                        "as": {"header": "Authorization", "format": "Bearer ${value}"}}]}}
    }))
    .unwrap();
    assert_eq!(spec.network.egress, Some(EgressMode::All));
    let policy = &spec.credentials["OUTBOUND_OPENAI_KEY"];
    assert_eq!(
        policy.inject[0].hosts.as_deref(),
        Some(&["api.openai.com".to_string(), "*.openai.com".to_string()][..])
    );
    assert_eq!(
        spec.credential_source_keys()
            .into_iter()
            .collect::<Vec<_>>(),
        vec!["OUTBOUND_OPENAI_KEY"]
    );
}

#[test]
fn host_patterns() {
    assert_eq!(
        normalize_host_pattern("API.OpenAI.com").unwrap(),
        "api.openai.com"
    );
    assert_eq!(
        normalize_host_pattern("*.openai.com").unwrap(),
        "*.openai.com"
    );
    assert_eq!(normalize_host_pattern("10.0.0.1").unwrap(), "10.0.0.1");
    for bad in [
        "https://x",
        "x/y",
        "x:443",
        "*.com",
        "a.*.com",
        "",
        "*",
        "-a.com",
    ] {
        assert!(normalize_host_pattern(bad).is_err(), "{bad}");
    }
}

#[test]
fn image_references() {
    for good in [
        "alpine",
        "alpine:3.20",
        "docker.io/library/alpine:latest",
        "127.0.0.1:5000/busybox:1",
        "localhost/a/b",
        "ghcr.io/org/app@sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef",
        "registry.example.com:443/team/app:v1.2-rc_3",
    ] {
        assert!(check_image_reference(good).is_ok(), "{good}");
    }
    for bad in [
        "",
        "UPPER",
        "a::b",
        "a:",
        "/a",
        "a/",
        "a@sha256:xyz",
        " alpine",
        "a//b",
        "a:b:c/d",
    ] {
        assert!(check_image_reference(bad).is_err(), "{bad}");
    }
}

#[test]
fn names() {
    for good in ["a", "0", "web-1", "a-b-c", &"a".repeat(63)] {
        assert!(is_valid_name(good), "{good}");
    }
    for bad in ["", "-a", "a-", "A", "a_b", "a.b", &"a".repeat(64), "é"] {
        assert!(!is_valid_name(bad), "{bad}");
    }
}

#[test]
fn update_requests() {
    let check = |body: serde_json::Value| -> Result<InstanceUpdate, Rejection> {
        schema::check_body(
            "UpdateInstanceRequest",
            &schema::update_instance_request(),
            &body,
        )?;
        serde_json::from_value::<UpdateInstanceRequest>(body)
            .unwrap()
            .validate()
    };
    let err = check(json!({"env": {}})).unwrap_err();
    assert_eq!(err.code, ErrorCode::SchemaViolation);
    assert_eq!(
        err.message,
        "request body has an error: doesn't match schema #/components/schemas/UpdateInstanceRequest: Error at \"/env\": there must be at least 1 properties"
    );
    let err = check(json!({})).unwrap_err();
    assert_eq!(err.code, ErrorCode::InvalidRequest);
    assert_eq!(
        err.message,
        "invalid request: request must include env, auto_standby, health_check, and/or restart_policy"
    );
    assert!(check(json!({"env": {"K": "v"}})).is_ok());
    // The allow-list extension: validated, and enough on its own.
    let update =
        check(json!({"network": {"egress": {"allow": ["PyPI.org", "*.githubusercontent.com"]}}}))
            .unwrap();
    assert_eq!(
        update.allow.unwrap().entries(),
        ["pypi.org", "*.githubusercontent.com"]
    );
    let err = check(json!({"network": {"egress": {"allow": ["not a host"]}}})).unwrap_err();
    assert_eq!(err.code, ErrorCode::InvalidRequest);
    assert!(err.message.contains("\"not a host\""), "{}", err.message);
    let err = check(json!({"network": {"egress": {"allow": "pypi.org"}}})).unwrap_err();
    assert_eq!(err.code, ErrorCode::SchemaViolation);
    assert!(check(json!({"network": {}})).is_err(), "nothing to do");

    let creds: BTreeMap<String, CredentialPolicy> = serde_json::from_value(json!({
        "OUTBOUND_OPENAI_KEY": {"source": {"env": "OUTBOUND_OPENAI_KEY"},
            "inject": [{"as": {"header": "Authorization", "format": "Bearer ${value}"}}]}
    }))
    .unwrap();
    let env = |pairs: &[(&str, &str)]| -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    };
    assert_eq!(
        check_env_update(&env(&[("PORT", "4000")]), &creds, true)
            .unwrap_err()
            .message,
        "invalid request: env keys [PORT] are not credential source env vars; allowed keys: [OUTBOUND_OPENAI_KEY]"
    );
    assert_eq!(
        check_env_update(
            &env(&[("OUTBOUND_OPENAI_KEY", "x")]),
            &BTreeMap::new(),
            false
        )
        .unwrap_err()
        .message,
        "invalid request: instance has no credential-backed env vars to update"
    );
    assert!(check_env_update(&env(&[("OUTBOUND_OPENAI_KEY", "x")]), &creds, true).is_ok());
    assert_eq!(
        check_bindings_non_empty(&env(&[("OUTBOUND_OPENAI_KEY", "  ")]), &creds)
            .unwrap_err()
            .message,
        "invalid request: env var \"OUTBOUND_OPENAI_KEY\" must be non-empty when referenced by credentials[\"OUTBOUND_OPENAI_KEY\"]"
    );
}

#[test]
fn ports_are_validated_and_default_to_tcp() {
    let spec = create(json!({"name": "web", "image": "alpine", "ports": [
        {"host_port": 8080, "guest_port": 80},
        {"host_port": 8080, "guest_port": 53, "protocol": "udp"}
    ]}))
    .unwrap();
    assert_eq!(
        spec.ports,
        vec![
            PortForward {
                host_port: 8080,
                guest_port: 80,
                protocol: PortProtocol::Tcp
            },
            PortForward {
                host_port: 8080,
                guest_port: 53,
                protocol: PortProtocol::Udp
            },
        ]
    );
    let cases = [
        (
            json!([{"host_port": 0, "guest_port": 80}]),
            "invalid request: ports[0].host_port 0 is not a port (1-65535)",
        ),
        (
            json!([{"host_port": 80, "guest_port": 65536}]),
            "invalid request: ports[0].guest_port 65536 is not a port (1-65535)",
        ),
        (
            json!([{"host_port": 1, "guest_port": 1}, {"host_port": 1, "guest_port": 2}]),
            "invalid request: ports[1]: host port 1/tcp is declared twice",
        ),
    ];
    for (ports, message) in cases {
        let (code, got) = rejected(json!({"name": "web", "image": "alpine", "ports": ports}));
        assert_eq!((code.as_str(), got.as_str()), ("invalid_request", message));
    }
    let (_, message) = rejected(
        json!({"name": "web", "image": "alpine", "network": {"enabled": false},
        "ports": [{"host_port": 8080, "guest_port": 80}]}),
    );
    assert_eq!(
        message,
        "invalid request: ports require network.enabled=true"
    );
    // The schema catches shapes: a missing guest_port, an unknown protocol.
    let (code, message) =
        rejected(json!({"name": "web", "image": "alpine", "ports": [{"host_port": 8080}]}));
    assert_eq!(code, "Bad Request");
    assert!(message.contains("guest_port"), "{message}");
    let (code, _) = rejected(
        json!({"name": "web", "image": "alpine", "ports": [{"host_port": 1, "guest_port": 1, "protocol": "sctp"}]}),
    );
    assert_eq!(code, "Bad Request");
}
