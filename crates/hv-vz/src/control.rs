//! The line protocol between the backend and its `hypedeck-vz` helper over
//! [`RuntimeFiles::control`](crate::plan::RuntimeFiles::control).
//!
//! One request line, one response line, in ASCII:
//!
//! ```text
//! state | pause | resume | request-stop | stop | save <path> | network   (backend -> helper)
//! ok <state> | err <message>                                                (helper -> backend)
//! ```
//!
//! The `ok` answer to `network` carries one file descriptor (`SCM_RIGHTS`): the engine's end
//! of the datagram socket pair whose other end is the guest NIC's
//! `VZFileHandleNetworkDeviceAttachment` (one Ethernet frame per datagram). The helper keeps
//! its copy, so an engine that restarts asks again and gets the same link.
//!
//! `<state>` is the VM's state after the request ([`VmState`]). `stop` and a successful `save`
//! end the helper right after their answer. A connection may carry several requests; the
//! client ([`request`]) uses one connection per request, with a timeout. The blocking server
//! ([`serve`]) is shared by the real helper and the tests' fake one.

use std::io::{self, BufRead, BufReader, IoSlice, IoSliceMut, Read, Write};
use std::mem::MaybeUninit;
use std::os::fd::{BorrowedFd, OwnedFd};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use rustix::net::{
    RecvAncillaryBuffer, RecvAncillaryMessage, RecvFlags, SendAncillaryBuffer,
    SendAncillaryMessage, SendFlags,
};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt};

/// Longest line either side sends (a save path fits easily).
pub const MAX_LINE: usize = 8192;

/// A request to the helper.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Request {
    /// Report the VM state.
    State,
    /// Pause the vCPUs (idempotent).
    Pause,
    /// Resume the vCPUs (idempotent).
    Resume,
    /// Ask the guest to power off (`requestStopWithError:`); the helper exits once it has.
    RequestStop,
    /// Stop the VM at once and exit the helper (idempotent).
    Stop,
    /// Pause, save the full VM state to this file (macOS 14+), stop, and exit the helper. On
    /// failure the VM is resumed if it was running and the helper keeps serving.
    Save(PathBuf),
    /// Hand over the engine's end of the guest NIC's frame socket (see the module docs).
    Network,
}

impl Request {
    /// The request's verb, as on the wire.
    pub fn verb(&self) -> &'static str {
        match self {
            Request::State => "state",
            Request::Pause => "pause",
            Request::Resume => "resume",
            Request::RequestStop => "request-stop",
            Request::Stop => "stop",
            Request::Save(_) => "save",
            Request::Network => "network",
        }
    }

    /// The request line, newline included. Fails for a save path that is not UTF-8 or holds a
    /// line break.
    pub fn encode(&self) -> Result<String, ProtocolError> {
        match self {
            Request::Save(path) => match path.to_str() {
                Some(p) if !p.is_empty() && !p.contains(['\n', '\r']) => Ok(format!("save {p}\n")),
                _ => Err(ProtocolError::new(
                    &path.display().to_string(),
                    "save path must be non-empty UTF-8 on one line",
                )),
            },
            other => Ok(format!("{}\n", other.verb())),
        }
    }

    /// Parses one request line (without its newline).
    pub fn decode(line: &str) -> Result<Request, ProtocolError> {
        let line = line.strip_suffix('\r').unwrap_or(line);
        match line {
            "state" => Ok(Request::State),
            "pause" => Ok(Request::Pause),
            "resume" => Ok(Request::Resume),
            "request-stop" => Ok(Request::RequestStop),
            "stop" => Ok(Request::Stop),
            "network" => Ok(Request::Network),
            _ => match line.strip_prefix("save ") {
                Some(path) if !path.is_empty() => Ok(Request::Save(PathBuf::from(path))),
                _ => Err(ProtocolError::new(line, "unknown request")),
            },
        }
    }
}

/// `VZVirtualMachineState`, as the helper reports it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum VmState {
    /// Not started, or stopped.
    Stopped,
    /// vCPUs running.
    Running,
    /// vCPUs paused.
    Paused,
    /// The VM hit an internal error.
    Error,
    /// Booting.
    Starting,
    /// Being paused.
    Pausing,
    /// Being resumed.
    Resuming,
    /// Being stopped.
    Stopping,
    /// State being saved.
    Saving,
    /// State being restored.
    Restoring,
}

impl VmState {
    /// Every state.
    pub const ALL: [VmState; 10] = [
        VmState::Stopped,
        VmState::Running,
        VmState::Paused,
        VmState::Error,
        VmState::Starting,
        VmState::Pausing,
        VmState::Resuming,
        VmState::Stopping,
        VmState::Saving,
        VmState::Restoring,
    ];

    /// The state's name on the wire.
    pub fn as_str(self) -> &'static str {
        match self {
            VmState::Stopped => "stopped",
            VmState::Running => "running",
            VmState::Paused => "paused",
            VmState::Error => "error",
            VmState::Starting => "starting",
            VmState::Pausing => "pausing",
            VmState::Resuming => "resuming",
            VmState::Stopping => "stopping",
            VmState::Saving => "saving",
            VmState::Restoring => "restoring",
        }
    }

    /// Parses a state name.
    pub fn parse(name: &str) -> Option<VmState> {
        VmState::ALL.into_iter().find(|s| s.as_str() == name)
    }
}

/// The helper's answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Response {
    /// Done; the VM is now in this state.
    Ok(VmState),
    /// Refused or failed, with a one-line reason.
    Err(String),
}

impl Response {
    /// The response line, newline included (line breaks in a message become spaces).
    pub fn encode(&self) -> String {
        match self {
            Response::Ok(state) => format!("ok {}\n", state.as_str()),
            Response::Err(message) => {
                let one_line: String = message
                    .chars()
                    .map(|c| if c == '\n' || c == '\r' { ' ' } else { c })
                    .collect();
                format!("err {}\n", one_line.trim())
            }
        }
    }

    /// Parses one response line (without its newline).
    pub fn decode(line: &str) -> Result<Response, ProtocolError> {
        let line = line.strip_suffix('\r').unwrap_or(line);
        if let Some(state) = line.strip_prefix("ok ") {
            return VmState::parse(state)
                .map(Response::Ok)
                .ok_or_else(|| ProtocolError::new(line, "unknown vm state"));
        }
        match line.strip_prefix("err") {
            Some(rest) if rest.is_empty() || rest.starts_with(' ') => {
                Ok(Response::Err(rest.trim().to_string()))
            }
            _ => Err(ProtocolError::new(line, "not ok/err")),
        }
    }
}

/// A line that is not part of the protocol.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("bad control line {line:?}: {reason}")]
pub struct ProtocolError {
    /// The line (truncated).
    pub line: String,
    /// What is wrong with it.
    pub reason: &'static str,
}

impl ProtocolError {
    fn new(line: &str, reason: &'static str) -> ProtocolError {
        ProtocolError {
            line: line.chars().take(120).collect(),
            reason,
        }
    }
}

/// Why a control request failed.
#[derive(Debug, thiserror::Error)]
pub enum ControlError {
    /// The control socket is not there or nobody listens.
    #[error("connect to the vz helper")]
    Connect(#[source] io::Error),
    /// Reading or writing the socket failed.
    #[error("talk to the vz helper")]
    Io(#[source] io::Error),
    /// No answer in time.
    #[error("the vz helper did not answer {verb} within {}ms", after.as_millis())]
    Timeout {
        /// The request's verb.
        verb: &'static str,
        /// The timeout.
        after: Duration,
    },
    /// The helper hung up without answering.
    #[error("the vz helper closed the connection during {verb}")]
    Closed {
        /// The request's verb.
        verb: &'static str,
    },
    /// Something that is not the protocol.
    #[error(transparent)]
    Protocol(#[from] ProtocolError),
    /// The helper answered `err`.
    #[error("{verb}: {message}")]
    Refused {
        /// The request's verb.
        verb: &'static str,
        /// The helper's reason.
        message: String,
    },
}

/// Sends one request on a fresh connection and returns the VM state from an `ok` answer.
/// Cancel-safe: dropping the future only drops the connection (the helper still finishes a
/// request it has read).
pub async fn request(
    socket: &Path,
    request: &Request,
    timeout: Duration,
) -> Result<VmState, ControlError> {
    let verb = request.verb();
    let line = request.encode()?;
    let exchange = async {
        let stream = tokio::net::UnixStream::connect(socket)
            .await
            .map_err(ControlError::Connect)?;
        let (read, mut write) = stream.into_split();
        write
            .write_all(line.as_bytes())
            .await
            .map_err(ControlError::Io)?;
        write.flush().await.map_err(ControlError::Io)?;
        let mut reader = tokio::io::BufReader::new(read).take(MAX_LINE as u64);
        let mut answer = String::new();
        let n = reader
            .read_line(&mut answer)
            .await
            .map_err(ControlError::Io)?;
        if n == 0 || !answer.ends_with('\n') {
            return Err(ControlError::Closed { verb });
        }
        match Response::decode(answer.trim_end_matches('\n'))? {
            Response::Ok(state) => Ok(state),
            Response::Err(message) => Err(ControlError::Refused { verb, message }),
        }
    };
    tokio::time::timeout(timeout, exchange)
        .await
        .map_err(|_| ControlError::Timeout {
            verb,
            after: timeout,
        })?
}

/// Asks the helper for the engine's end of the guest NIC's frame socket (one Ethernet frame
/// per datagram). Blocking I/O on a worker thread: descriptors arrive with `recvmsg`.
pub async fn network(socket: &Path, timeout: Duration) -> Result<OwnedFd, ControlError> {
    let socket = socket.to_path_buf();
    let verb = Request::Network.verb();
    let work = tokio::task::spawn_blocking(move || receive_network(&socket, timeout));
    match tokio::time::timeout(timeout + Duration::from_secs(1), work).await {
        Ok(Ok(result)) => result,
        Ok(Err(join)) => Err(ControlError::Io(io::Error::other(join))),
        Err(_) => Err(ControlError::Timeout {
            verb,
            after: timeout,
        }),
    }
}

fn receive_network(socket: &Path, timeout: Duration) -> Result<OwnedFd, ControlError> {
    let verb = Request::Network.verb();
    let timed_out = |e: io::Error| match e.kind() {
        io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut => ControlError::Timeout {
            verb,
            after: timeout,
        },
        _ => ControlError::Io(e),
    };
    let mut stream = UnixStream::connect(socket).map_err(ControlError::Connect)?;
    stream
        .set_read_timeout(Some(timeout))
        .and_then(|()| stream.set_write_timeout(Some(timeout)))
        .map_err(ControlError::Io)?;
    stream.write_all(b"network\n").map_err(timed_out)?;
    let mut line = Vec::new();
    let mut link: Option<OwnedFd> = None;
    while !line.contains(&b'\n') {
        if line.len() >= MAX_LINE {
            return Err(ControlError::Protocol(ProtocolError::new(
                &String::from_utf8_lossy(&line),
                "answer line too long",
            )));
        }
        let mut buf = [0u8; 512];
        let mut space = [MaybeUninit::<u8>::uninit(); rustix::cmsg_space!(ScmRights(1))];
        let mut ancillary = RecvAncillaryBuffer::new(&mut space);
        #[cfg(target_os = "linux")]
        let flags = RecvFlags::CMSG_CLOEXEC;
        #[cfg(not(target_os = "linux"))]
        let flags = RecvFlags::empty();
        let got = rustix::net::recvmsg(
            &stream,
            &mut [IoSliceMut::new(&mut buf)],
            &mut ancillary,
            flags,
        )
        .map_err(|e| timed_out(e.into()))?;
        for message in ancillary.drain() {
            if let RecvAncillaryMessage::ScmRights(fds) = message {
                for fd in fds {
                    // Close-on-exec where the flag above does not exist; extra descriptors
                    // (none are sent) are closed by the drop.
                    let _ = rustix::io::fcntl_setfd(&fd, rustix::io::FdFlags::CLOEXEC);
                    link.get_or_insert(fd);
                }
            }
        }
        if got.bytes == 0 {
            return Err(ControlError::Closed { verb });
        }
        line.extend_from_slice(&buf[..got.bytes]);
    }
    let end = line.iter().position(|b| *b == b'\n').unwrap_or(line.len());
    let text = String::from_utf8_lossy(&line[..end]).into_owned();
    match Response::decode(&text)? {
        Response::Ok(_) => link.ok_or_else(|| {
            ControlError::Protocol(ProtocolError::new(&text, "no descriptor with the answer"))
        }),
        Response::Err(message) => Err(ControlError::Refused { verb, message }),
    }
}

/// Writes `bytes` with `fd` attached (`SCM_RIGHTS`).
fn send_with_fd(stream: &UnixStream, bytes: &[u8], fd: BorrowedFd<'_>) -> io::Result<()> {
    let mut space = [MaybeUninit::<u8>::uninit(); rustix::cmsg_space!(ScmRights(1))];
    let mut ancillary = SendAncillaryBuffer::new(&mut space);
    let fds = [fd];
    if !ancillary.push(SendAncillaryMessage::ScmRights(&fds)) {
        return Err(io::Error::other("no room for the descriptor"));
    }
    let sent = rustix::net::sendmsg(
        stream,
        &[IoSlice::new(bytes)],
        &mut ancillary,
        SendFlags::empty(),
    )?;
    // A short write happens only on a full buffer; the descriptor went with the first byte.
    let mut writer = stream;
    writer.write_all(bytes.get(sent..).unwrap_or_default())
}

/// What the helper does with requests. `handle` runs on the connection's thread and may block
/// until the VM has done the work.
pub trait Handler: Send + Sync + 'static {
    /// Answers one request.
    fn handle(&self, request: &Request) -> Response;

    /// The engine's end of the guest NIC's frame socket, sent with the `ok` answer to
    /// `network` ([`Request::Network`]). `None`: the VM has no network device.
    fn network_link(&self) -> Option<BorrowedFd<'_>> {
        None
    }

    /// Runs after `response` has been written to the client (the helper exits here after
    /// `stop` and a successful `save`, so the backend gets its answer first).
    fn replied(&self, _request: &Request, _response: &Response) {}
}

/// Serves the control socket forever: one thread per connection. Returns only if `accept`
/// fails.
pub fn serve<H: Handler>(listener: UnixListener, handler: Arc<H>) -> io::Result<()> {
    loop {
        let (stream, _) = listener.accept()?;
        let handler = Arc::clone(&handler);
        std::thread::Builder::new()
            .name("vz-control".into())
            .spawn(move || {
                if let Err(error) = serve_connection(stream, &*handler) {
                    tracing::debug!(%error, "control connection ended");
                }
            })?;
    }
}

fn serve_connection<H: Handler>(stream: UnixStream, handler: &H) -> io::Result<()> {
    let mut writer = stream.try_clone()?;
    let mut reader = BufReader::new(stream);
    loop {
        let mut line = String::new();
        let n = (&mut reader).take(MAX_LINE as u64).read_line(&mut line)?;
        if n == 0 {
            return Ok(());
        }
        if !line.ends_with('\n') {
            let response = Response::Err("request line too long or unterminated".into());
            writer.write_all(response.encode().as_bytes())?;
            return Ok(());
        }
        match Request::decode(line.trim_end_matches('\n')) {
            Ok(Request::Network) => {
                let response = match handler.network_link() {
                    Some(_) => handler.handle(&Request::Network),
                    None => Response::Err("the vm has no network device".into()),
                };
                match (&response, handler.network_link()) {
                    (Response::Ok(_), Some(link)) => {
                        send_with_fd(&writer, response.encode().as_bytes(), link)?;
                    }
                    _ => writer.write_all(response.encode().as_bytes())?,
                }
                writer.flush()?;
                handler.replied(&Request::Network, &response);
            }
            Ok(request) => {
                let response = handler.handle(&request);
                writer.write_all(response.encode().as_bytes())?;
                writer.flush()?;
                handler.replied(&request, &response);
            }
            Err(e) => {
                writer.write_all(Response::Err(e.to_string()).encode().as_bytes())?;
                writer.flush()?;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Mutex;

    use super::*;

    #[test]
    fn requests_round_trip() {
        for request in [
            Request::State,
            Request::Pause,
            Request::Resume,
            Request::RequestStop,
            Request::Stop,
            Request::Save(PathBuf::from("/snap/with space/vz-state.bin")),
            Request::Network,
        ] {
            let line = request.encode().unwrap();
            assert!(line.ends_with('\n'));
            assert_eq!(Request::decode(line.trim_end()).unwrap(), request, "{line}");
        }
        assert_eq!(
            Request::Save(PathBuf::from("/a/b")).encode().unwrap(),
            "save /a/b\n"
        );
        assert_eq!(Request::decode("state\r").unwrap(), Request::State);
    }

    #[test]
    fn bad_requests_are_refused() {
        for line in ["", "State", "save", "save ", "halt", "pause now"] {
            assert!(Request::decode(line).is_err(), "{line:?}");
        }
        assert!(Request::Save(PathBuf::from("/a\nb")).encode().is_err());
        assert!(Request::Save(PathBuf::new()).encode().is_err());
    }

    #[test]
    fn responses_round_trip() {
        for state in VmState::ALL {
            let r = Response::Ok(state);
            assert_eq!(Response::decode(r.encode().trim_end()).unwrap(), r);
            assert_eq!(VmState::parse(state.as_str()), Some(state));
        }
        let e = Response::Err("cannot pause\nin state stopped".into());
        assert_eq!(e.encode(), "err cannot pause in state stopped\n");
        assert_eq!(
            Response::decode("err cannot pause in state stopped").unwrap(),
            Response::Err("cannot pause in state stopped".into())
        );
        assert_eq!(
            Response::decode("err").unwrap(),
            Response::Err(String::new())
        );
        for line in ["ok", "ok sleeping", "errr x", "OK running", ""] {
            assert!(Response::decode(line).is_err(), "{line:?}");
        }
    }

    /// A scripted helper: pause/resume flip the state, save refuses.
    #[derive(Default)]
    struct Fake {
        state: Mutex<Option<VmState>>,
        replied: Mutex<Vec<String>>,
    }

    impl Handler for Fake {
        fn handle(&self, request: &Request) -> Response {
            let mut state = self.state.lock().unwrap();
            let now = state.get_or_insert(VmState::Running);
            match request {
                Request::State | Request::Network => {}
                Request::Pause => *now = VmState::Paused,
                Request::Resume => *now = VmState::Running,
                Request::RequestStop | Request::Stop => *now = VmState::Stopped,
                Request::Save(path) => return Response::Err(format!("no room for {path:?}")),
            }
            Response::Ok(*now)
        }

        fn replied(&self, request: &Request, _response: &Response) {
            self.replied.lock().unwrap().push(request.verb().into());
        }
    }

    fn fake_server() -> (tempfile::TempDir, PathBuf, Arc<Fake>) {
        let dir = tempfile::tempdir().unwrap();
        let socket = dir.path().join("vz.sock");
        let listener = UnixListener::bind(&socket).unwrap();
        let fake = Arc::new(Fake::default());
        let handler = Arc::clone(&fake);
        std::thread::spawn(move || serve(listener, handler));
        (dir, socket, fake)
    }

    const T: Duration = Duration::from_secs(5);

    #[tokio::test]
    async fn client_against_fake_helper() {
        let (_dir, socket, fake) = fake_server();
        assert_eq!(
            request(&socket, &Request::State, T).await.unwrap(),
            VmState::Running
        );
        assert_eq!(
            request(&socket, &Request::Pause, T).await.unwrap(),
            VmState::Paused
        );
        assert_eq!(
            request(&socket, &Request::State, T).await.unwrap(),
            VmState::Paused
        );
        assert_eq!(
            request(&socket, &Request::Resume, T).await.unwrap(),
            VmState::Running
        );
        let refused = request(&socket, &Request::Save("/x/vz-state.bin".into()), T)
            .await
            .unwrap_err();
        assert_eq!(refused.to_string(), "save: no room for \"/x/vz-state.bin\"");
        assert_eq!(
            request(&socket, &Request::Stop, T).await.unwrap(),
            VmState::Stopped
        );
        // `replied` runs after the answer is written, on the connection's own thread: the
        // client can hold its answer before the hook has run, so wait for all six.
        let mut expected = ["state", "pause", "state", "resume", "save", "stop"];
        let deadline = tokio::time::Instant::now() + T;
        let mut replied = loop {
            let replied = fake.replied.lock().unwrap().clone();
            if replied.len() >= expected.len() || tokio::time::Instant::now() >= deadline {
                break replied;
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        };
        // Each request used its own connection, so the hooks may have run out of order.
        replied.sort();
        expected.sort();
        assert_eq!(replied, expected);
    }

    #[tokio::test]
    async fn server_answers_garbage_and_serves_several_lines() {
        let (_dir, socket, _fake) = fake_server();
        let mut stream = tokio::net::UnixStream::connect(&socket).await.unwrap();
        stream.write_all(b"state\nwhatever\npause\n").await.unwrap();
        let mut lines = tokio::io::BufReader::new(stream).lines();
        assert_eq!(lines.next_line().await.unwrap().unwrap(), "ok running");
        let garbage = lines.next_line().await.unwrap().unwrap();
        assert!(garbage.starts_with("err bad control line"), "{garbage}");
        assert_eq!(lines.next_line().await.unwrap().unwrap(), "ok paused");
    }

    #[tokio::test]
    async fn client_times_out_on_a_silent_helper() {
        let dir = tempfile::tempdir().unwrap();
        let socket = dir.path().join("vz.sock");
        let listener = UnixListener::bind(&socket).unwrap();
        // Accepts and holds the connection without answering.
        let holder = std::thread::spawn(move || listener.accept().map(|(s, _)| s));
        let e = request(&socket, &Request::State, Duration::from_millis(200))
            .await
            .unwrap_err();
        assert!(
            matches!(e, ControlError::Timeout { verb: "state", .. }),
            "{e:?}"
        );
        assert_eq!(
            e.to_string(),
            "the vz helper did not answer state within 200ms"
        );
        drop(holder.join());
    }

    #[tokio::test]
    async fn client_reports_hangups_and_missing_sockets() {
        let dir = tempfile::tempdir().unwrap();
        let socket = dir.path().join("vz.sock");
        let e = request(&socket, &Request::State, T).await.unwrap_err();
        assert!(matches!(e, ControlError::Connect(_)), "{e:?}");

        let listener = UnixListener::bind(&socket).unwrap();
        std::thread::spawn(move || {
            // Reads the request, then hangs up without an answer.
            if let Ok((mut s, _)) = listener.accept() {
                let mut buf = [0u8; 16];
                let _ = s.read(&mut buf);
            }
        });
        let e = request(&socket, &Request::Pause, T).await.unwrap_err();
        assert!(matches!(e, ControlError::Closed { verb: "pause" }), "{e:?}");
    }
}
