//! `/system/*`: checks, the sample image, token rotation.

use super::*;

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
        fingerprints: hypedeck_egress::Fingerprinter::from_key(&[7; 32]),
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
