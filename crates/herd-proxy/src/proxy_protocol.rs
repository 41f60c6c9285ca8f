//! PROXY protocol version 2 headers (haproxy's `proxy-protocol.txt`, section 2.2), sent to a
//! real server ahead of the client's bytes so that it sees the client's address.

use std::net::SocketAddr;

const SIGNATURE: [u8; 12] = *b"\r\n\r\n\0\r\nQUIT\n";

/// Transport of the proxied connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transport {
    Stream,
    Datagram,
}

/// Encodes a v2 `PROXY` header for a connection from `client` to `local` (the VIP) into
/// `out`, replacing its contents. Mixed address families (cannot happen for one connection)
/// are encoded as IPv6 with IPv4-mapped addresses.
pub fn encode_v2(client: SocketAddr, local: SocketAddr, transport: Transport, out: &mut Vec<u8>) {
    out.clear();
    out.extend_from_slice(&SIGNATURE);
    // Version 2, command PROXY.
    out.push(0x21);
    let proto = match transport {
        Transport::Stream => 0x1,
        Transport::Datagram => 0x2,
    };
    match (client, local) {
        (SocketAddr::V4(c), SocketAddr::V4(l)) => {
            out.push(0x10 | proto);
            out.extend_from_slice(&12u16.to_be_bytes());
            out.extend_from_slice(&c.ip().octets());
            out.extend_from_slice(&l.ip().octets());
            out.extend_from_slice(&c.port().to_be_bytes());
            out.extend_from_slice(&l.port().to_be_bytes());
        }
        _ => {
            let v6 = |a: SocketAddr| match a {
                SocketAddr::V4(v4) => v4.ip().to_ipv6_mapped(),
                SocketAddr::V6(v6) => *v6.ip(),
            };
            out.push(0x20 | proto);
            out.extend_from_slice(&36u16.to_be_bytes());
            out.extend_from_slice(&v6(client).octets());
            out.extend_from_slice(&v6(local).octets());
            out.extend_from_slice(&client.port().to_be_bytes());
            out.extend_from_slice(&local.port().to_be_bytes());
        }
    }
}

/// Decodes a v2 header at the start of `buf`: the client and local addresses and the header
/// length. Used by tests and by herd's own backends; returns `None` for anything malformed.
pub fn decode_v2(buf: &[u8]) -> Option<(SocketAddr, SocketAddr, usize)> {
    if buf.len() < 16 || buf[..12] != SIGNATURE || buf[12] >> 4 != 2 {
        return None;
    }
    let len = usize::from(u16::from_be_bytes([buf[14], buf[15]]));
    let body = buf.get(16..16 + len)?;
    let port = |b: &[u8]| u16::from_be_bytes([b[0], b[1]]);
    match buf[13] >> 4 {
        0x1 if len >= 12 => {
            let c: [u8; 4] = body[0..4].try_into().ok()?;
            let l: [u8; 4] = body[4..8].try_into().ok()?;
            Some((
                SocketAddr::from((c, port(&body[8..10]))),
                SocketAddr::from((l, port(&body[10..12]))),
                16 + len,
            ))
        }
        0x2 if len >= 36 => {
            let c: [u8; 16] = body[0..16].try_into().ok()?;
            let l: [u8; 16] = body[16..32].try_into().ok()?;
            Some((
                SocketAddr::from((c, port(&body[32..34]))),
                SocketAddr::from((l, port(&body[34..36]))),
                16 + len,
            ))
        }
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn v4_header_layout() {
        let mut out = Vec::new();
        encode_v2(
            "10.0.0.1:40000".parse().unwrap(),
            "127.0.0.100:80".parse().unwrap(),
            Transport::Stream,
            &mut out,
        );
        assert_eq!(out.len(), 28);
        assert_eq!(&out[..12], b"\r\n\r\n\0\r\nQUIT\n");
        assert_eq!(out[12], 0x21);
        assert_eq!(out[13], 0x11);
        assert_eq!(&out[14..16], &[0, 12]);
        assert_eq!(&out[16..20], &[10, 0, 0, 1]);
        assert_eq!(&out[24..26], &40000u16.to_be_bytes());
    }

    #[test]
    fn round_trip_v4_v6() {
        for (c, l) in [
            ("10.0.0.1:1", "127.0.0.1:2"),
            ("[2001:db8::1]:3", "[::1]:4"),
        ] {
            let (c, l): (SocketAddr, SocketAddr) = (c.parse().unwrap(), l.parse().unwrap());
            let mut out = Vec::new();
            encode_v2(c, l, Transport::Stream, &mut out);
            out.extend_from_slice(b"GET /");
            let (dc, dl, n) = decode_v2(&out).unwrap();
            assert_eq!((dc, dl), (c, l));
            assert_eq!(&out[n..], b"GET /");
        }
    }

    #[test]
    fn garbage_is_not_a_header() {
        assert_eq!(decode_v2(b"GET / HTTP/1.1\r\n\r\n"), None);
        let mut out = Vec::new();
        encode_v2(
            "10.0.0.1:1".parse().unwrap(),
            "10.0.0.2:2".parse().unwrap(),
            Transport::Stream,
            &mut out,
        );
        assert_eq!(decode_v2(&out[..20]), None);
    }
}
