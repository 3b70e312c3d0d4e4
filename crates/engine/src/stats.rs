//! Resource use (issue 23). Upstream's `GET /instances/{id}/stats`: the VMM process's CPU time
//! and memory (`hypervisor::process::usage`) and the bytes its NIC moved (counted by the
//! instance's sandbox network, `netstack::Traffic`); zeros when no VMM runs, like upstream.
//!
//! Hypedeck adds a history for the window's graphs: `Samples` takes a sample of every VM
//! every [`INTERVAL`] (also the disks' bytes, from the VMM: QEMU's `query-blockstats`) and
//! keeps the last [`KEEP`] per instance, for as long as it has a VMM.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use hypedeck_model::{FleetStats, InstanceStats, StatsHistory, StatsSample};
use hypedeck_store::InstanceRecord;

use crate::{Engine, EngineError};

/// Time between samples.
pub const INTERVAL: Duration = Duration::from_secs(2);
/// Samples kept per instance: ten minutes.
const KEEP: usize = 300;
/// Samples per instance in the fleet view: the last minute.
const FLEET_KEEP: usize = 30;

/// Recent samples of every instance with a VMM.
#[derive(Debug, Default)]
pub(crate) struct Samples {
    rings: Mutex<HashMap<String, VecDeque<StatsSample>>>,
}

impl Samples {
    fn push(&self, id: &str, sample: StatsSample) {
        let mut rings = crate::lock(&self.rings);
        let ring = rings.entry(id.to_string()).or_default();
        if ring.len() >= KEEP {
            ring.pop_front();
        }
        ring.push_back(sample);
    }

    /// The last `n` samples of `id`, oldest first.
    fn last(&self, id: &str, n: usize) -> Vec<StatsSample> {
        crate::lock(&self.rings)
            .get(id)
            .map(|r| r.iter().skip(r.len().saturating_sub(n)).copied().collect())
            .unwrap_or_default()
    }

    /// Forgets instances that no longer have a VMM.
    fn retain(&self, ids: &[String]) {
        crate::lock(&self.rings).retain(|id, _| ids.contains(id));
    }
}

fn allocated_memory(record: &InstanceRecord) -> u64 {
    record.memory_bytes.saturating_add(record.hotplug_bytes)
}

fn int(n: u64) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}

impl Engine {
    /// Upstream's `GET /instances/{id}/stats`.
    pub async fn stats(&self, id_or_name: &str) -> Result<InstanceStats, EngineError> {
        let record = self.resolve(id_or_name)?;
        let usage = self
            .runtime
            .vm(&record.id)
            .and_then(|vm| vm.process_id())
            .and_then(hypedeck_hypervisor::process::usage)
            .unwrap_or_default();
        let traffic = self.networks.traffic(&record.id);
        let allocated = allocated_memory(&record);
        Ok(InstanceStats {
            instance_id: record.id.clone(),
            instance_name: record.name.clone(),
            cpu_seconds: usage.cpu_seconds,
            memory_rss_bytes: int(usage.rss_bytes),
            memory_vms_bytes: int(usage.vms_bytes),
            network_rx_bytes: int(traffic.rx_bytes()),
            network_tx_bytes: int(traffic.tx_bytes()),
            allocated_vcpus: i64::from(record.vcpus),
            allocated_memory_bytes: int(allocated),
            memory_utilization_ratio: (allocated > 0)
                .then(|| usage.rss_bytes as f64 / allocated as f64),
        })
    }

    /// An instance's recent samples (`GET /instances/{id}/stats/history`).
    pub fn stats_history(&self, id_or_name: &str) -> Result<StatsHistory, EngineError> {
        let record = self.resolve(id_or_name)?;
        Ok(self.history_of(&record, KEEP))
    }

    fn history_of(&self, record: &InstanceRecord, n: usize) -> StatsHistory {
        StatsHistory {
            instance_id: record.id.clone(),
            instance_name: record.name.clone(),
            interval_ms: INTERVAL.as_millis() as u64,
            allocated_vcpus: i64::from(record.vcpus),
            allocated_memory_bytes: int(allocated_memory(record)),
            samples: self.samples.last(&record.id, n),
        }
    }

    /// The host and every instance with a VMM (`GET /stats`).
    pub fn fleet_stats(&self) -> Result<FleetStats, EngineError> {
        let running = self.runtime.running_ids();
        let mut instances = Vec::new();
        let (mut rss, mut allocated) = (0u64, 0u64);
        for id in &running {
            let Some(record) = self.records.get(id)? else {
                continue;
            };
            let history = self.history_of(&record, FLEET_KEEP);
            rss += history.samples.last().map_or(0, |s| s.memory_rss_bytes);
            allocated += allocated_memory(&record);
            instances.push(history);
        }
        instances.sort_by(|a, b| a.instance_name.cmp(&b.instance_name));
        Ok(FleetStats {
            host_memory_bytes: crate::resources::mem_total(),
            host_cpus: std::thread::available_parallelism().map_or(1, |n| n.get() as u64),
            guest_memory_rss_bytes: rss,
            guest_memory_allocated_bytes: allocated,
            instances,
        })
    }

    /// Takes one sample of every VM.
    pub async fn sample_stats(&self) {
        let running = self.runtime.running_ids();
        self.samples.retain(&running);
        for id in &running {
            let Some(vm) = self.runtime.vm(id) else {
                continue;
            };
            if !vm.is_alive().await {
                continue;
            }
            let Some(usage) = vm
                .process_id()
                .and_then(hypedeck_hypervisor::process::usage)
            else {
                continue;
            };
            let disk = vm.disk_io().await.unwrap_or_default();
            let traffic = self.networks.traffic(id);
            self.samples.push(
                id,
                StatsSample {
                    at_ms: hypedeck_netstack::now_ms(),
                    cpu_seconds: usage.cpu_seconds,
                    memory_rss_bytes: usage.rss_bytes,
                    network_rx_bytes: traffic.rx_bytes(),
                    network_tx_bytes: traffic.tx_bytes(),
                    disk_read_bytes: disk.read_bytes,
                    disk_write_bytes: disk.write_bytes,
                },
            );
        }
    }

    /// Samples every [`INTERVAL`] for as long as the engine lives (the daemon starts it).
    pub fn spawn_stats_sampler(self: &Arc<Self>) -> tokio::task::JoinHandle<()> {
        let engine = Arc::downgrade(self);
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(INTERVAL);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tick.tick().await;
                let Some(engine) = engine.upgrade() else {
                    return;
                };
                engine.sample_stats().await;
            }
        })
    }
}
