//! Real QEMU boots: the boot assets (cloud kernel + initramfs around hypedeck-guest-init), a
//! busybox root disk made with mkfs.ext4, and the QEMU backend (spawn detached, QMP state,
//! graceful shutdown through the control port, exit sentinel in the serial log), with the
//! guest's NIC on the engine's userspace network stack (`hypedeck-netstack`) over QEMU's
//! `-netdev stream` socket. The last test puts the NIC on the stack's vhost-user-net backend
//! instead (Cloud Hypervisor's link), with QEMU as the vhost-user frontend.
//!
//! Needs qemu-system, busybox-static, e2fsprogs, apt (for the kernel) and the musl build of
//! hypedeck-guest-init: `make test` provides all of them. Ignored in plain `cargo test`.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use hypedeck_guest_init::{GuestConfig, GuestNetwork, parse_exit_line};
use hypedeck_hv_qemu::{Accel, Arch, QemuHypervisor, VsockMode};
use hypedeck_hypervisor::{DiskSpec, Hypervisor, NetSpec, VmSpec, VmmState};
use hypedeck_netstack::vhost_user::VhostUserNet;

fn sh(cmd: &str) {
    let status = std::process::Command::new("sh")
        .arg("-c")
        .arg(cmd)
        .status()
        .unwrap();
    assert!(status.success(), "{cmd}");
}

/// A root disk with busybox and a test script.
fn rootfs(dir: &Path) -> PathBuf {
    let root = dir.join("rootfs");
    for d in ["bin", "app", "proc", "sys", "dev", "tmp", "etc", "run"] {
        std::fs::create_dir_all(root.join(d)).unwrap();
    }
    std::fs::copy("/bin/busybox", root.join("bin/busybox")).unwrap();
    for applet in [
        "sh", "echo", "cat", "sleep", "kill", "hostname", "ip", "ls", "trap", "nc", "printf",
    ] {
        std::os::unix::fs::symlink("busybox", root.join("bin").join(applet)).unwrap();
    }
    std::fs::write(
        root.join("app/run.sh"),
        "#!/bin/sh\necho \"hello $GREETING from $(pwd) host=$(hostname) args=$*\"\n\
         echo written > /tmp/x && echo overlay-ok > /app/new && cat /app/new\n\
         ip addr show eth0 | grep -o 'inet [0-9./]*'\n\
         if [ \"$1\" = fetch ]; then while true; do printf 'GET / HTTP/1.0\\r\\n\\r\\n' | nc -w 3 203.0.113.10 8080 2>&1; sleep 0.5; done; fi\n\
         if [ \"$1\" = wait ]; then trap 'echo got-term; exit 7' TERM; echo waiting; while true; do sleep 0.2; done; fi\n\
         exit ${CODE:-0}\n",
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

struct Vm {
    dir: tempfile::TempDir,
    spec: VmSpec,
}

async fn prepare(argv: &[&str], env: &[&str]) -> Vm {
    prepare_with(argv, env, false).await
}

/// `dhcp`: guest init asks QEMU's DHCP server instead of applying the static address (which
/// is then deliberately wrong, so only DHCP can produce the expected one).
async fn prepare_with(argv: &[&str], env: &[&str], dhcp: bool) -> Vm {
    let dir = tempfile::tempdir().unwrap();
    let system = std::env::var_os("HYPEDECK_TEST_SYSTEM_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| std::env::temp_dir().join("hypedeck-test-system"));
    let assets = hypedeck_boot::ensure(&system).await.expect("boot assets");
    let root = rootfs(dir.path());
    let overlay = dir.path().join("overlay.ext4");
    sh(&format!(
        "truncate -s 256M {0} && mkfs.ext4 -q -F {0}",
        overlay.display()
    ));
    let config = GuestConfig {
        argv: argv.iter().map(|s| s.to_string()).collect(),
        env: env.iter().map(|s| s.to_string()).collect(),
        workdir: "/app".into(),
        hostname: "vm-test".into(),
        overlay: true,
        network: Some(GuestNetwork {
            ip: if dhcp { "10.100.9.99" } else { "10.100.9.15" }.into(),
            prefix: 24,
            gateway: "10.100.9.2".into(),
            dns: "10.100.9.3".into(),
            dhcp,
            mac: None,
        }),
        ca_cert_pem: None,
        volumes: vec![],
        skip_agent: false,
        agent_key: None,
        host_time_ns: None,
        entropy: None,
    };
    let cfg = dir.path().join("config.img");
    std::fs::write(&cfg, config.to_disk().unwrap()).unwrap();
    let spec = VmSpec {
        instance_id: "testvm".into(),
        runtime_dir: dir.path().join("run"),
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
                serial: None,
            },
            DiskSpec {
                path: overlay,
                readonly: false,
                io_bps: 50 << 20,
                serial: None,
            },
            DiskSpec {
                path: cfg,
                readonly: true,
                io_bps: 0,
                serial: None,
            },
        ],
        serial_log: dir.path().join("app.log"),
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
        vsock_cid: 0x1915,
    };
    Vm { dir, spec }
}

/// "The internet": 203.0.113.10:8080 in the guest (see `/app/run.sh fetch`), served here on
/// loopback with `body`. Returns the override for the stack.
async fn internet(body: &'static str) -> [(std::net::SocketAddrV4, std::net::SocketAddr); 1] {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let server = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let served = server.local_addr().unwrap();
    tokio::spawn(async move {
        loop {
            let Ok((mut conn, _)) = server.accept().await else {
                return;
            };
            tokio::spawn(async move {
                let mut buf = [0u8; 1024];
                let _ = conn.read(&mut buf).await;
                let answer = format!(
                    "HTTP/1.0 200 OK\r\nContent-Length: {}\r\n\r\n{body}",
                    body.len()
                );
                let _ = conn.write_all(answer.as_bytes()).await;
            });
        }
    });
    [("203.0.113.10:8080".parse().unwrap(), served)]
}

/// The stack's configuration for the test VM (10.100.9.15 behind 10.100.9.2).
fn net_config(
    overrides: &[(std::net::SocketAddrV4, std::net::SocketAddr)],
) -> hypedeck_netstack::NetConfig {
    hypedeck_netstack::NetConfig {
        instance_id: "testvm".into(),
        guest_mac: MAC,
        guest_ip: "10.100.9.15".parse().unwrap(),
        gateway: "10.100.9.2".parse().unwrap(),
        dns: "10.100.9.3".parse().unwrap(),
        prefix: 24,
        egress: hypedeck_netstack::Egress::Direct(hypedeck_netstack::Policy::default()),
        forwards: Vec::new(),
        dial_overrides: overrides.iter().copied().collect(),
        events: None,
        allow: Default::default(),
        traffic: Default::default(),
        max_tcp_flows: hypedeck_netstack::MAX_TCP_FLOWS,
    }
}

const MAC: [u8; 6] = [2, 0, 0, 0, 9, 0x15];

/// Runs a network stack for `vm` on its frame socket (as the engine does after a boot or a
/// restart). `overrides`: "internet" addresses served by listeners on the host's loopback.
async fn network(
    handle: &dyn hypedeck_hypervisor::Vm,
    overrides: &[(std::net::SocketAddrV4, std::net::SocketAddr)],
) -> hypedeck_netstack::Network {
    let Some(hypedeck_hypervisor::NetworkLink::Stream(socket)) =
        handle.network_link().await.expect("network link")
    else {
        panic!("qemu carries frames on a stream socket");
    };
    let transport = hypedeck_netstack::Network::connect_stream(&socket, Duration::from_secs(5))
        .await
        .expect("connect to qemu's frame socket");
    hypedeck_netstack::Network::start(net_config(overrides), transport)
        .await
        .expect("stack starts")
}

fn log(vm: &Vm) -> String {
    std::fs::read_to_string(vm.dir.path().join("app.log")).unwrap_or_default()
}

async fn wait_until(what: &str, timeout: Duration, mut f: impl FnMut() -> bool) {
    let start = Instant::now();
    while !f() {
        assert!(start.elapsed() < timeout, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test]
#[ignore = "boots a real VM; run with --include-ignored (make test does)"]
async fn boots_runs_the_program_and_reports_its_exit() {
    let vm = prepare(&["/app/run.sh", "a1"], &["GREETING=world", "CODE=3"]).await;
    let qemu = QemuHypervisor::detect().expect("qemu installed");
    let handle = qemu.start(&vm.spec).await.expect("qemu starts");
    wait_until("the exit sentinel", Duration::from_secs(90), || {
        log(&vm).contains("HYPEMAN-EXIT")
    })
    .await;
    wait_until("qemu to exit", Duration::from_secs(20), || {
        !futures_lite_block(handle.is_alive())
    })
    .await;
    let text = log(&vm);
    assert!(
        text.contains("hello world from /app host=vm-test args=a1"),
        "{text}"
    );
    assert!(text.contains("overlay-ok"), "{text}");
    assert!(text.contains("inet 10.100.9.15/24"), "{text}");
    assert!(text.contains("HYPEMAN-PROGRAM-START"), "{text}");
    assert_eq!(parse_exit_line(&text), Some((3, "exit code 3".to_string())));
    assert!(
        qemu.attach("testvm", &vm.spec.runtime_dir)
            .await
            .unwrap()
            .is_none()
    );
}

#[tokio::test]
#[ignore = "boots a real VM; run with --include-ignored (make test does)"]
async fn dhcp_takes_the_address_the_network_hands_out() {
    let vm = prepare_with(&["/app/run.sh"], &[], true).await;
    let qemu = QemuHypervisor::detect().expect("qemu installed");
    let handle = qemu.start(&vm.spec).await.expect("qemu starts");
    let _net = network(handle.as_ref(), &[]).await;
    wait_until("the exit sentinel", Duration::from_secs(90), || {
        log(&vm).contains("HYPEMAN-EXIT")
    })
    .await;
    let text = log(&vm);
    // The stack's DHCP server hands out .15 of the subnet; the static fallback was .99.
    assert!(
        text.contains("dhcp: 10.100.9.15/24 via 10.100.9.2, dns 10.100.9.3"),
        "{text}"
    );
    assert!(text.contains("inet 10.100.9.15/24"), "{text}");
    assert_eq!(parse_exit_line(&text), Some((0, "success".to_string())));
}

#[tokio::test]
#[ignore = "boots a real VM; run with --include-ignored (make test does)"]
async fn the_guest_reaches_out_through_the_stack_across_a_reconnect() {
    let overrides = internet("nat-ok\n").await;
    let vm = prepare(&["/app/run.sh", "fetch"], &[]).await;
    let qemu = QemuHypervisor::detect().expect("qemu installed");
    let handle = qemu.start(&vm.spec).await.expect("qemu starts");
    let first = network(handle.as_ref(), &overrides).await;
    let deadline = Instant::now() + Duration::from_secs(120);
    while !log(&vm).contains("nat-ok") {
        assert!(
            Instant::now() < deadline,
            "no fetch through the stack: {}",
            log(&vm)
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // The engine goes away (its stack with it) and a new one connects to the same VM.
    first.stop().await;
    let before = log(&vm).matches("nat-ok").count();
    let _second = network(handle.as_ref(), &overrides).await;
    wait_until(
        "a fetch after the reconnect",
        Duration::from_secs(60),
        || log(&vm).matches("nat-ok").count() > before,
    )
    .await;
    handle.kill().await.unwrap();
}

/// Polls a future that is ready immediately (is_alive does only file reads).
fn futures_lite_block<F: std::future::Future>(f: F) -> F::Output {
    let waker = std::task::Waker::noop();
    let mut cx = std::task::Context::from_waker(waker);
    let mut f = std::pin::pin!(f);
    loop {
        if let std::task::Poll::Ready(v) = f.as_mut().poll(&mut cx) {
            return v;
        }
    }
}

#[tokio::test]
#[ignore = "boots a real VM; run with --include-ignored (make test does)"]
async fn state_reattach_and_graceful_shutdown() {
    let vm = prepare(&["/app/run.sh", "wait"], &[]).await;
    let qemu = QemuHypervisor::detect().expect("qemu installed");
    let handle = qemu.start(&vm.spec).await.expect("qemu starts");
    assert_eq!(handle.state().await.unwrap(), VmmState::Running);
    wait_until("the program to start", Duration::from_secs(90), || {
        log(&vm).contains("waiting")
    })
    .await;

    // A second handle found from the runtime dir alone (as after an engine restart).
    let again = qemu
        .attach("testvm", &vm.spec.runtime_dir)
        .await
        .unwrap()
        .expect("reattached");
    assert_eq!(again.state().await.unwrap(), VmmState::Running);

    again.request_shutdown().await.unwrap();
    wait_until("qemu to exit", Duration::from_secs(30), || {
        !futures_lite_block(handle.is_alive())
    })
    .await;
    let text = log(&vm);
    assert!(text.contains("got-term"), "{text}");
    assert_eq!(parse_exit_line(&text), Some((7, "exit code 7".to_string())));
    handle.kill().await.unwrap();
}

#[tokio::test]
#[ignore = "boots a real VM; run with --include-ignored (make test does)"]
async fn missing_command_is_127_and_kill_is_idempotent() {
    let vm = prepare(&["no-such-program"], &[]).await;
    let qemu = QemuHypervisor::detect().expect("qemu installed");
    let handle = qemu.start(&vm.spec).await.expect("qemu starts");
    wait_until("the exit sentinel", Duration::from_secs(90), || {
        log(&vm).contains("HYPEMAN-EXIT")
    })
    .await;
    assert_eq!(
        parse_exit_line(&log(&vm)),
        Some((127, "command not found".to_string()))
    );
    handle.kill().await.unwrap();
    handle.kill().await.unwrap();
    assert!(!handle.is_alive().await);
}

// ---------------------------------------------------------------------------------------------
// The NIC on vhost-user-net (Cloud Hypervisor's link), with QEMU as the frontend.

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
    let overrides = internet("vhost-ok\n").await;
    let vm = prepare(&["/app/run.sh", "fetch"], &[]).await;
    let (dir, spec) = (vm.dir.path(), &vm.spec);
    std::fs::create_dir_all(&spec.runtime_dir).unwrap();
    let socket = dir.join("vhost-net.sock");
    let (transport, backend) =
        hypedeck_netstack::vhost_user::serve(&socket, MAC).expect("serve vhost-user-net");
    let qemu_socket = dir.join("qemu-side.sock");
    let held_back = shim(&qemu_socket, &socket);
    let network = hypedeck_netstack::Network::start(net_config(&overrides), transport)
        .await
        .expect("stack starts");

    let started = Instant::now();
    let mut first = Qemu::start(spec, &qemu_socket, 1);
    wait_for_fetches(dir, &mut first, &backend, 0, "first boot").await;
    eprintln!("first fetch after {:?}", started.elapsed());
    let text = serial(dir);
    assert!(text.contains("inet 10.100.9.15/24"), "{text}");
    let stats = backend.stats();
    assert!(stats.connections >= 1, "{stats:?}");
    eprintln!(
        "early SET_VRING_ENABLE messages the shim held back: {}",
        held_back.load(Ordering::Relaxed)
    );
    let first_connections = stats.connections;
    assert!(stats.tx_frames > 0 && stats.rx_frames > 0, "{stats:?}");

    // The VMM goes away (killed, as on a crash) and a new one connects to the same socket; the
    // backend and the stack stay.
    drop(first);
    let before = serial(dir).matches("vhost-ok").count();
    // A clean overlay for the second boot (the first QEMU was killed, not shut down).
    sh(&format!(
        "truncate -s 256M {0} && mkfs.ext4 -q -F {0}",
        dir.join("overlay.ext4").display()
    ));
    let restarted = Instant::now();
    let mut second = Qemu::start(spec, &qemu_socket, 2);
    wait_for_fetches(dir, &mut second, &backend, before, "second boot").await;
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
