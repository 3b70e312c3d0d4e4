//! The crate's one error type. Messages are short and lowercase; no variant carries a secret
//! (rule errors name the rule's index and what is wrong, never its value).

use std::io;
use std::net::SocketAddr;

/// What failed in the egress proxy.
#[derive(Debug, thiserror::Error)]
pub enum EgressError {
    /// The CA certificate file could not be read.
    #[error("failed to read the egress ca certificate")]
    ReadCaCert(#[source] io::Error),
    /// The CA certificate file could not be written.
    #[error("failed to write the egress ca certificate")]
    WriteCaCert(#[source] io::Error),
    /// The secret store holding the CA key failed (not "missing": a missing key regenerates).
    #[error("failed to access the egress ca key")]
    CaKeyStore(#[source] hypedeck_secrets::SecretError),
    /// The secret store holding the fingerprint key failed (not "missing": a missing key is
    /// made).
    #[error("failed to access the credential fingerprint key")]
    FingerprintKeyStore(#[source] hypedeck_secrets::SecretError),
    /// The system's random number generator failed.
    #[error("no randomness available for a new key")]
    Random,
    /// rcgen could not generate or sign a certificate.
    #[error("failed to generate a certificate")]
    GenerateCert(#[source] rcgen::Error),
    /// The host of a CONNECT cannot be put in a certificate (not a DNS name or IP address).
    #[error("invalid tls host name")]
    InvalidHost,
    /// rustls refused a configuration (key or certificate).
    #[error("failed to configure tls")]
    Tls(#[source] rustls::Error),
    /// The extra upstream CA bundle holds no usable certificate.
    #[error("invalid upstream ca bundle: {0}")]
    UpstreamCaBundle(&'static str),
    /// The per-instance listener could not be bound.
    #[error("failed to bind the egress proxy on {addr}")]
    Bind {
        /// The address that was tried.
        addr: SocketAddr,
        /// Why.
        #[source]
        source: io::Error,
    },
    /// The instance has no listener (attach first).
    #[error("instance {0:?} is not attached to the egress proxy")]
    NotAttached(String),
    /// A "test credential" request cannot be made as asked (bad URL, no credential for its
    /// host); the text says why.
    #[error("{0}")]
    TestRefused(String),
    /// A "test credential" request was made but failed on the way (connect, TLS, timeout).
    #[error("the test request failed: {0}")]
    TestFailed(String),
    /// The leak guard could not be built for the rule set (values too large to search for);
    /// the whole rule set was rejected and the old one kept.
    #[error("failed to build the leak guard for these credentials")]
    LeakGuard,
    /// A rule cannot be applied; the whole rule set was rejected and the old one kept.
    #[error("invalid inject rule {index}: {reason}")]
    InvalidRule {
        /// Position of the rule in the submitted list.
        index: usize,
        /// What is wrong (never the value).
        reason: &'static str,
    },
}
