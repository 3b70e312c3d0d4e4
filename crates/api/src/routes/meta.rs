//! Unauthenticated routes: health and the spec.

use axum::Router;
use axum::http::header::CONTENT_TYPE;
use axum::response::IntoResponse;
use axum::routing::get;
use hypedeck_model::Health;

use crate::ApiState;

/// `/health`, `/spec.yaml`.
pub fn routes() -> Router<ApiState> {
    Router::new()
        .route("/health", get(health))
        .route("/spec.yaml", get(spec))
}

async fn health() -> axum::Json<Health> {
    axum::Json(Health {
        status: "ok".into(),
    })
}

async fn spec() -> impl IntoResponse {
    (
        [(CONTENT_TYPE, "application/vnd.oai.openapi")],
        crate::OPENAPI_YAML,
    )
}
