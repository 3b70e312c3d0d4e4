//! `/instances/{id}/stats` (upstream's `InstanceStats`), `/instances/{id}/stats/history` and
//! `/stats` (extensions).

use super::*;

#[tokio::test]
async fn stats_answer_in_upstreams_shape() {
    let r = rig();
    let a = r
        .authed(
            "POST",
            "/instances",
            Some(json!({"name": "s", "image": "alpine", "vcpus": 1, "size": "256MB"})),
        )
        .await;
    assert_eq!(a.status, StatusCode::CREATED, "{}", a.text);
    let s = r.authed("GET", "/instances/s/stats", None).await;
    assert_eq!(s.status, StatusCode::OK, "{}", s.text);
    let mut keys: Vec<&str> = s
        .json
        .as_object()
        .unwrap()
        .keys()
        .map(String::as_str)
        .collect();
    keys.sort_unstable();
    assert_eq!(
        keys,
        [
            "allocated_memory_bytes",
            "allocated_vcpus",
            "cpu_seconds",
            "instance_id",
            "instance_name",
            "memory_rss_bytes",
            "memory_utilization_ratio",
            "memory_vms_bytes",
            "network_rx_bytes",
            "network_tx_bytes"
        ]
    );
    assert_eq!(s.json["instance_id"], a.json["id"]);
    assert_eq!(s.json["allocated_memory_bytes"], 256 << 20);
    assert!(s.json["memory_rss_bytes"].as_i64().unwrap() > 0);

    let missing = r.authed("GET", "/instances/nope/stats", None).await;
    assert_eq!(missing.status, StatusCode::NOT_FOUND);
    // Upstream's resolver answers before the handler.
    assert_eq!(
        missing.json,
        json!({"code": "not_found", "message": "resource not found"})
    );
    assert_eq!(
        r.call("GET", "/instances/s/stats", None, None).await.status,
        StatusCode::UNAUTHORIZED
    );

    let h = r.authed("GET", "/instances/s/stats/history", None).await;
    assert_eq!(h.status, StatusCode::OK, "{}", h.text);
    assert_eq!(h.json["interval_ms"], 2000);
    assert_eq!(h.json["samples"], json!([]));
    let f = r.authed("GET", "/stats", None).await;
    assert_eq!(f.status, StatusCode::OK, "{}", f.text);
    assert_eq!(f.json["instances"][0]["instance_name"], "s");
    assert!(f.json["host_memory_bytes"].as_u64().unwrap() > 0);
}

#[tokio::test]
async fn memory_reclaim_answers_in_upstreams_shape() {
    let r = rig();
    let a = r
        .authed(
            "POST",
            "/instances",
            Some(json!({"name": "m", "image": "alpine", "size": "1GB"})),
        )
        .await;
    assert_eq!(a.status, StatusCode::CREATED, "{}", a.text);
    let ok = r
        .authed(
            "POST",
            "/resources/memory/reclaim",
            Some(json!({"reclaim_bytes": 268435456, "dry_run": true, "reason": "test"})),
        )
        .await;
    assert_eq!(ok.status, StatusCode::OK, "{}", ok.text);
    assert_eq!(ok.json["requested_reclaim_bytes"], 268435456);
    assert_eq!(ok.json["applied_reclaim_bytes"], 0);
    assert!(ok.json["host_available_bytes"].as_i64().unwrap() > 0);
    assert_eq!(
        ok.json["host_pressure_state"]
            .as_str()
            .map(|s| s == "healthy" || s == "pressure"),
        Some(true)
    );
    // The fake's VMs have no balloon.
    assert_eq!(ok.json["actions"][0]["status"], "unsupported");
    assert_eq!(ok.json["actions"][0]["instance_name"], "m");

    for (body, message) in [
        (
            json!({"reclaim_bytes": 1, "hold_for": "soon"}),
            "hold_for must be a valid duration",
        ),
        (
            json!({"reclaim_bytes": 1, "hold_for": "-1s"}),
            "hold_for must be non-negative",
        ),
        (
            json!({"reclaim_bytes": 1, "hold_for": "2h"}),
            "hold_for must be less than or equal to 1h",
        ),
    ] {
        let bad = r
            .authed("POST", "/resources/memory/reclaim", Some(body))
            .await;
        assert_eq!(bad.status, StatusCode::BAD_REQUEST);
        assert_eq!(bad.json, json!({"code": "bad_request", "message": message}));
    }
    let schema = r
        .authed(
            "POST",
            "/resources/memory/reclaim",
            Some(json!({"reclaim_bytes": -1})),
        )
        .await;
    assert_eq!(schema.status, StatusCode::BAD_REQUEST);
    assert_eq!(schema.json["code"], "Bad Request");
}
