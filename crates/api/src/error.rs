//! `ApiError`: every failure becomes upstream's status and `{code, message}` body.

use axum::Json;
use axum::extract::Request;
use axum::http::{HeaderValue, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use hypedeck_engine::EngineError;
use hypedeck_model::{ErrorBody, ErrorCode, Rejection};

/// An error answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiError {
    /// HTTP status.
    pub status: StatusCode,
    /// Body.
    pub body: ErrorBody,
}

impl ApiError {
    /// An error with `code`'s usual status.
    pub fn new(code: ErrorCode, message: impl Into<String>) -> Self {
        let status =
            StatusCode::from_u16(code.http_status()).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        ApiError {
            status,
            body: ErrorBody::new(code, message),
        }
    }

    /// The same error with another status (upstream answers some codes with two statuses).
    pub fn with_status(mut self, status: u16) -> Self {
        self.status = StatusCode::from_u16(status).unwrap_or(self.status);
        self
    }

    /// 401.
    pub fn unauthorized(message: impl Into<String>) -> Self {
        ApiError::new(ErrorCode::Unauthorized, message)
    }

    /// A schema-validator style 400 (`"Bad Request"`).
    pub fn bad_request(message: impl Into<String>) -> Self {
        ApiError::new(ErrorCode::SchemaViolation, message)
    }

    /// Maps an engine failure of `operation`, a phrase naming its object (`"create instance"`,
    /// `"list volumes"`). Internal details go to the log,
    /// the client gets upstream's generic text.
    pub fn from_engine(operation: &str, error: EngineError) -> Self {
        if disk_full(&error) {
            tracing::error!(%operation, error = %error_chain(&error), "disk full");
            return ApiError::new(
                ErrorCode::InsufficientResources,
                format!(
                    "{operation} failed: the disk holding Hypedeck's data dir is full (no space \
                     left on device); free some space and retry"
                ),
            );
        }
        match error {
            EngineError::NotFound => ApiError::new(ErrorCode::NotFound, "resource not found"),
            EngineError::Ambiguous => ApiError::new(
                ErrorCode::Ambiguous,
                "multiple resources match, use full ID",
            ),
            EngineError::Rejected(r) => r.into(),
            EngineError::NameConflict(_) => {
                ApiError::new(ErrorCode::NameConflict, error.to_string())
            }
            EngineError::InvalidState(_) => {
                ApiError::new(ErrorCode::InvalidState, error.to_string())
            }
            EngineError::NoHypervisor(_) => {
                ApiError::new(ErrorCode::DependencyMissing, error.to_string())
            }
            EngineError::BackendUnavailable { .. } => {
                ApiError::new(ErrorCode::NotSupported, error.to_string()).with_status(400)
            }
            EngineError::HypervisorUnavailable { .. } => ApiError::new(
                ErrorCode::InvalidRequest,
                format!("invalid request: {error}"),
            ),
            EngineError::ImageNotFound(_) => ApiError::new(ErrorCode::NotFound, error.to_string()),
            EngineError::InvalidImageReference => {
                ApiError::new(ErrorCode::InvalidName, "invalid image reference")
            }
            EngineError::PlatformNotAvailable => {
                ApiError::new(ErrorCode::PlatformNotAvailable, error.to_string())
            }
            EngineError::ImageRateLimited => {
                ApiError::new(ErrorCode::RateLimited, error.to_string())
            }
            EngineError::ImageNotReady(_) => {
                ApiError::new(ErrorCode::ImageNotReady, error.to_string())
            }
            EngineError::ImageFailed(_) => {
                tracing::error!(%operation, error = %error, "image pull failed");
                ApiError::new(ErrorCode::InternalError, error.to_string())
            }
            EngineError::Agent(_) => {
                tracing::warn!(%operation, error = %error, "guest agent");
                ApiError::new(ErrorCode::InternalError, error.to_string())
            }
            EngineError::Dependency(_) => {
                tracing::error!(%operation, error = %error, "guest preparation failed");
                ApiError::new(ErrorCode::DependencyMissing, error.to_string())
            }
            EngineError::Corrupt { .. } => {
                tracing::error!(%operation, error = %error, "damaged file in the data dir");
                ApiError::new(
                    ErrorCode::InternalError,
                    format!("failed to {operation}: {error}"),
                )
            }
            // What failed is said (a step, never a value); the cause is in the log.
            EngineError::Network { .. } | EngineError::Egress { .. } => {
                tracing::error!(%operation, error = %error_chain(&error), "instance operation failed");
                ApiError::new(
                    ErrorCode::InternalError,
                    format!("failed to {operation}: {error}"),
                )
            }
            EngineError::Secrets(inner @ hypedeck_secrets::SecretError::Unavailable(_)) => {
                let message = inner.to_string();
                tracing::error!(%operation, error = %message, "keychain unavailable");
                ApiError::new(ErrorCode::SecretsUnavailable, message)
            }
            EngineError::Hypervisor(
                inner @ hypedeck_hypervisor::HypervisorError::Unsupported { .. },
            ) => ApiError::new(ErrorCode::NotSupported, inner.to_string()).with_status(400),
            EngineError::Secrets(_)
            | EngineError::Store(_)
            | EngineError::Hypervisor(_)
            | EngineError::Io { .. }
            | EngineError::Build { .. }
            | EngineError::Task => {
                tracing::error!(%operation, error = %error_chain(&error), "instance operation failed");
                ApiError::new(ErrorCode::InternalError, format!("failed to {operation}"))
            }
        }
    }
}

/// Whether any cause of `error` is "no space left on device" (or a disk quota hit): the data
/// dir's disk is full, which the client can act on, unlike other I/O failures.
fn disk_full(error: &(dyn std::error::Error + 'static)) -> bool {
    causes(error).any(|e| {
        e.downcast_ref::<std::io::Error>().is_some_and(|io| {
            matches!(
                io.kind(),
                std::io::ErrorKind::StorageFull | std::io::ErrorKind::QuotaExceeded
            ) || matches!(io.raw_os_error(), Some(28 | 122))
        })
    })
}

/// `error` and each of its sources, outermost first.
fn causes<'a>(
    error: &'a (dyn std::error::Error + 'static),
) -> impl Iterator<Item = &'a (dyn std::error::Error + 'static)> {
    std::iter::successors(Some(error), |e| e.source())
}

/// `error: cause: cause…` for logs.
fn error_chain(error: &(dyn std::error::Error + 'static)) -> String {
    causes(error)
        .map(|e| e.to_string())
        .collect::<Vec<_>>()
        .join(": ")
}

impl From<Rejection> for ApiError {
    fn from(r: Rejection) -> Self {
        ApiError::new(r.code, r.message)
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        (self.status, Json(self.body)).into_response()
    }
}

/// Unknown paths.
pub async fn route_not_found() -> ApiError {
    ApiError::new(ErrorCode::NotFound, "no matching operation was found")
}

/// A handler panicked: the client gets upstream's generic 500 instead of a dropped
/// connection, and the panic's payload (which could quote request data) stays out of both
/// the response and this log line; the panic hook has already reported where it happened.
pub fn panicked(_payload: Box<dyn std::any::Any + Send + 'static>) -> Response {
    tracing::error!("a request handler panicked");
    ApiError::new(ErrorCode::InternalError, "internal error").into_response()
}

/// Known paths, wrong method.
pub async fn method_not_allowed() -> ApiError {
    ApiError::new(ErrorCode::MethodNotAllowed, "method not allowed")
}

/// Adds `x-should-retry: false` to every 4xx and to 500s that retrying cannot fix, so SDK
/// clients fail fast on deterministic errors.
pub async fn mark_no_retry(request: Request, next: Next) -> Response {
    let mut response = next.run(request).await;
    let status = response.status();
    if status.is_client_error() && status != StatusCode::TOO_MANY_REQUESTS
        || status == StatusCode::INTERNAL_SERVER_ERROR
        || status == StatusCode::NOT_IMPLEMENTED
        || status == StatusCode::SERVICE_UNAVAILABLE
    {
        response
            .headers_mut()
            .insert("x-should-retry", HeaderValue::from_static("false"));
    }
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    fn io(what: &str, kind: std::io::Error) -> EngineError {
        EngineError::Io {
            what: what.into(),
            source: kind,
        }
    }

    /// Engine failures keep their causes, so the client learns what failed by kind: a full
    /// disk while making an overlay is the disk-full answer (it was a 500 "prepare guest"
    /// before), a volume listing failure names volumes, not a guest.
    #[test]
    fn typed_engine_failures_map_to_what_failed() {
        let full = ApiError::from_engine(
            "create instance",
            io("size overlay", std::io::Error::from_raw_os_error(28)),
        );
        assert_eq!(full.body.code, "insufficient_resources");
        assert!(
            full.body
                .message
                .starts_with("create instance failed: the disk")
        );

        let listing = ApiError::from_engine(
            "list volumes",
            io("list volumes", std::io::Error::from_raw_os_error(13)),
        );
        assert_eq!(listing.status, StatusCode::INTERNAL_SERVER_ERROR);
        assert_eq!(listing.body.code, "internal_error");
        assert_eq!(listing.body.message, "failed to list volumes");

        let swap = ApiError::from_engine(
            "update instance",
            EngineError::Egress {
                what: "swap the instance's rules",
                source: hypedeck_egress::EgressError::ReadCaCert(std::io::Error::other("x")),
            },
        );
        assert_eq!(swap.body.code, "internal_error");
        assert_eq!(
            swap.body.message,
            "failed to update instance: egress proxy: swap the instance's rules"
        );

        let missing = ApiError::from_engine(
            "start instance",
            EngineError::Dependency("run mkfs.ext4 (install e2fsprogs): not found".into()),
        );
        assert_eq!(missing.body.code, "dependency_missing");
        assert_eq!(
            missing.body.message,
            "prepare guest: run mkfs.ext4 (install e2fsprogs): not found"
        );

        let generic = ApiError::from_engine("start instance", EngineError::Task);
        assert_eq!(generic.body.message, "failed to start instance");
    }
}
