//! The usage trail and the leak guard, end to end through the proxy: real TLS on both sides,
//! reqwest as the guest, an echo server as the upstream.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::sync::{Arc, Mutex};

use base64::Engine as _;
use bytes::Bytes;
use common::*;
use http::StatusCode;
use hypedeck_egress::{Fingerprinter, Outcome, UsageEvent, UsageSink};

const SECRET: &str = "sk-fixture-0123456789abcdef";
const ROTATED: &str = "sk-fixture-rotated-9876543210";
const LEAK_TEXT: &str =
    "request blocked: it carries a credential value this host may not receive\n";

#[derive(Debug, Default)]
struct Trail(Mutex<Vec<(String, UsageEvent)>>);

impl UsageSink for Trail {
    fn record(&self, instance: &str, event: UsageEvent) {
        self.0.lock().unwrap().push((instance.to_string(), event));
    }
}

impl Trail {
    fn take(&self) -> Vec<UsageEvent> {
        self.0.lock().unwrap().drain(..).map(|(_, e)| e).collect()
    }
}

/// The data dir's fingerprints, as the daemon would hand them to the proxy.
fn fingerprints() -> Fingerprinter {
    Fingerprinter::from_key(&[0x42; 32])
}

fn fingerprint(value: &str) -> String {
    fingerprints().fingerprint(value)
}

async fn world_with_trail() -> (World, Arc<Trail>, reqwest::Client) {
    world_with_trail_for(API).await
}

/// A proxy whose one credential (`OPENAI_KEY`) is for `host`, its trail, and a guest client.
async fn world_with_trail_for(host: &str) -> (World, Arc<Trail>, reqwest::Client) {
    let trail = Arc::new(Trail::default());
    let sink = trail.clone();
    let world = World::with(move |o| {
        o.usage = Some(sink);
        o.fingerprints = Some(fingerprints());
    })
    .await;
    let addr = world.proxy.listen("vm-1", None).await.unwrap();
    world
        .proxy
        .set_rules(
            "vm-1",
            vec![credential(
                "OPENAI_KEY",
                "Authorization",
                &format!("Bearer {SECRET}"),
                SECRET,
                Some(&[host]),
            )],
        )
        .unwrap();
    let client = world.client(addr);
    (world, trail, client)
}

#[tokio::test]
async fn each_injection_is_recorded_with_host_status_and_fingerprint_never_the_value() {
    let (world, trail, client) = world_with_trail().await;
    let (status, body) = get_text(
        &client,
        &world.https_url(API, "/v1"),
        Some("Bearer mock-OPENAI_KEY"),
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(echoed(&body, "authorization"), [format!("Bearer {SECRET}")]);
    let events = trail.take();
    assert_eq!(events.len(), 1, "{events:?}");
    let e = &events[0];
    assert_eq!(
        (
            e.credential.as_str(),
            e.fingerprint.as_str(),
            e.host.as_str(),
            e.method.as_str(),
            e.status,
            e.outcome
        ),
        (
            "OPENAI_KEY",
            fingerprint(SECRET).as_str(),
            API,
            "GET",
            Some(200),
            Outcome::Injected
        )
    );

    // A rotation: the very next request carries, and records, the new fingerprint.
    world
        .proxy
        .set_rules(
            "vm-1",
            vec![credential(
                "OPENAI_KEY",
                "Authorization",
                &format!("Bearer {ROTATED}"),
                ROTATED,
                Some(&[API]),
            )],
        )
        .unwrap();
    let resp = client
        .post(world.https_url(API, "/v1/chat"))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status().as_u16(), 200);
    let events = trail.take();
    assert_eq!(events.len(), 1);
    assert_eq!(events[0].fingerprint, fingerprint(ROTATED));
    assert_ne!(fingerprint(ROTATED), fingerprint(SECRET));
    assert_eq!(events[0].fingerprint.len(), 16);
    assert_eq!(events[0].method, "POST");
    let json = serde_json::to_string(&events).unwrap();
    assert!(!json.contains(SECRET) && !json.contains(ROTATED), "{json}");
}

#[tokio::test]
async fn the_mock_sent_elsewhere_goes_out_as_is_and_is_recorded_as_blocked() {
    let (world, trail, client) = world_with_trail().await;
    let (status, body) = get_text(
        &client,
        &world.https_url(OTHER, "/"),
        Some("Bearer mock-OPENAI_KEY"),
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(echoed(&body, "authorization"), ["Bearer mock-OPENAI_KEY"]);
    let events = trail.take();
    assert_eq!(events.len(), 1, "{events:?}");
    assert_eq!(
        (events[0].outcome, events[0].host.as_str(), events[0].status),
        (Outcome::Blocked, OTHER, Some(200))
    );
    assert_eq!(
        events[0].reason.as_deref(),
        Some(hypedeck_egress::REASON_HOST_NOT_ALLOWED)
    );
    // A request without the mock to another host is nobody's business.
    get_text(&client, &world.https_url(OTHER, "/"), None).await;
    assert!(trail.take().is_empty());
}

#[tokio::test]
async fn plain_http_to_a_credential_host_is_refused_and_recorded() {
    let (world, trail, client) = world_with_trail().await;
    let (status, body) = get_text(
        &client,
        &world.http_url(API, "/v1"),
        Some("Bearer mock-OPENAI_KEY"),
    )
    .await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    assert_eq!(
        body,
        "plain http to a credential host is refused; use https\n"
    );
    let events = trail.take();
    assert_eq!(events.len(), 1);
    assert_eq!(
        (events[0].outcome, events[0].status),
        (Outcome::Blocked, None)
    );
    assert_eq!(
        events[0].reason.as_deref(),
        Some(hypedeck_egress::REASON_PLAIN_HTTP)
    );
    // Plain HTTP elsewhere is still forwarded (never injected).
    let (status, _) = get_text(&client, &world.http_url(PLAIN, "/"), None).await;
    assert_eq!(status, StatusCode::OK);
}

#[tokio::test]
async fn the_real_value_to_another_host_is_blocked_wherever_it_hides() {
    let (world, trail, client) = world_with_trail().await;
    let other = world.https_url(OTHER, "/echo-body");
    let basic = base64::engine::general_purpose::STANDARD.encode(format!("user:{SECRET}"));
    let attempts: Vec<reqwest::RequestBuilder> = vec![
        client
            .get(world.https_url(OTHER, "/"))
            .header("x-debug", SECRET),
        client
            .get(world.https_url(OTHER, "/"))
            .header("authorization", format!("Basic {basic}")),
        client.get(world.https_url(OTHER, &format!("/?key={SECRET}"))),
        client
            .post(&other)
            .body(format!("{{\"leak\":\"{SECRET}\"}}")),
        client
            .get(world.http_url(PLAIN, "/"))
            .header("x-debug", SECRET),
    ];
    for (i, attempt) in attempts.into_iter().enumerate() {
        let resp = attempt.send().await.unwrap();
        assert_eq!(resp.status().as_u16(), 403, "attempt {i}");
        assert_eq!(resp.text().await.unwrap(), LEAK_TEXT, "attempt {i}");
        let events = trail.take();
        assert_eq!(events.len(), 1, "attempt {i}: {events:?}");
        assert_eq!(events[0].outcome, Outcome::LeakBlocked, "attempt {i}");
        assert_eq!(events[0].fingerprint, fingerprint(SECRET));
    }

    // Split across body chunks, deep inside a large upload: caught all the same.
    let mut payload = vec![b'a'; 1 << 20];
    payload[700_000..700_000 + SECRET.len()].copy_from_slice(SECRET.as_bytes());
    let chunks: Vec<Result<Bytes, std::io::Error>> = payload
        .chunks(64 * 1024 + 7)
        .map(|c| Ok(Bytes::copy_from_slice(c)))
        .collect();
    let body = reqwest::Body::wrap_stream(futures_util::stream::iter(chunks));
    // The echo upstream answers while the upload streams, so the guest gets a 403 (guard
    // tripped before the answer) or an answer cut off mid-way; never a clean echo, and the
    // upstream never gets the value.
    match client.post(&other).body(body).send().await {
        Ok(resp) if resp.status().as_u16() == 403 => {}
        Ok(resp) => {
            assert_eq!(resp.status().as_u16(), 200);
            // Cut off mid-way is fine; a complete answer must lack the value.
            if let Ok(echo) = resp.bytes().await {
                assert!(echo.len() < payload.len(), "the whole upload went through");
                assert!(!String::from_utf8_lossy(&echo).contains(SECRET));
            }
        }
        Err(_) => {} // aborted
    }
    let events = trail.take();
    assert_eq!(events.len(), 1, "{events:?}");
    assert_eq!(events[0].outcome, Outcome::LeakBlocked);

    // Its own host may receive it; the mock may go anywhere; clean uploads pass whole.
    let resp = client
        .post(world.https_url(API, "/echo-body"))
        .body(SECRET)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.text().await.unwrap(), SECRET);
    let resp = client
        .post(&other)
        .body("token=mock-OPENAI_KEY")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.text().await.unwrap(), "token=mock-OPENAI_KEY");
    let clean = vec![b'z'; 3 << 20];
    let resp = client
        .post(&other)
        .body(clean.clone())
        .send()
        .await
        .unwrap();
    assert!(resp.bytes().await.unwrap() == clean);
    let json = serde_json::to_string(&trail.take()).unwrap();
    assert!(!json.contains(SECRET), "{json}");
}

/// Percent-encodes every byte of `s`.
fn percent_all(s: &str) -> String {
    s.bytes().map(|b| format!("%{b:02X}")).collect()
}

fn hex(s: &str) -> String {
    s.bytes().map(|b| format!("{b:02x}")).collect()
}

#[tokio::test]
async fn the_real_value_is_blocked_in_names_targets_pieces_and_encodings() {
    const PHRASE: &str = "correct horse battery staple";
    let (world, trail, client) = world_with_trail().await;
    world
        .proxy
        .set_rules(
            "vm-1",
            vec![
                credential(
                    "OPENAI_KEY",
                    "Authorization",
                    &format!("Bearer {SECRET}"),
                    SECRET,
                    Some(&[API]),
                ),
                credential("PHRASE", "X-Phrase", PHRASE, PHRASE, Some(&[API])),
            ],
        )
        .unwrap();
    let url = |path: &str| world.https_url(OTHER, path);
    let (first, second) = SECRET.split_at(11);
    let attempts: Vec<(&str, &str, reqwest::RequestBuilder)> = vec![
        (
            "header name",
            "OPENAI_KEY",
            client.get(url("/")).header(format!("x-{SECRET}"), "1"),
        ),
        (
            "path, partly percent-encoded",
            "OPENAI_KEY",
            client.get(url(&format!("/files/{}/x", SECRET.replace('-', "%2D")))),
        ),
        (
            "query, percent-encoded",
            "OPENAI_KEY",
            client.get(url(&format!("/?a=1&key={}", percent_all(SECRET)))),
        ),
        (
            "query, + for space",
            "PHRASE",
            client.get(url("/search?q=correct+horse+battery+staple")),
        ),
        (
            "split across two headers",
            "OPENAI_KEY",
            client
                .get(url("/"))
                .header("x-a", first)
                .header("x-b", second),
        ),
        (
            "split across instances of one header",
            "OPENAI_KEY",
            client
                .get(url("/"))
                .header("x-part", first)
                .header("accept", "*/*")
                .header("x-part", second),
        ),
        (
            "split between a name and its value",
            "OPENAI_KEY",
            client.get(url("/")).header(format!("x-{first}"), second),
        ),
        (
            "hex in a header",
            "OPENAI_KEY",
            client.get(url("/")).header("x-id", hex(SECRET)),
        ),
        (
            "uppercase hex in the query",
            "OPENAI_KEY",
            client.get(url(&format!("/?id={}", hex(SECRET).to_uppercase()))),
        ),
        (
            "percent-encoded form body",
            "OPENAI_KEY",
            client
                .post(url("/echo-body"))
                .header("content-type", "application/x-www-form-urlencoded")
                .body(format!("a=1&leak={}", SECRET.replace('-', "%2d"))),
        ),
        (
            "hex body",
            "OPENAI_KEY",
            client.post(url("/echo-body")).body(hex(SECRET)),
        ),
    ];
    let mut missed = Vec::new();
    for (what, credential, attempt) in attempts {
        let status = attempt.send().await.unwrap().status().as_u16();
        let events = trail.take();
        let blocked = status == 403
            && events.len() == 1
            && events[0].outcome == Outcome::LeakBlocked
            && events[0].credential == credential
            && events[0].host == OTHER;
        if !blocked {
            missed.push(format!("{what}: {status}, {} events", events.len()));
        }
    }

    // A CONNECT whose host name carries the value: refused before the name is resolved, and
    // the name kept out of the trail.
    let addr = world.proxy.address("vm-1").unwrap();
    let authority = format!("{SECRET}.{OTHER}:{}", world.https.port());
    match connect_raw(addr, &authority).await {
        Err(resp) if resp.status() == StatusCode::FORBIDDEN => {}
        Err(resp) => missed.push(format!("connect host: {}", resp.status())),
        Ok(_) => missed.push("connect host: tunnel opened".into()),
    }
    let events = trail.take();
    let withheld = events.len() == 1
        && events[0].outcome == Outcome::LeakBlocked
        && events[0].host == hypedeck_egress::WITHHELD_HOST
        && events[0].method == "CONNECT";
    if !withheld {
        missed.push(format!("connect host: events {events:?}"));
    }

    // The same for a connection the sandbox network intercepted, by the name the guest
    // resolved or by its TLS server name.
    let leaky_name = format!("{SECRET}.{OTHER}");
    let dialled: std::net::SocketAddr = "198.18.0.7:443".parse().unwrap();
    let ca = world.proxy.ca_pem();
    for (resolved, sni) in [
        (Some(leaky_name.clone()), leaky_name.as_str()),
        (None, leaky_name.as_str()),
    ] {
        let (guest, ours) = tokio::io::duplex(64 * 1024);
        world
            .proxy
            .serve_transparent("vm-1", ours, dialled, resolved.clone());
        if tls_http(guest, sni, &ca, true).await.is_ok() {
            missed.push(format!("intercepted {resolved:?}: handshake went through"));
        }
        let events = trail.take();
        if !(events.len() == 1 && events[0].host == hypedeck_egress::WITHHELD_HOST) {
            missed.push(format!("intercepted {resolved:?}: events {events:?}"));
        }
    }
    assert!(missed.is_empty(), "not blocked: {missed:#?}");

    // Its own host may receive all of it; other hosts get clean traffic through.
    let resp = client
        .get(world.https_url(API, &format!("/?key={}", percent_all(SECRET))))
        .header("x-a", first)
        .header("x-b", second)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status().as_u16(), 200);
    let resp = client
        .get(url("/?q=correct+horse+battery&x=100%25"))
        .header("x-a", first)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status().as_u16(), 200);
    let json = serde_json::to_string(&trail.take()).unwrap();
    assert!(!json.contains(SECRET) && !json.contains(first), "{json}");
}

#[tokio::test]
async fn test_credential_requests_go_through_the_same_rules_from_the_host() {
    let (world, trail, _client) = world_with_trail().await;
    let outcome = world
        .proxy
        .test_request("vm-1", &world.https_url(API, "/v1/models"))
        .await
        .unwrap();
    assert_eq!(outcome.status, 200);
    assert_eq!(
        outcome.injected,
        [("OPENAI_KEY".to_string(), fingerprint(SECRET))]
    );
    let events = trail.take();
    assert_eq!(events.len(), 1);
    assert_eq!(
        (events[0].outcome, events[0].status, events[0].host.as_str()),
        (Outcome::Test, Some(200), API)
    );

    for (url, expected) in [
        (
            world.https_url(OTHER, "/"),
            "no credential of this instance is injected for other.test.local",
        ),
        (world.http_url(API, "/"), "the test URL must be https://"),
        ("not a url".to_string(), "is not a URL"),
    ] {
        let err = world
            .proxy
            .test_request("vm-1", &url)
            .await
            .unwrap_err()
            .to_string();
        assert!(err.contains(expected), "{url}: {err}");
    }
    assert!(trail.take().is_empty());
    assert!(
        world
            .proxy
            .test_request("vm-2", &world.https_url(API, "/"))
            .await
            .is_err()
    );
}

#[tokio::test]
async fn fingerprints_are_keyed_and_a_proxy_without_a_key_makes_its_own() {
    let world = World::new().await;
    world.proxy.attach("vm-1");
    world
        .proxy
        .set_rules(
            "vm-1",
            vec![credential(
                "K",
                "Authorization",
                SECRET,
                SECRET,
                Some(&[API]),
            )],
        )
        .unwrap();
    let outcome = world
        .proxy
        .test_request("vm-1", &world.https_url(API, "/"))
        .await
        .unwrap();
    let (_, own) = &outcome.injected[0];
    assert_eq!(own.len(), 16, "{own}");
    assert!(own.bytes().all(|b| b.is_ascii_hexdigit()), "{own}");
    // Not the data dir's key, and not an unkeyed hash anyone could recompute from a guess.
    assert_ne!(*own, fingerprint(SECRET));
    use sha2::Digest;
    let plain: String = sha2::Sha256::digest(SECRET.as_bytes())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    assert!(!plain.starts_with(&own[..8]), "{own}");
}

#[tokio::test]
async fn injection_needs_the_tls_name_and_host_header_to_agree_with_the_tunnel() {
    let (world, trail, _) = world_with_trail().await;
    let addr = world.proxy.address("vm-1").unwrap();
    let port = world.https.port();
    let ca = world.proxy.ca_pem();
    let real = format!("Bearer {SECRET}");

    // Everything agrees: injected.
    let mut tunnel = open_tunnel(addr, API, port, &ca).await;
    let (status, body) = tunnel_get(&mut tunnel, API, "/ok", "Bearer mock-K")
        .await
        .unwrap();
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(echoed(&body, "authorization"), [real.as_str()]);

    // A Host header naming another host on the credential's tunnel: refused, nothing sent.
    let (status, body) = tunnel_get(&mut tunnel, OTHER, "/host", "Bearer mock-K")
        .await
        .unwrap();
    assert_eq!(status, StatusCode::FORBIDDEN, "{body}");
    assert!(!body.contains(SECRET), "{body}");

    // A TLS server name that is not the CONNECT host: refused.
    let mut tunnel = open_tunnel_as(addr, API, port, &ca, OTHER).await;
    let (status, body) = tunnel_get(&mut tunnel, API, "/sni", "Bearer mock-K")
        .await
        .unwrap();
    assert_eq!(status, StatusCode::FORBIDDEN, "{body}");
    assert!(!body.contains(SECRET), "{body}");

    // A mismatch on a host no credential is for is not the proxy's business: forwarded.
    let mut tunnel = open_tunnel_as(addr, OTHER, port, &ca, API).await;
    let (status, body) = tunnel_get(&mut tunnel, OTHER, "/free", "Bearer mock-K")
        .await
        .unwrap();
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(echoed(&body, "authorization"), ["Bearer mock-K"]);

    // Each refusal is in the trail with its reason, never with the value.
    let events = trail.take();
    let refused: Vec<_> = events
        .iter()
        .filter(|e| e.reason.as_deref() == Some(hypedeck_egress::REASON_NAME_MISMATCH))
        .collect();
    assert_eq!(refused.len(), 2, "{events:?}");
    assert!(
        refused
            .iter()
            .all(|e| e.outcome == Outcome::Blocked && e.host == API)
    );
    assert!(!format!("{events:?}").contains(SECRET));
}

#[tokio::test]
async fn a_request_whose_upstream_is_down_is_recorded_as_failed_with_the_502() {
    let (world, trail, client) = world_with_trail_for(DOWN).await;
    let (status, _) = get_text(
        &client,
        &world.https_url(DOWN, "/v1"),
        Some("Bearer mock-OPENAI_KEY"),
    )
    .await;
    assert_eq!(status, StatusCode::BAD_GATEWAY);
    let events = trail.take();
    assert_eq!(events.len(), 1, "{events:?}");
    let e = &events[0];
    assert_eq!(
        (e.outcome, e.status, e.host.as_str(), e.method.as_str()),
        (Outcome::Failed, Some(502), DOWN, "GET")
    );
    assert_eq!(
        e.reason.as_deref(),
        Some(hypedeck_egress::REASON_UPSTREAM_UNREACHABLE)
    );
    assert_eq!(e.fingerprint, fingerprint(SECRET));
}
