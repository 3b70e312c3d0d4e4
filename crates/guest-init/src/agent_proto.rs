//! The exec agent's wire protocol, spoken over one persistent host↔guest stream (a
//! virtio-serial port on QEMU; the same bytes would run over vsock).
//!
//! Frame: `len: u32 BE` (bytes after this field) · `kind: u8` · `session: u32 BE` · payload.
//! Sessions are numbered by the host; session 0 is the link itself (ping/pong). The host opens
//! a session with [`Kind::Open`] (JSON [`OpenRequest`]) and the guest answers with output
//! frames, then exactly one [`Kind::Exit`] (i32 BE) or [`Kind::Error`] (text: could not start).

use serde::{Deserialize, Serialize};

/// Name of the virtio-serial port the agent serves.
pub const AGENT_PORT: &str = "hypedeck.agent";

/// The vsock port the agent listens on when the VM has a vsock device (every connection is
/// one host link speaking this protocol).
pub const AGENT_VSOCK_PORT: u32 = 1024;
/// Largest frame either side accepts (a stdin/stdout chunk is far smaller).
pub const MAX_FRAME: usize = 1 << 20;
/// Bytes before the payload (`len`, `kind`, `session`).
pub const HEADER: usize = 9;

/// Frame kinds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum Kind {
    /// host → guest: are you there?
    Ping = 1,
    /// guest → host: yes.
    Pong = 2,
    /// host → guest, first on a vsock link: the instance's agent key (its bytes). A vsock
    /// link that does not start with the right key is closed: any process on a host with
    /// kernel vsock can reach a guest's port, only the engine knows the key.
    Hello = 3,
    /// host → guest: start a process (JSON [`OpenRequest`]).
    Open = 10,
    /// host → guest: bytes for the process's stdin (or its terminal).
    Stdin = 11,
    /// host → guest: close the process's stdin.
    StdinEof = 12,
    /// host → guest: terminal size, `rows: u16 BE` · `cols: u16 BE`.
    Resize = 13,
    /// host → guest: send a signal (`i32 BE`) to the process group.
    Signal = 14,
    /// host → guest: describe a path (JSON [`StatRequest`]); answered by `StatResult`.
    Stat = 15,
    /// host → guest: set the wall clock (`CLOCK_REALTIME`) to `i64 BE` seconds · `u32 BE`
    /// nanoseconds since the Unix epoch (after a restore the guest's clock runs behind by the
    /// time it spent saved); answered by `ClockSet`.
    SetClock = 16,
    /// host → guest: this VM is a fork of the VM whose memory it continues (JSON
    /// [`Identity`]): take its name and network identity, and mix fresh entropy into the
    /// kernel's random pool; answered by `Reidentified`.
    Reidentify = 17,
    /// host → guest: mount the disk just attached (JSON [`MountRequest`]); answered by
    /// `Mounted`.
    Mount = 18,
    /// host → guest: unmount a volume before its disk is detached (JSON [`UnmountRequest`]);
    /// answered by `Unmounted`.
    Unmount = 19,
    /// guest → host: output on stdout (or the terminal).
    Stdout = 20,
    /// guest → host: output on stderr.
    Stderr = 21,
    /// guest → host: the process ended with this code (`i32 BE`; 128+N for signal N).
    Exit = 22,
    /// guest → host: the process could not be started (text).
    Error = 23,
    /// guest → host: JSON [`PathInfo`].
    StatResult = 24,
    /// guest → host: the answer to `SetClock`: empty when the clock was set, else why not.
    ClockSet = 25,
    /// guest → host: the answer to `Reidentify`: empty when every step worked, else what
    /// failed.
    Reidentified = 26,
    /// guest → host: the answer to `Mount`: empty when mounted, else why not.
    Mounted = 27,
    /// guest → host: the answer to `Unmount`: empty when unmounted, else why not.
    Unmounted = 28,
    /// host → guest: start writing one file or directory into the guest (JSON
    /// [`PutRequest`]); its bytes follow as `PutData`, then `PutEnd`, answered by `PutResult`.
    PutOpen = 30,
    /// host → guest: the next bytes of the file being put.
    PutData = 31,
    /// host → guest: the file being put is complete.
    PutEnd = 32,
    /// host → guest: stream a path (and, for a directory, everything under it) to the host
    /// (JSON [`GetRequest`]); answered by `GetHeader`/`GetData`/`GetEnd`/`GetError` frames and
    /// exactly one `GetDone`.
    GetOpen = 33,
    /// host → guest: `u64 BE`, how many `GetData` bytes of this session the host has passed
    /// on. The guest keeps at most [`GET_WINDOW`] bytes beyond that in flight.
    GetAck = 34,
    /// guest → host: the answer to `PutEnd` (JSON [`PutResult`]).
    PutResult = 40,
    /// guest → host: an entry of a get begins (JSON [`CopyHeader`]).
    GetHeader = 41,
    /// guest → host: the next bytes of the entry.
    GetData = 42,
    /// guest → host: the entry is complete; one byte, 1 when it was the last entry.
    GetEnd = 43,
    /// guest → host: an entry could not be read (JSON [`CopyError`]); a single path's error
    /// ends the get, a directory's walk goes on.
    GetError = 44,
    /// guest → host: the get is over (nothing follows for this session).
    GetDone = 45,
}

/// Bytes of a get the guest sends beyond the host's last `GetAck`.
pub const GET_WINDOW: u64 = 2 << 20;

impl Kind {
    /// The kind for a byte, if known.
    pub fn from_byte(b: u8) -> Option<Kind> {
        Some(match b {
            1 => Kind::Ping,
            2 => Kind::Pong,
            3 => Kind::Hello,
            10 => Kind::Open,
            11 => Kind::Stdin,
            12 => Kind::StdinEof,
            13 => Kind::Resize,
            14 => Kind::Signal,
            15 => Kind::Stat,
            16 => Kind::SetClock,
            17 => Kind::Reidentify,
            18 => Kind::Mount,
            19 => Kind::Unmount,
            20 => Kind::Stdout,
            21 => Kind::Stderr,
            22 => Kind::Exit,
            23 => Kind::Error,
            24 => Kind::StatResult,
            25 => Kind::ClockSet,
            26 => Kind::Reidentified,
            27 => Kind::Mounted,
            28 => Kind::Unmounted,
            30 => Kind::PutOpen,
            31 => Kind::PutData,
            32 => Kind::PutEnd,
            33 => Kind::GetOpen,
            34 => Kind::GetAck,
            40 => Kind::PutResult,
            41 => Kind::GetHeader,
            42 => Kind::GetData,
            43 => Kind::GetEnd,
            44 => Kind::GetError,
            45 => Kind::GetDone,
            _ => return None,
        })
    }
}

/// Encodes one frame.
pub fn encode(kind: Kind, session: u32, payload: &[u8]) -> Vec<u8> {
    let len = u32::try_from(payload.len() + 5).unwrap_or(u32::MAX);
    let mut out = Vec::with_capacity(HEADER + payload.len());
    out.extend_from_slice(&len.to_be_bytes());
    out.push(kind as u8);
    out.extend_from_slice(&session.to_be_bytes());
    out.extend_from_slice(payload);
    out
}

/// Reads `len` from a frame's first four bytes and checks it; returns the bytes that follow
/// (kind + session + payload).
pub fn body_len(prefix: [u8; 4]) -> Result<usize, String> {
    let len = u32::from_be_bytes(prefix) as usize;
    if !(5..=MAX_FRAME).contains(&len) {
        return Err(format!("bad agent frame length {len}"));
    }
    Ok(len)
}

/// Splits a frame body into kind, session and payload.
pub fn split_body(body: &[u8]) -> Result<(Kind, u32, &[u8]), String> {
    let kind =
        Kind::from_byte(body[0]).ok_or_else(|| format!("unknown agent frame kind {}", body[0]))?;
    let session = u32::from_be_bytes([body[1], body[2], body[3], body[4]]);
    Ok((kind, session, &body[5..]))
}

/// What to run (upstream's `ExecRequest`, resolved by the host).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OpenRequest {
    /// argv; the first word is looked up in `PATH`.
    pub command: Vec<String>,
    /// Extra environment over the program's own.
    #[serde(default)]
    pub env: Vec<(String, String)>,
    /// Working directory (`/` when empty).
    #[serde(default)]
    pub cwd: String,
    /// Run under a terminal.
    #[serde(default)]
    pub tty: bool,
    /// Terminal rows (tty only; 0 = 24).
    #[serde(default)]
    pub rows: u16,
    /// Terminal columns (tty only; 0 = 80).
    #[serde(default)]
    pub cols: u16,
}

/// `GET /instances/{id}/stat` asks this.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StatRequest {
    /// Absolute path in the guest.
    pub path: String,
    /// stat (true) or lstat (false).
    pub follow_links: bool,
}

/// Upstream's `PathInfo`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PathInfo {
    /// Whether the path exists.
    pub exists: bool,
    /// A directory.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub is_dir: Option<bool>,
    /// A regular file.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub is_file: Option<bool>,
    /// A symbolic link (only without `follow_links`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub is_symlink: Option<bool>,
    /// The link's target.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub link_target: Option<String>,
    /// Permission bits.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mode: Option<u32>,
    /// Size in bytes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub size: Option<u64>,
    /// Why the path could not be described (exists is false).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_round_trip() {
        let f = encode(Kind::Stdout, 7, b"hello");
        assert_eq!(f.len(), HEADER + 5);
        let len = body_len([f[0], f[1], f[2], f[3]]).unwrap();
        assert_eq!(len, 10);
        let (kind, session, payload) = split_body(&f[4..]).unwrap();
        assert_eq!((kind, session, payload), (Kind::Stdout, 7, &b"hello"[..]));
        assert!(body_len(0u32.to_be_bytes()).is_err());
        assert!(body_len(((MAX_FRAME + 1) as u32).to_be_bytes()).is_err());
        assert!(split_body(&[99, 0, 0, 0, 1]).is_err());
        for b in 0..=255u8 {
            if let Some(k) = Kind::from_byte(b) {
                assert_eq!(k as u8, b);
            }
        }
    }
}

/// The `SetClock` payload for `time` (a time before the epoch is the epoch).
pub fn clock_payload(time: std::time::SystemTime) -> [u8; 12] {
    let since = time
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    let mut out = [0u8; 12];
    out[..8].copy_from_slice(
        &i64::try_from(since.as_secs())
            .unwrap_or(i64::MAX)
            .to_be_bytes(),
    );
    out[8..].copy_from_slice(&since.subsec_nanos().to_be_bytes());
    out
}

/// Who a forked guest now is (the `Reidentify` payload).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Identity {
    /// Its hostname (the instance's name).
    pub hostname: String,
    /// Its network identity on `eth0`, when it has a network.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub network: Option<IdentityNetwork>,
    /// Bytes from the host's random source, hex: mixed into the kernel's pool, which is then
    /// reseeded (the fork's `/dev/urandom` no longer repeats its parent's).
    pub entropy: String,
}

/// A forked guest's new address (same subnet, gateway and DNS as its parent's).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct IdentityNetwork {
    /// MAC address of `eth0`, `02:..`.
    pub mac: String,
    /// IPv4 address.
    pub ip: String,
    /// Prefix length.
    pub prefix: u8,
    /// Default gateway.
    pub gateway: String,
}

/// A volume to mount while the guest runs (the `Mount` payload).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MountRequest {
    /// The serial of its disk (`/sys/block/vdX/serial`).
    pub serial: String,
    /// Absolute path in the guest (created when missing).
    pub mount_path: String,
    /// Mount read-only (with `noload`, like at boot).
    pub readonly: bool,
}

/// A volume to unmount (the `Unmount` payload).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct UnmountRequest {
    /// Where it is mounted.
    pub mount_path: String,
}

/// One file or directory to write into the guest (the `PutOpen` payload; upstream's
/// `CopyToGuestStart`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PutRequest {
    /// Absolute path in the guest; missing parents are made (0755).
    pub path: String,
    /// Permission bits (0 = 0644 for a file, 0755 for a directory).
    #[serde(default)]
    pub mode: u32,
    /// Make a directory (no bytes follow).
    #[serde(default)]
    pub is_dir: bool,
    /// Owner, applied only when both `uid` and `gid` are non-zero (archive mode).
    #[serde(default)]
    pub uid: u32,
    /// Group (see `uid`).
    #[serde(default)]
    pub gid: u32,
    /// Modification time, seconds since the epoch (0 = now).
    #[serde(default)]
    pub mtime: i64,
}

/// The answer to a put (upstream's `CopyToGuestResponse`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PutResult {
    /// Whether the file or directory was written.
    pub success: bool,
    /// Why not.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub error: String,
    /// Bytes written.
    #[serde(default)]
    pub bytes_written: u64,
}

/// A path to read out of the guest (the `GetOpen` payload; upstream's
/// `CopyFromGuestRequest`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct GetRequest {
    /// Absolute path in the guest.
    pub path: String,
    /// Follow symbolic links (else they are sent as links).
    #[serde(default)]
    pub follow_links: bool,
}

/// An entry of a get (upstream's `CopyFromGuestHeader`). `path` is relative: the base name of
/// the requested path, then the entry's path below it.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct CopyHeader {
    /// Relative path (`dir`, `dir/sub/file`).
    pub path: String,
    /// Permission bits.
    pub mode: u32,
    /// A directory (no bytes follow).
    pub is_dir: bool,
    /// A symbolic link (no bytes follow; see `link_target`).
    #[serde(default)]
    pub is_symlink: bool,
    /// The link's target.
    #[serde(default)]
    pub link_target: String,
    /// Size in bytes.
    pub size: u64,
    /// Modification time, seconds since the epoch.
    pub mtime: i64,
    /// Owner.
    #[serde(default)]
    pub uid: u32,
    /// Group.
    #[serde(default)]
    pub gid: u32,
}

/// An entry a get could not read (upstream's `CopyFromGuestError`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct CopyError {
    /// What went wrong.
    pub message: String,
    /// The guest path it concerns.
    #[serde(default)]
    pub path: String,
}

/// Seconds and nanoseconds from a `SetClock` payload, if it is one.
pub fn parse_clock_payload(payload: &[u8]) -> Option<(i64, u32)> {
    let secs = i64::from_be_bytes(payload.get(..8)?.try_into().ok()?);
    let nanos = u32::from_be_bytes(payload.get(8..12)?.try_into().ok()?);
    (payload.len() == 12 && secs >= 0 && nanos < 1_000_000_000).then_some((secs, nanos))
}

#[cfg(test)]
mod clock_tests {
    use super::*;
    use std::time::{Duration, UNIX_EPOCH};

    #[test]
    fn the_clock_payload_round_trips_and_bad_ones_are_refused() {
        let t = UNIX_EPOCH + Duration::new(1_796_000_000, 123_456_789);
        assert_eq!(
            parse_clock_payload(&clock_payload(t)),
            Some((1_796_000_000, 123_456_789))
        );
        assert_eq!(parse_clock_payload(&[0; 11]), None);
        assert_eq!(parse_clock_payload(&[0; 13]), None);
        let mut bad_nanos = clock_payload(t);
        bad_nanos[8..].copy_from_slice(&1_000_000_000u32.to_be_bytes());
        assert_eq!(parse_clock_payload(&bad_nanos), None);
        assert_eq!(Kind::from_byte(16), Some(Kind::SetClock));
        assert_eq!(Kind::from_byte(25), Some(Kind::ClockSet));
    }
}
