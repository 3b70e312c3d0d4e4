//! `/snapshots` and `/instances/{id}/snapshots`: the edge's answers (the engine's rules are
//! tested in the engine; a real guest's disk in tests/vm/snapshots.test.mjs).

use super::*;

#[tokio::test]
async fn snapshot_routes_answer_with_upstreams_codes() {
    let r = rig();
    let a = r
        .authed(
            "POST",
            "/instances",
            Some(json!({"name": "snap", "image": "alpine"})),
        )
        .await;
    assert_eq!(a.status, StatusCode::CREATED, "{}", a.text);
    let s = r
        .authed(
            "POST",
            "/instances/snap/snapshots",
            Some(json!({"kind": "Stopped"})),
        )
        .await;
    assert_eq!(s.status, StatusCode::CONFLICT);
    assert_eq!(
        s.json,
        error(
            "conflict",
            "invalid state transition: stopped snapshot requires source in Stopped, got Running"
        )
    );
    let s = r.authed("POST", "/instances/snap/stop", None).await;
    assert_eq!(s.status, StatusCode::OK, "{}", s.text);
    let s = r
        .authed(
            "POST",
            "/instances/snap/snapshots",
            Some(json!({"kind": "Stopped", "name": "one"})),
        )
        .await;
    assert_eq!(s.status, StatusCode::CREATED, "{}", s.text);
    let id = s.json["id"].as_str().unwrap().to_string();
    // A taken name is 409 here, not the 400 of other `already_exists`.
    let s = r
        .authed(
            "POST",
            "/instances/snap/snapshots",
            Some(json!({"kind": "Stopped", "name": "one"})),
        )
        .await;
    assert_eq!(
        (s.status, s.json["code"].as_str()),
        (StatusCode::CONFLICT, Some("conflict"))
    );
    // The restore's body is required, like every body upstream's spec requires.
    let restore = format!("/instances/snap/snapshots/{id}/restore");
    let s = r.authed("POST", &restore, None).await;
    assert_eq!(
        s.json,
        error(
            "Bad Request",
            "request body has an error: value is required but missing"
        )
    );
    let s = r.authed("POST", &restore, Some(json!({}))).await;
    assert_eq!(
        (s.status, s.json["state"].as_str()),
        (StatusCode::OK, Some("Stopped")),
        "{}",
        s.text
    );
    let s = r.authed("GET", "/snapshots?kind=Sideways", None).await;
    assert_eq!(s.status, StatusCode::BAD_REQUEST);
    let s = r.authed("DELETE", &format!("/snapshots/{id}"), None).await;
    assert_eq!(s.status, StatusCode::NO_CONTENT);
    let s = r.authed("GET", &format!("/snapshots/{id}"), None).await;
    assert_eq!(s.json, error("not_found", "snapshot not found"));
}
