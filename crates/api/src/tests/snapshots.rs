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

#[tokio::test]
async fn fork_routes_answer_with_upstreams_codes() {
    let r = rig();
    let a = r
        .authed(
            "POST",
            "/instances",
            Some(json!({"name": "src", "image": "alpine", "tags": {"team": "a"}})),
        )
        .await;
    assert_eq!(a.status, StatusCode::CREATED, "{}", a.text);
    let s = r
        .authed("POST", "/instances/src/fork", Some(json!({"name": "kid"})))
        .await;
    assert_eq!(
        s.json,
        error(
            "invalid_state",
            "invalid state transition: cannot fork from state Running (set from_running=true to allow standby+restore flow)"
        )
    );
    assert_eq!(s.status, StatusCode::CONFLICT);
    let s = r.authed("POST", "/instances/src/fork", None).await;
    assert_eq!(s.status, StatusCode::BAD_REQUEST, "{}", s.text);
    let s = r
        .authed(
            "POST",
            "/instances/src/fork",
            Some(json!({"name": "Bad_Name"})),
        )
        .await;
    assert_eq!(s.status, StatusCode::BAD_REQUEST, "{}", s.text);
    let s = r
        .authed("POST", "/instances/nope/fork", Some(json!({"name": "kid"})))
        .await;
    assert_eq!(s.json, error("not_found", "instance not found"));
    // From Standby: a Standby fork by default (the saved VM too), or its disks only.
    let s = r.authed("POST", "/instances/src/standby", None).await;
    assert_eq!(s.json["state"], "Standby", "{}", s.text);
    let s = r
        .authed(
            "POST",
            "/instances/src/fork",
            Some(json!({"name": "saved"})),
        )
        .await;
    assert_eq!(
        (
            s.status,
            s.json["state"].as_str(),
            s.json["has_snapshot"].as_bool()
        ),
        (StatusCode::CREATED, Some("Standby"), Some(true)),
        "{}",
        s.text
    );
    let s = r.authed("DELETE", "/instances/saved", None).await;
    assert_eq!(s.status, StatusCode::NO_CONTENT);
    let s = r
        .authed(
            "POST",
            "/instances/src/fork",
            Some(json!({"name": "asleep", "target_state": "Stopped"})),
        )
        .await;
    assert_eq!(
        (s.status, s.json["state"].as_str()),
        (StatusCode::CREATED, Some("Stopped")),
        "{}",
        s.text
    );
    assert_eq!(s.json["has_snapshot"], false);
    let s = r.authed("DELETE", "/instances/asleep", None).await;
    assert_eq!(s.status, StatusCode::NO_CONTENT);
    let s = r.authed("POST", "/instances/src/restore", None).await;
    assert_eq!(s.status, StatusCode::OK, "{}", s.text);
    let s = r.authed("POST", "/instances/src/stop", None).await;
    assert_eq!(s.status, StatusCode::OK, "{}", s.text);

    let s = r
        .authed("POST", "/instances/src/fork", Some(json!({"name": "kid"})))
        .await;
    assert_eq!(s.status, StatusCode::CREATED, "{}", s.text);
    let src = &a.json;
    assert_ne!(s.json["id"], src["id"]);
    assert_eq!(s.json["name"], "kid");
    // The source's state by default, its settings, and where it came from.
    assert_eq!(s.json["state"], "Stopped");
    assert_eq!(s.json["tags"], json!({"team": "a"}));
    assert_eq!(
        s.json["forked_from"],
        json!({"source_instance_id": src["id"], "source_instance_name": "src"})
    );
    assert_eq!(s.json["started_at"], Value::Null);
    // A taken name: 409 `name_conflict` here (a create's is 400).
    let s = r
        .authed("POST", "/instances/src/fork", Some(json!({"name": "kid"})))
        .await;
    assert_eq!(s.status, StatusCode::CONFLICT);
    assert_eq!(
        s.json,
        error(
            "name_conflict",
            "instance already exists: instance name 'kid' already exists"
        )
    );

    let s = r
        .authed(
            "POST",
            "/instances/src/snapshots",
            Some(json!({"kind": "Stopped", "name": "base"})),
        )
        .await;
    assert_eq!(s.status, StatusCode::CREATED, "{}", s.text);
    let sid = s.json["id"].as_str().unwrap().to_string();
    let fork = format!("/snapshots/{sid}/fork");
    // A taken name is 409 `conflict` for a snapshot fork (upstream), checked before the rest.
    let s = r
        .authed(
            "POST",
            &fork,
            Some(json!({"name": "kid", "target_state": "Standby"})),
        )
        .await;
    assert_eq!(
        (s.status, s.json["code"].as_str()),
        (StatusCode::CONFLICT, Some("conflict"))
    );
    let s = r
        .authed(
            "POST",
            &fork,
            Some(json!({"name": "kid2", "target_state": "Standby"})),
        )
        .await;
    assert_eq!(
        s.json,
        error(
            "invalid_request",
            "invalid request: invalid target_state \"Standby\" for snapshot kind Stopped"
        )
    );
    let s = r
        .authed(
            "POST",
            "/snapshots/aaaaaaaaaaaaaaaaaaaaaaaa/fork",
            Some(json!({"name": "x"})),
        )
        .await;
    assert_eq!(s.json, error("not_found", "snapshot not found"));
    let s = r
        .authed(
            "POST",
            &fork,
            Some(json!({"name": "kid2", "target_state": "Running"})),
        )
        .await;
    assert_eq!(s.status, StatusCode::CREATED, "{}", s.text);
    assert_eq!(s.json["state"], "Running");
    assert_eq!(s.json["forked_from"]["snapshot_id"], json!(sid));
    assert_eq!(s.json["forked_from"]["source_instance_name"], "src");
}

#[tokio::test]
async fn snapshot_schedule_routes_answer_in_upstreams_shape() {
    let r = rig();
    let a = r
        .authed(
            "POST",
            "/instances",
            Some(json!({"name": "sched", "image": "alpine"})),
        )
        .await;
    assert_eq!(a.status, StatusCode::CREATED, "{}", a.text);
    let path = "/instances/sched/snapshot-schedule";
    let s = r.authed("GET", path, None).await;
    assert_eq!(s.json, error("not_found", "snapshot schedule not found"));
    let s = r.authed("PUT", path, None).await;
    assert_eq!(s.status, StatusCode::BAD_REQUEST);
    let s = r
        .authed(
            "PUT",
            path,
            Some(json!({"interval": "90s", "retention": {}})),
        )
        .await;
    assert_eq!(
        s.json,
        error(
            "invalid_request",
            "retention must include max_count or max_age"
        )
    );
    // An empty prefix breaks the name rule (the schema's pattern), like any other.
    let s = r
        .authed(
            "PUT",
            path,
            Some(json!({"interval": "90m", "name_prefix": "", "retention": {"max_count": 1}})),
        )
        .await;
    assert_eq!(s.status, StatusCode::BAD_REQUEST, "{}", s.text);
    let s = r
        .authed(
            "PUT",
            path,
            Some(json!({"interval": "90m", "retention": {"max_age": "48h"}})),
        )
        .await;
    assert_eq!(s.status, StatusCode::OK, "{}", s.text);
    let body = s.json.as_object().unwrap();
    assert_eq!(body["interval"], "1h30m0s");
    assert_eq!(
        body["retention"],
        json!({"max_count": 0, "max_age": "48h0m0s"})
    );
    assert_eq!(
        (
            &body["name_prefix"],
            &body["last_run_at"],
            &body["last_snapshot_id"],
            &body["last_error"]
        ),
        (&Value::Null, &Value::Null, &Value::Null, &Value::Null)
    );
    assert!(!body.contains_key("metadata"), "omitted when empty");
    assert_eq!(body["instance_id"], a.json["id"]);
    let s = r.authed("GET", path, None).await;
    assert_eq!(s.json.as_object().unwrap(), body);
    let s = r.authed("DELETE", path, None).await;
    assert_eq!(s.status, StatusCode::NO_CONTENT);
    let s = r.authed("DELETE", path, None).await;
    assert_eq!(s.json, error("not_found", "snapshot schedule not found"));
}

#[tokio::test]
async fn compression_settings_are_checked_with_upstreams_codes() {
    let r = rig();
    let a = r
        .authed(
            "POST",
            "/instances",
            Some(json!({"name": "zip", "image": "alpine"})),
        )
        .await;
    assert_eq!(a.status, StatusCode::CREATED, "{}", a.text);
    let s = r
        .authed(
            "POST",
            "/instances/zip/standby",
            Some(json!({"compression": {"enabled": true, "algorithm": "lz4", "level": 12}})),
        )
        .await;
    assert_eq!(
        s.json,
        error(
            "invalid_snapshot_compression",
            "level must be between 0 and 9 for lz4, got 12"
        )
    );
    let s = r
        .authed(
            "POST",
            "/instances/zip/standby",
            Some(json!({"compression_delay": "-5m"})),
        )
        .await;
    assert_eq!(
        s.json,
        error(
            "invalid_compression_delay",
            "compression_delay cannot be negative"
        )
    );
    let s = r
        .authed(
            "POST",
            "/instances/zip/snapshots",
            Some(json!({"kind": "Standby", "compression": {"enabled": true}})),
        )
        .await;
    assert_eq!(s.status, StatusCode::CREATED, "{}", s.text);
    assert_eq!(s.json["compression_state"], "compressing");
    assert_eq!(
        s.json["compression"],
        json!({"enabled": true, "algorithm": "zstd", "level": 1})
    );
}
