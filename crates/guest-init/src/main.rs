//! `hypedeck-guest-init`: PID 1 inside the guest. See `lib.rs` for the host contract and
//! `pid1.rs` for the boot sequence.

#[cfg(target_os = "linux")]
mod agent;
#[cfg(target_os = "linux")]
mod pid1;

fn main() {
    #[cfg(target_os = "linux")]
    pid1::run();
    #[cfg(not(target_os = "linux"))]
    {
        eprintln!("hypedeck-guest-init only runs as PID 1 of a Linux guest");
        std::process::exit(2);
    }
}
