//! The stack's loop: frames in, policy, smoltcp, host sockets, frames out.

use std::collections::{HashMap, HashSet, VecDeque};
use std::net::{IpAddr, Ipv4Addr, SocketAddr, SocketAddrV4};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, Wake, Waker};
use std::time::Duration;

use smoltcp::iface::{Config, Interface, SocketHandle, SocketSet};
use smoltcp::phy::{self, ChecksumCapabilities, DeviceCapabilities, Medium};
use smoltcp::socket::tcp;
use smoltcp::time::Instant;
use smoltcp::wire::{
    EthernetAddress, EthernetFrame, EthernetProtocol, EthernetRepr, HardwareAddress, IpAddress,
    IpCidr, IpProtocol, Ipv4Packet, Ipv4Repr, TcpPacket, UdpPacket, UdpRepr,
};
use tokio::io::{AsyncRead, AsyncWrite, DuplexStream, ReadBuf};
use tokio::net::{TcpListener, TcpStream, UdpSocket};
use tokio::sync::{Notify, mpsc};
use tokio_util::sync::CancellationToken;

use crate::dhcp;
use crate::dns::{self, Answer};
use crate::transport::{Frames, MAX_FRAME, Transport};
use crate::{
    DenyReason, Egress, FlowBytes, FlowEvent, MAX_DNS_IN_FLIGHT, MAX_UDP_FLOWS, NetConfig, Verdict,
    now_ms,
};

/// The stack's MAC on the guest's link.
const STACK_MAC: [u8; 6] = [0x02, 0x68, 0x64, 0x00, 0x00, 0x01];
/// Bytes buffered per direction per TCP flow inside the stack.
const TCP_BUFFER: usize = 256 * 1024;
/// Bytes buffered per direction between the stack and the proxy.
const PIPE_BUFFER: usize = 64 * 1024;
/// How long a host dial may take before the guest's connection is refused.
const DIAL_TIMEOUT: Duration = Duration::from_secs(10);
/// How long a DNS lookup may take before the guest gets SERVFAIL.
const DNS_TIMEOUT: Duration = Duration::from_secs(5);
/// A UDP flow with no traffic either way for this long is closed.
const UDP_IDLE: Duration = Duration::from_secs(60);
/// A TCP socket that never got established is dropped after this long.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(30);
/// How long the host's address list is reused before it is read again.
const HOST_ADDRS_TTL: Duration = Duration::from_secs(2);
/// Names remembered from DNS answers, for the flow log.
const MAX_NAMES: usize = 4096;

/// Synthetic addresses (mode `all`): 198.18.0.0/15, the benchmarking range (RFC 2544), never a
/// real destination.
const SYNTHETIC_BASE: Ipv4Addr = Ipv4Addr::new(198, 18, 0, 0);
const SYNTHETIC_COUNT: u32 = (1 << 17) - 2;

fn is_synthetic(ip: Ipv4Addr) -> bool {
    u32::from(ip) >> 17 == u32::from(SYNTHETIC_BASE) >> 17
}

/// A guest-initiated flow: the guest's source port and the destination.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
struct FlowKey {
    guest_port: u16,
    dst: SocketAddrV4,
}

/// What the stack's helper tasks report back.
enum Event {
    /// A host dial for a held SYN finished.
    Dialed {
        key: FlowKey,
        result: std::io::Result<TcpStream>,
    },
    /// A connection accepted on a forwarded host port.
    Inbound { stream: TcpStream, guest_port: u16 },
    /// A datagram on a forwarded host UDP port.
    InboundDatagram {
        socket: Arc<UdpSocket>,
        peer: SocketAddr,
        guest_port: u16,
        payload: Vec<u8>,
    },
    /// A datagram for the guest.
    Datagram {
        from: SocketAddrV4,
        to_port: u16,
        payload: Vec<u8>,
    },
    /// A DNS lookup finished (its answer is in a `Datagram`).
    DnsDone { name: String, addrs: Vec<Ipv4Addr> },
    /// A UDP flow saw no reply for [`UDP_IDLE`].
    UdpIdle(FlowKey),
}

/// The other end of a stack TCP socket: the host connection itself (NAT and forwarded
/// ports, polled by the stack's loop: no task or copy in between), or an in-memory pipe to
/// the proxy.
enum Pipe {
    Host(TcpStream),
    Memory(DuplexStream),
}

impl AsyncRead for Pipe {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        match self.get_mut() {
            Pipe::Host(s) => Pin::new(s).poll_read(cx, buf),
            Pipe::Memory(s) => Pin::new(s).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for Pipe {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        match self.get_mut() {
            Pipe::Host(s) => Pin::new(s).poll_write(cx, buf),
            Pipe::Memory(s) => Pin::new(s).poll_write(cx, buf),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        match self.get_mut() {
            Pipe::Host(s) => Pin::new(s).poll_flush(cx),
            Pipe::Memory(s) => Pin::new(s).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        match self.get_mut() {
            Pipe::Host(s) => Pin::new(s).poll_shutdown(cx),
            Pipe::Memory(s) => Pin::new(s).poll_shutdown(cx),
        }
    }
}

/// One TCP socket of the stack and its pipe to a host connection (or the proxy).
struct Flow {
    key: Option<FlowKey>,
    /// A connection to a forwarded port: the client and the guest port.
    inbound: Option<(SocketAddr, u16)>,
    /// The flow number its `allowed` event carried (outbound flows).
    id: Option<u64>,
    /// Guest → host bytes.
    sent: u64,
    /// Host → guest bytes.
    received: u64,
    io: Pipe,
    created: std::time::Instant,
    established: bool,
    host_shut: bool,
    host_eof: bool,
}

struct UdpFlow {
    id: u64,
    sent: u64,
    received: u64,
    socket: Arc<UdpSocket>,
    reader: tokio::task::AbortHandle,
    last_sent: std::time::Instant,
}

impl Drop for UdpFlow {
    fn drop(&mut self) {
        self.reader.abort();
    }
}

/// The smoltcp device: frames queued in memory, moved to and from the transport by the loop.
#[derive(Default)]
struct Queues {
    rx: VecDeque<Vec<u8>>,
    tx: Vec<Vec<u8>>,
}

struct RxToken(Vec<u8>);
struct TxToken<'a>(&'a mut Vec<Vec<u8>>);

impl phy::RxToken for RxToken {
    fn consume<R, F: FnOnce(&[u8]) -> R>(self, f: F) -> R {
        f(&self.0)
    }
}

impl phy::TxToken for TxToken<'_> {
    fn consume<R, F: FnOnce(&mut [u8]) -> R>(self, len: usize, f: F) -> R {
        let mut frame = vec![0u8; len];
        let r = f(&mut frame);
        self.0.push(frame);
        r
    }
}

impl phy::Device for Queues {
    type RxToken<'a> = RxToken;
    type TxToken<'a> = TxToken<'a>;

    fn receive(&mut self, _: Instant) -> Option<(RxToken, TxToken<'_>)> {
        let frame = self.rx.pop_front()?;
        Some((RxToken(frame), TxToken(&mut self.tx)))
    }

    fn transmit(&mut self, _: Instant) -> Option<TxToken<'_>> {
        Some(TxToken(&mut self.tx))
    }

    fn capabilities(&self) -> DeviceCapabilities {
        let mut caps = DeviceCapabilities::default();
        caps.medium = Medium::Ethernet;
        caps.max_transmission_unit = 1514;
        caps.max_burst_size = None;
        caps
    }
}

/// Wakes the loop when a pipe becomes readable or writable.
struct LoopWaker(Arc<Notify>);

impl Wake for LoopWaker {
    fn wake(self: Arc<Self>) {
        self.0.notify_one();
    }
    fn wake_by_ref(self: &Arc<Self>) {
        self.0.notify_one();
    }
}

struct Stack {
    cfg: NetConfig,
    /// The connections last told to the owner.
    published: crate::Connections,
    iface: Interface,
    sockets: SocketSet<'static>,
    dev: Queues,
    flows: HashMap<SocketHandle, Flow>,
    keys: HashSet<FlowKey>,
    held: HashMap<FlowKey, Vec<u8>>,
    udp: HashMap<FlowKey, UdpFlow>,
    /// Forwarded UDP: the gateway port the guest answers to → the host socket and peer.
    udp_inbound: HashMap<u16, (Arc<UdpSocket>, SocketAddr)>,
    /// Denied UDP flows already recorded.
    denied_udp: HashSet<FlowKey>,
    dns_in_flight: usize,
    /// The last flow number handed out.
    next_flow: u64,
    names: HashMap<Ipv4Addr, String>,
    /// Mode `all`: synthetic address ↔ name.
    synthetic_names: HashMap<Ipv4Addr, String>,
    synthetic_ips: HashMap<String, Ipv4Addr>,
    synthetic_next: u32,
    host_addrs: (std::time::Instant, Vec<IpAddr>),
    events: mpsc::Sender<Event>,
    notify: Arc<Notify>,
    waker: Waker,
    epoch: std::time::Instant,
    next_port: u16,
    proxy_ip: Option<Ipv4Addr>,
}

/// A forwarded port's host side.
#[derive(Debug)]
pub(crate) enum Listener {
    Tcp(TcpListener),
    Udp(UdpSocket),
}

pub(crate) async fn run(
    cfg: NetConfig,
    transport: Transport,
    listeners: Vec<(Listener, u16)>,
    mut injected: mpsc::Receiver<(TcpStream, u16)>,
    cancel: CancellationToken,
) {
    let (events_tx, mut events) = mpsc::channel::<Event>(1024);
    {
        let events = events_tx.clone();
        let cancel = cancel.clone();
        tokio::spawn(async move {
            loop {
                tokio::select! {
                    () = cancel.cancelled() => return,
                    got = injected.recv() => match got {
                        Some((stream, guest_port)) => {
                            if events.send(Event::Inbound { stream, guest_port }).await.is_err() {
                                return;
                            }
                        }
                        None => return,
                    },
                }
            }
        });
    }
    for (listener, guest_port) in listeners {
        let events = events_tx.clone();
        let cancel = cancel.clone();
        match listener {
            Listener::Tcp(listener) => tokio::spawn(async move {
                loop {
                    tokio::select! {
                        () = cancel.cancelled() => return,
                        accepted = listener.accept() => match accepted {
                            Ok((stream, _)) => {
                                if events.send(Event::Inbound { stream, guest_port }).await.is_err() {
                                    return;
                                }
                            }
                            Err(error) => {
                                tracing::warn!(%error, "forwarded port accept failed");
                                tokio::time::sleep(Duration::from_millis(100)).await;
                            }
                        },
                    }
                }
            }),
            Listener::Udp(socket) => tokio::spawn(async move {
                let socket = Arc::new(socket);
                let mut buf = vec![0u8; 65536];
                loop {
                    tokio::select! {
                        () = cancel.cancelled() => return,
                        got = socket.recv_from(&mut buf) => match got {
                            Ok((n, peer)) => {
                                let event = Event::InboundDatagram {
                                    socket: socket.clone(),
                                    peer,
                                    guest_port,
                                    payload: buf[..n].to_vec(),
                                };
                                if events.send(event).await.is_err() {
                                    return;
                                }
                            }
                            Err(_) => tokio::time::sleep(Duration::from_millis(50)).await,
                        },
                    }
                }
            }),
        };
    }
    let mut frames = transport.spawn(cancel.clone());
    let mut stack = Stack::new(cfg, events_tx);
    tracing::info!(instance = %stack.cfg.instance_id, "sandbox network up");
    loop {
        stack.poll();
        stack.flush(&frames);
        let delay = stack.delay();
        tokio::select! {
            biased;
            () = cancel.cancelled() => break,
            frame = frames.rx.recv() => match frame {
                Some(frame) => {
                    stack.ingress(frame);
                    drain(&mut frames, &mut stack);
                }
                None => break,
            },
            event = events.recv() => {
                if let Some(event) = event {
                    stack.handle(event);
                }
            }
            () = stack.notify.notified() => {}
            () = tokio::time::sleep(delay) => {}
        }
    }
    cancel.cancel();
    stack
        .cfg
        .traffic
        .set_connections(crate::Connections::default());
    tracing::info!(instance = %stack.cfg.instance_id, "sandbox network down");
}

/// Takes every frame already queued, so one wake-up handles a burst.
fn drain(frames: &mut Frames, stack: &mut Stack) {
    for _ in 0..256 {
        match frames.rx.try_recv() {
            Ok(frame) => stack.ingress(frame),
            Err(_) => return,
        }
    }
}

impl Stack {
    fn new(cfg: NetConfig, events: mpsc::Sender<Event>) -> Stack {
        let mut dev = Queues::default();
        let mut config = Config::new(HardwareAddress::Ethernet(EthernetAddress(STACK_MAC)));
        config.random_seed = now_ms() ^ u64::from(std::process::id());
        let epoch = std::time::Instant::now();
        let mut iface = Interface::new(config, &mut dev, Instant::from_millis(0));
        let proxy_ip = match &cfg.egress {
            Egress::Proxy { addr, .. } => Some(*addr.ip()),
            Egress::Direct(_) => None,
        };
        iface.update_ip_addrs(|addrs| {
            for ip in [Some(cfg.gateway), Some(cfg.dns), proxy_ip]
                .into_iter()
                .flatten()
            {
                let _ = addrs.push(IpCidr::new(IpAddress::Ipv4(ip), cfg.prefix));
            }
        });
        // Accept packets for any destination (the guest routes everything via the gateway);
        // the loop has already decided which ones may reach a socket.
        let _ = iface.routes_mut().add_default_ipv4_route(cfg.gateway);
        iface.set_any_ip(true);
        let notify = Arc::new(Notify::new());
        let waker = Waker::from(Arc::new(LoopWaker(notify.clone())));
        Stack {
            published: crate::Connections::default(),
            cfg,
            iface,
            sockets: SocketSet::new(Vec::new()),
            dev,
            flows: HashMap::new(),
            keys: HashSet::new(),
            held: HashMap::new(),
            udp: HashMap::new(),
            udp_inbound: HashMap::new(),
            denied_udp: HashSet::new(),
            dns_in_flight: 0,
            next_flow: 0,
            names: HashMap::new(),
            synthetic_names: HashMap::new(),
            synthetic_ips: HashMap::new(),
            synthetic_next: 0,
            host_addrs: (epoch - HOST_ADDRS_TTL * 2, Vec::new()),
            events,
            notify,
            waker,
            epoch,
            next_port: 49152,
            proxy_ip,
        }
    }

    fn now(&self) -> Instant {
        Instant::from_micros(self.epoch.elapsed().as_micros() as i64)
    }

    fn delay(&mut self) -> Duration {
        if !self.dev.tx.is_empty() {
            return Duration::from_millis(1);
        }
        let now = self.now();
        self.iface
            .poll_delay(now, &self.sockets)
            .map(|d| Duration::from_micros(d.total_micros()))
            .unwrap_or(Duration::from_secs(1))
            .min(Duration::from_secs(1))
    }

    fn is_own(&self, ip: Ipv4Addr) -> bool {
        ip == self.cfg.gateway || ip == self.cfg.dns || Some(ip) == self.proxy_ip
    }

    fn record(
        &self,
        protocol: &'static str,
        dst: SocketAddrV4,
        verdict: Verdict,
        name: Option<String>,
    ) {
        if let Verdict::Denied(reason) = &verdict {
            tracing::debug!(instance = %self.cfg.instance_id, protocol, %dst, %reason, "flow denied");
        }
        self.emit(protocol, dst, verdict, name, None, None);
    }

    /// Records an allowed flow and returns its number.
    fn record_opened(
        &mut self,
        protocol: &'static str,
        dst: SocketAddrV4,
        name: Option<String>,
    ) -> u64 {
        self.next_flow += 1;
        let id = self.next_flow;
        self.emit(protocol, dst, Verdict::Allowed, name, Some(id), None);
        id
    }

    /// Records the end of flow `id` with what it moved.
    fn record_closed(&self, protocol: &'static str, dst: SocketAddrV4, id: u64, bytes: FlowBytes) {
        self.emit(protocol, dst, Verdict::Allowed, None, Some(id), Some(bytes));
    }

    fn emit(
        &self,
        protocol: &'static str,
        destination: SocketAddrV4,
        verdict: Verdict,
        name: Option<String>,
        flow: Option<u64>,
        bytes: Option<FlowBytes>,
    ) {
        if let Some(sink) = &self.cfg.events {
            sink(FlowEvent {
                at_ms: now_ms(),
                protocol,
                destination,
                name: name.or_else(|| self.names.get(destination.ip()).cloned()),
                verdict,
                flow,
                bytes,
            });
        }
    }

    /// One frame from the guest.
    fn ingress(&mut self, frame: Vec<u8>) {
        self.cfg.traffic.sent_by_guest(frame.len());
        let Ok(eth) = EthernetFrame::new_checked(&frame[..]) else {
            return;
        };
        match eth.ethertype() {
            EthernetProtocol::Arp => self.dev.rx.push_back(frame),
            EthernetProtocol::Ipv4 => {
                let Ok(ip) = Ipv4Packet::new_checked(eth.payload()) else {
                    return;
                };
                let (src, dst) = (ip.src_addr(), ip.dst_addr());
                if ip.more_frags() || ip.frag_offset() != 0 {
                    return;
                }
                if ip.next_header() == IpProtocol::Udp
                    && let Ok(udp) = UdpPacket::new_checked(ip.payload())
                    && udp.dst_port() == dhcp::SERVER_PORT
                    && udp.src_port() == dhcp::CLIENT_PORT
                {
                    self.dhcp(udp.payload());
                    return;
                }
                if src != self.cfg.guest_ip {
                    return; // spoofed: the guest has exactly one address
                }
                match ip.next_header() {
                    IpProtocol::Tcp => {
                        let Ok(tcp) = TcpPacket::new_checked(ip.payload()) else {
                            return;
                        };
                        let key = FlowKey {
                            guest_port: tcp.src_port(),
                            dst: SocketAddrV4::new(dst, tcp.dst_port()),
                        };
                        let opening = tcp.syn() && !tcp.ack();
                        if opening && !self.keys.contains(&key) {
                            self.open(key, frame);
                        } else {
                            self.dev.rx.push_back(frame);
                        }
                    }
                    IpProtocol::Udp => {
                        let Ok(udp) = UdpPacket::new_checked(ip.payload()) else {
                            return;
                        };
                        let dst = SocketAddrV4::new(dst, udp.dst_port());
                        let payload = udp.payload().to_vec();
                        self.datagram(udp.src_port(), dst, payload);
                    }
                    IpProtocol::Icmp if self.is_own(dst) => self.dev.rx.push_back(frame),
                    _ => {}
                }
            }
            _ => {}
        }
    }

    /// A SYN for a flow the stack does not know yet.
    fn open(&mut self, key: FlowKey, syn: Vec<u8>) {
        if self.held.contains_key(&key) {
            return; // a retransmission while the host dial is under way
        }
        if self.keys.len() + self.held.len() >= self.cfg.max_tcp_flows {
            self.record(
                "tcp",
                key.dst,
                Verdict::Denied(DenyReason::TooManyFlows),
                None,
            );
            self.dev.rx.push_back(syn); // no socket: smoltcp resets it
            return;
        }
        let ip = *key.dst.ip();
        match &self.cfg.egress {
            Egress::Proxy { addr, serve, .. } if key.dst == *addr => {
                let serve = serve.clone();
                let (ours, theirs) = tokio::io::duplex(PIPE_BUFFER);
                serve(theirs);
                self.listen(key, Pipe::Memory(ours), None);
                self.dev.rx.push_back(syn);
                return;
            }
            Egress::Proxy { intercept, .. }
                if matches!(key.dst.port(), 80 | 443) && !self.is_own(ip) =>
            {
                let intercept = intercept.clone();
                let name = self.name_of(ip);
                if let Err(reason) = self.allowed_by_name(name.as_deref()) {
                    self.record("tcp", key.dst, Verdict::Denied(reason), name);
                    self.dev.rx.push_back(syn);
                    return;
                }
                if name.is_none() && !is_synthetic(ip) {
                    let hosts = self.host_addresses();
                    if let Err(reason) = crate::Policy::default().check(ip, &hosts) {
                        self.record("tcp", key.dst, Verdict::Denied(reason), None);
                        self.dev.rx.push_back(syn);
                        return;
                    }
                }
                let id = self.record_opened("tcp", key.dst, name.clone());
                let (ours, theirs) = tokio::io::duplex(PIPE_BUFFER);
                intercept(theirs, key.dst, name);
                self.listen(key, Pipe::Memory(ours), Some(id));
                self.dev.rx.push_back(syn);
                return;
            }
            _ => {}
        }
        let verdict = self.direct_verdict(ip);
        if let Err(reason) = verdict {
            self.record("tcp", key.dst, Verdict::Denied(reason), None);
            self.dev.rx.push_back(syn);
            return;
        }
        // Dial first; the guest's SYN is answered only once the host connection exists.
        self.held.insert(key, syn);
        let target = self
            .cfg
            .dial_overrides
            .get(&key.dst)
            .copied()
            .unwrap_or(SocketAddr::V4(key.dst));
        let events = self.events.clone();
        tokio::spawn(async move {
            let result = match tokio::time::timeout(DIAL_TIMEOUT, TcpStream::connect(target)).await
            {
                Ok(result) => result,
                Err(_) => Err(std::io::ErrorKind::TimedOut.into()),
            };
            let _ = events.send(Event::Dialed { key, result }).await;
        });
    }

    /// With an allow-list, a flow must be bound to an allowed name (`name`: the one the guest
    /// resolved for the destination through the stack).
    fn allowed_by_name(&self, name: Option<&str>) -> Result<(), DenyReason> {
        if !hypedeck_model::allow::shared_is_set(&self.cfg.allow) {
            return Ok(());
        }
        match name {
            Some(n) if hypedeck_model::allow::shared_allows(&self.cfg.allow, n) => Ok(()),
            _ => Err(DenyReason::NotAllowed),
        }
    }

    /// Whether a flow may go out directly to `ip` (TCP or UDP): not to the stack's own
    /// addresses, only when the egress mode lets anything out directly, under the policy and
    /// the allow-list.
    fn direct_verdict(&mut self, ip: Ipv4Addr) -> Result<(), DenyReason> {
        if self.is_own(ip) {
            return Err(DenyReason::NoSuchService);
        }
        let policy = self.direct_policy().ok_or(DenyReason::EgressProxyOnly)?;
        let hosts = self.host_addresses();
        policy.check(ip, &hosts)?;
        self.allowed_by_name(self.names.get(&ip).map(String::as_str))
    }

    /// The policy for flows that go out directly (`None`: nothing does).
    fn direct_policy(&self) -> Option<crate::Policy> {
        match &self.cfg.egress {
            Egress::Direct(policy) => Some(policy.clone()),
            Egress::Proxy { direct, .. } => direct.clone(),
        }
    }

    /// The name the guest resolved to `ip` through the stack, if it did.
    fn name_of(&self, ip: Ipv4Addr) -> Option<String> {
        self.synthetic_names
            .get(&ip)
            .or_else(|| self.names.get(&ip))
            .cloned()
    }

    /// The synthetic address standing for `name` (mode `all`), allocated on first use.
    fn synthetic(&mut self, name: &str) -> Ipv4Addr {
        if let Some(ip) = self.synthetic_ips.get(name) {
            return *ip;
        }
        let base = u32::from(SYNTHETIC_BASE);
        let ip = Ipv4Addr::from(base + 1 + self.synthetic_next % SYNTHETIC_COUNT);
        self.synthetic_next = self.synthetic_next.wrapping_add(1);
        if let Some(old) = self.synthetic_names.insert(ip, name.to_string()) {
            self.synthetic_ips.remove(&old);
        }
        self.synthetic_ips.insert(name.to_string(), ip);
        ip
    }

    fn host_addresses(&mut self) -> Vec<IpAddr> {
        if self.host_addrs.0.elapsed() > HOST_ADDRS_TTL {
            self.host_addrs = (std::time::Instant::now(), crate::host_addresses());
        }
        self.host_addrs.1.clone()
    }

    /// A listening socket for exactly `key`'s destination, piped to `io`.
    fn listen(&mut self, key: FlowKey, io: Pipe, id: Option<u64>) {
        let mut socket = new_socket();
        if socket.listen(key.dst).is_err() {
            return;
        }
        let handle = self.sockets.add(socket);
        self.keys.insert(key);
        let mut flow = flow(Some(key), io);
        flow.id = id;
        self.flows.insert(handle, flow);
        self.publish_connections();
    }

    /// Tells the owner which TCP connections are open (auto-standby's activity).
    fn publish_connections(&mut self) {
        let connections = crate::Connections {
            inbound: self.flows.values().filter_map(|f| f.inbound).collect(),
            outbound: self.flows.values().filter(|f| f.key.is_some()).count(),
        };
        if connections != self.published {
            self.cfg.traffic.set_connections(connections.clone());
            self.published = connections;
        }
    }

    fn handle(&mut self, event: Event) {
        match event {
            Event::Dialed { key, result } => {
                let Some(syn) = self.held.remove(&key) else {
                    return;
                };
                match result {
                    Ok(stream) => {
                        let id = self.record_opened("tcp", key.dst, None);
                        // Let smoltcp see every frame queued so far, so only this SYN can
                        // meet the new listening socket.
                        self.poll();
                        let _ = stream.set_nodelay(true);
                        self.listen(key, Pipe::Host(stream), Some(id));
                        self.dev.rx.push_back(syn);
                    }
                    Err(error) => {
                        self.record(
                            "tcp",
                            key.dst,
                            Verdict::Unreachable(error.kind().to_string()),
                            None,
                        );
                        self.dev.rx.push_back(syn); // no socket: reset, "connection refused"
                    }
                }
                self.poll();
            }
            Event::Inbound { stream, guest_port } => {
                let local = self.ephemeral_port();
                let mut socket = new_socket();
                let remote = (IpAddress::Ipv4(self.cfg.guest_ip), guest_port);
                let local = (IpAddress::Ipv4(self.cfg.gateway), local);
                if socket.connect(self.iface.context(), remote, local).is_err() {
                    return;
                }
                let handle = self.sockets.add(socket);
                let _ = stream.set_nodelay(true);
                let peer = stream
                    .peer_addr()
                    .unwrap_or_else(|_| SocketAddr::from((Ipv4Addr::LOCALHOST, 0)));
                let mut inbound = flow(None, Pipe::Host(stream));
                inbound.inbound = Some((peer, guest_port));
                self.flows.insert(handle, inbound);
                self.publish_connections();
            }
            Event::InboundDatagram {
                socket,
                peer,
                guest_port,
                payload,
            } => {
                let existing = self
                    .udp_inbound
                    .iter()
                    .find(|(_, (s, p))| *p == peer && Arc::ptr_eq(s, &socket))
                    .map(|(port, _)| *port);
                let port = match existing {
                    Some(port) => port,
                    None => {
                        if self.udp_inbound.len() >= MAX_UDP_FLOWS {
                            self.udp_inbound.clear();
                        }
                        let port = self.ephemeral_port();
                        self.udp_inbound.insert(port, (socket, peer));
                        port
                    }
                };
                let from = SocketAddrV4::new(self.cfg.gateway, port);
                self.send_to_guest(from, guest_port, &payload);
            }
            Event::Datagram {
                from,
                to_port,
                payload,
            } => {
                let key = FlowKey {
                    guest_port: to_port,
                    dst: from,
                };
                if let Some(flow) = self.udp.get_mut(&key) {
                    flow.received += payload.len() as u64;
                }
                self.send_to_guest(from, to_port, &payload);
            }
            Event::DnsDone { name, addrs } => {
                self.dns_in_flight = self.dns_in_flight.saturating_sub(1);
                let server = SocketAddrV4::new(self.cfg.dns, 53);
                let verdict = if addrs.is_empty() {
                    Verdict::Unreachable("no such name".into())
                } else {
                    Verdict::Allowed
                };
                self.record("dns", server, verdict, Some(name.clone()));
                if self.names.len() >= MAX_NAMES {
                    self.names.clear();
                }
                for addr in addrs {
                    self.names.insert(addr, name.clone());
                }
            }
            Event::UdpIdle(key) => {
                if self
                    .udp
                    .get(&key)
                    .is_some_and(|f| f.last_sent.elapsed() >= UDP_IDLE)
                    && let Some(flow) = self.udp.remove(&key)
                {
                    let bytes = FlowBytes {
                        sent: flow.sent,
                        received: flow.received,
                    };
                    self.record_closed("udp", key.dst, flow.id, bytes);
                }
            }
        }
    }

    fn ephemeral_port(&mut self) -> u16 {
        let used: HashSet<u16> = self
            .flows
            .keys()
            .filter_map(|h| {
                self.sockets
                    .get::<tcp::Socket>(*h)
                    .local_endpoint()
                    .map(|e| e.port)
            })
            .collect();
        for _ in 0..16384 {
            self.next_port = if self.next_port == u16::MAX {
                49152
            } else {
                self.next_port + 1
            };
            if !used.contains(&self.next_port) && !self.udp_inbound.contains_key(&self.next_port) {
                break;
            }
        }
        self.next_port
    }

    /// One UDP datagram from the guest.
    fn datagram(&mut self, guest_port: u16, dst: SocketAddrV4, payload: Vec<u8>) {
        if *dst.ip() == self.cfg.dns && dst.port() == 53 {
            self.dns(guest_port, payload);
            return;
        }
        if *dst.ip() == self.cfg.gateway
            && let Some((socket, peer)) = self.udp_inbound.get(&dst.port())
        {
            // The guest answering a datagram that came in on a forwarded port.
            let _ = socket.try_send_to(&payload, *peer);
            return;
        }
        let verdict = self.direct_verdict(*dst.ip());
        let key = FlowKey { guest_port, dst };
        if let Err(reason) = verdict {
            // Recorded once per flow, so a guest spraying datagrams cannot flush the log.
            if self.denied_udp.len() >= MAX_UDP_FLOWS {
                self.denied_udp.clear();
            }
            if self.denied_udp.insert(key) {
                self.record("udp", dst, Verdict::Denied(reason), None);
            }
            return;
        }
        if !self.udp.contains_key(&key) {
            if self.udp.len() >= MAX_UDP_FLOWS {
                self.record("udp", dst, Verdict::Denied(DenyReason::TooManyFlows), None);
                return;
            }
            let target = self
                .cfg
                .dial_overrides
                .get(&dst)
                .copied()
                .unwrap_or(SocketAddr::V4(dst));
            let socket = match std::net::UdpSocket::bind((Ipv4Addr::UNSPECIFIED, 0))
                .and_then(|s| s.connect(target).map(|()| s))
                .and_then(|s| s.set_nonblocking(true).map(|()| s))
                .and_then(UdpSocket::from_std)
            {
                Ok(s) => Arc::new(s),
                Err(error) => {
                    self.record(
                        "udp",
                        dst,
                        Verdict::Unreachable(error.kind().to_string()),
                        None,
                    );
                    return;
                }
            };
            let id = self.record_opened("udp", dst, None);
            let reader = tokio::spawn(udp_reader(socket.clone(), key, self.events.clone()));
            self.udp.insert(
                key,
                UdpFlow {
                    id,
                    sent: 0,
                    received: 0,
                    socket,
                    reader: reader.abort_handle(),
                    last_sent: std::time::Instant::now(),
                },
            );
        }
        if let Some(flow) = self.udp.get_mut(&key) {
            flow.last_sent = std::time::Instant::now();
            if flow.socket.try_send(&payload).is_ok() {
                flow.sent += payload.len() as u64;
            }
        }
    }

    /// A DHCP message from the guest: the answer is broadcast, since it has no address yet.
    fn dhcp(&mut self, request: &[u8]) {
        let lease = dhcp::Lease {
            ip: self.cfg.guest_ip,
            prefix: self.cfg.prefix,
            gateway: self.cfg.gateway,
            dns: self.cfg.dns,
        };
        let Some(reply) = dhcp::answer(request, &lease) else {
            return;
        };
        let from = SocketAddrV4::new(self.cfg.gateway, dhcp::SERVER_PORT);
        let to = SocketAddrV4::new(Ipv4Addr::BROADCAST, dhcp::CLIENT_PORT);
        if let Some(frame) = self.udp_frame_to(from, to, [0xff; 6], &reply) {
            self.dev.tx.push(frame);
        }
    }

    /// A query to the stack's DNS server.
    fn dns(&mut self, guest_port: u16, payload: Vec<u8>) {
        let Some(query) = dns::parse(&payload) else {
            return;
        };
        let from = SocketAddrV4::new(self.cfg.dns, 53);
        let events = self.events.clone();
        if query.qtype != dns::TYPE_A || query.qclass != 1 {
            // No IPv6 and nothing but addresses: an empty answer makes resolvers fall back.
            let reply = dns::respond(&query, &Answer::Addresses(Vec::new()));
            self.send_to_guest(from, guest_port, &reply);
            return;
        }
        if !hypedeck_model::allow::shared_allows(&self.cfg.allow, &query.name) {
            self.record(
                "dns",
                from,
                Verdict::Denied(DenyReason::NotAllowed),
                Some(query.name.clone()),
            );
            let reply = dns::respond(&query, &Answer::NoSuchName);
            self.send_to_guest(from, guest_port, &reply);
            return;
        }
        if matches!(self.cfg.egress, Egress::Proxy { direct: None, .. }) {
            // Mode `all`: the proxy resolves what the guest connects to through it. A lookup
            // here would carry whatever the guest encodes in a name to the host's resolver,
            // so the answer is a synthetic address that only the stack and proxy understand.
            let ip = self.synthetic(&query.name);
            self.record("dns", from, Verdict::Allowed, Some(query.name.clone()));
            let reply = dns::respond(&query, &Answer::Addresses(vec![ip]));
            self.send_to_guest(from, guest_port, &reply);
            return;
        }
        if self.dns_in_flight >= MAX_DNS_IN_FLIGHT {
            let reply = dns::respond(&query, &Answer::Refused);
            self.send_to_guest(from, guest_port, &reply);
            return;
        }
        self.dns_in_flight += 1;
        tokio::spawn(async move {
            let lookup = tokio::net::lookup_host((query.name.as_str(), 0));
            let (answer, addrs) = match tokio::time::timeout(DNS_TIMEOUT, lookup).await {
                Ok(Ok(found)) => {
                    let mut addrs: Vec<Ipv4Addr> = found
                        .filter_map(|a| match a.ip() {
                            IpAddr::V4(v4) => Some(v4),
                            IpAddr::V6(_) => None,
                        })
                        .collect();
                    addrs.dedup();
                    addrs.truncate(16);
                    (Answer::Addresses(addrs.clone()), addrs)
                }
                Ok(Err(_)) => (Answer::NoSuchName, Vec::new()),
                Err(_) => (Answer::Failure, Vec::new()),
            };
            let reply = dns::respond(&query, &answer);
            let _ = events
                .send(Event::DnsDone {
                    name: query.name.clone(),
                    addrs,
                })
                .await;
            let _ = events
                .send(Event::Datagram {
                    from,
                    to_port: guest_port,
                    payload: reply,
                })
                .await;
        });
    }

    /// Queues one UDP datagram for the guest (dropped when too large for the link).
    fn send_to_guest(&mut self, from: SocketAddrV4, to_port: u16, payload: &[u8]) {
        if let Some(frame) = self.udp_frame(from, to_port, payload) {
            self.dev.tx.push(frame);
        }
    }

    /// An Ethernet frame carrying one UDP datagram to the guest (`None`: too large for the
    /// link, dropped).
    fn udp_frame(&self, from: SocketAddrV4, to_port: u16, payload: &[u8]) -> Option<Vec<u8>> {
        let to = SocketAddrV4::new(self.cfg.guest_ip, to_port);
        self.udp_frame_to(from, to, self.cfg.guest_mac, payload)
    }

    fn udp_frame_to(
        &self,
        from: SocketAddrV4,
        to: SocketAddrV4,
        to_mac: [u8; 6],
        payload: &[u8],
    ) -> Option<Vec<u8>> {
        let udp = UdpRepr {
            src_port: from.port(),
            dst_port: to.port(),
        };
        let ip = Ipv4Repr {
            src_addr: *from.ip(),
            dst_addr: *to.ip(),
            next_header: IpProtocol::Udp,
            payload_len: udp.header_len() + payload.len(),
            hop_limit: 64,
        };
        let eth = EthernetRepr {
            src_addr: EthernetAddress(STACK_MAC),
            dst_addr: EthernetAddress(to_mac),
            ethertype: EthernetProtocol::Ipv4,
        };
        let len = eth.buffer_len() + ip.buffer_len() + udp.header_len() + payload.len();
        if len > MAX_FRAME {
            return None;
        }
        let caps = ChecksumCapabilities::default();
        let mut buf = vec![0u8; len];
        let mut frame = EthernetFrame::new_unchecked(&mut buf[..]);
        eth.emit(&mut frame);
        let mut packet = Ipv4Packet::new_unchecked(frame.payload_mut());
        ip.emit(&mut packet, &caps);
        let mut datagram = UdpPacket::new_unchecked(packet.payload_mut());
        udp.emit(
            &mut datagram,
            &IpAddress::Ipv4(*from.ip()),
            &IpAddress::Ipv4(*to.ip()),
            payload.len(),
            |buf| buf.copy_from_slice(payload),
            &caps,
        );
        Some(buf)
    }

    /// Runs smoltcp, moves data between sockets and pipes, and runs smoltcp again for what
    /// the pipes gave.
    fn poll(&mut self) {
        let now = self.now();
        self.iface.poll(now, &mut self.dev, &mut self.sockets);
        if self.pump() {
            let now = self.now();
            self.iface.poll(now, &mut self.dev, &mut self.sockets);
        }
    }

    /// Returns whether anything moved or closed.
    fn pump(&mut self) -> bool {
        let mut cx = Context::from_waker(&self.waker);
        let mut moved = false;
        let mut done = Vec::new();
        for (handle, flow) in self.flows.iter_mut() {
            let socket = self.sockets.get_mut::<tcp::Socket>(*handle);
            if socket.state() == tcp::State::Established {
                flow.established = true;
            }
            // Guest → host.
            while socket.can_recv() {
                let wrote =
                    socket.recv(
                        |buf| match Pin::new(&mut flow.io).poll_write(&mut cx, buf) {
                            Poll::Ready(Ok(n)) => (n, Some(Ok(n))),
                            Poll::Ready(Err(e)) => (0, Some(Err(e))),
                            Poll::Pending => (0, None),
                        },
                    );
                match wrote {
                    Ok(Some(Ok(n))) if n > 0 => {
                        flow.sent += n as u64;
                        moved = true;
                    }
                    Ok(Some(Err(_))) => {
                        socket.abort();
                        moved = true;
                        break;
                    }
                    _ => break,
                }
            }
            // The guest closed its side and everything it sent is through: pass the FIN on.
            if flow.established && !flow.host_shut && !socket.may_recv() && socket.recv_queue() == 0
            {
                match Pin::new(&mut flow.io).poll_shutdown(&mut cx) {
                    Poll::Ready(_) => {
                        flow.host_shut = true;
                        moved = true;
                    }
                    Poll::Pending => {}
                }
            }
            // Host → guest.
            while !flow.host_eof && socket.can_send() {
                let read = socket.send(|buf| {
                    let mut rb = ReadBuf::new(buf);
                    match Pin::new(&mut flow.io).poll_read(&mut cx, &mut rb) {
                        Poll::Ready(Ok(())) => {
                            let n = rb.filled().len();
                            (n, Some(Ok(n)))
                        }
                        Poll::Ready(Err(e)) => (0, Some(Err(e))),
                        Poll::Pending => (0, None),
                    }
                });
                match read {
                    Ok(Some(Ok(0))) => {
                        flow.host_eof = true;
                        socket.close();
                        moved = true;
                    }
                    Ok(Some(Ok(n))) => {
                        flow.received += n as u64;
                        moved = true;
                    }
                    Ok(Some(Err(_))) => {
                        flow.host_eof = true;
                        socket.abort();
                        moved = true;
                    }
                    _ => break,
                }
            }
            let never_connected = !flow.established && flow.created.elapsed() > HANDSHAKE_TIMEOUT;
            if never_connected {
                socket.abort();
            }
            // TIME-WAIT (10 s in smoltcp) holds nothing the host needs: a flow is done there,
            // so closed connections never count against the flow limit.
            let finished = matches!(socket.state(), tcp::State::Closed | tcp::State::TimeWait);
            if finished && (flow.established || flow.created.elapsed() > Duration::from_secs(1))
                || never_connected
            {
                done.push(*handle);
            }
        }
        for handle in done {
            if let Some(flow) = self.flows.remove(&handle)
                && let Some(key) = flow.key
            {
                self.keys.remove(&key);
                if let Some(id) = flow.id {
                    let bytes = FlowBytes {
                        sent: flow.sent,
                        received: flow.received,
                    };
                    self.record_closed("tcp", key.dst, id, bytes);
                }
            }
            self.sockets.remove(handle);
            moved = true;
        }
        if moved {
            self.publish_connections();
        }
        moved
    }

    /// Hands the frames smoltcp produced to the transport.
    fn flush(&mut self, frames: &Frames) {
        let mut pending = std::mem::take(&mut self.dev.tx).into_iter();
        let mut rest = Vec::new();
        for frame in pending.by_ref() {
            match frames.tx.try_reserve() {
                Ok(permit) => {
                    self.cfg.traffic.sent_to_guest(frame.len());
                    permit.send(frame);
                }
                Err(_) => {
                    rest.push(frame);
                    break;
                }
            }
        }
        rest.extend(pending);
        self.dev.tx = rest;
        // What the writer could not take yet waits for the next turn (woken soon, see
        // `delay`), up to a queue's worth; past that the VMM is not reading: drop, as a full
        // link would.
        if self.dev.tx.len() > crate::transport::QUEUE_FRAMES {
            let excess = self.dev.tx.len() - crate::transport::QUEUE_FRAMES;
            self.dev.tx.drain(..excess);
        }
    }
}

fn new_socket() -> tcp::Socket<'static> {
    let mut socket = tcp::Socket::new(
        tcp::SocketBuffer::new(vec![0u8; TCP_BUFFER]),
        tcp::SocketBuffer::new(vec![0u8; TCP_BUFFER]),
    );
    socket.set_nagle_enabled(false);
    socket.set_ack_delay(None);
    socket.set_keep_alive(Some(smoltcp::time::Duration::from_secs(60)));
    socket.set_timeout(Some(smoltcp::time::Duration::from_secs(600)));
    socket
}

fn flow(key: Option<FlowKey>, io: Pipe) -> Flow {
    Flow {
        key,
        inbound: None,
        id: None,
        sent: 0,
        received: 0,
        io,
        created: std::time::Instant::now(),
        established: false,
        host_shut: false,
        host_eof: false,
    }
}

async fn udp_reader(socket: Arc<UdpSocket>, key: FlowKey, events: mpsc::Sender<Event>) {
    let mut buf = vec![0u8; 65536];
    loop {
        match tokio::time::timeout(UDP_IDLE, socket.recv(&mut buf)).await {
            Ok(Ok(n)) => {
                let event = Event::Datagram {
                    from: key.dst,
                    to_port: key.guest_port,
                    payload: buf[..n].to_vec(),
                };
                if events.send(event).await.is_err() {
                    return;
                }
            }
            Ok(Err(_)) => {
                // ICMP errors surface as recv errors on a connected socket: keep listening.
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            Err(_) => {
                if events.send(Event::UdpIdle(key)).await.is_err() {
                    return;
                }
            }
        }
    }
}
