//! The credential usage trail: one [`UsageEvent`] per injection (and per attempt the proxy
//! blocked), handed to the [`UsageSink`] the proxy was built with. Events carry a credential's
//! name and the fingerprint of its value ([`Fingerprinter`](crate::Fingerprinter)), never the
//! value.

use std::fmt;

use serde::{Deserialize, Serialize};
use time::OffsetDateTime;

/// What happened to a credential on one request.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    /// Its header was set on a request that went out.
    Injected,
    /// A request the user sent from the host ("test credential"), injected the same way.
    Test,
    /// Not injected, and the request was refused or forwarded without it (`reason` says which).
    Blocked,
    /// A request carried the real value (or an encoding of it) to a host it is not for;
    /// refused.
    LeakBlocked,
    /// The request was to carry it, but the upstream could not be reached or the exchange
    /// broke (the guest got a 502 from the proxy; `reason` says which step failed).
    Failed,
}

/// One entry of the trail.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct UsageEvent {
    /// When the request was made.
    #[serde(with = "time::serde::rfc3339")]
    pub time: OffsetDateTime,
    /// The credential (its key in the instance's `credentials`).
    pub credential: String,
    /// The fingerprint of the value in force ([`Fingerprinter`](crate::Fingerprinter)): 16
    /// hex digits.
    pub fingerprint: String,
    /// Destination host (canonical).
    pub host: String,
    /// HTTP method.
    pub method: String,
    /// Upstream's status (`None` when nothing was sent upstream).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<u16>,
    /// What happened.
    pub outcome: Outcome,
    /// Why it was blocked (fixed texts).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

/// Reason: plain HTTP to a host a credential is for.
pub const REASON_PLAIN_HTTP: &str = "plain http to a credential host is refused; use https";
/// Reason: the guest sent a credential's mock value to a host the credential is not for.
pub const REASON_HOST_NOT_ALLOWED: &str =
    "host not allowed for this credential: its mock value went out, the real value did not";
/// Reason: the TLS server name or the `Host` header named another host than the tunnel's.
pub const REASON_NAME_MISMATCH: &str =
    "not injected: the TLS server name and the Host header must both name the tunnel's host";
/// Reason: a request carried a real credential value to a host it is not for.
pub const REASON_LEAK: &str = concat!(
    "the request carried this credential's real value (or an encoding of it) ",
    "to a host it is not for"
);

/// Reason (failed): the upstream could not be resolved, connected to or its TLS handshake
/// failed.
pub const REASON_UPSTREAM_UNREACHABLE: &str =
    "the upstream could not be reached (name, connection or TLS failed); the guest got a 502";
/// Reason (failed): the destination is one the sandbox may not reach (the host's own
/// addresses, private ranges).
pub const REASON_DESTINATION_REFUSED: &str =
    "the destination address is one the sandbox may not reach; the guest got a 403";
/// Reason (failed): the upstream connection closed before the request could be sent.
pub const REASON_UPSTREAM_CLOSED: &str =
    "the upstream connection closed before the request was sent; the guest got a 502";
/// Reason (failed): the upstream connection broke during the exchange.
pub const REASON_UPSTREAM_EXCHANGE: &str =
    "the upstream connection broke during the exchange; the guest got a 502";

/// The `host` of an event whose destination name itself carried the value: the name is the
/// leak, so it is kept out of the trail and the logs.
pub const WITHHELD_HOST: &str = "(withheld: the name carried the value)";

/// Where the proxy puts the trail. Called on the proxy's tasks: must not block for long.
pub trait UsageSink: Send + Sync + fmt::Debug {
    /// Records `event` for `instance`.
    fn record(&self, instance: &str, event: UsageEvent);

    /// Returns once every event recorded before the call can be read back (a sink that writes
    /// in the background waits for its writer, within a bound). Blocking: call it off the
    /// async workers.
    fn settle(&self) {}
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn events_serialize_without_empty_fields() {
        let e = UsageEvent {
            time: OffsetDateTime::UNIX_EPOCH,
            credential: "OPENAI_KEY".into(),
            fingerprint: "ba7816bf8f01cfea".into(),
            host: "api.openai.com".into(),
            method: "POST".into(),
            status: Some(200),
            outcome: Outcome::Injected,
            reason: None,
        };
        let json = serde_json::to_value(&e).unwrap();
        assert_eq!(
            json,
            serde_json::json!({"time": "1970-01-01T00:00:00Z", "credential": "OPENAI_KEY",
                "fingerprint": "ba7816bf8f01cfea", "host": "api.openai.com", "method": "POST",
                "status": 200, "outcome": "injected"})
        );
        assert_eq!(serde_json::from_value::<UsageEvent>(json).unwrap(), e);
    }
}
