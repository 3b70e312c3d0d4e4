//! Mutating verbs run to their end when the request goes away (a client timeout, a closed
//! connection): the handler's future is dropped, the verb's work is not.

use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::http::Request;
use hypedeck_engine::fake::{FakeHypervisor, Script};
use hypedeck_engine::{Engine, EngineConfig, ListFilter};
use hypedeck_model::InstanceState;
use hypedeck_secrets::{MemoryStore, Sensitive};
use tower::ServiceExt;

use crate::{ApiState, ApiToken, router};

#[tokio::test]
async fn a_create_whose_client_gives_up_still_completes() {
    let dir = tempfile::tempdir().unwrap();
    let fake = FakeHypervisor::new();
    fake.set_script(Script {
        start_delay: Duration::from_millis(400),
        ..Script::default()
    });
    let engine = Arc::new(Engine::new(EngineConfig {
        paths: hypedeck_store::Paths::new(dir.path()),
        secrets: Arc::new(MemoryStore::new()),
        hypervisor: Ok(fake),
        alternatives: Vec::new(),
        guest: None,
        fingerprints: hypedeck_egress::Fingerprinter::from_key(&[7; 32]),
    }));
    let app = router(ApiState {
        engine: engine.clone(),
        token: ApiToken::new(Sensitive::new("hdk_test_token".to_string())),
    });
    let request = Request::builder()
        .method("POST")
        .uri("/instances")
        .header("authorization", "Bearer hdk_test_token")
        .header("content-type", "application/json")
        .body(Body::from(
            r#"{"name":"impatient","image":"docker.io/library/alpine:latest"}"#,
        ))
        .unwrap();
    // The client gives up while the VM boots: the handler's future is dropped.
    let gave_up = tokio::time::timeout(Duration::from_millis(150), app.oneshot(request)).await;
    assert!(gave_up.is_err(), "the create was still booting");

    let mut state = None;
    for _ in 0..200 {
        let listed = engine.list(&ListFilter::default()).await.unwrap();
        state = listed.first().map(|i| i.state);
        if state == Some(InstanceState::Running) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(
        state,
        Some(InstanceState::Running),
        "the create ran to its end without its client"
    );
}
