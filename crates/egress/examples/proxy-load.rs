//! The egress proxy alone, for profiling under a load client: one attached instance that
//! injects `Authorization: Bearer <EGRESS_VALUE or "sk-load">` into requests for `localhost`,
//! trusting the upstream CA bundle in `$EGRESS_UPSTREAM_CA`. Prints the listener address.
//!
//!   EGRESS_UPSTREAM_CA=ca.pem cargo run --release -p hypedeck-egress --example proxy-load
//!   oha -x http://<printed address> --insecure https://localhost:<port>/1m

use std::collections::HashMap;

use hypedeck_egress::{CertificateAuthority, EgressProxy, InjectRule, ProxyOptions, UpstreamTrust};

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let pem = std::fs::read_to_string(std::env::var("EGRESS_UPSTREAM_CA")?)?;
    let trust = UpstreamTrust::empty().with_extra_pem(&pem)?;
    let options = ProxyOptions {
        resolve_overrides: HashMap::new(),
        allow_loopback: true,
        ..ProxyOptions::default()
    };
    let proxy = EgressProxy::with_options(CertificateAuthority::generate()?, trust, options)?;
    let addr = proxy.listen("load", None).await?;
    let value = std::env::var("EGRESS_VALUE").unwrap_or_else(|_| "sk-load".to_string());
    proxy.set_rules(
        "load",
        vec![InjectRule {
            header: "Authorization".to_string(),
            value: format!("Bearer {value}").into(),
            hosts: Some(vec!["localhost".to_string()]),
            credential: "LOAD_KEY".to_string(),
            secret: value.into(),
        }],
    )?;
    println!("{addr}");
    tokio::signal::ctrl_c().await?;
    Ok(())
}
