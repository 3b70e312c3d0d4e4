//! `VmSpec` -> QEMU argv. Pure; every flag is covered by the snapshot test below.

use std::path::{Path, PathBuf};

use hypedeck_hypervisor::VmSpec;

/// Acceleration QEMU uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Accel {
    /// Hardware virtualization (`/dev/kvm` that really boots).
    Kvm,
    /// Software emulation.
    Tcg,
}

/// Host architecture QEMU emulates natively.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Arch {
    /// x86_64: q35 board, `ttyS0`.
    X86_64,
    /// aarch64: virt board, `ttyAMA0`.
    Aarch64,
}

impl Arch {
    /// The host's architecture.
    pub fn host() -> Arch {
        if cfg!(target_arch = "aarch64") {
            Arch::Aarch64
        } else {
            Arch::X86_64
        }
    }

    /// The QEMU system emulator binary.
    pub fn binary(self) -> &'static str {
        match self {
            Arch::X86_64 => "qemu-system-x86_64",
            Arch::Aarch64 => "qemu-system-aarch64",
        }
    }

    /// The board's machine type alias (the newest version of it in this QEMU).
    pub fn board(self) -> &'static str {
        match self {
            Arch::X86_64 => "q35",
            Arch::Aarch64 => "virt",
        }
    }

    /// The versioned machine type `-machine help` (its text in `help`) says the board's alias
    /// stands for (`pc-q35-7.2`), so a saved VM can be restored by a newer QEMU with the
    /// machine it was saved with.
    pub fn versioned_machine(self, help: &str) -> Option<String> {
        help.lines().find_map(|line| {
            let mut words = line.split_whitespace();
            (words.next() == Some(self.board()))
                .then(|| line.split("(alias of ").nth(1)?.split(')').next())
                .flatten()
                .map(str::trim)
                .filter(|m| valid_machine(m))
                .map(String::from)
        })
    }

    /// The guest's serial console device.
    pub fn console(self) -> &'static str {
        match self {
            Arch::X86_64 => "ttyS0",
            Arch::Aarch64 => "ttyAMA0",
        }
    }
}

/// Files QEMU creates in the runtime dir.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RuntimeFiles {
    /// QMP socket.
    pub qmp: PathBuf,
    /// Control port socket (virtio-serial `hypedeck.ctl`).
    pub control: PathBuf,
    /// Exec agent socket (virtio-serial `hypedeck.agent`).
    pub agent: PathBuf,
    /// vhost-user socket between QEMU and `vhost-device-vsock`.
    pub vhost_user: PathBuf,
    /// Hybrid-vsock socket `vhost-device-vsock` serves (`CONNECT <port>`).
    pub vsock: PathBuf,
    /// `vhost-device-vsock`'s pid (written by the backend).
    pub vsock_pidfile: PathBuf,
    /// How this VM's agent is reached (`serial`, `vsock <cid>` or `hybrid`), for re-attach.
    pub channel: PathBuf,
    /// Pidfile written by QEMU.
    pub pidfile: PathBuf,
    /// QEMU's own stdout/stderr before it daemonizes.
    pub vmm_log: PathBuf,
    /// The guest NIC's frames (`-netdev stream`, QEMU listening): the engine's network
    /// stack connects here.
    pub net: PathBuf,
}

impl RuntimeFiles {
    /// The files of a runtime dir.
    pub fn in_dir(dir: &Path) -> RuntimeFiles {
        RuntimeFiles {
            qmp: dir.join("qmp.sock"),
            control: dir.join("ctl.sock"),
            agent: dir.join(AGENT_SOCKET),
            vhost_user: dir.join("vhu.sock"),
            vsock: dir.join("vsock.sock"),
            vsock_pidfile: dir.join("vsock.pid"),
            channel: dir.join("agent-channel"),
            pidfile: dir.join("qemu.pid"),
            vmm_log: dir.join("vmm.log"),
            net: dir.join(NET_SOCKET),
        }
    }
}

/// The guest NIC's frame socket in a VM's runtime dir (the engine's stack connects to it).
pub const NET_SOCKET: &str = "net.sock";

/// The exec agent's socket in a VM's runtime dir (the engine connects to it).
pub const AGENT_SOCKET: &str = "agent.sock";

/// How a VM gets vsock, and so how the host reaches its exec agent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum VsockMode {
    /// No vsock device: the agent is reached over virtio-serial.
    Off,
    /// Kernel vhost-vsock (`/dev/vhost-vsock`): the host connects with `AF_VSOCK`.
    Kernel,
    /// vhost-user-vsock served by `vhost-device-vsock` (this binary), which speaks the
    /// hybrid-vsock `CONNECT <port>` protocol on a unix socket. Guest memory must be shared
    /// (memfd), and QEMU cannot migrate the device, so no standby.
    VhostUser(PathBuf),
}

/// Whether `name` can be a machine type (`pc-q35-7.2`, `virt-8.0`): what a saved VM's file may
/// name, nothing that could be another option.
pub fn valid_machine(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 64
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'.' || b == b'_')
}

/// Escapes a value for QEMU's `key=value,…` option syntax (commas are doubled).
fn q(path: &Path) -> String {
    path.display().to_string().replace(',', ",,")
}

/// A VM whose RAM is a file: a template being made (`shared`: the guest's writes go to the
/// file) or a VM started from one (private: unchanged pages stay the file's page-cache pages,
/// shared by every VM started from it; written ones are copied).
#[derive(Debug, Clone, Copy)]
pub struct TemplateMemory<'a> {
    /// The template's RAM file.
    pub path: &'a Path,
    /// Map it shared (making the template) or private (starting from it).
    pub shared: bool,
}

/// The id QEMU gives a board's RAM when no backend is named. A template's file backend takes
/// this id, so a VM started from a template saves and restores like any other (same RAM block
/// name in the migration stream).
fn default_ram_id(arch: Arch) -> &'static str {
    match arch {
        Arch::X86_64 => "pc.ram",
        Arch::Aarch64 => "mach-virt.ram",
    }
}

/// Where a VM's volume disks sit and what memory was plugged into it after boot: what its
/// saves must be restored with (`layout.json` in its runtime dir and in each save).
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Layout {
    /// PCIe root ports (`hp0`, `hp1`, …) that take disks while the VM runs. 0: a VM saved
    /// before they existed, whose volume disks sit on the root bus and stay there.
    pub ports: u32,
    /// The serial of the disk on each port; `None`: free. Shorter than `ports` when the last
    /// ports are free.
    #[serde(default)]
    pub slots: Vec<Option<String>>,
    /// Memory plugged as a DIMM after boot (`hotplug_size`), in bytes; 0: none.
    #[serde(default)]
    pub dimm_bytes: u64,
}

/// Root ports a new VM gets at least: disks attached at boot take the first, the others take
/// disks while it runs.
pub const MIN_PORTS: u32 = 8;
/// The most root ports (three functions-of-eight slots on the root bus).
pub const MAX_PORTS: u32 = 24;
/// The id of the memory backend and DIMM plugged after boot (the same at every restore).
pub const DIMM_MEMORY_ID: &str = "hpmem0";
/// See [`DIMM_MEMORY_ID`].
pub const DIMM_ID: &str = "dimm0";

impl Layout {
    /// A new VM's layout: its serial-named disks on the first ports, in order; `dimm_bytes` of
    /// memory to plug after boot.
    pub fn fresh(spec: &VmSpec, dimm_bytes: u64) -> Layout {
        let slots: Vec<Option<String>> = spec
            .disks
            .iter()
            .filter_map(|d| d.serial.clone().filter(|s| valid_serial(s)).map(Some))
            .collect();
        Layout {
            ports: (slots.len() as u32).clamp(MIN_PORTS, MAX_PORTS),
            slots,
            dimm_bytes,
        }
    }

    /// The port of the disk with `serial`, if it has one.
    pub fn port_of(&self, serial: &str) -> Option<u32> {
        self.slots
            .iter()
            .position(|s| s.as_deref() == Some(serial))
            .map(|p| p as u32)
    }

    /// The first free port, if any.
    pub fn free_port(&self) -> Option<u32> {
        (0..self.ports).find(|&p| self.slots.get(p as usize).is_none_or(|s| s.is_none()))
    }

    /// Puts the disk with `serial` on `port`.
    pub fn take(&mut self, port: u32, serial: &str) {
        let p = port as usize;
        if self.slots.len() <= p {
            self.slots.resize(p + 1, None);
        }
        self.slots[p] = Some(serial.to_string());
    }

    /// Frees the port of the disk with `serial`.
    pub fn release(&mut self, serial: &str) {
        for s in &mut self.slots {
            if s.as_deref() == Some(serial) {
                *s = None;
            }
        }
        while self.slots.last().is_some_and(|s| s.is_none()) {
            self.slots.pop();
        }
    }
}

/// Whether `serial` can be a virtio-blk serial here (the guest reads at most 20 bytes; nothing
/// that could end QEMU's option).
pub fn valid_serial(serial: &str) -> bool {
    (1..=20).contains(&serial.len()) && serial.bytes().all(|b| b.is_ascii_alphanumeric())
}

/// The QEMU id of the disk device with `serial`.
pub fn disk_device_id(serial: &str) -> String {
    format!("vd-{serial}")
}

/// The block node of the disk with `serial` attached while the VM runs (`blockdev-add`; a disk
/// attached at boot is a `-drive` that goes with its device).
pub fn disk_node_id(serial: &str) -> String {
    format!("vn-{serial}")
}

/// The burst a disk's I/O limit allows: 4× the sustained rate, like upstream.
pub fn io_burst(io_bps: u64) -> u64 {
    io_bps.saturating_mul(4)
}

/// What a VM gets beyond `spec`: the choices a saved VM must be restored with.
#[derive(Debug, Clone, Copy, Default)]
pub struct Boot<'a> {
    /// A versioned machine type (`pc-q35-7.2`); `None`: the board's alias (`q35`), which
    /// names the newest version of this QEMU.
    pub machine: Option<&'a str>,
    /// RAM in a template's file.
    pub template: Option<TemplateMemory<'a>>,
    /// A virtio balloon with free page reporting (memory back to the host), which VMs saved
    /// before it existed must be restored without.
    pub balloon: bool,
    /// Root ports, the disks on them and the DIMM; `None`: none of them (a VM saved before
    /// they existed).
    pub layout: Option<&'a Layout>,
}

/// Builds the full argv (without the binary) for `spec`.
pub fn argv(spec: &VmSpec, accel: Accel, arch: Arch, vsock: &VsockMode) -> Vec<String> {
    argv_with(spec, accel, arch, vsock, Boot::default())
}

/// [`argv`] with [`Boot`]'s choices. Template VMs boot with
/// [`hypedeck_guest_init::TEMPLATE_ARG`] (a VM started from one keeps the kernel's command
/// line of its template; its own is the same).
pub fn argv_with(
    spec: &VmSpec,
    accel: Accel,
    arch: Arch,
    vsock: &VsockMode,
    boot: Boot<'_>,
) -> Vec<String> {
    let Boot {
        machine,
        template,
        balloon,
        layout,
    } = boot;
    let empty = Layout::default();
    let layout = layout.unwrap_or(&empty);
    let files = RuntimeFiles::in_dir(&spec.runtime_dir);
    let mib = |b: u64| b.div_ceil(1 << 20);
    let mut a: Vec<String> = Vec::new();
    let mut push = |items: &[&str]| a.extend(items.iter().map(|s| s.to_string()));
    push(&[
        "-name",
        &format!(
            "hypedeck-{},process=hypedeck-{}",
            spec.instance_id, spec.instance_id
        ),
    ]);
    let board = machine.unwrap_or(arch.board());
    match template {
        None => push(&["-machine", board]),
        Some(memory) => {
            let id = default_ram_id(arch);
            push(&[
                "-machine",
                &format!("{board},memory-backend={id}"),
                "-object",
                &format!(
                    "memory-backend-file,id={id},size={}M,mem-path={},share={}",
                    mib(spec.memory_bytes),
                    q(memory.path),
                    if memory.shared { "on" } else { "off" }
                ),
            ]);
        }
    }
    match accel {
        Accel::Kvm => push(&["-accel", "kvm", "-cpu", "host"]),
        Accel::Tcg => match arch {
            Arch::X86_64 => push(&["-accel", "tcg"]),
            Arch::Aarch64 => push(&["-accel", "tcg", "-cpu", "max"]),
        },
    }
    push(&["-smp", &spec.vcpus.max(1).to_string()]);
    if spec.hotplug_bytes > 0 {
        let max = mib(spec.memory_bytes + spec.hotplug_bytes);
        push(&[
            "-m",
            &format!("size={}M,slots=4,maxmem={max}M", mib(spec.memory_bytes)),
        ]);
    } else {
        push(&["-m", &format!("{}M", mib(spec.memory_bytes))]);
    }
    if matches!(vsock, VsockMode::VhostUser(_)) {
        // vhost-user backends map guest memory: it must be a shareable memfd.
        push(&[
            "-object",
            &format!(
                "memory-backend-memfd,id=mem,size={}M,share=on",
                mib(spec.memory_bytes)
            ),
            "-numa",
            "node,memdev=mem",
        ]);
    }
    push(&[
        "-nodefaults",
        "-no-user-config",
        "-display",
        "none",
        "-no-reboot",
    ]);
    push(&["-kernel", &spec.kernel.display().to_string()]);
    push(&["-initrd", &spec.initrd.display().to_string()]);
    let mut cmdline = format!("console={} {}", arch.console(), spec.kernel_args)
        .trim()
        .to_string();
    if template.is_some() {
        cmdline.push(' ');
        cmdline.push_str(hypedeck_guest_init::TEMPLATE_ARG);
    }
    push(&["-append", &cmdline]);
    push(&[
        "-chardev",
        &format!("file,id=serial0,path={},append=on", q(&spec.serial_log)),
    ]);
    push(&["-serial", "chardev:serial0"]);
    if layout.dimm_bytes > 0 {
        // Plugged after the first boot (see `Layout::dimm_bytes`): cold-plugged at a restore.
        push(&[
            "-object",
            &format!(
                "memory-backend-ram,id={DIMM_MEMORY_ID},size={}M",
                mib(layout.dimm_bytes)
            ),
            "-device",
            &format!("pc-dimm,id={DIMM_ID},memdev={DIMM_MEMORY_ID}"),
        ]);
    }
    // Root ports before the disks, at fixed addresses (functions of slots 0x10-0x12), so the
    // devices QEMU places itself keep their slots whatever the ports hold.
    for p in 0..layout.ports {
        let function = p % 8;
        push(&[
            "-device",
            &format!(
                "pcie-root-port,id=hp{p},bus=pcie.0,chassis={},addr=0x{:x}.{function}{},io-reserve=0",
                p + 1,
                0x10 + p / 8,
                if function == 0 {
                    ",multifunction=on"
                } else {
                    ""
                }
            ),
        ]);
    }
    for (i, disk) in spec.disks.iter().enumerate() {
        let mut drive = format!(
            "file={},if=none,id=disk{i},format=raw,cache=writeback",
            q(&disk.path)
        );
        if disk.readonly {
            drive.push_str(",readonly=on");
        }
        if disk.io_bps > 0 {
            drive.push_str(&format!(
                ",throttling.bps-total={},throttling.bps-total-max={}",
                disk.io_bps,
                io_burst(disk.io_bps)
            ));
        }
        push(&["-drive", &drive]);
        let mut device = format!("virtio-blk-pci,drive=disk{i}");
        if let Some(serial) = disk.serial.as_deref().filter(|s| valid_serial(s)) {
            device.push_str(&format!(",id={},serial={serial}", disk_device_id(serial)));
            if let Some(port) = layout.port_of(serial) {
                device.push_str(&format!(",bus=hp{port}"));
            }
        }
        push(&["-device", &device]);
    }
    if let Some(net) = &spec.network {
        // Every frame goes to the engine's userspace stack, which decides every flow (policy,
        // DNS, port forwards, the credential proxy): QEMU only carries frames. QEMU listens,
        // so an engine that restarts connects again to a VM that kept running.
        let netdev = format!(
            "stream,id=net0,server=on,addr.type=unix,addr.path={}",
            q(&files.net)
        );
        push(&["-netdev", &netdev]);
        push(&[
            "-device",
            &format!("virtio-net-pci,netdev=net0,mac={}", net.mac),
        ]);
    }
    if balloon {
        // Free pages the guest reports are given back to the host; under memory pressure the
        // guest takes ballooned pages back before it kills anything.
        push(&[
            "-device",
            "virtio-balloon-pci,id=balloon0,free-page-reporting=on,deflate-on-oom=on",
        ]);
    }
    push(&["-device", "virtio-serial-pci"]);
    push(&[
        "-chardev",
        &format!(
            "socket,id=ctl,path={},server=on,wait=off",
            q(&files.control)
        ),
    ]);
    push(&[
        "-device",
        &format!(
            "virtserialport,chardev=ctl,name={}",
            hypedeck_guest_init::CONTROL_PORT
        ),
    ]);
    // The agent is reached over exactly one channel, so a working exec proves that channel.
    match vsock {
        VsockMode::Off => {
            push(&[
                "-chardev",
                &format!(
                    "socket,id=agent,path={},server=on,wait=off",
                    q(&files.agent)
                ),
            ]);
            push(&[
                "-device",
                &format!(
                    "virtserialport,chardev=agent,name={}",
                    hypedeck_guest_init::agent_proto::AGENT_PORT
                ),
            ]);
        }
        VsockMode::Kernel => push(&[
            "-device",
            &format!("vhost-vsock-pci,guest-cid={}", spec.vsock_cid),
        ]),
        VsockMode::VhostUser(_) => {
            push(&[
                "-chardev",
                &format!("socket,id=vsock,path={}", q(&files.vhost_user)),
            ]);
            push(&["-device", "vhost-user-vsock-pci,chardev=vsock"]);
        }
    }
    push(&[
        "-qmp",
        &format!("unix:{},server=on,wait=off", q(&files.qmp)),
    ]);
    push(&["-pidfile", &files.pidfile.display().to_string()]);
    push(&["-daemonize"]);
    a
}

#[cfg(test)]
mod tests {
    use std::path::PathBuf;

    use hypedeck_hypervisor::{DiskSpec, NetSpec, VmSpec};
    use hypedeck_model::{PortForward, PortProtocol};

    use super::*;

    fn spec() -> VmSpec {
        VmSpec {
            instance_id: "tz4a98xxat96iws9zmbrgj3a".into(),
            runtime_dir: PathBuf::from("/data/instances/tz4a98xxat96iws9zmbrgj3a/run"),
            vcpus: 2,
            memory_bytes: 1 << 30,
            hotplug_bytes: 0,
            kernel: PathBuf::from("/data/system/kernel/vmlinuz"),
            initrd: PathBuf::from("/data/system/initrd.img"),
            kernel_args: "quiet panic=-1".into(),
            disks: vec![
                DiskSpec {
                    path: PathBuf::from("/data/images/abc/rootfs.ext4"),
                    readonly: true,
                    io_bps: 0,
                    serial: None,
                },
                DiskSpec {
                    path: PathBuf::from("/data/i/x/overlay,1.ext4"),
                    readonly: false,
                    io_bps: 100 << 20,
                    serial: None,
                },
            ],
            serial_log: PathBuf::from("/data/instances/x/logs/app.log"),
            network: Some(NetSpec {
                mac: "02:00:00:ab:cd:ef".into(),
                subnet: "10.100.7.0/24".into(),
                gateway: "10.100.7.2".into(),
                dns: "10.100.7.3".into(),
                guest_ip: "10.100.7.15".into(),
                restrict: true,
                guest_forwards: Vec::new(),
                host_forwards: vec![
                    PortForward {
                        host_port: 8080,
                        guest_port: 80,
                        protocol: PortProtocol::Tcp,
                    },
                    PortForward {
                        host_port: 5353,
                        guest_port: 53,
                        protocol: PortProtocol::Udp,
                    },
                ],
            }),
            vsock_cid: 0x1234,
        }
    }

    #[test]
    fn argv_snapshot_x86_tcg() {
        let got = argv(&spec(), Accel::Tcg, Arch::X86_64, &VsockMode::Off).join(" ");
        let want = "-name hypedeck-tz4a98xxat96iws9zmbrgj3a,process=hypedeck-tz4a98xxat96iws9zmbrgj3a \
-machine q35 -accel tcg -smp 2 -m 1024M -nodefaults -no-user-config -display none -no-reboot \
-kernel /data/system/kernel/vmlinuz -initrd /data/system/initrd.img -append console=ttyS0 quiet panic=-1 \
-chardev file,id=serial0,path=/data/instances/x/logs/app.log,append=on -serial chardev:serial0 \
-drive file=/data/images/abc/rootfs.ext4,if=none,id=disk0,format=raw,cache=writeback,readonly=on \
-device virtio-blk-pci,drive=disk0 \
-drive file=/data/i/x/overlay,,1.ext4,if=none,id=disk1,format=raw,cache=writeback,throttling.bps-total=104857600,throttling.bps-total-max=419430400 \
-device virtio-blk-pci,drive=disk1 \
-netdev stream,id=net0,server=on,addr.type=unix,addr.path=/data/instances/tz4a98xxat96iws9zmbrgj3a/run/net.sock \
-device virtio-net-pci,netdev=net0,mac=02:00:00:ab:cd:ef -device virtio-serial-pci \
-chardev socket,id=ctl,path=/data/instances/tz4a98xxat96iws9zmbrgj3a/run/ctl.sock,server=on,wait=off \
-device virtserialport,chardev=ctl,name=hypedeck.ctl \
-chardev socket,id=agent,path=/data/instances/tz4a98xxat96iws9zmbrgj3a/run/agent.sock,server=on,wait=off \
-device virtserialport,chardev=agent,name=hypedeck.agent \
-qmp unix:/data/instances/tz4a98xxat96iws9zmbrgj3a/run/qmp.sock,server=on,wait=off \
-pidfile /data/instances/tz4a98xxat96iws9zmbrgj3a/run/qemu.pid -daemonize";
        assert_eq!(got, want);
    }

    #[test]
    fn template_vms_have_file_backed_ram_under_the_default_id() {
        let s = spec();
        let file = PathBuf::from("/data/templates/k/memory.ram");
        let making = argv_with(
            &s,
            Accel::Tcg,
            Arch::X86_64,
            &VsockMode::Off,
            Boot {
                template: Some(TemplateMemory {
                    path: &file,
                    shared: true,
                }),
                ..Boot::default()
            },
        )
        .join(" ");
        assert!(
            making.contains(
                "-machine q35,memory-backend=pc.ram -object memory-backend-file,id=pc.ram,\
size=1024M,mem-path=/data/templates/k/memory.ram,share=on"
            ),
            "{making}"
        );
        assert!(
            making.contains("-append console=ttyS0 quiet panic=-1 hypedeck.template=1"),
            "{making}"
        );
        let clone = argv_with(
            &s,
            Accel::Tcg,
            Arch::Aarch64,
            &VsockMode::Off,
            Boot {
                template: Some(TemplateMemory {
                    path: &file,
                    shared: false,
                }),
                ..Boot::default()
            },
        )
        .join(" ");
        assert!(
            clone.contains(
                "-machine virt,memory-backend=mach-virt.ram -object \
memory-backend-file,id=mach-virt.ram,size=1024M,mem-path=/data/templates/k/memory.ram,share=off"
            ),
            "{clone}"
        );
        // Apart from the RAM and the kernel argument, the device model is the same.
        let plain = argv(&s, Accel::Tcg, Arch::X86_64, &VsockMode::Off);
        let without: Vec<String> = making
            .replace(
                " -object memory-backend-file,id=pc.ram,size=1024M,\
mem-path=/data/templates/k/memory.ram,share=on",
                "",
            )
            .replace(",memory-backend=pc.ram", "")
            .replace(" hypedeck.template=1", "")
            .split(' ')
            .map(String::from)
            .collect();
        assert_eq!(without.join(" "), plain.join(" "));
    }

    #[test]
    fn volume_disks_sit_on_root_ports_that_a_restore_puts_back() {
        let mut s = spec();
        s.disks.push(DiskSpec {
            path: PathBuf::from("/data/volumes/a/data.raw"),
            readonly: true,
            io_bps: 0,
            serial: Some("v0123456789abcdef".into()),
        });
        s.disks.push(DiskSpec {
            path: PathBuf::from("/data/volumes/b/data.raw"),
            readonly: false,
            io_bps: 0,
            serial: Some("bad,serial".into()),
        });
        let fresh = Layout::fresh(&s, 0);
        assert_eq!(fresh.ports, MIN_PORTS);
        assert_eq!(
            fresh.slots,
            vec![Some("v0123456789abcdef".to_string())],
            "a bad serial is dropped"
        );
        let boot = |layout| {
            argv_with(
                &s,
                Accel::Tcg,
                Arch::X86_64,
                &VsockMode::Off,
                Boot {
                    layout,
                    ..Boot::default()
                },
            )
            .join(" ")
        };
        let a = boot(Some(&fresh));
        assert!(
            a.contains("-device pcie-root-port,id=hp0,bus=pcie.0,chassis=1,addr=0x10.0,multifunction=on,io-reserve=0 -device pcie-root-port,id=hp1,bus=pcie.0,chassis=2,addr=0x10.1,io-reserve=0"),
            "{a}"
        );
        assert!(
            a.contains("id=hp7,bus=pcie.0,chassis=8,addr=0x10.7,io-reserve=0 -drive"),
            "{a}"
        );
        assert!(!a.contains("id=hp8"), "{a}");
        assert!(
            a.contains("-device virtio-blk-pci,drive=disk2,id=vd-v0123456789abcdef,serial=v0123456789abcdef,bus=hp0"),
            "{a}"
        );
        assert!(a.contains("-device virtio-blk-pci,drive=disk3 "), "{a}");
        // A disk attached later on port 5, and a DIMM: the restore's argv puts both back.
        let mut later = fresh.clone();
        later.release("v0123456789abcdef");
        later.take(5, "v0123456789abcdef");
        later.dimm_bytes = 256 << 20;
        assert_eq!(later.free_port(), Some(0));
        let r = boot(Some(&later));
        assert!(r.contains(",serial=v0123456789abcdef,bus=hp5"), "{r}");
        assert!(
            r.contains("-object memory-backend-ram,id=hpmem0,size=256M -device pc-dimm,id=dimm0,memdev=hpmem0"),
            "{r}"
        );
        // A VM saved before layouts: no ports, its volume disks on the root bus.
        let old = boot(None);
        assert!(
            !old.contains("pcie-root-port") && !old.contains("pc-dimm"),
            "{old}"
        );
        assert!(
            old.contains(",serial=v0123456789abcdef -drive")
                || old.contains(",serial=v0123456789abcdef -device"),
            "{old}"
        );
        let json = serde_json::to_string(&later).unwrap();
        assert_eq!(serde_json::from_str::<Layout>(&json).unwrap(), later);
    }

    #[test]
    fn the_machine_type_is_pinned_to_the_version_its_alias_names() {
        let help = "Supported machines are:\n\
microvm              microvm (i386)\n\
pc                   Standard PC (i440FX + PIIX, 1996) (alias of pc-i440fx-7.2)\n\
q35                  Standard PC (Q35 + ICH9, 2009) (alias of pc-q35-7.2)\n\
pc-q35-7.2           Standard PC (Q35 + ICH9, 2009)\n";
        assert_eq!(
            Arch::X86_64.versioned_machine(help).as_deref(),
            Some("pc-q35-7.2")
        );
        let arm = "virt                 QEMU 8.0 ARM Virtual Machine (alias of virt-8.0)\n";
        assert_eq!(
            Arch::Aarch64.versioned_machine(arm).as_deref(),
            Some("virt-8.0")
        );
        assert_eq!(Arch::X86_64.versioned_machine("q35 no alias here"), None);
        assert_eq!(
            Arch::X86_64.versioned_machine("q35  x (alias of pc,q35 -x)"),
            None,
            "not a machine name"
        );
        let pinned = argv_with(
            &spec(),
            Accel::Tcg,
            Arch::X86_64,
            &VsockMode::Off,
            Boot {
                machine: Some("pc-q35-7.1"),
                balloon: true,
                ..Boot::default()
            },
        )
        .join(" ");
        assert!(
            pinned.contains("-machine pc-q35-7.1 -accel tcg"),
            "{pinned}"
        );
        assert!(
            pinned.contains(
                "-device virtio-balloon-pci,id=balloon0,free-page-reporting=on,deflate-on-oom=on \
-device virtio-serial-pci"
            ),
            "{pinned}"
        );
    }

    #[test]
    fn vsock_modes_replace_the_agent_serial_port() {
        let s = spec();
        let kernel = argv(&s, Accel::Kvm, Arch::X86_64, &VsockMode::Kernel).join(" ");
        assert!(
            kernel.contains("-device vhost-vsock-pci,guest-cid=4660"),
            "{kernel}"
        );
        assert!(!kernel.contains("hypedeck.agent"), "{kernel}");
        assert!(!kernel.contains("memory-backend-memfd"), "{kernel}");
        // The control port stays: it is not the agent.
        assert!(kernel.contains("name=hypedeck.ctl"), "{kernel}");

        let user = argv(
            &s,
            Accel::Tcg,
            Arch::X86_64,
            &VsockMode::VhostUser("/usr/bin/vhost-device-vsock".into()),
        )
        .join(" ");
        assert!(
            user.contains(
                "-m 1024M -object memory-backend-memfd,id=mem,size=1024M,share=on -numa node,memdev=mem"
            ),
            "{user}"
        );
        assert!(
            user.contains(
                "-chardev socket,id=vsock,path=/data/instances/tz4a98xxat96iws9zmbrgj3a/run/vhu.sock \
-device vhost-user-vsock-pci,chardev=vsock"
            ),
            "{user}"
        );
        assert!(!user.contains("hypedeck.agent"), "{user}");
    }

    #[test]
    fn kvm_hotplug_and_arm() {
        let mut s = spec();
        s.hotplug_bytes = 2 << 30;
        s.network = None;
        let a = argv(&s, Accel::Kvm, Arch::X86_64, &VsockMode::Off).join(" ");
        assert!(a.contains("-accel kvm -cpu host"), "{a}");
        assert!(a.contains("-m size=1024M,slots=4,maxmem=3072M"), "{a}");
        assert!(!a.contains("-netdev"), "{a}");
        let arm = argv(&s, Accel::Tcg, Arch::Aarch64, &VsockMode::Off).join(" ");
        assert!(arm.contains("-machine virt -accel tcg -cpu max"), "{arm}");
        assert!(arm.contains("console=ttyAMA0"), "{arm}");
    }
}
