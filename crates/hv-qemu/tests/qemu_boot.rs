//! Real QEMU boots: the boot assets (cloud kernel + initramfs around hypedeck-guest-init), a
//! busybox root disk made with mkfs.ext4, and the QEMU backend (spawn detached, QMP state,
//! graceful shutdown through the control port, exit sentinel in the serial log).
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
        "sh", "echo", "cat", "sleep", "kill", "hostname", "ip", "ls", "trap",
    ] {
        std::os::unix::fs::symlink("busybox", root.join("bin").join(applet)).unwrap();
    }
    std::fs::write(
        root.join("app/run.sh"),
        "#!/bin/sh\necho \"hello $GREETING from $(pwd) host=$(hostname) args=$*\"\n\
         echo written > /tmp/x && echo overlay-ok > /app/new && cat /app/new\n\
         ip addr show eth0 | grep -o 'inet [0-9./]*'\n\
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
    let _handle = qemu.start(&vm.spec).await.expect("qemu starts");
    wait_until("the exit sentinel", Duration::from_secs(90), || {
        log(&vm).contains("HYPEMAN-EXIT")
    })
    .await;
    let text = log(&vm);
    // QEMU's DHCP server hands out .15 of the subnet; the static fallback was .99.
    assert!(
        text.contains("dhcp: 10.100.9.15/24 via 10.100.9.2, dns 10.100.9.3"),
        "{text}"
    );
    assert!(text.contains("inet 10.100.9.15/24"), "{text}");
    assert_eq!(parse_exit_line(&text), Some((0, "success".to_string())));
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
