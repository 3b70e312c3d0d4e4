//! Record + observed state -> the wire `Instance`, formatted exactly like upstream.

use hypedeck_model::instance::disabled_health_status;
use hypedeck_model::size::{format_rate, format_size};
use hypedeck_model::{Instance, InstanceGpu, InstanceNetwork};
use hypedeck_store::InstanceRecord;

use std::sync::Arc;

use crate::query::Observed;
use crate::records::Entry;
use crate::{Engine, EngineError};

/// An instance's wire JSON, and the observation and vault generation it was rendered with
/// (the record is the [`Entry`]'s own).
#[derive(Debug)]
pub(crate) struct Rendered {
    observed: Observed,
    vault: u64,
    json: Arc<[u8]>,
}

impl Engine {
    /// The entry's wire JSON for `observed`: the one rendered last time when nothing it
    /// depends on changed since (the record, the observation, the credential values), else
    /// rendered now and kept.
    pub(crate) async fn render_json(
        &self,
        entry: &Entry,
        observed: Observed,
    ) -> Result<Arc<[u8]>, EngineError> {
        // Read before the values: a change while rendering leaves a rendering that is
        // already stale, never one that looks current.
        let vault = self.vault.generation();
        {
            let rendered = entry.rendered.lock().unwrap_or_else(|p| p.into_inner());
            if let Some(r) = rendered.as_ref()
                && r.vault == vault
                && r.observed == observed
            {
                return Ok(r.json.clone());
            }
        }
        let json: Arc<[u8]> = instance_json(&self.render(&entry.record, &observed).await?)?.into();
        *entry.rendered.lock().unwrap_or_else(|p| p.into_inner()) = Some(Rendered {
            observed,
            vault,
            json: json.clone(),
        });
        Ok(json)
    }

    pub(crate) async fn render(
        &self,
        record: &InstanceRecord,
        observed: &Observed,
    ) -> Result<Instance, EngineError> {
        let mut env = record.env.clone();
        for (key, value) in self.vault.read(record).await? {
            // Upstream echoes real credential values in `env`; the wire contract keeps that.
            // A value that came from a reference shows the reference instead.
            let shown = record
                .secret_env
                .get(&key)
                .and_then(|r| r.reference.clone())
                .unwrap_or_else(|| value.into_inner());
            env.insert(key, shown);
        }
        let network = &record.network;
        let rate = |bps: u64| (bps > 0).then(|| format_rate(bps));
        Ok(Instance {
            auto_standby: record.policies.get("auto_standby").cloned(),
            created_at: record.created_at,
            current_phase: None,
            current_phase_since: None,
            disk_io_bps: rate(record.disk_io_bps),
            env: (!env.is_empty()).then_some(env),
            exit_code: record.exit_code,
            exit_message: record.exit_message.clone().filter(|m| !m.is_empty()),
            gpu: record.gpu_profile.clone().map(|profile| InstanceGpu {
                mdev_uuid: None,
                profile: Some(profile),
            }),
            has_snapshot: Some(observed.has_snapshot),
            health_check: record.policies.get("health_check").cloned(),
            health_status: Some(disabled_health_status()),
            hotplug_size: Some(format_size(record.hotplug_bytes)),
            hypervisor: Some(record.hypervisor),
            id: record.id.clone(),
            image: record.image.clone(),
            name: record.name.clone(),
            network: Some(InstanceNetwork {
                bandwidth_download: rate(network.bandwidth_download_bps),
                bandwidth_upload: rate(network.bandwidth_upload_bps),
                enabled: Some(network.enabled),
                ip: network.ip.clone().filter(|_| network.enabled),
                mac: network.mac.clone().filter(|_| network.enabled),
                name: network.enabled.then(|| "default".to_string()),
            }),
            overlay_size: Some(format_size(record.overlay_bytes)),
            phase_durations_ms: None,
            platform: record.platform.clone(),
            ports: (!record.ports.is_empty()).then(|| record.ports.clone()),
            forked_from: record.forked_from.clone(),
            template_id: record.template_id.clone(),
            restart_policy: record.policies.get("restart_policy").cloned(),
            restart_status: None,
            size: Some(format_size(record.memory_bytes)),
            snapshot_policy: record.policies.get("snapshot_policy").cloned(),
            started_at: record.started_at,
            state: observed.state,
            state_error: observed.state_error.clone(),
            stopped_at: record.stopped_at,
            tags: (!record.tags.is_empty()).then(|| record.tags.clone()),
            vcpus: Some(record.vcpus),
            volumes: (!record.volumes.is_empty()).then(|| {
                record
                    .volumes
                    .iter()
                    .map(|v| {
                        let overlay = v.overlay == Some(true);
                        hypedeck_model::VolumeMount {
                            mount_path: v.mount_path.clone(),
                            overlay: overlay.then_some(true),
                            overlay_size: v
                                .overlay_size
                                .as_deref()
                                .filter(|_| overlay)
                                .and_then(|s| hypedeck_model::size::parse_size(s).ok())
                                .map(format_size),
                            readonly: Some(v.readonly.unwrap_or(false)),
                            volume_id: v.volume_id.clone(),
                        }
                    })
                    .collect()
            }),
        })
    }
}

/// `instance` as the API sends it.
pub(crate) fn instance_json(instance: &Instance) -> Result<Vec<u8>, EngineError> {
    serde_json::to_vec(instance).map_err(|_| EngineError::Corrupt {
        what: format!("instance {} (as JSON)", instance.id),
    })
}
