//! `GET /templates`, `DELETE /templates/{id}` (a Hypedeck extension): the VM templates
//! instances start from (see the engine's `templates.rs`).

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::routing::{delete, get};
use axum::{Json, Router};
use hypedeck_engine::TemplateInfo;

use crate::ApiState;
use crate::error::ApiError;

/// `/templates`.
pub fn routes() -> Router<ApiState> {
    Router::new()
        .route("/templates", get(list))
        .route("/templates/{id}", delete(remove))
}

async fn list(State(state): State<ApiState>) -> Json<Vec<TemplateInfo>> {
    Json(state.engine.templates())
}

async fn remove(
    State(state): State<ApiState>,
    Path(id): Path<String>,
) -> Result<StatusCode, ApiError> {
    state
        .engine
        .delete_template(&id)
        .map_err(|e| ApiError::from_engine("delete template", e))?;
    Ok(StatusCode::NO_CONTENT)
}
