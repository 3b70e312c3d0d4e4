//! Apple Virtualization.framework backend. The plan-building logic (VmSpec -> a VZ
//! configuration plan) is pure and tested on every OS; the objc2 calls that execute a plan
//! compile only on macOS. Lands with the backends issue.

use hypedeck_hypervisor::Capabilities;

/// What vz supports (snapshots only on arm64 hosts).
pub const CAPABILITIES: Capabilities = Capabilities {
    snapshot: cfg!(target_arch = "aarch64"),
    pause: true,
    hotplug_memory: false,
    disk_io_limit: false,
    graceful_shutdown: true,
    vsock: true,
    gpu: false,
    port_forwarding: false,
    egress_enforcement: false,
};
