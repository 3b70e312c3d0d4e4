//! standby / restore: save the whole VM to disk and bring it back where it was.

use hypedeck_model::{Instance, InstanceId, InstanceState};
use time::OffsetDateTime;

use crate::{Engine, EngineError};

impl Engine {
    fn snapshot_dir(&self, id: &str) -> Result<std::path::PathBuf, EngineError> {
        let id = InstanceId::parse(id).map_err(|_| EngineError::NotFound)?;
        Ok(self.paths.instance_dir(&id).join("snapshots/latest"))
    }

    /// Running -> Standby: pause, save memory and devices, end the VMM. Standby is a no-op.
    pub async fn standby(&self, id_or_name: &str) -> Result<Instance, EngineError> {
        let (_guard, mut record, observed) = self.lock_and_observe(id_or_name).await?;
        match observed.state {
            InstanceState::Standby => return self.render(&record, &observed).await,
            InstanceState::Running => {}
            other => {
                return Err(EngineError::InvalidState(format!(
                    "cannot standby from state {other}"
                )));
            }
        }
        let hypervisor = self.backend(record.hypervisor)?;
        if !hypervisor.capabilities().snapshot {
            return Err(EngineError::Hypervisor(
                hypedeck_hypervisor::HypervisorError::Unsupported {
                    kind: hypervisor.kind(),
                    operation: "standby",
                },
            ));
        }
        let Some(vm) = self.runtime.vm(&record.id) else {
            return Err(EngineError::InvalidState(
                "cannot standby from state Stopped".into(),
            ));
        };
        self.ops_log(&record.id, "standby requested");
        let dir = self.snapshot_dir(&record.id)?;
        let _ = std::fs::remove_dir_all(&dir);
        let saved = vm.save_and_exit(&dir).await;
        if saved.is_err() {
            let _ = std::fs::remove_dir_all(&dir);
        }
        self.runtime.snapshot_changed(&record.id);
        saved?;
        self.runtime.ended(&record.id);
        self.unregister_egress(&record.id).await;
        self.detach_network(&record.id).await;
        record.stopped_at = Some(OffsetDateTime::now_utc());
        self.records.save(&record)?;
        self.ops_log(&record.id, "vm saved to standby");
        let observed = self.observe(&mut record).await;
        self.render(&record, &observed).await
    }

    /// Standby -> Running: start a VMM from the saved state; the guest continues where it
    /// was. Running/Initializing is a no-op. The snapshot is removed once the VM runs.
    pub async fn restore(&self, id_or_name: &str) -> Result<Instance, EngineError> {
        let (_guard, mut record, observed) = self.lock_and_observe(id_or_name).await?;
        match observed.state {
            InstanceState::Running | InstanceState::Initializing => {
                return self.render(&record, &observed).await;
            }
            InstanceState::Standby => {}
            other => {
                return Err(EngineError::InvalidState(format!(
                    "cannot restore from state {other}"
                )));
            }
        }
        let hypervisor = self.backend(record.hypervisor)?;
        self.check_ports_free(&record).await?;
        self.ops_log(&record.id, "restore requested");
        let dir = self.snapshot_dir(&record.id)?;
        // On failure the instance stays in Standby, as it was: the snapshot is only removed
        // once the VM runs with its network.
        self.launch(&mut record, hypervisor, Some(&dir)).await?;
        // started_at is the boot epoch: restore keeps it, like upstream.
        self.records.save(&record)?;
        if let Err(e) = std::fs::remove_dir_all(&dir) {
            tracing::warn!(error = %e, id = %record.id, "could not remove the used snapshot");
        }
        self.runtime.snapshot_changed(&record.id);
        self.ops_log(&record.id, "vm restored");
        self.sync_guest_clock(&record);
        let observed = self.observe(&mut record).await;
        self.render(&record, &observed).await
    }
}
