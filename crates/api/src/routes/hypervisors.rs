//! `GET /hypervisors` (a Hypedeck extension): the backends this engine knows, which one is
//! the default, what each supports, and why one cannot run on this host. The UI disables
//! actions a backend lacks; clients of upstream servers get a 404 here and assume everything.

use axum::extract::State;
use axum::routing::get;
use axum::{Json, Router};
use serde::Serialize;

use crate::ApiState;

/// `/hypervisors`.
pub fn routes() -> Router<ApiState> {
    Router::new().route("/hypervisors", get(list))
}

/// One backend.
#[derive(Debug, Serialize)]
struct Backend {
    kind: &'static str,
    default: bool,
    available: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    capabilities: Option<hypedeck_hypervisor::Capabilities>,
    #[serde(skip_serializing_if = "Option::is_none")]
    reason: Option<String>,
}

async fn list(State(state): State<ApiState>) -> Json<Vec<Backend>> {
    Json(
        state
            .engine
            .hypervisors()
            .into_iter()
            .map(|b| Backend {
                kind: b.kind.as_str(),
                default: b.default,
                available: b.capabilities.is_ok(),
                reason: b.capabilities.as_ref().err().cloned(),
                capabilities: b.capabilities.ok(),
            })
            .collect(),
    )
}
