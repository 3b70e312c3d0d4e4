//! `/volumes`.

use super::*;

#[tokio::test]
async fn volume_archives_are_streamed_checked_and_never_left_behind() {
    let r = rig();
    let upload = |uri: &str, body: &'static [u8]| {
        let req = Request::builder()
            .method("POST")
            .uri(uri)
            .header("authorization", format!("Bearer {TOKEN}"))
            .header("content-type", "application/gzip")
            .body(Body::from(body))
            .unwrap();
        r.app.clone().oneshot(req)
    };
    let json_of = |res: axum::response::Response| async move {
        let bytes = res.into_body().collect().await.unwrap().to_bytes();
        serde_json::from_slice::<Value>(&bytes).unwrap()
    };
    // Not an archive: a clear 400, no volume, no upload left.
    let res = upload(
        "/volumes/from-archive?name=junk&size_gb=1",
        b"\x1f\x8b not really gzip",
    )
    .await
    .unwrap();
    assert_eq!(res.status(), StatusCode::BAD_REQUEST);
    let body = json_of(res).await;
    assert_eq!(body["code"], "invalid_request");
    assert!(
        body["message"]
            .as_str()
            .unwrap()
            .starts_with("invalid request: invalid archive"),
        "{body}"
    );
    // No body at all, and missing parameters.
    let res = upload("/volumes/from-archive?name=empty&size_gb=1", b"")
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::BAD_REQUEST);
    let res = upload("/volumes/from-archive?size_gb=1", b"x")
        .await
        .unwrap();
    assert_eq!(
        json_of(res).await["message"],
        "parameter \"name\" in query has an error: value is required but missing"
    );
    assert_eq!(r.authed("GET", "/volumes", None).await.json, json!([]));
    let uploads = r.dir.path().join("uploads");
    let left = std::fs::read_dir(&uploads).map(|d| d.count()).unwrap_or(0);
    assert_eq!(left, 0, "uploads left in {}", uploads.display());
    assert_eq!(
        std::fs::read_dir(r.dir.path().join("volumes"))
            .map(|d| d.count())
            .unwrap_or(0),
        0
    );
}

/// `POST`/`DELETE /instances/{id}/volumes/{volumeId}`: the body's schema, upstream's
/// `{code, message}` for each refusal, and the Instance back on success.
#[tokio::test]
async fn volumes_attach_and_detach_through_the_api() {
    let r = rig();
    let created = r
        .authed(
            "POST",
            "/volumes",
            Some(json!({"name": "data", "size_gb": 1})),
        )
        .await;
    assert_eq!(created.status, StatusCode::CREATED);
    let vol = created.json["id"].as_str().unwrap().to_string();
    let web = r
        .authed(
            "POST",
            "/instances",
            Some(json!({"name": "web", "image": "docker.io/library/alpine:latest"})),
        )
        .await;
    assert_eq!(web.status, StatusCode::CREATED, "{}", web.json);

    let path = format!("/instances/web/volumes/{vol}");
    let missing = r.authed("POST", &path, Some(json!({}))).await;
    assert_eq!(missing.status, StatusCode::BAD_REQUEST);
    assert_eq!(
        missing.json["message"],
        "request body has an error: doesn't match schema #/components/schemas/AttachVolumeRequest: Error at \"/mount_path\": property \"mount_path\" is missing"
    );
    let relative = r
        .authed("POST", &path, Some(json!({"mount_path": "data"})))
        .await;
    assert_eq!(relative.status, StatusCode::BAD_REQUEST);
    assert_eq!(relative.json["code"], "invalid_request");
    let nowhere = r
        .authed(
            "POST",
            "/instances/web/volumes/nope",
            Some(json!({"mount_path": "/data"})),
        )
        .await;
    assert_eq!(
        (nowhere.status, nowhere.json.clone()),
        (
            StatusCode::NOT_FOUND,
            json!({"code": "not_found", "message": "volume nope not found"})
        )
    );

    let attached = r
        .authed(
            "POST",
            &path,
            Some(json!({"mount_path": "/data", "readonly": true})),
        )
        .await;
    assert_eq!(attached.status, StatusCode::OK, "{}", attached.json);
    assert_eq!(
        attached.json["volumes"],
        json!([{"mount_path": "/data", "readonly": true, "volume_id": vol}])
    );
    let again = r
        .authed("POST", &path, Some(json!({"mount_path": "/other"})))
        .await;
    assert_eq!(again.status, StatusCode::CONFLICT);
    assert_eq!(again.json["code"], "invalid_state");

    let detached = r.authed("DELETE", &path, None).await;
    assert_eq!(detached.status, StatusCode::OK, "{}", detached.json);
    assert!(
        detached.json.get("volumes").is_none_or(|v| v == &json!([])),
        "{}",
        detached.json
    );
    let gone = r.authed("DELETE", &path, None).await;
    assert_eq!(gone.status, StatusCode::NOT_FOUND);
    assert_eq!(gone.json["code"], "not_found");
}
