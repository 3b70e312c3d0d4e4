//! `/volumes`: list, create (empty or from a tar archive), get, delete.

use std::collections::BTreeMap;

use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::IntoResponse;
use axum::routing::{get, post};
use axum::{Json, Router};
use hypedeck_engine::MAX_ARCHIVE_BYTES;
use hypedeck_model::schema::create_volume_request;
use hypedeck_model::{CreateVolumeRequest, Volume};

use crate::error::ApiError;
use crate::routes::query_param;
use crate::{ApiState, body};

/// Volume routes (all need auth).
pub fn routes() -> Router<ApiState> {
    Router::new()
        .route("/volumes", get(list).post(create))
        .route(
            "/volumes/from-archive",
            post(from_archive).layer(DefaultBodyLimit::max(MAX_ARCHIVE_BYTES)),
        )
        .route("/volumes/{id}", get(get_one).delete(delete))
}

async fn list(State(state): State<ApiState>) -> Result<Json<Vec<Volume>>, ApiError> {
    let volumes = state
        .engine
        .list_volumes()
        .map_err(|e| ApiError::from_engine("list volumes", e))?;
    Ok(Json(volumes))
}

async fn create(
    State(state): State<ApiState>,
    headers: HeaderMap,
    bytes: Bytes,
) -> Result<impl IntoResponse, ApiError> {
    let request: CreateVolumeRequest = body::parse(
        &headers,
        &bytes,
        "CreateVolumeRequest",
        &create_volume_request(),
    )?;
    let volume = state
        .engine
        .create_volume(request, None)
        .await
        .map_err(|e| ApiError::from_engine("create volume", e))?;
    Ok((StatusCode::CREATED, Json(volume)))
}

/// `?name=&size_gb=&id=&tags=` (tags as `k=v,k2=v2` or a JSON object), body = the archive.
async fn from_archive(
    State(state): State<ApiState>,
    Query(query): Query<Vec<(String, String)>>,
    bytes: Bytes,
) -> Result<impl IntoResponse, ApiError> {
    let name = query_param(&query, "name").ok_or_else(|| {
        ApiError::bad_request(
            "parameter \"name\" in query has an error: value is required but missing",
        )
    })?;
    let size = query_param(&query, "size_gb").ok_or_else(|| {
        ApiError::bad_request(
            "parameter \"size_gb\" in query has an error: value is required but missing",
        )
    })?;
    let size_gb: i64 = size.parse().map_err(|_| {
        ApiError::bad_request(format!(
            "parameter \"size_gb\" in query has an error: value {size} is not an integer"
        ))
    })?;
    let tags = match query_param(&query, "tags") {
        None => None,
        Some(text) => Some(parse_tags(&text)?),
    };
    if bytes.is_empty() {
        return Err(ApiError::bad_request(
            "request body has an error: value is required but missing",
        ));
    }
    let request = CreateVolumeRequest {
        id: query_param(&query, "id"),
        name,
        size_gb,
        tags,
    };
    let volume = state
        .engine
        .create_volume(request, Some(bytes.to_vec()))
        .await
        .map_err(|e| ApiError::from_engine("create volume", e))?;
    Ok((StatusCode::CREATED, Json(volume)))
}

fn parse_tags(text: &str) -> Result<BTreeMap<String, String>, ApiError> {
    if text.trim_start().starts_with('{') {
        return serde_json::from_str(text).map_err(|e| {
            ApiError::bad_request(format!("parameter \"tags\" in query has an error: {e}"))
        });
    }
    let mut tags = BTreeMap::new();
    for item in text.split(',').filter(|s| !s.trim().is_empty()) {
        let (k, v) = item.split_once('=').unwrap_or((item, ""));
        tags.insert(k.trim().to_string(), v.trim().to_string());
    }
    Ok(tags)
}

async fn get_one(
    State(state): State<ApiState>,
    Path(id): Path<String>,
) -> Result<Json<Volume>, ApiError> {
    let volume = state
        .engine
        .get_volume(&id)
        .map_err(|e| ApiError::from_engine("get volume", e))?;
    Ok(Json(volume))
}

async fn delete(
    State(state): State<ApiState>,
    Path(id): Path<String>,
) -> Result<StatusCode, ApiError> {
    state
        .engine
        .delete_volume(&id)
        .await
        .map_err(|e| ApiError::from_engine("delete volume", e))?;
    Ok(StatusCode::NO_CONTENT)
}
