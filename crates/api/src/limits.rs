//! Bounds on what one request may cost: body size (JSON bodies are small; the archive upload
//! streams under its own bound) and time (every non-streaming request ends, with a JSON error
//! when the engine took too long). Framework rejections that are not JSON (a body over the
//! limit) are rewritten into `{code, message}` here too.

use std::time::Duration;

use axum::extract::Request;
use axum::http::header::{CONTENT_LENGTH, CONTENT_TYPE};
use axum::http::{Method, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use hypedeck_model::ErrorCode;

use crate::error::ApiError;

/// Largest request body (but the archive upload's).
pub const MAX_BODY_BYTES: usize = 1024 * 1024;

/// Longest a non-streaming request may take: above the engine's own longest bound (saving a
/// VM's memory for standby, 300 s).
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(330);

/// Requests whose answer is a stream, or whose body is: no timeout, no body limit here.
fn streaming(method: &Method, path: &str) -> bool {
    path.ends_with("/logs")
        || path.ends_with("/exec")
        || path.ends_with("/cp")
        || path.ends_with("/wait")
        || (method == Method::POST && path == "/volumes/from-archive")
}

fn too_large() -> Response {
    ApiError::new(
        ErrorCode::InvalidRequest,
        format!(
            "invalid request: the request body is larger than {} KiB",
            MAX_BODY_BYTES / 1024
        ),
    )
    .with_status(413)
    .into_response()
}

/// Applies the size and time bounds.
pub async fn bound(request: Request, next: Next) -> Response {
    let (method, path) = (request.method().clone(), request.uri().path().to_string());
    tracing::debug!(%method, %path, "request");
    if streaming(&method, &path) {
        return next.run(request).await;
    }
    let started = std::time::Instant::now();
    let declared = request
        .headers()
        .get(CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > MAX_BODY_BYTES as u64) {
        return too_large();
    }
    let response = match tokio::time::timeout(REQUEST_TIMEOUT, next.run(request)).await {
        Ok(response) => response,
        Err(_) => {
            tracing::error!(%method, %path, "request timed out");
            return ApiError::new(
                ErrorCode::InternalError,
                format!(
                    "the request did not finish within {} s",
                    REQUEST_TIMEOUT.as_secs()
                ),
            )
            .with_status(504)
            .into_response();
        }
    };
    // A chunked body over the limit is refused by the extractor with plain text.
    let json = response
        .headers()
        .get(CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/json"));
    if response.status() == StatusCode::PAYLOAD_TOO_LARGE && !json {
        return too_large();
    }
    tracing::debug!(
        %method, %path, status = response.status().as_u16(),
        ms = started.elapsed().as_millis() as u64, "answered"
    );
    response
}
