//! The `hypedeck` binary's library half: [`daemon`] starts (or finds) the engine and its API
//! for a data dir. Both `hypedeck serve` and the desktop app use it, so there is one way to
//! run an engine.

pub mod daemon;

/// Call first thing in `main` of any binary that runs an engine: QEMU re-runs that binary as
/// the per-connection bridge to the egress proxy.
pub use hypedeck_egress::maybe_run_connect_helper;
