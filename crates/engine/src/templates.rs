//! Templates: fast starts from a booted VM (issue 22, item 3).
//!
//! A template is a VM of one shape (image digest, kernel, initramfs, vCPUs, memory, overlay
//! size, NIC, VMM) booted until its guest init waits for a config, and saved: its RAM is a
//! file, its devices a small migration stream (`hv-qemu`). A VM started from it maps that RAM
//! file privately (unchanged pages are shared by every VM of the template through the page
//! cache; written ones are copied), loads the devices and resumes: init reads the new VM's own
//! config disk and boots on as after a cold boot. The template never read a config, so no
//! instance's env, credentials, agent key or identity is in it.
//!
//! `Templates` owns `templates/<key>/` (`template.json`, the backend's files) and the builds
//! under way. The key is [`Hypervisor::template_key`] of the instance's VM spec: whatever
//! changes the guest's view (image, kernel, init, VMM, shape) names another template. A
//! template is made in the background by the first start of a key that has none (that start
//! boots cold); unused ones are removed when there are more than [`KEEP`], or with their
//! image, or by `DELETE /templates/{id}`. `HYPEDECK_TEMPLATES=off` turns them off.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use hypedeck_hypervisor::{DiskSpec, Hypervisor, VmSpec};
use serde::{Deserialize, Serialize};
use time::OffsetDateTime;

/// Templates kept: the least recently used beyond this are removed when a new one is made.
const KEEP: usize = 8;
/// The file describing a ready template.
const INFO: &str = "template.json";

/// What a template is (Hypedeck extension, `GET /templates`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TemplateInfo {
    /// The template key (what `template_id` of an instance started from it says).
    pub id: String,
    /// `building`, `ready` or `failed`.
    pub status: String,
    /// Why the build failed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// The image reference of the instance whose start made it.
    pub image: String,
    /// The image's digest (its root disk is the template's).
    pub image_digest: String,
    /// Backend.
    pub hypervisor: String,
    /// vCPUs.
    pub vcpus: u32,
    /// Memory in bytes.
    pub memory_bytes: u64,
    /// Overlay size in bytes.
    pub overlay_bytes: u64,
    /// Whether the VM has a NIC.
    pub network: bool,
    /// When the template was made.
    #[serde(with = "time::serde::rfc3339::option", default)]
    pub created_at: Option<OffsetDateTime>,
    /// How long making it took.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub build_ms: Option<u64>,
    /// Bytes the template takes on disk (its RAM file is sparse: the pages the guest touched).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub disk_bytes: Option<u64>,
    /// Instances started from it.
    #[serde(default)]
    pub starts: u64,
    /// The last start from it.
    #[serde(with = "time::serde::rfc3339::option", default)]
    pub last_used_at: Option<OffsetDateTime>,
}

/// The templates of one data dir.
#[derive(Debug)]
pub(crate) struct Templates {
    dir: PathBuf,
    enabled: bool,
    /// Builds under way and failed ones (a failed key is not tried again until a restart).
    pending: Mutex<HashMap<String, TemplateInfo>>,
    /// One build at a time: each boots a VM.
    gate: tokio::sync::Semaphore,
}

impl Templates {
    pub(crate) fn new(dir: PathBuf) -> Templates {
        let enabled = !matches!(
            std::env::var("HYPEDECK_TEMPLATES").ok().as_deref(),
            Some("off" | "0" | "false")
        );
        Templates {
            dir,
            enabled,
            pending: Mutex::new(HashMap::new()),
            gate: tokio::sync::Semaphore::new(1),
        }
    }

    pub(crate) fn enabled(&self) -> bool {
        self.enabled
    }

    fn pending(&self) -> std::sync::MutexGuard<'_, HashMap<String, TemplateInfo>> {
        crate::lock(&self.pending)
    }

    /// A ready template's directory.
    pub(crate) fn ready(&self, key: &str) -> Option<PathBuf> {
        let dir = self.dir.join(key);
        dir.join(INFO).is_file().then_some(dir)
    }

    /// Records a start from template `key`.
    pub(crate) fn used(&self, key: &str) {
        let path = self.dir.join(key).join(INFO);
        if let Some(mut info) = read_info(&path) {
            info.starts += 1;
            info.last_used_at = Some(OffsetDateTime::now_utc());
            if let Ok(bytes) = serde_json::to_vec_pretty(&info) {
                let _ = hypedeck_store::write_atomic(&path, &bytes);
            }
        }
    }

    /// Every template: ready ones (oldest first), then builds under way and failed ones.
    pub(crate) fn list(&self) -> Vec<TemplateInfo> {
        let mut ready: Vec<TemplateInfo> = std::fs::read_dir(&self.dir)
            .into_iter()
            .flatten()
            .flatten()
            .filter_map(|e| read_info(&e.path().join(INFO)))
            .collect();
        ready.sort_by_key(|t| t.created_at);
        let mut pending: Vec<TemplateInfo> = self.pending().values().cloned().collect();
        pending.sort_by(|a, b| a.id.cmp(&b.id));
        ready.extend(pending);
        ready
    }

    /// Removes template `id` (a build under way is not removed). VMs started from it keep
    /// running: their mapping of its RAM outlives the file. `false`: no such template.
    pub(crate) fn remove(&self, id: &str) -> std::io::Result<bool> {
        if !valid_key(id) {
            return Ok(false);
        }
        if self
            .pending()
            .remove(id)
            .is_some_and(|t| t.status == "failed")
        {
            return Ok(true);
        }
        let dir = self.dir.join(id);
        if !dir.join(INFO).is_file() {
            return Ok(false);
        }
        std::fs::remove_dir_all(&dir)?;
        Ok(true)
    }

    /// Removes what an interrupted build left (its VM too), and templates of images that are
    /// gone. Run before serving.
    pub(crate) async fn sweep(
        &self,
        hypervisor: Option<&dyn Hypervisor>,
        image_exists: impl Fn(&str) -> bool,
    ) {
        for entry in std::fs::read_dir(&self.dir).into_iter().flatten().flatten() {
            let path = entry.path();
            let name = entry.file_name().to_string_lossy().to_string();
            if name.starts_with(".building-") {
                if let Some(hypervisor) = hypervisor {
                    kill_build_vm(hypervisor, &path).await;
                }
                let _ = std::fs::remove_dir_all(&path);
            } else if read_info(&path.join(INFO)).is_none_or(|t| !image_exists(&t.image_digest)) {
                let _ = std::fs::remove_dir_all(&path);
            }
        }
    }

    /// Makes template `key` from `spec` (the spec of the instance whose start found none) in
    /// the background, unless it is made, being made or failed already.
    pub(crate) fn build_in_background(
        self: &Arc<Self>,
        hypervisor: Arc<dyn Hypervisor>,
        key: String,
        spec: &VmSpec,
        mut info: TemplateInfo,
    ) {
        if self.ready(&key).is_some() {
            return;
        }
        {
            let mut pending = self.pending();
            if pending.contains_key(&key) {
                return;
            }
            info.id = key.clone();
            info.status = "building".into();
            pending.insert(key.clone(), info.clone());
        }
        let spec = spec.clone();
        let templates = self.clone();
        tokio::spawn(async move {
            let _turn = templates.gate.acquire().await;
            let started = std::time::Instant::now();
            let result = templates
                .build(hypervisor.as_ref(), &key, &spec, &mut info)
                .await;
            match result {
                Ok(()) => {
                    tracing::info!(template = %key, ms = started.elapsed().as_millis() as u64, "template made");
                    templates.pending().remove(&key);
                    templates.prune(&key);
                }
                Err(e) => {
                    tracing::warn!(template = %key, error = %e, "making a template failed");
                    info.status = "failed".into();
                    info.error = Some(e);
                    templates.pending().insert(key, info);
                }
            }
        });
    }

    async fn build(
        &self,
        hypervisor: &dyn Hypervisor,
        key: &str,
        spec: &VmSpec,
        info: &mut TemplateInfo,
    ) -> Result<(), String> {
        let started = std::time::Instant::now();
        hypedeck_store::create_private_dir(&self.dir).map_err(|e| e.to_string())?;
        let work = self.dir.join(format!(".building-{key}"));
        let _ = std::fs::remove_dir_all(&work);
        hypedeck_store::create_private_dir(&work).map_err(|e| e.to_string())?;
        let made = async {
            let template = template_spec(spec, key, &work).map_err(|e| e.to_string())?;
            // The template's own placeholders must give the same key.
            if hypervisor.template_key(&template).await.as_deref() != Some(key) {
                return Err("the template's VM differs from the instance's".to_string());
            }
            let saved = work.join("saved");
            hypervisor
                .make_template(&template, &saved)
                .await
                .map_err(|e| e.to_string())?;
            // Only the saved VM stays: the placeholders and the run dir go.
            for i in 1..template.disks.len() {
                let _ = std::fs::remove_file(work.join(format!("disk{i}.img")));
            }
            let _ = std::fs::remove_file(work.join("console.log"));
            let _ = std::fs::remove_dir_all(work.join("run"));
            info.status = "ready".into();
            info.created_at = Some(OffsetDateTime::now_utc());
            info.build_ms = Some(started.elapsed().as_millis() as u64);
            info.disk_bytes = Some(crate::resources::dir_bytes(
                &saved,
                crate::resources::Measure::Allocated,
            ));
            let bytes = serde_json::to_vec_pretty(&info).map_err(|e| e.to_string())?;
            hypedeck_store::write_atomic(&work.join(INFO), &bytes).map_err(|e| e.to_string())?;
            std::fs::rename(&work, self.dir.join(key)).map_err(|e| e.to_string())
        }
        .await;
        if made.is_err() {
            kill_build_vm(hypervisor, &work).await;
            let _ = std::fs::remove_dir_all(&work);
        }
        made
    }

    /// Keeps the [`KEEP`] most recently used templates (never `keep`, just made).
    fn prune(&self, keep: &str) {
        let mut all = self.list();
        all.retain(|t| t.status == "ready" && t.id != keep);
        all.sort_by_key(|t| std::cmp::Reverse(t.last_used_at.or(t.created_at)));
        for old in all.into_iter().skip(KEEP.saturating_sub(1)) {
            let _ = std::fs::remove_dir_all(self.dir.join(&old.id));
        }
    }
}

/// Where the saved VM of a ready template is (what the backend reads).
pub(crate) fn saved_dir(template_dir: &Path) -> PathBuf {
    template_dir.join("saved")
}

fn read_info(path: &Path) -> Option<TemplateInfo> {
    serde_json::from_slice(&std::fs::read(path).ok()?).ok()
}

fn valid_key(key: &str) -> bool {
    !key.is_empty() && key.len() <= 64 && key.bytes().all(|b| b.is_ascii_hexdigit())
}

/// Kills the VMM of a build that did not finish (found by its run dir, as after a restart).
async fn kill_build_vm(hypervisor: &dyn Hypervisor, work: &Path) {
    if let Ok(Some(vm)) = hypervisor.attach("template", &work.join("run")).await {
        let _ = vm.kill().await;
    }
}

/// The template VM of an instance's `spec`: the same shape with placeholders of its own (an
/// overlay of the same size, never formatted; an all-zero config disk), a console log and run
/// dir in `work`, and no identity (a NIC whose frames go nowhere).
fn template_spec(spec: &VmSpec, key: &str, work: &Path) -> std::io::Result<VmSpec> {
    let sized = |name: &str, len: u64| -> std::io::Result<PathBuf> {
        let path = work.join(name);
        std::fs::File::create(&path)?.set_len(len)?;
        Ok(path)
    };
    // The root disk is shared (read-only, the image's); the others (overlay, config) are
    // zero-filled files of their sizes.
    let mut disks = Vec::new();
    for (i, disk) in spec.disks.iter().enumerate() {
        let path = if i == 0 {
            disk.path.clone()
        } else {
            sized(
                &format!("disk{i}.img"),
                std::fs::metadata(&disk.path)?.len(),
            )?
        };
        disks.push(DiskSpec {
            path,
            readonly: disk.readonly,
            io_bps: 0,
            serial: None,
        });
    }
    let id = format!("template-{}", &key[..key.len().min(12)]);
    Ok(VmSpec {
        instance_id: id.clone(),
        runtime_dir: work.join("run"),
        vcpus: spec.vcpus,
        memory_bytes: spec.memory_bytes,
        hotplug_bytes: 0,
        kernel: spec.kernel.clone(),
        initrd: spec.initrd.clone(),
        kernel_args: spec.kernel_args.clone(),
        disks,
        serial_log: work.join("console.log"),
        network: spec.network.as_ref().map(|n| hypedeck_hypervisor::NetSpec {
            mac: "02:00:00:00:00:01".into(),
            restrict: true,
            guest_forwards: Vec::new(),
            host_forwards: Vec::new(),
            ..n.clone()
        }),
        vsock_cid: crate::provision::vsock_cid(&id),
    })
}

impl crate::Engine {
    /// Every template (Hypedeck extension, `GET /templates`).
    pub fn templates(&self) -> Vec<TemplateInfo> {
        self.templates.list()
    }

    /// Removes a template (`DELETE /templates/{id}`). Instances started from it run on.
    pub fn delete_template(&self, id: &str) -> Result<(), crate::EngineError> {
        match self.templates.remove(id) {
            Ok(true) => Ok(()),
            Ok(false) => Err(crate::rejected(
                hypedeck_model::ErrorCode::NotFound,
                "template not found",
            )),
            Err(source) => Err(crate::EngineError::Io {
                what: "remove the template".into(),
                source,
            }),
        }
    }
}
