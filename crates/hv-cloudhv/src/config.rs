//! `VmSpec` -> Cloud Hypervisor's `VmConfig` (the body of `PUT /api/v1/vm.create`). Pure;
//! every field is covered by the snapshot test below. Field names follow Cloud Hypervisor's
//! OpenAPI spec (`vmm/src/api/openapi/cloud-hypervisor.yaml`).

use std::path::{Path, PathBuf};

use hypedeck_hypervisor::VmSpec;
use serde::{Deserialize, Serialize};

/// Files the backend keeps in a VM's runtime dir.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RuntimeFiles {
    /// Cloud Hypervisor's REST API socket (`--api-socket path=…`).
    pub api: PathBuf,
    /// Our pidfile for the `cloud-hypervisor` process (it does not write one itself).
    pub pidfile: PathBuf,
    /// Cloud Hypervisor's own log (`--log-file`).
    pub vmm_log: PathBuf,
    /// Its stdout/stderr (errors printed before the log file is set up).
    pub vmm_output: PathBuf,
    /// The hybrid-vsock unix socket Cloud Hypervisor binds for the guest's vsock device.
    pub vsock: PathBuf,
    /// A FIFO the serial port writes into. Cloud Hypervisor truncates a `File` serial target
    /// on every boot and restore, so a small detached `cat` appends the FIFO's bytes to the
    /// instance's `app.log` instead (boot markers must survive a restore).
    pub serial_fifo: PathBuf,
    /// Pidfile of that `cat`.
    pub serial_pidfile: PathBuf,
    /// The vhost-user-net socket the engine's network stack serves and Cloud Hypervisor
    /// connects to (`--net vhost_user=on,socket=…`).
    pub net: PathBuf,
}

impl RuntimeFiles {
    /// The files of a runtime dir.
    pub fn in_dir(dir: &Path) -> RuntimeFiles {
        RuntimeFiles {
            api: dir.join("ch.sock"),
            pidfile: dir.join("ch.pid"),
            vmm_log: dir.join("vmm.log"),
            vmm_output: dir.join("vmm.out"),
            vsock: dir.join(VSOCK_SOCKET),
            serial_fifo: dir.join("serial.fifo"),
            serial_pidfile: dir.join("serial.pid"),
            net: dir.join("net.sock"),
        }
    }
}

/// The hybrid-vsock socket's name in a VM's runtime dir (the engine connects to it).
pub const VSOCK_SOCKET: &str = "vsock.sock";

/// Cloud Hypervisor wants the memory set aside for virtio-mem hotplug in multiples of this.
pub const VIRTIO_MEM_ALIGNMENT: u64 = 128 << 20;

/// The guest's serial console device on the host architecture (Cloud Hypervisor emulates a
/// 16550 on x86_64 and a PL011 on aarch64).
pub fn serial_console() -> &'static str {
    if cfg!(target_arch = "aarch64") {
        "ttyAMA0"
    } else {
        "ttyS0"
    }
}

/// `VmConfig`: what to boot and with which devices.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct VmConfig {
    /// vCPUs.
    pub cpus: CpusConfig,
    /// Guest memory.
    pub memory: MemoryConfig,
    /// Kernel, initramfs and command line.
    pub payload: PayloadConfig,
    /// virtio-blk disks in attach order.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub disks: Vec<DiskConfig>,
    /// virtio-net devices.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub net: Vec<NetConfig>,
    /// virtio-rng.
    pub rng: RngConfig,
    /// The legacy serial port (the guest's console).
    pub serial: ConsoleConfig,
    /// The virtio-console (unused).
    pub console: ConsoleConfig,
    /// virtio-vsock.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub vsock: Option<VsockConfig>,
    /// virtio-balloon: memory the guest frees goes back to the host (free page reporting), and
    /// `vm.resize {desired_balloon}` takes more for a while.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub balloon: Option<BalloonConfig>,
}

/// `BalloonConfig`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BalloonConfig {
    /// Bytes the balloon holds at boot.
    pub size: u64,
    /// Under memory pressure the guest takes ballooned pages back before it kills anything.
    pub deflate_on_oom: bool,
    /// The guest reports the pages it frees, and the host drops them.
    pub free_page_reporting: bool,
}

/// `CpusConfig`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CpusConfig {
    /// vCPUs at boot.
    pub boot_vcpus: u32,
    /// vCPUs the VM can grow to.
    pub max_vcpus: u32,
}

/// `MemoryConfig`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MemoryConfig {
    /// Boot memory in bytes.
    pub size: u64,
    /// Memory that `vm.resize` can add, in bytes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hotplug_size: Option<u64>,
    /// `Acpi` or `VirtioMem`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hotplug_method: Option<String>,
    /// Map guest memory `MAP_SHARED` (memfd): a vhost-user backend (the network) reads and
    /// writes the guest's buffers in it.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub shared: bool,
}

/// `PayloadConfig`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PayloadConfig {
    /// Guest kernel.
    pub kernel: String,
    /// Initramfs.
    pub initramfs: String,
    /// Kernel command line.
    pub cmdline: String,
}

/// `DiskConfig`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DiskConfig {
    /// Image file on the host.
    pub path: String,
    /// Attach read-only.
    pub readonly: bool,
    /// I/O throttling.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rate_limiter_config: Option<RateLimiterConfig>,
}

/// `RateLimiterConfig`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RateLimiterConfig {
    /// Bytes per refill period.
    pub bandwidth: TokenBucket,
}

/// `TokenBucket`: `size` tokens, refilled every `refill_time` milliseconds.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TokenBucket {
    /// Bucket capacity.
    pub size: u64,
    /// Milliseconds to refill a full bucket.
    pub refill_time: u64,
}

/// `NetConfig`: a vhost-user-net device whose backend is the engine's network stack.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NetConfig {
    /// Always `true`: the frames go to a vhost-user backend, not a TAP.
    pub vhost_user: bool,
    /// The backend's socket ([`RuntimeFiles::net`]).
    pub vhost_socket: String,
    /// `Client`: Cloud Hypervisor connects to the engine's listener (and connects again when
    /// the engine restarts).
    pub vhost_mode: String,
    /// Guest MAC address.
    pub mac: String,
    /// One RX and one TX queue.
    pub num_queues: u32,
    /// Descriptors per queue.
    pub queue_size: u32,
}

/// `RngConfig`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RngConfig {
    /// Entropy source on the host.
    pub src: String,
}

/// `ConsoleConfig` / `SerialConfig`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ConsoleConfig {
    /// `Off`, `Pty`, `Tty`, `File`, `Socket` or `Null`.
    pub mode: String,
    /// Target file in `File` mode.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub file: Option<String>,
}

/// `VsockConfig`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct VsockConfig {
    /// Guest context id (>= 3).
    pub cid: u32,
    /// Host unix socket proxying vsock connections (hybrid vsock).
    pub socket: String,
}

fn path(p: &Path) -> String {
    p.display().to_string()
}

/// Builds the `vm.create` body for `spec`. The network (when `spec.network` is set) is a
/// vhost-user-net device on [`RuntimeFiles::net`], which needs shared guest memory.
pub fn vm_config(spec: &VmSpec) -> VmConfig {
    let files = RuntimeFiles::in_dir(&spec.runtime_dir);
    let vcpus = spec.vcpus.max(1);
    let shared = spec.network.is_some();
    let memory = if spec.hotplug_bytes > 0 {
        MemoryConfig {
            size: spec.memory_bytes,
            hotplug_size: Some(
                spec.hotplug_bytes.div_ceil(VIRTIO_MEM_ALIGNMENT) * VIRTIO_MEM_ALIGNMENT,
            ),
            hotplug_method: Some("VirtioMem".into()),
            shared,
        }
    } else {
        MemoryConfig {
            size: spec.memory_bytes,
            hotplug_size: None,
            hotplug_method: None,
            shared,
        }
    };
    let cmdline = format!("console={} {}", serial_console(), spec.kernel_args)
        .trim()
        .to_string();
    let disks = spec
        .disks
        .iter()
        .map(|d| DiskConfig {
            path: path(&d.path),
            readonly: d.readonly,
            // A bucket of one second's worth of bytes, refilled every second: a sustained
            // limit of `io_bps` with bursts of at most one second of I/O.
            rate_limiter_config: (d.io_bps > 0).then_some(RateLimiterConfig {
                bandwidth: TokenBucket {
                    size: d.io_bps,
                    refill_time: 1000,
                },
            }),
        })
        .collect();
    let net = match &spec.network {
        Some(n) => vec![NetConfig {
            vhost_user: true,
            vhost_socket: path(&files.net),
            vhost_mode: "Client".into(),
            mac: n.mac.clone(),
            num_queues: 2,
            queue_size: 256,
        }],
        None => Vec::new(),
    };
    VmConfig {
        cpus: CpusConfig {
            boot_vcpus: vcpus,
            max_vcpus: vcpus,
        },
        memory,
        payload: PayloadConfig {
            kernel: path(&spec.kernel),
            initramfs: path(&spec.initrd),
            cmdline,
        },
        disks,
        net,
        rng: RngConfig {
            src: "/dev/urandom".into(),
        },
        serial: ConsoleConfig {
            mode: "File".into(),
            file: Some(path(&files.serial_fifo)),
        },
        console: ConsoleConfig {
            mode: "Off".into(),
            file: None,
        },
        vsock: (spec.vsock_cid >= 3).then(|| VsockConfig {
            cid: spec.vsock_cid,
            socket: path(&files.vsock),
        }),
        balloon: Some(BalloonConfig {
            size: 0,
            deflate_on_oom: true,
            free_page_reporting: true,
        }),
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;
    use crate::fake_api::spec;

    #[test]
    fn vm_config_snapshot() {
        let s = spec();
        let got = serde_json::to_string_pretty(&vm_config(&s)).unwrap();
        let console = serial_console();
        let want = r#"{
  "cpus": {
    "boot_vcpus": 2,
    "max_vcpus": 2
  },
  "memory": {
    "size": 1073741824,
    "hotplug_size": 1073741824,
    "hotplug_method": "VirtioMem",
    "shared": true
  },
  "payload": {
    "kernel": "/data/system/kernel/vmlinuz",
    "initramfs": "/data/system/initrd.img",
    "cmdline": "console=CONSOLE quiet panic=-1"
  },
  "disks": [
    {
      "path": "/data/images/abc/rootfs.ext4",
      "readonly": true
    },
    {
      "path": "/data/i/x/overlay,1.ext4",
      "readonly": false,
      "rate_limiter_config": {
        "bandwidth": {
          "size": 104857600,
          "refill_time": 1000
        }
      }
    }
  ],
  "net": [
    {
      "vhost_user": true,
      "vhost_socket": "/data/instances/tz4a98xxat96iws9zmbrgj3a/run/net.sock",
      "vhost_mode": "Client",
      "mac": "02:00:00:ab:cd:ef",
      "num_queues": 2,
      "queue_size": 256
    }
  ],
  "rng": {
    "src": "/dev/urandom"
  },
  "serial": {
    "mode": "File",
    "file": "/data/instances/tz4a98xxat96iws9zmbrgj3a/run/serial.fifo"
  },
  "console": {
    "mode": "Off"
  },
  "vsock": {
    "cid": 4660,
    "socket": "/data/instances/tz4a98xxat96iws9zmbrgj3a/run/vsock.sock"
  },
  "balloon": {
    "size": 0,
    "deflate_on_oom": true,
    "free_page_reporting": true
  }
}"#
        .replace("CONSOLE", console);
        assert_eq!(got, want);
        if cfg!(target_arch = "x86_64") {
            assert!(got.contains("console=ttyS0 "), "{got}");
        }
    }

    #[test]
    fn minimal_spec_leaves_optional_devices_out() {
        let mut s = spec();
        s.hotplug_bytes = 0;
        s.network = None;
        s.disks.clear();
        s.kernel_args = String::new();
        s.vcpus = 0;
        s.vsock_cid = 0;
        let v = serde_json::to_value(vm_config(&s)).unwrap();
        assert_eq!(
            v["memory"],
            serde_json::json!({ "size": 1u64 << 30 }),
            "{v}"
        );
        assert_eq!(v["cpus"]["boot_vcpus"], 1);
        assert_eq!(
            v["payload"]["cmdline"],
            format!("console={}", serial_console())
        );
        for absent in ["net", "disks", "vsock"] {
            assert!(v.get(absent).is_none(), "{absent} in {v}");
        }
    }

    #[test]
    fn config_round_trips_through_serde() {
        let c = vm_config(&spec());
        let back: VmConfig = serde_json::from_value(serde_json::to_value(&c).unwrap()).unwrap();
        assert_eq!(back, c);
    }

    #[test]
    fn hotplug_is_rounded_up_to_the_virtio_mem_block() {
        let mut s = spec();
        s.hotplug_bytes = 1;
        assert_eq!(
            vm_config(&s).memory.hotplug_size,
            Some(VIRTIO_MEM_ALIGNMENT)
        );
        s.hotplug_bytes = 2 * VIRTIO_MEM_ALIGNMENT;
        assert_eq!(
            vm_config(&s).memory.hotplug_size,
            Some(2 * VIRTIO_MEM_ALIGNMENT)
        );
    }
}
