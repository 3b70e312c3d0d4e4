//! The sandbox network: every frame a guest's NIC sends ends in a userspace TCP/IP stack
//! (smoltcp) owned by the engine, one per instance, which decides every flow.
//!
//! # What the guest sees
//!
//! A /24 of its own (`10.100.N.0/24`): itself at `.15`, the gateway at `.2`, the DNS server at
//! `.3`, and, with egress enabled, the credential proxy at `.100:18080`. Those addresses are the
//! stack's; nothing else in the subnet answers. No IPv6.
//!
//! # What the stack does with a flow
//!
//! - **TCP** from the guest: with direct egress ([`Egress::Direct`]) the destination is
//!   checked against the [`Policy`] (never the host's loopback or its own addresses, never
//!   link-local, private ranges only when allowed); an allowed one is dialled from the host
//!   *before* the guest's SYN is answered, so a refused or unreachable destination is a
//!   refused connection in the guest, as on a real network. A denied one is reset at once.
//!   With [`Egress::Proxy`] the only TCP destination is the proxy address, whose connections
//!   are handed in-process to the credential proxy (no host port is involved).
//! - **DHCP**: the guest is offered its one address, the gateway and the DNS server.
//! - **Egress modes** ([`Egress::Proxy`]): TCP to ports 80/443 is intercepted and handed to the
//!   proxy, bound to the name the guest resolved; mode `all` lets nothing else out and answers
//!   DNS with synthetic addresses, mode `http_https_only` lets other ports out under the policy.
//! - **Allow-lists** ([`NetConfig::allow`]): names off the list answer NXDOMAIN; with a list,
//!   a flow goes only to an address an allowed name resolved to (intercepted ones: bound to
//!   that name), so the guest cannot reach what it could not name.
//! - **UDP**: DNS to the stack's DNS address is answered from the host's resolver (A records);
//!   other datagrams are relayed through a host socket per flow with direct egress (same
//!   policy), and dropped with egress enabled.
//! - **ICMP**: echo to the stack's own addresses only.
//! - **Port forwarding** ([`Forward`]): a listener on the host's loopback per forwarded port;
//!   each accepted connection becomes a connection from the gateway address to the guest.
//!
//! Frames reach the stack over a [`Transport`]; only the framing differs per backend.
//!
//! # Invariants
//!
//! - A guest packet whose source is not the guest's address is dropped (no spoofing).
//! - Everything a guest can make grow is bounded: frames queued ([`transport::QUEUE_FRAMES`]),
//!   TCP flows ([`MAX_TCP_FLOWS`]), UDP flows ([`MAX_UDP_FLOWS`]), DNS lookups in flight
//!   ([`MAX_DNS_IN_FLIGHT`]), and each flow's buffers.
//! - Dropping a [`Network`] (or [`Network::stop`]) ends its stack, its listeners and every
//!   host connection it made.

mod dhcp;
mod dns;
mod policy;
mod stack;
pub mod transport;
#[cfg(target_os = "linux")]
pub mod vhost_user;

use std::collections::HashMap;
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4};
use std::sync::Arc;

pub use policy::{DenyReason, Policy, host_addresses};
pub use transport::Transport;

/// TCP flows one instance may have open at once (beyond that new ones are reset).
pub const MAX_TCP_FLOWS: usize = 1024;
/// UDP flows one instance may have at once (beyond that new ones are dropped).
pub const MAX_UDP_FLOWS: usize = 256;
/// DNS lookups one instance may have in flight (beyond that queries are refused).
pub const MAX_DNS_IN_FLIGHT: usize = 64;

/// Hands one guest connection to the credential proxy (the engine wires this to
/// `EgressProxy::serve`).
pub type ProxyConnector = Arc<dyn Fn(tokio::io::DuplexStream) + Send + Sync>;

/// Hands one intercepted connection (the guest dialled this address, port 80 or 443, itself)
/// to the credential proxy, with the name the guest resolved to it through the stack, if any
/// (the engine wires this to `EgressProxy::serve_transparent`).
pub type InterceptConnector =
    Arc<dyn Fn(tokio::io::DuplexStream, SocketAddrV4, Option<String>) + Send + Sync>;

/// Receives every flow decision (the engine keeps a bounded log per instance).
pub type FlowSink = Arc<dyn Fn(FlowEvent) + Send + Sync>;

/// How the guest reaches the outside.
#[derive(Clone)]
pub enum Egress {
    /// Directly, through host sockets, where the policy allows.
    Direct(Policy),
    /// Through the credential proxy at this guest-side address, as upstream's egress modes
    /// say: TCP to ports 80 and 443 anywhere is intercepted and handed to the proxy (so
    /// programs that ignore `HTTPS_PROXY` go through it too, and fail closed without its CA).
    Proxy {
        /// The address the guest dials (its `HTTP(S)_PROXY`).
        addr: SocketAddrV4,
        /// Serves each connection to `addr`.
        serve: ProxyConnector,
        /// Serves each intercepted connection.
        intercept: InterceptConnector,
        /// `None`: mode `all`, nothing else gets out, and DNS answers are synthetic addresses
        /// (198.18.0.0/15) that only mean something to the proxy, so no name the guest asks for
        /// reaches a resolver unless it connects through the proxy. `Some`: mode
        /// `http_https_only`, other TCP ports and UDP go out directly under this policy, with
        /// real DNS.
        direct: Option<Policy>,
    },
}

impl std::fmt::Debug for Egress {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Egress::Direct(p) => f.debug_tuple("Direct").field(p).finish(),
            Egress::Proxy { addr, direct, .. } => f
                .debug_struct("Proxy")
                .field("addr", addr)
                .field("direct", direct)
                .finish_non_exhaustive(),
        }
    }
}

/// A guest port reached from the host.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Forward {
    /// Host port on 127.0.0.1.
    pub host_port: u16,
    /// Guest port.
    pub guest_port: u16,
    /// UDP instead of TCP.
    pub udp: bool,
}

/// Everything a stack needs.
#[derive(Clone)]
pub struct NetConfig {
    /// For logs.
    pub instance_id: String,
    /// The guest NIC's MAC.
    pub guest_mac: [u8; 6],
    /// The guest's address.
    pub guest_ip: Ipv4Addr,
    /// The gateway (the stack's main address).
    pub gateway: Ipv4Addr,
    /// The DNS server address (the stack's).
    pub dns: Ipv4Addr,
    /// Prefix length of the guest's subnet.
    pub prefix: u8,
    /// Direct or proxy-only egress.
    pub egress: Egress,
    /// Forwarded ports.
    pub forwards: Vec<Forward>,
    /// Destination → the address actually dialled, for tests of the NAT itself (a guest-side
    /// public address served by a listener on the host's loopback). The guest cannot change it.
    pub dial_overrides: HashMap<SocketAddrV4, SocketAddr>,
    /// Where flow decisions go.
    pub events: Option<FlowSink>,
    /// TCP flows the guest may have open at once ([`MAX_TCP_FLOWS`] unless a test wants
    /// fewer); a new one past it is reset.
    pub max_tcp_flows: usize,
    /// The names the guest may reach, replaceable while the stack runs (PATCH): names off the
    /// list answer NXDOMAIN, and a flow must go to an address an allowed name resolved to.
    pub allow: hypedeck_model::allow::SharedAllowList,
    /// What the guest's NIC moved, counted by the stack (shared with whoever reads stats).
    pub traffic: Arc<Traffic>,
}

/// The bytes of Ethernet frames a guest's NIC sent and received, and when it last did either.
/// Counted by the stack as frames cross the link; kept by the owner across restarts of the
/// stack, so totals cover the instance's runs in this engine.
#[derive(Debug, Default)]
pub struct Traffic {
    from_guest: std::sync::atomic::AtomicU64,
    to_guest: std::sync::atomic::AtomicU64,
    last_ms: std::sync::atomic::AtomicU64,
    connections: std::sync::Mutex<Connections>,
}

/// The TCP connections a guest has open through its stack now.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Connections {
    /// Connections to forwarded ports: the client's address and the guest port.
    pub inbound: Vec<(SocketAddr, u16)>,
    /// Connections the guest opened (to the internet, or to the proxy).
    pub outbound: usize,
}

impl Traffic {
    fn count(
        counter: &std::sync::atomic::AtomicU64,
        last: &std::sync::atomic::AtomicU64,
        n: usize,
    ) {
        use std::sync::atomic::Ordering::Relaxed;
        counter.fetch_add(n as u64, Relaxed);
        last.store(now_ms(), Relaxed);
    }

    pub(crate) fn sent_by_guest(&self, n: usize) {
        Traffic::count(&self.from_guest, &self.last_ms, n);
    }

    pub(crate) fn sent_to_guest(&self, n: usize) {
        Traffic::count(&self.to_guest, &self.last_ms, n);
    }

    /// Bytes the guest transmitted.
    pub fn tx_bytes(&self) -> u64 {
        self.from_guest.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// Bytes the guest received.
    pub fn rx_bytes(&self) -> u64 {
        self.to_guest.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// When a frame last crossed the link (Unix ms; 0: never).
    pub fn last_ms(&self) -> u64 {
        self.last_ms.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// The guest's open TCP connections, as its stack last saw them (none once it stopped).
    pub fn connections(&self) -> Connections {
        self.connections
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    pub(crate) fn set_connections(&self, connections: Connections) {
        *self.connections.lock().unwrap_or_else(|p| p.into_inner()) = connections;
    }
}

impl std::fmt::Debug for NetConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NetConfig")
            .field("instance_id", &self.instance_id)
            .field("guest_ip", &self.guest_ip)
            .field("gateway", &self.gateway)
            .field("dns", &self.dns)
            .field("egress", &self.egress)
            .field("forwards", &self.forwards)
            .finish_non_exhaustive()
    }
}

/// What became of one flow the guest opened.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case", tag = "verdict", content = "reason")]
pub enum Verdict {
    /// Let through (for TCP: the host connection was made).
    Allowed,
    /// Refused by policy.
    Denied(DenyReason),
    /// Allowed, but the destination could not be reached (the guest saw a refused connection).
    Unreachable(String),
}

/// One flow decision.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct FlowEvent {
    /// When (Unix milliseconds).
    pub at_ms: u64,
    /// `tcp`, `udp` or `dns`.
    pub protocol: &'static str,
    /// Destination address and port.
    pub destination: SocketAddrV4,
    /// The name the guest resolved to this address through the stack, if any (for `dns`: the
    /// name asked for).
    pub name: Option<String>,
    /// The decision.
    #[serde(flatten)]
    pub verdict: Verdict,
    /// The flow an `allowed` TCP or UDP decision opened: its end is reported again with the
    /// same number and [`FlowEvent::bytes`].
    #[serde(skip_serializing_if = "Option::is_none")]
    pub flow: Option<u64>,
    /// What the flow moved, reported when it ended.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub bytes: Option<FlowBytes>,
}

/// Bytes a flow moved.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize)]
pub struct FlowBytes {
    /// From the guest to the destination.
    pub sent: u64,
    /// From the destination to the guest.
    pub received: u64,
}

/// Errors starting a network.
#[derive(Debug, thiserror::Error)]
pub enum NetError {
    /// A forwarded host port could not be bound.
    #[error("host port {port} is already in use")]
    PortInUse {
        /// The port.
        port: u16,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The VMM's network socket could not be reached.
    #[error("connect to the vm's network socket")]
    Connect(#[source] std::io::Error),
}

/// A running stack. Dropping it stops the stack and everything it opened.
#[derive(Debug)]
pub struct Network {
    cancel: tokio_util::sync::CancellationToken,
    task: Option<tokio::task::JoinHandle<()>>,
    inject: tokio::sync::mpsc::Sender<(tokio::net::TcpStream, u16)>,
}

impl Drop for Network {
    fn drop(&mut self) {
        self.cancel.cancel();
    }
}

impl Network {
    /// Binds the forwarded ports, then runs the stack on `transport` until stopped or until
    /// the VMM closes its end. Must be called inside a Tokio runtime.
    pub async fn start(config: NetConfig, transport: Transport) -> Result<Network, NetError> {
        Network::start_with(config, transport, Vec::new()).await
    }

    /// [`Network::start`], taking over `bound`: TCP listeners already bound to forwarded host
    /// ports (whoever held them while the VM slept). Connections waiting in their backlog
    /// are served, not refused.
    pub async fn start_with(
        config: NetConfig,
        transport: Transport,
        mut bound: Vec<std::net::TcpListener>,
    ) -> Result<Network, NetError> {
        let mut listeners = Vec::new();
        for fwd in &config.forwards {
            let addr = SocketAddr::from((Ipv4Addr::LOCALHOST, fwd.host_port));
            let in_use = |source| NetError::PortInUse {
                port: fwd.host_port,
                source,
            };
            let taken = (!fwd.udp)
                .then(|| {
                    bound
                        .iter()
                        .position(|l| l.local_addr().is_ok_and(|a| a.port() == fwd.host_port))
                })
                .flatten()
                .map(|i| bound.swap_remove(i));
            let listener = if let Some(std) = taken {
                std.set_nonblocking(true).map_err(in_use)?;
                stack::Listener::Tcp(tokio::net::TcpListener::from_std(std).map_err(in_use)?)
            } else if fwd.udp {
                stack::Listener::Udp(tokio::net::UdpSocket::bind(addr).await.map_err(in_use)?)
            } else {
                stack::Listener::Tcp(bind_forward(addr).map_err(in_use)?)
            };
            listeners.push((listener, fwd.guest_port));
        }
        let cancel = tokio_util::sync::CancellationToken::new();
        let (inject, injected) = tokio::sync::mpsc::channel(64);
        let task = tokio::spawn(stack::run(
            config,
            transport,
            listeners,
            injected,
            cancel.clone(),
        ));
        Ok(Network {
            cancel,
            task: Some(task),
            inject,
        })
    }

    /// Serves `stream`, a connection accepted on a forwarded host port by someone else (the
    /// listener that held the port while the VM slept), as a connection to `guest_port`.
    /// `false`: the stack is gone.
    pub fn inject(&self, stream: tokio::net::TcpStream, guest_port: u16) -> bool {
        self.inject.try_send((stream, guest_port)).is_ok()
    }

    /// Connects to a VMM's stream socket (QEMU `-netdev stream,server=on`), retrying for up to
    /// `wait` while the socket is not there yet.
    pub async fn connect_stream(
        path: &std::path::Path,
        wait: std::time::Duration,
    ) -> Result<Transport, NetError> {
        let deadline = tokio::time::Instant::now() + wait;
        loop {
            match tokio::net::UnixStream::connect(path).await {
                Ok(stream) => return Ok(Transport::Stream(stream)),
                Err(error) if tokio::time::Instant::now() >= deadline => {
                    return Err(NetError::Connect(error));
                }
                Err(_) => tokio::time::sleep(std::time::Duration::from_millis(20)).await,
            }
        }
    }

    /// Wraps a connected datagram socket whose other end is the guest NIC (one frame per
    /// datagram: vz's file-handle attachment). Call inside a tokio runtime.
    pub fn datagram(fd: std::os::fd::OwnedFd) -> Result<Transport, NetError> {
        let socket = std::os::unix::net::UnixDatagram::from(fd);
        socket.set_nonblocking(true).map_err(NetError::Connect)?;
        tokio::net::UnixDatagram::from_std(socket)
            .map(Transport::Datagram)
            .map_err(NetError::Connect)
    }

    /// Whether the stack still runs (false once the VMM closed its end).
    pub fn is_running(&self) -> bool {
        self.task.as_ref().is_some_and(|t| !t.is_finished())
    }

    /// Stops the stack and waits until its listeners are closed.
    pub async fn stop(mut self) {
        self.cancel.cancel();
        if let Some(task) = self.task.take() {
            let _ = task.await;
        }
    }
}

fn bind_forward(addr: SocketAddr) -> std::io::Result<tokio::net::TcpListener> {
    let socket = tokio::net::TcpSocket::new_v4()?;
    socket.set_reuseaddr(true)?;
    socket.bind(addr)?;
    socket.listen(128)
}

/// The Unix time in milliseconds (the clock of [`FlowEvent::at_ms`]).
pub fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flow_events_serialize_flat_for_the_api() {
        let event = |verdict| FlowEvent {
            at_ms: 1,
            protocol: "tcp",
            destination: "203.0.113.10:443"
                .parse()
                .unwrap_or(SocketAddrV4::new(Ipv4Addr::UNSPECIFIED, 0)),
            name: None,
            verdict,
            flow: None,
            bytes: None,
        };
        let json = |v| serde_json::to_value(event(v)).unwrap_or_default();
        assert_eq!(
            json(Verdict::Denied(DenyReason::LinkLocal)),
            serde_json::json!({"at_ms": 1, "protocol": "tcp", "destination": "203.0.113.10:443",
                "name": null, "verdict": "denied", "reason": "link_local"})
        );
        assert_eq!(json(Verdict::Allowed)["verdict"], "allowed");
        assert!(json(Verdict::Allowed).get("reason").is_none());
        assert_eq!(
            json(Verdict::Unreachable("connection refused".into()))["reason"],
            "connection refused"
        );
        let mut ended = event(Verdict::Allowed);
        ended.flow = Some(7);
        ended.bytes = Some(FlowBytes {
            sent: 10,
            received: 2048,
        });
        let v = serde_json::to_value(ended).unwrap_or_default();
        assert_eq!(v["flow"], 7);
        assert_eq!(
            v["bytes"],
            serde_json::json!({"sent": 10, "received": 2048})
        );
    }
}
