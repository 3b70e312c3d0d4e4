//! `/volumes`: list, create (empty or from a tar archive), get, delete; and
//! `/instances/{id}/volumes/{volumeId}`: attach to and detach from an instance (running or
//! stopped).

use std::collections::BTreeMap;

use axum::body::{Body, Bytes};
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::IntoResponse;
use axum::routing::{get, post};
use axum::{Json, Router};
use futures_util::StreamExt;
use hypedeck_engine::MAX_ARCHIVE_BYTES;
use hypedeck_model::schema::{attach_volume_request, create_volume_request};
use hypedeck_model::{AttachVolumeRequest, CreateVolumeRequest, ErrorCode, Volume};

use crate::error::ApiError;
use crate::routes::query_param;
use crate::{ApiState, body};

/// Volume routes (all need auth).
pub fn routes() -> Router<ApiState> {
    Router::new()
        .route("/volumes", get(list).post(create))
        .route("/volumes/from-archive", post(from_archive))
        .route("/volumes/{id}", get(get_one).delete(delete))
        .route(
            "/instances/{id}/volumes/{volume_id}",
            post(attach).delete(detach),
        )
}

async fn attach(
    State(state): State<ApiState>,
    Path((id, volume_id)): Path<(String, String)>,
    headers: HeaderMap,
    bytes: Bytes,
) -> Result<Json<hypedeck_model::Instance>, ApiError> {
    let request: AttachVolumeRequest = body::parse(
        &headers,
        &bytes,
        "AttachVolumeRequest",
        &attach_volume_request(),
    )?;
    super::detached(&state.engine, |e| async move {
        e.attach_volume(&id, &volume_id, request).await
    })
    .await
    .map(Json)
    .map_err(|e| ApiError::from_engine("attach volume", e))
}

async fn detach(
    State(state): State<ApiState>,
    Path((id, volume_id)): Path<(String, String)>,
) -> Result<Json<hypedeck_model::Instance>, ApiError> {
    super::detached(&state.engine, |e| async move {
        e.detach_volume(&id, &volume_id).await
    })
    .await
    .map(Json)
    .map_err(|e| ApiError::from_engine("detach volume", e))
}

/// `?tags[k]=v` filters (ANDed), like instances.
async fn list(
    State(state): State<ApiState>,
    query: super::ListQuery,
) -> Result<Json<Vec<Volume>>, ApiError> {
    let pairs = super::list_query(query)?;
    let filter = super::tag_filter(&pairs)?;
    let mut volumes = state
        .engine
        .list_volumes()
        .map_err(|e| ApiError::from_engine("list volumes", e))?;
    volumes.retain(|v| super::tags_match(v.tags.as_ref().unwrap_or(&BTreeMap::new()), &filter));
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
    let volume = super::detached(&state.engine, |e| async move {
        e.create_volume(request, None).await
    })
    .await
    .map_err(|e| ApiError::from_engine("create volume", e))?;
    Ok((StatusCode::CREATED, Json(volume)))
}

/// `?name=&size_gb=&id=&tags=` (tags as `k=v,k2=v2` or a JSON object), body = the archive,
/// streamed to a file under the data dir (never held in memory), at most `MAX_ARCHIVE_BYTES`.
async fn from_archive(
    State(state): State<ApiState>,
    Query(query): Query<Vec<(String, String)>>,
    body: Body,
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
    let upload = state
        .engine
        .upload_path()
        .map_err(|e| ApiError::from_engine("store the volume archive", e))?;
    let stored = receive(body, &upload).await;
    let size = match stored {
        Ok(size) => size,
        Err(e) => {
            let _ = tokio::fs::remove_file(&upload).await;
            return Err(e);
        }
    };
    if size == 0 {
        let _ = tokio::fs::remove_file(&upload).await;
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
        .create_volume(request, Some(upload))
        .await
        .map_err(|e| ApiError::from_engine("create volume", e))?;
    Ok((StatusCode::CREATED, Json(volume)))
}

/// Streams `body` into `path`; refuses (413) past `MAX_ARCHIVE_BYTES`.
async fn receive(body: Body, path: &std::path::Path) -> Result<u64, ApiError> {
    use tokio::io::AsyncWriteExt;
    let failed = |e: std::io::Error| {
        tracing::error!(error = %e, "store an uploaded archive");
        ApiError::new(ErrorCode::InternalError, "failed to store the archive")
    };
    let mut file = tokio::fs::File::create(path).await.map_err(failed)?;
    let mut stream = body.into_data_stream();
    let mut size: u64 = 0;
    while let Some(chunk) = stream.next().await {
        let chunk: Bytes =
            chunk.map_err(|e| ApiError::bad_request(format!("request body has an error: {e}")))?;
        size += chunk.len() as u64;
        if size > MAX_ARCHIVE_BYTES {
            return Err(ApiError::new(
                ErrorCode::InvalidRequest,
                format!(
                    "invalid request: the archive is larger than {} MiB",
                    MAX_ARCHIVE_BYTES / (1024 * 1024)
                ),
            )
            .with_status(413));
        }
        file.write_all(&chunk).await.map_err(failed)?;
    }
    file.flush().await.map_err(failed)?;
    Ok(size)
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
    super::detached(&state.engine, |e| async move { e.delete_volume(&id).await })
        .await
        .map_err(|e| ApiError::from_engine("delete volume", e))?;
    Ok(StatusCode::NO_CONTENT)
}
