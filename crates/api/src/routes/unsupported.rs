//! Operations of upstream's spec that Hypedeck does not serve: builds, builders, devices,
//! ingresses and pushes. They need the token like every other route, then answer 501 `not_implemented`
//! naming the operation, so an SDK call fails fast and says why (instead of a 404 that reads
//! like a missing resource).

use axum::Router;
use axum::extract::{OriginalUri, State};
use axum::http::Method;
use axum::routing::{MethodRouter, any};
use hypedeck_model::ErrorCode;

use crate::ApiState;
use crate::error::ApiError;

/// `(path, methods, feature)` for every upstream operation Hypedeck does not serve.
pub const UNSUPPORTED: &[(&str, &[&str], &str)] = &[
    ("/devices", &["GET", "POST"], "device passthrough"),
    ("/devices/available", &["GET"], "device passthrough"),
    ("/devices/{id}", &["GET", "DELETE"], "device passthrough"),
    ("/ingresses", &["GET", "POST"], "ingresses"),
    ("/ingresses/{id}", &["GET", "DELETE"], "ingresses"),
    ("/builds", &["GET", "POST"], "image builds"),
    ("/builds/{id}", &["GET", "DELETE"], "image builds"),
    ("/builds/{id}/events", &["GET"], "image builds"),
    ("/builders", &["GET", "POST"], "image builders"),
    ("/builders/{id}", &["GET", "DELETE"], "image builders"),
    ("/builders/{id}/prune", &["POST"], "image builders"),
    ("/pushes", &["GET", "POST"], "image pushes"),
    ("/pushes/{id}", &["GET"], "image pushes"),
];

/// The routes (all need auth); other methods on these paths are 405.
pub fn routes() -> Router<ApiState> {
    UNSUPPORTED
        .iter()
        .fold(Router::new(), |router, (path, methods, feature)| {
            router.route(path, unsupported(methods, feature))
        })
}

fn unsupported(methods: &'static [&'static str], feature: &'static str) -> MethodRouter<ApiState> {
    any(
        move |method: Method, OriginalUri(uri): OriginalUri, State(_): State<ApiState>| async move {
            if !methods.contains(&method.as_str()) {
                return crate::error::method_not_allowed().await;
            }
            ApiError::new(
                ErrorCode::NotImplemented,
                format!(
                    "{method} {}: {feature} is not implemented by Hypedeck",
                    uri.path()
                ),
            )
        },
    )
}
