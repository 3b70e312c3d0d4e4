//! The stack's DHCP server (RFC 2131/2132): the one guest on the link gets its one address,
//! the gateway and the DNS server. Pure byte handling.

use std::net::Ipv4Addr;

/// Server port.
pub const SERVER_PORT: u16 = 67;
/// Client port.
pub const CLIENT_PORT: u16 = 68;

const MAGIC: [u8; 4] = [99, 130, 83, 99];
const DISCOVER: u8 = 1;
const OFFER: u8 = 2;
const REQUEST: u8 = 3;
const ACK: u8 = 5;
const NAK: u8 = 6;
const LEASE_SECS: u32 = 86_400;

/// What the server hands out.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Lease {
    /// The guest's address.
    pub ip: Ipv4Addr,
    /// Subnet prefix length.
    pub prefix: u8,
    /// Gateway, also the server identifier.
    pub gateway: Ipv4Addr,
    /// DNS server.
    pub dns: Ipv4Addr,
}

/// The answer to a client message (`None`: not a message the server answers).
pub fn answer(request: &[u8], lease: &Lease) -> Option<Vec<u8>> {
    if request.len() < 240 || request[0] != 1 || request[1] != 1 || request[2] != 6 {
        return None;
    }
    if request[236..240] != MAGIC {
        return None;
    }
    let mut kind = None;
    let mut requested = None;
    let mut server = None;
    let mut pos = 240;
    while pos < request.len() {
        let code = request[pos];
        if code == 255 {
            break;
        }
        if code == 0 {
            pos += 1;
            continue;
        }
        let len = usize::from(*request.get(pos + 1)?);
        let value = request.get(pos + 2..pos + 2 + len)?;
        let addr = || <[u8; 4]>::try_from(value).ok().map(Ipv4Addr::from);
        match code {
            53 => kind = value.first().copied(),
            50 => requested = addr(),
            54 => server = addr(),
            _ => {}
        }
        pos += 2 + len;
    }
    let ciaddr = Ipv4Addr::new(request[12], request[13], request[14], request[15]);
    let reply = match kind? {
        DISCOVER => OFFER,
        REQUEST => {
            if server.is_some_and(|s| s != lease.gateway) {
                return None; // the client chose another server
            }
            let wanted = requested.unwrap_or(ciaddr);
            if wanted == lease.ip { ACK } else { NAK }
        }
        _ => return None,
    };
    let mut p = vec![0u8; 236];
    p[0] = 2; // BOOTREPLY
    p[1] = 1;
    p[2] = 6;
    p[4..8].copy_from_slice(&request[4..8]); // xid
    p[10..12].copy_from_slice(&request[10..12]); // flags
    if reply != NAK {
        p[16..20].copy_from_slice(&lease.ip.octets()); // yiaddr
    }
    p[20..24].copy_from_slice(&lease.gateway.octets()); // siaddr
    p[28..44].copy_from_slice(&request[28..44]); // chaddr
    p.extend_from_slice(&MAGIC);
    p.extend_from_slice(&[53, 1, reply]);
    p.extend_from_slice(&[54, 4]);
    p.extend_from_slice(&lease.gateway.octets());
    if reply != NAK {
        let mask = u32::MAX
            .checked_shl(32 - u32::from(lease.prefix.min(32)))
            .unwrap_or(0);
        p.extend_from_slice(&[51, 4]);
        p.extend_from_slice(&LEASE_SECS.to_be_bytes());
        p.extend_from_slice(&[1, 4]);
        p.extend_from_slice(&mask.to_be_bytes());
        p.extend_from_slice(&[3, 4]);
        p.extend_from_slice(&lease.gateway.octets());
        p.extend_from_slice(&[6, 4]);
        p.extend_from_slice(&lease.dns.octets());
    }
    p.push(255);
    if p.len() < 300 {
        p.resize(300, 0);
    }
    Some(p)
}

#[cfg(test)]
mod tests {
    use super::*;

    const LEASE: Lease = Lease {
        ip: Ipv4Addr::new(10, 100, 9, 15),
        prefix: 24,
        gateway: Ipv4Addr::new(10, 100, 9, 2),
        dns: Ipv4Addr::new(10, 100, 9, 3),
    };

    fn message(kind: u8, options: &[u8]) -> Vec<u8> {
        let mut p = vec![0u8; 236];
        p[0] = 1;
        p[1] = 1;
        p[2] = 6;
        p[4..8].copy_from_slice(&0xdead_beefu32.to_be_bytes());
        p[28..34].copy_from_slice(&[2, 0, 0, 0, 9, 0x15]);
        p.extend_from_slice(&MAGIC);
        p.extend_from_slice(&[53, 1, kind]);
        p.extend_from_slice(options);
        p.push(255);
        p
    }

    fn option(reply: &[u8], code: u8) -> Option<Vec<u8>> {
        let mut pos = 240;
        while pos < reply.len() && reply[pos] != 255 {
            let len = usize::from(reply[pos + 1]);
            if reply[pos] == code {
                return Some(reply[pos + 2..pos + 2 + len].to_vec());
            }
            pos += 2 + len;
        }
        None
    }

    #[test]
    fn discover_is_offered_and_request_acked_with_the_network() {
        let offer = answer(&message(DISCOVER, &[]), &LEASE).unwrap();
        assert_eq!(offer[0], 2);
        assert_eq!(&offer[4..8], &0xdead_beefu32.to_be_bytes());
        assert_eq!(&offer[16..20], &[10, 100, 9, 15]);
        assert_eq!(option(&offer, 53), Some(vec![OFFER]));
        assert_eq!(option(&offer, 1), Some(vec![255, 255, 255, 0]));
        assert_eq!(option(&offer, 3), Some(vec![10, 100, 9, 2]));
        assert_eq!(option(&offer, 6), Some(vec![10, 100, 9, 3]));
        let ack = answer(
            &message(REQUEST, &[50, 4, 10, 100, 9, 15, 54, 4, 10, 100, 9, 2]),
            &LEASE,
        )
        .unwrap();
        assert_eq!(option(&ack, 53), Some(vec![ACK]));
        let nak = answer(&message(REQUEST, &[50, 4, 10, 100, 9, 99]), &LEASE).unwrap();
        assert_eq!(option(&nak, 53), Some(vec![NAK]));
        assert_eq!(&nak[16..20], &[0, 0, 0, 0]);
        // Another server's lease, a reply, garbage: no answer.
        assert!(answer(&message(REQUEST, &[54, 4, 10, 0, 0, 1]), &LEASE).is_none());
        let mut reply = message(DISCOVER, &[]);
        reply[0] = 2;
        assert!(answer(&reply, &LEASE).is_none());
        assert!(answer(&[1; 100], &LEASE).is_none());
        let mut runaway = message(DISCOVER, &[]);
        runaway.truncate(runaway.len() - 1);
        runaway.extend_from_slice(&[12, 200, 1]);
        assert!(
            answer(&runaway, &LEASE).is_none(),
            "an option running past the end"
        );
    }
}
