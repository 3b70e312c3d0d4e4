//! The vault: the only code that touches the keychain for instance credentials. It reads
//! values through its cache, writes a batch all-or-nothing (putting back what a failed batch
//! overwrote), forgets an instance's values, resolves secret references (when allowed, see
//! `credentials.rs`) and refreshes referenced values at start.
//!
//! Invariants: the cache holds what the keychain held when it was last read, and is dropped
//! for an instance whenever one of its values is written or deleted; no value appears in an
//! error or a log line.

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use hypedeck_secrets::{SecretError, SecretStore, Sensitive};
use hypedeck_store::InstanceRecord;

use crate::EngineError;
use crate::credentials::Caller;

type Values = BTreeMap<String, Sensitive<String>>;

/// What [`Vault::set_all`] sets for one item: an account and its value (none: skip it).
type Target<T> =
    fn(&dyn SecretStore, &T) -> Result<Option<(String, Sensitive<String>)>, SecretError>;

/// Credential values of every instance, by keychain account.
#[derive(Debug)]
pub(crate) struct Vault {
    store: Arc<dyn SecretStore>,
    /// Values by instance id, then env key.
    cache: Mutex<HashMap<String, Values>>,
    /// Whether HTTP clients may set secret references (an explicit opt-in).
    http_references: AtomicBool,
    /// Bumped whenever a value may have changed (every [`Vault::flush`]): what was rendered
    /// from the values of an older generation is stale.
    generation: AtomicU64,
}

/// What a successful [`Vault::write`] replaced, so a later failure of the same verb can put
/// it back with [`Vault::undo`].
#[derive(Debug, Clone)]
#[must_use = "a write that a later step fails must be undone"]
pub(crate) struct Written {
    id: String,
    /// Account and the value it held before (`None`: it did not exist).
    previous: Vec<(String, Option<Sensitive<String>>)>,
}

impl Vault {
    pub(crate) fn new(store: Arc<dyn SecretStore>) -> Vault {
        Vault {
            store,
            cache: Mutex::new(HashMap::new()),
            http_references: AtomicBool::new(false),
            generation: AtomicU64::new(0),
        }
    }

    /// The values' generation: it changes whenever a value may have (read it before reading
    /// the values it is to vouch for).
    pub(crate) fn generation(&self) -> u64 {
        self.generation.load(Ordering::SeqCst)
    }

    fn cache(&self) -> MutexGuard<'_, HashMap<String, Values>> {
        // Only whole inserts and removes happen under this lock: a poisoned one is consistent.
        self.cache.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Runs a keychain call off the async runtime.
    async fn blocking<T: Send + 'static>(
        &self,
        f: impl FnOnce(&dyn SecretStore) -> Result<T, SecretError> + Send + 'static,
    ) -> Result<T, EngineError> {
        let store = self.store.clone();
        tokio::task::spawn_blocking(move || f(store.as_ref()))
            .await
            .map_err(|_| EngineError::Task)?
            .map_err(EngineError::from)
    }

    /// The instance's credential values by env key (keys without a value are absent).
    pub(crate) async fn read(&self, record: &InstanceRecord) -> Result<Values, EngineError> {
        if let Some(cached) = self.cache().get(&record.id)
            && cached.len() == record.secret_env.len()
        {
            return Ok(cached.clone());
        }
        let accounts: Vec<(String, String)> = record
            .secret_env
            .iter()
            .map(|(k, r)| (k.clone(), r.keychain_account.clone()))
            .collect();
        let values = self
            .blocking(move |store| {
                let mut out = BTreeMap::new();
                for (key, account) in accounts {
                    if let Some(value) = store.get(&account)? {
                        out.insert(key, value);
                    }
                }
                Ok(out)
            })
            .await?;
        self.cache().insert(record.id.clone(), values.clone());
        Ok(values)
    }

    /// Writes every `(account, value)` of instance `id`, or none: when one write fails, the
    /// accounts written before it get their old values back (or are deleted) and the error
    /// is returned. Either way the instance's cache is dropped.
    pub(crate) async fn write(
        &self,
        id: &str,
        batch: Vec<(String, Sensitive<String>)>,
    ) -> Result<Written, EngineError> {
        self.set_all(id, batch, |_, (account, value)| {
            Ok(Some((account.clone(), value.clone())))
        })
        .await
    }

    /// Copies each `(from, to)` account's value into `to`, for `owner` (a fork's or a
    /// snapshot's id): all or none, like [`Vault::write`]. An account without a value is
    /// skipped. The values never leave the blocking task.
    pub(crate) async fn copy(
        &self,
        owner: &str,
        pairs: Vec<(String, String)>,
    ) -> Result<Written, EngineError> {
        self.set_all(owner, pairs, |store, (from, to)| {
            Ok(store.get(from)?.map(|value| (to.clone(), value)))
        })
        .await
    }

    /// Sets, for each item, the account and value `target` names (none: skipped), all or
    /// none: when one fails, those set before it are put back. `owner`'s cache is dropped.
    async fn set_all<T: Send + Sync + 'static>(
        &self,
        owner: &str,
        items: Vec<T>,
        target: Target<T>,
    ) -> Result<Written, EngineError> {
        let result = self
            .blocking(move |store| {
                let mut previous = Vec::with_capacity(items.len());
                for item in &items {
                    let step = target(store, item).and_then(|t| match t {
                        None => Ok(None),
                        Some((account, value)) => store
                            .get(&account)
                            .and_then(|old| store.set(&account, &value).map(|()| Some((account, old)))),
                    });
                    match step {
                        Ok(None) => {}
                        Ok(Some(replaced)) => previous.push(replaced),
                        Err(e) => {
                            if let Err(undo) = put_back(store, &previous) {
                                tracing::error!(error = %undo, "could not roll back keychain values");
                            }
                            return Err(e);
                        }
                    }
                }
                Ok(previous)
            })
            .await;
        self.flush(owner);
        Ok(Written {
            id: owner.to_string(),
            previous: result?,
        })
    }

    /// Puts back what `written` replaced (a later step of the same verb failed).
    pub(crate) async fn undo(&self, written: Written) {
        let Written { id, previous } = written;
        if let Err(e) = self.blocking(move |store| put_back(store, &previous)).await {
            tracing::error!(error = %e, %id, "could not roll back keychain values");
        }
        self.flush(&id);
    }

    /// Deletes the accounts of instance `id` (delete, or a create that failed).
    pub(crate) async fn forget(&self, id: &str, accounts: Vec<String>) {
        let result = self
            .blocking(move |store| {
                for account in &accounts {
                    store.delete(account)?;
                }
                Ok(())
            })
            .await;
        if let Err(e) = result {
            tracing::warn!(error = %e, %id, "could not remove keychain entries");
        }
        self.flush(id);
    }

    /// Drops the instance's cached values.
    pub(crate) fn flush(&self, id: &str) {
        self.cache().remove(id);
        self.generation.fetch_add(1, Ordering::SeqCst);
    }

    /// Lets (or stops) HTTP clients set secret references.
    pub(crate) fn allow_http_references(&self, allowed: bool) {
        self.http_references.store(allowed, Ordering::Relaxed);
    }

    /// Refuses `caller` when it may not resolve references.
    pub(crate) fn check_caller(&self, caller: Caller) -> Result<(), EngineError> {
        match caller {
            Caller::Local => Ok(()),
            Caller::Http if self.http_references.load(Ordering::Relaxed) => Ok(()),
            Caller::Http => Err(crate::credentials::refuse(
                crate::credentials::REFERENCES_LOCAL_ONLY.into(),
            )),
        }
    }

    /// Resolves `value` when it is a reference (and `caller` may resolve one), else returns
    /// it.
    pub(crate) async fn value_of(
        &self,
        value: &str,
        caller: Caller,
    ) -> Result<Sensitive<String>, EngineError> {
        if crate::credentials::reference_kind(value).is_none() {
            return Ok(Sensitive::new(value.to_string()));
        }
        self.check_caller(caller)?;
        crate::credentials::resolve_reference(value).await
    }

    /// Resolves the instance's secret references again (at every start), storing a value that
    /// changed. A reference that fails keeps the last value and says so in the log.
    pub(crate) async fn refresh_references(&self, record: &mut InstanceRecord) {
        let refs: Vec<(String, String, String)> = record
            .secret_env
            .iter()
            .filter_map(|(k, r)| {
                Some((k.clone(), r.keychain_account.clone(), r.reference.clone()?))
            })
            .collect();
        if refs.is_empty() {
            return;
        }
        let current = self.read(record).await.unwrap_or_default();
        for (key, account, reference) in refs {
            // The engine itself re-reads what a permitted caller stored.
            let value = match self.value_of(&reference, Caller::Local).await {
                Ok(v) => v,
                Err(e) => {
                    tracing::warn!(id = %record.id, %key, error = %e, "secret reference not resolved; keeping the last value");
                    continue;
                }
            };
            if current.get(&key) == Some(&value) {
                continue;
            }
            match self.write(&record.id, vec![(account, value)]).await {
                Ok(_) => {
                    if let Some(r) = record.secret_env.get_mut(&key) {
                        r.rotated_at = Some(time::OffsetDateTime::now_utc());
                    }
                    tracing::info!(id = %record.id, %key, "secret reference resolved to a new value");
                }
                Err(e) => {
                    tracing::warn!(id = %record.id, %key, error = %e, "resolved value not stored")
                }
            }
        }
    }
}

/// Restores accounts to `previous` (set the old value, or delete what did not exist).
fn put_back(
    store: &dyn SecretStore,
    previous: &[(String, Option<Sensitive<String>>)],
) -> Result<(), SecretError> {
    for (account, old) in previous.iter().rev() {
        match old {
            Some(v) => store.set(account, v)?,
            None => store.delete(account)?,
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use hypedeck_secrets::MemoryStore;

    /// A store whose `set` fails for one account.
    #[derive(Debug)]
    struct FailsOn(MemoryStore, &'static str);

    impl SecretStore for FailsOn {
        fn set(&self, account: &str, value: &Sensitive<String>) -> Result<(), SecretError> {
            if account == self.1 {
                return Err(SecretError::Unavailable("scripted".into()));
            }
            self.0.set(account, value)
        }
        fn get(&self, account: &str) -> Result<Option<Sensitive<String>>, SecretError> {
            self.0.get(account)
        }
        fn delete(&self, account: &str) -> Result<(), SecretError> {
            self.0.delete(account)
        }
    }

    fn v(s: &str) -> Sensitive<String> {
        Sensitive::new(s.to_string())
    }

    #[tokio::test]
    async fn a_batch_is_written_whole_or_not_at_all_and_undo_puts_it_back() {
        let store = Arc::new(FailsOn(MemoryStore::new(), "c"));
        store.0.set("a", &v("a-old")).unwrap();
        let vault = Vault::new(store.clone());

        // "b" did not exist and "c" fails: "a" gets its value back and "b" is gone.
        let err = vault
            .write(
                "i",
                vec![
                    ("a".into(), v("a-new")),
                    ("b".into(), v("b-new")),
                    ("c".into(), v("x")),
                ],
            )
            .await
            .unwrap_err();
        assert!(matches!(err, EngineError::Secrets(_)), "{err:?}");
        assert_eq!(store.0.get("a").unwrap().unwrap().expose(), "a-old");
        assert!(store.0.get("b").unwrap().is_none());

        let written = vault
            .write(
                "i",
                vec![("a".into(), v("a-new")), ("b".into(), v("b-new"))],
            )
            .await
            .unwrap();
        assert_eq!(store.0.get("a").unwrap().unwrap().expose(), "a-new");
        vault.undo(written).await;
        assert_eq!(store.0.get("a").unwrap().unwrap().expose(), "a-old");
        assert!(store.0.get("b").unwrap().is_none());
    }

    #[tokio::test]
    async fn a_copy_makes_separate_entries_whole_or_not_at_all() {
        let store = Arc::new(FailsOn(MemoryStore::new(), "fork/c"));
        store.0.set("src/a", &v("a-value")).unwrap();
        store.0.set("src/c", &v("c-value")).unwrap();
        let vault = Vault::new(store.clone());

        // "src/b" has no value (skipped); "fork/c" fails: nothing of the copy stays.
        let pairs = |c: bool| {
            let mut p: Vec<(String, String)> = vec![
                ("src/a".into(), "fork/a".into()),
                ("src/b".into(), "fork/b".into()),
            ];
            if c {
                p.push(("src/c".into(), "fork/c".into()));
            }
            p
        };
        assert!(vault.copy("fork", pairs(true)).await.is_err());
        assert!(store.0.get("fork/a").unwrap().is_none());

        let written = vault.copy("fork", pairs(false)).await.unwrap();
        assert_eq!(store.0.get("fork/a").unwrap().unwrap().expose(), "a-value");
        assert!(store.0.get("fork/b").unwrap().is_none());
        // Separate entries: changing the copy leaves the source alone.
        store.0.set("fork/a", &v("rotated")).unwrap();
        assert_eq!(store.0.get("src/a").unwrap().unwrap().expose(), "a-value");
        vault.undo(written).await;
        assert!(store.0.get("fork/a").unwrap().is_none());
    }

    /// Only the user at this machine may have references resolved, unless the engine opted in
    /// to HTTP clients; a literal value is anyone's.
    #[tokio::test]
    async fn references_are_for_local_callers_unless_http_opted_in() {
        let vault = Vault::new(Arc::new(MemoryStore::new()));
        let e = vault
            .value_of("cmd:echo sk-x", Caller::Http)
            .await
            .unwrap_err()
            .to_string();
        assert!(e.contains("only by the user at this machine"), "{e}");
        assert_eq!(
            vault
                .value_of("sk-literal", Caller::Http)
                .await
                .unwrap()
                .expose(),
            "sk-literal"
        );
        assert_eq!(
            vault
                .value_of("cmd:echo sk-x", Caller::Local)
                .await
                .unwrap()
                .expose(),
            "sk-x"
        );
        vault.allow_http_references(true);
        assert_eq!(
            vault
                .value_of("cmd:echo sk-x", Caller::Http)
                .await
                .unwrap()
                .expose(),
            "sk-x"
        );
    }
}
