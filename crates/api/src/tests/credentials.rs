//! `/instances/{id}/credentials/*`.

use super::*;

/// A rig whose engine is reachable (to allow secret references).
fn rig_with_engine() -> (Rig, Arc<Engine>) {
    let dir = tempfile::tempdir().unwrap();
    let engine = Arc::new(Engine::new(EngineConfig {
        paths: hypedeck_store::Paths::new(dir.path()),
        secrets: Arc::new(MemoryStore::new()),
        hypervisor: Ok(FakeHypervisor::new()),
        alternatives: Vec::new(),
        guest: None,
        fingerprints: fingerprints(),
    }));
    let app = router(ApiState {
        engine: engine.clone(),
        token: ApiToken::new(Sensitive::new(TOKEN.to_string())),
    });
    (Rig { dir, app }, engine)
}

/// The rig engine's fingerprints (a daemon loads its key from the keychain).
fn fingerprints() -> hypedeck_egress::Fingerprinter {
    hypedeck_egress::Fingerprinter::from_key(&[9; 32])
}

fn fingerprint(value: &str) -> String {
    fingerprints().fingerprint(value)
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
    assert_eq!(first["fingerprint"], fingerprint("sk-real-123"));
    // Keyed: the engine's key, not a hash of the value alone.
    assert_ne!(
        first["fingerprint"],
        hypedeck_egress::Fingerprinter::from_key(&[8; 32]).fingerprint("sk-real-123")
    );
    assert_eq!(first["fingerprint"].as_str().unwrap().len(), 16);
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
    assert_eq!(a.json[0]["fingerprint"], fingerprint("sk-new-456"));
    assert_ne!(fingerprint("sk-new-456"), fingerprint("sk-real-123"));
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
async fn secret_references_are_set_only_by_the_user_at_this_machine() {
    let (http, engine) = rig_with_engine();
    // Over HTTP a token holder may be anywhere (a tunnel or TLS proxy ends on loopback too):
    // refused, and nothing ran.
    let ran = http.dir.path().join("ran");
    let refused = http
        .authed(
            "POST",
            "/instances",
            Some(agent(&format!("cmd:touch {}", ran.display()))),
        )
        .await;
    assert_eq!(refused.status, StatusCode::BAD_REQUEST, "{}", refused.text);
    assert!(
        refused.json["message"]
            .as_str()
            .unwrap()
            .contains("only by the user at this machine"),
        "{}",
        refused.text
    );
    assert!(!ran.exists(), "the command ran for an HTTP client");
    assert_eq!(http.instance_dirs(), 0);
    let items = http.authed("GET", "/system/keychain/items", None).await;
    assert_eq!(items.status, StatusCode::BAD_REQUEST, "{}", items.text);

    // The same API on the engine's Unix socket (the window through the shell, `hypedeck
    // rotate`): allowed.
    let r = Rig {
        dir: tempfile::tempdir().unwrap(),
        app: crate::local_router(ApiState {
            engine: engine.clone(),
            token: ApiToken::new(Sensitive::new(TOKEN.to_string())),
        }),
    };
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
    assert_eq!(a.json[0]["fingerprint"], fingerprint("sk-from-command"));
    // Re-resolve: same command, same value, a new rotation time.
    let again = r
        .authed("POST", "/instances/agent/credentials/OPENAI/resolve", None)
        .await;
    assert_eq!(again.status, StatusCode::OK, "{}", again.text);
    assert_eq!(again.json[0]["fingerprint"], fingerprint("sk-from-command"));
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
            .starts_with("secret reference cmd:false …: failed (exit status: 1)"),
        "{}",
        bad.text
    );
    let a = r.authed("GET", "/instances/agent/credentials", None).await;
    assert_eq!(a.json[0]["fingerprint"], fingerprint("sk-from-command"));
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
    // Re-running a stored reference is the user's call too.
    let rerun = http
        .authed("POST", "/instances/agent/credentials/OPENAI/resolve", None)
        .await;
    assert_eq!(rerun.status, StatusCode::BAD_REQUEST, "{}", rerun.text);
    assert!(
        rerun.text.contains("only by the user at this machine"),
        "{}",
        rerun.text
    );

    // An engine started with the opt-in accepts them over HTTP.
    engine.allow_http_secret_references(true);
    let p = http
        .authed(
            "PATCH",
            "/instances/agent",
            Some(json!({"env": {"OPENAI_KEY": "cmd:echo sk-over-http"}})),
        )
        .await;
    assert_eq!(p.status, StatusCode::OK, "{}", p.text);
}
