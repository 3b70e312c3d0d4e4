//! Applying OCI layers to a root filesystem directory.
//!
//! Invariants:
//! - nothing is ever written outside the rootfs: entry paths that are absolute or contain `..`
//!   are refused, and no symlink inside the rootfs is ever followed while writing — parents
//!   are walked component by component with `lstat`, and an entry whose parent path goes
//!   through a symlink is refused (docker follows in-root symlinks inside a chroot; we have no
//!   chroot, so we refuse instead);
//! - files are created with `O_CREAT|O_EXCL` after removing what was there, so a leaf that is
//!   a symlink is replaced, never written through;
//! - hardlinks may only point at an existing non-directory inside the rootfs;
//! - whiteouts follow the OCI image spec: `.wh.<name>` deletes `<name>` from lower layers,
//!   `.wh..wh..opq` empties its directory of everything lower layers put there;
//! - each layer's uncompressed stream is hashed and checked against the config's diff id.
//!
//! Ownership: as root, files get the tar's uid/gid (`lchown`) and exact modes. Otherwise the
//! wanted uid/gid/mode of every path is recorded and the disk builder fixes the inodes up after
//! `mkfs.ext4 -d` (which copies the unpacker's uid); on the host such files stay readable by
//! their owner so `mkfs` can copy them.
//!
//! Not reproduced: device nodes and fifos (skipped with a warning: the guest mounts devtmpfs),
//! extended attributes, mtimes of directories and symlinks.

use std::collections::{BTreeMap, HashSet};
use std::fs::{self, File};
use std::io::{self, BufReader, Read, Seek, SeekFrom};
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Component, Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use sha2::Digest as _;

use crate::reference::Digest;

const WHITEOUT_PREFIX: &str = ".wh.";
const WHITEOUT_OPAQUE: &str = ".wh..wh..opq";
const WHITEOUT_META_PREFIX: &str = ".wh..wh.";

/// Why a layer could not be applied.
#[derive(Debug, Clone, thiserror::Error)]
pub enum UnpackError {
    /// The entry path is absolute or contains `..`.
    #[error("entry {0:?} escapes the root filesystem")]
    Escape(String),
    /// A parent of the entry is a symlink; writing would follow it.
    #[error("entry {entry:?} goes through symlink {symlink:?}")]
    ThroughSymlink {
        /// The entry path.
        entry: String,
        /// The parent that is a symlink.
        symlink: String,
    },
    /// A parent of the entry exists and is not a directory.
    #[error("entry {entry:?}: {parent:?} is not a directory")]
    NotADirectory {
        /// The entry path.
        entry: String,
        /// The parent that is a file.
        parent: String,
    },
    /// A hardlink whose target is missing, a directory, or outside the rootfs.
    #[error("hardlink {entry:?} has an invalid target {target:?}")]
    BadHardlink {
        /// The entry path.
        entry: String,
        /// The link target as written in the tar.
        target: String,
    },
    /// The layer is compressed with something other than gzip or zstd.
    #[error("unsupported layer compression {0}")]
    Compression(&'static str),
    /// The uncompressed layer does not hash to the diff id in the image config.
    #[error("layer content does not match diff id: expected {expected}, got {actual}")]
    DiffId {
        /// From the config.
        expected: String,
        /// What the stream hashed to.
        actual: String,
    },
    /// The files of the image add up to more than the unpack budget (a decompression bomb,
    /// a huge sparse file).
    #[error("the image's files add up to more than {} GiB, the most Hypedeck unpacks", .0 >> 30)]
    TooLarge(u64),
    /// The archive could not be read (corrupt tar, corrupt compression).
    #[error("read layer archive")]
    Read(#[source] Arc<io::Error>),
    /// A filesystem operation in the rootfs failed.
    #[error("{op} {path:?}")]
    Io {
        /// The operation.
        op: &'static str,
        /// The path, relative to the rootfs.
        path: String,
        /// Cause.
        #[source]
        source: Arc<io::Error>,
    },
}

fn io_err<'a>(op: &'static str, path: &'a Path) -> impl FnOnce(io::Error) -> UnpackError + 'a {
    move |e| UnpackError::Io {
        op,
        path: path.display().to_string(),
        source: Arc::new(e),
    }
}

fn read_err(e: io::Error) -> UnpackError {
    UnpackError::Read(Arc::new(e))
}

fn show(p: &Path) -> String {
    p.display().to_string()
}

/// How ownership and modes reach the disk.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Ownership {
    /// Running as root: `lchown` and exact modes on the host tree.
    Native,
    /// Not root: record what each path should be; the disk builder applies it.
    Recorded,
}

/// What a path should look like on the disk (recorded in [`Ownership::Recorded`] mode).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Wanted {
    pub uid: u64,
    pub gid: u64,
    /// Permission bits including setuid/setgid/sticky (`0o7777`).
    pub mode: u32,
}

const DEFAULT_DIR: Wanted = Wanted {
    uid: 0,
    gid: 0,
    mode: 0o755,
};

/// A root filesystem being assembled from layers.
#[derive(Debug)]
pub(crate) struct Rootfs {
    root: PathBuf,
    ownership: Ownership,
    /// Wanted metadata by relative path (`Recorded` mode only). The empty path is the root.
    wanted: BTreeMap<PathBuf, Wanted>,
    /// Device nodes, fifos and sockets skipped.
    pub skipped_special: usize,
    /// Bytes of file content still allowed (all layers together).
    budget: u64,
    /// The budget this rootfs started with.
    limit: u64,
}

/// The most file content one image may unpack to (all layers), so a decompression bomb or a
/// huge sparse file ends with an error instead of a full disk.
pub const MAX_UNPACKED_BYTES: u64 = 32 << 30;

/// Outcome of applying one layer.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub(crate) struct LayerStats {
    /// Tar entries seen.
    pub entries: usize,
    /// Whiteouts applied.
    pub whiteouts: usize,
}

impl Rootfs {
    /// Creates the (empty) rootfs directory; picks `Native` ownership when the directory
    /// comes out owned by uid 0 (that is, the effective uid is root).
    pub fn create(root: &Path) -> Result<Rootfs, UnpackError> {
        fs::create_dir_all(root).map_err(io_err("create", Path::new("/")))?;
        let meta = fs::symlink_metadata(root).map_err(io_err("stat", Path::new("/")))?;
        let ownership = if meta.uid() == 0 {
            Ownership::Native
        } else {
            Ownership::Recorded
        };
        Rootfs::with_ownership(root, ownership)
    }

    /// Like [`Rootfs::create`] with an explicit ownership mode (tests use `Recorded` as root).
    pub fn with_ownership(root: &Path, ownership: Ownership) -> Result<Rootfs, UnpackError> {
        fs::create_dir_all(root).map_err(io_err("create", Path::new("/")))?;
        fs::set_permissions(root, fs::Permissions::from_mode(0o755))
            .map_err(io_err("chmod", Path::new("/")))?;
        let mut wanted = BTreeMap::new();
        wanted.insert(PathBuf::new(), DEFAULT_DIR);
        Ok(Rootfs {
            root: root.to_path_buf(),
            ownership,
            wanted,
            skipped_special: 0,
            budget: MAX_UNPACKED_BYTES,
            limit: MAX_UNPACKED_BYTES,
        })
    }

    /// Sets how many bytes of file content the image may unpack to (tests use small ones).
    #[cfg(test)]
    pub fn with_budget(mut self, bytes: u64) -> Rootfs {
        self.budget = bytes;
        self.limit = bytes;
        self
    }

    pub fn path(&self) -> &Path {
        &self.root
    }

    pub fn ownership(&self) -> Ownership {
        self.ownership
    }

    /// Wanted metadata of every recorded path (empty path = root), `Recorded` mode only.
    pub fn wanted(&self) -> &BTreeMap<PathBuf, Wanted> {
        &self.wanted
    }

    /// Applies the layer blob at `blob` (gzip, zstd or plain tar, sniffed from its magic),
    /// checking the uncompressed stream against `diff_id` when given.
    pub fn apply_blob(
        &mut self,
        blob: &Path,
        diff_id: Option<&Digest>,
    ) -> Result<LayerStats, UnpackError> {
        let file = File::open(blob).map_err(read_err)?;
        let reader = decompress(file)?;
        self.apply_tar(reader, diff_id)
    }

    /// Applies one uncompressed tar stream.
    pub fn apply_tar<R: Read>(
        &mut self,
        reader: R,
        diff_id: Option<&Digest>,
    ) -> Result<LayerStats, UnpackError> {
        let mut archive = tar::Archive::new(HashingReader::new(reader));
        let mut layer = Layer {
            written: HashSet::new(),
            stats: LayerStats::default(),
        };
        for entry in archive.entries().map_err(read_err)? {
            let mut entry = entry.map_err(read_err)?;
            layer.stats.entries += 1;
            self.apply_entry(&mut entry, &mut layer)?;
        }
        let mut rest = archive.into_inner();
        io::copy(&mut rest, &mut io::sink()).map_err(read_err)?;
        let actual = rest.finish();
        if let Some(expected) = diff_id
            && &actual != expected
        {
            return Err(UnpackError::DiffId {
                expected: expected.to_string(),
                actual: actual.to_string(),
            });
        }
        Ok(layer.stats)
    }

    fn apply_entry<R: Read>(
        &mut self,
        entry: &mut tar::Entry<'_, R>,
        layer: &mut Layer,
    ) -> Result<(), UnpackError> {
        let raw = entry.path().map_err(read_err)?.into_owned();
        let Some(rel) = clean(&raw)? else {
            // The root itself (`./`): take its mode and owner.
            if entry.header().entry_type().is_dir() {
                let w = wanted_of(entry.header())?;
                self.set_meta_dir(Path::new(""), w)?;
            }
            return Ok(());
        };
        let name = rel
            .file_name()
            .and_then(|n| n.to_str())
            .unwrap_or_default()
            .to_owned();
        let parent = rel.parent().unwrap_or(Path::new("")).to_path_buf();

        if name == WHITEOUT_OPAQUE {
            layer.stats.whiteouts += 1;
            return self.opaque(&parent, &rel, layer);
        }
        if name.starts_with(WHITEOUT_META_PREFIX) {
            // Other aufs metadata (`.wh..wh.plnk`, `.wh..wh.aufs`): not content.
            return Ok(());
        }
        if let Some(hidden) = name.strip_prefix(WHITEOUT_PREFIX) {
            layer.stats.whiteouts += 1;
            if hidden.is_empty() || hidden == "." || hidden == ".." || hidden.contains('/') {
                return Err(UnpackError::Escape(show(&raw)));
            }
            let target = parent.join(hidden);
            if layer.written.contains(&target) {
                // A whiteout only hides lower layers (image-spec layer.md).
                return Ok(());
            }
            if self.check_existing_parents(&target)? {
                self.remove(&target)?;
            }
            return Ok(());
        }

        let kind = entry.header().entry_type();
        if !(kind.is_file()
            || kind.is_contiguous()
            || kind.is_dir()
            || kind.is_symlink()
            || kind.is_hard_link())
        {
            if kind.is_character_special() || kind.is_block_special() || kind.is_fifo() {
                tracing::warn!(path = %rel.display(), "skipping device node or fifo in layer");
                self.skipped_special += 1;
            }
            // Global pax headers and unknown types carry no content for us.
            return Ok(());
        }

        self.make_parents(&rel, layer)?;
        layer.written.insert(rel.clone());
        let host = self.root.join(&rel);
        let existing = match fs::symlink_metadata(&host) {
            Ok(m) => Some(m),
            Err(e) if e.kind() == io::ErrorKind::NotFound => None,
            Err(e) => return Err(io_err("stat", &rel)(e)),
        };
        if let Some(m) = existing
            && !(kind.is_dir() && m.is_dir())
        {
            self.remove(&rel)?;
        }

        let wanted = wanted_of(entry.header())?;
        if kind.is_dir() {
            match fs::create_dir(&host) {
                Ok(()) => {}
                Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {}
                Err(e) => return Err(io_err("mkdir", &rel)(e)),
            }
            self.set_meta_dir(&rel, wanted)?;
        } else if kind.is_symlink() {
            let target = entry
                .link_name()
                .map_err(read_err)?
                .ok_or_else(|| UnpackError::BadHardlink {
                    entry: show(&rel),
                    target: String::new(),
                })?
                .into_owned();
            std::os::unix::fs::symlink(&target, &host).map_err(io_err("symlink", &rel))?;
            match self.ownership {
                Ownership::Native => {
                    std::os::unix::fs::lchown(&host, Some(id(wanted.uid)), Some(id(wanted.gid)))
                        .map_err(io_err("chown", &rel))?;
                }
                Ownership::Recorded => {
                    self.wanted.insert(
                        rel.clone(),
                        Wanted {
                            mode: 0o777,
                            ..wanted
                        },
                    );
                }
            }
        } else if kind.is_hard_link() {
            self.hardlink(entry, &rel)?;
        } else {
            self.write_file(entry, &rel, wanted)?;
        }
        Ok(())
    }

    fn write_file<R: Read>(
        &mut self,
        entry: &mut tar::Entry<'_, R>,
        rel: &Path,
        wanted: Wanted,
    ) -> Result<(), UnpackError> {
        let host = self.root.join(rel);
        let mut file = fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&host)
            .map_err(io_err("create", rel))?;
        if entry.size() > self.budget {
            return Err(UnpackError::TooLarge(self.limit));
        }
        let written = copy_sparse(&mut entry.take(self.budget + 1), &mut file).map_err(read_err)?;
        if written > self.budget {
            return Err(UnpackError::TooLarge(self.limit));
        }
        self.budget -= written;
        match self.ownership {
            Ownership::Native => {
                // chown first: it clears setuid/setgid, which the chmod below restores.
                std::os::unix::fs::fchown(&file, Some(id(wanted.uid)), Some(id(wanted.gid)))
                    .map_err(io_err("chown", rel))?;
                file.set_permissions(fs::Permissions::from_mode(wanted.mode))
                    .map_err(io_err("chmod", rel))?;
            }
            Ownership::Recorded => {
                file.set_permissions(fs::Permissions::from_mode(wanted.mode | 0o600))
                    .map_err(io_err("chmod", rel))?;
                self.wanted.insert(rel.to_path_buf(), wanted);
            }
        }
        if let Ok(secs) = entry.header().mtime() {
            let t = SystemTime::UNIX_EPOCH + Duration::from_secs(secs);
            // Best effort: a missing mtime does not make the image wrong.
            let _ = file.set_modified(t);
        }
        Ok(())
    }

    fn hardlink<R: Read>(
        &mut self,
        entry: &mut tar::Entry<'_, R>,
        rel: &Path,
    ) -> Result<(), UnpackError> {
        let raw = entry
            .link_name()
            .map_err(read_err)?
            .map(|c| c.into_owned())
            .unwrap_or_default();
        let bad = || UnpackError::BadHardlink {
            entry: show(rel),
            target: show(&raw),
        };
        let target = clean(&raw).map_err(|_| bad())?.ok_or_else(bad)?;
        if !self.check_existing_parents(&target).map_err(|_| bad())? {
            return Err(bad());
        }
        let host_target = self.root.join(&target);
        match fs::symlink_metadata(&host_target) {
            Ok(m) if !m.is_dir() => {}
            _ => return Err(bad()),
        }
        // linkat(2) without AT_SYMLINK_FOLLOW: a symlink target is linked itself, not followed.
        fs::hard_link(&host_target, self.root.join(rel)).map_err(io_err("link", rel))?;
        if let Some(w) = self.wanted.get(&target).copied() {
            self.wanted.insert(rel.to_path_buf(), w);
        }
        Ok(())
    }

    fn set_meta_dir(&mut self, rel: &Path, wanted: Wanted) -> Result<(), UnpackError> {
        let host = self.root.join(rel);
        match self.ownership {
            Ownership::Native => {
                std::os::unix::fs::lchown(&host, Some(id(wanted.uid)), Some(id(wanted.gid)))
                    .map_err(io_err("chown", rel))?;
                fs::set_permissions(&host, fs::Permissions::from_mode(wanted.mode))
                    .map_err(io_err("chmod", rel))?;
            }
            Ownership::Recorded => {
                fs::set_permissions(&host, fs::Permissions::from_mode(wanted.mode | 0o700))
                    .map_err(io_err("chmod", rel))?;
                self.wanted.insert(rel.to_path_buf(), wanted);
            }
        }
        Ok(())
    }

    /// Creates the missing parents of `rel`, refusing to go through a symlink or a file.
    /// Every parent walked counts as written by this layer (an opaque whiteout keeps it).
    fn make_parents(&mut self, rel: &Path, layer: &mut Layer) -> Result<(), UnpackError> {
        let Some(parent) = rel.parent() else {
            return Ok(());
        };
        let mut cur = PathBuf::new();
        for c in parent.components() {
            cur.push(c);
            let host = self.root.join(&cur);
            match fs::symlink_metadata(&host) {
                Ok(m) if m.is_dir() => {}
                Ok(m) if m.file_type().is_symlink() => {
                    return Err(UnpackError::ThroughSymlink {
                        entry: show(rel),
                        symlink: show(&cur),
                    });
                }
                Ok(_) => {
                    return Err(UnpackError::NotADirectory {
                        entry: show(rel),
                        parent: show(&cur),
                    });
                }
                Err(e) if e.kind() == io::ErrorKind::NotFound => {
                    fs::create_dir(&host).map_err(io_err("mkdir", &cur))?;
                    self.set_meta_dir(&cur.clone(), DEFAULT_DIR)?;
                }
                Err(e) => return Err(io_err("stat", &cur)(e)),
            }
            layer.written.insert(cur.clone());
        }
        Ok(())
    }

    /// Whether every parent of `rel` exists as a real directory. A symlink among them is
    /// refused; a missing one means there is nothing at `rel`.
    fn check_existing_parents(&self, rel: &Path) -> Result<bool, UnpackError> {
        let Some(parent) = rel.parent() else {
            return Ok(true);
        };
        let mut cur = PathBuf::new();
        for c in parent.components() {
            cur.push(c);
            match fs::symlink_metadata(self.root.join(&cur)) {
                Ok(m) if m.is_dir() => {}
                Ok(m) if m.file_type().is_symlink() => {
                    return Err(UnpackError::ThroughSymlink {
                        entry: show(rel),
                        symlink: show(&cur),
                    });
                }
                Ok(_) => return Ok(false),
                Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(false),
                Err(e) => return Err(io_err("stat", &cur)(e)),
            }
        }
        Ok(true)
    }

    /// Removes whatever is at `rel` (never following a symlink) and forgets its metadata.
    fn remove(&mut self, rel: &Path) -> Result<(), UnpackError> {
        let host = self.root.join(rel);
        let result = match fs::symlink_metadata(&host) {
            Ok(m) if m.is_dir() => fs::remove_dir_all(&host),
            Ok(_) => fs::remove_file(&host),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(e),
        };
        result.map_err(io_err("remove", rel))?;
        let doomed: Vec<PathBuf> = self
            .wanted
            .range(rel.to_path_buf()..)
            .take_while(|(p, _)| p.starts_with(rel))
            .map(|(p, _)| p.clone())
            .collect();
        for p in doomed {
            self.wanted.remove(&p);
        }
        Ok(())
    }

    /// `.wh..wh..opq` in `dir`: remove everything in `dir` that this layer did not write.
    fn opaque(&mut self, dir: &Path, raw: &Path, layer: &Layer) -> Result<(), UnpackError> {
        if !self.check_existing_parents(raw)? {
            return Ok(());
        }
        self.clear_lower(dir, layer)
    }

    fn clear_lower(&mut self, dir: &Path, layer: &Layer) -> Result<(), UnpackError> {
        let host = self.root.join(dir);
        let children = match fs::read_dir(&host) {
            Ok(rd) => rd,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
            Err(e) => return Err(io_err("list", dir)(e)),
        };
        let mut names = Vec::new();
        for child in children {
            names.push(child.map_err(io_err("list", dir))?.file_name());
        }
        for name in names {
            let rel = dir.join(&name);
            if layer.written.contains(&rel) {
                let m = fs::symlink_metadata(self.root.join(&rel)).map_err(io_err("stat", &rel))?;
                if m.is_dir() {
                    self.clear_lower(&rel, layer)?;
                }
            } else {
                self.remove(&rel)?;
            }
        }
        Ok(())
    }
}

/// Per-layer state.
struct Layer {
    /// Paths written (or walked through as parents) by this layer.
    written: HashSet<PathBuf>,
    stats: LayerStats,
}

fn id(v: u64) -> u32 {
    u32::try_from(v).unwrap_or(u32::MAX)
}

fn wanted_of(h: &tar::Header) -> Result<Wanted, UnpackError> {
    Ok(Wanted {
        uid: h.uid().map_err(read_err)?,
        gid: h.gid().map_err(read_err)?,
        mode: h.mode().map_err(read_err)? & 0o7777,
    })
}

/// A tar path made relative and checked: `None` for the root itself; an error for absolute
/// paths and any `..` component.
pub(crate) fn clean(raw: &Path) -> Result<Option<PathBuf>, UnpackError> {
    let mut out = PathBuf::new();
    for c in raw.components() {
        match c {
            Component::Normal(n) => out.push(n),
            Component::CurDir => {}
            Component::RootDir | Component::Prefix(_) | Component::ParentDir => {
                return Err(UnpackError::Escape(show(raw)));
            }
        }
    }
    Ok((!out.as_os_str().is_empty()).then_some(out))
}

/// Copies `from` into a fresh `to`, seeking over all-zero blocks instead of writing them, so
/// zero-filled and sparse files take no disk space. Returns the bytes copied.
fn copy_sparse(from: &mut impl Read, to: &mut File) -> io::Result<u64> {
    const BLOCK: usize = 64 * 1024;
    let mut buf = vec![0u8; BLOCK];
    let mut total: u64 = 0;
    loop {
        // Fill a whole block when the reader gives less (tar entries come in 512-byte pieces).
        let mut n = 0;
        while n < BLOCK {
            match from.read(&mut buf[n..]) {
                Ok(0) => break,
                Ok(k) => n += k,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        if n == 0 {
            break;
        }
        if buf[..n].iter().all(|b| *b == 0) {
            to.seek(SeekFrom::Current(n as i64))?;
        } else {
            io::Write::write_all(to, &buf[..n])?;
        }
        total += n as u64;
        if n < BLOCK {
            break;
        }
    }
    // A trailing hole needs the length set explicitly.
    to.set_len(total)?;
    Ok(total)
}

/// Wraps a blob in the decompressor its magic bytes call for.
pub(crate) fn decompress(mut file: File) -> Result<Box<dyn Read + Send>, UnpackError> {
    let mut magic = [0u8; 6];
    let mut n = 0;
    while n < magic.len() {
        let read = file.read(&mut magic[n..]).map_err(read_err)?;
        if read == 0 {
            break;
        }
        n += read;
    }
    file.seek(SeekFrom::Start(0)).map_err(read_err)?;
    let magic = &magic[..n];
    let reader = BufReader::new(file);
    if magic.starts_with(&[0x1f, 0x8b]) {
        Ok(Box::new(flate2::read::MultiGzDecoder::new(reader)))
    } else if magic.starts_with(&[0x28, 0xb5, 0x2f, 0xfd]) {
        let decoder = ruzstd::decoding::StreamingDecoder::new(reader)
            .map_err(|e| read_err(io::Error::new(io::ErrorKind::InvalidData, e.to_string())))?;
        Ok(Box::new(decoder))
    } else if magic.starts_with(b"BZh") {
        Err(UnpackError::Compression("bzip2"))
    } else if magic.starts_with(&[0xfd, b'7', b'z', b'X', b'Z', 0]) {
        Err(UnpackError::Compression("xz"))
    } else {
        Ok(Box::new(reader))
    }
}

/// A reader that hashes what passes through it.
pub(crate) struct HashingReader<R> {
    inner: R,
    hasher: sha2::Sha256,
}

impl<R: Read> HashingReader<R> {
    pub fn new(inner: R) -> Self {
        HashingReader {
            inner,
            hasher: sha2::Sha256::new(),
        }
    }

    /// The digest of everything read so far.
    pub fn finish(self) -> Digest {
        Digest::from_sha256(self.hasher.finalize().as_slice())
    }
}

impl<R: Read> Read for HashingReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.hasher.update(&buf[..n]);
        Ok(n)
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// Builds tar archives for tests, allowing paths `tar::Builder` would refuse.
    pub(crate) struct TarBuilder(Vec<u8>);

    impl TarBuilder {
        pub fn new() -> Self {
            TarBuilder(Vec::new())
        }

        fn header(path: &str, kind: tar::EntryType, mode: u32, size: u64) -> tar::Header {
            let mut h = tar::Header::new_gnu();
            // Write the name bytes directly: set_path refuses `..` and absolute paths.
            let name = path.as_bytes();
            h.as_old_mut().name[..name.len()].copy_from_slice(name);
            h.set_entry_type(kind);
            h.set_mode(mode);
            h.set_size(size);
            h.set_uid(0);
            h.set_gid(0);
            h.set_mtime(1_700_000_000);
            h
        }

        fn push(&mut self, mut h: tar::Header, data: &[u8]) {
            h.set_cksum();
            self.0.extend_from_slice(h.as_bytes());
            self.0.extend_from_slice(data);
            let pad = (512 - data.len() % 512) % 512;
            self.0.extend(std::iter::repeat_n(0u8, pad));
        }

        pub fn file(mut self, path: &str, mode: u32, data: &[u8]) -> Self {
            let h = Self::header(path, tar::EntryType::Regular, mode, data.len() as u64);
            self.push(h, data);
            self
        }

        pub fn owned_file(mut self, path: &str, uid: u64, gid: u64, mode: u32) -> Self {
            let mut h = Self::header(path, tar::EntryType::Regular, mode, 1);
            h.set_uid(uid);
            h.set_gid(gid);
            self.push(h, b"x");
            self
        }

        pub fn dir(mut self, path: &str, mode: u32) -> Self {
            let h = Self::header(path, tar::EntryType::Directory, mode, 0);
            self.push(h, &[]);
            self
        }

        pub fn symlink(mut self, path: &str, target: &str) -> Self {
            let mut h = Self::header(path, tar::EntryType::Symlink, 0o777, 0);
            h.as_old_mut().linkname[..target.len()].copy_from_slice(target.as_bytes());
            self.push(h, &[]);
            self
        }

        pub fn hardlink(mut self, path: &str, target: &str) -> Self {
            let mut h = Self::header(path, tar::EntryType::Link, 0o644, 0);
            h.as_old_mut().linkname[..target.len()].copy_from_slice(target.as_bytes());
            self.push(h, &[]);
            self
        }

        pub fn fifo(mut self, path: &str) -> Self {
            let h = Self::header(path, tar::EntryType::Fifo, 0o644, 0);
            self.push(h, &[]);
            self
        }

        pub fn build(mut self) -> Vec<u8> {
            self.0.extend(std::iter::repeat_n(0u8, 1024));
            self.0
        }
    }

    /// One hostile layer entry: kind, path, link target.
    #[derive(Debug, Clone)]
    enum Hostile {
        File(String),
        Dir(String),
        Symlink(String, String),
        Hardlink(String, String),
        Fifo(String),
    }

    fn hostile_path() -> impl proptest::strategy::Strategy<Value = String> {
        use proptest::prelude::*;
        let part = prop_oneof![
            Just("a"),
            Just("b"),
            Just(".."),
            Just("."),
            Just("up"),
            Just("outside"),
            Just(".wh.a"),
            Just(".wh..wh..opq"),
        ];
        (any::<bool>(), proptest::collection::vec(part, 1..4))
            .prop_map(|(abs, parts)| format!("{}{}", if abs { "/" } else { "" }, parts.join("/")))
    }

    fn hostile_entry(outside: String) -> impl proptest::strategy::Strategy<Value = Hostile> {
        use proptest::prelude::*;
        let target = prop_oneof![
            Just("../outside".to_string()),
            Just("../../outside".to_string()),
            Just("/".to_string()),
            Just("a".to_string()),
            Just("up/a".to_string()),
            Just(outside),
        ];
        prop_oneof![
            hostile_path().prop_map(Hostile::File),
            hostile_path().prop_map(Hostile::Dir),
            (hostile_path(), target.clone()).prop_map(|(p, t)| Hostile::Symlink(p, t)),
            (
                hostile_path(),
                prop_oneof![hostile_path(), Just("/OUTSIDE/keep".to_string())]
            )
                .prop_map(|(p, t)| Hostile::Hardlink(p, t)),
            hostile_path().prop_map(Hostile::Fifo),
        ]
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(256))]

        /// Layers made of `..`, absolute paths, symlinks and hardlinks pointing out, whiteouts
        /// and FIFOs, in any order over several layers: each layer applies or is refused, and
        /// nothing is ever written outside the root (nor does anything panic).
        #[test]
        fn hostile_layers_never_write_outside_the_root(
            layers in proptest::collection::vec(
                proptest::collection::vec(hostile_entry("/OUTSIDE".into()), 1..8),
                1..4,
            )
        ) {
            let (d, mut fs) = rootfs();
            let outside = d.path().join("outside");
            fs::create_dir(&outside).unwrap();
            fs::write(outside.join("keep"), b"keep").unwrap();
            let outside_abs = outside.to_str().unwrap().to_string();
            for layer in &layers {
                let mut tar = TarBuilder::new();
                for entry in layer {
                    let fix = |t: &str| t.replace("/OUTSIDE", &outside_abs);
                    tar = match entry {
                        Hostile::File(p) => tar.file(p, 0o644, b"evil"),
                        Hostile::Dir(p) => tar.dir(p, 0o755),
                        Hostile::Symlink(p, t) => tar.symlink(p, &fix(t)),
                        Hostile::Hardlink(p, t) => tar.hardlink(p, &fix(t)),
                        Hostile::Fifo(p) => tar.fifo(p),
                    };
                }
                let _ = apply(&mut fs, &tar.build());
            }
            let mut left: Vec<String> = fs::read_dir(&outside)
                .unwrap()
                .map(|e| e.unwrap().file_name().into_string().unwrap())
                .collect();
            left.sort();
            proptest::prop_assert_eq!(left, vec!["keep".to_string()]);
            proptest::prop_assert_eq!(fs::read(outside.join("keep")).unwrap(), b"keep".to_vec());
            let mut beside: Vec<String> = fs::read_dir(d.path())
                .unwrap()
                .map(|e| e.unwrap().file_name().into_string().unwrap())
                .collect();
            beside.sort();
            proptest::prop_assert_eq!(beside, vec!["outside".to_string(), "rootfs".to_string()]);
        }
    }

    fn rootfs() -> (tempfile::TempDir, Rootfs) {
        let dir = tempfile::tempdir().unwrap();
        let fs = Rootfs::create(&dir.path().join("rootfs")).unwrap();
        (dir, fs)
    }

    fn apply(fs: &mut Rootfs, tar: &[u8]) -> Result<LayerStats, UnpackError> {
        fs.apply_tar(tar, None)
    }

    fn exists(fs: &Rootfs, rel: &str) -> bool {
        fs::symlink_metadata(fs.path().join(rel)).is_ok()
    }

    fn read(fs: &Rootfs, rel: &str) -> String {
        fs::read_to_string(fs.path().join(rel)).unwrap()
    }

    #[test]
    fn files_dirs_symlinks_hardlinks_and_modes() {
        let (_d, mut fs) = rootfs();
        let tar = TarBuilder::new()
            .dir("./", 0o755)
            .dir("./bin/", 0o755)
            .file("./bin/tool", 0o4755, b"#!/bin/sh\n")
            .file("etc/conf", 0o600, b"k=v")
            .symlink("bin/sh", "/bin/busybox")
            .symlink("bin/up", "../../../../etc")
            .hardlink("bin/tool2", "./bin/tool")
            .build();
        let stats = apply(&mut fs, &tar).unwrap();
        assert_eq!(stats.entries, 7);
        let m = fs::metadata(fs.path().join("bin/tool")).unwrap();
        assert_eq!(m.permissions().mode() & 0o7777, 0o4755, "setuid kept");
        assert_eq!(m.nlink(), 2);
        assert_eq!(read(&fs, "etc/conf"), "k=v");
        assert_eq!(
            fs::read_link(fs.path().join("bin/sh")).unwrap(),
            Path::new("/bin/busybox")
        );
        // A dangerous symlink target is stored as is; it is just never followed.
        assert_eq!(
            fs::read_link(fs.path().join("bin/up")).unwrap(),
            Path::new("../../../../etc")
        );
        // The implicitly created parent is a plain 0755 directory.
        let etc = fs::metadata(fs.path().join("etc")).unwrap();
        assert!(etc.is_dir());
        assert_eq!(etc.permissions().mode() & 0o777, 0o755);
    }

    #[test]
    fn whiteout_deletes_lower_file_and_dir() {
        let (_d, mut fs) = rootfs();
        let l1 = TarBuilder::new()
            .file("app/keep.txt", 0o644, b"keep")
            .file("app/gone.txt", 0o644, b"gone")
            .file("app/olddir/x", 0o644, b"x")
            .build();
        let l2 = TarBuilder::new()
            .dir("app/", 0o755)
            .file("app/.wh.gone.txt", 0o644, b"")
            .file("app/.wh.olddir", 0o644, b"")
            .file("app/.wh.never-existed", 0o644, b"")
            .file("nothere/.wh.x", 0o644, b"")
            .build();
        apply(&mut fs, &l1).unwrap();
        let stats = apply(&mut fs, &l2).unwrap();
        assert_eq!(stats.whiteouts, 4);
        assert!(exists(&fs, "app/keep.txt"));
        assert!(!exists(&fs, "app/gone.txt"));
        assert!(!exists(&fs, "app/olddir"));
        assert!(
            !exists(&fs, "app/.wh.gone.txt"),
            "whiteout markers are not content"
        );
        assert!(!exists(&fs, "nothere"));
    }

    #[test]
    fn whiteout_does_not_hide_same_layer_entry() {
        let (_d, mut fs) = rootfs();
        let l = TarBuilder::new()
            .file("a/x", 0o644, b"new")
            .file("a/.wh.x", 0o644, b"")
            .build();
        apply(&mut fs, &l).unwrap();
        assert_eq!(read(&fs, "a/x"), "new");
    }

    #[test]
    fn opaque_whiteout_empties_lower_content_only() {
        let (_d, mut fs) = rootfs();
        let l1 = TarBuilder::new()
            .file("d/old1", 0o644, b"1")
            .file("d/sub/old2", 0o644, b"2")
            .file("other/stay", 0o644, b"s")
            .build();
        let l2 = TarBuilder::new()
            .dir("d/", 0o755)
            .file("d/sub/new", 0o644, b"n")
            .file("d/.wh..wh..opq", 0o644, b"")
            .file("d/new2", 0o644, b"n2")
            .build();
        apply(&mut fs, &l1).unwrap();
        apply(&mut fs, &l2).unwrap();
        assert!(!exists(&fs, "d/old1"));
        assert!(
            !exists(&fs, "d/sub/old2"),
            "lower content under a kept subdir goes too"
        );
        assert_eq!(read(&fs, "d/sub/new"), "n");
        assert_eq!(read(&fs, "d/new2"), "n2");
        assert!(exists(&fs, "other/stay"));
        assert!(!exists(&fs, "d/.wh..wh..opq"));
    }

    #[test]
    fn later_layer_replaces_types() {
        let (_d, mut fs) = rootfs();
        let l1 = TarBuilder::new()
            .file("x", 0o644, b"file")
            .file("y/inner", 0o644, b"i")
            .symlink("z", "/etc/passwd")
            .build();
        let l2 = TarBuilder::new()
            .dir("x/", 0o700)
            .file("y", 0o644, b"now a file")
            .file("z", 0o644, b"replaced link")
            .build();
        apply(&mut fs, &l1).unwrap();
        apply(&mut fs, &l2).unwrap();
        assert!(fs::symlink_metadata(fs.path().join("x")).unwrap().is_dir());
        assert_eq!(read(&fs, "y"), "now a file");
        let z = fs::symlink_metadata(fs.path().join("z")).unwrap();
        assert!(z.is_file(), "the symlink was replaced, not written through");
        assert_eq!(read(&fs, "z"), "replaced link");
    }

    #[test]
    fn refuses_parent_dir_components() {
        let (d, mut fs) = rootfs();
        for path in ["../x", "a/../../x", "./../outside", "a/b/../../../x"] {
            let tar = TarBuilder::new().file(path, 0o644, b"evil").build();
            let err = apply(&mut fs, &tar).unwrap_err();
            assert!(matches!(err, UnpackError::Escape(_)), "{path}: {err:?}");
        }
        assert!(!d.path().join("x").exists());
        assert!(!d.path().join("outside").exists());
    }

    #[test]
    fn refuses_absolute_paths() {
        let (d, mut fs) = rootfs();
        let target = d.path().join("abs-target");
        let tar = TarBuilder::new()
            .file(target.to_str().unwrap(), 0o644, b"evil")
            .build();
        let err = apply(&mut fs, &tar).unwrap_err();
        assert!(matches!(err, UnpackError::Escape(_)), "{err:?}");
        assert!(!target.exists());
        let tar = TarBuilder::new().file("/etc/evil", 0o644, b"evil").build();
        assert!(matches!(apply(&mut fs, &tar), Err(UnpackError::Escape(_))));
    }

    #[test]
    fn refuses_writing_through_a_symlink() {
        let (d, mut fs) = rootfs();
        let outside = d.path().join("outside");
        fs::create_dir(&outside).unwrap();
        // Same layer: a symlink to the outside, then a file "inside" it.
        let tar = TarBuilder::new()
            .symlink("evil", outside.to_str().unwrap())
            .file("evil/pwned", 0o644, b"evil")
            .build();
        let err = apply(&mut fs, &tar).unwrap_err();
        assert!(matches!(err, UnpackError::ThroughSymlink { .. }), "{err:?}");
        assert!(!outside.join("pwned").exists());

        // Across layers, with a relative link climbing out, and a nested path.
        let (d, mut fs) = rootfs();
        let outside = d.path().join("outside");
        fs::create_dir(&outside).unwrap();
        apply(
            &mut fs,
            &TarBuilder::new().symlink("up", "../outside").build(),
        )
        .unwrap();
        for path in ["up/pwned", "up/sub/pwned", "up/.wh.x"] {
            let tar = TarBuilder::new().file(path, 0o644, b"evil").build();
            let err = apply(&mut fs, &tar).unwrap_err();
            assert!(
                matches!(err, UnpackError::ThroughSymlink { .. }),
                "{path}: {err:?}"
            );
        }
        let tar = TarBuilder::new()
            .dir("up/", 0o755)
            .file("up/.wh..wh..opq", 0o644, b"")
            .build();
        // A directory entry at the symlink's path replaces the symlink itself.
        apply(&mut fs, &tar).unwrap();
        assert!(fs::symlink_metadata(fs.path().join("up")).unwrap().is_dir());
        assert_eq!(
            fs::read_dir(&outside).unwrap().count(),
            0,
            "nothing written outside"
        );
    }

    #[test]
    fn whiteout_through_symlink_is_refused_and_outside_untouched() {
        let (d, mut fs) = rootfs();
        let outside = d.path().join("outside");
        fs::create_dir(&outside).unwrap();
        fs::write(outside.join("precious"), b"p").unwrap();
        apply(
            &mut fs,
            &TarBuilder::new()
                .symlink("link", outside.to_str().unwrap())
                .build(),
        )
        .unwrap();
        let tar = TarBuilder::new()
            .file("link/.wh.precious", 0o644, b"")
            .build();
        assert!(matches!(
            apply(&mut fs, &tar),
            Err(UnpackError::ThroughSymlink { .. })
        ));
        let tar = TarBuilder::new()
            .file("link/.wh..wh..opq", 0o644, b"")
            .build();
        assert!(matches!(
            apply(&mut fs, &tar),
            Err(UnpackError::ThroughSymlink { .. })
        ));
        assert!(outside.join("precious").exists());
        // Whiting out the symlink itself removes the link, not its target.
        apply(
            &mut fs,
            &TarBuilder::new().file(".wh.link", 0o644, b"").build(),
        )
        .unwrap();
        assert!(!exists(&fs, "link"));
        assert!(outside.join("precious").exists());
    }

    #[test]
    fn refuses_hardlinks_outside_or_to_dirs() {
        let (d, mut fs) = rootfs();
        let outside = d.path().join("secret");
        fs::write(&outside, b"s").unwrap();
        apply(
            &mut fs,
            &TarBuilder::new()
                .dir("somedir/", 0o755)
                .symlink("l", "/")
                .build(),
        )
        .unwrap();
        for target in [
            "../secret",
            outside.to_str().unwrap(),
            "somedir",
            "missing",
            "l/etc/passwd",
        ] {
            let tar = TarBuilder::new().hardlink("h", target).build();
            let err = apply(&mut fs, &tar).unwrap_err();
            assert!(
                matches!(err, UnpackError::BadHardlink { .. }),
                "{target}: {err:?}"
            );
        }
        assert_eq!(fs::metadata(&outside).unwrap().nlink(), 1);
    }

    #[test]
    fn diff_id_is_checked() {
        let (_d, mut fs) = rootfs();
        let tar = TarBuilder::new().file("a", 0o644, b"a").build();
        let right = Digest::of(&tar);
        fs.apply_tar(&tar[..], Some(&right)).unwrap();
        let wrong = Digest::of(b"something else");
        let err = fs.apply_tar(&tar[..], Some(&wrong)).unwrap_err();
        assert!(matches!(err, UnpackError::DiffId { .. }), "{err:?}");
    }

    #[test]
    fn decompression_bombs_and_huge_files_stop_at_the_budget() {
        // 64 MiB of zeros compress to ~64 KiB: a small bomb against a 16 MiB budget.
        let zeros = vec![0u8; 64 << 20];
        let tar = TarBuilder::new().file("bomb", 0o644, &zeros).build();
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
        io::Write::write_all(&mut gz, &tar).unwrap();
        let blob = gz.finish().unwrap();
        assert!(blob.len() < 1 << 20, "{}", blob.len());
        let (d, fs) = rootfs();
        let mut fs = fs.with_budget(16 << 20);
        let path = d.path().join("layer.tar.gz");
        fs::write(&path, &blob).unwrap();
        let err = fs.apply_blob(&path, None).unwrap_err();
        assert!(matches!(err, UnpackError::TooLarge(_)), "{err:?}");
        assert_eq!(
            err.to_string(),
            "the image's files add up to more than 0 GiB, the most Hypedeck unpacks"
        );
        // Budgets add up across files and layers.
        let (_d, fs) = rootfs();
        let mut fs = fs.with_budget(10);
        apply(
            &mut fs,
            &TarBuilder::new().file("a", 0o644, b"123456").build(),
        )
        .unwrap();
        let err = apply(
            &mut fs,
            &TarBuilder::new().file("b", 0o644, b"123456").build(),
        )
        .unwrap_err();
        assert!(matches!(err, UnpackError::TooLarge(10)), "{err:?}");
        assert_eq!(
            UnpackError::TooLarge(MAX_UNPACKED_BYTES).to_string(),
            "the image's files add up to more than 32 GiB, the most Hypedeck unpacks"
        );
    }

    #[test]
    fn zero_blocks_become_holes_and_content_survives() {
        let (_d, mut fs) = rootfs();
        let mut data = vec![0u8; 8 << 20];
        data[100] = 1; // a written first block
        data[(4 << 20) + 7] = 2; // one in the middle
        let tar = TarBuilder::new()
            .file("mostly-zero", 0o644, &data)
            .file("all-zero", 0o644, &vec![0u8; 3 << 20])
            .file("small", 0o644, b"hello")
            .file("empty", 0o644, b"")
            .build();
        apply(&mut fs, &tar).unwrap();
        assert_eq!(fs::read(fs.path().join("mostly-zero")).unwrap(), data);
        assert_eq!(
            fs::read(fs.path().join("all-zero")).unwrap(),
            vec![0u8; 3 << 20]
        );
        assert_eq!(read(&fs, "small"), "hello");
        assert_eq!(fs::metadata(fs.path().join("empty")).unwrap().len(), 0);
        // Holes: far less on disk than the logical size (where the filesystem supports them).
        let on_disk = |p: &str| fs::metadata(fs.path().join(p)).unwrap().blocks() * 512;
        assert!(on_disk("all-zero") < 1 << 20, "{}", on_disk("all-zero"));
        assert!(
            on_disk("mostly-zero") < 2 << 20,
            "{}",
            on_disk("mostly-zero")
        );
    }

    #[test]
    fn device_nodes_are_skipped_and_counted() {
        let (_d, mut fs) = rootfs();
        let mut tar = TarBuilder::new().file("ok", 0o644, b"x");
        for kind in [tar::EntryType::Char, tar::EntryType::Block] {
            let mut h = TarBuilder::header("dev/node", kind, 0o666, 0);
            h.set_device_major(1).unwrap();
            h.set_device_minor(3).unwrap();
            h.set_cksum();
            tar.0.extend_from_slice(h.as_bytes());
        }
        apply(&mut fs, &tar.build()).unwrap();
        assert_eq!(fs.skipped_special, 2);
        assert!(exists(&fs, "ok"));
        assert!(!exists(&fs, "dev/node"));
    }

    #[test]
    fn decompresses_gzip_zstd_and_plain() {
        use std::io::Write;
        let tar = TarBuilder::new().file("hello", 0o644, b"hi").build();
        let dir = tempfile::tempdir().unwrap();
        let plain = dir.path().join("plain");
        fs::write(&plain, &tar).unwrap();
        let gz = dir.path().join("gz");
        let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        enc.write_all(&tar).unwrap();
        fs::write(&gz, enc.finish().unwrap()).unwrap();
        let zst = dir.path().join("zst");
        let compressed = ruzstd::encoding::compress_to_vec(
            &tar[..],
            ruzstd::encoding::CompressionLevel::Fastest,
        );
        fs::write(&zst, compressed).unwrap();
        for blob in [plain, gz, zst] {
            let (_d, mut fs) = rootfs();
            fs.apply_blob(&blob, Some(&Digest::of(&tar))).unwrap();
            assert_eq!(read(&fs, "hello"), "hi");
        }
        let bz = dir.path().join("bz");
        fs::write(&bz, b"BZh91AY&SY").unwrap();
        let (_d, mut fs) = rootfs();
        assert!(matches!(
            fs.apply_blob(&bz, None),
            Err(UnpackError::Compression("bzip2"))
        ));
    }

    #[test]
    fn corrupt_archive_is_a_read_error() {
        let (_d, mut fs) = rootfs();
        let mut tar = TarBuilder::new().file("a", 0o644, b"a").build();
        tar[148] ^= 0xff; // break the header checksum
        assert!(matches!(apply(&mut fs, &tar), Err(UnpackError::Read(_))));
    }

    #[test]
    fn recorded_ownership_keeps_wanted_metadata() {
        let dir = tempfile::tempdir().unwrap();
        let mut fs = Rootfs::with_ownership(&dir.path().join("r"), Ownership::Recorded).unwrap();
        let l1 = TarBuilder::new()
            .dir("./", 0o700)
            .owned_file("etc/shadow", 0, 42, 0o000)
            .owned_file("home/u/f", 1000, 1000, 0o4711)
            .owned_file("tmp/gone", 5, 5, 0o644)
            .fifo("run/fifo")
            .build();
        apply(&mut fs, &l1).unwrap();
        apply(
            &mut fs,
            &TarBuilder::new().file("tmp/.wh.gone", 0o644, b"").build(),
        )
        .unwrap();
        let w = fs.wanted();
        assert_eq!(w[Path::new("")].mode, 0o700);
        assert_eq!(
            w[Path::new("etc/shadow")],
            Wanted {
                uid: 0,
                gid: 42,
                mode: 0
            }
        );
        assert_eq!(w[Path::new("home/u/f")].mode, 0o4711);
        assert_eq!(w[Path::new("home")], DEFAULT_DIR);
        assert!(!w.contains_key(Path::new("tmp/gone")));
        assert_eq!(fs.skipped_special, 1);
        // On the host, the owner can still read what mkfs must copy.
        let host = fs::metadata(fs.path().join("etc/shadow")).unwrap();
        assert_eq!(host.permissions().mode() & 0o777, 0o600);
    }

    #[test]
    fn native_ownership_applies_uid_gid_when_root() {
        let (_d, mut fs) = rootfs();
        if fs.ownership() != Ownership::Native {
            eprintln!("not root: lchown path not exercised");
            return;
        }
        let tar = TarBuilder::new()
            .owned_file("f", 1234, 5678, 0o2750)
            .build();
        apply(&mut fs, &tar).unwrap();
        let m = fs::symlink_metadata(fs.path().join("f")).unwrap();
        assert_eq!((m.uid(), m.gid()), (1234, 5678));
        assert_eq!(
            m.permissions().mode() & 0o7777,
            0o2750,
            "setgid survives chown"
        );
    }

    #[test]
    fn clean_paths() {
        assert_eq!(
            clean(Path::new("./a/./b/")).unwrap(),
            Some(PathBuf::from("a/b"))
        );
        assert_eq!(clean(Path::new("./")).unwrap(), None);
        assert!(clean(Path::new("/a")).is_err());
        assert!(clean(Path::new("a/../b")).is_err());
    }
}
