//! `/instances/{id}/exec`.

use super::*;

#[tokio::test]
async fn the_token_may_come_as_a_websocket_subprotocol() {
    let r = rig();
    let call = |protocol: &str| {
        let req = Request::builder()
            .method("GET")
            .uri("/instances/nope/exec")
            .header("sec-websocket-protocol", protocol)
            .body(Body::empty())
            .unwrap();
        r.app.clone().oneshot(req)
    };
    // The right token as `bearer.<token>` passes auth; the upgrade is checked next (this
    // request lacks the other WebSocket headers: 400, not 401).
    let ok = call(&format!("other, bearer.{TOKEN}")).await.unwrap();
    assert_eq!(ok.status(), StatusCode::BAD_REQUEST);
    let wrong = call("bearer.hdk_wrong").await.unwrap();
    assert_eq!(wrong.status(), StatusCode::UNAUTHORIZED);
    // Only WebSocket-style requests carry it: a plain GET with the header but no token is 401.
    let plain = r.call("GET", "/instances", None, None).await;
    assert_eq!(plain.status, StatusCode::UNAUTHORIZED);
}
