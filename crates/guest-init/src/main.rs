//! `hypedeck-guest-init`: PID 1 inside the guest. See `lib.rs` for the host contract and
//! `pid1.rs` for the boot sequence. Run as `hello` (the sample image's `/hello`), it is the
//! sample program instead (`hello.rs`).

#[cfg(target_os = "linux")]
mod agent;
#[cfg(target_os = "linux")]
mod copy;
#[cfg(target_os = "linux")]
mod hello;
#[cfg(target_os = "linux")]
mod pid1;

fn main() {
    #[cfg(target_os = "linux")]
    {
        let argv0 = std::env::args_os().next().unwrap_or_default();
        if std::path::Path::new(&argv0).file_name() == Some(std::ffi::OsStr::new("hello")) {
            std::process::exit(hello::run());
        }
        pid1::run();
    }
    #[cfg(not(target_os = "linux"))]
    {
        eprintln!("hypedeck-guest-init only runs as PID 1 of a Linux guest");
        std::process::exit(2);
    }
}
