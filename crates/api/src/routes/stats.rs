//! Resource use: upstream's `GET /instances/{id}/stats` (`InstanceStats`), and Hypedeck's
//! history for graphs: `GET /instances/{id}/stats/history` (a sample every 2 s, the last ten
//! minutes) and `GET /stats` (the host's memory and CPUs, and the last minute of every
//! instance with a VMM).

use axum::extract::{Path, State};
use axum::routing::get;
use axum::{Json, Router};
use hypedeck_model::{FleetStats, InstanceStats, StatsHistory};

use crate::ApiState;
use crate::error::ApiError;

/// The stats routes (all need auth).
pub fn routes() -> Router<ApiState> {
    Router::new()
        .route("/instances/{id}/stats", get(one))
        .route("/instances/{id}/stats/history", get(history))
        .route("/stats", get(fleet))
}

async fn one(
    State(state): State<ApiState>,
    Path(id): Path<String>,
) -> Result<Json<InstanceStats>, ApiError> {
    state
        .engine
        .stats(&id)
        .await
        .map(Json)
        .map_err(|e| ApiError::from_engine("read instance stats", e))
}

async fn history(
    State(state): State<ApiState>,
    Path(id): Path<String>,
) -> Result<Json<StatsHistory>, ApiError> {
    state
        .engine
        .stats_history(&id)
        .map(Json)
        .map_err(|e| ApiError::from_engine("read instance stats", e))
}

async fn fleet(State(state): State<ApiState>) -> Result<Json<FleetStats>, ApiError> {
    state
        .engine
        .fleet_stats()
        .map(Json)
        .map_err(|e| ApiError::from_engine("read stats", e))
}

/// `POST /resources/memory/reclaim` (upstream's; see the engine's `reclaim.rs`).
pub fn reclaim_routes() -> Router<ApiState> {
    Router::new().route("/resources/memory/reclaim", axum::routing::post(reclaim))
}

async fn reclaim(
    State(state): State<ApiState>,
    headers: axum::http::HeaderMap,
    bytes: axum::body::Bytes,
) -> Result<Json<hypedeck_model::reclaim::MemoryReclaimResponse>, ApiError> {
    let request: hypedeck_model::reclaim::MemoryReclaimRequest = crate::body::parse(
        &headers,
        &bytes,
        "MemoryReclaimRequest",
        &hypedeck_model::schema::memory_reclaim_request(),
    )?;
    super::detached(
        &state.engine,
        |e| async move { e.reclaim_memory(request).await },
    )
    .await
    .map(Json)
    .map_err(|e| ApiError::from_engine("reclaim memory", e))
}
