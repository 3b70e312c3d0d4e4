//! The settings as the window sees them: what is saved, what this run uses (data dir, kernel
//! and listen address apply at start), and saving with per-field errors. The rules and the file
//! live in `hypedeck_cli::settings`; this only adapts them to commands.

use std::path::PathBuf;

use hypedeck_cli::settings::{self, FieldProblem, Settings, SettingsError};
use serde::Serialize;
use tokio::sync::Mutex;

/// Tauri-managed state: the settings file and the values this run started with.
#[derive(Debug)]
pub struct Prefs {
    path: Result<PathBuf, String>,
    /// What this process started with (data dir, kernel, listen address).
    started_with: Settings,
    /// Why the file could not be read at start, if it could not.
    load_error: Option<String>,
    /// Serializes saves.
    lock: Mutex<()>,
}

/// What `settings()` answers.
#[derive(Debug, Serialize)]
pub struct PrefsView {
    /// The saved settings (the defaults when there is no file).
    settings: Settings,
    /// The settings file.
    path: Option<PathBuf>,
    /// The data dir this run uses.
    data_dir: Option<PathBuf>,
    /// Whether saved values differ from what this run started with in a setting that only
    /// applies at start.
    restart_needed: bool,
    /// Why the file could not be read at start (defaults were used).
    load_error: Option<String>,
}

/// Why saving failed: a sentence, and the fields at fault (empty when none is).
#[derive(Debug, Serialize)]
pub struct SaveError {
    message: String,
    fields: Vec<FieldProblem>,
}

impl From<SettingsError> for SaveError {
    fn from(e: SettingsError) -> Self {
        let fields = match &e {
            SettingsError::Fields(f) => f.clone(),
            _ => Vec::new(),
        };
        SaveError {
            message: e.to_string(),
            fields,
        }
    }
}

impl Prefs {
    /// Reads the settings file once at start. A bad file is reported, and the defaults used.
    pub fn load() -> Prefs {
        let path = settings::settings_path().map_err(|e| e.to_string());
        let (started_with, load_error) = match &path {
            Ok(p) => match settings::load(p) {
                Ok(s) => (s, None),
                Err(e) => {
                    tracing::warn!(error = %e, "settings not loaded; using the defaults");
                    (Settings::default(), Some(e.to_string()))
                }
            },
            Err(e) => (Settings::default(), Some(e.clone())),
        };
        Prefs {
            path,
            started_with,
            load_error,
            lock: Mutex::new(()),
        }
    }

    /// What this run starts with.
    pub fn started_with(&self) -> &Settings {
        &self.started_with
    }

    /// The data dir: `HYPEDECK_DATA_DIR`, else the settings', else the platform default.
    pub fn data_dir(&self) -> Option<PathBuf> {
        std::env::var_os(hypedeck_store::DATA_DIR_ENV)
            .filter(|v| !v.is_empty())
            .map(PathBuf::from)
            .or_else(|| self.started_with.data_dir.clone())
            .or_else(hypedeck_store::default_data_dir)
    }

    fn view(&self, saved: Settings) -> PrefsView {
        let at_start = |s: &Settings| {
            (
                s.data_dir.clone(),
                s.kernel_deb.clone(),
                s.listen.clone(),
                s.console_log_max.clone(),
            )
        };
        PrefsView {
            restart_needed: at_start(&saved) != at_start(&self.started_with),
            settings: saved,
            path: self.path.as_ref().ok().cloned(),
            data_dir: self.data_dir(),
            load_error: self.load_error.clone(),
        }
    }

    /// The saved settings and what this run uses.
    pub async fn get(&self) -> PrefsView {
        let saved = match &self.path {
            Ok(p) => settings::load(p).unwrap_or_else(|_| self.started_with.clone()),
            Err(_) => self.started_with.clone(),
        };
        self.view(saved)
    }

    /// Checks and saves `value` (the whole settings object).
    pub async fn save(&self, value: serde_json::Value) -> Result<PrefsView, SaveError> {
        let wanted: Settings = serde_json::from_value(value).map_err(|e| SaveError {
            message: format!("invalid settings: {e}"),
            fields: Vec::new(),
        })?;
        let path = self.path.clone().map_err(|message| SaveError {
            message,
            fields: Vec::new(),
        })?;
        let _guard = self.lock.lock().await;
        let to_save = wanted.clone();
        tokio::task::spawn_blocking(move || settings::save(&path, &to_save))
            .await
            .map_err(|e| SaveError {
                message: format!("saving failed: {e}"),
                fields: Vec::new(),
            })??;
        tracing::info!("settings saved");
        Ok(self.view(wanted))
    }
}
