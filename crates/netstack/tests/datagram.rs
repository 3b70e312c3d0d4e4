//! The stack driven through the datagram framing (one Ethernet frame per datagram on a Unix
//! socketpair: what vz's `VZFileHandleNetworkDeviceAttachment` and QEMU's `-netdev dgram`
//! carry), with a guest that is a second smoltcp interface on the other end of the pair.
//! Real QEMU guests exercise the stream framing (crates/hv-qemu/tests/qemu_boot.rs,
//! tests/netns).

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::{HashMap, VecDeque};
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use hypedeck_netstack::{
    DenyReason, Egress, FlowEvent, Forward, NetConfig, Network, Policy, Transport, Verdict,
};
use smoltcp::iface::{Config, Interface, SocketHandle, SocketSet};
use smoltcp::phy::{self, DeviceCapabilities, Medium};
use smoltcp::socket::{tcp, udp};
use smoltcp::time::Instant;
use smoltcp::wire::{EthernetAddress, HardwareAddress, IpAddress, IpCidr, Ipv4Address};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const GUEST_MAC: [u8; 6] = [2, 0, 0, 0, 9, 0x15];
const GUEST_IP: Ipv4Addr = Ipv4Addr::new(10, 100, 9, 15);
const GATEWAY: Ipv4Addr = Ipv4Addr::new(10, 100, 9, 2);
const DNS: Ipv4Addr = Ipv4Addr::new(10, 100, 9, 3);

/// The guest's NIC: the other end of the socketpair.
struct Nic {
    socket: std::os::unix::net::UnixDatagram,
    rx: VecDeque<Vec<u8>>,
}

struct Rx(Vec<u8>);
struct Tx<'a>(&'a std::os::unix::net::UnixDatagram);

impl phy::RxToken for Rx {
    fn consume<R, F: FnOnce(&[u8]) -> R>(self, f: F) -> R {
        f(&self.0)
    }
}

impl phy::TxToken for Tx<'_> {
    fn consume<R, F: FnOnce(&mut [u8]) -> R>(self, len: usize, f: F) -> R {
        let mut buf = vec![0u8; len];
        let r = f(&mut buf);
        let _ = self.0.send(&buf);
        r
    }
}

impl phy::Device for Nic {
    type RxToken<'a> = Rx;
    type TxToken<'a> = Tx<'a>;

    fn receive(&mut self, _: Instant) -> Option<(Rx, Tx<'_>)> {
        let mut buf = vec![0u8; 2048];
        while let Ok(n) = self.socket.recv(&mut buf) {
            self.rx.push_back(buf[..n].to_vec());
        }
        let frame = self.rx.pop_front()?;
        Some((Rx(frame), Tx(&self.socket)))
    }

    fn transmit(&mut self, _: Instant) -> Option<Tx<'_>> {
        Some(Tx(&self.socket))
    }

    fn capabilities(&self) -> DeviceCapabilities {
        let mut caps = DeviceCapabilities::default();
        caps.medium = Medium::Ethernet;
        caps.max_transmission_unit = 1514;
        caps
    }
}

/// A guest: an interface at 10.100.9.15/24 routing via the gateway.
struct Guest {
    nic: Nic,
    iface: Interface,
    sockets: SocketSet<'static>,
    epoch: std::time::Instant,
    next_port: u16,
}

impl Guest {
    fn new(socket: std::os::unix::net::UnixDatagram) -> Guest {
        socket.set_nonblocking(true).unwrap();
        let mut nic = Nic {
            socket,
            rx: VecDeque::new(),
        };
        let config = Config::new(HardwareAddress::Ethernet(EthernetAddress(GUEST_MAC)));
        let mut iface = Interface::new(config, &mut nic, Instant::from_millis(0));
        iface.update_ip_addrs(|a| {
            a.push(IpCidr::new(IpAddress::Ipv4(GUEST_IP), 24)).unwrap();
        });
        iface.routes_mut().add_default_ipv4_route(GATEWAY).unwrap();
        Guest {
            nic,
            iface,
            sockets: SocketSet::new(Vec::new()),
            epoch: std::time::Instant::now(),
            next_port: 40000,
        }
    }

    async fn poll(&mut self) {
        let now = Instant::from_micros(self.epoch.elapsed().as_micros() as i64);
        self.iface.poll(now, &mut self.nic, &mut self.sockets);
        tokio::time::sleep(Duration::from_millis(2)).await;
    }

    fn connect(&mut self, to: SocketAddrV4) -> SocketHandle {
        let mut s = tcp::Socket::new(
            tcp::SocketBuffer::new(vec![0; 65536]),
            tcp::SocketBuffer::new(vec![0; 65536]),
        );
        self.next_port += 1;
        s.connect(
            self.iface.context(),
            (IpAddress::Ipv4(*to.ip()), to.port()),
            self.next_port,
        )
        .unwrap();
        self.sockets.add(s)
    }

    /// Polls until the connection is established (`true`) or closed (`false`).
    async fn outcome(&mut self, h: SocketHandle) -> bool {
        for _ in 0..5000 {
            self.poll().await;
            match self.sockets.get::<tcp::Socket>(h).state() {
                tcp::State::Established => return true,
                tcp::State::Closed => return false,
                _ => {}
            }
        }
        panic!("no outcome for the connection");
    }

    /// Sends `data` and reads until `want` bytes came back.
    async fn exchange(&mut self, h: SocketHandle, data: &[u8], want: usize) -> Vec<u8> {
        self.sockets
            .get_mut::<tcp::Socket>(h)
            .send_slice(data)
            .unwrap();
        let mut got = Vec::new();
        for _ in 0..5000 {
            self.poll().await;
            let s = self.sockets.get_mut::<tcp::Socket>(h);
            while s.can_recv() {
                let mut buf = [0u8; 4096];
                let n = s.recv_slice(&mut buf).unwrap();
                got.extend_from_slice(&buf[..n]);
            }
            if got.len() >= want {
                return got;
            }
        }
        panic!("only {} of {want} bytes came back", got.len());
    }

    /// One UDP request/response with `server`.
    async fn udp(&mut self, server: SocketAddrV4, payload: &[u8]) -> Option<Vec<u8>> {
        let mut s = udp::Socket::new(
            udp::PacketBuffer::new(vec![udp::PacketMetadata::EMPTY; 4], vec![0; 4096]),
            udp::PacketBuffer::new(vec![udp::PacketMetadata::EMPTY; 4], vec![0; 4096]),
        );
        self.next_port += 1;
        s.bind(self.next_port).unwrap();
        let h = self.sockets.add(s);
        self.sockets
            .get_mut::<udp::Socket>(h)
            .send_slice(payload, (IpAddress::Ipv4(*server.ip()), server.port()))
            .unwrap();
        for _ in 0..2500 {
            self.poll().await;
            let s = self.sockets.get_mut::<udp::Socket>(h);
            if s.can_recv() {
                let (data, _) = s.recv().unwrap();
                return Some(data.to_vec());
            }
        }
        None
    }
}

fn config(
    egress: Egress,
    overrides: HashMap<SocketAddrV4, SocketAddr>,
) -> (NetConfig, Arc<Mutex<Vec<FlowEvent>>>) {
    let events = Arc::new(Mutex::new(Vec::new()));
    let sink = events.clone();
    (
        NetConfig {
            instance_id: "test".into(),
            guest_mac: GUEST_MAC,
            guest_ip: GUEST_IP,
            gateway: GATEWAY,
            dns: DNS,
            prefix: 24,
            egress,
            forwards: Vec::new(),
            dial_overrides: overrides,
            events: Some(Arc::new(move |e| sink.lock().unwrap().push(e))),
            allow: Default::default(),
            traffic: Default::default(),
            max_tcp_flows: hypedeck_netstack::MAX_TCP_FLOWS,
        },
        events,
    )
}

async fn echo_server() -> SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        loop {
            let (mut conn, _) = listener.accept().await.unwrap();
            tokio::spawn(async move {
                let mut buf = [0u8; 4096];
                loop {
                    match conn.read(&mut buf).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => conn.write_all(&buf[..n]).await.unwrap(),
                    }
                }
            });
        }
    });
    addr
}

fn dns_query(name: &str) -> Vec<u8> {
    let mut q = vec![0xab, 0xcd, 1, 0, 0, 1, 0, 0, 0, 0, 0, 0];
    for label in name.split('.') {
        q.push(label.len() as u8);
        q.extend_from_slice(label.as_bytes());
    }
    q.extend_from_slice(&[0, 0, 1, 0, 1]);
    q
}

#[tokio::test]
async fn the_default_policy_lets_the_internet_in_and_keeps_the_host_out() {
    let echo = echo_server().await;
    let internet: SocketAddrV4 = "203.0.113.10:7".parse().unwrap();
    let closed = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let closed_addr = closed.local_addr().unwrap();
    drop(closed);
    let dead: SocketAddrV4 = "203.0.113.11:7".parse().unwrap();
    let overrides = HashMap::from([(internet, echo), (dead, closed_addr)]);
    let (cfg, events) = config(Egress::Direct(Policy::default()), overrides);
    let (ours, theirs) = std::os::unix::net::UnixDatagram::pair().unwrap();
    // As the engine gets vz's frame socket: a descriptor handed over by the helper.
    let transport = Network::datagram(std::os::fd::OwnedFd::from(ours)).unwrap();
    let network = Network::start(cfg, transport).await.unwrap();
    let mut guest = Guest::new(theirs);

    // The internet: a connection that carries data both ways.
    let h = guest.connect(internet);
    assert!(
        guest.outcome(h).await,
        "the allowed destination was refused"
    );
    assert_eq!(guest.exchange(h, b"ping", 4).await, b"ping");
    let big: Vec<u8> = (0..200_000u32).map(|i| i as u8).collect();
    let h2 = guest.connect(internet);
    assert!(guest.outcome(h2).await);
    let mut back = Vec::new();
    for chunk in big.chunks(60_000) {
        back.extend(guest.exchange(h2, chunk, chunk.len()).await);
    }
    assert_eq!(back, big, "bulk data came back intact");
    // Once the guest closes it, the flow's end is logged with what it moved.
    guest.sockets.get_mut::<tcp::Socket>(h2).close();
    let ended = |events: &[FlowEvent]| {
        events
            .iter()
            .find(|e| e.destination == internet && e.bytes.is_some_and(|b| b.sent == 200_000))
            .cloned()
    };
    let mut end = None;
    for _ in 0..2500 {
        guest.poll().await;
        end = ended(&events.lock().unwrap());
        if end.is_some() {
            break;
        }
    }
    let end = end.expect("the end of the bulk flow, with its bytes");
    assert_eq!(end.bytes.unwrap().received, 200_000);
    let opened = events
        .lock()
        .unwrap()
        .iter()
        .find(|e| e.flow == end.flow && e.bytes.is_none())
        .cloned()
        .expect("the flow's allowed event carries the same number");
    assert_eq!(opened.verdict, Verdict::Allowed);

    // An allowed destination nobody listens on: refused, not half-open.
    let h = guest.connect(dead);
    assert!(!guest.outcome(h).await, "a refused dial looked established");

    // The host and its neighbours: refused at once.
    for to in [
        "10.100.9.2:4973",
        "10.100.9.3:80",
        "127.0.0.1:4973",
        "169.254.169.254:80",
        "10.55.0.10:80",
        "192.168.1.1:80",
        "100.64.0.1:80",
        "10.100.7.100:18080",
    ] {
        let h = guest.connect(to.parse().unwrap());
        assert!(!guest.outcome(h).await, "{to} was reached");
    }

    // DNS through the stack (the host resolver knows localhost).
    let answer = guest
        .udp(SocketAddrV4::new(DNS, 53), &dns_query("localhost"))
        .await
        .expect("a DNS answer");
    assert_eq!(&answer[..2], &[0xab, 0xcd]);
    assert_eq!(answer[3] & 0xf, 0, "NOERROR");
    assert!(answer.windows(4).any(|w| w == [127, 0, 0, 1]), "{answer:?}");

    // UDP to a private address is dropped.
    assert_eq!(guest.udp("10.0.0.1:53".parse().unwrap(), b"x").await, None);

    let events = events.lock().unwrap().clone();
    let denied = |ip: &str| {
        events.iter().any(|e| {
            e.destination.ip().to_string() == ip && matches!(e.verdict, Verdict::Denied(_))
        })
    };
    for ip in [
        "127.0.0.1",
        "169.254.169.254",
        "10.55.0.10",
        "10.100.7.100",
        "10.0.0.1",
    ] {
        assert!(denied(ip), "no denial of {ip} in the flow log: {events:?}");
    }
    assert!(
        events
            .iter()
            .any(|e| e.destination == internet && e.verdict == Verdict::Allowed)
    );
    assert!(
        events
            .iter()
            .any(|e| e.destination == dead && matches!(e.verdict, Verdict::Unreachable(_)))
    );
    assert!(
        events
            .iter()
            .any(|e| e.protocol == "dns" && e.name.as_deref() == Some("localhost"))
    );
    network.stop().await;
}

#[tokio::test]
async fn with_egress_the_proxy_is_the_only_way_out_and_ports_come_in() {
    let echo = echo_server().await;
    let internet: SocketAddrV4 = "203.0.113.10:7".parse().unwrap();
    let proxy_addr: SocketAddrV4 = "10.100.9.100:18080".parse().unwrap();
    let served = Arc::new(Mutex::new(0usize));
    let count = served.clone();
    let serve: hypedeck_netstack::ProxyConnector = Arc::new(move |mut stream| {
        *count.lock().unwrap() += 1;
        tokio::spawn(async move {
            let mut buf = [0u8; 64];
            let n = stream.read(&mut buf).await.unwrap_or(0);
            let mut reply = b"proxy:".to_vec();
            reply.extend_from_slice(&buf[..n]);
            let _ = stream.write_all(&reply).await;
        });
    });
    let intercepted = Arc::new(Mutex::new(Vec::<(SocketAddrV4, Option<String>)>::new()));
    let seen = intercepted.clone();
    let intercept: hypedeck_netstack::InterceptConnector = Arc::new(move |mut stream, to, name| {
        seen.lock().unwrap().push((to, name));
        tokio::spawn(async move {
            let _ = stream.write_all(b"intercepted").await;
        });
    });
    let (mut cfg, events) = config(
        Egress::Proxy {
            addr: proxy_addr,
            serve,
            intercept,
            direct: None,
        },
        HashMap::from([(internet, echo)]),
    );
    // A forwarded port: 127.0.0.1:<free> → the guest's port 8000.
    let free = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let host_port = free.local_addr().unwrap().port();
    drop(free);
    cfg.forwards = vec![Forward {
        host_port,
        guest_port: 8000,
        udp: false,
    }];
    let (ours, theirs) = std::os::unix::net::UnixDatagram::pair().unwrap();
    ours.set_nonblocking(true).unwrap();
    let transport = Transport::Datagram(tokio::net::UnixDatagram::from_std(ours).unwrap());
    let network = Network::start(cfg.clone(), transport).await.unwrap();
    let mut guest = Guest::new(theirs);

    let h = guest.connect(proxy_addr);
    assert!(guest.outcome(h).await, "the proxy address was refused");
    assert_eq!(guest.exchange(h, b"hi", 8).await, b"proxy:hi");
    assert_eq!(*served.lock().unwrap(), 1);

    // Everything else, even where direct egress would go: refused; DNS: refused.
    let h = guest.connect(internet);
    assert!(!guest.outcome(h).await, "direct egress got through");
    assert_eq!(guest.udp(internet, b"x").await, None);

    // DNS answers with a synthetic address, never the real one (the host's resolver is not
    // asked), the same one for the same name.
    let answer = guest
        .udp(SocketAddrV4::new(DNS, 53), &dns_query("localhost"))
        .await
        .expect("a DNS answer");
    assert_eq!(answer[3] & 0xf, 0, "NOERROR");
    assert!(
        !answer.windows(4).any(|w| w == [127, 0, 0, 1]),
        "{answer:?}"
    );
    let tail: [u8; 4] = answer[answer.len() - 4..].try_into().unwrap();
    let synthetic = Ipv4Addr::from(tail);
    assert_eq!(synthetic.octets()[..2], [198, 18], "{synthetic}");
    let again = guest
        .udp(SocketAddrV4::new(DNS, 53), &dns_query("localhost"))
        .await
        .unwrap();
    assert_eq!(&again[again.len() - 4..], &synthetic.octets());

    // Port 443 to it: intercepted, handed over with the name; another port: refused.
    let h = guest.connect(SocketAddrV4::new(synthetic, 443));
    assert!(
        guest.outcome(h).await,
        "the intercepted connection was refused"
    );
    assert_eq!(guest.exchange(h, b"", 11).await, b"intercepted");
    assert_eq!(
        intercepted.lock().unwrap().as_slice(),
        &[(
            SocketAddrV4::new(synthetic, 443),
            Some("localhost".to_string())
        )]
    );
    let h = guest.connect(SocketAddrV4::new(synthetic, 22));
    assert!(
        !guest.outcome(h).await,
        "a synthetic address reached port 22"
    );
    // A real address on port 80: intercepted without a name; the host's own: refused.
    let h = guest.connect(internet_80());
    assert!(guest.outcome(h).await);
    let h = guest.connect("127.0.0.1:443".parse().unwrap());
    assert!(!guest.outcome(h).await, "loopback was intercepted");
    assert_eq!(intercepted.lock().unwrap().len(), 2);
    assert!(
        events
            .lock()
            .unwrap()
            .iter()
            .any(|e| e.protocol == "dns" && e.name.as_deref() == Some("localhost"))
    );
    assert!(
        events
            .lock()
            .unwrap()
            .iter()
            .any(|e| e.destination == internet
                && e.verdict == Verdict::Denied(DenyReason::EgressProxyOnly))
    );

    // A forwarded port: the host connects, the guest accepts and answers.
    let mut listen = tcp::Socket::new(
        tcp::SocketBuffer::new(vec![0; 4096]),
        tcp::SocketBuffer::new(vec![0; 4096]),
    );
    listen.listen(8000).unwrap();
    let lh = guest.sockets.add(listen);
    let client = tokio::spawn(async move {
        let mut c = tokio::net::TcpStream::connect(("127.0.0.1", host_port))
            .await
            .unwrap();
        c.write_all(b"knock").await.unwrap();
        let mut buf = [0u8; 5];
        c.read_exact(&mut buf).await.unwrap();
        buf
    });
    let mut got = Vec::new();
    for _ in 0..5000 {
        guest.poll().await;
        let s = guest.sockets.get_mut::<tcp::Socket>(lh);
        if s.can_recv() {
            let mut buf = [0u8; 16];
            let n = s.recv_slice(&mut buf).unwrap();
            got.extend_from_slice(&buf[..n]);
        }
        if got.len() == 5 {
            let remote = s.remote_endpoint().unwrap();
            assert_eq!(remote.addr, IpAddress::Ipv4(GATEWAY));
            s.send_slice(b"hello").unwrap();
            break;
        }
    }
    assert_eq!(got, b"knock");
    for _ in 0..200 {
        guest.poll().await;
    }
    assert_eq!(&client.await.unwrap(), b"hello");

    // The port is the engine's while the network runs, and free once it stops.
    assert!(std::net::TcpListener::bind(("127.0.0.1", host_port)).is_err());
    network.stop().await;
    assert!(std::net::TcpListener::bind(("127.0.0.1", host_port)).is_ok());
}

fn internet_80() -> SocketAddrV4 {
    "203.0.113.10:80".parse().unwrap()
}

#[tokio::test]
async fn http_https_only_lets_other_ports_out_and_resolves_for_real() {
    let echo = echo_server().await;
    let internet: SocketAddrV4 = "203.0.113.10:7".parse().unwrap();
    let intercepted = Arc::new(Mutex::new(0usize));
    let count = intercepted.clone();
    let (cfg, _events) = config(
        Egress::Proxy {
            addr: "10.100.9.100:18080".parse().unwrap(),
            serve: Arc::new(|_| {}),
            intercept: Arc::new(move |_, _, _| *count.lock().unwrap() += 1),
            direct: Some(Policy::default()),
        },
        HashMap::from([(internet, echo)]),
    );
    let (ours, theirs) = std::os::unix::net::UnixDatagram::pair().unwrap();
    ours.set_nonblocking(true).unwrap();
    let transport = Transport::Datagram(tokio::net::UnixDatagram::from_std(ours).unwrap());
    let network = Network::start(cfg, transport).await.unwrap();
    let mut guest = Guest::new(theirs);
    let h = guest.connect(internet);
    assert!(guest.outcome(h).await, "port 7 did not go out directly");
    assert_eq!(guest.exchange(h, b"ping", 4).await, b"ping");
    let h = guest.connect("10.0.0.1:7".parse().unwrap());
    assert!(!guest.outcome(h).await, "the policy still holds");
    let answer = guest
        .udp(SocketAddrV4::new(DNS, 53), &dns_query("localhost"))
        .await
        .unwrap();
    assert!(answer.windows(4).any(|w| w == [127, 0, 0, 1]), "{answer:?}");
    let h = guest.connect(internet_80());
    assert!(guest.outcome(h).await);
    assert_eq!(*intercepted.lock().unwrap(), 1, "port 80 goes to the proxy");
    network.stop().await;
}

#[tokio::test]
async fn spoofed_sources_get_nothing() {
    // A guest configured with another address than the stack gave it: nothing it sends is
    // answered (no SYN-ACK, no reset), so its connection never completes.
    let echo = echo_server().await;
    let internet: SocketAddrV4 = "203.0.113.10:7".parse().unwrap();
    let (cfg, events) = config(
        Egress::Direct(Policy::default()),
        HashMap::from([(internet, echo)]),
    );
    let (ours, theirs) = std::os::unix::net::UnixDatagram::pair().unwrap();
    ours.set_nonblocking(true).unwrap();
    let transport = Transport::Datagram(tokio::net::UnixDatagram::from_std(ours).unwrap());
    let network = Network::start(cfg, transport).await.unwrap();
    let mut guest = Guest::new(theirs);
    guest.iface.update_ip_addrs(|a| {
        a.clear();
        a.push(IpCidr::new(
            IpAddress::Ipv4(Ipv4Address::new(10, 100, 9, 16)),
            24,
        ))
        .unwrap();
    });
    let h = guest.connect(internet);
    for _ in 0..500 {
        guest.poll().await;
    }
    assert_eq!(
        guest.sockets.get::<tcp::Socket>(h).state(),
        tcp::State::SynSent
    );
    assert!(events.lock().unwrap().is_empty());
    network.stop().await;
}

#[tokio::test]
async fn an_allow_list_answers_only_its_names_and_changes_live() {
    let echo = echo_server().await;
    let internet: SocketAddrV4 = "203.0.113.10:7".parse().unwrap();
    let (mut cfg, events) = config(
        Egress::Direct(Policy::default()),
        HashMap::from([(internet, echo)]),
    );
    let list = |names: &[&str]| {
        hypedeck_model::AllowList::parse(&names.iter().map(|s| s.to_string()).collect::<Vec<_>>())
            .unwrap()
    };
    cfg.allow = Arc::new(std::sync::RwLock::new(Some(list(&["*.example.test"]))));
    let shared = cfg.allow.clone();
    let (ours, theirs) = std::os::unix::net::UnixDatagram::pair().unwrap();
    ours.set_nonblocking(true).unwrap();
    let transport = Transport::Datagram(tokio::net::UnixDatagram::from_std(ours).unwrap());
    let network = Network::start(cfg, transport).await.unwrap();
    let mut guest = Guest::new(theirs);
    let dns = SocketAddrV4::new(DNS, 53);

    // Off the list: NXDOMAIN, recorded.
    let answer = guest.udp(dns, &dns_query("localhost")).await.unwrap();
    assert_eq!(answer[3] & 0xf, 3, "NXDOMAIN");
    assert!(events.lock().unwrap().iter().any(|e| e.protocol == "dns"
        && e.name.as_deref() == Some("localhost")
        && e.verdict == Verdict::Denied(DenyReason::NotAllowed)));
    // An address no allowed name resolved to: refused, though the policy would let it out.
    let h = guest.connect(internet);
    assert!(!guest.outcome(h).await, "an unnamed address was reached");
    assert!(
        events
            .lock()
            .unwrap()
            .iter()
            .any(|e| e.destination == internet
                && e.verdict == Verdict::Denied(DenyReason::NotAllowed))
    );

    // The list replaced while the stack runs: the next lookup sees it.
    *shared.write().unwrap() = Some(list(&["localhost"]));
    let answer = guest.udp(dns, &dns_query("localhost")).await.unwrap();
    assert_eq!(answer[3] & 0xf, 0, "NOERROR");
    assert!(answer.windows(4).any(|w| w == [127, 0, 0, 1]), "{answer:?}");
    // No list at all: anything public again.
    *shared.write().unwrap() = None;
    let h = guest.connect(internet);
    assert!(
        guest.outcome(h).await,
        "without a list the policy alone decides"
    );
    network.stop().await;
}

#[tokio::test]
async fn connections_the_host_closed_do_not_count_against_the_flow_limit() {
    // A server that answers and hangs up first (as an HTTP/1.0 server does), so the stack's
    // side of each connection ends in TIME-WAIT.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let served = listener.local_addr().unwrap();
    tokio::spawn(async move {
        loop {
            let (mut conn, _) = listener.accept().await.unwrap();
            tokio::spawn(async move {
                let _ = conn.write_all(b"bye").await;
            });
        }
    });
    let internet: SocketAddrV4 = "203.0.113.10:80".parse().unwrap();
    let (mut cfg, _events) = config(
        Egress::Direct(Policy::default()),
        HashMap::from([(internet, served)]),
    );
    cfg.max_tcp_flows = 16;
    let (ours, theirs) = std::os::unix::net::UnixDatagram::pair().unwrap();
    ours.set_nonblocking(true).unwrap();
    let transport = Transport::Datagram(tokio::net::UnixDatagram::from_std(ours).unwrap());
    let network = Network::start(cfg, transport).await.unwrap();
    let mut guest = Guest::new(theirs);
    for i in 0..48 {
        let h = guest.connect(internet);
        assert!(guest.outcome(h).await, "connection {i} was refused");
        let got = guest.exchange(h, b"", 3).await;
        assert_eq!(got, b"bye");
        // A clean close both ways, so the stack's side waits in TIME-WAIT.
        guest.sockets.get_mut::<tcp::Socket>(h).close();
        for _ in 0..500 {
            guest.poll().await;
            if guest.sockets.get::<tcp::Socket>(h).state() == tcp::State::Closed {
                break;
            }
        }
        assert_eq!(
            guest.sockets.get::<tcp::Socket>(h).state(),
            tcp::State::Closed
        );
        guest.sockets.remove(h);
    }
    network.stop().await;
}
