//! What the router does for every route (bearer auth, unknown routes and methods, CORS, body
//! limits), and the contract-fuzzing findings that span several routes.

use super::*;

#[tokio::test]
async fn auth_failures_match_upstream() {
    let r = rig();
    let cases = [
        (
            None,
            "security requirements failed: authorization header required",
        ),
        (
            Some("Basic abc"),
            "security requirements failed: invalid authorization header format",
        ),
        (
            Some("Bearer"),
            "security requirements failed: invalid authorization header format",
        ),
        (
            Some("Bearer wrong"),
            "security requirements failed: invalid token",
        ),
        (
            Some("Bearer hdk_test_tokeX"),
            "security requirements failed: invalid token",
        ),
    ];
    for (auth, message) in cases {
        for (method, uri) in [
            ("GET", "/instances"),
            ("POST", "/instances"),
            ("DELETE", "/instances/x"),
        ] {
            let a = r.call(method, uri, Some("{}"), auth).await;
            assert_eq!(
                a.status,
                StatusCode::UNAUTHORIZED,
                "{method} {uri} {auth:?}"
            );
            assert_eq!(a.json, error("Unauthorized", message));
        }
    }
    let ok = r
        .call("GET", "/instances", None, Some(&format!("bearer {TOKEN}")))
        .await;
    assert_eq!((ok.status, ok.json), (StatusCode::OK, json!([])));
}

#[tokio::test]
async fn unknown_routes_methods_and_cors() {
    let r = rig();
    let a = r.authed("GET", "/nope", None).await;
    assert_eq!(
        (a.status, a.json["code"].as_str()),
        (StatusCode::NOT_FOUND, Some("not_found"))
    );
    let a = r.authed("PUT", "/instances", None).await;
    assert_eq!(a.status, StatusCode::METHOD_NOT_ALLOWED);
    assert_eq!(a.json["code"], "Method Not Allowed");

    let preflight = r
        .app
        .clone()
        .oneshot(
            Request::builder()
                .method("OPTIONS")
                .uri("/instances/x")
                .header("origin", "tauri://localhost")
                .header("access-control-request-method", "PATCH")
                .header(
                    "access-control-request-headers",
                    "authorization,content-type,x-stainless-os",
                )
                .body(Body::empty())
                .unwrap(),
        )
        .await
        .unwrap();
    assert!(preflight.status().is_success());
    let h = preflight.headers();
    // The desktop window's origin is echoed (only the app's and the UI's origins are).
    assert_eq!(h["access-control-allow-origin"], "tauri://localhost");
    assert!(
        h["access-control-allow-methods"]
            .to_str()
            .unwrap()
            .contains("PATCH")
    );
    assert!(
        h["access-control-allow-headers"]
            .to_str()
            .unwrap()
            .contains("x-stainless-os")
    );
}

#[tokio::test]
async fn cors_answers_only_the_app_and_the_ui_pages() {
    let r = rig();
    for (origin, allowed) in [
        ("tauri://localhost", true),
        ("http://tauri.localhost", true),
        ("http://127.0.0.1:4173", true),
        ("http://localhost:1420", true),
        // Other loopback pages may be a guest's forwarded port.
        ("http://127.0.0.1:8080", false),
        ("http://localhost:5173", false),
        ("http://[::1]:8080", false),
        ("https://localhost", false),
        ("http://evil.example", false),
        ("http://127.0.0.1.evil.example", false),
        ("http://localhost.evil.example:80", false),
        ("null", false),
    ] {
        let req = Request::builder()
            .method("OPTIONS")
            .uri("/instances")
            .header("origin", origin)
            .header("access-control-request-method", "GET")
            .header("access-control-request-headers", "authorization")
            .body(Body::empty())
            .unwrap();
        let res = r.app.clone().oneshot(req).await.unwrap();
        let echoed = res
            .headers()
            .get("access-control-allow-origin")
            .map(|v| v.to_str().unwrap().to_string());
        assert_eq!(
            echoed.as_deref() == Some(origin),
            allowed,
            "{origin}: {echoed:?}"
        );
    }
    assert!(crate::origin_allowed(
        "https://ui.example.com",
        &["https://ui.example.com".to_string()]
    ));
}

#[tokio::test]
async fn oversized_bodies_are_a_json_413_and_nothing_is_created() {
    let r = rig();
    let big = format!(
        r#"{{"name":"a","image":"alpine","env":{{"K":"{}"}}}}"#,
        "x".repeat(2 * 1024 * 1024)
    );
    // Declared length, and a chunked body of unknown length (refused by the extractor).
    let declared = r
        .call(
            "POST",
            "/instances",
            Some(&big),
            Some(&format!("Bearer {TOKEN}")),
        )
        .await;
    let chunks: Vec<Result<Vec<u8>, std::io::Error>> = big
        .as_bytes()
        .chunks(64 * 1024)
        .map(|c| Ok(c.to_vec()))
        .collect();
    let req = Request::builder()
        .method("POST")
        .uri("/instances")
        .header("authorization", format!("Bearer {TOKEN}"))
        .header("content-type", "application/json")
        .body(Body::from_stream(futures_util::stream::iter(chunks)))
        .unwrap();
    let res = r.app.clone().oneshot(req).await.unwrap();
    let status = res.status();
    let bytes = axum::body::to_bytes(res.into_body(), usize::MAX)
        .await
        .unwrap();
    let chunked: Value = serde_json::from_slice(&bytes).unwrap();
    for (status, json) in [(declared.status, declared.json), (status, chunked)] {
        assert_eq!(status, StatusCode::PAYLOAD_TOO_LARGE);
        assert_eq!(
            json,
            error(
                "invalid_request",
                "invalid request: the request body is larger than 1024 KiB"
            )
        );
    }
    assert_eq!(r.instance_dirs(), 0);
}

/// What contract fuzzing (tests/sdk/contract.test.mjs) found, pinned: tag filters are
/// validated and applied on every list, explicit nulls and out-of-range policy numbers are
/// schema errors, a registry token that cannot be a header is refused (it used to panic the
/// handler), and the refusal never quotes it.
#[tokio::test]
async fn fuzzing_findings_stay_fixed() {
    let r = rig();
    for (name, tags) in [("a", json!({"team": "x"})), ("b", json!({"team": "y"}))] {
        let v = r
            .authed(
                "POST",
                "/volumes",
                Some(json!({"name": name, "size_gb": 1, "tags": tags})),
            )
            .await;
        assert_eq!(v.status, StatusCode::CREATED, "{}", v.text);
    }
    let listed = r.authed("GET", "/volumes?tags[team]=y", None).await;
    assert_eq!(listed.status, StatusCode::OK);
    let names: Vec<&str> = listed
        .json
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["b"]);
    // The `Tags` schema's maxProperties: 50 pairs match, a 51st is refused.
    let many = |n: usize| {
        (0..n)
            .map(|i| format!("tags[k{i}]=v"))
            .collect::<Vec<_>>()
            .join("&")
    };
    let fifty = r
        .authed("GET", &format!("/volumes?{}", many(50)), None)
        .await;
    assert_eq!(fifty.status, StatusCode::OK, "{}", fifty.text);
    let too_many = r
        .authed("GET", &format!("/snapshots?{}", many(51)), None)
        .await;
    assert_eq!(
        too_many.json["message"],
        "parameter \"tags\" in query has an error: maximum number of properties is 50"
    );
    for uri in ["/volumes", "/images", "/instances", "/snapshots"] {
        let bad = r
            .authed("GET", &format!("{uri}?tags[te%24m]=y"), None)
            .await;
        assert_eq!(bad.status, StatusCode::BAD_REQUEST, "{uri}");
        assert_eq!(bad.json["code"], "Bad Request");
        assert!(
            bad.json["message"]
                .as_str()
                .unwrap()
                .starts_with("parameter \"tags\" in query has an error: property name \"te$m\""),
            "{}",
            bad.text
        );
    }

    let twice = r
        .authed("GET", "/volumes?tags[team]=x&tags[team]=y", None)
        .await;
    assert_eq!(twice.status, StatusCode::BAD_REQUEST);
    assert_eq!(
        twice.json["message"],
        "parameter \"tags\" in query has an error: property \"team\" is given more than once"
    );

    let null_id = r
        .authed(
            "POST",
            "/volumes",
            Some(json!({"name": "c", "size_gb": 1, "id": null})),
        )
        .await;
    assert_eq!(null_id.status, StatusCode::BAD_REQUEST);
    assert!(
        null_id.json["message"]
            .as_str()
            .unwrap()
            .ends_with("Error at \"/id\": Value is not nullable")
    );

    let a = r
        .authed(
            "POST",
            "/instances",
            Some(json!({"name": "web", "image": "alpine"})),
        )
        .await;
    let id = a.json["id"].as_str().unwrap().to_string();
    let level = r
        .authed(
            "POST",
            &format!("/instances/{id}/standby"),
            Some(json!({"compression": {"enabled": true, "level": 20}})),
        )
        .await;
    assert_eq!(level.status, StatusCode::BAD_REQUEST, "{}", level.text);
    assert!(
        level.json["message"]
            .as_str()
            .unwrap()
            .ends_with("Error at \"/compression/level\": number must be at most 19")
    );
    let policy = r
        .authed(
            "POST",
            "/instances",
            Some(json!({"name": "hc", "image": "alpine", "health_check": {"http": {"port": 0}}})),
        )
        .await;
    assert_eq!(policy.status, StatusCode::BAD_REQUEST, "{}", policy.text);
    assert!(
        policy.json["message"]
            .as_str()
            .unwrap()
            .ends_with("Error at \"/health_check/http/port\": number must be at least 1")
    );

    let token = "tok\nen-must-not-echo";
    let pull = r
        .authed(
            "POST",
            "/images",
            Some(json!({"name": "alpine", "credentials": {"registry_token": token}})),
        )
        .await;
    assert_eq!(pull.status, StatusCode::BAD_REQUEST, "{}", pull.text);
    assert_eq!(pull.json["code"], "invalid_request");
    assert!(!pull.text.contains("must-not-echo"));
}
