//! `/instances` and `/instances/{id}`.

use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::IntoResponse;
use axum::routing::get;
use axum::{Json, Router};
use hypedeck_engine::ListFilter;
use hypedeck_model::schema::{create_instance_request, update_instance_request};
use hypedeck_model::{CreateInstanceRequest, Instance, UpdateInstanceRequest};

use crate::error::ApiError;
use crate::{ApiState, body};

/// Instance routes (all need auth).
pub fn routes() -> Router<ApiState> {
    Router::new()
        .route("/instances", get(list).post(create))
        .route("/instances/{id}", get(get_one).patch(update).delete(delete))
        .route("/instances/{id}/command", get(command))
}

/// Parses `?state=Running&tags[team]=a` like upstream's validator.
fn list_filter(pairs: Vec<(String, String)>) -> Result<ListFilter, ApiError> {
    let state = super::query_param(&pairs, "state")
        .map(|s| super::state_param(&s))
        .transpose()?;
    Ok(ListFilter {
        state,
        tags: super::tag_filter(&pairs)?,
    })
}

async fn list(
    State(state): State<ApiState>,
    query: super::ListQuery,
) -> Result<impl IntoResponse, ApiError> {
    let pairs = super::list_query(query)?;
    let filter = list_filter(pairs)?;
    // The engine's JSON array as is: it reuses each unchanged instance's rendering.
    let json = state
        .engine
        .list_json(&filter)
        .await
        .map_err(|e| ApiError::from_engine("list instances", e))?;
    Ok(([(header::CONTENT_TYPE, "application/json")], json))
}

async fn create(
    State(state): State<ApiState>,
    crate::CallerOf(caller): crate::CallerOf,
    headers: HeaderMap,
    bytes: Bytes,
) -> Result<impl IntoResponse, ApiError> {
    let request: CreateInstanceRequest = body::parse(
        &headers,
        &bytes,
        "CreateInstanceRequest",
        &create_instance_request(),
    )?;
    let spec = request.validate()?;
    let instance = super::detached(
        &state.engine,
        |e| async move { e.create_as(spec, caller).await },
    )
    .await
    .map_err(|e| ApiError::from_engine("create instance", e))?;
    Ok((StatusCode::CREATED, Json(instance)))
}

async fn get_one(
    State(state): State<ApiState>,
    Path(id): Path<String>,
) -> Result<Json<Instance>, ApiError> {
    let instance = state
        .engine
        .get(&id)
        .await
        .map_err(|e| ApiError::from_engine("get instance", e))?;
    Ok(Json(instance))
}

/// Hypedeck: what the instance runs (its image's Entrypoint/Cmd, its overrides, the argv).
async fn command(
    State(state): State<ApiState>,
    Path(id): Path<String>,
) -> Result<Json<hypedeck_engine::LaunchCommand>, ApiError> {
    state
        .engine
        .command(&id)
        .map(Json)
        .map_err(|e| ApiError::from_engine("get the instance's command", e))
}

async fn update(
    State(state): State<ApiState>,
    Path(id): Path<String>,
    crate::CallerOf(caller): crate::CallerOf,
    headers: HeaderMap,
    bytes: Bytes,
) -> Result<Json<Instance>, ApiError> {
    let request: UpdateInstanceRequest = body::parse(
        &headers,
        &bytes,
        "UpdateInstanceRequest",
        &update_instance_request(),
    )?;
    // Upstream resolves the instance before the handler's checks: unknown ids are 404 first.
    state
        .engine
        .resolve(&id)
        .map_err(|e| ApiError::from_engine("update instance", e))?;
    let update = request.validate()?;
    let instance = super::detached(&state.engine, |e| async move {
        e.update_as(&id, update, caller).await
    })
    .await
    .map_err(|e| ApiError::from_engine("update instance", e))?;
    Ok(Json(instance))
}

async fn delete(
    State(state): State<ApiState>,
    Path(id): Path<String>,
) -> Result<StatusCode, ApiError> {
    super::detached(&state.engine, |e| async move { e.delete(&id).await })
        .await
        .map_err(|e| ApiError::from_engine("delete instance", e))?;
    Ok(StatusCode::NO_CONTENT)
}
