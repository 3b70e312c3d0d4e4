//! The proxy's outbound side: which CAs upstream servers are checked against
//! ([`UpstreamTrust`]), where a destination host resolves to (DNS, test overrides, the
//! loopback policy), and opening HTTP/1.1 connections over TCP or TLS.

use std::collections::HashMap;
use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::combinators::BoxBody;
use hyper::client::conn::http1::SendRequest;
use hyper_util::rt::TokioIo;
use rustls::{ClientConfig, RootCertStore};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, ServerName};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;

use crate::EgressError;
use crate::tasks::InstanceTasks;

/// Any error a request body may end with.
pub(crate) type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// What the proxy sends upstream: the guest's body (possibly through the leak guard), or one
/// the proxy made (a "test credential" request).
pub(crate) type RequestBody = BoxBody<Bytes, BoxError>;

/// The CAs upstream HTTPS servers are verified against: the host's trust store and/or extra
/// PEM bundles. Cheap to clone.
#[derive(Clone)]
pub struct UpstreamTrust {
    roots: Arc<RootCertStore>,
}

impl std::fmt::Debug for UpstreamTrust {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("UpstreamTrust")
            .field("roots", &self.roots.len())
            .finish()
    }
}

impl UpstreamTrust {
    /// The host's trust store (`rustls-native-certs`: `/etc/ssl/certs` and friends on Linux,
    /// the system keychain on macOS). Unreadable entries are skipped with a warning; an empty
    /// store is allowed (every upstream HTTPS request then fails with 502) and warned about.
    pub fn system() -> UpstreamTrust {
        let found = rustls_native_certs::load_native_certs();
        for error in &found.errors {
            tracing::warn!(%error, "skipping part of the system trust store");
        }
        let mut roots = RootCertStore::empty();
        let (added, ignored) = roots.add_parsable_certificates(found.certs);
        if ignored > 0 {
            tracing::debug!(ignored, "ignored unparsable system root certificates");
        }
        if added == 0 {
            tracing::warn!("no system root certificates found; upstream https will fail");
        }
        UpstreamTrust {
            roots: Arc::new(roots),
        }
    }

    /// Trusts nothing (until [`with_extra_pem`](Self::with_extra_pem)); for tests.
    pub fn empty() -> UpstreamTrust {
        UpstreamTrust {
            roots: Arc::new(RootCertStore::empty()),
        }
    }

    /// Also trusts every certificate in `pem` (one or more `CERTIFICATE` blocks).
    pub fn with_extra_pem(self, pem: &str) -> Result<UpstreamTrust, EgressError> {
        let mut roots = Arc::unwrap_or_clone(self.roots);
        let mut added = 0;
        for cert in CertificateDer::pem_slice_iter(pem.as_bytes()) {
            let cert = cert.map_err(|_| EgressError::UpstreamCaBundle("not pem"))?;
            roots
                .add(cert)
                .map_err(|_| EgressError::UpstreamCaBundle("unusable certificate"))?;
            added += 1;
        }
        if added == 0 {
            return Err(EgressError::UpstreamCaBundle("no certificate"));
        }
        Ok(UpstreamTrust {
            roots: Arc::new(roots),
        })
    }

    /// Number of trusted roots.
    pub fn len(&self) -> usize {
        self.roots.len()
    }

    /// Whether nothing is trusted.
    pub fn is_empty(&self) -> bool {
        self.roots.is_empty()
    }
}

/// Why an upstream could not be reached. Texts name no secret (hosts are fine).
#[derive(Debug, thiserror::Error)]
pub(crate) enum DialError {
    #[error("resolving the destination failed")]
    Resolve(#[source] io::Error),
    #[error("the destination resolves to an address sandboxes may not reach")]
    Forbidden,
    #[error("connecting to the destination failed")]
    Connect(#[source] io::Error),
    #[error("connecting to the destination timed out")]
    Timeout,
    #[error("tls handshake with the destination failed")]
    Tls(#[source] io::Error),
    #[error("http handshake with the destination failed")]
    Http(#[source] hyper::Error),
}

/// How the proxy reaches destinations; shared by all instances.
pub(crate) struct Dialer {
    tls: TlsConnector,
    overrides: HashMap<String, SocketAddr>,
    allow_loopback: bool,
    filter: Option<DestinationFilter>,
    connect_timeout: Duration,
}

/// Decides which resolved addresses the proxy may dial (`true`: allowed), beyond the loopback
/// rule: the daemon gives the sandbox network's policy, so a guest cannot reach through its
/// proxy what its network refuses (the host's addresses, link-local, private ranges).
#[derive(Clone)]
pub struct DestinationFilter(pub Arc<dyn Fn(std::net::IpAddr) -> bool + Send + Sync>);

impl std::fmt::Debug for DestinationFilter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("DestinationFilter")
    }
}

impl std::fmt::Debug for Dialer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Dialer")
            .field("overrides", &self.overrides)
            .field("allow_loopback", &self.allow_loopback)
            .field("connect_timeout", &self.connect_timeout)
            .finish_non_exhaustive()
    }
}

impl Dialer {
    pub(crate) fn new(
        trust: &UpstreamTrust,
        overrides: HashMap<String, SocketAddr>,
        allow_loopback: bool,
        filter: Option<DestinationFilter>,
        connect_timeout: Duration,
    ) -> Result<Dialer, EgressError> {
        let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
        let mut config = ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(EgressError::Tls)?
            .with_root_certificates(trust.roots.clone())
            .with_no_client_auth();
        // HTTP/1.1 only, like upstream.
        config.alpn_protocols = vec![b"http/1.1".to_vec()];
        let overrides = overrides
            .into_iter()
            .map(|(host, addr)| (host.to_ascii_lowercase(), addr))
            .collect();
        Ok(Dialer {
            tls: TlsConnector::from(Arc::new(config)),
            overrides,
            allow_loopback,
            filter,
            connect_timeout,
        })
    }

    /// Where `host:port` (canonical host) is dialled. An override wins and is exempt from the
    /// loopback policy; otherwise DNS, minus loopback/unspecified addresses unless allowed.
    pub(crate) async fn resolve(
        &self,
        host: &str,
        port: u16,
    ) -> Result<Vec<SocketAddr>, DialError> {
        if let Some(addr) = self.overrides.get(host) {
            return Ok(vec![*addr]);
        }
        let found: Vec<SocketAddr> =
            tokio::time::timeout(self.connect_timeout, tokio::net::lookup_host((host, port)))
                .await
                .map_err(|_| DialError::Timeout)?
                .map_err(DialError::Resolve)?
                .collect();
        let allowed: Vec<SocketAddr> = found
            .iter()
            .copied()
            .filter(|a| {
                let ip = a.ip().to_canonical();
                if ip.is_loopback() || ip.is_unspecified() {
                    return self.allow_loopback;
                }
                self.filter.as_ref().is_none_or(|f| (f.0)(ip))
            })
            .collect();
        match (found.is_empty(), allowed.is_empty()) {
            (true, _) => Err(DialError::Resolve(io::Error::new(
                io::ErrorKind::NotFound,
                "no addresses",
            ))),
            (false, true) => Err(DialError::Forbidden),
            (false, false) => Ok(allowed),
        }
    }

    async fn connect_tcp(&self, addrs: &[SocketAddr]) -> Result<TcpStream, DialError> {
        let mut last = DialError::Connect(io::Error::new(io::ErrorKind::NotFound, "no addresses"));
        for addr in addrs {
            match tokio::time::timeout(self.connect_timeout, TcpStream::connect(addr)).await {
                Ok(Ok(stream)) => {
                    let _ = stream.set_nodelay(true);
                    return Ok(stream);
                }
                Ok(Err(e)) => last = DialError::Connect(e),
                Err(_) => last = DialError::Timeout,
            }
        }
        Err(last)
    }

    /// Opens an HTTP/1.1 connection to `target`, over TLS verified against the upstream trust
    /// when `target.tls`. The connection task runs under the instance's tasks.
    pub(crate) async fn open(
        &self,
        target: &Target,
        tasks: &InstanceTasks,
    ) -> Result<SendRequest<RequestBody>, DialError> {
        let tcp = self.connect_tcp(&target.addrs).await?;
        if target.tls {
            let name = ServerName::try_from(target.host.clone()).map_err(|_| {
                DialError::Tls(io::Error::new(io::ErrorKind::InvalidInput, "invalid name"))
            })?;
            let tls = tokio::time::timeout(self.connect_timeout, self.tls.connect(name, tcp))
                .await
                .map_err(|_| DialError::Timeout)?
                .map_err(DialError::Tls)?;
            handshake(TokioIo::new(tls), tasks).await
        } else {
            handshake(TokioIo::new(tcp), tasks).await
        }
    }
}

async fn handshake<T>(io: T, tasks: &InstanceTasks) -> Result<SendRequest<RequestBody>, DialError>
where
    T: hyper::rt::Read + hyper::rt::Write + Unpin + Send + 'static,
{
    let (sender, connection) = hyper::client::conn::http1::handshake(io)
        .await
        .map_err(DialError::Http)?;
    tasks.spawn(async move {
        if let Err(error) = connection.await {
            tracing::debug!(%error, "upstream connection ended with an error");
        }
    });
    Ok(sender)
}

/// A resolved destination.
#[derive(Debug, Clone)]
pub(crate) struct Target {
    /// Canonical host (also the TLS server name).
    pub(crate) host: String,
    pub(crate) port: u16,
    pub(crate) addrs: Vec<SocketAddr>,
    pub(crate) tls: bool,
}
