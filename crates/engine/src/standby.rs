//! standby / restore: save the whole VM to disk and bring it back where it was.
//!
//! A saved VM's directory (`snapshots/latest/`) holds the VMM's state and `identity.json`:
//! who the saved guest believes it is (hostname, MAC, address). A restore whose instance is
//! someone else — a fork continuing its parent's memory — tells the guest its new identity
//! over the agent (`Reidentify`) before anything else talks to it.

use std::path::{Path, PathBuf};

use hypedeck_guest_init::agent_proto::{Identity, IdentityNetwork};
use hypedeck_model::{ErrorCode, Instance, InstanceId, InstanceState, StandbyInstanceRequest};
use hypedeck_store::InstanceRecord;
use serde::{Deserialize, Serialize};
use time::OffsetDateTime;

use crate::{Engine, EngineError, rejected};

/// Who a saved guest is, next to its saved state.
pub(crate) const IDENTITY_FILE: &str = "identity.json";

/// The identity a guest was booted (or last reidentified) with.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct GuestIdentity {
    hostname: String,
    #[serde(default)]
    network: Option<IdentityNetwork>,
}

impl GuestIdentity {
    /// What `record`'s guest is told at boot.
    pub(crate) fn of(record: &InstanceRecord) -> GuestIdentity {
        let (net, prefix) = crate::provision::instance_identity(record);
        GuestIdentity {
            hostname: record.name.clone(),
            network: record.network.enabled.then_some(IdentityNetwork {
                mac: net.mac,
                ip: net.guest_ip,
                prefix,
                gateway: net.gateway,
            }),
        }
    }

    /// The identity saved in a saved-VM directory (`None` before Hypedeck kept one: the
    /// instance's own).
    pub(crate) fn saved_in(dir: &Path) -> Option<GuestIdentity> {
        let bytes = std::fs::read(dir.join(IDENTITY_FILE)).ok()?;
        serde_json::from_slice(&bytes).ok()
    }

    pub(crate) fn save_in(&self, dir: &Path) -> Result<(), EngineError> {
        hypedeck_store::write_json(&dir.join(IDENTITY_FILE), self)?;
        Ok(())
    }
}

impl Engine {
    pub(crate) fn snapshot_dir(&self, id: &str) -> Result<PathBuf, EngineError> {
        let id = InstanceId::parse(id).map_err(|_| EngineError::NotFound)?;
        Ok(self.paths.instance_dir(&id).join("snapshots/latest"))
    }

    /// Running -> Standby: pause, save memory and devices, end the VMM. Standby is a no-op.
    pub async fn standby(&self, id_or_name: &str) -> Result<Instance, EngineError> {
        self.standby_with(id_or_name, StandbyInstanceRequest::default())
            .await
    }

    /// [`Engine::standby`] with upstream's options: the saved memory is compressed after
    /// `compression_delay` (in the background, under the instance's lock, so a restore waits
    /// for it and then decompresses). With options a Standby instance is not a no-op (409, as
    /// upstream).
    pub async fn standby_with(
        &self,
        id_or_name: &str,
        request: StandbyInstanceRequest,
    ) -> Result<Instance, EngineError> {
        let asked = crate::compression::parse(request.compression.as_ref())?;
        let delay = match &request.compression_delay {
            None => None,
            Some(text) => {
                let parsed = hypedeck_model::duration::parse_signed(text).ok_or_else(|| {
                    rejected(
                        ErrorCode::InvalidCompressionDelay,
                        format!(
                            "compression_delay must be a valid duration: time: invalid duration {text:?}"
                        ),
                    )
                })?;
                if parsed.negative && !parsed.magnitude.is_zero() {
                    return Err(rejected(
                        ErrorCode::InvalidCompressionDelay,
                        "compression_delay cannot be negative",
                    ));
                }
                Some(parsed.magnitude)
            }
        };
        let with_options = request.compression.is_some() || request.compression_delay.is_some();
        let (_guard, mut record, observed) = self.lock_and_observe(id_or_name).await?;
        match observed.state {
            InstanceState::Standby if !with_options => {
                return self.render(&record, &observed).await;
            }
            InstanceState::Running => {}
            other => {
                return Err(EngineError::InvalidState(format!(
                    "cannot standby from state {other}"
                )));
            }
        }
        self.standby_locked(&mut record).await?;
        let policy = record.policies.get("snapshot_policy");
        let compression = match asked {
            Some(c) => Some(c),
            None => {
                crate::compression::parse(policy.and_then(|p| p.get("compression"))).unwrap_or(None)
            }
        }
        .filter(|c| c.enabled);
        if let Some(how) = compression {
            let delay = delay
                .or_else(|| {
                    policy
                        .and_then(|p| p.get("standby_compression_delay"))
                        .and_then(serde_json::Value::as_str)
                        .and_then(hypedeck_model::duration::parse)
                })
                .unwrap_or_default();
            self.compress_standby_later(&record.id, how, delay);
        }
        let observed = self.observe(&mut record).await;
        self.render(&record, &observed).await
    }

    /// Compresses instance `id`'s saved memory after `delay`, if it is still in the same
    /// standby then (under its lock: a restore waits, then decompresses).
    fn compress_standby_later(
        &self,
        id: &str,
        how: crate::compression::Compression,
        delay: std::time::Duration,
    ) {
        let Ok(dir) = self.snapshot_dir(id) else {
            return;
        };
        let lock = self.lock_for(id);
        let (paths, id) = (self.paths.clone(), id.to_string());
        let saved_at = std::fs::metadata(dir.join(IDENTITY_FILE))
            .and_then(|m| m.modified())
            .ok();
        tokio::spawn(async move {
            tokio::time::sleep(delay).await;
            let _guard = lock.lock().await;
            let same = std::fs::metadata(dir.join(IDENTITY_FILE))
                .and_then(|m| m.modified())
                .ok();
            if same.is_none() || same != saved_at {
                return; // restored (or saved again) meanwhile
            }
            let result = tokio::task::spawn_blocking({
                let dir = dir.clone();
                move || crate::compression::compress_memory(&dir, how)
            })
            .await;
            let message = match result {
                Ok(Ok((small, big))) => format!(
                    "saved memory compressed ({:?}): {small} of {big} bytes",
                    how.algorithm
                ),
                Ok(Err(e)) => format!("saved memory not compressed: {e}"),
                Err(_) => "saved memory not compressed: the task failed".into(),
            };
            crate::boot::append_ops_log(&paths, &id, &message);
        });
    }

    /// Saves a Running instance's VM (the caller holds its lock and checked its state).
    pub(crate) async fn standby_locked(
        &self,
        record: &mut InstanceRecord,
    ) -> Result<(), EngineError> {
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
        let saved = match vm.save_and_exit(&dir).await {
            Ok(()) => GuestIdentity::of(record).save_in(&dir),
            Err(e) => Err(e.into()),
        };
        if saved.is_err() {
            let _ = std::fs::remove_dir_all(&dir);
        }
        self.runtime.snapshot_changed(&record.id);
        saved?;
        self.runtime.ended(&record.id);
        self.unregister_egress(&record.id).await;
        self.detach_network(&record.id).await;
        record.stopped_at = Some(OffsetDateTime::now_utc());
        self.records.save(record)?;
        self.ops_log(&record.id, "vm saved to standby");
        Ok(())
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
        self.restore_locked(&mut record).await?;
        let observed = self.observe(&mut record).await;
        self.render(&record, &observed).await
    }

    /// Restores a Standby instance's VM (the caller holds its lock and checked its state).
    pub(crate) async fn restore_locked(
        &self,
        record: &mut InstanceRecord,
    ) -> Result<(), EngineError> {
        let hypervisor = self.backend(record.hypervisor)?;
        self.end_sleep(&record.id);
        self.check_ports_free(record).await?;
        self.ops_log(&record.id, "restore requested");
        let dir = self.snapshot_dir(&record.id)?;
        // A standby compressed in place is decompressed first (QEMU reads a plain stream).
        let plain = dir.clone();
        tokio::task::spawn_blocking(move || crate::compression::ensure_raw_memory(&plain))
            .await
            .map_err(|_| EngineError::Task)?
            .map_err(|source| EngineError::Io {
                what: "decompress the saved memory".into(),
                source,
            })?;
        let mut now = GuestIdentity::of(record);
        let then = GuestIdentity::saved_in(&dir);
        if let Some(then) = &then
            && *then != now
            && record.skip_guest_agent
        {
            // A guest without an agent cannot be told who it is now: it keeps its address
            // and MAC (served as they are) and its hostname.
            record.network.pinned = then
                .network
                .as_ref()
                .map(|n| hypedeck_store::PinnedAddress {
                    ip: n.ip.clone(),
                    mac: n.mac.clone(),
                });
            self.records.save(record)?;
            now = then.clone();
            self.ops_log(
                &record.id,
                "no guest agent: the restored guest keeps the address, MAC and hostname it had",
            );
        }
        // On failure the instance stays in Standby, as it was: the snapshot is only removed
        // once the VM runs with its network (and, for a fork, its own identity).
        self.launch(record, hypervisor, Some(&dir)).await?;
        if then.as_ref().is_some_and(|then| *then != now)
            && let Err(e) = self.reidentify_guest(record, &now).await
        {
            self.ops_log(
                &record.id,
                &format!("the restored guest was not reidentified: {e}"),
            );
            self.end_vm(&record.id).await;
            return Err(e);
        }
        // started_at is the boot epoch: restore keeps it, like upstream.
        self.records.save(record)?;
        if let Err(e) = std::fs::remove_dir_all(&dir) {
            tracing::warn!(error = %e, id = %record.id, "could not remove the used snapshot");
        }
        self.runtime.snapshot_changed(&record.id);
        self.ops_log(&record.id, "vm restored");
        self.sync_guest_clock(record).await;
        Ok(())
    }

    /// Tells a restored guest it is now `identity` (a fork continuing its parent's memory):
    /// name, address, MAC, and fresh entropy. A guest without an agent cannot be told.
    async fn reidentify_guest(
        &self,
        record: &InstanceRecord,
        identity: &GuestIdentity,
    ) -> Result<(), EngineError> {
        let agent_error = EngineError::Agent;
        let mut entropy = [0u8; 64];
        getrandom::fill(&mut entropy).map_err(|_| EngineError::Task)?;
        let payload = Identity {
            hostname: identity.hostname.clone(),
            network: identity.network.clone(),
            entropy: entropy.iter().map(|b| format!("{b:02x}")).collect(),
        };
        let link = self
            .agent_link(&record.id, std::time::Duration::from_secs(30))
            .await?;
        link.reidentify(&payload).await.map_err(agent_error)?;
        self.ops_log(
            &record.id,
            &format!(
                "guest reidentified as {}{}",
                identity.hostname,
                identity
                    .network
                    .as_ref()
                    .map(|n| format!(" ({}, {})", n.ip, n.mac))
                    .unwrap_or_default()
            ),
        );
        Ok(())
    }

    /// Ends a VM that must not go on (it was launched, a later step failed).
    pub(crate) async fn end_vm(&self, id: &str) {
        if let Some(vm) = self.runtime.ended(id)
            && let Err(e) = vm.kill().await
        {
            tracing::error!(error = %e, %id, "could not kill a VMM");
        }
        self.unregister_egress(id).await;
        self.detach_network(id).await;
    }
}
