//! The on-disk cache under the images root. This file is the only one that spells its names:
//!
//! ```text
//! <root>/tags.json                   {"schema_version":1,"tags":{"<normalized ref>":"sha256:…"}}
//! <root>/<digest hex>/metadata.json  the Image record (+ schema_version); written last
//! <root>/<digest hex>/rootfs.ext4    the root disk (ready images only)
//! <root>/.work/<digest hex>/         scratch space of a running pull (blobs/, rootfs/)
//! <root>/.work/trash-*               directories being deleted
//! ```
//!
//! Invariants: `metadata.json` is the commit point of an image directory — a directory without
//! one is a leftover and removed at open; a `ready` record is only written once `rootfs.ext4`
//! is complete and in place. `tags.json` and `metadata.json` are replaced atomically (tmp file,
//! fsync, rename, fsync of the directory). `.work` is wiped at open.

use std::collections::{BTreeMap, HashMap};
use std::fs;
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use serde::{Deserialize, Serialize};

use crate::error::ImageError;
use crate::image::{Image, ImageStatus};
use crate::reference::Digest;

/// Version of `tags.json` and `metadata.json` written by this build.
pub const SCHEMA_VERSION: u32 = 1;
const TAGS: &str = "tags.json";
const METADATA: &str = "metadata.json";
const ROOTFS: &str = "rootfs.ext4";
const WORK: &str = ".work";

/// Paths under the images root.
#[derive(Debug, Clone)]
pub(crate) struct Layout {
    root: PathBuf,
}

impl Layout {
    pub fn new(root: PathBuf) -> Layout {
        Layout { root }
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    pub fn tags(&self) -> PathBuf {
        self.root.join(TAGS)
    }

    pub fn image_dir(&self, digest: &Digest) -> PathBuf {
        self.root.join(digest.hex())
    }

    pub fn metadata(&self, digest: &Digest) -> PathBuf {
        self.image_dir(digest).join(METADATA)
    }

    pub fn rootfs(&self, digest: &Digest) -> PathBuf {
        self.image_dir(digest).join(ROOTFS)
    }

    pub fn work(&self) -> PathBuf {
        self.root.join(WORK)
    }

    /// Scratch directory of the pull of `digest`.
    pub fn job_dir(&self, digest: &Digest) -> PathBuf {
        self.work().join(digest.hex())
    }

    /// A fresh name to move a directory to before deleting it.
    pub fn trash(&self, digest: &Digest) -> PathBuf {
        static N: AtomicU64 = AtomicU64::new(0);
        let n = N.fetch_add(1, Ordering::Relaxed);
        self.work()
            .join(format!("trash-{}-{}-{n}", digest.hex(), std::process::id()))
    }
}

#[derive(Debug, Serialize, Deserialize)]
struct TagsFile {
    schema_version: u32,
    #[serde(default)]
    tags: BTreeMap<String, Digest>,
}

#[derive(Debug, Serialize, Deserialize)]
struct StoredImage {
    schema_version: u32,
    #[serde(flatten)]
    image: Image,
}

/// What `open` found on disk.
#[derive(Debug, Default)]
pub(crate) struct Loaded {
    pub tags: BTreeMap<String, Digest>,
    pub images: HashMap<Digest, Image>,
}

/// Loads the cache, repairing what a crash can leave behind: removes `.work`, image
/// directories without metadata, and tags that point at no ready image; a `ready` record
/// without its disk, or a record left in a non-terminal status, becomes `failed`.
pub(crate) fn load(layout: &Layout) -> Result<Loaded, ImageError> {
    let root = layout.root();
    fs::create_dir_all(root).map_err(|e| ImageError::io("create", root, e))?;
    let work = layout.work();
    if work.exists() {
        fs::remove_dir_all(&work).map_err(|e| ImageError::io("remove", &work, e))?;
    }
    fs::create_dir_all(&work).map_err(|e| ImageError::io("create", &work, e))?;

    let mut loaded = Loaded::default();
    for entry in fs::read_dir(root).map_err(|e| ImageError::io("list", root, e))? {
        let entry = entry.map_err(|e| ImageError::io("list", root, e))?;
        let name = entry.file_name();
        let Some(digest) = name.to_str().and_then(|n| Digest::from_hex(n).ok()) else {
            continue;
        };
        let dir = entry.path();
        let meta_path = layout.metadata(&digest);
        let bytes = match fs::read(&meta_path) {
            Ok(b) => b,
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                tracing::info!(dir = %dir.display(), "removing unfinished image directory");
                fs::remove_dir_all(&dir).map_err(|e| ImageError::io("remove", &dir, e))?;
                continue;
            }
            Err(e) => return Err(ImageError::io("read", meta_path, e)),
        };
        let stored: StoredImage =
            serde_json::from_slice(&bytes).map_err(|e| ImageError::Corrupt {
                path: meta_path.clone(),
                reason: e.to_string(),
            })?;
        if stored.schema_version > SCHEMA_VERSION {
            return Err(ImageError::Corrupt {
                path: meta_path,
                reason: format!(
                    "schema_version {} is newer than this build understands ({SCHEMA_VERSION})",
                    stored.schema_version
                ),
            });
        }
        let mut image = stored.image;
        if image.digest != digest {
            return Err(ImageError::Corrupt {
                path: meta_path,
                reason: "digest does not match its directory".into(),
            });
        }
        let repair = match image.status {
            ImageStatus::Ready if !layout.rootfs(&digest).is_file() => Some("root disk missing"),
            ImageStatus::Ready | ImageStatus::Failed => None,
            _ => Some("pull interrupted"),
        };
        if let Some(reason) = repair {
            image.status = ImageStatus::Failed;
            image.error = Some(reason.to_owned());
            image.size_bytes = None;
            write_metadata(layout, &image)?;
        }
        loaded.images.insert(digest, image);
    }

    match fs::read(layout.tags()) {
        Ok(bytes) => {
            let file: TagsFile =
                serde_json::from_slice(&bytes).map_err(|e| ImageError::Corrupt {
                    path: layout.tags(),
                    reason: e.to_string(),
                })?;
            if file.schema_version > SCHEMA_VERSION {
                return Err(ImageError::Corrupt {
                    path: layout.tags(),
                    reason: format!("schema_version {} is too new", file.schema_version),
                });
            }
            let before = file.tags.len();
            loaded.tags = file
                .tags
                .into_iter()
                .filter(|(_, d)| {
                    loaded
                        .images
                        .get(d)
                        .is_some_and(|i| i.status == ImageStatus::Ready)
                })
                .collect();
            if loaded.tags.len() != before {
                write_tags(layout, &loaded.tags)?;
            }
        }
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        Err(e) => return Err(ImageError::io("read", layout.tags(), e)),
    }
    Ok(loaded)
}

/// Atomically replaces `tags.json`.
pub(crate) fn write_tags(
    layout: &Layout,
    tags: &BTreeMap<String, Digest>,
) -> Result<(), ImageError> {
    let file = TagsFile {
        schema_version: SCHEMA_VERSION,
        tags: tags.clone(),
    };
    write_json(&layout.tags(), &file)
}

/// Atomically replaces the image's `metadata.json` (creating its directory).
pub(crate) fn write_metadata(layout: &Layout, image: &Image) -> Result<(), ImageError> {
    let dir = layout.image_dir(&image.digest);
    fs::create_dir_all(&dir).map_err(|e| ImageError::io("create", &dir, e))?;
    let stored = StoredImage {
        schema_version: SCHEMA_VERSION,
        image: image.clone(),
    };
    write_json(&layout.metadata(&image.digest), &stored)
}

fn write_json<T: Serialize>(path: &Path, value: &T) -> Result<(), ImageError> {
    let mut bytes = serde_json::to_vec_pretty(value).map_err(|e| ImageError::Corrupt {
        path: path.to_path_buf(),
        reason: e.to_string(),
    })?;
    bytes.push(b'\n');
    write_atomic(path, &bytes).map_err(|e| ImageError::io("write", path, e))
}

/// tmp file in the same directory + fsync + rename + directory fsync: readers see the old or
/// the new content, never a mix. Temp names are unique per process and call.
pub(crate) fn write_atomic(path: &Path, bytes: &[u8]) -> io::Result<()> {
    static N: AtomicU64 = AtomicU64::new(0);
    let dir = path.parent().ok_or(io::ErrorKind::InvalidInput)?;
    let name = path
        .file_name()
        .ok_or(io::ErrorKind::InvalidInput)?
        .to_string_lossy()
        .into_owned();
    let n = N.fetch_add(1, Ordering::Relaxed);
    let tmp = dir.join(format!(".{name}.tmp-{}-{n}", std::process::id()));
    let result = (|| {
        let mut f = fs::File::create(&tmp)?;
        f.write_all(bytes)?;
        f.sync_all()?;
        drop(f);
        fs::rename(&tmp, path)?;
        fs::File::open(dir)?.sync_all()
    })();
    if result.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    result
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::image::ImageConfig;
    use crate::platform::Platform;

    fn image(digest: &Digest, status: ImageStatus) -> Image {
        Image {
            name: "docker.io/library/x:latest".into(),
            digest: digest.clone(),
            platform: Platform::host(),
            status,
            error: None,
            size_bytes: None,
            config: ImageConfig::default(),
            created_at: time::OffsetDateTime::UNIX_EPOCH,
        }
    }

    #[test]
    fn load_repairs_what_a_crash_leaves() {
        let dir = tempfile::tempdir().unwrap();
        let layout = Layout::new(dir.path().join("images"));
        let ready = Digest::of(b"ready");
        let no_disk = Digest::of(b"no disk");
        let partial = Digest::of(b"partial");
        let pulling = Digest::of(b"pulling");
        write_metadata(&layout, &image(&ready, ImageStatus::Ready)).unwrap();
        fs::write(layout.rootfs(&ready), b"disk").unwrap();
        write_metadata(&layout, &image(&no_disk, ImageStatus::Ready)).unwrap();
        write_metadata(&layout, &image(&pulling, ImageStatus::Pulling)).unwrap();
        fs::create_dir_all(layout.image_dir(&partial)).unwrap();
        fs::write(layout.rootfs(&partial), b"half").unwrap();
        fs::create_dir_all(layout.job_dir(&partial)).unwrap();
        let mut tags = BTreeMap::new();
        tags.insert("a:latest".to_owned(), ready.clone());
        tags.insert("b:latest".to_owned(), no_disk.clone());
        write_tags(&layout, &tags).unwrap();

        let loaded = load(&layout).unwrap();
        assert_eq!(loaded.images[&ready].status, ImageStatus::Ready);
        assert_eq!(loaded.images[&no_disk].status, ImageStatus::Failed);
        assert_eq!(
            loaded.images[&pulling].error.as_deref(),
            Some("pull interrupted")
        );
        assert!(!loaded.images.contains_key(&partial));
        assert!(!layout.image_dir(&partial).exists());
        assert!(!layout.job_dir(&partial).exists());
        assert_eq!(loaded.tags.len(), 1);
        // The repaired state was persisted.
        let again = load(&layout).unwrap();
        assert_eq!(again.tags.len(), 1);
        assert_eq!(again.images[&no_disk].status, ImageStatus::Failed);
    }

    #[test]
    fn newer_schema_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let layout = Layout::new(dir.path().to_path_buf());
        fs::write(layout.tags(), br#"{"schema_version":99,"tags":{}}"#).unwrap();
        assert!(matches!(load(&layout), Err(ImageError::Corrupt { .. })));
    }

    #[test]
    fn atomic_write_leaves_no_tmp() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("f.json");
        write_atomic(&p, b"one").unwrap();
        write_atomic(&p, b"two").unwrap();
        assert_eq!(fs::read(&p).unwrap(), b"two");
        assert_eq!(fs::read_dir(dir.path()).unwrap().count(), 1);
    }
}
