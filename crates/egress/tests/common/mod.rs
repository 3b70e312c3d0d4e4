//! Test fixtures: a local HTTPS upstream with its own CA that echoes what it received, a
//! plain HTTP one, and clients that go through the proxy (reqwest, and a raw hyper tunnel
//! when a test needs to be sure it stays on one connection).
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

use std::collections::HashMap;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use bytes::Bytes;
use http::{Request, Response, StatusCode};
use http_body_util::{BodyExt, Full};
use hypedeck_egress::{CertificateAuthority, EgressProxy, InjectRule, ProxyOptions, UpstreamTrust};
use hypedeck_secrets::Sensitive;
use hyper::body::Incoming;
use hyper::client::conn::http1::SendRequest;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use tokio::net::{TcpListener, TcpStream};

pub const API: &str = "api.test.local";
pub const OTHER: &str = "other.test.local";
pub const PLAIN: &str = "plain.test.local";
pub const DOWN: &str = "down.test.local";

pub fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::aws_lc_rs::default_provider())
}

/// A CA for the fake upstreams, unrelated to the proxy's.
pub struct UpstreamCa {
    pub pem: String,
    issuer: Issuer<'static, KeyPair>,
}

impl UpstreamCa {
    pub fn new() -> UpstreamCa {
        let key = KeyPair::generate().unwrap();
        let mut params = CertificateParams::default();
        params
            .distinguished_name
            .push(DnType::CommonName, "upstream test CA");
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        let cert = params.self_signed(&key).unwrap();
        UpstreamCa {
            pem: cert.pem(),
            issuer: Issuer::new(params, key),
        }
    }

    /// A server config for these names (DNS or IP).
    pub fn server_config(&self, names: &[&str]) -> Arc<rustls::ServerConfig> {
        let key = KeyPair::generate().unwrap();
        let params =
            CertificateParams::new(names.iter().map(|s| s.to_string()).collect::<Vec<_>>())
                .unwrap();
        let cert = params.signed_by(&key, &self.issuer).unwrap();
        let key = PrivateKeyDer::from_pem_slice(key.serialize_pem().as_bytes()).unwrap();
        Arc::new(
            rustls::ServerConfig::builder_with_provider(provider())
                .with_safe_default_protocol_versions()
                .unwrap()
                .with_no_client_auth()
                .with_single_cert(vec![cert.der().clone()], key)
                .unwrap(),
        )
    }
}

/// Echo service: `GET` answers with `conn: <n>`, `method`, `path`, then every header as
/// `name: value` lines; `POST /echo-body` streams the request body back.
async fn echo(
    conn: u64,
    req: Request<Incoming>,
) -> Result<Response<http_body_util::combinators::BoxBody<Bytes, hyper::Error>>, Infallible> {
    if req.uri().path() == "/echo-body" {
        return Ok(Response::new(req.into_body().boxed()));
    }
    let mut text = format!(
        "conn: {conn}\nmethod: {}\npath: {}\n",
        req.method(),
        req.uri()
    );
    for (name, value) in req.headers() {
        text.push_str(&format!(
            "{name}: {}\n",
            value.to_str().unwrap_or("<bytes>")
        ));
    }
    Ok(Response::new(
        Full::new(Bytes::from(text))
            .map_err(|never| match never {})
            .boxed(),
    ))
}

/// Starts an echo server on 127.0.0.1, HTTPS when `tls` is given.
pub async fn start_upstream(tls: Option<Arc<rustls::ServerConfig>>) -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let counter = Arc::new(AtomicU64::new(0));
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                return;
            };
            let conn = counter.fetch_add(1, Ordering::SeqCst) + 1;
            let tls = tls.clone();
            tokio::spawn(async move {
                let service = service_fn(move |req| echo(conn, req));
                let builder = hyper::server::conn::http1::Builder::new();
                match tls {
                    Some(config) => {
                        let Ok(stream) =
                            tokio_rustls::TlsAcceptor::from(config).accept(stream).await
                        else {
                            return;
                        };
                        let _ = builder
                            .serve_connection(TokioIo::new(stream), service)
                            .await;
                    }
                    None => {
                        let _ = builder
                            .serve_connection(TokioIo::new(stream), service)
                            .await;
                    }
                }
            });
        }
    });
    addr
}

/// A port nothing listens on.
pub async fn closed_port() -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    listener.local_addr().unwrap()
}

/// The usual world: an HTTPS upstream for `API`/`OTHER`, a plain one for `PLAIN`, a dead
/// address for `DOWN`, and a proxy that trusts the upstream CA and resolves those names.
pub struct World {
    pub upstream_ca: UpstreamCa,
    pub https: SocketAddr,
    pub http: SocketAddr,
    pub proxy: EgressProxy,
}

impl World {
    pub async fn new() -> World {
        World::with(|_| {}).await
    }

    pub async fn with(tweak: impl FnOnce(&mut ProxyOptions)) -> World {
        let upstream_ca = UpstreamCa::new();
        let https =
            start_upstream(Some(upstream_ca.server_config(&[API, OTHER, "127.0.0.1"]))).await;
        let http = start_upstream(None).await;
        let down = closed_port().await;
        let mut options = ProxyOptions {
            resolve_overrides: HashMap::from([
                (API.to_string(), https),
                (OTHER.to_string(), https),
                (PLAIN.to_string(), http),
                (DOWN.to_string(), down),
            ]),
            ..ProxyOptions::default()
        };
        tweak(&mut options);
        let trust = UpstreamTrust::empty()
            .with_extra_pem(&upstream_ca.pem)
            .unwrap();
        let proxy =
            EgressProxy::with_options(CertificateAuthority::generate().unwrap(), trust, options)
                .unwrap();
        World {
            upstream_ca,
            https,
            http,
            proxy,
        }
    }

    /// `https://<host>:<port>` for the HTTPS upstream.
    /// Sets `instance`'s rules to one `Authorization: <value>` injection for [`API`].
    pub fn authorize(&self, instance: &str, value: &str) {
        self.proxy
            .set_rules(instance, vec![rule("Authorization", value, Some(&[API]))])
            .unwrap();
    }

    pub fn https_url(&self, host: &str, path: &str) -> String {
        format!("https://{host}:{}{path}", self.https.port())
    }

    pub fn http_url(&self, host: &str, path: &str) -> String {
        format!("http://{host}:{}{path}", self.http.port())
    }

    pub fn client(&self, proxy: SocketAddr) -> reqwest::Client {
        reqwest::Client::builder()
            .proxy(reqwest::Proxy::all(format!("http://{proxy}")).unwrap())
            .tls_certs_only([
                reqwest::Certificate::from_pem(self.proxy.ca_pem().as_bytes()).unwrap(),
            ])
            .http1_only()
            .build()
            .unwrap()
    }
}

pub fn rule(header: &str, value: &str, hosts: Option<&[&str]>) -> InjectRule {
    credential("KEY", header, value, value, hosts)
}

/// A rule of credential `name` whose raw value is `secret` (the header gets `value`).
pub fn credential(
    name: &str,
    header: &str,
    value: &str,
    secret: &str,
    hosts: Option<&[&str]>,
) -> InjectRule {
    InjectRule {
        header: header.to_string(),
        value: Sensitive::new(value.to_string()),
        hosts: hosts.map(|h| h.iter().map(|s| s.to_string()).collect()),
        credential: name.to_string(),
        secret: Sensitive::new(secret.to_string()),
    }
}

/// The values of `name` in an echo body.
pub fn echoed(body: &str, name: &str) -> Vec<String> {
    let prefix = format!("{}: ", name.to_ascii_lowercase());
    body.lines()
        .filter_map(|l| l.strip_prefix(&prefix))
        .map(str::to_string)
        .collect()
}

pub async fn get_text(
    client: &reqwest::Client,
    url: &str,
    auth: Option<&str>,
) -> (StatusCode, String) {
    let mut req = client.get(url);
    if let Some(auth) = auth {
        req = req.header("authorization", auth);
    }
    let resp = req.send().await.unwrap();
    let status = StatusCode::from_u16(resp.status().as_u16()).unwrap();
    (status, resp.text().await.unwrap())
}

/// Opens a CONNECT tunnel by hand and returns the raw CONNECT response on failure.
pub async fn connect_raw(
    proxy: SocketAddr,
    authority: &str,
) -> Result<hyper::upgrade::Upgraded, Response<Incoming>> {
    let tcp = TcpStream::connect(proxy).await.unwrap();
    let (mut sender, conn) =
        hyper::client::conn::http1::handshake::<_, Full<Bytes>>(TokioIo::new(tcp))
            .await
            .unwrap();
    tokio::spawn(conn.with_upgrades());
    let req = Request::connect(authority)
        .header("host", authority)
        .body(Full::new(Bytes::new()))
        .unwrap();
    let resp = sender.send_request(req).await.unwrap();
    if resp.status() != StatusCode::OK {
        return Err(resp);
    }
    let reason = resp
        .extensions()
        .get::<hyper::ext::ReasonPhrase>()
        .map(|r| String::from_utf8_lossy(r.as_bytes()).into_owned());
    assert_eq!(reason.as_deref(), Some("Connection Established"));
    Ok(hyper::upgrade::on(resp).await.unwrap())
}

/// A keep-alive HTTP/1.1 connection through a CONNECT tunnel, trusting `proxy_ca_pem`.
pub async fn open_tunnel(
    proxy: SocketAddr,
    host: &str,
    port: u16,
    proxy_ca_pem: &str,
) -> SendRequest<Full<Bytes>> {
    open_tunnel_as(proxy, host, port, proxy_ca_pem, host).await
}

/// HTTP/1.1 over TLS on `io` (a connection the sandbox network intercepted), asking for `sni`
/// and trusting `roots_pem`; any certificate when `any_cert`. `Err` when the handshake fails.
pub async fn tls_http<IO>(
    io: IO,
    sni: &str,
    roots_pem: &str,
    any_cert: bool,
) -> Result<SendRequest<Full<Bytes>>, std::io::Error>
where
    IO: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let mut roots = rustls::RootCertStore::empty();
    roots
        .add(CertificateDer::from_pem_slice(roots_pem.as_bytes()).unwrap())
        .unwrap();
    let mut config = rustls::ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    if any_cert {
        config
            .dangerous()
            .set_certificate_verifier(Arc::new(AnyCertificate(provider())));
    }
    let tls = tokio_rustls::TlsConnector::from(Arc::new(config))
        .connect(ServerName::try_from(sni.to_string()).unwrap(), io)
        .await?;
    let (sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tls))
        .await
        .map_err(std::io::Error::other)?;
    tokio::spawn(conn);
    Ok(sender)
}

/// Like [`open_tunnel`], but the guest's TLS asks for `sni` (a guest that does not check the
/// certificate when it differs from the CONNECT host).
pub async fn open_tunnel_as(
    proxy: SocketAddr,
    host: &str,
    port: u16,
    proxy_ca_pem: &str,
    sni: &str,
) -> SendRequest<Full<Bytes>> {
    let upgraded = connect_raw(proxy, &format!("{host}:{port}"))
        .await
        .unwrap_or_else(|r| panic!("CONNECT refused: {}", r.status()));
    tls_http(TokioIo::new(upgraded), sni, proxy_ca_pem, sni != host)
        .await
        .unwrap()
}

/// `GET path` on a tunnel; `Err` when the connection is gone.
pub async fn tunnel_get(
    sender: &mut SendRequest<Full<Bytes>>,
    host: &str,
    path: &str,
    auth: &str,
) -> Result<(StatusCode, String), hyper::Error> {
    sender.ready().await?;
    let req = Request::get(path)
        .header("host", host)
        .header("authorization", auth)
        .body(Full::new(Bytes::new()))
        .unwrap();
    let resp = sender.send_request(req).await?;
    let status = resp.status();
    let body = resp.into_body().collect().await?.to_bytes();
    Ok((status, String::from_utf8(body.to_vec()).unwrap()))
}

/// A guest that accepts any certificate (to send a server name the proxy's leaf is not for).
#[derive(Debug)]
struct AnyCertificate(Arc<rustls::crypto::CryptoProvider>);

impl rustls::client::danger::ServerCertVerifier for AnyCertificate {
    fn verify_server_cert(
        &self,
        _: &CertificateDer<'_>,
        _: &[CertificateDer<'_>],
        _: &ServerName<'_>,
        _: &[u8],
        _: rustls_pki_types::UnixTime,
    ) -> Result<rustls::client::danger::ServerCertVerified, rustls::Error> {
        Ok(rustls::client::danger::ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}
