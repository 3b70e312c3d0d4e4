//! The proxy end to end on 127.0.0.1: a real HTTPS upstream with its own CA, real TLS on
//! both sides, reqwest (and a raw hyper tunnel) as the guest.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::time::{Duration, Instant};

use bytes::Bytes;
use common::*;
use http::StatusCode;
use http_body_util::BodyExt;
use tokio::net::TcpStream;

#[tokio::test]
async fn injects_on_matching_https_only() {
    let world = World::new().await;
    let addr = world.proxy.listen("vm-1", None).await.unwrap();
    assert!(addr.ip().is_loopback());
    world
        .proxy
        .set_rules(
            "vm-1",
            vec![
                rule("Authorization", "Bearer real-1", Some(&[API])),
                rule("X-Org", "org-1", Some(&["*.test.local"])),
            ],
        )
        .unwrap();
    let client = world.client(addr);

    // Matching host: the guest's own Authorization is overwritten, other headers pass.
    let (status, body) = get_text(
        &client,
        &world.https_url(API, "/v1/models?x=1"),
        Some("Bearer mock-KEY"),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(echoed(&body, "authorization"), ["Bearer real-1"], "{body}");
    assert_eq!(echoed(&body, "x-org"), ["org-1"]);
    assert_eq!(echoed(&body, "path"), ["/v1/models?x=1"]);
    assert_eq!(
        echoed(&body, "host"),
        [format!("{API}:{}", world.https.port())]
    );
    assert!(echoed(&body, "proxy-connection").is_empty());

    // Another host: only the wildcard rule applies; the guest's value is left alone.
    let (status, body) = get_text(
        &client,
        &world.https_url(OTHER, "/"),
        Some("Bearer mock-KEY"),
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(echoed(&body, "authorization"), ["Bearer mock-KEY"]);
    assert_eq!(echoed(&body, "x-org"), ["org-1"]);

    // Plain HTTP through the proxy: forwarded, never injected, even for all-host rules.
    world
        .proxy
        .set_rules("vm-1", vec![rule("Authorization", "Bearer real-1", None)])
        .unwrap();
    let (status, body) = get_text(
        &client,
        &world.http_url(PLAIN, "/plain?q"),
        Some("Bearer mock-KEY"),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(echoed(&body, "authorization"), ["Bearer mock-KEY"]);
    assert_eq!(echoed(&body, "path"), ["/plain?q"]);
    assert_eq!(
        echoed(&body, "host"),
        [format!("{PLAIN}:{}", world.http.port())]
    );
}

#[tokio::test]
async fn no_rules_means_no_injection() {
    let world = World::new().await;
    let addr = world.proxy.listen("vm-1", None).await.unwrap();
    assert_eq!(world.proxy.rules_generation("vm-1"), Some(0));
    let client = world.client(addr);
    let (status, body) = get_text(&client, &world.https_url(API, "/"), None).await;
    assert_eq!(status, StatusCode::OK);
    assert!(echoed(&body, "authorization").is_empty(), "{body}");
}

#[tokio::test]
async fn rotation_applies_to_the_next_request_on_the_same_connection() {
    let world = World::new().await;
    let addr = world.proxy.listen("vm-1", None).await.unwrap();
    world.authorize("vm-1", "Bearer real-1");
    let mut tunnel = open_tunnel(addr, API, world.https.port(), &world.proxy.ca_pem()).await;

    let (_, first) = tunnel_get(&mut tunnel, API, "/one", "Bearer mock-K")
        .await
        .unwrap();
    assert_eq!(echoed(&first, "authorization"), ["Bearer real-1"]);

    world.authorize("vm-1", "Bearer real-2");
    assert_eq!(world.proxy.rules_generation("vm-1"), Some(2));
    let (_, second) = tunnel_get(&mut tunnel, API, "/two", "Bearer mock-K")
        .await
        .unwrap();
    assert_eq!(echoed(&second, "authorization"), ["Bearer real-2"]);
    // Same guest connection, and the proxy kept its upstream connection too.
    assert_eq!(echoed(&first, "conn"), echoed(&second, "conn"));

    // Reqwest's pool keeps its tunnel as well: rotation reaches it without reconnecting.
    let client = world.client(addr);
    let (_, a) = get_text(&client, &world.https_url(API, "/"), None).await;
    world.authorize("vm-1", "Bearer real-3");
    let (_, b) = get_text(&client, &world.https_url(API, "/"), None).await;
    assert_eq!(echoed(&a, "authorization"), ["Bearer real-2"]);
    assert_eq!(echoed(&b, "authorization"), ["Bearer real-3"]);
    assert_eq!(echoed(&a, "conn"), echoed(&b, "conn"));
}

#[tokio::test]
async fn instances_have_their_own_ports_and_values() {
    let world = World::new().await;
    let a = world.proxy.listen("vm-a", None).await.unwrap();
    let b = world.proxy.listen("vm-b", None).await.unwrap();
    assert_ne!(a.port(), b.port());
    assert_eq!(
        world.proxy.listen("vm-a", Some(1)).await.unwrap(),
        a,
        "idempotent"
    );
    assert_eq!(world.proxy.address("vm-b"), Some(b));
    world.authorize("vm-a", "Bearer value-a");
    world.authorize("vm-b", "Bearer value-b");
    for _ in 0..3 {
        let (_, body_a) = get_text(&world.client(a), &world.https_url(API, "/"), None).await;
        let (_, body_b) = get_text(&world.client(b), &world.https_url(API, "/"), None).await;
        assert_eq!(echoed(&body_a, "authorization"), ["Bearer value-a"]);
        assert_eq!(echoed(&body_b, "authorization"), ["Bearer value-b"]);
    }
    let err = world.proxy.set_rules("vm-c", vec![]).unwrap_err();
    assert_eq!(
        err.to_string(),
        "instance \"vm-c\" is not attached to the egress proxy"
    );
}

#[tokio::test]
async fn detach_closes_the_listener_and_open_tunnels() {
    let world = World::new().await;
    let addr = world.proxy.listen("vm-1", None).await.unwrap();
    world.authorize("vm-1", "Bearer real-1");
    let mut tunnel = open_tunnel(addr, API, world.https.port(), &world.proxy.ca_pem()).await;
    tunnel_get(&mut tunnel, API, "/", "x").await.unwrap();

    let started = Instant::now();
    world.proxy.detach("vm-1").await;
    assert!(started.elapsed() < Duration::from_secs(5));
    assert!(TcpStream::connect(addr).await.is_err(), "listener closed");
    assert!(
        tunnel_get(&mut tunnel, API, "/", "x").await.is_err(),
        "tunnel closed"
    );
    assert_eq!(world.proxy.address("vm-1"), None);
    assert_eq!(world.proxy.rules_generation("vm-1"), None);
    world.proxy.detach("vm-1").await; // idempotent

    // Re-attaching (same port) starts clean: no rules until set again.
    let again = world.proxy.listen("vm-1", Some(addr.port())).await.unwrap();
    assert_eq!(again, addr);
    let (_, body) = get_text(&world.client(again), &world.https_url(API, "/"), None).await;
    assert!(echoed(&body, "authorization").is_empty(), "{body}");
}

#[tokio::test]
async fn concurrent_swaps_are_atomic_and_immediately_visible() {
    let world = std::sync::Arc::new(World::new().await);
    let addr = world.proxy.listen("vm-1", None).await.unwrap();
    // Two headers per generation, so a mixed set would show as mismatched indices.
    let set = |i: usize| {
        vec![
            rule("Authorization", &format!("Bearer v{i}"), Some(&[API])),
            rule("X-Api-Key", &format!("key-v{i}"), Some(&[API])),
        ]
    };
    world.proxy.set_rules("vm-1", set(0)).unwrap();
    let mut tunnel = open_tunnel(addr, API, world.https.port(), &world.proxy.ca_pem()).await;

    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let swapper = {
        let world = world.clone();
        let stop = stop.clone();
        tokio::spawn(async move {
            let mut swaps = 0usize;
            while !stop.load(std::sync::atomic::Ordering::SeqCst) {
                swaps += 1;
                world.proxy.set_rules("vm-1", set(swaps % 20)).unwrap();
                tokio::time::sleep(Duration::from_millis(2)).await;
            }
            swaps
        })
    };
    let started = Instant::now();
    let mut seen = std::collections::BTreeSet::new();
    let mut conns = std::collections::BTreeSet::new();
    for _ in 0..200 {
        let (status, body) = tunnel_get(&mut tunnel, API, "/", "Bearer mock")
            .await
            .unwrap();
        assert_eq!(status, StatusCode::OK);
        let auth = echoed(&body, "authorization");
        let key = echoed(&body, "x-api-key");
        assert_eq!(auth.len(), 1, "{body}");
        assert_eq!(key.len(), 1, "{body}");
        let i: usize = auth[0].strip_prefix("Bearer v").unwrap().parse().unwrap();
        assert!(i < 20);
        assert_eq!(key[0], format!("key-v{i}"), "mixed rule sets: {body}");
        seen.insert(i);
        conns.extend(echoed(&body, "conn"));
    }
    stop.store(true, std::sync::atomic::Ordering::SeqCst);
    let swaps = swapper.await.unwrap();
    eprintln!(
        "200 requests in {:?} during {swaps} swaps; {} distinct generations seen",
        started.elapsed(),
        seen.len()
    );
    assert!(swaps > 10, "the swapper ran");
    assert!(seen.len() > 1, "requests saw several generations");
    assert_eq!(conns.len(), 1, "one keep-alive connection throughout");

    // Once set_rules returns, the very next request carries the new value.
    for n in 0..50 {
        world
            .proxy
            .set_rules(
                "vm-1",
                vec![
                    rule("Authorization", &format!("Bearer next-{n}"), Some(&[API])),
                    rule("X-Api-Key", &format!("key-next-{n}"), Some(&[API])),
                ],
            )
            .unwrap();
        let (_, body) = tunnel_get(&mut tunnel, API, "/", "Bearer mock")
            .await
            .unwrap();
        assert_eq!(echoed(&body, "authorization"), [format!("Bearer next-{n}")]);
        assert_eq!(echoed(&body, "x-api-key"), [format!("key-next-{n}")]);
    }
}

#[tokio::test]
async fn bodies_stream_through_untouched() {
    let world = World::new().await;
    let addr = world.proxy.listen("vm-1", None).await.unwrap();
    world
        .proxy
        .set_rules("vm-1", vec![rule("Authorization", "Bearer real-1", None)])
        .unwrap();
    let client = world.client(addr);
    let payload: Vec<u8> = (0..(4 << 20)).map(|i: u32| (i % 251) as u8).collect();
    for url in [
        world.https_url(API, "/echo-body"),
        world.http_url(PLAIN, "/echo-body"),
    ] {
        let chunks: Vec<Result<Bytes, std::io::Error>> = payload
            .chunks(64 * 1024)
            .map(|c| Ok(Bytes::copy_from_slice(c)))
            .collect();
        let body = reqwest::Body::wrap_stream(futures_util::stream::iter(chunks));
        let resp = client.post(&url).body(body).send().await.unwrap();
        assert_eq!(resp.status().as_u16(), 200);
        let got = resp.bytes().await.unwrap();
        assert_eq!(got.len(), payload.len(), "{url}");
        assert!(got == payload, "{url}");
    }
}

#[tokio::test]
async fn upstream_failures_are_short_502s() {
    let world = World::new().await;
    let addr = world.proxy.listen("vm-1", None).await.unwrap();
    world
        .proxy
        .set_rules(
            "vm-1",
            vec![rule("Authorization", "Bearer sk-never-shown", None)],
        )
        .unwrap();
    let client = world.client(addr);

    // Nothing listens at the destination.
    let (status, body) = get_text(&client, &format!("https://{DOWN}:443/"), None).await;
    assert_eq!(status, StatusCode::BAD_GATEWAY);
    assert_eq!(body, "upstream connect failed\n");
    let (status, _) = get_text(&client, &format!("http://{DOWN}/"), None).await;
    assert_eq!(status, StatusCode::BAD_GATEWAY);

    // The upstream's certificate is not trusted by the proxy.
    let stranger = UpstreamCa::new();
    let untrusted = start_upstream(Some(stranger.server_config(&["untrusted.test.local"]))).await;
    let world2 = World::with(|o| {
        o.resolve_overrides
            .insert("untrusted.test.local".into(), untrusted);
    })
    .await;
    let addr2 = world2.proxy.listen("vm-2", None).await.unwrap();
    let (status, body) =
        get_text(&world2.client(addr2), "https://untrusted.test.local/", None).await;
    assert_eq!(status, StatusCode::BAD_GATEWAY);
    assert!(!body.contains("sk-never-shown"));

    // A name that does not resolve: the CONNECT itself is refused.
    let refused = connect_raw(addr, "does-not-exist.invalid:443")
        .await
        .unwrap_err();
    assert_eq!(refused.status(), StatusCode::BAD_GATEWAY);
    let text = refused.into_body().collect().await.unwrap().to_bytes();
    assert_eq!(&text[..], b"upstream connect failed\n");
    // Not a proxy request at all.
    let refused = connect_raw(addr, "no-port.test.local").await.unwrap_err();
    assert_eq!(refused.status(), StatusCode::BAD_REQUEST);
}

#[tokio::test]
async fn loopback_destinations_follow_the_policy() {
    // Default (like upstream): allowed. An IP-literal destination gets an IP-SAN leaf and
    // IP-pattern injection.
    let open = World::new().await;
    let addr = open.proxy.listen("vm-1", None).await.unwrap();
    open.proxy
        .set_rules(
            "vm-1",
            vec![rule(
                "Authorization",
                "Bearer ip-rule",
                Some(&["127.0.0.1"]),
            )],
        )
        .unwrap();
    let (status, body) = get_text(
        &open.client(addr),
        &format!("https://127.0.0.1:{}/", open.https.port()),
        None,
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(echoed(&body, "authorization"), ["Bearer ip-rule"]);

    // Hardened: loopback names and literals are refused at CONNECT and for plain HTTP;
    // explicit resolve overrides still work.
    let closed = World::with(|o| o.allow_loopback = false).await;
    let addr = closed.proxy.listen("vm-1", None).await.unwrap();
    for authority in [
        format!("127.0.0.1:{}", closed.https.port()),
        format!("localhost:{}", closed.https.port()),
        format!("[::1]:{}", closed.https.port()),
    ] {
        let refused = connect_raw(addr, &authority).await.unwrap_err();
        assert_eq!(refused.status(), StatusCode::FORBIDDEN, "{authority}");
    }
    let client = closed.client(addr);
    let (status, _) = get_text(
        &client,
        &format!("http://127.0.0.1:{}/", closed.http.port()),
        None,
    )
    .await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    let (status, _) = get_text(&client, &closed.https_url(API, "/"), None).await;
    assert_eq!(status, StatusCode::OK);
}

#[tokio::test]
async fn invalid_rule_sets_are_rejected_whole() {
    let world = World::new().await;
    let addr = world.proxy.listen("vm-1", None).await.unwrap();
    world.authorize("vm-1", "Bearer good");
    let err = world
        .proxy
        .set_rules(
            "vm-1",
            vec![
                rule("Authorization", "Bearer new", Some(&[API])),
                rule("X-Key", "sk-bad\nvalue", Some(&[API])),
            ],
        )
        .unwrap_err();
    assert!(!format!("{err} {err:?}").contains("sk-bad"));
    assert_eq!(world.proxy.rules_generation("vm-1"), Some(1));
    let (_, body) = get_text(&world.client(addr), &world.https_url(API, "/"), None).await;
    assert_eq!(echoed(&body, "authorization"), ["Bearer good"]);
}

#[tokio::test]
async fn connect_is_answered_on_the_wire_like_upstream() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let world = World::new().await;
    let addr = world.proxy.listen("vm-1", None).await.unwrap();
    let mut stream = TcpStream::connect(addr).await.unwrap();
    let authority = format!("{API}:{}", world.https.port());
    stream
        .write_all(format!("CONNECT {authority} HTTP/1.1\r\nHost: {authority}\r\n\r\n").as_bytes())
        .await
        .unwrap();
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        assert_eq!(stream.read(&mut byte).await.unwrap(), 1, "closed early");
        head.push(byte[0]);
    }
    let head = String::from_utf8(head).unwrap();
    assert!(
        head.starts_with("HTTP/1.1 200 Connection Established\r\n"),
        "{head:?}"
    );
}

#[tokio::test]
async fn intercepted_connections_go_through_the_same_rules_bound_to_the_resolved_name() {
    let world = World::new().await;
    world.proxy.attach("vm-1");
    world.authorize("vm-1", "Bearer real-1");
    let ca = world.proxy.ca_pem();
    let dialled: std::net::SocketAddr = "198.18.0.7:443".parse().unwrap();
    let intercept = |name: Option<&str>| {
        let (guest, ours) = tokio::io::duplex(64 * 1024);
        world
            .proxy
            .serve_transparent("vm-1", ours, dialled, name.map(str::to_string));
        guest
    };

    // HTTPS to the name the guest resolved: terminated with the CA, injected like a tunnel.
    let mut sender = tls_http(intercept(Some(API)), API, &ca, false)
        .await
        .unwrap();
    let (status, body) = tunnel_get(&mut sender, API, "/direct", "Bearer mock-K")
        .await
        .unwrap();
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(echoed(&body, "authorization"), ["Bearer real-1"]);
    assert_eq!(echoed(&body, "path"), ["/direct"]);

    // A guest that does not trust the egress CA fails closed: no handshake, nothing sent.
    assert!(
        tls_http(intercept(Some(API)), API, &world.upstream_ca.pem, false)
            .await
            .is_err()
    );

    // A TLS server name other than the resolved name: closed before any request.
    assert!(
        tls_http(intercept(Some(API)), OTHER, &ca, true)
            .await
            .is_err()
    );

    // Plain HTTP on port 80: forwarded by its Host, which must be the resolved name.
    let plain: std::net::SocketAddr = "198.18.0.8:80".parse().unwrap();
    let http = |name: &str| {
        let (guest, ours) = tokio::io::duplex(64 * 1024);
        world
            .proxy
            .serve_transparent("vm-1", ours, plain, Some(name.to_string()));
        guest
    };
    let raw = |io, host: &'static str| async move {
        let (mut sender, conn) = hyper::client::conn::http1::handshake::<
            _,
            http_body_util::Full<Bytes>,
        >(hyper_util::rt::TokioIo::new(io))
        .await
        .unwrap();
        tokio::spawn(conn);
        let req = http::Request::get("/p?q=1")
            .header("host", host)
            .body(http_body_util::Full::new(Bytes::new()))
            .unwrap();
        let resp = sender.send_request(req).await.unwrap();
        let status = resp.status();
        let body = resp.into_body().collect().await.unwrap().to_bytes();
        (status, String::from_utf8_lossy(&body).into_owned())
    };
    let (status, body) = raw(http(PLAIN), PLAIN).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(echoed(&body, "path"), ["/p?q=1"]);
    let (status, body) = raw(http(PLAIN), OTHER).await;
    assert_eq!(status, StatusCode::FORBIDDEN, "{body}");
    // Plain HTTP to a credential's host is refused, as through the proxy.
    let (status, _) = raw(http(API), API).await;
    assert_eq!(status, StatusCode::FORBIDDEN);
}
