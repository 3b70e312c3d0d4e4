//! The app's settings: where its data lives, what new instances default to, where the guest
//! kernel comes from, where the API listens, and the theme. Kept as JSON in the platform's
//! config dir (`$HYPEDECK_CONFIG_DIR/settings.json` when set), never in the data dir (the data
//! dir is itself a setting).
//!
//! Invariants:
//! - Every field is optional; unset means the built-in default, so an empty file is valid.
//! - [`Settings::problems`] checks every field and names each bad one; [`save`] refuses to
//!   write settings with a problem, so what is on disk was valid when written.
//! - Writes are atomic (temp file + rename) and private (0600): a crash leaves the old file.
//! - No secret lives here (the API token stays in the keychain).

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

/// Overrides the config dir (tests, portable setups).
pub const CONFIG_DIR_ENV: &str = "HYPEDECK_CONFIG_DIR";

/// Largest vCPU count the create form proposes by default.
pub const MAX_DEFAULT_VCPUS: u32 = 64;

/// The colour theme of the UI.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Theme {
    /// Follow the OS.
    #[default]
    System,
    /// Always light.
    Light,
    /// Always dark.
    Dark,
}

/// The settings. Unknown fields are refused, so a typo is an error rather than ignored.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Settings {
    /// Data dir (instances, images, kernel); `None`: the platform default. Applies at start.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub data_dir: Option<PathBuf>,
    /// Backend new instances get in the create form (`qemu`, `cloud-hypervisor`, `vz`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub default_hypervisor: Option<String>,
    /// vCPUs new instances get in the create form.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub default_vcpus: Option<u32>,
    /// Memory new instances get in the create form, e.g. `1GB`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub default_memory: Option<String>,
    /// A linux-image .deb to boot guests from instead of apt's cloud kernel. Applies at start.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub kernel_deb: Option<PathBuf>,
    /// Where the app's engine serves the API, e.g. `127.0.0.1:4973`. Applies at start.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub listen: Option<String>,
    /// The size past which an instance's console log is rotated, e.g. `64MB` (at least
    /// `64KB`). Applies at start.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub console_log_max: Option<String>,
    /// UI theme.
    pub theme: Theme,
}

/// One invalid field: its name and what is wrong, as a sentence for the UI.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct FieldProblem {
    /// The field, as spelled in the JSON.
    pub field: &'static str,
    /// What is wrong and what is expected.
    pub message: String,
}

/// Why settings could not be read or written.
#[derive(Debug, thiserror::Error)]
pub enum SettingsError {
    /// The platform has no config dir and `HYPEDECK_CONFIG_DIR` is unset.
    #[error("cannot determine a config dir; set {CONFIG_DIR_ENV}")]
    NoConfigDir,
    /// The file exists but is not valid settings.
    #[error("{path} is not valid settings: {detail}")]
    Invalid {
        /// The file.
        path: PathBuf,
        /// The parser's complaint.
        detail: String,
    },
    /// Fields are invalid; nothing was written.
    #[error("{}", .0.iter().map(|p| format!("{}: {}", p.field, p.message)).collect::<Vec<_>>().join("; "))]
    Fields(Vec<FieldProblem>),
    /// Reading or writing failed.
    #[error("{what} {path}: {source}")]
    Io {
        /// The operation.
        what: &'static str,
        /// The file.
        path: PathBuf,
        /// Cause.
        #[source]
        source: std::io::Error,
    },
}

/// The backends a default may name.
const KINDS: [&str; 3] = ["qemu", "cloud-hypervisor", "vz"];

impl Settings {
    /// Every invalid field, in field order; empty when all is well.
    pub fn problems(&self) -> Vec<FieldProblem> {
        let mut out = Vec::new();
        let mut bad = |field, message: String| out.push(FieldProblem { field, message });
        if let Some(dir) = &self.data_dir {
            if !dir.is_absolute() {
                bad(
                    "data_dir",
                    format!("{} is not an absolute path", dir.display()),
                );
            } else if dir.exists() && !dir.is_dir() {
                bad(
                    "data_dir",
                    format!("{} exists and is not a directory", dir.display()),
                );
            } else if !dir.exists() && !dir.parent().is_some_and(Path::is_dir) {
                bad(
                    "data_dir",
                    format!("the parent of {} does not exist", dir.display()),
                );
            }
        }
        if let Some(kind) = &self.default_hypervisor
            && !KINDS.contains(&kind.as_str())
        {
            bad(
                "default_hypervisor",
                format!("{kind:?} is not one of {}", KINDS.join(", ")),
            );
        }
        if let Some(n) = self.default_vcpus
            && !(1..=MAX_DEFAULT_VCPUS).contains(&n)
        {
            bad(
                "default_vcpus",
                format!("{n} is not between 1 and {MAX_DEFAULT_VCPUS}"),
            );
        }
        if let Some(memory) = &self.default_memory {
            match hypedeck_model::size::parse_size(memory) {
                Ok(bytes) if bytes >= 64 << 20 => {}
                Ok(_) => bad(
                    "default_memory",
                    format!("{memory} is less than 64MB, too little to boot"),
                ),
                Err(e) => bad(
                    "default_memory",
                    format!("{memory:?} is not a size like 1GB or 512MB ({e})"),
                ),
            }
        }
        if let Some(deb) = &self.kernel_deb {
            if !deb.is_absolute() {
                bad(
                    "kernel_deb",
                    format!("{} is not an absolute path", deb.display()),
                );
            } else if !deb.is_file() {
                bad("kernel_deb", format!("{} is not a file", deb.display()));
            }
        }
        if let Some(listen) = &self.listen
            && listen.parse::<SocketAddr>().is_err()
        {
            bad(
                "listen",
                format!("{listen:?} is not an address like 127.0.0.1:4973"),
            );
        }
        if let Some(cap) = &self.console_log_max {
            match hypedeck_model::size::parse_size(cap) {
                Ok(bytes) if bytes >= 64 << 10 => {}
                Ok(_) => bad("console_log_max", format!("{cap} is less than 64KB")),
                Err(e) => bad(
                    "console_log_max",
                    format!("{cap:?} is not a size like 64MB or 1GB ({e})"),
                ),
            }
        }
        out
    }

    /// The listen address, when set and valid.
    pub fn listen_addr(&self) -> Option<SocketAddr> {
        self.listen.as_deref().and_then(|l| l.parse().ok())
    }

    /// The console log cap in bytes, when set and valid.
    pub fn console_log_max_bytes(&self) -> Option<u64> {
        self.console_log_max
            .as_deref()
            .and_then(|c| hypedeck_model::size::parse_size(c).ok())
    }
}

/// Where the settings file is: `$HYPEDECK_CONFIG_DIR/settings.json`, else the platform's
/// config dir (`~/.config/hypedeck/settings.json` on Linux).
pub fn settings_path() -> Result<PathBuf, SettingsError> {
    if let Some(dir) = std::env::var_os(CONFIG_DIR_ENV).filter(|v| !v.is_empty()) {
        return Ok(PathBuf::from(dir).join("settings.json"));
    }
    directories::ProjectDirs::from("dev", "hypedeck", "Hypedeck")
        .map(|d| d.config_dir().join("settings.json"))
        .ok_or(SettingsError::NoConfigDir)
}

/// Reads the settings at `path`; a missing file is the defaults.
pub fn load(path: &Path) -> Result<Settings, SettingsError> {
    let text = match std::fs::read_to_string(path) {
        Ok(text) => text,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Settings::default()),
        Err(source) => {
            return Err(SettingsError::Io {
                what: "read",
                path: path.to_path_buf(),
                source,
            });
        }
    };
    serde_json::from_str(&text).map_err(|e| SettingsError::Invalid {
        path: path.to_path_buf(),
        detail: e.to_string(),
    })
}

/// Checks `settings` and writes them to `path` atomically (0600); refuses invalid ones.
pub fn save(path: &Path, settings: &Settings) -> Result<(), SettingsError> {
    let problems = settings.problems();
    if !problems.is_empty() {
        return Err(SettingsError::Fields(problems));
    }
    let io = |what| {
        let path = path.to_path_buf();
        move |source| SettingsError::Io { what, path, source }
    };
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).map_err(io("create the folder of"))?;
    }
    let json = serde_json::to_vec_pretty(settings).map_err(|e| SettingsError::Invalid {
        path: path.to_path_buf(),
        detail: e.to_string(),
    })?;
    let tmp = path.with_extension("json.tmp");
    {
        use std::io::Write as _;
        let mut options = std::fs::OpenOptions::new();
        options.write(true).create(true).truncate(true);
        #[cfg(unix)]
        std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
        let mut file = options.open(&tmp).map_err(io("write"))?;
        file.write_all(&json).map_err(io("write"))?;
        file.sync_all().map_err(io("sync"))?;
    }
    std::fs::rename(&tmp, path).map_err(io("replace"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_round_trip_and_an_empty_file_is_valid() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("sub/settings.json");
        assert_eq!(load(&path).unwrap(), Settings::default());
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(&path, "{}").unwrap();
        assert_eq!(load(&path).unwrap(), Settings::default());
        let s = Settings {
            data_dir: Some(dir.path().join("data")),
            default_hypervisor: Some("cloud-hypervisor".into()),
            default_vcpus: Some(4),
            default_memory: Some("2GB".into()),
            kernel_deb: None,
            listen: Some("127.0.0.1:5000".into()),
            console_log_max: Some("256MB".into()),
            theme: Theme::Dark,
        };
        save(&path, &s).unwrap();
        assert_eq!(load(&path).unwrap(), s);
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt as _;
            let mode = std::fs::metadata(&path).unwrap().permissions().mode();
            assert_eq!(mode & 0o777, 0o600);
        }
        assert_eq!(s.listen_addr(), Some("127.0.0.1:5000".parse().unwrap()));
        assert_eq!(s.console_log_max_bytes(), Some(256 << 20));
    }

    #[test]
    fn every_bad_field_is_named_and_nothing_is_written() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("settings.json");
        let file = dir.path().join("a-file");
        std::fs::write(&file, "x").unwrap();
        let s = Settings {
            data_dir: Some("relative/dir".into()),
            default_hypervisor: Some("firecracker".into()),
            default_vcpus: Some(0),
            default_memory: Some("lots".into()),
            kernel_deb: Some(dir.path().join("missing.deb")),
            listen: Some("localhost".into()),
            console_log_max: Some("1KB".into()),
            theme: Theme::Light,
        };
        let fields: Vec<_> = s.problems().iter().map(|p| p.field).collect();
        assert_eq!(
            fields,
            [
                "data_dir",
                "default_hypervisor",
                "default_vcpus",
                "default_memory",
                "kernel_deb",
                "listen",
                "console_log_max"
            ]
        );
        let err = save(&path, &s).unwrap_err().to_string();
        assert!(
            err.starts_with("data_dir: relative/dir is not an absolute path; default_hypervisor: \"firecracker\" is not one of qemu, cloud-hypervisor, vz;"),
            "{err}"
        );
        assert!(!path.exists());
        let small = Settings {
            default_memory: Some("16MB".into()),
            data_dir: Some(file.clone()),
            ..Settings::default()
        };
        let problems = small.problems();
        assert_eq!(
            problems[0].message,
            format!("{} exists and is not a directory", file.display())
        );
        assert_eq!(
            problems[1].message,
            "16MB is less than 64MB, too little to boot"
        );
    }

    #[test]
    fn a_corrupt_or_misspelled_file_is_an_error_naming_it() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("settings.json");
        std::fs::write(&path, "{\"theme\": \"blue\"}").unwrap();
        let err = load(&path).unwrap_err().to_string();
        assert!(
            err.starts_with(&format!(
                "{} is not valid settings: unknown variant `blue`",
                path.display()
            )),
            "{err}"
        );
        std::fs::write(&path, "{\"default_cpus\": 2}").unwrap();
        assert!(
            load(&path)
                .unwrap_err()
                .to_string()
                .contains("unknown field `default_cpus`")
        );
    }
}
