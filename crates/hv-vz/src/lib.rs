//! Apple Virtualization.framework backend.
//!
//! Every VM runs in its own `hypedeck-vz` helper process (`src/bin/hypedeck-vz.rs`, signed with
//! the `com.apple.security.virtualization` entitlement), so VMs outlive the app. This crate
//! is the backend's host side, and it is plain Rust on every OS:
//!
//! - `plan.rs`: `VmSpec` -> [`VzPlan`] (pure, snapshot-tested): Linux boot loader with
//!   `console=hvc0`, virtio block disks, the virtio console appended to the app log, vsock,
//!   entropy, a memory balloon, and a NIC on a datagram socket pair
//!   (`VZFileHandleNetworkDeviceAttachment`) whose other end the engine's network stack
//!   reads. Refuses memory hotplug and disk I/O limits ([`HypervisorError::Unsupported`]).
//! - `control.rs`: the line protocol to the helper (`state`, `pause`, `resume`,
//!   `request-stop`, `stop`, `save <path>`, `network` -> `ok <state>` / `err <message>`;
//!   `network`'s answer carries the frame socket's descriptor).
//! - `vsock.rs`: the helper's hybrid-vsock socket (`CONNECT <port>\n` -> `OK <port>\n`), the
//!   exec agent's transport.
//! - `pidfile.rs`: the helper holds a `flock` on its pidfile while it lives; that lock, not
//!   the pid, is what "alive" means.
//! - `process.rs`: spawn detached in its own process group, wait for the control socket.
//!
//! Only the helper binary calls Virtualization.framework (through `objc2-virtualization`);
//! off macOS it refuses to run, and [`VzHypervisor::detect`] says vz is unavailable. The
//! lifecycle is tested on Linux against a fake helper (`tests/lifecycle.rs`).

pub mod control;
pub mod pidfile;
pub mod plan;
mod process;
pub mod vsock;

use std::path::{Path, PathBuf};
use std::time::Duration;

use hypedeck_hypervisor::{
    AgentChannel, Capabilities, Hypervisor, HypervisorError, NetworkLink, Vm, VmSpec, VmmState,
};
use hypedeck_model::HypervisorKind;

pub use control::{ControlError, Request, Response, VmState};
pub use plan::{Launch, PlanError, RuntimeFiles, VzPlan};

/// What vz supports. Snapshots need an Apple silicon host and macOS 14 or later
/// ([`VzHypervisor::capabilities`] checks the version). Forwarded ports and egress confinement
/// are the engine's network stack's, on the NIC's frames. No memory hotplug or disk
/// throttling.
pub const CAPABILITIES: Capabilities = Capabilities {
    snapshot: cfg!(target_arch = "aarch64"),
    pause: true,
    hotplug_memory: false,
    disk_io_limit: false,
    graceful_shutdown: true,
    vsock: true,
    gpu: false,
    port_forwarding: true,
    egress_enforcement: true,
    templates: false,
    hotplug_disks: false,
};

/// Environment variable naming the helper binary (default: `hypedeck-vz` next to the
/// current executable).
pub const HELPER_ENV: &str = "HYPEDECK_VZ_HELPER";

/// The helper binary's file name.
pub const HELPER_BINARY: &str = "hypedeck-vz";

/// Time for the helper to boot a VM and open its control socket.
const START_TIMEOUT: Duration = Duration::from_secs(60);
/// Time for the helper to restore a saved state (reads all of guest memory).
const RESTORE_TIMEOUT: Duration = Duration::from_secs(300);
/// Time for an ordinary control request.
const CONTROL_TIMEOUT: Duration = Duration::from_secs(10);
/// Time for a save (writes all of guest memory).
const SAVE_TIMEOUT: Duration = Duration::from_secs(600);
/// Time for the helper to exit after `stop` or `save`.
const EXIT_TIMEOUT: Duration = Duration::from_secs(10);

/// The vz hypervisor factory.
#[derive(Debug, Clone)]
pub struct VzHypervisor {
    helper: PathBuf,
    capabilities: Capabilities,
}

impl VzHypervisor {
    /// Finds the helper. Errors say why vz cannot be used on this host.
    pub fn detect() -> Result<VzHypervisor, String> {
        if !cfg!(target_os = "macos") {
            return Err("Apple Virtualization.framework is only available on macOS".into());
        }
        let version = host::macos_version();
        if !version.at_least(12) {
            return Err(format!(
                "Apple Virtualization.framework needs macOS 12 or later (this is macOS {})",
                version.0
            ));
        }
        let helper = helper_path()?;
        if !helper.is_file() {
            return Err(format!(
                "the vz helper {} was not found (build it with `cargo build -p hypedeck-hv-vz \
                 --bin {HELPER_BINARY}`, sign it as crates/hv-vz/README.md says, or set \
                 {HELPER_ENV})",
                helper.display()
            ));
        }
        let mut capabilities = CAPABILITIES;
        capabilities.snapshot &= version.at_least(14);
        Ok(VzHypervisor {
            helper,
            capabilities,
        })
    }

    /// A backend using `helper` as is, without host checks (tests, custom layouts).
    pub fn with_helper(helper: PathBuf) -> VzHypervisor {
        VzHypervisor {
            helper,
            capabilities: CAPABILITIES,
        }
    }

    /// The helper binary in use.
    pub fn helper(&self) -> &Path {
        &self.helper
    }

    /// Plans `spec` and writes the plan into its runtime dir.
    fn prepare(&self, spec: &VmSpec) -> Result<VzPlan, HypervisorError> {
        let plan = plan::plan(spec).map_err(plan_error)?;
        std::fs::create_dir_all(&spec.runtime_dir).map_err(HypervisorError::Start)?;
        if pidfile::is_held(&plan.files.pidfile) {
            return Err(HypervisorError::Operation {
                operation: "start vz",
                detail: "a vz helper is already running for this instance".into(),
            });
        }
        let json = serde_json::to_vec_pretty(&plan).map_err(|e| HypervisorError::Operation {
            operation: "start vz",
            detail: format!("encode plan: {e}"),
        })?;
        write_atomic(&plan.files.plan, &json).map_err(HypervisorError::Start)?;
        Ok(plan)
    }
}

fn helper_path() -> Result<PathBuf, String> {
    if let Some(path) = std::env::var_os(HELPER_ENV).filter(|p| !p.is_empty()) {
        return Ok(PathBuf::from(path));
    }
    let exe = std::env::current_exe().map_err(|e| format!("locate the current executable: {e}"))?;
    let dir = exe
        .parent()
        .ok_or_else(|| format!("{} has no parent directory", exe.display()))?;
    Ok(dir.join(HELPER_BINARY))
}

/// Writes `bytes` to a temporary file next to `path`, syncs it and renames it into place.
fn write_atomic(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    use std::io::Write;
    let mut tmp = path.as_os_str().to_owned();
    tmp.push(".tmp");
    let tmp = PathBuf::from(tmp);
    let mut file = std::fs::File::create(&tmp)?;
    file.write_all(bytes)?;
    file.sync_all()?;
    std::fs::rename(&tmp, path)
}

fn plan_error(error: PlanError) -> HypervisorError {
    match error {
        PlanError::Unsupported { operation } => HypervisorError::Unsupported {
            kind: HypervisorKind::Vz,
            operation,
        },
        other => HypervisorError::Operation {
            operation: "configure vz vm",
            detail: other.to_string(),
        },
    }
}

/// `error` and its sources, joined with `: ` (for the string-only error variants).
fn chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

/// Host facts only macOS can answer.
mod host {
    /// The macOS major version (0 off macOS).
    #[derive(Debug, Clone, Copy)]
    pub struct MacosVersion(pub u32);

    impl MacosVersion {
        pub fn at_least(self, major: u32) -> bool {
            self.0 >= major
        }
    }

    #[cfg(target_os = "macos")]
    pub fn macos_version() -> MacosVersion {
        // `available!` compares against the running OS (cached after the first call).
        let major = if objc2::available!(macos = 15.0) {
            15
        } else if objc2::available!(macos = 14.0) {
            14
        } else if objc2::available!(macos = 13.0) {
            13
        } else if objc2::available!(macos = 12.0) {
            12
        } else {
            11
        };
        MacosVersion(major)
    }

    #[cfg(not(target_os = "macos"))]
    pub fn macos_version() -> MacosVersion {
        MacosVersion(0)
    }
}

#[async_trait::async_trait]
impl Hypervisor for VzHypervisor {
    fn kind(&self) -> HypervisorKind {
        HypervisorKind::Vz
    }

    fn capabilities(&self) -> Capabilities {
        self.capabilities
    }

    async fn start(&self, spec: &VmSpec) -> Result<Box<dyn Vm>, HypervisorError> {
        let plan = self.prepare(spec)?;
        let launch = Launch {
            plan: plan.files.plan.clone(),
            restore: None,
        };
        let pid = process::start(&self.helper, &launch, &plan.files, START_TIMEOUT).await?;
        Ok(Box::new(VzVm {
            files: plan.files,
            pid,
            dir: spec.runtime_dir.clone(),
        }))
    }

    async fn attach(
        &self,
        _instance_id: &str,
        runtime_dir: &Path,
    ) -> Result<Option<Box<dyn Vm>>, HypervisorError> {
        let files = RuntimeFiles::in_dir(runtime_dir);
        if !pidfile::is_held(&files.pidfile) {
            return Ok(None);
        }
        let pid = pidfile::read_pid(&files.pidfile).ok_or_else(|| {
            HypervisorError::Query(format!(
                "{} is locked by a live helper but holds no pid",
                files.pidfile.display()
            ))
        })?;
        Ok(Some(Box::new(VzVm {
            files,
            pid,
            dir: runtime_dir.to_path_buf(),
        })))
    }

    async fn restore(&self, spec: &VmSpec, dir: &Path) -> Result<Box<dyn Vm>, HypervisorError> {
        let state = dir.join(plan::STATE_FILE);
        let machine_id = dir.join(plan::MACHINE_ID_FILE);
        if !state.is_file() || !machine_id.is_file() {
            return Err(HypervisorError::Operation {
                operation: "restore",
                detail: format!("no saved vz state in {}", dir.display()),
            });
        }
        let plan = self.prepare(spec)?;
        // The restored VM must have the machine identifier the state was saved with.
        std::fs::copy(&machine_id, &plan.files.machine_id).map_err(HypervisorError::Start)?;
        let launch = Launch {
            plan: plan.files.plan.clone(),
            restore: Some(state),
        };
        let pid = process::start(&self.helper, &launch, &plan.files, RESTORE_TIMEOUT).await?;
        Ok(Box::new(VzVm {
            files: plan.files,
            pid,
            dir: spec.runtime_dir.clone(),
        }))
    }
}

/// One helper process (and its VM).
#[derive(Debug)]
pub struct VzVm {
    files: RuntimeFiles,
    pid: u32,
    dir: PathBuf,
}

impl VzVm {
    /// The runtime dir.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The helper's pid.
    pub fn pid(&self) -> u32 {
        self.pid
    }

    async fn control(&self, request: &Request, timeout: Duration) -> Result<VmState, ControlError> {
        control::request(&self.files.control, request, timeout).await
    }

    /// Waits until the helper has released its pidfile lock (exited).
    async fn wait_exit(&self, timeout: Duration) -> bool {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            process::reap(self.pid);
            if !pidfile::is_held(&self.files.pidfile) {
                return true;
            }
            if tokio::time::Instant::now() >= deadline {
                return false;
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
    }

    /// Removes what a dead helper may have left behind.
    fn remove_runtime_files(&self) {
        for file in [&self.files.control, &self.files.vsock, &self.files.pidfile] {
            let _ = std::fs::remove_file(file);
        }
    }
}

/// What the engine sees of a VZ state.
fn vmm_state(state: VmState) -> Result<VmmState, HypervisorError> {
    match state {
        VmState::Running => Ok(VmmState::Running),
        VmState::Paused | VmState::Pausing | VmState::Resuming | VmState::Saving => {
            Ok(VmmState::Paused)
        }
        VmState::Starting | VmState::Restoring => Ok(VmmState::Created),
        VmState::Stopped | VmState::Stopping => Ok(VmmState::Shutdown),
        VmState::Error => Err(HypervisorError::Query(
            "the vm stopped with an internal virtualization error".into(),
        )),
    }
}

#[async_trait::async_trait]
impl Vm for VzVm {
    async fn state(&self) -> Result<VmmState, HypervisorError> {
        let state = self
            .control(&Request::State, CONTROL_TIMEOUT)
            .await
            .map_err(|e| HypervisorError::Query(chain(&e)))?;
        vmm_state(state)
    }

    async fn request_shutdown(&self) -> Result<(), HypervisorError> {
        if !pidfile::is_held(&self.files.pidfile) {
            return Ok(());
        }
        match self.control(&Request::RequestStop, CONTROL_TIMEOUT).await {
            Ok(_) => Ok(()),
            // It exited meanwhile: the request is moot.
            Err(_) if !pidfile::is_held(&self.files.pidfile) => Ok(()),
            Err(e) => Err(HypervisorError::Operation {
                operation: "shutdown",
                detail: chain(&e),
            }),
        }
    }

    async fn kill(&self) -> Result<(), HypervisorError> {
        if pidfile::is_held(&self.files.pidfile) {
            // Ask first: the helper stops the VM and cleans up after itself.
            let _ = self.control(&Request::Stop, Duration::from_secs(2)).await;
            if !self.wait_exit(Duration::from_secs(2)).await {
                process::kill(self.pid);
                if !self.wait_exit(Duration::from_secs(2)).await {
                    return Err(HypervisorError::Operation {
                        operation: "kill",
                        detail: format!("helper {} survived SIGKILL", self.pid),
                    });
                }
            }
        }
        process::reap(self.pid);
        self.remove_runtime_files();
        Ok(())
    }

    async fn is_alive(&self) -> bool {
        pidfile::is_held(&self.files.pidfile)
    }

    fn process_id(&self) -> Option<u32> {
        Some(self.pid)
    }

    fn agent_channel(&self) -> AgentChannel {
        AgentChannel::HybridVsock {
            socket: self.files.vsock.clone(),
            port: hypedeck_guest_init::agent_proto::AGENT_VSOCK_PORT,
        }
    }

    async fn network_link(&self) -> Result<Option<NetworkLink>, HypervisorError> {
        let fd = control::network(&self.files.control, CONTROL_TIMEOUT)
            .await
            .map_err(|e| HypervisorError::Operation {
                operation: "attach the network",
                detail: chain(&e),
            })?;
        Ok(Some(NetworkLink::Datagram(fd)))
    }

    async fn save_and_exit(&self, dir: &Path) -> Result<(), HypervisorError> {
        let fail = |detail: String| HypervisorError::Operation {
            operation: "save state",
            detail,
        };
        std::fs::create_dir_all(dir).map_err(|e| fail(chain(&e)))?;
        let state = dir.join(plan::STATE_FILE);
        let machine_id = dir.join(plan::MACHINE_ID_FILE);
        let _ = std::fs::remove_file(&state);
        std::fs::copy(&self.files.machine_id, &machine_id)
            .map_err(|e| fail(format!("copy the machine identifier: {}", chain(&e))))?;
        if let Err(e) = self
            .control(&Request::Save(state.clone()), SAVE_TIMEOUT)
            .await
        {
            // The helper resumed the VM if it could; leave no half-written state behind.
            let _ = std::fs::remove_file(&state);
            let _ = std::fs::remove_file(&machine_id);
            return Err(fail(chain(&e)));
        }
        if !self.wait_exit(EXIT_TIMEOUT).await {
            tracing::warn!(
                pid = self.pid,
                "vz helper did not exit after saving; killing it"
            );
            process::kill(self.pid);
            self.wait_exit(Duration::from_secs(2)).await;
        }
        process::reap(self.pid);
        self.remove_runtime_files();
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn states_map_to_the_engine_view() {
        use VmState::*;
        let cases = [
            (Running, Some(VmmState::Running)),
            (Paused, Some(VmmState::Paused)),
            (Pausing, Some(VmmState::Paused)),
            (Resuming, Some(VmmState::Paused)),
            (Saving, Some(VmmState::Paused)),
            (Starting, Some(VmmState::Created)),
            (Restoring, Some(VmmState::Created)),
            (Stopped, Some(VmmState::Shutdown)),
            (Stopping, Some(VmmState::Shutdown)),
            (Error, None),
        ];
        assert_eq!(cases.len(), VmState::ALL.len());
        for (state, want) in cases {
            assert_eq!(vmm_state(state).ok(), want, "{state:?}");
        }
    }

    #[test]
    fn unsupported_plans_become_typed_errors() {
        let e = plan_error(PlanError::Unsupported {
            operation: "memory hotplug",
        });
        assert!(matches!(
            e,
            HypervisorError::Unsupported {
                kind: HypervisorKind::Vz,
                operation: "memory hotplug"
            }
        ));
        assert_eq!(
            e.to_string(),
            "memory hotplug is not supported by the vz backend"
        );
        let e = plan_error(PlanError::Cpus);
        assert_eq!(
            e.to_string(),
            "configure vz vm failed: a vz vm needs at least one cpu"
        );
    }

    #[test]
    fn detect_off_macos_says_why() {
        if cfg!(target_os = "macos") {
            return;
        }
        assert_eq!(
            VzHypervisor::detect().unwrap_err(),
            "Apple Virtualization.framework is only available on macOS"
        );
    }

    #[test]
    fn capabilities_are_honest() {
        let c = VzHypervisor::with_helper(PathBuf::from("/x")).capabilities;
        assert!(c.pause && c.vsock && c.graceful_shutdown);
        assert!(c.port_forwarding && c.egress_enforcement);
        assert!(!c.hotplug_memory && !c.disk_io_limit && !c.gpu);
    }

    #[test]
    fn error_chains_are_flattened() {
        let e = ControlError::Connect(std::io::Error::new(
            std::io::ErrorKind::NotFound,
            "no socket",
        ));
        assert_eq!(chain(&e), "connect to the vz helper: no socket");
    }
}
