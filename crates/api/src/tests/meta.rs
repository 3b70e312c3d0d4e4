//! `/health` and `/spec.yaml`.

use super::*;

#[tokio::test]
async fn health_and_spec_need_no_auth() {
    let r = rig();
    let a = r.call("GET", "/health", None, None).await;
    assert_eq!(
        (a.status, a.json.clone()),
        (StatusCode::OK, json!({"status": "ok"}))
    );
    let a = r.call("GET", "/spec.yaml", None, None).await;
    assert_eq!(a.status, StatusCode::OK);
    assert_eq!(a.headers["content-type"], "application/vnd.oai.openapi");
    assert!(a.text.starts_with("openapi: 3.1.0"));
}
