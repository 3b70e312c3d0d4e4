//! [`ImageStore`]: the digest-keyed image cache and the pulls that fill it.
//!
//! Concurrency: one pull job per manifest digest. A second pull that resolves to a digest
//! already being pulled joins that job (and has its tag set when the job succeeds); at most
//! `max_concurrent_pulls` jobs download/unpack/convert at a time, the others wait as
//! `pending`. All bookkeeping sits behind one mutex that is never held across an `.await`.
//!
//! One process per images root: the engine's data-dir lock guarantees it.

use std::collections::{BTreeMap, HashMap};
use std::fs;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};

use futures_util::{StreamExt, TryStreamExt};
use time::OffsetDateTime;
use tokio::sync::{Semaphore, watch};

use crate::cache::{self, Layout};
use crate::disk;
use crate::error::ImageError;
use crate::image::{Image, ImageConfig, ImageStatus, PullProgress};
use crate::platform::Platform;
use crate::reference::{Digest, ImageRef};
use crate::registry::{self, Credentials, Mirrors, Resolved, Session};
use crate::unpack::Rootfs;

/// Layer downloads in flight per pull.
const PARALLEL_DOWNLOADS: usize = 3;

/// Options of one pull.
#[derive(Debug, Clone, Default)]
pub struct PullOptions {
    /// The platform to pull; `None` = the host's (`linux/amd64` or `linux/arm64`).
    pub platform: Option<Platform>,
    /// Credentials for this pull only: used for its requests, never stored or logged.
    pub credentials: Option<Credentials>,
}

/// The digest-keyed image cache. Cheap to clone; clones share state.
#[derive(Debug, Clone)]
pub struct ImageStore {
    inner: Arc<Inner>,
}

struct Inner {
    layout: Layout,
    state: Mutex<State>,
    slots: Semaphore,
    /// Where each registry's requests go.
    mirrors: Mirrors,
    /// Anonymous registry clients by registry host, reused across pulls.
    anonymous: Mutex<HashMap<String, oci_client::Client>>,
}

impl std::fmt::Debug for Inner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Inner")
            .field("root", &self.layout.root())
            .finish_non_exhaustive()
    }
}

#[derive(Debug, Default)]
struct State {
    /// Normalized tag reference -> digest (persisted in tags.json).
    tags: BTreeMap<String, Digest>,
    /// Every known image by digest: ready and failed ones from disk, plus running pulls.
    images: HashMap<Digest, Image>,
    /// Running pulls.
    jobs: HashMap<Digest, Job>,
}

#[derive(Debug)]
struct Job {
    rx: watch::Receiver<JobState>,
    /// References (tags) to point at the digest when the job succeeds.
    tag_on_success: Vec<String>,
}

#[derive(Debug, Clone)]
struct JobState {
    progress: PullProgress,
    outcome: Option<Result<Image, ImageError>>,
}

/// A running (or finished) pull. Dropping it does not cancel the pull.
#[derive(Debug)]
pub struct PullHandle {
    name: String,
    rx: watch::Receiver<JobState>,
}

impl PullHandle {
    /// The normalized reference that was asked for.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The manifest digest being pulled.
    pub fn digest(&self) -> Digest {
        self.rx.borrow().progress.digest.clone()
    }

    /// The latest progress snapshot.
    pub fn progress(&self) -> PullProgress {
        self.rx.borrow().progress.clone()
    }

    /// Waits for the next progress update. Returns `false` once the pull has ended (its
    /// final progress is then available from [`PullHandle::progress`]).
    pub async fn changed(&mut self) -> bool {
        if self.rx.borrow().outcome.is_some() {
            return false;
        }
        self.rx.changed().await.is_ok() && self.rx.borrow().outcome.is_none()
    }

    /// Waits until the image is ready (`Ok`, with `name` set to the reference asked for)
    /// or failed (`Err`).
    pub async fn wait(mut self) -> Result<Image, ImageError> {
        // On `Err` the job's sender is gone; whatever outcome it left is still readable.
        let _ = self.rx.wait_for(|s| s.outcome.is_some()).await.is_ok();
        let outcome = self.rx.borrow().outcome.clone();
        match outcome {
            Some(Ok(mut image)) => {
                image.name = self.name;
                Ok(image)
            }
            Some(Err(e)) => Err(e),
            None => Err(ImageError::Registry("pull aborted".into())),
        }
    }
}

impl ImageStore {
    /// Opens (creating if needed) the cache at `root` — `images/` in the data dir — with one
    /// pull at a time. Repairs what a crash left behind (see the `cache` module). Blocking.
    pub fn open(root: PathBuf) -> Result<ImageStore, ImageError> {
        ImageStore::open_with(root, 1, Mirrors::default())
    }

    /// Like [`ImageStore::open`] with `max_concurrent_pulls` (at least 1) jobs at a time and
    /// registry `mirrors`.
    pub fn open_with(
        root: PathBuf,
        max_concurrent_pulls: usize,
        mirrors: Mirrors,
    ) -> Result<ImageStore, ImageError> {
        let layout = Layout::new(root);
        let loaded = cache::load(&layout)?;
        Ok(ImageStore {
            inner: Arc::new(Inner {
                layout,
                state: Mutex::new(State {
                    tags: loaded.tags,
                    images: loaded.images,
                    jobs: HashMap::new(),
                }),
                slots: Semaphore::new(max_concurrent_pulls.max(1)),
                mirrors,
                anonymous: Mutex::new(HashMap::new()),
            }),
        })
    }

    /// The cache root.
    pub fn root(&self) -> &Path {
        self.inner.layout.root()
    }

    /// Pulls `reference` and waits until it is ready or failed.
    ///
    /// Idempotent: when the resolved digest is already ready this only (re)points the tag and
    /// returns the cached image. Errors: `InvalidReference`, `NotFound`, `RateLimited`,
    /// `PlatformNotAvailable`, `Registry`, `Unsupported`, `DigestMismatch` straight from
    /// resolution; any pipeline error once the pull ran. Cancelling the future does not
    /// cancel the pull; it completes in the background.
    pub async fn pull(&self, reference: &str, options: PullOptions) -> Result<Image, ImageError> {
        self.start_pull(reference, options).await?.wait().await
    }

    /// Adds an image built on this machine: `layers` are uncompressed tar files (consumed: each
    /// is removed once applied), `config` its runtime defaults. The image gets the digest of an
    /// OCI manifest describing exactly these layers and config, so importing the same inputs
    /// again is a cache hit; `name` (a tag reference, e.g. `hypedeck.local/samples/hello:1`)
    /// is pointed at it. No registry is involved. Conversion takes a pull slot like a pull.
    pub async fn import(
        &self,
        name: &str,
        config: &ImageConfig,
        layers: Vec<PathBuf>,
    ) -> Result<Image, ImageError> {
        let image = ImageRef::parse(name)?;
        if image.digest().is_some() {
            return Err(ImageError::Convert(
                "an imported image is named by a tag, not a digest".into(),
            ));
        }
        let name = image.to_string();
        let hashed = tokio::task::spawn_blocking(move || {
            layers
                .into_iter()
                .map(|path| {
                    let bytes = fs::read(&path).map_err(|e| ImageError::io("read", &path, e))?;
                    Ok((Digest::of(&bytes), bytes.len() as u64, path))
                })
                .collect::<Result<Vec<_>, ImageError>>()
        })
        .await
        .map_err(|e| ImageError::Convert(format!("hashing task failed: {e}")))??;
        let platform = Platform::host();
        let digest = Digest::of(&local_manifest(&platform, config, &hashed));
        let record = Image {
            name: name.clone(),
            digest: digest.clone(),
            platform,
            status: ImageStatus::Pending,
            error: None,
            size_bytes: None,
            config: config.clone(),
            created_at: OffsetDateTime::now_utc(),
        };

        // Claim the job under the lock; a ready image or a job already running for the same
        // digest (another import of the same inputs) is joined instead.
        let claimed = {
            let mut state = self.lock();
            let taken = state
                .images
                .get(&digest)
                .is_some_and(|i| i.status == ImageStatus::Ready)
                || state.jobs.contains_key(&digest);
            (!taken).then(|| {
                let total = hashed.iter().map(|(_, n, _)| n).sum();
                let progress = PullProgress {
                    status: ImageStatus::Pending,
                    digest: digest.clone(),
                    bytes_done: total,
                    bytes_total: total,
                    layers_done: 0,
                    layers_total: hashed.len(),
                    error: None,
                };
                open_job(&mut state, &record, progress, vec![name.clone()])
            })
        };
        let Some((tx, rx)) = claimed else {
            for (_, _, path) in &hashed {
                let _ = fs::remove_file(path);
            }
            return self.tag_existing(&name, &digest).await;
        };
        let store = self.clone();
        tokio::spawn(async move {
            let mut guard = JobGuard {
                store: store.clone(),
                digest: digest.clone(),
                done: false,
            };
            let result = async {
                let _slot = store
                    .inner
                    .slots
                    .acquire()
                    .await
                    .map_err(|_| ImageError::Registry("image store closed".into()))?;
                store.set_status(&digest, ImageStatus::Pulling, &tx);
                let work = store.inner.layout.job_dir(&digest);
                if work.exists() {
                    fs::remove_dir_all(&work).map_err(|e| ImageError::io("remove", &work, e))?;
                }
                fs::create_dir_all(&work).map_err(|e| ImageError::io("create", &work, e))?;
                let layers = hashed
                    .into_iter()
                    .map(|(d, _, path)| (d.clone(), path, d))
                    .collect();
                let result = store
                    .convert(
                        &digest,
                        layers,
                        record,
                        &tx,
                        &work,
                        std::time::Duration::ZERO,
                    )
                    .await;
                let _ = fs::remove_dir_all(&work);
                result
            }
            .await;
            store.finish_job(&digest, result, &tx);
            guard.done = true;
        });
        PullHandle { name, rx }.wait().await
    }

    /// Points `name` at `digest` once its job (if any) has finished.
    async fn tag_existing(&self, name: &str, digest: &Digest) -> Result<Image, ImageError> {
        let running = self.lock().jobs.get(digest).map(|j| j.rx.clone());
        if let Some(rx) = running {
            PullHandle {
                name: name.to_string(),
                rx,
            }
            .wait()
            .await?;
        }
        let mut state = self.lock();
        let image = state
            .images
            .get(digest)
            .filter(|i| i.status == ImageStatus::Ready)
            .cloned()
            .ok_or_else(|| ImageError::Convert("the image failed to build".into()))?;
        self.set_tags(&mut state, &[name.to_string()], digest)?;
        Ok(image)
    }

    /// Resolves `reference` (manifest, index child for the platform, config: bounded by
    /// [`crate::RESOLVE_TIMEOUT`]) and returns a handle to the pull, which runs in the
    /// background on the current tokio runtime.
    ///
    /// Resolution errors come back here, before any job exists (as upstream's `POST /images`
    /// answers 404/429 directly). A reference pinned to a digest that is already ready needs
    /// no network. The returned handle is already finished on a cache hit. Must be called
    /// within a tokio runtime.
    pub async fn start_pull(
        &self,
        reference: &str,
        options: PullOptions,
    ) -> Result<PullHandle, ImageError> {
        let image = ImageRef::parse(reference)?;
        let platform = options.platform.clone().unwrap_or_else(Platform::host);
        let name = image.to_string();
        if let Some(digest) = image.digest() {
            let state = self.lock();
            if let Some(ready) = state
                .images
                .get(digest)
                .filter(|i| i.status == ImageStatus::Ready && platform.accepts(&i.platform))
            {
                return Ok(finished(&name, Ok(ready.clone())));
            }
        }
        let endpoint = self.inner.mirrors.endpoint(&image);
        let client = match &options.credentials {
            // Credentials get a client of their own, dropped with the pull.
            Some(_) => registry::client_for(&endpoint),
            None => self.anonymous_client(&endpoint),
        };
        let session = Session::new(&image, endpoint, client, options.credentials.as_ref());
        let resolved = session.resolve(&platform).await?;
        // Tags are set for tag references only; a digest pin names no tag.
        let tag = (image.digest().is_none()).then(|| name.clone());

        let mut state = self.lock();
        let digest = resolved.digest.clone();
        if let Some(job) = state.jobs.get_mut(&digest) {
            job.tag_on_success.extend(tag);
            let rx = job.rx.clone();
            return Ok(PullHandle { name, rx });
        }
        if let Some(ready) = state
            .images
            .get(&digest)
            .filter(|i| i.status == ImageStatus::Ready)
            .cloned()
        {
            if let Some(tag) = tag {
                self.set_tags(&mut state, &[tag], &digest)?;
            }
            return Ok(finished(&name, Ok(ready)));
        }
        // New job (a failed record is replaced by this attempt).
        let record = Image {
            name: name.clone(),
            digest: digest.clone(),
            platform: resolved.platform.clone(),
            status: ImageStatus::Pending,
            error: None,
            size_bytes: None,
            config: resolved.config.image_config(),
            created_at: OffsetDateTime::now_utc(),
        };
        let progress = PullProgress {
            status: ImageStatus::Pending,
            digest: digest.clone(),
            bytes_done: resolved.config_descriptor.size,
            bytes_total: resolved.config_descriptor.size
                + resolved
                    .layers
                    .iter()
                    .map(|l| l.descriptor.size)
                    .sum::<u64>(),
            layers_done: 0,
            layers_total: resolved.layers.len(),
            error: None,
        };
        let (tx, rx) = open_job(&mut state, &record, progress, tag.into_iter().collect());
        drop(state);

        let store = self.clone();
        tokio::spawn(async move {
            let mut guard = JobGuard {
                store: store.clone(),
                digest: digest.clone(),
                done: false,
            };
            let result = store.run_job(&session, &resolved, record, &tx).await;
            store.finish_job(&digest, result, &tx);
            guard.done = true;
        });
        Ok(PullHandle { name, rx })
    }

    /// Looks up a reference (`alpine`, `127.0.0.1:5000/ci/hello:v1`, `repo@sha256:…`) or a bare
    /// digest (`sha256:…`). Tags resolve to what they point at; a tag with no ready image yet
    /// shows its running or failed pull. `None` when unknown or when the input does not parse.
    pub fn get(&self, reference_or_digest: &str) -> Option<Image> {
        let state = self.lock();
        if let Ok(digest) = Digest::parse(reference_or_digest) {
            return state.images.get(&digest).cloned();
        }
        let image = ImageRef::parse(reference_or_digest).ok()?;
        let name = image.to_string();
        let found = if let Some(digest) = image.digest() {
            state.images.get(digest)
        } else if let Some(digest) = state.tags.get(&name) {
            state.images.get(digest)
        } else {
            state
                .images
                .values()
                .filter(|i| i.name == name && i.status != ImageStatus::Ready)
                .max_by_key(|i| i.created_at)
        };
        found.cloned().map(|mut i| {
            i.name = name;
            i
        })
    }

    /// Every image: one entry per tag, then untagged digests (running and failed pulls under
    /// the name they were pulled as; untagged ready images as `repo@digest`). Sorted by name.
    pub fn list(&self) -> Vec<Image> {
        let state = self.lock();
        let mut out: Vec<Image> = state
            .tags
            .iter()
            .filter_map(|(name, d)| {
                state.images.get(d).map(|i| Image {
                    name: name.clone(),
                    ..i.clone()
                })
            })
            .collect();
        for image in state.images.values() {
            if state.tags.values().any(|d| d == &image.digest) {
                continue;
            }
            let mut image = image.clone();
            if image.status == ImageStatus::Ready
                && let Ok(r) = ImageRef::parse(&image.name)
            {
                image.name = r.pinned(image.digest.clone()).to_string();
            }
            out.push(image);
        }
        out.sort_by(|a, b| a.name.cmp(&b.name).then(a.digest.cmp(&b.digest)));
        out
    }

    /// Progress of the running pull of `digest`, if any.
    pub fn progress(&self, digest: &Digest) -> Option<PullProgress> {
        let state = self.lock();
        state
            .jobs
            .get(digest)
            .map(|j| j.rx.borrow().progress.clone())
    }

    /// Deletes by tag, digest reference or bare digest.
    ///
    /// A tag: the tag goes; the digest's files go too once no tag points at it. A digest:
    /// every tag pointing at it and its files go. A failed pull can be deleted by the name it
    /// was pulled as. Errors: `NotFound` when nothing matched, `Busy` while the digest is
    /// being pulled. Whether an instance still boots from the disk is the engine's concern
    /// (instances pin `repo@digest`). Blocking.
    pub fn delete(&self, reference: &str) -> Result<(), ImageError> {
        let not_found = || ImageError::NotFound {
            reference: reference.to_owned(),
        };
        let mut state = self.lock();
        let (digest, tag) = match Digest::parse(reference) {
            Ok(d) => (d, None),
            Err(_) => {
                let image = ImageRef::parse(reference)?;
                let name = image.to_string();
                match image.digest() {
                    Some(d) => (d.clone(), None),
                    None => match state.tags.get(&name) {
                        Some(d) => (d.clone(), Some(name)),
                        None => {
                            let failed = state
                                .images
                                .values()
                                .find(|i| i.name == name && i.status == ImageStatus::Failed)
                                .map(|i| i.digest.clone());
                            if let Some(d) = failed.filter(|d| !state.tags.values().any(|t| t == d))
                            {
                                (d, None)
                            } else if state
                                .images
                                .values()
                                .any(|i| i.name == name && state.jobs.contains_key(&i.digest))
                            {
                                return Err(ImageError::Busy);
                            } else {
                                return Err(not_found());
                            }
                        }
                    },
                }
            }
        };
        if !state.images.contains_key(&digest) {
            return Err(not_found());
        }
        let tags_before = state.tags.clone();
        match &tag {
            Some(t) => {
                state.tags.remove(t);
            }
            None => {
                if state.jobs.contains_key(&digest) {
                    return Err(ImageError::Busy);
                }
                state.tags.retain(|_, d| d != &digest);
            }
        }
        if state.tags != tags_before
            && let Err(e) = cache::write_tags(&self.inner.layout, &state.tags)
        {
            state.tags = tags_before;
            return Err(e);
        }
        let orphan =
            !state.tags.values().any(|d| d == &digest) && !state.jobs.contains_key(&digest);
        if !orphan {
            return Ok(());
        }
        state.images.remove(&digest);
        let dir = self.inner.layout.image_dir(&digest);
        let trash = self.inner.layout.trash(&digest);
        let moved = match fs::rename(&dir, &trash) {
            Ok(()) => Some(trash),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
            Err(e) => return Err(ImageError::io("remove", dir, e)),
        };
        drop(state);
        if let Some(trash) = moved {
            fs::remove_dir_all(&trash).map_err(|e| ImageError::io("remove", trash, e))?;
        }
        Ok(())
    }

    /// Where the root disk of `image` lives (it exists when the image is `ready`).
    pub fn rootfs_path(&self, image: &Image) -> PathBuf {
        self.inner.layout.rootfs(&image.digest)
    }

    fn anonymous_client(&self, endpoint: &str) -> oci_client::Client {
        let mut clients = self
            .inner
            .anonymous
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        clients
            .entry(endpoint.to_owned())
            .or_insert_with(|| registry::client_for(endpoint))
            .clone()
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // A panic while holding the lock leaves plain data behind; keep serving it.
        self.inner
            .state
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Points `names` at `digest` and persists the tag index (rolled back on failure).
    fn set_tags(
        &self,
        state: &mut State,
        names: &[String],
        digest: &Digest,
    ) -> Result<(), ImageError> {
        if names.iter().all(|n| state.tags.get(n) == Some(digest)) {
            return Ok(());
        }
        let before = state.tags.clone();
        for n in names {
            state.tags.insert(n.clone(), digest.clone());
        }
        if let Err(e) = cache::write_tags(&self.inner.layout, &state.tags) {
            state.tags = before;
            return Err(e);
        }
        // A tag that moved may leave its old digest orphaned; it stays cached (as
        // `repo@digest`) until deleted, like `docker pull` leaves dangling images.
        Ok(())
    }

    fn set_status(&self, digest: &Digest, status: ImageStatus, tx: &watch::Sender<JobState>) {
        if let Some(image) = self.lock().images.get_mut(digest) {
            image.status = status;
        }
        tx.send_modify(|s| s.progress.status = status);
    }

    /// The pipeline: download -> unpack -> mkfs -> move into place -> `ready` metadata.
    async fn run_job(
        &self,
        session: &Session,
        resolved: &Resolved,
        record: Image,
        tx: &watch::Sender<JobState>,
    ) -> Result<Image, ImageError> {
        let _slot = self
            .inner
            .slots
            .acquire()
            .await
            .map_err(|_| ImageError::Registry("image store closed".into()))?;
        let digest = &resolved.digest;
        self.set_status(digest, ImageStatus::Pulling, tx);
        let layout = &self.inner.layout;
        let work = layout.job_dir(digest);
        let result = self.pipeline(session, resolved, record, tx, &work).await;
        let cleanup = work.clone();
        let _ = tokio::task::spawn_blocking(move || fs::remove_dir_all(cleanup)).await;
        result
    }

    async fn pipeline(
        &self,
        session: &Session,
        resolved: &Resolved,
        record: Image,
        tx: &watch::Sender<JobState>,
        work: &Path,
    ) -> Result<Image, ImageError> {
        let digest = &resolved.digest;
        let started = std::time::Instant::now();
        if work.exists() {
            fs::remove_dir_all(work).map_err(|e| ImageError::io("remove", work, e))?;
        }
        let blobs = work.join("blobs");
        fs::create_dir_all(&blobs).map_err(|e| ImageError::io("create", &blobs, e))?;

        // Download every layer (a few at a time), verified.
        let paths: Vec<PathBuf> = resolved
            .layers
            .iter()
            .enumerate()
            .map(|(i, _)| blobs.join(format!("{i}")))
            .collect();
        let downloads: Vec<_> = resolved
            .layers
            .iter()
            .map(|l| l.descriptor.clone())
            .zip(paths.clone())
            .collect();
        futures_util::stream::iter(downloads)
            .map(|(descriptor, path)| async move {
                let mut progress = |n: u64| tx.send_modify(|s| s.progress.bytes_done += n);
                session.download(&descriptor, &path, &mut progress).await
            })
            .buffer_unordered(PARALLEL_DOWNLOADS)
            .try_collect::<Vec<()>>()
            .await?;
        let downloaded = started.elapsed();
        let layers: Vec<(Digest, PathBuf, Digest)> = resolved
            .layers
            .iter()
            .zip(paths)
            .map(|(l, p)| (l.digest.clone(), p, l.diff_id.clone()))
            .collect();
        self.convert(digest, layers, record, tx, work, downloaded)
            .await
    }

    /// Applies `layers` (digest, blob path, diff id; each blob is removed once applied) in
    /// order, builds the ext4 disk, moves it into place and writes the `ready` record.
    async fn convert(
        &self,
        digest: &Digest,
        layers: Vec<(Digest, PathBuf, Digest)>,
        mut record: Image,
        tx: &watch::Sender<JobState>,
        work: &Path,
        downloaded: std::time::Duration,
    ) -> Result<Image, ImageError> {
        // Apply layers in order on a blocking thread.
        let rootfs_dir = work.join("rootfs");
        let disk_tmp = work.join("rootfs.ext4");
        let tx_unpack = tx.clone();
        let this = self.clone();
        let digest_c = digest.clone();
        let disk_for_build = disk_tmp.clone();
        let (disk_size, unpacked, converted) = tokio::task::spawn_blocking(move || {
            let t0 = std::time::Instant::now();
            let mut rootfs = Rootfs::create(&rootfs_dir).map_err(|source| ImageError::Unpack {
                layer: digest_c.clone(),
                source,
            })?;
            for (layer, path, diff_id) in &layers {
                rootfs
                    .apply_blob(path, Some(diff_id))
                    .map_err(|source| ImageError::Unpack {
                        layer: layer.clone(),
                        source,
                    })?;
                let _ = fs::remove_file(path);
                tx_unpack.send_modify(|s| s.progress.layers_done += 1);
            }
            let unpacked = t0.elapsed();
            this.set_status(&digest_c, ImageStatus::Converting, &tx_unpack);
            let t1 = std::time::Instant::now();
            let size = disk::build_ext4(&rootfs, &disk_for_build)?;
            let _ = fs::remove_dir_all(rootfs.path());
            Ok::<_, ImageError>((size, unpacked, t1.elapsed()))
        })
        .await
        .map_err(|e| ImageError::Convert(format!("conversion task failed: {e}")))??;

        // Commit: disk into place, then the metadata that makes it visible.
        let layout = &self.inner.layout;
        let dir = layout.image_dir(digest);
        let final_disk = layout.rootfs(digest);
        let allocated = tokio::task::spawn_blocking({
            let dir = dir.clone();
            let final_disk = final_disk.clone();
            move || -> Result<u64, ImageError> {
                if dir.exists() {
                    // A failed attempt's directory.
                    fs::remove_dir_all(&dir).map_err(|e| ImageError::io("remove", &dir, e))?;
                }
                fs::create_dir_all(&dir).map_err(|e| ImageError::io("create", &dir, e))?;
                fs::File::open(&disk_tmp)
                    .and_then(|f| f.sync_all())
                    .map_err(|e| ImageError::io("sync", &disk_tmp, e))?;
                fs::rename(&disk_tmp, &final_disk)
                    .map_err(|e| ImageError::io("rename", &final_disk, e))?;
                let m = fs::metadata(&final_disk)
                    .map_err(|e| ImageError::io("stat", &final_disk, e))?;
                Ok(m.blocks() * 512)
            }
        })
        .await
        .map_err(|e| ImageError::Convert(format!("commit task failed: {e}")))??;
        record.status = ImageStatus::Ready;
        record.size_bytes = Some(allocated);
        record.error = None;
        cache::write_metadata(layout, &record)?;
        tracing::info!(
            image = %record.name,
            digest = %digest,
            download_ms = downloaded.as_millis() as u64,
            unpack_ms = unpacked.as_millis() as u64,
            mkfs_ms = converted.as_millis() as u64,
            disk_bytes = disk_size,
            "image ready"
        );
        Ok(record)
    }

    /// Records the outcome: tags on success, a persisted `failed` record on failure; ends the
    /// job and wakes every waiter.
    fn finish_job(
        &self,
        digest: &Digest,
        result: Result<Image, ImageError>,
        tx: &watch::Sender<JobState>,
    ) {
        let mut state = self.lock();
        let job = state.jobs.remove(digest);
        let result = match result {
            Ok(image) => {
                let tags = job.map(|j| j.tag_on_success).unwrap_or_default();
                state.images.insert(digest.clone(), image.clone());
                match self.set_tags(&mut state, &tags, digest) {
                    Ok(()) => Ok(image),
                    Err(e) => Err(e),
                }
            }
            Err(e) => Err(e),
        };
        if let Err(e) = &result {
            let failed = state.images.get_mut(digest).map(|image| {
                if image.status != ImageStatus::Ready {
                    image.status = ImageStatus::Failed;
                    image.error = Some(error_chain(e));
                    image.size_bytes = None;
                }
                image.clone()
            });
            if let Some(image) = failed.filter(|i| i.status == ImageStatus::Failed) {
                // Best effort: an unwritable cache dir already failed the pull.
                let _ = fs::remove_file(self.inner.layout.rootfs(digest));
                if let Err(write_err) = cache::write_metadata(&self.inner.layout, &image) {
                    tracing::warn!(error = %write_err, "could not record failed pull");
                }
            }
        }
        drop(state);
        tx.send_modify(|s| {
            match &result {
                Ok(_) => s.progress.status = ImageStatus::Ready,
                Err(e) => {
                    s.progress.status = ImageStatus::Failed;
                    s.progress.error = Some(error_chain(e));
                }
            }
            s.outcome = Some(result.clone());
        });
    }
}

/// `error: cause: cause`, for the `error` field of a failed image.
fn error_chain(e: &ImageError) -> String {
    let mut text = e.to_string();
    let mut cur: Option<&(dyn std::error::Error + 'static)> = std::error::Error::source(e);
    while let Some(c) = cur {
        text.push_str(": ");
        text.push_str(&c.to_string());
        cur = c.source();
    }
    text
}

fn finished(name: &str, outcome: Result<Image, ImageError>) -> PullHandle {
    let progress = match &outcome {
        Ok(image) => PullProgress {
            status: ImageStatus::Ready,
            digest: image.digest.clone(),
            bytes_done: 0,
            bytes_total: 0,
            layers_done: 0,
            layers_total: 0,
            error: None,
        },
        // Only ready images come through here today; keep the arm honest anyway.
        Err(e) => PullProgress {
            status: ImageStatus::Failed,
            digest: Digest::of(b""),
            bytes_done: 0,
            bytes_total: 0,
            layers_done: 0,
            layers_total: 0,
            error: Some(e.to_string()),
        },
    };
    let (_tx, rx) = watch::channel(JobState {
        progress,
        outcome: Some(outcome),
    });
    PullHandle {
        name: name.to_owned(),
        rx,
    }
}

/// Ends a job that did not finish normally (its task panicked or the runtime shut down), so
/// the digest is not stuck as "being pulled".
struct JobGuard {
    store: ImageStore,
    digest: Digest,
    done: bool,
}

impl Drop for JobGuard {
    fn drop(&mut self) {
        if self.done {
            return;
        }
        let mut state = self.store.lock();
        state.jobs.remove(&self.digest);
        if let Some(image) = state.images.get_mut(&self.digest)
            && image.status != ImageStatus::Ready
        {
            image.status = ImageStatus::Failed;
            image.error = Some("pull aborted".into());
        }
    }
}

/// Records `record` as pending and starts its job: the channel its progress goes out on, and
/// the tags to set when it succeeds.
fn open_job(
    state: &mut State,
    record: &Image,
    progress: PullProgress,
    tags: Vec<String>,
) -> (watch::Sender<JobState>, watch::Receiver<JobState>) {
    let (tx, rx) = watch::channel(JobState {
        progress,
        outcome: None,
    });
    state.images.insert(record.digest.clone(), record.clone());
    state.jobs.insert(
        record.digest.clone(),
        Job {
            rx: rx.clone(),
            tag_on_success: tags,
        },
    );
    (tx, rx)
}

/// The OCI manifest of a local image (uncompressed layers, given as digest, size and path),
/// whose config blob holds `config`. Pure: the same inputs give the same bytes, hence the
/// same digest.
fn local_manifest(
    platform: &Platform,
    config: &ImageConfig,
    layers: &[(Digest, u64, PathBuf)],
) -> Vec<u8> {
    let mut runtime = serde_json::Map::new();
    if let Some(e) = &config.entrypoint {
        runtime.insert("Entrypoint".into(), serde_json::json!(e));
    }
    if let Some(c) = &config.cmd {
        runtime.insert("Cmd".into(), serde_json::json!(c));
    }
    runtime.insert("Env".into(), serde_json::json!(config.env));
    if let Some(w) = &config.working_dir {
        runtime.insert("WorkingDir".into(), serde_json::json!(w));
    }
    if let Some(u) = &config.user {
        runtime.insert("User".into(), serde_json::json!(u));
    }
    let blob = serde_json::json!({
        "architecture": platform.architecture(),
        "os": platform.os(),
        "config": runtime,
        "rootfs": {
            "type": "layers",
            "diff_ids": layers.iter().map(|(d, _, _)| d.as_str()).collect::<Vec<_>>(),
        },
    });
    let blob = serde_json::to_vec(&blob).unwrap_or_default();
    let manifest = serde_json::json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {
            "mediaType": "application/vnd.oci.image.config.v1+json",
            "digest": Digest::of(&blob).as_str(),
            "size": blob.len(),
        },
        "layers": layers.iter().map(|(d, n, _)| serde_json::json!({
            "mediaType": "application/vnd.oci.image.layer.v1.tar",
            "digest": d.as_str(),
            "size": n,
        })).collect::<Vec<_>>(),
    });
    serde_json::to_vec(&manifest).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn invalid_reference_fails_before_any_network() {
        let dir = tempfile::tempdir().unwrap();
        let store = ImageStore::open(dir.path().join("images")).unwrap();
        let err = store
            .pull("Not A Ref", PullOptions::default())
            .await
            .unwrap_err();
        assert!(matches!(err, ImageError::InvalidReference(_)), "{err:?}");
        assert!(store.list().is_empty());
        assert!(store.get("alpine").is_none());
        assert!(store.get("sha256:zz").is_none());
        assert!(matches!(
            store.delete("alpine"),
            Err(ImageError::NotFound { .. })
        ));
    }

    #[tokio::test]
    async fn connection_refused_is_a_registry_error() {
        let dir = tempfile::tempdir().unwrap();
        let store = ImageStore::open(dir.path().join("images")).unwrap();
        // Port 9 (discard) on loopback is closed on CI machines.
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        drop(listener);
        let err = store
            .pull(&format!("127.0.0.1:{port}/x/y:z"), PullOptions::default())
            .await
            .unwrap_err();
        assert!(matches!(err, ImageError::Registry(_)), "{err:?}");
        assert!(err.to_string().contains("cannot connect"), "{err}");
    }

    #[test]
    fn error_chain_includes_causes() {
        let e = ImageError::Unpack {
            layer: Digest::of(b"l"),
            source: crate::unpack::UnpackError::Escape("../x".into()),
        };
        let text = error_chain(&e);
        assert!(text.starts_with("apply layer sha256:"), "{text}");
        assert!(
            text.ends_with("entry \"../x\" escapes the root filesystem"),
            "{text}"
        );
    }
}
