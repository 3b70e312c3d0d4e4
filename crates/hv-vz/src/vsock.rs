//! The helper's side of hybrid vsock (the Firecracker convention) on
//! [`RuntimeFiles::vsock`](crate::plan::RuntimeFiles::vsock): a host client connects to the
//! unix socket and writes `CONNECT <port>\n`; the helper opens a connection to that guest
//! vsock port (on macOS through `VZVirtioSocketDevice connectToPort:completionHandler:`),
//! answers `OK <local port>\n`, and then splices bytes both ways until both sides are done.
//! A handshake that fails (bad line, nothing listening in the guest) closes the connection
//! without an answer, as Firecracker does.
//!
//! Blocking std I/O, one thread per direction; the guest end is any stream file descriptor,
//! so the tests exercise everything on Linux with a socketpair.

use std::fs::File;
use std::io::{self, Read, Write};
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::net::{UnixListener, UnixStream};
use std::sync::Arc;

/// Longest handshake line accepted (`CONNECT 4294967295\n` is 19 bytes).
const MAX_HANDSHAKE: usize = 64;

/// An open connection to a guest port.
pub struct GuestStream {
    /// The connection's file descriptor (owned: closed when the splice ends).
    pub fd: OwnedFd,
    /// The host-side port of the connection, reported in `OK <port>`.
    pub local_port: u32,
    /// Runs once the splice has ended (e.g. to release the VZ connection object).
    pub on_close: Option<Box<dyn FnOnce() + Send>>,
}

impl std::fmt::Debug for GuestStream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GuestStream")
            .field("fd", &self.fd)
            .field("local_port", &self.local_port)
            .field("on_close", &self.on_close.is_some())
            .finish()
    }
}

/// Opens a connection to a guest vsock port. Blocking.
pub trait Connector: Send + Sync + 'static {
    /// Connects to guest `port`; errors are logged and close the client's connection.
    fn connect(&self, port: u32) -> io::Result<GuestStream>;
}

/// Parses a handshake line (without its newline): `CONNECT <port>`.
pub fn parse_connect(line: &str) -> Option<u32> {
    let port = line
        .strip_suffix('\r')
        .unwrap_or(line)
        .strip_prefix("CONNECT ")?;
    if port.is_empty() || !port.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    port.parse().ok()
}

/// Accepts host clients forever, one thread per connection. Returns only if `accept` fails.
pub fn serve<C: Connector>(listener: UnixListener, connector: Arc<C>) -> io::Result<()> {
    loop {
        let (client, _) = listener.accept()?;
        let connector = Arc::clone(&connector);
        std::thread::Builder::new()
            .name("vz-vsock".into())
            .spawn(move || {
                if let Err(error) = serve_client(client, &*connector) {
                    tracing::debug!(%error, "hybrid vsock connection ended");
                }
            })?;
    }
}

/// Handshake then splice for one host client.
fn serve_client<C: Connector>(mut client: UnixStream, connector: &C) -> io::Result<()> {
    let line = read_handshake(&mut client)?;
    let port = parse_connect(&line).ok_or_else(|| {
        io::Error::new(
            io::ErrorKind::InvalidData,
            format!("bad hybrid vsock handshake {line:?}"),
        )
    })?;
    let guest = connector.connect(port)?;
    client.write_all(format!("OK {}\n", guest.local_port).as_bytes())?;
    splice(client, guest)
}

/// Reads up to and excluding `\n`, one byte at a time so no guest-bound byte is consumed.
fn read_handshake(client: &mut UnixStream) -> io::Result<String> {
    let mut line = Vec::new();
    let mut byte = [0u8; 1];
    loop {
        if client.read(&mut byte)? == 0 {
            return Err(io::ErrorKind::UnexpectedEof.into());
        }
        if byte[0] == b'\n' {
            return String::from_utf8(line)
                .map_err(|_| io::Error::new(io::ErrorKind::InvalidData, "handshake not UTF-8"));
        }
        line.push(byte[0]);
        if line.len() > MAX_HANDSHAKE {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                "handshake line too long",
            ));
        }
    }
}

/// Copies both ways; when one direction reaches end of file its destination's write side is
/// shut down, so half-closes propagate. Returns when both directions are done.
fn splice(client: UnixStream, guest: GuestStream) -> io::Result<()> {
    let GuestStream { fd, on_close, .. } = guest;
    let guest_file = File::from(fd);
    let guest_read = guest_file.try_clone()?;
    let client_write = client.try_clone()?;
    let to_client = std::thread::Builder::new()
        .name("vz-vsock-out".into())
        .spawn(move || {
            let mut from = guest_read;
            let mut to = client_write;
            let copied = io::copy(&mut from, &mut to);
            let _ = to.shutdown(std::net::Shutdown::Write);
            copied
        })?;
    let mut from = client;
    let mut to = &guest_file;
    let inbound = io::copy(&mut from, &mut to);
    shutdown_write(&guest_file);
    let outbound = to_client
        .join()
        .unwrap_or_else(|_| Err(io::Error::other("splice thread panicked")));
    drop(guest_file);
    if let Some(on_close) = on_close {
        on_close();
    }
    inbound.and(outbound).map(|_| ())
}

/// `shutdown(fd, SHUT_WR)` on a socket held as a `File` (errors, e.g. not a socket, are moot:
/// the descriptor is closed soon after).
fn shutdown_write(file: &File) {
    // SAFETY: shutdown(2) on a descriptor this function borrows and that stays open for the
    // duration of the call; it does not touch memory.
    #[allow(unsafe_code)]
    unsafe {
        libc::shutdown(file.as_raw_fd(), libc::SHUT_WR);
    }
}

#[cfg(test)]
mod tests {
    use std::io::BufRead;
    use std::sync::Mutex;
    use std::sync::atomic::{AtomicUsize, Ordering};

    use super::*;

    #[test]
    fn handshake_lines() {
        assert_eq!(parse_connect("CONNECT 1024"), Some(1024));
        assert_eq!(parse_connect("CONNECT 1024\r"), Some(1024));
        assert_eq!(parse_connect("CONNECT 4294967295"), Some(u32::MAX));
        for bad in [
            "CONNECT",
            "CONNECT ",
            "CONNECT -1",
            "CONNECT +5",
            "CONNECT 4294967296",
            "connect 1024",
            "CONNECT 10 24",
            "",
        ] {
            assert_eq!(parse_connect(bad), None, "{bad:?}");
        }
    }

    /// Guest ports 1024 (echo, uppercased) and nothing else.
    #[derive(Default)]
    struct EchoGuest {
        closed: Arc<AtomicUsize>,
        ports: Mutex<Vec<u32>>,
    }

    impl Connector for EchoGuest {
        fn connect(&self, port: u32) -> io::Result<GuestStream> {
            self.ports.lock().unwrap().push(port);
            if port != 1024 {
                return Err(io::Error::new(
                    io::ErrorKind::ConnectionRefused,
                    "nothing listens",
                ));
            }
            let (host, guest) = UnixStream::pair()?;
            std::thread::spawn(move || {
                let mut reader = io::BufReader::new(guest.try_clone().unwrap());
                let mut guest = guest;
                let mut line = String::new();
                while reader.read_line(&mut line).unwrap_or(0) > 0 {
                    guest.write_all(line.to_uppercase().as_bytes()).unwrap();
                    line.clear();
                }
                // Client half-closed: say goodbye, then close.
                guest.write_all(b"BYE\n").unwrap();
            });
            let closed = Arc::clone(&self.closed);
            Ok(GuestStream {
                fd: OwnedFd::from(host),
                local_port: 7001,
                on_close: Some(Box::new(move || {
                    closed.fetch_add(1, Ordering::SeqCst);
                })),
            })
        }
    }

    fn server() -> (tempfile::TempDir, std::path::PathBuf, Arc<EchoGuest>) {
        let dir = tempfile::tempdir().unwrap();
        let socket = dir.path().join("vsock.sock");
        let listener = UnixListener::bind(&socket).unwrap();
        let guest = Arc::new(EchoGuest::default());
        let connector = Arc::clone(&guest);
        std::thread::spawn(move || serve(listener, connector));
        (dir, socket, guest)
    }

    #[test]
    fn connect_then_splice_both_ways_with_half_close() {
        let (_dir, socket, guest) = server();
        let mut client = UnixStream::connect(&socket).unwrap();
        client.write_all(b"CONNECT 1024\n").unwrap();
        let mut reader = io::BufReader::new(client.try_clone().unwrap());
        let mut line = String::new();
        reader.read_line(&mut line).unwrap();
        assert_eq!(line, "OK 7001\n");
        client.write_all(b"hello guest\n").unwrap();
        line.clear();
        reader.read_line(&mut line).unwrap();
        assert_eq!(line, "HELLO GUEST\n");
        client.shutdown(std::net::Shutdown::Write).unwrap();
        let mut rest = String::new();
        reader.read_to_string(&mut rest).unwrap();
        assert_eq!(rest, "BYE\n");
        // on_close runs once both directions are done.
        for _ in 0..200 {
            if guest.closed.load(Ordering::SeqCst) == 1 {
                break;
            }
            std::thread::sleep(std::time::Duration::from_millis(10));
        }
        assert_eq!(guest.closed.load(Ordering::SeqCst), 1);
        assert_eq!(*guest.ports.lock().unwrap(), [1024]);
    }

    #[test]
    fn refused_port_and_bad_handshake_close_without_answer() {
        let (_dir, socket, guest) = server();
        for hello in [&b"CONNECT 9\n"[..], b"HELLO\n", &[b'9'; 100]] {
            let mut client = UnixStream::connect(&socket).unwrap();
            client.write_all(hello).unwrap();
            let mut answer = Vec::new();
            // Closing with unread bytes may reset the connection instead of ending it.
            match client.read_to_end(&mut answer) {
                Ok(_) => assert!(answer.is_empty(), "{:?}", String::from_utf8_lossy(&answer)),
                Err(e) => assert_eq!(e.kind(), io::ErrorKind::ConnectionReset),
            }
        }
        assert_eq!(*guest.ports.lock().unwrap(), [9]);
    }
}
