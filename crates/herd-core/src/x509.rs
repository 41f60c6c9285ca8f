//! Just enough DER to read a certificate: its validity (the health monitor's certificate
//! expiry checks), and who it names: serial number, subject common name, subject-alternative
//! DNS names and URIs (where the agent keeps the role).
//!
//! The reader treats certificates as untrusted bytes: every length is checked, and anything
//! unexpected is `None`, never a panic. No I/O.

/// What herd reads from a certificate.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CertInfo {
    /// Lower-case hex, leading zero bytes dropped.
    pub serial: String,
    pub common_name: Option<String>,
    pub dns_names: Vec<String>,
    pub uris: Vec<String>,
    /// Unix seconds.
    pub not_before: i64,
    pub not_after: i64,
}

const SEQUENCE: u8 = 0x30;
const SET: u8 = 0x31;
const INTEGER: u8 = 0x02;
const OID: u8 = 0x06;
const BOOLEAN: u8 = 0x01;
const OCTET_STRING: u8 = 0x04;
const CONTEXT_0: u8 = 0xa0;
const CONTEXT_3: u8 = 0xa3;
const SAN_DNS: u8 = 0x82;
const SAN_URI: u8 = 0x86;
const OID_CN: &[u8] = &[0x55, 0x04, 0x03];
const OID_SAN: &[u8] = &[0x55, 0x1d, 0x11];

/// A cursor over DER tag-length-value items.
struct Der<'a>(&'a [u8]);

impl<'a> Der<'a> {
    fn next(&mut self) -> Option<(u8, &'a [u8])> {
        let (&tag, rest) = self.0.split_first()?;
        let (&first, rest) = rest.split_first()?;
        let (len, rest) = if first < 0x80 {
            (usize::from(first), rest)
        } else {
            let n = usize::from(first & 0x7f);
            if n == 0 || n > 4 || rest.len() < n {
                return None;
            }
            let len = rest[..n]
                .iter()
                .fold(0usize, |acc, &b| (acc << 8) | usize::from(b));
            (len, &rest[n..])
        };
        if rest.len() < len {
            return None;
        }
        let (content, rest) = rest.split_at(len);
        self.0 = rest;
        Some((tag, content))
    }

    fn expect(&mut self, tag: u8) -> Option<&'a [u8]> {
        match self.next()? {
            (t, c) if t == tag => Some(c),
            _ => None,
        }
    }

    fn peek_tag(&self) -> Option<u8> {
        self.0.first().copied()
    }
}

/// Reads a DER certificate; `None` if it is not one.
pub fn parse(der: &[u8]) -> Option<CertInfo> {
    let cert = Der(der).expect(SEQUENCE)?;
    let mut tbs = Der(Der(cert).expect(SEQUENCE)?);
    if tbs.peek_tag() == Some(CONTEXT_0) {
        tbs.next()?;
    }
    let serial = tbs.expect(INTEGER)?;
    let serial = serial_hex(serial);
    tbs.expect(SEQUENCE)?; // signature algorithm
    tbs.expect(SEQUENCE)?; // issuer
    let mut validity = Der(tbs.expect(SEQUENCE)?);
    let not_before = time(validity.next()?)?;
    let not_after = time(validity.next()?)?;
    let subject = tbs.expect(SEQUENCE)?;
    tbs.expect(SEQUENCE)?; // subject public key info
    let mut info = CertInfo {
        serial,
        common_name: common_name(subject),
        not_before,
        not_after,
        ..CertInfo::default()
    };
    while let Some((tag, content)) = tbs.next() {
        if tag == CONTEXT_3 {
            read_extensions(Der(content).expect(SEQUENCE)?, &mut info)?;
        }
    }
    Some(info)
}

/// Lower-case hex of a DER integer's magnitude (the sign byte dropped).
pub fn serial_hex(bytes: &[u8]) -> String {
    let start = bytes
        .iter()
        .position(|&b| b != 0)
        .unwrap_or(bytes.len().saturating_sub(1));
    bytes[start..].iter().map(|b| format!("{b:02x}")).collect()
}

fn common_name(subject: &[u8]) -> Option<String> {
    let mut rdns = Der(subject);
    while let Some((SET, set)) = rdns.next() {
        let mut atvs = Der(set);
        while let Some((SEQUENCE, atv)) = atvs.next() {
            let mut atv = Der(atv);
            if atv.expect(OID)? == OID_CN {
                let (_, value) = atv.next()?;
                return String::from_utf8(value.to_vec()).ok();
            }
        }
    }
    None
}

fn read_extensions(exts: &[u8], info: &mut CertInfo) -> Option<()> {
    let mut exts = Der(exts);
    while let Some((tag, ext)) = exts.next() {
        if tag != SEQUENCE {
            return None;
        }
        let mut ext = Der(ext);
        let oid = ext.expect(OID)?;
        if ext.peek_tag() == Some(BOOLEAN) {
            ext.next()?;
        }
        let value = ext.expect(OCTET_STRING)?;
        if oid != OID_SAN {
            continue;
        }
        let mut names = Der(Der(value).expect(SEQUENCE)?);
        while let Some((tag, name)) = names.next() {
            let Ok(name) = std::str::from_utf8(name) else {
                continue;
            };
            match tag {
                SAN_DNS => info.dns_names.push(name.to_string()),
                SAN_URI => info.uris.push(name.to_string()),
                _ => {}
            }
        }
    }
    Some(())
}

/// The `notAfter` of a certificate, in Unix seconds, reading no further than the validity.
pub fn not_after(der: &[u8]) -> Option<i64> {
    let cert = Der(der).expect(SEQUENCE)?;
    let mut tbs = Der(Der(cert).expect(SEQUENCE)?);
    if tbs.peek_tag() == Some(CONTEXT_0) {
        tbs.next()?;
    }
    for _ in 0..3 {
        tbs.next()?; // serial, signature algorithm, issuer
    }
    let mut validity = Der(tbs.expect(SEQUENCE)?);
    validity.next()?;
    time(validity.next()?)
}

/// UTCTime (`YYMMDDHHMMSSZ`, tag 0x17) or GeneralizedTime (`YYYYMMDDHHMMSSZ`, tag 0x18) in
/// Unix seconds.
fn time((tag, t): (u8, &[u8])) -> Option<i64> {
    let s = std::str::from_utf8(t).ok()?.strip_suffix('Z')?;
    let (year, rest) = match tag {
        0x17 => {
            let yy: i64 = s.get(..2)?.parse().ok()?;
            (if yy >= 50 { 1900 + yy } else { 2000 + yy }, s.get(2..)?)
        }
        0x18 => (s.get(..4)?.parse().ok()?, s.get(4..)?),
        _ => return None,
    };
    if rest.len() != 10 || !rest.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let num = |i: usize| -> Option<i64> { rest.get(i..i + 2)?.parse().ok() };
    let (mo, d, h, mi, se) = (num(0)?, num(2)?, num(4)?, num(6)?, num(8)?);
    Some(days_from_civil(year, mo, d)? * 86400 + h * 3600 + mi * 60 + se)
}

/// Days since 1970-01-01 of a proleptic Gregorian date (H. Hinnant's algorithm).
fn days_from_civil(y: i64, m: i64, d: i64) -> Option<i64> {
    if !(1..=12).contains(&m) || !(1..=31).contains(&d) {
        return None;
    }
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    Some(era * 146_097 + doe - 719_468)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn truncated_or_garbage_input_is_none_not_a_panic() {
        assert_eq!(parse(&[]), None);
        assert_eq!(parse(&[0x30, 0x84, 0xff, 0xff, 0xff, 0xff]), None);
        assert_eq!(parse(&[0x30, 0x03, 0x30, 0x01]), None);
        for n in 0..64u8 {
            let junk: Vec<u8> = (0..n).map(|i| i.wrapping_mul(37) ^ 0x30).collect();
            let _ = parse(&junk);
        }
    }

    #[test]
    fn dates_count_days_like_unix_time() {
        assert_eq!(days_from_civil(1970, 1, 1), Some(0));
        assert_eq!(days_from_civil(2000, 3, 1), Some(11_017));
        assert_eq!(days_from_civil(2026, 11, 22), Some(20_779));
        assert_eq!(
            time((0x17, b"261122093000Z")),
            Some(20_779 * 86400 + 9 * 3600 + 1800)
        );
        assert_eq!(
            time((0x18, b"20261122093000Z")),
            time((0x17, b"261122093000Z"))
        );
        assert_eq!(time((0x17, b"491231235959Z")), Some(2_524_607_999));
        assert!(time((0x17, b"261322093000Z")).is_none());
        assert!(time((0x17, b"2611220930")).is_none());
    }

    #[test]
    fn serials_drop_leading_zeros() {
        assert_eq!(serial_hex(&[0x00, 0x8f, 0x01]), "8f01");
        assert_eq!(serial_hex(&[0x00]), "00");
    }
}
