//! Host networking of a Cloud Hypervisor VM: one persistent TAP device per instance, created
//! through `/dev/net/tun` (`TUNSETIFF` with `IFF_TAP|IFF_NO_PI|IFF_VNET_HDR`, owned by our
//! uid), addressed with the guest's gateway and brought up with `SIOC*` ioctls — all in this
//! process, so a `setcap cap_net_admin+ep` on the engine binary is enough (an `ip` child
//! would not inherit file capabilities). Cloud Hypervisor opens the TAP by name and leaves an
//! existing device's address alone.
//!
//! Creating a TAP needs `CAP_NET_ADMIN`; without it [`create_tap`] fails with an error that
//! says so. Removing one needs no privilege: the device is owned by our uid. What QEMU's user
//! networking adds on top (port forwards, egress confined to the proxy) has no TAP
//! counterpart here yet: [`check_supported`] refuses such specs with
//! [`HypervisorError::Unsupported`].

use std::net::Ipv4Addr;

use hypedeck_hypervisor::{HypervisorError, NetSpec};
use hypedeck_model::HypervisorKind;

use crate::config::Ipv4Net;

/// What to tell a user who lacks the capability.
pub const CAP_NET_ADMIN_HINT: &str = "Cloud Hypervisor networking needs a TAP device, which \
needs CAP_NET_ADMIN: run the engine as root or `setcap cap_net_admin+ep <engine binary>`, and \
give cloud-hypervisor the same (`setcap cap_net_admin+ep $(command -v cloud-hypervisor)`), which \
brings the TAP up; or use the qemu hypervisor, whose user-mode networking needs no privilege";

/// Refuses network features the TAP backend does not implement.
pub fn check_supported(net: &NetSpec) -> Result<(), HypervisorError> {
    if !net.host_forwards.is_empty() {
        return Err(HypervisorError::Unsupported {
            kind: HypervisorKind::CloudHypervisor,
            operation: "port forwarding",
        });
    }
    if net.restrict || !net.guest_forwards.is_empty() {
        return Err(HypervisorError::Unsupported {
            kind: HypervisorKind::CloudHypervisor,
            operation: "egress enforcement",
        });
    }
    Ok(())
}

/// The host side address of the TAP: the gateway, with the subnet's prefix.
pub fn host_address(net: &NetSpec) -> Result<(Ipv4Addr, Ipv4Net), HypervisorError> {
    let invalid = |detail: String| HypervisorError::Operation {
        operation: "create tap",
        detail,
    };
    let subnet = Ipv4Net::parse(&net.subnet)
        .ok_or_else(|| invalid(format!("bad subnet {:?}", net.subnet)))?;
    let gateway: Ipv4Addr = net
        .gateway
        .parse()
        .map_err(|_| invalid(format!("bad gateway {:?}", net.gateway)))?;
    if !subnet.contains(gateway) {
        return Err(invalid(format!(
            "gateway {gateway} is outside the subnet {}",
            net.subnet
        )));
    }
    Ok((gateway, subnet))
}

/// Whether a network interface called `name` exists.
pub fn tap_exists(name: &str) -> bool {
    std::path::Path::new("/sys/class/net").join(name).exists()
}

#[cfg(target_os = "linux")]
pub use linux::{create_tap, remove_tap};

#[cfg(not(target_os = "linux"))]
/// TAP devices are Linux-only.
pub fn create_tap(_name: &str, _addr: Ipv4Addr, _net: Ipv4Net) -> Result<(), HypervisorError> {
    Err(HypervisorError::Operation {
        operation: "create tap",
        detail: "TAP devices need Linux".into(),
    })
}

#[cfg(not(target_os = "linux"))]
/// TAP devices are Linux-only; nothing to remove.
pub fn remove_tap(_name: &str) -> Result<(), HypervisorError> {
    Ok(())
}

#[cfg(target_os = "linux")]
mod linux {
    use std::io;
    use std::net::Ipv4Addr;
    use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};

    use hypedeck_hypervisor::HypervisorError;

    use super::{CAP_NET_ADMIN_HINT, tap_exists};
    use crate::config::Ipv4Net;

    /// `struct ifreq`: the interface name, then a 24-byte union.
    #[repr(C)]
    #[derive(Debug, Clone, Copy)]
    struct IfReq {
        name: [u8; libc::IFNAMSIZ],
        data: [u8; 24],
    }

    impl IfReq {
        fn new(name: &str) -> io::Result<IfReq> {
            let bytes = name.as_bytes();
            if bytes.is_empty() || bytes.len() >= libc::IFNAMSIZ || bytes.contains(&0) {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidInput,
                    format!("bad interface name {name:?}"),
                ));
            }
            let mut req = IfReq {
                name: [0; libc::IFNAMSIZ],
                data: [0; 24],
            };
            req.name[..bytes.len()].copy_from_slice(bytes);
            Ok(req)
        }

        fn with_flags(mut self, flags: i16) -> IfReq {
            self.data[..2].copy_from_slice(&flags.to_ne_bytes());
            self
        }

        fn flags(&self) -> i16 {
            i16::from_ne_bytes([self.data[0], self.data[1]])
        }

        /// A `struct sockaddr_in` for `addr` in the union.
        fn with_addr(mut self, addr: Ipv4Addr) -> IfReq {
            self.data = [0; 24];
            self.data[..2].copy_from_slice(&(libc::AF_INET as u16).to_ne_bytes());
            // Port (bytes 2..4) stays 0.
            self.data[4..8].copy_from_slice(&addr.octets());
            self
        }
    }

    const TAP_FLAGS: i16 = (libc::IFF_TAP | libc::IFF_NO_PI | libc::IFF_VNET_HDR) as i16;

    fn ioctl_ptr(fd: &OwnedFd, request: libc::Ioctl, req: &mut IfReq) -> io::Result<()> {
        // SAFETY: `req` is a live, properly sized `struct ifreq` for the ifreq-taking
        // ioctls used here; the kernel reads/writes at most its 40 bytes.
        #[allow(unsafe_code)]
        let rc = unsafe { libc::ioctl(fd.as_raw_fd(), request, req as *mut IfReq) };
        if rc < 0 {
            Err(io::Error::last_os_error())
        } else {
            Ok(())
        }
    }

    fn ioctl_int(fd: &OwnedFd, request: libc::Ioctl, value: libc::c_ulong) -> io::Result<()> {
        // SAFETY: TUNSETPERSIST/TUNSETOWNER take their argument by value.
        #[allow(unsafe_code)]
        let rc = unsafe { libc::ioctl(fd.as_raw_fd(), request, value) };
        if rc < 0 {
            Err(io::Error::last_os_error())
        } else {
            Ok(())
        }
    }

    fn open_tun() -> io::Result<OwnedFd> {
        let path = c"/dev/net/tun";
        // SAFETY: a valid NUL-terminated path; the fd is owned right away.
        #[allow(unsafe_code)]
        let fd = unsafe { libc::open(path.as_ptr(), libc::O_RDWR | libc::O_CLOEXEC) };
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: `fd` was just returned by open(2) and is owned by nobody else.
        #[allow(unsafe_code)]
        Ok(unsafe { OwnedFd::from_raw_fd(fd) })
    }

    fn inet_socket() -> io::Result<OwnedFd> {
        // SAFETY: plain socket(2); the fd is owned right away.
        #[allow(unsafe_code)]
        let fd = unsafe { libc::socket(libc::AF_INET, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0) };
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: `fd` was just returned by socket(2) and is owned by nobody else.
        #[allow(unsafe_code)]
        Ok(unsafe { OwnedFd::from_raw_fd(fd) })
    }

    fn explain(step: &str, e: io::Error) -> HypervisorError {
        let detail = match e.raw_os_error() {
            Some(libc::EPERM) | Some(libc::EACCES) => {
                format!("{CAP_NET_ADMIN_HINT} ({step}: {e})")
            }
            Some(libc::ENOENT) | Some(libc::ENODEV) if step == "open /dev/net/tun" => format!(
                "{CAP_NET_ADMIN_HINT}; this host has no /dev/net/tun (load the tun module: \
                 `modprobe tun`) ({step}: {e})"
            ),
            Some(libc::EBUSY) => {
                format!("{step}: the TAP device is in use by another process (a stale VMM?): {e}")
            }
            _ => format!("{step}: {e}"),
        };
        HypervisorError::Operation {
            operation: "create tap",
            detail,
        }
    }

    /// Creates (or takes over) the persistent TAP `name`, owned by our uid, addressed
    /// `addr/net.prefix` and up. On error no new device is left behind.
    pub fn create_tap(name: &str, addr: Ipv4Addr, net: Ipv4Net) -> Result<(), HypervisorError> {
        let existed = tap_exists(name);
        let tun = open_tun().map_err(|e| explain("open /dev/net/tun", e))?;
        let mut req = IfReq::new(name)
            .map_err(|e| explain("TUNSETIFF", e))?
            .with_flags(TAP_FLAGS);
        ioctl_ptr(&tun, libc::TUNSETIFF, &mut req).map_err(|e| explain("TUNSETIFF", e))?;
        let configured = (|| {
            // SAFETY: geteuid(2) cannot fail.
            #[allow(unsafe_code)]
            let uid = unsafe { libc::geteuid() };
            ioctl_int(&tun, libc::TUNSETOWNER, libc::c_ulong::from(uid))
                .map_err(|e| explain("TUNSETOWNER", e))?;
            ioctl_int(&tun, libc::TUNSETPERSIST, 1).map_err(|e| explain("TUNSETPERSIST", e))?;
            let sock = inet_socket().map_err(|e| explain("socket", e))?;
            let base = IfReq::new(name).map_err(|e| explain("SIOCSIFADDR", e))?;
            ioctl_ptr(&sock, libc::SIOCSIFADDR as _, &mut base.with_addr(addr))
                .map_err(|e| explain("SIOCSIFADDR", e))?;
            ioctl_ptr(
                &sock,
                libc::SIOCSIFNETMASK as _,
                &mut base.with_addr(net.mask()),
            )
            .map_err(|e| explain("SIOCSIFNETMASK", e))?;
            let mut flags = base;
            ioctl_ptr(&sock, libc::SIOCGIFFLAGS as _, &mut flags)
                .map_err(|e| explain("SIOCGIFFLAGS", e))?;
            let up = flags.flags() | libc::IFF_UP as i16;
            ioctl_ptr(&sock, libc::SIOCSIFFLAGS as _, &mut base.with_flags(up))
                .map_err(|e| explain("SIOCSIFFLAGS", e))?;
            Ok(())
        })();
        if configured.is_err() && !existed {
            // Not persistent (or made non-persistent here): closing `tun` deletes it.
            let _ = ioctl_int(&tun, libc::TUNSETPERSIST, 0);
        }
        configured
    }

    /// Deletes the persistent TAP `name`. Idempotent: a missing device is fine. The VMM
    /// using it must be gone (an attached TAP is busy).
    pub fn remove_tap(name: &str) -> Result<(), HypervisorError> {
        if !tap_exists(name) {
            return Ok(());
        }
        let fail = |step: &str, e: io::Error| HypervisorError::Operation {
            operation: "remove tap",
            detail: format!("{name}: {step}: {e}"),
        };
        let tun = open_tun().map_err(|e| fail("open /dev/net/tun", e))?;
        let mut req = IfReq::new(name)
            .map_err(|e| fail("TUNSETIFF", e))?
            .with_flags(TAP_FLAGS);
        ioctl_ptr(&tun, libc::TUNSETIFF, &mut req).map_err(|e| fail("TUNSETIFF", e))?;
        ioctl_int(&tun, libc::TUNSETPERSIST, 0).map_err(|e| fail("TUNSETPERSIST", e))?;
        drop(tun);
        Ok(())
    }

    #[cfg(test)]
    mod tests {
        #![allow(clippy::unwrap_used, clippy::expect_used)]

        use super::*;

        #[test]
        fn ifreq_layout_matches_the_kernel() {
            assert_eq!(std::mem::size_of::<IfReq>(), 40);
            let r = IfReq::new("hdabc")
                .unwrap()
                .with_addr(Ipv4Addr::new(10, 0, 0, 1));
            assert_eq!(&r.name[..6], b"hdabc\0");
            assert_eq!(&r.data[4..8], &[10, 0, 0, 1]);
            assert_eq!(r.with_flags(0x1234).flags(), 0x1234);
            assert!(IfReq::new("").is_err());
            assert!(IfReq::new("a-very-long-name-x").is_err());
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use hypedeck_model::{PortForward, PortProtocol};

    use super::*;

    fn net() -> NetSpec {
        NetSpec {
            mac: "02:00:00:00:00:01".into(),
            subnet: "198.18.251.0/30".into(),
            gateway: "198.18.251.1".into(),
            dns: "198.18.251.1".into(),
            guest_ip: "198.18.251.2".into(),
            restrict: false,
            guest_forwards: Vec::new(),
            host_forwards: Vec::new(),
        }
    }

    #[test]
    fn forwards_and_egress_enforcement_are_unsupported() {
        check_supported(&net()).unwrap();
        let mut n = net();
        n.host_forwards.push(PortForward {
            host_port: 8080,
            guest_port: 80,
            protocol: PortProtocol::Tcp,
        });
        let e = check_supported(&n).unwrap_err();
        assert!(
            matches!(
                e,
                HypervisorError::Unsupported {
                    operation: "port forwarding",
                    kind: HypervisorKind::CloudHypervisor
                }
            ),
            "{e:?}"
        );
        assert_eq!(
            e.to_string(),
            "port forwarding is not supported by the cloud-hypervisor backend"
        );
        let mut n = net();
        n.restrict = true;
        assert!(matches!(
            check_supported(&n),
            Err(HypervisorError::Unsupported {
                operation: "egress enforcement",
                ..
            })
        ));
        let mut n = net();
        n.guest_forwards
            .push(("10.0.0.9:3128".into(), "proxy".into()));
        assert!(check_supported(&n).is_err());
    }

    #[test]
    fn host_address_is_the_gateway_in_its_subnet() {
        let (addr, subnet) = host_address(&net()).unwrap();
        assert_eq!(addr, Ipv4Addr::new(198, 18, 251, 1));
        assert_eq!(subnet.prefix, 30);
        let mut n = net();
        n.gateway = "10.9.9.9".into();
        assert!(
            host_address(&n)
                .unwrap_err()
                .to_string()
                .contains("outside the subnet")
        );
        n.subnet = "nonsense".into();
        assert!(
            host_address(&n)
                .unwrap_err()
                .to_string()
                .contains("bad subnet")
        );
    }

    /// Creates a real TAP when this process may (root or CAP_NET_ADMIN with /dev/net/tun);
    /// otherwise checks that the refusal names what is missing.
    #[test]
    fn tap_lifecycle_or_a_clear_refusal() {
        let name = format!("hdt{}", std::process::id());
        let (addr, subnet) = host_address(&net()).unwrap();
        match create_tap(&name, addr, subnet) {
            Ok(()) => {
                eprintln!("created TAP {name}: checking it for real");
                assert!(tap_exists(&name));
                let flags =
                    std::fs::read_to_string(format!("/sys/class/net/{name}/flags")).unwrap();
                let flags = u32::from_str_radix(flags.trim().trim_start_matches("0x"), 16).unwrap();
                assert_ne!(flags & libc::IFF_UP as u32, 0, "TAP is up");
                // Taking over an existing TAP (e.g. for a restore) works too.
                create_tap(&name, addr, subnet).unwrap();
                remove_tap(&name).unwrap();
                assert!(!tap_exists(&name));
                remove_tap(&name).unwrap();
            }
            Err(HypervisorError::Operation { operation, detail }) => {
                eprintln!("no TAP here, checking the refusal: {detail}");
                assert_eq!(operation, "create tap");
                assert!(detail.contains("CAP_NET_ADMIN"), "{detail}");
                assert!(!tap_exists(&name));
            }
            Err(other) => panic!("{other:?}"),
        }
    }
}
