//! Cloud Hypervisor backend.
//!
//! - `config.rs`: `VmSpec` -> the `vm.create` body (`VmConfig`, pure, snapshot-tested):
//!   virtio-blk disks with optional token-bucket throttling, a vhost-user virtio-net,
//!   virtio-mem hotplug, virtio-rng, the serial port as the console, and a hybrid-vsock
//!   device whose unix socket (`vsock.sock` in the runtime dir) reaches the exec agent.
//! - `process.rs`: `cloud-hypervisor --api-socket` runs detached in its own process group
//!   with our pidfile, so it outlives the engine; liveness is read from `/proc` (zombies
//!   count as dead, pid reuse is ruled out by the command line). The serial port writes into
//!   a FIFO that a detached `cat` appends to the instance's `app.log` (Cloud Hypervisor
//!   truncates a serial file on every boot and restore; boot markers must survive).
//! - `client.rs`: the REST API, one HTTP/1.1 request per connection over the API socket.
//! - The network: the guest NIC is a vhost-user-net device on `net.sock` in the runtime dir,
//!   served by the engine's network stack before the VMM boots
//!   ([`Hypervisor::network_before_start`]); guest memory is shared (memfd) so the backend
//!   can reach the queues. No TAP, no privilege; forwarded ports and egress are the stack's.
//!
//! Invariant: every VMM this crate starts is either handed to the caller as a
//! [`CloudHypervisorVm`] or killed (with its serial pump) before the error returns.

pub mod client;
pub mod config;
mod process;

#[cfg(test)]
mod fake_api;

use std::path::{Path, PathBuf};
use std::time::Duration;

use hypedeck_hypervisor::{
    AgentChannel, Capabilities, Hypervisor, HypervisorError, NetworkLink, Vm, VmSpec, VmmState,
};
use hypedeck_model::HypervisorKind;

pub use client::Client;
pub use config::{RuntimeFiles, VmConfig, vm_config};

/// What Cloud Hypervisor supports here. No GPU: passthrough is not wired (no device in
/// `VmSpec`). Forwarded ports and egress confinement are the engine's network stack's, on
/// the vhost-user NIC's frames.
pub const CAPABILITIES: Capabilities = Capabilities {
    snapshot: true,
    pause: true,
    hotplug_memory: true,
    disk_io_limit: true,
    graceful_shutdown: true,
    vsock: true,
    gpu: false,
    port_forwarding: true,
    egress_enforcement: true,
    templates: false,
    hotplug_disks: false,
};

/// Environment variable naming the `cloud-hypervisor` binary.
pub const BINARY_ENV: &str = "HYPEDECK_CLOUD_HYPERVISOR";

/// How to get Cloud Hypervisor (part of every "not found" error).
pub const INSTALL_HINT: &str = "download the static binary from \
https://github.com/cloud-hypervisor/cloud-hypervisor/releases, put it on PATH or set \
HYPEDECK_CLOUD_HYPERVISOR";

/// The file a snapshot dir holds when [`Vm::save_and_exit`] succeeded (Cloud Hypervisor
/// writes `config.json`, `state.json` and `memory-ranges`).
pub const SNAPSHOT_FILE: &str = "config.json";

const SNAPSHOT_FILES: [&str; 3] = ["config.json", "state.json", "memory-ranges"];

/// The Cloud Hypervisor hypervisor factory.
#[derive(Debug, Clone)]
pub struct CloudHypervisor {
    binary: PathBuf,
}

impl CloudHypervisor {
    /// Finds `cloud-hypervisor` (`$HYPEDECK_CLOUD_HYPERVISOR`, else on `PATH`) and checks
    /// that KVM is usable. Errors say what to install or fix.
    pub fn detect() -> Result<CloudHypervisor, String> {
        let configured = std::env::var_os(BINARY_ENV)
            .filter(|v| !v.is_empty())
            .map(PathBuf::from);
        CloudHypervisor::detect_with(configured.as_deref())
    }

    /// Like [`CloudHypervisor::detect`] with an explicit binary (`None`: search `PATH`).
    pub fn detect_with(binary: Option<&Path>) -> Result<CloudHypervisor, String> {
        if !cfg!(target_os = "linux") {
            return Err("Cloud Hypervisor needs Linux with KVM".into());
        }
        let binary = find_binary(binary, std::env::var_os("PATH").as_deref())?;
        check_kvm(Path::new("/dev/kvm"))?;
        Ok(CloudHypervisor { binary })
    }

    /// Uses `binary` without any check (the caller checked, or a test stands in for it).
    pub fn with_binary(binary: impl Into<PathBuf>) -> CloudHypervisor {
        CloudHypervisor {
            binary: binary.into(),
        }
    }

    /// The `cloud-hypervisor` binary in use.
    pub fn binary(&self) -> &Path {
        &self.binary
    }

    /// Spawns a VMM for `spec` and either boots it fresh (`from: None`) or restores it from
    /// a snapshot dir and resumes it. On error nothing is left running.
    async fn launch(
        &self,
        spec: &VmSpec,
        from: Option<&Path>,
    ) -> Result<CloudHypervisorVm, HypervisorError> {
        std::fs::create_dir_all(&spec.runtime_dir).map_err(HypervisorError::Start)?;
        let files = RuntimeFiles::in_dir(&spec.runtime_dir);
        let spawned = async {
            process::start_serial_pump(&files, &spec.serial_log).await?;
            process::spawn(&self.binary, &files).await
        }
        .await;
        let pid = match spawned {
            Ok(pid) => pid,
            Err(e) => {
                process::stop_serial_pump(&files).await;
                return Err(e);
            }
        };
        let vm = CloudHypervisorVm {
            client: Client::new(&files.api),
            files,
            pid,
            dir: spec.runtime_dir.clone(),
        };
        let ready = match from {
            None => {
                let config = vm_config(spec);
                match vm.client.create(&config).await {
                    Ok(()) => vm.client.boot().await,
                    Err(e) => Err(e),
                }
            }
            Some(dir) => match vm.client.restore(dir).await {
                Ok(()) => vm.client.resume().await,
                Err(e) => Err(e),
            },
        };
        if let Err(e) = ready {
            let _ = vm.kill().await;
            return Err(e);
        }
        Ok(vm)
    }
}

/// The binary: an explicit path must be a file; otherwise `cloud-hypervisor` on `path`.
fn find_binary(explicit: Option<&Path>, path: Option<&std::ffi::OsStr>) -> Result<PathBuf, String> {
    if let Some(binary) = explicit
        && binary.components().count() > 1
    {
        return if binary.is_file() {
            Ok(binary.to_path_buf())
        } else {
            Err(format!(
                "cloud-hypervisor was not found at {} ({BINARY_ENV}): {INSTALL_HINT}",
                binary.display()
            ))
        };
    }
    let name = explicit.unwrap_or(Path::new("cloud-hypervisor"));
    path.and_then(|p| {
        std::env::split_paths(p)
            .map(|d| d.join(name))
            .find(|c| c.is_file())
    })
    .ok_or_else(|| format!("{} was not found: {INSTALL_HINT}", name.display()))
}

/// Checks that `dev` (`/dev/kvm`) is a KVM this user can drive.
fn check_kvm(dev: &Path) -> Result<(), String> {
    let file = match std::fs::OpenOptions::new().read(true).write(true).open(dev) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return Err(format!(
                "Cloud Hypervisor needs KVM: {} does not exist (enable virtualization in the \
                 firmware, or nested virtualization when this is a VM, and load kvm_intel or \
                 kvm_amd)",
                dev.display()
            ));
        }
        Err(e) => {
            return Err(format!(
                "Cloud Hypervisor needs KVM: {} is not readable and writable by this user ({e}); \
                 add the user to the kvm group (`sudo usermod -aG kvm $USER`, then log in again)",
                dev.display()
            ));
        }
    };
    kvm_api_ok(&file).map_err(|why| {
        format!(
            "Cloud Hypervisor needs KVM: {} does not work ({why})",
            dev.display()
        )
    })
}

/// `KVM_GET_API_VERSION` must answer 12 and `KVM_CREATE_VM` must succeed.
#[cfg(target_os = "linux")]
fn kvm_api_ok(file: &std::fs::File) -> Result<(), String> {
    use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
    const KVM_GET_API_VERSION: libc::Ioctl = 0xAE00;
    const KVM_CREATE_VM: libc::Ioctl = 0xAE01;
    // SAFETY: argument-less ioctl on an fd we own.
    #[allow(unsafe_code)]
    let version = unsafe { libc::ioctl(file.as_raw_fd(), KVM_GET_API_VERSION, 0) };
    if version != 12 {
        return Err(format!(
            "KVM_GET_API_VERSION: {}",
            if version < 0 {
                std::io::Error::last_os_error().to_string()
            } else {
                format!("version {version}, expected 12")
            }
        ));
    }
    // SAFETY: KVM_CREATE_VM takes the machine type by value and returns a new fd.
    #[allow(unsafe_code)]
    let vm = unsafe { libc::ioctl(file.as_raw_fd(), KVM_CREATE_VM, 0) };
    if vm < 0 {
        return Err(format!(
            "KVM_CREATE_VM: {}",
            std::io::Error::last_os_error()
        ));
    }
    // SAFETY: `vm` is a fresh fd returned by the kernel; owning it closes it.
    #[allow(unsafe_code)]
    drop(unsafe { OwnedFd::from_raw_fd(vm) });
    Ok(())
}

#[cfg(not(target_os = "linux"))]
fn kvm_api_ok(_file: &std::fs::File) -> Result<(), String> {
    Err("KVM needs Linux".into())
}

#[async_trait::async_trait]
impl Hypervisor for CloudHypervisor {
    fn kind(&self) -> HypervisorKind {
        HypervisorKind::CloudHypervisor
    }

    fn capabilities(&self) -> Capabilities {
        CAPABILITIES
    }

    fn network_before_start(&self, spec: &VmSpec) -> Option<NetworkLink> {
        spec.network
            .as_ref()
            .map(|_| NetworkLink::VhostUser(RuntimeFiles::in_dir(&spec.runtime_dir).net))
    }

    async fn start(&self, spec: &VmSpec) -> Result<Box<dyn Vm>, HypervisorError> {
        Ok(Box::new(self.launch(spec, None).await?))
    }

    async fn attach(
        &self,
        _instance_id: &str,
        runtime_dir: &Path,
    ) -> Result<Option<Box<dyn Vm>>, HypervisorError> {
        Ok(CloudHypervisorVm::attach(runtime_dir).map(|vm| Box::new(vm) as Box<dyn Vm>))
    }

    async fn restore(&self, spec: &VmSpec, dir: &Path) -> Result<Box<dyn Vm>, HypervisorError> {
        if !dir.join(SNAPSHOT_FILE).is_file() {
            return Err(HypervisorError::Operation {
                operation: "restore",
                detail: "no saved state".into(),
            });
        }
        Ok(Box::new(self.launch(spec, Some(dir)).await?))
    }
}

/// One `cloud-hypervisor` process (and its serial pump).
#[derive(Debug)]
pub struct CloudHypervisorVm {
    files: RuntimeFiles,
    pid: u32,
    client: Client,
    dir: PathBuf,
}

impl CloudHypervisorVm {
    /// Finds the VMM of an instance from its runtime dir (`None` when none is alive).
    pub fn attach(runtime_dir: &Path) -> Option<CloudHypervisorVm> {
        let files = RuntimeFiles::in_dir(runtime_dir);
        let pid = process::read_pid(&files.pidfile)?;
        if !process::is_alive(pid, &files.api) {
            return None;
        }
        Some(CloudHypervisorVm {
            client: Client::new(&files.api),
            files,
            pid,
            dir: runtime_dir.to_path_buf(),
        })
    }

    /// The runtime dir.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The VMM's pid.
    pub fn pid(&self) -> u32 {
        self.pid
    }

    /// The VMM's REST API.
    pub fn client(&self) -> &Client {
        &self.client
    }

    /// Pauses the vCPUs (`vm.pause`).
    pub async fn pause(&self) -> Result<(), HypervisorError> {
        self.client.pause().await
    }

    /// Resumes the vCPUs (`vm.resume`).
    pub async fn resume(&self) -> Result<(), HypervisorError> {
        self.client.resume().await
    }

    /// Sets guest memory to `bytes` (`vm.resize desired_ram`), within boot memory plus the
    /// hotplug size. The guest onlines virtio-mem blocks itself.
    pub async fn resize_memory(&self, bytes: u64) -> Result<(), HypervisorError> {
        self.client.resize_memory(bytes).await
    }

    fn alive(&self) -> bool {
        process::is_alive(self.pid, &self.files.api)
    }
}

#[async_trait::async_trait]
impl Vm for CloudHypervisorVm {
    async fn state(&self) -> Result<VmmState, HypervisorError> {
        self.client.state().await
    }

    async fn request_shutdown(&self) -> Result<(), HypervisorError> {
        match self.client.power_button().await {
            Ok(()) => Ok(()),
            // Already powered off: the request is moot, which is what idempotent means here.
            Err(e @ HypervisorError::Operation { .. }) => match self.client.state().await {
                Ok(VmmState::Shutdown) => Ok(()),
                _ => Err(e),
            },
            Err(e) => {
                if self.alive() {
                    Err(e)
                } else {
                    Ok(())
                }
            }
        }
    }

    async fn kill(&self) -> Result<(), HypervisorError> {
        if self.alive() {
            let _ = self.client.shutdown_vmm(Duration::from_secs(1)).await;
            if !process::wait_dead(self.pid, &self.files.api, Duration::from_secs(2)).await {
                if self.alive() {
                    process::kill(self.pid);
                }
                if !process::wait_dead(self.pid, &self.files.api, Duration::from_secs(5)).await {
                    return Err(HypervisorError::Operation {
                        operation: "kill",
                        detail: format!("cloud-hypervisor (pid {}) survived SIGKILL", self.pid),
                    });
                }
            }
        }
        process::reap(self.pid);
        for stale in [&self.files.pidfile, &self.files.api, &self.files.vsock] {
            let _ = std::fs::remove_file(stale);
        }
        process::stop_serial_pump(&self.files).await;
        Ok(())
    }

    async fn is_alive(&self) -> bool {
        self.alive()
    }

    fn process_id(&self) -> Option<u32> {
        Some(self.pid)
    }

    async fn memory_target(&self) -> Option<u64> {
        let info = self.client.info().await.ok()?;
        info.pointer("/config/balloon")?;
        info.get("memory_actual_size")?.as_u64()
    }

    async fn set_memory_target(&self, bytes: u64) -> Result<(), HypervisorError> {
        let info = self.client.info().await?;
        if info.pointer("/config/balloon").is_none_or(|b| b.is_null()) {
            return Err(HypervisorError::Operation {
                operation: "balloon",
                detail: "this VM has no balloon (saved before VMs had one)".into(),
            });
        }
        // The guest's RAM now (boot size plus what was hotplugged), less what it keeps.
        let ram = info
            .pointer("/config/memory/size")
            .and_then(|v| v.as_u64())
            .unwrap_or(0)
            + info
                .pointer("/config/memory/hotplugged_size")
                .and_then(|v| v.as_u64())
                .unwrap_or(0);
        self.client.resize_balloon(ram.saturating_sub(bytes)).await
    }

    fn agent_channel(&self) -> AgentChannel {
        AgentChannel::HybridVsock {
            socket: self.files.vsock.clone(),
            port: hypedeck_guest_init::agent_proto::AGENT_VSOCK_PORT,
        }
    }

    async fn network_link(&self) -> Result<Option<NetworkLink>, HypervisorError> {
        // Cloud Hypervisor reconnects to the backend when it goes away (an engine restart).
        Ok(Some(NetworkLink::VhostUser(self.files.net.clone())))
    }

    async fn save_and_exit(&self, dir: &Path) -> Result<(), HypervisorError> {
        let fail = |detail: String| HypervisorError::Operation {
            operation: "save state",
            detail,
        };
        std::fs::create_dir_all(dir).map_err(|e| fail(e.to_string()))?;
        let paused_here = match self.client.state().await? {
            VmmState::Running => {
                self.client.pause().await.map_err(|e| fail(e.to_string()))?;
                true
            }
            VmmState::Paused => false,
            other => return Err(fail(format!("the VM is {other:?}, not running"))),
        };
        if let Err(e) = self.client.snapshot(dir).await {
            for f in SNAPSHOT_FILES {
                let _ = std::fs::remove_file(dir.join(f));
            }
            if paused_here {
                let _ = self.client.resume().await;
            }
            return Err(fail(e.to_string()));
        }
        self.kill().await
    }
}

#[cfg(test)]
mod tests;
