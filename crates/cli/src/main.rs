//! `hypedeck`: run the engine headless (`serve`) and small verbs for scripts.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use clap::{Parser, Subcommand, ValueEnum};
use hypedeck_cli::daemon::{self, DaemonOptions, Endpoint, HypervisorChoice};

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
}

fn data_dir(cli: &Cli) -> anyhow::Result<PathBuf> {
    match &cli.data_dir {
        Some(d) => Ok(d.clone()),
        None => hypedeck_store::default_data_dir()
            .context("cannot determine a data dir; pass --data-dir"),
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
        Command::Status => {
            match Endpoint::find(&dir) {
                Some(e) => println!("running: {} (pid {})", e.url, e.pid),
                None => println!("not running (data dir {})", dir.display()),
            }
            Ok(())
        }
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
    match runtime.block_on(run(cli)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("hypedeck: {e:#}");
            ExitCode::FAILURE
        }
    }
}
