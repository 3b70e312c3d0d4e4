//! The stack's DNS server: one question per query, answered from the host's resolver (A
//! records; AAAA and other types get an empty answer, since the guest has no IPv6). Pure
//! parsing and building; the resolution itself happens in the stack.

use std::net::Ipv4Addr;

/// Answer TTL: short, so a changed policy or record is seen soon.
const TTL: u32 = 30;

/// Query types the stack knows.
pub const TYPE_A: u16 = 1;

/// One parsed question.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Query {
    /// Transaction id.
    pub id: u16,
    /// Recursion desired, echoed back.
    pub rd: bool,
    /// The name, lowercase, without the final dot.
    pub name: String,
    /// QTYPE.
    pub qtype: u16,
    /// QCLASS.
    pub qclass: u16,
    /// The raw question section (copied into the answer).
    question: Vec<u8>,
}

/// How a query is answered.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Answer {
    /// These addresses (may be empty: NOERROR with no records).
    Addresses(Vec<Ipv4Addr>),
    /// NXDOMAIN.
    NoSuchName,
    /// SERVFAIL.
    Failure,
    /// REFUSED.
    Refused,
}

/// Parses a standard query with exactly one question. `None` for anything else (responses,
/// other opcodes, truncated or malformed packets), which the stack drops.
pub fn parse(packet: &[u8]) -> Option<Query> {
    if packet.len() < 12 {
        return None;
    }
    let id = u16::from_be_bytes([packet[0], packet[1]]);
    let flags = u16::from_be_bytes([packet[2], packet[3]]);
    let qr = flags & 0x8000 != 0;
    let opcode = (flags >> 11) & 0xf;
    let qdcount = u16::from_be_bytes([packet[4], packet[5]]);
    if qr || opcode != 0 || qdcount != 1 {
        return None;
    }
    let mut pos = 12;
    let mut labels: Vec<String> = Vec::new();
    let mut total = 0usize;
    loop {
        let len = usize::from(*packet.get(pos)?);
        pos += 1;
        if len == 0 {
            break;
        }
        // No compression in a question we accept, and labels are at most 63 bytes.
        if len > 63 {
            return None;
        }
        let label = packet.get(pos..pos + len)?;
        total += len + 1;
        if total > 253 {
            return None;
        }
        if !label
            .iter()
            .all(|c| c.is_ascii_alphanumeric() || *c == b'-' || *c == b'_')
        {
            return None;
        }
        labels.push(String::from_utf8_lossy(label).to_ascii_lowercase());
        pos += len;
    }
    let qtype = u16::from_be_bytes([*packet.get(pos)?, *packet.get(pos + 1)?]);
    let qclass = u16::from_be_bytes([*packet.get(pos + 2)?, *packet.get(pos + 3)?]);
    pos += 4;
    Some(Query {
        id,
        rd: flags & 0x0100 != 0,
        name: labels.join("."),
        qtype,
        qclass,
        question: packet[12..pos].to_vec(),
    })
}

/// The response to `query`.
pub fn respond(query: &Query, answer: &Answer) -> Vec<u8> {
    let (rcode, addrs): (u16, &[Ipv4Addr]) = match answer {
        Answer::Addresses(a) => (0, a),
        Answer::NoSuchName => (3, &[]),
        Answer::Failure => (2, &[]),
        Answer::Refused => (5, &[]),
    };
    // QR, RA, and RD echoed.
    let flags: u16 = 0x8000 | 0x0080 | if query.rd { 0x0100 } else { 0 } | rcode;
    let mut out = Vec::with_capacity(12 + query.question.len() + addrs.len() * 16);
    out.extend_from_slice(&query.id.to_be_bytes());
    out.extend_from_slice(&flags.to_be_bytes());
    out.extend_from_slice(&1u16.to_be_bytes());
    out.extend_from_slice(&(addrs.len() as u16).to_be_bytes());
    out.extend_from_slice(&0u16.to_be_bytes());
    out.extend_from_slice(&0u16.to_be_bytes());
    out.extend_from_slice(&query.question);
    for addr in addrs {
        out.extend_from_slice(&[0xc0, 0x0c]); // the name in the question
        out.extend_from_slice(&TYPE_A.to_be_bytes());
        out.extend_from_slice(&1u16.to_be_bytes());
        out.extend_from_slice(&TTL.to_be_bytes());
        out.extend_from_slice(&4u16.to_be_bytes());
        out.extend_from_slice(&addr.octets());
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn query(name: &str, qtype: u16) -> Vec<u8> {
        let mut q = vec![0x12, 0x34, 0x01, 0x00, 0, 1, 0, 0, 0, 0, 0, 0];
        for label in name.split('.') {
            q.push(label.len() as u8);
            q.extend_from_slice(label.as_bytes());
        }
        q.push(0);
        q.extend_from_slice(&qtype.to_be_bytes());
        q.extend_from_slice(&1u16.to_be_bytes());
        q
    }

    #[test]
    fn a_query_is_answered_with_its_addresses() {
        let q = parse(&query("Internet.Test", TYPE_A)).unwrap();
        assert_eq!(q.name, "internet.test");
        assert_eq!((q.id, q.qtype, q.qclass, q.rd), (0x1234, 1, 1, true));
        let r = respond(&q, &Answer::Addresses(vec![Ipv4Addr::new(203, 0, 113, 10)]));
        assert_eq!(&r[..4], &[0x12, 0x34, 0x81, 0x80]);
        assert_eq!(&r[6..8], &[0, 1], "one answer");
        assert_eq!(&r[r.len() - 4..], &[203, 0, 113, 10]);
        let nx = respond(&q, &Answer::NoSuchName);
        assert_eq!(nx[3] & 0xf, 3);
        assert_eq!(&nx[6..8], &[0, 0]);
    }

    #[test]
    fn malformed_and_non_queries_are_dropped() {
        assert_eq!(parse(&[0; 5]), None);
        let mut response = query("a.test", TYPE_A);
        response[2] |= 0x80;
        assert_eq!(parse(&response), None);
        let mut two = query("a.test", TYPE_A);
        two[5] = 2;
        assert_eq!(parse(&two), None);
        let mut truncated = query("a.test", TYPE_A);
        truncated.truncate(truncated.len() - 2);
        assert_eq!(parse(&truncated), None);
        let mut pointer = query("a.test", TYPE_A);
        pointer[12] = 0xc0;
        assert_eq!(parse(&pointer), None);
        assert_eq!(parse(&query("bad name.test", TYPE_A)), None);
    }
}
