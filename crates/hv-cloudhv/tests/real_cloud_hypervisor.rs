//! A real Cloud Hypervisor boot: the boot assets (cloud kernel + initramfs around
//! hypedeck-guest-init), a busybox root disk made with mkfs.ext4, and this backend (spawn,
//! REST control, the exec agent over hybrid vsock, standby/restore, graceful shutdown, exit
//! sentinel in the serial log).
//!
//! Runs only where `cloud-hypervisor` is installed (on PATH or `$HYPEDECK_CLOUD_HYPERVISOR`)
//! and `/dev/kvm` works; otherwise it says why it skipped and passes. Once it runs, it also
//! needs busybox-static, e2fsprogs, apt (for the kernel) and the musl build of
//! hypedeck-guest-init (`make test` provides them) and fails loudly without them.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use hypedeck_guest_init::agent_proto::{self, Kind};
use hypedeck_guest_init::{GuestConfig, parse_exit_line};
use hypedeck_hv_cloudhv::CloudHypervisor;
use hypedeck_hypervisor::{AgentChannel, DiskSpec, Hypervisor, VmSpec, VmmState};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};

fn sh(cmd: &str) {
    let status = std::process::Command::new("sh")
        .arg("-c")
        .arg(cmd)
        .status()
        .unwrap();
    assert!(status.success(), "{cmd}");
}

/// A root disk with busybox and a program that waits for SIGTERM.
fn rootfs(dir: &Path) -> PathBuf {
    let root = dir.join("rootfs");
    for d in ["bin", "app", "proc", "sys", "dev", "tmp", "etc", "run"] {
        std::fs::create_dir_all(root.join(d)).unwrap();
    }
    std::fs::copy("/bin/busybox", root.join("bin/busybox")).expect("busybox-static");
    for applet in ["sh", "echo", "sleep", "trap"] {
        std::os::unix::fs::symlink("busybox", root.join("bin").join(applet)).unwrap();
    }
    std::fs::write(
        root.join("app/run.sh"),
        "#!/bin/sh\ntrap 'echo got-term; exit 7' TERM\necho waiting\n\
         while true; do sleep 0.2; done\n",
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

async fn spec(dir: &Path) -> VmSpec {
    let system = std::env::var_os("HYPEDECK_TEST_SYSTEM_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| std::env::temp_dir().join("hypedeck-test-system"));
    let assets = hypedeck_boot::ensure(&system)
        .await
        .expect("boot assets (run `make test`, which builds them)");
    let root = rootfs(dir);
    let overlay = dir.join("overlay.ext4");
    sh(&format!(
        "truncate -s 256M {0} && mkfs.ext4 -q -F {0}",
        overlay.display()
    ));
    let config = GuestConfig {
        argv: vec!["/app/run.sh".into()],
        env: vec![],
        workdir: "/app".into(),
        hostname: "ch-test".into(),
        overlay: true,
        network: None,
        ca_cert_pem: None,
        volumes: vec![],
        skip_agent: false,
        agent_key: None,
        host_time_ns: None,
        entropy: None,
    };
    let cfg = dir.join("config.img");
    std::fs::write(&cfg, config.to_disk().unwrap()).unwrap();
    VmSpec {
        instance_id: "chtestvm".into(),
        runtime_dir: dir.join("run"),
        vcpus: 1,
        memory_bytes: 512 << 20,
        hotplug_bytes: 256 << 20,
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
        serial_log: dir.join("logs/app.log"),
        network: None,
        vsock_cid: 0x1916,
    }
}

fn log(spec: &VmSpec) -> String {
    std::fs::read_to_string(&spec.serial_log).unwrap_or_default()
}

async fn wait_until(what: &str, timeout: Duration, mut f: impl AsyncFnMut() -> bool) {
    let start = Instant::now();
    while !f().await {
        assert!(start.elapsed() < timeout, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// `CONNECT <port>` on the hybrid vsock socket, then a ping frame answered by a pong.
async fn agent_answers(channel: &AgentChannel) {
    let AgentChannel::HybridVsock { socket, port } = channel else {
        panic!("expected hybrid vsock, got {channel:?}");
    };
    let stream = tokio::net::UnixStream::connect(socket).await.unwrap();
    let (read, mut write) = stream.into_split();
    let mut read = BufReader::new(read);
    write
        .write_all(format!("CONNECT {port}\n").as_bytes())
        .await
        .unwrap();
    let mut line = String::new();
    read.read_line(&mut line).await.unwrap();
    assert!(line.starts_with("OK "), "vsock answered {line:?}");
    write
        .write_all(&agent_proto::encode(Kind::Ping, 0, &[]))
        .await
        .unwrap();
    let mut header = [0u8; agent_proto::HEADER];
    tokio::time::timeout(Duration::from_secs(10), read.read_exact(&mut header))
        .await
        .expect("pong in time")
        .unwrap();
    assert_eq!(Kind::from_byte(header[4]), Some(Kind::Pong));
}

#[tokio::test]
async fn boots_saves_restores_and_shuts_down() {
    let ch = match CloudHypervisor::detect() {
        Ok(ch) => ch,
        Err(why) => {
            eprintln!("skipping the real Cloud Hypervisor test: {why}");
            return;
        }
    };
    let dir = tempfile::tempdir().unwrap();
    let spec = spec(dir.path()).await;
    let vm = ch.start(&spec).await.expect("cloud-hypervisor boots");
    assert_eq!(vm.state().await.unwrap(), VmmState::Running);
    wait_until(
        "the program to start",
        Duration::from_secs(90),
        async || log(&spec).contains("waiting"),
    )
    .await;
    wait_until("the agent", Duration::from_secs(30), async || {
        log(&spec).contains(hypedeck_guest_init::AGENT_READY)
    })
    .await;
    agent_answers(&vm.agent_channel()).await;

    // Found again from the runtime dir alone (as after an engine restart).
    let again = ch
        .attach(&spec.instance_id, &spec.runtime_dir)
        .await
        .unwrap()
        .expect("reattached");
    assert_eq!(again.state().await.unwrap(), VmmState::Running);

    // Standby and back: the app log keeps its markers (appended, not truncated).
    let snap = dir.path().join("snapshot");
    vm.save_and_exit(&snap).await.expect("snapshot");
    assert!(!vm.is_alive().await);
    let vm = ch.restore(&spec, &snap).await.expect("restore");
    assert_eq!(vm.state().await.unwrap(), VmmState::Running);
    assert!(log(&spec).contains(hypedeck_guest_init::PROGRAM_START));
    agent_answers(&vm.agent_channel()).await;

    // The power button reaches the program as SIGTERM; the VMM exits with the guest.
    vm.request_shutdown().await.unwrap();
    wait_until(
        "cloud-hypervisor to exit",
        Duration::from_secs(30),
        async || !vm.is_alive().await,
    )
    .await;
    let text = log(&spec);
    assert!(text.contains("got-term"), "{text}");
    assert_eq!(parse_exit_line(&text), Some((7, "exit code 7".to_string())));
    vm.kill().await.unwrap();
    vm.kill().await.unwrap();
    assert!(
        ch.attach(&spec.instance_id, &spec.runtime_dir)
            .await
            .unwrap()
            .is_none()
    );
}
