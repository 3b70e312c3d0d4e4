//! Test support: a fake Cloud Hypervisor that implements the documented REST API (status
//! codes and error bodies as in `cloud-hypervisor.yaml` and `vmm/src/api/http`), with the
//! VM state machine Created -> Running <-> Paused -> Shutdown, and recording every request.
//!
//! It runs in-process ([`FakeCh::serve`]) or as a real detached process: [`fake_binary`]
//! writes a `cloud-hypervisor` stand-in script that re-executes this test binary into
//! [`fake_ch_main`], so spawn, pidfile, `/proc` liveness, kill, attach, save and restore are
//! exercised end to end without KVM.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use hypedeck_hypervisor::{DiskSpec, NetSpec, VmSpec};
use serde_json::{Value, json};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::{UnixListener, UnixStream};

/// A full spec (disks with a read-only one and a throttled one, network, hotplug, vsock).
pub fn spec() -> VmSpec {
    VmSpec {
        instance_id: "tz4a98xxat96iws9zmbrgj3a".into(),
        runtime_dir: PathBuf::from("/data/instances/tz4a98xxat96iws9zmbrgj3a/run"),
        vcpus: 2,
        memory_bytes: 1 << 30,
        hotplug_bytes: 1000 << 20,
        kernel: PathBuf::from("/data/system/kernel/vmlinuz"),
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
                path: PathBuf::from("/data/i/x/overlay,1.ext4"),
                readonly: false,
                io_bps: 100 << 20,
                serial: None,
            },
        ],
        serial_log: PathBuf::from("/data/instances/x/logs/app.log"),
        network: Some(NetSpec {
            mac: "02:00:00:ab:cd:ef".into(),
            subnet: "10.100.7.0/24".into(),
            gateway: "10.100.7.2".into(),
            dns: "10.100.7.3".into(),
            guest_ip: "10.100.7.15".into(),
            restrict: false,
            guest_forwards: Vec::new(),
            host_forwards: Vec::new(),
        }),
        vsock_cid: 0x1234,
    }
}

/// `chmod 755`.
pub fn set_executable(path: &Path) {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o755)).unwrap();
}

/// One request the fake received.
#[derive(Debug, Clone)]
pub struct Recorded {
    /// `GET` or `PUT`.
    pub method: String,
    /// `/api/v1/…`.
    pub path: String,
    /// JSON body (`Null` when none).
    pub body: Value,
}

/// Behaviour switches.
#[derive(Debug, Clone, Copy, Default)]
pub struct Mode {
    /// Runs as a stand-in process: opens the serial file like Cloud Hypervisor, exits on
    /// `vmm.shutdown` and when the guest "powers off" after `vm.power-button`.
    pub process: bool,
    /// `vm.boot` fails the way a VMM does when no vhost-user backend answers.
    pub fail_boot: bool,
    /// `vmm.shutdown` answers but the process keeps running (the SIGKILL fallback).
    pub ignore_shutdown: bool,
}

#[derive(Debug, Default)]
struct Vm {
    config: Option<Value>,
    state: &'static str,
    memory_actual: u64,
    /// Bytes the balloon holds (`vm.resize {desired_balloon}`).
    balloon: u64,
    serial: Option<std::fs::File>,
}

#[derive(Debug)]
struct Shared {
    mode: Mode,
    vm: Mutex<Vm>,
    requests: Mutex<Vec<Recorded>>,
    stop: tokio::sync::watch::Sender<bool>,
}

/// A running fake.
#[derive(Debug)]
pub struct FakeCh {
    shared: Arc<Shared>,
    stopped: tokio::sync::watch::Receiver<bool>,
}

impl FakeCh {
    /// Serves the API on `socket` in this process.
    pub fn serve(socket: &Path) -> FakeCh {
        FakeCh::serve_with(socket, Mode::default())
    }

    /// Serves the API on `socket` with `mode`.
    pub fn serve_with(socket: &Path, mode: Mode) -> FakeCh {
        let _ = std::fs::remove_file(socket);
        let listener = UnixListener::bind(socket).unwrap();
        let (stop, stopped) = tokio::sync::watch::channel(false);
        let shared = Arc::new(Shared {
            mode,
            vm: Mutex::new(Vm::default()),
            requests: Mutex::new(Vec::new()),
            stop,
        });
        let s = shared.clone();
        let mut stop_rx = stopped.clone();
        tokio::spawn(async move {
            loop {
                tokio::select! {
                    accepted = listener.accept() => {
                        let Ok((stream, _)) = accepted else { return };
                        tokio::spawn(connection(stream, s.clone()));
                    }
                    _ = stop_rx.changed() => return,
                }
            }
        });
        FakeCh { shared, stopped }
    }

    /// Every request so far.
    pub fn requests(&self) -> Vec<Recorded> {
        self.shared.requests.lock().unwrap().clone()
    }

    /// Resolves after `vmm.shutdown`.
    pub async fn stopped(&self) {
        let mut rx = self.stopped.clone();
        let _ = rx.wait_for(|s| *s).await;
    }
}

async fn connection(stream: UnixStream, shared: Arc<Shared>) {
    let (read, mut write) = stream.into_split();
    let mut reader = BufReader::new(read);
    let mut line = String::new();
    if reader.read_line(&mut line).await.unwrap_or(0) == 0 {
        return;
    }
    let mut parts = line.split_whitespace();
    let method = parts.next().unwrap_or("").to_string();
    let path = parts.next().unwrap_or("").to_string();
    let mut length = 0usize;
    loop {
        let mut header = String::new();
        if reader.read_line(&mut header).await.unwrap_or(0) == 0 {
            return;
        }
        let header = header.trim_end();
        if header.is_empty() {
            break;
        }
        if let Some((k, v)) = header.split_once(':')
            && k.eq_ignore_ascii_case("content-length")
        {
            length = v.trim().parse().unwrap_or(0);
        }
    }
    let mut body = vec![0u8; length];
    if reader.read_exact(&mut body).await.is_err() {
        return;
    }
    let parsed: Result<Value, String> = if body.is_empty() {
        Ok(Value::Null)
    } else {
        serde_json::from_slice(&body).map_err(|e| e.to_string())
    };
    shared.requests.lock().unwrap().push(Recorded {
        method: method.clone(),
        path: path.clone(),
        body: parsed.clone().unwrap_or(Value::Null),
    });
    let (status, answer, after) = handle(&shared, &method, &path, parsed).await;
    let reason = match status {
        200 => "OK",
        204 => "No Content",
        400 => "Bad Request",
        404 => "Not Found",
        405 => "Method Not Allowed",
        _ => "Internal Server Error",
    };
    let mut response = format!(
        "HTTP/1.1 {status} {reason}\r\nServer: Cloud Hypervisor API\r\nConnection: keep-alive\r\n"
    );
    match answer {
        Some(text) => response.push_str(&format!(
            "Content-Type: application/json\r\nContent-Length: {}\r\n\r\n{text}",
            text.len()
        )),
        None => response.push_str("\r\n"),
    }
    let _ = write.write_all(response.as_bytes()).await;
    let _ = write.flush().await;
    match after {
        After::Nothing => {}
        After::Stop => {
            if shared.mode.process && !shared.mode.ignore_shutdown {
                std::process::exit(0);
            }
            if !shared.mode.ignore_shutdown {
                let _ = shared.stop.send(true);
            }
        }
    }
}

enum After {
    Nothing,
    Stop,
}

fn errors(chain: &[&str]) -> Option<String> {
    Some(serde_json::to_string(chain).unwrap())
}

fn vm_error(action: &str, cause: &str) -> Option<String> {
    errors(&["Error from API", action, cause])
}

/// Opens the serial target the way Cloud Hypervisor does (`File::create`) and writes a line.
async fn open_serial(shared: &Shared, line: &'static str) {
    if !shared.mode.process {
        return;
    }
    let file = shared
        .vm
        .lock()
        .unwrap()
        .config
        .as_ref()
        .and_then(|c| c["serial"]["file"].as_str().map(PathBuf::from));
    let Some(file) = file else { return };
    let opened = tokio::task::spawn_blocking(move || {
        use std::io::Write;
        let mut f = std::fs::File::create(file).ok()?;
        f.write_all(line.as_bytes()).ok()?;
        Some(f)
    })
    .await
    .ok()
    .flatten();
    shared.vm.lock().unwrap().serial = opened;
}

async fn handle(
    shared: &Shared,
    method: &str,
    path: &str,
    body: Result<Value, String>,
) -> (u16, Option<String>, After) {
    let Some(endpoint) = path.strip_prefix("/api/v1/") else {
        return (404, errors(&["Not Found"]), After::Nothing);
    };
    let get = matches!(endpoint, "vmm.ping" | "vm.info" | "vm.counters");
    let known = get
        || matches!(
            endpoint,
            "vmm.shutdown"
                | "vm.create"
                | "vm.boot"
                | "vm.pause"
                | "vm.resume"
                | "vm.shutdown"
                | "vm.power-button"
                | "vm.snapshot"
                | "vm.restore"
                | "vm.resize"
        );
    if !known {
        return (404, errors(&["Not Found"]), After::Nothing);
    }
    if (method == "GET") != get {
        return (400, None, After::Nothing);
    }
    let body = match body {
        Ok(b) => b,
        Err(e) => {
            return (
                400,
                errors(&["Failed to deserialize JSON", &e]),
                After::Nothing,
            );
        }
    };
    let state = {
        let vm = shared.vm.lock().unwrap();
        if vm.config.is_some() {
            Some(vm.state)
        } else {
            None
        }
    };
    let not_created = |action: &str| (404, vm_error(action, "VM is not created"), After::Nothing);
    let ok = (204, None, After::Nothing);
    match endpoint {
        "vmm.ping" => (
            200,
            Some(
                json!({
                    "build_version": "fake",
                    "version": "v48.0-fake",
                    "pid": std::process::id(),
                    "features": ["kvm"],
                })
                .to_string(),
            ),
            After::Nothing,
        ),
        "vmm.shutdown" => {
            shared.vm.lock().unwrap().serial = None;
            (204, None, After::Stop)
        }
        "vm.info" => {
            let vm = shared.vm.lock().unwrap();
            match &vm.config {
                None => not_created("The VM information is not available"),
                Some(config) => (
                    200,
                    Some(
                        json!({
                            "config": config,
                            "state": vm.state,
                            "memory_actual_size": vm.memory_actual - vm.balloon,
                        })
                        .to_string(),
                    ),
                    After::Nothing,
                ),
            }
        }
        "vm.create" => {
            if !body["payload"].is_object() || !(body["cpus"].is_object() || body["cpus"].is_null())
            {
                return (
                    400,
                    errors(&["Failed to deserialize JSON", "missing field `payload`"]),
                    After::Nothing,
                );
            }
            if state.is_some() {
                return (
                    500,
                    vm_error("The VM could not be created", "The VM is already created"),
                    After::Nothing,
                );
            }
            let mut vm = shared.vm.lock().unwrap();
            vm.memory_actual = body["memory"]["size"].as_u64().unwrap_or(0);
            vm.config = Some(body);
            vm.state = "Created";
            ok
        }
        "vm.boot" => match state {
            None => not_created("The VM could not boot"),
            Some("Created") | Some("Shutdown") => {
                if shared.mode.fail_boot {
                    return (
                        500,
                        vm_error(
                            "The VM could not boot",
                            "Error creating virtio-net device: Failed to connect to vhost-user backend: Connection refused (os error 111)",
                        ),
                        After::Nothing,
                    );
                }
                shared.vm.lock().unwrap().state = "Running";
                open_serial(shared, "fake-ch: booted\n").await;
                ok
            }
            Some(_) => (
                500,
                vm_error("The VM could not boot", "VM is already running"),
                After::Nothing,
            ),
        },
        "vm.pause" => match state {
            None => not_created("The VM could not pause"),
            Some("Running") => {
                shared.vm.lock().unwrap().state = "Paused";
                ok
            }
            Some("Paused") => (
                500,
                vm_error(
                    "The VM could not pause",
                    "Invalid VM state transition: Paused to Paused",
                ),
                After::Nothing,
            ),
            Some(_) => (
                405,
                vm_error("The VM could not pause", "VM is not booted"),
                After::Nothing,
            ),
        },
        "vm.resume" => match state {
            None => not_created("The VM could not resume"),
            Some("Paused") => {
                shared.vm.lock().unwrap().state = "Running";
                ok
            }
            Some(_) => (
                405,
                vm_error("The VM could not resume", "VM is not paused"),
                After::Nothing,
            ),
        },
        "vm.shutdown" => match state {
            None => not_created("The VM could not shut down"),
            Some("Running") | Some("Paused") => {
                let mut vm = shared.vm.lock().unwrap();
                vm.state = "Shutdown";
                vm.serial = None;
                ok
            }
            Some(_) => (
                405,
                vm_error("The VM could not shut down", "VM is not running"),
                After::Nothing,
            ),
        },
        "vm.power-button" => match state {
            None => not_created("The VM could not trigger the power button"),
            Some("Running") => {
                if shared.mode.process {
                    // The guest powers off; Cloud Hypervisor exits with it.
                    (204, None, After::Stop)
                } else {
                    ok
                }
            }
            Some(_) => (
                405,
                vm_error(
                    "The VM could not trigger the power button",
                    "VM is not booted",
                ),
                After::Nothing,
            ),
        },
        "vm.snapshot" => {
            let Some(dir) = body["destination_url"]
                .as_str()
                .and_then(|u| u.strip_prefix("file://"))
            else {
                return (
                    400,
                    errors(&["Failed to deserialize JSON", "bad destination_url"]),
                    After::Nothing,
                );
            };
            match state {
                None => not_created("The VM could not be snapshotted"),
                Some("Paused") => {
                    let config = shared.vm.lock().unwrap().config.clone().unwrap();
                    let dir = Path::new(dir);
                    let written = std::fs::write(dir.join("config.json"), config.to_string())
                        .and_then(|()| std::fs::write(dir.join("state.json"), "{\"fake\":true}"))
                        .and_then(|()| std::fs::write(dir.join("memory-ranges"), [0u8; 64]));
                    match written {
                        Ok(()) => ok,
                        Err(e) => (
                            500,
                            vm_error("The VM could not be snapshotted", &e.to_string()),
                            After::Nothing,
                        ),
                    }
                }
                Some("Running") => (
                    500,
                    vm_error("The VM could not be snapshotted", "VM is not paused"),
                    After::Nothing,
                ),
                Some(_) => (
                    405,
                    vm_error("The VM could not be snapshotted", "VM is not booted"),
                    After::Nothing,
                ),
            }
        }
        "vm.restore" => {
            let Some(dir) = body["source_url"]
                .as_str()
                .and_then(|u| u.strip_prefix("file://"))
            else {
                return (
                    400,
                    errors(&["Failed to deserialize JSON", "missing field `source_url`"]),
                    After::Nothing,
                );
            };
            if state.is_some() {
                return (
                    404,
                    vm_error("The VM could not be restored", "The VM is already created"),
                    After::Nothing,
                );
            }
            let config = std::fs::read_to_string(Path::new(dir).join("config.json"))
                .map_err(|e| e.to_string())
                .and_then(|t| serde_json::from_str::<Value>(&t).map_err(|e| e.to_string()));
            match config {
                Ok(config) => {
                    {
                        let mut vm = shared.vm.lock().unwrap();
                        vm.memory_actual = config["memory"]["size"].as_u64().unwrap_or(0);
                        vm.config = Some(config);
                        vm.state = "Paused";
                    }
                    open_serial(shared, "fake-ch: restored\n").await;
                    ok
                }
                Err(e) => (
                    500,
                    vm_error(
                        "The VM could not be restored",
                        &format!("Failed to read config.json: {e}"),
                    ),
                    After::Nothing,
                ),
            }
        }
        "vm.resize" => {
            let mut vm = shared.vm.lock().unwrap();
            let Some(config) = vm.config.clone() else {
                return not_created("The VM could not be resized");
            };
            if let Some(balloon) = body["desired_balloon"].as_u64() {
                if config["balloon"].is_null() {
                    return (
                        500,
                        vm_error("The VM could not be resized", "No balloon device"),
                        After::Nothing,
                    );
                }
                vm.balloon = balloon.min(vm.memory_actual);
                return ok;
            }
            let Some(desired) = body["desired_ram"].as_u64() else {
                return ok;
            };
            let max = config["memory"]["size"].as_u64().unwrap_or(0)
                + config["memory"]["hotplug_size"].as_u64().unwrap_or(0);
            if desired > max {
                return (
                    500,
                    vm_error(
                        "The VM could not be resized",
                        "Cannot resize memory beyond the configured hotplug size",
                    ),
                    After::Nothing,
                );
            }
            vm.memory_actual = desired;
            ok
        }
        _ => (404, errors(&["Not Found"]), After::Nothing),
    }
}

const ARGS_ENV: &str = "HYPEDECK_FAKE_CH_ARGS";
const MODE_ENV: &str = "HYPEDECK_FAKE_CH_MODE";

/// Writes a `cloud-hypervisor` stand-in into `dir`: it re-executes this test binary into
/// [`fake_ch_main`], passing its arguments through the environment and the API socket
/// (`path=…`) as a test filter, so the process's command line names the socket like the real
/// VMM's does. `mode` is a comma-separated list of `fail_boot`, `ignore_shutdown`.
pub fn fake_binary(dir: &Path, mode: &str) -> PathBuf {
    let exe = std::env::current_exe().unwrap();
    let script = dir.join("cloud-hypervisor");
    let quoted = format!("'{}'", exe.display().to_string().replace('\'', "'\\''"));
    std::fs::write(
        &script,
        format!(
            "#!/bin/sh\nexport {ARGS_ENV}=\"$*\"\nexport {MODE_ENV}='{mode}'\n\
             exec {quoted} --exact fake_api::fake_ch_main --test-threads=1 \"$2\"\n"
        ),
    )
    .unwrap();
    set_executable(&script);
    script
}

/// The stand-in VMM's main. In a normal test run (no arguments in the environment) there is
/// nothing to do.
#[test]
fn fake_ch_main() {
    let Ok(args) = std::env::var(ARGS_ENV) else {
        return;
    };
    let words: Vec<&str> = args.split_whitespace().collect();
    let value_of = |flag: &str| {
        words
            .iter()
            .position(|w| *w == flag)
            .and_then(|i| words.get(i + 1))
            .map(|s| s.to_string())
    };
    let api = value_of("--api-socket").unwrap();
    let api = PathBuf::from(api.strip_prefix("path=").unwrap());
    if let Some(log) = value_of("--log-file") {
        std::fs::write(log, "cloud-hypervisor (fake) started\n").unwrap();
    }
    let flags = std::env::var(MODE_ENV).unwrap_or_default();
    let mode = Mode {
        process: true,
        fail_boot: flags.split(',').any(|f| f == "fail_boot"),
        ignore_shutdown: flags.split(',').any(|f| f == "ignore_shutdown"),
    };
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let fake = FakeCh::serve_with(&api, mode);
        // Never outlive a test run by much, whatever happens to the test.
        tokio::select! {
            _ = fake.stopped() => {}
            _ = tokio::time::sleep(Duration::from_secs(120)) => {}
        }
    });
    std::process::exit(0);
}
