//! `hello`: the program of Hypedeck's sample image. The image holds this same static binary as
//! `/hello` (so the app can build it without any registry); run under that name it greets,
//! says which kernel it runs on, then waits — printing a heartbeat once a minute — until it is
//! told to stop (SIGTERM or SIGINT), and exits 0.

#![allow(unsafe_code)]

use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

static STOP: AtomicBool = AtomicBool::new(false);

extern "C" fn on_stop(_: libc::c_int) {
    STOP.store(true, Ordering::SeqCst);
}

/// Runs the sample program; returns its exit code.
pub fn run() -> i32 {
    // SAFETY: installs an async-signal-safe handler (one atomic store).
    unsafe {
        libc::signal(libc::SIGTERM, on_stop as *const () as libc::sighandler_t);
        libc::signal(libc::SIGINT, on_stop as *const () as libc::sighandler_t);
    }
    println!("{}", hypedeck_guest_init::HELLO_GREETING);
    let release = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
    println!(
        "Linux {} on {} vCPU(s); this program is /hello, PID {}.",
        release.trim(),
        std::thread::available_parallelism().map_or(1, |n| n.get()),
        std::process::id()
    );
    println!("Nothing here can reach your real credentials. Stop me from Hypedeck when done.");
    let mut waited = Duration::ZERO;
    while !STOP.load(Ordering::SeqCst) {
        std::thread::sleep(Duration::from_millis(200));
        waited += Duration::from_millis(200);
        if waited.as_secs() > 0 && waited.as_millis().is_multiple_of(60_000) {
            println!("still here after {} min", waited.as_secs() / 60);
        }
    }
    println!("Goodbye.");
    0
}
