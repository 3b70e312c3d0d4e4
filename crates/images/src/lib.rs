//! OCI images: pull from a registry, unpack layers (honouring whiteouts, refusing path escapes),
//! convert the rootfs into a bootable disk, and cache it by digest.
//!
//! Invariants (to hold once the pipeline lands with the real-VM issue):
//! - a cached image is keyed by its manifest digest; tags are pointers to digests;
//! - no layer entry may be written outside the rootfs being built;
//! - an image is only `ready` once its disk is complete; partial work is never visible.
//!
//! For now the crate owns the reference grammar used to validate `image` fields at the edge.

/// Why an image reference was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid image reference")]
pub struct InvalidReference;

/// A syntactically valid OCI reference (`[registry/]repository[:tag][@digest]`).
///
/// This is a conservative check of the distribution reference grammar; normalization
/// (`alpine` -> `docker.io/library/alpine:latest`) lands with the pull pipeline.
pub fn check_reference(reference: &str) -> Result<(), InvalidReference> {
    hypedeck_model::validate::check_image_reference(reference).map_err(|_| InvalidReference)
}
