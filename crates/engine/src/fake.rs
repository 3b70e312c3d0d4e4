//! A scriptable in-memory hypervisor for engine and API tests (feature `fake`).
//!
//! It boots nothing: a "VM" is an entry in a shared map. It writes the same boot markers to the
//! serial log that guest init prints, so state derivation runs the real code path. Never the
//! only test of a feature: real-VM suites live in `tests/vm`.

use std::collections::HashMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use hypedeck_hypervisor::{
    AgentChannel, Capabilities, DiskSpec, Hypervisor, HypervisorError, Vm, VmSpec, VmmState,
};
use hypedeck_model::HypervisorKind;

/// What the fake does on the next boots.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Script {
    /// Fail `start` with this message.
    pub fail_start: Option<String>,
    /// Boot markers to print: 0 none (Initializing), 1 program start, 2 both (Running).
    pub markers: u8,
    /// Make `state()` fail while the VMM stays "alive" (-> Unknown).
    pub query_fails: bool,
    /// Take this long to start (a slow boot, for races with other verbs).
    pub start_delay: std::time::Duration,
    /// Offer templates: one key per vCPU count and memory size.
    pub templates: bool,
    /// Fail `start_from_template`.
    pub fail_template_start: bool,
}

impl Default for Script {
    fn default() -> Self {
        Script {
            fail_start: None,
            markers: 2,
            query_fails: false,
            start_delay: std::time::Duration::ZERO,
            templates: false,
            fail_template_start: false,
        }
    }
}

#[derive(Debug)]
struct FakeVmState {
    state: VmmState,
    alive: bool,
    /// The control-only agent of a restored VM, or of a booted one that got to its agent
    /// (see [`FakeHypervisor::reidentified`]).
    agent: Option<tokio::task::JoinHandle<()>>,
    /// Serials of its disks (see [`FakeHypervisor::disks`]).
    disks: Vec<String>,
}

impl FakeVmState {
    fn end(&mut self) {
        self.alive = false;
        if let Some(agent) = self.agent.take() {
            agent.abort();
        }
    }
}

/// Control requests the fake's agents answered: `(instance id, request, its JSON)`, the
/// request being `reidentify`, `mount` or `unmount`.
type Reidentified = Arc<Mutex<Vec<(String, &'static str, serde_json::Value)>>>;

/// The fake backend. Clone the `Arc` into a new engine to simulate an engine restart with
/// VMMs that kept running.
#[derive(Debug, Default)]
pub struct FakeHypervisor {
    vms: Arc<Mutex<HashMap<String, Arc<Mutex<FakeVmState>>>>>,
    script: Mutex<Script>,
    /// Another backend's identity (`None`: QEMU with everything the engine uses).
    posing_as: Option<(HypervisorKind, Capabilities)>,
    reidentified: Reidentified,
}

impl FakeHypervisor {
    /// A fake with the default script (boots straight to Running).
    pub fn new() -> Arc<FakeHypervisor> {
        Arc::new(FakeHypervisor::default())
    }

    /// A fake that reports `kind` and `capabilities` (backend selection and capability
    /// tests).
    pub fn posing_as(kind: HypervisorKind, capabilities: Capabilities) -> Arc<FakeHypervisor> {
        Arc::new(FakeHypervisor {
            posing_as: Some((kind, capabilities)),
            ..FakeHypervisor::default()
        })
    }

    /// Replaces the script for the next calls.
    pub fn set_script(&self, script: Script) {
        *self.script.lock().unwrap_or_else(|p| p.into_inner()) = script;
    }

    fn script(&self) -> Script {
        self.script
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// Ids of VMs currently alive.
    pub fn running(&self) -> Vec<String> {
        let vms = self.vms.lock().unwrap_or_else(|p| p.into_inner());
        let mut ids: Vec<String> = vms
            .iter()
            .filter(|(_, v)| v.lock().map(|v| v.alive).unwrap_or(false))
            .map(|(k, _)| k.clone())
            .collect();
        ids.sort();
        ids
    }

    /// The `Reidentify` requests restored VMs were sent, oldest first: a restored fake VM has
    /// an agent that answers the control requests (ping, clock, identity) and refuses to run
    /// programs; a booted one has none.
    pub fn reidentified(&self) -> Vec<(String, serde_json::Value)> {
        self.control_requests("reidentify")
    }

    /// The `Mount` (`"mount"`) or `Unmount` (`"unmount"`) requests the fake's guests were
    /// sent, oldest first.
    pub fn control_requests(&self, kind: &str) -> Vec<(String, serde_json::Value)> {
        self.reidentified
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .iter()
            .filter(|(_, k, _)| *k == kind)
            .map(|(id, _, v)| (id.clone(), v.clone()))
            .collect()
    }

    /// The serials of the disks a fake VM has (attached at boot or since), in order.
    pub fn disks(&self, instance_id: &str) -> Vec<String> {
        self.vms
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(instance_id)
            .map(|v| v.lock().unwrap_or_else(|p| p.into_inner()).disks.clone())
            .unwrap_or_default()
    }

    /// Simulates the VMM process dying on its own.
    pub fn crash(&self, instance_id: &str) {
        if let Some(vm) = self
            .vms
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(instance_id)
        {
            vm.lock().unwrap_or_else(|p| p.into_inner()).end();
        }
    }
}

/// Serves a control-only agent on `socket` (what a restored guest's agent answers).
fn serve_agent(socket: &Path, id: &str, log: Reidentified) -> Option<tokio::task::JoinHandle<()>> {
    let _ = std::fs::remove_file(socket);
    let listener = tokio::net::UnixListener::bind(socket).ok()?;
    let id = id.to_string();
    Some(tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            tokio::spawn(agent_link(stream, id.clone(), log.clone()));
        }
    }))
}

async fn agent_link(mut stream: tokio::net::UnixStream, id: String, log: Reidentified) {
    use hypedeck_guest_init::agent_proto::{Kind, body_len, encode, split_body};
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    loop {
        let mut len = [0u8; 4];
        if stream.read_exact(&mut len).await.is_err() {
            return;
        }
        let Ok(n) = body_len(len) else { return };
        let mut body = vec![0u8; n];
        if stream.read_exact(&mut body).await.is_err() {
            return;
        }
        let Ok((kind, session, payload)) = split_body(&body) else {
            continue;
        };
        let reply = match kind {
            Kind::Ping => encode(Kind::Pong, session, b""),
            Kind::SetClock => encode(Kind::ClockSet, session, b""),
            Kind::Reidentify | Kind::Mount | Kind::Unmount => {
                let (name, answer) = match kind {
                    Kind::Reidentify => ("reidentify", Kind::Reidentified),
                    Kind::Mount => ("mount", Kind::Mounted),
                    _ => ("unmount", Kind::Unmounted),
                };
                let request = serde_json::from_slice(payload).unwrap_or_default();
                log.lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .push((id.clone(), name, request));
                encode(answer, session, b"")
            }
            Kind::Open => encode(
                Kind::Error,
                session,
                b"the fake hypervisor runs no programs",
            ),
            Kind::Stat => encode(
                Kind::StatResult,
                session,
                br#"{"exists":false,"error":"the fake hypervisor's guests have no files"}"#,
            ),
            _ => continue,
        };
        if stream.write_all(&reply).await.is_err() {
            return;
        }
    }
}

fn disk_serials(spec: &VmSpec) -> Vec<String> {
    spec.disks.iter().filter_map(|d| d.serial.clone()).collect()
}

fn append(path: &Path, line: &str) -> std::io::Result<()> {
    let mut f = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)?;
    writeln!(f, "{line}")
}

#[async_trait::async_trait]
impl Hypervisor for FakeHypervisor {
    fn kind(&self) -> HypervisorKind {
        self.posing_as.map_or(HypervisorKind::Qemu, |(k, _)| k)
    }

    fn capabilities(&self) -> Capabilities {
        if let Some((_, caps)) = self.posing_as {
            return caps;
        }
        Capabilities {
            pause: true,
            graceful_shutdown: true,
            snapshot: true,
            port_forwarding: true,
            egress_enforcement: true,
            templates: self.script().templates,
            hotplug_disks: true,
            ..Capabilities::default()
        }
    }

    async fn start(&self, spec: &VmSpec) -> Result<Box<dyn Vm>, HypervisorError> {
        let script = self.script();
        tokio::time::sleep(script.start_delay).await;
        if let Some(message) = script.fail_start {
            return Err(HypervisorError::Operation {
                operation: "start",
                detail: message,
            });
        }
        let ts = "2026-01-01T00:00:00Z";
        if script.markers >= 1 {
            append(
                &spec.serial_log,
                &format!("HYPEMAN-PROGRAM-START ts={ts} mode=exec"),
            )
            .map_err(HypervisorError::Start)?;
        }
        if script.markers >= 2 {
            append(&spec.serial_log, &format!("HYPEMAN-AGENT-READY ts={ts}"))
                .map_err(HypervisorError::Start)?;
        }
        let agent = spec.runtime_dir.join("agent.sock");
        let vm = Arc::new(Mutex::new(FakeVmState {
            state: VmmState::Running,
            alive: true,
            // A guest whose agent is up answers control requests (it runs no programs).
            agent: if script.markers >= 2 {
                serve_agent(&agent, &spec.instance_id, self.reidentified.clone())
            } else {
                None
            },
            disks: disk_serials(spec),
        }));
        self.vms
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(spec.instance_id.clone(), vm.clone());
        Ok(Box::new(FakeVm {
            inner: vm,
            query_fails: script.query_fails,
            agent: spec.runtime_dir.join("agent.sock"),
        }))
    }

    async fn template_key(&self, spec: &VmSpec) -> Option<String> {
        self.script()
            .templates
            .then(|| format!("{:04x}{:012x}", spec.vcpus, spec.memory_bytes >> 20))
    }

    async fn make_template(&self, _spec: &VmSpec, dir: &Path) -> Result<(), HypervisorError> {
        std::fs::create_dir_all(dir).map_err(HypervisorError::Start)?;
        std::fs::write(dir.join("memory.ram"), b"fake template").map_err(HypervisorError::Start)
    }

    async fn start_from_template(
        &self,
        spec: &VmSpec,
        dir: &Path,
    ) -> Result<Box<dyn Vm>, HypervisorError> {
        if self.script().fail_template_start || !dir.join("memory.ram").is_file() {
            return Err(HypervisorError::Operation {
                operation: "start from template",
                detail: "scripted failure".into(),
            });
        }
        self.start(spec).await
    }

    async fn restore(&self, spec: &VmSpec, dir: &Path) -> Result<Box<dyn Vm>, HypervisorError> {
        if !dir.join("memory.bin").is_file() {
            return Err(HypervisorError::Operation {
                operation: "restore",
                detail: "no saved state".into(),
            });
        }
        let agent = spec.runtime_dir.join("agent.sock");
        let vm = Arc::new(Mutex::new(FakeVmState {
            state: VmmState::Running,
            alive: true,
            agent: serve_agent(&agent, &spec.instance_id, self.reidentified.clone()),
            disks: disk_serials(spec),
        }));
        self.vms
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(spec.instance_id.clone(), vm.clone());
        Ok(Box::new(FakeVm {
            inner: vm,
            query_fails: false,
            agent: spec.runtime_dir.join("agent.sock"),
        }))
    }

    async fn attach(
        &self,
        instance_id: &str,
        runtime_dir: &Path,
    ) -> Result<Option<Box<dyn Vm>>, HypervisorError> {
        let vms = self.vms.lock().unwrap_or_else(|p| p.into_inner());
        Ok(vms
            .get(instance_id)
            .filter(|v| v.lock().map(|v| v.alive).unwrap_or(false))
            .map(|v| {
                Box::new(FakeVm {
                    inner: v.clone(),
                    query_fails: self.script().query_fails,
                    agent: runtime_dir.join("agent.sock"),
                }) as Box<dyn Vm>
            }))
    }
}

#[derive(Debug)]
struct FakeVm {
    inner: Arc<Mutex<FakeVmState>>,
    query_fails: bool,
    /// Where its agent listens (a booted fake VM has none: connecting fails like a dead
    /// guest's).
    agent: PathBuf,
}

impl FakeVm {
    fn with<T>(&self, f: impl FnOnce(&mut FakeVmState) -> T) -> T {
        f(&mut self.inner.lock().unwrap_or_else(|p| p.into_inner()))
    }
}

#[async_trait::async_trait]
impl Vm for FakeVm {
    async fn state(&self) -> Result<VmmState, HypervisorError> {
        if !self.with(|v| v.alive) {
            return Err(HypervisorError::Query("connection refused".into()));
        }
        if self.query_fails {
            return Err(HypervisorError::Query("scripted failure".into()));
        }
        Ok(self.with(|v| v.state))
    }

    async fn request_shutdown(&self) -> Result<(), HypervisorError> {
        self.with(|v| {
            v.state = VmmState::Shutdown;
            v.end();
        });
        Ok(())
    }

    async fn kill(&self) -> Result<(), HypervisorError> {
        self.with(FakeVmState::end);
        Ok(())
    }

    async fn is_alive(&self) -> bool {
        self.with(|v| v.alive)
    }

    /// A fake VM's process is the one it lives in: its stats are this process's.
    fn process_id(&self) -> Option<u32> {
        self.with(|v| v.alive).then(std::process::id)
    }

    fn agent_channel(&self) -> AgentChannel {
        AgentChannel::Serial(self.agent.clone())
    }

    async fn attach_disk(&self, disk: &DiskSpec) -> Result<(), HypervisorError> {
        let serial = disk.serial.clone().unwrap_or_default();
        self.with(|v| {
            if v.disks.contains(&serial) {
                return Err(HypervisorError::Operation {
                    operation: "attach disk",
                    detail: format!("a disk with serial {serial} is attached already"),
                });
            }
            v.disks.push(serial);
            Ok(())
        })
    }

    async fn detach_disk(&self, serial: &str) -> Result<(), HypervisorError> {
        // An engine without a guest (the fake's) gives VMs no disks at boot: a volume attached
        // at create is not listed, and detaching it succeeds.
        self.with(|v| v.disks.retain(|d| d != serial));
        Ok(())
    }

    async fn save_and_exit(&self, dir: &Path) -> Result<(), HypervisorError> {
        std::fs::create_dir_all(dir).map_err(HypervisorError::Start)?;
        std::fs::write(dir.join("memory.bin"), b"fake vm state").map_err(HypervisorError::Start)?;
        self.with(FakeVmState::end);
        Ok(())
    }
}
