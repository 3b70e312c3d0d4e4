//! `/instances/{id}/auto-standby/status` and `/hold`, and the policy's checks.

use super::*;

#[tokio::test]
async fn auto_standby_routes_answer_in_upstreams_shape() {
    let r = rig();
    let bad = r
        .authed(
            "POST",
            "/instances",
            Some(json!({"name": "a", "image": "alpine", "auto_standby": {"enabled": true}})),
        )
        .await;
    assert_eq!(bad.status, StatusCode::BAD_REQUEST);
    assert_eq!(
        bad.json,
        json!({"code": "invalid_request", "message": "invalid request: auto_standby.idle_timeout is required when enabled"})
    );
    let a = r
        .authed(
            "POST",
            "/instances",
            Some(json!({"name": "a", "image": "alpine", "auto_standby": {"enabled": true, "idle_timeout": "300s", "ignore_destination_ports": [9000, 22, 22]}})),
        )
        .await;
    assert_eq!(a.status, StatusCode::CREATED, "{}", a.text);
    assert_eq!(
        a.json["auto_standby"],
        json!({"enabled": true, "idle_timeout": "5m0s", "ignore_destination_ports": [22, 9000]})
    );
    let s = r
        .authed("GET", "/instances/a/auto-standby/status", None)
        .await;
    assert_eq!(s.status, StatusCode::OK, "{}", s.text);
    for key in [
        "supported",
        "configured",
        "enabled",
        "eligible",
        "status",
        "reason",
        "active_inbound_connections",
        "tracking_mode",
    ] {
        assert!(s.json.get(key).is_some(), "{key} in {}", s.text);
    }
    assert_eq!(s.json["status"], "idle_countdown");
    assert_eq!(s.json["idle_timeout"], "5m0s");
    let h = r
        .authed("POST", "/instances/a/auto-standby/hold", None)
        .await;
    assert_eq!(h.status, StatusCode::OK, "{}", h.text);
    assert!(h.json["hold_until"].is_string(), "{}", h.text);

    let plain = r
        .authed(
            "POST",
            "/instances",
            Some(json!({"name": "b", "image": "alpine"})),
        )
        .await;
    assert_eq!(plain.status, StatusCode::CREATED);
    let s = r
        .authed("GET", "/instances/b/auto-standby/status", None)
        .await;
    assert_eq!(
        (s.json["status"].as_str(), s.json["reason"].as_str()),
        (Some("disabled"), Some("policy_missing"))
    );
    let h = r
        .authed("POST", "/instances/b/auto-standby/hold", None)
        .await;
    assert_eq!(
        h.status,
        StatusCode::OK,
        "a hold of an instance without a policy is a no-op"
    );

    let missing = r
        .authed("GET", "/instances/nope/auto-standby/status", None)
        .await;
    assert_eq!(missing.status, StatusCode::NOT_FOUND);
    assert_eq!(
        missing.json,
        json!({"code": "not_found", "message": "instance not found"})
    );
    let missing = r
        .authed("POST", "/instances/nope/auto-standby/hold", None)
        .await;
    assert_eq!(missing.status, StatusCode::NOT_FOUND);

    let st = r
        .authed("POST", "/instances/a/standby", Some(json!({})))
        .await;
    assert_eq!(st.status, StatusCode::OK, "{}", st.text);
    let h = r
        .authed("POST", "/instances/a/auto-standby/hold", None)
        .await;
    assert_eq!(h.status, StatusCode::CONFLICT);
    assert_eq!(
        h.json,
        json!({"code": "instance_in_standby", "message": "instance is in standby; restore it before connecting"})
    );
}
