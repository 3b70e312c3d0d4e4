//! The Hypeman HTTP API over axum.
//!
//! `api::router(state)` serves upstream's routes with upstream's status codes and
//! `{code, message}` bodies. Routes are thin: parse and validate at the edge (`body.rs`), call
//! the engine, map [`EngineError`](hypedeck_engine::EngineError) exhaustively (`error.rs`).
//!
//! Invariants: every route but `/health` and `/spec.yaml` needs the bearer token; no request
//! body or secret value is ever logged; 4xx answers carry `x-should-retry: false` so the
//! official SDKs do not retry deterministic failures.

mod auth;
mod body;
mod error;
mod routes;

use std::sync::Arc;

use axum::Router;
use axum::http::{HeaderName, Method};
use hypedeck_engine::Engine;
use tower_http::cors::{AllowHeaders, AllowOrigin, CorsLayer};

pub use auth::{ApiToken, generate_token};
pub use error::ApiError;

/// The OpenAPI document served at `/spec.yaml` (upstream Hypeman's contract).
pub const OPENAPI_YAML: &str = include_str!("../openapi.yaml");

/// What every handler needs.
#[derive(Debug, Clone)]
pub struct ApiState {
    /// The instance manager.
    pub engine: Arc<Engine>,
    /// The bearer token clients must present.
    pub token: ApiToken,
}

/// The whole API.
pub fn router(state: ApiState) -> Router {
    let protected = routes::instances::routes()
        .merge(routes::lifecycle::routes())
        .merge(routes::images::routes())
        .merge(routes::volumes::routes())
        .merge(routes::exec::routes())
        .merge(routes::hypervisors::routes())
        .layer(axum::middleware::from_fn_with_state(
            state.token.clone(),
            auth::require_token,
        ));
    Router::new()
        .merge(routes::meta::routes())
        .merge(protected)
        .fallback(error::route_not_found)
        .method_not_allowed_fallback(error::method_not_allowed)
        .layer(axum::middleware::from_fn(error::mark_no_retry))
        .layer(cors())
        .with_state(state)
}

/// Browsers (the UI in a plain browser, or the Tauri webview) call the API cross-origin with
/// the SDK's `authorization` and `x-stainless-*` headers. Auth is a bearer token, never a
/// cookie, so allowing any origin grants nothing without the token.
fn cors() -> CorsLayer {
    CorsLayer::new()
        .allow_origin(AllowOrigin::any())
        .allow_methods([
            Method::GET,
            Method::POST,
            Method::PUT,
            Method::PATCH,
            Method::DELETE,
            Method::OPTIONS,
        ])
        .allow_headers(AllowHeaders::mirror_request())
        .expose_headers([
            HeaderName::from_static("x-should-retry"),
            HeaderName::from_static("retry-after"),
            HeaderName::from_static("retry-after-ms"),
        ])
        .max_age(std::time::Duration::from_secs(600))
}

#[cfg(test)]
mod tests;
