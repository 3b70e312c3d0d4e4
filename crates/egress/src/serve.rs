//! One guest connection: an HTTP/1.1 forward proxy. `CONNECT host:port` opens a TLS tunnel
//! that the proxy terminates with a leaf for `host`, then serves the guest's requests inside
//! it one after the other, injecting headers; absolute-form `http://` requests are forwarded
//! as they are (never injected).
//!
//! Responses the proxy makes itself are short fixed texts (never a header, never a value).

use std::convert::Infallible;
use std::sync::Arc;
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
use tokio::net::TcpStream;
use tokio::sync::Mutex;
use tokio_rustls::TlsAcceptor;

use crate::proxy::Instance;
use crate::rules::canonical_host;
use crate::upstream::{DialError, Target};

type ProxyBody = BoxBody<Bytes, hyper::Error>;

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
pub(crate) async fn guest_connection(stream: TcpStream, instance: Arc<Instance>) {
    let _ = stream.set_nodelay(true);
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
    let addrs = match instance.shared.dialer.resolve(&host, port).await {
        Ok(addrs) => addrs,
        Err(error) => return dial_failure(&instance, &host, &error),
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
    let host_header = match host_header(&target.host, target.port, 443) {
        Some(value) => value,
        None => return,
    };
    let tunnel = Arc::new(Tunnel {
        target,
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

struct Tunnel {
    target: Target,
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
        strip_hop_by_hop(&mut parts.headers);
        // One load per request: the whole set of one generation applies, never a mix.
        let rules = self.instance.rules.load_full();
        let injected = rules.apply(&self.target.host, &mut parts.headers);
        parts.headers.insert(header::HOST, self.host_header.clone());
        parts.uri = origin_form(&parts.uri);
        parts.version = Version::HTTP_11;
        let request = Request::from_parts(parts, body);
        let response = send(&self.upstream, &self.instance, &self.target, request).await;
        tracing::debug!(
            instance = %self.instance.id,
            host = %self.target.host,
            %method,
            injected,
            generation = rules.generation,
            status = response.status().as_u16(),
            "https request"
        );
        response
    }
}

/// An absolute-form `http://` request: forwarded with hop-by-hop headers stripped and
/// nothing injected.
async fn forward_plain(
    req: Request<Incoming>,
    instance: &Instance,
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
    strip_hop_by_hop(&mut parts.headers);
    if !parts.headers.contains_key(header::HOST) {
        match HeaderValue::from_str(authority.as_str()) {
            Ok(value) => parts.headers.insert(header::HOST, value),
            Err(_) => return text(StatusCode::BAD_REQUEST, "invalid destination host"),
        };
    }
    parts.uri = origin_form(&parts.uri);
    parts.version = Version::HTTP_11;
    let method = parts.method.clone();
    let request = Request::from_parts(parts, body);
    // Resolved per request (cheap, and the loopback policy is checked every time).
    let target = match instance.shared.dialer.resolve(&host, port).await {
        Ok(addrs) => Target {
            host: host.clone(),
            port,
            addrs,
            tls: false,
        },
        Err(error) => return dial_failure(instance, &host, &error),
    };
    let response = send(slot, instance, &target, request).await;
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
    sender: SendRequest<Incoming>,
}

/// Sends `request` to `target` over the connection in `slot` (opening one if there is none,
/// it is closed, or it goes elsewhere) and turns the answer into the guest's response. A
/// reused connection that turns out dead before the request was written is replaced once.
async fn send(
    slot: &Mutex<Option<Upstream>>,
    instance: &Instance,
    target: &Target,
    mut request: Request<Incoming>,
) -> Response<ProxyBody> {
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
                return text(StatusCode::BAD_GATEWAY, "upstream connection failed");
            }
            retried = true;
            continue;
        }
        match upstream.sender.try_send_request(request).await {
            Ok(response) => {
                *slot = Some(upstream);
                return guest_response(response);
            }
            Err(mut error) => match error.take_message() {
                Some(unsent) if !fresh && !retried => {
                    request = unsent;
                    retried = true;
                }
                _ => {
                    let error = error.into_error();
                    tracing::warn!(instance = %instance.id, host = %target.host, %error, "upstream request failed");
                    return text(StatusCode::BAD_GATEWAY, "upstream request failed");
                }
            },
        }
    }
}

fn guest_response(response: Response<Incoming>) -> Response<ProxyBody> {
    let (mut parts, body) = response.into_parts();
    strip_hop_by_hop(&mut parts.headers);
    parts.version = Version::HTTP_11;
    Response::from_parts(parts, body.boxed())
}

fn dial_failure(instance: &Instance, host: &str, error: &DialError) -> Response<ProxyBody> {
    tracing::warn!(instance = %instance.id, %host, error = %ErrorChain(error), "upstream unreachable");
    match error {
        DialError::Forbidden => text(StatusCode::FORBIDDEN, "destination not allowed"),
        _ => text(StatusCode::BAD_GATEWAY, "upstream connect failed"),
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
