//! The exec agent: a process forked by PID 1 and chrooted into the instance's root, serving
//! the host over the `hypedeck.agent` virtio-serial port and/or vsock port
//! `AGENT_VSOCK_PORT` (protocol in `agent_proto`).
//!
//! One thread reads frames; each session has a thread per output stream and one waiting for
//! the process. Processes run in their own session (process group), with a pty when asked.
//! When the host end goes away, every session is killed: a new host connection starts clean.
//!
//! Links are non-blocking: with no host attached a virtio-serial read returns 0 and a write
//! would wait forever, so reads poll and writes give up after a while.
#![allow(unsafe_code)]

use std::collections::HashMap;
use std::fs::File;
use std::io::{Read, Write};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::copy::Copies;
use hypedeck_guest_init::agent_proto::{
    Identity, Kind, MountRequest, OpenRequest, PathInfo, StatRequest, UnmountRequest, body_len,
    encode, split_body,
};

/// How the agent writes to the host: whole frames, one at a time.
#[derive(Clone)]
pub(crate) struct Link {
    port: Arc<Mutex<File>>,
}

impl Link {
    pub(crate) fn send(&self, kind: Kind, session: u32, payload: &[u8]) {
        let frame = encode(kind, session, payload);
        let Ok(mut port) = self.port.lock() else {
            return;
        };
        let fd = port.as_raw_fd();
        let mut written = 0;
        let mut stalls = 0;
        while written < frame.len() {
            match port.write(&frame[written..]) {
                Ok(0) => return,
                Ok(n) => written += n,
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                    // No room (or no host). virtio-console reclaims used buffers when written
                    // to rather than waking pollers, so retry soon; give up after ~10 s.
                    stalls += 1;
                    if stalls > 5000 {
                        return;
                    }
                    wait(fd, libc::POLLOUT, 2);
                }
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(_) => return,
            }
        }
    }
}

/// Constant-time equality (the key is a secret).
fn same(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// Polls `fd` for `events` up to `ms`; true when ready (and not hung up).
fn wait(fd: i32, events: libc::c_short, ms: i32) -> bool {
    let mut p = libc::pollfd {
        fd,
        events,
        revents: 0,
    };
    // SAFETY: one valid pollfd.
    let n = unsafe { libc::poll(&mut p, 1, ms) };
    n > 0 && p.revents & events != 0 && p.revents & libc::POLLHUP == 0
}

struct Session {
    pid: i32,
    /// Stdin pipe or pty master (None once closed).
    input: Option<File>,
    /// The pty master, for resizes.
    pty: Option<Arc<OwnedFd>>,
}

type Sessions = Arc<Mutex<HashMap<u32, Session>>>;

/// Serves the host forever: a virtio-serial port (one persistent link, re-used by each new
/// host connection), a vsock listener (every accepted connection is a link), or both.
/// `base_env` is the program's environment (exec sessions inherit it).
/// `key`: what a vsock link must present first (a [`Kind::Hello`] frame) to be served.
pub fn run(
    serial: Option<File>,
    vsock: Option<OwnedFd>,
    base_env: Vec<(String, String)>,
    key: Option<String>,
) -> ! {
    // A host that went away must not kill the agent when a session writes to its link.
    // SAFETY: setting a signal disposition.
    unsafe { libc::signal(libc::SIGPIPE, libc::SIG_IGN) };
    let env = Arc::new(base_env);
    let key = Arc::new(key);
    if let Some(listener) = vsock {
        let env = env.clone();
        if serial.is_some() {
            std::thread::spawn(move || accept_loop(listener, env, key));
        } else {
            accept_loop(listener, env, key)
        }
    }
    if let Some(port) = serial {
        // The virtio-serial port is the VMM's own socket on the host, private to the engine's
        // user: no key asked.
        loop {
            serve_link(&port, &env, true, None);
        }
    }
    std::process::exit(1)
}

/// Accepts host connections on the vsock listener, one thread per link.
fn accept_loop(listener: OwnedFd, env: Arc<Vec<(String, String)>>, key: Arc<Option<String>>) -> ! {
    loop {
        // SAFETY: accept4 on our listening socket; null address pointers are allowed.
        let fd = unsafe {
            libc::accept4(
                listener.as_raw_fd(),
                std::ptr::null_mut(),
                std::ptr::null_mut(),
                libc::SOCK_CLOEXEC,
            )
        };
        if fd < 0 {
            std::thread::sleep(Duration::from_millis(20));
            continue;
        }
        // SAFETY: accept4 returned a new descriptor we now own.
        let conn = unsafe { File::from_raw_fd(fd) };
        let env = env.clone();
        let key = key.clone();
        std::thread::spawn(move || serve_link(&conn, &env, false, key.as_deref()));
    }
}

/// Serves one link until it ends. A virtio-serial port (`persistent`) never ends: a host that
/// left takes its sessions with it and the port waits for the next host. A socket ends at EOF
/// (its sessions are killed).
///
/// With `key`, the link's first frame must be [`Kind::Hello`] carrying it; anything else
/// closes the link before a byte is answered.
fn serve_link(port: &File, base_env: &[(String, String)], persistent: bool, key: Option<&str>) {
    let mut greeted = key.is_none();
    let fd = port.as_raw_fd();
    // SAFETY: fcntl on an fd we own.
    unsafe {
        let flags = libc::fcntl(fd, libc::F_GETFL);
        libc::fcntl(fd, libc::F_SETFL, flags | libc::O_NONBLOCK);
    }
    let (Ok(mut reader), Ok(writer)) = (port.try_clone(), port.try_clone()) else {
        std::thread::sleep(Duration::from_millis(100));
        return;
    };
    let link = Link {
        port: Arc::new(Mutex::new(writer)),
    };
    let sessions: Sessions = Arc::new(Mutex::new(HashMap::new()));
    let copies = Arc::new(Copies::default());
    let mut buf: Vec<u8> = Vec::new();
    let mut chunk = vec![0u8; 64 * 1024];
    let host_left = |sessions: &Sessions, buf: &mut Vec<u8>| {
        drop_all(sessions);
        copies.cancel_all();
        buf.clear();
        std::thread::sleep(Duration::from_millis(100));
    };
    loop {
        if !wait(fd, libc::POLLIN, 1000) {
            // Nothing, or no host: a host that left takes its sessions with it.
            let mut p = libc::pollfd {
                fd,
                events: libc::POLLIN,
                revents: 0,
            };
            // SAFETY: one valid pollfd, zero timeout.
            unsafe { libc::poll(&mut p, 1, 0) };
            if p.revents & libc::POLLHUP != 0 {
                if !persistent {
                    drop_all(&sessions);
                    copies.cancel_all();
                    return;
                }
                host_left(&sessions, &mut buf);
            }
            continue;
        }
        match reader.read(&mut chunk) {
            Ok(0) => {
                if !persistent {
                    drop_all(&sessions);
                    copies.cancel_all();
                    return;
                }
                host_left(&sessions, &mut buf);
                continue;
            }
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => continue,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(_) => {
                if !persistent {
                    drop_all(&sessions);
                    copies.cancel_all();
                    return;
                }
                std::thread::sleep(Duration::from_millis(100));
                continue;
            }
        }
        // Handle every whole frame in the buffer.
        loop {
            if buf.len() < 4 {
                break;
            }
            let len = match body_len([buf[0], buf[1], buf[2], buf[3]]) {
                Ok(len) => len,
                Err(_) => {
                    // Out of step (garbage from an earlier host): start over.
                    buf.clear();
                    break;
                }
            };
            if buf.len() < 4 + len {
                break;
            }
            let body: Vec<u8> = buf.drain(..4 + len).skip(4).collect();
            let Ok((kind, session, payload)) = split_body(&body) else {
                continue;
            };
            if !greeted {
                if kind == Kind::Hello && key.is_some_and(|k| same(k.as_bytes(), payload)) {
                    greeted = true;
                    continue;
                }
                drop_all(&sessions);
                return;
            }
            if kind != Kind::Hello && !copies.handle(kind, session, payload, &link) {
                if kind == Kind::Signal {
                    copies.cancel(session);
                }
                handle(kind, session, payload, &link, &sessions, base_env);
            }
        }
    }
}

fn drop_all(sessions: &Sessions) {
    let Ok(mut map) = sessions.lock() else { return };
    for (_, s) in map.drain() {
        // SAFETY: signalling a process group we created.
        unsafe { libc::kill(-s.pid, libc::SIGKILL) };
    }
}

fn handle(
    kind: Kind,
    session: u32,
    payload: &[u8],
    link: &Link,
    sessions: &Sessions,
    base_env: &[(String, String)],
) {
    match kind {
        Kind::Ping => link.send(Kind::Pong, session, payload),
        Kind::Open => match serde_json::from_slice::<OpenRequest>(payload) {
            Ok(req) => {
                if let Err(e) = open(session, req, link, sessions, base_env) {
                    link.send(Kind::Error, session, e.as_bytes());
                }
            }
            Err(e) => link.send(Kind::Error, session, format!("bad request: {e}").as_bytes()),
        },
        Kind::Stdin => {
            let mut map = sessions.lock().unwrap_or_else(|e| e.into_inner());
            if let Some(input) = map.get_mut(&session).and_then(|s| s.input.as_mut()) {
                let _ = input.write_all(payload);
            }
        }
        Kind::StdinEof => {
            let mut map = sessions.lock().unwrap_or_else(|e| e.into_inner());
            if let Some(s) = map.get_mut(&session) {
                if s.pty.is_some() {
                    // A terminal's EOF is ^D.
                    if let Some(input) = s.input.as_mut() {
                        let _ = input.write_all(&[4]);
                    }
                } else {
                    s.input = None;
                }
            }
        }
        Kind::Resize if payload.len() == 4 => {
            let map = sessions.lock().unwrap_or_else(|e| e.into_inner());
            if let Some(pty) = map.get(&session).and_then(|s| s.pty.clone()) {
                let ws = libc::winsize {
                    ws_row: u16::from_be_bytes([payload[0], payload[1]]),
                    ws_col: u16::from_be_bytes([payload[2], payload[3]]),
                    ws_xpixel: 0,
                    ws_ypixel: 0,
                };
                // SAFETY: TIOCSWINSZ with a valid winsize on our pty master.
                unsafe { libc::ioctl(pty.as_raw_fd(), libc::TIOCSWINSZ, &ws) };
            }
        }
        Kind::Signal if payload.len() == 4 => {
            let sig = i32::from_be_bytes([payload[0], payload[1], payload[2], payload[3]]);
            let map = sessions.lock().unwrap_or_else(|e| e.into_inner());
            if let Some(s) = map.get(&session) {
                // SAFETY: signalling the session's process group.
                unsafe { libc::kill(-s.pid, sig) };
            }
        }
        Kind::SetClock => {
            let reply = match hypedeck_guest_init::agent_proto::parse_clock_payload(payload) {
                Some((secs, nanos)) => set_clock(secs, nanos).err().unwrap_or_default(),
                None => "bad clock payload".to_string(),
            };
            link.send(Kind::ClockSet, session, reply.as_bytes());
        }
        Kind::Reidentify => {
            let reply = answer(payload, "identity", |identity: Identity| {
                reidentify(&identity)
            });
            link.send(Kind::Reidentified, session, reply.as_bytes());
        }
        Kind::Mount => {
            // The disk may take a moment to appear: the other sessions go on meanwhile.
            let (payload, link) = (payload.to_vec(), link.clone());
            std::thread::spawn(move || {
                let reply = answer(&payload, "mount request", |req: MountRequest| {
                    mount_volume(&req)
                });
                link.send(Kind::Mounted, session, reply.as_bytes());
            });
        }
        Kind::Unmount => {
            let reply = answer(payload, "unmount request", |req: UnmountRequest| {
                unmount_volume(&req)
            });
            link.send(Kind::Unmounted, session, reply.as_bytes());
        }
        Kind::Stat => {
            let info = match serde_json::from_slice::<StatRequest>(payload) {
                Ok(req) => stat(&req),
                Err(e) => PathInfo {
                    error: Some(format!("bad request: {e}")),
                    ..PathInfo::default()
                },
            };
            let json = serde_json::to_vec(&info).unwrap_or_default();
            link.send(Kind::StatResult, session, &json);
        }
        _ => {}
    }
}

/// Runs `f` on the JSON `payload` and gives the answer frame's text: empty when it worked, else
/// why not.
fn answer<T: serde::de::DeserializeOwned>(
    payload: &[u8],
    what: &str,
    f: impl FnOnce(T) -> Result<(), String>,
) -> String {
    match serde_json::from_slice::<T>(payload) {
        Ok(request) => f(request).err().unwrap_or_default(),
        Err(e) => format!("bad {what}: {e}"),
    }
}

/// How long a disk attached while the guest runs may take to appear.
const DISK_WAIT: std::time::Duration = std::time::Duration::from_secs(15);

/// The block device whose serial is `serial` (`/dev/vdX`), if there is one.
fn disk_with_serial(serial: &str) -> Option<String> {
    std::fs::read_dir("/sys/block")
        .ok()?
        .flatten()
        .find_map(|e| {
            let name = e.file_name().to_string_lossy().into_owned();
            let found = std::fs::read_to_string(e.path().join("serial")).ok()?;
            (found.trim_end_matches(['\0', '\n']) == serial).then(|| format!("/dev/{name}"))
        })
}

/// Mounts the disk with the request's serial at its path: ext4, read-write or read-only with
/// `noload` (a shared disk is never written, not even its journal), as at boot. (The agent is
/// PID 1's child, root in the image's root, which has the kernel's `/dev` and `/sys`.)
fn mount_volume(req: &MountRequest) -> Result<(), String> {
    if !req.mount_path.starts_with('/') || req.mount_path.contains('\0') {
        return Err("the mount path must be absolute".into());
    }
    let deadline = std::time::Instant::now() + DISK_WAIT;
    let device = loop {
        if let Some(d) = disk_with_serial(&req.serial)
            && std::path::Path::new(&d).exists()
        {
            break d;
        }
        if std::time::Instant::now() >= deadline {
            return Err(format!(
                "the disk did not appear in the guest within {} s",
                DISK_WAIT.as_secs()
            ));
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    };
    std::fs::create_dir_all(&req.mount_path)
        .map_err(|e| format!("create {}: {e}", req.mount_path))?;
    let (flags, data) = if req.readonly {
        (libc::MS_RDONLY, "noload")
    } else {
        (0, "")
    };
    let c = |s: &str| std::ffi::CString::new(s).map_err(|_| "bad path".to_string());
    let (src, dst, fstype, data) = (c(&device)?, c(&req.mount_path)?, c("ext4")?, c(data)?);
    // SAFETY: valid NUL-terminated strings that outlive the call.
    let rc = unsafe {
        libc::mount(
            src.as_ptr(),
            dst.as_ptr(),
            fstype.as_ptr(),
            flags,
            data.as_ptr().cast(),
        )
    };
    if rc != 0 {
        return Err(format!(
            "mount {device} at {}: {}",
            req.mount_path,
            std::io::Error::last_os_error()
        ));
    }
    Ok(())
}

/// Flushes and unmounts a volume; a volume still in use (open files, a process's working
/// directory) stays mounted and the answer says so.
fn unmount_volume(req: &UnmountRequest) -> Result<(), String> {
    let path =
        std::ffi::CString::new(req.mount_path.as_str()).map_err(|_| "bad path".to_string())?;
    // SAFETY: sync(2) takes no arguments; umount2 gets a valid NUL-terminated path.
    unsafe { libc::sync() };
    if unsafe { libc::umount2(path.as_ptr(), 0) } == 0 {
        return Ok(());
    }
    let err = std::io::Error::last_os_error();
    Err(match err.raw_os_error() {
        Some(libc::EBUSY) => format!(
            "{} is in use in the guest (a process has files or its working directory there)",
            req.mount_path
        ),
        Some(libc::EINVAL) => format!("nothing is mounted at {}", req.mount_path),
        _ => format!("unmount {}: {err}", req.mount_path),
    })
}

/// Sets `CLOCK_REALTIME`.
// `time_t` and `c_long` are `i64` here but narrower on 32-bit targets.
#[allow(clippy::useless_conversion, clippy::unnecessary_fallible_conversions)]
pub(crate) fn set_clock(secs: i64, nanos: u32) -> Result<(), String> {
    let ts = libc::timespec {
        tv_sec: secs
            .try_into()
            .map_err(|_| "time out of range".to_string())?,
        tv_nsec: nanos
            .try_into()
            .map_err(|_| "time out of range".to_string())?,
    };
    // SAFETY: clock_settime reads a valid timespec.
    if unsafe { libc::clock_settime(libc::CLOCK_REALTIME, &ts) } == 0 {
        Ok(())
    } else {
        Err(format!(
            "set the clock: {}",
            std::io::Error::last_os_error()
        ))
    }
}

/// Makes this guest the fork it now is: its new MAC and address on eth0 (same subnet, so the
/// gateway, DNS and proxy its programs were given stay right), its default route again, its
/// hostname, and fresh entropy in the kernel's pool followed by a reseed. Every step is tried;
/// the failures are reported together. (PID 1's child: root with every capability, chrooted
/// in the image's root, which has the kernel's /dev.)
fn reidentify(identity: &Identity) -> Result<(), String> {
    let mut failed = Vec::new();
    if let Some(net) = &identity.network
        && let Err(e) = renumber(net)
    {
        failed.push(e);
    }
    let name = identity.hostname.as_bytes();
    // SAFETY: pointer and length describe a valid buffer.
    if unsafe { libc::sethostname(name.as_ptr().cast(), name.len()) } != 0 {
        failed.push(format!("sethostname: {}", std::io::Error::last_os_error()));
    }
    let _ = std::fs::write("/etc/hostname", format!("{}\n", identity.hostname));
    if let Err(e) = reseed(&identity.entropy) {
        failed.push(e);
    }
    if failed.is_empty() {
        Ok(())
    } else {
        Err(failed.join("; "))
    }
}

fn renumber(net: &hypedeck_guest_init::agent_proto::IdentityNetwork) -> Result<(), String> {
    use crate::pid1::ipv4;
    let (Some(ip), Some(gw), Some(mac)) = (
        ipv4(&net.ip),
        ipv4(&net.gateway),
        crate::pid1::parse_mac(&net.mac),
    ) else {
        return Err("bad address in the identity".into());
    };
    // SAFETY: plain socket(2) call; closed below.
    let sock = unsafe { libc::socket(libc::AF_INET, libc::SOCK_DGRAM, 0) };
    if sock < 0 {
        return Err(format!("socket: {}", std::io::Error::last_os_error()));
    }
    let result = crate::pid1::set_mac(sock, "eth0", mac)
        .and_then(|()| crate::pid1::address_eth0(sock, ip, net.prefix, gw));
    // SAFETY: closing the socket opened above.
    unsafe { libc::close(sock) };
    result
}

/// `RNDADDENTROPY` with the host's bytes (credited), then `RNDRESEEDCRNG`: the fork's
/// `getrandom`/`/dev/urandom` output diverges from its parent's from here on.
pub(crate) fn reseed(hex: &str) -> Result<(), String> {
    let bytes: Vec<u8> = (0..hex.len() / 2)
        .filter_map(|i| u8::from_str_radix(hex.get(2 * i..2 * i + 2)?, 16).ok())
        .collect();
    if bytes.len() < 16 {
        return Err("too little entropy in the identity".into());
    }
    // struct rand_pool_info { int entropy_count; int buf_size; __u32 buf[]; }
    let mut info: Vec<u8> = Vec::with_capacity(8 + bytes.len());
    info.extend_from_slice(&i32::try_from(bytes.len() * 8).unwrap_or(0).to_ne_bytes());
    info.extend_from_slice(&i32::try_from(bytes.len()).unwrap_or(0).to_ne_bytes());
    info.extend_from_slice(&bytes);
    // Aligned for the kernel's view of the struct (ints, then u32 words).
    let mut words = vec![0u32; info.len().div_ceil(4)];
    for (i, chunk) in info.chunks(4).enumerate() {
        let mut w = [0u8; 4];
        w[..chunk.len()].copy_from_slice(chunk);
        words[i] = u32::from_ne_bytes(w);
    }
    let random = std::fs::OpenOptions::new()
        .write(true)
        .open("/dev/urandom")
        .map_err(|e| format!("open /dev/urandom: {e}"))?;
    // _IOW('R', 0x03, int[2]) and _IO('R', 0x07).
    const RNDADDENTROPY: libc::c_ulong = 0x4008_5203;
    const RNDRESEEDCRNG: libc::c_ulong = 0x5207;
    // SAFETY: `words` holds a whole rand_pool_info for the ioctl to read.
    if unsafe { libc::ioctl(random.as_raw_fd(), RNDADDENTROPY as _, words.as_ptr()) } != 0 {
        return Err(format!("add entropy: {}", std::io::Error::last_os_error()));
    }
    // SAFETY: RNDRESEEDCRNG takes no argument.
    if unsafe { libc::ioctl(random.as_raw_fd(), RNDRESEEDCRNG as _, 0) } != 0 {
        return Err(format!("reseed: {}", std::io::Error::last_os_error()));
    }
    Ok(())
}

fn stat(req: &StatRequest) -> PathInfo {
    use std::os::unix::fs::PermissionsExt;
    match crate::copy::describe(std::path::Path::new(&req.path), req.follow_links) {
        Ok(m) => {
            let symlink = m.file_type().is_symlink();
            PathInfo {
                exists: true,
                is_dir: Some(m.is_dir()),
                is_file: Some(m.is_file()),
                is_symlink: (!req.follow_links).then_some(symlink),
                link_target: symlink
                    .then(|| std::fs::read_link(&req.path).ok())
                    .flatten()
                    .map(|p| p.to_string_lossy().into_owned()),
                mode: Some(m.permissions().mode() & 0o7777),
                size: Some(m.len()),
                error: None,
            }
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => PathInfo::default(),
        Err(e) => PathInfo {
            error: Some(e.to_string()),
            ..PathInfo::default()
        },
    }
}

fn open(
    session: u32,
    req: OpenRequest,
    link: &Link,
    sessions: &Sessions,
    base_env: &[(String, String)],
) -> Result<(), String> {
    let command = if req.command.is_empty() {
        vec!["/bin/sh".to_string()]
    } else {
        req.command.clone()
    };
    let mut env: Vec<(String, String)> = base_env.to_vec();
    for (k, v) in &req.env {
        env.retain(|(key, _)| key != k);
        env.push((k.clone(), v.clone()));
    }
    if req.tty && !env.iter().any(|(k, _)| k == "TERM") {
        env.push(("TERM".into(), "xterm-256color".into()));
    }
    let path = env
        .iter()
        .rev()
        .find(|(k, _)| k == "PATH")
        .map(|(_, v)| v.clone())
        .unwrap_or_default();
    let program =
        resolve(&command[0], &path).ok_or_else(|| format!("{}: command not found", command[0]))?;
    let mut cmd = Command::new(program);
    cmd.args(&command[1..])
        .env_clear()
        .envs(env.iter().map(|(k, v)| (k, v)))
        .current_dir(if req.cwd.is_empty() { "/" } else { &req.cwd });

    let (input, pty, outputs): (File, Option<Arc<OwnedFd>>, Vec<(Kind, File)>);
    let child = if req.tty {
        let (master, slave) = openpty(req.rows, req.cols)?;
        let slave_fd = slave.as_raw_fd();
        cmd.stdin(Stdio::from(slave.try_clone().map_err(|e| e.to_string())?))
            .stdout(Stdio::from(slave.try_clone().map_err(|e| e.to_string())?))
            .stderr(Stdio::from(slave));
        // SAFETY: only async-signal-safe calls between fork and exec.
        unsafe {
            cmd.pre_exec(move || {
                libc::setsid();
                libc::ioctl(0, libc::TIOCSCTTY, 0);
                let _ = slave_fd;
                Ok(())
            });
        }
        let child = cmd.spawn().map_err(|e| format!("{}: {e}", command[0]))?;
        let master = Arc::new(master);
        let reader = File::from(master.try_clone().map_err(|e| e.to_string())?);
        input = File::from(master.try_clone().map_err(|e| e.to_string())?);
        pty = Some(master);
        outputs = vec![(Kind::Stdout, reader)];
        child
    } else {
        cmd.stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        // SAFETY: setsid is async-signal-safe.
        unsafe {
            cmd.pre_exec(|| {
                libc::setsid();
                Ok(())
            });
        }
        let mut child = cmd.spawn().map_err(|e| format!("{}: {e}", command[0]))?;
        let stdin = child.stdin.take().ok_or("no stdin")?;
        let stdout = child.stdout.take().ok_or("no stdout")?;
        let stderr = child.stderr.take().ok_or("no stderr")?;
        input = File::from(OwnedFd::from(stdin));
        pty = None;
        outputs = vec![
            (Kind::Stdout, File::from(OwnedFd::from(stdout))),
            (Kind::Stderr, File::from(OwnedFd::from(stderr))),
        ];
        child
    };
    let pid = i32::try_from(child.id()).unwrap_or(-1);
    sessions.lock().unwrap_or_else(|e| e.into_inner()).insert(
        session,
        Session {
            pid,
            input: Some(input),
            pty,
        },
    );

    let pumps: Vec<_> = outputs
        .into_iter()
        .map(|(kind, mut file)| {
            let link = link.clone();
            std::thread::spawn(move || {
                // Each frame costs a virtqueue round trip, so coalesce what is already
                // there (programs often write 4 KiB at a time) into frames of up to 64 KiB.
                const FRAME: usize = 64 * 1024;
                let mut buf = vec![0u8; FRAME];
                let fd = file.as_raw_fd();
                loop {
                    let mut filled = 0;
                    let mut ended = false;
                    while filled < FRAME {
                        if filled > 0 && !wait(fd, libc::POLLIN, 0) {
                            break;
                        }
                        match file.read(&mut buf[filled..]) {
                            Ok(0) => {
                                ended = true;
                                break;
                            }
                            Ok(n) => filled += n,
                            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                            // EIO: the pty's last slave closed.
                            Err(_) => {
                                ended = true;
                                break;
                            }
                        }
                    }
                    if filled > 0 {
                        link.send(kind, session, &buf[..filled]);
                    }
                    if ended {
                        break;
                    }
                }
            })
        })
        .collect();
    let link = link.clone();
    let sessions = sessions.clone();
    let mut child = child;
    std::thread::spawn(move || {
        let code = match child.wait() {
            Ok(status) => status
                .code()
                .or_else(|| status.signal().map(|s| 128 + s))
                .unwrap_or(1),
            Err(_) => 1,
        };
        // A pty master keeps reading until every slave is closed; the process group may hold
        // one (a background job): the session ends with its leader.
        let removed = sessions
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(&session);
        drop(removed);
        for p in pumps {
            let _ = p.join();
        }
        link.send(Kind::Exit, session, &code.to_be_bytes());
    });
    Ok(())
}

fn resolve(program: &str, path: &str) -> Option<String> {
    if program.contains('/') {
        return Some(program.to_string());
    }
    path.split(':').find_map(|dir| {
        let candidate = format!(
            "{}/{program}",
            if dir.is_empty() {
                "."
            } else {
                dir.trim_end_matches('/')
            }
        );
        let meta = std::fs::metadata(&candidate).ok()?;
        use std::os::unix::fs::PermissionsExt;
        (meta.is_file() && meta.permissions().mode() & 0o111 != 0).then_some(candidate)
    })
}

fn openpty(rows: u16, cols: u16) -> Result<(OwnedFd, OwnedFd), String> {
    let ws = libc::winsize {
        ws_row: if rows == 0 { 24 } else { rows },
        ws_col: if cols == 0 { 80 } else { cols },
        ws_xpixel: 0,
        ws_ypixel: 0,
    };
    let (mut master, mut slave) = (-1, -1);
    // SAFETY: openpty writes two fds; name and termios may be null.
    let rc = unsafe {
        libc::openpty(
            &mut master,
            &mut slave,
            std::ptr::null_mut(),
            std::ptr::null(),
            &ws,
        )
    };
    if rc != 0 {
        return Err(format!("openpty: {}", std::io::Error::last_os_error()));
    }
    // SAFETY: openpty returned two fresh fds we now own; neither may leak into children.
    unsafe {
        libc::fcntl(master, libc::F_SETFD, libc::FD_CLOEXEC);
        libc::fcntl(slave, libc::F_SETFD, libc::FD_CLOEXEC);
        Ok((OwnedFd::from_raw_fd(master), OwnedFd::from_raw_fd(slave)))
    }
}
