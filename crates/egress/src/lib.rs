//! Host-side egress proxy: terminates the guest's HTTPS (CONNECT) with a per-data-dir CA,
//! injects credential headers for matching hosts, and forwards. Rules are per instance and
//! swapped atomically, which is what makes credential rotation restart-free.
//!
//! Invariants (for the credentials issue): real values live only in memory here and in the OS
//! keychain; they never appear in logs, errors or `Debug` output; plain HTTP is never injected.

/// The port the proxy listens on inside each instance's gateway address (upstream's default).
pub const DEFAULT_PROXY_PORT: u16 = 18080;

/// The placeholder the guest sees instead of a real credential value.
pub fn mock_value(credential_key: &str) -> String {
    format!("mock-{credential_key}")
}

#[cfg(test)]
mod tests {
    #[test]
    fn mock_value_matches_upstream() {
        assert_eq!(
            super::mock_value("OUTBOUND_OPENAI_KEY"),
            "mock-OUTBOUND_OPENAI_KEY"
        );
    }
}
