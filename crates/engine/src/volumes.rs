//! Volumes (upstream §9): ext4 disks in `volumes/<id>/data.raw` with their metadata in
//! `volume.json`, created empty or from a tar archive, attached at instance create only.
//!
//! Attachments are not stored with the volume: they are derived from the instance records
//! (like upstream), so an instance's delete detaches it and nothing can disagree. A volume
//! attaches to several instances only when every attachment is read-only; an attached volume
//! cannot be deleted (409). Overlay attachments give each instance its own writable ext4 disk
//! (`instances/<id>/vol-overlays/<volume>.raw`) over the read-only base.

use std::collections::BTreeMap;
use std::path::PathBuf;

use hypedeck_model::error::sentence;
use hypedeck_model::{
    CreateVolumeRequest, ErrorCode, Rejection, Volume, VolumeAttachment, VolumeMount,
};
use hypedeck_store::InstanceRecord;
use serde::{Deserialize, Serialize};
use time::OffsetDateTime;

use crate::{Engine, EngineError, rejected};

/// Largest volume, in GiB.
pub const MAX_VOLUME_GB: i64 = 1024;
/// Largest archive accepted by `from-archive` (streamed to disk; the unpacked size is checked
/// against the volume separately).
pub const MAX_ARCHIVE_BYTES: u64 = 4 * 1024 * 1024 * 1024;

const GIB: u64 = 1024 * 1024 * 1024;

#[derive(Debug, Clone, Serialize, Deserialize)]
struct VolumeRecord {
    schema_version: u32,
    id: String,
    name: String,
    size_gb: u32,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    tags: BTreeMap<String, String>,
    #[serde(with = "time::serde::rfc3339")]
    created_at: OffsetDateTime,
}

fn invalid(message: impl std::fmt::Display) -> EngineError {
    EngineError::Rejected(Rejection::invalid_request(message))
}

fn not_found(id: &str) -> EngineError {
    rejected(ErrorCode::NotFound, format!("volume {id} not found"))
}

/// Volume ids: letters, digits, `.`, `_`, `-`, starting with a letter or digit, ≤ 64 chars;
/// never a path.
fn valid_id(id: &str) -> bool {
    let mut chars = id.chars();
    id.len() <= 64
        && chars.next().is_some_and(|c| c.is_ascii_alphanumeric())
        && chars.all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'))
}

/// Removes an uploaded file when dropped.
struct RemoveOnDrop(PathBuf);

impl Drop for RemoveOnDrop {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

/// The serial of a volume's disk in an instance (`overlay`: the instance's own upper disk over
/// it), by which the guest finds a disk attached while it runs: `v`/`o` and 16 hex digits of
/// the volume id's FNV-1a hash (a virtio-blk serial holds 20 bytes; ids hold 64).
pub(crate) fn disk_serial(volume_id: &str, overlay: bool) -> String {
    let hash = volume_id.bytes().fold(0xcbf2_9ce4_8422_2325_u64, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
    });
    format!("{}{hash:016x}", if overlay { 'o' } else { 'v' })
}

fn attachments_of(id: &str, records: &[InstanceRecord]) -> Vec<VolumeAttachment> {
    let mut out = Vec::new();
    for r in records {
        for v in r.volumes.iter().filter(|v| v.volume_id == id) {
            out.push(VolumeAttachment {
                instance_id: r.id.clone(),
                mount_path: v.mount_path.clone(),
                readonly: v.readonly.unwrap_or(false),
            });
        }
    }
    out
}

impl Engine {
    fn volumes_dir(&self) -> PathBuf {
        self.paths.root().join("volumes")
    }

    fn volume_dir(&self, id: &str) -> Result<PathBuf, EngineError> {
        if !valid_id(id) {
            return Err(not_found(id));
        }
        Ok(self.volumes_dir().join(id))
    }

    /// The ext4 disk of volume `id`.
    pub(crate) fn volume_disk(&self, id: &str) -> Result<PathBuf, EngineError> {
        Ok(self.volume_dir(id)?.join("data.raw"))
    }

    fn load_volume(&self, id: &str) -> Result<VolumeRecord, EngineError> {
        let path = self.volume_dir(id)?.join("volume.json");
        let text = match std::fs::read_to_string(&path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Err(not_found(id)),
            Err(e) => {
                return Err(EngineError::Io {
                    what: format!("read {}", path.display()),
                    source: e,
                });
            }
        };
        serde_json::from_str(&text).map_err(|_| EngineError::Corrupt {
            what: format!("the metadata of volume {id}"),
        })
    }

    fn render_volume(record: VolumeRecord, records: &[InstanceRecord]) -> Volume {
        Volume {
            attachments: attachments_of(&record.id, records),
            id: record.id,
            name: record.name,
            size_gb: record.size_gb,
            tags: (!record.tags.is_empty()).then_some(record.tags),
            created_at: record.created_at,
        }
    }

    /// Every volume, oldest first.
    pub fn list_volumes(&self) -> Result<Vec<Volume>, EngineError> {
        let records = self.records()?;
        let mut out = Vec::new();
        let entries = match std::fs::read_dir(self.volumes_dir()) {
            Ok(e) => e,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(out),
            Err(source) => {
                return Err(EngineError::Io {
                    what: "list volumes".into(),
                    source,
                });
            }
        };
        for entry in entries.flatten() {
            let id = entry.file_name().to_string_lossy().into_owned();
            match self.load_volume(&id) {
                Ok(v) => out.push(Self::render_volume(v, &records)),
                // A half-created volume (crash mid-create) has no metadata yet: not listed.
                Err(e) => tracing::debug!(%id, "skipping volume: {e}"),
            }
        }
        out.sort_by(|a, b| a.created_at.cmp(&b.created_at).then(a.id.cmp(&b.id)));
        Ok(out)
    }

    /// One volume.
    pub fn get_volume(&self, id: &str) -> Result<Volume, EngineError> {
        let record = self.load_volume(id)?;
        Ok(Self::render_volume(record, &self.records()?))
    }

    /// A fresh path for an uploaded archive (under the data dir, so no upload fills `/tmp`).
    pub fn upload_path(&self) -> Result<PathBuf, EngineError> {
        let dir = self.paths.root().join("uploads");
        hypedeck_store::create_private_dir(&dir)?;
        Ok(dir.join(format!("{}.archive", crate::create::new_id()?.as_str())))
    }

    /// Creates a volume of `size_gb`, empty or holding the files of the archive at `archive`
    /// (tar, gzip or zstd; paths escaping the volume are refused). The archive file is the
    /// caller's upload ([`Engine::upload_path`]) and is removed whatever happens.
    pub async fn create_volume(
        &self,
        request: CreateVolumeRequest,
        archive: Option<PathBuf>,
    ) -> Result<Volume, EngineError> {
        let _upload = archive.clone().map(RemoveOnDrop);
        let name = request.name.trim().to_string();
        if name.is_empty() {
            return Err(invalid("name is required"));
        }
        if !(1..=MAX_VOLUME_GB).contains(&request.size_gb) {
            return Err(invalid(format!(
                "size_gb must be between 1 and {MAX_VOLUME_GB}"
            )));
        }
        let id = match request.id.as_deref().filter(|s| !s.is_empty()) {
            Some(id) if id.starts_with("volumes-") => {
                return Err(invalid(format!(
                    "volume {id}: volume IDs with the prefix \"volumes-\" are reserved for internal use"
                )));
            }
            Some(id) if !valid_id(id) => {
                return Err(invalid(format!(
                    "invalid volume id {id:?}: use letters, digits, '.', '_' and '-' (at most 64)"
                )));
            }
            Some(id) => id.to_string(),
            None => format!("vol-{}", crate::create::new_id()?.as_str()),
        };
        let size_gb = u32::try_from(request.size_gb).unwrap_or(1);
        let dir = self.volume_dir(&id)?;
        {
            // Volumes have their own lock, held only to claim the id: an import can take
            // minutes and must not hold up instance creates. A volume without `volume.json`
            // yet is unknown to attachments and to delete.
            let _claim = self.volume_lock.lock().await;
            if dir.exists() {
                return Err(rejected(
                    ErrorCode::AlreadyExists,
                    format!("volume {id} already exists"),
                ));
            }
            hypedeck_store::create_private_dir(&dir)?;
        }
        let result = self
            .fill_volume(&dir, u64::from(size_gb) * GIB, archive)
            .await
            .and_then(|()| {
                let record = VolumeRecord {
                    schema_version: 1,
                    id: id.clone(),
                    name,
                    size_gb,
                    tags: request.tags.unwrap_or_default(),
                    created_at: OffsetDateTime::now_utc(),
                };
                hypedeck_store::write_json(&dir.join("volume.json"), &record)?;
                Ok(record)
            });
        match result {
            Ok(record) => Ok(Self::render_volume(record, &[])),
            Err(e) => {
                let _ = std::fs::remove_dir_all(&dir);
                Err(e)
            }
        }
    }

    async fn fill_volume(
        &self,
        dir: &std::path::Path,
        size_bytes: u64,
        archive: Option<PathBuf>,
    ) -> Result<(), EngineError> {
        let dir = dir.to_path_buf();
        tokio::task::spawn_blocking(move || {
            let work = dir.join("unpack");
            let built = hypedeck_images::build_volume(
                &dir.join("data.raw"),
                size_bytes,
                archive.as_deref(),
                &work,
            );
            let _ = std::fs::remove_dir_all(&work);
            built.map_err(|e| match e {
                hypedeck_images::ImageError::Archive(_)
                | hypedeck_images::ImageError::Convert(_) => {
                    invalid(format!("invalid archive: {}", sentence(&e)))
                }
                other => EngineError::Build {
                    what: "build the volume disk",
                    source: other,
                },
            })
        })
        .await
        .map_err(|_| EngineError::Task)?
    }

    /// Deletes a detached volume and its data.
    pub async fn delete_volume(&self, id: &str) -> Result<(), EngineError> {
        let _lock = self.create_lock.lock().await;
        self.load_volume(id)?;
        if let Some(a) = attachments_of(id, &self.records()?).first() {
            return Err(rejected(
                ErrorCode::InvalidState,
                format!(
                    "volume {id} is attached to instance {} at {}; delete the instance first",
                    a.instance_id, a.mount_path
                ),
            ));
        }
        std::fs::remove_dir_all(self.volume_dir(id)?).map_err(|source| EngineError::Io {
            what: format!("delete volume {id}"),
            source,
        })
    }

    /// At instance create (create lock held): every volume exists, and sharing follows
    /// upstream's rule (several attachments only when all are read-only).
    pub(crate) fn check_volume_attachments(
        &self,
        mounts: &[VolumeMount],
    ) -> Result<(), EngineError> {
        if mounts.is_empty() {
            return Ok(());
        }
        let records = self.records()?;
        for m in mounts {
            self.load_volume(&m.volume_id)?;
            let wants_rw = !m.readonly.unwrap_or(false);
            let existing = attachments_of(&m.volume_id, &records);
            if let Some(a) = existing.iter().find(|a| wants_rw || !a.readonly) {
                return Err(rejected(
                    ErrorCode::InvalidState,
                    format!(
                        "volume {} is already attached to instance {}{}; a volume is shared only when every attachment is read-only",
                        m.volume_id,
                        a.instance_id,
                        if a.readonly { "" } else { " read-write" }
                    ),
                ));
            }
        }
        Ok(())
    }
}

/// What the guest is asked to mount for `mount`, whose disk has `serial`.
fn mount_request(
    serial: &str,
    mount: &VolumeMount,
) -> hypedeck_guest_init::agent_proto::MountRequest {
    hypedeck_guest_init::agent_proto::MountRequest {
        serial: serial.to_string(),
        mount_path: mount.mount_path.clone(),
        readonly: mount.readonly.unwrap_or(false),
    }
}

/// Why a backend refused to attach or detach a disk, as the API's 409.
fn disk_refused(what: &str, e: hypedeck_hypervisor::HypervisorError) -> EngineError {
    match e {
        hypedeck_hypervisor::HypervisorError::Operation { detail, .. } => {
            rejected(ErrorCode::InvalidState, format!("cannot {what}: {detail}"))
        }
        other => EngineError::Hypervisor(other),
    }
}

impl Engine {
    /// A volume by id, else by name (upstream's order).
    fn find_volume(&self, id_or_name: &str) -> Result<VolumeRecord, EngineError> {
        match self.load_volume(id_or_name) {
            Err(EngineError::Rejected(r)) if r.code == ErrorCode::NotFound => {}
            other => return other,
        }
        let named: Vec<Volume> = self
            .list_volumes()?
            .into_iter()
            .filter(|v| v.name == id_or_name)
            .collect();
        match named.as_slice() {
            [one] => self.load_volume(&one.id),
            [] => Err(not_found(id_or_name)),
            _ => Err(EngineError::Ambiguous),
        }
    }

    /// The VM a verb on the volumes of an instance in `state` changes live (Running), `None`
    /// when it only changes what the next boot mounts (Stopped), or a 409 when it cannot run.
    fn live_vm_for_volumes(
        &self,
        record: &InstanceRecord,
        state: hypedeck_model::InstanceState,
        verb: &str,
    ) -> Result<Option<std::sync::Arc<dyn hypedeck_hypervisor::Vm>>, EngineError> {
        use hypedeck_model::InstanceState;
        match state {
            InstanceState::Stopped => Ok(None),
            InstanceState::Running => {
                let backend = self.backend(record.hypervisor)?;
                if !backend.capabilities().hotplug_disks {
                    return Err(rejected(
                        ErrorCode::NotSupported,
                        format!(
                            "{verb} a running instance is not supported by the {} backend; stop the instance first",
                            record.hypervisor
                        ),
                    ));
                }
                self.runtime
                    .vm(&record.id)
                    .map(Some)
                    .ok_or_else(|| EngineError::InvalidState("the instance's VM is gone".into()))
            }
            other => Err(rejected(
                ErrorCode::InvalidState,
                format!(
                    "cannot {verb} an instance in state {other}; it must be Running or Stopped"
                ),
            )),
        }
    }

    /// Attaches volume `volume` (id or name) to instance `id_or_name` at the request's path.
    /// A running instance gets the disk at once and the guest mounts it before this returns;
    /// a stopped one mounts it at its next start. Upstream's rules: a volume is shared only
    /// when every attachment is read-only, at most 23 volume disks, no system directories.
    pub async fn attach_volume(
        &self,
        id_or_name: &str,
        volume: &str,
        request: hypedeck_model::AttachVolumeRequest,
    ) -> Result<hypedeck_model::Instance, EngineError> {
        let (_guard, mut record, observed) = self.lock_and_observe(id_or_name).await?;
        let found = self.find_volume(volume)?;
        let mount = VolumeMount {
            volume_id: found.id.clone(),
            mount_path: request.mount_path,
            readonly: request.readonly,
            overlay: None,
            overlay_size: None,
        };
        if let Some(existing) = record.volumes.iter().find(|v| v.volume_id == found.id) {
            return Err(rejected(
                ErrorCode::InvalidState,
                format!(
                    "volume {} is already attached to this instance at {}",
                    found.id, existing.mount_path
                ),
            ));
        }
        hypedeck_model::validate::volumes::check_attachment(&record.volumes, &mount)
            .map_err(EngineError::Rejected)?;
        let live = self.live_vm_for_volumes(&record, observed.state, "attach a volume to")?;
        // Held from the sharing check until the record claims the volume, as at create.
        let _claim = self.create_lock.lock().await;
        self.check_volume_attachments(std::slice::from_ref(&mount))?;
        let serial = disk_serial(&found.id, false);
        let vm = if let Some(vm) = live {
            let disk = hypedeck_hypervisor::DiskSpec {
                path: self.volume_disk(&found.id)?,
                readonly: mount.readonly.unwrap_or(false),
                io_bps: record.disk_io_bps,
                serial: Some(serial.clone()),
            };
            vm.attach_disk(&disk)
                .await
                .map_err(|e| disk_refused("attach the volume", e))?;
            let mounted = async {
                let link = self
                    .agent_link(&record.id, std::time::Duration::from_secs(10))
                    .await?;
                link.mount(&mount_request(&serial, &mount))
                    .await
                    .map_err(|e| {
                        EngineError::Agent(format!("the guest could not mount the volume: {e}"))
                    })
            }
            .await;
            if let Err(e) = mounted {
                if let Err(d) = vm.detach_disk(&serial).await {
                    tracing::error!(error = %d, id = %record.id, "could not detach a volume the guest did not mount");
                }
                return Err(e);
            }
            Some(vm)
        } else {
            None
        };
        record.volumes.push(mount.clone());
        if let Err(e) = self.records.save(&record) {
            if let Some(vm) = vm {
                if let Some(link) = self.runtime.agent(&record.id) {
                    let _ = link.unmount(&mount.mount_path).await;
                }
                let _ = vm.detach_disk(&serial).await;
            }
            return Err(e);
        }
        self.ops_log(
            &record.id,
            &format!(
                "volume {} attached at {}{}{}",
                found.id,
                mount.mount_path,
                if mount.readonly == Some(true) {
                    " (read-only)"
                } else {
                    ""
                },
                if vm.is_some() {
                    ""
                } else {
                    " (mounted at the next start)"
                }
            ),
        );
        let observed = self.observe(&mut record).await;
        self.render(&record, &observed).await
    }

    /// Detaches volume `volume` (id or name) from instance `id_or_name`. A running guest
    /// unmounts it first (a volume in use stays attached: 409); a stopped instance just no
    /// longer mounts it.
    pub async fn detach_volume(
        &self,
        id_or_name: &str,
        volume: &str,
    ) -> Result<hypedeck_model::Instance, EngineError> {
        let (_guard, mut record, observed) = self.lock_and_observe(id_or_name).await?;
        let volume_id = match record.volumes.iter().find(|v| v.volume_id == volume) {
            Some(v) => v.volume_id.clone(),
            None => self.find_volume(volume)?.id,
        };
        let Some(pos) = record.volumes.iter().position(|v| v.volume_id == volume_id) else {
            return Err(rejected(
                ErrorCode::NotFound,
                format!(
                    "volume {volume_id} is not attached to instance {}",
                    record.id
                ),
            ));
        };
        let mount = record.volumes[pos].clone();
        let live = self.live_vm_for_volumes(&record, observed.state, "detach a volume from")?;
        if let Some(vm) = live {
            if mount.overlay == Some(true) {
                return Err(rejected(
                    ErrorCode::InvalidState,
                    format!(
                        "volume {volume_id} is mounted with an overlay, which stays until the guest stops; stop the instance to detach it"
                    ),
                ));
            }
            let link = self
                .agent_link(&record.id, std::time::Duration::from_secs(10))
                .await?;
            link.unmount(&mount.mount_path).await.map_err(|e| {
                rejected(
                    ErrorCode::InvalidState,
                    format!("cannot detach volume {volume_id}: {e}"),
                )
            })?;
            let serial = disk_serial(&volume_id, false);
            if let Err(e) = vm.detach_disk(&serial).await {
                // Mounted again, so the guest and the record agree.
                let _ = link.mount(&mount_request(&serial, &mount)).await;
                return Err(disk_refused("detach the volume", e));
            }
        }
        record.volumes.remove(pos);
        self.records.save(&record)?;
        self.ops_log(
            &record.id,
            &format!("volume {volume_id} detached from {}", mount.mount_path),
        );
        let observed = self.observe(&mut record).await;
        self.render(&record, &observed).await
    }
}
