//! OCI images: pull from a registry, unpack layers (honouring whiteouts, refusing path
//! escapes), convert the rootfs into an ext4 root disk, and cache it by manifest digest.
//!
//! The pipeline mirrors upstream Hypeman's `lib/images`: normalize the reference, resolve
//! the manifest digest for the wanted platform, dedupe by digest, then
//! `pending -> pulling -> converting -> ready | failed`.
//!
//! Invariants:
//! - a cached image is keyed by its (platform) manifest digest; tags are pointers to digests;
//! - every manifest and blob is verified against its sha256 digest, every layer's uncompressed
//!   stream against the config's diff id;
//! - no layer entry may be written outside the rootfs being built (see [`unpack`](UnpackError));
//! - an image is only `ready` once its disk is complete; partial work is never visible, and
//!   what a crash leaves behind is repaired at [`ImageStore::open`];
//! - registry credentials live for one pull: never written, logged or put in an error.
//!
//! Entry points: [`ImageStore`] (`open`, `pull`, `start_pull`, `get`, `list`, `delete`,
//! `rootfs_path`), [`ImageRef`] for reference parsing, [`check_reference`] for edge validation.
//! Needs e2fsprogs (`mkfs.ext4`, and `debugfs` when not running as root) at runtime.

mod cache;
mod disk;
mod error;
mod image;
mod platform;
mod reference;
mod registry;
mod store;
mod unpack;
mod volume;

pub use disk::MIN_DISK_BYTES;
pub use error::{ImageError, Result};
pub use hypedeck_model::reference::InvalidReference;
pub use image::{Image, ImageConfig, ImageStatus, PullProgress};
pub use platform::{InvalidPlatform, Platform};
pub use reference::{DEFAULT_REGISTRY, DEFAULT_TAG, Digest, ImageRef, ReferenceError};
pub use registry::{Credentials, Mirrors, RESOLVE_TIMEOUT};
pub use store::{ImageStore, PullHandle, PullOptions};
pub use unpack::UnpackError;
pub use volume::build_volume;

/// Whether `reference` is a valid image reference (`[registry/]repository[:tag][@digest]`),
/// for validating `image` fields at the edge: the same grammar [`ImageRef::parse`] uses
/// (which also normalizes, `alpine` -> `docker.io/library/alpine:latest`).
pub fn check_reference(reference: &str) -> Result<(), InvalidReference> {
    hypedeck_model::reference::check_image_reference(reference)
}
