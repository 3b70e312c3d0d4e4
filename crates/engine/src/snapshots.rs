//! Snapshots (upstream's `/snapshots` and `/instances/{id}/snapshots`): saved copies of an
//! instance that it can be restored to.
//!
//! This first increment serves kind `Stopped`: the disks of a Stopped instance (its overlay;
//! the image's root disk is read-only and pinned by digest, and volumes are their own
//! resources). Kind `Standby` (the whole VM) and forks still answer 501.
//!
//! On disk: `snapshots/<id>/snapshot.json` (the API's [`Snapshot`]) and `snapshots/<id>/guest/`
//! (the saved files). A snapshot is built under a temporary name and renamed into place, so a
//! crash never leaves a half-written one that lists. Overlays are copied with a reflink where
//! the filesystem has them, else sparsely (only the data regions).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use hypedeck_model::{
    CreateSnapshotRequest, ErrorCode, Instance, InstanceId, InstanceState, RestoreSnapshotRequest,
    Snapshot, SnapshotKind, SnapshotTargetState,
};
use time::OffsetDateTime;

use crate::resources::{Measure, dir_bytes};
use crate::{Engine, EngineError, StartOverrides, rejected};

/// The file of an instance's disks a snapshot keeps.
pub(crate) const OVERLAY: &str = "overlay.ext4";
/// The instance's record as it was, in the snapshot's `guest/`.
const RECORD: &str = "metadata.json";
/// A Standby snapshot's saved VM (the instance's `snapshots/latest/` then), in `guest/`.
pub(crate) const STANDBY: &str = "standby";
use crate::provision::AGENT_KEY_FILE;

/// `GET /snapshots` filters (all must match).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SnapshotFilter {
    /// Only snapshots of this instance (its id).
    pub source_instance_id: Option<String>,
    /// Only this kind.
    pub kind: Option<SnapshotKind>,
    /// Only the snapshot with this name.
    pub name: Option<String>,
    /// Only snapshots carrying every one of these tags.
    pub tags: BTreeMap<String, String>,
}

fn io(what: impl Into<String>) -> impl FnOnce(std::io::Error) -> EngineError {
    let what = what.into();
    move |source| EngineError::Io { what, source }
}

impl Engine {
    /// Takes a snapshot of instance `id_or_name` (`POST /instances/{id}/snapshots`).
    pub async fn create_snapshot(
        &self,
        id_or_name: &str,
        request: CreateSnapshotRequest,
    ) -> Result<Snapshot, EngineError> {
        let kind = request
            .kind
            .ok_or_else(|| rejected(ErrorCode::InvalidRequest, "request body is required"))?;
        // Checked even when disabled, as upstream converts it.
        let asked = crate::compression::parse(request.compression.as_ref())?;
        if kind == SnapshotKind::Stopped && asked.is_some_and(|c| c.enabled) {
            return Err(rejected(
                ErrorCode::InvalidRequest,
                "invalid request: compression is only supported for standby snapshots",
            ));
        }
        let (_guard, mut record, observed) = self.lock_and_observe(id_or_name).await?;
        // The request's setting, else the instance's policy (upstream's precedence).
        let compression = match asked {
            Some(c) => Some(c),
            None => crate::compression::parse(
                record
                    .policies
                    .get("snapshot_policy")
                    .and_then(|p| p.get("compression")),
            )
            .unwrap_or(None),
        }
        .filter(|c| c.enabled && kind == SnapshotKind::Standby);
        // Upstream's order: writable volumes, then the name, then the state.
        writable_volumes(&record, "snapshot requires readonly volume attachments: ")?;
        if let Some(name) = &request.name
            && self
                .snapshots_of(&record.id)?
                .iter()
                .any(|s| s.name.as_ref() == Some(name))
        {
            return Err(rejected(
                ErrorCode::Conflict,
                format!(
                    "instance already exists: snapshot name already exists: snapshot name {name:?} already exists for source instance {}",
                    record.id
                ),
            ));
        }
        match (kind, observed.state) {
            (SnapshotKind::Stopped, InstanceState::Stopped) => {}
            (SnapshotKind::Stopped, other) => {
                return Err(rejected(
                    ErrorCode::Conflict,
                    format!(
                        "invalid state transition: stopped snapshot requires source in Stopped, got {other}"
                    ),
                ));
            }
            (SnapshotKind::Standby, InstanceState::Running | InstanceState::Standby) => {
                if !self.backend(record.hypervisor)?.capabilities().snapshot {
                    return Err(rejected(
                        ErrorCode::NotSupported,
                        format!(
                            "operation not supported: snapshot is not supported for hypervisor {}",
                            crate::fork::hypervisor_name(record.hypervisor)
                        ),
                    ));
                }
            }
            (SnapshotKind::Standby, other) => {
                return Err(rejected(
                    ErrorCode::Conflict,
                    format!(
                        "invalid state transition: standby snapshot requires source in Running or Standby, got {other}"
                    ),
                ));
            }
        }
        // A Standby snapshot of a Running instance: standby, copy, restore (upstream's way).
        let running = kind == SnapshotKind::Standby && observed.state == InstanceState::Running;
        if running {
            self.standby_locked(&mut record).await?;
        }
        let id = crate::create::new_id()?;
        let instance_id = InstanceId::parse(&record.id).map_err(|_| EngineError::NotFound)?;
        let instance_dir = self.paths.instance_dir(&instance_id);
        let root = self.paths.snapshots();
        std::fs::create_dir_all(&root).map_err(io("create the snapshots directory"))?;
        // Built under a temporary name, renamed into place when whole.
        let building = root.join(format!(".building-{id}"));
        // The snapshot keeps its own copies of the credential values (a fork of it works
        // after the instance is deleted or rotated), under accounts its record names.
        let mut saved = record.clone();
        let mut pairs = Vec::new();
        for (key, secret) in saved.secret_env.iter_mut() {
            let account = snapshot_account(id.as_str(), key);
            pairs.push((
                std::mem::replace(&mut secret.keychain_account, account.clone()),
                account,
            ));
        }
        let mut written = None;
        let result = async {
            let guest = building.join("guest");
            std::fs::create_dir_all(&guest).map_err(io("create the snapshot's directory"))?;
            // The instance's settings then (no secret: credential values stay in the keychain).
            // Written before the values are copied, so a crash's leftovers name them.
            hypedeck_store::write_json(&guest.join(RECORD), &saved)?;
            written = Some(self.vault.copy(id.as_str(), pairs).await?);
            let source = instance_dir.join(OVERLAY);
            if source.exists() {
                let target = guest.join(OVERLAY);
                tokio::task::spawn_blocking(move || copy_file(&source, &target))
                    .await
                    .map_err(|_| EngineError::Task)?
                    .map_err(io("copy the instance's overlay disk"))?;
            }
            if kind == SnapshotKind::Standby {
                // The saved VM (links: never written again) and the agent key its guest knows.
                // (A standby compressed in place is kept plain here; compression is the
                // snapshot's own setting.)
                link_saved_vm(instance_dir.join("snapshots/latest"), guest.join(STANDBY))
                    .await
                    .map_err(io("keep the saved VM"))?;
                copy_if_there(
                    &self
                        .paths
                        .instance_runtime(&instance_id)
                        .join(AGENT_KEY_FILE),
                    &guest.join(AGENT_KEY_FILE),
                )?;
            }
            let snapshot = Snapshot {
                id: id.to_string(),
                name: request.name.clone(),
                kind,
                tags: request.tags.clone().unwrap_or_default(),
                source_instance_id: record.id.clone(),
                source_instance_name: record.name.clone(),
                source_hypervisor: record.hypervisor,
                created_at: OffsetDateTime::now_utc(),
                // Upstream's `size_bytes`: apparent sizes (a sparse overlay counts its length).
                size_bytes: dir_bytes(&guest, Measure::Apparent),
                compression_state: if compression.is_some() {
                    "compressing"
                } else {
                    "none"
                }
                .into(),
                compression_error: None,
                compression: compression.and_then(|c| serde_json::to_value(c).ok()),
                compressed_size_bytes: None,
                uncompressed_size_bytes: None,
            };
            hypedeck_store::write_json(&building.join("snapshot.json"), &snapshot)?;
            std::fs::rename(&building, self.paths.snapshot_dir(&id))
                .map_err(io("store the snapshot"))?;
            Ok(snapshot)
        }
        .await;
        if result.is_err() {
            if let Some(written) = written {
                self.vault.undo(written).await;
            }
            let _ = std::fs::remove_dir_all(&building);
        } else {
            self.ops_log(&record.id, &format!("snapshot {id} taken (kind {kind})"));
            if let Some(how) = compression {
                self.compress_snapshot(&id, how);
            }
        }
        if running && let Err(e) = self.restore_locked(&mut record).await {
            tracing::error!(id = %record.id, error = %e, "the instance did not run again after its snapshot");
            return Err(match result {
                Ok(_) => e,
                Err(first) => EngineError::Agent(format!("{first}; and then: {e}")),
            });
        }
        result
    }

    /// Every snapshot matching `filter`, by id (`GET /snapshots`).
    pub fn list_snapshots(&self, filter: &SnapshotFilter) -> Result<Vec<Snapshot>, EngineError> {
        Ok(self
            .all_snapshots()?
            .into_iter()
            .filter(|s| {
                filter
                    .source_instance_id
                    .as_ref()
                    .is_none_or(|i| &s.source_instance_id == i)
                    && filter.kind.is_none_or(|k| s.kind == k)
                    && filter
                        .name
                        .as_ref()
                        .is_none_or(|n| s.name.as_ref() == Some(n))
                    && filter.tags.iter().all(|(k, v)| s.tags.get(k) == Some(v))
            })
            .collect())
    }

    /// One snapshot by id (`GET /snapshots/{id}`).
    pub fn get_snapshot(&self, id: &str) -> Result<Snapshot, EngineError> {
        let not_found = || rejected(ErrorCode::NotFound, "snapshot not found");
        let id = InstanceId::parse(id).map_err(|_| not_found())?;
        read_snapshot(&self.paths.snapshot_dir(&id)).ok_or_else(not_found)
    }

    /// Deletes a snapshot and its keychain copies (`DELETE /snapshots/{id}`).
    pub async fn delete_snapshot(&self, id: &str) -> Result<(), EngineError> {
        let snapshot = self.get_snapshot(id)?;
        let id = InstanceId::parse(&snapshot.id).map_err(|_| EngineError::NotFound)?;
        let dir = self.paths.snapshot_dir(&id);
        let accounts = owned_accounts(&dir, id.as_str());
        std::fs::remove_dir_all(&dir).map_err(io("remove the snapshot"))?;
        self.vault.forget(id.as_str(), accounts).await;
        Ok(())
    }

    /// Removes the snapshots a crash left half-built, with their keychain copies.
    pub(crate) async fn remove_partial_snapshots(&self) {
        let Ok(entries) = std::fs::read_dir(self.paths.snapshots()) else {
            return;
        };
        for entry in entries.flatten() {
            let name = entry.file_name().to_string_lossy().into_owned();
            let Some(id) = name.strip_prefix(".building-") else {
                continue;
            };
            let accounts = owned_accounts(&entry.path(), id);
            match std::fs::remove_dir_all(entry.path()) {
                Ok(()) => tracing::warn!(%id, "removed a snapshot a crash left half-built"),
                Err(e) => tracing::error!(%id, error = %e, "cannot remove a half-built snapshot"),
            }
            self.vault.forget(id, accounts).await;
        }
    }

    /// Puts instance `id_or_name` back to snapshot `snapshot_id` of it
    /// (`POST /instances/{id}/snapshots/{snapshot_id}/restore`).
    pub async fn restore_snapshot(
        &self,
        id_or_name: &str,
        snapshot_id: &str,
        request: RestoreSnapshotRequest,
    ) -> Result<Instance, EngineError> {
        let snapshot = self
            .get_snapshot(snapshot_id)
            .map_err(|_| rejected(ErrorCode::NotFound, "instance or snapshot not found"))?;
        let target = {
            let (_guard, record, observed) =
                self.lock_and_observe(id_or_name)
                    .await
                    .map_err(|e| match e {
                        EngineError::NotFound => {
                            rejected(ErrorCode::NotFound, "instance or snapshot not found")
                        }
                        other => other,
                    })?;
            if snapshot.source_instance_id != record.id {
                return Err(rejected(
                    ErrorCode::InvalidRequest,
                    format!(
                        "invalid request: snapshot {} belongs to instance {}",
                        snapshot.id, snapshot.source_instance_id
                    ),
                ));
            }
            // Upstream refuses Running only; any state with a live VM is refused here (its
            // disks would change under it).
            if self.runtime.vm(&record.id).is_some() || observed.state == InstanceState::Running {
                return Err(rejected(
                    ErrorCode::InvalidState,
                    format!(
                        "invalid state transition: cannot restore snapshot while source is {}",
                        observed.state
                    ),
                ));
            }
            let target =
                self.snapshot_target(&snapshot, request.target_state, request.target_hypervisor)?;
            let mut restored = record.clone();
            let id = InstanceId::parse(&record.id).map_err(|_| EngineError::NotFound)?;
            let snap_id = InstanceId::parse(&snapshot.id).map_err(|_| EngineError::NotFound)?;
            let saved_dir = self.paths.snapshot_dir(&snap_id).join("guest");
            // The settings revert to the snapshot's (its id and name stay; the credential
            // values in force stay, as the keychain keeps one value per key).
            if let Ok(then) = hypedeck_store::InstanceRecord::load(&saved_dir.join(RECORD)) {
                restored = hypedeck_store::InstanceRecord {
                    id: record.id.clone(),
                    name: record.name.clone(),
                    secret_env: record.secret_env.clone(),
                    ..then
                };
            }
            if let Some(kind) = request.target_hypervisor {
                restored.hypervisor = kind;
            }
            restored.started_at = None;
            restored.stopped_at = None;
            restored.exit_code = None;
            restored.exit_message = None;
            // A saved VM of the instance (Standby) belonged to the disks being replaced.
            let standby = self.paths.instance_dir(&id).join("snapshots");
            if standby.exists() {
                std::fs::remove_dir_all(&standby)
                    .map_err(io("discard the instance's standby state"))?;
                self.runtime.snapshot_changed(&record.id);
            }
            if snapshot.kind == SnapshotKind::Standby && target != SnapshotTargetState::Stopped {
                // The snapshot's saved VM becomes the instance's, with the key its guest
                // knows and the boot markers of the run it continues.
                link_saved_vm(saved_dir.join(STANDBY), standby.join("latest"))
                    .await
                    .map_err(io("restore the saved VM"))?;
                let runtime = self.paths.instance_runtime(&id);
                hypedeck_store::create_private_dir(&runtime)?;
                copy_if_there(
                    &saved_dir.join(AGENT_KEY_FILE),
                    &runtime.join(AGENT_KEY_FILE),
                )?;
                restored.log_offset = self.replay_boot_markers(&id)?;
                self.runtime.snapshot_changed(&record.id);
            }
            let saved = saved_dir.join(OVERLAY);
            let overlay = self.paths.instance_dir(&id).join(OVERLAY);
            if saved.exists() {
                // Copied beside the overlay, then renamed over it: whole or not at all.
                let staging = overlay.with_extension("ext4.restoring");
                let _ = std::fs::remove_file(&staging);
                let copy_to = staging.clone();
                tokio::task::spawn_blocking(move || copy_file(&saved, &copy_to))
                    .await
                    .map_err(|_| EngineError::Task)?
                    .map_err(io("copy the snapshot's overlay disk"))?;
                std::fs::rename(&staging, &overlay).map_err(io("restore the overlay disk"))?;
            } else {
                // Taken before the first boot: the next boot makes a fresh overlay.
                let _ = std::fs::remove_file(&overlay);
            }
            self.records.save(&restored)?;
            self.ops_log(&record.id, &format!("restored to snapshot {}", snapshot.id));
            if snapshot.kind == SnapshotKind::Standby && target == SnapshotTargetState::Running {
                self.restore_locked(&mut restored).await?;
                return self.get(&record.id).await;
            }
            target
        };
        match target {
            SnapshotTargetState::Running => self.start(id_or_name, StartOverrides::default()).await,
            _ => self.get(id_or_name).await,
        }
    }

    /// The state a restore or fork of `snapshot` leaves its instance in, checked with the
    /// hypervisor asked for (upstream's rules and 400s).
    pub(crate) fn snapshot_target(
        &self,
        snapshot: &Snapshot,
        target_state: Option<SnapshotTargetState>,
        target_hypervisor: Option<hypedeck_model::HypervisorKind>,
    ) -> Result<SnapshotTargetState, EngineError> {
        let target = target_state.unwrap_or(match snapshot.kind {
            SnapshotKind::Standby => SnapshotTargetState::Running,
            SnapshotKind::Stopped => SnapshotTargetState::Stopped,
        });
        if snapshot.kind == SnapshotKind::Stopped && target == SnapshotTargetState::Standby {
            return Err(rejected(
                ErrorCode::InvalidRequest,
                format!(
                    "invalid request: invalid target_state \"{target:?}\" for snapshot kind {}",
                    snapshot.kind
                ),
            ));
        }
        if let Some(kind) = target_hypervisor {
            if snapshot.kind == SnapshotKind::Standby {
                return Err(rejected(
                    ErrorCode::InvalidRequest,
                    "invalid request: target_hypervisor is only allowed for stopped snapshots",
                ));
            }
            if self.backend(kind).is_err() {
                let name = serde_json::to_value(kind)
                    .ok()
                    .and_then(|v| v.as_str().map(str::to_string))
                    .unwrap_or_default();
                return Err(rejected(
                    ErrorCode::InvalidRequest,
                    format!("invalid request: unsupported target hypervisor {name:?}"),
                ));
            }
        }
        Ok(target)
    }

    /// Compresses a new Standby snapshot's memory in the background: its JSON says
    /// `compressing`, then `compressed` with the sizes, or `error` with why. A restore or a
    /// fork meanwhile uses whichever file is whole (they are replaced by rename).
    fn compress_snapshot(&self, id: &InstanceId, how: crate::compression::Compression) {
        let dir = self.paths.snapshot_dir(id);
        tokio::task::spawn_blocking(move || {
            let standby = dir.join("guest").join(STANDBY);
            let result = crate::compression::compress_memory(&standby, how);
            let Some(mut snapshot) = read_snapshot(&dir) else {
                return; // deleted meanwhile
            };
            match result {
                Ok((compressed, uncompressed)) => {
                    snapshot.compression_state = "compressed".into();
                    snapshot.compressed_size_bytes = Some(compressed);
                    snapshot.uncompressed_size_bytes = Some(uncompressed);
                    snapshot.size_bytes = dir_bytes(&dir.join("guest"), Measure::Apparent);
                }
                Err(e) => {
                    snapshot.compression_state = "error".into();
                    snapshot.compression_error = Some(format!("compress the saved memory: {e}"));
                }
            }
            if dir.exists()
                && let Err(e) = hypedeck_store::write_json(&dir.join("snapshot.json"), &snapshot)
            {
                tracing::warn!(snapshot = %snapshot.id, error = %e, "could not record the compression");
            }
        });
    }

    fn snapshots_of(&self, instance_id: &str) -> Result<Vec<Snapshot>, EngineError> {
        self.list_snapshots(&SnapshotFilter {
            source_instance_id: Some(instance_id.to_string()),
            ..SnapshotFilter::default()
        })
    }

    fn all_snapshots(&self) -> Result<Vec<Snapshot>, EngineError> {
        let root = self.paths.snapshots();
        let entries = match std::fs::read_dir(&root) {
            Ok(entries) => entries,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(io("read the snapshots directory")(e)),
        };
        let mut out: Vec<Snapshot> = entries
            .flatten()
            .filter(|e| InstanceId::parse(&e.file_name().to_string_lossy()).is_ok())
            .filter_map(|e| read_snapshot(&e.path()))
            .collect();
        // Upstream lists in directory order: ascending id.
        out.sort_by(|a, b| a.id.cmp(&b.id));
        Ok(out)
    }
}

/// Refuses an instance with a writable volume: a copy of its disks would share the volume
/// with the original (upstream's 501, its message after `prefix`).
pub(crate) fn writable_volumes(
    record: &hypedeck_store::InstanceRecord,
    prefix: &str,
) -> Result<(), EngineError> {
    match record.volumes.iter().find(|v| v.readonly != Some(true)) {
        Some(v) => Err(rejected(
            ErrorCode::NotSupported,
            format!(
                "operation not supported: {prefix}operation not supported: cannot fork instance with writable volume {:?} mounted at {:?}; use readonly+overlay for safe concurrent forks",
                v.volume_id, v.mount_path
            ),
        )),
        None => Ok(()),
    }
}

/// The keychain account of a snapshot's copy of credential `key`.
fn snapshot_account(snapshot_id: &str, key: &str) -> String {
    format!("snapshot/{snapshot_id}/env/{key}")
}

/// The keychain accounts snapshot `id` (its directory `dir`) owns: its record's, when they
/// are its own copies (a snapshot from before it kept copies names the instance's).
fn owned_accounts(dir: &Path, id: &str) -> Vec<String> {
    let prefix = snapshot_account(id, "");
    hypedeck_store::InstanceRecord::load(&dir.join("guest").join(RECORD))
        .map(|r| {
            r.secret_env
                .into_values()
                .map(|s| s.keychain_account)
                .filter(|a| a.starts_with(&prefix))
                .collect()
        })
        .unwrap_or_default()
}

/// A snapshot's saved record (its settings when it was taken, its credential accounts).
pub(crate) fn saved_record(
    paths: &hypedeck_store::Paths,
    snapshot: &Snapshot,
) -> Result<(hypedeck_store::InstanceRecord, std::path::PathBuf), EngineError> {
    let id = InstanceId::parse(&snapshot.id).map_err(|_| EngineError::NotFound)?;
    let guest = paths.snapshot_dir(&id).join("guest");
    let record =
        hypedeck_store::InstanceRecord::load(&guest.join(RECORD)).map_err(EngineError::from)?;
    Ok((record, guest.join(OVERLAY)))
}

fn read_snapshot(dir: &Path) -> Option<Snapshot> {
    let bytes = std::fs::read(dir.join("snapshot.json")).ok()?;
    match serde_json::from_slice(&bytes) {
        Ok(s) => Some(s),
        Err(error) => {
            tracing::warn!(dir = %dir.display(), %error, "skipping an unreadable snapshot");
            None
        }
    }
}

/// Fills new directory `to` with the files of `from`: hard links where they can be (a saved
/// VM's files are never written again: a new standby writes a new directory), else copies.
pub(crate) fn link_dir(from: &Path, to: &Path) -> std::io::Result<()> {
    std::fs::create_dir_all(to)?;
    for entry in std::fs::read_dir(from)? {
        let entry = entry?;
        if !entry.file_type()?.is_file() {
            continue;
        }
        let target = to.join(entry.file_name());
        if std::fs::hard_link(entry.path(), &target).is_err() {
            copy_file(&entry.path(), &target)?;
        }
    }
    Ok(())
}

/// Gives directory `to` the saved VM in `from` (links, see [`link_dir`]), its memory plain
/// (decompressed when it was compressed), off the async workers.
pub(crate) async fn link_saved_vm(from: PathBuf, to: PathBuf) -> std::io::Result<()> {
    tokio::task::spawn_blocking(move || {
        link_dir(&from, &to)?;
        crate::compression::ensure_raw_memory(&to)
    })
    .await
    .unwrap_or_else(|_| Err(std::io::Error::other("the copy task failed")))
}

/// Copies small file `from` to `to` (atomically), if `from` exists (a VM booted without a
/// guest, as the fake hypervisor's are, has no agent key).
pub(crate) fn copy_if_there(from: &Path, to: &Path) -> Result<(), EngineError> {
    match std::fs::read(from) {
        Ok(bytes) => Ok(hypedeck_store::write_atomic(to, &bytes)?),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(source) => Err(EngineError::Io {
            what: format!("read {}", from.display()),
            source,
        }),
    }
}

/// Copies `from` to a new file `to`: a reflink (shared extents, copy-on-write) where the
/// filesystem has them, else only the data regions, leaving holes as holes.
pub(crate) fn copy_file(from: &Path, to: &Path) -> std::io::Result<()> {
    use rustix::fs::SeekFrom;
    let src = std::fs::File::open(from)?;
    let dst = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(to)?;
    let done = (|| {
        if rustix::fs::ioctl_ficlone(&dst, &src).is_ok() {
            return Ok(());
        }
        let len = src.metadata()?.len();
        dst.set_len(len)?;
        let mut at = 0u64;
        while at < len {
            // The next data region [start, end); none left: the rest is a hole.
            let start = match rustix::fs::seek(&src, SeekFrom::Data(at)) {
                Ok(start) => start,
                Err(rustix::io::Errno::NXIO) => break,
                Err(e) => return Err(e.into()),
            };
            let end = rustix::fs::seek(&src, SeekFrom::Hole(start))?.min(len);
            let (mut off_in, mut off_out) = (start, start);
            while off_in < end {
                let chunk = usize::try_from(end - off_in).unwrap_or(usize::MAX);
                let n = rustix::fs::copy_file_range(
                    &src,
                    Some(&mut off_in),
                    &dst,
                    Some(&mut off_out),
                    chunk,
                )?;
                if n == 0 {
                    return Err(std::io::Error::new(
                        std::io::ErrorKind::UnexpectedEof,
                        "the file shrank while it was copied",
                    ));
                }
            }
            at = end;
        }
        dst.sync_all()
    })();
    if done.is_err() {
        let _ = std::fs::remove_file(to);
    }
    done
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{Seek, Write};

    #[test]
    fn a_sparse_file_is_copied_with_its_data_and_its_holes() {
        let dir = tempfile::tempdir().unwrap();
        let from = dir.path().join("from");
        let mut f = std::fs::File::create(&from).unwrap();
        f.write_all(b"head").unwrap();
        f.seek(std::io::SeekFrom::Start(64 << 20)).unwrap();
        f.write_all(b"middle").unwrap();
        f.set_len(256 << 20).unwrap();
        drop(f);
        let to = dir.path().join("to");
        copy_file(&from, &to).unwrap();
        let (a, b) = (std::fs::read(&from).unwrap(), std::fs::read(&to).unwrap());
        assert_eq!(a.len(), b.len());
        assert!(a == b, "the copy differs");
        use std::os::unix::fs::MetadataExt;
        // Holes stay holes: far less than the 256 MiB length is allocated.
        assert!(std::fs::metadata(&to).unwrap().blocks() * 512 < 8 << 20);
        // It never overwrites.
        assert!(copy_file(&from, &to).is_err());
        assert!(std::fs::read(&to).unwrap() == a);
    }
}
