//! `delete`: stop the VMM (graceful, capped), forget secrets, remove the directory.

use std::time::Duration;

use hypedeck_model::InstanceId;

use crate::{Engine, EngineError};

/// How long delete waits for a graceful guest power-off before killing the VMM.
const DELETE_GRACE: Duration = Duration::from_secs(2);

impl Engine {
    /// Deletes an instance in any state. Idempotent per id only in the sense that a second
    /// delete answers [`EngineError::NotFound`].
    pub async fn delete(&self, id_or_name: &str) -> Result<(), EngineError> {
        let record = self.resolve(id_or_name)?;
        let lock = self.lock_for(&record.id);
        let _guard = lock.lock().await;
        let id = InstanceId::parse(&record.id).map_err(|_| EngineError::NotFound)?;

        if let Some(vm) = self.runtime.vm(&record.id) {
            if vm.request_shutdown().await.is_ok() {
                let deadline = tokio::time::Instant::now() + DELETE_GRACE;
                while vm.is_alive().await && tokio::time::Instant::now() < deadline {
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            }
            vm.kill().await?;
            self.runtime.ended(&record.id);
        }
        self.unregister_egress(&record.id).await;
        self.detach_network(&record.id).await;
        self.forget_network(&record.id);
        self.forget_auto_standby(&record.id);
        let accounts: Vec<String> = record
            .secret_env
            .values()
            .map(|r| r.keychain_account.clone())
            .collect();
        self.vault.forget(&record.id, accounts).await;
        self.runtime.forget(&record.id);
        let dir = self.paths.instance_dir(&id);
        let removed = std::fs::remove_dir_all(&dir);
        // Listed while its metadata is there (a removal that failed half-way may have kept it).
        if !self.paths.instance_metadata(&id).exists() {
            self.records.remove(&record.id);
        }
        removed.map_err(|source| {
            EngineError::Store(hypedeck_store::StoreError::Write {
                path: dir.clone(),
                source,
            })
        })
    }
}
