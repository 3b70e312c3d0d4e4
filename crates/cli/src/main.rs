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
        Command::Serve { listen, hypervisor } => {
            let hypervisor = match hypervisor {
                HypervisorArg::Auto => HypervisorChoice::Auto,
                HypervisorArg::Fake => HypervisorChoice::Fake,
            };
            let mut d = daemon::start(DaemonOptions {
                data_dir: dir.clone(),
                listen,
                hypervisor,
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
