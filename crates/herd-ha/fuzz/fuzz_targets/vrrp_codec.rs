//! The VRRP codec on arbitrary bytes: parsing never panics, and whatever parses survives
//! encode → parse unchanged (parse → serialize → parse round trip).
//!
//! The first input byte picks the case: bit 0 = IPv6 (else IPv4) source and destination;
//! bit 1 = fix the checksum up before parsing, so that the fuzzer reaches past the checksum
//! check into the body. The rest is the VRRP message (and, for `Ipv4Header`, a raw packet).
#![no_main]

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use herd_vrrp::packet::{checksum, Advert, Ipv4Header, Version};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Some((&mode, rest)) = data.split_first() else {
        return;
    };
    let (src, dst) = if mode & 1 == 0 {
        (
            IpAddr::V4(Ipv4Addr::new(10, 0, 0, 1)),
            IpAddr::V4(Ipv4Addr::new(224, 0, 0, 18)),
        )
    } else {
        (
            IpAddr::V6(Ipv6Addr::new(0xfe80, 0, 0, 0, 0, 0, 0, 1)),
            IpAddr::V6(Ipv6Addr::new(0xff02, 0, 0, 0, 0, 0, 0, 0x12)),
        )
    };
    if let Ok(h) = Ipv4Header::parse(rest) {
        assert!(h.header_len >= 20 && h.header_len <= h.total_len.max(h.header_len));
        assert!(h.total_len <= rest.len());
    }
    let mut buf = rest.to_vec();
    if mode & 2 != 0 && buf.len() >= 8 {
        let version = if buf[0] >> 4 == 2 {
            Version::V2
        } else {
            Version::V3
        };
        buf[6..8].copy_from_slice(&[0, 0]);
        let sum = checksum(version, &buf, src, dst);
        buf[6..8].copy_from_slice(&sum.to_be_bytes());
    }
    if let Ok(advert) = Advert::parse(&buf, src, dst) {
        let encoded = advert.encode(src, dst);
        let again = match Advert::parse(&encoded, src, dst) {
            Ok(a) => a,
            Err(e) => panic!("{advert:?} encodes to {encoded:02x?}, which does not parse: {e}"),
        };
        assert_eq!(advert, again, "round trip through {encoded:02x?}");
        assert_eq!(again.encode(src, dst), encoded, "encoding is deterministic");
    }
});
