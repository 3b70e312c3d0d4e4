//! `/instances` and `/instances/{id}`: create, get, list, patch, delete.

use super::*;

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
        fingerprints: hypedeck_egress::Fingerprinter::from_key(&[7; 32]),
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
