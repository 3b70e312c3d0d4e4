//! API tests: the real router over the engine with the fake hypervisor, called with `oneshot`.
//!
//! One file per route module (`routes/<name>.rs`), `layers.rs` for what every route shares; the
//! rig and its helpers are here.

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

mod autostandby;
mod credentials;
mod detached;
mod exec;
mod hypervisors;
mod images;
mod instances;
mod layers;
mod lifecycle;
mod meta;
mod snapshots;
mod stats;
mod system;
mod templates;
mod unsupported;
mod volumes;

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
        fingerprints: hypedeck_egress::Fingerprinter::from_key(&[7; 32]),
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
