//! The guest NIC as a vhost-user-net device served by `hypedeck_netstack::vhost_user` (the way
//! Cloud Hypervisor's NIC reaches the stack), with QEMU as the vhost-user frontend: a real guest
//! fetches from a fake internet address through the backend and the stack, then QEMU is killed
//! and a second one connects to the same socket, and the guest fetches again through the same
//! stack.
//!
//! QEMU is started here by hand (a child, not daemonized, killed by a guard) with the argv of
//! the QEMU backend, whose stream netdev is swapped for `-netdev vhost-user` on shared memfd
//! memory. Between QEMU and the backend sits [`shim`], which drops the one message QEMU 7.2
//! sends out of order (see there). Needs what `qemu_boot.rs` needs (qemu-system,
//! busybox-static, e2fsprogs, the kernel and the musl build of hypedeck-guest-init). Ignored in
//! plain `cargo test`.

#![cfg(target_os = "linux")]
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use hypedeck_guest_init::{GuestConfig, GuestNetwork};
use hypedeck_hv_qemu::{Accel, Arch, VsockMode};
use hypedeck_hypervisor::{DiskSpec, NetSpec, VmSpec};
use hypedeck_netstack::vhost_user::VhostUserNet;

const MAC: [u8; 6] = [2, 0, 0, 0, 9, 0x15];

fn sh(cmd: &str) {
    let status = Command::new("sh").arg("-c").arg(cmd).status().unwrap();
    assert!(status.success(), "{cmd}");
}

/// A busybox root disk whose program fetches from the fake internet address forever.
fn rootfs(dir: &Path) -> PathBuf {
    let root = dir.join("rootfs");
    for d in ["bin", "app", "proc", "sys", "dev", "tmp", "etc", "run"] {
        std::fs::create_dir_all(root.join(d)).unwrap();
    }
    std::fs::copy("/bin/busybox", root.join("bin/busybox")).unwrap();
    for applet in ["sh", "echo", "sleep", "ip", "grep", "nc", "printf"] {
        std::os::unix::fs::symlink("busybox", root.join("bin").join(applet)).unwrap();
    }
    std::fs::write(
        root.join("app/run.sh"),
        "#!/bin/sh\nip addr show eth0 | grep -o 'inet [0-9./]*'\n\
         while true; do printf 'GET / HTTP/1.0\\r\\n\\r\\n' | nc -w 3 203.0.113.10 8080 2>&1; sleep 0.5; done\n",
    )
    .unwrap();
    sh(&format!("chmod 755 {}", root.join("app/run.sh").display()));
    let disk = dir.join("rootfs.ext4");
    sh(&format!(
        "truncate -s 64M {0} && mkfs.ext4 -q -F -d {1} {0}",
        disk.display(),
        root.display()
    ));
    disk
}

/// A fresh overlay (each boot gets a clean one: the previous QEMU was killed, not shut down).
fn overlay(dir: &Path) -> PathBuf {
    let overlay = dir.join("overlay.ext4");
    let _ = std::fs::remove_file(&overlay);
    sh(&format!(
        "truncate -s 256M {0} && mkfs.ext4 -q -F {0}",
        overlay.display()
    ));
    overlay
}

async fn spec(dir: &Path) -> VmSpec {
    let system = std::env::var_os("HYPEDECK_TEST_SYSTEM_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| std::env::temp_dir().join("hypedeck-test-system"));
    let assets = hypedeck_boot::ensure(&system).await.expect("boot assets");
    let root = rootfs(dir);
    let overlay = overlay(dir);
    let config = GuestConfig {
        argv: vec!["/app/run.sh".into()],
        env: vec![],
        workdir: "/app".into(),
        hostname: "vm-vhost".into(),
        overlay: true,
        network: Some(GuestNetwork {
            ip: "10.100.9.15".into(),
            prefix: 24,
            gateway: "10.100.9.2".into(),
            dns: "10.100.9.3".into(),
            dhcp: false,
        }),
        ca_cert_pem: None,
        volumes: vec![],
        skip_agent: false,
    };
    let cfg = dir.join("config.img");
    std::fs::write(&cfg, config.to_disk().unwrap()).unwrap();
    let runtime_dir = dir.join("run");
    std::fs::create_dir_all(&runtime_dir).unwrap();
    VmSpec {
        instance_id: "vhostvm".into(),
        runtime_dir,
        vcpus: 1,
        memory_bytes: 256 << 20,
        hotplug_bytes: 0,
        kernel: assets.kernel,
        initrd: assets.initrd,
        kernel_args: "quiet panic=-1".into(),
        disks: vec![
            DiskSpec {
                path: root,
                readonly: true,
                io_bps: 0,
            },
            DiskSpec {
                path: overlay,
                readonly: false,
                io_bps: 0,
            },
            DiskSpec {
                path: cfg,
                readonly: true,
                io_bps: 0,
            },
        ],
        serial_log: dir.join("app.log"),
        network: Some(NetSpec {
            mac: "02:00:00:00:09:15".into(),
            subnet: "10.100.9.0/24".into(),
            gateway: "10.100.9.2".into(),
            dns: "10.100.9.3".into(),
            guest_ip: "10.100.9.15".into(),
            restrict: false,
            guest_forwards: vec![],
            host_forwards: vec![],
        }),
        vsock_cid: 0x1916,
    }
}

/// The QEMU backend's argv with the NIC on vhost-user at `socket` and guest memory a shared
/// memfd (a vhost-user backend maps it), run as a child of the test instead of a daemon.
fn argv(spec: &VmSpec, socket: &Path) -> Vec<String> {
    let mut argv = hypedeck_hv_qemu::config::argv(spec, Accel::Tcg, Arch::host(), &VsockMode::Off);
    argv.retain(|a| a != "-daemonize");
    let netdev = argv
        .iter()
        .position(|a| a == "-netdev")
        .expect("the spec has a NIC");
    argv[netdev + 1] = "vhost-user,id=net0,chardev=vu".into();
    argv.splice(
        netdev..netdev,
        [
            "-chardev".to_string(),
            format!("socket,id=vu,path={},reconnect=1", socket.display()),
        ],
    );
    // INTx instead of MSI-X for the NIC: QEMU 7.2 under TCG segfaults in
    // msix_set_vector_notifiers when it starts a vhost-user NIC with MSI-X vectors.
    let nic = argv
        .iter()
        .position(|a| a.starts_with("virtio-net-pci,netdev=net0,"))
        .expect("the NIC");
    argv[nic].push_str(",vectors=0");
    let mem = argv.iter().position(|a| a == "-m").expect("-m");
    assert_eq!(argv[mem + 1], "256M");
    argv.splice(
        mem + 2..mem + 2,
        [
            "-object",
            "memory-backend-memfd,id=mem,size=256M,share=on",
            "-numa",
            "node,memdev=mem",
        ]
        .map(String::from),
    );
    assert!(
        argv.iter()
            .any(|a| a.starts_with("virtio-net-pci,netdev=net0,mac=02:00:00:00:09:15")),
        "{argv:?}"
    );
    argv
}

/// Kills its QEMU when dropped (also when an assertion fails).
struct Qemu {
    child: Child,
    log: PathBuf,
}

impl Qemu {
    fn start(spec: &VmSpec, socket: &Path, n: usize) -> Qemu {
        let log = spec.runtime_dir.join(format!("qemu-{n}.log"));
        let out = std::fs::File::create(&log).unwrap();
        let child = Command::new(Arch::host().binary())
            .args(argv(spec, socket))
            .stdin(Stdio::null())
            .stdout(out.try_clone().unwrap())
            .stderr(out)
            .spawn()
            .expect("qemu-system installed");
        Qemu { child, log }
    }

    fn exited(&mut self) -> Option<String> {
        let status = self.child.try_wait().unwrap()?;
        Some(format!(
            "qemu exited ({status}): {}",
            std::fs::read_to_string(&self.log).unwrap_or_default()
        ))
    }
}

impl Drop for Qemu {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn serial(dir: &Path) -> String {
    std::fs::read_to_string(dir.join("app.log")).unwrap_or_default()
}

async fn wait_for_fetches(
    dir: &Path,
    qemu: &mut Qemu,
    backend: &VhostUserNet,
    more_than: usize,
    what: &str,
) {
    let deadline = Instant::now() + Duration::from_secs(60);
    while serial(dir).matches("vhost-ok").count() <= more_than {
        if let Some(exit) = qemu.exited() {
            panic!("{what}: {exit}\nserial: {}", serial(dir));
        }
        assert!(
            Instant::now() < deadline,
            "{what}: no fetch through the vhost-user backend ({:?}): {}\nqemu: {}",
            backend.stats(),
            serial(dir),
            std::fs::read_to_string(&qemu.log).unwrap_or_default()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

#[tokio::test]
#[ignore = "boots a real VM (twice); run with --include-ignored"]
async fn a_qemu_guest_reaches_out_through_vhost_user_and_again_after_a_new_frontend() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    // "The internet": 203.0.113.10:8080 in the guest, a listener on loopback here.
    let server = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let served = server.local_addr().unwrap();
    let requests = Arc::new(AtomicUsize::new(0));
    let counted = requests.clone();
    tokio::spawn(async move {
        loop {
            let Ok((mut conn, _)) = server.accept().await else {
                return;
            };
            counted.fetch_add(1, Ordering::Relaxed);
            tokio::spawn(async move {
                let mut buf = [0u8; 1024];
                let _ = conn.read(&mut buf).await;
                let _ = conn
                    .write_all(b"HTTP/1.0 200 OK\r\nContent-Length: 9\r\n\r\nvhost-ok\n")
                    .await;
            });
        }
    });

    let dir = tempfile::tempdir().unwrap();
    let spec = spec(dir.path()).await;
    let socket = dir.path().join("vhost-net.sock");
    let (transport, backend) =
        hypedeck_netstack::vhost_user::serve(&socket, MAC).expect("serve vhost-user-net");
    let qemu_socket = dir.path().join("qemu-side.sock");
    let dropped = shim(&qemu_socket, &socket);
    let config = hypedeck_netstack::NetConfig {
        instance_id: "vhostvm".into(),
        guest_mac: MAC,
        guest_ip: "10.100.9.15".parse().unwrap(),
        gateway: "10.100.9.2".parse().unwrap(),
        dns: "10.100.9.3".parse().unwrap(),
        prefix: 24,
        egress: hypedeck_netstack::Egress::Direct(hypedeck_netstack::Policy::default()),
        forwards: Vec::new(),
        dial_overrides: [("203.0.113.10:8080".parse().unwrap(), served)]
            .into_iter()
            .collect(),
        events: None,
        allow: Default::default(),
        max_tcp_flows: hypedeck_netstack::MAX_TCP_FLOWS,
    };
    let network = hypedeck_netstack::Network::start(config, transport)
        .await
        .expect("stack starts");

    let started = Instant::now();
    let mut first = Qemu::start(&spec, &qemu_socket, 1);
    wait_for_fetches(dir.path(), &mut first, &backend, 0, "first boot").await;
    eprintln!("first fetch after {:?}", started.elapsed());
    let text = serial(dir.path());
    assert!(text.contains("inet 10.100.9.15/24"), "{text}");
    assert!(requests.load(Ordering::Relaxed) >= 1);
    let stats = backend.stats();
    assert!(stats.connections >= 1, "{stats:?}");
    eprintln!(
        "early SET_VRING_ENABLE messages the shim held back: {}",
        dropped.load(Ordering::Relaxed)
    );
    let first_connections = stats.connections;
    assert!(stats.tx_frames > 0 && stats.rx_frames > 0, "{stats:?}");

    // The VMM goes away (killed, as on a crash) and a new one connects to the same socket; the
    // backend and the stack stay.
    drop(first);
    let before = serial(dir.path()).matches("vhost-ok").count();
    overlay(dir.path());
    let restarted = Instant::now();
    let mut second = Qemu::start(&spec, &qemu_socket, 2);
    wait_for_fetches(dir.path(), &mut second, &backend, before, "second boot").await;
    eprintln!("fetch after the new frontend: {:?}", restarted.elapsed());
    let stats = backend.stats();
    assert!(stats.connections > first_connections, "{stats:?}");
    assert!(network.is_running());
    drop(second);

    backend.stop();
    assert!(!socket.exists(), "stop removes the socket");
    network.stop().await;
}

// ---------------------------------------------------------------------------------------------
// The shim.

/// vhost-user's message header: request, flags, payload size (little endian).
const HEADER: usize = 12;
const SET_FEATURES: u32 = 2;
const SET_VRING_ENABLE: u32 = 18;
const FLAG_VERSION: u32 = 0x1;
const FLAG_REPLY: u32 = 0x4;
const FLAG_NEED_REPLY: u32 = 0x8;

/// Relays vhost-user between QEMU (connecting to `listen`) and the backend at `backend`, with
/// every descriptor, and holds `SET_VRING_ENABLE` back until QEMU has sent `SET_FEATURES`.
///
/// QEMU 7.2's virtio-net enables its queue pair when the NIC attaches, before it acknowledges
/// features, and does not send it again when it starts the device. The vhost-user spec allows
/// `SET_VRING_ENABLE` only once `VHOST_USER_F_PROTOCOL_FEATURES` is acknowledged, and
/// rust-vmm's backend (ours) closes the connection on an early one. The shim answers it when
/// asked to, and replays the last state of each ring right after `SET_FEATURES`. Cloud
/// Hypervisor, the frontend the backend is for, acknowledges features first. Returns the count
/// of held-back messages.
fn shim(listen: &Path, backend: &Path) -> Arc<AtomicUsize> {
    let listener = std::os::unix::net::UnixListener::bind(listen).unwrap();
    let dropped = Arc::new(AtomicUsize::new(0));
    let count = dropped.clone();
    let backend = backend.to_path_buf();
    std::thread::spawn(move || {
        for frontend in listener.incoming() {
            let Ok(frontend) = frontend else { return };
            let Ok(to_backend) = std::os::unix::net::UnixStream::connect(&backend) else {
                continue;
            };
            let writer = Arc::new(std::sync::Mutex::new(frontend.try_clone().unwrap()));
            let (b_read, f_write) = (to_backend.try_clone().unwrap(), writer.clone());
            // Backend -> QEMU: replies.
            std::thread::spawn(move || {
                while let Some((msg, fds)) = read_message(&b_read) {
                    if send_message(&f_write.lock().unwrap(), &msg, &fds).is_err() {
                        break;
                    }
                }
                let _ = f_write.lock().unwrap().shutdown(std::net::Shutdown::Both);
            });
            // QEMU -> backend.
            let count = count.clone();
            std::thread::spawn(move || {
                let mut features_set = false;
                // The last early enable state of each ring, replayed after SET_FEATURES.
                let mut early = std::collections::BTreeMap::new();
                while let Some((msg, fds)) = read_message(&frontend) {
                    let request = u32::from_le_bytes(msg[0..4].try_into().unwrap());
                    let flags = u32::from_le_bytes(msg[4..8].try_into().unwrap());
                    if request == SET_VRING_ENABLE && !features_set {
                        count.fetch_add(1, Ordering::Relaxed);
                        // The payload is `vhost_vring_state`: the ring's index, then 0 or 1.
                        let mut replay = msg.clone();
                        replay[4..8].copy_from_slice(&(flags & !FLAG_NEED_REPLY).to_le_bytes());
                        early.insert(msg[HEADER..HEADER + 4].to_vec(), replay);
                        if flags & FLAG_NEED_REPLY != 0 {
                            let mut ack = Vec::with_capacity(HEADER + 8);
                            ack.extend_from_slice(&SET_VRING_ENABLE.to_le_bytes());
                            ack.extend_from_slice(&(FLAG_VERSION | FLAG_REPLY).to_le_bytes());
                            ack.extend_from_slice(&8u32.to_le_bytes());
                            ack.extend_from_slice(&0u64.to_le_bytes());
                            if send_message(&writer.lock().unwrap(), &ack, &[]).is_err() {
                                break;
                            }
                        }
                        continue;
                    }
                    if send_message(&to_backend, &msg, &fds).is_err() {
                        break;
                    }
                    if request == SET_FEATURES && !features_set {
                        features_set = true;
                        for replay in std::mem::take(&mut early).into_values() {
                            if send_message(&to_backend, &replay, &[]).is_err() {
                                break;
                            }
                        }
                    }
                }
                let _ = to_backend.shutdown(std::net::Shutdown::Both);
            });
        }
    });
    dropped
}

/// One message (header and payload) and the descriptors that came with it; `None` at the end.
fn read_message(
    socket: &std::os::unix::net::UnixStream,
) -> Option<(Vec<u8>, Vec<std::os::fd::OwnedFd>)> {
    use rustix::net::{RecvAncillaryBuffer, RecvAncillaryMessage, RecvFlags};
    use std::io::Read;
    let mut header = [0u8; HEADER];
    let mut space = [std::mem::MaybeUninit::<u8>::uninit(); rustix::cmsg_space!(ScmRights(8))];
    let mut ancillary = RecvAncillaryBuffer::new(&mut space);
    let got = rustix::net::recvmsg(
        socket,
        &mut [std::io::IoSliceMut::new(&mut header)],
        &mut ancillary,
        RecvFlags::CMSG_CLOEXEC,
    )
    .ok()?;
    let mut fds = Vec::new();
    for message in ancillary.drain() {
        if let RecvAncillaryMessage::ScmRights(received) = message {
            fds.extend(received);
        }
    }
    if got.bytes == 0 {
        return None;
    }
    let mut reader = socket;
    reader.read_exact(&mut header[got.bytes..]).ok()?;
    let size = u32::from_le_bytes(header[8..12].try_into().unwrap()) as usize;
    let mut msg = header.to_vec();
    msg.resize(HEADER + size, 0);
    reader.read_exact(&mut msg[HEADER..]).ok()?;
    Some((msg, fds))
}

fn send_message(
    socket: &std::os::unix::net::UnixStream,
    msg: &[u8],
    fds: &[std::os::fd::OwnedFd],
) -> std::io::Result<()> {
    use rustix::net::{SendAncillaryBuffer, SendAncillaryMessage, SendFlags};
    use std::io::Write;
    use std::os::fd::AsFd;
    let mut space = [std::mem::MaybeUninit::<u8>::uninit(); rustix::cmsg_space!(ScmRights(8))];
    let mut ancillary = SendAncillaryBuffer::new(&mut space);
    let borrowed: Vec<_> = fds.iter().map(|fd| fd.as_fd()).collect();
    if !borrowed.is_empty() {
        assert!(ancillary.push(SendAncillaryMessage::ScmRights(&borrowed)));
    }
    let sent = rustix::net::sendmsg(
        socket,
        &[std::io::IoSlice::new(msg)],
        &mut ancillary,
        SendFlags::empty(),
    )?;
    let mut writer = socket;
    writer.write_all(&msg[sent..])
}
