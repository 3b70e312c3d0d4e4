//! Talking to registries with `oci-client`: resolve a reference to one platform's manifest,
//! fetch and verify blobs, classify failures.
//!
//! Transport: HTTPS, except plain HTTP for loopback registries (`localhost`, `127.0.0.0/8`,
//! `[::1]`) only. Auth: anonymous, or the credentials of this one pull (basic or bearer);
//! `oci-client` performs the token dance. A fresh client is built per pull so credentials live
//! exactly as long as the pull and are never shared with another one.
//!
//! Mirrors: a registry may be served from another host (`docker.io=mirror.example:5000`);
//! the image keeps its name, only the host the requests go to changes, and plain HTTP is
//! still for loopback hosts only.
//!
//! Every manifest and blob is hashed here and compared to the digest that named it, whatever
//! the client library already checked.

use std::collections::BTreeMap;
use std::fmt;
use std::path::Path;
use std::time::Duration;

use futures_util::StreamExt;
use oci_client::client::{ClientConfig, ClientProtocol, LayerDescriptor};
use oci_client::errors::{DigestError, OciDistributionError, OciErrorCode};
use oci_client::secrets::RegistryAuth;
use serde::Deserialize;
use sha2::Digest as _;
use tokio::io::AsyncWriteExt;

use crate::error::ImageError;
use crate::image::ConfigBlob;
use crate::platform::Platform;
use crate::reference::{Digest, ImageRef, is_loopback_host};

/// How long resolving a reference (manifest, index child, config) may take in total.
pub const RESOLVE_TIMEOUT: Duration = Duration::from_secs(30);
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// Longest silence while reading a response body.
const READ_TIMEOUT: Duration = Duration::from_secs(60);
/// Largest manifest or config accepted (distribution caps manifests at 4 MiB).
const MAX_DOCUMENT_BYTES: usize = 8 * 1024 * 1024;

const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
const OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";
const DOCKER_MANIFEST: &str = "application/vnd.docker.distribution.manifest.v2+json";
const DOCKER_LIST: &str = "application/vnd.docker.distribution.manifest.list.v2+json";
const ACCEPT: &[&str] = &[OCI_MANIFEST, OCI_INDEX, DOCKER_MANIFEST, DOCKER_LIST];
const CONFIG_TYPES: &[&str] = &[
    "application/vnd.oci.image.config.v1+json",
    "application/vnd.docker.container.image.v1+json",
];
const LAYER_TYPES: &[&str] = &[
    "application/vnd.oci.image.layer.v1.tar",
    "application/vnd.oci.image.layer.v1.tar+gzip",
    "application/vnd.oci.image.layer.v1.tar+zstd",
    "application/vnd.oci.image.layer.nondistributable.v1.tar",
    "application/vnd.oci.image.layer.nondistributable.v1.tar+gzip",
    "application/vnd.oci.image.layer.nondistributable.v1.tar+zstd",
    "application/vnd.docker.image.rootfs.diff.tar",
    "application/vnd.docker.image.rootfs.diff.tar.gzip",
    "application/vnd.docker.image.rootfs.diff.tar.zstd",
];

/// Credentials for one pull. Never persisted; `Debug` shows no secret.
#[derive(Clone, PartialEq, Eq)]
pub enum Credentials {
    /// HTTP basic (also used to obtain a bearer token when the registry asks for one).
    Basic {
        /// User name.
        username: String,
        /// Password or access token.
        password: String,
    },
    /// A registry bearer token, sent as is.
    Token(String),
}

impl fmt::Debug for Credentials {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Credentials::Basic { username, .. } => f
                .debug_struct("Basic")
                .field("username", username)
                .field("password", &"<redacted>")
                .finish(),
            Credentials::Token(_) => f.debug_tuple("Token").field(&"<redacted>").finish(),
        }
    }
}

/// A blob to fetch: digest, size and media type from a manifest.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct Descriptor {
    pub media_type: String,
    pub digest: String,
    pub size: u64,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct ManifestDoc {
    #[serde(default)]
    schema_version: Option<u32>,
    #[serde(default)]
    media_type: Option<String>,
    #[serde(default)]
    config: Option<Descriptor>,
    #[serde(default)]
    layers: Option<Vec<Descriptor>>,
    #[serde(default)]
    manifests: Option<Vec<IndexEntry>>,
}

#[derive(Debug, Deserialize)]
struct IndexEntry {
    digest: String,
    #[serde(default)]
    platform: Option<IndexPlatform>,
}

#[derive(Debug, Deserialize)]
struct IndexPlatform {
    os: String,
    architecture: String,
    #[serde(default)]
    variant: Option<String>,
}

/// A reference resolved to one image manifest and its config.
#[derive(Debug)]
pub(crate) struct Resolved {
    /// The digest of the platform manifest (the cache key).
    pub digest: Digest,
    /// The platform of the image.
    pub platform: Platform,
    pub config_descriptor: Descriptor,
    pub config: ConfigBlob,
    /// The layers, bottom first.
    pub layers: Vec<Layer>,
}

/// One layer of a resolved image.
#[derive(Debug, Clone)]
pub(crate) struct Layer {
    pub descriptor: Descriptor,
    /// The blob digest (compressed content).
    pub digest: Digest,
    /// The uncompressed content digest, from the config.
    pub diff_id: Digest,
}

/// Registry mirrors: requests for an image on `registry` go to its mirror host instead.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Mirrors(BTreeMap<String, String>);

impl Mirrors {
    /// Parses `registry=host[:port],…` (as `HYPEDECK_REGISTRY_MIRRORS` spells it); empty
    /// means none.
    pub fn parse(text: &str) -> Result<Mirrors, String> {
        let mut map = BTreeMap::new();
        for entry in text.split(',').map(str::trim).filter(|e| !e.is_empty()) {
            let (registry, host) = entry
                .split_once('=')
                .ok_or_else(|| format!("mirror {entry:?} is not registry=host[:port]"))?;
            let valid = |h: &str| {
                !h.is_empty()
                    && h.chars()
                        .all(|c| c.is_ascii_alphanumeric() || "-.:[]".contains(c))
            };
            if !valid(registry) || !valid(host) {
                return Err(format!("mirror {entry:?} is not registry=host[:port]"));
            }
            map.insert(registry.to_ascii_lowercase(), host.to_ascii_lowercase());
        }
        Ok(Mirrors(map))
    }

    /// The host requests for `image` go to.
    pub fn endpoint(&self, image: &ImageRef) -> String {
        self.0
            .get(image.registry())
            .cloned()
            .unwrap_or_else(|| image.registry().to_owned())
    }
}

/// One pull's connection to one repository.
pub(crate) struct Session {
    client: oci_client::Client,
    auth: RegistryAuth,
    image: ImageRef,
    /// The host requests go to: the image's registry or its mirror.
    endpoint: String,
}

impl fmt::Debug for Session {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Session")
            .field("image", &self.image.to_string())
            .field("endpoint", &self.endpoint)
            .field("auth", &self.auth)
            .finish()
    }
}

/// A client for registry host `endpoint`: HTTPS, or plain HTTP when it is on loopback.
/// Building one loads the system trust roots (~0.1 s in debug builds), so anonymous clients
/// are worth reusing; a client that saw credentials must not be (it keeps them).
pub(crate) fn client_for(endpoint: &str) -> oci_client::Client {
    let protocol = if is_loopback_host(endpoint) {
        ClientProtocol::HttpsExcept(vec![endpoint.to_owned()])
    } else {
        ClientProtocol::Https
    };
    let config = ClientConfig {
        protocol,
        platform_resolver: None,
        connect_timeout: Some(CONNECT_TIMEOUT),
        read_timeout: Some(READ_TIMEOUT),
        user_agent: concat!("hypedeck/", env!("CARGO_PKG_VERSION")),
        ..ClientConfig::default()
    };
    oci_client::Client::new(config)
}

impl Session {
    /// A session for `image`. With credentials, `client` must be fresh (from [`client_for`])
    /// and is dropped with the session; without, it may be a shared anonymous client.
    pub fn new(
        image: &ImageRef,
        endpoint: String,
        client: oci_client::Client,
        credentials: Option<&Credentials>,
    ) -> Session {
        let auth = match credentials {
            None => RegistryAuth::Anonymous,
            Some(Credentials::Basic { username, password }) => {
                RegistryAuth::Basic(username.clone(), password.clone())
            }
            Some(Credentials::Token(t)) => RegistryAuth::Bearer(t.clone()),
        };
        Session {
            client,
            auth,
            image: image.clone(),
            endpoint,
        }
    }

    fn oci_ref(&self, digest: Option<&str>) -> oci_client::Reference {
        let registry = self.endpoint.clone();
        let repository = self.image.repository().to_owned();
        match (digest, self.image.digest(), self.image.tag()) {
            (Some(d), _, _) => oci_client::Reference::with_digest(registry, repository, d.into()),
            (None, Some(d), _) => {
                oci_client::Reference::with_digest(registry, repository, d.to_string())
            }
            (None, None, tag) => oci_client::Reference::with_tag(
                registry,
                repository,
                tag.unwrap_or(crate::reference::DEFAULT_TAG).to_owned(),
            ),
        }
    }

    /// Resolves the reference to the manifest for `platform` and fetches its config.
    /// Bounded by [`RESOLVE_TIMEOUT`].
    pub async fn resolve(&self, platform: &Platform) -> Result<Resolved, ImageError> {
        match tokio::time::timeout(RESOLVE_TIMEOUT, self.resolve_inner(platform)).await {
            Ok(r) => r,
            Err(_) => Err(ImageError::Registry(format!(
                "timed out resolving {}",
                self.image
            ))),
        }
    }

    async fn resolve_inner(&self, platform: &Platform) -> Result<Resolved, ImageError> {
        let wanted = self.image.digest().cloned();
        let (doc, digest) = self.manifest(None, wanted.as_ref()).await?;
        let (doc, digest) = if is_index(&doc) {
            let entries = doc.manifests.unwrap_or_default();
            let child = select_platform(&entries, platform)?;
            let child = Digest::parse(&child).map_err(|_| unsupported_digest(&child))?;
            let (doc, digest) = self.manifest(Some(&child), Some(&child)).await?;
            if is_index(&doc) {
                return Err(ImageError::Unsupported("nested image index".into()));
            }
            (doc, digest)
        } else {
            (doc, digest)
        };
        let (config_descriptor, layers) = manifest_parts(doc)?;
        let config_bytes = self.small_blob(&config_descriptor).await?;
        let (config, image_platform, layers) = with_config(&config_bytes, layers, platform)?;
        Ok(Resolved {
            digest,
            platform: image_platform,
            config_descriptor,
            config,
            layers,
        })
    }

    /// Fetches a manifest (by the session's tag/digest, or by `digest`) and checks its hash.
    async fn manifest(
        &self,
        digest: Option<&Digest>,
        expected: Option<&Digest>,
    ) -> Result<(ManifestDoc, Digest), ImageError> {
        let reference = self.oci_ref(digest.map(Digest::as_str));
        let (bytes, _) = self
            .client
            .pull_manifest_raw(&reference, &self.auth, ACCEPT)
            .await
            .map_err(|e| classify(e, &self.image))?;
        if bytes.len() > MAX_DOCUMENT_BYTES {
            return Err(ImageError::Unsupported("manifest larger than 8 MiB".into()));
        }
        let actual = Digest::of(&bytes);
        if let Some(expected) = expected
            && &actual != expected
        {
            return Err(ImageError::DigestMismatch {
                expected: expected.to_string(),
                actual: actual.to_string(),
            });
        }
        let doc: ManifestDoc = serde_json::from_slice(&bytes)
            .map_err(|e| ImageError::Registry(format!("manifest is not valid json: {e}")))?;
        Ok((doc, actual))
    }

    /// Fetches a small blob (the config) into memory and verifies it.
    async fn small_blob(&self, desc: &Descriptor) -> Result<Vec<u8>, ImageError> {
        if desc.size > MAX_DOCUMENT_BYTES as u64 {
            return Err(ImageError::Unsupported("config larger than 8 MiB".into()));
        }
        let mut out = Vec::with_capacity(usize::try_from(desc.size).unwrap_or(0));
        self.stream_blob(desc, &mut out, &mut |_| {}).await?;
        Ok(out)
    }

    /// Downloads a blob to `dest`, calling `progress` with each chunk's length. The file is
    /// complete and verified (size and sha256) when this returns `Ok`.
    pub async fn download(
        &self,
        desc: &Descriptor,
        dest: &Path,
        progress: &mut (dyn FnMut(u64) + Send),
    ) -> Result<(), ImageError> {
        let file = tokio::fs::File::create(dest)
            .await
            .map_err(|e| ImageError::io("create", dest, e))?;
        let mut writer = tokio::io::BufWriter::with_capacity(256 * 1024, file);
        self.stream_blob(desc, &mut writer, progress).await?;
        writer
            .flush()
            .await
            .map_err(|e| ImageError::io("write", dest, e))?;
        Ok(())
    }

    async fn stream_blob<W: tokio::io::AsyncWrite + Unpin + Send>(
        &self,
        desc: &Descriptor,
        out: &mut W,
        progress: &mut (dyn FnMut(u64) + Send),
    ) -> Result<(), ImageError> {
        let reference = self.oci_ref(None);
        let layer = LayerDescriptor {
            digest: &desc.digest,
            // Never follow a descriptor's external `urls` (CVE-2020-15157).
            urls: &None,
        };
        let mut stream = self
            .client
            .pull_blob_stream(&reference, &layer)
            .await
            .map_err(|e| classify(e, &self.image))?;
        let mut hasher = sha2::Sha256::new();
        let mut received: u64 = 0;
        let verify = |hasher: sha2::Sha256, received: u64| {
            let actual = Digest::from_sha256(hasher.finalize().as_slice());
            if received != desc.size || actual.as_str() != desc.digest {
                return Err(ImageError::DigestMismatch {
                    expected: desc.digest.clone(),
                    actual: actual.to_string(),
                });
            }
            Ok(())
        };
        while let Some(chunk) = stream.next().await {
            let chunk = match chunk {
                Ok(c) => c,
                // oci-client's own verification fails at the end of the stream: report the
                // mismatch, not a transport error.
                Err(e) if received == desc.size => {
                    verify(hasher, received)?;
                    return Err(ImageError::Registry(format!("read blob: {e}")));
                }
                Err(e) => return Err(ImageError::Registry(format!("read blob: {e}"))),
            };
            received += chunk.len() as u64;
            if received > desc.size {
                return Err(ImageError::DigestMismatch {
                    expected: desc.digest.clone(),
                    actual: "a blob larger than its descriptor".into(),
                });
            }
            hasher.update(&chunk);
            out.write_all(&chunk)
                .await
                .map_err(|e| ImageError::Registry(format!("write blob: {e}")))?;
            progress(chunk.len() as u64);
        }
        verify(hasher, received)
    }
}

/// The config descriptor and the layers (with their digests) an image manifest names, or why
/// Hypedeck cannot use it. Pure: fuzzed with arbitrary documents.
fn manifest_parts(doc: ManifestDoc) -> Result<(Descriptor, Vec<(Descriptor, Digest)>), ImageError> {
    if doc.schema_version != Some(2) {
        return Err(ImageError::Unsupported(format!(
            "manifest schema version {}",
            doc.schema_version.unwrap_or(0)
        )));
    }
    let config_descriptor = doc
        .config
        .ok_or_else(|| ImageError::Unsupported("manifest without config".into()))?;
    if !CONFIG_TYPES.contains(&config_descriptor.media_type.as_str()) {
        return Err(ImageError::Unsupported(format!(
            "config media type {}",
            config_descriptor.media_type
        )));
    }
    let mut layers = Vec::new();
    for layer in doc.layers.unwrap_or_default() {
        if !LAYER_TYPES.contains(&layer.media_type.as_str()) {
            return Err(ImageError::Unsupported(format!(
                "layer media type {}",
                layer.media_type
            )));
        }
        let digest = Digest::parse(&layer.digest).map_err(|_| unsupported_digest(&layer.digest))?;
        layers.push((layer, digest));
    }
    Ok((config_descriptor, layers))
}

/// The parsed config blob, the image's platform and its layers paired with their diff ids,
/// or why they do not fit together. Pure: fuzzed with arbitrary config blobs.
fn with_config(
    config_bytes: &[u8],
    layers: Vec<(Descriptor, Digest)>,
    platform: &Platform,
) -> Result<(ConfigBlob, Platform, Vec<Layer>), ImageError> {
    let config: ConfigBlob = serde_json::from_slice(config_bytes)
        .map_err(|e| ImageError::Registry(format!("image config is not valid json: {e}")))?;
    let image_platform = match config.platform() {
        Some(p) if !platform.accepts(&p) => {
            return Err(ImageError::PlatformNotAvailable {
                platform: platform.to_string(),
            });
        }
        Some(p) => p,
        None => platform.clone(),
    };
    let diff_ids = config
        .diff_ids()
        .iter()
        .map(|d| Digest::parse(d).map_err(|_| unsupported_digest(d)))
        .collect::<Result<Vec<_>, _>>()?;
    if diff_ids.len() != layers.len() {
        return Err(ImageError::Unsupported(format!(
            "config lists {} diff ids for {} layers",
            diff_ids.len(),
            layers.len()
        )));
    }
    let layers = layers
        .into_iter()
        .zip(diff_ids)
        .map(|((descriptor, digest), diff_id)| Layer {
            descriptor,
            digest,
            diff_id,
        })
        .collect();
    Ok((config, image_platform, layers))
}

fn is_index(doc: &ManifestDoc) -> bool {
    matches!(doc.media_type.as_deref(), Some(OCI_INDEX | DOCKER_LIST))
        || (doc.manifests.is_some() && doc.config.is_none())
}

fn unsupported_digest(d: &str) -> ImageError {
    ImageError::Unsupported(format!("digest {d} (only sha256 is supported)"))
}

/// Picks the index entry for `platform`: the first exact match (variant included), else the
/// first that `platform` accepts. Entries without a platform or for `unknown/unknown`
/// (attestations) are never picked.
fn select_platform(entries: &[IndexEntry], platform: &Platform) -> Result<String, ImageError> {
    let candidates: Vec<(&IndexEntry, Platform)> = entries
        .iter()
        .filter_map(|e| {
            let p = e.platform.as_ref()?;
            Some((
                e,
                Platform::new(&p.os, &p.architecture, p.variant.as_deref()),
            ))
        })
        .filter(|(_, p)| platform.accepts(p))
        .collect();
    candidates
        .iter()
        .find(|(_, p)| p == platform)
        .or_else(|| candidates.first())
        .map(|(e, _)| e.digest.clone())
        .ok_or_else(|| ImageError::PlatformNotAvailable {
            platform: platform.to_string(),
        })
}

/// Maps a client error to ours. Only status codes and registry error codes reach the text;
/// nothing from the request (headers, credentials) does.
pub(crate) fn classify(err: OciDistributionError, image: &ImageRef) -> ImageError {
    let not_found = || ImageError::NotFound {
        reference: image.to_string(),
    };
    match err {
        OciDistributionError::RegistryError { envelope, .. } => {
            let codes: Vec<&OciErrorCode> = envelope.errors.iter().map(|e| &e.code).collect();
            if codes.iter().any(|c| **c == OciErrorCode::Toomanyrequests) {
                ImageError::RateLimited
            } else if codes.iter().any(|c| {
                matches!(
                    c,
                    OciErrorCode::NameUnknown
                        | OciErrorCode::ManifestUnknown
                        | OciErrorCode::NotFound
                        | OciErrorCode::Unauthorized
                        | OciErrorCode::Denied
                        | OciErrorCode::BlobUnknown
                        | OciErrorCode::NameInvalid
                )
            }) {
                not_found()
            } else {
                let names: Vec<String> = codes
                    .iter()
                    .map(|c| match c {
                        OciErrorCode::Other(s) => s.clone(),
                        other => format!("{other:?}"),
                    })
                    .collect();
                ImageError::Registry(format!("registry refused: {}", names.join(", ")))
            }
        }
        OciDistributionError::UnauthorizedError { .. }
        | OciDistributionError::AuthenticationFailure(_)
        | OciDistributionError::ImageManifestNotFoundError(_) => not_found(),
        OciDistributionError::ServerError { code, .. } => match code {
            401 | 403 | 404 => not_found(),
            429 => ImageError::RateLimited,
            code => ImageError::Registry(format!("registry answered status {code}")),
        },
        OciDistributionError::RequestError(e) => {
            let what = if e.is_timeout() {
                "timed out"
            } else if e.is_connect() {
                "cannot connect"
            } else {
                "request failed"
            };
            let cause = root_cause(&e);
            ImageError::Registry(format!("{} {what}: {cause}", image.registry()))
        }
        OciDistributionError::DigestError(DigestError::VerificationError { expected, actual }) => {
            ImageError::DigestMismatch { expected, actual }
        }
        OciDistributionError::DigestError(e) => {
            ImageError::Registry(format!("digest check failed: {e}"))
        }
        OciDistributionError::UnsupportedMediaTypeError(t) => {
            ImageError::Unsupported(format!("media type {t}"))
        }
        OciDistributionError::UnsupportedSchemaVersionError(v) => {
            ImageError::Unsupported(format!("manifest schema version {v}"))
        }
        OciDistributionError::SpecViolationError(s) => ImageError::Registry(s),
        OciDistributionError::IoError(e) => ImageError::Registry(format!("io: {e}")),
        other => ImageError::Registry(variant_name(&other).to_owned()),
    }
}

fn root_cause(e: &(dyn std::error::Error + 'static)) -> String {
    let mut cur = e;
    while let Some(next) = cur.source() {
        cur = next;
    }
    cur.to_string()
}

fn variant_name(e: &OciDistributionError) -> &'static str {
    match e {
        OciDistributionError::ManifestParsingError(_)
        | OciDistributionError::VersionedParsingError(_)
        | OciDistributionError::ManifestEncodingError(_)
        | OciDistributionError::JsonError(_) => "malformed manifest",
        OciDistributionError::RegistryTokenDecodeError(_) => "malformed token response",
        OciDistributionError::UrlParseError(_) => "invalid registry url",
        OciDistributionError::HeaderValueError(_) => "invalid response header",
        _ => "unexpected registry response",
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use oci_client::errors::{OciEnvelope, OciError};

    fn img() -> ImageRef {
        ImageRef::parse("127.0.0.1:5000/a/b:c").unwrap()
    }

    fn envelope(code: OciErrorCode) -> OciDistributionError {
        OciDistributionError::RegistryError {
            envelope: OciEnvelope {
                errors: vec![OciError {
                    code,
                    message: "secret-looking message".into(),
                    detail: serde_json::Value::Null,
                }],
            },
            url: "http://user:pw@x/v2/".into(),
        }
    }

    #[test]
    fn classification() {
        assert!(matches!(
            classify(envelope(OciErrorCode::ManifestUnknown), &img()),
            ImageError::NotFound { .. }
        ));
        assert!(matches!(
            classify(envelope(OciErrorCode::NameUnknown), &img()),
            ImageError::NotFound { .. }
        ));
        assert!(matches!(
            classify(envelope(OciErrorCode::Unauthorized), &img()),
            ImageError::NotFound { .. }
        ));
        assert!(matches!(
            classify(envelope(OciErrorCode::Toomanyrequests), &img()),
            ImageError::RateLimited
        ));
        let other = classify(envelope(OciErrorCode::Other("LOCKED".into())), &img()).to_string();
        assert_eq!(other, "registry error: registry refused: LOCKED");
        let e = OciDistributionError::UnauthorizedError { url: "u".into() };
        assert!(matches!(classify(e, &img()), ImageError::NotFound { .. }));
        let e = OciDistributionError::AuthenticationFailure("bad password hunter2".into());
        let e = classify(e, &img());
        assert!(matches!(e, ImageError::NotFound { .. }));
        assert!(!e.to_string().contains("hunter2"));
        for (code, want) in [
            (404, "not found"),
            (401, "not found"),
            (429, "rate limit"),
            (502, "status 502"),
        ] {
            let e = OciDistributionError::ServerError {
                code,
                url: "http://x".into(),
                message: "body".into(),
            };
            let msg = classify(e, &img()).to_string();
            assert!(msg.contains(want), "{code}: {msg}");
            assert!(!msg.contains("body"));
        }
        let e = classify(
            OciDistributionError::RegistryTokenDecodeError("tok=abc".into()),
            &img(),
        );
        assert!(!e.to_string().contains("abc"));
    }

    #[test]
    fn mirrors_change_the_host_not_the_name() {
        let m = Mirrors::parse(" docker.io=127.0.0.1:5000 , ghcr.io=Mirror.example ").unwrap();
        let alpine = ImageRef::parse("alpine").unwrap();
        assert_eq!(m.endpoint(&alpine), "127.0.0.1:5000");
        assert_eq!(alpine.to_string(), "docker.io/library/alpine:latest");
        let session = Session::new(
            &alpine,
            m.endpoint(&alpine),
            client_for("127.0.0.1:5000"),
            None,
        );
        let r = session.oci_ref(None);
        assert_eq!(
            (r.registry(), r.repository(), r.tag()),
            ("127.0.0.1:5000", "library/alpine", Some("latest"))
        );
        assert_eq!(
            m.endpoint(&ImageRef::parse("ghcr.io/a/b").unwrap()),
            "mirror.example"
        );
        assert_eq!(
            m.endpoint(&ImageRef::parse("quay.io/a/b").unwrap()),
            "quay.io"
        );
        assert_eq!(Mirrors::parse("").unwrap(), Mirrors::default());
        for bad in [
            "docker.io",
            "=x",
            "docker.io=",
            "docker.io=http://x",
            "a=b c",
        ] {
            assert!(Mirrors::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn credentials_debug_is_redacted() {
        let c = Credentials::Basic {
            username: "me".into(),
            password: "hunter2".into(),
        };
        let s = format!("{c:?}");
        assert!(s.contains("me") && !s.contains("hunter2"), "{s}");
        let t = format!("{:?}", Credentials::Token("tok-123".into()));
        assert!(!t.contains("tok-123"));
        let session = Session::new(
            &img(),
            img().registry().into(),
            client_for(img().registry()),
            Some(&c),
        );
        assert!(!format!("{session:?}").contains("hunter2"));
    }

    fn entry(digest: &str, os: &str, arch: &str, variant: Option<&str>) -> IndexEntry {
        IndexEntry {
            digest: digest.into(),
            platform: Some(IndexPlatform {
                os: os.into(),
                architecture: arch.into(),
                variant: variant.map(Into::into),
            }),
        }
    }

    #[test]
    fn platform_selection() {
        let entries = vec![
            IndexEntry {
                digest: "none".into(),
                platform: None,
            },
            entry("att", "unknown", "unknown", None),
            entry("arm6", "linux", "arm", Some("v6")),
            entry("arm7", "linux", "arm", Some("v7")),
            entry("arm64", "linux", "arm64", Some("v8")),
            entry("amd", "linux", "amd64", None),
        ];
        let pick = |p: &str| select_platform(&entries, &Platform::parse(p).unwrap());
        assert_eq!(pick("linux/amd64").unwrap(), "amd");
        assert_eq!(pick("linux/arm64").unwrap(), "arm64");
        assert_eq!(pick("linux/arm/v7").unwrap(), "arm7");
        assert_eq!(pick("linux/arm").unwrap(), "arm6");
        assert!(matches!(
            pick("linux/riscv64"),
            Err(ImageError::PlatformNotAvailable { .. })
        ));
        assert!(matches!(
            pick("windows/amd64"),
            Err(ImageError::PlatformNotAvailable { .. })
        ));
    }

    /// The first bytes a client sends to a registry listening on `ip`.
    async fn first_bytes_sent_to(ip: std::net::IpAddr) -> Vec<u8> {
        use tokio::io::AsyncReadExt;
        let listener = tokio::net::TcpListener::bind((ip, 0)).await.unwrap();
        let addr = listener.local_addr().unwrap();
        let server = tokio::spawn(async move {
            let (mut sock, _) = listener.accept().await.unwrap();
            let mut buf = vec![0u8; 4];
            sock.read_exact(&mut buf).await.unwrap();
            buf
        });
        let image = ImageRef::parse(&format!("{addr}/x/y:z")).unwrap();
        let session = Session::new(
            &image,
            image.registry().into(),
            client_for(image.registry()),
            None,
        );
        let _ =
            tokio::time::timeout(Duration::from_secs(5), session.resolve(&Platform::host())).await;
        server.await.unwrap()
    }

    #[tokio::test]
    async fn plain_http_for_loopback_only() {
        let loopback = first_bytes_sent_to("127.0.0.1".parse().unwrap()).await;
        assert_eq!(&loopback, b"GET ");
        // A non-loopback address of this machine (a UDP connect sends no packet).
        let probe = std::net::UdpSocket::bind("0.0.0.0:0").unwrap();
        let ip = probe
            .connect("203.0.113.1:9")
            .and_then(|()| probe.local_addr())
            .map(|a| a.ip())
            .ok()
            .filter(|ip| !ip.is_loopback() && !ip.is_unspecified());
        let Some(ip) = ip else {
            eprintln!("no non-loopback address: the https half is skipped");
            return;
        };
        let other = first_bytes_sent_to(ip).await;
        assert_eq!(
            other[0], 0x16,
            "expected a TLS handshake record, got {other:?}"
        );
    }

    #[tokio::test]
    async fn blob_digest_mismatch_is_detected() {
        // A loopback HTTP server that serves the wrong bytes for a blob.
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let server = tokio::spawn(async move {
            use tokio::io::{AsyncReadExt, AsyncWriteExt};
            loop {
                let (mut sock, _) = listener.accept().await.unwrap();
                let mut buf = vec![0u8; 4096];
                let _ = sock.read(&mut buf).await;
                let body = b"tampered";
                let head = format!(
                    "HTTP/1.1 200 OK\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
                    body.len()
                );
                let _ = sock.write_all(head.as_bytes()).await;
                let _ = sock.write_all(body).await;
            }
        });
        let image = ImageRef::parse(&format!("{addr}/x/y:z")).unwrap();
        let session = Session::new(
            &image,
            image.registry().into(),
            client_for(image.registry()),
            None,
        );
        let desc = Descriptor {
            media_type: LAYER_TYPES[1].into(),
            digest: Digest::of(b"original").to_string(),
            size: 8,
        };
        let dir = tempfile::tempdir().unwrap();
        let err = session
            .download(&desc, &dir.path().join("blob"), &mut |_| {})
            .await
            .unwrap_err();
        assert!(matches!(err, ImageError::DigestMismatch { .. }), "{err:?}");
        // Longer than the descriptor says: refused as well.
        let desc = Descriptor { size: 3, ..desc };
        let err = session
            .download(&desc, &dir.path().join("blob2"), &mut |_| {})
            .await
            .unwrap_err();
        assert!(matches!(err, ImageError::DigestMismatch { .. }), "{err:?}");
        server.abort();
    }
}

/// Manifests, indexes and configs from a hostile registry: arbitrary bytes and structured
/// mutations of real documents never panic, every refusal is a clear error, and whatever is
/// accepted is internally consistent (valid digests, known media types, one diff id per layer,
/// a platform the caller accepts).
#[cfg(test)]
mod fuzz {
    #![allow(clippy::unwrap_used)]

    use proptest::prelude::*;
    use serde_json::{Value, json};

    use super::*;

    const SHA: &str = "sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";

    fn digest() -> impl Strategy<Value = Value> {
        prop_oneof![
            4 => Just(json!(SHA)),
            1 => "[a-z0-9]{0,8}:[0-9a-fA-F]{0,70}".prop_map(Value::from),
            1 => Just(json!("sha256:../../etc/passwd")),
            1 => Just(json!(null)),
            1 => any::<i64>().prop_map(Value::from),
        ]
    }

    fn media_type(valid: &'static [&'static str]) -> impl Strategy<Value = Value> {
        prop_oneof![
            4 => proptest::sample::select(valid).prop_map(Value::from),
            1 => "[ -~]{0,40}".prop_map(Value::from),
            1 => Just(json!(7)),
        ]
    }

    fn descriptor(valid: &'static [&'static str]) -> impl Strategy<Value = Value> {
        (
            media_type(valid),
            digest(),
            prop_oneof![
                Just(json!(10)),
                Just(json!(-1)),
                Just(json!(u64::MAX)),
                Just(json!("1"))
            ],
        )
            .prop_map(|(m, d, s)| json!({"mediaType": m, "digest": d, "size": s}))
    }

    fn manifest() -> impl Strategy<Value = Value> {
        (
            prop_oneof![Just(json!(2)), Just(json!(1)), Just(json!(null)), Just(json!("2")), Just(json!(-2))],
            proptest::option::of(descriptor(CONFIG_TYPES)),
            proptest::option::of(proptest::collection::vec(descriptor(LAYER_TYPES), 0..5)),
        )
            .prop_map(|(v, config, layers)| json!({"schemaVersion": v, "config": config, "layers": layers}))
    }

    fn config() -> impl Strategy<Value = Value> {
        let word = "[a-z0-9]{0,8}";
        (
            proptest::option::of(prop_oneof![Just("linux".to_string()), word.prop_map(String::from)]),
            proptest::option::of(prop_oneof![Just(std::env::consts::ARCH.replace("x86_64", "amd64").replace("aarch64", "arm64")), word.prop_map(String::from)]),
            proptest::collection::vec(digest(), 0..5),
            proptest::collection::vec("[ -~]{0,30}", 0..4),
        )
            .prop_map(|(os, arch, diff_ids, env)| {
                json!({"os": os, "architecture": arch, "rootfs": {"type": "layers", "diff_ids": diff_ids},
                       "config": {"Env": env, "Entrypoint": ["/bin/sh"], "WorkingDir": ""}})
            })
    }

    fn clear(e: &ImageError) -> bool {
        matches!(
            e,
            ImageError::Unsupported(_)
                | ImageError::Registry(_)
                | ImageError::PlatformNotAvailable { .. }
        ) && !e.to_string().is_empty()
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(512))]

        #[test]
        fn arbitrary_bytes_are_refused_cleanly(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
            if let Ok(doc) = serde_json::from_slice::<ManifestDoc>(&bytes) {
                let _ = manifest_parts(doc);
            }
            let r = with_config(&bytes, vec![], &Platform::host());
            prop_assert!(r.as_ref().err().is_none_or(clear), "{:?}", r.err());
        }

        #[test]
        fn manifests_and_configs(m in manifest(), c in config()) {
            let Ok(doc) = serde_json::from_value::<ManifestDoc>(m.clone()) else {
                return Ok(()); // the wire layer refuses it: "manifest is not valid json"
            };
            let parts = match manifest_parts(doc) {
                Ok(parts) => parts,
                Err(e) => {
                    prop_assert!(clear(&e), "{:?}", e);
                    return Ok(());
                }
            };
            let (config_descriptor, layers) = parts;
            prop_assert!(CONFIG_TYPES.contains(&config_descriptor.media_type.as_str()));
            for (d, digest) in &layers {
                prop_assert!(LAYER_TYPES.contains(&d.media_type.as_str()));
                prop_assert_eq!(digest.as_str(), d.digest.as_str());
            }
            let n = layers.len();
            let bytes = serde_json::to_vec(&c).unwrap();
            match with_config(&bytes, layers, &Platform::host()) {
                Ok((blob, platform, layers)) => {
                    prop_assert_eq!(layers.len(), n);
                    prop_assert_eq!(blob.diff_ids().len(), n);
                    prop_assert!(Platform::host().accepts(&platform));
                    let _ = blob.image_config();
                }
                Err(e) => prop_assert!(clear(&e), "{:?}", e),
            }
        }

        #[test]
        fn indexes(entries in proptest::collection::vec(
            (digest(), proptest::option::of(("[a-z]{0,6}", "[a-z0-9]{0,6}", proptest::option::of("v[0-9]")))), 0..6)) {
            let doc = json!({"schemaVersion": 2, "manifests": entries.iter().map(|(d, p)| json!({
                "digest": d,
                "platform": p.as_ref().map(|(os, arch, v)| json!({"os": os, "architecture": arch, "variant": v})),
            })).collect::<Vec<_>>()});
            if let Ok(doc) = serde_json::from_value::<ManifestDoc>(doc) {
                prop_assert!(is_index(&doc));
                match select_platform(&doc.manifests.unwrap_or_default(), &Platform::host()) {
                    Ok(child) => prop_assert!(!child.is_empty()),
                    Err(e) => prop_assert!(clear(&e), "{:?}", e),
                }
            }
        }
    }
}
