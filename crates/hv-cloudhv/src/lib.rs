//! Cloud Hypervisor backend: `config.rs` (VmSpec -> `vm.create` JSON), `process.rs` (spawn
//! `cloud-hypervisor --api-socket`, pidfile, reattach), `client.rs` (REST over the unix socket).
//! Lands with the backends issue; the capabilities are recorded here already.

use hypedeck_hypervisor::Capabilities;

/// What Cloud Hypervisor supports.
pub const CAPABILITIES: Capabilities = Capabilities {
    snapshot: true,
    pause: true,
    hotplug_memory: true,
    disk_io_limit: true,
    graceful_shutdown: true,
    vsock: true,
    gpu: true,
    port_forwarding: false,
    egress_enforcement: false,
};
