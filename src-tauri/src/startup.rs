//! Time to first paint: from the start of the process to the UI's `first_paint` call.
//!
//! Invariants:
//! - "Start of the process" is the kernel's start time of this process when it can be read
//!   (Linux: `/proc/self/stat` field 22, in clock ticks since boot, against `/proc/uptime`), so
//!   exec, dynamic linking and everything before `main` count. Both files have a 10 ms grain;
//!   only the part before `main` is measured that way, the rest with a monotonic [`Instant`]
//!   taken as the first thing in `main`. Elsewhere (or if `/proc` cannot be read) the time is
//!   counted from `main` and the log says so.
//! - Only the first call counts; later calls (a reload of the UI) are ignored.

use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

/// Clock ticks per second when the auxiliary vector does not say (`USER_HZ` on every
/// mainstream Linux architecture).
#[cfg_attr(not(target_os = "linux"), allow(dead_code))]
const DEFAULT_TICKS_PER_SECOND: u64 = 100;

/// `AT_CLKTCK` in the ELF auxiliary vector.
#[cfg_attr(not(target_os = "linux"), allow(dead_code))]
const AT_CLKTCK: u64 = 17;

/// When the process started, as well as it can be known.
#[derive(Debug, Clone, Copy)]
pub struct ProcessClock {
    main_at: Instant,
    /// Time from the start of the process to `main_at`, when the OS tells.
    before_main: Option<Duration>,
}

impl ProcessClock {
    /// Call first thing in `main`.
    pub fn start() -> ProcessClock {
        let main_at = Instant::now();
        ProcessClock {
            main_at,
            before_main: before_main(),
        }
    }

    /// Time since the start of the process, and whether that start is the process's own
    /// (`true`) or `main`'s (`false`).
    pub fn elapsed(&self) -> (Duration, bool) {
        let since_main = self.main_at.elapsed();
        match self.before_main {
            Some(before) => (before + since_main, true),
            None => (since_main, false),
        }
    }
}

/// Records the first paint once.
#[derive(Debug)]
pub struct FirstPaint {
    clock: ProcessClock,
    done: AtomicBool,
}

impl FirstPaint {
    /// A recorder counting from `clock`.
    pub fn new(clock: ProcessClock) -> FirstPaint {
        FirstPaint {
            clock,
            done: AtomicBool::new(false),
        }
    }

    /// The time to first paint on the first call; `None` after that.
    pub fn record(&self) -> Option<(Duration, bool)> {
        if self.done.swap(true, Ordering::SeqCst) {
            return None;
        }
        Some(self.clock.elapsed())
    }
}

#[cfg(target_os = "linux")]
fn before_main() -> Option<Duration> {
    let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
    let uptime = std::fs::read_to_string("/proc/uptime").ok()?;
    let hz = std::fs::read("/proc/self/auxv")
        .ok()
        .and_then(|auxv| clock_ticks(&auxv))
        .unwrap_or(DEFAULT_TICKS_PER_SECOND);
    process_age(&stat, &uptime, hz)
}

#[cfg(not(target_os = "linux"))]
fn before_main() -> Option<Duration> {
    None
}

/// The process's age from `/proc/self/stat` and `/proc/uptime` read at the same moment, with
/// `hz` clock ticks per second. A start "in the future" (the two files disagree by a tick)
/// reads as zero.
#[cfg_attr(not(target_os = "linux"), allow(dead_code))]
fn process_age(stat: &str, uptime: &str, hz: u64) -> Option<Duration> {
    // The command name (field 2) is in parentheses and may itself hold spaces and ')'.
    let after_comm = &stat[stat.rfind(')')? + 1..];
    // Fields from 3 (state) on; starttime is field 22.
    let start_ticks: u64 = after_comm.split_whitespace().nth(22 - 3)?.parse().ok()?;
    let uptime: f64 = uptime.split_whitespace().next()?.parse().ok()?;
    let uptime = Duration::try_from_secs_f64(uptime).ok()?;
    if hz == 0 {
        return None;
    }
    let started = Duration::from_secs(start_ticks / hz)
        + Duration::from_nanos((start_ticks % hz).checked_mul(1_000_000_000)? / hz);
    Some(uptime.saturating_sub(started))
}

/// `AT_CLKTCK` from an auxiliary vector (pairs of native-endian words).
#[cfg_attr(not(target_os = "linux"), allow(dead_code))]
fn clock_ticks(auxv: &[u8]) -> Option<u64> {
    const WORD: usize = std::mem::size_of::<usize>();
    let word = |bytes: &[u8]| -> Option<u64> {
        let bytes: [u8; WORD] = bytes.try_into().ok()?;
        u64::try_from(usize::from_ne_bytes(bytes)).ok()
    };
    auxv.chunks_exact(2 * WORD)
        .filter_map(|pair| Some((word(&pair[..WORD])?, word(&pair[WORD..])?)))
        .find(|(key, _)| *key == AT_CLKTCK)
        .map(|(_, value)| value)
        .filter(|hz| *hz > 0)
}

#[cfg(test)]
mod tests {
    use super::*;

    // A real line, with a command name that holds a space and a parenthesis.
    const STAT: &str = "4242 (hype deck) x) S 1 4242 4242 0 -1 4194560 1519 0 0 0 3 1 0 0 20 \
                        0 8 0 123456 1000000 2000 18446744073709551615 1 1 0 0 0 0 0 4096 0 0 \
                        0 0 17 1 0 0 0 0 0";

    #[test]
    fn age_is_uptime_minus_start_time() {
        // Started 1234.56 s after boot, now 1234.81 s after boot.
        let age = process_age(STAT, "1234.81 4000.00\n", 100).unwrap();
        assert_eq!(age.as_millis(), 250);
        // Another tick rate.
        let age = process_age(STAT, "500.00 1.00", 250).unwrap();
        assert_eq!(age.as_millis(), 500_000 - 493_824);
    }

    #[test]
    fn a_start_after_now_is_zero_and_garbage_is_none() {
        assert_eq!(process_age(STAT, "1234.50 1", 100), Some(Duration::ZERO));
        assert_eq!(process_age("4242 (x) S 1", "1.0 1.0", 100), None);
        assert_eq!(process_age(STAT, "soon", 100), None);
        assert_eq!(process_age(STAT, "1.0", 0), None);
        assert_eq!(process_age(STAT, "-1.0", 100), None);
        assert_eq!(process_age(STAT, "1e300", 100), None);
    }

    #[test]
    fn finds_the_clock_tick_rate_in_the_auxiliary_vector() {
        let mut auxv = Vec::new();
        for (key, value) in [(6usize, 4096usize), (AT_CLKTCK as usize, 250), (0, 0)] {
            auxv.extend_from_slice(&key.to_ne_bytes());
            auxv.extend_from_slice(&value.to_ne_bytes());
        }
        assert_eq!(clock_ticks(&auxv), Some(250));
        assert_eq!(clock_ticks(&auxv[..2 * std::mem::size_of::<usize>()]), None);
    }

    #[cfg(target_os = "linux")]
    #[test]
    fn this_process_has_an_age() {
        let age = before_main().expect("/proc is readable");
        assert!(age < Duration::from_secs(24 * 3600), "{age:?}");
        let hz = clock_ticks(&std::fs::read("/proc/self/auxv").unwrap());
        assert!(hz.is_some_and(|hz| hz > 0));
    }

    #[test]
    fn first_paint_is_recorded_once() {
        let paint = FirstPaint::new(ProcessClock::start());
        assert!(paint.record().is_some());
        assert!(paint.record().is_none());
    }
}
