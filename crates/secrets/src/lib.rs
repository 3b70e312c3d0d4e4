//! Secret values and where they live.
//!
//! - [`Sensitive<T>`] wraps a secret so that `Debug` and `Display` print `<redacted>`; the only
//!   way to the value is [`Sensitive::expose`], which makes every use greppable.
//! - [`SecretStore`] is the storage boundary. [`KeychainStore`] is the OS keychain (Secret
//!   Service on Linux, Keychain on macOS, Credential Manager on Windows); [`MemoryStore`] is
//!   for tests.
//!
//! Invariants: a secret value never reaches a log line, an error message, a panic message or
//! a file; [`SecretError`] carries no value, only what failed.

use std::collections::HashMap;
use std::fmt;
use std::sync::{Arc, Mutex};

/// A value that must not be printed.
#[derive(Clone, PartialEq, Eq, Default)]
pub struct Sensitive<T>(T);

impl<T> Sensitive<T> {
    /// Wraps a secret.
    pub fn new(value: T) -> Self {
        Sensitive(value)
    }

    /// The secret itself. Call sites are the audit list of where secrets flow.
    pub fn expose(&self) -> &T {
        &self.0
    }

    /// Unwraps the secret.
    pub fn into_inner(self) -> T {
        self.0
    }
}

impl<T> fmt::Debug for Sensitive<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("<redacted>")
    }
}

impl<T> fmt::Display for Sensitive<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("<redacted>")
    }
}

impl From<String> for Sensitive<String> {
    fn from(value: String) -> Self {
        Sensitive(value)
    }
}

/// What went wrong with the secret store. Never carries a secret value.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SecretError {
    /// No keychain is reachable (no Secret Service on the session bus, locked keychain…).
    #[error("the OS keychain is not available: {0}")]
    Unavailable(String),
    /// The keychain refused or failed the operation.
    #[error("the OS keychain failed to {operation}: {detail}")]
    Platform {
        /// What was attempted.
        operation: &'static str,
        /// The platform's reason (never the value).
        detail: String,
    },
    /// The stored value is not valid UTF-8.
    #[error("the keychain entry is not valid text")]
    BadEncoding,
}

/// Storage of named secrets. Accounts are plain names such as `api-token` or
/// `instance/<id>/env/<KEY>`; one store serves one service name.
///
/// All methods block (keychains are synchronous IPC); async callers use `spawn_blocking`.
pub trait SecretStore: Send + Sync + fmt::Debug {
    /// Stores or replaces the value of `account`. Idempotent.
    fn set(&self, account: &str, value: &Sensitive<String>) -> Result<(), SecretError>;
    /// The value of `account`, or `None` if there is none.
    fn get(&self, account: &str) -> Result<Option<Sensitive<String>>, SecretError>;
    /// Removes `account`. Idempotent: deleting a missing account succeeds.
    fn delete(&self, account: &str) -> Result<(), SecretError>;
}

/// The OS keychain.
pub struct KeychainStore {
    service: String,
    store: Arc<keyring_core::CredentialStore>,
}

impl fmt::Debug for KeychainStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("KeychainStore")
            .field("service", &self.service)
            .finish_non_exhaustive()
    }
}

impl KeychainStore {
    /// Opens the platform keychain for `service` (e.g. `"hypedeck"`), and checks that it
    /// answers, so a missing Secret Service is reported at start-up, not at first use.
    pub fn open(service: &str) -> Result<KeychainStore, SecretError> {
        let store = platform_store()?;
        let keychain = KeychainStore {
            service: service.to_string(),
            store,
        };
        keychain.get("hypedeck-probe")?;
        Ok(keychain)
    }

    fn entry(&self, account: &str) -> Result<keyring_core::Entry, SecretError> {
        keyring_core::Entry::new_in_store(&self.store, &self.service, account)
            .map_err(|e| map_error("open entry", e))
    }
}

/// A keychain item a credential can refer to (`keychain:<service>/<account>`). Never its value.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct KeychainItem {
    /// The item's `service` attribute.
    pub service: String,
    /// The item's `username` (account) attribute.
    pub account: String,
}

/// The OS keychain's items that have a service and an account (what `keychain:` references
/// name), sorted, minus those of `exclude_service` (Hypedeck's own: tokens, CA key, values).
/// Reads names only, never values. Locked items may make the OS ask the user to unlock.
pub fn keychain_items(exclude_service: &str) -> Result<Vec<KeychainItem>, SecretError> {
    let store = platform_store()?;
    let entries = keyring_core::Entry::search_in_store(&store, &std::collections::HashMap::new())
        .map_err(|e| map_error("list items", e))?;
    let mut items: Vec<KeychainItem> = entries
        .iter()
        .filter_map(|entry| {
            let attributes = entry.get_attributes().ok()?;
            let service = attributes.get("service")?.clone();
            let account = attributes
                .get("username")
                .or_else(|| attributes.get("account"))?
                .clone();
            (service != exclude_service && !service.is_empty() && !account.is_empty())
                .then_some(KeychainItem { service, account })
        })
        .collect();
    items.sort();
    items.dedup();
    Ok(items)
}

#[cfg(target_os = "linux")]
fn platform_store() -> Result<Arc<keyring_core::CredentialStore>, SecretError> {
    zbus_secret_service_keyring_store::Store::new()
        .map(|s| s as Arc<keyring_core::CredentialStore>)
        .map_err(|e| SecretError::Unavailable(describe(&e)))
}

#[cfg(target_os = "macos")]
fn platform_store() -> Result<Arc<keyring_core::CredentialStore>, SecretError> {
    apple_native_keyring_store::keychain::Store::new()
        .map(|s| s as Arc<keyring_core::CredentialStore>)
        .map_err(|e| SecretError::Unavailable(describe(&e)))
}

#[cfg(target_os = "windows")]
fn platform_store() -> Result<Arc<keyring_core::CredentialStore>, SecretError> {
    windows_native_keyring_store::Store::new()
        .map(|s| s as Arc<keyring_core::CredentialStore>)
        .map_err(|e| SecretError::Unavailable(describe(&e)))
}

#[cfg(not(any(target_os = "linux", target_os = "macos", target_os = "windows")))]
fn platform_store() -> Result<Arc<keyring_core::CredentialStore>, SecretError> {
    Err(SecretError::Unavailable(
        "no keychain support for this operating system".into(),
    ))
}

/// Describes a keyring error without ever including secret bytes (`BadEncoding` and
/// `BadDataFormat` carry the raw value, so they are never formatted with `{:?}`).
fn describe(error: &keyring_core::Error) -> String {
    use keyring_core::Error as E;
    match error {
        E::PlatformFailure(inner) | E::NoStorageAccess(inner) => inner.to_string(),
        E::NoEntry => "no such entry".into(),
        E::BadEncoding(_) => "entry is not valid text".into(),
        E::BadDataFormat(_, _) => "entry has an unexpected format".into(),
        E::BadStoreFormat(detail) => detail.clone(),
        E::NoDefaultStore => "no default keychain".into(),
        other => format!("{}", ErrorKindOnly(other)),
    }
}

/// Prints only the variant name of a keyring error.
struct ErrorKindOnly<'a>(&'a keyring_core::Error);

impl fmt::Display for ErrorKindOnly<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        use keyring_core::Error as E;
        let name = match self.0 {
            E::TooLong(..) => "attribute too long",
            E::Invalid(..) => "invalid attribute",
            E::Ambiguous(..) => "ambiguous entry",
            E::NotSupportedByStore(..) => "not supported by this keychain",
            _ => "keychain error",
        };
        f.write_str(name)
    }
}

fn map_error(operation: &'static str, error: keyring_core::Error) -> SecretError {
    match error {
        keyring_core::Error::NoStorageAccess(_) | keyring_core::Error::NoDefaultStore => {
            SecretError::Unavailable(describe(&error))
        }
        keyring_core::Error::BadEncoding(_) => SecretError::BadEncoding,
        other => SecretError::Platform {
            operation,
            detail: describe(&other),
        },
    }
}

impl SecretStore for KeychainStore {
    fn set(&self, account: &str, value: &Sensitive<String>) -> Result<(), SecretError> {
        self.entry(account)?
            .set_password(value.expose())
            .map_err(|e| map_error("store a secret", e))
    }

    fn get(&self, account: &str) -> Result<Option<Sensitive<String>>, SecretError> {
        match self.entry(account)?.get_password() {
            Ok(value) => Ok(Some(Sensitive::new(value))),
            Err(keyring_core::Error::NoEntry) => Ok(None),
            Err(e) => Err(map_error("read a secret", e)),
        }
    }

    fn delete(&self, account: &str) -> Result<(), SecretError> {
        match self.entry(account)?.delete_credential() {
            Ok(()) | Err(keyring_core::Error::NoEntry) => Ok(()),
            Err(e) => Err(map_error("delete a secret", e)),
        }
    }
}

/// An in-memory store for tests and for tools that must not touch the real keychain.
#[derive(Default)]
pub struct MemoryStore {
    values: Mutex<HashMap<String, String>>,
}

impl fmt::Debug for MemoryStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let count = self.values.lock().map(|v| v.len()).unwrap_or(0);
        f.debug_struct("MemoryStore")
            .field("entries", &count)
            .finish()
    }
}

impl MemoryStore {
    /// An empty store.
    pub fn new() -> Self {
        MemoryStore::default()
    }

    fn values(&self) -> Result<std::sync::MutexGuard<'_, HashMap<String, String>>, SecretError> {
        self.values.lock().map_err(|_| SecretError::Platform {
            operation: "lock",
            detail: "poisoned".into(),
        })
    }
}

impl SecretStore for MemoryStore {
    fn set(&self, account: &str, value: &Sensitive<String>) -> Result<(), SecretError> {
        self.values()?
            .insert(account.to_string(), value.expose().clone());
        Ok(())
    }

    fn get(&self, account: &str) -> Result<Option<Sensitive<String>>, SecretError> {
        Ok(self.values()?.get(account).cloned().map(Sensitive::new))
    }

    fn delete(&self, account: &str) -> Result<(), SecretError> {
        self.values()?.remove(account);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sensitive_never_prints_its_value() {
        let s = Sensitive::new("sk-test-do-not-print".to_string());
        assert_eq!(format!("{s:?}"), "<redacted>");
        assert_eq!(format!("{s}"), "<redacted>");
        #[derive(Debug)]
        #[allow(dead_code)]
        struct Holder {
            token: Sensitive<String>,
        }
        let text = format!("{:?}", Holder { token: s.clone() });
        assert!(!text.contains("do-not-print"), "{text}");
        assert_eq!(s.expose(), "sk-test-do-not-print");
    }

    fn exercise(store: &dyn SecretStore, account: &str) {
        store.delete(account).unwrap();
        assert_eq!(store.get(account).unwrap(), None);
        store
            .set(account, &Sensitive::new("first-ü".to_string()))
            .unwrap();
        assert_eq!(store.get(account).unwrap().unwrap().expose(), "first-ü");
        store
            .set(account, &Sensitive::new("second".to_string()))
            .unwrap();
        assert_eq!(store.get(account).unwrap().unwrap().expose(), "second");
        store.delete(account).unwrap();
        store.delete(account).unwrap();
        assert_eq!(store.get(account).unwrap(), None);
    }

    #[test]
    fn memory_store_contract() {
        exercise(&MemoryStore::new(), "instance/x/env/KEY");
    }

    /// Runs against the real OS keychain. CI runs it inside a D-Bus session with an unlocked
    /// gnome-keyring (`HYPEDECK_TEST_KEYCHAIN=1`); elsewhere it is ignored rather than faked.
    #[test]
    #[ignore = "needs a real OS keychain; run with --include-ignored inside a keyring session"]
    fn keychain_items_list_names_never_values_and_skip_the_excluded_service() {
        let service = format!("hypedeck-test-picker-{}", std::process::id());
        let store = KeychainStore::open(&service).expect("keychain available");
        store
            .set("bot", &Sensitive::new("picker-secret-value".to_string()))
            .unwrap();
        let items = keychain_items("hypedeck").unwrap();
        assert!(
            items.contains(&KeychainItem {
                service: service.clone(),
                account: "bot".into()
            }),
            "{items:?}"
        );
        assert!(!format!("{items:?}").contains("picker-secret-value"));
        assert!(
            !keychain_items(&service)
                .unwrap()
                .iter()
                .any(|i| i.service == service)
        );
        store.delete("bot").unwrap();
        assert!(
            !keychain_items("hypedeck")
                .unwrap()
                .iter()
                .any(|i| i.service == service)
        );
    }

    #[test]
    #[ignore = "needs a real OS keychain; run with --include-ignored inside a keyring session"]
    fn keychain_store_contract() {
        let store = KeychainStore::open("hypedeck-test").expect("keychain available");
        exercise(&store, &format!("contract-{}", std::process::id()));
        assert!(!format!("{store:?}").contains("second"));
    }
}
