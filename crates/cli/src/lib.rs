//! The `hypedeck` binary's library half: [`daemon`] starts (or finds) the engine and its API
//! for a data dir. Both `hypedeck serve` and the desktop app use it, so there is one way to
//! run an engine.

pub mod daemon;
#[cfg(unix)]
pub mod local;
pub mod settings;

/// Call first thing in `main` of any binary that runs an engine (`hypedeck`, the desktop app):
/// sets up logging to stderr (`HYPEDECK_LOG`, default `info`).
pub fn init_process() {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("HYPEDECK_LOG")
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .init();
}
