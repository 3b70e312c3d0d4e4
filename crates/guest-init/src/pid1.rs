//! The boot sequence of the guest's PID 1.
//!
//! proc/sys/dev -> console -> kernel modules (in `/lib/modules/order`) -> config disk
//! (`/dev/vdc`) -> root (`/dev/vda` read-only, with `/dev/vdb` as a writable overlay) ->
//! hostname, network -> control port + power button -> fork/chroot/exec the program ->
//! forward signals, reap -> `HYPEMAN-EXIT` -> power off.
//!
//! Everything the forked child touches is prepared before `fork`, so the child only makes
//! async-signal-safe calls.
#![allow(unsafe_code)]

use std::ffi::{CString, c_int};
use std::fs;
use std::io::{Read, Write};
use std::path::Path;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use hypedeck_guest_init::{
    AGENT_READY, CONTROL_PORT, CONTROL_TERM, GuestConfig, GuestNetwork, PROGRAM_START,
    describe_exit, exit_line, rfc3339_nano,
};

const DEFAULT_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

fn now() -> String {
    let d = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default();
    rfc3339_nano(d.as_secs() as i64, d.subsec_nanos())
}

fn log(component: &str, message: &str) {
    let line = format!("{} [INFO] [hypeman-init:{component}] {message}\n", now());
    let _ = std::io::stdout().write_all(line.as_bytes());
    let _ = std::io::stdout().flush();
}

fn cstr(s: &str) -> CString {
    // Interior NULs cannot come from JSON strings we accept; replace defensively.
    CString::new(s.replace('\0', "")).unwrap_or_default()
}

fn mount(source: &str, target: &str, fstype: &str, flags: libc::c_ulong, data: &str) -> bool {
    let _ = fs::create_dir_all(target);
    let (s, t, f, d) = (cstr(source), cstr(target), cstr(fstype), cstr(data));
    // SAFETY: all pointers are valid NUL-terminated strings that outlive the call.
    let rc = unsafe {
        libc::mount(
            s.as_ptr(),
            t.as_ptr(),
            f.as_ptr(),
            flags,
            if data.is_empty() {
                std::ptr::null()
            } else {
                d.as_ptr().cast()
            },
        )
    };
    rc == 0
}

fn power_off() -> ! {
    // SAFETY: sync and reboot take no pointers; as PID 1 powering off is the intended end.
    unsafe {
        libc::sync();
        libc::reboot(libc::RB_POWER_OFF);
    }
    std::process::exit(0)
}

fn fatal(message: &str) -> ! {
    log("init", &format!("fatal: {message}"));
    println!("{}", exit_line(1, &format!("init failed: {message}")));
    power_off()
}

fn setup_console() {
    let console = cstr("/dev/console");
    // SAFETY: valid path; the fds we dup onto are the standard ones.
    unsafe {
        let fd = libc::open(console.as_ptr(), libc::O_RDWR);
        if fd >= 0 {
            libc::dup2(fd, 0);
            libc::dup2(fd, 1);
            libc::dup2(fd, 2);
            if fd > 2 {
                libc::close(fd);
            }
        }
    }
}

fn load_modules() {
    let Ok(order) = fs::read_to_string("/lib/modules/order") else {
        return;
    };
    for name in order.lines().map(str::trim).filter(|l| !l.is_empty()) {
        let path = format!("/lib/modules/{name}.ko");
        let Ok(file) = fs::File::open(&path) else {
            log("init", &format!("module {name} missing"));
            continue;
        };
        use std::os::fd::AsRawFd;
        let params = cstr("");
        // SAFETY: fd is open for the duration of the call; params is a valid empty string.
        let rc =
            unsafe { libc::syscall(libc::SYS_finit_module, file.as_raw_fd(), params.as_ptr(), 0) };
        if rc != 0 {
            let err = std::io::Error::last_os_error();
            if err.raw_os_error() != Some(libc::EEXIST) {
                log("init", &format!("module {name}: {err}"));
            }
        }
    }
}

fn wait_for(path: &str, timeout: Duration) -> bool {
    let start = Instant::now();
    while start.elapsed() < timeout {
        if Path::new(path).exists() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    false
}

/// Whether this boot makes a template (kernel argument [`TEMPLATE_ARG`]).
fn template_boot() -> bool {
    fs::read_to_string("/proc/cmdline").is_ok_and(|c| {
        c.split_whitespace()
            .any(|a| a == hypedeck_guest_init::TEMPLATE_ARG)
    })
}

/// A template VM: once the disks are there, say so on the console (the host saves the VM
/// then) and wait for a config to appear on `/dev/vdc`. The template's config disk is all
/// zeroes; a VM started from the template has its own there. Reads bypass the page cache,
/// and afterwards every disk's cached blocks are dropped: the kernel read their first
/// sectors (partition scan) when they were the template's files.
fn wait_as_template() {
    for disk in ["/dev/vda", "/dev/vdb", "/dev/vdc"] {
        if !wait_for(disk, Duration::from_secs(10)) {
            fatal(&format!("{disk} did not appear"));
        }
    }
    println!("{}", hypedeck_guest_init::TEMPLATE_READY);
    use std::os::unix::fs::OpenOptionsExt;
    let file = fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_DIRECT)
        .open("/dev/vdc")
        .unwrap_or_else(|e| fatal(&format!("open /dev/vdc: {e}")));
    // O_DIRECT wants an aligned buffer: one 4 KiB block inside a larger allocation.
    let mut raw = vec![0u8; 8192];
    let offset = raw.as_ptr().align_offset(4096);
    // A template whose host went away before saving it must not wait forever. A VM started
    // from the template finds its config at the first read, whatever its clock says.
    let waiting = std::time::Instant::now();
    loop {
        use std::os::unix::fs::FileExt;
        let block = &mut raw[offset..offset + 4096];
        match file.read_at(block, 0) {
            Ok(n) if n > 0 && block[0] != 0 => break,
            Ok(_) if waiting.elapsed() > Duration::from_secs(120) => {
                fatal("the template was not saved in time")
            }
            Ok(_) => {}
            Err(e) => fatal(&format!("read /dev/vdc: {e}")),
        }
        std::thread::sleep(Duration::from_millis(2));
    }
    drop(file);
    const BLKFLSBUF: libc::c_ulong = 0x1261;
    for disk in ["/dev/vda", "/dev/vdb", "/dev/vdc"] {
        if let Ok(f) = fs::File::open(disk) {
            use std::os::fd::AsRawFd;
            // SAFETY: BLKFLSBUF takes no argument.
            unsafe { libc::ioctl(f.as_raw_fd(), BLKFLSBUF as _, 0) };
        }
    }
    log("init", "started from a template");
}

/// Sets the clock to the host's time from the config when the guest's is behind it, and mixes
/// the host's randomness into the kernel's pool.
fn apply_host_state(config: &GuestConfig) {
    if let Some(ns) = config.host_time_ns {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos() as i128);
        if ns > now {
            let (secs, nanos) = (ns / 1_000_000_000, (ns % 1_000_000_000) as u32);
            if let Err(e) = crate::agent::set_clock(secs as i64, nanos) {
                log("init", &e);
            }
        }
    }
    if let Some(hex) = &config.entropy
        && let Err(e) = crate::agent::reseed(hex)
    {
        log("init", &e);
    }
}

fn read_config() -> GuestConfig {
    if !wait_for("/dev/vdc", Duration::from_secs(10)) {
        fatal("config disk /dev/vdc did not appear");
    }
    let mut bytes = vec![0u8; hypedeck_guest_init::CONFIG_DISK_BYTES];
    let mut file =
        fs::File::open("/dev/vdc").unwrap_or_else(|e| fatal(&format!("open /dev/vdc: {e}")));
    let mut read = 0;
    while read < bytes.len() {
        match file.read(&mut bytes[read..]) {
            Ok(0) => break,
            Ok(n) => {
                read += n;
                if bytes[..read].contains(&0) {
                    break;
                }
            }
            Err(e) => fatal(&format!("read /dev/vdc: {e}")),
        }
    }
    GuestConfig::from_disk(&bytes[..read]).unwrap_or_else(|e| fatal(&format!("config disk: {e}")))
}

fn mount_root(config: &GuestConfig) {
    if !wait_for("/dev/vda", Duration::from_secs(10)) {
        fatal("root disk /dev/vda did not appear");
    }
    if !mount("/dev/vda", "/lower", "ext4", libc::MS_RDONLY, "") {
        fatal(&format!(
            "mount /dev/vda: {}",
            std::io::Error::last_os_error()
        ));
    }
    if config.overlay && wait_for("/dev/vdb", Duration::from_secs(5)) {
        if !mount("/dev/vdb", "/overlay", "ext4", 0, "") {
            fatal(&format!(
                "mount overlay disk: {}",
                std::io::Error::last_os_error()
            ));
        }
        let _ = fs::create_dir_all("/overlay/upper");
        let _ = fs::create_dir_all("/overlay/work");
        if !mount(
            "overlay",
            "/newroot",
            "overlay",
            0,
            "lowerdir=/lower,upperdir=/overlay/upper,workdir=/overlay/work",
        ) {
            fatal(&format!(
                "mount overlayfs: {}",
                std::io::Error::last_os_error()
            ));
        }
    } else if !mount("/lower", "/newroot", "", libc::MS_BIND, "") {
        fatal(&format!("bind root: {}", std::io::Error::last_os_error()));
    }
    mount("proc", "/newroot/proc", "proc", 0, "");
    mount("sysfs", "/newroot/sys", "sysfs", 0, "");
    mount("devtmpfs", "/newroot/dev", "devtmpfs", 0, "");
    mount("devpts", "/newroot/dev/pts", "devpts", 0, "");
    mount("tmpfs", "/newroot/dev/shm", "tmpfs", 0, "");
    mount("tmpfs", "/newroot/tmp", "tmpfs", 0, "mode=1777");
    mount("tmpfs", "/newroot/run", "tmpfs", 0, "mode=755");
}

/// Mounts each volume at its path in the new root: ext4 read-write, read-only (`noload`: not
/// even the journal is replayed, so a disk shared by several guests is never written), or a
/// read-only base under an overlayfs whose upper layer is this instance's own disk.
fn mount_volumes(config: &GuestConfig) {
    for (n, v) in config.volumes.iter().enumerate() {
        if !wait_for(&v.device, Duration::from_secs(10)) {
            fatal(&format!("volume disk {} did not appear", v.device));
        }
        let target = format!("/newroot{}", v.mount_path);
        let failed = |what: &str| -> ! {
            fatal(&format!(
                "mount volume at {} ({what}): {}",
                v.mount_path,
                std::io::Error::last_os_error()
            ))
        };
        match &v.overlay_device {
            Some(upper) => {
                let (lower, rw) = (format!("/volumes/{n}/lower"), format!("/volumes/{n}/rw"));
                if !mount(&v.device, &lower, "ext4", libc::MS_RDONLY, "noload") {
                    failed("base");
                }
                if !wait_for(upper, Duration::from_secs(10)) || !mount(upper, &rw, "ext4", 0, "") {
                    failed("overlay disk");
                }
                let _ = fs::create_dir_all(format!("{rw}/upper"));
                let _ = fs::create_dir_all(format!("{rw}/work"));
                let options = format!("lowerdir={lower},upperdir={rw}/upper,workdir={rw}/work");
                if !mount("overlay", &target, "overlay", 0, &options) {
                    failed("overlayfs");
                }
            }
            None if v.readonly => {
                if !mount(&v.device, &target, "ext4", libc::MS_RDONLY, "noload") {
                    failed("read-only");
                }
            }
            None => {
                if !mount(&v.device, &target, "ext4", 0, "") {
                    failed("read-write");
                }
            }
        }
        log(
            "init",
            &format!("mounted volume {} at {}", v.device, v.mount_path),
        );
    }
}

fn set_hostname(name: &str) {
    if name.is_empty() {
        return;
    }
    // SAFETY: pointer and length describe a valid buffer.
    unsafe {
        libc::sethostname(name.as_ptr().cast(), name.len());
    }
    let _ = fs::write("/newroot/etc/hostname", format!("{name}\n"));
}

pub(crate) fn ipv4(text: &str) -> Option<[u8; 4]> {
    let parts: Vec<u8> = text.split('.').filter_map(|p| p.parse().ok()).collect();
    (parts.len() == 4).then(|| [parts[0], parts[1], parts[2], parts[3]])
}

pub(crate) fn sockaddr(addr: [u8; 4]) -> libc::sockaddr {
    let sin = libc::sockaddr_in {
        sin_family: libc::AF_INET as libc::sa_family_t,
        sin_port: 0,
        sin_addr: libc::in_addr {
            s_addr: u32::from_ne_bytes(addr),
        },
        sin_zero: [0; 8],
    };
    // SAFETY: sockaddr_in and sockaddr have the same size; this is the documented way to pass
    // an IPv4 address through the generic sockaddr of ifreq/rtentry.
    unsafe { std::mem::transmute::<libc::sockaddr_in, libc::sockaddr>(sin) }
}

pub(crate) fn ifreq(name: &str) -> libc::ifreq {
    // SAFETY: ifreq is plain old data; all-zero is a valid value.
    let mut req: libc::ifreq = unsafe { std::mem::zeroed() };
    for (dst, src) in req
        .ifr_name
        .iter_mut()
        .zip(name.bytes().take(libc::IFNAMSIZ - 1))
    {
        *dst = src as libc::c_char;
    }
    req
}

pub(crate) fn link_up(sock: c_int, name: &str) {
    let mut req = ifreq(name);
    // SAFETY: req is a valid ifreq; SIOCGIFFLAGS/SIOCSIFFLAGS read and write ifru_flags.
    unsafe {
        if libc::ioctl(sock, libc::SIOCGIFFLAGS as _, &mut req) == 0 {
            req.ifr_ifru.ifru_flags |= (libc::IFF_UP | libc::IFF_RUNNING) as libc::c_short;
            libc::ioctl(sock, libc::SIOCSIFFLAGS as _, &req);
        }
    }
}

fn setup_network(net: &GuestNetwork) {
    // SAFETY: plain socket(2) call.
    let sock = unsafe { libc::socket(libc::AF_INET, libc::SOCK_DGRAM, 0) };
    if sock < 0 {
        log("network", "socket failed");
        return;
    }
    link_up(sock, "lo");
    // A VM started from a template has the template's MAC in its NIC's state.
    if let Some(mac) = net.mac.as_deref().and_then(parse_mac)
        && hwaddr(sock, "eth0") != Some(mac)
        && let Err(e) = set_mac(sock, "eth0", mac)
    {
        log("network", &e);
    }
    let (Some(mut ip), Some(mut gw)) = (ipv4(&net.ip), ipv4(&net.gateway)) else {
        log("network", "invalid address in config");
        return;
    };
    let (mut prefix, mut dns) = (net.prefix, net.dns.clone());
    if net.dhcp {
        link_up(sock, "eth0");
        match dhcp_lease() {
            Some(lease) => {
                let dotted = |a: [u8; 4]| format!("{}.{}.{}.{}", a[0], a[1], a[2], a[3]);
                ip = lease.ip;
                prefix = lease.prefix;
                gw = lease.gateway.unwrap_or(gw);
                if let Some(d) = lease.dns {
                    dns = dotted(d);
                }
                log(
                    "network",
                    &format!(
                        "dhcp: {}/{prefix} via {}, dns {dns}",
                        dotted(ip),
                        dotted(gw)
                    ),
                );
            }
            None => log("network", "dhcp: no answer; using the static address"),
        }
    }
    let addressed = address_eth0(sock, ip, prefix, gw);
    // SAFETY: closing the socket we opened.
    unsafe { libc::close(sock) };
    if let Err(e) = addressed {
        log("network", &format!("configuring eth0 failed: {e}"));
    }
    let _ = fs::write("/newroot/etc/resolv.conf", format!("nameserver {dns}\n"));
}

/// Gives eth0 address `ip`/`prefix`, brings it up, and routes everything via `gw` (a default
/// route that is still there is fine: replacing an address may or may not drop it).
pub(crate) fn address_eth0(
    sock: c_int,
    ip: [u8; 4],
    prefix: u8,
    gw: [u8; 4],
) -> Result<(), String> {
    let os = |what: &str| format!("{what}: {}", std::io::Error::last_os_error());
    let mask: u32 = if prefix == 0 {
        0
    } else {
        u32::MAX << (32 - u32::from(prefix.min(32)))
    };
    let mut req = ifreq("eth0");
    req.ifr_ifru.ifru_addr = sockaddr(ip);
    let mut mreq = ifreq("eth0");
    mreq.ifr_ifru.ifru_netmask = sockaddr(mask.to_be_bytes());
    // SAFETY: valid ifreq structs for the address/netmask ioctls.
    unsafe {
        if libc::ioctl(sock, libc::SIOCSIFADDR as _, &req) != 0
            || libc::ioctl(sock, libc::SIOCSIFNETMASK as _, &mreq) != 0
        {
            return Err(os("set the address"));
        }
    }
    link_up(sock, "eth0");
    // SAFETY: rtentry is plain old data; all-zero is valid.
    let mut route: libc::rtentry = unsafe { std::mem::zeroed() };
    route.rt_dst = sockaddr([0, 0, 0, 0]);
    route.rt_genmask = sockaddr([0, 0, 0, 0]);
    route.rt_gateway = sockaddr(gw);
    route.rt_flags = libc::RTF_UP | libc::RTF_GATEWAY;
    // SAFETY: valid rtentry for SIOCADDRT.
    if unsafe { libc::ioctl(sock, libc::SIOCADDRT as _, &route) } != 0
        && std::io::Error::last_os_error().raw_os_error() != Some(libc::EEXIST)
    {
        return Err(os("add the default route"));
    }
    Ok(())
}

/// `aa:bb:cc:dd:ee:ff` as bytes.
pub(crate) fn parse_mac(text: &str) -> Option<[u8; 6]> {
    let bytes: Vec<u8> = text
        .split(':')
        .map(|h| u8::from_str_radix(h, 16).ok())
        .collect::<Option<_>>()?;
    bytes.try_into().ok()
}

/// Gives interface `name` the MAC `mac` (while it is down or up: virtio-net allows both).
pub(crate) fn set_mac(sock: c_int, name: &str, mac: [u8; 6]) -> Result<(), String> {
    let mut req = ifreq(name);
    // SAFETY: ifru_hwaddr is the member SIOCSIFHWADDR reads; sa_data holds the 6 bytes.
    unsafe {
        req.ifr_ifru.ifru_hwaddr.sa_family = libc::ARPHRD_ETHER;
        for (d, b) in req.ifr_ifru.ifru_hwaddr.sa_data.iter_mut().zip(&mac) {
            *d = *b as libc::c_char;
        }
        if libc::ioctl(sock, libc::SIOCSIFHWADDR as _, &req) != 0 {
            return Err(format!(
                "set the MAC address: {}",
                std::io::Error::last_os_error()
            ));
        }
    }
    Ok(())
}

/// The MAC address of `name`.
fn hwaddr(sock: c_int, name: &str) -> Option<[u8; 6]> {
    let mut req = ifreq(name);
    // SAFETY: SIOCGIFHWADDR fills ifru_hwaddr of a valid ifreq.
    if unsafe { libc::ioctl(sock, libc::SIOCGIFHWADDR as _, &mut req) } != 0 {
        return None;
    }
    // SAFETY: the ioctl succeeded, so ifru_hwaddr is the active member.
    let data = unsafe { req.ifr_ifru.ifru_hwaddr.sa_data };
    Some([0, 1, 2, 3, 4, 5].map(|i| data[i] as u8))
}

/// Asks the network's DHCP server for a lease on eth0 (DISCOVER, OFFER, REQUEST, ACK), a
/// few tries over ~10 s. UDP with the socket bound to eth0 and the broadcast flag set, so
/// answers reach an interface that has no address yet.
fn dhcp_lease() -> Option<hypedeck_guest_init::dhcp::Lease> {
    use hypedeck_guest_init::dhcp::{self, Reply};
    // SAFETY: plain socket(2); closed by the guard below.
    let fd = unsafe { libc::socket(libc::AF_INET, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0) };
    if fd < 0 {
        return None;
    }
    struct Close(c_int);
    impl Drop for Close {
        fn drop(&mut self) {
            // SAFETY: closing the socket we opened.
            unsafe { libc::close(self.0) };
        }
    }
    let _close = Close(fd);
    let mac = hwaddr(fd, "eth0")?;
    let one: c_int = 1;
    let timeout = libc::timeval {
        tv_sec: 0,
        tv_usec: 500_000,
    };
    let device = b"eth0\0";
    let any = libc::sockaddr_in {
        sin_family: libc::AF_INET as libc::sa_family_t,
        sin_port: dhcp::CLIENT_PORT.to_be(),
        sin_addr: libc::in_addr { s_addr: 0 },
        sin_zero: [0; 8],
    };
    let int = std::mem::size_of::<c_int>() as libc::socklen_t;
    // SAFETY: setsockopt/bind with valid pointers and sizes.
    let ready = unsafe {
        libc::setsockopt(
            fd,
            libc::SOL_SOCKET,
            libc::SO_REUSEADDR,
            (&one as *const c_int).cast(),
            int,
        ) == 0
            && libc::setsockopt(
                fd,
                libc::SOL_SOCKET,
                libc::SO_BROADCAST,
                (&one as *const c_int).cast(),
                int,
            ) == 0
            && libc::setsockopt(
                fd,
                libc::SOL_SOCKET,
                libc::SO_BINDTODEVICE,
                device.as_ptr().cast(),
                device.len() as libc::socklen_t,
            ) == 0
            && libc::setsockopt(
                fd,
                libc::SOL_SOCKET,
                libc::SO_RCVTIMEO,
                (&timeout as *const libc::timeval).cast(),
                std::mem::size_of::<libc::timeval>() as libc::socklen_t,
            ) == 0
            && libc::bind(
                fd,
                (&any as *const libc::sockaddr_in).cast(),
                std::mem::size_of::<libc::sockaddr_in>() as libc::socklen_t,
            ) == 0
    };
    if !ready {
        log(
            "network",
            &format!("dhcp socket: {}", std::io::Error::last_os_error()),
        );
        return None;
    }
    let server = libc::sockaddr_in {
        sin_family: libc::AF_INET as libc::sa_family_t,
        sin_port: dhcp::SERVER_PORT.to_be(),
        sin_addr: libc::in_addr {
            s_addr: u32::from_ne_bytes([255, 255, 255, 255]),
        },
        sin_zero: [0; 8],
    };
    let send = |packet: &[u8]| {
        // SAFETY: sendto with a valid buffer and sockaddr_in.
        unsafe {
            libc::sendto(
                fd,
                packet.as_ptr().cast(),
                packet.len(),
                0,
                (&server as *const libc::sockaddr_in).cast(),
                std::mem::size_of::<libc::sockaddr_in>() as libc::socklen_t,
            )
        }
    };
    // Waits up to ~2 s for this transaction's answer.
    let receive = |xid: u32| -> Option<Reply> {
        let mut buf = [0u8; 1500];
        for _ in 0..4 {
            // SAFETY: recv into a local buffer of the given size.
            let n = unsafe { libc::recv(fd, buf.as_mut_ptr().cast(), buf.len(), 0) };
            if n > 0
                && let Some(reply) = dhcp::parse(xid, &buf[..n as usize])
            {
                return Some(reply);
            }
        }
        None
    };
    let seed = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0);
    for attempt in 0..5u32 {
        let xid = seed ^ u32::from_be_bytes([mac[2], mac[3], mac[4], mac[5]]) ^ attempt;
        send(&dhcp::discover(xid, mac));
        let Some(Reply::Offer(offer)) = receive(xid) else {
            continue;
        };
        send(&dhcp::request(xid, mac, &offer));
        if let Some(Reply::Ack(lease)) = receive(xid) {
            return Some(lease);
        }
    }
    None
}

/// Adds the egress CA to the guest's trust: our own file, plus every existing bundle (or a new
/// Debian-style bundle when the image has none).
fn install_ca(pem: &str) -> std::io::Result<()> {
    let root = Path::new("/newroot");
    let own = root.join(hypedeck_guest_init::CA_FILE);
    if let Some(dir) = own.parent() {
        fs::create_dir_all(dir)?;
    }
    fs::write(&own, pem)?;
    let mut found = false;
    for bundle in hypedeck_guest_init::CA_BUNDLES {
        let path = root.join(bundle);
        // A symlinked bundle (Alpine's cert.pem) is updated through its target.
        if path.exists() {
            found = true;
            let mut f = fs::OpenOptions::new().append(true).open(&path)?;
            writeln!(f)?;
            f.write_all(pem.as_bytes())?;
        }
    }
    if !found {
        let path = root.join(hypedeck_guest_init::CA_BUNDLES[0]);
        if let Some(dir) = path.parent() {
            fs::create_dir_all(dir)?;
        }
        fs::write(path, pem)?;
    }
    Ok(())
}

fn control_port() -> Option<String> {
    virtio_port(CONTROL_PORT)
}

/// `/dev/vportNpM` of the virtio-serial port called `name`.
fn virtio_port(name: &str) -> Option<String> {
    for entry in fs::read_dir("/sys/class/virtio-ports").ok()?.flatten() {
        let found = fs::read_to_string(entry.path().join("name")).unwrap_or_default();
        if found.trim() == name {
            return Some(format!("/dev/{}", entry.file_name().to_string_lossy()));
        }
    }
    None
}

/// Forks the exec agent (before any thread exists and before signals are blocked): it
/// chroots into the instance's root and serves the host on the agent's virtio-serial port
/// and/or its vsock port. Neither (another host, or an old one): no agent, and the instance
/// never reports the agent ready, so it stays Initializing (upstream's gate). Returns whether
/// the agent runs.
fn start_agent(config: &GuestConfig) -> bool {
    let serial = virtio_port(hypedeck_guest_init::agent_proto::AGENT_PORT).and_then(|path| {
        fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open(&path)
            .map_err(|e| log("agent", &format!("open {path}: {e}")))
            .ok()
    });
    let vsock = vsock_listener(hypedeck_guest_init::agent_proto::AGENT_VSOCK_PORT);
    let channels = match (&serial, &vsock) {
        (None, None) => {
            log(
                "agent",
                "no agent port and no vsock device; exec is unavailable",
            );
            return false;
        }
        (Some(_), None) => "virtio-serial".to_string(),
        (None, Some((_, cid))) => format!("vsock cid {cid}"),
        (Some(_), Some((_, cid))) => format!("virtio-serial and vsock cid {cid}"),
    };
    let env: Vec<(String, String)> = program_env(config)
        .iter()
        .filter_map(|e| {
            e.split_once('=')
                .map(|(k, v)| (k.to_string(), v.to_string()))
        })
        .collect();
    // SAFETY: PID 1 is single-threaded here; the child only chroots and serves.
    match unsafe { libc::fork() } {
        0 => {
            let (root, slash) = (cstr("/newroot"), cstr("/"));
            // SAFETY: valid NUL-terminated paths.
            unsafe {
                if libc::chroot(root.as_ptr()) != 0 || libc::chdir(slash.as_ptr()) != 0 {
                    libc::_exit(1);
                }
            }
            crate::agent::run(
                serial,
                vsock.map(|(fd, _)| fd),
                env,
                config.agent_key.clone(),
            )
        }
        pid if pid < 0 => {
            log("agent", "fork failed; exec is unavailable");
            false
        }
        _ => {
            log("agent", &format!("serving exec over {channels}"));
            true
        }
    }
}

/// A vsock listener on `port` and the guest's CID, when the VM has a vsock device (the
/// virtio transport reports no CID without one).
fn vsock_listener(port: u32) -> Option<(std::os::fd::OwnedFd, u32)> {
    use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
    const IOCTL_VM_SOCKETS_GET_LOCAL_CID: u32 = 0x7b9;
    let dev = fs::File::open("/dev/vsock").ok()?;
    let mut cid: u32 = libc::VMADDR_CID_ANY;
    // SAFETY: the ioctl writes one u32 into `cid`.
    let r = unsafe {
        libc::ioctl(
            dev.as_raw_fd(),
            IOCTL_VM_SOCKETS_GET_LOCAL_CID as _,
            &mut cid,
        )
    };
    if r != 0 || cid == libc::VMADDR_CID_ANY || cid <= 2 {
        return None;
    }
    // SAFETY: plain socket(2); the descriptor is owned right away.
    let fd = unsafe { libc::socket(libc::AF_VSOCK, libc::SOCK_STREAM | libc::SOCK_CLOEXEC, 0) };
    if fd < 0 {
        return None;
    }
    // SAFETY: `fd` is a fresh descriptor we own.
    let sock = unsafe { OwnedFd::from_raw_fd(fd) };
    // SAFETY: sockaddr_vm is plain old data; zeroed is a valid starting value.
    let mut addr: libc::sockaddr_vm = unsafe { std::mem::zeroed() };
    addr.svm_family = libc::AF_VSOCK as libc::sa_family_t;
    addr.svm_cid = libc::VMADDR_CID_ANY;
    addr.svm_port = port;
    // SAFETY: bind/listen with a valid sockaddr_vm and its size.
    let ok = unsafe {
        libc::bind(
            sock.as_raw_fd(),
            (&addr as *const libc::sockaddr_vm).cast(),
            std::mem::size_of::<libc::sockaddr_vm>() as libc::socklen_t,
        ) == 0
            && libc::listen(sock.as_raw_fd(), 16) == 0
    };
    if !ok {
        log(
            "agent",
            &format!("vsock port {port}: {}", std::io::Error::last_os_error()),
        );
        return None;
    }
    Some((sock, cid))
}

/// Forwards host requests (control port lines, ACPI power button) to the program as SIGTERM.
fn watch_shutdown_requests(child: libc::pid_t, port: Option<String>) {
    if let Some(port) = port {
        std::thread::spawn(move || {
            // A read returns EOF while no host end is connected: keep re-reading.
            use std::io::BufRead;
            loop {
                if let Ok(file) = fs::File::open(&port) {
                    for line in std::io::BufReader::new(file).lines() {
                        let Ok(line) = line else { break };
                        if line.trim() == CONTROL_TERM {
                            // SAFETY: kill with a pid we own and a valid signal.
                            unsafe { libc::kill(child, libc::SIGTERM) };
                        }
                    }
                }
                std::thread::sleep(Duration::from_millis(100));
            }
        });
    }
    for entry in fs::read_dir("/dev/input").into_iter().flatten().flatten() {
        if !entry.file_name().to_string_lossy().starts_with("event") {
            continue;
        }
        let path = entry.path();
        std::thread::spawn(move || {
            let Ok(mut f) = fs::File::open(path) else {
                return;
            };
            let mut buf = [0u8; 64];
            if f.read(&mut buf).is_ok_and(|n| n > 0) {
                // SAFETY: as above.
                unsafe { libc::kill(child, libc::SIGTERM) };
            }
        });
    }
}

fn oom_seen() -> bool {
    let path = cstr("/dev/kmsg");
    // SAFETY: valid path; non-blocking read-only open.
    let fd = unsafe { libc::open(path.as_ptr(), libc::O_RDONLY | libc::O_NONBLOCK) };
    if fd < 0 {
        return false;
    }
    let mut seen = false;
    let mut buf = vec![0u8; 8192];
    loop {
        // SAFETY: buf is valid for buf.len() bytes.
        let n = unsafe { libc::read(fd, buf.as_mut_ptr().cast(), buf.len()) };
        if n < 0 {
            let e = std::io::Error::last_os_error().raw_os_error();
            if e == Some(libc::EPIPE) {
                continue;
            }
            break;
        }
        if n == 0 {
            break;
        }
        let text = String::from_utf8_lossy(&buf[..n as usize]);
        if text.contains("Out of memory")
            || text.contains("oom-kill")
            || text.contains("oom_reaper")
        {
            seen = true;
        }
    }
    // SAFETY: closing our fd.
    unsafe { libc::close(fd) };
    seen
}

struct Prepared {
    candidates: Vec<CString>,
    argv: Vec<CString>,
    env: Vec<CString>,
    workdir: CString,
    root: CString,
    slash: CString,
}

/// The program's environment: the config's, plus PATH, HOME and HOSTNAME defaults.
fn program_env(config: &GuestConfig) -> Vec<String> {
    let mut env: Vec<String> = config.env.clone();
    let has = |k: &str, env: &[String]| env.iter().any(|e| e.starts_with(&format!("{k}=")));
    if !has("PATH", &env) {
        env.push(format!("PATH={DEFAULT_PATH}"));
    }
    if !has("HOME", &env) {
        env.push("HOME=/root".into());
    }
    if !has("HOSTNAME", &env) && !config.hostname.is_empty() {
        env.push(format!("HOSTNAME={}", config.hostname));
    }
    env
}

fn prepare(config: &GuestConfig) -> Prepared {
    let env = program_env(config);
    let path = env
        .iter()
        .rev()
        .find_map(|e| e.strip_prefix("PATH="))
        .unwrap_or(DEFAULT_PATH)
        .to_string();
    let program = config.argv.first().cloned().unwrap_or_default();
    let candidates = if program.contains('/') {
        vec![cstr(&program)]
    } else {
        path.split(':')
            .map(|d| if d.is_empty() { "." } else { d })
            .map(|d| cstr(&format!("{}/{program}", d.trim_end_matches('/'))))
            .collect()
    };
    Prepared {
        candidates,
        argv: config.argv.iter().map(|a| cstr(a)).collect(),
        env: env.iter().map(|e| cstr(e)).collect(),
        workdir: cstr(if config.workdir.is_empty() {
            "/"
        } else {
            &config.workdir
        }),
        root: cstr("/newroot"),
        slash: cstr("/"),
    }
}

/// In the forked child: only async-signal-safe calls from here on.
fn exec_child(p: &Prepared, unblock: &libc::sigset_t) -> ! {
    let mut argv: Vec<*const libc::c_char> = p.argv.iter().map(|a| a.as_ptr()).collect();
    argv.push(std::ptr::null());
    let mut envp: Vec<*const libc::c_char> = p.env.iter().map(|e| e.as_ptr()).collect();
    envp.push(std::ptr::null());
    // SAFETY: every pointer refers to CStrings prepared before fork that live until exec;
    // these calls are async-signal-safe.
    unsafe {
        libc::sigprocmask(libc::SIG_SETMASK, unblock, std::ptr::null_mut());
        libc::setsid();
        if libc::chroot(p.root.as_ptr()) != 0 || libc::chdir(p.slash.as_ptr()) != 0 {
            libc::_exit(126);
        }
        if libc::chdir(p.workdir.as_ptr()) != 0 {
            libc::chdir(p.slash.as_ptr());
        }
        let mut denied = false;
        if argv.len() > 1 {
            for c in &p.candidates {
                libc::execve(c.as_ptr(), argv.as_ptr(), envp.as_ptr());
                if *libc::__errno_location() == libc::EACCES {
                    denied = true;
                }
            }
        }
        let msg: &[u8] = if denied {
            b"exec: permission denied\n"
        } else {
            b"exec: command not found\n"
        };
        libc::write(2, msg.as_ptr().cast(), msg.len());
        libc::_exit(if denied { 126 } else { 127 });
    }
}

pub fn run() -> ! {
    if std::process::id() != 1 {
        eprintln!("hypedeck-guest-init must run as PID 1 inside a guest");
        std::process::exit(2);
    }
    mount("proc", "/proc", "proc", 0, "");
    mount("sysfs", "/sys", "sysfs", 0, "");
    mount("devtmpfs", "/dev", "devtmpfs", 0, "");
    setup_console();
    log("init", "starting hypedeck guest init");
    load_modules();
    if template_boot() {
        wait_as_template();
    }
    let config = read_config();
    apply_host_state(&config);
    mount_root(&config);
    mount_volumes(&config);
    set_hostname(&config.hostname);
    if let Some(net) = &config.network {
        setup_network(net);
    }
    if let Some(pem) = &config.ca_cert_pem {
        if let Err(e) = install_ca(pem) {
            log("init", &format!("installing the egress CA failed: {e}"));
            let code = hypedeck_guest_init::EXIT_CA_INSTALL_FAILED;
            log("entrypoint", &exit_line(code, &describe_exit(code, false)));
            power_off();
        }
        log("init", "installed the egress proxy CA");
    }
    let prepared = prepare(&config);
    let agent_ready = config.skip_agent || start_agent(&config);

    // Block the signals PID 1 handles synchronously, before any thread or child exists.
    // SAFETY: sigset manipulation on local, initialized sets.
    let (mut all, mut old): (libc::sigset_t, libc::sigset_t) =
        unsafe { (std::mem::zeroed(), std::mem::zeroed()) };
    unsafe {
        libc::sigfillset(&mut all);
        libc::sigprocmask(libc::SIG_SETMASK, &all, &mut old);
    }
    let port = control_port();
    log(
        "entrypoint",
        &format!(
            "launching entrypoint {:?}",
            config.argv.first().map(String::as_str).unwrap_or("")
        ),
    );
    // SAFETY: fork in PID 1; the child only runs exec_child (async-signal-safe calls).
    let child = unsafe { libc::fork() };
    if child < 0 {
        fatal("fork failed");
    }
    if child == 0 {
        exec_child(&prepared, &old);
    }
    watch_shutdown_requests(child, port.clone());
    log(
        "entrypoint",
        &format!("{PROGRAM_START} ts={} mode=exec", now()),
    );
    if agent_ready {
        log("agent", &format!("{AGENT_READY} ts={}", now()));
    }

    let code = loop {
        // SAFETY: siginfo is plain old data, filled in by sigwaitinfo.
        let mut info: libc::siginfo_t = unsafe { std::mem::zeroed() };
        let sig = unsafe { libc::sigwaitinfo(&all, &mut info) };
        match sig {
            libc::SIGCHLD => {
                let mut exited = None;
                loop {
                    let mut status = 0;
                    // SAFETY: reaping any child without blocking.
                    let pid = unsafe { libc::waitpid(-1, &mut status, libc::WNOHANG) };
                    if pid <= 0 {
                        break;
                    }
                    if pid == child {
                        exited = Some(if libc::WIFEXITED(status) {
                            libc::WEXITSTATUS(status)
                        } else if libc::WIFSIGNALED(status) {
                            128 + libc::WTERMSIG(status)
                        } else {
                            1
                        });
                    }
                }
                if let Some(code) = exited {
                    break code;
                }
            }
            libc::SIGTERM
            | libc::SIGINT
            | libc::SIGHUP
            | libc::SIGQUIT
            | libc::SIGUSR1
            | libc::SIGUSR2 => {
                // SAFETY: forwarding a signal to our child.
                unsafe { libc::kill(child, sig) };
            }
            _ => {}
        }
    };
    let message = describe_exit(code, code == 137 && oom_seen());
    log("entrypoint", &exit_line(code, &message));
    if let Some(port) = port {
        // Non-blocking: with no host reader attached a virtio port write would wait forever.
        use std::os::unix::fs::OpenOptionsExt;
        if let Ok(mut f) = fs::OpenOptions::new()
            .write(true)
            .custom_flags(libc::O_NONBLOCK)
            .open(port)
        {
            let _ = writeln!(f, "{}", exit_line(code, &message));
        }
    }
    // SAFETY: stop whatever the program left behind, then power off.
    unsafe { libc::kill(-1, libc::SIGKILL) };
    power_off()
}
