//! The `hypedeck` binary's library half: [`daemon`] starts (or finds) the engine and its API
//! for a data dir. Both `hypedeck serve` and the desktop app use it, so there is one way to
//! run an engine.

pub mod daemon;
