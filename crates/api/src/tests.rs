//! API tests: the real router over the engine with the fake hypervisor, called with `oneshot`.

use std::sync::Arc;

use axum::body::Body;
use axum::http::{Request, StatusCode};
use http_body_util::BodyExt;
use hypedeck_engine::fake::FakeHypervisor;
use hypedeck_engine::{Engine, EngineConfig};
use hypedeck_secrets::{MemoryStore, Sensitive};
use serde_json::{Value, json};
use tower::ServiceExt;

use crate::{ApiState, ApiToken, router};

const TOKEN: &str = "hdk_test_token";

struct Rig {
    dir: tempfile::TempDir,
    app: axum::Router,
}

fn rig_with(hypervisor: Result<Arc<dyn hypedeck_hypervisor::Hypervisor>, String>) -> Rig {
    let dir = tempfile::tempdir().unwrap();
    let engine = Engine::new(EngineConfig {
        paths: hypedeck_store::Paths::new(dir.path()),
        secrets: Arc::new(MemoryStore::new()),
        hypervisor,
        alternatives: Vec::new(),
        guest: None,
    });
    let app = router(ApiState {
        engine: Arc::new(engine),
        token: ApiToken::new(Sensitive::new(TOKEN.to_string())),
    });
    Rig { dir, app }
}

fn rig() -> Rig {
    rig_with(Ok(FakeHypervisor::new()))
}

struct Answer {
    status: StatusCode,
    headers: axum::http::HeaderMap,
    json: Value,
    text: String,
}

impl Rig {
    async fn call(
        &self,
        method: &str,
        uri: &str,
        body: Option<&str>,
        auth: Option<&str>,
    ) -> Answer {
        let mut req = Request::builder().method(method).uri(uri);
        if let Some(a) = auth {
            req = req.header("authorization", a);
        }
        if body.is_some() {
            req = req.header("content-type", "application/json");
        }
        let req = req
            .body(
                body.map(|b| Body::from(b.to_string()))
                    .unwrap_or_else(Body::empty),
            )
            .unwrap();
        let res = self.app.clone().oneshot(req).await.unwrap();
        let status = res.status();
        let headers = res.headers().clone();
        let bytes = res.into_body().collect().await.unwrap().to_bytes();
        let text = String::from_utf8_lossy(&bytes).to_string();
        let json = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
        Answer {
            status,
            headers,
            json,
            text,
        }
    }

    async fn authed(&self, method: &str, uri: &str, body: Option<Value>) -> Answer {
        let body = body.map(|b| b.to_string());
        self.call(
            method,
            uri,
            body.as_deref(),
            Some(&format!("Bearer {TOKEN}")),
        )
        .await
    }

    fn instance_dirs(&self) -> usize {
        std::fs::read_dir(self.dir.path().join("instances"))
            .map(|d| d.count())
            .unwrap_or(0)
    }
}

fn error(code: &str, message: &str) -> Value {
    json!({"code": code, "message": message})
}

#[tokio::test]
async fn health_and_spec_need_no_auth() {
    let r = rig();
    let a = r.call("GET", "/health", None, None).await;
    assert_eq!(
        (a.status, a.json.clone()),
        (StatusCode::OK, json!({"status": "ok"}))
    );
    let a = r.call("GET", "/spec.yaml", None, None).await;
    assert_eq!(a.status, StatusCode::OK);
    assert_eq!(a.headers["content-type"], "application/vnd.oai.openapi");
    assert!(a.text.starts_with("openapi: 3.1.0"));
}

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
async fn create_get_list_delete() {
    let r = rig();
    let a = r
        .authed(
            "POST",
            "/instances",
            Some(json!({"name": "web", "image": "alpine", "tags": {"team": "a"}})),
        )
        .await;
    assert_eq!(a.status, StatusCode::CREATED, "{}", a.text);
    let id = a.json["id"].as_str().unwrap().to_string();
    assert_eq!(a.json["state"], "Running");
    assert_eq!(a.json["size"], "1024.0 MB");
    assert_eq!(a.json["overlay_size"], "10.0 GB");
    assert_eq!(a.json["hotplug_size"], "0 B");
    assert_eq!(a.json["hypervisor"], "qemu");
    assert_eq!(a.json["exit_code"], Value::Null);
    assert_eq!(a.json["network"]["enabled"], true);
    assert_eq!(a.json["network"]["name"], "default");
    assert!(
        a.json["network"]["ip"]
            .as_str()
            .unwrap()
            .starts_with("10.100."),
        "{}",
        a.text
    );
    assert!(
        a.json["network"]["mac"]
            .as_str()
            .unwrap()
            .starts_with("02:00:00:"),
        "{}",
        a.text
    );
    assert_eq!(a.json["health_status"]["status"], "disabled");

    for key in [id.as_str(), "web", &id[..5]] {
        let g = r.authed("GET", &format!("/instances/{key}"), None).await;
        assert_eq!(
            (g.status, g.json["id"].as_str()),
            (StatusCode::OK, Some(id.as_str())),
            "{key}"
        );
    }
    let l = r
        .authed("GET", "/instances?state=Running&tags%5Bteam%5D=a", None)
        .await;
    assert_eq!(l.json.as_array().unwrap().len(), 1);
    let l = r.authed("GET", "/instances?tags[team]=b", None).await;
    assert_eq!(l.json, json!([]));
    let l = r.authed("GET", "/instances?state=Stopped", None).await;
    assert_eq!(l.json, json!([]));
    let bad = r.authed("GET", "/instances?state=running", None).await;
    assert_eq!(bad.status, StatusCode::BAD_REQUEST);
    assert_eq!(bad.json["code"], "Bad Request");
    assert!(
        bad.json["message"]
            .as_str()
            .unwrap()
            .starts_with("parameter \"state\" in query has an error")
    );

    let d = r.authed("DELETE", &format!("/instances/{id}"), None).await;
    assert_eq!((d.status, d.text.as_str()), (StatusCode::NO_CONTENT, ""));
    let g = r.authed("GET", &format!("/instances/{id}"), None).await;
    assert_eq!(
        (g.status, g.json),
        (
            StatusCode::NOT_FOUND,
            error("not_found", "resource not found")
        )
    );
    assert_eq!(g.headers["x-should-retry"], "false");
    let d = r.authed("DELETE", &format!("/instances/{id}"), None).await;
    assert_eq!(d.status, StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn bad_create_input_is_refused_and_writes_nothing() {
    let r = rig();
    let schema = "request body has an error: doesn't match schema #/components/schemas/CreateInstanceRequest: ";
    let cases: Vec<(Option<&str>, StatusCode, Value)> = vec![
        (
            None,
            StatusCode::BAD_REQUEST,
            error(
                "Bad Request",
                "request body has an error: value is required but missing",
            ),
        ),
        (
            Some("{bad"),
            StatusCode::BAD_REQUEST,
            error(
                "Bad Request",
                "request body has an error: failed to decode request body: key must be a string at line 1 column 2",
            ),
        ),
        (
            Some(r#"{"image":"alpine"}"#),
            StatusCode::BAD_REQUEST,
            error(
                "Bad Request",
                &format!("{schema}Error at \"/name\": property \"name\" is missing"),
            ),
        ),
        (
            Some(r#"{"name":"Bad","image":"alpine"}"#),
            StatusCode::BAD_REQUEST,
            error(
                "Bad Request",
                &format!(
                    "{schema}Error at \"/name\": string doesn't match the regular expression \"^[a-z0-9]([a-z0-9-]*[a-z0-9])?$\""
                ),
            ),
        ),
        (
            Some(r#"{"name":"a","image":"alpine","size":"lots"}"#),
            StatusCode::BAD_REQUEST,
            error(
                "invalid_size",
                "invalid size format: strconv.UnmarshalText: parsing \"lots\": invalid syntax",
            ),
        ),
        (
            Some(r#"{"name":"a","image":"alpine","hypervisor":"vz"}"#),
            StatusCode::BAD_REQUEST,
            error(
                "invalid_request",
                "invalid request: hypervisor vz is not available on this host (available: qemu)",
            ),
        ),
        (
            Some(
                r#"{"name":"a","image":"alpine","network":{"egress":{"enabled":true}},"credentials":{"K":{"source":{"env":"K"},"inject":[{"as":{"header":"A","format":"${value}"}}]}}}"#,
            ),
            StatusCode::BAD_REQUEST,
            error(
                "invalid_request",
                "invalid request: credentials[\"K\"].source.env \"K\" must be present in env",
            ),
        ),
        (
            Some("[]"),
            StatusCode::BAD_REQUEST,
            error("Bad Request", &format!("{schema}value must be an object")),
        ),
    ];
    for (body, status, want) in cases {
        let a = r
            .call("POST", "/instances", body, Some(&format!("Bearer {TOKEN}")))
            .await;
        assert_eq!((a.status, &a.json), (status, &want), "{body:?}");
        assert_eq!(a.headers["x-should-retry"], "false");
        assert_eq!(r.instance_dirs(), 0, "{body:?} wrote something");
    }
    let wrong_type = r
        .app
        .clone()
        .oneshot(
            Request::post("/instances")
                .header("authorization", format!("Bearer {TOKEN}"))
                .header("content-type", "text/plain")
                .body(Body::from("{}"))
                .unwrap(),
        )
        .await
        .unwrap();
    assert_eq!(wrong_type.status(), StatusCode::BAD_REQUEST);
}

#[tokio::test]
async fn duplicate_names_are_400_name_conflict() {
    let r = rig();
    let body = json!({"name": "web", "image": "alpine"});
    assert_eq!(
        r.authed("POST", "/instances", Some(body.clone()))
            .await
            .status,
        StatusCode::CREATED
    );
    let a = r.authed("POST", "/instances", Some(body)).await;
    assert_eq!(
        (a.status, a.json),
        (
            StatusCode::BAD_REQUEST,
            error("name_conflict", "instance name \"web\" already exists")
        )
    );
    assert_eq!(r.instance_dirs(), 1);
}

#[tokio::test]
async fn patch_follows_upstream_order() {
    let r = rig();
    let created = r
        .authed("POST", "/instances", Some(json!({
            "name": "agent-1", "image": "alpine",
            "env": {"OUTBOUND_OPENAI_KEY": "sk-real-123", "PORT": "3000"},
            "network": {"enabled": true, "egress": {"enabled": true}},
            "credentials": {"OUTBOUND_OPENAI_KEY": {"source": {"env": "OUTBOUND_OPENAI_KEY"},
                "inject": [{"hosts": ["api.openai.com"], "as": {"header": "Authorization", "format": "Bearer ${value}"}}]}}
        })))
        .await;
    assert_eq!(created.status, StatusCode::CREATED, "{}", created.text);

    let a = r
        .authed("PATCH", "/instances/agent-1", Some(json!({"env": {}})))
        .await;
    assert_eq!(a.status, StatusCode::BAD_REQUEST);
    assert_eq!(a.json["code"], "Bad Request");
    let a = r.authed("PATCH", "/instances/nope", Some(json!({}))).await;
    assert_eq!(
        (a.status, a.json),
        (
            StatusCode::NOT_FOUND,
            error("not_found", "resource not found")
        )
    );
    let a = r
        .authed("PATCH", "/instances/agent-1", Some(json!({})))
        .await;
    assert_eq!(
        a.json,
        error(
            "invalid_request",
            "invalid request: request must include env, auto_standby, health_check, and/or restart_policy"
        )
    );
    let a = r
        .authed(
            "PATCH",
            "/instances/agent-1",
            Some(json!({"env": {"PORT": "4000"}})),
        )
        .await;
    assert_eq!(
        a.json,
        error(
            "invalid_request",
            "invalid request: env keys [PORT] are not credential source env vars; allowed keys: [OUTBOUND_OPENAI_KEY]"
        )
    );
    let a = r
        .authed(
            "PATCH",
            "/instances/agent-1",
            Some(json!({"env": {"OUTBOUND_OPENAI_KEY": "sk-rotated-456"}})),
        )
        .await;
    assert_eq!(a.status, StatusCode::OK, "{}", a.text);
    assert_eq!(a.json["env"]["OUTBOUND_OPENAI_KEY"], "sk-rotated-456");
    let g = r.authed("GET", "/instances/agent-1", None).await;
    assert_eq!(g.json["env"]["OUTBOUND_OPENAI_KEY"], "sk-rotated-456");
    assert_eq!(g.json["env"]["PORT"], "3000");
}

#[tokio::test]
async fn no_hypervisor_answers_clearly_and_never_pretends() {
    let r = rig_with(Err("the QEMU backend is not available yet".into()));
    let a = r
        .authed(
            "POST",
            "/instances",
            Some(json!({"name": "a", "image": "alpine"})),
        )
        .await;
    assert_eq!(a.status, StatusCode::INTERNAL_SERVER_ERROR);
    assert_eq!(
        a.json,
        error(
            "dependency_missing",
            "no hypervisor is available on this host: the QEMU backend is not available yet"
        )
    );
    assert_eq!(a.headers["x-should-retry"], "false");
    assert_eq!(r.instance_dirs(), 0);
    assert_eq!(r.authed("GET", "/instances", None).await.json, json!([]));
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
    // The desktop window's origin is echoed (only the app's and loopback origins are).
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

#[tokio::test]
async fn resources_report_capacity_and_allocations() {
    let r = rig();
    r.authed(
        "POST",
        "/instances",
        Some(json!({"name": "r1", "image": "alpine", "vcpus": 3, "size": "512MB"})),
    )
    .await;
    let a = r.authed("GET", "/resources", None).await;
    assert_eq!(a.status, StatusCode::OK, "{}", a.text);
    assert!(a.json["cpu"]["capacity"].as_i64().unwrap() >= 1);
    assert_eq!(a.json["cpu"]["oversub_ratio"], 4.0);
    assert_eq!(a.json["cpu"]["allocated"], 3);
    assert_eq!(a.json["memory"]["allocated"], 512 << 20);
    assert!(a.json["memory"]["capacity"].as_i64().unwrap() > 0);
    assert!(a.json["disk"]["capacity"].as_i64().unwrap() > 0);
    let allocations = a.json["allocations"].as_array().unwrap();
    assert_eq!(allocations.len(), 1);
    assert_eq!(allocations[0]["instance_name"], "r1");
    assert_eq!(allocations[0]["disk_bytes"], 10i64 << 30);
    r.authed("POST", "/instances/r1/stop", None).await;
    let a = r.authed("GET", "/resources", None).await;
    assert_eq!(
        a.json["cpu"]["allocated"], 0,
        "stopped instances reserve no CPU"
    );
    assert_eq!(a.json["allocations"], json!([]));
}

/// A keychain that is never reachable (no Secret Service on the bus).
#[derive(Debug)]
struct NoKeychain;

impl hypedeck_secrets::SecretStore for NoKeychain {
    fn set(&self, _: &str, _: &Sensitive<String>) -> Result<(), hypedeck_secrets::SecretError> {
        Err(hypedeck_secrets::SecretError::Unavailable(
            "no Secret Service on the session bus".into(),
        ))
    }
    fn get(&self, _: &str) -> Result<Option<Sensitive<String>>, hypedeck_secrets::SecretError> {
        Err(hypedeck_secrets::SecretError::Unavailable(
            "no Secret Service on the session bus".into(),
        ))
    }
    fn delete(&self, _: &str) -> Result<(), hypedeck_secrets::SecretError> {
        Err(hypedeck_secrets::SecretError::Unavailable(
            "no Secret Service on the session bus".into(),
        ))
    }
}

#[tokio::test]
async fn an_unreachable_keychain_is_a_clear_error_never_plaintext() {
    let dir = tempfile::tempdir().unwrap();
    let engine = Engine::new(EngineConfig {
        paths: hypedeck_store::Paths::new(dir.path()),
        secrets: Arc::new(NoKeychain),
        hypervisor: Ok(FakeHypervisor::new()),
        alternatives: Vec::new(),
        guest: None,
    });
    let r = Rig {
        dir,
        app: router(ApiState {
            engine: Arc::new(engine),
            token: ApiToken::new(Sensitive::new(TOKEN.into())),
        }),
    };
    let a = r
        .authed("POST", "/instances", Some(json!({
            "name": "agent", "image": "alpine", "env": {"KEY": "sk-must-not-leak"},
            "network": {"egress": {"enabled": true}},
            "credentials": {"KEY": {"source": {"env": "KEY"}, "inject": [{"as": {"header": "X-Key", "format": "${value}"}}]}}
        })))
        .await;
    assert_eq!(a.status, StatusCode::SERVICE_UNAVAILABLE, "{}", a.text);
    assert_eq!(a.json["code"], "secrets_unavailable");
    assert_eq!(
        a.json["message"],
        "the OS keychain is not available: no Secret Service on the session bus"
    );
    assert!(!a.text.contains("sk-must-not-leak"));
    assert_eq!(r.instance_dirs(), 0);
}

#[tokio::test]
async fn the_token_may_come_as_a_websocket_subprotocol() {
    let r = rig();
    let call = |protocol: &str| {
        let req = Request::builder()
            .method("GET")
            .uri("/instances/nope/exec")
            .header("sec-websocket-protocol", protocol)
            .body(Body::empty())
            .unwrap();
        r.app.clone().oneshot(req)
    };
    // The right token as `bearer.<token>` passes auth; the upgrade is checked next (this
    // request lacks the other WebSocket headers: 400, not 401).
    let ok = call(&format!("other, bearer.{TOKEN}")).await.unwrap();
    assert_eq!(ok.status(), StatusCode::BAD_REQUEST);
    let wrong = call("bearer.hdk_wrong").await.unwrap();
    assert_eq!(wrong.status(), StatusCode::UNAUTHORIZED);
    // Only WebSocket-style requests carry it: a plain GET with the header but no token is 401.
    let plain = r.call("GET", "/instances", None, None).await;
    assert_eq!(plain.status, StatusCode::UNAUTHORIZED);
}

#[tokio::test]
async fn volume_archives_are_streamed_checked_and_never_left_behind() {
    let r = rig();
    let upload = |uri: &str, body: &'static [u8]| {
        let req = Request::builder()
            .method("POST")
            .uri(uri)
            .header("authorization", format!("Bearer {TOKEN}"))
            .header("content-type", "application/gzip")
            .body(Body::from(body))
            .unwrap();
        r.app.clone().oneshot(req)
    };
    let json_of = |res: axum::response::Response| async move {
        let bytes = res.into_body().collect().await.unwrap().to_bytes();
        serde_json::from_slice::<Value>(&bytes).unwrap()
    };
    // Not an archive: a clear 400, no volume, no upload left.
    let res = upload(
        "/volumes/from-archive?name=junk&size_gb=1",
        b"\x1f\x8b not really gzip",
    )
    .await
    .unwrap();
    assert_eq!(res.status(), StatusCode::BAD_REQUEST);
    let body = json_of(res).await;
    assert_eq!(body["code"], "invalid_request");
    assert!(
        body["message"]
            .as_str()
            .unwrap()
            .starts_with("invalid request: invalid archive"),
        "{body}"
    );
    // No body at all, and missing parameters.
    let res = upload("/volumes/from-archive?name=empty&size_gb=1", b"")
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::BAD_REQUEST);
    let res = upload("/volumes/from-archive?size_gb=1", b"x")
        .await
        .unwrap();
    assert_eq!(
        json_of(res).await["message"],
        "parameter \"name\" in query has an error: value is required but missing"
    );
    assert_eq!(r.authed("GET", "/volumes", None).await.json, json!([]));
    let uploads = r.dir.path().join("uploads");
    let left = std::fs::read_dir(&uploads).map(|d| d.count()).unwrap_or(0);
    assert_eq!(left, 0, "uploads left in {}", uploads.display());
    assert_eq!(
        std::fs::read_dir(r.dir.path().join("volumes"))
            .map(|d| d.count())
            .unwrap_or(0),
        0
    );
}

#[tokio::test]
async fn hypervisors_lists_backends_and_unavailable_ones_are_not_supported() {
    let dir = tempfile::tempdir().unwrap();
    let ch = FakeHypervisor::posing_as(
        hypedeck_model::HypervisorKind::CloudHypervisor,
        hypedeck_hypervisor::Capabilities {
            pause: true,
            vsock: true,
            ..Default::default()
        },
    );
    let engine = Engine::new(EngineConfig {
        paths: hypedeck_store::Paths::new(dir.path()),
        secrets: Arc::new(MemoryStore::new()),
        hypervisor: Ok(FakeHypervisor::new()),
        alternatives: vec![
            (hypedeck_model::HypervisorKind::CloudHypervisor, Ok(ch)),
            (
                hypedeck_model::HypervisorKind::Vz,
                Err("Apple Virtualization.framework is only available on macOS".into()),
            ),
        ],
        guest: None,
    });
    let r = Rig {
        dir,
        app: router(ApiState {
            engine: Arc::new(engine),
            token: ApiToken::new(Sensitive::new(TOKEN.into())),
        }),
    };
    let a = r.authed("GET", "/hypervisors", None).await;
    assert_eq!(a.status, StatusCode::OK, "{}", a.text);
    assert_eq!(a.json[0]["kind"], "qemu");
    assert_eq!(a.json[0]["default"], true);
    assert_eq!(a.json[0]["capabilities"]["snapshot"], true);
    assert_eq!(a.json[1]["kind"], "cloud-hypervisor");
    assert_eq!(a.json[1]["available"], true);
    assert_eq!(a.json[1]["capabilities"]["snapshot"], false);
    assert_eq!(
        a.json[2],
        json!({"kind": "vz", "default": false, "available": false,
               "reason": "Apple Virtualization.framework is only available on macOS"})
    );

    let a = r
        .authed(
            "POST",
            "/instances",
            Some(json!({"name": "a", "image": "alpine", "hypervisor": "vz"})),
        )
        .await;
    assert_eq!(a.status, StatusCode::BAD_REQUEST, "{}", a.text);
    assert_eq!(
        a.json,
        json!({"code": "not_supported", "message": "hypervisor vz is not available on this host: Apple Virtualization.framework is only available on macOS"})
    );
    let a = r
        .authed(
            "POST",
            "/instances",
            Some(json!({"name": "a", "image": "alpine",
            "hypervisor": "cloud-hypervisor", "ports": [{"host_port": 18082, "guest_port": 80}]})),
        )
        .await;
    assert_eq!(a.status, StatusCode::BAD_REQUEST, "{}", a.text);
    assert_eq!(
        a.json,
        json!({"code": "not_supported", "message": "port forwarding (ports) is not supported by the cloud-hypervisor backend"})
    );
    let a = r
        .authed(
            "POST",
            "/instances",
            Some(json!({"name": "a", "image": "alpine", "hypervisor": "cloud-hypervisor"})),
        )
        .await;
    assert_eq!(a.status, StatusCode::CREATED, "{}", a.text);
    assert_eq!(a.json["hypervisor"], "cloud-hypervisor");
    let a = r.authed("POST", "/instances/a/standby", None).await;
    assert_eq!(a.status, StatusCode::BAD_REQUEST, "{}", a.text);
    assert_eq!(
        a.json,
        json!({"code": "not_supported", "message": "standby is not supported by the cloud-hypervisor backend"})
    );
}

#[tokio::test]
async fn cors_answers_only_the_app_and_loopback_pages() {
    let r = rig();
    for (origin, allowed) in [
        ("tauri://localhost", true),
        ("http://tauri.localhost", true),
        ("http://127.0.0.1:4173", true),
        ("http://localhost:5173", true),
        ("http://[::1]:8080", true),
        ("https://localhost", true),
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

/// Every operation of upstream's spec (and Hypedeck's own routes): without the token nothing
/// but `/health` answers anything other than 401; with it, the operations Hypedeck does not
/// serve answer 501 `not_implemented` naming the operation, and the others never do.
#[tokio::test]
async fn every_route_but_health_needs_the_token() {
    let r = rig();
    let mut operations: Vec<(String, String)> = Vec::new();
    let mut path = String::new();
    for line in crate::OPENAPI_YAML.lines() {
        if let Some(p) = line.strip_prefix("  /").and_then(|l| l.strip_suffix(':')) {
            path = format!("/{p}");
        } else if let Some(m) = line.strip_prefix("    ").and_then(|l| l.strip_suffix(':'))
            && ["get", "post", "put", "patch", "delete"].contains(&m)
            && !path.is_empty()
        {
            // Parameters become a plausible value.
            let concrete = path
                .split('/')
                .map(|s| if s.starts_with('{') { "x" } else { s })
                .collect::<Vec<_>>()
                .join("/");
            operations.push((m.to_uppercase(), concrete));
        }
    }
    for extra in ["/hypervisors", "/instances/x/exec", "/system/checks"] {
        operations.push(("GET".into(), extra.into()));
    }
    operations.push(("POST".into(), "/system/samples/hello".into()));
    assert!(operations.len() > 40, "{operations:?}");
    for (method, uri) in &operations {
        let anonymous = r.call(method, uri, Some("{}"), None).await;
        if uri == "/health" {
            assert_eq!(anonymous.status, StatusCode::OK);
            continue;
        }
        assert_eq!(
            anonymous.status,
            StatusCode::UNAUTHORIZED,
            "{method} {uri} answered without the token"
        );
        let authed = r
            .call(method, uri, Some("{}"), Some(&format!("Bearer {TOKEN}")))
            .await;
        let template = unsupported_template(uri);
        if let Some(path) = template {
            assert_eq!(authed.status, StatusCode::NOT_IMPLEMENTED, "{method} {uri}");
            assert_eq!(authed.json["code"], "not_implemented");
            let message = authed.json["message"].as_str().unwrap();
            assert!(
                message.starts_with(&format!("{method} {uri}: ")),
                "{message}"
            );
            assert!(
                crate::routes::unsupported::UNSUPPORTED
                    .iter()
                    .any(|(p, methods, _)| *p == path && methods.contains(&method.as_str())),
                "{method} {path} is listed with other methods"
            );
        } else {
            assert_ne!(authed.status, StatusCode::NOT_IMPLEMENTED, "{method} {uri}");
            assert_ne!(
                authed.json["message"], "no matching operation was found",
                "{method} {uri}"
            );
        }
    }
    // No stale entries: every unsupported operation is one of the spec's.
    for (path, methods, _) in crate::routes::unsupported::UNSUPPORTED {
        for method in *methods {
            assert!(
                operations
                    .iter()
                    .any(|(m, uri)| m == method && unsupported_template(uri) == Some(path)),
                "{method} {path} is not in the spec"
            );
        }
    }
    // A method the spec does not have on an unsupported path is 405, not 501.
    let wrong = r
        .call(
            "PATCH",
            "/builds",
            Some("{}"),
            Some(&format!("Bearer {TOKEN}")),
        )
        .await;
    assert_eq!(wrong.status, StatusCode::METHOD_NOT_ALLOWED);
}

/// The `UNSUPPORTED` path template a concrete `x`-filled path belongs to.
fn unsupported_template(uri: &str) -> Option<&'static str> {
    crate::routes::unsupported::UNSUPPORTED
        .iter()
        .map(|(p, _, _)| *p)
        .find(|p| {
            let concrete = p
                .split('/')
                .map(|s| if s.starts_with('{') { "x" } else { s })
                .collect::<Vec<_>>()
                .join("/");
            concrete == uri
        })
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
    for uri in ["/volumes", "/images", "/instances"] {
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

#[tokio::test]
async fn system_checks_list_what_a_sandbox_needs_and_hello_needs_an_image_cache() {
    let r = rig_with(Err("qemu-system-x86_64 was not found on PATH".into()));
    let a = r.authed("GET", "/system/checks", None).await;
    assert_eq!(a.status, StatusCode::OK, "{}", a.text);
    let ids: Vec<&str> = a.json["checks"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["id"].as_str().unwrap())
        .collect();
    let mut expected = vec!["hypervisor", "kernel", "guest_init", "keychain"];
    if cfg!(target_os = "linux") {
        expected.insert(1, "kvm");
    }
    assert_eq!(ids, expected);
    // No hypervisor: not ready, and the check says what to install.
    assert_eq!(a.json["ready"], false);
    let hv = &a.json["checks"][0];
    assert_eq!(hv["status"], "missing");
    assert_eq!(
        hv["detail"],
        "qemu: qemu-system-x86_64 was not found on PATH"
    );
    assert!(hv["fix"].as_str().unwrap().contains("qemu"), "{hv}");
    assert!(hv["why"].as_str().unwrap().len() > 10);
    // The engine runs on a keychain that answers.
    assert_eq!(a.json["checks"][ids.len() - 1]["status"], "ok");
    assert!(a.json["checks"][ids.len() - 1].get("fix").is_none());

    // The fake engine has no image cache: a clear error, nothing built.
    let a = r.authed("POST", "/system/samples/hello", None).await;
    assert_eq!(a.status, StatusCode::INTERNAL_SERVER_ERROR, "{}", a.text);
    assert_eq!(a.json["code"], "dependency_missing");
    assert!(
        a.json["message"].as_str().unwrap().contains("image cache"),
        "{}",
        a.text
    );
}

#[tokio::test]
async fn token_rotation_takes_effect_at_once_and_a_failed_store_changes_nothing() {
    let r = rig();
    let a = r.authed("POST", "/system/token/rotate", None).await;
    assert_eq!(a.status, StatusCode::OK, "{}", a.text);
    let fresh = a.json["token"].as_str().unwrap().to_string();
    assert!(fresh.starts_with("hdk_") && fresh.len() == 68, "{fresh}");
    assert_ne!(fresh, TOKEN);
    let old = r
        .call("GET", "/instances", None, Some(&format!("Bearer {TOKEN}")))
        .await;
    assert_eq!(old.status, StatusCode::UNAUTHORIZED);
    let new = r
        .call("GET", "/instances", None, Some(&format!("Bearer {fresh}")))
        .await;
    assert_eq!(new.status, StatusCode::OK, "{}", new.text);

    // The keychain refuses: 503 with why, and the old token keeps working.
    let dir = tempfile::tempdir().unwrap();
    let engine = Engine::new(EngineConfig {
        paths: hypedeck_store::Paths::new(dir.path()),
        secrets: Arc::new(MemoryStore::new()),
        hypervisor: Ok(FakeHypervisor::new()),
        alternatives: Vec::new(),
        guest: None,
    });
    let token = ApiToken::new(Sensitive::new(TOKEN.to_string()))
        .persisted_with(Arc::new(|_| Err("the keychain is locked".to_string())));
    let r = Rig {
        dir,
        app: router(ApiState {
            engine: Arc::new(engine),
            token: token.clone(),
        }),
    };
    let a = r.authed("POST", "/system/token/rotate", None).await;
    assert_eq!(a.status, StatusCode::SERVICE_UNAVAILABLE, "{}", a.text);
    assert_eq!(
        a.json,
        json!({"code": "secrets_unavailable", "message": "the token was not rotated: the keychain is locked"})
    );
    assert_eq!(token.expose(), TOKEN);
    assert_eq!(
        r.authed("GET", "/instances", None).await.status,
        StatusCode::OK
    );
    assert!(!format!("{token:?}").contains(TOKEN));
}

/// A rig whose engine is reachable (to allow secret references).
fn rig_with_engine() -> (Rig, Arc<Engine>) {
    let dir = tempfile::tempdir().unwrap();
    let engine = Arc::new(Engine::new(EngineConfig {
        paths: hypedeck_store::Paths::new(dir.path()),
        secrets: Arc::new(MemoryStore::new()),
        hypervisor: Ok(FakeHypervisor::new()),
        alternatives: Vec::new(),
        guest: None,
    }));
    let app = router(ApiState {
        engine: engine.clone(),
        token: ApiToken::new(Sensitive::new(TOKEN.to_string())),
    });
    (Rig { dir, app }, engine)
}

fn agent(value: &str) -> Value {
    json!({
        "name": "agent", "image": "alpine",
        "env": {"OPENAI_KEY": value},
        "network": {"enabled": true, "egress": {"enabled": true}},
        "credentials": {"OPENAI": {"source": {"env": "OPENAI_KEY"},
            "inject": [{"hosts": ["api.openai.com"], "as": {"header": "Authorization", "format": "Bearer ${value}"}}]}}
    })
}

#[tokio::test]
async fn credentials_show_fingerprints_and_rotation_never_values() {
    let (r, engine) = rig_with_engine();
    let created = r
        .authed("POST", "/instances", Some(agent("sk-real-123")))
        .await;
    assert_eq!(created.status, StatusCode::CREATED, "{}", created.text);
    let a = r.authed("GET", "/instances/agent/credentials", None).await;
    assert_eq!(a.status, StatusCode::OK, "{}", a.text);
    let first = &a.json[0];
    assert_eq!(first["name"], "OPENAI");
    assert_eq!(first["env"], "OPENAI_KEY");
    assert_eq!(first["hosts"], json!(["api.openai.com"]));
    assert_eq!(first["headers"], json!(["Authorization"]));
    assert_eq!(
        first["fingerprint"],
        hypedeck_egress::fingerprint("sk-real-123")
    );
    assert_eq!(first["last_used"], Value::Null);
    assert_eq!(first["blocked"], 0);
    assert!(!a.text.contains("sk-real-123"), "{}", a.text);
    let rotated_at = first["rotated_at"].as_str().unwrap().to_string();

    tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    let p = r
        .authed(
            "PATCH",
            "/instances/agent",
            Some(json!({"env": {"OPENAI_KEY": "sk-new-456"}})),
        )
        .await;
    assert_eq!(p.status, StatusCode::OK, "{}", p.text);
    let a = r.authed("GET", "/instances/agent/credentials", None).await;
    assert_eq!(
        a.json[0]["fingerprint"],
        hypedeck_egress::fingerprint("sk-new-456")
    );
    assert!(a.json[0]["rotated_at"].as_str().unwrap() > rotated_at.as_str());

    // The trail is empty (no proxy here) and its query is checked.
    let e = r
        .authed("GET", "/instances/agent/credentials/events?limit=5", None)
        .await;
    assert_eq!((e.status, e.json.clone()), (StatusCode::OK, json!([])));
    let e = r
        .authed("GET", "/instances/agent/credentials/events?limit=0", None)
        .await;
    assert_eq!(e.status, StatusCode::BAD_REQUEST);
    assert!(e.json["message"].as_str().unwrap().contains("limit"));
    let e = r.authed("GET", "/instances/nope/credentials", None).await;
    assert_eq!(e.status, StatusCode::NOT_FOUND);
    // No proxy: a test request says why; a bad body is a 400.
    let t = r
        .authed(
            "POST",
            "/instances/agent/credentials/test",
            Some(json!({"url": "https://api.openai.com/v1/models"})),
        )
        .await;
    assert_eq!(t.status, StatusCode::BAD_REQUEST, "{}", t.text);
    let t = r
        .authed(
            "POST",
            "/instances/agent/credentials/test",
            Some(json!({"uri": "x"})),
        )
        .await;
    assert_eq!(t.status, StatusCode::BAD_REQUEST);
    assert!(
        t.json["message"]
            .as_str()
            .unwrap()
            .contains("unknown field"),
        "{}",
        t.text
    );
    drop(engine);
}

#[tokio::test]
async fn secret_references_resolve_on_the_host_only_when_allowed() {
    let (r, engine) = rig_with_engine();
    // Off by default (an engine reachable from other machines must not run them).
    let refused = r
        .authed(
            "POST",
            "/instances",
            Some(agent("cmd:echo sk-from-command")),
        )
        .await;
    assert_eq!(refused.status, StatusCode::BAD_REQUEST, "{}", refused.text);
    assert!(
        refused.json["message"]
            .as_str()
            .unwrap()
            .contains("listens on loopback"),
        "{}",
        refused.text
    );
    assert_eq!(r.instance_dirs(), 0);

    engine.allow_secret_references(true);
    let created = r
        .authed(
            "POST",
            "/instances",
            Some(agent("cmd:echo sk-from-command")),
        )
        .await;
    assert_eq!(created.status, StatusCode::CREATED, "{}", created.text);
    // The instance shows the reference, not what it resolved to.
    assert_eq!(
        created.json["env"]["OPENAI_KEY"],
        "cmd:echo sk-from-command"
    );
    let a = r.authed("GET", "/instances/agent/credentials", None).await;
    assert_eq!(a.json[0]["reference"], "cmd:echo sk-from-command");
    assert_eq!(a.json[0]["reference_kind"], "cmd");
    assert_eq!(
        a.json[0]["fingerprint"],
        hypedeck_egress::fingerprint("sk-from-command")
    );
    // Re-resolve: same command, same value, a new rotation time.
    let again = r
        .authed("POST", "/instances/agent/credentials/OPENAI/resolve", None)
        .await;
    assert_eq!(again.status, StatusCode::OK, "{}", again.text);
    assert_eq!(
        again.json[0]["fingerprint"],
        hypedeck_egress::fingerprint("sk-from-command")
    );
    // A failing reference is a 400 naming it, and nothing changes.
    let bad = r
        .authed(
            "PATCH",
            "/instances/agent",
            Some(json!({"env": {"OPENAI_KEY": "cmd:false"}})),
        )
        .await;
    assert_eq!(bad.status, StatusCode::BAD_REQUEST, "{}", bad.text);
    assert!(
        bad.json["message"]
            .as_str()
            .unwrap()
            .starts_with("secret reference \"cmd:false\": false failed"),
        "{}",
        bad.text
    );
    let a = r.authed("GET", "/instances/agent/credentials", None).await;
    assert_eq!(
        a.json[0]["fingerprint"],
        hypedeck_egress::fingerprint("sk-from-command")
    );
    // A literal replaces the reference.
    let p = r
        .authed(
            "PATCH",
            "/instances/agent",
            Some(json!({"env": {"OPENAI_KEY": "sk-literal-789"}})),
        )
        .await;
    assert_eq!(p.json["env"]["OPENAI_KEY"], "sk-literal-789");
    let again = r
        .authed("POST", "/instances/agent/credentials/OPENAI/resolve", None)
        .await;
    assert_eq!(again.status, StatusCode::BAD_REQUEST);
    let none = r
        .authed("POST", "/instances/agent/credentials/NOPE/resolve", None)
        .await;
    assert_eq!(none.status, StatusCode::NOT_FOUND);
}
