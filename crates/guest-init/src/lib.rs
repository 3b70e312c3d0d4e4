//! The contract between the host and `hypedeck-guest-init`, the guest's PID 1.
//!
//! - [`GuestConfig`] is written by the host as JSON onto the config disk (`/dev/vdc`, raw,
//!   NUL-padded) and read by init at boot.
//! - Init reports on the serial console with upstream Hypeman's sentinels:
//!   `HYPEMAN-PROGRAM-START ts=… mode=exec`, `HYPEMAN-AGENT-READY ts=…` and finally
//!   `HYPEMAN-EXIT code=N message="…"`. [`exit_line`] writes and [`parse_exit_line`] reads it.
//! - [`describe_exit`] gives upstream's exit messages (`"killed by signal 9 (killed)"`).
//!
//! Pure: serde only. The PID 1 program itself is `main.rs` (Linux only).

pub mod agent_proto;
pub mod dhcp;

use std::fmt::Write as _;

use serde::{Deserialize, Serialize};

/// First line the sample image's `/hello` program prints (this binary, run as `hello`).
pub const HELLO_GREETING: &str = "Hello from a Hypedeck sandbox!";
/// Serial-log marker printed when the program starts.
pub const PROGRAM_START: &str = "HYPEMAN-PROGRAM-START";
/// Serial-log marker printed when init's control channel is ready.
pub const AGENT_READY: &str = "HYPEMAN-AGENT-READY";
/// Serial-log sentinel carrying the exit code and message.
pub const EXIT: &str = "HYPEMAN-EXIT";
/// Name of the virtio-serial port init listens on for host requests.
pub const CONTROL_PORT: &str = "hypedeck.ctl";
/// Host request on the control port: forward SIGTERM to the program.
pub const CONTROL_TERM: &str = "TERM";
/// Size of the raw config disk (the JSON must fit, NUL padding follows).
pub const CONFIG_DISK_BYTES: usize = 1 << 20;
/// Kernel argument of a template VM: init stops before the config disk and waits for one.
pub const TEMPLATE_ARG: &str = "hypedeck.template=1";
/// Serial-log marker a template VM prints once its kernel is up and init waits for a config:
/// the moment its state is saved.
pub const TEMPLATE_READY: &str = "HYPEDECK-TEMPLATE-READY";

/// Static network settings for the guest's first NIC.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct GuestNetwork {
    /// Guest IPv4 address.
    pub ip: String,
    /// Prefix length.
    pub prefix: u8,
    /// Default gateway.
    pub gateway: String,
    /// DNS server for /etc/resolv.conf.
    pub dns: String,
    /// Take the address, gateway and DNS from the network's DHCP server instead (vz: its NAT
    /// serves its own subnet); the static values are the fallback when nobody answers.
    #[serde(default)]
    pub dhcp: bool,
    /// The NIC's MAC, set by init when the NIC has another one (a VM started from a template
    /// has the template's MAC in its device state).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mac: Option<String>,
}

/// What init needs to run the program.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct GuestConfig {
    /// Program and arguments (entrypoint + cmd, resolved by the host with Docker semantics).
    pub argv: Vec<String>,
    /// Environment, `KEY=VALUE`.
    pub env: Vec<String>,
    /// Working directory inside the image.
    pub workdir: String,
    /// Hostname.
    pub hostname: String,
    /// `/dev/vdb` is a writable ext4 overlay for the read-only root.
    pub overlay: bool,
    /// Static network, or none.
    pub network: Option<GuestNetwork>,
    /// PEM of the host egress proxy's CA, installed into the guest's trust stores.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ca_cert_pem: Option<String>,
    /// Volumes to mount before the program starts, in order.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub volumes: Vec<GuestVolume>,
    /// Do not start the exec agent (`skip_guest_agent`): the instance is Running without it.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub skip_agent: bool,
    /// The key a vsock link must present first ([`agent_proto::Kind::Hello`]); `None`: any
    /// link is served (older engines).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub agent_key: Option<String>,
    /// The host's time when the config was written (Unix nanoseconds). Init sets the clock to
    /// it when the guest's is behind (a VM started from a template wakes with the template's).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub host_time_ns: Option<i128>,
    /// Host randomness (hex) init mixes into the kernel's pool before anything else runs: a VM
    /// started from a template must not draw what its siblings draw.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub entropy: Option<String>,
}

/// One volume as init mounts it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct GuestVolume {
    /// The volume's ext4 disk, e.g. `/dev/vdd`.
    pub device: String,
    /// Absolute mount path in the guest.
    pub mount_path: String,
    /// Mount read-only (with `noload`, so a shared disk is never written, not even its journal).
    pub readonly: bool,
    /// A per-instance ext4 disk for an overlayfs over the read-only volume.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub overlay_device: Option<String>,
}

/// The device name of the `n`-th virtio disk (0 = `/dev/vda`).
pub fn disk_device(n: usize) -> String {
    let letter = char::from(b'a' + u8::try_from(n % 26).unwrap_or(0));
    format!("/dev/vd{letter}")
}

/// Exit code when the egress CA cannot be installed (upstream uses 78, EX_CONFIG).
pub const EXIT_CA_INSTALL_FAILED: i32 = 78;

/// Trust bundles of common distributions, relative to the guest root.
pub const CA_BUNDLES: &[&str] = &[
    "etc/ssl/certs/ca-certificates.crt",
    "etc/pki/tls/certs/ca-bundle.crt",
    "etc/ssl/cert.pem",
];

/// Where the CA is dropped for `update-ca-certificates`-style tooling.
pub const CA_FILE: &str = "usr/local/share/ca-certificates/hypedeck-egress.crt";

impl GuestConfig {
    /// The config disk image: JSON, NUL-padded to [`CONFIG_DISK_BYTES`].
    pub fn to_disk(&self) -> Result<Vec<u8>, String> {
        let mut bytes = serde_json::to_vec(self).map_err(|e| e.to_string())?;
        if bytes.len() >= CONFIG_DISK_BYTES {
            return Err(format!(
                "guest config is {} bytes, more than the config disk holds",
                bytes.len()
            ));
        }
        bytes.resize(CONFIG_DISK_BYTES, 0);
        Ok(bytes)
    }

    /// Reads a config disk (JSON up to the first NUL).
    pub fn from_disk(bytes: &[u8]) -> Result<GuestConfig, String> {
        let end = bytes.iter().position(|b| *b == 0).unwrap_or(bytes.len());
        serde_json::from_slice(&bytes[..end]).map_err(|e| e.to_string())
    }
}

/// Docker semantics for entrypoint/cmd overrides. An override that is `Some(empty)` means
/// "use the image default" (upstream). Overriding the entrypoint drops the image's Cmd unless
/// a cmd override is given too.
pub fn resolve_argv(
    image_entrypoint: &[String],
    image_cmd: &[String],
    entrypoint: Option<&[String]>,
    cmd: Option<&[String]>,
) -> Vec<String> {
    let entrypoint = entrypoint.filter(|e| !e.is_empty());
    let cmd = cmd.filter(|c| !c.is_empty());
    let (ep, default_cmd): (&[String], &[String]) = match entrypoint {
        Some(ep) => (ep, &[]),
        None => (image_entrypoint, image_cmd),
    };
    let mut argv = ep.to_vec();
    argv.extend_from_slice(cmd.unwrap_or(default_cmd));
    argv
}

/// Go's `syscall.Signal.String()` text for common signals (upstream prints these).
pub fn signal_name(signal: i32) -> String {
    let name = match signal {
        1 => "hangup",
        2 => "interrupt",
        3 => "quit",
        4 => "illegal instruction",
        5 => "trace/breakpoint trap",
        6 => "aborted",
        7 => "bus error",
        8 => "floating point exception",
        9 => "killed",
        10 => "user defined signal 1",
        11 => "segmentation fault",
        12 => "user defined signal 2",
        13 => "broken pipe",
        14 => "alarm clock",
        15 => "terminated",
        _ => return format!("signal {signal}"),
    };
    name.to_string()
}

/// Upstream's exit description. `code` is `128 + signal` for signal deaths.
pub fn describe_exit(code: i32, oom: bool) -> String {
    match code {
        0 => "success".into(),
        126 => "permission denied (command not executable)".into(),
        127 => "command not found".into(),
        c if c > 128 => {
            let signal = c - 128;
            let mut text = format!("killed by signal {signal} ({})", signal_name(signal));
            if oom && signal == 9 {
                text.push_str(" - OOM");
            }
            text
        }
        c => format!("exit code {c}"),
    }
}

/// Quotes like Go's `%q` for the printable ASCII and common escapes init produces.
fn go_quote(text: &str) -> String {
    let mut out = String::with_capacity(text.len() + 2);
    out.push('"');
    for c in text.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if (c as u32) < 0x20 || c as u32 == 0x7f => {
                let _ = write!(out, "\\x{:02x}", c as u32);
            }
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

/// The exit sentinel line (without timestamp prefix).
pub fn exit_line(code: i32, message: &str) -> String {
    format!("{EXIT} code={code} message={}", go_quote(message))
}

/// Finds the last exit sentinel in a serial log and returns `(code, message)`.
pub fn parse_exit_line(log: &str) -> Option<(i32, String)> {
    let line = log.lines().rev().find(|l| l.contains(EXIT))?;
    let rest = &line[line.find(EXIT)? + EXIT.len()..];
    let rest = rest.trim_start().strip_prefix("code=")?;
    let (code, rest) = rest.split_once(' ')?;
    let code: i32 = code.parse().ok()?;
    let quoted = rest.trim().strip_prefix("message=")?;
    let inner = quoted.strip_prefix('"')?.strip_suffix('"')?;
    let mut message = String::new();
    let mut chars = inner.chars();
    while let Some(c) = chars.next() {
        if c != '\\' {
            message.push(c);
            continue;
        }
        match chars.next()? {
            'n' => message.push('\n'),
            'r' => message.push('\r'),
            't' => message.push('\t'),
            'x' => {
                let hex: String = chars.by_ref().take(2).collect();
                message.push(char::from(u8::from_str_radix(&hex, 16).ok()?));
            }
            other => message.push(other),
        }
    }
    Some((code, message))
}

/// RFC 3339 UTC timestamp with nanoseconds trimmed like Go's `RFC3339Nano`.
pub fn rfc3339_nano(unix_seconds: i64, nanos: u32) -> String {
    let days = unix_seconds.div_euclid(86_400);
    let secs = unix_seconds.rem_euclid(86_400);
    // Civil from days (Howard Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = if m <= 2 { y + 1 } else { y };
    let mut out = format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}",
        secs / 3600,
        (secs % 3600) / 60,
        secs % 60
    );
    if nanos > 0 {
        let frac = format!("{nanos:09}");
        out.push('.');
        out.push_str(frac.trim_end_matches('0'));
    }
    out.push('Z');
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s(v: &[&str]) -> Vec<String> {
        v.iter().map(|x| x.to_string()).collect()
    }

    #[test]
    fn docker_argv_semantics() {
        let ep = s(&["/app/run.sh"]);
        let cmd = s(&["a", "b"]);
        assert_eq!(
            resolve_argv(&ep, &cmd, None, None),
            s(&["/app/run.sh", "a", "b"])
        );
        assert_eq!(
            resolve_argv(&ep, &cmd, None, Some(&s(&["c"]))),
            s(&["/app/run.sh", "c"])
        );
        assert_eq!(
            resolve_argv(&ep, &cmd, Some(&s(&["/bin/sh"])), None),
            s(&["/bin/sh"])
        );
        assert_eq!(
            resolve_argv(
                &ep,
                &cmd,
                Some(&s(&["/bin/sh", "-c"])),
                Some(&s(&["echo hi"]))
            ),
            s(&["/bin/sh", "-c", "echo hi"])
        );
        assert_eq!(
            resolve_argv(&ep, &cmd, Some(&[]), Some(&[])),
            s(&["/app/run.sh", "a", "b"])
        );
        assert_eq!(resolve_argv(&[], &s(&["sh"]), None, None), s(&["sh"]));
    }

    #[test]
    fn exit_messages_match_upstream() {
        assert_eq!(describe_exit(0, false), "success");
        assert_eq!(describe_exit(3, false), "exit code 3");
        assert_eq!(
            describe_exit(126, false),
            "permission denied (command not executable)"
        );
        assert_eq!(describe_exit(127, false), "command not found");
        assert_eq!(describe_exit(137, false), "killed by signal 9 (killed)");
        assert_eq!(
            describe_exit(137, true),
            "killed by signal 9 (killed) - OOM"
        );
        assert_eq!(describe_exit(143, true), "killed by signal 15 (terminated)");
    }

    #[test]
    fn exit_line_round_trips() {
        for (code, msg) in [
            (0, "success"),
            (137, "killed by signal 9 (killed) - OOM"),
            (2, "a \"q\"\n\\"),
        ] {
            let line = format!(
                "2026-02-13T15:26:27Z [INFO] [hypeman-init:entrypoint] {}",
                exit_line(code, msg)
            );
            let log = format!("hello\n{line}\ntrailing output\n");
            assert_eq!(parse_exit_line(&log), Some((code, msg.to_string())));
        }
        assert_eq!(
            exit_line(137, "killed by signal 9 (killed)"),
            "HYPEMAN-EXIT code=137 message=\"killed by signal 9 (killed)\""
        );
        assert_eq!(parse_exit_line("no sentinel here"), None);
    }

    #[test]
    fn config_disk_round_trips() {
        let c = GuestConfig {
            argv: s(&["/bin/sh", "-c", "echo 'hi'\nthere"]),
            env: s(&["A=b", "MULTI=line1\nline2"]),
            workdir: "/app".into(),
            hostname: "web".into(),
            overlay: true,
            network: Some(GuestNetwork {
                ip: "10.0.2.15".into(),
                prefix: 24,
                gateway: "10.0.2.2".into(),
                dns: "10.0.2.3".into(),
                dhcp: true,
                mac: Some("02:00:00:00:00:07".into()),
            }),
            ca_cert_pem: Some(
                "-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n".into(),
            ),
            volumes: vec![GuestVolume {
                device: disk_device(3),
                mount_path: "/data".into(),
                readonly: true,
                overlay_device: Some(disk_device(4)),
            }],
            skip_agent: true,
            agent_key: None,
            host_time_ns: None,
            entropy: None,
        };
        assert_eq!(disk_device(4), "/dev/vde");
        let disk = c.to_disk().unwrap();
        assert_eq!(disk.len(), CONFIG_DISK_BYTES);
        assert_eq!(GuestConfig::from_disk(&disk).unwrap(), c);
    }

    #[test]
    fn timestamps() {
        assert_eq!(rfc3339_nano(0, 0), "1970-01-01T00:00:00Z");
        assert_eq!(rfc3339_nano(1_771_000_000, 0), "2026-02-13T16:26:40Z");
        assert_eq!(
            rfc3339_nano(1_736_937_005, 500_000_000),
            "2025-01-15T10:30:05.5Z"
        );
    }
}
