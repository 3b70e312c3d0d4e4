//! Image verbs: the API's `/images` routes over the image cache.

use std::collections::BTreeMap;

use hypedeck_images::{Credentials, Image, ImageError, Platform, PullOptions};
use hypedeck_model::ImageInfo;

use crate::provision::map_image_error;
use crate::{Engine, EngineError};

/// Registry credentials for one pull (never stored or logged).
#[derive(Clone, Default)]
pub struct PullCredentials {
    /// User name (basic auth).
    pub username: Option<String>,
    /// Password (basic auth).
    pub password: Option<String>,
    /// Bearer token.
    pub registry_token: Option<String>,
}

impl std::fmt::Debug for PullCredentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("PullCredentials(<redacted>)")
    }
}

fn to_info(image: Image) -> ImageInfo {
    let env: BTreeMap<String, String> = image
        .config
        .env
        .iter()
        .filter_map(|e| {
            e.split_once('=')
                .map(|(k, v)| (k.to_string(), v.to_string()))
        })
        .collect();
    ImageInfo {
        cmd: image.config.cmd,
        created_at: image.created_at,
        digest: image.digest.to_string(),
        entrypoint: image.config.entrypoint,
        env: (!env.is_empty()).then_some(env),
        error: image.error,
        name: image.name,
        platform: Some(image.platform.to_string()),
        queue_position: None,
        size_bytes: image.size_bytes,
        status: image.status.as_str().to_string(),
        working_dir: image.config.working_dir,
        bytes_done: None,
        bytes_total: None,
    }
}

/// `image` on the wire; a pull under way (its config is in, its layers are coming) with its
/// bytes so far.
fn info_with_progress(store: &hypedeck_images::ImageStore, image: Image) -> ImageInfo {
    let progress = (image.status != hypedeck_images::ImageStatus::Ready)
        .then(|| store.progress(&image.digest))
        .flatten();
    let mut info = to_info(image);
    if let Some(progress) = progress {
        info.bytes_done = Some(progress.bytes_done);
        info.bytes_total = Some(progress.bytes_total);
    }
    info
}

/// What a pull in flight looks like on the wire (the cache has no record until it is ready).
fn pending_info(name: &str, progress: &hypedeck_images::PullProgress) -> ImageInfo {
    ImageInfo {
        cmd: None,
        created_at: time::OffsetDateTime::now_utc(),
        digest: progress.digest.to_string(),
        entrypoint: None,
        env: None,
        error: progress.error.clone(),
        name: name.to_string(),
        platform: None,
        queue_position: None,
        size_bytes: None,
        status: progress.status.as_str().to_string(),
        working_dir: None,
        bytes_done: Some(progress.bytes_done),
        bytes_total: Some(progress.bytes_total),
    }
}

impl Engine {
    fn image_store(&self) -> Result<&hypedeck_images::ImageStore, EngineError> {
        self.guest
            .as_ref()
            .map(|g| g.images.as_ref())
            .ok_or_else(|| {
                EngineError::Dependency("this engine has no image cache (test build)".into())
            })
    }

    /// Every cached image.
    pub fn list_images(&self) -> Result<Vec<ImageInfo>, EngineError> {
        let store = self.image_store()?;
        Ok(store
            .list()
            .into_iter()
            .map(|image| info_with_progress(store, image))
            .collect())
    }

    /// One image by reference (normalized like upstream) or digest.
    pub fn get_image(&self, name: &str) -> Result<ImageInfo, EngineError> {
        let store = self.image_store()?;
        if !name.starts_with("sha256:") {
            hypedeck_images::ImageRef::parse(name)
                .map_err(|_| EngineError::InvalidImageReference)?;
        }
        if let Some(image) = store.get(name) {
            return Ok(info_with_progress(store, image));
        }
        // A pull this engine started and that is still running (or just failed).
        let pulls = self.pulls.lock().unwrap_or_else(|p| p.into_inner());
        let normalized = hypedeck_images::ImageRef::parse(name)
            .map(|r| r.to_string())
            .ok();
        let found = pulls.iter().find(|(n, d)| {
            Some(n) == normalized.as_ref() || n.as_str() == name || d.to_string() == name
        });
        if let Some((n, digest)) = found
            && let Some(progress) = store.progress(digest)
        {
            return Ok(pending_info(n, &progress));
        }
        Err(EngineError::NotFound)
    }

    /// Starts pulling an image and returns at once with its status (upstream: 202).
    pub async fn pull_image(
        &self,
        name: &str,
        platform: Option<&str>,
        credentials: Option<PullCredentials>,
    ) -> Result<ImageInfo, EngineError> {
        // A token becomes an `Authorization` header value: only visible ASCII fits one.
        if let Some(token) = credentials
            .as_ref()
            .and_then(|c| c.registry_token.as_deref())
            && (token.is_empty() || !token.bytes().all(|b| b.is_ascii_graphic()))
        {
            return Err(EngineError::Rejected(hypedeck_model::Rejection::new(
                hypedeck_model::ErrorCode::InvalidRequest,
                "credentials.registry_token must be non-empty visible ASCII (no spaces or control characters)",
            )));
        }
        let store = self.image_store()?;
        let platform = platform.map(Platform::parse).transpose().map_err(|e| {
            EngineError::Rejected(hypedeck_model::Rejection::new(
                hypedeck_model::ErrorCode::InvalidPlatform,
                format!("invalid platform: {e}"),
            ))
        })?;
        let credentials =
            credentials.and_then(|c| match (c.username, c.password, c.registry_token) {
                (_, _, Some(token)) => Some(Credentials::Token(token)),
                (Some(username), Some(password), None) => {
                    Some(Credentials::Basic { username, password })
                }
                _ => None,
            });
        let handle = store
            .start_pull(
                name,
                PullOptions {
                    platform,
                    credentials,
                },
            )
            .await
            .map_err(|e| map_image_error(e, name))?;
        let digest = handle.digest().to_string();
        let progress = handle.progress();
        let pending = pending_info(handle.name(), &progress);
        {
            let mut pulls = self.pulls.lock().unwrap_or_else(|p| p.into_inner());
            pulls.retain(|(n, _)| n != handle.name());
            pulls.push((handle.name().to_string(), progress.digest.clone()));
        }
        // Keep the pull running after this request returns.
        tokio::spawn(async move {
            if let Err(e) = handle.wait().await {
                tracing::warn!(error = %e, "image pull failed");
            }
        });
        Ok(store.get(&digest).map(to_info).unwrap_or(pending))
    }

    /// Removes an image (a tag, or a digest with all its tags).
    pub fn delete_image(&self, name: &str) -> Result<(), EngineError> {
        match self.image_store()?.delete(name) {
            Ok(()) => Ok(()),
            Err(ImageError::NotFound { .. }) => Err(EngineError::NotFound),
            Err(e) => Err(map_image_error(e, name)),
        }
    }
}

/// The sample image: `/hello` is this machine's `hypedeck-guest-init` binary (which runs as the
/// greeting program under that name), so it is built locally, without any registry.
pub const HELLO_IMAGE: &str = "hypedeck.local/samples/hello:1";

impl Engine {
    /// Builds (or finds) the sample image [`HELLO_IMAGE`] and returns it, ready to boot.
    /// The same guest-init binary always gives the same image digest.
    pub async fn hello_image(&self) -> Result<ImageInfo, EngineError> {
        let store = self.image_store()?;
        let init =
            hypedeck_boot::find_guest_init().map_err(|e| EngineError::Dependency(e.to_string()))?;
        let layer = store
            .root()
            .join(format!(".hello-{}.tar", std::process::id()));
        let path = layer.clone();
        tokio::task::spawn_blocking(move || hello_layer(&init, &path))
            .await
            .map_err(|_| EngineError::Task)?
            .map_err(|source| EngineError::Io {
                what: "build the sample image layer".into(),
                source,
            })?;
        let config = hypedeck_images::ImageConfig {
            cmd: Some(vec!["/hello".to_string()]),
            env: vec!["PATH=/".to_string()],
            ..Default::default()
        };
        let image = store
            .import(HELLO_IMAGE, &config, vec![layer.clone()])
            .await;
        let _ = std::fs::remove_file(&layer);
        image
            .map(to_info)
            .map_err(|e| EngineError::ImageFailed(e.to_string()))
    }
}

/// One uncompressed layer: the usual mount points and `/hello` (a copy of `init`), owned by
/// root, with fixed times so the same binary gives the same bytes.
fn hello_layer(init: &std::path::Path, out: &std::path::Path) -> std::io::Result<()> {
    let mut tar = tar::Builder::new(std::fs::File::create(out)?);
    let header = |kind: tar::EntryType, mode: u32, size: u64| {
        let mut h = tar::Header::new_gnu();
        h.set_entry_type(kind);
        h.set_mode(mode);
        h.set_uid(0);
        h.set_gid(0);
        h.set_mtime(0);
        h.set_size(size);
        h
    };
    for (dir, mode) in [
        ("dev", 0o755),
        ("etc", 0o755),
        ("proc", 0o555),
        ("run", 0o755),
        ("sys", 0o555),
        ("tmp", 0o1777),
    ] {
        let mut h = header(tar::EntryType::Directory, mode, 0);
        tar.append_data(&mut h, dir, std::io::empty())?;
    }
    let bytes = std::fs::read(init)?;
    let mut h = header(tar::EntryType::Regular, 0o755, bytes.len() as u64);
    tar.append_data(&mut h, "hello", &bytes[..])?;
    tar.into_inner()?.sync_all()
}
