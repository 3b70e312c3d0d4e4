//! PID 1 inside the guest (a static musl binary packed into the initramfs): mounts, reads the
//! config disk, sets up the overlay root and network, runs the entrypoint with Docker semantics,
//! forwards signals, reaps, reports `HYPEMAN-EXIT code=N message="…"` on the serial console and
//! powers off. Lands with the real-VM issue; this skeleton only refuses to run as a host program.

fn main() {
    eprintln!("hypedeck-guest-init is the guest's PID 1 and is not meant to run on the host");
    std::process::exit(2);
}
