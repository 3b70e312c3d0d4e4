//! `GET /resources`: host capacity, oversubscription and what instances reserve.

use hypedeck_model::{DiskBreakdown, InstanceState, ResourceAllocation, ResourceStatus, Resources};

use crate::{Engine, EngineError};

/// Upstream's default oversubscription ratios.
const CPU_RATIO: f64 = 4.0;
const MEMORY_RATIO: f64 = 1.0;
const DISK_RATIO: f64 = 1.0;
const NETWORK_RATIO: f64 = 2.0;

fn status(kind: &str, capacity: u64, allocated: u64, ratio: f64, source: &str) -> ResourceStatus {
    let capacity = i64::try_from(capacity).unwrap_or(i64::MAX);
    let allocated = i64::try_from(allocated).unwrap_or(i64::MAX);
    let effective_limit = (capacity as f64 * ratio) as i64;
    ResourceStatus {
        kind: kind.to_string(),
        capacity,
        effective_limit,
        allocated,
        available: (effective_limit - allocated).max(0),
        oversub_ratio: ratio,
        source: Some(source.to_string()),
    }
}

/// The host's `MemTotal` and `MemAvailable` in bytes (`/proc/meminfo`; zeros where there is
/// none).
pub(crate) fn host_memory() -> (u64, u64) {
    let text = std::fs::read_to_string("/proc/meminfo").unwrap_or_default();
    let field = |name: &str| {
        text.lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
            .map_or(0, |kb| kb * 1024)
    };
    (field("MemTotal:"), field("MemAvailable:"))
}

pub(crate) fn mem_total() -> u64 {
    host_memory().0
}

/// Bytes of the filesystem holding `path` (via `df`, which every Linux and macOS host has).
fn disk_total(path: &std::path::Path) -> u64 {
    std::process::Command::new("df")
        .args(["-Pk"])
        .arg(path)
        .output()
        .ok()
        .and_then(|o| {
            let text = String::from_utf8_lossy(&o.stdout).into_owned();
            text.lines()
                .nth(1)
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|k| k.parse::<u64>().ok())
        })
        .map(|kb| kb * 1024)
        .unwrap_or(0)
}

/// How [`dir_bytes`] counts a file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Measure {
    /// The blocks it holds on disk (a sparse file counts its data).
    Allocated,
    /// Its length.
    Apparent,
}

/// The size of everything under `dir`, counted by `measure`.
pub(crate) fn dir_bytes(dir: &std::path::Path, measure: Measure) -> u64 {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return 0;
    };
    entries
        .flatten()
        .map(|e| {
            let path = e.path();
            match e.metadata() {
                Ok(m) if m.is_dir() => dir_bytes(&path, measure),
                #[cfg(unix)]
                Ok(m) if measure == Measure::Allocated => {
                    std::os::unix::fs::MetadataExt::blocks(&m) * 512
                }
                Ok(m) => m.len(),
                Err(_) => 0,
            }
        })
        .sum()
}

impl Engine {
    /// Host capacity and reservations of active instances.
    pub async fn resources(&self) -> Result<Resources, EngineError> {
        let mut allocations = Vec::new();
        let (mut cpu, mut mem, mut disk, mut net) = (0u64, 0u64, 0u64, 0u64);
        for mut record in self.records()? {
            let observed = self.observe(&mut record).await;
            disk += record.overlay_bytes;
            let active = matches!(
                observed.state,
                InstanceState::Running
                    | InstanceState::Initializing
                    | InstanceState::Paused
                    | InstanceState::Created
            );
            if !active {
                continue;
            }
            cpu += u64::from(record.vcpus);
            mem += record.memory_bytes + record.hotplug_bytes;
            net += record
                .network
                .bandwidth_download_bps
                .max(record.network.bandwidth_upload_bps);
            allocations.push(ResourceAllocation {
                instance_id: record.id.clone(),
                instance_name: record.name.clone(),
                cpu: i64::from(record.vcpus),
                memory_bytes: (record.memory_bytes + record.hotplug_bytes) as i64,
                disk_bytes: record.overlay_bytes as i64,
                network_download_bps: record.network.bandwidth_download_bps as i64,
                network_upload_bps: record.network.bandwidth_upload_bps as i64,
                disk_io_bps: record.disk_io_bps as i64,
            });
        }
        let threads = std::thread::available_parallelism()
            .map(|n| n.get() as u64)
            .unwrap_or(1);
        let images_bytes = dir_bytes(&self.paths.images(), Measure::Allocated);
        let breakdown = DiskBreakdown {
            images_bytes: images_bytes as i64,
            oci_cache_bytes: 0,
            volumes_bytes: 0,
            overlays_bytes: dir_bytes(&self.paths.instances(), Measure::Allocated) as i64,
        };
        Ok(Resources {
            cpu: status("cpu", threads, cpu, CPU_RATIO, "host"),
            memory: status("memory", mem_total(), mem, MEMORY_RATIO, "host"),
            disk: status(
                "disk",
                disk_total(self.paths.root()),
                disk + images_bytes,
                DISK_RATIO,
                "data dir filesystem",
            ),
            network: status(
                "network",
                0,
                net,
                NETWORK_RATIO,
                "unlimited (user-mode networking)",
            ),
            disk_breakdown: Some(breakdown),
            allocations,
        })
    }
}
