//! `hypedeck`: run the engine headless (`serve`) and small verbs for scripts.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use clap::{Parser, Subcommand, ValueEnum};
use hypedeck_cli::client::{Api, CliError};
use hypedeck_cli::daemon::{self, DaemonOptions, Endpoint, HypervisorChoice};
use hypedeck_cli::verbs::{self, Format, Output};

#[derive(Parser, Debug)]
#[command(
    name = "hypedeck",
    version,
    about = "Run OCI images as VM sandboxes; speaks the Hypeman API"
)]
struct Cli {
    /// Data dir (default: the platform data dir, or $HYPEDECK_DATA_DIR).
    #[arg(long, global = true)]
    data_dir: Option<PathBuf>,
    /// The Hypeman server for the API verbs (default: $HYPEMAN_BASE_URL, then `base_url` in
    /// ~/.config/hypeman/cli.yaml, then the engine running for the data dir).
    #[arg(long, global = true, value_name = "URL")]
    base_url: Option<String>,
    /// Output of the API verbs: tables and lines (auto), or the API's answer as indented JSON
    /// (json), one line of JSON (jsonl), the bytes received (raw), YAML (yaml) or key: value
    /// lines (pretty; explore, upstream's interactive viewer, prints as pretty here). Verbs
    /// that only print a document print JSON for auto. JSON is coloured on a terminal
    /// (FORCE_COLOR=1 forces colour, FORCE_COLOR=0 or NO_COLOR turns it off).
    #[arg(long, global = true, value_enum, default_value = "auto")]
    format: Format,
    /// Also print an API error's {code, message} document on stdout in this format (auto:
    /// only the one-line error on stderr).
    #[arg(long, global = true, value_enum, default_value = "auto")]
    format_error: Format,
    /// A GJSON path picking the part of the answer to print (dotted keys, array indexes, `#`
    /// for a length, `#.key` over an array, `\.` for a dot in a key); the whole answer when it
    /// matches nothing; ignored by --format raw.
    #[arg(long, global = true, value_name = "PATH")]
    transform: Option<String>,
    /// A GJSON path applied to an error's document (--format-error).
    #[arg(long, global = true, value_name = "PATH")]
    transform_error: Option<String>,
    #[command(subcommand)]
    command: Command,
}

#[derive(ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
enum HypervisorArg {
    /// The best backend for this host.
    Auto,
    /// The in-memory test backend (test builds only).
    Fake,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Run the engine and the Hypeman-compatible API until interrupted.
    Serve {
        /// Address to listen on.
        #[arg(long, default_value = daemon::DEFAULT_LISTEN)]
        listen: SocketAddr,
        /// Hypervisor backend.
        #[arg(long, value_enum, default_value = "auto")]
        hypervisor: HypervisorArg,
        /// Accept secret references (op://, keychain:, cmd:) from HTTP clients too. Without
        /// it only the user at this machine may set them (the window, `hypedeck rotate`):
        /// with it, anyone holding the API token can make the engine run commands and read
        /// keychain items as you. Also $HYPEDECK_ALLOW_HTTP_SECRET_REFERENCES=1.
        #[arg(long)]
        allow_http_secret_references: bool,
    },
    /// Rotate a credential of a running instance: the new value of env var KEY is read from
    /// stdin (a prompt without echo on a terminal), never from the command line, or given as a
    /// secret reference with --from. Talks to the local engine over its Unix socket.
    Rotate {
        /// Instance id, name or id prefix.
        instance: String,
        /// The credential's env var (`credentials[*].source.env`).
        key: String,
        /// A secret reference instead of a value: op://vault/item/field,
        /// keychain:<service>/<account> or cmd:<program> <args…>.
        #[arg(long, value_name = "REFERENCE")]
        from: Option<String>,
    },
    /// Print the API token (from the OS keychain; created on first use).
    Token {
        /// Replace it with a fresh one first (the running engine, if any, switches at once;
        /// every client needs the new token).
        #[arg(long)]
        rotate: bool,
    },
    /// Print where the running engine for the data dir listens, if any.
    Status,
    /// Check what running a sandbox needs from this machine (hypervisor, KVM, guest kernel,
    /// guest init, keychain) and print how to fix what is missing. Exits 1 if anything is.
    Doctor,
    /// Build time: unpack a kernel .deb into the guest-kernel bundle the packages carry (boot
    /// files, license, and a manifest pinning it by version and checksum).
    #[command(hide = true)]
    KernelBundle {
        /// The kernel package (linux-image-…-cloud-<arch>).
        #[arg(long)]
        deb: PathBuf,
        /// Where the bundle goes (made or replaced).
        #[arg(long)]
        out: PathBuf,
        /// `package=version` the .deb must be.
        #[arg(long)]
        pin: Option<String>,
    },
    /// List instances (running ones; all with -a).
    Ps {
        /// Show all instances (default: running only).
        #[arg(short, long)]
        all: bool,
        /// Only display instance IDs.
        #[arg(short, long)]
        quiet: bool,
        /// Filter instances by state (e.g. Running, Stopped, Standby).
        #[arg(long)]
        state: Option<String>,
        /// Filter by tag key-value pair (KEY=VALUE, can be repeated).
        #[arg(long = "tag", alias = "metadata", value_name = "KEY=VALUE")]
        tags: Vec<String>,
    },
    /// Show an instance's details (JSON).
    Inspect {
        /// Instance id, name or id prefix.
        instance: String,
    },
    /// Stop a running instance.
    Stop {
        /// Instance id, name or id prefix.
        instance: String,
    },
    /// Start a stopped instance.
    Start {
        /// Instance id, name or id prefix.
        instance: String,
        /// Override the image's entrypoint for this run (repeat for more arguments).
        #[arg(long, allow_hyphen_values = true)]
        entrypoint: Vec<String>,
        /// Override the image's CMD for this run (repeat for more arguments).
        #[arg(long, allow_hyphen_values = true)]
        cmd: Vec<String>,
    },
    /// Put an instance into standby (pause and snapshot).
    Standby {
        /// Instance id, name or id prefix.
        instance: String,
    },
    /// Restore an instance from standby.
    Restore {
        /// Instance id, name or id prefix.
        instance: String,
    },
    /// Remove one or more instances.
    Rm {
        /// Instance ids, names or id prefixes.
        instances: Vec<String>,
        /// Force removal of running instances.
        #[arg(short, long)]
        force: bool,
        /// Remove all instances (stopped only, unless --force).
        #[arg(long)]
        all: bool,
    },
    /// Wait for an instance to reach a state.
    Wait {
        /// Instance id, name or id prefix.
        instance: String,
        /// Target state: Created, Initializing, Running, Paused, Shutdown, Stopped or Standby.
        #[arg(long)]
        state: String,
        /// Maximum duration to wait (e.g. "30s", "2m").
        #[arg(long)]
        timeout: Option<String>,
    },
    /// Fetch the logs of an instance.
    Logs {
        /// Instance id, name or id prefix.
        instance: String,
        /// Follow log output.
        #[arg(short, long)]
        follow: bool,
        /// Number of lines to show from the end of the logs.
        #[arg(long)]
        tail: Option<u32>,
        /// Log source: app (default), vmm or hypeman (operations log).
        #[arg(short, long)]
        source: Option<String>,
    },
    /// Create and start a new instance from an image (pulled first when the server lacks it);
    /// prints its id.
    Run(Box<RunArgs>),
    /// Pull an image and wait until it is ready.
    Pull {
        /// Image reference (e.g. docker.io/library/alpine:latest).
        image: String,
    },
    /// Update mutable instance configuration.
    #[command(subcommand)]
    Update(UpdateCommand),
    /// Volumes.
    #[command(subcommand, alias = "volumes")]
    Volume(VolumeCommand),
    /// Images.
    #[command(subcommand, alias = "images")]
    Image(ImageCommand),
    /// Snapshots.
    #[command(subcommand, alias = "snapshots")]
    Snapshot(SnapshotCommand),
    /// Fork an instance into a new one.
    Fork {
        /// Source instance id, name or id prefix.
        source: String,
        /// The fork's name.
        name: String,
        /// Fork a running source (it is saved and resumed around the fork).
        #[arg(long)]
        from_running: bool,
        /// The fork's state: Running, Standby or Stopped (default: the source's).
        #[arg(long)]
        target_state: Option<String>,
    },
    /// Resource use of an instance (CPU, memory, network).
    Stats {
        /// Instance id, name or id prefix.
        instance: String,
    },
    /// Print a shell completion script (bash, zsh, fish, elvish or powershell), e.g.
    /// `source <(hypedeck completion bash)`.
    Completion {
        /// The shell.
        shell: clap_complete::Shell,
    },
    /// Print the man page (roff), e.g. `hypedeck man | man -l -`.
    Man,
    /// Execute a command in a running instance (exits with its exit code).
    Exec {
        /// Instance id, name or id prefix.
        instance: String,
        /// The command and its arguments (after `--`; default /bin/sh).
        #[arg(last = true)]
        command: Vec<String>,
        /// Interactive terminal (`-it`, `-i` or `-t` too).
        #[arg(short = 'i', long = "it")]
        it: bool,
        /// Interactive terminal (with `-i`: `-it`).
        #[arg(short = 't', hide = true)]
        t: bool,
        /// No terminal.
        #[arg(short = 'T', long = "no-tty", conflicts_with_all = ["it", "t"])]
        no_tty: bool,
        /// Set an environment variable (KEY=VALUE, can be repeated).
        #[arg(short, long = "env", value_name = "KEY=VALUE")]
        env: Vec<String>,
        /// Working directory inside the instance.
        #[arg(long)]
        cwd: Option<String>,
        /// Execution timeout in seconds (0: none).
        #[arg(long, default_value_t = 0)]
        timeout: u32,
    },
    /// Copy files/folders between an instance and the local filesystem: `<instance>:/path` is
    /// in the instance, anything else is local; `-` is a tar stream on stdin or stdout;
    /// `src/.` copies a directory's contents.
    Cp {
        /// Source (`./local`, `instance:/path`, or `-`).
        src: String,
        /// Destination (`instance:/path`, `./local`, or `-`).
        dst: String,
        /// Archive mode (copy all uid/gid information).
        #[arg(short, long)]
        archive: bool,
        /// Always follow symbolic links in source.
        #[arg(short = 'L', long)]
        follow_links: bool,
        /// Suppress progress output during copy.
        #[arg(short, long)]
        quiet: bool,
    },
    /// A Hypedeck addition: an instance's credentials with the fingerprint of each value in
    /// force, when it was rotated and last used (never the values).
    Credentials {
        /// Instance id, name or id prefix.
        instance: String,
    },
    /// Check the server's health.
    Health,
    /// Show the server's resources and their allocations (JSON).
    Resources,
}

#[derive(clap::Args, Debug)]
struct RunArgs {
    /// Image reference.
    image: String,
    /// Instance name (generated from the image when not given).
    #[arg(long)]
    name: Option<String>,
    /// Set an environment variable (KEY=VALUE, can be repeated).
    #[arg(short, long = "env", value_name = "KEY=VALUE")]
    env: Vec<String>,
    /// Credential policy map as JSON (keyed by guest-visible env var).
    #[arg(long, value_name = "JSON")]
    credentials_json: Option<String>,
    /// Base memory size (e.g. "1GB", "512MB").
    #[arg(long)]
    memory: Option<String>,
    /// Number of virtual CPUs.
    #[arg(long)]
    cpus: Option<u32>,
    /// Writable overlay disk size (e.g. "10GB").
    #[arg(long)]
    overlay_size: Option<String>,
    /// Additional memory for hotplug (e.g. "1GB").
    #[arg(long)]
    hotplug_size: Option<String>,
    /// Enable the network (default: true).
    #[arg(long, action = clap::ArgAction::Set, value_name = "BOOL")]
    network: Option<bool>,
    /// Hypervisor backend: qemu, cloud-hypervisor or vz.
    #[arg(long)]
    hypervisor: Option<String>,
    /// Disk I/O rate limit (e.g. "100MB/s").
    #[arg(long)]
    disk_io: Option<String>,
    /// Enable host-mediated outbound egress policy.
    #[arg(long)]
    network_egress_enabled: bool,
    /// Egress enforcement mode: all or http_https_only.
    #[arg(long)]
    network_egress_mode: Option<String>,
    /// Enable automatic standby when idle.
    #[arg(long)]
    auto_standby_enabled: bool,
    /// How long the instance must be idle before entering standby (e.g. "10m").
    #[arg(long)]
    auto_standby_idle_timeout: Option<String>,
    /// Skip the guest agent (exec and stat will not work).
    #[arg(long)]
    skip_guest_agent: bool,
    /// Override the image's entrypoint (repeat for more arguments).
    #[arg(long, allow_hyphen_values = true)]
    entrypoint: Vec<String>,
    /// Override the image's CMD (repeat for more arguments).
    #[arg(long, allow_hyphen_values = true)]
    cmd: Vec<String>,
    /// Tag (KEY=VALUE, can be repeated).
    #[arg(
        short = 'l',
        long = "tag",
        alias = "metadata",
        value_name = "KEY=VALUE"
    )]
    tags: Vec<String>,
    /// Attach a volume at creation (volume-id:/mount/path[:ro[:overlay=SIZE]], repeatable).
    #[arg(short, long = "volume", value_name = "SPEC")]
    volumes: Vec<String>,
}

impl RunArgs {
    /// The `CreateInstanceRequest` these flags say (without the image).
    fn body(&self) -> Result<serde_json::Value, CliError> {
        use serde_json::json;
        let mut body = json!({});
        if let Some(n) = &self.name {
            body["name"] = json!(n);
        }
        let env = verbs::key_values(&self.env, "env var");
        if !env.is_empty() {
            body["env"] = serde_json::Value::Object(env);
        }
        if let Some(c) = &self.credentials_json {
            body["credentials"] = serde_json::from_str(c)
                .map_err(|e| CliError::Usage(format!("--credentials-json is not JSON: {e}")))?;
        }
        for (key, value) in [
            ("size", &self.memory),
            ("overlay_size", &self.overlay_size),
            ("hotplug_size", &self.hotplug_size),
            ("hypervisor", &self.hypervisor),
            ("disk_io_bps", &self.disk_io),
        ] {
            if let Some(v) = value {
                body[key] = json!(v);
            }
        }
        if let Some(c) = self.cpus {
            body["vcpus"] = json!(c);
        }
        if self.network.is_some() || self.network_egress_enabled {
            body["network"] = json!({ "enabled": self.network.unwrap_or(true) });
        }
        if self.network_egress_enabled || self.network_egress_mode.is_some() {
            let mut egress = json!({ "enabled": self.network_egress_enabled });
            if let Some(mode) = &self.network_egress_mode {
                egress["enforcement"] = json!({ "mode": mode });
            }
            body["network"]["egress"] = egress;
        }
        // Upstream's run builds the policy as `update auto-standby` does (an idle timeout alone
        // enables it).
        if let Some(policy) = verbs::auto_standby_policy(
            self.auto_standby_enabled.then_some(true),
            self.auto_standby_idle_timeout.as_deref(),
            &[],
            &[],
        )? {
            body["auto_standby"] = policy;
        }
        if self.skip_guest_agent {
            body["skip_guest_agent"] = json!(true);
        }
        if !self.entrypoint.is_empty() {
            body["entrypoint"] = json!(self.entrypoint);
        }
        if !self.cmd.is_empty() {
            body["cmd"] = json!(self.cmd);
        }
        let tags = verbs::key_values(&self.tags, "tag");
        if !tags.is_empty() {
            body["tags"] = serde_json::Value::Object(tags);
        }
        if !self.volumes.is_empty() {
            let mounts: Result<Vec<_>, _> =
                self.volumes.iter().map(|v| verbs::volume_spec(v)).collect();
            body["volumes"] = json!(mounts?);
        }
        Ok(body)
    }
}

#[derive(Subcommand, Debug)]
enum UpdateCommand {
    /// Update the auto-standby policy for an instance (prints its id).
    AutoStandby {
        /// Instance id, name or id prefix.
        instance: String,
        /// Enable automatic standby based on inbound TCP activity (`--enabled=false` turns it
        /// off; default true when any flag is given).
        #[arg(long, num_args = 0..=1, require_equals = true, default_missing_value = "true", value_name = "BOOL")]
        enabled: Option<bool>,
        /// How long the instance must be idle before entering standby (e.g. "10m").
        #[arg(long)]
        idle_timeout: Option<String>,
        /// TCP destination port that should not keep the instance awake (can be repeated).
        #[arg(long, value_name = "PORT")]
        ignore_destination_port: Vec<String>,
        /// Client CIDR that should not keep the instance awake (can be repeated).
        #[arg(long, value_name = "CIDR")]
        ignore_source_cidr: Vec<String>,
    },
    /// Rotate the values of credentials bound to the instance's egress (KEY=VALUE puts the
    /// secret in argv and shell history: prefer `hypedeck rotate`, which reads it from stdin).
    EgressCredentials {
        /// Instance id, name or id prefix.
        instance: String,
        /// A bound credential's new value (KEY=VALUE, can be repeated).
        #[arg(short, long = "env", value_name = "KEY=VALUE")]
        env: Vec<String>,
    },
}

#[derive(Subcommand, Debug)]
enum VolumeCommand {
    /// Attach a volume to an instance (running or stopped).
    Attach {
        /// Volume id or name.
        volume: String,
        /// Instance id, name or id prefix.
        #[arg(short, long)]
        instance: String,
        /// Where it is mounted in the guest.
        #[arg(short, long)]
        mount_path: String,
        /// Mount read-only.
        #[arg(long)]
        readonly: bool,
    },
    /// Detach a volume from an instance.
    Detach {
        /// Volume id or name.
        volume: String,
        /// Instance id, name or id prefix.
        #[arg(short, long)]
        instance: String,
    },
    /// List volumes.
    #[command(alias = "ls")]
    List {
        /// Only display volume IDs.
        #[arg(short, long)]
        quiet: bool,
    },
    /// Create an empty volume; prints its id.
    Create {
        /// Name.
        #[arg(long)]
        name: String,
        /// Size in GB.
        #[arg(long)]
        size: u32,
        /// Id (generated when not given).
        #[arg(long)]
        id: Option<String>,
    },
    /// Show a volume (JSON).
    Get {
        /// Volume id or name.
        id: String,
    },
    /// Delete a volume.
    #[command(alias = "rm")]
    Delete {
        /// Volume id.
        id: String,
    },
}

#[derive(Subcommand, Debug)]
enum ImageCommand {
    /// List images.
    #[command(alias = "ls")]
    List {
        /// Only display image names.
        #[arg(short, long)]
        quiet: bool,
    },
    /// Ask the server to pull an image (see `pull` to wait for it).
    Create {
        /// Image reference.
        name: String,
    },
    /// Show an image (JSON).
    Get {
        /// Image reference.
        name: String,
    },
    /// Delete an image.
    #[command(alias = "rm")]
    Delete {
        /// Image reference.
        name: String,
    },
}

#[derive(Subcommand, Debug)]
enum ScheduleCommand {
    /// Create or update the snapshot schedule of an instance.
    Set {
        /// Instance id, name or id prefix.
        instance: String,
        /// Snapshot interval (Go duration format, minimum "1m").
        #[arg(long)]
        interval: String,
        /// Delete scheduled snapshots older than this duration (e.g. "24h").
        #[arg(long)]
        max_age: Option<String>,
        /// Keep at most this many scheduled snapshots (0 disables count-based cleanup).
        #[arg(long)]
        max_count: Option<u32>,
        /// Prefix for generated scheduled snapshot names.
        #[arg(long)]
        name_prefix: Option<String>,
        /// Schedule metadata (KEY=VALUE, can be repeated).
        #[arg(long, value_name = "KEY=VALUE")]
        metadata: Vec<String>,
    },
    /// Show the snapshot schedule of an instance.
    Get {
        /// Instance id, name or id prefix.
        instance: String,
    },
    /// Delete the snapshot schedule of an instance.
    #[command(alias = "rm")]
    Delete {
        /// Instance id, name or id prefix.
        instance: String,
    },
}

#[derive(Subcommand, Debug)]
enum SnapshotCommand {
    /// Manage scheduled snapshots of an instance.
    #[command(subcommand)]
    Schedule(ScheduleCommand),
    /// Snapshot an instance; prints the snapshot's id.
    Create {
        /// Instance id, name or id prefix.
        instance: String,
        /// Standby (memory and disk; Running or Standby instances) or Stopped (disk).
        #[arg(long)]
        kind: String,
        /// Name.
        #[arg(long)]
        name: Option<String>,
    },
    /// Restore an instance to one of its snapshots.
    Restore {
        /// Instance id, name or id prefix.
        instance: String,
        /// Snapshot id.
        snapshot: String,
        /// Running, Standby or Stopped.
        #[arg(long)]
        target_state: Option<String>,
    },
    /// List snapshots.
    #[command(alias = "ls")]
    List {
        /// Only display snapshot IDs.
        #[arg(short, long)]
        quiet: bool,
    },
    /// Show a snapshot (JSON).
    Get {
        /// Snapshot id.
        id: String,
    },
    /// Delete a snapshot.
    #[command(alias = "rm")]
    Delete {
        /// Snapshot id.
        id: String,
    },
}

fn data_dir(cli: &Cli) -> anyhow::Result<PathBuf> {
    match &cli.data_dir {
        Some(d) => Ok(d.clone()),
        None => hypedeck_store::default_data_dir()
            .context("cannot determine a data dir; pass --data-dir"),
    }
}

/// The Hypeman CLI verbs; `None` for hypedeck's own commands.
async fn api_verb(cli: &Cli, dir: &std::path::Path) -> Option<Result<(), CliError>> {
    let api = || hypedeck_cli::client::resolve(cli.base_url.as_deref(), dir).and_then(Api::new);
    let out = Output::stdout(cli.format, cli.transform.clone());
    let out = &out;
    let run = async {
        let api = api()?;
        match &cli.command {
            Command::Ps {
                all,
                quiet,
                state,
                tags,
            } => verbs::ps(&api, out, *all, *quiet, state.as_deref(), tags).await,
            Command::Inspect { instance } => verbs::inspect(&api, out, instance).await,
            Command::Stop { instance } => verbs::lifecycle(&api, out, "stop", instance, None).await,
            Command::Start {
                instance,
                entrypoint,
                cmd,
            } => {
                let body = verbs::start_body(entrypoint, cmd);
                verbs::lifecycle(&api, out, "start", instance, Some(body)).await
            }
            Command::Standby { instance } => {
                verbs::lifecycle(&api, out, "standby", instance, None).await
            }
            Command::Restore { instance } => {
                verbs::lifecycle(&api, out, "restore", instance, None).await
            }
            Command::Rm {
                instances,
                force,
                all,
            } => verbs::rm(&api, instances, *force, *all).await,
            Command::Wait {
                instance,
                state,
                timeout,
            } => verbs::wait(&api, out, instance, state, timeout.as_deref()).await,
            Command::Logs {
                instance,
                follow,
                tail,
                source,
            } => verbs::logs(&api, instance, *follow, *tail, source.as_deref()).await,
            Command::Run(args) => verbs::run(&api, out, &args.image, args.body()?).await,
            Command::Pull { image } => {
                let img = verbs::pull(&api, out, image).await?;
                if out.machine() {
                    return out.show("image pull", &img);
                }
                println!("{}", img["name"].as_str().unwrap_or(image));
                Ok(())
            }
            Command::Update(UpdateCommand::AutoStandby {
                instance,
                enabled,
                idle_timeout,
                ignore_destination_port,
                ignore_source_cidr,
            }) => {
                let policy = verbs::auto_standby_policy(
                    *enabled,
                    idle_timeout.as_deref(),
                    ignore_destination_port,
                    ignore_source_cidr,
                )?;
                verbs::update_auto_standby(&api, out, instance, policy).await
            }
            Command::Update(UpdateCommand::EgressCredentials { instance, env }) => {
                let env = verbs::key_values(env, "env var");
                verbs::update_credentials(&api, out, instance, env).await
            }
            Command::Volume(VolumeCommand::Attach {
                volume,
                instance,
                mount_path,
                readonly,
            }) => {
                verbs::volume_attachment(&api, out, volume, instance, Some((mount_path, *readonly)))
                    .await
            }
            Command::Volume(VolumeCommand::Detach { volume, instance }) => {
                verbs::volume_attachment(&api, out, volume, instance, None).await
            }
            Command::Volume(VolumeCommand::List { quiet }) => {
                verbs::list(
                    &api,
                    out,
                    "/volumes",
                    *quiet,
                    "id",
                    &[
                        ("ID", &|v| verbs::cell(v, "/id")),
                        ("NAME", &|v| verbs::cell(v, "/name")),
                        ("SIZE", &|v| format!("{} GB", verbs::cell(v, "/size_gb"))),
                        ("ATTACHMENTS", &|v| {
                            v["attachments"].as_array().map_or(0, Vec::len).to_string()
                        }),
                        ("CREATED", &|v| verbs::ago(v, "/created_at")),
                    ],
                )
                .await
            }
            Command::Volume(VolumeCommand::Create { name, size, id }) => {
                let mut body = serde_json::json!({ "name": name, "size_gb": size });
                if let Some(id) = id {
                    body["id"] = serde_json::json!(id);
                }
                verbs::create(&api, out, "/volumes", &body, "id").await
            }
            Command::Volume(VolumeCommand::Get { id }) => {
                let path = hypedeck_cli::client::path("volumes", id);
                verbs::show(&api, out, "volume get", &path).await
            }
            Command::Volume(VolumeCommand::Delete { id }) => {
                let path = hypedeck_cli::client::path("volumes", id);
                verbs::delete(&api, &path, id).await
            }
            Command::Image(ImageCommand::List { quiet }) => {
                verbs::list(
                    &api,
                    out,
                    "/images",
                    *quiet,
                    "name",
                    &[
                        ("NAME", &|v| verbs::cell(v, "/name")),
                        ("PLATFORM", &|v| verbs::cell(v, "/platform")),
                        ("STATUS", &|v| verbs::cell(v, "/status")),
                        ("DIGEST", &|v| {
                            verbs::cell(v, "/digest").chars().take(19).collect()
                        }),
                        ("SIZE", &|v| {
                            v["size_bytes"].as_f64().map_or_else(
                                || "-".into(),
                                |b| format!("{:.1} MB", b / 1_000_000.0),
                            )
                        }),
                        ("CREATED", &|v| verbs::ago(v, "/created_at")),
                    ],
                )
                .await
            }
            Command::Image(ImageCommand::Create { name }) => {
                verbs::create(
                    &api,
                    out,
                    "/images",
                    &serde_json::json!({ "name": name }),
                    "name",
                )
                .await
            }
            Command::Image(ImageCommand::Get { name }) => {
                let path = hypedeck_cli::client::path("images", name);
                verbs::show(&api, out, "image get", &path).await
            }
            Command::Image(ImageCommand::Delete { name }) => {
                let path = hypedeck_cli::client::path("images", name);
                verbs::delete(&api, &path, name).await
            }
            Command::Snapshot(SnapshotCommand::Create {
                instance,
                kind,
                name,
            }) => {
                let mut body = serde_json::json!({ "kind": kind });
                if let Some(n) = name {
                    body["name"] = serde_json::json!(n);
                }
                let path = format!(
                    "{}/snapshots",
                    hypedeck_cli::client::instance_path(instance)
                );
                verbs::create(&api, out, &path, &body, "id").await
            }
            Command::Snapshot(SnapshotCommand::Restore {
                instance,
                snapshot,
                target_state,
            }) => {
                let mut body = serde_json::json!({});
                if let Some(t) = target_state {
                    body["target_state"] = serde_json::json!(t);
                }
                let path = format!(
                    "{}/snapshots/{}/restore",
                    hypedeck_cli::client::instance_path(instance),
                    hypedeck_cli::client::segment(snapshot)
                );
                verbs::create(&api, out, &path, &body, "id").await
            }
            Command::Snapshot(SnapshotCommand::List { quiet }) => {
                verbs::list(
                    &api,
                    out,
                    "/snapshots",
                    *quiet,
                    "id",
                    &[
                        ("ID", &|v| verbs::cell(v, "/id")),
                        ("NAME", &|v| verbs::cell(v, "/name")),
                        ("KIND", &|v| verbs::cell(v, "/kind")),
                        ("SOURCE", &|v| verbs::cell(v, "/source_instance_name")),
                        ("CREATED", &|v| verbs::ago(v, "/created_at")),
                    ],
                )
                .await
            }
            Command::Snapshot(SnapshotCommand::Get { id }) => {
                let path = hypedeck_cli::client::path("snapshots", id);
                verbs::show(&api, out, "snapshot get", &path).await
            }
            Command::Snapshot(SnapshotCommand::Schedule(ScheduleCommand::Set {
                instance,
                interval,
                max_age,
                max_count,
                name_prefix,
                metadata,
            })) => {
                let body = verbs::schedule_request(
                    interval,
                    max_age.as_deref(),
                    *max_count,
                    name_prefix.as_deref(),
                    metadata,
                )?;
                verbs::snapshot_schedule(&api, out, instance, Some(body)).await
            }
            Command::Snapshot(SnapshotCommand::Schedule(ScheduleCommand::Get { instance })) => {
                verbs::snapshot_schedule(&api, out, instance, None).await
            }
            Command::Snapshot(SnapshotCommand::Schedule(ScheduleCommand::Delete { instance })) => {
                verbs::snapshot_schedule_delete(&api, instance).await
            }
            Command::Snapshot(SnapshotCommand::Delete { id }) => {
                let path = hypedeck_cli::client::path("snapshots", id);
                verbs::delete(&api, &path, id).await
            }
            Command::Fork {
                source,
                name,
                from_running,
                target_state,
            } => {
                verbs::fork(
                    &api,
                    out,
                    source,
                    name,
                    *from_running,
                    target_state.as_deref(),
                )
                .await
            }
            Command::Stats { instance } => verbs::stats(&api, out, instance).await,
            Command::Exec {
                instance,
                command,
                it,
                t,
                no_tty,
                env,
                cwd,
                timeout,
            } => {
                let request = hypedeck_cli::exec::ExecRequest {
                    command: command.clone(),
                    tty: if *no_tty {
                        Some(false)
                    } else if *it || *t {
                        Some(true)
                    } else {
                        None
                    },
                    env: verbs::key_values(env, "env var"),
                    cwd: cwd.clone(),
                    timeout: *timeout,
                };
                let code = hypedeck_cli::exec::exec(&api, instance, request).await?;
                if code != 0 {
                    return Err(CliError::Exit(code));
                }
                Ok(())
            }
            Command::Cp {
                src,
                dst,
                archive,
                follow_links,
                quiet,
            } => {
                let options = hypedeck_cli::cp::CpOptions {
                    archive: *archive,
                    follow_links: *follow_links,
                    quiet: *quiet,
                };
                hypedeck_cli::cp::cp(&api, src, dst, options).await
            }
            Command::Credentials { instance } => verbs::credentials(&api, out, instance).await,
            Command::Health => verbs::show(&api, out, "health", "/health").await,
            Command::Resources => verbs::show(&api, out, "resources", "/resources").await,
            _ => unreachable!("not an API verb"),
        }
    };
    match cli.command {
        Command::Ps { .. }
        | Command::Inspect { .. }
        | Command::Stop { .. }
        | Command::Start { .. }
        | Command::Standby { .. }
        | Command::Restore { .. }
        | Command::Rm { .. }
        | Command::Wait { .. }
        | Command::Logs { .. }
        | Command::Run(_)
        | Command::Pull { .. }
        | Command::Update(_)
        | Command::Volume(_)
        | Command::Image(_)
        | Command::Snapshot(_)
        | Command::Fork { .. }
        | Command::Stats { .. }
        | Command::Exec { .. }
        | Command::Cp { .. }
        | Command::Credentials { .. }
        | Command::Health
        | Command::Resources => Some(run.await),
        _ => None,
    }
}

async fn run(cli: Cli) -> anyhow::Result<()> {
    let dir = data_dir(&cli)?;
    match cli.command {
        Command::Serve {
            listen,
            hypervisor,
            allow_http_secret_references,
        } => {
            let hypervisor = match hypervisor {
                HypervisorArg::Auto => HypervisorChoice::Auto,
                HypervisorArg::Fake => HypervisorChoice::Fake,
            };
            let mut d = daemon::start(DaemonOptions {
                data_dir: dir.clone(),
                listen,
                hypervisor,
                allow_http_secret_references: allow_http_secret_references
                    || std::env::var(daemon::HTTP_SECRET_REFERENCES_ENV).is_ok_and(|v| v == "1"),
                console_log_max: None,
            })
            .await
            .map_err(|e| {
                anyhow::Error::new(e).context(format!("cannot serve {}", dir.display()))
            })?;
            println!(
                "hypedeck serving the Hypeman API on {} (data dir {})",
                d.url,
                dir.display()
            );
            tokio::select! {
                r = d.wait() => r.context("server stopped")?,
                _ = shutdown_signal() => {
                    eprintln!("shutting down (VMs keep running)");
                    d.stop().await.context("stop server")?;
                }
            }
            Ok(())
        }
        Command::Token { rotate } => {
            let keychain = daemon::open_keychain()?;
            let token = daemon::load_or_create_token(keychain.as_ref(), &dir)?;
            if !rotate {
                println!("{}", token.expose());
                return Ok(());
            }
            match Endpoint::find(&dir) {
                // The engine swaps and stores it, so it never serves a token the keychain lacks.
                Some(endpoint) => {
                    let fresh = rotate_through(&endpoint.url, &token.expose()).await?;
                    println!("{fresh}");
                }
                None => {
                    let fresh = daemon::rotate_stored_token(keychain.as_ref(), &dir)?;
                    println!("{}", fresh.expose());
                }
            }
            Ok(())
        }
        Command::KernelBundle { deb, out, pin } => {
            let manifest = hypedeck_boot::build_bundle(&deb, &out, pin.as_deref()).await?;
            println!(
                "{} {} ({}, release {}) in {}",
                manifest.package,
                manifest.version,
                manifest.arch,
                manifest.release,
                out.display()
            );
            Ok(())
        }
        Command::Doctor => {
            let checks = daemon::local_checks(&dir).await;
            let mut missing = 0;
            for c in &checks {
                let mark = match c.status {
                    hypedeck_engine::checks::CheckStatus::Ok => "ok",
                    hypedeck_engine::checks::CheckStatus::Warning => "warning",
                    hypedeck_engine::checks::CheckStatus::Missing => {
                        missing += 1;
                        "MISSING"
                    }
                };
                println!("[{mark}] {}: {}", c.title, c.detail);
                if let Some(fix) = &c.fix {
                    println!("    why: {}", c.why);
                    println!("    fix: {fix}");
                }
            }
            if missing > 0 {
                anyhow::bail!("{missing} of {} checks failed", checks.len());
            }
            Ok(())
        }
        Command::Rotate {
            instance,
            key,
            from,
        } => rotate(&dir, &instance, &key, from).await,
        Command::Completion { shell } => {
            use clap::CommandFactory as _;
            clap_complete::generate(
                shell,
                &mut Cli::command(),
                "hypedeck",
                &mut std::io::stdout(),
            );
            Ok(())
        }
        Command::Man => {
            use clap::CommandFactory as _;
            clap_mangen::Man::new(Cli::command()).render(&mut std::io::stdout())?;
            Ok(())
        }
        Command::Status => {
            match Endpoint::find(&dir) {
                Some(e) => println!("running: {} (pid {})", e.url, e.pid),
                None => println!("not running (data dir {})", dir.display()),
            }
            Ok(())
        }
        _ => unreachable!("API verbs run in api_verb"),
    }
}

/// `POST /system/token/rotate` on the engine at `url` (plain HTTP on loopback, as advertised).
async fn rotate_through(url: &str, token: &str) -> anyhow::Result<String> {
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
    let authority = url
        .strip_prefix("http://")
        .context("the running engine does not serve plain http")?
        .trim_end_matches('/');
    let mut stream = tokio::net::TcpStream::connect(authority)
        .await
        .with_context(|| format!("connect to the engine at {url}"))?;
    let request = format!(
        "POST /system/token/rotate HTTP/1.1\r\nHost: {authority}\r\nAuthorization: Bearer {token}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
    );
    stream.write_all(request.as_bytes()).await?;
    let mut response = String::new();
    stream.read_to_string(&mut response).await?;
    let (head, body) = response
        .split_once("\r\n\r\n")
        .context("the engine's answer is not HTTP")?;
    let value: serde_json::Value = serde_json::from_str(body.trim()).unwrap_or_default();
    if !head.starts_with("HTTP/1.1 200") {
        anyhow::bail!(
            "the engine refused to rotate the token: {}",
            value["message"]
                .as_str()
                .unwrap_or(head.lines().next().unwrap_or(""))
        );
    }
    value["token"]
        .as_str()
        .map(str::to_string)
        .context("the engine's answer has no token")
}

/// `hypedeck rotate`: PATCH the instance's env over the engine's Unix socket, then print the
/// credential's new fingerprint (never the value).
#[cfg(unix)]
async fn rotate(
    dir: &std::path::Path,
    instance: &str,
    key: &str,
    from: Option<String>,
) -> anyhow::Result<()> {
    let value = match from {
        Some(reference) => reference,
        None => read_secret(&format!("new value of {key}: "))?,
    };
    anyhow::ensure!(!value.is_empty(), "no value given for {key}");
    let socket = hypedeck_cli::local::socket_path(dir);
    anyhow::ensure!(
        Endpoint::find(dir).is_some() && socket.exists(),
        "no engine is running for {} (start it with `hypedeck serve` or the desktop app)",
        dir.display()
    );
    let keychain = daemon::open_keychain()?;
    let token = daemon::load_or_create_token(keychain.as_ref(), dir)?;
    let id = instance.replace('/', "%2F");
    let body = serde_json::to_vec(&serde_json::json!({ "env": { key: value } }))?;
    let (status, answer) = hypedeck_cli::local::request(
        &socket,
        &token.expose(),
        "PATCH",
        &format!("/instances/{id}"),
        Some(body),
    )
    .await
    .with_context(|| format!("reach the engine on {}", socket.display()))?;
    if status != 200 {
        let message: serde_json::Value = serde_json::from_slice(&answer).unwrap_or_default();
        anyhow::bail!(
            "the engine refused the rotation ({status}): {}",
            message["message"].as_str().unwrap_or("no message")
        );
    }
    let (_, credentials) = hypedeck_cli::local::request(
        &socket,
        &token.expose(),
        "GET",
        &format!("/instances/{id}/credentials"),
        None,
    )
    .await?;
    let credentials: serde_json::Value = serde_json::from_slice(&credentials).unwrap_or_default();
    let fingerprint = credentials
        .as_array()
        .into_iter()
        .flatten()
        .find(|c| c["env"] == key)
        .and_then(|c| c["fingerprint"].as_str())
        .unwrap_or("unknown");
    println!("rotated {key} of {instance} (fingerprint {fingerprint})");
    Ok(())
}

#[cfg(not(unix))]
async fn rotate(
    _dir: &std::path::Path,
    _instance: &str,
    _key: &str,
    _from: Option<String>,
) -> anyhow::Result<()> {
    anyhow::bail!("hypedeck rotate needs the engine's Unix socket (Linux, macOS)")
}

/// A secret from stdin: the first line when piped, or typed at a prompt without echo.
#[cfg(unix)]
fn read_secret(prompt: &str) -> anyhow::Result<String> {
    use std::io::{BufRead as _, IsTerminal as _, Write as _};
    let stdin = std::io::stdin();
    let mut line = String::new();
    if !stdin.is_terminal() {
        stdin.lock().read_line(&mut line)?;
        return Ok(line.trim_end_matches(['\r', '\n']).to_string());
    }
    eprint!("{prompt}");
    std::io::stderr().flush()?;
    let saved = rustix::termios::tcgetattr(&stdin)?;
    let mut quiet = saved.clone();
    quiet.local_modes.remove(rustix::termios::LocalModes::ECHO);
    rustix::termios::tcsetattr(&stdin, rustix::termios::OptionalActions::Now, &quiet)?;
    let read = stdin.lock().read_line(&mut line);
    rustix::termios::tcsetattr(&stdin, rustix::termios::OptionalActions::Now, &saved)?;
    eprintln!();
    read?;
    Ok(line.trim_end_matches(['\r', '\n']).to_string())
}

async fn shutdown_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        if let Ok(mut term) = signal(SignalKind::terminate()) {
            tokio::select! {
                _ = term.recv() => {}
                _ = tokio::signal::ctrl_c() => {}
            }
            return;
        }
    }
    let _ = tokio::signal::ctrl_c().await;
}

fn main() -> ExitCode {
    hypedeck_cli::init_process();
    let cli = Cli::parse();
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(r) => r,
        Err(e) => {
            eprintln!("hypedeck: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let verb = runtime.block_on(async {
        match data_dir(&cli) {
            Ok(dir) => api_verb(&cli, &dir).await,
            Err(e) => Some(Err(CliError::Usage(format!("{e:#}")))),
        }
    });
    if let Some(result) = verb {
        // An exec's stdin reader may still be blocked in read(2) on a terminal: do not wait.
        runtime.shutdown_background();
        return match result {
            Ok(()) => ExitCode::SUCCESS,
            Err(CliError::Exit(code)) => {
                ExitCode::from(u8::try_from(code).unwrap_or(hypedeck_cli::client::exit::FAILED))
            }
            Err(e) => {
                eprintln!("hypedeck: {e}");
                if let CliError::Api { code, message, .. } = &e
                    && cli.format_error != Format::Auto
                {
                    let doc = serde_json::json!({ "code": code, "message": message });
                    let _ = Output::stdout(cli.format_error, cli.transform_error.clone())
                        .show("Error", &verbs::Doc::from_value(doc));
                }
                ExitCode::from(e.exit_code())
            }
        };
    }
    match runtime.block_on(run(cli)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("hypedeck: {e:#}");
            ExitCode::FAILURE
        }
    }
}
