//! Hypedeck extensions for the first run (clients of upstream servers get a 404 here):
//! - `GET /system/checks` → `{ready, checks: [{id, title, status, detail, why, fix?}]}`: what
//!   running a sandbox needs from this machine; `ready` is false while any check is `missing`.
//! - `POST /system/samples/hello` → the sample image (`hypedeck.local/samples/hello:1`), built
//!   locally from the guest init binary, `ready` to boot.
//! - `GET /system/keychain/items` → `[{service, account}]`: OS keychain items a credential may
//!   refer to as `keychain:<service>/<account>` (names only; loopback engines only);
//! - `POST /system/token/rotate` → `{token}`: a fresh API token, stored in the keychain and in
//!   effect at once; the old one stops working for every later request.

use axum::extract::State;
use axum::routing::{get, post};
use axum::{Json, Router};
use hypedeck_engine::checks::{Check, CheckStatus};
use hypedeck_model::ImageInfo;
use serde::Serialize;

use crate::ApiState;
use crate::error::ApiError;

/// `/system/…`.
pub fn routes() -> Router<ApiState> {
    Router::new()
        .route("/system/checks", get(checks))
        .route("/system/samples/hello", post(hello))
        .route("/system/token/rotate", post(rotate_token))
        .route("/system/keychain/items", get(keychain_items))
}

#[derive(Debug, Serialize)]
struct Checks {
    ready: bool,
    checks: Vec<Check>,
}

async fn checks(State(state): State<ApiState>) -> Json<Checks> {
    let checks = state.engine.checks().await;
    Json(Checks {
        ready: checks.iter().all(|c| c.status != CheckStatus::Missing),
        checks,
    })
}

async fn hello(State(state): State<ApiState>) -> Result<Json<ImageInfo>, ApiError> {
    let image = state
        .engine
        .hello_image()
        .await
        .map_err(|e| ApiError::from_engine("build the sample image", e))?;
    Ok(Json(image))
}

#[derive(Serialize)]
struct NewToken {
    token: String,
}

async fn rotate_token(State(state): State<ApiState>) -> Result<Json<NewToken>, ApiError> {
    let token = state.token.clone();
    let fresh = tokio::task::spawn_blocking(move || token.rotate())
        .await
        .map_err(|_| {
            ApiError::new(
                hypedeck_model::ErrorCode::InternalError,
                "token rotation failed",
            )
        })?
        .map_err(|e| {
            tracing::error!(error = %e, "token rotation failed");
            ApiError::new(
                hypedeck_model::ErrorCode::SecretsUnavailable,
                format!("the token was not rotated: {e}"),
            )
        })?;
    tracing::info!("API token rotated");
    Ok(Json(NewToken {
        token: fresh.expose().clone(),
    }))
}

#[derive(Serialize)]
struct KeychainItem {
    service: String,
    account: String,
}

async fn keychain_items(
    State(state): State<ApiState>,
    crate::CallerOf(caller): crate::CallerOf,
) -> Result<Json<Vec<KeychainItem>>, ApiError> {
    let items = state
        .engine
        .keychain_items(caller)
        .await
        .map_err(|e| ApiError::from_engine("list keychain items", e))?;
    Ok(Json(
        items
            .into_iter()
            .map(|(service, account)| KeychainItem { service, account })
            .collect(),
    ))
}
