//! `instances/<id>/metadata.json`: what is persisted about one instance.
//!
//! Derived facts (state, has_snapshot) are never stored. Secret values are never stored: a
//! credential-backed env var is a [`SecretRef`] naming a keychain account.

use std::collections::BTreeMap;
use std::path::Path;

use hypedeck_model::{CredentialPolicy, HypervisorKind, VolumeMount};
use serde::{Deserialize, Serialize};
use time::OffsetDateTime;

use crate::{Paths, StoreError};

/// The newest metadata schema this build writes and reads.
pub const SCHEMA_VERSION: u32 = 1;

/// Where a secret env value lives.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SecretRef {
    /// Keychain account name (the value itself is in the OS keychain).
    pub keychain_account: String,
    /// When the value was last set (create, PATCH, re-resolve); `None` in records written
    /// before this was kept.
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        with = "time::serde::rfc3339::option"
    )]
    pub rotated_at: Option<OffsetDateTime>,
    /// Where the value comes from when it is a reference (`op://…`, `keychain:…`, `cmd:…`):
    /// the reference, not a secret. The resolved value is in the keychain like any other.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reference: Option<String>,
}

/// Persisted egress settings.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct EgressRecord {
    /// Mediated egress on.
    pub enabled: bool,
    /// `all` or `http_https_only`.
    pub mode: String,
}

/// Persisted network settings and allocation.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct NetworkRecord {
    /// Attached to the default network.
    pub enabled: bool,
    /// Download limit, bytes/s (0 = none).
    pub bandwidth_download_bps: u64,
    /// Upload limit, bytes/s (0 = none).
    pub bandwidth_upload_bps: u64,
    /// Mediated egress.
    pub egress: EgressRecord,
    /// Allocated guest IP.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ip: Option<String>,
    /// Allocated guest MAC.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mac: Option<String>,
    /// Host port of this instance's egress proxy listener (the guestfwd target).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub proxy_port: Option<u16>,
}

/// One instance's metadata.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct InstanceRecord {
    /// Schema version of this file.
    pub schema_version: u32,
    /// Instance id.
    pub id: String,
    /// Instance name.
    pub name: String,
    /// Image reference as supplied.
    pub image: String,
    /// Resolved image platform.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub platform: Option<String>,
    /// Manifest digest the image resolved to at create (boots never follow a moved tag).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image_digest: Option<String>,
    /// Hypervisor backend.
    pub hypervisor: HypervisorKind,
    /// Virtual CPUs.
    pub vcpus: u32,
    /// Boot memory, bytes.
    pub memory_bytes: u64,
    /// Hotplug memory, bytes.
    pub hotplug_bytes: u64,
    /// Overlay disk, bytes.
    pub overlay_bytes: u64,
    /// Disk I/O limit, bytes/s (0 = none).
    pub disk_io_bps: u64,
    /// Plain env values (never a credential source).
    #[serde(default)]
    pub env: BTreeMap<String, String>,
    /// Credential-backed env values, by reference.
    #[serde(default)]
    pub secret_env: BTreeMap<String, SecretRef>,
    /// Credential policies keyed by guest env var name.
    #[serde(default)]
    pub credentials: BTreeMap<String, CredentialPolicy>,
    /// Tags.
    #[serde(default)]
    pub tags: BTreeMap<String, String>,
    /// Network.
    pub network: NetworkRecord,
    /// Volumes.
    #[serde(default)]
    pub volumes: Vec<VolumeMount>,
    /// vGPU profile.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gpu_profile: Option<String>,
    /// PCI devices.
    #[serde(default)]
    pub devices: Vec<String>,
    /// Entrypoint override.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub entrypoint: Option<Vec<String>>,
    /// Cmd override.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cmd: Option<Vec<String>>,
    /// Guest ports forwarded to the host's loopback.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub ports: Vec<hypedeck_model::PortForward>,
    /// Skip kernel headers.
    #[serde(default)]
    pub skip_kernel_headers: bool,
    /// Skip the guest agent.
    #[serde(default)]
    pub skip_guest_agent: bool,
    /// Policies kept verbatim until their features land.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub policies: BTreeMap<String, serde_json::Value>,
    /// Creation time.
    #[serde(with = "time::serde::rfc3339")]
    pub created_at: OffsetDateTime,
    /// Boot time of the current run.
    #[serde(default, with = "time::serde::rfc3339::option")]
    pub started_at: Option<OffsetDateTime>,
    /// Last stop or standby.
    #[serde(default, with = "time::serde::rfc3339::option")]
    pub stopped_at: Option<OffsetDateTime>,
    /// Exit code of the last run.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exit_code: Option<i32>,
    /// Exit message of the last run.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exit_message: Option<String>,
    /// Size of the console log (`app.log`, appended across runs) when the current run booted:
    /// this run's boot markers and exit sentinel are after it.
    #[serde(default)]
    pub log_offset: u64,
}

impl InstanceRecord {
    /// Reads and version-checks a metadata file.
    pub fn load(path: &Path) -> Result<InstanceRecord, StoreError> {
        let bytes = std::fs::read(path).map_err(|source| StoreError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        #[derive(Deserialize)]
        struct Version {
            schema_version: u32,
        }
        let version: Version =
            serde_json::from_slice(&bytes).map_err(|source| StoreError::Decode {
                path: path.to_path_buf(),
                source,
            })?;
        if version.schema_version > SCHEMA_VERSION {
            return Err(StoreError::SchemaTooNew {
                path: path.to_path_buf(),
                found: version.schema_version,
                supported: SCHEMA_VERSION,
            });
        }
        serde_json::from_slice(&bytes).map_err(|source| StoreError::Decode {
            path: path.to_path_buf(),
            source,
        })
    }

    /// Writes this record atomically into its instance directory (created if missing).
    pub fn save(&self, paths: &Paths) -> Result<(), StoreError> {
        let id = hypedeck_model::InstanceId::parse(&self.id).map_err(|_| StoreError::InvalidId)?;
        crate::create_private_dir(&paths.instance_dir(&id))?;
        crate::write_json(&paths.instance_metadata(&id), self)
    }

    /// Every record in the data dir, sorted by creation time then id. Directories whose name is
    /// not a valid id are skipped; unreadable metadata is reported per directory.
    pub fn load_all(paths: &Paths) -> Result<Vec<Result<InstanceRecord, StoreError>>, StoreError> {
        let dir = paths.instances();
        let entries = match std::fs::read_dir(&dir) {
            Ok(entries) => entries,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(source) => return Err(StoreError::Read { path: dir, source }),
        };
        let mut out = Vec::new();
        for entry in entries {
            let entry = entry.map_err(|source| StoreError::Read {
                path: dir.clone(),
                source,
            })?;
            let Ok(name) = entry.file_name().into_string() else {
                continue;
            };
            let Ok(id) = hypedeck_model::InstanceId::parse(&name) else {
                continue;
            };
            let metadata = paths.instance_metadata(&id);
            if !metadata.exists() {
                continue;
            }
            out.push(InstanceRecord::load(&metadata));
        }
        out.sort_by(|a, b| match (a, b) {
            (Ok(a), Ok(b)) => (a.created_at, &a.id).cmp(&(b.created_at, &b.id)),
            (Ok(_), Err(_)) => std::cmp::Ordering::Less,
            (Err(_), Ok(_)) => std::cmp::Ordering::Greater,
            (Err(_), Err(_)) => std::cmp::Ordering::Equal,
        });
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(id: &str) -> InstanceRecord {
        InstanceRecord {
            schema_version: SCHEMA_VERSION,
            id: id.to_string(),
            name: "web".into(),
            image: "docker.io/library/alpine:latest".into(),
            platform: None,
            image_digest: None,
            hypervisor: HypervisorKind::Qemu,
            vcpus: 2,
            memory_bytes: 1 << 30,
            hotplug_bytes: 0,
            overlay_bytes: 10 << 30,
            disk_io_bps: 0,
            env: BTreeMap::from([("PORT".into(), "3000".into())]),
            secret_env: BTreeMap::from([(
                "KEY".into(),
                SecretRef {
                    keychain_account: format!("instance/{id}/env/KEY"),
                    rotated_at: None,
                    reference: None,
                },
            )]),
            credentials: BTreeMap::new(),
            tags: BTreeMap::new(),
            network: NetworkRecord {
                enabled: true,
                ..NetworkRecord::default()
            },
            volumes: vec![],
            gpu_profile: None,
            devices: vec![],
            entrypoint: None,
            cmd: Some(vec!["sleep".into(), "1".into()]),
            ports: vec![],
            skip_kernel_headers: false,
            skip_guest_agent: false,
            policies: BTreeMap::new(),
            created_at: OffsetDateTime::from_unix_timestamp(1_700_000_000).unwrap(),
            started_at: None,
            stopped_at: None,
            exit_code: None,
            exit_message: None,
            log_offset: 0,
        }
    }

    #[test]
    fn save_load_round_trip_and_list() {
        let dir = tempfile::tempdir().unwrap();
        let paths = Paths::new(dir.path());
        let a = record("aaaaaaaaaaaaaaaaaaaaaaaa");
        a.save(&paths).unwrap();
        std::fs::create_dir_all(paths.instances().join("..escape")).unwrap();
        let all = InstanceRecord::load_all(&paths).unwrap();
        assert_eq!(all.len(), 1);
        assert_eq!(all[0].as_ref().unwrap(), &a);
        let text = std::fs::read_to_string(
            paths.instance_metadata(&hypedeck_model::InstanceId::parse(&a.id).unwrap()),
        )
        .unwrap();
        assert!(text.contains("\"schema_version\": 1"), "{text}");
        assert!(text.contains("keychain_account"), "{text}");
    }

    #[test]
    fn newer_schema_is_refused_with_a_clear_error() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("metadata.json");
        let mut value = serde_json::to_value(record("bbbbbbbbbbbbbbbbbbbbbbbb")).unwrap();
        value["schema_version"] = serde_json::json!(SCHEMA_VERSION + 1);
        std::fs::write(&path, serde_json::to_vec(&value).unwrap()).unwrap();
        let err = InstanceRecord::load(&path).unwrap_err();
        assert!(
            err.to_string()
                .contains("newer than this build understands"),
            "{err}"
        );
    }
}
