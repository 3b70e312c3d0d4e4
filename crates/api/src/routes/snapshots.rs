//! Snapshots and forks: `POST /instances/{id}/snapshots`, `GET /snapshots`, `GET`/`DELETE
//! /snapshots/{id}`, `POST /instances/{id}/snapshots/{snapshot_id}/restore`,
//! `POST /instances/{id}/fork`, `POST /snapshots/{id}/fork`, and
//! `GET|PUT|DELETE /instances/{id}/snapshot-schedule`.

use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::IntoResponse;
use axum::routing::{get, post};
use axum::{Json, Router};
use hypedeck_engine::{EngineError, SnapshotFilter};
use hypedeck_model::schema::{
    create_snapshot_request, fork_instance_request, fork_snapshot_request,
    restore_snapshot_request, set_snapshot_schedule_request,
};
use hypedeck_model::{
    CreateSnapshotRequest, ErrorCode, ForkInstanceRequest, ForkSnapshotRequest, Instance,
    RestoreSnapshotRequest, SetSnapshotScheduleRequest, Snapshot, SnapshotKind, SnapshotSchedule,
};

use crate::error::ApiError;
use crate::{ApiState, body};

/// Snapshot routes (all need auth).
pub fn routes() -> Router<ApiState> {
    Router::new()
        .route("/instances/{id}/snapshots", post(create))
        .route(
            "/instances/{id}/snapshots/{snapshot_id}/restore",
            post(restore),
        )
        .route("/snapshots", get(list))
        .route("/snapshots/{snapshot_id}", get(get_one).delete(delete))
        .route("/instances/{id}/fork", post(fork_instance))
        .route("/snapshots/{snapshot_id}/fork", post(fork_snapshot))
        .route(
            "/instances/{id}/snapshot-schedule",
            get(get_schedule).put(set_schedule).delete(delete_schedule),
        )
}

async fn create(
    State(state): State<ApiState>,
    Path(id): Path<String>,
    headers: HeaderMap,
    bytes: Bytes,
) -> Result<impl IntoResponse, ApiError> {
    let request: CreateSnapshotRequest = body::parse(
        &headers,
        &bytes,
        "CreateSnapshotRequest",
        &create_snapshot_request(),
    )?;
    let snapshot = super::detached(&state.engine, |e| async move {
        e.create_snapshot(&id, request).await
    })
    .await
    .map_err(|e| ApiError::from_engine("create snapshot", e))?;
    Ok((StatusCode::CREATED, Json(snapshot)))
}

/// `?source_instance_id=&kind=&name=&tags[k]=v` (all ANDed).
async fn list(
    State(state): State<ApiState>,
    query: super::ListQuery,
) -> Result<Json<Vec<Snapshot>>, ApiError> {
    let pairs = super::list_query(query)?;
    let kind = match super::query_param(&pairs, "kind").as_deref() {
        None => None,
        Some("Standby") => Some(SnapshotKind::Standby),
        Some("Stopped") => Some(SnapshotKind::Stopped),
        Some(other) => {
            return Err(ApiError::bad_request(format!(
                "parameter \"kind\" in query has an error: value is not one of the allowed values [\"Standby\",\"Stopped\"]: {other:?}"
            )));
        }
    };
    let filter = SnapshotFilter {
        source_instance_id: super::query_param(&pairs, "source_instance_id"),
        kind,
        name: super::query_param(&pairs, "name"),
        tags: super::tag_filter(&pairs)?,
    };
    state
        .engine
        .list_snapshots(&filter)
        .map(Json)
        .map_err(|e| ApiError::from_engine("list snapshots", e))
}

async fn get_one(
    State(state): State<ApiState>,
    Path(id): Path<String>,
) -> Result<Json<Snapshot>, ApiError> {
    state
        .engine
        .get_snapshot(&id)
        .map(Json)
        .map_err(|e| ApiError::from_engine("get snapshot", e))
}

async fn delete(
    State(state): State<ApiState>,
    Path(id): Path<String>,
) -> Result<StatusCode, ApiError> {
    super::detached(
        &state.engine,
        |e| async move { e.delete_snapshot(&id).await },
    )
    .await
    .map_err(|e| ApiError::from_engine("delete snapshot", e))?;
    Ok(StatusCode::NO_CONTENT)
}

async fn restore(
    State(state): State<ApiState>,
    Path((id, snapshot_id)): Path<(String, String)>,
    headers: HeaderMap,
    bytes: Bytes,
) -> Result<Json<Instance>, ApiError> {
    // The body is required (upstream's validator refuses a missing one), its fields optional.
    let request: RestoreSnapshotRequest = body::parse(
        &headers,
        &bytes,
        "RestoreSnapshotRequest",
        &restore_snapshot_request(),
    )?;
    super::detached(&state.engine, |e| async move {
        e.restore_snapshot(&id, &snapshot_id, request).await
    })
    .await
    .map(Json)
    .map_err(|e| ApiError::from_engine("restore snapshot", e))
}

async fn fork_instance(
    State(state): State<ApiState>,
    Path(id): Path<String>,
    headers: HeaderMap,
    bytes: Bytes,
) -> Result<impl IntoResponse, ApiError> {
    let request: ForkInstanceRequest = body::parse(
        &headers,
        &bytes,
        "ForkInstanceRequest",
        &fork_instance_request(),
    )?;
    let instance = super::detached(&state.engine, |e| async move {
        e.fork_instance(&id, request).await
    })
    .await
    .map_err(|e| {
        // A taken name is 409 here (upstream), where a create's `name_conflict` is 400.
        let taken = matches!(&e, EngineError::Rejected(r) if r.code == ErrorCode::NameConflict);
        let error = ApiError::from_engine("fork instance", e);
        if taken { error.with_status(409) } else { error }
    })?;
    Ok((StatusCode::CREATED, Json(instance)))
}

async fn fork_snapshot(
    State(state): State<ApiState>,
    Path(id): Path<String>,
    headers: HeaderMap,
    bytes: Bytes,
) -> Result<impl IntoResponse, ApiError> {
    let request: ForkSnapshotRequest = body::parse(
        &headers,
        &bytes,
        "ForkSnapshotRequest",
        &fork_snapshot_request(),
    )?;
    let instance = super::detached(&state.engine, |e| async move {
        e.fork_snapshot(&id, request).await
    })
    .await
    .map_err(|e| ApiError::from_engine("fork snapshot", e))?;
    Ok((StatusCode::CREATED, Json(instance)))
}

async fn get_schedule(
    State(state): State<ApiState>,
    Path(id): Path<String>,
) -> Result<Json<SnapshotSchedule>, ApiError> {
    state
        .engine
        .get_snapshot_schedule(&id)
        .map(Json)
        .map_err(|e| ApiError::from_engine("get snapshot schedule", e))
}

async fn set_schedule(
    State(state): State<ApiState>,
    Path(id): Path<String>,
    headers: HeaderMap,
    bytes: Bytes,
) -> Result<Json<SnapshotSchedule>, ApiError> {
    let request: SetSnapshotScheduleRequest = body::parse(
        &headers,
        &bytes,
        "SetSnapshotScheduleRequest",
        &set_snapshot_schedule_request(),
    )?;
    super::detached(&state.engine, |e| async move {
        e.set_snapshot_schedule(&id, request).await
    })
    .await
    .map(Json)
    .map_err(|e| ApiError::from_engine("set snapshot schedule", e))
}

async fn delete_schedule(
    State(state): State<ApiState>,
    Path(id): Path<String>,
) -> Result<StatusCode, ApiError> {
    super::detached(&state.engine, |e| async move {
        e.delete_snapshot_schedule(&id).await
    })
    .await
    .map_err(|e| ApiError::from_engine("delete snapshot schedule", e))?;
    Ok(StatusCode::NO_CONTENT)
}
