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
