//! The proxy's certificate authority: one ECDSA P-256 CA per data dir, whose certificate the
//! guest trusts, and per-host leaf certificates it signs on demand.
//!
//! The CA certificate is public and lives in a file; the CA private key is a secret and lives
//! only in the [`SecretStore`] (and in memory). Leaf keys never leave memory.

use std::collections::HashMap;
use std::fs;
use std::io::{self, Write};
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use hypedeck_secrets::{SecretStore, Sensitive};
use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    Issuer, KeyPair, KeyUsagePurpose, PKCS_ECDSA_P256_SHA256, PublicKeyData,
};
use rustls::ServerConfig;
use rustls::crypto::CryptoProvider;
use rustls_pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer, ServerName};
use time::OffsetDateTime;

use crate::EgressError;

/// The CA's subject common name.
pub const CA_COMMON_NAME: &str = "Hypedeck egress CA";
/// How long a generated CA is valid.
const CA_VALIDITY: time::Duration = time::Duration::days(3650);
/// A stored CA closer than this to expiry is replaced (guests pick the new one up at boot).
const CA_RENEW_BEFORE: time::Duration = time::Duration::days(30);
/// How long a leaf's `ServerConfig` is reused.
const LEAF_CACHE_TTL: Duration = Duration::from_secs(24 * 3600);
/// Leaves are valid well beyond the cache lifetime, and backdated, so a guest whose clock is
/// a little off (say, restored from standby) still accepts them.
const LEAF_BACKDATE: time::Duration = time::Duration::days(1);
const LEAF_VALIDITY: time::Duration = time::Duration::days(7);
/// Bound on cached leaves; past it, expired ones are dropped, then everything.
const LEAF_CACHE_MAX: usize = 1024;

/// The proxy's CA. `Debug` shows only the subject.
pub struct CertificateAuthority {
    cert_pem: String,
    cert_der: CertificateDer<'static>,
    issuer: Issuer<'static, KeyPair>,
    provider: Arc<CryptoProvider>,
    leaves: Mutex<HashMap<String, CachedLeaf>>,
}

struct CachedLeaf {
    created: Instant,
    config: Arc<ServerConfig>,
}

impl std::fmt::Debug for CertificateAuthority {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CertificateAuthority")
            .field("subject", &CA_COMMON_NAME)
            .finish_non_exhaustive()
    }
}

impl CertificateAuthority {
    /// A fresh CA that lives only in memory (tests, throwaway proxies).
    pub fn generate() -> Result<CertificateAuthority, EgressError> {
        Ok(Self::generate_with_key()?.0)
    }

    /// Loads the CA whose certificate PEM is at `cert_path` and whose private key PEM is the
    /// secret `key_account` in `key_store`; creates and stores both if either is missing,
    /// unparsable, mismatched, or the certificate expires within 30 days.
    ///
    /// The key is written to the store before the certificate file, so a crash in between
    /// leaves "key without certificate", which the next call regenerates. The certificate is
    /// written atomically (temporary file, fsync, rename) with mode 0644. Blocking (keychain
    /// IPC and file I/O): async callers use `spawn_blocking`. A store that fails (as opposed
    /// to answering "no such key") is an error, never a reason to regenerate.
    pub fn load_or_create(
        cert_path: &Path,
        key_store: &dyn SecretStore,
        key_account: &str,
    ) -> Result<CertificateAuthority, EgressError> {
        let cert_pem = match fs::read_to_string(cert_path) {
            Ok(pem) => Some(pem),
            Err(e) if e.kind() == io::ErrorKind::NotFound => None,
            Err(e) => return Err(EgressError::ReadCaCert(e)),
        };
        let key_pem = key_store
            .get(key_account)
            .map_err(EgressError::CaKeyStore)?;
        match (&cert_pem, &key_pem) {
            (Some(cert), Some(key)) => match Self::from_pems(cert, key) {
                Ok(ca) => return Ok(ca),
                Err(reason) => tracing::warn!(reason, "egress ca unusable; generating a new one"),
            },
            (None, None) => tracing::info!("no egress ca yet; generating one"),
            _ => tracing::warn!("egress ca certificate or key missing; generating a new pair"),
        }
        let (ca, key_pem) = Self::generate_with_key()?;
        key_store
            .set(key_account, &key_pem)
            .map_err(EgressError::CaKeyStore)?;
        write_atomic(cert_path, ca.cert_pem.as_bytes()).map_err(EgressError::WriteCaCert)?;
        Ok(ca)
    }

    /// The CA certificate, PEM (what the guest installs).
    pub fn cert_pem(&self) -> String {
        self.cert_pem.clone()
    }

    fn generate_with_key() -> Result<(CertificateAuthority, Sensitive<String>), EgressError> {
        let key =
            KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256).map_err(EgressError::GenerateCert)?;
        let now = OffsetDateTime::now_utc();
        let mut params = CertificateParams::default();
        params.distinguished_name = DistinguishedName::new();
        params
            .distinguished_name
            .push(DnType::CommonName, CA_COMMON_NAME);
        params
            .distinguished_name
            .push(DnType::OrganizationName, "Hypedeck");
        params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
        params.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        params.not_before = now - time::Duration::days(1);
        params.not_after = now + CA_VALIDITY;
        let cert = params
            .self_signed(&key)
            .map_err(EgressError::GenerateCert)?;
        let key_pem = Sensitive::new(key.serialize_pem());
        let ca = CertificateAuthority::assemble(
            cert.pem(),
            cert.der().clone(),
            Issuer::new(params, key),
        );
        Ok((ca, key_pem))
    }

    /// Rebuilds a CA from its stored parts. The reason on failure is a fixed text.
    fn from_pems(
        cert_pem: &str,
        key_pem: &Sensitive<String>,
    ) -> Result<CertificateAuthority, &'static str> {
        let key = KeyPair::from_pem(key_pem.expose()).map_err(|_| "the stored key is not a key")?;
        let (_, pem) = x509_parser::pem::parse_x509_pem(cert_pem.as_bytes())
            .map_err(|_| "the certificate file is not pem")?;
        let cert = pem
            .parse_x509()
            .map_err(|_| "the certificate file is not a certificate")?;
        if cert.public_key().raw != key.subject_public_key_info().as_slice() {
            return Err("the certificate does not match the stored key");
        }
        let renew_at = OffsetDateTime::now_utc() + CA_RENEW_BEFORE;
        if cert.validity().not_after.timestamp() < renew_at.unix_timestamp() {
            return Err("the certificate expires soon");
        }
        if !cert.is_ca() {
            return Err("the certificate is not a ca");
        }
        let der = CertificateDer::from(pem.contents.clone());
        let issuer =
            Issuer::from_ca_cert_der(&der, key).map_err(|_| "the certificate cannot issue")?;
        Ok(CertificateAuthority::assemble(
            cert_pem.to_string(),
            der,
            issuer,
        ))
    }

    fn assemble(
        cert_pem: String,
        cert_der: CertificateDer<'static>,
        issuer: Issuer<'static, KeyPair>,
    ) -> CertificateAuthority {
        CertificateAuthority {
            cert_pem,
            cert_der,
            issuer,
            provider: Arc::new(rustls::crypto::aws_lc_rs::default_provider()),
            leaves: Mutex::new(HashMap::new()),
        }
    }

    /// The TLS server configuration presenting a leaf for `host` (canonical: lowercase, IPs
    /// in standard form), from the cache when fresh.
    pub(crate) fn server_config(&self, host: &str) -> Result<Arc<ServerConfig>, EgressError> {
        if let Some(config) = self.cached(host) {
            return Ok(config);
        }
        let config = Arc::new(self.leaf_config(host)?);
        let mut leaves = self.leaves.lock().unwrap_or_else(|p| p.into_inner());
        if leaves.len() >= LEAF_CACHE_MAX {
            leaves.retain(|_, leaf| leaf.created.elapsed() < LEAF_CACHE_TTL);
            if leaves.len() >= LEAF_CACHE_MAX {
                leaves.clear();
            }
        }
        leaves.insert(
            host.to_string(),
            CachedLeaf {
                created: Instant::now(),
                config: config.clone(),
            },
        );
        Ok(config)
    }

    fn cached(&self, host: &str) -> Option<Arc<ServerConfig>> {
        // A poisoned cache is still a valid cache (entries are inserted whole).
        let leaves = self.leaves.lock().unwrap_or_else(|p| p.into_inner());
        leaves
            .get(host)
            .filter(|leaf| leaf.created.elapsed() < LEAF_CACHE_TTL)
            .map(|leaf| leaf.config.clone())
    }

    /// Signs a leaf for `host` and wraps it (with the CA as chain) in a `ServerConfig`.
    fn leaf_config(&self, host: &str) -> Result<ServerConfig, EgressError> {
        let (cert_der, key_der) = self.sign_leaf(host)?;
        let mut config = ServerConfig::builder_with_provider(self.provider.clone())
            .with_safe_default_protocol_versions()
            .map_err(EgressError::Tls)?
            .with_no_client_auth()
            .with_single_cert(vec![cert_der, self.cert_der.clone()], key_der)
            .map_err(EgressError::Tls)?;
        // Like upstream, the tunnel speaks HTTP/1.1 only.
        config.alpn_protocols = vec![b"http/1.1".to_vec()];
        Ok(config)
    }

    /// A leaf certificate (DER) and its PKCS#8 key for `host`: SAN = the host (an IP SAN for
    /// an IP literal), server-auth only, signed by this CA.
    fn sign_leaf(
        &self,
        host: &str,
    ) -> Result<(CertificateDer<'static>, PrivateKeyDer<'static>), EgressError> {
        // Accept exactly what a TLS client could ask for: a DNS name or an IP address.
        ServerName::try_from(host).map_err(|_| EgressError::InvalidHost)?;
        if host.is_empty() || host.len() > 253 {
            return Err(EgressError::InvalidHost);
        }
        let mut params =
            CertificateParams::new(vec![host.to_string()]).map_err(|_| EgressError::InvalidHost)?;
        params.distinguished_name = DistinguishedName::new();
        // X.509 caps the common name at 64 characters; the SAN is what clients check.
        if host.len() <= 64 {
            params.distinguished_name.push(DnType::CommonName, host);
        }
        params.is_ca = IsCa::ExplicitNoCa;
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        params.use_authority_key_identifier_extension = true;
        let now = OffsetDateTime::now_utc();
        params.not_before = now - LEAF_BACKDATE;
        params.not_after = now + LEAF_VALIDITY;
        let key =
            KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256).map_err(EgressError::GenerateCert)?;
        let cert = params
            .signed_by(&key, &self.issuer)
            .map_err(EgressError::GenerateCert)?;
        let key_der = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.serialize_der()));
        Ok((cert.der().clone(), key_der))
    }
}

/// Writes `contents` to `path` atomically with mode 0644, creating the parent directory.
fn write_atomic(path: &Path, contents: &[u8]) -> io::Result<()> {
    let dir = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    };
    fs::create_dir_all(dir)?;
    let name = path
        .file_name()
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "no file name"))?;
    let tmp = dir.join(format!(
        ".{}.tmp-{}",
        name.to_string_lossy(),
        std::process::id()
    ));
    let result = (|| {
        let mut options = fs::OpenOptions::new();
        options.write(true).create(true).truncate(true);
        #[cfg(unix)]
        std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o644);
        let mut file = options.open(&tmp)?;
        #[cfg(unix)]
        file.set_permissions(std::os::unix::fs::PermissionsExt::from_mode(0o644))?;
        file.write_all(contents)?;
        file.sync_all()?;
        fs::rename(&tmp, path)?;
        #[cfg(unix)]
        fs::File::open(dir)?.sync_all()?;
        Ok(())
    })();
    if result.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    result
}

#[cfg(test)]
mod tests {
    use super::*;
    use hypedeck_secrets::MemoryStore;

    const ACCOUNT: &str = "egress-ca-key";

    #[test]
    fn load_or_create_round_trips_and_keeps_the_key_off_disk() {
        let dir = tempfile::tempdir().unwrap();
        let cert_path = dir.path().join("egress").join("ca.crt");
        let store = MemoryStore::new();

        let first = CertificateAuthority::load_or_create(&cert_path, &store, ACCOUNT).unwrap();
        assert!(first.cert_pem().starts_with("-----BEGIN CERTIFICATE-----"));
        assert_eq!(fs::read_to_string(&cert_path).unwrap(), first.cert_pem());
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = fs::metadata(&cert_path).unwrap().permissions().mode();
            assert_eq!(mode & 0o777, 0o644);
        }
        let key = store.get(ACCOUNT).unwrap().expect("key stored");
        assert!(key.expose().contains("PRIVATE KEY"));

        let second = CertificateAuthority::load_or_create(&cert_path, &store, ACCOUNT).unwrap();
        assert_eq!(
            second.cert_pem(),
            first.cert_pem(),
            "second call loads, not regenerates"
        );
        assert_eq!(store.get(ACCOUNT).unwrap().unwrap(), key);

        // Leaves signed by the loaded CA chain to the original certificate.
        verify_leaf(&first.cert_pem(), &second, "api.openai.com");

        // The key never touches the disk: scan every file under the data dir.
        let key_body = key_base64(key.expose());
        for entry in walk(dir.path()) {
            let bytes = fs::read(&entry).unwrap();
            let text = String::from_utf8_lossy(&bytes);
            assert!(!text.contains("PRIVATE KEY"), "{}", entry.display());
            assert!(!text.contains(&key_body), "{}", entry.display());
        }
        assert!(!format!("{second:?}").contains("PRIVATE"));
    }

    #[test]
    fn missing_or_mismatched_halves_regenerate_both() {
        let dir = tempfile::tempdir().unwrap();
        let cert_path = dir.path().join("ca.crt");
        let store = MemoryStore::new();
        let original = CertificateAuthority::load_or_create(&cert_path, &store, ACCOUNT).unwrap();

        // Key missing: new pair.
        store.delete(ACCOUNT).unwrap();
        let renewed = CertificateAuthority::load_or_create(&cert_path, &store, ACCOUNT).unwrap();
        assert_ne!(renewed.cert_pem(), original.cert_pem());
        assert!(store.get(ACCOUNT).unwrap().is_some());
        assert_eq!(fs::read_to_string(&cert_path).unwrap(), renewed.cert_pem());

        // Certificate missing: new pair, new key.
        let key_before = store.get(ACCOUNT).unwrap();
        fs::remove_file(&cert_path).unwrap();
        let third = CertificateAuthority::load_or_create(&cert_path, &store, ACCOUNT).unwrap();
        assert_ne!(third.cert_pem(), renewed.cert_pem());
        assert_ne!(store.get(ACCOUNT).unwrap(), key_before);

        // Mismatched key (another CA's): new pair.
        let other = MemoryStore::new();
        let other_path = dir.path().join("other.crt");
        CertificateAuthority::load_or_create(&other_path, &other, ACCOUNT).unwrap();
        store
            .set(ACCOUNT, &other.get(ACCOUNT).unwrap().unwrap())
            .unwrap();
        let fourth = CertificateAuthority::load_or_create(&cert_path, &store, ACCOUNT).unwrap();
        assert_ne!(fourth.cert_pem(), third.cert_pem());
        verify_leaf(&fourth.cert_pem(), &fourth, "example.com");

        // Garbage certificate: new pair.
        fs::write(&cert_path, "not a certificate").unwrap();
        let fifth = CertificateAuthority::load_or_create(&cert_path, &store, ACCOUNT).unwrap();
        assert_ne!(fifth.cert_pem(), fourth.cert_pem());
    }

    #[test]
    fn leaves_carry_the_host_as_san_and_are_cached() {
        let ca = CertificateAuthority::generate().unwrap();
        for host in ["api.openai.com", "10.1.2.3", "::1"] {
            let (der, _) = ca.sign_leaf(host).unwrap();
            let (_, cert) = x509_parser::parse_x509_certificate(&der).unwrap();
            let san = cert.subject_alternative_name().unwrap().unwrap();
            let names: Vec<String> = san
                .value
                .general_names
                .iter()
                .map(|n| n.to_string())
                .collect();
            assert_eq!(names.len(), 1, "{names:?}");
            match host.parse::<std::net::IpAddr>() {
                Ok(_) => assert!(names[0].starts_with("IPAddress("), "{names:?}"),
                Err(_) => assert_eq!(names[0], format!("DNSName({host})")),
            }
            assert!(!cert.is_ca());
        }
        let long = format!(
            "{}.{}.{}.{}.example",
            "a".repeat(63),
            "b".repeat(63),
            "c".repeat(63),
            "d".repeat(53)
        );
        assert_eq!(long.len(), 253);
        ca.sign_leaf(&long).expect("253-character names are valid");
        assert!(ca.sign_leaf(&format!("x{long}")).is_err());
        assert!(ca.sign_leaf("bad host").is_err());
        assert!(ca.sign_leaf("").is_err());

        let a = ca.server_config("api.openai.com").unwrap();
        let b = ca.server_config("api.openai.com").unwrap();
        assert!(Arc::ptr_eq(&a, &b));
        let c = ca.server_config("other.example").unwrap();
        assert!(!Arc::ptr_eq(&a, &c));
    }

    fn verify_leaf(ca_pem: &str, ca: &CertificateAuthority, host: &str) {
        use rustls::client::WebPkiServerVerifier;
        use rustls_pki_types::pem::PemObject;
        let mut roots = rustls::RootCertStore::empty();
        roots
            .add(CertificateDer::from_pem_slice(ca_pem.as_bytes()).unwrap())
            .unwrap();
        let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
        let verifier = WebPkiServerVerifier::builder_with_provider(Arc::new(roots), provider)
            .build()
            .unwrap();
        let (leaf, _) = ca.sign_leaf(host).unwrap();
        use rustls::client::danger::ServerCertVerifier;
        verifier
            .verify_server_cert(
                &leaf,
                &[],
                &ServerName::try_from(host.to_string()).unwrap(),
                &[],
                rustls_pki_types::UnixTime::now(),
            )
            .unwrap();
    }

    fn key_base64(pem: &str) -> String {
        pem.lines()
            .filter(|l| !l.starts_with("-----"))
            .collect::<String>()
            .chars()
            // Past the fixed PKCS#8 / P-256 prefix: the private scalar itself.
            .skip(48)
            .take(32)
            .collect()
    }

    fn walk(dir: &Path) -> Vec<std::path::PathBuf> {
        let mut out = Vec::new();
        for entry in fs::read_dir(dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                out.extend(walk(&path));
            } else {
                out.push(path);
            }
        }
        out
    }
}
