//! Real QEMU boots: the boot assets (cloud kernel + initramfs around hypedeck-guest-init), a
//! busybox root disk made with mkfs.ext4, and the QEMU backend (spawn detached, QMP state,
//! graceful shutdown through the control port, exit sentinel in the serial log), with the
//! guest's NIC on the engine's userspace network stack (`hypedeck-netstack`) over QEMU's
//! `-netdev stream` socket.
//!
//! Needs qemu-system, busybox-static, e2fsprogs, apt (for the kernel) and the musl build of
//! hypedeck-guest-init: `make test` provides all of them. Ignored in plain `cargo test`.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use hypedeck_guest_init::{GuestConfig, GuestNetwork, parse_exit_line};
use hypedeck_hv_qemu::QemuHypervisor;
use hypedeck_hypervisor::{DiskSpec, Hypervisor, NetSpec, VmSpec, VmmState};

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
        }),
        ca_cert_pem: None,
        volumes: vec![],
        skip_agent: false,
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
            },
            DiskSpec {
                path: overlay,
                readonly: false,
                io_bps: 50 << 20,
            },
            DiskSpec {
                path: cfg,
                readonly: true,
                io_bps: 0,
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
    let config = hypedeck_netstack::NetConfig {
        instance_id: "testvm".into(),
        guest_mac: [2, 0, 0, 0, 9, 0x15],
        guest_ip: "10.100.9.15".parse().unwrap(),
        gateway: "10.100.9.2".parse().unwrap(),
        dns: "10.100.9.3".parse().unwrap(),
        prefix: 24,
        egress: hypedeck_netstack::Egress::Direct(hypedeck_netstack::Policy::default()),
        forwards: Vec::new(),
        dial_overrides: overrides.iter().copied().collect(),
        events: None,
        allow: Default::default(),
        max_tcp_flows: hypedeck_netstack::MAX_TCP_FLOWS,
    };
    hypedeck_netstack::Network::start(config, transport)
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
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    // "The internet": 203.0.113.10:8080 in the guest, a listener on loopback here.
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
                let _ = conn
                    .write_all(b"HTTP/1.0 200 OK\r\nContent-Length: 7\r\n\r\nnat-ok\n")
                    .await;
            });
        }
    });
    let overrides = [("203.0.113.10:8080".parse().unwrap(), served)];
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
