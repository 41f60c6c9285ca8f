//! Just enough DNS (RFC 1035) for a health check: one question over UDP, and the answers'
//! records of the asked type as text (`127.0.0.1`, `mail.example.com.`, `"v=spf1 ..."`).

use std::net::{Ipv4Addr, Ipv6Addr};

/// Record types a check can ask for, with their numbers.
pub const TYPES: &[(&str, u16)] = &[
    ("A", 1),
    ("NS", 2),
    ("CNAME", 5),
    ("SOA", 6),
    ("PTR", 12),
    ("MX", 15),
    ("TXT", 16),
    ("AAAA", 28),
    ("SRV", 33),
];

/// The number of a record type name (case-insensitive).
pub fn qtype(name: &str) -> Option<u16> {
    TYPES
        .iter()
        .find(|(n, _)| n.eq_ignore_ascii_case(name))
        .map(|&(_, t)| t)
}

/// Why a query cannot be made or a response cannot be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DnsError {
    #[error("{0:?} is not a domain name")]
    BadName(String),
    #[error("truncated response")]
    Truncated,
    #[error("response to another query")]
    OtherQuery,
    #[error("not a response")]
    NotResponse,
}

/// A query for `name` (absolute or not) of type `qtype`, recursion desired.
pub fn query(id: u16, name: &str, qtype: u16) -> Result<Vec<u8>, DnsError> {
    let mut q = Vec::with_capacity(32 + name.len());
    q.extend_from_slice(&id.to_be_bytes());
    q.extend_from_slice(&[0x01, 0x00]); // RD
    q.extend_from_slice(&[0, 1, 0, 0, 0, 0, 0, 0]); // 1 question
    for label in name.trim_end_matches('.').split('.') {
        if label.is_empty() || label.len() > 63 {
            return Err(DnsError::BadName(name.to_string()));
        }
        q.push(label.len() as u8);
        q.extend_from_slice(label.as_bytes());
    }
    q.push(0);
    q.extend_from_slice(&qtype.to_be_bytes());
    q.extend_from_slice(&[0, 1]); // IN
    Ok(q)
}

/// What a response said.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Answer {
    /// RFC 1035 RCODE: 0 = NOERROR, 3 = NXDOMAIN, ...
    pub rcode: u8,
    /// Records of the asked type in the answer section, as text.
    pub records: Vec<String>,
}

/// The name of an RCODE.
pub fn rcode_name(r: u8) -> String {
    match r {
        0 => "NOERROR".into(),
        1 => "FORMERR".into(),
        2 => "SERVFAIL".into(),
        3 => "NXDOMAIN".into(),
        4 => "NOTIMP".into(),
        5 => "REFUSED".into(),
        n => format!("RCODE {n}"),
    }
}

/// Parses the response to query `id` of type `qtype`.
pub fn parse(resp: &[u8], id: u16, qtype: u16) -> Result<Answer, DnsError> {
    let short = || DnsError::Truncated;
    if resp.len() < 12 {
        return Err(short());
    }
    if u16::from_be_bytes([resp[0], resp[1]]) != id {
        return Err(DnsError::OtherQuery);
    }
    if resp[2] & 0x80 == 0 {
        return Err(DnsError::NotResponse);
    }
    let rcode = resp[3] & 0x0f;
    let qd = u16::from_be_bytes([resp[4], resp[5]]);
    let an = u16::from_be_bytes([resp[6], resp[7]]);
    let mut at = 12;
    for _ in 0..qd {
        at = skip_name(resp, at).ok_or_else(short)? + 4;
    }
    let mut records = Vec::new();
    for _ in 0..an {
        at = skip_name(resp, at).ok_or_else(short)?;
        let f = resp.get(at..at + 10).ok_or_else(short)?;
        let rtype = u16::from_be_bytes([f[0], f[1]]);
        let len = usize::from(u16::from_be_bytes([f[8], f[9]]));
        let start = at + 10;
        let data = resp.get(start..start + len).ok_or_else(short)?;
        if rtype == qtype {
            records.push(rdata_text(resp, start, data, rtype).ok_or_else(short)?);
        }
        at = start + len;
    }
    Ok(Answer { rcode, records })
}

fn rdata_text(msg: &[u8], start: usize, data: &[u8], rtype: u16) -> Option<String> {
    Some(match rtype {
        1 if data.len() == 4 => Ipv4Addr::new(data[0], data[1], data[2], data[3]).to_string(),
        28 if data.len() == 16 => {
            let b: [u8; 16] = data.try_into().ok()?;
            Ipv6Addr::from(b).to_string()
        }
        2 | 5 | 12 => name(msg, start)?,
        15 => format!(
            "{} {}",
            u16::from_be_bytes([*data.first()?, *data.get(1)?]),
            name(msg, start + 2)?
        ),
        16 => {
            let mut parts = Vec::new();
            let mut i = 0;
            while i < data.len() {
                let n = usize::from(data[i]);
                let s = data.get(i + 1..i + 1 + n)?;
                parts.push(format!("\"{}\"", String::from_utf8_lossy(s)));
                i += 1 + n;
            }
            parts.join(" ")
        }
        33 => format!(
            "{} {} {} {}",
            u16::from_be_bytes([*data.first()?, *data.get(1)?]),
            u16::from_be_bytes([*data.get(2)?, *data.get(3)?]),
            u16::from_be_bytes([*data.get(4)?, *data.get(5)?]),
            name(msg, start + 6)?
        ),
        6 => {
            let mname = name(msg, start)?;
            let rname_at = skip_name(msg, start)?;
            let rname = name(msg, rname_at)?;
            format!("{mname} {rname}")
        }
        _ => data.iter().map(|b| format!("{b:02x}")).collect(),
    })
}

/// The end of the (possibly compressed) name at `at`.
fn skip_name(msg: &[u8], mut at: usize) -> Option<usize> {
    loop {
        let len = *msg.get(at)?;
        match len {
            0 => return Some(at + 1),
            l if l & 0xc0 == 0xc0 => return Some(at + 2),
            l => at += 1 + usize::from(l),
        }
    }
}

/// The name at `at`, following compression pointers (at most 32, against loops).
fn name(msg: &[u8], mut at: usize) -> Option<String> {
    let mut out = String::new();
    for _ in 0..128 {
        let len = *msg.get(at)?;
        if len == 0 {
            if out.is_empty() {
                out.push('.');
            }
            return Some(out);
        }
        if len & 0xc0 == 0xc0 {
            at = usize::from(u16::from_be_bytes([len & 0x3f, *msg.get(at + 1)?]));
            continue;
        }
        let l = usize::from(len);
        out.push_str(&String::from_utf8_lossy(msg.get(at + 1..at + 1 + l)?));
        out.push('.');
        at += 1 + l;
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A response to `www.example.com A` (id 0x1234) with a CNAME pointing into the question
    /// by compression, then two A records, as a server would send it.
    fn response() -> Vec<u8> {
        let mut r = vec![0x12, 0x34, 0x81, 0x80, 0, 1, 0, 3, 0, 0, 0, 0];
        r.extend_from_slice(&query(0, "www.example.com", 1).unwrap()[12..]);
        // CNAME www.example.com -> web.example.com (name by pointer to offset 12)
        r.extend_from_slice(&[0xc0, 12, 0, 5, 0, 1, 0, 0, 0, 60, 0, 6]);
        r.extend_from_slice(&[3, b'w', b'e', b'b', 0xc0, 16]); // "web" + pointer to "example.com"
        for ip in [[192, 0, 2, 10], [192, 0, 2, 11]] {
            r.extend_from_slice(&[0xc0, 12, 0, 1, 0, 1, 0, 0, 0, 60, 0, 4]);
            r.extend_from_slice(&ip);
        }
        r
    }

    #[test]
    fn a_query_is_rfc_1035_wire_format() {
        let q = query(0xbeef, "example.com.", 28).unwrap();
        assert_eq!(
            q,
            [
                0xbe, 0xef, 1, 0, 0, 1, 0, 0, 0, 0, 0, 0, 7, b'e', b'x', b'a', b'm', b'p', b'l',
                b'e', 3, b'c', b'o', b'm', 0, 0, 28, 0, 1
            ]
        );
        assert_eq!(
            query(1, "a..b", 1).unwrap_err().to_string(),
            "\"a..b\" is not a domain name"
        );
        assert!(query(1, &"x".repeat(64), 1).is_err());
    }

    #[test]
    fn answers_of_the_asked_type_are_read_through_compression() {
        let r = response();
        let a = parse(&r, 0x1234, 1).unwrap();
        assert_eq!(a.rcode, 0);
        assert_eq!(a.records, ["192.0.2.10", "192.0.2.11"]);
        let c = parse(&r, 0x1234, 5).unwrap();
        assert_eq!(c.records, ["web.example.com."]);
        assert_eq!(
            parse(&r, 0x9999, 1).unwrap_err().to_string(),
            "response to another query"
        );
        // Every truncation is an error, never a panic.
        for n in 0..r.len() {
            let _ = parse(&r[..n], 0x1234, 1);
        }
        // A pointer loop ends.
        let mut looped = r.clone();
        looped.extend_from_slice(&[0xc0, (r.len() & 0xff) as u8]);
        assert!(name(&looped, r.len()).is_none());
    }
}
