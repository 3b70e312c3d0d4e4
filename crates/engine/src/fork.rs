//! Forks (upstream's `POST /instances/{id}/fork` and `POST /snapshots/{id}/fork`): a new
//! instance made from an instance's or a snapshot's disks, with its own identity.
//!
//! What a fork gets: a new id and the name asked for; its own copy of the overlay disk (a
//! reflink where the filesystem has them, else a sparse copy); its own keychain entries, copies
//! of the source's credential values (never shared: rotating one leaves the other alone); the
//! source's settings (image digest, resources, env, credential policies, egress rules, tags,
//! read-only volumes). What it does not get: the source's network identity (a fork's MAC, IP
//! and vsock CID come from its own id at its first boot, its hostname is its name), its logs,
//! its forwarded host ports (two instances cannot hold one port; Hypedeck's extension), its
//! run times and exit. `forked_from` says where it came from.
//!
//! A fork of a Standby VM (or of a Running one with `from_running`: it is put in standby,
//! forked and restored) continues the VM's memory: it gets a hard link of the saved state,
//! the agent key the saved guest knows, the boot markers of the run it continues, and its
//! parent's subnet with an address and MAC of its own; when it is restored the guest is told
//! its new name, address and MAC and gets fresh entropy (`Reidentify`, see standby.rs) before
//! the engine lets anything else talk to it. A guest without the agent (`skip_guest_agent`)
//! cannot be told: it keeps its parent's hostname, address and MAC, which its own private
//! network then serves. A fork to `Stopped` takes the disks only.

use std::path::{Path, PathBuf};

use hypedeck_model::{
    ErrorCode, ForkInstanceRequest, ForkOrigin, ForkSnapshotRequest, HypervisorKind, Instance,
    InstanceId, InstanceState, SnapshotKind, SnapshotTargetState,
};
use hypedeck_store::InstanceRecord;
use time::OffsetDateTime;

use crate::snapshots::{
    OVERLAY, STANDBY, copy_file, copy_if_there, link_saved_vm, saved_record, writable_volumes,
};
use crate::{Engine, EngineError, StartOverrides, rejected, secret_account};

/// How long a fork asked to be left in Standby may take to boot before it is saved.
const BOOT_BEFORE_STANDBY: std::time::Duration = std::time::Duration::from_secs(240);

/// What a fork is made from.
struct Source<'a> {
    record: &'a InstanceRecord,
    overlay: &'a Path,
    /// A saved VM (its memory, the identity its guest has), when the fork continues it.
    saved: Option<Saved>,
    origin: ForkOrigin,
    hypervisor: Option<HypervisorKind>,
    /// The code of a taken name (upstream: `name_conflict` for instance forks, `conflict` for
    /// snapshot forks).
    name_taken: ErrorCode,
}

/// A saved VM a fork continues.
struct Saved {
    /// The directory with the VMM's state and `identity.json`.
    dir: PathBuf,
    /// The agent key the saved guest knows.
    agent_key: PathBuf,
}

impl Engine {
    /// Forks instance `id_or_name` into a new instance (`POST /instances/{id}/fork`).
    pub async fn fork_instance(
        &self,
        id_or_name: &str,
        request: ForkInstanceRequest,
    ) -> Result<Instance, EngineError> {
        let (guard, record, observed) =
            self.lock_and_observe(id_or_name)
                .await
                .map_err(|e| match e {
                    EngineError::NotFound => rejected(ErrorCode::NotFound, "instance not found"),
                    other => other,
                })?;
        // Upstream's order: the target state (derived from the source's), then the source's
        // state, then volumes, then the name.
        let state = observed.state;
        let target = match (request.target_state, state) {
            (Some(target), _) => target,
            (None, InstanceState::Running) => SnapshotTargetState::Running,
            (None, InstanceState::Standby) => SnapshotTargetState::Standby,
            (None, InstanceState::Stopped) => SnapshotTargetState::Stopped,
            (None, other) => {
                return Err(rejected(
                    ErrorCode::InvalidState,
                    format!(
                        "invalid state transition: cannot derive fork target state from source state {other}"
                    ),
                ));
            }
        };
        let from_running = match state {
            InstanceState::Stopped | InstanceState::Standby => false,
            InstanceState::Running if request.from_running => true,
            InstanceState::Running => {
                return Err(rejected(
                    ErrorCode::InvalidState,
                    "invalid state transition: cannot fork from state Running (set from_running=true to allow standby+restore flow)",
                ));
            }
            other => {
                return Err(rejected(
                    ErrorCode::InvalidState,
                    format!(
                        "invalid state transition: cannot fork from state {other} (must be Stopped or Standby, or Running with from_running=true)"
                    ),
                ));
            }
        };
        // The fork continues the VM's memory unless it is to be Stopped (then: the disks, as
        // upstream does for a Standby source).
        let with_memory = state != InstanceState::Stopped && target != SnapshotTargetState::Stopped;
        writable_volumes(&record, "")?;
        // A taken name is refused before a running source is disturbed (checked again when
        // the fork is stored).
        self.fork_name_free(&request.name, ErrorCode::NameConflict)?;
        let mut record = record;
        if from_running {
            self.standby_locked(&mut record).await?;
        }
        let id = InstanceId::parse(&record.id).map_err(|_| EngineError::NotFound)?;
        let overlay = self.paths.instance_dir(&id).join(OVERLAY);
        let saved = with_memory.then(|| Saved {
            dir: self.paths.instance_dir(&id).join("snapshots/latest"),
            agent_key: self
                .paths
                .instance_runtime(&id)
                .join(crate::provision::AGENT_KEY_FILE),
        });
        // The source's lock is held while its disks are copied: nothing starts it meanwhile.
        let made = self
            .materialize_fork(
                &request.name,
                Source {
                    record: &record,
                    overlay: &overlay,
                    saved,
                    origin: ForkOrigin {
                        source_instance_id: record.id.clone(),
                        source_instance_name: record.name.clone(),
                        snapshot_id: None,
                    },
                    hypervisor: None,
                    name_taken: ErrorCode::NameConflict,
                },
            )
            .await;
        if from_running && let Err(e) = self.restore_locked(&mut record).await {
            // The source comes first: without it running again the fork is not wanted.
            if let Ok(fork) = &made {
                let _ = self.delete(&fork.id).await;
            }
            return Err(e);
        }
        let fork = made?;
        drop(guard);
        self.ops_log(
            &record.id,
            &format!("forked into {} ({})", fork.name, fork.id),
        );
        self.apply_fork_target(&fork, target).await
    }

    /// Makes a new instance from snapshot `snapshot_id` (`POST /snapshots/{id}/fork`).
    pub async fn fork_snapshot(
        &self,
        snapshot_id: &str,
        request: ForkSnapshotRequest,
    ) -> Result<Instance, EngineError> {
        let snapshot = self.get_snapshot(snapshot_id)?;
        let (record, overlay) = saved_record(&self.paths, &snapshot)?;
        writable_volumes(&record, "snapshot requires readonly volume attachments: ")?;
        // Upstream checks the name before the target state and hypervisor.
        self.fork_name_free(&request.name, ErrorCode::Conflict)?;
        let target =
            self.snapshot_target(&snapshot, request.target_state, request.target_hypervisor)?;
        let snap_dir = overlay.parent().map(Path::to_path_buf).unwrap_or_default();
        let saved = (snapshot.kind == SnapshotKind::Standby
            && target != SnapshotTargetState::Stopped)
            .then(|| Saved {
                dir: snap_dir.join(STANDBY),
                agent_key: snap_dir.join(crate::provision::AGENT_KEY_FILE),
            });
        let fork = self
            .materialize_fork(
                &request.name,
                Source {
                    record: &record,
                    overlay: &overlay,
                    saved,
                    origin: ForkOrigin {
                        source_instance_id: snapshot.source_instance_id.clone(),
                        source_instance_name: snapshot.source_instance_name.clone(),
                        snapshot_id: Some(snapshot.id.clone()),
                    },
                    hypervisor: request.target_hypervisor,
                    name_taken: ErrorCode::Conflict,
                },
            )
            .await?;
        self.apply_fork_target(&fork, target).await
    }

    fn fork_name_free(&self, name: &str, code: ErrorCode) -> Result<(), EngineError> {
        if self.records()?.iter().any(|r| r.name == name) {
            return Err(rejected(
                code,
                format!("instance already exists: instance name '{name}' already exists"),
            ));
        }
        Ok(())
    }

    /// Stores the fork of `source` as a Stopped instance named `name`: its record, its
    /// keychain copies and its overlay, all or nothing (a create's stage undoes a failure).
    async fn materialize_fork(
        &self,
        name: &str,
        source: Source<'_>,
    ) -> Result<InstanceRecord, EngineError> {
        let id = crate::create::new_id()?;
        let instance_lock = self.lock_for(id.as_str()).lock_owned().await;
        let claim = self.create_lock.lock().await;
        self.fork_name_free(name, source.name_taken)?;
        let mut record = fork_record(source.record, &id, name, source.origin, source.hypervisor);
        // The parent's subnet (a fork continuing memory has programs that were given its
        // gateway, DNS and proxy addresses), with an address no instance in it has: parent and
        // forks never share one. Its MAC comes from its own id.
        let octet = crate::provision::subnet_octet(source.record);
        let used: std::collections::HashSet<String> = self
            .records()?
            .iter()
            .filter(|r| crate::provision::subnet_octet(r) == octet)
            .map(|r| crate::provision::instance_identity(r).0.guest_ip)
            .collect();
        let ip = (16..=250u8)
            .map(|host| format!("10.100.{octet}.{host}"))
            .find(|ip| !used.contains(ip))
            .ok_or_else(|| {
                rejected(
                    ErrorCode::InsufficientResources,
                    "no address is left in the parent's sandbox subnet for another fork",
                )
            })?;
        let mac = crate::provision::instance_identity(&record).0.mac;
        record.network.pinned = Some(hypedeck_store::PinnedAddress { ip, mac });
        let pairs: Vec<(String, String)> = source
            .record
            .secret_env
            .iter()
            .filter_map(|(key, from)| {
                let to = record.secret_env.get(key)?;
                Some((from.keychain_account.clone(), to.keychain_account.clone()))
            })
            .collect();
        let accounts = pairs.iter().map(|(_, to)| to.clone()).collect();
        let staged = self.stage_create(&id, accounts, instance_lock);
        let made = async {
            // The stage forgets the fork's accounts on failure: nothing to undo here.
            let _ = self.vault.copy(id.as_str(), pairs).await?;
            self.records.create(&record)?;
            drop(claim);
            if source.overlay.exists() {
                let (from, to) = (
                    source.overlay.to_path_buf(),
                    self.paths.instance_dir(&id).join(OVERLAY),
                );
                tokio::task::spawn_blocking(move || copy_file(&from, &to))
                    .await
                    .map_err(|_| EngineError::Task)?
                    .map_err(|source| EngineError::Io {
                        what: "copy the overlay disk".into(),
                        source,
                    })?;
            }
            if let Some(saved) = &source.saved {
                self.adopt_saved_vm(&id, saved).await?;
            }
            let origin = record.forked_from.as_ref();
            self.ops_log(
                id.as_str(),
                &match origin.and_then(|o| o.snapshot_id.as_ref()) {
                    Some(snapshot) => format!("forked from snapshot {snapshot}"),
                    None => format!(
                        "forked from instance {}",
                        origin
                            .map(|o| o.source_instance_name.as_str())
                            .unwrap_or("?")
                    ),
                },
            );
            Ok::<(), EngineError>(())
        };
        match made.await {
            Ok(()) => {
                staged.commit();
                Ok(record)
            }
            Err(e) => {
                staged.release().await;
                Err(e)
            }
        }
    }

    /// Gives new instance `id` the saved VM it continues: the VMM's state (hard links; the
    /// saved files are never written again), the agent key its guest knows, and the boot
    /// markers of the run it continues (its console log is new). It is then Standby.
    async fn adopt_saved_vm(&self, id: &InstanceId, saved: &Saved) -> Result<(), EngineError> {
        let to = self.paths.instance_dir(id).join("snapshots/latest");
        link_saved_vm(saved.dir.clone(), to)
            .await
            .map_err(|source| EngineError::Io {
                what: "copy the saved VM".into(),
                source,
            })?;
        let runtime = self.paths.instance_runtime(id);
        hypedeck_store::create_private_dir(&runtime)?;
        copy_if_there(
            &saved.agent_key,
            &runtime.join(crate::provision::AGENT_KEY_FILE),
        )?;
        // A new log: its run starts at 0, so the record's `log_offset` (0) stays right.
        self.replay_boot_markers(id)?;
        self.runtime.snapshot_changed(id.as_str());
        Ok(())
    }

    /// Appends the boot markers of a run that a restored VM continues to instance `id`'s
    /// console log (the guest printed them into another log, or before it was cut), and
    /// returns where they start: the run's `log_offset`. They are hidden from `GET /logs`.
    pub(crate) fn replay_boot_markers(&self, id: &InstanceId) -> Result<u64, EngineError> {
        use std::io::Write as _;
        let logs = self.paths.instance_logs(id);
        hypedeck_store::create_private_dir(&logs)?;
        let path = logs.join("app.log");
        let io = |source| EngineError::Io {
            what: "write the console log".into(),
            source,
        };
        let mut log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&path)
            .map_err(io)?;
        let start = log.metadata().map_err(io)?.len();
        let ts = OffsetDateTime::now_utc().unix_timestamp();
        write!(
            log,
            "{} ts={ts} mode=exec\n{} ts={ts}\n",
            crate::derive::PROGRAM_START_MARKER,
            crate::derive::AGENT_READY_MARKER
        )
        .map_err(io)?;
        Ok(start)
    }

    /// Leaves a new fork (Stopped, or Standby when it continues a saved VM) in `target`. When that fails the fork is deleted, as
    /// upstream does, and the failure returned.
    async fn apply_fork_target(
        &self,
        fork: &InstanceRecord,
        target: SnapshotTargetState,
    ) -> Result<Instance, EngineError> {
        let applied = async {
            let standby = crate::derive::dir_has_entries(&self.snapshot_dir(&fork.id)?);
            match target {
                SnapshotTargetState::Stopped => self.get(&fork.id).await,
                SnapshotTargetState::Standby if standby => self.get(&fork.id).await,
                SnapshotTargetState::Running if standby => self.restore(&fork.id).await,
                SnapshotTargetState::Running => {
                    self.start(&fork.id, StartOverrides::default()).await
                }
                SnapshotTargetState::Standby => {
                    self.start(&fork.id, StartOverrides::default()).await?;
                    self.wait(&fork.id, InstanceState::Running, BOOT_BEFORE_STANDBY)
                        .await?;
                    self.standby(&fork.id).await
                }
            }
        };
        match applied.await {
            Ok(instance) => Ok(instance),
            Err(e) => {
                tracing::warn!(id = %fork.id, error = %e, "a fork could not reach its target state; deleting it");
                if let Err(delete) = self.delete(&fork.id).await {
                    tracing::error!(id = %fork.id, error = %delete, "could not delete a failed fork");
                }
                Err(e)
            }
        }
    }
}

/// The fork's record: the source's settings under a new identity.
fn fork_record(
    source: &InstanceRecord,
    id: &InstanceId,
    name: &str,
    origin: ForkOrigin,
    hypervisor: Option<HypervisorKind>,
) -> InstanceRecord {
    let mut record = source.clone();
    record.id = id.to_string();
    record.name = name.to_string();
    record.hypervisor = hypervisor.unwrap_or(source.hypervisor);
    record.created_at = OffsetDateTime::now_utc();
    record.started_at = None;
    record.stopped_at = None;
    record.exit_code = None;
    record.exit_message = None;
    record.log_offset = 0;
    // Its own network identity, derived from its id at its first boot.
    record.network.ip = None;
    record.network.mac = None;
    record.network.proxy_port = None;
    record.ports = Vec::new();
    for (key, secret) in record.secret_env.iter_mut() {
        secret.keychain_account = secret_account(id.as_str(), key);
    }
    record.forked_from = Some(origin);
    record
}

/// A hypervisor's name as the API spells it.
pub(crate) fn hypervisor_name(kind: HypervisorKind) -> String {
    serde_json::to_value(kind)
        .ok()
        .and_then(|v| v.as_str().map(str::to_string))
        .unwrap_or_default()
}
