//! The host end of the exec agent (protocol in `hypedeck_guest_init::agent_proto`): one
//! persistent connection per running VM, multiplexing exec and stat sessions.
//!
//! The transport is a unix socket QEMU bridges to the guest's `hypedeck.agent` virtio-serial
//! port ([`Transport`]); a vsock transport (`CONNECT <port>` on a hybrid-vsock socket) would
//! plug in the same way. A link is proven with a ping before use and dropped on any read
//! error; every session then ends with an error and the next call reconnects.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::time::Duration;

use hypedeck_guest_init::agent_proto::{
    Kind, OpenRequest, PathInfo, StatRequest, body_len, encode, split_body,
};
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
}

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

enum Waiter {
    Session(mpsc::UnboundedSender<AgentEvent>),
    Stat(oneshot::Sender<PathInfo>),
    Pong(oneshot::Sender<()>),
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
    /// Connects and pings until the agent answers or `wait` runs out.
    pub async fn connect(
        transport: &dyn Transport,
        wait: Duration,
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

    /// Starts a process in the guest.
    pub async fn open(self: &Arc<Self>, request: &OpenRequest) -> Result<ExecSession, String> {
        let id = self.next.fetch_add(1, Ordering::Relaxed);
        let (tx, rx) = mpsc::unbounded_channel();
        self.waiters_lock().insert(id, Waiter::Session(tx));
        let json = serde_json::to_vec(request).map_err(|e| e.to_string())?;
        if let Err(e) = self.send(Kind::Open, id, &json).await {
            self.waiters_lock().remove(&id);
            return Err(format!("send to the agent: {e}"));
        }
        Ok(ExecSession {
            id,
            link: self.clone(),
            events: rx,
            ended: false,
        })
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
            (Kind::StatResult, Some(Waiter::Stat(_))) => {
                if let Some(Waiter::Stat(tx)) = waiters.remove(&session) {
                    let info = serde_json::from_slice(payload).unwrap_or_default();
                    let _ = tx.send(info);
                }
            }
            (Kind::Stdout | Kind::Stderr, Some(Waiter::Session(tx))) => {
                let event = if kind == Kind::Stdout {
                    AgentEvent::Stdout(payload.to_vec())
                } else {
                    AgentEvent::Stderr(payload.to_vec())
                };
                let _ = tx.send(event);
            }
            (Kind::Exit | Kind::Error, Some(Waiter::Session(_))) => {
                if let Some(Waiter::Session(tx)) = waiters.remove(&session) {
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
            if let Waiter::Session(tx) = waiter {
                let _ = tx.send(AgentEvent::Error(why.clone()));
            }
        }
    }
}

/// One process in the guest. Dropping it before the process ends kills the process.
#[derive(Debug)]
pub struct ExecSession {
    id: u32,
    link: Arc<AgentLink>,
    /// Output and the end, in order.
    pub events: mpsc::UnboundedReceiver<AgentEvent>,
    ended: bool,
}

impl ExecSession {
    /// Next event; `None` only if the link dropped the session without a word.
    pub async fn next(&mut self) -> Option<AgentEvent> {
        let event = self.events.recv().await;
        if matches!(
            event,
            Some(AgentEvent::Exit(_) | AgentEvent::Error(_)) | None
        ) {
            self.ended = true;
        }
        event
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

impl Engine {
    /// The live agent link of a running instance, connecting (and waiting up to `wait` for
    /// the agent) when there is none.
    async fn agent_link(&self, id: &str, wait: Duration) -> Result<Arc<AgentLink>, EngineError> {
        if let Some(link) = self.agents().get(id).filter(|l| !l.is_closed()).cloned() {
            return Ok(link);
        }
        let socket = self
            .paths
            .instance_runtime(
                &hypedeck_model::InstanceId::parse(id).map_err(|_| EngineError::NotFound)?,
            )
            .join("agent.sock");
        let link = AgentLink::connect(&SerialSocket(socket), wait)
            .await
            .map_err(|e| EngineError::Agent(format!("guest agent unavailable: {e}")))?;
        self.agents().insert(id.to_string(), link.clone());
        Ok(link)
    }

    /// The record of `id_or_name` if it is Running; 409 with upstream's text otherwise.
    async fn running(
        &self,
        id_or_name: &str,
    ) -> Result<hypedeck_store::InstanceRecord, EngineError> {
        let mut record = self.resolve(id_or_name)?;
        let state = self.observe(&mut record).await.state;
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
        let record = self.running(id_or_name).await?;
        if record.skip_guest_agent {
            return Err(EngineError::Rejected(Rejection::new(
                ErrorCode::InvalidState,
                "instance was created with skip_guest_agent: exec is unavailable".to_string(),
            )));
        }
        let link = self.agent_link(&record.id, wait_for_agent).await?;
        link.open(request).await.map_err(EngineError::Agent)
    }

    /// Checks the instance is Running before a WebSocket upgrade (the 409 must precede it).
    pub async fn exec_precheck(&self, id_or_name: &str) -> Result<(), EngineError> {
        self.running(id_or_name).await.map(|_| ())
    }

    /// Describes a path in a running instance (`GET /instances/{id}/stat`).
    pub async fn stat_path(
        &self,
        id_or_name: &str,
        path: &str,
        follow_links: bool,
    ) -> Result<PathInfo, EngineError> {
        let record = self.running(id_or_name).await?;
        let link = self.agent_link(&record.id, Duration::from_secs(10)).await?;
        link.stat(&StatRequest {
            path: path.to_string(),
            follow_links,
        })
        .await
        .map_err(EngineError::Agent)
    }
}
