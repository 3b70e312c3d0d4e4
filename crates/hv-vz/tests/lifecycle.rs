//! The vz backend's lifecycle against a fake helper, on any unix.
//!
//! This test binary is its own `hypedeck-vz`: run as `<exe> run <plan.json> [--restore
//! <state>]` it impersonates the helper with the crate's real pieces (pidfile lock, control
//! server, hybrid-vsock server) around a pretend VM whose guest echoes on the agent port.
//! Run by `cargo test` it drives `VzHypervisor` through start, pause/resume, attach, the
//! agent channel, shutdown, kill, and save/restore. Behaviour is keyed on the instance id:
//! `fail-start` exits with an error, `wedged` ignores `stop`.

// A test binary without libtest's `#[test]` context, where clippy would otherwise flag these.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::ffi::OsString;
use std::io::{BufRead, Write};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use hypedeck_hv_vz::VzHypervisor;
use hypedeck_hv_vz::control::{self, Handler, Request, Response, VmState};
use hypedeck_hv_vz::pidfile::{self, PidLock};
use hypedeck_hv_vz::plan::{self, Launch, RuntimeFiles, VzPlan};
use hypedeck_hv_vz::vsock::{self, Connector, GuestStream};
use hypedeck_hypervisor::{
    AgentChannel, DiskSpec, Hypervisor, HypervisorError, NetSpec, NetworkLink, VmSpec, VmmState,
};
use hypedeck_model::{HypervisorKind, PortForward, PortProtocol};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt};

fn main() -> ExitCode {
    let args: Vec<OsString> = std::env::args_os().skip(1).collect();
    if args.first().is_some_and(|a| a == "run") {
        return fake_helper(&args);
    }
    run_tests(&args)
}

// ---------------------------------------------------------------------------------------------
// The fake helper.

fn fake_helper(args: &[OsString]) -> ExitCode {
    let launch = match Launch::parse(args) {
        Ok(l) => l,
        Err(usage) => {
            eprintln!("{usage}");
            return ExitCode::from(2);
        }
    };
    let plan: VzPlan = match std::fs::read(&launch.plan)
        .map_err(|e| e.to_string())
        .and_then(|b| serde_json::from_slice(&b).map_err(|e| e.to_string()))
    {
        Ok(p) => p,
        Err(e) => {
            eprintln!("fake hypedeck-vz: read plan: {e}");
            return ExitCode::from(1);
        }
    };
    let lock = match PidLock::acquire(&plan.files.pidfile) {
        Ok(l) => l,
        Err(e) => {
            eprintln!("fake hypedeck-vz: lock pidfile: {e}");
            return ExitCode::from(1);
        }
    };
    eprintln!("fake hypedeck-vz: starting {}", plan.instance_id);
    if plan.instance_id == "fail-start" {
        eprintln!("fake hypedeck-vz: validate configuration: fake failure");
        return ExitCode::from(1);
    }
    if let Some(state) = &launch.restore {
        let saved = std::fs::read_to_string(state).unwrap_or_default();
        let id = std::fs::read_to_string(&plan.files.machine_id).unwrap_or_default();
        if saved != format!("fake-state:{}", plan.instance_id) || id != "fake-machine-id" {
            eprintln!("fake hypedeck-vz: restore: state or machine identifier mismatch");
            return ExitCode::from(1);
        }
    } else if std::fs::write(&plan.files.machine_id, "fake-machine-id").is_err() {
        return ExitCode::from(1);
    }
    let (Ok(vsock_listener), Ok(control_listener)) = (
        UnixListener::bind(&plan.files.vsock),
        UnixListener::bind(&plan.files.control),
    ) else {
        eprintln!("fake hypedeck-vz: bind sockets");
        return ExitCode::from(1);
    };
    let agent_port = plan.agent_port;
    std::thread::spawn(move || vsock::serve(vsock_listener, Arc::new(EchoGuest { agent_port })));
    // The NIC, as the real helper builds it: a datagram pair whose VM end is the "guest",
    // which answers every frame with the frame uppercased.
    let network = plan.network.as_ref().map(|_| {
        let (engine_end, vm_end) = std::os::unix::net::UnixDatagram::pair().unwrap();
        std::thread::spawn(move || {
            let mut frame = [0u8; 2048];
            while let Ok(n) = vm_end.recv(&mut frame) {
                if vm_end.send(&frame[..n].to_ascii_uppercase()).is_err() {
                    return;
                }
            }
        });
        std::os::fd::OwnedFd::from(engine_end)
    });
    let vm = Arc::new(FakeVm {
        network,
        plan,
        state: Mutex::new(VmState::Running),
        lock: Mutex::new(Some(lock)),
    });
    match control::serve(control_listener, vm) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("fake hypedeck-vz: control socket: {e}");
            ExitCode::from(1)
        }
    }
}

/// A guest whose agent port echoes lines back uppercased.
struct EchoGuest {
    agent_port: u32,
}

impl Connector for EchoGuest {
    fn connect(&self, port: u32) -> std::io::Result<GuestStream> {
        if port != self.agent_port {
            return Err(std::io::ErrorKind::ConnectionRefused.into());
        }
        let (host, guest) = UnixStream::pair()?;
        std::thread::spawn(move || {
            let Ok(read) = guest.try_clone() else { return };
            let mut guest = guest;
            for line in std::io::BufReader::new(read).lines() {
                let Ok(line) = line else { return };
                if writeln!(guest, "{}", line.to_uppercase()).is_err() {
                    return;
                }
            }
        });
        Ok(GuestStream {
            fd: host.into(),
            local_port: 1025,
            on_close: None,
        })
    }
}

struct FakeVm {
    network: Option<std::os::fd::OwnedFd>,
    plan: VzPlan,
    state: Mutex<VmState>,
    lock: Mutex<Option<PidLock>>,
}

impl FakeVm {
    fn exit(&self) -> ! {
        let _ = std::fs::remove_file(&self.plan.files.control);
        let _ = std::fs::remove_file(&self.plan.files.vsock);
        if let Some(lock) = self.lock.lock().unwrap().take() {
            lock.remove();
        }
        std::process::exit(0)
    }
}

impl Handler for FakeVm {
    fn handle(&self, request: &Request) -> Response {
        let mut state = self.state.lock().unwrap();
        match request {
            Request::State | Request::RequestStop | Request::Network => {}
            Request::Pause => *state = VmState::Paused,
            Request::Resume => *state = VmState::Running,
            Request::Stop if self.plan.instance_id == "wedged" => {
                return Response::Err("wedged".into());
            }
            Request::Stop => *state = VmState::Stopped,
            Request::Save(path) => {
                let content = format!("fake-state:{}", self.plan.instance_id);
                if let Err(e) = std::fs::write(path, content) {
                    return Response::Err(format!("save: {e}"));
                }
                *state = VmState::Stopped;
            }
        }
        Response::Ok(*state)
    }

    fn network_link(&self) -> Option<std::os::fd::BorrowedFd<'_>> {
        use std::os::fd::AsFd;
        self.network.as_ref().map(|fd| fd.as_fd())
    }

    fn replied(&self, request: &Request, response: &Response) {
        match (request, response) {
            (Request::Stop | Request::Save(_), Response::Ok(_)) => self.exit(),
            (Request::RequestStop, _) => {
                // The guest takes a moment to power off.
                std::thread::sleep(Duration::from_millis(100));
                self.exit()
            }
            _ => {}
        }
    }
}

// ---------------------------------------------------------------------------------------------
// The tests.

type Test = fn(Fixture) -> std::pin::Pin<Box<dyn std::future::Future<Output = ()>>>;

macro_rules! tests {
    ($($name:ident),* $(,)?) => {
        &[$((stringify!($name), |f| Box::pin($name(f)))),*]
    };
}

const TESTS: &[(&str, Test)] = tests![
    start_pause_resume_attach_kill,
    start_failure_reports_the_helper_error,
    unsupported_specs_spawn_nothing,
    agent_channel_reaches_the_guest,
    network_link_reaches_the_guest_nic,
    request_shutdown_ends_the_helper,
    save_and_exit_then_restore,
    restore_without_saved_state_fails,
    a_second_start_is_refused,
    kill_falls_back_to_sigkill,
];

fn run_tests(args: &[OsString]) -> ExitCode {
    let filter = args
        .iter()
        .map(|a| a.to_string_lossy().into_owned())
        .find(|a| !a.starts_with('-'));
    let mut failed = Vec::new();
    let mut ran = 0;
    for (name, test) in TESTS {
        if filter.as_deref().is_some_and(|f| !name.contains(f)) {
            continue;
        }
        ran += 1;
        let outcome = std::panic::catch_unwind(|| {
            let fixture = Fixture::new();
            tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap()
                .block_on(test(fixture));
        });
        match outcome {
            Ok(()) => println!("test {name} ... ok"),
            Err(_) => {
                println!("test {name} ... FAILED");
                failed.push(*name);
            }
        }
    }
    println!(
        "\ntest result: {}. {} passed; {} failed",
        if failed.is_empty() { "ok" } else { "FAILED" },
        ran - failed.len(),
        failed.len()
    );
    if failed.is_empty() {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}

/// A temp dir with a runtime dir; kills a leftover helper on drop (even when a test panics).
struct Fixture {
    dir: tempfile::TempDir,
}

impl Fixture {
    fn new() -> Fixture {
        Fixture {
            dir: tempfile::tempdir().unwrap(),
        }
    }

    fn hypervisor(&self) -> VzHypervisor {
        VzHypervisor::with_helper(std::env::current_exe().unwrap())
    }

    fn runtime(&self) -> PathBuf {
        self.dir.path().join("run")
    }

    fn files(&self) -> RuntimeFiles {
        RuntimeFiles::in_dir(&self.runtime())
    }

    fn spec(&self, instance_id: &str) -> VmSpec {
        let d = self.dir.path();
        VmSpec {
            instance_id: instance_id.into(),
            runtime_dir: self.runtime(),
            vcpus: 2,
            memory_bytes: 512 << 20,
            hotplug_bytes: 0,
            kernel: d.join("Image"),
            initrd: d.join("initrd.img"),
            kernel_args: "quiet".into(),
            disks: vec![DiskSpec {
                path: d.join("rootfs.ext4"),
                readonly: true,
                io_bps: 0,
                serial: None,
            }],
            serial_log: d.join("app.log"),
            network: Some(NetSpec {
                mac: "02:00:00:00:00:07".into(),
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
}

impl Drop for Fixture {
    fn drop(&mut self) {
        let pidfile = self.files().pidfile;
        if pidfile::is_held(&pidfile)
            && let Some(pid) = pidfile::read_pid(&pidfile)
            && let Ok(pid) = libc::pid_t::try_from(pid)
        {
            // SAFETY: kill(2) on the fake helper this test started (it holds the lock).
            #[allow(unsafe_code)]
            unsafe {
                libc::kill(pid, libc::SIGKILL);
            }
        }
    }
}

async fn eventually(what: &str, mut check: impl AsyncFnMut() -> bool) {
    for _ in 0..200 {
        if check().await {
            return;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    panic!("timed out waiting until {what}");
}

async fn start_pause_resume_attach_kill(f: Fixture) {
    let hv = f.hypervisor();
    assert_eq!(hv.kind(), HypervisorKind::Vz);
    let vm = hv.start(&f.spec("vm1")).await.unwrap();
    assert!(vm.is_alive().await);
    assert_eq!(vm.state().await.unwrap(), VmmState::Running);

    // The plan the helper booted from is in the runtime dir.
    let written: VzPlan = serde_json::from_slice(&std::fs::read(f.files().plan).unwrap()).unwrap();
    assert_eq!(written, plan::plan(&f.spec("vm1")).unwrap());

    // Attach finds the same helper, and both views agree.
    let again = hv.attach("vm1", &f.runtime()).await.unwrap().unwrap();
    assert!(again.is_alive().await);
    let files = f.files();
    let _ = control::request(&files.control, &Request::Pause, Duration::from_secs(2))
        .await
        .unwrap();
    assert_eq!(again.state().await.unwrap(), VmmState::Paused);
    let _ = control::request(&files.control, &Request::Resume, Duration::from_secs(2))
        .await
        .unwrap();
    assert_eq!(vm.state().await.unwrap(), VmmState::Running);

    vm.kill().await.unwrap();
    assert!(!vm.is_alive().await);
    assert!(!again.is_alive().await);
    assert!(!files.pidfile.exists() && !files.control.exists() && !files.vsock.exists());
    vm.kill().await.unwrap(); // idempotent
    assert!(hv.attach("vm1", &f.runtime()).await.unwrap().is_none());
    assert!(vm.state().await.is_err());
}

async fn start_failure_reports_the_helper_error(f: Fixture) {
    let e = f
        .hypervisor()
        .start(&f.spec("fail-start"))
        .await
        .unwrap_err();
    let text = e.to_string();
    assert!(
        text.starts_with("start vz failed:")
            && text.ends_with("validate configuration: fake failure"),
        "{text}"
    );
    assert!(!pidfile::is_held(&f.files().pidfile));
}

async fn unsupported_specs_spawn_nothing(f: Fixture) {
    let mut spec = f.spec("vm1");
    spec.hotplug_bytes = 1 << 30;
    let e = match f.hypervisor().start(&spec).await {
        Err(e) => e,
        Ok(_) => panic!("started a vm with memory hotplug"),
    };
    assert!(
        matches!(
            e,
            HypervisorError::Unsupported {
                kind: HypervisorKind::Vz,
                operation: "memory hotplug"
            }
        ),
        "{e:?}"
    );
    assert!(!f.files().plan.exists());
}

/// The engine gets the NIC's frame socket from the helper (`SCM_RIGHTS`), again after a
/// restart (attach), and frames cross it both ways. Ports and egress no longer stop a vz VM:
/// the engine's stack serves them on these frames.
async fn network_link_reaches_the_guest_nic(f: Fixture) {
    async fn round_trip(vm: &dyn hypedeck_hypervisor::Vm, frame: &[u8]) -> Vec<u8> {
        let Some(NetworkLink::Datagram(fd)) = vm.network_link().await.unwrap() else {
            panic!("vz hands over a datagram socket");
        };
        let socket = std::os::unix::net::UnixDatagram::from(fd);
        socket
            .set_read_timeout(Some(Duration::from_secs(5)))
            .unwrap();
        socket.send(frame).unwrap();
        let mut back = [0u8; 2048];
        let n = socket.recv(&mut back).unwrap();
        back[..n].to_vec()
    }
    let hv = f.hypervisor();
    let mut spec = f.spec("vm1");
    if let Some(net) = spec.network.as_mut() {
        net.restrict = true;
        net.host_forwards.push(PortForward {
            host_port: 8080,
            guest_port: 80,
            protocol: PortProtocol::Tcp,
        });
    }
    let vm = hv.start(&spec).await.unwrap();
    assert_eq!(round_trip(&*vm, b"frame-1").await, b"FRAME-1");
    // A restarted engine attaches and asks again: the same NIC.
    let again = hv.attach("vm1", &f.runtime()).await.unwrap().unwrap();
    assert_eq!(round_trip(&*again, b"frame-2").await, b"FRAME-2");
    vm.kill().await.unwrap();

    // A VM without a NIC says so.
    let f2 = Fixture::new();
    let mut spec = f2.spec("vm2");
    spec.network = None;
    let vm = f2.hypervisor().start(&spec).await.unwrap();
    let e = vm.network_link().await.unwrap_err().to_string();
    assert!(e.contains("the vm has no network device"), "{e}");
    vm.kill().await.unwrap();
}

async fn agent_channel_reaches_the_guest(f: Fixture) {
    let vm = f.hypervisor().start(&f.spec("vm1")).await.unwrap();
    let AgentChannel::HybridVsock { socket, port } = vm.agent_channel() else {
        panic!("vz uses hybrid vsock");
    };
    assert_eq!(port, hypedeck_guest_init::agent_proto::AGENT_VSOCK_PORT);
    assert_eq!(socket, f.files().vsock);
    let mut stream = tokio::net::UnixStream::connect(&socket).await.unwrap();
    stream
        .write_all(format!("CONNECT {port}\n").as_bytes())
        .await
        .unwrap();
    let (read, mut write) = stream.into_split();
    let mut lines = tokio::io::BufReader::new(read).lines();
    assert_eq!(lines.next_line().await.unwrap().unwrap(), "OK 1025");
    write.write_all(b"ping\n").await.unwrap();
    assert_eq!(lines.next_line().await.unwrap().unwrap(), "PING");
    vm.kill().await.unwrap();
}

async fn request_shutdown_ends_the_helper(f: Fixture) {
    let vm = f.hypervisor().start(&f.spec("vm1")).await.unwrap();
    vm.request_shutdown().await.unwrap();
    eventually("the helper exits", async || !vm.is_alive().await).await;
    vm.request_shutdown().await.unwrap(); // idempotent once gone
}

async fn save_and_exit_then_restore(f: Fixture) {
    let hv = f.hypervisor();
    let spec = f.spec("vm1");
    let vm = hv.start(&spec).await.unwrap();
    let snapshot = f.dir.path().join("snapshot");
    vm.save_and_exit(&snapshot).await.unwrap();
    assert!(!vm.is_alive().await);
    assert!(hv.attach("vm1", &f.runtime()).await.unwrap().is_none());
    assert_eq!(
        std::fs::read_to_string(snapshot.join(plan::STATE_FILE)).unwrap(),
        "fake-state:vm1"
    );
    assert!(snapshot.join(plan::MACHINE_ID_FILE).is_file());

    // A fresh runtime dir still restores: the machine identifier travels with the state.
    std::fs::remove_dir_all(f.runtime()).unwrap();
    let restored = hv.restore(&spec, &snapshot).await.unwrap();
    assert!(restored.is_alive().await);
    assert_eq!(restored.state().await.unwrap(), VmmState::Running);
    restored.kill().await.unwrap();
}

async fn restore_without_saved_state_fails(f: Fixture) {
    let empty = f.dir.path().join("empty");
    std::fs::create_dir_all(&empty).unwrap();
    let e = match f.hypervisor().restore(&f.spec("vm1"), &empty).await {
        Err(e) => e,
        Ok(_) => panic!("restored from nothing"),
    };
    assert!(e.to_string().contains("no saved vz state"), "{e}");
    assert!(!pidfile::is_held(&f.files().pidfile));
}

async fn a_second_start_is_refused(f: Fixture) {
    let hv = f.hypervisor();
    let vm = hv.start(&f.spec("vm1")).await.unwrap();
    let e = match hv.start(&f.spec("vm1")).await {
        Err(e) => e,
        Ok(_) => panic!("two helpers for one runtime dir"),
    };
    assert!(e.to_string().contains("already running"), "{e}");
    assert_eq!(vm.state().await.unwrap(), VmmState::Running);
    vm.kill().await.unwrap();
}

async fn kill_falls_back_to_sigkill(f: Fixture) {
    let vm = f.hypervisor().start(&f.spec("wedged")).await.unwrap();
    vm.kill().await.unwrap();
    assert!(!vm.is_alive().await);
    assert!(!f.files().pidfile.exists());
    assert!(!Path::new(&f.files().control).exists());
}
