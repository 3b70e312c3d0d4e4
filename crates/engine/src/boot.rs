//! Booting an instance's VM (create and start share this).

use std::sync::Arc;

use hypedeck_store::InstanceRecord;
use time::OffsetDateTime;

use crate::{Engine, EngineError};

impl Engine {
    /// The env the guest sees: plain values, and `mock-<KEY>` for every credential key. Real
    /// credential values (the `source.env` vars) never enter the guest.
    pub(crate) fn guest_env(record: &InstanceRecord) -> Vec<String> {
        let mut env: Vec<String> = record
            .env
            .iter()
            .filter(|(k, _)| !record.secret_env.contains_key(*k))
            .map(|(k, v)| format!("{k}={v}"))
            .collect();
        for key in record.credentials.keys() {
            env.retain(|e| e.split('=').next() != Some(key.as_str()));
            env.push(format!(
                "{key}={}",
                hypedeck_model::validate::mock_value(key)
            ));
        }
        env
    }

    /// Provisions disks and boots the VMM; on success the VM is registered and `started_at`
    /// persisted. The caller holds the instance lock (or owns a new instance).
    pub(crate) async fn boot(&self, record: &mut InstanceRecord) -> Result<(), EngineError> {
        let hypervisor = self.backend(record.hypervisor)?;
        self.end_sleep(&record.id);
        self.check_ports_free(record).await?;
        self.launch(record, hypervisor, None).await?;
        record.started_at = Some(OffsetDateTime::now_utc());
        record.exit_code = None;
        record.exit_message = None;
        self.records.save(record)?;
        self.ops_log(&record.id, "vm started");
        Ok(())
    }

    /// Provisions `record` and boots its VM (`snapshot: None`) or restores it from a snapshot
    /// dir, with its network; on success the VM is registered in the runtime. The steps run
    /// under a [`Staged`](crate::staged::Staged) guard: on error (or cancellation) nothing of
    /// the attempt outlives it — the egress attachment with its real credentials, the network
    /// served for it, and a VMM that started are all undone.
    pub(crate) async fn launch(
        &self,
        record: &mut InstanceRecord,
        hypervisor: Arc<dyn hypedeck_hypervisor::Hypervisor>,
        snapshot: Option<&std::path::Path>,
    ) -> Result<(), EngineError> {
        let staged = self.stage(&record.id);
        match self.launch_steps(record, hypervisor, snapshot).await {
            Ok(()) => {
                staged.commit();
                Ok(())
            }
            Err(e) => {
                staged.release().await;
                Err(e)
            }
        }
    }

    async fn launch_steps(
        &self,
        record: &mut InstanceRecord,
        hypervisor: Arc<dyn hypedeck_hypervisor::Hypervisor>,
        snapshot: Option<&std::path::Path>,
    ) -> Result<(), EngineError> {
        let mut spec = self.provision(record, Self::guest_env(record)).await?;
        if self.guest.is_some() {
            // A restore continues the saved run on the kernel it booted (an app update that
            // brought a new kernel changes it at the next cold start).
            if snapshot.is_some()
                && let Some(saved) = record
                    .boot
                    .as_ref()
                    .filter(|b| b.kernel.is_file() && b.initrd.is_file())
            {
                spec.kernel = saved.kernel.clone();
                spec.initrd = saved.initrd.clone();
            }
            record.boot = Some(hypedeck_store::BootRecord {
                kernel: spec.kernel.clone(),
                initrd: spec.initrd.clone(),
            });
        }
        if snapshot.is_none() {
            // This run's console output starts where the previous runs' ends.
            record.log_offset = std::fs::metadata(&spec.serial_log).map_or(0, |m| m.len());
        }
        self.serve_network_before_start(record, hypervisor.as_ref(), &spec)
            .await?;
        let vm: Arc<dyn hypedeck_hypervisor::Vm> = Arc::from(match snapshot {
            None => self.start_vm(record, hypervisor, &spec).await?,
            Some(dir) => hypervisor.restore(&spec, dir).await?,
        });
        // Registered at once: from here the stage's release kills it.
        self.runtime.started(&record.id, vm.clone());
        self.attach_network(record, vm.as_ref()).await?;
        if snapshot.is_none() {
            self.prune_boot_cache(&spec);
        }
        Ok(())
    }

    /// Once per process, after the first cold boot: removes cached kernels and initramfs that
    /// nothing uses any more (an app update brought a new kernel, a new guest init made a new
    /// initramfs). Kept: what `current` booted, and what every running or saved instance booted.
    fn prune_boot_cache(&self, current: &hypedeck_hypervisor::VmSpec) {
        use std::sync::atomic::Ordering;
        let Some(guest) = &self.guest else { return };
        if self.boot_cache_pruned.swap(true, Ordering::AcqRel) {
            return;
        }
        let mut keep = std::collections::BTreeSet::new();
        let mut add = |file: &std::path::Path| {
            if let Some(dir) = file.parent() {
                keep.insert(dir.to_path_buf());
            }
        };
        add(&current.kernel);
        add(&current.initrd);
        for entry in self.records.entries().unwrap_or_default() {
            let r = &entry.record;
            let live = self.runtime.vm(&r.id).is_some()
                || hypedeck_model::InstanceId::parse(&r.id).is_ok_and(|id| self.snapshot_flag(&id));
            if live && let Some(boot) = &r.boot {
                add(&boot.kernel);
                add(&boot.initrd);
            }
        }
        let system = guest.system_dir.clone();
        tokio::task::spawn_blocking(move || {
            for removed in hypedeck_boot::prune(&system, &keep) {
                tracing::info!(path = %removed.display(), "removed an unused boot asset");
            }
        });
    }

    /// Starts `spec`'s VM: from its template when there is one (`templates.rs`), else cold,
    /// asking for the template to be made in the background. A template that fails to start
    /// is reported in `hypeman.log` and the VM boots cold.
    async fn start_vm(
        &self,
        record: &mut InstanceRecord,
        hypervisor: Arc<dyn hypedeck_hypervisor::Hypervisor>,
        spec: &hypedeck_hypervisor::VmSpec,
    ) -> Result<Box<dyn hypedeck_hypervisor::Vm>, EngineError> {
        record.template_id = None;
        let key = if self.templates.enabled() && hypervisor.capabilities().templates {
            hypervisor.template_key(spec).await
        } else {
            None
        };
        let Some(key) = key else {
            return Ok(hypervisor.start(spec).await?);
        };
        if let Some(dir) = self.templates.ready(&key) {
            match hypervisor
                .start_from_template(spec, &crate::templates::saved_dir(&dir))
                .await
            {
                Ok(vm) => {
                    self.templates.used(&key);
                    self.ops_log(&record.id, &format!("starting from template {key}"));
                    record.template_id = Some(key);
                    return Ok(vm);
                }
                Err(e) => {
                    tracing::warn!(id = %record.id, template = %key, error = %e, "starting from a template failed; booting cold");
                    self.ops_log(
                        &record.id,
                        &format!("starting from template {key} failed ({e}); booting cold"),
                    );
                }
            }
        } else {
            let info = crate::templates::TemplateInfo {
                id: key.clone(),
                status: "building".into(),
                error: None,
                image: record.image.clone(),
                image_digest: record.image_digest.clone().unwrap_or_default(),
                hypervisor: hypervisor.kind().as_str().to_string(),
                vcpus: record.vcpus,
                memory_bytes: record.memory_bytes,
                overlay_bytes: record.overlay_bytes,
                network: spec.network.is_some(),
                created_at: None,
                build_ms: None,
                disk_bytes: None,
                starts: 0,
                last_used_at: None,
            };
            self.templates
                .build_in_background(hypervisor.clone(), key, spec, info);
        }
        Ok(hypervisor.start(spec).await?)
    }

    /// Appends a line to the instance's `hypeman.log` (operations log; never secrets).
    pub(crate) fn ops_log(&self, id: &str, message: &str) {
        append_ops_log(&self.paths, id, message);
    }
}

/// Appends a line to instance `id`'s `hypeman.log` (see [`Engine::ops_log`]).
pub(crate) fn append_ops_log(paths: &hypedeck_store::Paths, id: &str, message: &str) {
    let Ok(id) = hypedeck_model::InstanceId::parse(id) else {
        return;
    };
    let path = paths.instance_logs(&id).join("hypeman.log");
    let now = OffsetDateTime::now_utc()
        .format(&time::format_description::well_known::Rfc3339)
        .unwrap_or_default();
    use std::io::Write;
    if let Ok(mut f) = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
    {
        let _ = writeln!(f, "{now} [INFO] {message}");
    }
}
