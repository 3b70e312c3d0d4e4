//! Real-registry tests: Debian's `docker-registry` (distribution v2.8) on 127.0.0.1, images
//! built and pushed by the test over plain HTTP, pulled back through `ImageStore`, and the
//! resulting ext4 inspected with `debugfs`.
//!
//! Needs `docker-registry` and e2fsprogs; uses `/bin/busybox` (busybox-static) when present.

// A test crate: helpers outside `#[test]` fns panic on purpose.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::io::Write;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use hypedeck_images::{
    Credentials, Digest, Image, ImageError, ImageStatus, ImageStore, Platform, PullOptions,
};
use sha2::Digest as _;

// ---------------------------------------------------------------------------------------------
// The registry

/// A `docker-registry serve` child on a free loopback port, killed on drop.
struct Registry {
    child: Child,
    addr: String,
    dir: tempfile::TempDir,
    http: reqwest::Client,
    auth: Option<(String, String)>,
}

impl Drop for Registry {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn find_binary(name: &str) -> Option<PathBuf> {
    std::env::var_os("PATH")
        .map(|p| std::env::split_paths(&p).collect::<Vec<_>>())
        .unwrap_or_default()
        .into_iter()
        .chain(["/usr/bin", "/usr/sbin", "/sbin"].map(PathBuf::from))
        .map(|d| d.join(name))
        .find(|p| p.is_file())
}

impl Registry {
    async fn start() -> Registry {
        Registry::start_with_auth(None).await
    }

    /// `htpasswd`: optional (user, password) that the registry demands (basic auth).
    async fn start_with_auth(htpasswd: Option<(&str, &str)>) -> Registry {
        let _ = tracing_subscriber::fmt()
            .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
            .with_test_writer()
            .try_init();
        let bin = find_binary("docker-registry").expect(
            "docker-registry not found: apt-get install -y docker-registry (see crates/images/tests/registry.rs)",
        );
        let dir = tempfile::tempdir().unwrap();
        let port = {
            let l = TcpListener::bind("127.0.0.1:0").unwrap();
            l.local_addr().unwrap().port()
        };
        let addr = format!("127.0.0.1:{port}");
        let mut config = format!(
            "version: 0.1\nlog: {{level: info, accesslog: {{disabled: false}}}}\n\
             storage: {{filesystem: {{rootdirectory: {}}}, delete: {{enabled: true}}}}\n\
             http: {{addr: \"{addr}\"}}\n",
            dir.path().join("data").display()
        );
        if let Some((user, password)) = htpasswd {
            let hash = bcrypt::hash(password, 5).unwrap();
            let file = dir.path().join("htpasswd");
            std::fs::write(&file, format!("{user}:{hash}\n")).unwrap();
            config.push_str(&format!(
                "auth: {{htpasswd: {{realm: test, path: {}}}}}\n",
                file.display()
            ));
        }
        let config_path = dir.path().join("config.yml");
        std::fs::write(&config_path, config).unwrap();
        let log = std::fs::File::create(dir.path().join("registry.log")).unwrap();
        let stdout = log.try_clone().unwrap();
        // Everything that can panic happens before the spawn or after the guard exists.
        let http = reqwest::Client::new();
        let auth = htpasswd.map(|(u, p)| (u.to_owned(), p.to_owned()));
        let child = Command::new(bin)
            .arg("serve")
            .arg(&config_path)
            .stdin(Stdio::null())
            .stdout(stdout)
            .stderr(log)
            .spawn()
            .unwrap();
        let registry = Registry {
            child,
            addr,
            dir,
            http,
            auth,
        };
        let deadline = Instant::now() + Duration::from_secs(15);
        loop {
            let ok = registry
                .req(reqwest::Method::GET, "/v2/")
                .send()
                .await
                .is_ok_and(|r| r.status().is_success());
            if ok {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "registry did not come up: {}",
                registry.log()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        registry
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("registry.log")).unwrap_or_default()
    }

    fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    fn req(&self, method: reqwest::Method, path: &str) -> reqwest::RequestBuilder {
        let url = if path.starts_with("http") {
            path.to_owned()
        } else {
            self.url(path)
        };
        let b = self.http.request(method, url);
        match &self.auth {
            Some((u, p)) => b.basic_auth(u, Some(p)),
            None => b,
        }
    }

    /// POST an upload, then PUT the bytes with `?digest=` (monolithic upload).
    async fn push_blob(&self, repo: &str, bytes: &[u8]) -> String {
        let digest = sha256(bytes);
        let r = self
            .req(reqwest::Method::POST, &format!("/v2/{repo}/blobs/uploads/"))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 202, "start upload");
        let location = r.headers()["location"].to_str().unwrap().to_owned();
        let sep = if location.contains('?') { '&' } else { '?' };
        let r = self
            .req(
                reqwest::Method::PUT,
                &format!("{location}{sep}digest={digest}"),
            )
            // Without it the Go server reads the body as a form and sees no content.
            .header("Content-Type", "application/octet-stream")
            .body(bytes.to_vec())
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 201, "finish upload of {digest}");
        digest
    }

    async fn push_manifest(
        &self,
        repo: &str,
        reference: &str,
        media_type: &str,
        body: &[u8],
    ) -> String {
        let r = self
            .req(
                reqwest::Method::PUT,
                &format!("/v2/{repo}/manifests/{reference}"),
            )
            .header("Content-Type", media_type)
            .body(body.to_vec())
            .send()
            .await
            .unwrap();
        assert_eq!(
            r.status(),
            201,
            "push manifest: {}",
            r.text().await.unwrap_or_default()
        );
        sha256(body)
    }

    /// Requests of `method` whose URI contains `needle`, from the access log.
    fn count_requests(&self, method: &str, needle: &str) -> usize {
        self.log()
            .lines()
            .filter(|l| l.contains(&format!("\"{method} ")) && l.contains(needle))
            .count()
    }
}

fn sha256(bytes: &[u8]) -> String {
    format!("sha256:{}", hex(&sha2::Sha256::digest(bytes)))
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

// ---------------------------------------------------------------------------------------------
// Building images

struct Entry {
    path: &'static str,
    kind: Kind,
    mode: u32,
}

enum Kind {
    Dir,
    File(Vec<u8>),
    Symlink(&'static str),
}

fn tar_of(entries: &[Entry]) -> Vec<u8> {
    let mut b = tar::Builder::new(Vec::new());
    for e in entries {
        let mut h = tar::Header::new_gnu();
        h.set_mode(e.mode);
        h.set_uid(0);
        h.set_gid(0);
        h.set_mtime(0);
        match &e.kind {
            Kind::Dir => {
                h.set_entry_type(tar::EntryType::Directory);
                h.set_size(0);
                b.append_data(&mut h, e.path, std::io::empty()).unwrap();
            }
            Kind::File(data) => {
                h.set_entry_type(tar::EntryType::Regular);
                h.set_size(data.len() as u64);
                b.append_data(&mut h, e.path, &data[..]).unwrap();
            }
            Kind::Symlink(target) => {
                h.set_entry_type(tar::EntryType::Symlink);
                h.set_size(0);
                b.append_link(&mut h, e.path, target).unwrap();
            }
        }
    }
    b.into_inner().unwrap()
}

fn gzip(bytes: &[u8]) -> Vec<u8> {
    let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    enc.write_all(bytes).unwrap();
    enc.finish().unwrap()
}

fn busybox() -> Option<Vec<u8>> {
    std::fs::read("/bin/busybox").ok()
}

fn dir(path: &'static str) -> Entry {
    Entry {
        path,
        kind: Kind::Dir,
        mode: 0o755,
    }
}

fn file(path: &'static str, mode: u32, data: &[u8]) -> Entry {
    Entry {
        path,
        kind: Kind::File(data.to_vec()),
        mode,
    }
}

/// Layer 1: `/bin/busybox` (or a generated stand-in), `/bin/sh -> busybox`, `/app/hello.sh`,
/// `/app/remove-me.txt`. Layer 2 (uncompressed): whites out `remove-me.txt`, adds
/// `/app/added.txt`.
fn two_layers() -> Vec<(Vec<u8>, &'static str)> {
    let bb = busybox().unwrap_or_else(|| {
        eprintln!("busybox-static absent: using a generated /bin/busybox stand-in");
        b"#!/bin/sh\necho stand-in\n".repeat(1000)
    });
    let l1 = tar_of(&[
        dir("bin/"),
        file("bin/busybox", 0o755, &bb),
        Entry {
            path: "bin/sh",
            kind: Kind::Symlink("busybox"),
            mode: 0o777,
        },
        dir("app/"),
        file(
            "app/hello.sh",
            0o755,
            b"#!/bin/sh\necho \"hello $GREETING\"\nexit 42\n",
        ),
        file("app/remove-me.txt", 0o644, b"from layer 1\n"),
        file("app/suid", 0o4755, b"x"),
    ]);
    let l2 = tar_of(&[
        dir("app/"),
        file("app/.wh.remove-me.txt", 0o644, b""),
        file("app/added.txt", 0o644, b"from layer 2\n"),
    ]);
    vec![
        (gzip(&l1), "application/vnd.oci.image.layer.v1.tar+gzip"),
        (l2, "application/vnd.oci.image.layer.v1.tar"),
    ]
}

fn uncompressed(blob: &[u8], media_type: &str) -> Vec<u8> {
    if media_type.ends_with("+gzip") {
        let mut out = Vec::new();
        std::io::Read::read_to_end(&mut flate2::read::GzDecoder::new(blob), &mut out).unwrap();
        out
    } else {
        blob.to_vec()
    }
}

struct Pushed {
    manifest_digest: String,
    layer_digests: Vec<String>,
}

/// Pushes layers + config + an OCI manifest for `arch`, tagged `tag` (or untagged when
/// `None`). Returns the manifest digest and its size.
async fn push_image(
    reg: &Registry,
    repo: &str,
    tag: Option<&str>,
    arch: &str,
    layers: &[(Vec<u8>, &str)],
) -> (Pushed, usize) {
    let mut layer_descs = Vec::new();
    let mut diff_ids = Vec::new();
    let mut layer_digests = Vec::new();
    for (blob, media_type) in layers {
        let digest = reg.push_blob(repo, blob).await;
        diff_ids.push(sha256(&uncompressed(blob, media_type)));
        layer_descs.push(
            serde_json::json!({"mediaType": media_type, "digest": digest, "size": blob.len()}),
        );
        layer_digests.push(digest);
    }
    let config = serde_json::to_vec(&serde_json::json!({
        "architecture": arch,
        "os": "linux",
        "created": "1970-01-01T00:00:00Z",
        "config": {
            "Env": ["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin", "GREETING=world"],
            "Entrypoint": ["/app/hello.sh"],
            "Cmd": ["arg1", "arg2"],
            "WorkingDir": "/app",
            "User": "1000:1000"
        },
        "rootfs": {"type": "layers", "diff_ids": diff_ids}
    }))
    .unwrap();
    let config_digest = reg.push_blob(repo, &config).await;
    let manifest = serde_json::to_vec(&serde_json::json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": config_digest, "size": config.len()},
        "layers": layer_descs
    }))
    .unwrap();
    let digest = sha256(&manifest);
    let reference = tag.unwrap_or(&digest).to_owned();
    let pushed = reg
        .push_manifest(
            repo,
            &reference,
            "application/vnd.oci.image.manifest.v1+json",
            &manifest,
        )
        .await;
    assert_eq!(pushed, digest);
    (
        Pushed {
            manifest_digest: digest,
            layer_digests,
        },
        manifest.len(),
    )
}

/// The architecture that is not the host's.
fn other_arch() -> &'static str {
    if Platform::host().architecture() == "arm64" {
        "amd64"
    } else {
        "arm64"
    }
}

// ---------------------------------------------------------------------------------------------
// Inspecting the disk

fn debugfs(disk: &Path, request: &str) -> String {
    let bin = find_binary("debugfs").expect("debugfs (e2fsprogs) not found");
    let out = Command::new(bin)
        .arg("-R")
        .arg(request)
        .arg(disk)
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// `(name, mode, uid)` of each entry of `dir` on the disk (`debugfs ls -p`).
fn ls(disk: &Path, dir: &str) -> Vec<(String, u32, u32)> {
    debugfs(disk, &format!("ls -p {dir}"))
        .lines()
        .filter_map(|l| {
            // /inode/mode/uid/gid/name/size/
            let f: Vec<&str> = l.split('/').collect();
            if f.len() < 7 {
                return None;
            }
            Some((
                f[5].to_owned(),
                u32::from_str_radix(f[2], 8).ok()?,
                f[3].parse().ok()?,
            ))
        })
        .filter(|(n, _, _)| n != "." && n != "..")
        .collect()
}

fn store() -> (tempfile::TempDir, ImageStore) {
    let dir = tempfile::tempdir().unwrap();
    let store = ImageStore::open(dir.path().join("images")).unwrap();
    (dir, store)
}

// ---------------------------------------------------------------------------------------------
// Tests

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pull_two_layer_image_end_to_end() {
    let reg = Registry::start().await;
    let host = Platform::host();
    let (pushed, _) = push_image(
        &reg,
        "ci/hello",
        Some("v1"),
        host.architecture(),
        &two_layers(),
    )
    .await;
    let (dir, store) = store();
    let reference = format!("{}/ci/hello:v1", reg.addr);

    let t0 = Instant::now();
    let image = store
        .pull(&reference, PullOptions::default())
        .await
        .unwrap();
    let first = t0.elapsed();
    eprintln!("pull+convert of the 2-layer test image: {first:?}");

    assert_eq!(image.name, reference);
    assert_eq!(image.digest.as_str(), pushed.manifest_digest);
    assert_eq!(image.status, ImageStatus::Ready);
    assert_eq!(image.error, None);
    assert_eq!(image.platform, host);
    assert_eq!(
        image.config.entrypoint.as_deref(),
        Some(&["/app/hello.sh".to_owned()][..])
    );
    assert_eq!(
        image.config.cmd.as_deref(),
        Some(&["arg1".to_owned(), "arg2".to_owned()][..])
    );
    assert!(image.config.env.contains(&"GREETING=world".to_owned()));
    assert_eq!(image.config.working_dir.as_deref(), Some("/app"));
    assert_eq!(image.config.user.as_deref(), Some("1000:1000"));
    assert!(image.size_bytes.unwrap() > 0);

    let disk = store.rootfs_path(&image);
    assert!(disk.is_file(), "{}", disk.display());
    assert_eq!(
        disk,
        dir.path()
            .join("images")
            .join(image.digest.hex())
            .join("rootfs.ext4")
    );
    let len = std::fs::metadata(&disk).unwrap().len();
    assert!(
        len >= 64 * 1024 * 1024 && len % (1024 * 1024) == 0,
        "disk size {len}"
    );

    let app = ls(&disk, "/app");
    let names: Vec<&str> = app.iter().map(|(n, _, _)| n.as_str()).collect();
    assert!(names.contains(&"hello.sh"), "{names:?}");
    assert!(names.contains(&"added.txt"), "{names:?}");
    assert!(!names.contains(&"remove-me.txt"), "whited out: {names:?}");
    assert!(!names.iter().any(|n| n.starts_with(".wh.")), "{names:?}");
    let mode = |name: &str| app.iter().find(|(n, _, _)| n == name).unwrap().1;
    assert_eq!(mode("hello.sh") & 0o7777, 0o755);
    assert_eq!(mode("suid") & 0o7777, 0o4755);
    let bin = ls(&disk, "/bin");
    let busybox = bin
        .iter()
        .find(|(n, _, _)| n == "busybox")
        .expect("busybox on disk");
    assert_eq!(busybox.1 & 0o170777, 0o100755);
    assert_eq!(busybox.2, 0, "root-owned");
    let sh = bin.iter().find(|(n, _, _)| n == "sh").unwrap();
    assert_eq!(sh.1 & 0o170000, 0o120000, "symlink");
    assert_eq!(debugfs(&disk, "cat /app/added.txt"), "from layer 2\n");

    // Metadata and tag index are on disk.
    let meta: serde_json::Value = serde_json::from_slice(
        &std::fs::read(disk.parent().unwrap().join("metadata.json")).unwrap(),
    )
    .unwrap();
    assert_eq!(meta["status"], "ready");
    let tags = std::fs::read_to_string(dir.path().join("images/tags.json")).unwrap();
    assert!(tags.contains(&reference), "{tags}");

    // Second pull: cache hit (manifest resolved again, no blob downloaded, disk untouched).
    let blob_gets = reg.count_requests("GET", &pushed.layer_digests[0]);
    assert_eq!(blob_gets, 1, "{}", reg.log());
    let inode = std::os::unix::fs::MetadataExt::ino(&std::fs::metadata(&disk).unwrap());
    let t1 = Instant::now();
    let again = store
        .pull(&reference, PullOptions::default())
        .await
        .unwrap();
    eprintln!("cached pull: {:?}", t1.elapsed());
    assert_eq!(again, image);
    assert_eq!(reg.count_requests("GET", &pushed.layer_digests[0]), 1);
    assert_eq!(
        std::os::unix::fs::MetadataExt::ino(&std::fs::metadata(&disk).unwrap()),
        inode
    );

    // get / list.
    assert_eq!(store.get(&reference).unwrap(), image);
    assert_eq!(
        store.get(image.digest.as_str()).unwrap().digest,
        image.digest
    );
    let pinned = format!("{}/ci/hello@{}", reg.addr, image.digest);
    assert_eq!(store.get(&pinned).unwrap().name, pinned);
    assert_eq!(store.list(), vec![image.clone()]);

    // Pinned by digest: no network at all (the registry is gone).
    drop(reg);
    let offline = store.pull(&pinned, PullOptions::default()).await.unwrap();
    assert_eq!(offline.digest, image.digest);
    assert_eq!(offline.name, pinned);

    // Reopening finds everything again.
    drop(store);
    let store = ImageStore::open(dir.path().join("images")).unwrap();
    assert_eq!(store.get(&reference).unwrap(), image);

    // Delete by tag removes the files once no tag is left.
    store.delete(&reference).unwrap();
    assert!(store.get(&reference).is_none());
    assert!(store.list().is_empty());
    assert!(!disk.exists());
    assert!(matches!(
        store.delete(&reference),
        Err(ImageError::NotFound { .. })
    ));
}

#[tokio::test]
async fn progress_is_observable_and_concurrent_pulls_share_one_job() {
    let reg = Registry::start().await;
    let (pushed, _) = push_image(
        &reg,
        "ci/shared",
        Some("a"),
        Platform::host().architecture(),
        &two_layers(),
    )
    .await;
    // A second tag for the same manifest.
    let manifest = reg
        .req(
            reqwest::Method::GET,
            &format!("/v2/ci/shared/manifests/{}", pushed.manifest_digest),
        )
        .header("Accept", "application/vnd.oci.image.manifest.v1+json")
        .send()
        .await
        .unwrap()
        .bytes()
        .await
        .unwrap();
    reg.push_manifest(
        "ci/shared",
        "b",
        "application/vnd.oci.image.manifest.v1+json",
        &manifest,
    )
    .await;
    let (_dir, store) = store();
    let a = format!("{}/ci/shared:a", reg.addr);
    let b = format!("{}/ci/shared:b", reg.addr);

    let (h1, h2) = tokio::join!(
        store.start_pull(&a, PullOptions::default()),
        store.start_pull(&b, PullOptions::default())
    );
    let (mut h1, h2) = (h1.unwrap(), h2.unwrap());
    assert_eq!(h1.digest().as_str(), pushed.manifest_digest);
    assert_eq!(h2.digest(), h1.digest());
    // While it runs, the store shows the digest with a non-ready status (or it is already done).
    let seen = store.get(h1.digest().as_str()).unwrap().status;
    assert!(matches!(
        seen,
        ImageStatus::Pending | ImageStatus::Pulling | ImageStatus::Converting | ImageStatus::Ready
    ));
    let mut statuses = vec![h1.progress().status];
    while h1.changed().await {
        statuses.push(h1.progress().status);
    }
    let last = h1.progress();
    assert_eq!(last.status, ImageStatus::Ready, "{statuses:?}");
    assert_eq!(last.bytes_done, last.bytes_total);
    assert_eq!((last.layers_done, last.layers_total), (2, 2));
    assert!(last.bytes_total > 0);
    let (i1, i2) = (h1.wait().await.unwrap(), h2.wait().await.unwrap());
    assert_eq!(i1.name, a);
    assert_eq!(i2.name, b);
    assert_eq!(i1.digest, i2.digest);
    // One job: each layer blob was fetched once.
    for layer in &pushed.layer_digests {
        assert_eq!(reg.count_requests("GET", layer), 1, "{layer}");
    }
    // Both tags point at the one digest.
    let names: Vec<String> = store.list().into_iter().map(|i| i.name).collect();
    assert_eq!(names, vec![a.clone(), b.clone()]);
    assert!(store.progress(&i1.digest).is_none(), "job ended");
    // Deleting one tag keeps the disk for the other; deleting by digest removes everything.
    store.delete(&a).unwrap();
    assert!(store.rootfs_path(&i1).exists());
    store.delete(i1.digest.as_str()).unwrap();
    assert!(store.get(&b).is_none());
    assert!(!store.rootfs_path(&i1).exists());
}

#[tokio::test]
async fn unknown_tag_or_repository_is_not_found() {
    let reg = Registry::start().await;
    push_image(
        &reg,
        "ci/hello",
        Some("v1"),
        Platform::host().architecture(),
        &two_layers(),
    )
    .await;
    let (_dir, store) = store();
    for reference in [
        format!("{}/ci/hello:nope", reg.addr),
        format!("{}/ci/missing:v1", reg.addr),
        format!("{}/ci/hello@sha256:{}", reg.addr, "0".repeat(64)),
    ] {
        let err = store
            .pull(&reference, PullOptions::default())
            .await
            .unwrap_err();
        assert!(
            matches!(err, ImageError::NotFound { .. }),
            "{reference}: {err:?}"
        );
        assert!(store.get(&reference).is_none());
    }
    assert!(store.list().is_empty(), "no record for a failed resolution");
}

#[tokio::test]
async fn multi_arch_index_without_host_platform() {
    let reg = Registry::start().await;
    let other = other_arch();
    let (child, size) = push_image(&reg, "ci/multi", None, other, &two_layers()).await;
    let index = serde_json::to_vec(&serde_json::json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.index.v1+json",
        "manifests": [{
            "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "digest": child.manifest_digest,
            "size": size,
            "platform": {"os": "linux", "architecture": other}
        }]
    }))
    .unwrap();
    reg.push_manifest(
        "ci/multi",
        "latest",
        "application/vnd.oci.image.index.v1+json",
        &index,
    )
    .await;
    let (_dir, store) = store();
    let reference = format!("{}/ci/multi", reg.addr);

    let err = store
        .pull(&reference, PullOptions::default())
        .await
        .unwrap_err();
    match &err {
        ImageError::PlatformNotAvailable { platform } => {
            assert_eq!(platform, &Platform::host().to_string())
        }
        other => panic!("{other:?}"),
    }
    assert!(store.list().is_empty());

    // Asking for the platform the index has resolves to its child manifest.
    let wanted = Platform::parse(&format!("linux/{other}")).unwrap();
    let image = store
        .pull(
            &reference,
            PullOptions {
                platform: Some(wanted.clone()),
                credentials: None,
            },
        )
        .await
        .unwrap();
    assert_eq!(image.digest.as_str(), child.manifest_digest);
    assert_eq!(image.platform, wanted);
    assert_eq!(image.name, format!("{reference}:latest"));

    // A single-platform manifest for the other architecture is refused on this host too.
    let (_, _) = push_image(&reg, "ci/single", Some("v1"), other, &two_layers()).await;
    let err = store
        .pull(
            &format!("{}/ci/single:v1", reg.addr),
            PullOptions::default(),
        )
        .await
        .unwrap_err();
    assert!(
        matches!(err, ImageError::PlatformNotAvailable { .. }),
        "{err:?}"
    );
}

#[tokio::test]
async fn escaping_layer_fails_the_pull_and_writes_nothing_outside() {
    let reg = Registry::start().await;
    // A raw tar entry `../escaped` (tar::Builder refuses to write one, so patch the header).
    let mut h = tar::Header::new_gnu();
    let name = b"../escaped";
    h.as_old_mut().name[..name.len()].copy_from_slice(name);
    h.set_entry_type(tar::EntryType::Regular);
    h.set_size(4);
    h.set_mode(0o644);
    h.set_cksum();
    let mut evil = h.as_bytes().to_vec();
    evil.extend_from_slice(b"evil");
    evil.resize(1024 + 1024, 0);
    let layers = vec![(evil, "application/vnd.oci.image.layer.v1.tar")];
    push_image(
        &reg,
        "ci/evil",
        Some("v1"),
        Platform::host().architecture(),
        &layers,
    )
    .await;
    let (dir, store) = store();
    let reference = format!("{}/ci/evil:v1", reg.addr);
    let err = store
        .pull(&reference, PullOptions::default())
        .await
        .unwrap_err();
    assert!(matches!(err, ImageError::Unpack { .. }), "{err:?}");
    let failed: Image = store.get(&reference).expect("failed record is visible");
    assert_eq!(failed.status, ImageStatus::Failed);
    assert!(
        failed
            .error
            .as_deref()
            .unwrap()
            .contains("escapes the root filesystem")
    );
    assert!(!store.rootfs_path(&failed).exists());
    // Nothing landed next to the scratch rootfs or anywhere in the data dir.
    let found = walk(dir.path()).into_iter().any(|p| p.ends_with("escaped"));
    assert!(!found);
    // The failed record can be deleted by name.
    store.delete(&reference).unwrap();
    assert!(store.list().is_empty());
}

fn walk(p: &Path) -> Vec<PathBuf> {
    let mut out = vec![];
    if let Ok(rd) = std::fs::read_dir(p) {
        for e in rd.flatten() {
            out.push(e.path());
            if e.file_type().is_ok_and(|t| t.is_dir()) {
                out.extend(walk(&e.path()));
            }
        }
    }
    out
}

#[tokio::test]
async fn basic_auth_credentials_are_used_and_never_stored() {
    let reg = Registry::start_with_auth(Some(("ci-user", "s3cret-pass"))).await;
    push_image(
        &reg,
        "ci/private",
        Some("v1"),
        Platform::host().architecture(),
        &two_layers(),
    )
    .await;
    let (dir, store) = store();
    let reference = format!("{}/ci/private:v1", reg.addr);

    let err = store
        .pull(&reference, PullOptions::default())
        .await
        .unwrap_err();
    assert!(
        matches!(err, ImageError::NotFound { .. }),
        "anonymous: {err:?}"
    );
    let wrong = Credentials::Basic {
        username: "ci-user".into(),
        password: "wrong-pass".into(),
    };
    let err = store
        .pull(
            &reference,
            PullOptions {
                platform: None,
                credentials: Some(wrong),
            },
        )
        .await
        .unwrap_err();
    assert!(
        matches!(err, ImageError::NotFound { .. }),
        "wrong password: {err:?}"
    );
    assert!(!err.to_string().contains("wrong-pass"));

    let right = Credentials::Basic {
        username: "ci-user".into(),
        password: "s3cret-pass".into(),
    };
    let image = store
        .pull(
            &reference,
            PullOptions {
                platform: None,
                credentials: Some(right),
            },
        )
        .await
        .unwrap();
    assert_eq!(image.status, ImageStatus::Ready);
    for p in walk(dir.path()) {
        if p.is_file() && p.extension().is_some_and(|e| e == "json") {
            let text = std::fs::read_to_string(&p).unwrap();
            assert!(!text.contains("s3cret-pass"), "{}", p.display());
        }
    }
}

#[test]
fn digest_type_round_trips() {
    let d = Digest::of(b"x");
    assert_eq!(Digest::parse(d.as_str()).unwrap(), d);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn import_builds_a_local_image_without_a_registry() {
    let dir = tempfile::tempdir().unwrap();
    let store = ImageStore::open(dir.path().join("images")).unwrap();
    let layer = |name: &str| {
        let path = dir.path().join(name);
        std::fs::write(
            &path,
            tar_of(&[
                Entry {
                    path: "etc",
                    kind: Kind::Dir,
                    mode: 0o755,
                },
                Entry {
                    path: "hello",
                    kind: Kind::File(b"#!hello\n".to_vec()),
                    mode: 0o755,
                },
            ]),
        )
        .unwrap();
        path
    };
    let config = hypedeck_images::ImageConfig {
        cmd: Some(vec!["/hello".into()]),
        env: vec!["GREETING=hi".into()],
        ..Default::default()
    };
    let first = store
        .import(
            "hypedeck.local/samples/hello:1",
            &config,
            vec![layer("a.tar")],
        )
        .await
        .unwrap();
    assert_eq!(first.status, ImageStatus::Ready);
    assert_eq!(first.name, "hypedeck.local/samples/hello:1");
    assert_eq!(first.config, config);
    let disk = store.rootfs_path(&first);
    assert_eq!(debugfs(&disk, "cat /hello"), "#!hello\n");
    assert!(
        !dir.path().join("a.tar").exists(),
        "the layer file is consumed"
    );
    assert_eq!(
        store.get("hypedeck.local/samples/hello:1").unwrap().digest,
        first.digest
    );

    // Same inputs, same image (a cache hit, under a second tag too).
    let again = store
        .import(
            "hypedeck.local/samples/hello:again",
            &config,
            vec![layer("b.tar")],
        )
        .await
        .unwrap();
    assert_eq!(again.digest, first.digest);
    assert_eq!(
        store
            .get("hypedeck.local/samples/hello:again")
            .unwrap()
            .digest,
        first.digest
    );
    // Other config, other image.
    let other = hypedeck_images::ImageConfig {
        cmd: Some(vec!["/other".into()]),
        ..config.clone()
    };
    let second = store
        .import(
            "hypedeck.local/samples/hello:2",
            &other,
            vec![layer("c.tar")],
        )
        .await
        .unwrap();
    assert_ne!(second.digest, first.digest);
    // A digest is not a name for an import; nothing is recorded.
    let pinned = format!("hypedeck.local/samples/hello@{}", first.digest);
    assert!(
        store
            .import(&pinned, &config, vec![layer("d.tar")])
            .await
            .is_err()
    );
    assert_eq!(store.list().len(), 3, "one entry per name");
}
