//! `/instances/{id}/{start,stop,standby,restore,wait,logs}`.

use super::*;

#[tokio::test]
async fn lifecycle_routes_follow_upstream_rules() {
    let r = rig();
    let a = r
        .authed(
            "POST",
            "/instances",
            Some(json!({"name": "life", "image": "alpine"})),
        )
        .await;
    assert_eq!(a.status, StatusCode::CREATED, "{}", a.text);

    // start on Running without overrides is a no-op; with overrides it is 409.
    let s = r
        .authed("POST", "/instances/life/start", Some(json!({})))
        .await;
    assert_eq!(
        (s.status, s.json["state"].as_str()),
        (StatusCode::OK, Some("Running"))
    );
    let s = r
        .authed("POST", "/instances/life/start", Some(json!({"cmd": ["x"]})))
        .await;
    assert_eq!(s.status, StatusCode::CONFLICT);
    assert_eq!(
        s.json,
        error(
            "invalid_state",
            "invalid state transition: cannot start from state Running, must be Stopped"
        )
    );
    let s = r.authed("POST", "/instances/life/start", None).await;
    assert_eq!(
        s.json,
        error(
            "Bad Request",
            "request body has an error: value is required but missing"
        )
    );

    let w = r
        .authed("GET", "/instances/life/wait?state=Running&timeout=1s", None)
        .await;
    assert_eq!(w.json, json!({"state": "Running", "timed_out": false}));

    let st = r.authed("POST", "/instances/life/stop", None).await;
    assert_eq!(
        (st.status, st.json["state"].as_str()),
        (StatusCode::OK, Some("Stopped")),
        "{}",
        st.text
    );
    assert!(st.json["stopped_at"].is_string());
    let st = r.authed("POST", "/instances/life/stop", None).await;
    assert_eq!(st.status, StatusCode::OK, "stop on Stopped is a no-op");

    // Waiting for Running on a Stopped instance returns at once (terminal for wait).
    let w = r
        .authed(
            "GET",
            "/instances/life/wait?state=Running&timeout=30s",
            None,
        )
        .await;
    assert_eq!(w.json, json!({"state": "Stopped", "timed_out": false}));
    for (q, code) in [
        ("state=Running&timeout=-1s", "invalid_timeout"),
        ("state=Running&timeout=0s", "invalid_timeout"),
        ("state=Unknown", "invalid_state"),
        ("state=running", "Bad Request"),
        ("", "Bad Request"),
    ] {
        let w = r
            .authed("GET", &format!("/instances/life/wait?{q}"), None)
            .await;
        assert_eq!(
            (w.status, w.json["code"].as_str()),
            (StatusCode::BAD_REQUEST, Some(code)),
            "{q}"
        );
    }

    let s = r
        .authed(
            "POST",
            "/instances/life/start",
            Some(json!({"cmd": ["echo", "again"]})),
        )
        .await;
    assert_eq!(
        (s.status, s.json["state"].as_str()),
        (StatusCode::OK, Some("Running")),
        "{}",
        s.text
    );
    assert_eq!(s.json["exit_code"], Value::Null);

    // The operations log streams as SSE with JSON-encoded lines; the app log hides markers.
    let l = r
        .authed("GET", "/instances/life/logs?source=hypeman&tail=2", None)
        .await;
    assert_eq!(l.status, StatusCode::OK);
    assert_eq!(l.headers["content-type"], "text/event-stream");
    let events: Vec<&str> = l.text.split("\n\n").filter(|e| !e.is_empty()).collect();
    assert_eq!(events.len(), 2, "{}", l.text);
    for e in &events {
        let data = e.strip_prefix("data: ").unwrap();
        let line: String = serde_json::from_str(data).unwrap();
        assert!(line.contains("[INFO]"), "{line}");
    }
    assert!(events[1].contains("vm started"), "{}", l.text);
    let app = r.authed("GET", "/instances/life/logs", None).await;
    assert_eq!(app.status, StatusCode::OK);
    assert!(!app.text.contains("HYPEMAN-PROGRAM-START"), "{}", app.text);
    let bad = r
        .authed("GET", "/instances/life/logs?source=kernel", None)
        .await;
    assert_eq!(bad.status, StatusCode::BAD_REQUEST);
    let missing = r
        .authed("GET", "/instances/life/logs?source=vmm", None)
        .await;
    assert_eq!(
        (missing.status, missing.json["code"].as_str()),
        (StatusCode::NOT_FOUND, Some("log_not_found"))
    );
    let none = r.authed("GET", "/instances/nope/logs", None).await;
    assert_eq!(none.status, StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn standby_and_restore_follow_upstream_rules() {
    let r = rig();
    let a = r
        .authed(
            "POST",
            "/instances",
            Some(json!({"name": "nap", "image": "alpine"})),
        )
        .await;
    assert_eq!(a.status, StatusCode::CREATED, "{}", a.text);
    let s = r.authed("POST", "/instances/nap/restore", None).await;
    assert_eq!(
        (s.status, s.json["state"].as_str()),
        (StatusCode::OK, Some("Running")),
        "restore on Running is a no-op"
    );

    let s = r.authed("POST", "/instances/nap/standby", None).await;
    assert_eq!(
        (s.status, s.json["state"].as_str()),
        (StatusCode::OK, Some("Standby")),
        "{}",
        s.text
    );
    assert_eq!(s.json["has_snapshot"], true);
    assert!(s.json["stopped_at"].is_string());
    let s = r
        .authed("POST", "/instances/nap/standby", Some(json!({})))
        .await;
    assert_eq!(s.json["state"], "Standby", "standby on Standby is a no-op");
    for (verb, message) in [
        (
            "stop",
            "invalid state transition: cannot stop from state Standby, must be Running or Initializing",
        ),
        (
            "start",
            "invalid state transition: cannot start from state Standby, must be Stopped",
        ),
    ] {
        let body = (verb == "start").then(|| json!({}));
        let x = r
            .authed("POST", &format!("/instances/nap/{verb}"), body)
            .await;
        assert_eq!(
            (x.status, x.json.clone()),
            (StatusCode::CONFLICT, error("invalid_state", message))
        );
    }
    let up = r.authed("POST", "/instances/nap/restore", None).await;
    assert_eq!(
        (up.status, up.json["state"].as_str()),
        (StatusCode::OK, Some("Running")),
        "{}",
        up.text
    );
    assert_eq!(up.json["has_snapshot"], false);

    r.authed("POST", "/instances/nap/stop", None).await;
    let x = r.authed("POST", "/instances/nap/restore", None).await;
    assert_eq!(
        x.json,
        error(
            "invalid_state",
            "invalid state transition: cannot restore from state Stopped"
        )
    );
    let x = r.authed("POST", "/instances/nap/standby", None).await;
    assert_eq!(
        x.json,
        error(
            "invalid_state",
            "invalid state transition: cannot standby from state Stopped"
        )
    );
}
