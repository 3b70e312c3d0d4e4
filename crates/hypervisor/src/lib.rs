//! The hypervisor boundary. A backend crate implements [`Hypervisor`] (a factory that starts or
//! re-attaches VMs) and [`Vm`] (control of one running VMM). Nothing here knows QEMU, Cloud
//! Hypervisor or vz; the engine only sees these traits.
//!
//! Contracts every backend keeps:
//! - a VMM is a detached process that outlives the engine; its control socket and pidfile live
//!   in the instance's runtime directory, so [`Hypervisor::attach`] can find it again;
//! - optional operations are gated by [`Capabilities`]; an unsupported call returns
//!   [`HypervisorError::Unsupported`], never panics;
//! - every method is safe to cancel: dropping the future leaves the VMM in a state that
//!   [`Vm::state`] reports truthfully.

#[cfg(unix)]
pub mod process;

use std::path::PathBuf;

use hypedeck_model::HypervisorKind;

/// Optional operations a backend supports.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize)]
pub struct Capabilities {
    /// Save and restore full VM state (standby/restore).
    pub snapshot: bool,
    /// Pause and resume vCPUs.
    pub pause: bool,
    /// Memory hotplug beyond the boot size.
    pub hotplug_memory: bool,
    /// Per-disk I/O throttling.
    pub disk_io_limit: bool,
    /// Ask the guest to power off (ACPI or agent) before killing.
    pub graceful_shutdown: bool,
    /// Host<->guest vsock.
    pub vsock: bool,
    /// PCI/GPU passthrough.
    pub gpu: bool,
    /// Guest ports forwarded to host loopback ([`NetSpec::host_forwards`]).
    pub port_forwarding: bool,
    /// Egress can be confined to [`NetSpec::guest_forwards`] ([`NetSpec::restrict`]), which the
    /// credential-injecting proxy relies on.
    pub egress_enforcement: bool,
    /// VMs start from templates: a booted VM saved once, whose memory the VMs started from it
    /// share copy-on-write ([`Hypervisor::template_key`]).
    pub templates: bool,
    /// Disks are attached to and detached from running VMs ([`Vm::attach_disk`]); disks with
    /// a [`DiskSpec::serial`] show it to the guest (`/sys/block/vdX/serial`).
    pub hotplug_disks: bool,
}

/// How the guest NIC's frames reach the engine ([`Vm::network_link`]).
#[derive(Debug)]
pub enum NetworkLink {
    /// A Unix stream socket the VMM listens on, carrying frames with a 4-byte big-endian
    /// length before each (QEMU `-netdev stream`). The engine connects (again, after a
    /// restart).
    Stream(PathBuf),
    /// A connected datagram socket, one Ethernet frame per datagram: the other end is the
    /// guest NIC (vz's `VZFileHandleNetworkDeviceAttachment`, handed over by the helper).
    Datagram(std::os::fd::OwnedFd),
    /// A Unix socket on which the engine serves vhost-user-net and the VMM connects (Cloud
    /// Hypervisor). The VMM connects while it boots or restores, so the engine serves it
    /// before [`Hypervisor::start`] ([`Hypervisor::network_before_start`]).
    VhostUser(PathBuf),
}

/// Bytes a guest moved through its virtual disks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize)]
pub struct DiskIo {
    /// Read by the guest.
    pub read_bytes: u64,
    /// Written by the guest.
    pub write_bytes: u64,
}

/// What the VMM itself reports (before boot markers refine Running into Initializing).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum VmmState {
    /// Created, not booted.
    Created,
    /// vCPUs running.
    Running,
    /// vCPUs paused.
    Paused,
    /// Guest powered off, VMM still alive.
    Shutdown,
}

/// One disk of a VM.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DiskSpec {
    /// Image file on the host.
    pub path: PathBuf,
    /// Attach read-only.
    pub readonly: bool,
    /// Sustained I/O limit in bytes per second (0 = none).
    pub io_bps: u64,
    /// What the guest reads in `/sys/block/vdX/serial` (at most 20 ASCII letters and digits),
    /// by which it finds a disk attached while it runs. Backends with
    /// [`Capabilities::hotplug_disks`] show it and name the disk by it.
    pub serial: Option<String>,
}

/// User-mode (unprivileged) networking of one VM.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NetSpec {
    /// Guest MAC address.
    pub mac: String,
    /// The VM's private subnet, e.g. `10.100.7.0/24`.
    pub subnet: String,
    /// The gateway (the host, as the guest sees it).
    pub gateway: String,
    /// The DNS forwarder address inside the subnet.
    pub dns: String,
    /// Guest IP (configured by guest init, reported by the API).
    pub guest_ip: String,
    /// Forbid direct egress: the only way out is `guest_forwards`.
    pub restrict: bool,
    /// `guest_addr:port` -> a host command run per guest connection with the connection on
    /// its stdin/stdout (e.g. the bridge to the egress proxy).
    pub guest_forwards: Vec<(String, String)>,
    /// Guest ports the host reaches on `127.0.0.1:<host_port>`.
    pub host_forwards: Vec<hypedeck_model::PortForward>,
}

/// How the host reaches the exec agent of one VM. Backends choose; the engine connects.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AgentChannel {
    /// A unix socket the VMM bridges to the guest's `hypedeck.agent` virtio-serial port.
    Serial(PathBuf),
    /// Hybrid vsock (Firecracker, Cloud Hypervisor, vhost-user-vsock, the vz helper): a unix
    /// socket on which the host writes `CONNECT <port>\n` and reads `OK <n>\n`.
    HybridVsock {
        /// The VMM's vsock unix socket.
        socket: PathBuf,
        /// Guest vsock port.
        port: u32,
    },
    /// Kernel vsock (`/dev/vhost-vsock`): `AF_VSOCK` to the guest's CID.
    Vsock {
        /// Guest context id.
        cid: u32,
        /// Guest vsock port.
        port: u32,
    },
}

/// Everything a backend needs to boot one VM. Built by the engine from validated values only.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VmSpec {
    /// Instance id (also names sockets and pidfiles).
    pub instance_id: String,
    /// Runtime directory for sockets, pidfile and logs.
    pub runtime_dir: PathBuf,
    /// Virtual CPUs.
    pub vcpus: u32,
    /// Boot memory in bytes.
    pub memory_bytes: u64,
    /// Hotplug memory in bytes.
    pub hotplug_bytes: u64,
    /// Guest kernel.
    pub kernel: PathBuf,
    /// Initramfs.
    pub initrd: PathBuf,
    /// Kernel command line.
    pub kernel_args: String,
    /// Disks in attach order (rootfs, overlay, config, volumes).
    pub disks: Vec<DiskSpec>,
    /// Serial console log.
    pub serial_log: PathBuf,
    /// Network, if any.
    pub network: Option<NetSpec>,
    /// Guest vsock context id, unique among this engine's VMs (>= 3). Backends with vsock
    /// give the guest this CID; the agent listens on `agent_proto::AGENT_VSOCK_PORT`.
    pub vsock_cid: u32,
}

/// Errors crossing the hypervisor boundary.
#[derive(Debug, thiserror::Error)]
pub enum HypervisorError {
    /// The backend cannot do this at all.
    #[error("{operation} is not supported by the {kind} backend")]
    Unsupported {
        /// Backend.
        kind: HypervisorKind,
        /// Operation name.
        operation: &'static str,
    },
    /// Starting the VMM process failed.
    #[error("start vmm")]
    Start(#[source] std::io::Error),
    /// Talking to the VMM failed.
    #[error("query vmm: {0}")]
    Query(String),
    /// The VMM refused or failed an operation.
    #[error("{operation} failed: {detail}")]
    Operation {
        /// Operation name.
        operation: &'static str,
        /// The VMM's answer.
        detail: String,
    },
}

/// A factory for VMs of one backend.
#[async_trait::async_trait]
pub trait Hypervisor: Send + Sync + std::fmt::Debug {
    /// Which backend this is.
    fn kind(&self) -> HypervisorKind;

    /// Optional operations supported.
    fn capabilities(&self) -> Capabilities;

    /// The link the engine must serve before [`Hypervisor::start`] or
    /// [`Hypervisor::restore`] of `spec` (the VMM connects to it while it boots). `None`: the
    /// engine attaches after the start, with [`Vm::network_link`].
    fn network_before_start(&self, _spec: &VmSpec) -> Option<NetworkLink> {
        None
    }

    /// Boots a new VM. Not idempotent: the caller holds the instance lock and has checked that
    /// no VMM is running for `spec.instance_id`. On error nothing is left running.
    async fn start(&self, spec: &VmSpec) -> Result<Box<dyn Vm>, HypervisorError>;

    /// Finds the VMM of an instance again (after an engine restart). `Ok(None)` means no VMM
    /// is alive for that runtime directory. Idempotent and read-only.
    async fn attach(
        &self,
        instance_id: &str,
        runtime_dir: &std::path::Path,
    ) -> Result<Option<Box<dyn Vm>>, HypervisorError>;

    /// Starts a VMM from state saved by [`Vm::save_and_exit`] with the same `spec` (same
    /// disks), and resumes it. Not idempotent; the caller holds the instance lock. On error
    /// nothing is left running and the saved state is untouched.
    async fn restore(
        &self,
        spec: &VmSpec,
        dir: &std::path::Path,
    ) -> Result<Box<dyn Vm>, HypervisorError>;

    /// Names the template a VM of `spec` can start from: equal keys mean the same device
    /// model, memory size, kernel, initramfs, root disk and VMM, so a template made for one
    /// spec serves the other. `None`: `spec` cannot start from a template (volumes, hotplug
    /// memory, or a backend without [`Capabilities::templates`]).
    async fn template_key(&self, _spec: &VmSpec) -> Option<String> {
        None
    }

    /// Boots `spec` as a template into `dir`: the guest stops before reading its config disk
    /// (`spec`'s must be all zeroes), and the VM is saved there and ended. Nothing of any
    /// instance is in it. On error nothing is left running.
    async fn make_template(
        &self,
        _spec: &VmSpec,
        _dir: &std::path::Path,
    ) -> Result<(), HypervisorError> {
        Err(HypervisorError::Unsupported {
            kind: self.kind(),
            operation: "templates",
        })
    }

    /// Starts `spec` from the template in `dir` (made for a spec with the same
    /// [`Hypervisor::template_key`]) and resumes it: the guest reads `spec`'s config disk and
    /// boots on as a cold boot does. On error nothing is left running.
    async fn start_from_template(
        &self,
        _spec: &VmSpec,
        _dir: &std::path::Path,
    ) -> Result<Box<dyn Vm>, HypervisorError> {
        Err(HypervisorError::Unsupported {
            kind: self.kind(),
            operation: "templates",
        })
    }
}

/// Control of one running VMM.
#[async_trait::async_trait]
pub trait Vm: Send + Sync + std::fmt::Debug {
    /// Current VMM state. Read-only; errors mean the state is unknown, not that the VM died.
    async fn state(&self) -> Result<VmmState, HypervisorError>;

    /// Asks the guest to power off. Returns once the request is delivered, not when the VMM
    /// exits. Idempotent.
    async fn request_shutdown(&self) -> Result<(), HypervisorError>;

    /// Kills the VMM process. Idempotent: killing a dead VMM succeeds.
    async fn kill(&self) -> Result<(), HypervisorError>;

    /// Whether the VMM process is still alive.
    async fn is_alive(&self) -> bool;

    /// The process whose CPU and memory are this VM's (the VMM, or the helper that hosts the
    /// framework's VM), for stats. `None`: not known.
    fn process_id(&self) -> Option<u32> {
        None
    }

    /// What the guest has read from and written to its disks since the VMM started. `None`:
    /// the backend does not count it.
    async fn disk_io(&self) -> Option<DiskIo> {
        None
    }

    /// The guest memory the balloon leaves the guest (its RAM minus the inflated balloon).
    /// `None`: no balloon.
    async fn memory_target(&self) -> Option<u64> {
        None
    }

    /// Inflates or deflates the balloon so the guest keeps `bytes` of its RAM; returns once
    /// the request is delivered (the guest gives pages back at its own pace).
    async fn set_memory_target(&self, _bytes: u64) -> Result<(), HypervisorError> {
        Err(HypervisorError::Operation {
            operation: "balloon",
            detail: "this VM has no balloon".into(),
        })
    }

    /// Attaches `disk` (which has a [`DiskSpec::serial`]) to the running VM; returns once the
    /// VMM has the device (the guest sees it shortly after). Its saves are restored with it
    /// when the restore's spec lists it. Requires [`Capabilities::hotplug_disks`].
    async fn attach_disk(&self, _disk: &DiskSpec) -> Result<(), HypervisorError> {
        Err(HypervisorError::Operation {
            operation: "attach disk",
            detail: "this backend cannot attach disks to a running VM".into(),
        })
    }

    /// Detaches the disk with `serial` (attached at boot or by [`Vm::attach_disk`]); returns
    /// once the guest let it go and the VMM removed it.
    async fn detach_disk(&self, _serial: &str) -> Result<(), HypervisorError> {
        Err(HypervisorError::Operation {
            operation: "detach disk",
            detail: "this backend cannot detach disks from a running VM".into(),
        })
    }

    /// Where the host reaches this VM's exec agent.
    fn agent_channel(&self) -> AgentChannel;

    /// How the guest NIC's frames reach the engine's userspace network stack. `None`: the
    /// backend wires the NIC itself. The engine asks again after a restart.
    async fn network_link(&self) -> Result<Option<NetworkLink>, HypervisorError> {
        Ok(None)
    }

    /// Pauses the VM, saves its full state (memory and devices) into `dir`, and ends the VMM.
    /// On success the VMM is gone and `dir` holds what [`Hypervisor::restore`] needs; on
    /// failure the VM is resumed when possible. Requires [`Capabilities::snapshot`].
    async fn save_and_exit(&self, dir: &std::path::Path) -> Result<(), HypervisorError>;
}
