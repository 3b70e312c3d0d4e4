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
