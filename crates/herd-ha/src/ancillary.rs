//! IPv6 ancillary data of VRRP's raw socket. An IPv6 raw socket hands over the payload only,
//! so what the checks need from the IPv6 header comes as control messages: the hop limit
//! (`IPV6_HOPLIMIT`, the routed-packet check) and the destination address (`IPV6_PKTINFO`,
//! part of the checksum's pseudo-header). Sending, one `IPV6_PKTINFO` message fixes the
//! source address to the link-local one the checksum was computed with.
//!
//! Control messages are plain bytes in the kernel's layout (`cmsghdr`, then the data, each
//! message padded to the alignment of `size_t`); they are read and built here without
//! `unsafe`, and a malformed buffer yields nothing rather than a panic.

use std::mem::{offset_of, size_of};
use std::net::Ipv6Addr;

/// Bytes before a message's data (`CMSG_LEN(0)`).
const HEADER: usize = size_of::<libc::cmsghdr>();
/// Width of `cmsg_len`, the first field.
const LEN_WIDTH: usize = offset_of!(libc::cmsghdr, cmsg_level);
const ALIGN: usize = size_of::<usize>();
/// `struct in6_pktinfo`: the address, then the interface index.
const PKTINFO_LEN: usize = 20;

/// Room a control buffer needs for what [`parse`] reads: two messages of at most 20 bytes.
pub const RECEIVE_SPACE: usize = 2 * (HEADER + 24);

const fn align(n: usize) -> usize {
    (n + ALIGN - 1) & !(ALIGN - 1)
}

fn native(bytes: &[u8]) -> usize {
    match *bytes {
        [a, b, c, d] => u32::from_ne_bytes([a, b, c, d]) as usize,
        [a, b, c, d, e, f, g, h] => u64::from_ne_bytes([a, b, c, d, e, f, g, h]) as usize,
        _ => 0,
    }
}

fn int(bytes: &[u8]) -> i32 {
    i32::from_ne_bytes([bytes[0], bytes[1], bytes[2], bytes[3]])
}

/// What the kernel said about a received IPv6 packet.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Received {
    pub hop_limit: Option<u8>,
    pub dst: Option<Ipv6Addr>,
}

/// Reads the hop limit and destination out of a received control buffer (the
/// `msg_controllen` bytes `recvmsg` filled in). Unknown messages are skipped; a message whose
/// length runs past the buffer ends the walk.
pub fn parse(control: &[u8]) -> Received {
    let mut out = Received::default();
    let mut at = 0;
    while at + HEADER <= control.len() {
        let len = native(&control[at..at + LEN_WIDTH]);
        let level = int(&control[at + LEN_WIDTH..]);
        let kind = int(&control[at + LEN_WIDTH + 4..]);
        if len < HEADER || len > control.len() - at {
            break;
        }
        let data = &control[at + HEADER..at + len];
        match (level, kind) {
            (libc::IPPROTO_IPV6, libc::IPV6_HOPLIMIT) if data.len() >= 4 => {
                out.hop_limit = u8::try_from(int(data)).ok();
            }
            (libc::IPPROTO_IPV6, libc::IPV6_PKTINFO) if data.len() >= PKTINFO_LEN => {
                let mut a = [0u8; 16];
                a.copy_from_slice(&data[..16]);
                out.dst = Some(Ipv6Addr::from(a));
            }
            _ => {}
        }
        at += align(len);
    }
    out
}

/// One message of `level`/`kind` around `data`, padded (`CMSG_SPACE`).
fn message(level: i32, kind: i32, data: &[u8]) -> Vec<u8> {
    let len = HEADER + data.len();
    let mut m = vec![0u8; align(len)];
    m[..LEN_WIDTH].copy_from_slice(&len.to_ne_bytes()[..LEN_WIDTH]);
    m[LEN_WIDTH..LEN_WIDTH + 4].copy_from_slice(&level.to_ne_bytes());
    m[LEN_WIDTH + 4..LEN_WIDTH + 8].copy_from_slice(&kind.to_ne_bytes());
    m[HEADER..len].copy_from_slice(data);
    m
}

/// The control message that sends a packet from `src` out of interface `ifindex`.
pub fn source(src: Ipv6Addr, ifindex: u32) -> Vec<u8> {
    let mut info = [0u8; PKTINFO_LEN];
    info[..16].copy_from_slice(&src.octets());
    info[16..].copy_from_slice(&ifindex.to_ne_bytes());
    message(libc::IPPROTO_IPV6, libc::IPV6_PKTINFO, &info)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hop(h: i32) -> Vec<u8> {
        message(libc::IPPROTO_IPV6, libc::IPV6_HOPLIMIT, &h.to_ne_bytes())
    }

    #[test]
    fn reads_both_messages_in_either_order() {
        let dst: Ipv6Addr = "ff02::12".parse().unwrap();
        let mut c = source(dst, 7);
        c.extend(hop(255));
        assert_eq!(
            parse(&c),
            Received {
                hop_limit: Some(255),
                dst: Some(dst)
            }
        );
        let mut c = hop(1);
        c.extend(source(dst, 7));
        assert_eq!(parse(&c).hop_limit, Some(1));
        assert_eq!(parse(&c).dst, Some(dst));
        assert!(c.len() <= RECEIVE_SPACE);
    }

    #[test]
    fn skips_unknown_and_stops_at_garbage() {
        let mut c = message(libc::SOL_SOCKET, 1, &[1, 2, 3]);
        c.extend(hop(255));
        assert_eq!(parse(&c).hop_limit, Some(255));
        // A length past the end, a length below the header, a short buffer, a hop limit
        // out of range: nothing, and no panic.
        let mut bad = hop(255);
        bad[..LEN_WIDTH].copy_from_slice(&1000usize.to_ne_bytes()[..LEN_WIDTH]);
        assert_eq!(parse(&bad), Received::default());
        bad[..LEN_WIDTH].copy_from_slice(&3usize.to_ne_bytes()[..LEN_WIDTH]);
        assert_eq!(parse(&bad), Received::default());
        assert_eq!(parse(&hop(255)[..HEADER - 1]), Received::default());
        assert_eq!(parse(&hop(256)).hop_limit, None);
        assert_eq!(parse(&[]), Received::default());
    }

    #[test]
    fn any_bytes_are_safe() {
        // Every prefix and every single-byte corruption of a valid buffer.
        let mut c = source("fe80::1".parse().unwrap(), 2);
        c.extend(hop(255));
        for n in 0..=c.len() {
            let _ = parse(&c[..n]);
        }
        for i in 0..c.len() {
            for v in [0u8, 1, 0x7f, 0xff] {
                let mut d = c.clone();
                d[i] = v;
                let _ = parse(&d);
            }
        }
    }
}
