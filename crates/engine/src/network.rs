//! Each running instance's sandbox network: a `hypedeck_netstack` stack on the VMM's frame
//! socket, with the instance's policy, its forwarded ports and (egress enabled) its own
//! credential proxy attached in-process. [`Networks`] owns the running stacks and the flow
//! log of each instance.

use std::collections::{HashMap, VecDeque};
use std::net::{Ipv4Addr, SocketAddrV4};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use hypedeck_hypervisor::{Hypervisor, NetworkLink, Vm, VmSpec};
use hypedeck_model::allow::SharedAllowList;
use hypedeck_model::{AllowList, ErrorCode, PortProtocol, Rejection};
use hypedeck_netstack::{
    DenyReason, Egress, FlowEvent, Forward, NetConfig, NetError, Network, Policy, Verdict,
};
use hypedeck_store::InstanceRecord;

use crate::{Engine, EngineError, lock};

/// `GET /instances/{id}/network/policy`.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct NetworkPolicy {
    /// Attached to a network at all.
    pub enabled: bool,
    /// Egress through the credential proxy.
    pub egress: bool,
    /// `all` or `http_https_only` (with egress).
    pub mode: Option<String>,
    /// The names the guest may reach (`null`: any public destination).
    pub allow: Option<AllowList>,
}

/// Flow decisions kept per instance (the oldest go first).
pub const FLOW_LOG_ENTRIES: usize = 1000;

/// How long the engine waits for a VMM's frame socket to accept.
const CONNECT_WAIT: Duration = Duration::from_secs(5);

type FlowLog = Arc<Mutex<VecDeque<FlowEvent>>>;

/// One instance's running stack, and the vhost-user backend feeding it (Cloud Hypervisor).
#[derive(Debug)]
struct Running {
    network: Network,
    #[cfg(target_os = "linux")]
    vhost_user: Option<hypedeck_netstack::vhost_user::VhostUserNet>,
}

/// The running stacks and flow logs, by instance id.
#[derive(Debug, Default)]
pub(crate) struct Networks {
    running: Mutex<HashMap<String, Running>>,
    flows: Mutex<HashMap<String, FlowLog>>,
    /// Each instance's live allow-list, shared with its stack and its proxy check.
    allow: Mutex<HashMap<String, SharedAllowList>>,
    /// What each instance's NIC moved, across its stacks in this engine.
    traffic: Mutex<HashMap<String, Arc<hypedeck_netstack::Traffic>>>,
    /// Forwarded-port listeners held for an instance's next stack (its VM slept meanwhile).
    parked: Mutex<HashMap<String, Vec<std::net::TcpListener>>>,
}

impl Networks {
    fn log(&self, id: &str) -> FlowLog {
        lock(&self.flows).entry(id.to_string()).or_default().clone()
    }

    /// The instance's flow decisions, oldest first.
    pub(crate) fn flows(&self, id: &str) -> Vec<FlowEvent> {
        lock(&self.flows)
            .get(id)
            .map(|log| lock(log).iter().cloned().collect())
            .unwrap_or_default()
    }

    fn insert(&self, id: &str, running: Running) {
        // Replacing a stack drops (stops) the old one.
        lock(&self.running).insert(id.to_string(), running);
    }

    /// Whether the instance's stack runs (served before the VMM started, or still attached).
    fn is_running(&self, id: &str) -> bool {
        lock(&self.running)
            .get(id)
            .is_some_and(|r| r.network.is_running())
    }

    pub(crate) async fn stop(&self, id: &str) {
        let running = lock(&self.running).remove(id);
        if let Some(running) = running {
            running.network.stop().await;
            // The backend's thread ends within milliseconds; it removes its socket file.
            #[cfg(target_os = "linux")]
            if let Some(vhost_user) = running.vhost_user {
                let _ = tokio::task::spawn_blocking(move || vhost_user.stop()).await;
            }
        }
    }

    pub(crate) fn forget(&self, id: &str) {
        lock(&self.flows).remove(id);
        lock(&self.allow).remove(id);
        lock(&self.traffic).remove(id);
        lock(&self.parked).remove(id);
    }

    /// Keeps `listeners` (bound to the instance's forwarded ports) for its next stack.
    pub(crate) fn park(&self, id: &str, listeners: Vec<std::net::TcpListener>) {
        if !listeners.is_empty() {
            lock(&self.parked)
                .entry(id.to_string())
                .or_default()
                .extend(listeners);
        }
    }

    /// The host ports parked for the instance.
    pub(crate) fn parked_ports(&self, id: &str) -> Vec<u16> {
        lock(&self.parked)
            .get(id)
            .map(|l| {
                l.iter()
                    .filter_map(|l| l.local_addr().ok().map(|a| a.port()))
                    .collect()
            })
            .unwrap_or_default()
    }

    /// Serves `stream` (accepted for the instance elsewhere) as a connection to `guest_port`.
    pub(crate) fn inject(&self, id: &str, stream: tokio::net::TcpStream, guest_port: u16) -> bool {
        lock(&self.running)
            .get(id)
            .is_some_and(|r| r.network.inject(stream, guest_port))
    }

    /// The instance's traffic counters (made on first use).
    pub(crate) fn traffic(&self, id: &str) -> Arc<hypedeck_netstack::Traffic> {
        lock(&self.traffic)
            .entry(id.to_string())
            .or_default()
            .clone()
    }

    /// The instance's shared allow-list, set to `list`.
    fn allow_list(&self, id: &str, list: Option<AllowList>) -> SharedAllowList {
        let shared = lock(&self.allow).entry(id.to_string()).or_default().clone();
        *shared.write().unwrap_or_else(|p| p.into_inner()) = list;
        shared
    }
}

fn record_into(log: &FlowLog, event: FlowEvent) {
    let mut log = lock(log);
    // A flow's end fills in the bytes of the entry that opened it (one line per flow).
    if let (Some(id), Some(bytes)) = (event.flow, event.bytes)
        && let Some(opened) = log.iter_mut().rev().find(|e| e.flow == Some(id))
    {
        opened.bytes = Some(bytes);
        return;
    }
    if log.len() >= FLOW_LOG_ENTRIES {
        log.pop_front();
    }
    log.push_back(event);
}

fn network_failed(
    what: &'static str,
    source: impl std::error::Error + Send + Sync + 'static,
) -> EngineError {
    EngineError::Network {
        what,
        source: Box::new(source),
    }
}

/// Parses `a.b.c.d` (the engine's own identities, always well formed).
fn ip(s: &str) -> Ipv4Addr {
    s.parse().unwrap_or(Ipv4Addr::UNSPECIFIED)
}

/// `02:00:…` → bytes.
fn mac(s: &str) -> [u8; 6] {
    let mut out = [0u8; 6];
    for (i, part) in s.split(':').take(6).enumerate() {
        out[i] = u8::from_str_radix(part, 16).unwrap_or(0);
    }
    out
}

impl Engine {
    /// Serves the instance's network before its VMM starts, for backends whose VMM connects
    /// to the engine while it boots (Cloud Hypervisor's vhost-user-net). A no-op otherwise.
    /// The caller stops it ([`Engine::detach_network`]) when the start fails.
    pub(crate) async fn serve_network_before_start(
        &self,
        record: &InstanceRecord,
        hypervisor: &dyn Hypervisor,
        spec: &VmSpec,
    ) -> Result<(), EngineError> {
        if !record.network.enabled {
            return Ok(());
        }
        match hypervisor.network_before_start(spec) {
            Some(link) => self.start_network(record, link).await,
            None => Ok(()),
        }
    }

    /// Starts the instance's network stack on `vm`'s frame link (boot, restore, and after
    /// an engine restart), unless it already runs (served before the start). A no-op for
    /// instances without a network or backends that wire the NIC themselves.
    pub(crate) async fn attach_network(
        &self,
        record: &InstanceRecord,
        vm: &dyn Vm,
    ) -> Result<(), EngineError> {
        if !record.network.enabled || self.networks.is_running(&record.id) {
            return Ok(());
        }
        let Some(link) = vm
            .network_link()
            .await
            .map_err(|e| network_failed("find the VMM's frame link", e))?
        else {
            return Ok(());
        };
        self.start_network(record, link).await
    }

    async fn start_network(
        &self,
        record: &InstanceRecord,
        link: NetworkLink,
    ) -> Result<(), EngineError> {
        let (net, prefix) = crate::provision::instance_identity(record);
        let log = self.networks.log(&record.id);
        let allow = self
            .networks
            .allow_list(&record.id, record.network.egress.allow.clone());
        let egress = if record.network.egress.enabled {
            let proxy = self
                .egress_proxy()
                .ok_or_else(|| EngineError::Dependency("the egress proxy is not running".into()))?;
            let addr: SocketAddrV4 = crate::egress::guest_proxy_addr(&net.gateway)
                .parse()
                .map_err(|e| network_failed("the guest's proxy address", e))?;
            let (id, intercepted) = (record.id.clone(), record.id.clone());
            let to_proxy = proxy.clone();
            // The proxy refuses hosts off the allow-list, and the refusal is in the flow log.
            let (shared, refusals) = (allow.clone(), log.clone());
            proxy.set_host_check(
                &record.id,
                Arc::new(move |host, port| {
                    let ok = hypedeck_model::allow::shared_allows(&shared, host);
                    if !ok {
                        record_into(
                            &refusals,
                            FlowEvent {
                                at_ms: hypedeck_netstack::now_ms(),
                                protocol: "tcp",
                                destination: SocketAddrV4::new(Ipv4Addr::UNSPECIFIED, port),
                                name: Some(host.to_string()),
                                verdict: Verdict::Denied(DenyReason::NotAllowed),
                                flow: None,
                                bytes: None,
                            },
                        );
                    }
                    ok
                }),
            );
            Egress::Proxy {
                addr,
                serve: Arc::new(move |stream| to_proxy.serve(&id, stream)),
                intercept: Arc::new(move |stream, to, name| {
                    proxy.serve_transparent(&intercepted, stream, to.into(), name)
                }),
                // Upstream's `http_https_only` lets other ports out directly.
                direct: (record.network.egress.mode == "http_https_only").then(Policy::default),
            }
        } else {
            Egress::Direct(Policy::default())
        };
        let config = NetConfig {
            instance_id: record.id.clone(),
            guest_mac: mac(&net.mac),
            guest_ip: ip(&net.guest_ip),
            gateway: ip(&net.gateway),
            dns: ip(&net.dns),
            prefix,
            egress,
            forwards: record
                .ports
                .iter()
                .map(|p| Forward {
                    host_port: p.host_port,
                    guest_port: p.guest_port,
                    udp: p.protocol == PortProtocol::Udp,
                })
                .collect(),
            dial_overrides: HashMap::new(),
            events: Some(Arc::new(move |event| record_into(&log, event))),
            allow,
            max_tcp_flows: hypedeck_netstack::MAX_TCP_FLOWS,
            traffic: self.networks.traffic(&record.id),
        };
        #[cfg(target_os = "linux")]
        let mut vhost_user = None;
        let transport = match link {
            NetworkLink::Stream(socket) => Network::connect_stream(&socket, CONNECT_WAIT)
                .await
                .map_err(|e| network_failed("connect to the VMM's frame socket", e))?,
            NetworkLink::Datagram(fd) => Network::datagram(fd)
                .map_err(|e| network_failed("use the VMM's frame socket", e))?,
            #[cfg(target_os = "linux")]
            NetworkLink::VhostUser(socket) => {
                let (transport, backend) =
                    hypedeck_netstack::vhost_user::serve(&socket, config.guest_mac)
                        .map_err(|e| network_failed("serve vhost-user-net", e))?;
                vhost_user = Some(backend);
                transport
            }
            #[cfg(not(target_os = "linux"))]
            NetworkLink::VhostUser(_) => {
                return Err(EngineError::Dependency(
                    "sandbox network: vhost-user-net needs Linux".into(),
                ));
            }
        };
        let parked = lock(&self.networks.parked)
            .remove(&record.id)
            .unwrap_or_default();
        let network = Network::start_with(config, transport, parked)
            .await
            .map_err(|e| match e {
                NetError::PortInUse { port, .. } => EngineError::Rejected(Rejection::new(
                    ErrorCode::PortInUse,
                    format!("host port {port} is already in use on 127.0.0.1 by another program"),
                )),
                other => network_failed("start the stack", other),
            })?;
        self.networks.insert(
            &record.id,
            Running {
                network,
                #[cfg(target_os = "linux")]
                vhost_user,
            },
        );
        Ok(())
    }

    /// Replaces the instance's allow-list on its running stack and proxy (a PATCH): the next
    /// lookup and the next connection see it.
    pub(crate) fn apply_allow_list(&self, id: &str, list: Option<AllowList>) {
        self.networks.allow_list(id, list);
    }

    /// Stops the instance's network stack and its forwarded ports (stop, standby, delete).
    pub(crate) async fn detach_network(&self, id: &str) {
        self.networks.stop(id).await;
    }

    /// Forgets the instance's flow log (delete).
    pub(crate) fn forget_network(&self, id: &str) {
        self.networks.forget(id);
    }

    /// What the instance's network lets through (Hypedeck extension).
    pub fn network_policy(&self, id_or_name: &str) -> Result<NetworkPolicy, EngineError> {
        let record = self.resolve(id_or_name)?;
        let egress = &record.network.egress;
        Ok(NetworkPolicy {
            enabled: record.network.enabled,
            egress: egress.enabled,
            mode: egress.enabled.then(|| {
                if egress.mode.is_empty() {
                    "all".into()
                } else {
                    egress.mode.clone()
                }
            }),
            allow: egress.allow.clone(),
        })
    }

    /// The instance's recent flow decisions, newest first, at most `limit` (Hypedeck
    /// extension). Kept in memory: an engine restart starts a new log.
    pub fn network_flows(
        &self,
        id_or_name: &str,
        limit: usize,
    ) -> Result<Vec<FlowEvent>, EngineError> {
        let record = self.resolve(id_or_name)?;
        let mut flows = self.networks.flows(&record.id);
        flows.reverse();
        flows.truncate(limit);
        Ok(flows)
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn identities_parse() {
        assert_eq!(super::mac("02:00:00:ab:cd:ef"), [2, 0, 0, 0xab, 0xcd, 0xef]);
        assert_eq!(
            super::ip("10.100.7.2"),
            std::net::Ipv4Addr::new(10, 100, 7, 2)
        );
    }

    #[test]
    fn a_flows_end_fills_in_the_line_that_opened_it() {
        use hypedeck_netstack::{FlowBytes, FlowEvent, Verdict};
        let event = |flow, bytes| FlowEvent {
            at_ms: 1,
            protocol: "tcp",
            destination: "203.0.113.10:443"
                .parse()
                .unwrap_or(std::net::SocketAddrV4::new(
                    std::net::Ipv4Addr::UNSPECIFIED,
                    0,
                )),
            name: None,
            verdict: Verdict::Allowed,
            flow,
            bytes,
        };
        let log = super::FlowLog::default();
        let bytes = FlowBytes {
            sent: 5,
            received: 9,
        };
        super::record_into(&log, event(Some(1), None));
        super::record_into(&log, event(Some(2), None));
        super::record_into(&log, event(Some(1), Some(bytes)));
        let lines: Vec<_> = super::lock(&log).iter().cloned().collect();
        assert_eq!(lines.len(), 2);
        assert_eq!(lines[0].bytes, Some(bytes));
        assert_eq!(lines[1].bytes, None);
        // An end whose opening line was already evicted is kept on its own.
        super::record_into(&log, event(Some(3), Some(bytes)));
        assert_eq!(super::lock(&log).len(), 3);
    }
}
