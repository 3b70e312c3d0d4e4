//! Provisioning as staged acquisition. A launch (boot or restore) acquires, in order, the
//! instance's egress attachment (proxy rules holding its real credentials), its sandbox
//! network (stack, forwarded ports, vhost-user backend) and its VMM; a create acquires before
//! those its keychain items and its directory. [`Staged`] is the guard over all of them: the
//! verb either commits it (the instance runs) or releases it, which undoes every kind of
//! resource the stage may have touched. Releasing what was never acquired is a no-op, so a
//! step that failed half-way is undone too.
//!
//! A guard dropped while armed — the verb's future was cancelled — releases on a spawned task,
//! holding the instance's lock (when it owns it) until everything is undone. The API runs
//! mutating verbs detached from their request, so this is the last line, not the usual path.

use std::path::PathBuf;
use std::sync::Arc;

use hypedeck_egress::EgressProxy;

use crate::Engine;
use crate::network::Networks;
use crate::records::Records;
use crate::runtime::Runtime;
use crate::vault::Vault;

/// What a stage may have acquired for one instance, released unless committed.
#[must_use = "a stage is committed or released"]
#[derive(Debug)]
pub(crate) struct Staged {
    parts: Option<Parts>,
}

#[derive(Debug)]
struct Parts {
    id: String,
    runtime: Arc<Runtime>,
    networks: Arc<Networks>,
    egress: Option<Arc<EgressProxy>>,
    created: Option<Created>,
}

/// What only a create owns: the instance's directory, its keychain items, and its lock.
#[derive(Debug)]
struct Created {
    dir: PathBuf,
    records: Arc<Records>,
    vault: Arc<Vault>,
    accounts: Vec<String>,
    _lock: tokio::sync::OwnedMutexGuard<()>,
}

impl Engine {
    /// A stage for a launch of instance `id`.
    pub(crate) fn stage(&self, id: &str) -> Staged {
        Staged {
            parts: Some(Parts {
                id: id.to_string(),
                runtime: self.runtime.clone(),
                networks: self.networks.clone(),
                egress: self.egress_proxy(),
                created: None,
            }),
        }
    }

    /// A stage for a create of instance `id`: on release also its directory and keychain
    /// `accounts` go, and `lock` (the instance's) is held until they have.
    pub(crate) fn stage_create(
        &self,
        id: &hypedeck_model::InstanceId,
        accounts: Vec<String>,
        lock: tokio::sync::OwnedMutexGuard<()>,
    ) -> Staged {
        let mut staged = self.stage(id.as_str());
        self.runtime.set_creating(id.as_str(), true);
        if let Some(parts) = staged.parts.as_mut() {
            parts.created = Some(Created {
                dir: self.paths.instance_dir(id),
                records: self.records.clone(),
                vault: self.vault.clone(),
                accounts,
                _lock: lock,
            });
        }
        staged
    }
}

impl Staged {
    /// The instance runs: keep everything.
    pub(crate) fn commit(mut self) {
        if let Some(parts) = self.parts.take()
            && parts.created.is_some()
        {
            parts.runtime.set_creating(&parts.id, false);
        }
    }

    /// Undoes everything the stage may have acquired, newest first.
    pub(crate) async fn release(mut self) {
        if let Some(parts) = self.parts.take() {
            parts.release().await;
        }
    }
}

impl Parts {
    async fn release(self) {
        let id = self.id.as_str();
        if let Some(vm) = self.runtime.ended(id)
            && let Err(e) = vm.kill().await
        {
            tracing::error!(error = %e, %id, "could not kill the VMM of a failed launch");
        }
        self.networks.stop(id).await;
        if let Some(proxy) = &self.egress {
            proxy.detach(id).await;
        }
        if let Some(created) = self.created {
            self.runtime.forget(id);
            self.networks.forget(id);
            if let Err(e) = std::fs::remove_dir_all(&created.dir)
                && e.kind() != std::io::ErrorKind::NotFound
            {
                tracing::error!(error = %e, %id, "could not remove a failed create's directory");
            }
            if !created.dir.exists() {
                created.records.remove(id);
            }
            created.vault.forget(id, created.accounts).await;
            // `_lock` goes last: the next verb on this id sees nothing of the create.
        }
    }
}

impl Drop for Staged {
    fn drop(&mut self) {
        let Some(parts) = self.parts.take() else {
            return;
        };
        tracing::warn!(id = %parts.id, "a launch was cancelled; undoing what it acquired");
        match tokio::runtime::Handle::try_current() {
            Ok(handle) => {
                handle.spawn(parts.release());
            }
            Err(_) => {
                // No runtime left (shutting down): the directory is all that can go now; the
                // next engine's reconcile finds no VMM for it.
                if let Some(created) = &parts.created {
                    let _ = std::fs::remove_dir_all(&created.dir);
                    created.records.remove(&parts.id);
                }
            }
        }
    }
}
