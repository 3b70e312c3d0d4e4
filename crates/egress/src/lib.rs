//! Host-side egress proxy: terminates the guest's HTTPS (CONNECT) with a per-data-dir CA,
//! injects credential headers for matching hosts, and forwards. Rules are per instance and
//! swapped atomically, which is what makes credential rotation restart-free.
//!
//! # Shape
//!
//! - [`CertificateAuthority`]: ECDSA P-256, 10 years, CN `Hypedeck egress CA`. Its
//!   certificate is a 0644 file; its private key lives only in a
//!   [`SecretStore`](hypedeck_secrets::SecretStore). Per-host leaves are signed on demand and
//!   cached for 24 h.
//! - [`EgressProxy`]: instances are attached in-process ([`EgressProxy::attach`]); the
//!   instance's own sandbox network hands each guest connection to the proxy address
//!   (`<guest-proxy-ip>:18080`, the guest's `HTTP(S)_PROXY`) to [`EgressProxy::serve`] as an
//!   in-memory stream, so the instance is known without a host port. [`EgressProxy::listen`]
//!   (a loopback listener) is for tests and benchmarks only.
//! - [`InjectRule`]: a header, its final value (a [`Sensitive`](hypedeck_secrets::Sensitive))
//!   and host patterns; [`EgressProxy::set_rules`] swaps an instance's whole set.
//! - [`Fingerprinter`]: keyed fingerprints of credential values (HMAC-SHA256 under a
//!   per-data-dir key kept in a [`SecretStore`](hypedeck_secrets::SecretStore)) for the usage
//!   trail; the daemon shares one with the engine ([`ProxyOptions::fingerprints`]).
//!
//! # Protocol (mirrors upstream Hypeman's `lib/egressproxy`)
//!
//! HTTP/1.1 forward proxy. `CONNECT host:port` is answered `200 Connection Established`, the
//! guest's TLS is terminated with a leaf for `host`, and the HTTP/1.1 requests inside are
//! served in a loop: hop-by-hop headers are stripped, every rule whose hosts match the
//! CONNECT host *sets* its header (overwriting whatever the guest sent), and the request is
//! forwarded to `https://host:port` over TLS verified against [`UpstreamTrust`] (HTTP/1.1
//! only). Bodies stream through untouched. Absolute-form `http://` requests are forwarded
//! without injection. Failures reach the guest as short fixed-text 502s (403 for a
//! destination on the host's loopback when [`ProxyOptions::allow_loopback`] is off).
//!
//! # Invariants
//!
//! - Real credential values live only in memory here (and in the OS keychain upstream of us);
//!   they never appear in logs, error messages, responses made by the proxy, or `Debug`
//!   output. Logs name instances, hosts, methods, statuses and rule counts, never headers.
//! - Plain HTTP is never injected.
//! - Rules swap atomically: a request reads its instance's rule set once, when it arrives,
//!   and applies all of that one set; once `set_rules` returns, every later request (also on
//!   connections already open) uses the new set.
//! - The CA private key is never written to disk by this crate.
//! - TLS never depends on a process-wide default crypto provider: aws-lc-rs is chosen
//!   explicitly for every client and server configuration.

mod ca;
mod error;
mod fingerprint;
mod guarded;
mod instance;
mod leak;
mod proxy;
mod rules;
mod serve;
mod tasks;
mod upstream;
mod usage;

pub use ca::{CA_COMMON_NAME, CertificateAuthority};
pub use error::EgressError;
pub use fingerprint::Fingerprinter;
pub use instance::HostCheck;
pub use proxy::{EgressProxy, ProxyOptions};
pub use rules::InjectRule;
pub use serve::TestOutcome;
pub use upstream::{DestinationFilter, UpstreamTrust};
pub use usage::{
    Outcome, REASON_DESTINATION_REFUSED, REASON_HOST_NOT_ALLOWED, REASON_LEAK,
    REASON_NAME_MISMATCH, REASON_PLAIN_HTTP, REASON_UPSTREAM_CLOSED, REASON_UPSTREAM_EXCHANGE,
    REASON_UPSTREAM_UNREACHABLE, UsageEvent, UsageSink, WITHHELD_HOST,
};

/// The port the guest connects to for the proxy (upstream's default), on the proxy address its
/// sandbox network serves.
pub const DEFAULT_PROXY_PORT: u16 = 18080;
