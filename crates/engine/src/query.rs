//! Lookups: resolve an id/name/prefix, read one instance, list with filters.

use std::collections::BTreeMap;

use hypedeck_hypervisor::VmmState;
use hypedeck_model::{Instance, InstanceId, InstanceState};
use hypedeck_store::InstanceRecord;

use crate::derive::{BootMarkers, derive_state, dir_has_entries};
use crate::{Engine, EngineError};

/// `GET /instances` filters (all must match).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ListFilter {
    /// Only instances in this state.
    pub state: Option<InstanceState>,
    /// Only instances carrying every one of these tags.
    pub tags: BTreeMap<String, String>,
}

/// The derived runtime facts of an instance.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Observed {
    pub state: InstanceState,
    pub state_error: Option<String>,
    pub has_snapshot: bool,
}

/// `exit_message` of a run whose VMM ended without the guest reporting an exit.
pub const VMM_VANISHED: &str =
    "the VM ended without an exit status from the guest (its VMM was killed or crashed)";

impl Engine {
    pub(crate) fn records(&self) -> Result<Vec<InstanceRecord>, EngineError> {
        self.records.all()
    }

    /// Resolves `id_or_name` like upstream: exact id, then exact name, then id prefix.
    pub fn resolve(&self, id_or_name: &str) -> Result<InstanceRecord, EngineError> {
        if id_or_name.is_empty() {
            return Err(EngineError::NotFound);
        }
        // An exact id (what clients use most) is one lookup.
        if let Some(record) = self.records.get(id_or_name)? {
            return Ok(record);
        }
        let records = self.records()?;
        if let Some(r) = records.iter().find(|r| r.id == id_or_name) {
            return Ok(r.clone());
        }
        let by_name: Vec<&InstanceRecord> =
            records.iter().filter(|r| r.name == id_or_name).collect();
        match by_name.len() {
            1 => return Ok(by_name[0].clone()),
            n if n > 1 => return Err(EngineError::Ambiguous),
            _ => {}
        }
        let by_prefix: Vec<&InstanceRecord> = records
            .iter()
            .filter(|r| r.id.starts_with(id_or_name))
            .collect();
        match by_prefix.len() {
            0 => Err(EngineError::NotFound),
            1 => Ok(by_prefix[0].clone()),
            _ => Err(EngineError::Ambiguous),
        }
    }

    /// Derives the state of one instance now, recording the end of a run that ended on its
    /// own (see [`Self::settle_if_exited`]).
    pub(crate) async fn observe(&self, record: &mut InstanceRecord) -> Observed {
        if let Some(observed) = self.observe_shared(record).await {
            return observed;
        }
        // No VMM, and a run that ended unrecorded: record its end, then derive.
        self.settle_if_exited(record);
        let Ok(id) = InstanceId::parse(&record.id) else {
            return invalid_id();
        };
        let has_snapshot = self.snapshot_flag(&id);
        self.derived(record, &id, None, has_snapshot)
    }

    /// [`Self::observe`] for a record that is shared, not owned: `None` when the run ended and
    /// is not yet recorded (the caller observes a copy instead, which records it).
    async fn observe_shared(&self, record: &InstanceRecord) -> Option<Observed> {
        let Ok(id) = InstanceId::parse(&record.id) else {
            return Some(invalid_id());
        };
        let has_snapshot = self.snapshot_flag(&id);
        let vmm = match self.vmm_state(record, has_snapshot).await {
            Ok(vmm) => vmm,
            Err(unknown) => return Some(unknown),
        };
        if vmm.is_none() && ran_unsettled(record) {
            return None;
        }
        Some(self.derived(record, &id, vmm, has_snapshot))
    }

    /// Whether the instance has a saved VM (Standby), remembered by the runtime.
    pub(crate) fn snapshot_flag(&self, id: &InstanceId) -> bool {
        self.runtime.has_snapshot(id.as_str(), || {
            dir_has_entries(&self.paths.instance_dir(id).join("snapshots/latest"))
        })
    }

    /// What the instance's VMM says, `None` when none runs. A VMM that answers with an error
    /// while alive, or not at all, makes the instance Unknown (the `Err`).
    async fn vmm_state(
        &self,
        record: &InstanceRecord,
        has_snapshot: bool,
    ) -> Result<Option<VmmState>, Observed> {
        let Some(vm) = self.runtime.vm(&record.id) else {
            return Ok(None);
        };
        let query = tokio::time::timeout(std::time::Duration::from_millis(2000), vm.state()).await;
        match query {
            Ok(Ok(state)) => Ok(Some(state)),
            Ok(Err(e)) => {
                // A VMM that is shutting down stops answering a moment before its process is
                // gone: give it a short grace before calling it Unknown.
                let mut alive = vm.is_alive().await;
                for _ in 0..10 {
                    if !alive {
                        break;
                    }
                    tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                    alive = vm.is_alive().await;
                }
                if alive {
                    return Err(Observed {
                        state: InstanceState::Unknown,
                        state_error: Some(format!("failed to query hypervisor: {e}")),
                        has_snapshot,
                    });
                }
                // The VMM is gone: forget it; the instance is Stopped (or Standby).
                self.runtime.ended(&record.id);
                Ok(None)
            }
            Err(_) => Err(Observed {
                state: InstanceState::Unknown,
                state_error: Some("failed to query hypervisor: timed out after 2s".into()),
                has_snapshot,
            }),
        }
    }

    /// The state from the VMM's answer, the run's boot markers and the snapshot flag.
    fn derived(
        &self,
        record: &InstanceRecord,
        id: &InstanceId,
        vmm: Option<VmmState>,
        has_snapshot: bool,
    ) -> Observed {
        if vmm.is_none() && self.runtime.is_creating(&record.id) {
            // Its create is still getting the image or the disks ready.
            return Observed {
                state: InstanceState::Created,
                state_error: None,
                has_snapshot,
            };
        }
        let markers = self.boot_markers(record, id);
        Observed {
            state: derive_state(vmm, markers, record.skip_guest_agent, has_snapshot),
            state_error: None,
            has_snapshot,
        }
    }

    /// The current run's boot markers (see [`crate::runtime::Runtime::markers`]).
    fn boot_markers(&self, record: &InstanceRecord, id: &InstanceId) -> BootMarkers {
        self.runtime.markers(
            &record.id,
            record.log_offset,
            &self.paths.instance_logs(id).join("app.log"),
        )
    }

    /// A run that ended without `stop` (the program exited, the VMM died): record its exit and
    /// stop time once. The record is written only under the instance's lock: when a verb holds
    /// it (maybe this read's own caller), the end is settled in memory and written by that verb
    /// or by the next read. Under the lock the settle starts again from what is on disk, so it
    /// never overwrites what a verb saved since `record` was read.
    fn settle_if_exited(&self, record: &mut InstanceRecord) {
        if !ran_unsettled(record) {
            return;
        }
        let lock = self.lock_for(&record.id);
        let Ok(_guard) = lock.try_lock() else {
            self.settle_run(record);
            return;
        };
        let Ok(Some(mut current)) = self.records.get(&record.id) else {
            // Deleted meanwhile: nothing to record, and nothing to bring back.
            self.settle_run(record);
            return;
        };
        if ran_unsettled(&current) {
            self.settle_run(&mut current);
            if current.exit_code.is_none() {
                // settle_run found no exit from the guest: the VMM vanished.
                self.ops_log(&current.id, VMM_VANISHED);
            }
            if let Err(e) = self.records.save(&current) {
                tracing::warn!(error = %e, id = %current.id, "could not record the end of a run");
            }
        }
        *record = current;
    }

    /// Fills in a finished run's exit (from the guest's sentinel, else "the VMM vanished") and
    /// its stop time, in memory.
    fn settle_run(&self, record: &mut InstanceRecord) {
        self.settle_exit(record);
        if record.exit_code.is_none() {
            // No HYPEMAN-EXIT from the guest: the VMM went away under it (killed, crashed,
            // or the host shut down), possibly while no engine was watching.
            record.exit_message = Some(VMM_VANISHED.to_string());
        }
        record.stopped_at = Some(time::OffsetDateTime::now_utc());
    }

    /// Resolves an instance, takes its lock, and reads it and its state again under the lock
    /// (another verb may have changed it while this one waited). Every mutating verb starts
    /// here.
    pub(crate) async fn lock_and_observe(
        &self,
        id_or_name: &str,
    ) -> Result<(tokio::sync::OwnedMutexGuard<()>, InstanceRecord, Observed), EngineError> {
        let found = self.resolve(id_or_name)?;
        let guard = self.lock_for(&found.id).lock_owned().await;
        let mut record = self.resolve(&found.id)?;
        let observed = self.observe(&mut record).await;
        Ok((guard, record, observed))
    }

    /// One instance by id, name or id prefix.
    pub async fn get(&self, id_or_name: &str) -> Result<Instance, EngineError> {
        let mut record = self.resolve(id_or_name)?;
        let observed = self.observe(&mut record).await;
        self.render(&record, &observed).await
    }

    /// Every instance matching `filter`, oldest first.
    pub async fn list(&self, filter: &ListFilter) -> Result<Vec<Instance>, EngineError> {
        let json = self.list_json(filter).await?;
        serde_json::from_slice(&json).map_err(|_| EngineError::Corrupt {
            what: "the instance list (as JSON)".into(),
        })
    }

    /// [`Self::list`] as the API sends it, a JSON array. An instance whose record,
    /// observed state and credential values are as they were at the last list is not
    /// rendered again: its JSON is reused (1,000 instances list in a few milliseconds).
    pub async fn list_json(&self, filter: &ListFilter) -> Result<Vec<u8>, EngineError> {
        let entries = self.records.entries()?;
        let mut out = Vec::with_capacity(2 + entries.len() * 768);
        out.push(b'[');
        for entry in entries {
            let record = &entry.record;
            if !filter
                .tags
                .iter()
                .all(|(k, v)| record.tags.get(k) == Some(v))
            {
                continue;
            }
            let json = match self.observe_shared(record).await {
                Some(observed) => {
                    if filter.state.is_some_and(|s| s != observed.state) {
                        continue;
                    }
                    self.render_json(&entry, observed).await?
                }
                None => {
                    // A run ended unrecorded: observing records it (a new entry).
                    let mut record = record.clone();
                    let observed = self.observe(&mut record).await;
                    if filter.state.is_some_and(|s| s != observed.state) {
                        continue;
                    }
                    crate::render::instance_json(&self.render(&record, &observed).await?)?.into()
                }
            };
            if out.len() > 1 {
                out.push(b',');
            }
            out.extend_from_slice(&json);
        }
        out.push(b']');
        Ok(out)
    }
}

fn invalid_id() -> Observed {
    Observed {
        state: InstanceState::Unknown,
        state_error: Some("invalid instance id".into()),
        has_snapshot: false,
    }
}

/// Whether the record's last run started and has no recorded end yet.
fn ran_unsettled(record: &InstanceRecord) -> bool {
    match (record.started_at, record.stopped_at) {
        (Some(started), Some(stopped)) => started > stopped,
        (Some(_), None) => true,
        _ => false,
    }
}
