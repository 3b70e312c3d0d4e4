//! What an instance runs: its image's Entrypoint and Cmd, its own overrides, and the argv that
//! results (Docker's rules, the same function guest-init's config is built with). Hypedeck's
//! `GET /instances/{id}/command`, so the window can say what runs.

use serde::Serialize;

use crate::{Engine, EngineError};

/// Where a part of the command comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Origin {
    /// The image's config.
    Image,
    /// The instance's create request (an override; an overridden Entrypoint also drops the
    /// image's Cmd).
    Instance,
}

/// One part (Entrypoint or Cmd) and its origin.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Part {
    /// The words (empty: none).
    pub value: Vec<String>,
    /// Where they come from.
    pub from: Origin,
}

/// An instance's command.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct LaunchCommand {
    /// What runs: Entrypoint then Cmd. Empty when it depends on an image this engine does not
    /// have (yet).
    pub argv: Vec<String>,
    /// The Entrypoint in force.
    pub entrypoint: Part,
    /// The Cmd in force.
    pub cmd: Part,
    /// The image's working directory, when known and set.
    pub working_dir: Option<String>,
}

impl Engine {
    /// The command instance `id_or_name` runs (see [`LaunchCommand`]).
    pub fn command(&self, id_or_name: &str) -> Result<LaunchCommand, EngineError> {
        let record = self.resolve(id_or_name)?;
        let image = self.guest.as_ref().and_then(|g| {
            g.images
                .get(record.image_digest.as_deref().unwrap_or(&record.image))
                .filter(|i| i.status == hypedeck_images::ImageStatus::Ready)
        });
        let config = image.as_ref().map(|i| &i.config);
        let given = |v: &Option<Vec<String>>| v.clone().filter(|v| !v.is_empty());
        let entrypoint = match given(&record.entrypoint) {
            Some(value) => Part {
                value,
                from: Origin::Instance,
            },
            None => Part {
                value: config
                    .and_then(|c| c.entrypoint.clone())
                    .unwrap_or_default(),
                from: Origin::Image,
            },
        };
        let cmd = match given(&record.cmd) {
            Some(value) => Part {
                value,
                from: Origin::Instance,
            },
            // An overridden Entrypoint runs without the image's Cmd.
            None if entrypoint.from == Origin::Instance => Part {
                value: Vec::new(),
                from: Origin::Instance,
            },
            None => Part {
                value: config.and_then(|c| c.cmd.clone()).unwrap_or_default(),
                from: Origin::Image,
            },
        };
        // Known without the image only when the instance sets every part that is used.
        let known = config.is_some() || entrypoint.from == Origin::Instance;
        let argv = if known {
            hypedeck_guest_init::resolve_argv(
                config.and_then(|c| c.entrypoint.as_deref()).unwrap_or(&[]),
                config.and_then(|c| c.cmd.as_deref()).unwrap_or(&[]),
                record.entrypoint.as_deref(),
                record.cmd.as_deref(),
            )
        } else {
            Vec::new()
        };
        Ok(LaunchCommand {
            argv,
            entrypoint,
            cmd,
            working_dir: config.and_then(|c| c.working_dir.clone()),
        })
    }
}

#[cfg(test)]
mod tests {
    use hypedeck_model::CreateInstanceRequest;
    use serde_json::json;

    use super::*;

    fn engine() -> (tempfile::TempDir, Engine) {
        let dir = tempfile::tempdir().unwrap();
        let engine = Engine::new(crate::EngineConfig {
            paths: hypedeck_store::Paths::new(dir.path()),
            secrets: std::sync::Arc::new(hypedeck_secrets::MemoryStore::new()),
            hypervisor: Ok(crate::fake::FakeHypervisor::new()),
            alternatives: Vec::new(),
            guest: None,
            fingerprints: hypedeck_egress::Fingerprinter::from_key(&[7; 32]),
        });
        (dir, engine)
    }

    async fn create(engine: &Engine, body: serde_json::Value) -> String {
        let spec = serde_json::from_value::<CreateInstanceRequest>(body)
            .unwrap()
            .validate()
            .unwrap();
        engine.create(spec).await.unwrap().id
    }

    #[tokio::test]
    async fn overrides_follow_dockers_rules_and_an_unknown_image_leaves_argv_empty() {
        let (_dir, engine) = engine();
        // No image cache here: only what the instance sets is known.
        let plain = create(&engine, json!({"name": "plain", "image": "alpine"})).await;
        let c = engine.command(&plain).unwrap();
        assert_eq!(c.argv, Vec::<String>::new());
        assert_eq!(
            (c.entrypoint.from, c.cmd.from),
            (Origin::Image, Origin::Image)
        );

        let cmd_only = create(
            &engine,
            json!({"name": "cmd-only", "image": "alpine", "cmd": ["sleep", "9"]}),
        )
        .await;
        let c = engine.command("cmd-only").unwrap();
        assert_eq!(c.cmd.value, ["sleep", "9"]);
        assert_eq!(c.cmd.from, Origin::Instance);
        // The image's Entrypoint comes first, and it is not known here.
        assert_eq!(c.argv, Vec::<String>::new(), "{cmd_only}");

        create(
            &engine,
            json!({"name": "ep", "image": "alpine", "entrypoint": ["/bin/sh", "-c"], "cmd": ["echo hi"]}),
        )
        .await;
        let c = engine.command("ep").unwrap();
        assert_eq!(c.argv, ["/bin/sh", "-c", "echo hi"]);
        create(
            &engine,
            json!({"name": "ep-only", "image": "alpine", "entrypoint": ["/app"]}),
        )
        .await;
        let c = engine.command("ep-only").unwrap();
        assert_eq!(
            c.argv,
            ["/app"],
            "an overridden Entrypoint drops the image's Cmd"
        );
        assert_eq!(
            c.cmd,
            Part {
                value: vec![],
                from: Origin::Instance
            }
        );
        assert!(matches!(engine.command("nope"), Err(EngineError::NotFound)));
    }
}
