//! One guest connection: an HTTP/1.1 forward proxy. `CONNECT host:port` opens a TLS tunnel
//! that the proxy terminates with a leaf for `host`, then serves the guest's requests inside
//! it one after the other, injecting headers; absolute-form `http://` requests are forwarded
//! as they are (never injected).
//!
//! Responses the proxy makes itself are short fixed texts (never a header, never a value).
//!
//! Every request also goes past the credential checks: a real credential value (or an encoding
//! of it, see [`crate::leak`]) headed for a host that credential is not for is refused (the
//! leak guard), plain HTTP to a credential's host is refused, and each injection or refusal
//! lands in the usage trail.

use std::convert::Infallible;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use bytes::Bytes;
use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::uri::{Authority, PathAndQuery, Scheme};
use http::{Method, Request, Response, StatusCode, Uri, Version};
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::client::conn::http1::SendRequest;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use tokio::sync::Mutex;
use tokio_rustls::TlsAcceptor;

use crate::guarded::GuardedBody;
use crate::instance::Instance;
use crate::leak::LeakCheck;
use crate::rules::{RuleSet, canonical_host};
use crate::upstream::{BoxError, DialError, RequestBody, Target};
use crate::usage::{
    Outcome, REASON_DESTINATION_REFUSED, REASON_HOST_NOT_ALLOWED, REASON_LEAK,
    REASON_NAME_MISMATCH, REASON_PLAIN_HTTP, REASON_UPSTREAM_CLOSED, REASON_UPSTREAM_EXCHANGE,
    REASON_UPSTREAM_UNREACHABLE, UsageEvent, WITHHELD_HOST,
};

/// What the guest gets when a credential would go with a request whose names disagree.
const MISMATCH_RESPONSE: &str =
    "request blocked: the TLS server name and the Host header must name the CONNECT host";

/// What the guest gets for a host its instance's allow-list does not name.
const NOT_ALLOWED_RESPONSE: &str = "destination not on this sandbox's allow-list";

/// What the guest gets when the leak guard refuses a request.
const LEAK_RESPONSE: &str =
    "request blocked: it carries a credential value this host may not receive";

type ProxyBody = BoxBody<Bytes, BoxError>;

/// Bound on the guest's TLS handshake inside a tunnel.
const TLS_ACCEPT_TIMEOUT: Duration = Duration::from_secs(30);

/// Headers that describe one hop, not the message (RFC 9110 §7.6.1, plus the de-facto
/// `Proxy-Connection` and `Keep-Alive`); never forwarded either way.
const HOP_BY_HOP: [HeaderName; 9] = [
    header::CONNECTION,
    HeaderName::from_static("keep-alive"),
    HeaderName::from_static("proxy-connection"),
    header::PROXY_AUTHENTICATE,
    header::PROXY_AUTHORIZATION,
    header::TE,
    header::TRAILER,
    header::TRANSFER_ENCODING,
    header::UPGRADE,
];

/// Serves one accepted guest connection until it closes (or the instance is detached).
pub(crate) async fn guest_connection<S>(stream: S, instance: Arc<Instance>)
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Send + Unpin + 'static,
{
    // Absolute-form requests on this connection reuse one upstream connection per target.
    let plain = Arc::new(Mutex::new(None::<Upstream>));
    let service = service_fn(move |req| {
        let instance = instance.clone();
        let plain = plain.clone();
        async move {
            Ok::<_, Infallible>(if req.method() == Method::CONNECT {
                connect(req, instance).await
            } else {
                forward_plain(req, &instance, &plain).await
            })
        }
    });
    if let Err(error) = http1::Builder::new()
        .serve_connection(TokioIo::new(stream), service)
        .with_upgrades()
        .await
    {
        tracing::debug!(%error, "guest proxy connection ended with an error");
    }
}

/// `CONNECT host:port`: checks and resolves the destination, answers `200 Connection
/// Established`, then runs the tunnel on the upgraded connection.
async fn connect(mut req: Request<Incoming>, instance: Arc<Instance>) -> Response<ProxyBody> {
    let Some((host, port)) = req
        .uri()
        .authority()
        .and_then(|a| Some((canonical_host(a.host())?, a.port_u16()?)))
    else {
        return text(StatusCode::BAD_REQUEST, "CONNECT needs host:port");
    };
    if leaky_name(&instance, &instance.rules.load(), &host, &Method::CONNECT) {
        return text(StatusCode::FORBIDDEN, LEAK_RESPONSE);
    }
    if !instance.may_reach(&host, port) {
        return text(StatusCode::FORBIDDEN, NOT_ALLOWED_RESPONSE);
    }
    let addrs = match instance.shared.dialer.resolve(&host, port).await {
        Ok(addrs) => addrs,
        Err(error) => {
            // The guest's requests never get to be made: the credentials that were to go to
            // this host record the failure, so the trail shows why the guest saw a 502.
            let (response, reason) = dial_failure(&instance, &host, &error);
            let rules = instance.rules.load_full();
            let status = response.status().as_u16();
            for credential in rules.apply(&host, &mut HeaderMap::new()) {
                instance.record(
                    &rules,
                    credential,
                    &host,
                    &Method::CONNECT,
                    Some(status),
                    Outcome::Failed,
                    reason,
                );
            }
            return response;
        }
    };
    let tls = match instance.shared.ca.server_config(&host) {
        Ok(config) => config,
        Err(error) => {
            tracing::debug!(instance = %instance.id, %host, %error, "no leaf certificate");
            return text(StatusCode::BAD_REQUEST, "invalid destination host");
        }
    };
    let target = Target {
        host,
        port,
        addrs,
        tls: true,
    };
    let upgrade = hyper::upgrade::on(&mut req);
    let tasks = instance.tasks.clone();
    tasks.spawn(async move {
        match upgrade.await {
            Ok(upgraded) => tunnel(upgraded, tls, target, instance).await,
            Err(error) => tracing::debug!(%error, "CONNECT upgrade failed"),
        }
    });
    let mut response = Response::new(empty());
    response
        .extensions_mut()
        .insert(hyper::ext::ReasonPhrase::from_static(
            b"Connection Established",
        ));
    response
}

/// One tunnel: the guest's TLS terminated with `tls`, then HTTP/1.1 requests in a loop.
async fn tunnel(
    upgraded: hyper::upgrade::Upgraded,
    tls: Arc<rustls::ServerConfig>,
    target: Target,
    instance: Arc<Instance>,
) {
    let accept = TlsAcceptor::from(tls).accept(TokioIo::new(upgraded));
    let stream = match tokio::time::timeout(TLS_ACCEPT_TIMEOUT, accept).await {
        Ok(Ok(stream)) => stream,
        Ok(Err(error)) => {
            tracing::debug!(instance = %instance.id, host = %target.host, %error, "guest tls handshake failed");
            return;
        }
        Err(_) => {
            tracing::debug!(instance = %instance.id, host = %target.host, "guest tls handshake timed out");
            return;
        }
    };
    serve_tunnel(stream, target, instance).await;
}

/// The requests of one terminated TLS connection, served in a loop.
async fn serve_tunnel<S>(
    stream: tokio_rustls::server::TlsStream<S>,
    target: Target,
    instance: Arc<Instance>,
) where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Send + Unpin + 'static,
{
    let host_header = match host_header(&target.host, target.port, 443) {
        Some(value) => value,
        None => return,
    };
    // The name the guest's TLS asked for. An IP literal has none (RFC 6066 forbids it).
    let sni = stream
        .get_ref()
        .1
        .server_name()
        .map(str::to_ascii_lowercase);
    let sni_agrees = match sni {
        Some(name) => canonical_host(&name).as_deref() == Some(target.host.as_str()),
        None => target.host.parse::<std::net::IpAddr>().is_ok(),
    };
    let tunnel = Arc::new(Tunnel {
        target,
        sni_agrees,
        host_header,
        instance,
        upstream: Mutex::new(None),
    });
    let service = service_fn(move |req| {
        let tunnel = tunnel.clone();
        async move { Ok::<_, Infallible>(tunnel.handle(req).await) }
    });
    if let Err(error) = http1::Builder::new()
        .serve_connection(TokioIo::new(stream), service)
        .await
    {
        tracing::debug!(%error, "tunnel ended with an error");
    }
}

/// A connection the sandbox network intercepted: the guest dialled `addr` (port 443 or 80)
/// directly, ignoring its proxy settings. `name` is the name the guest resolved to that address
/// through its network, when it did: the connection is bound to it (the TLS server name or the
/// `Host` header must say the same). HTTPS is terminated with the CA like a CONNECT tunnel, so a
/// guest that does not trust the CA fails its handshake: nothing goes around the proxy.
pub(crate) async fn transparent_connection<S>(
    stream: S,
    instance: Arc<Instance>,
    addr: std::net::SocketAddr,
    name: Option<String>,
) where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Send + Unpin + 'static,
{
    if addr.port() == 80 {
        transparent_http(stream, instance, addr, name).await;
        return;
    }
    let acceptor =
        tokio_rustls::LazyConfigAcceptor::new(rustls::server::Acceptor::default(), stream);
    let start = match tokio::time::timeout(TLS_ACCEPT_TIMEOUT, acceptor).await {
        Ok(Ok(start)) => start,
        _ => {
            tracing::debug!(instance = %instance.id, %addr, "intercepted connection is not tls");
            return;
        }
    };
    let sni = start.client_hello().server_name().and_then(canonical_host);
    let rules = instance.rules.load_full();
    if [&name, &sni]
        .into_iter()
        .flatten()
        .any(|n| leaky_name(&instance, &rules, n, &Method::CONNECT))
    {
        return;
    }
    let host = match (name, sni) {
        (Some(name), Some(sni)) if name == sni => name,
        (Some(name), Some(sni)) => {
            tracing::info!(instance = %instance.id, resolved = %name, %sni, "intercepted tls names another host than the guest resolved; closed");
            return;
        }
        (Some(name), None) => name,
        (None, Some(sni)) => sni,
        (None, None) => addr.ip().to_string(),
    };
    if !instance.may_reach(&host, addr.port()) {
        tracing::info!(instance = %instance.id, %host, "intercepted destination not on the allow-list; closed");
        return;
    }
    let addrs = match instance.shared.dialer.resolve(&host, addr.port()).await {
        Ok(addrs) => addrs,
        Err(error) => {
            tracing::info!(instance = %instance.id, %host, %error, "intercepted destination refused");
            return;
        }
    };
    let Ok(tls) = instance.shared.ca.server_config(&host) else {
        return;
    };
    let stream = match tokio::time::timeout(TLS_ACCEPT_TIMEOUT, start.into_stream(tls)).await {
        Ok(Ok(stream)) => stream,
        _ => {
            tracing::debug!(instance = %instance.id, %host, "intercepted tls handshake failed (the guest may not trust the egress CA)");
            return;
        }
    };
    let target = Target {
        host,
        port: addr.port(),
        addrs,
        tls: true,
    };
    serve_tunnel(stream, target, instance).await;
}

/// Plain HTTP the guest sent straight to port 80: each request goes where its `Host` header
/// says (which must be the name the guest resolved, when it resolved one), as if it had been
/// sent to the proxy in absolute form. Never injected (and refused for a credential's host).
async fn transparent_http<S>(
    stream: S,
    instance: Arc<Instance>,
    addr: std::net::SocketAddr,
    name: Option<String>,
) where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Send + Unpin + 'static,
{
    let plain = Arc::new(Mutex::new(None::<Upstream>));
    let service = service_fn(move |req: Request<Incoming>| {
        let instance = instance.clone();
        let plain = plain.clone();
        let name = name.clone();
        async move {
            let (mut parts, body) = req.into_parts();
            let authority = parts
                .headers
                .get(header::HOST)
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.parse::<Authority>().ok());
            let Some(authority) = authority else {
                return Ok::<_, Infallible>(text(
                    StatusCode::BAD_REQUEST,
                    "a Host header is needed",
                ));
            };
            // Bound to the name the guest resolved; without one, the Host header says where
            // the request goes, as an absolute-form request to the proxy would.
            let Some(host) = canonical_host(authority.host()) else {
                return Ok(text(StatusCode::BAD_REQUEST, "invalid destination host"));
            };
            if name.as_ref().is_some_and(|n| *n != host) {
                return Ok(text(
                    StatusCode::FORBIDDEN,
                    "request blocked: the Host header must name the host the connection went to",
                ));
            }
            let expected = host;
            let path = parts
                .uri
                .path_and_query()
                .map(|p| p.as_str().to_string())
                .unwrap_or_else(|| "/".into());
            let port = authority.port_u16().unwrap_or(addr.port());
            let Ok(uri) = format!("http://{expected}:{port}{path}").parse::<Uri>() else {
                return Ok(text(StatusCode::BAD_REQUEST, "invalid request target"));
            };
            parts.uri = uri;
            Ok(forward_plain(Request::from_parts(parts, body), &instance, &plain).await)
        }
    });
    if let Err(error) = http1::Builder::new()
        .serve_connection(TokioIo::new(stream), service)
        .await
    {
        tracing::debug!(%error, "intercepted http connection ended with an error");
    }
}

struct Tunnel {
    target: Target,
    /// Whether the guest's TLS server name is the CONNECT host.
    sni_agrees: bool,
    /// `Host` sent upstream: the CONNECT authority (what TLS went to), whatever the guest
    /// wrote, so injected credentials only ever go with a request for the matched host.
    host_header: HeaderValue,
    instance: Arc<Instance>,
    upstream: Mutex<Option<Upstream>>,
}

impl Tunnel {
    async fn handle(&self, req: Request<Incoming>) -> Response<ProxyBody> {
        let (mut parts, body) = req.into_parts();
        let method = parts.method.clone();
        let host = self.target.host.as_str();
        strip_hop_by_hop(&mut parts.headers);
        // One load per request: the whole set of one generation applies, never a mix.
        let rules = self.instance.rules.load_full();
        // The leak guard reads what the guest wrote, before anything is injected.
        let guards = rules.guards_against(host);
        if let Some(refused) = leaky_head(
            &self.instance,
            &rules,
            guards.as_ref(),
            &parts,
            host,
            &method,
        ) {
            return refused;
        }
        let mocks = rules.mocks_sent_elsewhere(host, &parts.headers);
        // Injection is gated on every name agreeing: the CONNECT host (what the proxy dials
        // and resolved), the TLS server name and the request's Host header.
        if !(self.sni_agrees && host_agrees(&parts.headers, host)) {
            let would = rules.apply(host, &mut HeaderMap::new());
            if !would.is_empty() {
                for credential in would {
                    self.instance.record(
                        &rules,
                        credential,
                        host,
                        &method,
                        None,
                        Outcome::Blocked,
                        Some(REASON_NAME_MISMATCH),
                    );
                }
                return text(StatusCode::FORBIDDEN, MISMATCH_RESPONSE);
            }
        }
        let injected = rules.apply(host, &mut parts.headers);
        parts.headers.insert(header::HOST, self.host_header.clone());
        parts.uri = origin_form(&parts.uri);
        parts.version = Version::HTTP_11;
        let (body, found) = guarded(body, guards, &self.instance, &rules, host, &method);
        let request = Request::from_parts(parts, body);
        let (response, failed) = send(&self.upstream, &self.instance, &self.target, request).await;
        if found.get().is_some() {
            return text(StatusCode::FORBIDDEN, LEAK_RESPONSE);
        }
        let response = cut_if_found(response, found);
        let status = response.status().as_u16();
        let injected_events = injected.iter().map(|&c| match failed {
            Some(reason) => (c, Outcome::Failed, Some(reason)),
            None => (c, Outcome::Injected, None),
        });
        let mock_events = mocks
            .into_iter()
            .map(|c| (c, Outcome::Blocked, Some(REASON_HOST_NOT_ALLOWED)));
        for (credential, outcome, reason) in injected_events.chain(mock_events) {
            self.instance.record(
                &rules,
                credential,
                host,
                &method,
                Some(status),
                outcome,
                reason,
            );
        }
        tracing::debug!(
            instance = %self.instance.id,
            host = %self.target.host,
            %method,
            injected = injected.len(),
            generation = rules.generation,
            status,
            "https request"
        );
        response
    }
}

impl Instance {
    /// Adds an event about `credential` (an index into `rules`) to the usage trail.
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn record(
        &self,
        rules: &RuleSet,
        credential: usize,
        host: &str,
        method: &Method,
        status: Option<u16>,
        outcome: Outcome,
        reason: Option<&str>,
    ) {
        let Some(sink) = &self.shared.usage else {
            return;
        };
        let Some(info) = rules.credentials.get(credential) else {
            return;
        };
        if outcome != Outcome::Injected && outcome != Outcome::Test {
            tracing::warn!(instance = %self.id, credential = %info.name, %host, ?outcome, "credential use blocked");
        }
        sink.record(
            &self.id,
            UsageEvent {
                time: time::OffsetDateTime::now_utc(),
                credential: info.name.clone(),
                fingerprint: info.fingerprint.clone(),
                host: host.to_string(),
                method: method.to_string(),
                status,
                outcome,
                reason: reason.map(str::to_string),
            },
        );
    }

    /// Records a request the leak guard refused.
    fn record_leak(&self, rules: &RuleSet, credential: usize, host: &str, method: &Method) {
        self.record(
            rules,
            credential,
            host,
            method,
            None,
            Outcome::LeakBlocked,
            Some(REASON_LEAK),
        );
    }
}

/// Whether the guest's `Host` header names `host` (any port); a request without one does not.
fn host_agrees(headers: &HeaderMap, host: &str) -> bool {
    headers
        .get(header::HOST)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<Authority>().ok())
        .and_then(|a| canonical_host(a.host()))
        .is_some_and(|h| h == host)
}

/// The 403 for a request whose target or headers carry a guarded value (recorded), if it does.
fn leaky_head(
    instance: &Instance,
    rules: &RuleSet,
    guards: Option<&LeakCheck>,
    parts: &http::request::Parts,
    host: &str,
    method: &Method,
) -> Option<Response<ProxyBody>> {
    let guards = guards?;
    let uri = parts.uri.to_string();
    let credential = guards.find_in_head(uri.as_bytes(), &parts.headers)?;
    instance.record_leak(rules, credential, host, method);
    Some(text(StatusCode::FORBIDDEN, LEAK_RESPONSE))
}

/// Whether the destination name itself carries a value it may not receive (the name would go
/// to a resolver, and on to whoever serves its domain). Recorded, with the name withheld.
fn leaky_name(instance: &Instance, rules: &RuleSet, name: &str, method: &Method) -> bool {
    let Some(credential) = rules
        .guards_against(name)
        .and_then(|check| check.find(name.as_bytes()))
    else {
        return false;
    };
    instance.record_leak(rules, credential, WITHHELD_HOST, method);
    true
}

/// The guest's body, through the leak guard when there is anything to guard against. When the
/// guard trips, the attempt is recorded and the cell says which credential stopped it.
fn guarded(
    body: Incoming,
    guards: Option<LeakCheck>,
    instance: &Arc<Instance>,
    rules: &Arc<RuleSet>,
    host: &str,
    method: &Method,
) -> (RequestBody, Arc<OnceLock<usize>>) {
    let found = Arc::new(OnceLock::new());
    let body = body.map_err(|e| Box::new(e) as BoxError).boxed();
    let Some(guards) = guards else {
        return (body, found);
    };
    let (instance, rules, host, method) = (
        instance.clone(),
        rules.clone(),
        host.to_string(),
        method.clone(),
    );
    let on_found = Box::new(move |credential: usize| {
        instance.record_leak(&rules, credential, &host, &method);
    });
    (
        GuardedBody::new(body, guards, found.clone(), on_found).boxed(),
        found,
    )
}

/// An answer that began while the guest's body was still streaming (an upstream that replies
/// before reading everything): if the guard trips later, the answer is cut off, so the guest
/// never sees a clean success for a blocked request.
fn cut_if_found(response: Response<ProxyBody>, found: Arc<OnceLock<usize>>) -> Response<ProxyBody> {
    let (parts, inner) = response.into_parts();
    Response::from_parts(parts, CutOff { inner, found }.boxed())
}

struct CutOff {
    inner: ProxyBody,
    found: Arc<OnceLock<usize>>,
}

impl http_body::Body for CutOff {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<http_body::Frame<Bytes>, BoxError>>> {
        if self.found.get().is_some() {
            return std::task::Poll::Ready(Some(Err(Box::new(crate::guarded::LeakBlocked))));
        }
        std::pin::Pin::new(&mut self.inner).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.found.get().is_none() && self.inner.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.inner.size_hint()
    }
}

/// An absolute-form `http://` request: forwarded with hop-by-hop headers stripped and
/// nothing injected.
async fn forward_plain(
    req: Request<Incoming>,
    instance: &Arc<Instance>,
    slot: &Mutex<Option<Upstream>>,
) -> Response<ProxyBody> {
    let (mut parts, body) = req.into_parts();
    if parts.uri.scheme() != Some(&Scheme::HTTP) {
        return text(
            StatusCode::BAD_REQUEST,
            "expected an absolute http:// url or CONNECT",
        );
    }
    let Some((host, port, authority)) = parts.uri.authority().and_then(|a| {
        Some((
            canonical_host(a.host())?,
            a.port_u16().unwrap_or(80),
            a.clone(),
        ))
    }) else {
        return text(StatusCode::BAD_REQUEST, "invalid destination host");
    };
    let rules = instance.rules.load_full();
    let method = parts.method.clone();
    if leaky_name(instance, &rules, &host, &method) {
        return text(StatusCode::FORBIDDEN, LEAK_RESPONSE);
    }
    if !instance.may_reach(&host, port) {
        return text(StatusCode::FORBIDDEN, NOT_ALLOWED_RESPONSE);
    }
    strip_hop_by_hop(&mut parts.headers);
    // Credentials go over HTTPS only: plain HTTP to a credential's host is refused outright.
    let for_host = rules.credentials_for(&host);
    if !for_host.is_empty() {
        for credential in for_host {
            instance.record(
                &rules,
                credential,
                &host,
                &method,
                None,
                Outcome::Blocked,
                Some(REASON_PLAIN_HTTP),
            );
        }
        return text(StatusCode::FORBIDDEN, REASON_PLAIN_HTTP);
    }
    let guards = rules.guards_against(&host);
    if let Some(refused) = leaky_head(instance, &rules, guards.as_ref(), &parts, &host, &method) {
        return refused;
    }
    if !parts.headers.contains_key(header::HOST) {
        match HeaderValue::from_str(authority.as_str()) {
            Ok(value) => parts.headers.insert(header::HOST, value),
            Err(_) => return text(StatusCode::BAD_REQUEST, "invalid destination host"),
        };
    }
    parts.uri = origin_form(&parts.uri);
    parts.version = Version::HTTP_11;
    let (body, found) = guarded(body, guards, instance, &rules, &host, &method);
    let request = Request::from_parts(parts, body);
    // Resolved per request (cheap, and the loopback policy is checked every time).
    let target = match instance.shared.dialer.resolve(&host, port).await {
        Ok(addrs) => Target {
            host: host.clone(),
            port,
            addrs,
            tls: false,
        },
        Err(error) => return dial_failure(instance, &host, &error).0,
    };
    let (response, _) = send(slot, instance, &target, request).await;
    if found.get().is_some() {
        return text(StatusCode::FORBIDDEN, LEAK_RESPONSE);
    }
    let response = cut_if_found(response, found);
    tracing::debug!(
        instance = %instance.id,
        %host,
        %method,
        status = response.status().as_u16(),
        "plain http request (never injected)"
    );
    response
}

/// A reusable upstream connection and what it is connected to.
struct Upstream {
    host: String,
    port: u16,
    sender: SendRequest<RequestBody>,
}

/// Sends `request` to `target` over the connection in `slot` (opening one if there is none,
/// it is closed, or it goes elsewhere) and turns the answer into the guest's response. A
/// reused connection that turns out dead before the request was written is replaced once.
/// With the response, why the upstream gave none (the response is then the proxy's 502).
async fn send(
    slot: &Mutex<Option<Upstream>>,
    instance: &Instance,
    target: &Target,
    mut request: Request<RequestBody>,
) -> (Response<ProxyBody>, Option<&'static str>) {
    let mut slot = slot.lock().await;
    let mut retried = false;
    loop {
        let reusable = slot
            .take()
            .filter(|u| u.host == target.host && u.port == target.port && !u.sender.is_closed());
        let (mut upstream, fresh) = match reusable {
            Some(upstream) => (upstream, false),
            None => match instance.shared.dialer.open(target, &instance.tasks).await {
                Ok(sender) => (
                    Upstream {
                        host: target.host.clone(),
                        port: target.port,
                        sender,
                    },
                    true,
                ),
                Err(error) => return dial_failure(instance, &target.host, &error),
            },
        };
        if upstream.sender.ready().await.is_err() {
            if fresh || retried {
                return (
                    text(StatusCode::BAD_GATEWAY, "upstream connection failed"),
                    Some(REASON_UPSTREAM_CLOSED),
                );
            }
            retried = true;
            continue;
        }
        match upstream.sender.try_send_request(request).await {
            Ok(response) => {
                *slot = Some(upstream);
                return (guest_response(response), None);
            }
            Err(mut error) => match error.take_message() {
                Some(unsent) if !fresh && !retried => {
                    request = unsent;
                    retried = true;
                }
                _ => {
                    let error = error.into_error();
                    tracing::warn!(instance = %instance.id, host = %target.host, %error, "upstream request failed");
                    return (
                        text(StatusCode::BAD_GATEWAY, "upstream request failed"),
                        Some(REASON_UPSTREAM_EXCHANGE),
                    );
                }
            },
        }
    }
}

fn guest_response(response: Response<Incoming>) -> Response<ProxyBody> {
    let (mut parts, body) = response.into_parts();
    strip_hop_by_hop(&mut parts.headers);
    parts.version = Version::HTTP_11;
    Response::from_parts(parts, body.map_err(|e| Box::new(e) as BoxError).boxed())
}

fn dial_failure(
    instance: &Instance,
    host: &str,
    error: &DialError,
) -> (Response<ProxyBody>, Option<&'static str>) {
    tracing::warn!(instance = %instance.id, %host, error = %ErrorChain(error), "upstream unreachable");
    match error {
        DialError::Forbidden => (
            text(StatusCode::FORBIDDEN, "destination not allowed"),
            Some(REASON_DESTINATION_REFUSED),
        ),
        _ => (
            text(StatusCode::BAD_GATEWAY, "upstream connect failed"),
            Some(REASON_UPSTREAM_UNREACHABLE),
        ),
    }
}

/// Removes hop-by-hop headers, including those the `Connection` header names.
fn strip_hop_by_hop(headers: &mut HeaderMap) {
    let listed: Vec<HeaderName> = headers
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .filter_map(|name| HeaderName::from_bytes(name.trim().as_bytes()).ok())
        .collect();
    for name in listed.iter().chain(HOP_BY_HOP.iter()) {
        headers.remove(name);
    }
}

/// The path and query of `uri` (absolute-form or origin-form) as an origin-form URI.
fn origin_form(uri: &Uri) -> Uri {
    let path = uri
        .path_and_query()
        .cloned()
        .unwrap_or_else(|| PathAndQuery::from_static("/"));
    Uri::from(path)
}

/// `Host` for `host:port`, omitting the scheme's default port, bracketing IPv6.
fn host_header(host: &str, port: u16, default_port: u16) -> Option<HeaderValue> {
    let host = if host.contains(':') {
        format!("[{host}]")
    } else {
        host.to_string()
    };
    let value = if port == default_port {
        host
    } else {
        format!("{host}:{port}")
    };
    value.parse::<Authority>().ok()?;
    HeaderValue::from_str(&value).ok()
}

fn empty() -> ProxyBody {
    Full::new(Bytes::new())
        .map_err(|never| match never {})
        .boxed()
}

/// A response the proxy makes itself; `message` is a fixed text.
fn text(status: StatusCode, message: &'static str) -> Response<ProxyBody> {
    let body = Full::new(Bytes::from(format!("{message}\n")))
        .map_err(|never| match never {})
        .boxed();
    let mut response = Response::new(body);
    *response.status_mut() = status;
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    response
}

/// Displays an error and its sources on one line.
struct ErrorChain<'a>(&'a (dyn std::error::Error + 'static));

impl std::fmt::Display for ErrorChain<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}", self.0)?;
        let mut source = self.0.source();
        while let Some(s) = source {
            write!(f, ": {s}")?;
            source = s.source();
        }
        Ok(())
    }
}

/// What a "test credential" request found.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct TestOutcome {
    /// The upstream's status.
    pub status: u16,
    /// The credentials injected: name and fingerprint.
    pub injected: Vec<(String, String)>,
}

/// Bound on a whole "test credential" request.
const TEST_TIMEOUT: Duration = Duration::from_secs(20);

/// See [`crate::EgressProxy::test_request`].
pub(crate) async fn test_request(
    instance: &Arc<Instance>,
    url: &str,
) -> Result<TestOutcome, crate::EgressError> {
    use crate::EgressError::{TestFailed, TestRefused};
    let uri: Uri = url
        .trim()
        .parse()
        .map_err(|_| TestRefused(format!("{url:?} is not a URL")))?;
    if uri.scheme() != Some(&Scheme::HTTPS) {
        return Err(TestRefused(
            "the test URL must be https:// (credentials go over HTTPS only)".into(),
        ));
    }
    let (host, port) = uri
        .authority()
        .and_then(|a| Some((canonical_host(a.host())?, a.port_u16().unwrap_or(443))))
        .ok_or_else(|| TestRefused(format!("{url:?} has no valid host")))?;
    let rules = instance.rules.load_full();
    if rules.credentials_for(&host).is_empty() {
        return Err(TestRefused(format!(
            "no credential of this instance is injected for {host}; test a URL of a host its credentials name"
        )));
    }
    let addrs = instance
        .shared
        .dialer
        .resolve(&host, port)
        .await
        .map_err(|e| TestFailed(ErrorChain(&e).to_string()))?;
    let host_header =
        host_header(&host, port, 443).ok_or_else(|| TestRefused("invalid host".into()))?;
    let target = Target {
        host: host.clone(),
        port,
        addrs,
        tls: true,
    };
    let mut headers = HeaderMap::new();
    let injected = rules.apply(&host, &mut headers);
    headers.insert(header::HOST, host_header);
    headers.insert(
        header::USER_AGENT,
        HeaderValue::from_static("hypedeck-credential-test"),
    );
    let mut request = Request::new(empty());
    *request.uri_mut() = origin_form(&uri);
    *request.headers_mut() = headers;
    let exchange = async {
        let mut sender = instance
            .shared
            .dialer
            .open(&target, &instance.tasks)
            .await
            .map_err(|e| TestFailed(ErrorChain(&e).to_string()))?;
        sender
            .ready()
            .await
            .map_err(|e| TestFailed(ErrorChain(&e).to_string()))?;
        sender
            .send_request(request)
            .await
            .map_err(|e| TestFailed(ErrorChain(&e).to_string()))
    };
    let response = tokio::time::timeout(TEST_TIMEOUT, exchange)
        .await
        .map_err(|_| TestFailed(format!("no answer within {} s", TEST_TIMEOUT.as_secs())))??;
    let status = response.status().as_u16();
    let method = Method::GET;
    for credential in injected.iter().copied() {
        instance.record(
            &rules,
            credential,
            &host,
            &method,
            Some(status),
            Outcome::Test,
            None,
        );
    }
    Ok(TestOutcome {
        status,
        injected: injected
            .iter()
            .filter_map(|&i| rules.credentials.get(i))
            .map(|c| (c.name.clone(), c.fingerprint.clone()))
            .collect(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hop_by_hop_headers_and_connection_listed_ones_are_removed() {
        let mut h = HeaderMap::new();
        h.insert(
            header::CONNECTION,
            HeaderValue::from_static("keep-alive, X-Drop"),
        );
        h.insert("keep-alive", HeaderValue::from_static("timeout=5"));
        h.insert("x-drop", HeaderValue::from_static("1"));
        h.insert("proxy-authorization", HeaderValue::from_static("Basic x"));
        h.insert("proxy-connection", HeaderValue::from_static("keep-alive"));
        h.insert(
            header::TRANSFER_ENCODING,
            HeaderValue::from_static("chunked"),
        );
        h.insert(
            header::AUTHORIZATION,
            HeaderValue::from_static("Bearer mock"),
        );
        h.insert("x-keep", HeaderValue::from_static("1"));
        strip_hop_by_hop(&mut h);
        let mut left: Vec<_> = h.keys().map(|k| k.as_str()).collect();
        left.sort_unstable();
        assert_eq!(left, ["authorization", "x-keep"]);
    }

    #[test]
    fn origin_form_and_host_header() {
        let abs: Uri = "http://example.com:8080/a/b?c=d".parse().unwrap();
        assert_eq!(origin_form(&abs), "/a/b?c=d");
        let bare: Uri = "http://example.com".parse().unwrap();
        assert_eq!(origin_form(&bare), "/");
        assert_eq!(
            host_header("api.openai.com", 443, 443).unwrap(),
            "api.openai.com"
        );
        assert_eq!(
            host_header("api.openai.com", 8443, 443).unwrap(),
            "api.openai.com:8443"
        );
        assert_eq!(host_header("::1", 8443, 443).unwrap(), "[::1]:8443");
        assert_eq!(host_header("10.0.0.1", 443, 443).unwrap(), "10.0.0.1");
    }
}
