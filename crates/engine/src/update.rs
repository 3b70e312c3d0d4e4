//! `update` (PATCH): merge credential source values and replace policies, in upstream's order.

use std::collections::BTreeMap;

use hypedeck_model::validate::{InstanceUpdate, check_bindings_non_empty, check_env_update};
use hypedeck_model::{Instance, Rejection};

use crate::{Engine, EngineError};

impl Engine {
    /// Applies a validated update. Order (upstream `lib/instances/update.go`): key checks (400)
    /// before the state check (409); a merge, never a delete; keychain first, metadata second,
    /// keychain rolled back if metadata cannot be written.
    pub async fn update(
        &self,
        id_or_name: &str,
        update: InstanceUpdate,
    ) -> Result<Instance, EngineError> {
        self.update_as(id_or_name, update, crate::Caller::Local)
            .await
    }

    /// [`Engine::update`] for `caller`: secret references are resolved only for a caller that
    /// may (see [`crate::Caller`]).
    pub async fn update_as(
        &self,
        id_or_name: &str,
        update: InstanceUpdate,
        caller: crate::Caller,
    ) -> Result<Instance, EngineError> {
        let (_guard, mut record, observed) = self.lock_and_observe(id_or_name).await?;
        if update.allow.is_some() && !record.network.enabled {
            return Err(EngineError::Rejected(Rejection::invalid_request(
                "network.egress.allow requires network.enabled=true",
            )));
        }
        // 400s (keys) are decided before the 409 (state), like upstream.
        if let Some(env) = &update.env {
            check_env_update(env, &record.credentials, record.network.egress.enabled)
                .map_err(EngineError::Rejected)?;
        }
        if update.env.is_some() && !observed.state.guest_up() {
            return Err(EngineError::InvalidState(format!(
                "instance must be running or initializing to update env (current state: {})",
                observed.state
            )));
        }

        let mut written = None;
        if let Some(env) = &update.env {
            let current = self.vault.read(&record).await?;
            let mut merged: BTreeMap<String, String> = record.env.clone();
            for (k, v) in &current {
                merged.insert(k.clone(), v.expose().clone());
            }
            for (k, v) in env {
                merged.insert(k.clone(), v.clone());
            }
            check_bindings_non_empty(&merged, &record.credentials)
                .map_err(EngineError::Rejected)?;

            let mut writes = Vec::new();
            for (key, value) in env {
                // References resolve before anything is written (a failure is a 400).
                let resolved = self.vault.value_of(value, caller).await?;
                let Some(reference) = record.secret_env.get_mut(key) else {
                    return Err(EngineError::Rejected(Rejection::invalid_request(format!(
                        "env var {key:?} is not stored as a credential"
                    ))));
                };
                writes.push((reference.keychain_account.clone(), resolved));
                reference.reference =
                    crate::credentials::reference_kind(value).map(|_| value.clone());
                reference.rotated_at = Some(time::OffsetDateTime::now_utc());
            }
            // All or nothing: the vault puts back what a failed batch overwrote.
            let batch = self.vault.write(&record.id, writes).await?;
            // Swap the proxy's rules: the next request through the proxy carries the new value.
            if let Err(e) = self.reload_egress_rules(&record).await {
                self.vault.undo(batch).await;
                return Err(e);
            }
            written = Some(batch);
        }

        for (key, value) in &update.policies {
            record.policies.insert(key.clone(), value.clone());
        }
        if let Some(list) = &update.allow {
            record.network.egress.allow = Some(list.clone());
        }
        if let Err(e) = self.records.save(&record) {
            if let Some(batch) = written {
                self.vault.undo(batch).await;
            }
            if let Err(e) = self.reload_egress_rules(&record).await {
                tracing::error!(error = %e, id = %record.id, "could not roll back egress rules");
            }
            return Err(e);
        }
        if let Some(list) = update.allow {
            // Saved first: what runs is never ahead of what a restart would rebuild.
            self.apply_allow_list(&record.id, Some(list));
        }
        let observed = self.observe(&mut record).await;
        self.render(&record, &observed).await
    }
}
