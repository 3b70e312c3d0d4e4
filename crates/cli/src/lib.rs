//! The `hypedeck` binary's library half: [`daemon`] starts (or finds) the engine and its API
//! for a data dir. Both `hypedeck serve` and the desktop app use it, so there is one way to
//! run an engine.

pub mod client;
pub mod cp;
pub mod daemon;
pub mod exec;
pub mod gjson;
#[cfg(unix)]
pub mod local;
pub mod output;
pub mod progress;
pub mod settings;
pub mod verbs;

/// A process that holds credential values, the API token and the egress CA key writes no core
/// file (a crash would put them on disk), and on Linux is not dumpable: other processes of the
/// same user cannot `ptrace` it or read its memory through `/proc`, unless they are root.
/// Programs it starts (VMMs, helpers) are unaffected: `exec` resets both.
pub fn harden_process() -> std::io::Result<()> {
    #[cfg(unix)]
    rustix::process::setrlimit(
        rustix::process::Resource::Core,
        rustix::process::Rlimit {
            current: Some(0),
            maximum: Some(0),
        },
    )?;
    #[cfg(target_os = "linux")]
    rustix::process::set_dumpable_behavior(rustix::process::DumpableBehavior::NotDumpable)?;
    Ok(())
}

/// Call first thing in `main` of any binary that runs an engine (`hypedeck`, the desktop app):
/// hardens the process ([`harden_process`]) and sets up logging to stderr (`HYPEDECK_LOG`,
/// default `info`).
pub fn init_process() {
    if let Err(e) = harden_process() {
        eprintln!("hypedeck: could not harden the process: {e}");
    }
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("HYPEDECK_LOG")
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .init();
}

#[cfg(test)]
mod tests {
    /// After hardening: no core files, and not dumpable (Linux).
    #[test]
    fn a_hardened_process_writes_no_core_and_is_not_dumpable() {
        super::harden_process().unwrap();
        let core = rustix::process::getrlimit(rustix::process::Resource::Core);
        assert_eq!((core.current, core.maximum), (Some(0), Some(0)));
        #[cfg(target_os = "linux")]
        assert_eq!(
            rustix::process::dumpable_behavior().unwrap(),
            rustix::process::DumpableBehavior::NotDumpable
        );
    }
}
