//! The engine's Unix socket: the same API as its TCP port, for the user at this machine only.
//! The socket file is `0600` in the data dir, and every connection's peer must run as the OS
//! user that owns the socket (checked with the kernel's peer credentials), so requests on it
//! are [`Caller::Local`](hypedeck_api::Caller::Local): they may set secret references, which
//! HTTP clients may not. The desktop shell (for its window) and `hypedeck rotate` use it.
//!
//! Invariants: a connection from another user is closed before anything is read; the token is
//! still required (a second lock, and the same router); the socket is removed when the daemon
//! stops.

use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

use http_body_util::{BodyExt, Full};
use hyper::body::Bytes;
use tokio::net::{UnixListener, UnixStream};

/// Accepts only connections whose peer runs as `uid`.
#[derive(Debug)]
pub(crate) struct SameUser {
    listener: UnixListener,
    uid: u32,
}

impl axum::serve::Listener for SameUser {
    type Io = UnixStream;
    type Addr = tokio::net::unix::SocketAddr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        loop {
            let (stream, addr) = match self.listener.accept().await {
                Ok(accepted) => accepted,
                Err(e) => {
                    tracing::warn!(error = %e, "local API socket accept failed");
                    tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                    continue;
                }
            };
            match stream.peer_cred() {
                Ok(cred) if cred.uid() == self.uid => return (stream, addr),
                Ok(cred) => {
                    tracing::warn!(
                        peer_uid = cred.uid(),
                        "refused a local API connection from another user"
                    );
                }
                Err(e) => {
                    tracing::warn!(error = %e, "local API connection without peer credentials")
                }
            }
        }
    }

    fn local_addr(&self) -> std::io::Result<Self::Addr> {
        self.listener.local_addr()
    }
}

/// Binds the socket at `path` (replacing a stale one), readable and writable by its owner only.
pub(crate) fn bind(path: &Path) -> std::io::Result<SameUser> {
    match std::fs::remove_file(path) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => return Err(e),
        _ => {}
    }
    let listener = UnixListener::bind(path)?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))?;
    let uid = std::fs::metadata(path)?.uid();
    Ok(SameUser { listener, uid })
}

/// The engine socket of a data dir.
pub fn socket_path(data_dir: &Path) -> PathBuf {
    hypedeck_store::Paths::new(data_dir).api_socket()
}

/// One request to the engine over its Unix socket: status and body. `body` is JSON.
pub async fn request(
    socket: &Path,
    token: &str,
    method: &str,
    path: &str,
    body: Option<Vec<u8>>,
) -> std::io::Result<(u16, Vec<u8>)> {
    let stream = UnixStream::connect(socket).await?;
    let (mut sender, connection) =
        hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream))
            .await
            .map_err(std::io::Error::other)?;
    tokio::spawn(connection);
    let mut builder = hyper::Request::builder()
        .method(method)
        .uri(path)
        .header("host", "localhost")
        .header("authorization", format!("Bearer {token}"));
    if body.is_some() {
        builder = builder.header("content-type", "application/json");
    }
    let request = builder
        .body(Full::new(Bytes::from(body.unwrap_or_default())))
        .map_err(std::io::Error::other)?;
    let response = sender
        .send_request(request)
        .await
        .map_err(std::io::Error::other)?;
    let status = response.status().as_u16();
    let bytes = response
        .into_body()
        .collect()
        .await
        .map_err(std::io::Error::other)?
        .to_bytes();
    Ok((status, bytes.to_vec()))
}
