//! Upstream's auto-standby routes: `GET /instances/{id}/auto-standby/status` and
//! `POST /instances/{id}/auto-standby/hold` (`AutoStandbyStatus`; the engine's
//! `autostandby.rs` says what counts as activity and how an asleep instance wakes).

use axum::extract::{Path, State};
use axum::routing::{get, post};
use axum::{Json, Router};
use hypedeck_engine::EngineError;
use hypedeck_model::ErrorCode;
use hypedeck_model::autostandby::AutoStandbyStatus;

use crate::ApiState;
use crate::error::ApiError;

/// The auto-standby routes (all need auth).
pub fn routes() -> Router<ApiState> {
    Router::new()
        .route("/instances/{id}/auto-standby/status", get(status))
        .route("/instances/{id}/auto-standby/hold", post(hold))
}

async fn status(
    State(state): State<ApiState>,
    Path(id): Path<String>,
) -> Result<Json<AutoStandbyStatus>, ApiError> {
    match state.engine.auto_standby_status(&id).await {
        Ok(s) => Ok(Json(s)),
        // Upstream loads the instance in the handler (not the resolver): its 404 says so.
        Err(EngineError::NotFound | EngineError::Ambiguous) => {
            Err(ApiError::new(ErrorCode::NotFound, "instance not found"))
        }
        Err(e) => Err(ApiError::from_engine("read the auto-standby status", e)),
    }
}

async fn hold(
    State(state): State<ApiState>,
    Path(id): Path<String>,
) -> Result<Json<AutoStandbyStatus>, ApiError> {
    state
        .engine
        .hold_auto_standby(&id)
        .await
        .map(Json)
        .map_err(|e| ApiError::from_engine("hold auto-standby", e))
}
