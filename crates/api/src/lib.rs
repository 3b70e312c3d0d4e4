//! The Hypeman HTTP API over axum.
//!
//! `api::router(state)` serves upstream's routes with upstream's status codes and
//! `{code, message}` bodies. Routes are thin: parse and validate at the edge (`body.rs`), call
//! the engine, map [`EngineError`](hypedeck_engine::EngineError) exhaustively (`error.rs`).
//!
//! Invariants: every route but `/health` and `/spec.yaml` needs the bearer token; no request
//! body or secret value is ever logged; 4xx answers carry `x-should-retry: false` so the
//! official SDKs do not retry deterministic failures; request bodies are at most 1 MiB (the
//! streamed archive upload has its own 4 GiB bound) and every non-streaming request ends
//! within [`limits::REQUEST_TIMEOUT`]; errors are always `{code, message}` JSON.

mod auth;
mod body;
mod error;
mod limits;
mod logtail;
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

/// Who is calling, as far as secret references go: requests carry [`Caller::Local`] only when
/// they arrived on the engine's Unix socket from its own OS user ([`local_router`]); everything
/// else is [`Caller::Http`].
pub use hypedeck_engine::Caller;

/// The API for the engine's Unix socket: the same routes and token, with every request marked
/// [`Caller::Local`]. Serve it only on a socket whose peers were checked to be this OS user.
pub fn local_router(state: ApiState) -> Router {
    router(state).layer(axum::Extension(Caller::Local))
}

/// The caller of a request (see [`local_router`]).
pub(crate) struct CallerOf(pub Caller);

impl<S: Send + Sync> axum::extract::FromRequestParts<S> for CallerOf {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(
        parts: &mut axum::http::request::Parts,
        _: &S,
    ) -> Result<Self, Self::Rejection> {
        Ok(CallerOf(
            parts
                .extensions
                .get::<Caller>()
                .copied()
                .unwrap_or(Caller::Http),
        ))
    }
}

/// The whole API.
pub fn router(state: ApiState) -> Router {
    let protected = routes::instances::routes()
        .merge(routes::lifecycle::routes())
        .merge(routes::images::routes())
        .merge(routes::volumes::routes())
        .merge(routes::exec::routes())
        .merge(routes::cp::routes())
        .merge(routes::hypervisors::routes())
        .merge(routes::system::routes())
        .merge(routes::credentials::routes())
        .merge(routes::network::routes())
        .merge(routes::snapshots::routes())
        .merge(routes::templates::routes())
        .merge(routes::stats::routes())
        .merge(routes::stats::reclaim_routes())
        .merge(routes::autostandby::routes())
        .merge(routes::unsupported::routes())
        .layer(axum::middleware::from_fn_with_state(
            state.token.clone(),
            auth::require_token,
        ));
    Router::new()
        .merge(routes::meta::routes())
        .merge(protected)
        .fallback(error::route_not_found)
        .method_not_allowed_fallback(error::method_not_allowed)
        .layer(tower_http::catch_panic::CatchPanicLayer::custom(
            error::panicked,
        ))
        .layer(axum::middleware::from_fn(limits::bound))
        .layer(axum::extract::DefaultBodyLimit::max(limits::MAX_BODY_BYTES))
        .layer(axum::middleware::from_fn(error::mark_no_retry))
        .layer(cors())
        .with_state(state)
}

/// Origins browsers may call the API from: the desktop window (Tauri's own origins), the web
/// UI's own servers on this machine (`npm run dev:ui` on port 1420, `vite preview` of `ui/dist`
/// on 4173), and whatever `HYPEDECK_CORS_ORIGINS` adds (comma-separated, exact). Not every
/// loopback page: a guest's forwarded port is a loopback page too. Auth is a bearer token,
/// never a cookie, so CORS is not the lock; it keeps other pages from even trying.
pub const CORS_ORIGINS_ENV: &str = "HYPEDECK_CORS_ORIGINS";

/// The web UI's own origins (see [`CORS_ORIGINS_ENV`]).
pub const UI_ORIGINS: [&str; 4] = [
    "http://127.0.0.1:1420",
    "http://localhost:1420",
    "http://127.0.0.1:4173",
    "http://localhost:4173",
];

/// Whether a browser page at `origin` may call the API (see [`CORS_ORIGINS_ENV`]).
pub fn origin_allowed(origin: &str, extra: &[String]) -> bool {
    matches!(
        origin,
        "tauri://localhost" | "http://tauri.localhost" | "https://tauri.localhost"
    ) || UI_ORIGINS.contains(&origin)
        || extra.iter().any(|o| o == origin)
}

fn cors() -> CorsLayer {
    let extra: Vec<String> = std::env::var(CORS_ORIGINS_ENV)
        .unwrap_or_default()
        .split(',')
        .map(|o| o.trim().trim_end_matches('/').to_string())
        .filter(|o| !o.is_empty())
        .collect();
    CorsLayer::new()
        .allow_origin(AllowOrigin::predicate(move |origin, _| {
            origin.to_str().is_ok_and(|o| origin_allowed(o, &extra))
        }))
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
