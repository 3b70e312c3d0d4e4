//! `VmSpec` -> [`VzPlan`]: everything the `hypedeck-vz` helper needs to build a
//! `VZVirtualMachineConfiguration`, as plain serde data. Pure and tested on every OS; the
//! helper turns each field into exactly one Virtualization.framework object and nothing else,
//! so what a VM gets is decided (and snapshot-tested) here.
//!
//! What vz cannot do is refused here, before anything is spawned: memory hotplug and disk I/O
//! limits ([`PlanError::Unsupported`]). Forwarded ports and egress are the engine's network
//! stack's, on the frames of the guest NIC's socket pair.

use std::path::{Path, PathBuf};

use hypedeck_hypervisor::VmSpec;
use serde::{Deserialize, Serialize};

/// One mebibyte. VZ wants the memory size in whole MiB.
pub const MIB: u64 = 1 << 20;

/// The smallest memory size Virtualization.framework accepts
/// (`VZVirtualMachineConfiguration.minimumAllowedMemorySize`, 128 MiB on every macOS so far).
/// The helper checks the host's real bounds again before validating.
pub const MIN_MEMORY_BYTES: u64 = 128 * MIB;

/// Longest unix socket path macOS accepts (`sun_path` is 104 bytes with the NUL).
pub const MAX_SOCKET_PATH: usize = 103;

/// The guest console: the virtio console's first port.
pub const CONSOLE: &str = "hvc0";

/// Saved VM state inside a snapshot dir (written by `save`, read by `--restore`).
pub const STATE_FILE: &str = "vz-state.bin";

/// The VM's generic machine identifier (a restore needs the one the state was saved with).
pub const MACHINE_ID_FILE: &str = "vz-machine-id.bin";

/// Files of one VM in its runtime dir. The helper creates them; the backend only reads them.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RuntimeFiles {
    /// The helper's control socket (line protocol in [`crate::control`]).
    pub control: PathBuf,
    /// The hybrid-vsock socket (`CONNECT <port>\n` -> `OK <port>\n`, then raw bytes).
    pub vsock: PathBuf,
    /// Pidfile, exclusively `flock`ed by the helper while it lives.
    pub pidfile: PathBuf,
    /// This plan as JSON (the helper's input).
    pub plan: PathBuf,
    /// The helper's stdout/stderr.
    pub log: PathBuf,
    /// The VM's machine identifier ([`MACHINE_ID_FILE`]).
    pub machine_id: PathBuf,
}

impl RuntimeFiles {
    /// The files of a runtime dir.
    pub fn in_dir(dir: &Path) -> RuntimeFiles {
        RuntimeFiles {
            control: dir.join("vz.sock"),
            vsock: dir.join("vsock.sock"),
            pidfile: dir.join("vz.pid"),
            plan: dir.join("vz-plan.json"),
            log: dir.join("vmm.log"),
            machine_id: dir.join(MACHINE_ID_FILE),
        }
    }
}

/// `VZLinuxBootLoader`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LinuxBoot {
    /// Uncompressed arm64 `Image` (or x86_64 `bzImage` on Intel Macs).
    pub kernel: PathBuf,
    /// Initramfs.
    pub initrd: PathBuf,
    /// Kernel command line, `console=hvc0` first.
    pub command_line: String,
}

/// A `VZVirtioBlockDeviceConfiguration` over a `VZDiskImageStorageDeviceAttachment` (raw image).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Disk {
    /// Image file on the host.
    pub path: PathBuf,
    /// Attach read-only.
    pub read_only: bool,
}

/// How the network device reaches the outside.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum NetworkAttachment {
    /// `VZFileHandleNetworkDeviceAttachment` on one end of a datagram socket pair (one
    /// Ethernet frame per datagram); the helper hands the other end to the engine's network
    /// stack ([`Request::Network`](crate::control::Request::Network)), which serves DHCP, DNS
    /// and every flow, as for QEMU.
    FileHandle,
}

/// A `VZVirtioNetworkDeviceConfiguration`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Network {
    /// Attachment.
    pub attachment: NetworkAttachment,
    /// Locally administered unicast MAC, lowercase `02:xx:xx:xx:xx:xx` style.
    pub mac: String,
}

/// The devices every vz VM gets.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Devices {
    /// `VZVirtioSocketDeviceConfiguration` (the exec agent's transport).
    pub vsock: bool,
    /// `VZVirtioEntropyDeviceConfiguration` (guest `/dev/hwrng`).
    pub entropy: bool,
    /// `VZVirtioTraditionalMemoryBalloonDeviceConfiguration`.
    pub memory_balloon: bool,
}

/// Everything the helper builds one VM from. Written as JSON to [`RuntimeFiles::plan`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct VzPlan {
    /// Instance id (for log lines).
    pub instance_id: String,
    /// `CPUCount`.
    pub cpu_count: u32,
    /// `memorySize`, a whole number of MiB.
    pub memory_bytes: u64,
    /// Boot loader.
    pub boot: LinuxBoot,
    /// Disks in attach order (`/dev/vda`, `/dev/vdb`, ...).
    pub disks: Vec<Disk>,
    /// Network, if any.
    pub network: Option<Network>,
    /// A `VZVirtioConsoleDeviceSerialPortConfiguration` appending to this file (the app log).
    pub console_log: PathBuf,
    /// Fixed devices.
    pub devices: Devices,
    /// The guest vsock port of the exec agent.
    pub agent_port: u32,
    /// Runtime files.
    pub files: RuntimeFiles,
}

/// Why a spec cannot become a vz plan.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PlanError {
    /// Virtualization.framework cannot do this at all.
    #[error("{operation} is not supported by Apple Virtualization.framework")]
    Unsupported {
        /// What was asked for.
        operation: &'static str,
    },
    /// No vCPUs.
    #[error("a vz vm needs at least one cpu")]
    Cpus,
    /// Too little memory.
    #[error("a vz vm needs at least {min_mib} MiB of memory, got {mib} MiB")]
    Memory {
        /// Requested MiB (rounded up).
        mib: u64,
        /// Minimum MiB.
        min_mib: u64,
    },
    /// Not a locally administered unicast MAC.
    #[error(
        "mac address {mac:?} is not a locally administered unicast address like 02:xx:xx:xx:xx:xx"
    )]
    Mac {
        /// The MAC given.
        mac: String,
    },
    /// A path VZ cannot take (relative, or not UTF-8).
    #[error("{what} path {path:?} must be absolute and valid UTF-8")]
    Path {
        /// Which path.
        what: &'static str,
        /// The path given.
        path: PathBuf,
    },
    /// A socket path longer than macOS allows.
    #[error("{what} socket path {path:?} is longer than {MAX_SOCKET_PATH} bytes")]
    SocketPath {
        /// Which socket.
        what: &'static str,
        /// The path.
        path: PathBuf,
    },
}

/// Builds the plan for `spec`, refusing what vz cannot do.
pub fn plan(spec: &VmSpec) -> Result<VzPlan, PlanError> {
    let unsupported = |operation| Err(PlanError::Unsupported { operation });
    if spec.hotplug_bytes > 0 {
        return unsupported("memory hotplug");
    }
    if spec.disks.iter().any(|d| d.io_bps > 0) {
        return unsupported("disk i/o limits");
    }
    // Forwarded ports and egress are the engine's network stack's work, on the frames the
    // helper hands over: nothing to refuse here.
    if spec.vcpus == 0 {
        return Err(PlanError::Cpus);
    }
    let mib = spec.memory_bytes.div_ceil(MIB);
    if mib * MIB < MIN_MEMORY_BYTES {
        return Err(PlanError::Memory {
            mib,
            min_mib: MIN_MEMORY_BYTES / MIB,
        });
    }
    let path = |what: &'static str, p: &Path| -> Result<PathBuf, PlanError> {
        if p.is_absolute() && p.to_str().is_some() {
            Ok(p.to_path_buf())
        } else {
            Err(PlanError::Path {
                what,
                path: p.to_path_buf(),
            })
        }
    };
    let runtime_dir = path("runtime dir", &spec.runtime_dir)?;
    let files = RuntimeFiles::in_dir(&runtime_dir);
    for (what, socket) in [("control", &files.control), ("vsock", &files.vsock)] {
        if socket.as_os_str().len() > MAX_SOCKET_PATH {
            return Err(PlanError::SocketPath {
                what,
                path: socket.clone(),
            });
        }
    }
    let disks = spec
        .disks
        .iter()
        .map(|d| {
            Ok(Disk {
                path: path("disk", &d.path)?,
                read_only: d.readonly,
            })
        })
        .collect::<Result<Vec<_>, PlanError>>()?;
    let network = match &spec.network {
        Some(net) => Some(Network {
            attachment: NetworkAttachment::FileHandle,
            mac: local_mac(&net.mac)?,
        }),
        None => None,
    };
    let command_line = format!("console={CONSOLE} {}", spec.kernel_args)
        .trim()
        .to_string();
    Ok(VzPlan {
        instance_id: spec.instance_id.clone(),
        cpu_count: spec.vcpus,
        memory_bytes: mib * MIB,
        boot: LinuxBoot {
            kernel: path("kernel", &spec.kernel)?,
            initrd: path("initrd", &spec.initrd)?,
            command_line,
        },
        disks,
        network,
        console_log: path("console log", &spec.serial_log)?,
        devices: Devices {
            vsock: true,
            entropy: true,
            memory_balloon: true,
        },
        agent_port: hypedeck_guest_init::agent_proto::AGENT_VSOCK_PORT,
        files,
    })
}

/// Normalizes `mac` to lowercase, requiring six `xx` octets with the locally administered bit
/// set and the multicast bit clear (what `VZMACAddress` accepts for a guest NIC).
pub fn local_mac(mac: &str) -> Result<String, PlanError> {
    let bad = || PlanError::Mac { mac: mac.into() };
    let octets = mac
        .split(':')
        .map(|o| {
            if o.len() == 2 && o.bytes().all(|b| b.is_ascii_hexdigit()) {
                u8::from_str_radix(o, 16).map_err(|_| bad())
            } else {
                Err(bad())
            }
        })
        .collect::<Result<Vec<u8>, PlanError>>()?;
    match octets.first() {
        Some(first) if octets.len() == 6 && first & 0x02 != 0 && first & 0x01 == 0 => {
            Ok(mac.to_ascii_lowercase())
        }
        _ => Err(bad()),
    }
}

/// How the backend launches the helper: `hypedeck-vz run <plan.json> [--restore <state>]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Launch {
    /// The plan file.
    pub plan: PathBuf,
    /// Saved state to restore (then resume) instead of a cold boot.
    pub restore: Option<PathBuf>,
}

impl Launch {
    /// The helper's argv (without the binary).
    pub fn args(&self) -> Vec<std::ffi::OsString> {
        let mut args = vec!["run".into(), self.plan.clone().into_os_string()];
        if let Some(state) = &self.restore {
            args.push("--restore".into());
            args.push(state.clone().into_os_string());
        }
        args
    }

    /// Parses the helper's argv (without the binary).
    pub fn parse(args: &[std::ffi::OsString]) -> Result<Launch, String> {
        const USAGE: &str = "usage: hypedeck-vz run <plan.json> [--restore <state file>]";
        match args {
            [run, plan] if run == "run" => Ok(Launch {
                plan: plan.into(),
                restore: None,
            }),
            [run, plan, flag, state] if run == "run" && flag == "--restore" => Ok(Launch {
                plan: plan.into(),
                restore: Some(state.into()),
            }),
            _ => Err(USAGE.to_string()),
        }
    }
}

#[cfg(test)]
mod tests {
    use hypedeck_hypervisor::{DiskSpec, NetSpec};
    use hypedeck_model::{PortForward, PortProtocol};

    use super::*;

    fn spec() -> VmSpec {
        VmSpec {
            instance_id: "tz4a98xxat96iws9zmbrgj3a".into(),
            runtime_dir: PathBuf::from("/data/instances/tz4a98xxat96iws9zmbrgj3a/run"),
            vcpus: 2,
            memory_bytes: 1 << 30,
            hotplug_bytes: 0,
            kernel: PathBuf::from("/data/system/kernel/Image"),
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
                    path: PathBuf::from("/data/i/x/overlay.ext4"),
                    readonly: false,
                    io_bps: 0,
                    serial: None,
                },
            ],
            serial_log: PathBuf::from("/data/instances/x/logs/app.log"),
            network: Some(NetSpec {
                mac: "02:00:00:AB:cd:ef".into(),
                subnet: "10.100.7.0/24".into(),
                gateway: "10.100.7.2".into(),
                dns: "10.100.7.3".into(),
                guest_ip: "10.100.7.15".into(),
                restrict: false,
                guest_forwards: vec![],
                host_forwards: vec![],
            }),
            vsock_cid: 3,
        }
    }

    #[test]
    fn full_plan_snapshot() {
        let got = serde_json::to_string_pretty(&plan(&spec()).unwrap()).unwrap();
        let want = r#"{
  "instance_id": "tz4a98xxat96iws9zmbrgj3a",
  "cpu_count": 2,
  "memory_bytes": 1073741824,
  "boot": {
    "kernel": "/data/system/kernel/Image",
    "initrd": "/data/system/initrd.img",
    "command_line": "console=hvc0 quiet panic=-1"
  },
  "disks": [
    {
      "path": "/data/images/abc/rootfs.ext4",
      "read_only": true
    },
    {
      "path": "/data/i/x/overlay.ext4",
      "read_only": false
    }
  ],
  "network": {
    "attachment": "file_handle",
    "mac": "02:00:00:ab:cd:ef"
  },
  "console_log": "/data/instances/x/logs/app.log",
  "devices": {
    "vsock": true,
    "entropy": true,
    "memory_balloon": true
  },
  "agent_port": 1024,
  "files": {
    "control": "/data/instances/tz4a98xxat96iws9zmbrgj3a/run/vz.sock",
    "vsock": "/data/instances/tz4a98xxat96iws9zmbrgj3a/run/vsock.sock",
    "pidfile": "/data/instances/tz4a98xxat96iws9zmbrgj3a/run/vz.pid",
    "plan": "/data/instances/tz4a98xxat96iws9zmbrgj3a/run/vz-plan.json",
    "log": "/data/instances/tz4a98xxat96iws9zmbrgj3a/run/vmm.log",
    "machine_id": "/data/instances/tz4a98xxat96iws9zmbrgj3a/run/vz-machine-id.bin"
  }
}"#;
        assert_eq!(got, want);
    }

    #[test]
    fn plan_round_trips_through_json() {
        let p = plan(&spec()).unwrap();
        let back: VzPlan = serde_json::from_str(&serde_json::to_string(&p).unwrap()).unwrap();
        assert_eq!(back, p);
    }

    #[test]
    fn memory_rounds_up_to_whole_mib() {
        let mut s = spec();
        s.memory_bytes = 256 * MIB + 1;
        assert_eq!(plan(&s).unwrap().memory_bytes, 257 * MIB);
        s.memory_bytes = 256 * MIB;
        assert_eq!(plan(&s).unwrap().memory_bytes, 256 * MIB);
    }

    #[test]
    fn memory_below_minimum_is_refused_with_sizes() {
        let mut s = spec();
        s.memory_bytes = 64 * MIB;
        let e = plan(&s).unwrap_err();
        assert_eq!(
            e,
            PlanError::Memory {
                mib: 64,
                min_mib: 128
            }
        );
        assert_eq!(
            e.to_string(),
            "a vz vm needs at least 128 MiB of memory, got 64 MiB"
        );
        s.memory_bytes = 127 * MIB + 1;
        assert!(plan(&s).is_ok(), "rounds up to exactly 128 MiB");
    }

    #[test]
    fn zero_cpus_is_refused() {
        let mut s = spec();
        s.vcpus = 0;
        assert_eq!(plan(&s).unwrap_err(), PlanError::Cpus);
    }

    #[test]
    fn command_line_without_extra_args() {
        let mut s = spec();
        s.kernel_args = String::new();
        assert_eq!(plan(&s).unwrap().boot.command_line, "console=hvc0");
    }

    #[test]
    fn no_network_means_no_nic() {
        let mut s = spec();
        s.network = None;
        assert_eq!(plan(&s).unwrap().network, None);
    }

    fn unsupported(s: &VmSpec) -> &'static str {
        match plan(s) {
            Err(PlanError::Unsupported { operation }) => operation,
            other => panic!("expected unsupported, got {other:?}"),
        }
    }

    #[test]
    fn refuses_what_vz_cannot_do() {
        let mut s = spec();
        s.hotplug_bytes = 1 << 30;
        assert_eq!(unsupported(&s), "memory hotplug");

        let mut s = spec();
        s.disks[1].io_bps = 100 << 20;
        assert_eq!(unsupported(&s), "disk i/o limits");

        assert_eq!(
            plan(&s).unwrap_err().to_string(),
            "disk i/o limits is not supported by Apple Virtualization.framework"
        );

        // Ports and egress are served by the engine's stack on the NIC's frames.
        let mut s = spec();
        if let Some(net) = s.network.as_mut() {
            net.host_forwards.push(PortForward {
                host_port: 8080,
                guest_port: 80,
                protocol: PortProtocol::Tcp,
            });
            net.restrict = true;
        }
        let network = plan(&s).unwrap().network.unwrap();
        assert_eq!(network.attachment, NetworkAttachment::FileHandle);
    }

    #[test]
    fn macs_must_be_local_unicast() {
        assert_eq!(local_mac("02:00:00:AB:CD:EF").unwrap(), "02:00:00:ab:cd:ef");
        assert_eq!(local_mac("5a:1b:2c:3d:4e:5f").unwrap(), "5a:1b:2c:3d:4e:5f");
        for bad in [
            "00:11:22:33:44:55", // universally administered
            "03:00:00:00:00:01", // multicast
            "02:00:00:00:00",    // five octets
            "02:00:00:00:00:00:00",
            "02-00-00-00-00-01",
            "02:00:00:00:00:0g",
            "2:00:00:00:00:01",
            "",
        ] {
            assert!(local_mac(bad).is_err(), "{bad}");
        }
        let mut s = spec();
        if let Some(net) = s.network.as_mut() {
            net.mac = "00:11:22:33:44:55".into();
        }
        assert!(matches!(plan(&s), Err(PlanError::Mac { .. })));
    }

    #[test]
    fn paths_must_be_absolute() {
        let mut s = spec();
        s.kernel = PathBuf::from("kernel/Image");
        assert_eq!(
            plan(&s).unwrap_err(),
            PlanError::Path {
                what: "kernel",
                path: PathBuf::from("kernel/Image")
            }
        );
        let mut s = spec();
        s.disks[0].path = PathBuf::from("rootfs.ext4");
        assert!(matches!(
            plan(&s),
            Err(PlanError::Path { what: "disk", .. })
        ));
    }

    #[test]
    fn long_socket_paths_are_refused() {
        let mut s = spec();
        s.runtime_dir = PathBuf::from(format!("/{}", "d".repeat(94)));
        assert!(matches!(
            plan(&s),
            Err(PlanError::SocketPath { what: "vsock", .. })
        ));
    }

    #[test]
    fn launch_args_round_trip() {
        let boot = Launch {
            plan: PathBuf::from("/run/x/vz-plan.json"),
            restore: None,
        };
        assert_eq!(Launch::parse(&boot.args()).unwrap(), boot);
        let restore = Launch {
            plan: PathBuf::from("/run/x/vz-plan.json"),
            restore: Some(PathBuf::from("/snap/x/vz-state.bin")),
        };
        let args = restore.args();
        assert_eq!(args[2], "--restore");
        assert_eq!(Launch::parse(&args).unwrap(), restore);
        assert!(Launch::parse(&["start".into(), "p".into()]).is_err());
        assert!(Launch::parse(&[]).is_err());
    }
}
