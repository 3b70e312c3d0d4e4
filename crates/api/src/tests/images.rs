//! `/images` and `/resources`.

use super::*;

#[tokio::test]
async fn resources_report_capacity_and_allocations() {
    let r = rig();
    r.authed(
        "POST",
        "/instances",
        Some(json!({"name": "r1", "image": "alpine", "vcpus": 3, "size": "512MB"})),
    )
    .await;
    let a = r.authed("GET", "/resources", None).await;
    assert_eq!(a.status, StatusCode::OK, "{}", a.text);
    assert!(a.json["cpu"]["capacity"].as_i64().unwrap() >= 1);
    assert_eq!(a.json["cpu"]["oversub_ratio"], 4.0);
    assert_eq!(a.json["cpu"]["allocated"], 3);
    assert_eq!(a.json["memory"]["allocated"], 512 << 20);
    assert!(a.json["memory"]["capacity"].as_i64().unwrap() > 0);
    assert!(a.json["disk"]["capacity"].as_i64().unwrap() > 0);
    let allocations = a.json["allocations"].as_array().unwrap();
    assert_eq!(allocations.len(), 1);
    assert_eq!(allocations[0]["instance_name"], "r1");
    assert_eq!(allocations[0]["disk_bytes"], 10i64 << 30);
    r.authed("POST", "/instances/r1/stop", None).await;
    let a = r.authed("GET", "/resources", None).await;
    assert_eq!(
        a.json["cpu"]["allocated"], 0,
        "stopped instances reserve no CPU"
    );
    assert_eq!(a.json["allocations"], json!([]));
}
