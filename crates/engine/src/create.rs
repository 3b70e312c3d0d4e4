//! `create`: validate against the data dir, persist, keep secrets in the keychain, boot.

use std::collections::BTreeMap;

use hypedeck_model::{Instance, InstanceId, InstanceSpec};
use hypedeck_secrets::Sensitive;
use hypedeck_store::{EgressRecord, InstanceRecord, NetworkRecord, SCHEMA_VERSION, SecretRef};
use time::OffsetDateTime;

use crate::{Engine, EngineError, secret_account};

impl Engine {
    /// Creates and boots an instance. On any failure nothing is left behind: no directory, no
    /// keychain entry, no VMM.
    pub async fn create(&self, spec: InstanceSpec) -> Result<Instance, EngineError> {
        self.create_as(spec, crate::Caller::Local).await
    }

    /// [`Engine::create`] for `caller`: secret references are resolved only for a caller that
    /// may (see [`crate::Caller`]).
    pub async fn create_as(
        &self,
        spec: InstanceSpec,
        caller: crate::Caller,
    ) -> Result<Instance, EngineError> {
        let hypervisor = match (spec.hypervisor, &self.hypervisor) {
            (Some(requested), _) => self.backend(requested)?,
            (None, Ok(h)) => h.clone(),
            (None, Err(reason)) => return Err(EngineError::NoHypervisor(reason.clone())),
        };
        check_capabilities(&spec, hypervisor.kind(), hypervisor.capabilities())?;

        // A taken name is refused before a reference runs anything (checked again below,
        // under the create lock).
        self.check_name_free(&spec.name)?;
        let id = new_id()?;
        // The instance's own lock for the whole create: a verb that finds the record on disk
        // (a DELETE while the VM boots) waits until the create is done with it.
        let instance_lock = self.lock_for(id.as_str()).lock_owned().await;
        let mut record = build_record(&id, &spec, hypervisor.kind());

        // References resolve on the host before anything is stored; a failure is a 400.
        let mut secrets: Vec<(String, Sensitive<String>)> = Vec::new();
        for (key, r) in record.secret_env.iter_mut() {
            if let Some(v) = spec.env.get(key) {
                secrets.push((
                    r.keychain_account.clone(),
                    self.vault.value_of(v, caller).await?,
                ));
                r.reference = crate::credentials::reference_kind(v).map(|_| v.clone());
            }
        }
        // The create lock covers what makes creates conflict (the name, a read-write volume)
        // until the record that claims them is stored; not the image wait or the boot, so one
        // slow create never holds up another.
        let claim = self.create_lock.lock().await;
        self.check_name_free(&spec.name)?;
        self.check_volume_attachments(&spec.volumes)?;
        // From here on everything the create acquires (keychain items, directory, egress,
        // network, VMM) is undone on failure or cancellation, and the lock is held until it is.
        let accounts: Vec<String> = secrets.iter().map(|(a, _)| a.clone()).collect();
        let staged = self.stage_create(&id, accounts, instance_lock);
        let created = async {
            // Secrets first: if the keychain is unavailable nothing else has happened yet.
            let _ = self.vault.write(id.as_str(), secrets).await?;
            self.records.create(&record)?;
            drop(claim);
            self.boot(&mut record).await?;
            let observed = self.observe(&mut record).await;
            self.render(&record, &observed).await
        };
        match created.await {
            Ok(instance) => {
                staged.commit();
                Ok(instance)
            }
            Err(e) => {
                staged.release().await;
                Err(e)
            }
        }
    }

    fn check_name_free(&self, name: &str) -> Result<(), EngineError> {
        if self.records()?.iter().any(|r| r.name == name) {
            return Err(EngineError::NameConflict(name.to_string()));
        }
        Ok(())
    }
}

/// Refuses, before anything is written, what the chosen backend cannot do.
pub(crate) fn check_capabilities(
    spec: &InstanceSpec,
    kind: hypedeck_model::HypervisorKind,
    caps: hypedeck_hypervisor::Capabilities,
) -> Result<(), EngineError> {
    let missing = if !spec.ports.is_empty() && !caps.port_forwarding {
        Some("port forwarding (ports)")
    } else if spec.network.egress.is_some() && !caps.egress_enforcement {
        Some("egress enforcement (network.egress, credentials)")
    } else if spec.hotplug_bytes > 0 && !caps.hotplug_memory {
        Some("memory hotplug (hotplug_size)")
    } else if spec.disk_io_bps > 0 && !caps.disk_io_limit {
        Some("disk I/O limits (disk_io_bps)")
    } else {
        None
    };
    match missing {
        Some(operation) => Err(EngineError::Hypervisor(
            hypedeck_hypervisor::HypervisorError::Unsupported { kind, operation },
        )),
        None => Ok(()),
    }
}

pub(crate) fn new_id() -> Result<InstanceId, EngineError> {
    let mut random = [0u8; hypedeck_model::id::ID_LEN];
    getrandom::fill(&mut random).map_err(|_| EngineError::Task)?;
    Ok(InstanceId::from_random(random))
}

fn build_record(
    id: &InstanceId,
    spec: &InstanceSpec,
    hypervisor: hypedeck_model::HypervisorKind,
) -> InstanceRecord {
    let secret_keys = spec.credential_source_keys();
    let mut env = BTreeMap::new();
    let mut secret_env = BTreeMap::new();
    for (key, value) in &spec.env {
        if secret_keys.contains(key) {
            secret_env.insert(
                key.clone(),
                SecretRef {
                    keychain_account: secret_account(id.as_str(), key),
                    rotated_at: Some(OffsetDateTime::now_utc()),
                    reference: None,
                },
            );
        } else {
            env.insert(key.clone(), value.clone());
        }
    }
    InstanceRecord {
        schema_version: SCHEMA_VERSION,
        id: id.to_string(),
        name: spec.name.clone(),
        image: spec.image.clone(),
        platform: spec.platform.clone(),
        image_digest: None,
        hypervisor,
        vcpus: spec.vcpus,
        memory_bytes: spec.memory_bytes,
        hotplug_bytes: spec.hotplug_bytes,
        overlay_bytes: spec.overlay_bytes,
        disk_io_bps: spec.disk_io_bps,
        env,
        secret_env,
        credentials: spec.credentials.clone(),
        tags: spec.tags.clone(),
        network: NetworkRecord {
            enabled: spec.network.enabled,
            bandwidth_download_bps: spec.network.bandwidth_download,
            bandwidth_upload_bps: spec.network.bandwidth_upload,
            egress: EgressRecord {
                enabled: spec.network.egress.is_some(),
                mode: spec
                    .network
                    .egress
                    .map(|m| m.as_str().to_string())
                    .unwrap_or_default(),
                allow: spec.network.allow.clone(),
            },
            ip: None,
            mac: None,
            proxy_port: None,
            pinned: None,
        },
        volumes: spec.volumes.clone(),
        gpu_profile: spec.gpu_profile.clone(),
        devices: spec.devices.clone(),
        entrypoint: spec.entrypoint.clone(),
        cmd: spec.cmd.clone(),
        ports: spec.ports.clone(),
        skip_kernel_headers: spec.skip_kernel_headers,
        skip_guest_agent: spec.skip_guest_agent,
        policies: spec.policies.clone(),
        created_at: OffsetDateTime::now_utc(),
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
