//! Resource use of instances: upstream's `InstanceStats` (`GET /instances/{id}/stats`), and
//! Hypedeck's history of it (`GET /instances/{id}/stats/history`, `GET /stats`).

use serde::{Deserialize, Serialize};

/// Upstream's `InstanceStats`: what the VMM process and the instance's network have used.
/// Counters are totals (the UI derives rates); zero when no VMM runs.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct InstanceStats {
    /// Instance id.
    pub instance_id: String,
    /// Instance name.
    pub instance_name: String,
    /// CPU time the VMM process used (all its threads), in seconds.
    pub cpu_seconds: f64,
    /// The VMM process's resident set size.
    pub memory_rss_bytes: i64,
    /// The VMM process's virtual memory size.
    pub memory_vms_bytes: i64,
    /// Bytes the guest received on its NIC.
    pub network_rx_bytes: i64,
    /// Bytes the guest sent from its NIC.
    pub network_tx_bytes: i64,
    /// vCPUs allocated.
    pub allocated_vcpus: i64,
    /// Memory allocated (size + hotplug size).
    pub allocated_memory_bytes: i64,
    /// RSS / allocated memory; present when allocated memory is above zero.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub memory_utilization_ratio: Option<f64>,
}

/// One sample of an instance's counters (Hypedeck extension).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct StatsSample {
    /// When (Unix milliseconds).
    pub at_ms: u64,
    /// CPU seconds of the VMM process (a total).
    pub cpu_seconds: f64,
    /// The VMM process's RSS.
    pub memory_rss_bytes: u64,
    /// Bytes the guest received (a total).
    pub network_rx_bytes: u64,
    /// Bytes the guest sent (a total).
    pub network_tx_bytes: u64,
    /// Bytes the guest read from its disks (a total).
    pub disk_read_bytes: u64,
    /// Bytes the guest wrote to its disks (a total).
    pub disk_write_bytes: u64,
}

/// An instance's recent samples, oldest first (Hypedeck extension).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StatsHistory {
    /// Instance id.
    pub instance_id: String,
    /// Instance name.
    pub instance_name: String,
    /// Time between samples.
    pub interval_ms: u64,
    /// vCPUs allocated (a CPU rate of this many seconds per second is 100%).
    pub allocated_vcpus: i64,
    /// Memory allocated.
    pub allocated_memory_bytes: i64,
    /// The samples, oldest first; empty while the instance has no VMM.
    pub samples: Vec<StatsSample>,
}

/// The host and every instance with a VMM, for the window's header and list (Hypedeck
/// extension, `GET /stats`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FleetStats {
    /// The host's memory.
    pub host_memory_bytes: u64,
    /// The host's logical CPUs.
    pub host_cpus: u64,
    /// Sum of the VMM processes' RSS.
    pub guest_memory_rss_bytes: u64,
    /// Sum of the memory allocated to instances with a VMM.
    pub guest_memory_allocated_bytes: u64,
    /// Each instance with a VMM: its recent samples (the last minute or so).
    pub instances: Vec<StatsHistory>,
}
