//! QEMU backend.
//!
//! - `config.rs`: `VmSpec` -> argv (pure, snapshot-tested): q35 (x86_64) or virt (aarch64),
//!   KVM or TCG, virtio-blk disks with optional throttling, user-mode networking with a
//!   per-instance subnet, serial console to the instance's `app.log`, a virtio-serial control
//!   port and a QMP socket in the runtime dir.
//! - `process.rs`: QEMU runs `-daemonize`d with a pidfile, so it outlives the engine; liveness
//!   is read from `/proc` (zombies count as dead, pid reuse is ruled out by the command line).
//! - `qmp.rs`: one short QMP connection per command.
//!
//! KVM is used only when a real boot under KVM succeeds (some hosts expose a `/dev/kvm` that
//! hangs stock kernels); otherwise TCG. `HYPEDECK_ACCEL=kvm|tcg` skips the probe.

pub mod config;
mod process;
mod qmp;
mod vsock;

use std::path::{Path, PathBuf};
use std::time::Duration;

use hypedeck_guest_init::agent_proto::AGENT_VSOCK_PORT;
use hypedeck_hypervisor::{
    AgentChannel, Capabilities, DiskSpec, Hypervisor, HypervisorError, NetworkLink, Vm, VmSpec,
    VmmState,
};
use hypedeck_model::HypervisorKind;
use tokio::io::AsyncWriteExt;

pub use config::{Accel, Arch, Boot, Layout, RuntimeFiles, TemplateMemory, VsockMode};

/// What the QEMU backend supports.
pub const CAPABILITIES: Capabilities = Capabilities {
    snapshot: true,
    pause: true,
    hotplug_memory: true,
    disk_io_limit: true,
    graceful_shutdown: true,
    vsock: false,
    gpu: false,
    port_forwarding: true,
    egress_enforcement: true,
    templates: false,
    hotplug_disks: true,
};

const QMP_TIMEOUT: Duration = Duration::from_millis(2000);

/// The oldest QEMU with `-netdev stream` (the guest NIC's path to the sandbox network).
pub const MIN_VERSION: (u32, u32) = (7, 2);

/// `(major, minor)` from `qemu-system-* --version` ("QEMU emulator version 7.2.19 (…)").
pub fn parse_version(text: &str) -> Option<(u32, u32)> {
    let rest = text.split("version ").nth(1)?;
    let mut parts = rest.split(|c: char| !c.is_ascii_digit());
    let major = parts.next()?.parse().ok()?;
    let minor = parts.next()?.parse().ok()?;
    Some((major, minor))
}

/// The QEMU hypervisor factory.
#[derive(Debug)]
pub struct QemuHypervisor {
    binary: String,
    arch: Arch,
    accel: tokio::sync::OnceCell<Accel>,
    forced_accel: Option<Accel>,
    vsock: VsockMode,
    /// `--version`'s first line: a template is only used by the QEMU that made it.
    version: String,
    /// The versioned machine type VMs boot with (`pc-q35-7.2`), recorded with every saved VM.
    machine: String,
}

impl QemuHypervisor {
    /// Finds QEMU for the host architecture. Errors say what to install.
    pub fn detect() -> Result<QemuHypervisor, String> {
        let arch = Arch::host();
        let binary = std::env::var("HYPEDECK_QEMU").unwrap_or_else(|_| arch.binary().to_string());
        let found = if binary.contains('/') {
            Path::new(&binary).is_file()
        } else {
            std::env::var_os("PATH")
                .map(|p| std::env::split_paths(&p).any(|d| d.join(&binary).is_file()))
                .unwrap_or(false)
        };
        if !found {
            let package = match arch {
                Arch::X86_64 => "qemu-system-x86",
                Arch::Aarch64 => "qemu-system-arm",
            };
            return Err(format!(
                "{binary} was not found (install the Debian package {package})"
            ));
        }
        let version = std::process::Command::new(&binary)
            .arg("--version")
            .output()
            .map(|out| {
                String::from_utf8_lossy(&out.stdout)
                    .lines()
                    .next()
                    .unwrap_or("")
                    .to_string()
            })
            .unwrap_or_default();
        if let Some((major, minor)) = parse_version(&version)
            && (major, minor) < MIN_VERSION
        {
            return Err(format!(
                "{binary} is QEMU {major}.{minor}; Hypedeck needs QEMU {}.{} or newer, whose \
                 -netdev stream carries the sandbox network (Debian 12 and Ubuntu 23.04 have it)",
                MIN_VERSION.0, MIN_VERSION.1
            ));
        }
        let machine = std::process::Command::new(&binary)
            .args(["-machine", "help"])
            .output()
            .ok()
            .and_then(|out| arch.versioned_machine(&String::from_utf8_lossy(&out.stdout)))
            .unwrap_or_else(|| arch.board().to_string());
        let forced_accel = match std::env::var("HYPEDECK_ACCEL").ok().as_deref() {
            Some("kvm") => Some(Accel::Kvm),
            Some("tcg") => Some(Accel::Tcg),
            _ => None,
        };
        Ok(QemuHypervisor {
            binary,
            arch,
            accel: tokio::sync::OnceCell::new(),
            forced_accel,
            vsock: vsock_mode()?,
            version,
            machine,
        })
    }

    /// How VMs get vsock.
    pub fn vsock_mode(&self) -> &VsockMode {
        &self.vsock
    }

    /// The acceleration in use (probing on first call).
    pub async fn accel(&self, kernel: &Path, initrd: &Path) -> Accel {
        if let Some(a) = self.forced_accel {
            return a;
        }
        *self
            .accel
            .get_or_init(|| probe_kvm(&self.binary, self.arch, kernel, initrd))
            .await
    }
}

/// Chooses the agent channel: `HYPEDECK_QEMU_VSOCK=off|kernel|vhost-user`, or by default
/// kernel vsock when `/dev/vhost-vsock` is usable and virtio-serial otherwise.
fn vsock_mode() -> Result<VsockMode, String> {
    let kernel_ok = || {
        std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open("/dev/vhost-vsock")
            .is_ok()
    };
    match std::env::var("HYPEDECK_QEMU_VSOCK").ok().as_deref() {
        None | Some("") | Some("auto") => Ok(if kernel_ok() {
            VsockMode::Kernel
        } else {
            VsockMode::Off
        }),
        Some("off") => Ok(VsockMode::Off),
        Some("kernel") if kernel_ok() => Ok(VsockMode::Kernel),
        Some("kernel") => Err(
            "HYPEDECK_QEMU_VSOCK=kernel needs a usable /dev/vhost-vsock (modprobe vhost_vsock)"
                .into(),
        ),
        Some("vhost-user") => {
            let name = std::env::var("HYPEDECK_VHOST_DEVICE_VSOCK")
                .unwrap_or_else(|_| "vhost-device-vsock".into());
            find_binary(&name).map(VsockMode::VhostUser).ok_or_else(|| {
                format!(
                    "HYPEDECK_QEMU_VSOCK=vhost-user needs {name} \
                     (cargo install vhost-device-vsock, or set HYPEDECK_VHOST_DEVICE_VSOCK)"
                )
            })
        }
        Some(other) => Err(format!(
            "HYPEDECK_QEMU_VSOCK={other} is not one of off, kernel, vhost-user"
        )),
    }
}

/// `name` itself when it is a path, else the first match on PATH.
fn find_binary(name: &str) -> Option<PathBuf> {
    if name.contains('/') {
        return Path::new(name).is_file().then(|| PathBuf::from(name));
    }
    std::env::split_paths(&std::env::var_os("PATH")?)
        .map(|d| d.join(name))
        .find(|p| p.is_file())
}

/// Boots the guest kernel under KVM with no init: a working KVM reaches the "no init found"
/// panic within seconds; a broken one hangs in early boot.
async fn probe_kvm(binary: &str, arch: Arch, kernel: &Path, initrd: &Path) -> Accel {
    if std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/kvm")
        .is_err()
    {
        return Accel::Tcg;
    }
    let machine = match arch {
        Arch::X86_64 => "q35",
        Arch::Aarch64 => "virt",
    };
    let child = tokio::process::Command::new(binary)
        .args([
            "-machine",
            machine,
            "-accel",
            "kvm",
            "-cpu",
            "host",
            "-m",
            "256M",
            "-nodefaults",
        ])
        .args([
            "-no-user-config",
            "-display",
            "none",
            "-no-reboot",
            "-serial",
            "stdio",
        ])
        .arg("-kernel")
        .arg(kernel)
        .arg("-initrd")
        .arg(initrd)
        .args([
            "-append",
            &format!(
                "console={} panic=-1 rdinit=/hypedeck-kvm-probe",
                arch.console()
            ),
        ])
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .kill_on_drop(true)
        .spawn();
    let Ok(child) = child else { return Accel::Tcg };
    match tokio::time::timeout(Duration::from_secs(8), child.wait_with_output()).await {
        Ok(Ok(out)) => {
            let text = String::from_utf8_lossy(&out.stdout);
            if text.contains("Kernel panic") || text.contains("hypedeck-kvm-probe") {
                tracing::info!("KVM boots guests; using hardware acceleration");
                Accel::Kvm
            } else {
                tracing::warn!("KVM probe did not reach the kernel's init stage; using TCG");
                Accel::Tcg
            }
        }
        _ => {
            tracing::warn!("KVM probe hung (e.g. nested or paravirtual KVM); using TCG");
            Accel::Tcg
        }
    }
}

#[async_trait::async_trait]
impl Hypervisor for QemuHypervisor {
    fn kind(&self) -> HypervisorKind {
        HypervisorKind::Qemu
    }

    fn capabilities(&self) -> Capabilities {
        Capabilities {
            vsock: self.vsock != VsockMode::Off,
            // QEMU cannot migrate a vhost-user-vsock device.
            snapshot: !matches!(self.vsock, VsockMode::VhostUser(_)),
            // The same: and its guest memory is a memfd of its own.
            templates: !matches!(self.vsock, VsockMode::VhostUser(_)),
            ..CAPABILITIES
        }
    }

    async fn start(&self, spec: &VmSpec) -> Result<Box<dyn Vm>, HypervisorError> {
        std::fs::create_dir_all(&spec.runtime_dir).map_err(HypervisorError::Start)?;
        let accel = self.accel(&spec.kernel, &spec.initrd).await;
        let mut layout = Layout::fresh(spec, 0);
        let boot = Boot {
            layout: Some(&layout),
            ..self.boot()
        };
        let argv = config::argv_with(spec, accel, self.arch, &self.vsock, boot);
        let vm = self.spawn(spec, &argv, boot).await?;
        if spec.hotplug_bytes > 0 {
            // Like upstream: the VM boots with `size` and gets `hotplug_size` more right
            // away, best effort (the guest onlines it, `memhp_default_state`).
            match plug_dimm(&vm.files, spec.hotplug_bytes).await {
                Ok(()) => {
                    layout.dimm_bytes = spec.hotplug_bytes;
                    write_layout(&spec.runtime_dir, Some(&layout))
                        .map_err(HypervisorError::Start)?;
                }
                Err(e) => tracing::warn!(instance = %spec.instance_id, "hotplug memory: {e}"),
            }
        }
        Ok(Box::new(vm))
    }

    async fn attach(
        &self,
        _instance_id: &str,
        runtime_dir: &Path,
    ) -> Result<Option<Box<dyn Vm>>, HypervisorError> {
        let files = RuntimeFiles::in_dir(runtime_dir);
        let Some(pid) = process::read_pid(&files) else {
            return Ok(None);
        };
        if !process::is_alive(pid, &files) {
            return Ok(None);
        }
        let channel = vsock::read_channel(&files);
        Ok(Some(Box::new(QemuVm {
            files,
            pid,
            dir: runtime_dir.to_path_buf(),
            channel,
        })))
    }

    async fn restore(&self, spec: &VmSpec, dir: &Path) -> Result<Box<dyn Vm>, HypervisorError> {
        std::fs::create_dir_all(&spec.runtime_dir).map_err(HypervisorError::Start)?;
        let state = dir.join(SNAPSHOT_FILE);
        if !state.is_file() {
            return Err(HypervisorError::Operation {
                operation: "restore",
                detail: "no saved state".into(),
            });
        }
        if matches!(self.vsock, VsockMode::VhostUser(_)) {
            return Err(HypervisorError::Unsupported {
                kind: HypervisorKind::Qemu,
                operation: "restore with vhost-user-vsock",
            });
        }
        let accel = self.accel(&spec.kernel, &spec.initrd).await;
        // The machine it was saved with (a newer QEMU keeps older machine types); saves of
        // engines before this was recorded ran the board's newest version, which is ours.
        let machine = saved_machine(dir).unwrap_or_else(|| self.machine.clone());
        // Saved before VMs had root ports for disks: restored without them.
        let layout = read_layout(dir).map_err(|detail| HypervisorError::Operation {
            operation: "restore",
            detail,
        })?;
        let boot = Boot {
            machine: Some(&machine),
            template: None,
            // Saved before VMs had a balloon: restored without one (the devices must match).
            balloon: dir.join(BALLOON_FILE).exists(),
            layout: layout.as_ref(),
        };
        let mut argv = config::argv_with(spec, accel, self.arch, &self.vsock, boot);
        argv.extend([
            "-S".to_string(),
            "-incoming".to_string(),
            format!("exec:cat {}", shell_quote(&state)),
        ]);
        let vm = self.spawn(spec, &argv, boot).await?;
        let resumed = match wait_migration(&vm.files, MIGRATE_TIMEOUT).await {
            Ok(()) => qmp::execute(&vm.files.qmp, "cont", None, QMP_TIMEOUT)
                .await
                .map(|_| ()),
            Err(e) => Err(e),
        };
        if let Err(detail) = resumed {
            let _ = vm.kill().await;
            return Err(HypervisorError::Operation {
                operation: "restore",
                detail,
            });
        }
        Ok(Box::new(vm))
    }

    async fn template_key(&self, spec: &VmSpec) -> Option<String> {
        // Volumes change the device model; hotplug memory and vhost-user-vsock the memory's.
        if spec.disks.len() != 3
            || spec.hotplug_bytes > 0
            || matches!(self.vsock, VsockMode::VhostUser(_))
        {
            return None;
        }
        use sha2::Digest;
        let accel = self.accel(&spec.kernel, &spec.initrd).await;
        let mut hash = sha2::Sha256::new();
        let mut field = |name: &str, value: &str| {
            hash.update(name.as_bytes());
            hash.update([0]);
            hash.update(value.as_bytes());
            hash.update([0xff]);
        };
        field("format", TEMPLATE_FORMAT);
        field("qemu", &self.version);
        field("binary", &self.binary);
        field("arch", self.arch.binary());
        field("accel", &format!("{accel:?}"));
        field(
            "vsock",
            match self.vsock {
                VsockMode::Off => "off",
                VsockMode::Kernel => "kernel",
                VsockMode::VhostUser(_) => "vhost-user",
            },
        );
        field("vcpus", &spec.vcpus.to_string());
        field("memory", &spec.memory_bytes.to_string());
        field("kernel_args", &spec.kernel_args);
        field("network", &spec.network.is_some().to_string());
        // The files the guest has read by the time it is saved: by path (each is named by its
        // content or version) and, in case one is replaced in place, by size and mtime.
        for (name, path) in [
            ("kernel", &spec.kernel),
            ("initrd", &spec.initrd),
            ("rootfs", &spec.disks[0].path),
        ] {
            let meta = std::fs::metadata(path).ok()?;
            let mtime = meta
                .modified()
                .ok()
                .and_then(|m| m.duration_since(std::time::UNIX_EPOCH).ok())
                .map_or(0, |d| d.as_nanos());
            field(name, &format!("{} {} {mtime}", path.display(), meta.len()));
        }
        // Every disk's capacity and mode is in the devices' saved state.
        for (i, disk) in spec.disks.iter().enumerate() {
            let len = std::fs::metadata(&disk.path).ok()?.len();
            field(&format!("disk{i}"), &format!("{len} {}", disk.readonly));
        }
        let digest = hash.finalize();
        Some(digest.iter().take(16).map(|b| format!("{b:02x}")).collect())
    }

    async fn make_template(&self, spec: &VmSpec, dir: &Path) -> Result<(), HypervisorError> {
        let fail = |detail: String| HypervisorError::Operation {
            operation: "make template",
            detail,
        };
        std::fs::create_dir_all(&spec.runtime_dir).map_err(HypervisorError::Start)?;
        std::fs::create_dir_all(dir).map_err(HypervisorError::Start)?;
        let memory = dir.join(TEMPLATE_MEMORY_FILE);
        let layout = Layout::fresh(spec, 0);
        let (argv, boot) = self.template_argv(spec, &memory, true, &layout).await;
        let vm = self.spawn(spec, &argv, boot).await?;
        let saved = async {
            wait_for_console(&vm, &spec.serial_log, hypedeck_guest_init::TEMPLATE_READY).await?;
            // The stream then carries the devices only: the RAM stays in the shared file.
            set_ignore_shared(&vm.files, true).await?;
            qmp::execute(&vm.files.qmp, "stop", None, QMP_TIMEOUT).await?;
            let state = dir.join(TEMPLATE_STATE_FILE);
            migrate(
                &vm.files,
                "migrate",
                &format!("exec:cat > {}", shell_quote(&state)),
            )
            .await
        }
        .await;
        let _ = vm.kill().await;
        saved.map_err(fail)
    }

    async fn start_from_template(
        &self,
        spec: &VmSpec,
        dir: &Path,
    ) -> Result<Box<dyn Vm>, HypervisorError> {
        let fail = |detail: String| HypervisorError::Operation {
            operation: "start from template",
            detail,
        };
        let (memory, state) = (
            dir.join(TEMPLATE_MEMORY_FILE),
            dir.join(TEMPLATE_STATE_FILE),
        );
        if !memory.is_file() || !state.is_file() {
            return Err(fail("the template is incomplete".into()));
        }
        std::fs::create_dir_all(&spec.runtime_dir).map_err(HypervisorError::Start)?;
        let layout = Layout::fresh(spec, 0);
        let (mut argv, boot) = self.template_argv(spec, &memory, false, &layout).await;
        argv.extend(["-S", "-incoming", "defer"].map(String::from));
        let vm = self.spawn(spec, &argv, boot).await?;
        let started = async {
            set_ignore_shared(&vm.files, true).await?;
            let uri = format!("exec:cat {}", shell_quote(&state));
            migrate(&vm.files, "migrate-incoming", &uri).await?;
            // Its own saves (standby, snapshots) are whole: the RAM is its own from here.
            set_ignore_shared(&vm.files, false).await?;
            qmp::execute(&vm.files.qmp, "cont", None, QMP_TIMEOUT)
                .await
                .map(|_| ())
        }
        .await;
        if let Err(detail) = started {
            let _ = vm.kill().await;
            return Err(fail(detail));
        }
        Ok(Box::new(vm))
    }
}

/// What a template's saved devices are made with; a change names other templates.
const TEMPLATE_FORMAT: &str = "4";
/// A template's RAM (a sparse file of the VM's memory size).
pub const TEMPLATE_MEMORY_FILE: &str = "memory.ram";
/// A template's saved devices (the migration stream without the RAM).
pub const TEMPLATE_STATE_FILE: &str = "state.bin";
/// How long a template VM may take to boot to its wait.
const TEMPLATE_BOOT_TIMEOUT: Duration = Duration::from_secs(120);

/// Turns `x-ignore-shared` on or off. On: RAM in a shared file is left out of the migration stream (the
/// template's side), and expected in the file (the started VM's side: its mapping of the same
/// file is private, but the stream has no pages for it either way).
async fn set_ignore_shared(files: &RuntimeFiles, on: bool) -> Result<(), String> {
    qmp::execute(
        &files.qmp,
        "migrate-set-capabilities",
        Some(serde_json::json!({
            "capabilities": [{ "capability": "x-ignore-shared", "state": on }]
        })),
        QMP_TIMEOUT,
    )
    .await
    .map(|_| ())
}

/// Waits until `marker` is on the VM's console, or its VMM ended, or the boot took too long.
async fn wait_for_console(vm: &QemuVm, log: &Path, marker: &str) -> Result<(), String> {
    let deadline = tokio::time::Instant::now() + TEMPLATE_BOOT_TIMEOUT;
    loop {
        let text = std::fs::read(log).unwrap_or_default();
        if String::from_utf8_lossy(&text).contains(marker) {
            return Ok(());
        }
        if !vm.is_alive().await {
            let last = String::from_utf8_lossy(&text)
                .lines()
                .rev()
                .find(|l| !l.trim().is_empty())
                .unwrap_or("")
                .to_string();
            return Err(format!("the template VM ended before it was ready: {last}"));
        }
        if tokio::time::Instant::now() >= deadline {
            return Err("the template VM did not get ready in time".into());
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

impl QemuHypervisor {
    /// The argv of a template being made (`shared`) or of a VM started from one, and what it
    /// boots with.
    async fn template_argv<'a>(
        &'a self,
        spec: &VmSpec,
        memory: &'a Path,
        shared: bool,
        layout: &'a Layout,
    ) -> (Vec<String>, Boot<'a>) {
        let accel = self.accel(&spec.kernel, &spec.initrd).await;
        let boot = Boot {
            template: Some(TemplateMemory {
                path: memory,
                shared,
            }),
            // No balloon: QEMU 7.2 gives a discarded page of a file-backed RAM block back by
            // punching a hole in the file, even for a private mapping, so free page
            // reporting or ballooning in one VM would zero pages of the template under
            // every other VM started from it (the template test caught it).
            balloon: false,
            layout: Some(layout),
            ..self.boot()
        };
        (
            config::argv_with(spec, accel, self.arch, &self.vsock, boot),
            boot,
        )
    }

    /// What new VMs boot with (their [`Layout`] is their own).
    fn boot(&self) -> Boot<'_> {
        Boot {
            machine: Some(&self.machine),
            template: None,
            balloon: true,
            layout: None,
        }
    }

    /// Starts QEMU with `argv` for `spec` (after what its agent channel needs), recording what
    /// its saves must be restored with (its machine type, its balloon).
    async fn spawn(
        &self,
        spec: &VmSpec,
        argv: &[String],
        boot: Boot<'_>,
    ) -> Result<QemuVm, HypervisorError> {
        let files = RuntimeFiles::in_dir(&spec.runtime_dir);
        std::fs::write(
            spec.runtime_dir.join(MACHINE_FILE),
            boot.machine.unwrap_or(self.arch.board()),
        )
        .map_err(HypervisorError::Start)?;
        let balloon = spec.runtime_dir.join(BALLOON_FILE);
        if boot.balloon {
            std::fs::write(&balloon, b"").map_err(HypervisorError::Start)?;
        } else {
            let _ = std::fs::remove_file(&balloon);
        }
        write_layout(&spec.runtime_dir, boot.layout).map_err(HypervisorError::Start)?;
        let channel = self.prepare_channel(spec, &files).await?;
        let pid = match process::spawn(&self.binary, argv, &files).await {
            Ok(pid) => pid,
            Err(e) => {
                vsock::stop_daemon(&files);
                return Err(e);
            }
        };
        Ok(QemuVm {
            files,
            pid,
            dir: spec.runtime_dir.clone(),
            channel,
        })
    }

    /// Starts what the agent channel needs before QEMU (the vhost-user daemon) and records
    /// the channel for re-attach.
    async fn prepare_channel(
        &self,
        spec: &VmSpec,
        files: &RuntimeFiles,
    ) -> Result<AgentChannel, HypervisorError> {
        let channel = match &self.vsock {
            VsockMode::Off => AgentChannel::Serial(files.agent.clone()),
            VsockMode::Kernel => AgentChannel::Vsock {
                cid: spec.vsock_cid,
                port: AGENT_VSOCK_PORT,
            },
            VsockMode::VhostUser(daemon) => {
                vsock::start_daemon(daemon, spec.vsock_cid, files).await?;
                AgentChannel::HybridVsock {
                    socket: files.vsock.clone(),
                    port: AGENT_VSOCK_PORT,
                }
            }
        };
        vsock::write_channel(files, &channel).map_err(HypervisorError::Start)?;
        Ok(channel)
    }
}

/// File holding a saved VM state inside a snapshot dir.
pub const SNAPSHOT_FILE: &str = "memory.bin";
/// The machine type a VM runs (in its runtime dir) and was saved with (in a saved VM's dir).
pub const MACHINE_FILE: &str = "machine";
/// Present when a VM has a balloon (in its runtime dir, and in the dir of a VM saved with one).
pub const BALLOON_FILE: &str = "balloon";
/// A VM's [`Layout`] (in its runtime dir, and in the dir of a VM saved with one).
pub const LAYOUT_FILE: &str = "layout.json";

/// Writes `layout` into `dir` (atomically), or removes it (`None`: a VM without root ports).
fn write_layout(dir: &Path, layout: Option<&Layout>) -> std::io::Result<()> {
    let path = dir.join(LAYOUT_FILE);
    match layout {
        Some(layout) => {
            let tmp = dir.join(format!("{LAYOUT_FILE}.tmp"));
            std::fs::write(
                &tmp,
                serde_json::to_vec(layout).map_err(std::io::Error::other)?,
            )?;
            std::fs::rename(tmp, path)
        }
        None => match std::fs::remove_file(path) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(e),
            _ => Ok(()),
        },
    }
}

/// The [`Layout`] in `dir`; `None` when it has none (a VM saved before layouts existed).
fn read_layout(dir: &Path) -> Result<Option<Layout>, String> {
    match std::fs::read(dir.join(LAYOUT_FILE)) {
        Ok(bytes) => serde_json::from_slice(&bytes)
            .map(Some)
            .map_err(|e| format!("the saved VM's {LAYOUT_FILE} is unreadable: {e}")),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(format!("read {LAYOUT_FILE}: {e}")),
    }
}

/// Plugs a DIMM of `bytes` into a running VM.
async fn plug_dimm(files: &RuntimeFiles, bytes: u64) -> Result<(), String> {
    use config::{DIMM_ID, DIMM_MEMORY_ID};
    qmp::execute(
        &files.qmp,
        "object-add",
        Some(serde_json::json!({
            "qom-type": "memory-backend-ram", "id": DIMM_MEMORY_ID, "size": bytes
        })),
        QMP_TIMEOUT,
    )
    .await?;
    let plugged = qmp::execute(
        &files.qmp,
        "device_add",
        Some(serde_json::json!({ "driver": "pc-dimm", "id": DIMM_ID, "memdev": DIMM_MEMORY_ID })),
        QMP_TIMEOUT,
    )
    .await;
    if plugged.is_err() {
        let _ = qmp::execute(
            &files.qmp,
            "object-del",
            Some(serde_json::json!({ "id": DIMM_MEMORY_ID })),
            QMP_TIMEOUT,
        )
        .await;
    }
    plugged.map(|_| ())
}

/// How long a guest may take to let go of a disk being detached.
const DETACH_TIMEOUT: Duration = Duration::from_secs(20);

/// The guest's reads and writes over every disk of a `query-blockstats` answer.
fn sum_blockstats(stats: &serde_json::Value) -> hypedeck_hypervisor::DiskIo {
    let mut io = hypedeck_hypervisor::DiskIo::default();
    for device in stats.as_array().into_iter().flatten() {
        let field = |name: &str| device["stats"][name].as_u64().unwrap_or(0);
        io.read_bytes += field("rd_bytes");
        io.write_bytes += field("wr_bytes");
    }
    io
}

/// The machine type a saved VM in `dir` was saved with, if recorded and well formed.
fn saved_machine(dir: &Path) -> Option<String> {
    let text = std::fs::read_to_string(dir.join(MACHINE_FILE)).ok()?;
    let name = text.trim();
    config::valid_machine(name).then(|| name.to_string())
}

const MIGRATE_TIMEOUT: Duration = Duration::from_secs(300);

fn shell_quote(path: &Path) -> String {
    format!("'{}'", path.display().to_string().replace('\'', "'\\''"))
}

/// Starts a migration to (`migrate`) or from (`migrate-incoming`) `uri` and waits until it
/// completed (or failed).
async fn migrate(files: &RuntimeFiles, command: &str, uri: &str) -> Result<(), String> {
    qmp::execute(
        &files.qmp,
        command,
        Some(serde_json::json!({ "uri": uri })),
        QMP_TIMEOUT,
    )
    .await?;
    wait_migration(files, MIGRATE_TIMEOUT).await
}

/// Polls `query-migrate` until the migration completed (or failed).
async fn wait_migration(files: &RuntimeFiles, timeout: Duration) -> Result<(), String> {
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        let info = qmp::execute(&files.qmp, "query-migrate", None, QMP_TIMEOUT).await?;
        match info.get("status").and_then(|s| s.as_str()) {
            Some("completed") => return Ok(()),
            Some("failed") | Some("cancelled") => {
                let why = info
                    .get("error-desc")
                    .and_then(|s| s.as_str())
                    .unwrap_or("migration failed");
                return Err(why.to_string());
            }
            _ => {}
        }
        if tokio::time::Instant::now() >= deadline {
            return Err("migration timed out".into());
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// One QEMU process.
#[derive(Debug)]
pub struct QemuVm {
    files: RuntimeFiles,
    pid: u32,
    dir: PathBuf,
    channel: AgentChannel,
}

impl QemuVm {
    /// The runtime dir.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Deletes the block node of a disk attached while the VM ran, if it has one (a disk
    /// attached at boot went with its device).
    async fn delete_block_node(&self, serial: &str) {
        let _ = qmp::execute(
            &self.files.qmp,
            "blockdev-del",
            Some(serde_json::json!({ "node-name": config::disk_node_id(serial) })),
            QMP_TIMEOUT,
        )
        .await;
    }

    /// Asks the guest to eject device `id` and waits until QEMU removed it.
    async fn remove_disk_device(&self, id: &str) -> Result<(), String> {
        match qmp::execute(
            &self.files.qmp,
            "device_del",
            Some(serde_json::json!({ "id": id })),
            QMP_TIMEOUT,
        )
        .await
        {
            Ok(_) => {}
            // Already gone (an earlier detach that timed out and then completed).
            Err(e) if e.contains("not found") => return Ok(()),
            Err(e) => return Err(e),
        }
        let deadline = tokio::time::Instant::now() + DETACH_TIMEOUT;
        loop {
            let children = qmp::execute(
                &self.files.qmp,
                "qom-list",
                Some(serde_json::json!({ "path": "/machine/peripheral" })),
                QMP_TIMEOUT,
            )
            .await?;
            let present = children.as_array().is_some_and(|c| {
                c.iter()
                    .any(|p| p.get("name").and_then(|n| n.as_str()) == Some(id))
            });
            if !present {
                return Ok(());
            }
            if tokio::time::Instant::now() >= deadline {
                return Err(format!(
                    "the guest did not release the disk within {} s",
                    DETACH_TIMEOUT.as_secs()
                ));
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

#[async_trait::async_trait]
impl Vm for QemuVm {
    async fn state(&self) -> Result<VmmState, HypervisorError> {
        let status = qmp::execute(&self.files.qmp, "query-status", None, QMP_TIMEOUT)
            .await
            .map_err(HypervisorError::Query)?;
        let name = status.get("status").and_then(|s| s.as_str()).unwrap_or("");
        match name {
            "running" => Ok(VmmState::Running),
            "paused" | "suspended" | "inmigrate" | "postmigrate" | "finish-migrate" | "save-vm"
            | "restore-vm" | "debug" | "colo" => Ok(VmmState::Paused),
            "prelaunch" => Ok(VmmState::Created),
            "shutdown" => Ok(VmmState::Shutdown),
            other => Err(HypervisorError::Query(format!("vm status {other}"))),
        }
    }

    async fn request_shutdown(&self) -> Result<(), HypervisorError> {
        // The ACPI power button: guest init turns it into SIGTERM for the program. The
        // control port is the fallback when QMP does not answer.
        match qmp::execute(&self.files.qmp, "system_powerdown", None, QMP_TIMEOUT).await {
            Ok(_) => Ok(()),
            Err(detail) => {
                let via_port = async {
                    let mut s = tokio::net::UnixStream::connect(&self.files.control).await?;
                    s.write_all(format!("{}\n", hypedeck_guest_init::CONTROL_TERM).as_bytes())
                        .await?;
                    s.flush().await
                };
                match tokio::time::timeout(QMP_TIMEOUT, via_port).await {
                    Ok(Ok(())) => Ok(()),
                    _ => Err(HypervisorError::Operation {
                        operation: "shutdown",
                        detail,
                    }),
                }
            }
        }
    }

    async fn kill(&self) -> Result<(), HypervisorError> {
        if process::is_alive(self.pid, &self.files) {
            let _ = qmp::execute(&self.files.qmp, "quit", None, Duration::from_millis(500)).await;
            for _ in 0..20 {
                if !process::is_alive(self.pid, &self.files) {
                    break;
                }
                tokio::time::sleep(Duration::from_millis(25)).await;
            }
            if process::is_alive(self.pid, &self.files) {
                process::kill(self.pid);
            }
        }
        process::reap(self.pid);
        let _ = std::fs::remove_file(&self.files.pidfile);
        vsock::stop_daemon(&self.files);
        Ok(())
    }

    async fn is_alive(&self) -> bool {
        let alive = process::is_alive(self.pid, &self.files);
        if !alive {
            // The guest powered off: its vsock daemon has nothing left to serve.
            vsock::stop_daemon(&self.files);
        }
        alive
    }

    fn process_id(&self) -> Option<u32> {
        Some(self.pid)
    }

    async fn memory_target(&self) -> Option<u64> {
        if !self.dir.join(BALLOON_FILE).exists() {
            return None;
        }
        let answer = qmp::execute(&self.files.qmp, "query-balloon", None, QMP_TIMEOUT)
            .await
            .ok()?;
        answer.get("actual")?.as_u64()
    }

    async fn set_memory_target(&self, bytes: u64) -> Result<(), HypervisorError> {
        let fail = |detail: String| HypervisorError::Operation {
            operation: "balloon",
            detail,
        };
        if !self.dir.join(BALLOON_FILE).exists() {
            return Err(fail(
                "this VM has no balloon (saved before VMs had one)".into(),
            ));
        }
        qmp::execute(
            &self.files.qmp,
            "balloon",
            Some(serde_json::json!({ "value": bytes })),
            QMP_TIMEOUT,
        )
        .await
        .map(|_| ())
        .map_err(fail)
    }

    async fn disk_io(&self) -> Option<hypedeck_hypervisor::DiskIo> {
        let stats = qmp::execute(&self.files.qmp, "query-blockstats", None, QMP_TIMEOUT)
            .await
            .ok()?;
        Some(sum_blockstats(&stats))
    }

    async fn attach_disk(&self, disk: &DiskSpec) -> Result<(), HypervisorError> {
        let fail = |detail: String| HypervisorError::Operation {
            operation: "attach disk",
            detail,
        };
        let serial = disk
            .serial
            .as_deref()
            .filter(|s| config::valid_serial(s))
            .ok_or_else(|| fail("the disk has no serial".into()))?;
        let mut layout = read_layout(&self.dir)
            .map_err(fail)?
            .filter(|l| l.ports > 0)
            .ok_or_else(|| {
                fail("this VM was saved before disks could be attached while it runs; stop and start it first".into())
            })?;
        if layout.port_of(serial).is_some() {
            return Err(fail(format!(
                "a disk with serial {serial} is attached already"
            )));
        }
        let port = layout.free_port().ok_or_else(|| {
            fail(format!(
                "all {} disk ports of this VM are taken; stop and start it to attach more",
                layout.ports
            ))
        })?;
        let node = config::disk_node_id(serial);
        qmp::execute(
            &self.files.qmp,
            "blockdev-add",
            Some(serde_json::json!({
                "driver": "raw", "node-name": node, "read-only": disk.readonly,
                "file": {"driver": "file", "filename": disk.path.display().to_string()}
            })),
            QMP_TIMEOUT,
        )
        .await
        .map_err(fail)?;
        let id = config::disk_device_id(serial);
        let added = async {
            qmp::execute(
                &self.files.qmp,
                "device_add",
                Some(serde_json::json!({
                    "driver": "virtio-blk-pci", "id": id, "drive": node,
                    "bus": format!("hp{port}"), "serial": serial
                })),
                QMP_TIMEOUT,
            )
            .await?;
            if disk.io_bps > 0 {
                // The same limit and burst as a disk attached at boot.
                qmp::execute(
                    &self.files.qmp,
                    "block_set_io_throttle",
                    Some(serde_json::json!({
                        "id": id, "bps": disk.io_bps, "bps_max": config::io_burst(disk.io_bps),
                        "bps_rd": 0, "bps_wr": 0, "iops": 0, "iops_rd": 0, "iops_wr": 0
                    })),
                    QMP_TIMEOUT,
                )
                .await?;
            }
            Ok::<(), String>(())
        }
        .await;
        if let Err(detail) = added {
            let _ = self.remove_disk_device(&id).await;
            self.delete_block_node(serial).await;
            return Err(fail(detail));
        }
        layout.take(port, serial);
        write_layout(&self.dir, Some(&layout)).map_err(|e| fail(e.to_string()))
    }

    async fn detach_disk(&self, serial: &str) -> Result<(), HypervisorError> {
        let fail = |detail: String| HypervisorError::Operation {
            operation: "detach disk",
            detail,
        };
        let mut layout = read_layout(&self.dir)
            .map_err(fail)?
            .filter(|l| l.port_of(serial).is_some())
            .ok_or_else(|| {
                fail("this disk cannot be detached while the VM runs (it was saved before disks could be); stop the instance first".into())
            })?;
        self.remove_disk_device(&config::disk_device_id(serial))
            .await
            .map_err(fail)?;
        self.delete_block_node(serial).await;
        layout.release(serial);
        write_layout(&self.dir, Some(&layout)).map_err(|e| fail(e.to_string()))
    }

    fn agent_channel(&self) -> AgentChannel {
        self.channel.clone()
    }

    async fn network_link(&self) -> Result<Option<NetworkLink>, HypervisorError> {
        Ok(Some(NetworkLink::Stream(self.files.net.clone())))
    }

    async fn save_and_exit(&self, dir: &Path) -> Result<(), HypervisorError> {
        let fail = |detail: String| HypervisorError::Operation {
            operation: "save state",
            detail,
        };
        std::fs::create_dir_all(dir).map_err(|e| fail(e.to_string()))?;
        let state = dir.join(SNAPSHOT_FILE);
        qmp::execute(&self.files.qmp, "stop", None, QMP_TIMEOUT)
            .await
            .map_err(fail)?;
        let uri = format!("exec:cat > {}", shell_quote(&state));
        let saved = migrate(&self.files, "migrate", &uri).await;
        if let Err(detail) = saved {
            let _ = std::fs::remove_file(&state);
            let _ = qmp::execute(&self.files.qmp, "cont", None, QMP_TIMEOUT).await;
            return Err(fail(detail));
        }
        if let Some(machine) = saved_machine(&self.dir) {
            std::fs::write(dir.join(MACHINE_FILE), machine).map_err(|e| fail(e.to_string()))?;
        }
        if self.dir.join(BALLOON_FILE).exists() {
            std::fs::write(dir.join(BALLOON_FILE), b"").map_err(|e| fail(e.to_string()))?;
        }
        let layout = read_layout(&self.dir).map_err(fail)?;
        write_layout(dir, layout.as_ref()).map_err(|e| fail(e.to_string()))?;
        self.kill().await
    }
}

#[cfg(test)]
mod version_tests {
    #[test]
    fn blockstats_are_summed_over_the_disks() {
        let answer = serde_json::json!([
            {"device": "", "qdev": "/machine/peripheral-anon/device[0]/virtio-backend",
             "stats": {"rd_bytes": 1000, "wr_bytes": 0, "rd_operations": 3}},
            {"device": "", "stats": {"rd_bytes": 24, "wr_bytes": 4096}},
            {"device": "odd"}
        ]);
        let io = super::sum_blockstats(&answer);
        assert_eq!((io.read_bytes, io.write_bytes), (1024, 4096));
    }

    #[test]
    fn versions_parse_from_qemu_banners() {
        let debian =
            "QEMU emulator version 7.2.19 (Debian 1:7.2+dfsg-7+deb12u16)\nCopyright (c) 2003-2022";
        assert_eq!(super::parse_version(debian), Some((7, 2)));
        assert_eq!(
            super::parse_version("QEMU emulator version 10.0.2 (Debian 1:10.0.2+ds-2)"),
            Some((10, 0))
        );
        assert_eq!(
            super::parse_version("QEMU emulator version 6.2.0"),
            Some((6, 2))
        );
        assert!(super::parse_version("QEMU emulator version 6.2.0").unwrap() < super::MIN_VERSION);
        assert_eq!(super::parse_version("something else"), None);
    }
}

#[cfg(test)]
mod template_key_tests {
    use std::path::Path;

    use hypedeck_hypervisor::{DiskSpec, Hypervisor, VmSpec};

    use super::*;

    fn qemu(version: &str, vsock: VsockMode) -> QemuHypervisor {
        QemuHypervisor {
            binary: "qemu-system-x86_64".into(),
            arch: Arch::X86_64,
            accel: tokio::sync::OnceCell::new(),
            forced_accel: Some(Accel::Tcg),
            vsock,
            version: version.into(),
            machine: "pc-q35-7.2".into(),
        }
    }

    fn file(dir: &Path, name: &str, bytes: &[u8]) -> std::path::PathBuf {
        let path = dir.join(name);
        std::fs::write(&path, bytes).unwrap();
        path
    }

    fn spec(dir: &Path) -> VmSpec {
        let disk = |name: &str, readonly: bool| DiskSpec {
            path: dir.join(name),
            readonly,
            io_bps: 0,
            serial: None,
        };
        VmSpec {
            instance_id: "tz4a98xxat96iws9zmbrgj3a".into(),
            runtime_dir: dir.join("run"),
            vcpus: 1,
            memory_bytes: 256 << 20,
            hotplug_bytes: 0,
            kernel: dir.join("vmlinuz"),
            initrd: dir.join("initrd.img"),
            kernel_args: "quiet panic=-1".into(),
            disks: vec![
                disk("rootfs.ext4", true),
                disk("overlay.ext4", false),
                disk("config.img", true),
            ],
            serial_log: dir.join("app.log"),
            network: None,
            vsock_cid: 7,
        }
    }

    #[tokio::test]
    async fn the_key_changes_with_whatever_the_saved_guest_depends_on() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        for (name, bytes) in [
            ("vmlinuz", &b"kernel"[..]),
            ("initrd.img", b"initrd"),
            ("rootfs.ext4", b"root"),
            ("overlay.ext4", &[0u8; 64][..]),
            ("config.img", &[0u8; 32][..]),
        ] {
            file(d, name, bytes);
        }
        let q = qemu("QEMU emulator version 7.2.22", VsockMode::Off);
        let base = q.template_key(&spec(d)).await.expect("a key");
        assert_eq!(base.len(), 32);
        // Another instance of the same shape (own id, dirs, identity) has the same key.
        let mut other = spec(d);
        other.instance_id = "aaaaaaaaaaaaaaaaaaaaaaaa".into();
        other.runtime_dir = d.join("elsewhere");
        other.vsock_cid = 99;
        other.disks[1].io_bps = 1 << 20;
        assert_eq!(q.template_key(&other).await.as_deref(), Some(base.as_str()));

        let mut changed = Vec::new();
        let mut s = spec(d);
        s.memory_bytes = 512 << 20;
        changed.push(("memory", q.template_key(&s).await));
        let mut s = spec(d);
        s.vcpus = 2;
        changed.push(("vcpus", q.template_key(&s).await));
        let mut s = spec(d);
        s.network = Some(hypedeck_hypervisor::NetSpec {
            mac: "02:00:00:00:00:02".into(),
            subnet: "10.100.1.0/24".into(),
            gateway: "10.100.1.2".into(),
            dns: "10.100.1.3".into(),
            guest_ip: "10.100.1.15".into(),
            restrict: false,
            guest_forwards: Vec::new(),
            host_forwards: Vec::new(),
        });
        changed.push(("a NIC", q.template_key(&s).await));
        changed.push((
            "the QEMU version",
            qemu("QEMU emulator version 8.2.0", VsockMode::Off)
                .template_key(&spec(d))
                .await,
        ));
        changed.push((
            "the vsock mode",
            qemu("QEMU emulator version 7.2.22", VsockMode::Kernel)
                .template_key(&spec(d))
                .await,
        ));
        file(d, "overlay.ext4", &[0u8; 128]);
        changed.push(("the overlay size", q.template_key(&spec(d)).await));
        file(d, "overlay.ext4", &[0u8; 64]);
        file(d, "initrd.img", b"another init");
        changed.push(("the initramfs", q.template_key(&spec(d)).await));
        file(d, "initrd.img", b"initrd");
        let mut s = spec(d);
        s.disks[0].path = file(d, "other-rootfs.ext4", b"root");
        changed.push(("the image", q.template_key(&s).await));
        for (what, key) in changed {
            let key = key.unwrap_or_else(|| panic!("{what}: no key"));
            assert_ne!(key, base, "{what} did not change the key");
        }

        // Shapes that cannot start from a template have no key.
        let mut s = spec(d);
        s.hotplug_bytes = 1 << 30;
        assert_eq!(q.template_key(&s).await, None, "hotplug memory");
        let mut s = spec(d);
        s.disks.push(s.disks[1].clone());
        assert_eq!(q.template_key(&s).await, None, "a volume");
        let vhost = qemu(
            "QEMU emulator version 7.2.22",
            VsockMode::VhostUser("vhost-device-vsock".into()),
        );
        assert_eq!(vhost.template_key(&spec(d)).await, None, "vhost-user vsock");
        std::fs::remove_file(d.join("vmlinuz")).unwrap();
        assert_eq!(q.template_key(&spec(d)).await, None, "a missing kernel");
    }
}
