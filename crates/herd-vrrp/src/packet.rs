//! VRRP advertisements on the wire: version 3 (RFC 5798, IPv4 and IPv6) and version 2
//! (RFC 3768, IPv4), plus herd's optional authentication trailer.
//!
//! ```text
//!  0                   1                   2                   3
//!  0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1
//! |Version| Type  | Virtual Rtr ID|   Priority    | Count IPvX Addr|
//! v3: |(rsvd) |     Max Adver Int     |          Checksum             |
//! v2: |   Auth Type   |   Adver Int   |          Checksum             |
//! |                       IPvX Address(es)                        |
//! v2: |                 Authentication Data (8 bytes)                 |
//! ```
//!
//! The v3 checksum covers an IP pseudo-header (RFC 5798 §5.2.8); v2's covers the VRRP message
//! only. Parsing never panics: every way a packet can be wrong is a [`Malformed`] reason, which
//! the I/O shell counts.

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

/// IP protocol number of VRRP.
pub const IPPROTO_VRRP: u8 = 112;
/// IPv4 multicast group of VRRP.
pub const GROUP_V4: Ipv4Addr = Ipv4Addr::new(224, 0, 0, 18);
/// IPv6 multicast group of VRRP.
pub const GROUP_V6: Ipv6Addr = Ipv6Addr::new(0xff02, 0, 0, 0, 0, 0, 0, 0x12);
/// Adverts are sent with, and must arrive with, this TTL / hop limit (RFC 5798 §5.1.1.3).
pub const TTL: u8 = 255;
/// Length of herd's authentication trailer: magic (4), sequence number (8), HMAC (16).
pub const TRAILER_LEN: usize = 28;
/// First bytes of herd's trailer.
pub const TRAILER_MAGIC: [u8; 4] = *b"hrd1";

/// The protocol version of a VRRP instance.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Version {
    V2,
    V3,
}

impl Version {
    pub fn number(self) -> u8 {
        match self {
            Version::V2 => 2,
            Version::V3 => 3,
        }
    }
}

/// herd's authentication trailer, appended to a v3 advert between herd directors: a sequence
/// number that only grows (anti-replay) and a truncated HMAC-SHA256 (see [`crate::auth`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Trailer {
    pub seq: u64,
    pub mac: [u8; 16],
}

/// One VRRP advertisement.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Advert {
    pub version: Version,
    pub vrid: u8,
    /// 0 = the master resigns; 255 = the address owner.
    pub priority: u8,
    /// Advertisement interval in centiseconds. v2 carries whole seconds, so a v2 advert's
    /// interval is a multiple of 100.
    pub interval_cs: u16,
    /// The virtual addresses; all of the family of the packet.
    pub addrs: Vec<IpAddr>,
    /// v2 only: simple-text password (authentication type 1), as keepalived's `auth_type PASS`.
    pub password: Option<[u8; 8]>,
    /// v3 only: herd's HMAC trailer.
    pub trailer: Option<Trailer>,
}

/// Why a received packet was dropped.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Malformed {
    /// Shorter than its header or than its address count says.
    Short,
    /// Version field neither 2 nor 3, or not the version the instance runs.
    Version,
    /// Type field is not 1 (advertisement).
    Type,
    /// Bad checksum.
    Checksum,
    /// Length does not match the address count (extra bytes that are no trailer), or v2 on IPv6.
    Length,
    /// Arrived with a TTL / hop limit other than 255: it was routed.
    Ttl,
    /// No instance with this virtual router id on the interface.
    Vrid,
    /// Authentication missing, wrong, unexpected or replayed.
    Auth,
    /// v2: advert interval differs from ours (RFC 3768 §7.1); v3: interval 0.
    Interval,
    /// Unicast mode: the sender is not one of the instance's `unicast-peers` (IPv4; keepalived's
    /// `check_unicast_src`, always on in herd).
    Peer,
}

impl Malformed {
    pub const ALL: [Malformed; 10] = [
        Malformed::Short,
        Malformed::Version,
        Malformed::Type,
        Malformed::Checksum,
        Malformed::Length,
        Malformed::Ttl,
        Malformed::Vrid,
        Malformed::Auth,
        Malformed::Interval,
        Malformed::Peer,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Malformed::Short => "short",
            Malformed::Version => "version",
            Malformed::Type => "type",
            Malformed::Checksum => "checksum",
            Malformed::Length => "length",
            Malformed::Ttl => "ttl",
            Malformed::Vrid => "vrid",
            Malformed::Auth => "auth",
            Malformed::Interval => "interval",
            Malformed::Peer => "peer",
        }
    }
}

impl fmt::Display for Malformed {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Internet checksum (RFC 1071) of `data`, continuing from `sum`.
fn sum16(mut sum: u32, data: &[u8]) -> u32 {
    let mut chunks = data.chunks_exact(2);
    for c in &mut chunks {
        sum += u32::from(u16::from_be_bytes([c[0], c[1]]));
    }
    if let [last] = chunks.remainder() {
        sum += u32::from(*last) << 8;
    }
    sum
}

fn fold(mut sum: u32) -> u16 {
    while sum >> 16 != 0 {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    !(sum as u16)
}

fn addr_sum(sum: u32, a: IpAddr) -> u32 {
    match a {
        IpAddr::V4(a) => sum16(sum, &a.octets()),
        IpAddr::V6(a) => sum16(sum, &a.octets()),
    }
}

/// The checksum of a VRRP message; v3 includes the pseudo-header of `src` and `dst`.
pub fn checksum(version: Version, msg: &[u8], src: IpAddr, dst: IpAddr) -> u16 {
    let mut sum = 0;
    if version == Version::V3 {
        // Both pseudo-headers (IPv4's zero/protocol/length, IPv6's length/zero/next header)
        // add up to the same 16-bit words.
        sum = addr_sum(sum, src);
        sum = addr_sum(sum, dst);
        sum += u32::from(IPPROTO_VRRP);
        sum += msg.len() as u32 & 0xffff;
        sum += (msg.len() as u32) >> 16;
    }
    fold(sum16(sum, msg))
}

impl Advert {
    /// Parses a VRRP message (the IP payload) that came from `src` to `dst`.
    pub fn parse(buf: &[u8], src: IpAddr, dst: IpAddr) -> Result<Advert, Malformed> {
        if buf.len() < 8 {
            return Err(Malformed::Short);
        }
        let version = match buf[0] >> 4 {
            2 => Version::V2,
            3 => Version::V3,
            _ => return Err(Malformed::Version),
        };
        if buf[0] & 0x0f != 1 {
            return Err(Malformed::Type);
        }
        let v6 = src.is_ipv6();
        if v6 && version == Version::V2 {
            return Err(Malformed::Length);
        }
        let alen = if v6 { 16 } else { 4 };
        let count = usize::from(buf[3]);
        let body = 8 + count * alen;
        let tail = if version == Version::V2 { 8 } else { 0 };
        if buf.len() < body + tail {
            return Err(Malformed::Short);
        }
        let extra = buf.len() - body - tail;
        let has_trailer =
            version == Version::V3 && extra == TRAILER_LEN && buf[body..body + 4] == TRAILER_MAGIC;
        if extra != 0 && !has_trailer {
            return Err(Malformed::Length);
        }
        if checksum(version, buf, src, dst) != 0 {
            return Err(Malformed::Checksum);
        }
        let mut addrs = Vec::with_capacity(count);
        for a in buf[8..body].chunks_exact(alen) {
            addrs.push(if v6 {
                let mut b = [0; 16];
                b.copy_from_slice(a);
                IpAddr::V6(Ipv6Addr::from(b))
            } else {
                IpAddr::V4(Ipv4Addr::new(a[0], a[1], a[2], a[3]))
            });
        }
        let (interval_cs, password) = match version {
            Version::V3 => (u16::from_be_bytes([buf[4] & 0x0f, buf[5]]), None),
            Version::V2 => {
                let password = match buf[4] {
                    0 => None,
                    1 => {
                        let mut p = [0; 8];
                        p.copy_from_slice(&buf[body..body + 8]);
                        Some(p)
                    }
                    // Type 2 (IP Authentication Header) was removed from the protocol.
                    _ => return Err(Malformed::Auth),
                };
                (u16::from(buf[5]) * 100, password)
            }
        };
        if interval_cs == 0 {
            return Err(Malformed::Interval);
        }
        let trailer = has_trailer.then(|| {
            let t = &buf[body + 4..];
            let mut seq = [0; 8];
            seq.copy_from_slice(&t[..8]);
            let mut mac = [0; 16];
            mac.copy_from_slice(&t[8..24]);
            Trailer {
                seq: u64::from_be_bytes(seq),
                mac,
            }
        });
        Ok(Advert {
            version,
            vrid: buf[1],
            priority: buf[2],
            interval_cs,
            addrs,
            password,
            trailer,
        })
    }

    /// The message to send from `src` to `dst`, checksum included. Addresses of the other
    /// family than `src` are left out, and at most 255 are carried.
    pub fn encode(&self, src: IpAddr, dst: IpAddr) -> Vec<u8> {
        let v6 = src.is_ipv6();
        let addrs: Vec<IpAddr> = self
            .addrs
            .iter()
            .copied()
            .filter(|a| a.is_ipv6() == v6)
            .take(255)
            .collect();
        let mut buf = Vec::with_capacity(8 + addrs.len() * 16 + TRAILER_LEN);
        buf.push(self.version.number() << 4 | 1);
        buf.push(self.vrid);
        buf.push(self.priority);
        buf.push(addrs.len() as u8);
        match self.version {
            Version::V3 => {
                let i = self.interval_cs.min(0x0fff);
                buf.extend_from_slice(&i.to_be_bytes());
            }
            Version::V2 => {
                buf.push(u8::from(self.password.is_some()));
                buf.push((self.interval_cs / 100).clamp(1, 255) as u8);
            }
        }
        buf.extend_from_slice(&[0, 0]);
        for a in &addrs {
            match a {
                IpAddr::V4(a) => buf.extend_from_slice(&a.octets()),
                IpAddr::V6(a) => buf.extend_from_slice(&a.octets()),
            }
        }
        match self.version {
            Version::V2 => buf.extend_from_slice(&self.password.unwrap_or_default()),
            Version::V3 => {
                if let Some(t) = &self.trailer {
                    buf.extend_from_slice(&TRAILER_MAGIC);
                    buf.extend_from_slice(&t.seq.to_be_bytes());
                    buf.extend_from_slice(&t.mac);
                }
            }
        }
        let sum = checksum(self.version, &buf, src, dst);
        buf[6..8].copy_from_slice(&sum.to_be_bytes());
        buf
    }
}

/// What the IPv4 header of a received raw packet says; the payload starts at `header_len`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Ipv4Header {
    pub src: Ipv4Addr,
    pub dst: Ipv4Addr,
    pub ttl: u8,
    pub protocol: u8,
    pub header_len: usize,
    pub total_len: usize,
}

impl Ipv4Header {
    /// Parses the header that an IPv4 raw socket hands over with each packet.
    pub fn parse(buf: &[u8]) -> Result<Ipv4Header, Malformed> {
        if buf.len() < 20 {
            return Err(Malformed::Short);
        }
        if buf[0] >> 4 != 4 {
            return Err(Malformed::Version);
        }
        let header_len = usize::from(buf[0] & 0x0f) * 4;
        // The kernel reports the total length as received; a raw socket may hand over fewer
        // bytes than that if our buffer was short.
        let total_len = usize::from(u16::from_be_bytes([buf[2], buf[3]]));
        if header_len < 20 || buf.len() < header_len || total_len < header_len {
            return Err(Malformed::Short);
        }
        Ok(Ipv4Header {
            src: Ipv4Addr::new(buf[12], buf[13], buf[14], buf[15]),
            dst: Ipv4Addr::new(buf[16], buf[17], buf[18], buf[19]),
            ttl: buf[8],
            protocol: buf[9],
            header_len,
            total_len: total_len.min(buf.len()),
        })
    }
}

#[cfg(test)]
mod tests;
