//! `PATCH /instances/{id}`: an [`UpdateInstanceRequest`] into an [`InstanceUpdate`], and the
//! checks of an env update against the instance's credential policies.

use std::collections::BTreeMap;

use super::Rejection;
use crate::request::{CredentialPolicy, UpdateInstanceRequest};
use crate::spec::{InstanceUpdate, credential_source_keys};

impl UpdateInstanceRequest {
    /// Instance-independent checks (schema + "something to do").
    pub fn validate(&self) -> Result<InstanceUpdate, Rejection> {
        if let Some(env) = &self.env
            && env.is_empty()
        {
            return Err(Rejection::schema(
                "UpdateInstanceRequest",
                "/env",
                "there must be at least 1 properties",
            ));
        }
        let mut policies = BTreeMap::new();
        for (key, value) in [
            ("auto_standby", &self.auto_standby),
            ("health_check", &self.health_check),
            ("restart_policy", &self.restart_policy),
        ] {
            if let Some(v) = value {
                let v = if key == "auto_standby" {
                    crate::autostandby::normalize(v)?
                } else {
                    v.clone()
                };
                policies.insert(key.to_string(), v);
            }
        }
        let allow = match self
            .network
            .as_ref()
            .and_then(|n| n.egress.as_ref())
            .and_then(|e| e.allow.as_ref())
        {
            Some(entries) => Some(crate::AllowList::parse(entries)?),
            None => None,
        };
        if self.env.is_none() && policies.is_empty() && allow.is_none() {
            return Err(Rejection::invalid_request(
                "request must include env, auto_standby, health_check, and/or restart_policy",
            ));
        }
        Ok(InstanceUpdate {
            env: self.env.clone(),
            policies,
            allow,
        })
    }
}

/// Checks an env update against an instance's credential policies, in upstream's order:
/// the instance must have credentials and egress, and every key must be a credential source.
pub fn check_env_update(
    env: &BTreeMap<String, String>,
    credentials: &BTreeMap<String, CredentialPolicy>,
    egress_enabled: bool,
) -> Result<(), Rejection> {
    if credentials.is_empty() || !egress_enabled {
        return Err(Rejection::invalid_request(
            "instance has no credential-backed env vars to update",
        ));
    }
    let allowed = credential_source_keys(credentials);
    let bad: Vec<&str> = env
        .keys()
        .filter(|k| !allowed.contains(*k))
        .map(String::as_str)
        .collect();
    if !bad.is_empty() {
        let allowed: Vec<&str> = allowed.iter().map(String::as_str).collect();
        return Err(Rejection::invalid_request(format!(
            "env keys [{}] are not credential source env vars; allowed keys: [{}]",
            bad.join(" "),
            allowed.join(" ")
        )));
    }
    Ok(())
}

/// After merging, every credential source must still be non-empty.
pub fn check_bindings_non_empty(
    merged_env: &BTreeMap<String, String>,
    credentials: &BTreeMap<String, CredentialPolicy>,
) -> Result<(), Rejection> {
    for (key, policy) in credentials {
        let source = &policy.source.env;
        if merged_env.get(source).is_none_or(|v| v.trim().is_empty()) {
            return Err(Rejection::invalid_request(format!(
                "env var {source:?} must be non-empty when referenced by credentials[{key:?}]"
            )));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use serde_json::json;

    use super::*;
    use crate::error::ErrorCode;
    use crate::schema;

    #[test]
    fn update_requests() {
        let check = |body: serde_json::Value| -> Result<InstanceUpdate, Rejection> {
            schema::check_body(
                "UpdateInstanceRequest",
                &schema::update_instance_request(),
                &body,
            )?;
            serde_json::from_value::<UpdateInstanceRequest>(body)
                .unwrap()
                .validate()
        };
        let err = check(json!({"env": {}})).unwrap_err();
        assert_eq!(err.code, ErrorCode::SchemaViolation);
        assert_eq!(
            err.message,
            "request body has an error: doesn't match schema #/components/schemas/UpdateInstanceRequest: Error at \"/env\": there must be at least 1 properties"
        );
        let err = check(json!({})).unwrap_err();
        assert_eq!(err.code, ErrorCode::InvalidRequest);
        assert_eq!(
            err.message,
            "invalid request: request must include env, auto_standby, health_check, and/or restart_policy"
        );
        assert!(check(json!({"env": {"K": "v"}})).is_ok());
        // The allow-list extension: validated, and enough on its own.
        let update = check(
            json!({"network": {"egress": {"allow": ["PyPI.org", "*.githubusercontent.com"]}}}),
        )
        .unwrap();
        assert_eq!(
            update.allow.unwrap().entries(),
            ["pypi.org", "*.githubusercontent.com"]
        );
        let err = check(json!({"network": {"egress": {"allow": ["not a host"]}}})).unwrap_err();
        assert_eq!(err.code, ErrorCode::InvalidRequest);
        assert!(err.message.contains("\"not a host\""), "{}", err.message);
        let err = check(json!({"network": {"egress": {"allow": "pypi.org"}}})).unwrap_err();
        assert_eq!(err.code, ErrorCode::SchemaViolation);
        assert!(check(json!({"network": {}})).is_err(), "nothing to do");

        let creds: BTreeMap<String, CredentialPolicy> = serde_json::from_value(json!({
            "OUTBOUND_OPENAI_KEY": {"source": {"env": "OUTBOUND_OPENAI_KEY"},
                "inject": [{"as": {"header": "Authorization", "format": "Bearer ${value}"}}]}
        }))
        .unwrap();
        let env = |pairs: &[(&str, &str)]| -> BTreeMap<String, String> {
            pairs
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect()
        };
        assert_eq!(
            check_env_update(&env(&[("PORT", "4000")]), &creds, true)
                .unwrap_err()
                .message,
            "invalid request: env keys [PORT] are not credential source env vars; allowed keys: [OUTBOUND_OPENAI_KEY]"
        );
        assert_eq!(
            check_env_update(
                &env(&[("OUTBOUND_OPENAI_KEY", "x")]),
                &BTreeMap::new(),
                false
            )
            .unwrap_err()
            .message,
            "invalid request: instance has no credential-backed env vars to update"
        );
        assert!(check_env_update(&env(&[("OUTBOUND_OPENAI_KEY", "x")]), &creds, true).is_ok());
        assert_eq!(
            check_bindings_non_empty(&env(&[("OUTBOUND_OPENAI_KEY", "  ")]), &creds)
                .unwrap_err()
                .message,
            "invalid request: env var \"OUTBOUND_OPENAI_KEY\" must be non-empty when referenced by credentials[\"OUTBOUND_OPENAI_KEY\"]"
        );
    }
}
