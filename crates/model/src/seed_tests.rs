//! The seed Instance: every field of the spec's `Instance` schema with the spec's own example
//! values, parsed and re-serialized to the same JSON value.

use serde_json::{Value, json};

use crate::{Instance, InstanceState};

/// The spec's per-field examples assembled into one Instance (semantics §4.2 / openapi.yaml).
fn seed() -> Value {
    json!({
        "id": "tz4a98xxat96iws9zmbrgj3a",
        "name": "my-workload-1",
        "image": "docker.io/library/alpine:latest",
        "platform": "linux/amd64",
        "state": "Running",
        "state_error": "failed to query VMM: connection refused",
        "size": "2GB",
        "hotplug_size": "2GB",
        "overlay_size": "10GB",
        "vcpus": 2,
        "disk_io_bps": "100MB/s",
        "env": {"NODE_ENV": "production", "PORT": "3000"},
        "tags": {"env": "staging", "team": "backend"},
        "network": {
            "enabled": true,
            "name": "default",
            "ip": "192.168.100.10",
            "mac": "02:00:00:ab:cd:ef",
            "bandwidth_download": "125MB/s",
            "bandwidth_upload": "125MB/s"
        },
        "volumes": [{
            "volume_id": "vol-abc123",
            "mount_path": "/mnt/data",
            "readonly": false,
            "overlay": false,
            "overlay_size": "1GB"
        }],
        "gpu": {"profile": "L40S-1Q", "mdev_uuid": "aa618089-8b16-4d01-a136-25a0f3c73123"},
        "created_at": "2025-01-15T10:30:00Z",
        "started_at": "2025-01-15T10:30:05Z",
        "stopped_at": "2025-01-15T12:30:00Z",
        "exit_code": 137,
        "exit_message": "killed by signal 9 (SIGKILL)",
        "has_snapshot": false,
        "hypervisor": "cloud-hypervisor",
        "snapshot_policy": {"compression": {"enabled": true, "algorithm": "zstd", "level": 1}},
        "auto_standby": {"enabled": true, "idle_timeout": "5m"},
        "health_check": {"type": "http", "http": {"port": 8080, "path": "/healthz"}},
        "health_status": {"status": "healthy", "consecutive_successes": 3, "consecutive_failures": 0},
        "restart_policy": {"policy": "on_failure", "backoff": "5s"},
        "restart_status": {"attempts": 1},
        "phase_durations_ms": {"running": 60000, "standby": 300000},
        "current_phase": "running",
        "current_phase_since": "2026-05-11T14:00:00Z"
    })
}

#[test]
fn seed_instance_round_trips_to_the_same_json() {
    let value = seed();
    let instance: Instance = serde_json::from_value(value.clone()).unwrap();
    assert_eq!(serde_json::to_value(&instance).unwrap(), value);
}

#[test]
fn seed_instance_fields_are_typed() {
    let i: Instance = serde_json::from_value(seed()).unwrap();
    assert_eq!(i.id, "tz4a98xxat96iws9zmbrgj3a");
    assert_eq!(i.state, InstanceState::Running);
    assert_eq!(i.vcpus, Some(2));
    assert_eq!(i.exit_code, Some(137));
    assert_eq!(i.has_snapshot, Some(false));
    assert_eq!(i.hypervisor, Some(crate::HypervisorKind::CloudHypervisor));
    assert_eq!(
        i.network.as_ref().unwrap().ip.as_deref(),
        Some("192.168.100.10")
    );
    assert_eq!(i.volumes.as_ref().unwrap()[0].volume_id, "vol-abc123");
    assert_eq!(i.gpu.as_ref().unwrap().profile.as_deref(), Some("L40S-1Q"));
    assert_eq!(i.created_at.unix_timestamp(), 1_736_937_000);
    assert_eq!(i.started_at.unwrap().unix_timestamp(), 1_736_937_005);
    assert_eq!(i.env.as_ref().unwrap()["PORT"], "3000");
    assert_eq!(i.tags.as_ref().unwrap()["team"], "backend");
}

#[test]
fn every_spec_property_of_instance_is_modelled() {
    // The property names of `components.schemas.Instance` in openapi.yaml.
    let spec_properties = [
        "id",
        "name",
        "image",
        "platform",
        "state",
        "state_error",
        "size",
        "hotplug_size",
        "overlay_size",
        "vcpus",
        "disk_io_bps",
        "env",
        "tags",
        "network",
        "volumes",
        "gpu",
        "created_at",
        "started_at",
        "stopped_at",
        "exit_code",
        "exit_message",
        "has_snapshot",
        "hypervisor",
        "snapshot_policy",
        "auto_standby",
        "health_check",
        "health_status",
        "restart_policy",
        "restart_status",
        "phase_durations_ms",
        "current_phase",
        "current_phase_since",
    ];
    let seed = seed();
    let object = seed.as_object().unwrap();
    assert_eq!(object.len(), spec_properties.len());
    for p in spec_properties {
        assert!(object.contains_key(p), "seed lacks {p}");
    }
}

#[test]
fn absent_and_null_follow_upstream() {
    // A minimal Stopped instance with a disabled network, as upstream renders it.
    let minimal = json!({
        "created_at": "2025-01-15T10:30:00Z",
        "exit_code": null,
        "has_snapshot": false,
        "hotplug_size": "0 B",
        "hypervisor": "qemu",
        "id": "tz4a98xxat96iws9zmbrgj3a",
        "image": "alpine",
        "name": "a",
        "network": {"enabled": false, "ip": null, "mac": null},
        "overlay_size": "10.0 GB",
        "size": "1024.0 MB",
        "started_at": null,
        "state": "Stopped",
        "state_error": null,
        "stopped_at": null,
        "vcpus": 2
    });
    let instance: Instance = serde_json::from_value(minimal.clone()).unwrap();
    let text = serde_json::to_string(&instance).unwrap();
    assert_eq!(serde_json::from_str::<Value>(&text).unwrap(), minimal);
    // Keys come out in upstream's alphabetical order.
    let mut keys: Vec<&String> = minimal.as_object().unwrap().keys().collect();
    keys.sort();
    let positions: Vec<usize> = keys
        .iter()
        .map(|k| text.find(&format!("\"{k}\":")).unwrap())
        .collect();
    assert!(positions.windows(2).all(|w| w[0] < w[1]), "{text}");
    // Omitted optionals stay omitted, required-nullable ones are null.
    assert!(!text.contains("\"env\""));
    assert!(!text.contains("\"tags\""));
    assert!(text.contains("\"exit_code\":null"));
    assert!(text.contains("\"state_error\":null"));
}
