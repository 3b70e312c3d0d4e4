//! The host end of the exec agent (protocol in `hypedeck_guest_init::agent_proto`): one
//! persistent connection per running VM, multiplexing exec and stat sessions.
//!
//! The VM's backend says how to reach its agent ([`AgentChannel`]); each channel is a
//! [`Transport`]: a unix socket bridged to the guest's `hypedeck.agent` virtio-serial port
//! ([`SerialSocket`]), a hybrid-vsock socket where the host asks for a guest port with
//! `CONNECT <port>` ([`HybridVsock`]: vhost-user-vsock, Cloud Hypervisor, the vz helper), or
//! kernel vsock ([`KernelVsock`]). A link is proven with a ping before use and dropped on any
//! read error; every session then ends with an error and the next call reconnects.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicUsize, Ordering};
use std::time::Duration;

use hypedeck_guest_init::agent_proto::{
    CopyError, CopyHeader, GetRequest, Kind, OpenRequest, PathInfo, PutRequest, PutResult,
    StatRequest, body_len, encode, split_body,
};
use hypedeck_hypervisor::AgentChannel;
use hypedeck_model::{ErrorCode, InstanceState, Rejection};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::sync::{Mutex, mpsc, oneshot};

use crate::{Engine, EngineError};

/// What a session hears from the guest.
#[derive(Debug)]
pub enum AgentEvent {
    /// Bytes on stdout (or the terminal).
    Stdout(Vec<u8>),
    /// Bytes on stderr.
    Stderr(Vec<u8>),
    /// The process ended with this code.
    Exit(i32),
    /// The process could not start, or the link broke.
    Error(String),
    /// A put is over (`cp` into the guest).
    PutResult(PutResult),
    /// A get's next entry begins (`cp` out of the guest).
    CopyHeader(CopyHeader),
    /// The entry's next bytes.
    CopyData(Vec<u8>),
    /// The entry is complete (`true`: it was the last).
    CopyEnd(bool),
    /// An entry could not be read; the get ends.
    CopyError(CopyError),
    /// The get is over.
    CopyDone,
}

/// A get's bytes the host takes before it tells the guest (`GetAck`).
const GET_ACK_EVERY: u64 = 512 << 10;

/// The two halves of a stream to the agent.
pub type AgentStream = (
    Box<dyn AsyncRead + Send + Unpin>,
    Box<dyn AsyncWrite + Send + Unpin>,
);

/// A connection attempt in progress.
pub type Connecting<'a> =
    std::pin::Pin<Box<dyn std::future::Future<Output = std::io::Result<AgentStream>> + Send + 'a>>;

/// How the host reaches a guest's agent.
pub trait Transport: Send + Sync {
    /// Opens a fresh byte stream to the agent.
    fn connect(&self) -> Connecting<'_>;
}

/// QEMU's chardev socket in front of the virtio-serial port.
#[derive(Debug, Clone)]
pub struct SerialSocket(pub PathBuf);

impl Transport for SerialSocket {
    fn connect(&self) -> Connecting<'_> {
        Box::pin(async move {
            let stream = tokio::net::UnixStream::connect(&self.0).await?;
            let (r, w) = stream.into_split();
            Ok((
                Box::new(r) as Box<dyn AsyncRead + Send + Unpin>,
                Box::new(w) as Box<dyn AsyncWrite + Send + Unpin>,
            ))
        })
    }
}

/// A hybrid-vsock unix socket: `CONNECT <port>\n` answered by `OK <n>\n`, then the stream
/// is the guest's vsock connection.
#[derive(Debug, Clone)]
pub struct HybridVsock {
    /// The VMM's vsock socket.
    pub socket: PathBuf,
    /// Guest vsock port.
    pub port: u32,
}

/// How long a hybrid-vsock handshake may take (a guest not listening yet may never answer).
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(2);

impl Transport for HybridVsock {
    fn connect(&self) -> Connecting<'_> {
        Box::pin(async move {
            let mut stream = tokio::net::UnixStream::connect(&self.socket).await?;
            let handshake = async {
                stream
                    .write_all(format!("CONNECT {}\n", self.port).as_bytes())
                    .await?;
                // Byte by byte: nothing after the newline belongs to the handshake.
                let mut line = Vec::new();
                loop {
                    let b = stream.read_u8().await?;
                    if b == b'\n' || line.len() > 64 {
                        break;
                    }
                    line.push(b);
                }
                Ok::<_, std::io::Error>(line)
            };
            let line = tokio::time::timeout(HANDSHAKE_TIMEOUT, handshake)
                .await
                .map_err(|_| {
                    std::io::Error::new(std::io::ErrorKind::TimedOut, "vsock handshake timed out")
                })??;
            if !line.starts_with(b"OK ") {
                return Err(std::io::Error::new(
                    std::io::ErrorKind::ConnectionRefused,
                    format!(
                        "vsock port {} refused: {}",
                        self.port,
                        String::from_utf8_lossy(&line).trim()
                    ),
                ));
            }
            let (r, w) = stream.into_split();
            Ok((
                Box::new(r) as Box<dyn AsyncRead + Send + Unpin>,
                Box::new(w) as Box<dyn AsyncWrite + Send + Unpin>,
            ))
        })
    }
}

/// Kernel vsock (`/dev/vhost-vsock` hosts): `AF_VSOCK` to the guest's CID and port.
#[derive(Debug, Clone)]
pub struct KernelVsock {
    /// Guest context id.
    pub cid: u32,
    /// Guest vsock port.
    pub port: u32,
}

impl Transport for KernelVsock {
    fn connect(&self) -> Connecting<'_> {
        let (cid, port) = (self.cid, self.port);
        Box::pin(async move {
            let fd = tokio::task::spawn_blocking(move || vsock_connect(cid, port))
                .await
                .map_err(std::io::Error::other)??;
            // A connected stream socket: tokio's unix stream does plain reads and writes on
            // it, which is all a link needs (it never asks for addresses).
            let std = std::os::unix::net::UnixStream::from(fd);
            std.set_nonblocking(true)?;
            let (r, w) = tokio::net::UnixStream::from_std(std)?.into_split();
            Ok((
                Box::new(r) as Box<dyn AsyncRead + Send + Unpin>,
                Box::new(w) as Box<dyn AsyncWrite + Send + Unpin>,
            ))
        })
    }
}

/// Kernel vsock exists on Linux hosts only.
#[cfg(not(target_os = "linux"))]
fn vsock_connect(_cid: u32, _port: u32) -> std::io::Result<std::os::fd::OwnedFd> {
    Err(std::io::Error::new(
        std::io::ErrorKind::Unsupported,
        "kernel vsock is only available on Linux hosts",
    ))
}

/// A blocking `AF_VSOCK` connect with a send/receive timeout for the handshake.
#[cfg(target_os = "linux")]
#[allow(unsafe_code)]
fn vsock_connect(cid: u32, port: u32) -> std::io::Result<std::os::fd::OwnedFd> {
    use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
    // SAFETY: plain socket(2); the descriptor is owned right away.
    let fd = unsafe { libc::socket(libc::AF_VSOCK, libc::SOCK_STREAM | libc::SOCK_CLOEXEC, 0) };
    if fd < 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: `fd` is a fresh descriptor we own.
    let sock = unsafe { OwnedFd::from_raw_fd(fd) };
    let timeout = libc::timeval {
        tv_sec: HANDSHAKE_TIMEOUT.as_secs() as libc::time_t,
        tv_usec: 0,
    };
    // SAFETY: sockaddr_vm is plain old data; zeroed is a valid starting value.
    let mut addr: libc::sockaddr_vm = unsafe { std::mem::zeroed() };
    addr.svm_family = libc::AF_VSOCK as libc::sa_family_t;
    addr.svm_cid = cid;
    addr.svm_port = port;
    // SAFETY: setsockopt/connect with valid pointers and sizes.
    let r = unsafe {
        libc::setsockopt(
            sock.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_SNDTIMEO,
            (&timeout as *const libc::timeval).cast(),
            std::mem::size_of::<libc::timeval>() as libc::socklen_t,
        );
        libc::connect(
            sock.as_raw_fd(),
            (&addr as *const libc::sockaddr_vm).cast(),
            std::mem::size_of::<libc::sockaddr_vm>() as libc::socklen_t,
        )
    };
    if r != 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(sock)
}

/// The transport for a backend's agent channel.
pub fn transport(channel: AgentChannel) -> Box<dyn Transport> {
    match channel {
        AgentChannel::Serial(path) => Box::new(SerialSocket(path)),
        AgentChannel::HybridVsock { socket, port } => Box::new(HybridVsock { socket, port }),
        AgentChannel::Vsock { cid, port } => Box::new(KernelVsock { cid, port }),
    }
}

/// Exec output queued for one session's client before the session is ended: a client that
/// reads slower than the guest writes (a stalled WebSocket) cannot grow the engine's memory.
/// One connection carries every session, so the reader never waits on one of them.
pub const MAX_QUEUED_OUTPUT: usize = 8 << 20;

/// What ends a session whose client fell [`MAX_QUEUED_OUTPUT`] behind.
pub const OUTPUT_OVERRUN: &str = "exec session ended: the client read its output too slowly (8 MiB were waiting); the process was killed";

#[derive(Debug)]
struct SessionTx {
    tx: mpsc::UnboundedSender<AgentEvent>,
    /// Output bytes sent to the client's queue and not yet taken.
    queued: Arc<AtomicUsize>,
}

enum Waiter {
    Session(SessionTx),
    Stat(oneshot::Sender<PathInfo>),
    Pong(oneshot::Sender<()>),
    /// A request answered by empty text (done) or why not (`SetClock`, `Reidentify`).
    Answer(oneshot::Sender<Result<(), String>>),
}

/// One live connection to a guest's agent.
pub struct AgentLink {
    writer: Mutex<Box<dyn AsyncWrite + Send + Unpin>>,
    waiters: std::sync::Mutex<HashMap<u32, Waiter>>,
    next: AtomicU32,
    closed: Arc<AtomicBool>,
}

impl std::fmt::Debug for AgentLink {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AgentLink")
            .field("closed", &self.closed.load(Ordering::Relaxed))
            .finish()
    }
}

impl AgentLink {
    /// Connects and pings until the agent answers or `wait` runs out. With `key`, every
    /// connection first says [`Kind::Hello`] with it (a vsock agent serves nothing else).
    pub async fn connect(
        transport: &dyn Transport,
        wait: Duration,
        key: Option<&str>,
    ) -> Result<Arc<AgentLink>, String> {
        let deadline = tokio::time::Instant::now() + wait;
        let mut last;
        loop {
            match transport.connect().await {
                Ok((reader, writer)) => {
                    let link = Arc::new(AgentLink {
                        writer: Mutex::new(writer),
                        waiters: std::sync::Mutex::new(HashMap::new()),
                        next: AtomicU32::new(1),
                        closed: Arc::new(AtomicBool::new(false)),
                    });
                    tokio::spawn(read_loop(
                        reader,
                        Arc::downgrade(&link),
                        link.closed.clone(),
                    ));
                    if let Some(key) = key
                        && link.send(Kind::Hello, 0, key.as_bytes()).await.is_err()
                    {
                        last = "the agent closed the link".to_string();
                        if tokio::time::Instant::now() >= deadline {
                            return Err(last);
                        }
                        tokio::time::sleep(Duration::from_millis(250)).await;
                        continue;
                    }
                    // The guest may not have opened its port yet: ping a few times.
                    for _ in 0..4 {
                        let (tx, rx) = oneshot::channel();
                        link.waiters_lock().insert(0, Waiter::Pong(tx));
                        if link.send(Kind::Ping, 0, b"").await.is_err() {
                            break;
                        }
                        if tokio::time::timeout(Duration::from_millis(500), rx)
                            .await
                            .is_ok_and(|r| r.is_ok())
                        {
                            return Ok(link);
                        }
                        if link.closed.load(Ordering::Relaxed) {
                            break;
                        }
                    }
                    link.closed.store(true, Ordering::Relaxed);
                    last = "the agent did not answer".into();
                }
                Err(e) => last = e.to_string(),
            }
            if tokio::time::Instant::now() >= deadline {
                return Err(last);
            }
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
    }

    fn waiters_lock(&self) -> std::sync::MutexGuard<'_, HashMap<u32, Waiter>> {
        self.waiters.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Whether the connection broke.
    pub fn is_closed(&self) -> bool {
        self.closed.load(Ordering::Relaxed)
    }

    async fn send(&self, kind: Kind, session: u32, payload: &[u8]) -> std::io::Result<()> {
        let frame = encode(kind, session, payload);
        let mut w = self.writer.lock().await;
        let result = async {
            w.write_all(&frame).await?;
            w.flush().await
        }
        .await;
        if result.is_err() {
            self.closed.store(true, Ordering::Relaxed);
        }
        result
    }

    /// Opens a session with a `kind` frame carrying `request` as JSON: a process (`Open`), a
    /// put (`PutOpen`) or a get (`GetOpen`).
    async fn session(
        self: &Arc<Self>,
        kind: Kind,
        request: &impl serde::Serialize,
    ) -> Result<ExecSession, String> {
        let id = self.next.fetch_add(1, Ordering::Relaxed);
        let (tx, rx) = mpsc::unbounded_channel();
        let queued = Arc::new(AtomicUsize::new(0));
        self.waiters_lock().insert(
            id,
            Waiter::Session(SessionTx {
                tx,
                queued: queued.clone(),
            }),
        );
        let json = serde_json::to_vec(request).map_err(|e| e.to_string())?;
        if let Err(e) = self.send(kind, id, &json).await {
            self.waiters_lock().remove(&id);
            return Err(format!("send to the agent: {e}"));
        }
        Ok(ExecSession {
            id,
            link: self.clone(),
            events: rx,
            queued,
            taken: 0,
            acked: 0,
            ended: false,
            activity: None,
        })
    }

    /// Sets the guest's wall clock to `time`.
    pub async fn set_clock(&self, time: std::time::SystemTime) -> Result<(), String> {
        let payload = hypedeck_guest_init::agent_proto::clock_payload(time);
        self.request(Kind::SetClock, &payload).await
    }

    /// Tells a forked guest who it now is (see `Kind::Reidentify`).
    pub async fn reidentify(
        &self,
        identity: &hypedeck_guest_init::agent_proto::Identity,
    ) -> Result<(), String> {
        self.request_json(Kind::Reidentify, identity).await
    }

    /// Has the guest mount a disk just attached (see `Kind::Mount`).
    pub async fn mount(
        &self,
        request: &hypedeck_guest_init::agent_proto::MountRequest,
    ) -> Result<(), String> {
        self.request_json(Kind::Mount, request).await
    }

    /// Has the guest unmount a volume (see `Kind::Unmount`).
    pub async fn unmount(&self, mount_path: &str) -> Result<(), String> {
        let request = hypedeck_guest_init::agent_proto::UnmountRequest {
            mount_path: mount_path.to_string(),
        };
        self.request_json(Kind::Unmount, &request).await
    }

    /// [`AgentLink::request`] with `value` as its JSON payload.
    async fn request_json(&self, kind: Kind, value: &impl serde::Serialize) -> Result<(), String> {
        let json = serde_json::to_vec(value).map_err(|e| e.to_string())?;
        self.request(kind, &json).await
    }

    /// Sends a request the guest answers with empty text (done) or why not.
    async fn request(&self, kind: Kind, payload: &[u8]) -> Result<(), String> {
        let id = self.next.fetch_add(1, Ordering::Relaxed);
        let (tx, rx) = oneshot::channel();
        self.waiters_lock().insert(id, Waiter::Answer(tx));
        if let Err(e) = self.send(kind, id, payload).await {
            self.waiters_lock().remove(&id);
            return Err(format!("send to the agent: {e}"));
        }
        match tokio::time::timeout(Duration::from_secs(10), rx).await {
            Ok(Ok(answer)) => answer,
            _ => {
                self.waiters_lock().remove(&id);
                Err("the agent did not answer".into())
            }
        }
    }

    /// Describes a path in the guest.
    pub async fn stat(&self, request: &StatRequest) -> Result<PathInfo, String> {
        let id = self.next.fetch_add(1, Ordering::Relaxed);
        let (tx, rx) = oneshot::channel();
        self.waiters_lock().insert(id, Waiter::Stat(tx));
        let json = serde_json::to_vec(request).map_err(|e| e.to_string())?;
        self.send(Kind::Stat, id, &json)
            .await
            .map_err(|e| format!("send to the agent: {e}"))?;
        match tokio::time::timeout(Duration::from_secs(10), rx).await {
            Ok(Ok(info)) => Ok(info),
            _ => {
                self.waiters_lock().remove(&id);
                Err("the agent did not answer".into())
            }
        }
    }
}

async fn read_loop(
    mut reader: Box<dyn AsyncRead + Send + Unpin>,
    link: std::sync::Weak<AgentLink>,
    closed: Arc<AtomicBool>,
) {
    let why = loop {
        let mut prefix = [0u8; 4];
        if let Err(e) = reader.read_exact(&mut prefix).await {
            break format!("agent connection lost: {e}");
        }
        let len = match body_len(prefix) {
            Ok(len) => len,
            Err(e) => break e,
        };
        let mut body = vec![0u8; len];
        if let Err(e) = reader.read_exact(&mut body).await {
            break format!("agent connection lost: {e}");
        }
        let Some(link) = link.upgrade() else { return };
        let Ok((kind, session, payload)) = split_body(&body) else {
            continue;
        };
        let mut waiters = link.waiters_lock();
        match (kind, waiters.get(&session)) {
            (Kind::Pong, Some(Waiter::Pong(_))) => {
                if let Some(Waiter::Pong(tx)) = waiters.remove(&session) {
                    let _ = tx.send(());
                }
            }
            (
                Kind::ClockSet | Kind::Reidentified | Kind::Mounted | Kind::Unmounted,
                Some(Waiter::Answer(_)),
            ) => {
                if let Some(Waiter::Answer(tx)) = waiters.remove(&session) {
                    let _ = tx.send(if payload.is_empty() {
                        Ok(())
                    } else {
                        Err(String::from_utf8_lossy(payload).into_owned())
                    });
                }
            }
            (Kind::StatResult, Some(Waiter::Stat(_))) => {
                if let Some(Waiter::Stat(tx)) = waiters.remove(&session) {
                    let info = serde_json::from_slice(payload).unwrap_or_default();
                    let _ = tx.send(info);
                }
            }
            (Kind::Stdout | Kind::Stderr | Kind::GetData, Some(Waiter::Session(s))) => {
                let queued = s.queued.fetch_add(payload.len(), Ordering::AcqRel) + payload.len();
                if queued > MAX_QUEUED_OUTPUT {
                    // The client stopped reading (or a get's guest ignored its window, which
                    // keeps it far below this): end the session (and its process) rather than
                    // hold the guest's output without bound.
                    let why = if kind == Kind::GetData {
                        "the guest sent more than its window"
                    } else {
                        OUTPUT_OVERRUN
                    };
                    if let Some(Waiter::Session(s)) = waiters.remove(&session) {
                        let _ = s.tx.send(AgentEvent::Error(why.into()));
                    }
                    drop(waiters);
                    let link = link.clone();
                    tokio::spawn(async move {
                        let _ = link.send(Kind::Signal, session, &9i32.to_be_bytes()).await;
                    });
                    continue;
                }
                let bytes = payload.to_vec();
                let event = match kind {
                    Kind::Stdout => AgentEvent::Stdout(bytes),
                    Kind::Stderr => AgentEvent::Stderr(bytes),
                    _ => AgentEvent::CopyData(bytes),
                };
                let _ = s.tx.send(event);
            }
            (Kind::GetHeader | Kind::GetEnd | Kind::GetError, Some(Waiter::Session(s))) => {
                let event = match kind {
                    Kind::GetHeader => serde_json::from_slice(payload)
                        .map(AgentEvent::CopyHeader)
                        .unwrap_or_else(|e| AgentEvent::Error(format!("bad entry header: {e}"))),
                    Kind::GetEnd => AgentEvent::CopyEnd(payload.first() == Some(&1)),
                    _ => AgentEvent::CopyError(serde_json::from_slice(payload).unwrap_or_else(
                        |_| CopyError {
                            message: String::from_utf8_lossy(payload).into_owned(),
                            path: String::new(),
                        },
                    )),
                };
                let _ = s.tx.send(event);
            }
            (Kind::PutResult | Kind::GetDone, Some(Waiter::Session(_))) => {
                if let Some(Waiter::Session(SessionTx { tx, .. })) = waiters.remove(&session) {
                    let event = if kind == Kind::GetDone {
                        AgentEvent::CopyDone
                    } else {
                        serde_json::from_slice(payload)
                            .map(AgentEvent::PutResult)
                            .unwrap_or_else(|e| AgentEvent::Error(format!("bad put result: {e}")))
                    };
                    let _ = tx.send(event);
                }
            }
            (Kind::Exit | Kind::Error, Some(Waiter::Session(_))) => {
                if let Some(Waiter::Session(SessionTx { tx, .. })) = waiters.remove(&session) {
                    let event = if kind == Kind::Exit && payload.len() == 4 {
                        AgentEvent::Exit(i32::from_be_bytes([
                            payload[0], payload[1], payload[2], payload[3],
                        ]))
                    } else {
                        AgentEvent::Error(String::from_utf8_lossy(payload).into_owned())
                    };
                    let _ = tx.send(event);
                }
            }
            _ => {}
        }
    };
    closed.store(true, Ordering::Relaxed);
    if let Some(link) = link.upgrade() {
        for (_, waiter) in link.waiters_lock().drain() {
            if let Waiter::Session(s) = waiter {
                let _ = s.tx.send(AgentEvent::Error(why.clone()));
            }
        }
    }
}

/// One process in the guest, or one copy in or out of it. Dropping it before it ends kills
/// the process (or cancels the copy).
#[derive(Debug)]
pub struct ExecSession {
    id: u32,
    link: Arc<AgentLink>,
    /// Output and the end, in order (bounded by [`MAX_QUEUED_OUTPUT`] of output).
    events: mpsc::UnboundedReceiver<AgentEvent>,
    queued: Arc<AtomicUsize>,
    /// A get's bytes taken by the client, and how many of them the guest was told of.
    taken: u64,
    acked: u64,
    ended: bool,
    /// Keeps the instance awake for auto-standby while the session lives.
    pub(crate) activity: Option<crate::autostandby::ExecGuard>,
}

impl ExecSession {
    /// Next event; `None` only if the link dropped the session without a word.
    pub async fn next(&mut self) -> Option<AgentEvent> {
        let event = self.events.recv().await;
        if let Some(AgentEvent::Stdout(b) | AgentEvent::Stderr(b) | AgentEvent::CopyData(b)) =
            &event
        {
            self.queued.fetch_sub(b.len(), Ordering::AcqRel);
        }
        if let Some(AgentEvent::CopyData(b)) = &event {
            self.taken += b.len() as u64;
            if self.taken - self.acked >= GET_ACK_EVERY {
                self.acked = self.taken;
                let _ = self
                    .link
                    .send(Kind::GetAck, self.id, &self.taken.to_be_bytes())
                    .await;
            }
        }
        if matches!(
            event,
            Some(
                AgentEvent::Exit(_)
                    | AgentEvent::Error(_)
                    | AgentEvent::PutResult(_)
                    | AgentEvent::CopyDone
            ) | None
        ) {
            self.ended = true;
        }
        event
    }

    /// The next bytes of the file being put.
    pub async fn put_data(&self, bytes: &[u8]) -> std::io::Result<()> {
        for chunk in bytes.chunks(64 * 1024) {
            self.link.send(Kind::PutData, self.id, chunk).await?;
        }
        Ok(())
    }

    /// The file being put is complete: the guest answers with [`AgentEvent::PutResult`].
    pub async fn put_end(&self) -> std::io::Result<()> {
        self.link.send(Kind::PutEnd, self.id, b"").await
    }

    /// Bytes for the process's stdin.
    pub async fn stdin(&self, bytes: &[u8]) -> std::io::Result<()> {
        for chunk in bytes.chunks(64 * 1024) {
            self.link.send(Kind::Stdin, self.id, chunk).await?;
        }
        Ok(())
    }

    /// Closes stdin (^D on a terminal).
    pub async fn close_stdin(&self) -> std::io::Result<()> {
        self.link.send(Kind::StdinEof, self.id, b"").await
    }

    /// Resizes the terminal.
    pub async fn resize(&self, rows: u16, cols: u16) -> std::io::Result<()> {
        let mut p = rows.to_be_bytes().to_vec();
        p.extend_from_slice(&cols.to_be_bytes());
        self.link.send(Kind::Resize, self.id, &p).await
    }

    /// Signals the process group.
    pub async fn signal(&self, signal: i32) -> std::io::Result<()> {
        self.link
            .send(Kind::Signal, self.id, &signal.to_be_bytes())
            .await
    }
}

impl Drop for ExecSession {
    fn drop(&mut self) {
        if self.ended {
            return;
        }
        self.link.waiters_lock().remove(&self.id);
        let (link, id) = (self.link.clone(), self.id);
        if let Ok(handle) = tokio::runtime::Handle::try_current() {
            handle.spawn(async move {
                let _ = link.send(Kind::Signal, id, &9i32.to_be_bytes()).await;
            });
        }
    }
}

/// 409 for an instance created with `skip_guest_agent`: nothing in it answers `what`.
fn without_agent_refused(
    record: &hypedeck_store::InstanceRecord,
    what: &str,
) -> Result<(), EngineError> {
    if record.skip_guest_agent {
        return Err(EngineError::Rejected(Rejection::new(
            ErrorCode::InvalidState,
            format!("instance was created with skip_guest_agent: {what} is unavailable"),
        )));
    }
    Ok(())
}

impl Engine {
    /// The live agent link of a running instance, connecting (and waiting up to `wait` for
    /// the agent) when there is none.
    pub(crate) async fn agent_link(
        &self,
        id: &str,
        wait: Duration,
    ) -> Result<Arc<AgentLink>, EngineError> {
        if let Some(link) = self.runtime.agent(id) {
            return Ok(link);
        }
        let connecting = self.runtime.connect_lock(id);
        let _connecting = connecting.lock().await;
        // Another caller may have connected while this one waited.
        if let Some(link) = self.runtime.agent(id) {
            return Ok(link);
        }
        let (transport, key) = self.agent_transport(id)?;
        let link = AgentLink::connect(transport.as_ref(), wait, key.as_deref())
            .await
            .map_err(|e| EngineError::Agent(format!("guest agent unavailable: {e}")))?;
        self.runtime.set_agent(id, link.clone());
        Ok(link)
    }

    /// How to reach instance `id`'s agent, and the key it wants first.
    fn agent_transport(
        &self,
        id: &str,
    ) -> Result<(Box<dyn Transport>, Option<String>), EngineError> {
        let run = self.paths.instance_runtime(
            &hypedeck_model::InstanceId::parse(id).map_err(|_| EngineError::NotFound)?,
        );
        let channel = match self.runtime.vm(id) {
            Some(vm) => vm.agent_channel(),
            None => AgentChannel::Serial(run.join("agent.sock")),
        };
        let key = std::fs::read_to_string(run.join(crate::provision::AGENT_KEY_FILE)).ok();
        Ok((transport(channel), key))
    }

    /// The record of `id_or_name` if it is Running; 409 with upstream's text otherwise.
    async fn running(
        &self,
        id_or_name: &str,
    ) -> Result<hypedeck_store::InstanceRecord, EngineError> {
        let mut record = self.resolve(id_or_name)?;
        let mut state = self.observe(&mut record).await.state;
        // An exec wakes an instance auto-standby put to sleep.
        if self.wake_if_asleep(&record.id, state).await {
            state = self.observe(&mut record).await.state;
        }
        if state != InstanceState::Running {
            return Err(EngineError::Rejected(Rejection::new(
                ErrorCode::InvalidState,
                format!("instance must be running (current state: {state})"),
            )));
        }
        Ok(record)
    }

    /// Starts a process in a running instance (`exec`).
    pub async fn exec(
        &self,
        id_or_name: &str,
        request: &OpenRequest,
        wait_for_agent: Duration,
    ) -> Result<ExecSession, EngineError> {
        self.agent_session(id_or_name, "exec", wait_for_agent, Kind::Open, request)
            .await
    }

    /// Starts writing one file or directory into a running instance (`cp` to the guest): send
    /// its bytes with [`ExecSession::put_data`], then [`ExecSession::put_end`]; the session ends
    /// with [`AgentEvent::PutResult`].
    pub async fn copy_into(
        &self,
        id_or_name: &str,
        request: &PutRequest,
    ) -> Result<ExecSession, EngineError> {
        let wait = Duration::from_secs(10);
        self.agent_session(id_or_name, "cp", wait, Kind::PutOpen, request)
            .await
    }

    /// Starts reading a path (a directory with everything under it) out of a running instance
    /// (`cp` from the guest): the session hears `CopyHeader`/`CopyData`/`CopyEnd` per entry,
    /// maybe a `CopyError`, and ends with [`AgentEvent::CopyDone`].
    pub async fn copy_out_of(
        &self,
        id_or_name: &str,
        request: &GetRequest,
    ) -> Result<ExecSession, EngineError> {
        let wait = Duration::from_secs(10);
        self.agent_session(id_or_name, "cp", wait, Kind::GetOpen, request)
            .await
    }

    /// Opens an agent session (`kind` with `request`) in a running instance that has an agent
    /// (`what` names the verb in the refusal); the session keeps it awake for auto-standby.
    async fn agent_session(
        &self,
        id_or_name: &str,
        what: &str,
        wait_for_agent: Duration,
        kind: Kind,
        request: &impl serde::Serialize,
    ) -> Result<ExecSession, EngineError> {
        let record = self.running(id_or_name).await?;
        without_agent_refused(&record, what)?;
        let link = self.agent_link(&record.id, wait_for_agent).await?;
        let mut session = link
            .session(kind, request)
            .await
            .map_err(EngineError::Agent)?;
        session.activity = Some(self.exec_activity(&record.id));
        Ok(session)
    }

    /// Checks the instance is Running before a WebSocket upgrade (the 409 must precede it).
    pub async fn exec_precheck(&self, id_or_name: &str) -> Result<(), EngineError> {
        self.running(id_or_name).await.map(|_| ())
    }

    /// Sets a restored guest's wall clock to the host's (while the instance was saved its
    /// clock stood still), through the instance's shared agent link, which stays open for
    /// exec. The outcome goes to the operations log; a failure is not the restore's. A guest
    /// without an agent keeps its clock.
    pub(crate) async fn sync_guest_clock(&self, record: &hypedeck_store::InstanceRecord) {
        if record.skip_guest_agent {
            return;
        }
        let result = match self.agent_link(&record.id, Duration::from_secs(10)).await {
            Ok(link) => link.set_clock(std::time::SystemTime::now()).await,
            Err(e) => Err(e.to_string()),
        };
        let message = match result {
            Ok(()) => "guest clock set to the host's".to_string(),
            Err(e) => {
                tracing::warn!(id = %record.id, error = %e, "guest clock not set after restore");
                format!("guest clock not set after restore: {e}")
            }
        };
        self.ops_log(&record.id, &message);
    }

    /// Describes a path in a running instance (`GET /instances/{id}/stat`).
    pub async fn stat_path(
        &self,
        id_or_name: &str,
        path: &str,
        follow_links: bool,
    ) -> Result<PathInfo, EngineError> {
        let record = self.running(id_or_name).await?;
        without_agent_refused(&record, "stat")?;
        let link = self.agent_link(&record.id, Duration::from_secs(10)).await?;
        link.stat(&StatRequest {
            path: path.to_string(),
            follow_links,
        })
        .await
        .map_err(EngineError::Agent)
    }
}

#[cfg(test)]
mod transport_tests {
    use super::*;

    /// A hybrid-vsock endpoint that answers `reply` to the handshake, then plays a minimal
    /// agent (pong for every ping) when the reply was `OK`.
    async fn hybrid_server(dir: &std::path::Path, reply: Option<&'static str>) -> PathBuf {
        let path = dir.join("vsock.sock");
        let listener = tokio::net::UnixListener::bind(&path).expect("bind");
        tokio::spawn(async move {
            while let Ok((mut s, _)) = listener.accept().await {
                tokio::spawn(async move {
                    let mut line = Vec::new();
                    while let Ok(b) = s.read_u8().await {
                        if b == b'\n' {
                            break;
                        }
                        line.push(b);
                    }
                    assert_eq!(line, b"CONNECT 1024");
                    let Some(reply) = reply else {
                        // Never answer (a guest not listening yet).
                        tokio::time::sleep(Duration::from_secs(30)).await;
                        return;
                    };
                    let _ = s.write_all(reply.as_bytes()).await;
                    if !reply.starts_with("OK") {
                        return;
                    }
                    loop {
                        let mut len = [0u8; 4];
                        if s.read_exact(&mut len).await.is_err() {
                            return;
                        }
                        let mut body = vec![0u8; body_len(len).expect("len")];
                        if s.read_exact(&mut body).await.is_err() {
                            return;
                        }
                        let (kind, session, payload) = split_body(&body).expect("frame");
                        if kind == Kind::Ping {
                            let pong = encode(Kind::Pong, session, payload);
                            if s.write_all(&pong).await.is_err() {
                                return;
                            }
                        }
                    }
                });
            }
        });
        path
    }

    #[tokio::test]
    async fn hybrid_vsock_handshake_then_the_agent_protocol() {
        let dir = tempfile::tempdir().expect("tempdir");
        let socket = hybrid_server(dir.path(), Some("OK 1073741824\n")).await;
        let t = transport(AgentChannel::HybridVsock { socket, port: 1024 });
        let link = AgentLink::connect(t.as_ref(), Duration::from_secs(5), None)
            .await
            .expect("link");
        assert!(!link.is_closed());
    }

    #[tokio::test]
    async fn hybrid_vsock_refusal_and_silence_are_errors() {
        let dir = tempfile::tempdir().expect("tempdir");
        let refused = hybrid_server(dir.path(), Some("ERR no listener\n")).await;
        let e = HybridVsock {
            socket: refused,
            port: 1024,
        }
        .connect()
        .await
        .err()
        .expect("refused");
        assert!(e.to_string().contains("vsock port 1024 refused"), "{e}");

        let dir2 = tempfile::tempdir().expect("tempdir");
        let silent = hybrid_server(dir2.path(), None).await;
        let e = HybridVsock {
            socket: silent,
            port: 1024,
        }
        .connect()
        .await
        .err()
        .expect("timeout");
        assert_eq!(e.kind(), std::io::ErrorKind::TimedOut, "{e}");

        // The engine's wait gives up with the last reason.
        let t = transport(AgentChannel::HybridVsock {
            socket: dir.path().join("vsock.sock"),
            port: 1024,
        });
        let e = AgentLink::connect(t.as_ref(), Duration::from_millis(300), None)
            .await
            .expect_err("never ready");
        assert!(e.contains("refused"), "{e}");
    }

    /// An agent that answers pings and, for an opened session, writes `flood` bytes of stdout
    /// in 64 KiB frames and then exits 0; it reports every signal it receives.
    async fn flooding_agent(
        dir: &std::path::Path,
        flood: usize,
    ) -> (PathBuf, tokio::sync::mpsc::UnboundedReceiver<i32>) {
        let path = dir.join("agent.sock");
        let listener = tokio::net::UnixListener::bind(&path).expect("bind");
        let (signals, received) = tokio::sync::mpsc::unbounded_channel();
        tokio::spawn(async move {
            while let Ok((s, _)) = listener.accept().await {
                let signals = signals.clone();
                tokio::spawn(async move {
                    let (mut r, w) = s.into_split();
                    let w = Arc::new(Mutex::new(w));
                    loop {
                        let mut len = [0u8; 4];
                        if r.read_exact(&mut len).await.is_err() {
                            return;
                        }
                        let mut body = vec![0u8; body_len(len).expect("len")];
                        if r.read_exact(&mut body).await.is_err() {
                            return;
                        }
                        let (kind, session, payload) = split_body(&body).expect("frame");
                        match kind {
                            Kind::Ping => {
                                let _ = w
                                    .lock()
                                    .await
                                    .write_all(&encode(Kind::Pong, session, payload))
                                    .await;
                            }
                            Kind::Open => {
                                let w = w.clone();
                                tokio::spawn(async move {
                                    let chunk = vec![b'x'; 64 * 1024];
                                    let mut sent = 0;
                                    while sent < flood {
                                        let frame = encode(Kind::Stdout, session, &chunk);
                                        if w.lock().await.write_all(&frame).await.is_err() {
                                            return;
                                        }
                                        sent += chunk.len();
                                    }
                                    let exit = encode(Kind::Exit, session, &0i32.to_be_bytes());
                                    let _ = w.lock().await.write_all(&exit).await;
                                });
                            }
                            Kind::Signal => {
                                let signal = i32::from_be_bytes(payload.try_into().expect("i32"));
                                let _ = signals.send(signal);
                            }
                            _ => {}
                        }
                    }
                });
            }
        });
        (path, received)
    }

    /// A client that stops reading (a stalled WebSocket) while the guest floods stdout: the
    /// engine holds at most [`MAX_QUEUED_OUTPUT`] for it, then ends the session with a clear
    /// message and kills the process; it does not queue all 32 MiB.
    #[tokio::test]
    async fn a_client_that_stops_reading_gets_its_session_ended_not_unbounded_memory() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (socket, mut signals) = flooding_agent(dir.path(), 32 << 20).await;
        let link = AgentLink::connect(&SerialSocket(socket), Duration::from_secs(5), None)
            .await
            .expect("link");
        let mut session = link
            .session(
                Kind::Open,
                &OpenRequest {
                    command: vec!["yes".into()],
                    env: Vec::new(),
                    cwd: String::new(),
                    tty: false,
                    rows: 0,
                    cols: 0,
                },
            )
            .await
            .expect("open");
        // The client reads nothing while the guest writes.
        tokio::time::sleep(Duration::from_millis(1500)).await;
        let mut output = 0;
        let end = loop {
            match session.next().await {
                Some(AgentEvent::Stdout(b) | AgentEvent::Stderr(b)) => output += b.len(),
                other => break other,
            }
        };
        assert!(
            matches!(&end, Some(AgentEvent::Error(m)) if m == OUTPUT_OVERRUN),
            "{end:?} after {output} bytes"
        );
        assert!(output <= MAX_QUEUED_OUTPUT, "{output} bytes were queued");
        let killed = tokio::time::timeout(Duration::from_secs(5), signals.recv()).await;
        assert_eq!(killed.ok().flatten(), Some(9), "the process was killed");
    }
}
