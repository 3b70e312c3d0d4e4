//! Turning an instance record into a bootable `VmSpec`: image root disk, overlay disk, config
//! disk, kernel + initramfs, network. With no guest runtime configured (engine unit tests on
//! the fake hypervisor) the spec points at placeholder paths the fake never opens.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use hypedeck_guest_init::{GuestConfig, GuestNetwork, resolve_argv};
use hypedeck_hypervisor::{DiskSpec, NetSpec, VmSpec};
use hypedeck_images::{ImageError, ImageStore, PullOptions};
use hypedeck_model::InstanceId;
use hypedeck_store::InstanceRecord;

use crate::{Engine, EngineError};

/// The guest kernel's command line: quiet, reboot on panic (the VMM exits), and memory plugged
/// after boot (`hotplug_size`) online at once, movable so it can be unplugged again.
const KERNEL_ARGS: &str = "quiet panic=-1 memhp_default_state=online_movable";

/// The instance's agent key, in its runtime dir: what the engine says first on a vsock link
/// to the guest agent. Made at the first boot and kept for the instance's life (a restored
/// guest still knows the key it booted with).
pub const AGENT_KEY_FILE: &str = "agent.key";

/// The instance's agent key, made on first use.
fn agent_key(runtime_dir: &Path) -> Result<String, EngineError> {
    let path = runtime_dir.join(AGENT_KEY_FILE);
    if let Ok(key) = std::fs::read_to_string(&path)
        && key.len() == 64
    {
        return Ok(key);
    }
    let mut random = [0u8; 32];
    getrandom::fill(&mut random).map_err(|_| EngineError::Task)?;
    let key: String = random.iter().map(|b| format!("{b:02x}")).collect();
    hypedeck_store::write_atomic(&path, key.as_bytes())?;
    Ok(key)
}

/// How long create waits for an image pull before answering `image_not_ready` (the pull goes
/// on). Upstream waits 5 s; a local engine can afford more, kept under the SDKs' 60 s timeout.
pub const IMAGE_WAIT: std::time::Duration = std::time::Duration::from_secs(45);

/// Where real guests come from.
#[derive(Debug, Clone)]
pub struct GuestRuntime {
    /// The image cache.
    pub images: Arc<ImageStore>,
    /// The data dir's `system/` (kernel, initramfs).
    pub system_dir: PathBuf,
    /// The credential-injecting egress proxy (instances with `network.egress.enabled`).
    pub egress: Option<Arc<hypedeck_egress::EgressProxy>>,
}

/// FNV-1a of an instance id: the seed of its deterministic identities (subnet, MAC, CID).
fn id_hash(id: &str) -> u64 {
    id.bytes().fold(0xcbf2_9ce4_8422_2325u64, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x100_0000_01b3)
    })
}

/// Deterministic network identity and prefix length of an instance. Every instance has a
/// sandbox network of its own, so only its MAC and subnet need to look distinct: both come
/// from its id (the guest is `.15`), unless it has a pinned address: a fork keeps its
/// parent's subnet, gateway and DNS with an address allocated there (`.16` and up).
pub(crate) fn instance_identity(record: &InstanceRecord) -> (NetSpec, u8) {
    let (mut net, prefix) = identity_in(&record.id);
    if let Some(pinned) = &record.network.pinned
        && let Some((subnet, _)) = pinned.ip.rsplit_once('.')
    {
        net.subnet = format!("{subnet}.0/24");
        net.gateway = format!("{subnet}.2");
        net.dns = format!("{subnet}.3");
        net.guest_ip = pinned.ip.clone();
        net.mac = pinned.mac.clone();
    }
    (net, prefix)
}

/// The third octet of `record`'s sandbox subnet (its pinned address's, or its id's).
pub(crate) fn subnet_octet(record: &InstanceRecord) -> u8 {
    record
        .network
        .pinned
        .as_ref()
        .and_then(|p| p.ip.split('.').nth(2)?.parse().ok())
        .unwrap_or_else(|| id_subnet(id_hash(&record.id)))
}

/// The subnet octet an id hash names (1..=250).
fn id_subnet(h: u64) -> u8 {
    (h % 250) as u8 + 1
}

fn identity_in(id: &str) -> (NetSpec, u8) {
    let h = id_hash(id);
    let subnet = id_subnet(h);
    let host = 15;
    let mac = format!(
        "02:00:00:{:02x}:{:02x}:{:02x}",
        (h >> 8) as u8,
        (h >> 16) as u8,
        (h >> 24) as u8
    );
    (
        NetSpec {
            mac,
            subnet: format!("10.100.{subnet}.0/24"),
            gateway: format!("10.100.{subnet}.2"),
            dns: format!("10.100.{subnet}.3"),
            guest_ip: format!("10.100.{subnet}.{host}"),
            restrict: false,
            guest_forwards: Vec::new(),
            host_forwards: Vec::new(),
        },
        24,
    )
}

/// 64 bytes of host randomness, hex.
fn entropy_hex() -> Result<String, EngineError> {
    let mut bytes = [0u8; 64];
    getrandom::fill(&mut bytes).map_err(|_| EngineError::Task)?;
    Ok(bytes.iter().map(|b| format!("{b:02x}")).collect())
}

/// Deterministic guest vsock CID (>= 0x1000, far from the reserved 0-2 and from small CIDs
/// other VMMs on the host tend to pick).
pub fn vsock_cid(id: &str) -> u32 {
    ((id_hash(id) >> 32) as u32 % 0x7fff_0000) + 0x1000
}

pub(crate) fn map_image_error(error: ImageError, reference: &str) -> EngineError {
    match error {
        ImageError::NotFound { .. } => EngineError::ImageNotFound(error.to_string()),
        ImageError::InvalidReference(_) => EngineError::InvalidImageReference,
        ImageError::PlatformNotAvailable { .. } => EngineError::PlatformNotAvailable,
        ImageError::RateLimited => EngineError::ImageRateLimited,
        other => EngineError::ImageFailed(format!("{reference}: {other}")),
    }
}

async fn make_overlay(path: &Path, bytes: u64) -> Result<(), EngineError> {
    let io = |what: &str, source| EngineError::Io {
        what: format!("{what} {}", path.display()),
        source,
    };
    let file = std::fs::File::create(path).map_err(|e| io("create overlay", e))?;
    file.set_len(bytes).map_err(|e| io("size overlay", e))?;
    drop(file);
    let out = tokio::process::Command::new("mkfs.ext4")
        .args([
            "-q",
            "-F",
            "-m",
            "0",
            "-E",
            "lazy_itable_init=1,lazy_journal_init=1",
        ])
        .arg(path)
        .output()
        .await
        .map_err(|e| EngineError::Dependency(format!("run mkfs.ext4 (install e2fsprogs): {e}")))?;
    if !out.status.success() {
        return Err(EngineError::Dependency(format!(
            "mkfs.ext4 failed: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        )));
    }
    Ok(())
}

impl Engine {
    /// Builds the VM spec for a boot of `record`, creating the overlay on first boot and
    /// rewriting the config disk every time. `guest_env` is the env the guest may see.
    pub(crate) async fn provision(
        &self,
        record: &mut InstanceRecord,
        guest_env: Vec<String>,
    ) -> Result<VmSpec, EngineError> {
        let id = InstanceId::parse(&record.id).map_err(|_| EngineError::NotFound)?;
        let dir = self.paths.instance_dir(&id);
        let logs = self.paths.instance_logs(&id);
        let runtime_dir = self.paths.instance_runtime(&id);
        hypedeck_store::create_private_dir(&logs)?;
        hypedeck_store::create_private_dir(&runtime_dir)?;
        let (mut net, prefix) = instance_identity(record);
        let mut guest_env = guest_env;
        let mut ca_cert_pem = None;
        if self.guest.is_some() && self.register_egress(record).await? {
            // The only way out is the proxy, which the instance's sandbox network serves at
            // this address (see network.rs); the backend itself only carries frames.
            let guest_addr = crate::egress::guest_proxy_addr(&net.gateway);
            net.restrict = true;
            let url = format!("http://{guest_addr}");
            for key in ["HTTP_PROXY", "HTTPS_PROXY", "http_proxy", "https_proxy"] {
                guest_env.retain(|e| e.split('=').next() != Some(key));
                guest_env.push(format!("{key}={url}"));
            }
            ca_cert_pem = self.egress_proxy().map(|p| p.ca_pem());
        }
        net.host_forwards = record.ports.clone();
        let network = record.network.enabled.then(|| net.clone());
        if record.network.enabled {
            record.network.ip = Some(net.guest_ip.clone());
            record.network.mac = Some(net.mac.clone());
        }

        let Some(guest) = &self.guest else {
            return Ok(VmSpec {
                instance_id: record.id.clone(),
                runtime_dir,
                vcpus: record.vcpus,
                memory_bytes: record.memory_bytes,
                hotplug_bytes: record.hotplug_bytes,
                kernel: self.paths.system().join("kernel/vmlinuz"),
                initrd: self.paths.system().join("initrd/initrd.img"),
                kernel_args: KERNEL_ARGS.into(),
                disks: Vec::new(),
                serial_log: logs.join("app.log"),
                network,
                vsock_cid: vsock_cid(&record.id),
            });
        };

        // The image: pinned by digest at create, so a moved tag never changes the root disk.
        let image = match &record.image_digest {
            Some(digest) => guest.images.get(digest).ok_or_else(|| {
                EngineError::ImageNotFound(format!("image not found: {}", record.image))
            })?,
            // A tag already pulled and ready is used as it is, like upstream and `docker run`:
            // no registry round trip, and it works offline (`POST /images` refreshes a tag).
            None if let Some(ready) = guest.images.get(&record.image).filter(|i| {
                i.status == hypedeck_images::ImageStatus::Ready
                    && hypedeck_images::Platform::host().accepts(&i.platform)
            }) =>
            {
                ready
            }
            None => {
                let pull = guest.images.pull(&record.image, PullOptions::default());
                match tokio::time::timeout(IMAGE_WAIT, pull).await {
                    Ok(result) => result.map_err(|e| map_image_error(e, &record.image))?,
                    Err(_) => return Err(EngineError::ImageNotReady(record.image.clone())),
                }
            }
        };
        record.image_digest = Some(image.digest.to_string());
        record.platform = Some(image.platform.to_string());

        let assets = hypedeck_boot::ensure(&guest.system_dir)
            .await
            .map_err(|e| EngineError::Dependency(format!("guest boot assets: {e}")))?;

        let overlay = dir.join("overlay.ext4");
        if !overlay.exists() {
            make_overlay(&overlay, record.overlay_bytes).await?;
        }
        let argv = resolve_argv(
            image.config.entrypoint.as_deref().unwrap_or(&[]),
            image.config.cmd.as_deref().unwrap_or(&[]),
            record.entrypoint.as_deref(),
            record.cmd.as_deref(),
        );
        if argv.is_empty() {
            return Err(EngineError::Rejected(
                hypedeck_model::Rejection::invalid_request(
                    "no command to run: the image has no Entrypoint or Cmd and none was given",
                ),
            ));
        }
        let mut env = image.config.env.clone();
        for entry in guest_env {
            let key = entry.split('=').next().unwrap_or("").to_string();
            env.retain(|e| e.split('=').next() != Some(key.as_str()));
            env.push(entry);
        }
        // Volumes follow the three base disks: vdd, vde, … (an overlay volume takes two).
        let mut volume_disks = Vec::new();
        let mut guest_volumes = Vec::new();
        for v in &record.volumes {
            let base = self.volume_disk(&v.volume_id)?;
            if !base.exists() {
                return Err(EngineError::Rejected(hypedeck_model::Rejection::new(
                    hypedeck_model::ErrorCode::NotFound,
                    format!("volume {} not found", v.volume_id),
                )));
            }
            let readonly = v.readonly.unwrap_or(false);
            let device = hypedeck_guest_init::disk_device(3 + volume_disks.len());
            volume_disks.push(DiskSpec {
                path: base,
                readonly,
                io_bps: record.disk_io_bps,
                serial: Some(crate::volumes::disk_serial(&v.volume_id, false)),
            });
            let overlay_device = if v.overlay == Some(true) {
                let upper = dir
                    .join("vol-overlays")
                    .join(format!("{}.raw", v.volume_id));
                if !upper.exists() {
                    hypedeck_store::create_private_dir(&dir.join("vol-overlays"))?;
                    let bytes = v
                        .overlay_size
                        .as_deref()
                        .and_then(|s| hypedeck_model::size::parse_size(s).ok())
                        .unwrap_or(1 << 30);
                    make_overlay(&upper, bytes).await?;
                }
                let device = hypedeck_guest_init::disk_device(3 + volume_disks.len());
                volume_disks.push(DiskSpec {
                    path: upper,
                    readonly: false,
                    io_bps: record.disk_io_bps,
                    serial: Some(crate::volumes::disk_serial(&v.volume_id, true)),
                });
                Some(device)
            } else {
                None
            };
            guest_volumes.push(hypedeck_guest_init::GuestVolume {
                device,
                mount_path: v.mount_path.clone(),
                readonly,
                overlay_device,
            });
        }
        let config = GuestConfig {
            argv,
            env,
            workdir: image
                .config
                .working_dir
                .clone()
                .unwrap_or_else(|| "/".into()),
            hostname: record.name.clone(),
            overlay: true,
            network: network.as_ref().map(|n| GuestNetwork {
                ip: n.guest_ip.clone(),
                prefix,
                gateway: n.gateway.clone(),
                dns: n.dns.clone(),
                // The engine's stack owns the subnet on every backend (its DHCP server hands
                // out this same address to a guest that asks).
                dhcp: false,
                // A VM started from a template wakes with the template's MAC.
                mac: Some(n.mac.clone()),
            }),
            ca_cert_pem,
            volumes: guest_volumes,
            skip_agent: record.skip_guest_agent,
            agent_key: Some(agent_key(&runtime_dir)?),
            // A VM started from a template wakes with the template's clock and random state.
            host_time_ns: Some(time::OffsetDateTime::now_utc().unix_timestamp_nanos()),
            entropy: Some(entropy_hex()?),
        };
        let config_disk = dir.join("config.img");
        let bytes = config.to_disk().map_err(|e| {
            EngineError::Rejected(hypedeck_model::Rejection::invalid_request(format!(
                "the guest's configuration does not fit its config disk: {e}"
            )))
        })?;
        hypedeck_store::write_atomic(&config_disk, &bytes)?;

        let io = record.disk_io_bps;
        Ok(VmSpec {
            instance_id: record.id.clone(),
            runtime_dir,
            vcpus: record.vcpus,
            memory_bytes: record.memory_bytes,
            hotplug_bytes: record.hotplug_bytes,
            kernel: assets.kernel,
            initrd: assets.initrd,
            kernel_args: KERNEL_ARGS.into(),
            disks: vec![
                DiskSpec {
                    path: guest.images.rootfs_path(&image),
                    readonly: true,
                    io_bps: io,
                    serial: None,
                },
                DiskSpec {
                    path: overlay,
                    readonly: false,
                    io_bps: io,
                    serial: None,
                },
                DiskSpec {
                    path: config_disk,
                    readonly: true,
                    io_bps: 0,
                    serial: None,
                },
            ]
            .into_iter()
            .chain(volume_disks)
            .collect(),
            serial_log: logs.join("app.log"),
            network,
            vsock_cid: vsock_cid(&record.id),
        })
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn network_identity_is_stable_and_well_formed() {
        let (a, prefix) = super::identity_in("tz4a98xxat96iws9zmbrgj3a");
        let (b, _) = super::identity_in("tz4a98xxat96iws9zmbrgj3a");
        assert_eq!(a, b);
        assert_eq!(prefix, 24);
        assert!(a.mac.starts_with("02:00:00:"));
        assert_eq!(a.mac.len(), 17);
        assert!(a.guest_ip.starts_with("10.100.") && a.guest_ip.ends_with(".15"));
        let (c, _) = super::identity_in("aaaaaaaaaaaaaaaaaaaaaaaa");
        assert_ne!(a.mac, c.mac);
    }
}
