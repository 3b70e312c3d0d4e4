//! `/hypervisors`.

use super::*;

#[tokio::test]
async fn hypervisors_lists_backends_and_unavailable_ones_are_not_supported() {
    let dir = tempfile::tempdir().unwrap();
    let ch = FakeHypervisor::posing_as(
        hypedeck_model::HypervisorKind::CloudHypervisor,
        hypedeck_hypervisor::Capabilities {
            pause: true,
            vsock: true,
            ..Default::default()
        },
    );
    let engine = Engine::new(EngineConfig {
        paths: hypedeck_store::Paths::new(dir.path()),
        secrets: Arc::new(MemoryStore::new()),
        hypervisor: Ok(FakeHypervisor::new()),
        alternatives: vec![
            (hypedeck_model::HypervisorKind::CloudHypervisor, Ok(ch)),
            (
                hypedeck_model::HypervisorKind::Vz,
                Err("Apple Virtualization.framework is only available on macOS".into()),
            ),
        ],
        guest: None,
        fingerprints: hypedeck_egress::Fingerprinter::from_key(&[7; 32]),
    });
    let r = Rig {
        dir,
        app: router(ApiState {
            engine: Arc::new(engine),
            token: ApiToken::new(Sensitive::new(TOKEN.into())),
        }),
    };
    let a = r.authed("GET", "/hypervisors", None).await;
    assert_eq!(a.status, StatusCode::OK, "{}", a.text);
    assert_eq!(a.json[0]["kind"], "qemu");
    assert_eq!(a.json[0]["default"], true);
    assert_eq!(a.json[0]["capabilities"]["snapshot"], true);
    assert_eq!(a.json[1]["kind"], "cloud-hypervisor");
    assert_eq!(a.json[1]["available"], true);
    assert_eq!(a.json[1]["capabilities"]["snapshot"], false);
    assert_eq!(
        a.json[2],
        json!({"kind": "vz", "default": false, "available": false,
               "reason": "Apple Virtualization.framework is only available on macOS"})
    );

    let a = r
        .authed(
            "POST",
            "/instances",
            Some(json!({"name": "a", "image": "alpine", "hypervisor": "vz"})),
        )
        .await;
    assert_eq!(a.status, StatusCode::BAD_REQUEST, "{}", a.text);
    assert_eq!(
        a.json,
        json!({"code": "not_supported", "message": "hypervisor vz is not available on this host: Apple Virtualization.framework is only available on macOS"})
    );
    let a = r
        .authed(
            "POST",
            "/instances",
            Some(json!({"name": "a", "image": "alpine",
            "hypervisor": "cloud-hypervisor", "ports": [{"host_port": 18082, "guest_port": 80}]})),
        )
        .await;
    assert_eq!(a.status, StatusCode::BAD_REQUEST, "{}", a.text);
    assert_eq!(
        a.json,
        json!({"code": "not_supported", "message": "port forwarding (ports) is not supported by the cloud-hypervisor backend"})
    );
    let a = r
        .authed(
            "POST",
            "/instances",
            Some(json!({"name": "a", "image": "alpine", "hypervisor": "cloud-hypervisor"})),
        )
        .await;
    assert_eq!(a.status, StatusCode::CREATED, "{}", a.text);
    assert_eq!(a.json["hypervisor"], "cloud-hypervisor");
    let a = r.authed("POST", "/instances/a/standby", None).await;
    assert_eq!(a.status, StatusCode::BAD_REQUEST, "{}", a.text);
    assert_eq!(
        a.json,
        json!({"code": "not_supported", "message": "standby is not supported by the cloud-hypervisor backend"})
    );
}
