//! Engine tests against the fake hypervisor and an in-memory keychain.

use std::sync::Arc;

use hypedeck_model::{CreateInstanceRequest, InstanceState, UpdateInstanceRequest};
use hypedeck_secrets::{MemoryStore, SecretStore};
use hypedeck_store::Paths;
use serde_json::json;

use crate::fake::{FakeHypervisor, Script};
use crate::{Engine, EngineConfig, EngineError, ListFilter, SnapshotFilter};

struct Rig {
    _dir: tempfile::TempDir,
    paths: Paths,
    fake: Arc<FakeHypervisor>,
    secrets: Arc<MemoryStore>,
    engine: Engine,
}

fn rig() -> Rig {
    let dir = tempfile::tempdir().unwrap();
    let paths = Paths::new(dir.path());
    let fake = FakeHypervisor::new();
    let secrets = Arc::new(MemoryStore::new());
    let engine = Engine::new(EngineConfig {
        paths: paths.clone(),
        secrets: secrets.clone(),
        hypervisor: Ok(fake.clone()),
        alternatives: Vec::new(),
        guest: None,
        fingerprints: hypedeck_egress::Fingerprinter::from_key(&[7; 32]),
    });
    Rig {
        _dir: dir,
        paths,
        fake,
        secrets,
        engine,
    }
}

fn spec(body: serde_json::Value) -> hypedeck_model::InstanceSpec {
    serde_json::from_value::<CreateInstanceRequest>(body)
        .unwrap()
        .validate()
        .unwrap()
}

fn agent_spec(name: &str) -> hypedeck_model::InstanceSpec {
    spec(json!({
        "name": name, "image": "docker.io/library/alpine:latest",
        "env": {"OUTBOUND_OPENAI_KEY": "sk-real-123", "PORT": "3000"},
        "network": {"enabled": true, "egress": {"enabled": true}},
        "credentials": {"OUTBOUND_OPENAI_KEY": {"source": {"env": "OUTBOUND_OPENAI_KEY"},
            "inject": [{"hosts": ["api.openai.com"], "as": {"header": "Authorization", "format": "Bearer ${value}"}}]}}
    }))
}

#[tokio::test]
async fn create_renders_upstream_fields_and_keeps_secrets_off_disk() {
    let r = rig();
    let i = r.engine.create(agent_spec("agent-1")).await.unwrap();
    assert_eq!(i.state, InstanceState::Running);
    assert_eq!(i.size.as_deref(), Some("1024.0 MB"));
    assert_eq!(i.overlay_size.as_deref(), Some("10.0 GB"));
    assert_eq!(i.hotplug_size.as_deref(), Some("0 B"));
    assert_eq!(i.vcpus, Some(2));
    assert_eq!(i.has_snapshot, Some(false));
    assert!(i.started_at.is_some());
    assert_eq!(i.id.len(), 24);
    let env = i.env.as_ref().unwrap();
    assert_eq!(env["OUTBOUND_OPENAI_KEY"], "sk-real-123");
    assert_eq!(env["PORT"], "3000");

    let metadata = std::fs::read_to_string(
        r.paths
            .instance_metadata(&hypedeck_model::InstanceId::parse(&i.id).unwrap()),
    )
    .unwrap();
    assert!(
        !metadata.contains("sk-real-123"),
        "secret on disk: {metadata}"
    );
    assert!(metadata.contains("\"PORT\": \"3000\""));
    let account = format!("instance/{}/env/OUTBOUND_OPENAI_KEY", i.id);
    assert_eq!(
        r.secrets.get(&account).unwrap().unwrap().expose(),
        "sk-real-123"
    );
}

#[tokio::test]
async fn names_are_unique_and_resolution_follows_upstream() {
    let r = rig();
    let a = r
        .engine
        .create(spec(json!({"name": "web", "image": "alpine"})))
        .await
        .unwrap();
    let err = r
        .engine
        .create(spec(json!({"name": "web", "image": "alpine"})))
        .await
        .unwrap_err();
    assert!(
        matches!(err, EngineError::NameConflict(ref n) if n == "web"),
        "{err:?}"
    );
    assert_eq!(
        r.engine.list(&ListFilter::default()).await.unwrap().len(),
        1
    );

    assert_eq!(r.engine.get(&a.id).await.unwrap().id, a.id);
    assert_eq!(r.engine.get("web").await.unwrap().id, a.id);
    assert_eq!(r.engine.get(&a.id[..6]).await.unwrap().id, a.id);
    assert!(matches!(
        r.engine.get("nope").await.unwrap_err(),
        EngineError::NotFound
    ));
    assert!(matches!(
        r.engine.get("").await.unwrap_err(),
        EngineError::NotFound
    ));

    // Two ids sharing a first letter make a one-letter prefix ambiguous, eventually.
    let mut ids = vec![a.id.clone()];
    for n in 0..30 {
        let i = r
            .engine
            .create(spec(json!({"name": format!("w{n}"), "image": "alpine"})))
            .await
            .unwrap();
        ids.push(i.id);
    }
    let first = &ids[0][..1];
    if ids.iter().filter(|id| id.starts_with(first)).count() > 1 {
        assert!(matches!(
            r.engine.get(first).await.unwrap_err(),
            EngineError::Ambiguous
        ));
    }
}

#[tokio::test]
async fn list_filters_by_state_and_tags() {
    let r = rig();
    r.engine
        .create(spec(
            json!({"name": "a", "image": "alpine", "tags": {"team": "x"}}),
        ))
        .await
        .unwrap();
    r.fake.set_script(Script {
        markers: 0,
        ..Script::default()
    });
    r.engine
        .create(spec(
            json!({"name": "b", "image": "alpine", "tags": {"team": "y"}}),
        ))
        .await
        .unwrap();
    let by_tag = r
        .engine
        .list(&ListFilter {
            tags: [("team".into(), "x".into())].into(),
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(
        by_tag.iter().map(|i| i.name.as_str()).collect::<Vec<_>>(),
        vec!["a"]
    );
    let init = r
        .engine
        .list(&ListFilter {
            state: Some(InstanceState::Initializing),
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(
        init.iter().map(|i| i.name.as_str()).collect::<Vec<_>>(),
        vec!["b"]
    );
}

#[tokio::test]
async fn failed_boot_leaves_nothing_behind() {
    let r = rig();
    r.fake.set_script(Script {
        fail_start: Some("no kvm".into()),
        ..Script::default()
    });
    let err = r.engine.create(agent_spec("agent-1")).await.unwrap_err();
    assert!(matches!(err, EngineError::Hypervisor(_)), "{err:?}");
    assert!(
        r.engine
            .list(&ListFilter::default())
            .await
            .unwrap()
            .is_empty()
    );
    let leftovers: Vec<_> = std::fs::read_dir(r.paths.instances()).unwrap().collect();
    assert!(leftovers.is_empty());
    assert_eq!(format!("{:?}", r.secrets), "MemoryStore { entries: 0 }");
}

#[tokio::test]
async fn no_hypervisor_is_a_clear_error_and_writes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let paths = Paths::new(dir.path());
    let engine = Engine::new(EngineConfig {
        paths: paths.clone(),
        secrets: Arc::new(MemoryStore::new()),
        hypervisor: Err("the QEMU backend is not built yet".into()),
        alternatives: Vec::new(),
        guest: None,
        fingerprints: hypedeck_egress::Fingerprinter::from_key(&[7; 32]),
    });
    let err = engine
        .create(spec(json!({"name": "a", "image": "alpine"})))
        .await
        .unwrap_err();
    assert_eq!(
        err.to_string(),
        "no hypervisor is available on this host: the QEMU backend is not built yet"
    );
    assert!(!paths.instances().exists());
}

#[tokio::test]
async fn update_rotates_credentials_in_upstream_order() {
    let r = rig();
    let i = r.engine.create(agent_spec("agent-1")).await.unwrap();
    let update = |body: serde_json::Value| {
        serde_json::from_value::<UpdateInstanceRequest>(body)
            .unwrap()
            .validate()
            .unwrap()
    };

    let err = r
        .engine
        .update(&i.id, update(json!({"env": {"PORT": "4000"}})))
        .await
        .unwrap_err();
    assert_eq!(
        err.to_string(),
        "invalid request: env keys [PORT] are not credential source env vars; allowed keys: [OUTBOUND_OPENAI_KEY]"
    );
    let err = r
        .engine
        .update(&i.id, update(json!({"env": {"OUTBOUND_OPENAI_KEY": " "}})))
        .await
        .unwrap_err();
    assert!(err.to_string().contains("must be non-empty"), "{err}");

    let rotated = r
        .engine
        .update(
            "agent-1",
            update(json!({"env": {"OUTBOUND_OPENAI_KEY": "sk-rotated-456"}})),
        )
        .await
        .unwrap();
    assert_eq!(
        rotated.env.as_ref().unwrap()["OUTBOUND_OPENAI_KEY"],
        "sk-rotated-456"
    );
    assert_eq!(rotated.env.as_ref().unwrap()["PORT"], "3000");
    let account = format!("instance/{}/env/OUTBOUND_OPENAI_KEY", i.id);
    assert_eq!(
        r.secrets.get(&account).unwrap().unwrap().expose(),
        "sk-rotated-456"
    );

    // 400 (no credentials) wins over 409 (not running).
    let plain = r
        .engine
        .create(spec(json!({"name": "plain", "image": "alpine"})))
        .await
        .unwrap();
    let err = r
        .engine
        .update(&plain.id, update(json!({"env": {"A": "b"}})))
        .await
        .unwrap_err();
    assert_eq!(
        err.to_string(),
        "invalid request: instance has no credential-backed env vars to update"
    );

    // Not running -> 409 with upstream's text.
    r.fake.crash(&i.id);
    let err = r
        .engine
        .update(
            &i.id,
            update(json!({"env": {"OUTBOUND_OPENAI_KEY": "sk-3"}})),
        )
        .await
        .unwrap_err();
    assert_eq!(
        err.to_string(),
        "invalid state transition: instance must be running or initializing to update env (current state: Stopped)"
    );
    assert_eq!(
        r.secrets.get(&account).unwrap().unwrap().expose(),
        "sk-rotated-456"
    );

    // Policies-only updates work in any state.
    let updated = r
        .engine
        .update(
            &i.id,
            update(json!({"restart_policy": {"policy": "always"}})),
        )
        .await
        .unwrap();
    assert_eq!(updated.restart_policy, Some(json!({"policy": "always"})));
}

#[tokio::test]
async fn delete_stops_the_vm_and_forgets_secrets() {
    let r = rig();
    let i = r.engine.create(agent_spec("agent-1")).await.unwrap();
    assert_eq!(r.fake.running(), vec![i.id.clone()]);
    r.engine.delete("agent-1").await.unwrap();
    assert!(r.fake.running().is_empty());
    assert!(matches!(
        r.engine.get(&i.id).await.unwrap_err(),
        EngineError::NotFound
    ));
    assert!(matches!(
        r.engine.delete(&i.id).await.unwrap_err(),
        EngineError::NotFound
    ));
    assert_eq!(format!("{:?}", r.secrets), "MemoryStore { entries: 0 }");
}

#[tokio::test]
async fn state_is_derived_on_read_and_survives_an_engine_restart() {
    let r = rig();
    let i = r
        .engine
        .create(spec(json!({"name": "a", "image": "alpine"})))
        .await
        .unwrap();

    // A new engine over the same data dir re-attaches to the VMM that kept running.
    let engine2 = Engine::new(EngineConfig {
        paths: r.paths.clone(),
        secrets: r.secrets.clone(),
        hypervisor: Ok(r.fake.clone()),
        alternatives: Vec::new(),
        guest: None,
        fingerprints: hypedeck_egress::Fingerprinter::from_key(&[7; 32]),
    });
    assert_eq!(
        engine2.get(&i.id).await.unwrap().state,
        InstanceState::Stopped
    );
    engine2.reconcile().await.unwrap();
    assert_eq!(
        engine2.get(&i.id).await.unwrap().state,
        InstanceState::Running
    );

    // A VMM that vanished reads as Stopped.
    r.fake.crash(&i.id);
    assert_eq!(
        engine2.get(&i.id).await.unwrap().state,
        InstanceState::Stopped
    );
}

#[tokio::test]
async fn an_unanswering_vmm_is_unknown_with_state_error() {
    let r = rig();
    r.fake.set_script(Script {
        query_fails: true,
        ..Script::default()
    });
    let i = r
        .engine
        .create(spec(json!({"name": "a", "image": "alpine"})))
        .await
        .unwrap();
    assert_eq!(i.state, InstanceState::Unknown);
    assert_eq!(
        i.state_error.as_deref(),
        Some("failed to query hypervisor: query vmm: scripted failure")
    );
}

/// A keychain for failure tests. Armed with `metadata`, its next write first breaks that
/// metadata file (replaces it by a directory) so the write that follows in `update` fails.
/// Armed with `ok_writes`, its writes fail once after that many more succeed.
#[derive(Debug, Default)]
struct ScriptedStore {
    inner: MemoryStore,
    metadata: std::sync::Mutex<Option<std::path::PathBuf>>,
    ok_writes: std::sync::Mutex<Option<usize>>,
}

impl SecretStore for ScriptedStore {
    fn set(
        &self,
        account: &str,
        value: &hypedeck_secrets::Sensitive<String>,
    ) -> Result<(), hypedeck_secrets::SecretError> {
        if let Some(path) = self.metadata.lock().unwrap().take() {
            std::fs::rename(&path, path.with_extension("bak")).unwrap();
            std::fs::create_dir_all(path.join("blocker")).unwrap();
        }
        let mut armed = self.ok_writes.lock().unwrap();
        match armed.as_mut() {
            Some(0) => {
                // Once: the rollback's own writes go through.
                *armed = None;
                return Err(hypedeck_secrets::SecretError::Unavailable(
                    "scripted keychain failure".into(),
                ));
            }
            Some(n) => *n -= 1,
            None => {}
        }
        self.inner.set(account, value)
    }
    fn get(
        &self,
        account: &str,
    ) -> Result<Option<hypedeck_secrets::Sensitive<String>>, hypedeck_secrets::SecretError> {
        self.inner.get(account)
    }
    fn delete(&self, account: &str) -> Result<(), hypedeck_secrets::SecretError> {
        self.inner.delete(account)
    }
}

#[tokio::test]
async fn a_failed_metadata_write_rolls_the_rotation_back() {
    let dir = tempfile::tempdir().unwrap();
    let paths = Paths::new(dir.path());
    let store = Arc::new(ScriptedStore::default());
    let engine = Engine::new(EngineConfig {
        paths: paths.clone(),
        secrets: store.clone(),
        hypervisor: Ok(FakeHypervisor::new()),
        alternatives: Vec::new(),
        guest: None,
        fingerprints: hypedeck_egress::Fingerprinter::from_key(&[7; 32]),
    });
    let i = engine.create(agent_spec("agent-1")).await.unwrap();
    let metadata = paths.instance_metadata(&hypedeck_model::InstanceId::parse(&i.id).unwrap());
    *store.metadata.lock().unwrap() = Some(metadata.clone());

    let update = serde_json::from_value::<UpdateInstanceRequest>(
        json!({"env": {"OUTBOUND_OPENAI_KEY": "sk-rotated-456"}}),
    )
    .unwrap()
    .validate()
    .unwrap();
    let err = engine.update(&i.id, update).await.unwrap_err();
    assert!(matches!(err, EngineError::Store(_)), "{err:?}");
    let account = format!("instance/{}/env/OUTBOUND_OPENAI_KEY", i.id);
    assert_eq!(
        store.get(&account).unwrap().unwrap().expose(),
        "sk-real-123",
        "keychain rolled back"
    );

    // Put the metadata back: the instance reads the old value again.
    std::fs::remove_dir_all(&metadata).unwrap();
    std::fs::rename(metadata.with_extension("bak"), &metadata).unwrap();
    let got = engine.get(&i.id).await.unwrap();
    assert_eq!(got.env.unwrap()["OUTBOUND_OPENAI_KEY"], "sk-real-123");
}

/// A PATCH of two credentials whose second keychain write fails rotates nothing: the first is
/// put back, the engine's cache forgets what it read, and the client gets the keychain error.
#[tokio::test]
async fn a_keychain_failure_on_the_second_key_rotates_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let store = Arc::new(ScriptedStore::default());
    let engine = Engine::new(EngineConfig {
        paths: Paths::new(dir.path()),
        secrets: store.clone(),
        hypervisor: Ok(FakeHypervisor::new()),
        alternatives: Vec::new(),
        guest: None,
        fingerprints: hypedeck_egress::Fingerprinter::from_key(&[7; 32]),
    });
    let inject = |host: &str| json!([{"hosts": [host], "as": {"header": "Authorization", "format": "Bearer ${value}"}}]);
    let i = engine
        .create(spec(json!({
            "name": "two-keys", "image": "alpine",
            "env": {"KEY_A": "a-old", "KEY_B": "b-old"},
            "network": {"enabled": true, "egress": {"enabled": true}},
            "credentials": {
                "KEY_A": {"source": {"env": "KEY_A"}, "inject": inject("a.example.com")},
                "KEY_B": {"source": {"env": "KEY_B"}, "inject": inject("b.example.com")}
            }
        })))
        .await
        .unwrap();
    // Read once, so the engine's cache holds the old values.
    assert_eq!(
        engine.get(&i.id).await.unwrap().env.unwrap()["KEY_A"],
        "a-old"
    );
    *store.ok_writes.lock().unwrap() = Some(1);
    let update = serde_json::from_value::<UpdateInstanceRequest>(
        json!({"env": {"KEY_A": "a-new", "KEY_B": "b-new"}}),
    )
    .unwrap()
    .validate()
    .unwrap();
    let err = engine.update(&i.id, update).await.unwrap_err();
    assert!(matches!(err, EngineError::Secrets(_)), "{err:?}");
    for (key, old) in [("KEY_A", "a-old"), ("KEY_B", "b-old")] {
        let account = format!("instance/{}/env/{key}", i.id);
        assert_eq!(store.get(&account).unwrap().unwrap().expose(), old, "{key}");
        assert_eq!(
            engine.get(&i.id).await.unwrap().env.unwrap()[key],
            old,
            "{key}"
        );
    }
}

/// A volume import waiting on its archive (a FIFO nobody writes yet) must not hold up an
/// instance create: volumes have their own lock.
#[tokio::test]
async fn a_slow_volume_import_does_not_block_instance_creates() {
    let r = rig();
    let fifo = r.paths.root().join("archive.fifo");
    let status = std::process::Command::new("mkfifo")
        .arg(&fifo)
        .status()
        .unwrap();
    assert!(status.success());
    /// Ends the import (an empty archive) however the test ends, so no blocking thread hangs
    /// the runtime's shutdown.
    struct Release(std::path::PathBuf);
    impl Drop for Release {
        fn drop(&mut self) {
            let fifo = self.0.clone();
            std::thread::spawn(move || drop(std::fs::OpenOptions::new().write(true).open(fifo)));
        }
    }
    let release = Release(fifo.clone());
    let engine = Arc::new(r.engine);
    let importing = {
        let engine = engine.clone();
        let fifo = fifo.clone();
        tokio::spawn(async move {
            let request = serde_json::from_value(json!({"name": "data", "size_gb": 1})).unwrap();
            engine.create_volume(request, Some(fifo)).await
        })
    };
    // The import is under way (its directory exists) and blocked on the archive.
    let volumes = r.paths.root().join("volumes");
    for _ in 0..200 {
        if std::fs::read_dir(&volumes).is_ok_and(|mut d| d.next().is_some()) {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    let created = tokio::time::timeout(
        std::time::Duration::from_secs(10),
        engine.create(spec(json!({"name": "web", "image": "alpine"}))),
    )
    .await
    .expect("an instance create waited for a volume import")
    .unwrap();
    assert_eq!(created.state, InstanceState::Running);
    drop(release);
    let _ = importing.await.unwrap();
}

/// A DELETE that arrives while a create is still booting waits for it, then deletes the whole
/// instance: it never wipes the keychain and directory from under a create that then boots an
/// instance without its secrets.
#[tokio::test]
async fn a_delete_during_a_create_waits_and_then_deletes_everything() {
    let r = rig();
    r.fake.set_script(Script {
        start_delay: std::time::Duration::from_millis(500),
        ..Script::default()
    });
    let engine = Arc::new(r.engine);
    let creating = {
        let engine = engine.clone();
        tokio::spawn(async move { engine.create(agent_spec("agent-1")).await })
    };
    // The record is on disk (the create is booting): a client can see and delete it.
    let mut id = None;
    for _ in 0..200 {
        if let Some(i) = engine
            .list(&ListFilter::default())
            .await
            .unwrap()
            .into_iter()
            .next()
        {
            id = Some(i.id);
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(5)).await;
    }
    let id = id.expect("the create's record");
    // Not Stopped: it is being created.
    assert_eq!(engine.get(&id).await.unwrap().state, InstanceState::Created);
    engine.delete(&id).await.unwrap();
    let created = creating.await.unwrap().unwrap();
    assert_eq!(created.id, id);
    assert_eq!(created.env.unwrap()["OUTBOUND_OPENAI_KEY"], "sk-real-123");
    // Gone, all of it, and nothing re-created behind the delete.
    assert!(
        engine
            .list(&ListFilter::default())
            .await
            .unwrap()
            .is_empty()
    );
    assert!(
        !r.paths
            .instance_dir(&hypedeck_model::InstanceId::parse(&id).unwrap())
            .exists()
    );
    let account = format!("instance/{id}/env/OUTBOUND_OPENAI_KEY");
    assert!(r.secrets.get(&account).unwrap().is_none());
}

/// 16 readers at once when a VM has just gone away, while a verb holds the instance's lock:
/// every one sees the instance Stopped, none writes its record (only the lock's holder may);
/// once the lock is free the next read records the end, once, and the record stays whole.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn reads_while_a_vm_exits_write_the_record_only_under_its_lock() {
    let r = rig();
    let engine = Arc::new(r.engine);
    let i = engine.create(agent_spec("agent-1")).await.unwrap();
    let id = hypedeck_model::InstanceId::parse(&i.id).unwrap();
    let metadata = r.paths.instance_metadata(&id);
    let before = std::fs::read_to_string(&metadata).unwrap();
    r.fake.crash(&i.id);
    let verb = engine.lock_for(&i.id).lock_owned().await;
    let readers: Vec<_> = (0..16)
        .map(|n| {
            let (engine, id) = (engine.clone(), i.id.clone());
            tokio::spawn(async move {
                if n % 2 == 0 {
                    engine.get(&id).await.map(|i| vec![i])
                } else {
                    engine.list(&ListFilter::default()).await
                }
            })
        })
        .collect();
    for reader in readers {
        let seen = reader.await.unwrap().unwrap();
        assert_eq!(seen.len(), 1, "the instance vanished from a read");
        assert_eq!(seen[0].state, InstanceState::Stopped);
    }
    assert_eq!(
        std::fs::read_to_string(&metadata).unwrap(),
        before,
        "a read wrote the record while a verb held its lock"
    );
    drop(verb);
    engine.get(&i.id).await.unwrap();
    let saved = hypedeck_store::InstanceRecord::load(&metadata).unwrap();
    assert!(saved.stopped_at.is_some() && saved.exit_message.is_some());
    // Later reads find it settled and write nothing.
    let settled = std::fs::read_to_string(&metadata).unwrap();
    engine.get(&i.id).await.unwrap();
    assert_eq!(std::fs::read_to_string(&metadata).unwrap(), settled);
    let ops = std::fs::read_to_string(r.paths.instance_logs(&id).join("hypeman.log")).unwrap();
    assert_eq!(ops.matches(crate::query::VMM_VANISHED).count(), 1, "{ops}");
}

/// A free loopback TCP port (bound and released).
fn free_port() -> u16 {
    std::net::TcpListener::bind(("127.0.0.1", 0))
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn port_in_use(err: &EngineError) -> Option<String> {
    match err {
        EngineError::Rejected(r) if r.code == hypedeck_model::ErrorCode::PortInUse => {
            Some(r.message.clone())
        }
        _ => None,
    }
}

#[tokio::test]
async fn forwarded_ports_are_rendered_and_conflicts_are_409() {
    let r = rig();
    let port = free_port();
    let web = r
        .engine
        .create(spec(json!({"name": "web", "image": "alpine",
            "ports": [{"host_port": port, "guest_port": 80}]})))
        .await
        .unwrap();
    assert_eq!(
        serde_json::to_value(&web.ports).unwrap(),
        json!([{"host_port": port, "guest_port": 80, "protocol": "tcp"}])
    );
    // The same host port on another running instance: refused, nothing created.
    let err = r
        .engine
        .create(spec(json!({"name": "web2", "image": "alpine",
            "ports": [{"host_port": port, "guest_port": 8080}]})))
        .await
        .unwrap_err();
    let message = port_in_use(&err).unwrap_or_else(|| panic!("{err:?}"));
    assert_eq!(
        message,
        format!("host port {port}/tcp is already in use by instance \"web\"")
    );
    assert_eq!(
        r.engine.list(&ListFilter::default()).await.unwrap().len(),
        1
    );
    // The same number over UDP is another port.
    r.engine
        .create(spec(json!({"name": "dns", "image": "alpine",
            "ports": [{"host_port": port, "guest_port": 53, "protocol": "udp"}]})))
        .await
        .unwrap();

    // Once the first one stops, its port is free for a new instance; starting the first
    // again is then the conflict.
    r.engine.stop(&web.id).await.unwrap();
    r.engine
        .create(spec(json!({"name": "web2", "image": "alpine",
            "ports": [{"host_port": port, "guest_port": 8080}]})))
        .await
        .unwrap();
    let err = r
        .engine
        .start(&web.id, Default::default())
        .await
        .unwrap_err();
    assert!(port_in_use(&err).is_some(), "{err:?}");
}

#[tokio::test]
async fn a_port_held_by_another_program_is_409() {
    let r = rig();
    let held = std::net::TcpListener::bind(("127.0.0.1", 0)).unwrap();
    let port = held.local_addr().unwrap().port();
    let err = r
        .engine
        .create(spec(json!({"name": "web", "image": "alpine",
            "ports": [{"host_port": port, "guest_port": 80}]})))
        .await
        .unwrap_err();
    assert_eq!(
        port_in_use(&err).unwrap_or_else(|| panic!("{err:?}")),
        format!("host port {port}/tcp is already in use on 127.0.0.1 by another program")
    );
    drop(held);
    r.engine
        .create(spec(json!({"name": "web", "image": "alpine",
            "ports": [{"host_port": port, "guest_port": 80}]})))
        .await
        .unwrap();
}

/// An engine whose default is the QEMU-like fake, with a Cloud Hypervisor stand-in (no
/// snapshot, ports, egress, hotplug or I/O limits) and vz unavailable.
fn multi_backend_engine(
    paths: &Paths,
    qemu: Arc<FakeHypervisor>,
    ch: Arc<FakeHypervisor>,
) -> Engine {
    Engine::new(EngineConfig {
        paths: paths.clone(),
        secrets: Arc::new(MemoryStore::new()),
        hypervisor: Ok(qemu),
        alternatives: vec![
            (hypedeck_model::HypervisorKind::CloudHypervisor, Ok(ch)),
            (
                hypedeck_model::HypervisorKind::Vz,
                Err("Apple Virtualization.framework is only available on macOS".into()),
            ),
        ],
        guest: None,
        fingerprints: hypedeck_egress::Fingerprinter::from_key(&[7; 32]),
    })
}

fn ch_fake() -> Arc<FakeHypervisor> {
    FakeHypervisor::posing_as(
        hypedeck_model::HypervisorKind::CloudHypervisor,
        hypedeck_hypervisor::Capabilities {
            pause: true,
            graceful_shutdown: true,
            vsock: true,
            ..Default::default()
        },
    )
}

#[tokio::test]
async fn instances_run_on_the_backend_they_ask_for_and_reattach_there() {
    let dir = tempfile::tempdir().unwrap();
    let paths = Paths::new(dir.path());
    let (qemu, ch) = (FakeHypervisor::new(), ch_fake());
    let engine = multi_backend_engine(&paths, qemu.clone(), ch.clone());

    let on_ch = engine
        .create(spec(
            json!({"name": "on-ch", "image": "alpine", "hypervisor": "cloud-hypervisor"}),
        ))
        .await
        .unwrap();
    assert_eq!(
        on_ch.hypervisor,
        Some(hypedeck_model::HypervisorKind::CloudHypervisor)
    );
    let default = engine
        .create(spec(json!({"name": "default", "image": "alpine"})))
        .await
        .unwrap();
    assert_eq!(
        default.hypervisor,
        Some(hypedeck_model::HypervisorKind::Qemu)
    );
    assert_eq!(ch.running(), vec![on_ch.id.clone()]);
    assert_eq!(qemu.running(), vec![default.id.clone()]);

    // What the backend lacks is a clear refusal, and the instance keeps running.
    let err = engine.standby("on-ch").await.unwrap_err();
    assert_eq!(
        std::error::Error::source(&err).unwrap().to_string(),
        "standby is not supported by the cloud-hypervisor backend"
    );
    assert_eq!(
        engine.get("on-ch").await.unwrap().state,
        InstanceState::Running
    );

    // A new engine finds each VM through its own backend; stop goes to the right one.
    drop(engine);
    let engine = multi_backend_engine(&paths, qemu.clone(), ch.clone());
    engine.reconcile().await.unwrap();
    assert_eq!(
        engine.get("on-ch").await.unwrap().state,
        InstanceState::Running
    );
    engine.stop("on-ch").await.unwrap();
    assert!(ch.running().is_empty());
    assert_eq!(qemu.running(), vec![default.id.clone()]);
    let listed: Vec<_> = engine
        .hypervisors()
        .into_iter()
        .map(|b| {
            (
                b.kind.as_str(),
                b.default,
                b.capabilities.map(|c| c.snapshot),
            )
        })
        .collect();
    assert_eq!(
        listed,
        vec![
            ("qemu", true, Ok(true)),
            ("cloud-hypervisor", false, Ok(false)),
            (
                "vz",
                false,
                Err("Apple Virtualization.framework is only available on macOS".into())
            ),
        ]
    );
}

#[tokio::test]
async fn unsupported_backends_and_features_are_refused_before_anything_is_written() {
    let dir = tempfile::tempdir().unwrap();
    let paths = Paths::new(dir.path());
    let (qemu, ch) = (FakeHypervisor::new(), ch_fake());
    let engine = multi_backend_engine(&paths, qemu.clone(), ch.clone());
    let cases = [
        (
            json!({"name": "a", "image": "alpine", "hypervisor": "vz"}),
            "hypervisor vz is not available on this host: Apple Virtualization.framework is only available on macOS",
        ),
        (
            json!({"name": "a", "image": "alpine", "hypervisor": "firecracker"}),
            "hypervisor firecracker is not available on this host (available: qemu, cloud-hypervisor)",
        ),
        (
            json!({"name": "a", "image": "alpine", "hypervisor": "cloud-hypervisor",
                   "ports": [{"host_port": 18081, "guest_port": 80}]}),
            "port forwarding (ports) is not supported by the cloud-hypervisor backend",
        ),
        (
            json!({"name": "a", "image": "alpine", "hypervisor": "cloud-hypervisor",
                   "hotplug_size": "1GB"}),
            "memory hotplug (hotplug_size) is not supported by the cloud-hypervisor backend",
        ),
        (
            json!({"name": "a", "image": "alpine", "hypervisor": "cloud-hypervisor",
                   "disk_io_bps": "100MB/s"}),
            "disk I/O limits (disk_io_bps) is not supported by the cloud-hypervisor backend",
        ),
    ];
    for (body, want) in cases {
        let err = engine.create(spec(body.clone())).await.unwrap_err();
        let text = std::error::Error::source(&err).map_or(err.to_string(), |s| s.to_string());
        assert_eq!(text, want, "{body}");
    }
    let err = engine.create(agent_spec_on_ch()).await.unwrap_err();
    assert_eq!(
        std::error::Error::source(&err).unwrap().to_string(),
        "egress enforcement (network.egress, credentials) is not supported by the cloud-hypervisor backend"
    );
    assert!(qemu.running().is_empty() && ch.running().is_empty());
    let leftovers: Vec<_> = std::fs::read_dir(paths.instances())
        .map(|d| d.collect())
        .unwrap_or_default();
    assert!(leftovers.is_empty(), "{leftovers:?}");
}

fn agent_spec_on_ch() -> hypedeck_model::InstanceSpec {
    let mut s = agent_spec("creds-on-ch");
    s.hypervisor = Some(hypedeck_model::HypervisorKind::CloudHypervisor);
    s
}

#[tokio::test]
async fn reconcile_removes_what_a_crash_left_half_written_and_keeps_the_rest() {
    let r = rig();
    let kept = r
        .engine
        .create(spec(json!({"name": "kept", "image": "alpine"})))
        .await
        .unwrap();
    let kept_id = hypedeck_model::InstanceId::parse(&kept.id).unwrap();
    // A create that died before its metadata, and an atomic write that died before its rename.
    let half = crate::create::new_id().unwrap();
    let half_dir = r.paths.instance_dir(&half);
    std::fs::create_dir_all(half_dir.join("logs")).unwrap();
    std::fs::write(half_dir.join("overlay.ext4"), b"partial").unwrap();
    let kept_dir = r.paths.instance_dir(&kept_id);
    std::fs::write(kept_dir.join(".metadata.json.tmp-999999"), b"{\"half\":").unwrap();
    std::fs::write(r.paths.root().join(".engine.json.tmp-999999"), b"").unwrap();

    let engine = Engine::new(EngineConfig {
        paths: r.paths.clone(),
        secrets: r.secrets.clone(),
        hypervisor: Ok(r.fake.clone()),
        alternatives: Vec::new(),
        guest: None,
        fingerprints: hypedeck_egress::Fingerprinter::from_key(&[7; 32]),
    });
    engine.reconcile().await.unwrap();
    assert!(!half_dir.exists());
    assert!(!kept_dir.join(".metadata.json.tmp-999999").exists());
    assert!(!r.paths.root().join(".engine.json.tmp-999999").exists());
    let listed: Vec<String> = engine
        .list(&ListFilter::default())
        .await
        .unwrap()
        .into_iter()
        .map(|i| i.id)
        .collect();
    assert_eq!(listed, vec![kept.id]);
}

/// A create whose caller goes away while the VM boots (the future is dropped) leaves nothing
/// once its stage has been released: no record, no directory, no keychain item, no VMM. Before
/// the stage guard the record stayed behind as a Stopped instance with its secrets stored.
#[tokio::test]
async fn a_create_cancelled_while_booting_leaves_nothing() {
    let r = rig();
    r.fake.set_script(Script {
        start_delay: std::time::Duration::from_millis(400),
        ..Script::default()
    });
    let cancelled = tokio::time::timeout(
        std::time::Duration::from_millis(150),
        r.engine.create(agent_spec("agent-1")),
    )
    .await;
    assert!(cancelled.is_err(), "the create was still booting");
    let mut left = usize::MAX;
    for _ in 0..200 {
        left = std::fs::read_dir(r.paths.instances())
            .map(|d| d.count())
            .unwrap_or(0);
        if left == 0 && format!("{:?}", r.secrets) == "MemoryStore { entries: 0 }" {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    assert_eq!(left, 0, "the cancelled create's directory was removed");
    assert_eq!(format!("{:?}", r.secrets), "MemoryStore { entries: 0 }");
    assert!(
        r.engine
            .list(&ListFilter::default())
            .await
            .unwrap()
            .is_empty()
    );
    // The name is free again.
    r.fake.set_script(Script::default());
    let again = r.engine.create(agent_spec("agent-1")).await.unwrap();
    assert_eq!(again.state, InstanceState::Running);
}

/// A guest that fills its console log past the cap: the log is copied to `app.log.1` and
/// truncated, the run's offset moves to 0, and the instance stays Running (its boot markers
/// are kept). Before the cap, app.log grew without bound.
#[tokio::test]
async fn a_console_log_past_its_cap_is_rotated_and_the_instance_stays_running() {
    let r = rig();
    let i = r.engine.create(agent_spec("chatty")).await.unwrap();
    assert_eq!(i.state, InstanceState::Running);
    let id = hypedeck_model::InstanceId::parse(&i.id).unwrap();
    let log = r.paths.instance_logs(&id).join("app.log");
    {
        use std::io::Write as _;
        let mut f = std::fs::OpenOptions::new().append(true).open(&log).unwrap();
        f.write_all(&vec![b'x'; 3 << 20]).unwrap();
    }
    r.engine.set_console_log_max(1 << 20);
    assert_eq!(r.engine.rotate_console_logs().await, 1);
    assert_eq!(std::fs::metadata(&log).unwrap().len(), 0);
    assert!(
        std::fs::metadata(log.with_extension("log.1"))
            .unwrap()
            .len()
            >= 3 << 20
    );
    let got = r.engine.get(&i.id).await.unwrap();
    assert_eq!(
        got.state,
        InstanceState::Running,
        "the boot markers were kept"
    );
    let ops = std::fs::read_to_string(r.paths.instance_logs(&id).join("hypeman.log")).unwrap();
    assert!(ops.contains("console log rotated"), "{ops}");
    // Under the cap: nothing to do.
    assert_eq!(r.engine.rotate_console_logs().await, 0);
}

/// `GET /instances` reuses each instance's JSON from the last list; whatever the JSON shows
/// (the record, the observed state, a credential value) changing makes it render again, so the
/// list always says what `GET /instances/{id}` says.
#[tokio::test]
async fn the_list_reuses_a_rendering_only_while_what_it_shows_is_unchanged() {
    let r = rig();
    let agent = r.engine.create(agent_spec("agent-1")).await.unwrap();
    let plain = r
        .engine
        .create(spec(
            json!({"name": "plain", "image": "alpine", "tags": {"team": "a"}}),
        ))
        .await
        .unwrap();
    let engine = &r.engine;
    let listed = || async {
        let json = engine.list_json(&ListFilter::default()).await.unwrap();
        let list: Vec<hypedeck_model::Instance> = serde_json::from_slice(&json).unwrap();
        for instance in &list {
            assert_eq!(instance, &engine.get(&instance.id).await.unwrap());
        }
        (json, list)
    };
    let (first, list) = listed().await;
    assert_eq!(list.len(), 2);
    assert_eq!(
        listed().await.0,
        first,
        "an unchanged list is the same bytes"
    );
    let entry = |id: &str| {
        let entries = engine.records.entries().unwrap();
        entries.into_iter().find(|e| e.record.id == id).unwrap()
    };
    assert!(entry(&agent.id).rendered.lock().unwrap().is_some(), "kept");

    // A rotation (keychain and record).
    let update = |body: serde_json::Value| {
        serde_json::from_value::<UpdateInstanceRequest>(body)
            .unwrap()
            .validate()
            .unwrap()
    };
    engine
        .update(
            &agent.id,
            update(json!({"env": {"OUTBOUND_OPENAI_KEY": "sk-rotated-9"}})),
        )
        .await
        .unwrap();
    let (_, list) = listed().await;
    assert_eq!(
        list[0].env.as_ref().unwrap()["OUTBOUND_OPENAI_KEY"],
        "sk-rotated-9"
    );

    // A value that changed in the keychain alone (a reference re-resolved at start).
    let account = format!("instance/{}/env/OUTBOUND_OPENAI_KEY", agent.id);
    r.secrets
        .set(
            &account,
            &hypedeck_secrets::Sensitive::new("sk-from-reference".into()),
        )
        .unwrap();
    engine.vault.flush(&agent.id);
    let (_, list) = listed().await;
    assert_eq!(
        list[0].env.as_ref().unwrap()["OUTBOUND_OPENAI_KEY"],
        "sk-from-reference"
    );

    // The observed state alone (the VM exits), then the end of the run recorded.
    r.fake.crash(&plain.id);
    let (_, list) = listed().await;
    assert_eq!(list[1].state, InstanceState::Stopped);
    assert!(list[1].stopped_at.is_some() && list[1].exit_message.is_some());

    // Filters apply to what is reused.
    let stopped = engine
        .list_json(&ListFilter {
            state: Some(InstanceState::Stopped),
            ..ListFilter::default()
        })
        .await
        .unwrap();
    let stopped: Vec<hypedeck_model::Instance> = serde_json::from_slice(&stopped).unwrap();
    assert_eq!(
        stopped.iter().map(|i| &i.name).collect::<Vec<_>>(),
        ["plain"]
    );
    let none = engine
        .list_json(&ListFilter {
            tags: [("team".to_string(), "b".to_string())].into(),
            ..ListFilter::default()
        })
        .await
        .unwrap();
    assert_eq!(none, b"[]");

    // A policy change (the record alone).
    engine
        .update(
            &agent.id,
            update(json!({"restart_policy": {"policy": "always"}})),
        )
        .await
        .unwrap();
    let (_, list) = listed().await;
    assert_eq!(list[0].restart_policy, Some(json!({"policy": "always"})));
    engine.delete(&plain.id).await.unwrap();
    assert_eq!(listed().await.1.len(), 1);
}

/// The create lock covers the name and volume claims, not the boot: while one create is
/// slow to boot, another is stored and listed at once.
#[tokio::test]
async fn a_slow_create_does_not_hold_up_another() {
    let r = rig();
    r.fake.set_script(Script {
        start_delay: std::time::Duration::from_secs(30),
        ..Script::default()
    });
    let engine = Arc::new(r.engine);
    let spawn = |name: &'static str| {
        let engine = engine.clone();
        tokio::spawn(async move { engine.create(agent_spec(name)).await })
    };
    let listed = |n: usize| {
        let engine = engine.clone();
        async move {
            for _ in 0..500 {
                let all = engine.list(&ListFilter::default()).await.unwrap();
                if all.len() == n {
                    return all;
                }
                tokio::time::sleep(std::time::Duration::from_millis(10)).await;
            }
            panic!("{n} instances were never listed");
        }
    };
    let first = spawn("slow-1");
    listed(1).await;
    let second = spawn("slow-2");
    // Both are being created at once; before, the second waited for the first's boot.
    let both = listed(2).await;
    assert!(
        both.iter().all(|i| i.state == InstanceState::Created),
        "{both:?}"
    );
    // A third with a taken name is still refused while the first boots.
    let err = engine.create(agent_spec("slow-1")).await.unwrap_err();
    assert!(matches!(err, EngineError::NameConflict(_)), "{err}");
    first.abort();
    second.abort();
}

/// Stopped snapshots: the overlay as it was, restored whole; the states and names each verb
/// refuses, with upstream's codes.
#[tokio::test]
async fn a_stopped_snapshot_restores_the_disks_as_they_were() {
    use hypedeck_model::{
        CreateSnapshotRequest, ErrorCode, RestoreSnapshotRequest, SnapshotKind, SnapshotTargetState,
    };
    let r = rig();
    let i = r.engine.create(agent_spec("snap-1")).await.unwrap();
    let other = r
        .engine
        .create(spec(json!({"name": "other", "image": "alpine"})))
        .await
        .unwrap();
    let code = |e: EngineError| match e {
        EngineError::Rejected(r) => r.code,
        other => panic!("{other}"),
    };
    let stopped = |name: Option<&str>| CreateSnapshotRequest {
        kind: Some(SnapshotKind::Stopped),
        name: name.map(str::to_string),
        tags: Some([("phase".to_string(), "before".to_string())].into()),
        compression: None,
    };
    // Running: a Stopped snapshot is refused.
    let err = r
        .engine
        .create_snapshot(&i.id, stopped(None))
        .await
        .unwrap_err();
    assert_eq!(code(err), ErrorCode::Conflict);

    r.engine.stop(&i.id).await.unwrap();
    let id = hypedeck_model::InstanceId::parse(&i.id).unwrap();
    let overlay = r.paths.instance_dir(&id).join("overlay.ext4");
    std::fs::write(&overlay, b"the disk before").unwrap();
    let snap = r
        .engine
        .create_snapshot("snap-1", stopped(Some("before")))
        .await
        .unwrap();
    assert_eq!(
        (
            snap.kind,
            snap.name.as_deref(),
            snap.source_instance_id.as_str(),
            snap.source_instance_name.as_str()
        ),
        (
            SnapshotKind::Stopped,
            Some("before"),
            i.id.as_str(),
            "snap-1"
        )
    );
    assert!(snap.size_bytes > 0);
    let err = r
        .engine
        .create_snapshot(&i.id, stopped(Some("before")))
        .await
        .unwrap_err();
    assert_eq!(code(err), ErrorCode::Conflict);
    // Names are unique per source instance only.
    r.engine.stop(&other.id).await.unwrap();
    let theirs = r
        .engine
        .create_snapshot(&other.id, stopped(Some("before")))
        .await
        .unwrap();
    assert_eq!(r.engine.get_snapshot(&snap.id).unwrap(), snap);
    let only = |f: SnapshotFilter| r.engine.list_snapshots(&f).unwrap().len();
    assert_eq!(only(SnapshotFilter::default()), 2);
    assert_eq!(
        only(SnapshotFilter {
            source_instance_id: Some(i.id.clone()),
            ..SnapshotFilter::default()
        }),
        1
    );
    assert_eq!(
        only(SnapshotFilter {
            kind: Some(SnapshotKind::Standby),
            ..SnapshotFilter::default()
        }),
        0
    );
    assert_eq!(
        only(SnapshotFilter {
            tags: [("phase".into(), "before".into())].into(),
            ..SnapshotFilter::default()
        }),
        2
    );
    assert_eq!(
        only(SnapshotFilter {
            name: Some("after".into()),
            ..SnapshotFilter::default()
        }),
        0
    );

    // The disk changes; the restore brings it back, whole.
    std::fs::write(&overlay, b"the disk after something went wrong").unwrap();
    let err = r
        .engine
        .restore_snapshot(&other.id, &snap.id, RestoreSnapshotRequest::default())
        .await
        .unwrap_err();
    assert_eq!(
        code(err),
        ErrorCode::InvalidRequest,
        "another instance's snapshot"
    );
    let err = r
        .engine
        .restore_snapshot(
            &i.id,
            &snap.id,
            RestoreSnapshotRequest {
                target_state: Some(SnapshotTargetState::Standby),
                target_hypervisor: None,
            },
        )
        .await
        .unwrap_err();
    assert_eq!(code(err), ErrorCode::InvalidRequest);
    let restored = r
        .engine
        .restore_snapshot(&i.id, &snap.id, RestoreSnapshotRequest::default())
        .await
        .unwrap();
    assert_eq!(restored.state, InstanceState::Stopped);
    assert_eq!(std::fs::read(&overlay).unwrap(), b"the disk before");
    // Running target: restored, then started.
    let running = r
        .engine
        .restore_snapshot(
            &i.id,
            &snap.id,
            RestoreSnapshotRequest {
                target_state: Some(SnapshotTargetState::Running),
                target_hypervisor: None,
            },
        )
        .await
        .unwrap();
    assert_eq!(running.state, InstanceState::Running);
    let err = r
        .engine
        .restore_snapshot(&i.id, &snap.id, RestoreSnapshotRequest::default())
        .await
        .unwrap_err();
    assert_eq!(code(err), ErrorCode::InvalidState, "not while it runs");

    r.engine.delete_snapshot(&snap.id).await.unwrap();
    assert_eq!(
        code(r.engine.get_snapshot(&snap.id).unwrap_err()),
        ErrorCode::NotFound
    );
    assert_eq!(
        code(r.engine.delete_snapshot(&snap.id).await.unwrap_err()),
        ErrorCode::NotFound
    );
    r.engine.delete_snapshot(&theirs.id).await.unwrap();
    assert_eq!(only(SnapshotFilter::default()), 0);
}

/// A fork is a new instance with the source's disk and settings under its own identity, and
/// its own keychain copies: rotating one never changes another, and a snapshot's copies
/// outlive its instance.
#[tokio::test]
async fn a_fork_has_its_own_disk_identity_and_credentials() {
    use hypedeck_model::{
        CreateSnapshotRequest, ErrorCode, ForkInstanceRequest, ForkSnapshotRequest, InstanceId,
        SnapshotKind, SnapshotTargetState,
    };
    let dir = tempfile::tempdir().unwrap();
    let paths = Paths::new(dir.path());
    let store = Arc::new(ScriptedStore::default());
    let engine = Engine::new(EngineConfig {
        paths: paths.clone(),
        secrets: store.clone(),
        hypervisor: Ok(FakeHypervisor::new()),
        alternatives: Vec::new(),
        guest: None,
        fingerprints: hypedeck_egress::Fingerprinter::from_key(&[7; 32]),
    });
    let code = |e: EngineError| match e {
        EngineError::Rejected(r) => (r.code, r.message),
        other => panic!("{other}"),
    };
    let key = |instance: &hypedeck_model::Instance| {
        instance.env.as_ref().unwrap()["OUTBOUND_OPENAI_KEY"].clone()
    };
    let overlay = |id: &str| {
        paths
            .instance_dir(&InstanceId::parse(id).unwrap())
            .join("overlay.ext4")
    };
    let fork = |name: &str| ForkInstanceRequest {
        name: name.into(),
        ..ForkInstanceRequest::default()
    };
    let src = engine.create(agent_spec("src")).await.unwrap();
    let (c, message) = code(engine.fork_instance("src", fork("kid")).await.unwrap_err());
    assert_eq!(c, ErrorCode::InvalidState, "{message}");
    engine.stop("src").await.unwrap();
    std::fs::write(overlay(&src.id), b"the parent's disk").unwrap();
    let snap = engine
        .create_snapshot(
            "src",
            CreateSnapshotRequest {
                kind: Some(SnapshotKind::Stopped),
                name: Some("base".into()),
                ..CreateSnapshotRequest::default()
            },
        )
        .await
        .unwrap();

    let kid = engine.fork_instance("src", fork("kid")).await.unwrap();
    assert_ne!(kid.id, src.id);
    assert_eq!(kid.state, InstanceState::Stopped, "the source's state");
    assert_eq!(
        kid.forked_from
            .as_ref()
            .map(|o| (&o.source_instance_id, o.snapshot_id.is_none())),
        Some((&src.id, true))
    );
    assert_eq!(key(&kid), "sk-real-123");
    assert_eq!(
        kid.network.as_ref().unwrap().ip,
        None,
        "its own, at its first boot"
    );
    assert_eq!(
        std::fs::read(overlay(&kid.id)).unwrap(),
        b"the parent's disk"
    );
    // Its own disk: writes diverge.
    std::fs::write(overlay(&kid.id), b"the kid's disk").unwrap();
    assert_eq!(
        std::fs::read(overlay(&src.id)).unwrap(),
        b"the parent's disk"
    );
    let (c, message) = code(engine.fork_instance("src", fork("kid")).await.unwrap_err());
    assert_eq!(
        (c, message.as_str()),
        (
            ErrorCode::NameConflict,
            "instance already exists: instance name 'kid' already exists"
        )
    );

    // Both run; each has its own network identity and its own credential.
    let kid = engine.start("kid", Default::default()).await.unwrap();
    let src = engine.start("src", Default::default()).await.unwrap();
    let net = |i: &hypedeck_model::Instance| i.network.as_ref().unwrap().clone();
    assert_ne!(net(&kid).ip, net(&src).ip);
    assert_ne!(net(&kid).mac, net(&src).mac);
    let rotate = |v: &str| {
        serde_json::from_value::<UpdateInstanceRequest>(json!({"env": {"OUTBOUND_OPENAI_KEY": v}}))
            .unwrap()
            .validate()
            .unwrap()
    };
    engine.update("kid", rotate("sk-kid")).await.unwrap();
    assert_eq!(key(&engine.get("src").await.unwrap()), "sk-real-123");
    engine.update("src", rotate("sk-src")).await.unwrap();
    assert_eq!(key(&engine.get("kid").await.unwrap()), "sk-kid");

    // A snapshot keeps its own copy: its fork has the value of its time, even after the
    // source is rotated and deleted.
    engine.delete("src").await.unwrap();
    let (c, _) = code(
        engine
            .fork_snapshot(
                &snap.id,
                ForkSnapshotRequest {
                    name: "kid".into(),
                    ..ForkSnapshotRequest::default()
                },
            )
            .await
            .unwrap_err(),
    );
    assert_eq!(c, ErrorCode::Conflict, "a snapshot fork's taken name");
    let again = engine
        .fork_snapshot(
            &snap.id,
            ForkSnapshotRequest {
                name: "again".into(),
                target_state: Some(SnapshotTargetState::Running),
                target_hypervisor: None,
            },
        )
        .await
        .unwrap();
    assert_eq!(again.state, InstanceState::Running);
    assert_eq!(key(&again), "sk-real-123");
    assert_eq!(
        again
            .forked_from
            .as_ref()
            .and_then(|o| o.snapshot_id.as_ref()),
        Some(&snap.id)
    );
    assert_eq!(
        std::fs::read(overlay(&again.id)).unwrap(),
        b"the parent's disk"
    );

    // A keychain that fails during the copy leaves no fork behind.
    *store.ok_writes.lock().unwrap() = Some(0);
    engine.stop("kid").await.unwrap();
    let entries_before = format!("{:?}", store.inner);
    let err = engine
        .fork_instance("kid", fork("broken"))
        .await
        .unwrap_err();
    assert!(matches!(err, EngineError::Secrets(_)), "{err:?}");
    assert!(engine.resolve("broken").is_err());
    assert_eq!(std::fs::read_dir(paths.instances()).unwrap().count(), 2);
    assert_eq!(format!("{:?}", store.inner), entries_before);

    // Deleting everything leaves the keychain empty: the snapshot's copies go with it.
    engine.delete_snapshot(&snap.id).await.unwrap();
    engine.delete("kid").await.unwrap();
    engine.delete("again").await.unwrap();
    assert_eq!(format!("{:?}", store.inner), "MemoryStore { entries: 0 }");
}

/// A fork of a running or standby VM continues its memory: the source is saved (and restored
/// when it was running), the fork restored from a link of the saved state, and its guest told
/// its own name and address (same subnet) with fresh entropy before anything else.
#[tokio::test]
async fn a_fork_of_a_running_vm_continues_its_memory_under_its_own_identity() {
    use hypedeck_model::{ForkInstanceRequest, SnapshotTargetState};
    let r = rig();
    let src = r.engine.create(agent_spec("src")).await.unwrap();
    let fork =
        |name: &str, from_running: bool, target: Option<SnapshotTargetState>| ForkInstanceRequest {
            name: name.into(),
            from_running,
            target_state: target,
        };
    let kid = r
        .engine
        .fork_instance("src", fork("kid", true, None))
        .await
        .unwrap();
    assert_eq!(
        kid.state,
        InstanceState::Running,
        "default target: the source's state"
    );
    assert_eq!(
        r.engine.get("src").await.unwrap().state,
        InstanceState::Running,
        "the source runs again"
    );
    assert_eq!(r.fake.running().len(), 2);
    let told = r.fake.reidentified();
    assert_eq!(told.len(), 1, "{told:?}");
    let (id, identity) = &told[0];
    assert_eq!(id, &kid.id);
    let (src_net, kid_net) = (src.network.clone().unwrap(), kid.network.clone().unwrap());
    assert_eq!(identity["hostname"], "kid");
    assert_eq!(identity["network"]["ip"], json!(kid_net.ip));
    assert_eq!(identity["network"]["mac"], json!(kid_net.mac));
    assert_eq!(identity["entropy"].as_str().unwrap().len(), 128);
    // Same subnet (its programs keep their gateway, DNS and proxy), its own address and MAC.
    let subnet = |ip: &Option<String>| {
        ip.as_deref()
            .unwrap()
            .rsplit_once('.')
            .unwrap()
            .0
            .to_string()
    };
    assert_eq!(subnet(&kid_net.ip), subnet(&src_net.ip));
    assert_ne!(kid_net.ip, src_net.ip);
    assert_ne!(kid_net.mac, src_net.mac);
    assert_eq!(
        identity["network"]["gateway"],
        json!(format!("{}.2", subnet(&src_net.ip)))
    );

    // From Standby: the fork stays Standby by default and is told who it is when restored.
    r.engine.standby("kid").await.unwrap();
    let grandkid = r
        .engine
        .fork_instance("kid", fork("grandkid", false, None))
        .await
        .unwrap();
    assert_eq!(grandkid.state, InstanceState::Standby);
    assert_eq!(grandkid.has_snapshot, Some(true));
    assert_eq!(r.fake.reidentified().len(), 1, "not before it runs");
    let running = r.engine.restore("grandkid").await.unwrap();
    assert_eq!(
        running.state,
        InstanceState::Running,
        "the run's markers came along"
    );
    assert_eq!(r.fake.reidentified()[1].1["hostname"], "grandkid");
    // Restoring the parent itself needs no new identity.
    r.engine.restore("kid").await.unwrap();
    assert_eq!(r.fake.reidentified().len(), 2);

    // To Stopped: the disks only.
    r.engine.standby("kid").await.unwrap();
    let cold = r
        .engine
        .fork_instance(
            "kid",
            fork("cold", false, Some(SnapshotTargetState::Stopped)),
        )
        .await
        .unwrap();
    assert_eq!(
        (cold.state, cold.has_snapshot),
        (InstanceState::Stopped, Some(false))
    );

    // A guest without an agent cannot learn who it is: it keeps its parent's address and
    // MAC (served as they are), and nothing is sent to it.
    let mut blind = agent_spec("blind");
    blind.skip_guest_agent = true;
    let parent = r.engine.create(blind).await.unwrap();
    let blind_kid = r
        .engine
        .fork_instance("blind", fork("blind-kid", true, None))
        .await
        .unwrap();
    assert_eq!(blind_kid.state, InstanceState::Running);
    assert_eq!(blind_kid.network, parent.network);
    assert_eq!(r.fake.reidentified().len(), 2);
    assert_eq!(
        r.engine.get("blind").await.unwrap().state,
        InstanceState::Running
    );
}

/// A Standby snapshot keeps the whole VM: taken from a Running instance (standby, copy,
/// restore) or a Standby one, restored in place (the guest is the instance's own: no new
/// identity), and forked (the fork's guest is told who it is).
#[tokio::test]
async fn a_standby_snapshot_keeps_the_vm_and_forks_of_it_are_reidentified() {
    use hypedeck_model::{
        CreateSnapshotRequest, ErrorCode, ForkSnapshotRequest, HypervisorKind,
        RestoreSnapshotRequest, SnapshotKind, SnapshotTargetState,
    };
    let r = rig();
    let src = r.engine.create(agent_spec("src")).await.unwrap();
    let standby = |name: &str| CreateSnapshotRequest {
        kind: Some(SnapshotKind::Standby),
        name: Some(name.into()),
        ..CreateSnapshotRequest::default()
    };
    let live = r
        .engine
        .create_snapshot("src", standby("live"))
        .await
        .unwrap();
    assert_eq!(live.kind, SnapshotKind::Standby);
    assert_eq!(
        r.engine.get("src").await.unwrap().state,
        InstanceState::Running,
        "running again"
    );
    let saved = |sid: &str| {
        r.paths
            .snapshot_dir(&hypedeck_model::InstanceId::parse(sid).unwrap())
            .join("guest/standby/memory.bin")
    };
    assert!(saved(&live.id).is_file());
    r.engine.standby("src").await.unwrap();
    let asleep = r
        .engine
        .create_snapshot("src", standby("asleep"))
        .await
        .unwrap();
    assert_eq!(
        r.engine.get("src").await.unwrap().state,
        InstanceState::Standby,
        "left as it was"
    );
    assert!(saved(&asleep.id).is_file());

    // In place, to Running (the default for the kind): the instance's own guest, no new
    // identity; the snapshot stays usable.
    let back = r
        .engine
        .restore_snapshot(&src.id, &live.id, RestoreSnapshotRequest::default())
        .await
        .unwrap();
    assert_eq!(
        back.state,
        InstanceState::Running,
        "the run's markers came back"
    );
    assert!(r.fake.reidentified().is_empty());
    assert!(saved(&live.id).is_file());
    let err = r
        .engine
        .fork_snapshot(
            &live.id,
            ForkSnapshotRequest {
                name: "other-hv".into(),
                target_state: None,
                target_hypervisor: Some(HypervisorKind::CloudHypervisor),
            },
        )
        .await
        .unwrap_err();
    assert!(
        matches!(&err, EngineError::Rejected(rej) if rej.code == ErrorCode::InvalidRequest),
        "{err:?}"
    );

    // Forks of it: Running by default (told who they are), Standby, or Stopped (disks only).
    let fork = |name: &str, target: Option<SnapshotTargetState>| ForkSnapshotRequest {
        name: name.into(),
        target_state: target,
        target_hypervisor: None,
    };
    let a = r
        .engine
        .fork_snapshot(&live.id, fork("a", None))
        .await
        .unwrap();
    assert_eq!(a.state, InstanceState::Running);
    let told = r.fake.reidentified();
    assert_eq!((told.len(), told[0].0.as_str()), (1, a.id.as_str()));
    assert_eq!(told[0].1["hostname"], "a");
    let b = r
        .engine
        .fork_snapshot(&asleep.id, fork("b", Some(SnapshotTargetState::Standby)))
        .await
        .unwrap();
    assert_eq!(
        (b.state, b.has_snapshot),
        (InstanceState::Standby, Some(true))
    );
    let c = r
        .engine
        .fork_snapshot(&asleep.id, fork("c", Some(SnapshotTargetState::Stopped)))
        .await
        .unwrap();
    assert_eq!(
        (c.state, c.has_snapshot),
        (InstanceState::Stopped, Some(false))
    );
    assert_eq!(
        r.engine.restore("b").await.unwrap().state,
        InstanceState::Running
    );
    assert_eq!(r.fake.reidentified()[1].1["hostname"], "b");

    // Deleting the snapshots leaves the instances (their links) whole.
    r.engine.delete_snapshot(&live.id).await.unwrap();
    r.engine.delete_snapshot(&asleep.id).await.unwrap();
    for name in ["src", "a", "b"] {
        assert_eq!(
            r.engine.get(name).await.unwrap().state,
            InstanceState::Running,
            "{name}"
        );
    }
}

/// A snapshot schedule takes Standby snapshots of a running instance (Stopped ones of a
/// stopped one) when due, on its grid, keeps its newest `max_count` (never pruning manual
/// snapshots), and outlives its instance only while it has snapshots to prune.
#[tokio::test]
async fn snapshot_schedules_take_prune_and_outlive_their_instance_until_done() {
    use hypedeck_model::{
        CreateSnapshotRequest, ErrorCode, SetSnapshotScheduleRequest, SnapshotKind,
        SnapshotRetentionRequest,
    };
    let r = rig();
    let src = r.engine.create(agent_spec("src")).await.unwrap();
    let set = |interval: &str| SetSnapshotScheduleRequest {
        interval: interval.into(),
        name_prefix: Some("nightly".into()),
        metadata: Some([("team".to_string(), "a".to_string())].into()),
        retention: SnapshotRetentionRequest {
            max_count: Some(2),
            max_age: None,
        },
    };
    let code = |e: EngineError| match e {
        EngineError::Rejected(r) => (r.code, r.message),
        other => panic!("{other}"),
    };
    // Upstream's checks and texts, in its order.
    for (request, message) in [
        (
            SetSnapshotScheduleRequest {
                interval: "often".into(),
                ..set("1h")
            },
            "interval must be a valid duration",
        ),
        (
            SetSnapshotScheduleRequest {
                retention: SnapshotRetentionRequest::default(),
                ..set("1h")
            },
            "retention must include max_count or max_age",
        ),
        (
            SetSnapshotScheduleRequest {
                retention: SnapshotRetentionRequest {
                    max_count: None,
                    max_age: Some("old".into()),
                },
                ..set("1h")
            },
            "retention.max_age must be a valid duration",
        ),
        (
            set("30s"),
            "invalid request: interval must be at least 1m0s",
        ),
        (
            SetSnapshotScheduleRequest {
                retention: SnapshotRetentionRequest {
                    max_count: None,
                    max_age: Some("-1h".into()),
                },
                ..set("1h")
            },
            "invalid request: retention.max_age must be >= 0",
        ),
        (
            SetSnapshotScheduleRequest {
                retention: SnapshotRetentionRequest {
                    max_count: Some(0),
                    max_age: None,
                },
                ..set("1h")
            },
            "invalid request: retention.max_count or retention.max_age must be set",
        ),
    ] {
        let (c, m) = code(
            r.engine
                .set_snapshot_schedule("src", request)
                .await
                .unwrap_err(),
        );
        assert_eq!((c, m.as_str()), (ErrorCode::InvalidRequest, message));
    }
    let (c, m) = code(
        r.engine
            .set_snapshot_schedule("nope", set("1h"))
            .await
            .unwrap_err(),
    );
    assert_eq!((c, m.as_str()), (ErrorCode::NotFound, "instance not found"));
    let (c, m) = code(r.engine.get_snapshot_schedule("src").unwrap_err());
    assert_eq!(
        (c, m.as_str()),
        (ErrorCode::NotFound, "snapshot schedule not found")
    );

    let before = time::OffsetDateTime::now_utc();
    let schedule = r
        .engine
        .set_snapshot_schedule("src", set("1h"))
        .await
        .unwrap();
    assert_eq!(schedule.interval, "1h0m0s");
    assert_eq!(
        (
            schedule.retention.max_count,
            schedule.retention.max_age.clone()
        ),
        (2, None)
    );
    let due = schedule.next_run_at;
    assert!(
        due >= before + time::Duration::hours(1) && due <= before + time::Duration::minutes(66)
    );
    assert_eq!(r.engine.get_snapshot_schedule(&src.id).unwrap(), schedule);
    // The same interval again keeps the due time; another one moves it.
    assert_eq!(
        r.engine
            .set_snapshot_schedule("src", set("1h"))
            .await
            .unwrap()
            .next_run_at,
        due
    );
    assert_eq!(
        r.engine
            .run_snapshot_schedules(due - time::Duration::seconds(1))
            .await,
        0
    );

    let manual = r
        .engine
        .create_snapshot(
            "src",
            CreateSnapshotRequest {
                kind: Some(SnapshotKind::Standby),
                ..Default::default()
            },
        )
        .await
        .unwrap();
    let scheduled = || {
        r.engine
            .list_snapshots(&SnapshotFilter {
                tags: [("hypeman.scheduled".to_string(), "true".to_string())].into(),
                ..SnapshotFilter::default()
            })
            .unwrap()
    };
    assert_eq!(r.engine.run_snapshot_schedules(due).await, 1);
    let taken = scheduled();
    assert_eq!(taken.len(), 1);
    assert_eq!(taken[0].kind, SnapshotKind::Standby);
    assert_eq!(
        taken[0].name.as_deref(),
        Some(
            format!(
                "nightly-{:04}{:02}{:02}-{:02}{:02}{:02}",
                due.year(),
                u8::from(due.month()),
                due.day(),
                due.hour(),
                due.minute(),
                due.second()
            )
            .as_str()
        )
    );
    assert_eq!(taken[0].tags["team"], "a");
    assert_eq!(taken[0].tags["hypeman.schedule_instance_id"], src.id);
    let after = r.engine.get_snapshot_schedule("src").unwrap();
    assert_eq!(after.last_snapshot_id.as_ref(), Some(&taken[0].id));
    assert_eq!(
        (after.last_run_at, after.next_run_at),
        (Some(due), due + time::Duration::hours(1))
    );
    assert_eq!(
        r.engine.get("src").await.unwrap().state,
        InstanceState::Running
    );

    // Three hours late: one run, back on the grid; then a stopped instance gets a Stopped one.
    let late = due + time::Duration::hours(3) + time::Duration::seconds(5);
    assert_eq!(r.engine.run_snapshot_schedules(late).await, 1);
    assert_eq!(
        r.engine.get_snapshot_schedule("src").unwrap().next_run_at,
        due + time::Duration::hours(4)
    );
    r.engine.stop("src").await.unwrap();
    assert_eq!(
        r.engine
            .run_snapshot_schedules(due + time::Duration::hours(4))
            .await,
        1
    );
    let kept = scheduled();
    assert_eq!(kept.len(), 2, "the newest two are kept");
    assert!(kept.iter().any(|s| s.kind == SnapshotKind::Stopped));
    assert!(
        !kept.iter().any(|s| s.id == taken[0].id),
        "the oldest was pruned"
    );
    assert!(
        r.engine.get_snapshot(&manual.id).is_ok(),
        "a manual snapshot is never pruned"
    );

    // Its instance deleted, the schedule stays until its snapshots need no more pruning.
    r.engine.delete("src").await.unwrap();
    assert!(r.engine.get_snapshot_schedule(&src.id).is_ok());
    assert_eq!(
        r.engine
            .run_snapshot_schedules(due + time::Duration::hours(5))
            .await,
        1
    );
    let (c, _) = code(r.engine.get_snapshot_schedule(&src.id).unwrap_err());
    assert_eq!(c, ErrorCode::NotFound);
    assert_eq!(scheduled().len(), 2);
}

/// Compression of saved memory: a Standby snapshot's (in the background: `compressing`, then
/// `compressed` with both sizes) and a standby's own (after its delay, under the instance's
/// lock); restores and forks decompress first. Upstream's checks and codes.
#[tokio::test]
async fn saved_memory_is_compressed_in_the_background_and_decompressed_for_use() {
    use hypedeck_model::{
        CreateSnapshotRequest, ErrorCode, ForkSnapshotRequest, SnapshotKind, StandbyInstanceRequest,
    };
    let r = rig();
    r.engine.create(agent_spec("src")).await.unwrap();
    let code = |e: EngineError| match e {
        EngineError::Rejected(r) => (r.code, r.message),
        other => panic!("{other}"),
    };
    let snap = |kind, compression: serde_json::Value| CreateSnapshotRequest {
        kind: Some(kind),
        compression: Some(compression),
        ..CreateSnapshotRequest::default()
    };
    let (c, m) = code(
        r.engine
            .create_snapshot(
                "src",
                snap(SnapshotKind::Standby, json!({"enabled": false, "level": 0})),
            )
            .await
            .unwrap_err(),
    );
    assert_eq!(
        (c, m.as_str()),
        (
            ErrorCode::InvalidSnapshotCompression,
            "level must be between 1 and 19 for zstd, got 0"
        )
    );
    let (c, _) = code(
        r.engine
            .create_snapshot("src", snap(SnapshotKind::Stopped, json!({"enabled": true})))
            .await
            .unwrap_err(),
    );
    assert_eq!(c, ErrorCode::InvalidRequest);

    let taken = r
        .engine
        .create_snapshot(
            "src",
            snap(
                SnapshotKind::Standby,
                json!({"enabled": true, "algorithm": "lz4"}),
            ),
        )
        .await
        .unwrap();
    assert_eq!(taken.compression_state, "compressing");
    assert_eq!(
        taken.compression,
        Some(json!({"enabled": true, "algorithm": "lz4", "level": 0}))
    );
    let mut done = taken.clone();
    for _ in 0..100 {
        done = r.engine.get_snapshot(&taken.id).unwrap();
        if done.compression_state != "compressing" {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    assert_eq!(done.compression_state, "compressed", "{done:?}");
    assert_eq!(
        done.uncompressed_size_bytes,
        Some(b"fake vm state".len() as u64)
    );
    assert!(done.compressed_size_bytes.is_some());
    let standby = r
        .paths
        .snapshot_dir(&hypedeck_model::InstanceId::parse(&taken.id).unwrap())
        .join("guest/standby");
    assert!(standby.join("memory.bin.lz4").is_file() && !standby.join("memory.bin").exists());
    // A fork of it gets the plain memory back.
    let fork = r
        .engine
        .fork_snapshot(
            &taken.id,
            ForkSnapshotRequest {
                name: "from-lz4".into(),
                ..Default::default()
            },
        )
        .await
        .unwrap();
    assert_eq!(fork.state, InstanceState::Running);

    // A standby compressed in place after its delay; restoring decompresses.
    let options =
        |compression: Option<serde_json::Value>, delay: Option<&str>| StandbyInstanceRequest {
            compression,
            compression_delay: delay.map(str::to_string),
        };
    let (c, m) = code(
        r.engine
            .standby_with("src", options(None, Some("soon")))
            .await
            .unwrap_err(),
    );
    assert_eq!(
        (c, m.as_str()),
        (
            ErrorCode::InvalidCompressionDelay,
            "compression_delay must be a valid duration: time: invalid duration \"soon\""
        )
    );
    let (c, m) = code(
        r.engine
            .standby_with("src", options(None, Some("-1s")))
            .await
            .unwrap_err(),
    );
    assert_eq!(
        (c, m.as_str()),
        (
            ErrorCode::InvalidCompressionDelay,
            "compression_delay cannot be negative"
        )
    );
    let asleep = r
        .engine
        .standby_with("src", options(Some(json!({"enabled": true})), Some("0s")))
        .await
        .unwrap();
    assert_eq!(asleep.state, InstanceState::Standby);
    let src_id = hypedeck_model::InstanceId::parse(&asleep.id).unwrap();
    let latest = r.paths.instance_dir(&src_id).join("snapshots/latest");
    for _ in 0..100 {
        if latest.join("memory.bin.zst").is_file() {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    assert!(latest.join("memory.bin.zst").is_file() && !latest.join("memory.bin").exists());
    // With options, a Standby instance is not a no-op (upstream's 409).
    assert!(matches!(
        r.engine
            .standby_with("src", options(Some(json!({"enabled": true})), None))
            .await
            .unwrap_err(),
        EngineError::InvalidState(_)
    ));
    assert_eq!(
        r.engine.restore("src").await.unwrap().state,
        InstanceState::Running
    );
    assert!(!latest.exists());
}

#[tokio::test]
async fn a_first_start_makes_a_template_that_later_starts_of_its_shape_use() {
    use hypedeck_model::ErrorCode;
    let r = rig();
    r.fake.set_script(Script {
        templates: true,
        ..Script::default()
    });
    let first = r.engine.create(agent_spec("first")).await.unwrap();
    assert_eq!(
        first.template_id, None,
        "the first start of a shape boots cold"
    );
    let ready = async {
        loop {
            if let Some(t) = r
                .engine
                .templates()
                .into_iter()
                .find(|t| t.status == "ready")
            {
                return t;
            }
            tokio::time::sleep(std::time::Duration::from_millis(10)).await;
        }
    };
    let template = tokio::time::timeout(std::time::Duration::from_secs(10), ready)
        .await
        .expect("a template is made in the background");
    assert_eq!(template.vcpus, 2);
    assert_eq!(template.memory_bytes, 1 << 30);
    assert!(template.created_at.is_some());
    assert_eq!(r.engine.templates().len(), 1);

    let second = r.engine.create(agent_spec("second")).await.unwrap();
    assert_eq!(second.template_id.as_deref(), Some(template.id.as_str()));
    assert_eq!(second.state, InstanceState::Running);
    assert_eq!(r.engine.templates()[0].starts, 1);
    // Another shape has no template yet: it boots cold and asks for its own.
    let mut small = agent_spec("small");
    small.vcpus = 1;
    assert_eq!(r.engine.create(small).await.unwrap().template_id, None);

    // A template that fails to start: the instance boots cold, and its log says why.
    r.fake.set_script(Script {
        templates: true,
        fail_template_start: true,
        ..Script::default()
    });
    let third = r.engine.create(agent_spec("third")).await.unwrap();
    assert_eq!(third.template_id, None);
    assert_eq!(third.state, InstanceState::Running);
    let log = std::fs::read_to_string(
        r.engine
            .log_path("third", crate::LogSource::Hypeman)
            .unwrap(),
    )
    .unwrap();
    assert!(
        log.contains(&format!("starting from template {} failed", template.id)),
        "{log}"
    );
    assert!(log.contains("booting cold"), "{log}");

    // A restart is a fresh boot, so it starts from the template too; `template_id` says what
    // the current run started from.
    r.fake.set_script(Script {
        templates: true,
        ..Script::default()
    });
    r.engine.stop("third").await.unwrap();
    let again = r.engine.start("third", Default::default()).await.unwrap();
    assert_eq!(again.template_id.as_deref(), Some(template.id.as_str()));
    r.fake.set_script(Script::default());
    r.engine.stop("third").await.unwrap();
    let cold = r.engine.start("third", Default::default()).await.unwrap();
    assert_eq!(cold.template_id, None);

    r.engine.delete_template(&template.id).unwrap();
    for id in [template.id.as_str(), "not-hex", "../x"] {
        match r.engine.delete_template(id) {
            Err(EngineError::Rejected(rej)) => {
                assert_eq!(rej.code, ErrorCode::NotFound);
                assert_eq!(rej.message, "template not found");
            }
            other => panic!("{other:?}"),
        }
    }
    assert!(r.engine.templates().iter().all(|t| t.id != template.id));
}

#[tokio::test]
async fn stats_come_from_the_vmm_process_and_history_keeps_samples_while_it_runs() {
    let r = rig();
    let i = r
        .engine
        .create(spec(
            json!({"name": "busy", "image": "alpine", "vcpus": 3, "size": "1GB"}),
        ))
        .await
        .unwrap();
    // The fake's VM is this test process: its counters are real.
    let s = r.engine.stats("busy").await.unwrap();
    assert_eq!(s.instance_id, i.id);
    assert_eq!(s.instance_name, "busy");
    assert_eq!(s.allocated_vcpus, 3);
    assert_eq!(s.allocated_memory_bytes, 1 << 30);
    assert!(
        s.memory_rss_bytes > 0 && s.memory_vms_bytes >= s.memory_rss_bytes,
        "{s:?}"
    );
    let ratio = s.memory_utilization_ratio.unwrap();
    assert!(
        (ratio - s.memory_rss_bytes as f64 / (1u64 << 30) as f64).abs() < 0.01,
        "{s:?}"
    );
    assert_eq!(
        (s.network_rx_bytes, s.network_tx_bytes),
        (0, 0),
        "no network on the fake"
    );

    assert!(r.engine.stats_history("busy").unwrap().samples.is_empty());
    r.engine.sample_stats().await;
    r.engine.sample_stats().await;
    let h = r.engine.stats_history("busy").unwrap();
    assert_eq!(h.samples.len(), 2);
    assert_eq!(h.interval_ms, 2000);
    assert!(h.samples[0].at_ms <= h.samples[1].at_ms);
    assert!(h.samples[1].cpu_seconds >= h.samples[0].cpu_seconds);
    let fleet = r.engine.fleet_stats().unwrap();
    assert_eq!(fleet.instances.len(), 1);
    assert_eq!(fleet.instances[0].samples.len(), 2);
    assert_eq!(fleet.guest_memory_allocated_bytes, 1 << 30);
    assert!(fleet.host_cpus >= 1);

    // Stopped: upstream's zeros, and the history is dropped at the next round.
    r.engine.stop("busy").await.unwrap();
    let s = r.engine.stats("busy").await.unwrap();
    assert_eq!((s.cpu_seconds, s.memory_rss_bytes), (0.0, 0));
    assert_eq!(s.memory_utilization_ratio, Some(0.0));
    r.engine.sample_stats().await;
    assert!(r.engine.stats_history("busy").unwrap().samples.is_empty());
    assert!(r.engine.fleet_stats().unwrap().instances.is_empty());
    assert!(matches!(
        r.engine.stats("nope").await,
        Err(EngineError::NotFound)
    ));
}

#[tokio::test]
async fn an_idle_instance_goes_to_standby_and_a_connection_to_its_port_wakes_it() {
    use hypedeck_model::ErrorCode;
    use time::OffsetDateTime;
    let Rig {
        _dir,
        engine,
        paths,
        ..
    } = rig();
    let engine = Arc::new(engine);
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let i = engine
        .create(spec(json!({"name": "sleepy", "image": "alpine",
            "network": {"enabled": true},
            "ports": [{"host_port": port, "guest_port": 80}],
            "auto_standby": {"enabled": true, "idle_timeout": "30s"}})))
        .await
        .unwrap();
    assert_eq!(
        i.auto_standby,
        Some(json!({"enabled": true, "idle_timeout": "30s"}))
    );
    let status = engine.auto_standby_status("sleepy").await.unwrap();
    assert_eq!(
        (status.status.as_str(), status.reason.as_str()),
        ("idle_countdown", "idle_timeout_not_elapsed")
    );
    assert!(status.eligible && status.enabled && status.configured && !status.asleep);

    // The countdown starts at the first look, and a hold pushes the standby past it.
    let t0 = OffsetDateTime::now_utc();
    engine.run_auto_standby(t0).await;
    let status = engine.auto_standby_status("sleepy").await.unwrap();
    assert_eq!(status.idle_since, Some(t0));
    assert_eq!(
        status.next_standby_at,
        Some(t0 + time::Duration::seconds(30))
    );
    let held = engine.hold_auto_standby("sleepy").await.unwrap();
    let hold = held.hold_until.expect("a hold");
    assert!(hold > t0 + time::Duration::seconds(29));
    engine
        .run_auto_standby(t0 + time::Duration::seconds(31))
        .await;
    if hold > t0 + time::Duration::seconds(31) {
        assert_eq!(
            engine.get("sleepy").await.unwrap().state,
            InstanceState::Running
        );
    }
    // Past the hold: standby, asleep.
    engine
        .run_auto_standby(hold + time::Duration::seconds(1))
        .await;
    let asleep = async {
        loop {
            let s = engine.auto_standby_status("sleepy").await.unwrap();
            if s.asleep {
                return s;
            }
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
    };
    let s = tokio::time::timeout(std::time::Duration::from_secs(10), asleep)
        .await
        .expect("auto-standby put it to sleep");
    assert_eq!(
        (s.status.as_str(), s.reason.as_str()),
        ("ineligible", "instance_not_running")
    );
    assert_eq!(
        engine.get("sleepy").await.unwrap().state,
        InstanceState::Standby
    );
    let log = std::fs::read_to_string(
        engine
            .log_path("sleepy", crate::LogSource::Hypeman)
            .unwrap(),
    )
    .unwrap();
    assert!(log.contains("idle: auto-standby"), "{log}");
    match engine.hold_auto_standby("sleepy").await {
        Err(EngineError::Rejected(r)) => {
            assert_eq!(r.code, ErrorCode::InstanceInStandby);
            assert_eq!(
                r.message,
                "instance is in standby; restore it before connecting"
            );
        }
        other => panic!("{other:?}"),
    }

    // The engine holds the forwarded port while it sleeps; a connection wakes it.
    let connect = tokio::net::TcpStream::connect(("127.0.0.1", port)).await;
    assert!(connect.is_ok(), "the port is held, not refused");
    let awake = async {
        while engine.get("sleepy").await.unwrap().state != InstanceState::Running {
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
    };
    tokio::time::timeout(std::time::Duration::from_secs(10), awake)
        .await
        .expect("the connection woke it");
    assert!(!engine.auto_standby_status("sleepy").await.unwrap().asleep);
    let id = hypedeck_model::InstanceId::parse(&i.id).unwrap();
    assert!(!paths.instance_dir(&id).join("asleep").exists());

    // Turned off: disabled, and nothing happens however long it idles.
    engine
        .update(
            "sleepy",
            serde_json::from_value::<UpdateInstanceRequest>(
                json!({"auto_standby": {"enabled": false}}),
            )
            .unwrap()
            .validate()
            .unwrap(),
        )
        .await
        .unwrap();
    let s = engine.auto_standby_status("sleepy").await.unwrap();
    assert_eq!(
        (s.status.as_str(), s.reason.as_str()),
        ("disabled", "policy_disabled")
    );
    engine
        .run_auto_standby(OffsetDateTime::now_utc() + time::Duration::days(1))
        .await;
    tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    assert_eq!(
        engine.get("sleepy").await.unwrap().state,
        InstanceState::Running
    );
}

/// Hot volume attach and detach: a running instance gets the disk and the guest mounts it by
/// its serial; upstream's rules (sharing, paths, one attachment per instance) hold; a stopped
/// instance's attachment waits for its next start; detach unmounts, then removes the disk.
#[tokio::test]
async fn volumes_attach_to_and_detach_from_running_and_stopped_instances() {
    let r = rig();
    let new_volume = |name: &'static str| {
        let request = serde_json::from_value(json!({"name": name, "size_gb": 1})).unwrap();
        r.engine.create_volume(request, None)
    };
    let data = new_volume("data").await.unwrap();
    let web = r
        .engine
        .create(spec(json!({"name": "web", "image": "alpine"})))
        .await
        .unwrap();
    async fn attach_to(
        engine: &Engine,
        instance: &str,
        volume: &str,
        path: &str,
        readonly: bool,
    ) -> Result<hypedeck_model::Instance, EngineError> {
        let request =
            serde_json::from_value(json!({"mount_path": path, "readonly": readonly})).unwrap();
        engine.attach_volume(instance, volume, request).await
    }
    let attach =
        |instance, volume, path, readonly| attach_to(&r.engine, instance, volume, path, readonly);
    let code = |e: EngineError| match e {
        EngineError::Rejected(r) => r.code.as_str().to_string(),
        other => format!("{other:?}"),
    };

    // By name; the guest is told to mount the disk with the volume's serial.
    let attached = attach("web", "data", "/mnt/data", false).await.unwrap();
    let volumes = attached.volumes.unwrap();
    assert_eq!(volumes.len(), 1);
    assert_eq!(
        (
            volumes[0].volume_id.as_str(),
            volumes[0].mount_path.as_str()
        ),
        (data.id.as_str(), "/mnt/data")
    );
    let serial = crate::volumes::disk_serial(&data.id, false);
    assert_eq!(r.fake.disks(&web.id), vec![serial.clone()]);
    let mounts = r.fake.control_requests("mount");
    assert_eq!(mounts.len(), 1);
    assert_eq!(mounts[0].1["serial"], json!(serial));
    assert_eq!(mounts[0].1["mount_path"], json!("/mnt/data"));
    let got = r.engine.get_volume(&data.id).unwrap();
    assert_eq!(got.attachments.len(), 1);
    assert_eq!(got.attachments[0].instance_id, web.id);

    // Upstream's rules.
    assert_eq!(
        code(
            attach("web", &data.id, "/mnt/other", false)
                .await
                .unwrap_err()
        ),
        "invalid_state",
        "attached twice"
    );
    let other = new_volume("other").await.unwrap();
    assert_eq!(
        code(
            attach("web", &other.id, "/mnt/data", false)
                .await
                .unwrap_err()
        ),
        "invalid_request",
        "a path taken"
    );
    assert_eq!(
        code(attach("web", &other.id, "/etc", false).await.unwrap_err()),
        "invalid_request"
    );
    assert_eq!(
        code(attach("web", "missing", "/mnt/x", false).await.unwrap_err()),
        "not_found"
    );
    r.engine
        .create(spec(json!({"name": "api", "image": "alpine"})))
        .await
        .unwrap();
    assert_eq!(
        code(
            attach("api", &data.id, "/mnt/data", true)
                .await
                .unwrap_err()
        ),
        "invalid_state",
        "shared while attached read-write elsewhere"
    );
    assert_eq!(
        code(r.engine.delete_volume(&data.id).await.unwrap_err()),
        "invalid_state",
        "an attached volume cannot be deleted"
    );

    // Detach: unmounted in the guest, then the disk goes.
    let detached = r.engine.detach_volume("web", "data").await.unwrap();
    assert!(detached.volumes.unwrap_or_default().is_empty());
    assert!(r.fake.disks(&web.id).is_empty());
    let unmounts = r.fake.control_requests("unmount");
    assert_eq!(unmounts.len(), 1);
    assert_eq!(unmounts[0].1["mount_path"], json!("/mnt/data"));
    assert_eq!(
        code(r.engine.detach_volume("web", "data").await.unwrap_err()),
        "not_found",
        "not attached"
    );
    assert!(
        r.engine
            .get_volume(&data.id)
            .unwrap()
            .attachments
            .is_empty()
    );

    // Stopped: only the record changes (the next start mounts it); no guest is asked.
    r.engine.stop("web").await.unwrap();
    let stopped = attach("web", &data.id, "/mnt/data", true).await.unwrap();
    assert_eq!(stopped.volumes.unwrap().len(), 1);
    assert_eq!(r.fake.control_requests("mount").len(), 1);
    r.engine.detach_volume("web", &data.id).await.unwrap();
    assert_eq!(r.fake.control_requests("unmount").len(), 1);
    r.engine.delete_volume(&data.id).await.unwrap();
}
