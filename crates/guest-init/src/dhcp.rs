//! The DHCP messages guest init needs to take an address from the hypervisor's network (vz's
//! NAT serves its own subnet): DISCOVER and REQUEST out, OFFER/ACK/NAK in (RFC 2131/2132).
//! Pure byte handling, so it is tested on the host; the sockets live in the init binary.

/// Client port.
pub const CLIENT_PORT: u16 = 68;
/// Server port.
pub const SERVER_PORT: u16 = 67;

const MAGIC: [u8; 4] = [99, 130, 83, 99];
const OPT_MASK: u8 = 1;
const OPT_ROUTER: u8 = 3;
const OPT_DNS: u8 = 6;
const OPT_REQUESTED_IP: u8 = 50;
const OPT_MESSAGE_TYPE: u8 = 53;
const OPT_SERVER_ID: u8 = 54;
const OPT_PARAMS: u8 = 55;
const OPT_END: u8 = 255;
const OPT_PAD: u8 = 0;

const DISCOVER: u8 = 1;
const OFFER: u8 = 2;
const REQUEST: u8 = 3;
const ACK: u8 = 5;
const NAK: u8 = 6;

/// What a server offered or acknowledged.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Lease {
    /// The client's address.
    pub ip: [u8; 4],
    /// Prefix length from the subnet mask (24 when the server sent none).
    pub prefix: u8,
    /// Default gateway.
    pub gateway: Option<[u8; 4]>,
    /// First DNS server.
    pub dns: Option<[u8; 4]>,
    /// The server's identifier (needed in the REQUEST).
    pub server: Option<[u8; 4]>,
}

/// A server's answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reply {
    /// DHCPOFFER.
    Offer(Lease),
    /// DHCPACK.
    Ack(Lease),
    /// DHCPNAK: start over.
    Nak,
}

fn message(kind: u8, xid: u32, mac: [u8; 6], extra: &[(u8, &[u8])]) -> Vec<u8> {
    let mut p = vec![0u8; 236];
    p[0] = 1; // BOOTREQUEST
    p[1] = 1; // Ethernet
    p[2] = 6; // hardware address length
    p[4..8].copy_from_slice(&xid.to_be_bytes());
    // Broadcast flag: the client has no address yet, so answers must be broadcast.
    p[10..12].copy_from_slice(&0x8000u16.to_be_bytes());
    p[28..34].copy_from_slice(&mac);
    p.extend_from_slice(&MAGIC);
    p.extend_from_slice(&[OPT_MESSAGE_TYPE, 1, kind]);
    for (code, value) in extra {
        p.push(*code);
        p.push(value.len() as u8);
        p.extend_from_slice(value);
    }
    p.extend_from_slice(&[OPT_PARAMS, 3, OPT_MASK, OPT_ROUTER, OPT_DNS, OPT_END]);
    // Some servers ignore requests shorter than a BOOTP packet (300 bytes).
    if p.len() < 300 {
        p.resize(300, OPT_PAD);
    }
    p
}

/// DHCPDISCOVER.
pub fn discover(xid: u32, mac: [u8; 6]) -> Vec<u8> {
    message(DISCOVER, xid, mac, &[])
}

/// DHCPREQUEST for an offered lease.
pub fn request(xid: u32, mac: [u8; 6], offer: &Lease) -> Vec<u8> {
    let mut extra: Vec<(u8, &[u8])> = vec![(OPT_REQUESTED_IP, &offer.ip)];
    if let Some(server) = &offer.server {
        extra.push((OPT_SERVER_ID, server));
    }
    message(REQUEST, xid, mac, &extra)
}

fn addr(value: &[u8]) -> Option<[u8; 4]> {
    value.get(..4).map(|v| [v[0], v[1], v[2], v[3]])
}

/// Parses a server's packet for transaction `xid`; `None` for anything else.
pub fn parse(xid: u32, packet: &[u8]) -> Option<Reply> {
    if packet.len() < 240 || packet[0] != 2 || packet[4..8] != xid.to_be_bytes() {
        return None;
    }
    if packet[236..240] != MAGIC {
        return None;
    }
    let mut lease = Lease {
        ip: addr(&packet[16..20])?,
        prefix: 24,
        gateway: None,
        dns: None,
        server: None,
    };
    let mut kind = None;
    let mut i = 240;
    while i < packet.len() {
        let code = packet[i];
        if code == OPT_END {
            break;
        }
        if code == OPT_PAD {
            i += 1;
            continue;
        }
        let len = usize::from(*packet.get(i + 1)?);
        let value = packet.get(i + 2..i + 2 + len)?;
        match code {
            OPT_MESSAGE_TYPE => kind = value.first().copied(),
            OPT_MASK => {
                lease.prefix = addr(value).map_or(24, |m| u32::from_be_bytes(m).count_ones() as u8)
            }
            OPT_ROUTER => lease.gateway = addr(value),
            OPT_DNS => lease.dns = addr(value),
            OPT_SERVER_ID => lease.server = addr(value),
            _ => {}
        }
        i += 2 + len;
    }
    match kind? {
        OFFER => Some(Reply::Offer(lease)),
        ACK => Some(Reply::Ack(lease)),
        NAK => Some(Reply::Nak),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MAC: [u8; 6] = [2, 0, 0, 0xab, 0xcd, 0xef];

    /// A server reply as vmnet's bootpd or slirp would send it.
    fn reply(kind: u8, xid: u32, options: &[u8]) -> Vec<u8> {
        let mut p = vec![0u8; 236];
        p[0] = 2;
        p[1] = 1;
        p[2] = 6;
        p[4..8].copy_from_slice(&xid.to_be_bytes());
        p[16..20].copy_from_slice(&[192, 168, 64, 7]);
        p[28..34].copy_from_slice(&MAC);
        p.extend_from_slice(&MAGIC);
        p.extend_from_slice(&[OPT_MESSAGE_TYPE, 1, kind]);
        p.extend_from_slice(options);
        p.push(OPT_END);
        p
    }

    #[test]
    fn requests_carry_the_mac_the_broadcast_flag_and_the_offer() {
        let d = discover(0x1234_5678, MAC);
        assert_eq!(d.len(), 300);
        assert_eq!(&d[..4], &[1, 1, 6, 0]);
        assert_eq!(&d[4..8], &[0x12, 0x34, 0x56, 0x78]);
        assert_eq!(&d[10..12], &[0x80, 0]);
        assert_eq!(&d[28..34], &MAC);
        assert_eq!(&d[236..243], &[99, 130, 83, 99, 53, 1, 1]);

        let offer = Lease {
            ip: [192, 168, 64, 7],
            prefix: 24,
            gateway: None,
            dns: None,
            server: Some([192, 168, 64, 1]),
        };
        let r = request(7, MAC, &offer);
        let opts = &r[240..];
        assert_eq!(&opts[..3], &[53, 1, 3]);
        assert_eq!(&opts[3..9], &[50, 4, 192, 168, 64, 7]);
        assert_eq!(&opts[9..15], &[54, 4, 192, 168, 64, 1]);
    }

    #[test]
    fn offers_acks_and_naks_parse_with_their_options() {
        let opts = [
            1, 4, 255, 255, 255, 0, // mask
            0, // pad
            3, 4, 192, 168, 64, 1, // router
            6, 8, 192, 168, 64, 1, 8, 8, 8, 8, // two DNS servers: the first wins
            54, 4, 192, 168, 64, 1, // server id
            51, 4, 0, 0, 0x0e, 0x10, // lease time (ignored)
        ];
        let lease = Lease {
            ip: [192, 168, 64, 7],
            prefix: 24,
            gateway: Some([192, 168, 64, 1]),
            dns: Some([192, 168, 64, 1]),
            server: Some([192, 168, 64, 1]),
        };
        assert_eq!(
            parse(9, &reply(OFFER, 9, &opts)),
            Some(Reply::Offer(lease.clone()))
        );
        assert_eq!(parse(9, &reply(ACK, 9, &opts)), Some(Reply::Ack(lease)));
        assert_eq!(parse(9, &reply(NAK, 9, &[])), Some(Reply::Nak));
        let narrow = parse(9, &reply(ACK, 9, &[1, 4, 255, 255, 240, 0]));
        assert!(matches!(narrow, Some(Reply::Ack(Lease { prefix: 20, .. }))));
    }

    #[test]
    fn other_transactions_and_garbage_are_ignored() {
        assert_eq!(parse(9, &reply(OFFER, 10, &[])), None);
        assert_eq!(parse(9, &[2; 100]), None);
        let mut bad_magic = reply(OFFER, 9, &[]);
        bad_magic[236] = 0;
        assert_eq!(parse(9, &bad_magic), None);
        // An option running past the end.
        let mut cut = reply(OFFER, 9, &[]);
        cut.truncate(cut.len() - 1);
        cut.extend_from_slice(&[3, 4, 10]);
        assert_eq!(parse(9, &cut), None);
        // No message type.
        let mut untyped = reply(OFFER, 9, &[]);
        untyped[240] = OPT_PAD;
        untyped[241] = OPT_PAD;
        untyped[242] = OPT_PAD;
        assert_eq!(parse(9, &untyped), None);
    }
}
