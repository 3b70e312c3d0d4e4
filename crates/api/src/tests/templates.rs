//! `/templates` (Hypedeck extension).

use super::*;

#[tokio::test]
async fn templates_are_listed_with_their_shape_and_deleted_by_id() {
    let fake = FakeHypervisor::new();
    fake.set_script(hypedeck_engine::fake::Script {
        templates: true,
        ..Default::default()
    });
    let r = rig_with(Ok(fake));
    assert_eq!(
        r.call("GET", "/templates", None, None).await.status,
        StatusCode::UNAUTHORIZED
    );
    let a = r.authed("GET", "/templates", None).await;
    assert_eq!(a.status, StatusCode::OK, "{}", a.text);
    assert_eq!(a.json, json!([]));

    let a = r
        .authed(
            "POST",
            "/instances",
            Some(json!({"name": "a", "image": "alpine", "vcpus": 1, "size": "512MB"})),
        )
        .await;
    assert_eq!(a.status, StatusCode::CREATED, "{}", a.text);
    assert!(a.json.get("template_id").is_none(), "{}", a.text);
    let mut listed = Value::Null;
    for _ in 0..500 {
        listed = r.authed("GET", "/templates", None).await.json;
        if listed[0]["status"] == "ready" {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    let t = &listed[0];
    assert_eq!(t["status"], "ready", "{listed}");
    assert_eq!(t["image"], "alpine");
    assert_eq!(t["vcpus"], 1);
    assert_eq!(t["memory_bytes"], 512 << 20);
    assert_eq!(t["hypervisor"], "qemu");
    assert_eq!(t["starts"], 0);
    let id = t["id"].as_str().unwrap().to_string();

    let b = r
        .authed(
            "POST",
            "/instances",
            Some(json!({"name": "b", "image": "alpine", "vcpus": 1, "size": "512MB"})),
        )
        .await;
    assert_eq!(b.json["template_id"], json!(id), "{}", b.text);

    let d = r.authed("DELETE", &format!("/templates/{id}"), None).await;
    assert_eq!(d.status, StatusCode::NO_CONTENT, "{}", d.text);
    let d = r.authed("DELETE", &format!("/templates/{id}"), None).await;
    assert_eq!(d.status, StatusCode::NOT_FOUND);
    assert_eq!(
        d.json,
        json!({"code": "not_found", "message": "template not found"})
    );
}
