//! Backend tests against the fake VMM: in-process for the `Vm` state machine, and as a
//! spawned stand-in process for start, attach, kill, save and restore.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use hypedeck_hypervisor::{AgentChannel, Hypervisor, HypervisorError, NetSpec, Vm, VmmState};

use super::*;
use crate::fake_api::{FakeCh, fake_binary};

struct Setup {
    dir: tempfile::TempDir,
    ch: CloudHypervisor,
    spec: VmSpec,
}

/// A spec rooted in a temp dir, without network, and a stand-in binary in `mode`.
fn setup(mode: &str) -> Setup {
    let dir = tempfile::tempdir().unwrap();
    let ch = CloudHypervisor::with_binary(fake_binary(dir.path(), mode));
    let mut spec = crate::fake_api::spec();
    // Unique per test: the temp dir's random part, then our pid.
    let random: String = dir
        .path()
        .file_name()
        .unwrap()
        .to_string_lossy()
        .chars()
        .filter(char::is_ascii_alphanumeric)
        .collect();
    spec.instance_id = format!("{random}p{}", std::process::id());
    spec.runtime_dir = dir.path().join("run");
    spec.serial_log = dir.path().join("logs/app.log");
    spec.network = None;
    Setup { dir, ch, spec }
}

fn app_log(s: &Setup) -> String {
    std::fs::read_to_string(&s.spec.serial_log).unwrap_or_default()
}

/// Pids whose command line mentions `needle` (what a leak would look like).
fn processes_mentioning(needle: &Path) -> Vec<u32> {
    let needle = needle.display().to_string();
    std::fs::read_dir("/proc")
        .unwrap()
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<u32>().ok())
        .filter(|pid| process::is_alive(*pid, Path::new(&needle)))
        .collect()
}

async fn wait_until(what: &str, timeout: Duration, mut f: impl FnMut() -> bool) {
    let start = Instant::now();
    while !f() {
        assert!(start.elapsed() < timeout, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn start_boots_through_the_api_and_kill_cleans_up() {
    let s = setup("");
    std::fs::create_dir_all(s.spec.serial_log.parent().unwrap()).unwrap();
    std::fs::write(&s.spec.serial_log, "previous run\n").unwrap();
    let vm = s.ch.start(&s.spec).await.unwrap();
    assert!(vm.is_alive().await);
    assert_eq!(vm.state().await.unwrap(), VmmState::Running);
    let files = RuntimeFiles::in_dir(&s.spec.runtime_dir);
    let pid = process::read_pid(&files.pidfile).unwrap();
    assert!(process::is_alive(pid, &files.api));
    assert_eq!(
        vm.agent_channel(),
        AgentChannel::HybridVsock {
            socket: s.spec.runtime_dir.join("vsock.sock"),
            port: 1024,
        }
    );
    // The VMM got our config.
    let info = Client::new(&files.api).info().await.unwrap();
    assert_eq!(
        info["config"],
        serde_json::to_value(vm_config(&s.spec)).unwrap()
    );
    assert_eq!(info["config"]["vsock"]["cid"], s.spec.vsock_cid);
    // The serial port reaches the app log without truncating it.
    wait_until("the serial line", Duration::from_secs(5), || {
        app_log(&s).contains("fake-ch: booted")
    })
    .await;
    assert!(app_log(&s).starts_with("previous run\n"), "{}", app_log(&s));

    vm.kill().await.unwrap();
    assert!(!vm.is_alive().await);
    assert!(!process::is_alive(pid, &files.api));
    assert!(!files.pidfile.exists());
    assert!(!files.serial_pidfile.exists());
    assert!(processes_mentioning(&files.api).is_empty());
    assert!(processes_mentioning(&files.serial_fifo).is_empty());
    vm.kill().await.unwrap();
    assert!(
        s.ch.attach(&s.spec.instance_id, &s.spec.runtime_dir)
            .await
            .unwrap()
            .is_none()
    );
}

/// The balloon: VMs boot with one (free page reporting, deflate on OOM); a memory target
/// inflates it to what the guest must give back, and `memory_target` reads what it keeps.
#[tokio::test]
async fn a_memory_target_inflates_the_balloon() {
    let s = setup("");
    let vm = s.ch.start(&s.spec).await.unwrap();
    let ram = s.spec.memory_bytes;
    assert_eq!(vm.memory_target().await, Some(ram));
    vm.set_memory_target(ram - (256 << 20)).await.unwrap();
    assert_eq!(vm.memory_target().await, Some(ram - (256 << 20)));
    vm.set_memory_target(ram).await.unwrap();
    assert_eq!(vm.memory_target().await, Some(ram));
    let direct = CloudHypervisorVm::attach(&s.spec.runtime_dir).unwrap();
    let info = direct.client().info().await.unwrap();
    assert_eq!(info["config"]["balloon"]["free_page_reporting"], true);
    assert_eq!(info["config"]["balloon"]["deflate_on_oom"], true);
    vm.kill().await.unwrap();
}

#[tokio::test]
async fn attach_finds_the_vmm_again_and_controls_it() {
    let s = setup("");
    let started = s.ch.start(&s.spec).await.unwrap();
    // As after an engine restart: only the runtime dir is known.
    let again =
        s.ch.attach(&s.spec.instance_id, &s.spec.runtime_dir)
            .await
            .unwrap()
            .expect("reattached");
    assert!(again.is_alive().await);
    assert_eq!(again.state().await.unwrap(), VmmState::Running);

    let direct = CloudHypervisorVm::attach(&s.spec.runtime_dir).unwrap();
    direct.pause().await.unwrap();
    assert_eq!(started.state().await.unwrap(), VmmState::Paused);
    direct.resume().await.unwrap();
    direct.resize_memory(1536 << 20).await.unwrap();
    let info = direct.client().info().await.unwrap();
    assert_eq!(info["memory_actual_size"], 1536u64 << 20);
    let err = direct.resize_memory(8 << 30).await.unwrap_err();
    assert!(
        matches!(
            err,
            HypervisorError::Operation {
                operation: "vm.resize",
                ..
            }
        ),
        "{err:?}"
    );

    // The power button: the (fake) guest powers off and the VMM exits with it.
    again.request_shutdown().await.unwrap();
    wait_until("the VMM to exit", Duration::from_secs(5), || {
        process::reap(direct.pid());
        !direct.alive()
    })
    .await;
    assert!(!started.is_alive().await);
    // Gone: asking again is fine, and nothing is found to attach to.
    again.request_shutdown().await.unwrap();
    assert!(
        s.ch.attach(&s.spec.instance_id, &s.spec.runtime_dir)
            .await
            .unwrap()
            .is_none()
    );
    started.kill().await.unwrap();
}

#[tokio::test]
async fn save_and_exit_then_restore_resumes_where_it_was() {
    let s = setup("");
    let vm = s.ch.start(&s.spec).await.unwrap();
    let snap = s.dir.path().join("snapshots/standby");
    vm.save_and_exit(&snap).await.unwrap();
    assert!(!vm.is_alive().await);
    for f in ["config.json", "state.json", "memory-ranges"] {
        assert!(snap.join(f).is_file(), "{f}");
    }
    let saved = std::fs::read(snap.join("config.json")).unwrap();

    let restored = s.ch.restore(&s.spec, &snap).await.unwrap();
    assert_eq!(restored.state().await.unwrap(), VmmState::Running);
    assert_eq!(std::fs::read(snap.join("config.json")).unwrap(), saved);
    wait_until("the restored serial line", Duration::from_secs(5), || {
        app_log(&s).contains("fake-ch: restored")
    })
    .await;
    let log = app_log(&s);
    assert!(
        log.find("fake-ch: booted").unwrap() < log.find("fake-ch: restored").unwrap(),
        "the restore appended to the app log: {log}"
    );
    // A paused VM can be saved too (it stays paused until restored).
    let direct = CloudHypervisorVm::attach(&s.spec.runtime_dir).unwrap();
    direct.pause().await.unwrap();
    let snap2 = s.dir.path().join("snapshots/second");
    restored.save_and_exit(&snap2).await.unwrap();
    assert!(snap2.join("config.json").is_file());
    assert!(!restored.is_alive().await);
}

#[tokio::test]
async fn restore_without_saved_state_is_refused_before_spawning() {
    let s = setup("");
    let err = s.ch.restore(&s.spec, s.dir.path()).await.err().unwrap();
    assert!(
        matches!(&err, HypervisorError::Operation { operation: "restore", detail } if detail == "no saved state"),
        "{err:?}"
    );
    assert!(!s.spec.runtime_dir.exists());
}

#[tokio::test]
async fn a_failed_snapshot_resumes_the_vm() {
    let s = setup("");
    let vm = s.ch.start(&s.spec).await.unwrap();
    let snap = s.dir.path().join("bad");
    // config.json is a directory: the VMM cannot write its snapshot.
    std::fs::create_dir_all(snap.join("config.json")).unwrap();
    let err = vm.save_and_exit(&snap).await.unwrap_err();
    assert!(
        matches!(&err, HypervisorError::Operation { operation: "save state", detail } if detail.contains("could not be snapshotted")),
        "{err:?}"
    );
    assert!(vm.is_alive().await);
    assert_eq!(vm.state().await.unwrap(), VmmState::Running);
    assert!(!snap.join("state.json").exists());
    vm.kill().await.unwrap();
}

#[tokio::test]
async fn a_failed_boot_leaves_nothing_running() {
    let s = setup("fail_boot");
    let files = RuntimeFiles::in_dir(&s.spec.runtime_dir);
    let err = s.ch.start(&s.spec).await.err().unwrap();
    match err {
        HypervisorError::Operation { operation, detail } => {
            assert_eq!(operation, "vm.boot");
            assert!(detail.contains("vhost-user backend"), "{detail}");
        }
        other => panic!("{other:?}"),
    }
    assert!(!files.pidfile.exists());
    assert!(!files.serial_pidfile.exists());
    assert!(processes_mentioning(&files.api).is_empty());
    assert!(processes_mentioning(&files.serial_fifo).is_empty());
}

#[tokio::test]
async fn a_vmm_that_ignores_shutdown_is_killed() {
    let s = setup("ignore_shutdown");
    let vm = s.ch.start(&s.spec).await.unwrap();
    let files = RuntimeFiles::in_dir(&s.spec.runtime_dir);
    let started = Instant::now();
    vm.kill().await.unwrap();
    assert!(started.elapsed() < Duration::from_secs(8));
    assert!(!vm.is_alive().await);
    assert!(processes_mentioning(&files.api).is_empty());
}

#[tokio::test]
async fn a_missing_binary_is_a_start_error() {
    let mut s = setup("");
    s.ch = CloudHypervisor::with_binary(s.dir.path().join("no-such-binary"));
    let err = s.ch.start(&s.spec).await.err().unwrap();
    assert!(matches!(err, HypervisorError::Start(_)), "{err:?}");
    let files = RuntimeFiles::in_dir(&s.spec.runtime_dir);
    assert!(processes_mentioning(&files.serial_fifo).is_empty());
}

fn test_net(n: u8) -> NetSpec {
    NetSpec {
        mac: "02:00:00:00:00:02".into(),
        subnet: format!("198.18.{n}.0/30"),
        gateway: format!("198.18.{n}.1"),
        dns: format!("198.18.{n}.1"),
        guest_ip: format!("198.18.{n}.2"),
        restrict: false,
        guest_forwards: Vec::new(),
        host_forwards: Vec::new(),
    }
}

/// The NIC is a vhost-user-net device on the runtime dir's `net.sock`, with shared guest
/// memory; the engine serves that socket before the boot (`network_before_start`) and again
/// after an engine restart (`network_link`). Ports and egress no longer stop a start.
#[tokio::test]
async fn network_is_a_vhost_user_device_on_the_runtime_dir() {
    let mut s = setup("");
    let mut net = test_net(240);
    net.restrict = true;
    net.host_forwards.push(hypedeck_model::PortForward {
        host_port: 8080,
        guest_port: 80,
        protocol: hypedeck_model::PortProtocol::Tcp,
    });
    s.spec.network = Some(net);
    let files = RuntimeFiles::in_dir(&s.spec.runtime_dir);
    let Some(NetworkLink::VhostUser(before)) = s.ch.network_before_start(&s.spec) else {
        panic!("cloud hypervisor's network is served before the boot");
    };
    assert_eq!(before, files.net);
    let vm = s.ch.start(&s.spec).await.unwrap();
    let info = Client::new(&files.api).info().await.unwrap();
    let nic = &info["config"]["net"][0];
    assert_eq!(nic["vhost_user"], true, "{info}");
    assert_eq!(nic["vhost_socket"], files.net.display().to_string());
    assert_eq!(nic["vhost_mode"], "Client");
    assert_eq!(nic["mac"], "02:00:00:00:00:02");
    assert!(nic.get("tap").is_none(), "{nic}");
    assert_eq!(info["config"]["memory"]["shared"], true);
    let Some(NetworkLink::VhostUser(after)) = vm.network_link().await.unwrap() else {
        panic!("the same link after an engine restart");
    };
    assert_eq!(after, files.net);
    vm.kill().await.unwrap();

    // No network: nothing to serve, and no shared memory.
    let s = setup("");
    assert!(s.ch.network_before_start(&s.spec).is_none());
    let vm = s.ch.start(&s.spec).await.unwrap();
    let info = Client::new(&RuntimeFiles::in_dir(&s.spec.runtime_dir).api)
        .info()
        .await
        .unwrap();
    assert!(info["config"]["memory"].get("shared").is_none(), "{info}");
    vm.kill().await.unwrap();
}

/// The `Vm` state machine over an in-process fake (no process: control calls only).
#[tokio::test]
async fn vm_state_follows_vm_info() {
    let dir = tempfile::tempdir().unwrap();
    let files = RuntimeFiles::in_dir(dir.path());
    let _fake = FakeCh::serve(&files.api);
    let vm = CloudHypervisorVm {
        client: Client::new(&files.api),
        files,
        pid: u32::MAX - 1,
        dir: dir.path().to_path_buf(),
    };
    // No VM created yet: the state is unknown (an error), not a guess.
    assert!(matches!(
        vm.state().await,
        Err(HypervisorError::Operation {
            operation: "vm.info",
            ..
        })
    ));
    let mut spec = crate::fake_api::spec();
    spec.network = None;
    vm.client.create(&vm_config(&spec)).await.unwrap();
    assert_eq!(vm.state().await.unwrap(), VmmState::Created);
    vm.client.boot().await.unwrap();
    assert_eq!(vm.state().await.unwrap(), VmmState::Running);
    vm.pause().await.unwrap();
    assert_eq!(vm.state().await.unwrap(), VmmState::Paused);
    vm.resume().await.unwrap();
    assert_eq!(vm.state().await.unwrap(), VmmState::Running);
    vm.request_shutdown().await.unwrap();
    vm.client.shutdown().await.unwrap();
    assert_eq!(vm.state().await.unwrap(), VmmState::Shutdown);
    // Powered off already: requesting a shutdown again is not an error.
    vm.request_shutdown().await.unwrap();
    // Not a process of ours: kill has nothing to kill and still succeeds.
    assert!(!vm.is_alive().await);
    vm.kill().await.unwrap();
}

#[test]
fn detect_names_what_to_install() {
    let dir = tempfile::tempdir().unwrap();
    let empty = std::ffi::OsString::from(dir.path());
    let err = find_binary(None, Some(&empty)).unwrap_err();
    assert_eq!(
        err,
        "cloud-hypervisor was not found: download the static binary from \
         https://github.com/cloud-hypervisor/cloud-hypervisor/releases, put it on PATH or set \
         HYPEDECK_CLOUD_HYPERVISOR"
    );
    assert!(find_binary(None, None).is_err());
    let bin = dir.path().join("cloud-hypervisor");
    std::fs::write(&bin, "").unwrap();
    assert_eq!(find_binary(None, Some(&empty)).unwrap(), bin);
    assert_eq!(find_binary(Some(&bin), None).unwrap(), bin);
    let missing = dir.path().join("elsewhere/cloud-hypervisor");
    let err = find_binary(Some(&missing), Some(&empty)).unwrap_err();
    assert!(
        err.contains("not found at") && err.contains(BINARY_ENV) && err.contains("releases"),
        "{err}"
    );
    // A bare name is looked up on PATH.
    assert_eq!(
        find_binary(Some(Path::new("cloud-hypervisor")), Some(&empty)).unwrap(),
        bin
    );
}

#[test]
fn kvm_problems_are_named() {
    let dir = tempfile::tempdir().unwrap();
    let err = check_kvm(&dir.path().join("kvm")).unwrap_err();
    assert!(
        err.starts_with("Cloud Hypervisor needs KVM: ") && err.contains("does not exist"),
        "{err}"
    );
    // A device that opens but is no KVM.
    let fake = dir.path().join("not-kvm");
    std::fs::write(&fake, "").unwrap();
    let err = check_kvm(&fake).unwrap_err();
    assert!(
        err.contains("does not work") && err.contains("KVM_GET_API_VERSION"),
        "{err}"
    );
    // What this host says, for the record (no assertion: hosts differ).
    match check_kvm(Path::new("/dev/kvm")) {
        Ok(()) => eprintln!("/dev/kvm works here"),
        Err(e) => eprintln!("{e}"),
    }
}

#[test]
fn capabilities_are_reported_honestly() {
    let ch = CloudHypervisor::with_binary(PathBuf::from("/nonexistent"));
    assert_eq!(ch.kind(), HypervisorKind::CloudHypervisor);
    let caps = ch.capabilities();
    assert!(caps.snapshot && caps.pause && caps.hotplug_memory && caps.vsock);
    assert!(caps.disk_io_limit && caps.graceful_shutdown);
    assert!(!caps.gpu && caps.port_forwarding && caps.egress_enforcement);
}
