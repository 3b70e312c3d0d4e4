//! `/images` and `/images/{name}` (name is a URL-encoded OCI reference or a digest).

use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::IntoResponse;
use axum::routing::get;
use axum::{Json, Router};
use hypedeck_engine::PullCredentials;
use hypedeck_model::ImageInfo;
use hypedeck_model::schema::create_image_request;
use serde::Deserialize;

use crate::error::ApiError;
use crate::{ApiState, body};

/// Image routes (all need auth).
pub fn routes() -> Router<ApiState> {
    Router::new()
        .route("/images", get(list).post(create))
        .route("/images/{*name}", get(get_one).delete(delete))
        .route("/resources", get(resources))
}

async fn resources(
    State(state): State<ApiState>,
) -> Result<Json<hypedeck_model::Resources>, ApiError> {
    let resources = state
        .engine
        .resources()
        .await
        .map_err(|e| ApiError::from_engine("read the host's resources", e))?;
    Ok(Json(resources))
}

/// `?tags[k]=v` is validated like upstream's; images carry no user tags in Hypedeck yet, so a
/// tag filter matches none.
async fn list(
    State(state): State<ApiState>,
    query: super::ListQuery,
) -> Result<Json<Vec<ImageInfo>>, ApiError> {
    let pairs = super::list_query(query)?;
    let filter = super::tag_filter(&pairs)?;
    let mut images = state
        .engine
        .list_images()
        .map_err(|e| ApiError::from_engine("list images", e))?;
    if !filter.is_empty() {
        images.clear();
    }
    Ok(Json(images))
}

#[derive(Deserialize)]
struct CredentialsBody {
    username: Option<String>,
    password: Option<String>,
    registry_token: Option<String>,
}

#[derive(Deserialize)]
struct CreateImage {
    name: String,
    platform: Option<String>,
    credentials: Option<CredentialsBody>,
}

async fn create(
    State(state): State<ApiState>,
    headers: HeaderMap,
    bytes: Bytes,
) -> Result<impl IntoResponse, ApiError> {
    let request: CreateImage = body::parse(
        &headers,
        &bytes,
        "CreateImageRequest",
        &create_image_request(),
    )?;
    let credentials = request.credentials.map(|c| PullCredentials {
        username: c.username,
        password: c.password,
        registry_token: c.registry_token,
    });
    let image = state
        .engine
        .pull_image(&request.name, request.platform.as_deref(), credentials)
        .await
        .map_err(|e| ApiError::from_engine("pull image", e))?;
    Ok((StatusCode::ACCEPTED, Json(image)))
}

async fn get_one(
    State(state): State<ApiState>,
    Path(name): Path<String>,
) -> Result<Json<ImageInfo>, ApiError> {
    let image = state
        .engine
        .get_image(&name)
        .map_err(|e| ApiError::from_engine("get image", e))?;
    Ok(Json(image))
}

async fn delete(
    State(state): State<ApiState>,
    Path(name): Path<String>,
) -> Result<StatusCode, ApiError> {
    state
        .engine
        .delete_image(&name)
        .map_err(|e| ApiError::from_engine("delete image", e))?;
    Ok(StatusCode::NO_CONTENT)
}
