//! The stdio bridge QEMU runs per guest connection to an instance's proxy listener.

/// The per-connection bridge QEMU runs for `guestfwd=…-cmd:`: copies stdin to a TCP connection
/// to `127.0.0.1:port` (the instance's proxy listener) and the connection back to stdout, then
/// exits when either side closes. QEMU's `guestfwd` with a `tcp:` target is a single chardev
/// stream, so a command per guest connection is what lets the guest open many connections.
pub fn connect_stdio(port: u16) -> std::io::Result<()> {
    use std::io::{Read, Write};
    let stream = std::net::TcpStream::connect(("127.0.0.1", port))?;
    stream.set_nodelay(true)?;
    let mut upstream_reader = stream.try_clone()?;
    let mut upstream_writer = stream;
    let to_proxy = std::thread::spawn(move || {
        let mut stdin = std::io::stdin().lock();
        let mut buf = [0u8; 16 * 1024];
        loop {
            match stdin.read(&mut buf) {
                Ok(0) | Err(_) => break,
                Ok(n) => {
                    if upstream_writer.write_all(&buf[..n]).is_err() {
                        break;
                    }
                }
            }
        }
        let _ = upstream_writer.shutdown(std::net::Shutdown::Write);
    });
    let mut stdout = std::io::stdout().lock();
    let mut buf = [0u8; 16 * 1024];
    loop {
        match upstream_reader.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => {
                if stdout.write_all(&buf[..n]).is_err() || stdout.flush().is_err() {
                    break;
                }
            }
        }
    }
    drop(to_proxy);
    Ok(())
}

/// The argv[1] that makes a Hypedeck binary act as [`connect_stdio`].
pub const CONNECT_SUBCOMMAND: &str = "__egress-connect";

/// If this process was started as the guestfwd bridge, runs it and exits; otherwise returns.
/// Call first thing in `main` of every binary that runs an engine.
pub fn maybe_run_connect_helper() {
    let mut args = std::env::args().skip(1);
    if args.next().as_deref() != Some(CONNECT_SUBCOMMAND) {
        return;
    }
    let code = match args.next().and_then(|p| p.parse::<u16>().ok()) {
        Some(port) => match connect_stdio(port) {
            Ok(()) => 0,
            Err(_) => 1,
        },
        None => 2,
    };
    std::process::exit(code);
}
