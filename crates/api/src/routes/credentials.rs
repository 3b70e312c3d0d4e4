//! Credential checks (Hypedeck extensions; clients of upstream servers get a 404):
//! - `GET /instances/{id}/credentials` → each credential's env var, hosts, headers, current
//!   `fingerprint` (16 hex of HMAC-SHA256 of the value under the data dir's key), `rotated_at`, `reference` (when the value
//!   comes from `op://`, `keychain:` or `cmd:`), `last_used`, `first_use_of_current` and the
//!   number of `blocked` attempts;
//! - `GET /instances/{id}/credentials/events?limit=&credential=` → the usage trail, newest
//!   first: `{time, credential, fingerprint, host, method, status?, outcome, reason?}` with
//!   `outcome` one of `injected`, `test`, `blocked`, `leak_blocked`;
//! - `POST /instances/{id}/credentials/test` `{"url": "https://…"}` → `{status, injected}`:
//!   one GET from the host through the instance's injection rules (nothing runs in the guest);
//! - `POST /instances/{id}/credentials/{name}/resolve` → re-resolves a reference and rotates
//!   to its value; answers the credentials as `GET` does.
//!
//! No answer ever holds a credential value.

use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::routing::{get, post};
use axum::{Json, Router};
use hypedeck_egress::{TestOutcome, UsageEvent};
use hypedeck_engine::credentials::CredentialStatus;
use serde::Deserialize;

use crate::ApiState;
use crate::error::ApiError;
use crate::routes::query_param;

/// Events one call returns unless `limit` says otherwise.
const DEFAULT_LIMIT: usize = 100;

/// The routes (all need auth).
pub fn routes() -> Router<ApiState> {
    Router::new()
        .route("/instances/{id}/credentials", get(list))
        .route("/instances/{id}/credentials/events", get(events))
        .route("/instances/{id}/credentials/test", post(test))
        .route("/instances/{id}/credentials/{name}/resolve", post(resolve))
}

async fn list(
    State(state): State<ApiState>,
    Path(id): Path<String>,
) -> Result<Json<Vec<CredentialStatus>>, ApiError> {
    state
        .engine
        .credentials(&id)
        .await
        .map(Json)
        .map_err(|e| ApiError::from_engine("list credentials", e))
}

async fn events(
    State(state): State<ApiState>,
    Path(id): Path<String>,
    query: super::ListQuery,
) -> Result<Json<Vec<UsageEvent>>, ApiError> {
    let pairs = super::list_query(query)?;
    let limit = match query_param(&pairs, "limit") {
        None => DEFAULT_LIMIT,
        Some(v) => match v.parse::<usize>() {
            Ok(n) if (1..=hypedeck_engine::credentials::MAX_EVENTS).contains(&n) => n,
            _ => {
                return Err(ApiError::bad_request(format!(
                    "parameter \"limit\" in query has an error: must be an integer from 1 to {}",
                    hypedeck_engine::credentials::MAX_EVENTS
                )));
            }
        },
    };
    let credential = query_param(&pairs, "credential");
    state
        .engine
        .credential_events(&id, credential.as_deref(), limit)
        .await
        .map(Json)
        .map_err(|e| ApiError::from_engine("read the credential trail", e))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct TestRequest {
    url: String,
}

async fn test(
    State(state): State<ApiState>,
    Path(id): Path<String>,
    body: Bytes,
) -> Result<Json<TestOutcome>, ApiError> {
    let request: TestRequest = serde_json::from_slice(&body).map_err(|e| {
        ApiError::bad_request(format!(
            "request body has an error: {e} (expected {{\"url\": \"https://…\"}})"
        ))
    })?;
    state
        .engine
        .test_credential(&id, &request.url)
        .await
        .map(Json)
        .map_err(|e| ApiError::from_engine("test credential", e))
}

async fn resolve(
    State(state): State<ApiState>,
    Path((id, name)): Path<(String, String)>,
    crate::CallerOf(caller): crate::CallerOf,
) -> Result<Json<Vec<CredentialStatus>>, ApiError> {
    super::detached(&state.engine, |e| async move {
        e.resolve_credential(&id, &name, caller).await
    })
    .await
    .map(Json)
    .map_err(|e| ApiError::from_engine("re-resolve credential", e))
}
