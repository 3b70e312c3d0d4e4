//! `instances/<id>/metadata.json`: what is persisted about one instance.
//!
//! Derived facts (state, has_snapshot) are never stored. Secret values are never stored: a
//! credential-backed env var is a [`SecretRef`] naming a keychain account.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

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
    /// The names the guest may reach (Hypedeck extension; `None`: any public destination).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub allow: Option<hypedeck_model::AllowList>,
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
    /// Loopback port of this instance's egress proxy test listener, set only when the engine
    /// runs with `HYPEDECK_EGRESS_TEST_LISTENER=1` (guests reach their proxy through their
    /// own network stack, never through a host port).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub proxy_port: Option<u16>,
    /// The address and MAC the engine gives this guest instead of the ones derived from its
    /// id: a fork's (an address allocated in its parent's subnet, so parent and forks never
    /// share one), or, for a fork of a saved VM without the guest agent
    /// (`skip_guest_agent`), its parent's, which it keeps because it cannot be told another.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pinned: Option<PinnedAddress>,
}

/// A guest address the engine serves as it is (see [`NetworkRecord::pinned`]).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PinnedAddress {
    /// IPv4 address (in a `10.100.N.0/24` sandbox subnet).
    pub ip: String,
    /// MAC address.
    pub mac: String,
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
    /// What the instance was forked from, if it is a fork.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub forked_from: Option<hypedeck_model::ForkOrigin>,
    /// The template the current run started from (`None`: a cold boot, or a restore).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub template_id: Option<String>,
    /// The kernel and initramfs the current (or saved) run booted from. A restore boots from
    /// them again, so an instance keeps its kernel until it restarts when the app brings a new
    /// one, and the boot cache keeps them while the instance runs or is saved.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub boot: Option<BootRecord>,
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

/// Boot files of a run (see [`InstanceRecord::boot`]).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BootRecord {
    /// The kernel image (`system/kernel/<release>/vmlinuz`).
    pub kernel: PathBuf,
    /// The initramfs (`system/initrd/<key>/initrd.img`).
    pub initrd: PathBuf,
}

impl BootRecord {
    /// The kernel's release, from its cache dir's name (`6.1.0-57-cloud-amd64`).
    pub fn kernel_release(&self) -> String {
        let dir = self
            .kernel
            .parent()
            .and_then(Path::file_name)
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        dir.split('+').next().unwrap_or_default().to_string()
    }
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

    /// Writes a new instance's record, creating its directory.
    pub fn create(&self, paths: &Paths) -> Result<(), StoreError> {
        let id = hypedeck_model::InstanceId::parse(&self.id).map_err(|_| StoreError::InvalidId)?;
        crate::create_private_dir(&paths.instance_dir(&id))?;
        crate::write_json(&paths.instance_metadata(&id), self)
    }

    /// Writes this record atomically over the saved one. Never creates the instance's
    /// directory: a record whose instance was deleted meanwhile is not brought back (the write
    /// fails instead).
    pub fn save(&self, paths: &Paths) -> Result<(), StoreError> {
        let id = hypedeck_model::InstanceId::parse(&self.id).map_err(|_| StoreError::InvalidId)?;
        crate::write_json(&paths.instance_metadata(&id), self)
    }

    /// Every record in the data dir, sorted by creation time then id. Directories whose name is
    /// not a valid id are skipped; unreadable metadata is reported per directory.
    pub fn load_all(paths: &Paths) -> Result<Vec<Result<InstanceRecord, StoreError>>, StoreError> {
        RecordCache::default().load_all(paths)
    }
}

/// What identifies one version of a metadata file: `save` replaces the file by renaming a new
/// one over it, so every save gives a new inode (and usually a new mtime and size).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct FileVersion {
    inode: u64,
    len: u64,
    modified: Option<std::time::SystemTime>,
}

impl FileVersion {
    fn of(meta: &std::fs::Metadata) -> FileVersion {
        #[cfg(unix)]
        let inode = std::os::unix::fs::MetadataExt::ino(meta);
        #[cfg(not(unix))]
        let inode = 0;
        FileVersion {
            inode,
            len: meta.len(),
            modified: meta.modified().ok(),
        }
    }
}

/// Parsed records kept between [`RecordCache::load_all`] calls: a metadata file is read and
/// parsed again only when its inode, size or mtime changed, so listing 1,000 instances costs
/// 1,000 `stat`s rather than 1,000 reads and JSON parses. Any change on disk (this engine's
/// saves, a hand edit, a deletion) is seen on the next call.
#[derive(Debug, Default)]
pub struct RecordCache {
    parsed: std::sync::Mutex<std::collections::HashMap<String, (FileVersion, InstanceRecord)>>,
}

impl RecordCache {
    /// Like [`InstanceRecord::load_all`], reusing records whose file did not change.
    pub fn load_all(
        &self,
        paths: &Paths,
    ) -> Result<Vec<Result<InstanceRecord, StoreError>>, StoreError> {
        let dir = paths.instances();
        let entries = match std::fs::read_dir(&dir) {
            Ok(entries) => entries,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(source) => return Err(StoreError::Read { path: dir, source }),
        };
        let mut parsed = self
            .parsed
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let mut seen = std::collections::HashSet::new();
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
            let Ok(meta) = std::fs::metadata(&metadata) else {
                continue;
            };
            let version = FileVersion::of(&meta);
            seen.insert(name.clone());
            if let Some((v, record)) = parsed.get(&name)
                && *v == version
            {
                out.push(Ok(record.clone()));
                continue;
            }
            let loaded = InstanceRecord::load(&metadata);
            match &loaded {
                Ok(record) => {
                    parsed.insert(name, (version, record.clone()));
                }
                Err(_) => {
                    parsed.remove(&name);
                }
            }
            out.push(loaded);
        }
        parsed.retain(|name, _| seen.contains(name));
        drop(parsed);
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
            forked_from: None,
            template_id: None,
            boot: None,
        }
    }

    #[test]
    fn the_cache_reparses_only_changed_files_and_forgets_deleted_ones() {
        let dir = tempfile::tempdir().unwrap();
        let paths = Paths::new(dir.path());
        let ids = [
            "aaaaaaaaaaaaaaaaaaaaaaaa",
            "bbbbbbbbbbbbbbbbbbbbbbbb",
            "cccccccccccccccccccccccc",
        ];
        for id in ids {
            record(id).create(&paths).unwrap();
        }
        let cache = RecordCache::default();
        let names = |list: Vec<Result<InstanceRecord, StoreError>>| -> Vec<String> {
            list.into_iter()
                .map(|r| {
                    r.map(|r| format!("{}:{}", &r.id[..1], r.name))
                        .unwrap_or_else(|e| format!("error {e}"))
                })
                .collect()
        };
        assert_eq!(
            names(cache.load_all(&paths).unwrap()),
            ["a:web", "b:web", "c:web"]
        );

        // A save (a new file by rename) is seen.
        let mut b = record(ids[1]);
        b.name = "renamed".into();
        b.save(&paths).unwrap();
        assert_eq!(
            names(cache.load_all(&paths).unwrap()),
            ["a:web", "b:renamed", "c:web"]
        );

        // An unchanged file is not read again: garbage written in place with the same size and
        // mtime (same inode) still lists the parsed record.
        let a_path = paths.instance_metadata(&hypedeck_model::InstanceId::parse(ids[0]).unwrap());
        let meta = std::fs::metadata(&a_path).unwrap();
        let f = std::fs::OpenOptions::new()
            .write(true)
            .open(&a_path)
            .unwrap();
        use std::io::Write as _;
        (&f).write_all(&vec![b' '; meta.len() as usize]).unwrap();
        f.set_modified(meta.modified().unwrap()).unwrap();
        drop(f);
        assert_eq!(names(cache.load_all(&paths).unwrap())[0], "a:web");
        // A fresh cache reads it and reports the damage; the others still list.
        let fresh = names(RecordCache::default().load_all(&paths).unwrap());
        assert!(fresh[2].starts_with("error"), "{fresh:?}");

        // A deleted instance is gone, and forgotten.
        std::fs::remove_dir_all(
            paths.instance_dir(&hypedeck_model::InstanceId::parse(ids[2]).unwrap()),
        )
        .unwrap();
        assert_eq!(
            names(cache.load_all(&paths).unwrap()),
            ["a:web", "b:renamed"]
        );
        assert_eq!(cache.parsed.lock().unwrap().len(), 2);
    }

    /// A poller that saves after a delete must not bring the instance back.
    #[test]
    fn save_never_recreates_a_deleted_instance() {
        let dir = tempfile::tempdir().unwrap();
        let paths = Paths::new(dir.path());
        let a = record("aaaaaaaaaaaaaaaaaaaaaaaa");
        a.create(&paths).unwrap();
        a.save(&paths).unwrap();
        let instance = paths.instance_dir(&hypedeck_model::InstanceId::parse(&a.id).unwrap());
        std::fs::remove_dir_all(&instance).unwrap();
        assert!(matches!(a.save(&paths), Err(StoreError::Write { .. })));
        assert!(!instance.exists(), "save re-created a deleted instance");
        assert!(InstanceRecord::load_all(&paths).unwrap().is_empty());
    }

    #[test]
    fn save_load_round_trip_and_list() {
        let dir = tempfile::tempdir().unwrap();
        let paths = Paths::new(dir.path());
        let a = record("aaaaaaaaaaaaaaaaaaaaaaaa");
        a.create(&paths).unwrap();
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
