//! QEMU backend. `config.rs` will turn a `VmSpec` into argv (pure, snapshot-tested),
//! `process.rs` will spawn QEMU detached with a pidfile and QMP socket, and `client.rs` will
//! speak QMP. Until then this crate reports what it will support so the engine can say so.

use hypedeck_hypervisor::Capabilities;

/// What the QEMU backend will support on Linux (q35 board).
pub const CAPABILITIES: Capabilities = Capabilities {
    snapshot: true,
    pause: true,
    hotplug_memory: true,
    disk_io_limit: true,
    graceful_shutdown: true,
    vsock: true,
    gpu: false,
};
