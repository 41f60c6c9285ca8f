use super::*;
use proptest::prelude::*;

fn v4(s: &str) -> IpAddr {
    s.parse().unwrap()
}

fn advert(version: Version) -> Advert {
    Advert {
        version,
        vrid: 51,
        priority: 150,
        interval_cs: if version == Version::V2 { 100 } else { 10 },
        addrs: vec![v4("10.0.0.100"), v4("10.0.0.101")],
        password: None,
        trailer: None,
    }
}

const SRC: &str = "10.0.0.1";
const DST: &str = "224.0.0.18";

#[test]
fn v3_layout_and_round_trip() {
    let a = advert(Version::V3);
    let buf = a.encode(v4(SRC), v4(DST));
    assert_eq!(buf.len(), 8 + 2 * 4);
    assert_eq!(&buf[..6], &[0x31, 51, 150, 2, 0x00, 10]);
    assert_eq!(&buf[8..12], &[10, 0, 0, 100]);
    assert_eq!(checksum(Version::V3, &buf, v4(SRC), v4(DST)), 0);
    assert_eq!(Advert::parse(&buf, v4(SRC), v4(DST)), Ok(a));
}

#[test]
fn v3_checksum_covers_the_pseudo_header() {
    let buf = advert(Version::V3).encode(v4(SRC), v4(DST));
    assert_eq!(
        Advert::parse(&buf, v4("10.0.0.2"), v4(DST)),
        Err(Malformed::Checksum)
    );
}

#[test]
fn v2_layout_password_and_round_trip() {
    let mut a = advert(Version::V2);
    a.password = Some(*b"secret\0\0");
    let buf = a.encode(v4(SRC), v4(DST));
    assert_eq!(buf.len(), 8 + 2 * 4 + 8);
    assert_eq!(&buf[..6], &[0x21, 51, 150, 2, 1, 1]);
    assert_eq!(&buf[16..], b"secret\0\0");
    // v2's checksum does not cover the IP addresses of the packet.
    assert_eq!(Advert::parse(&buf, v4("10.9.9.9"), v4(DST)), Ok(a));
}

#[test]
fn v6_round_trip_keeps_only_v6_addresses() {
    let src: IpAddr = "fe80::1".parse().unwrap();
    let dst = IpAddr::V6(GROUP_V6);
    let mut a = advert(Version::V3);
    a.addrs.push("fd00::100".parse().unwrap());
    let buf = a.encode(src, dst);
    assert_eq!(buf.len(), 8 + 16);
    let back = Advert::parse(&buf, src, dst).unwrap();
    assert_eq!(back.addrs, vec!["fd00::100".parse::<IpAddr>().unwrap()]);
    assert_eq!(
        Advert::parse(&advert(Version::V2).encode(src, dst), src, dst),
        Err(Malformed::Length)
    );
}

#[test]
fn trailer_round_trip() {
    let mut a = advert(Version::V3);
    a.trailer = Some(Trailer {
        seq: 0x0102_0304_0506_0708,
        mac: [7; 16],
    });
    let buf = a.encode(v4(SRC), v4(DST));
    assert_eq!(buf.len(), 16 + TRAILER_LEN);
    assert_eq!(Advert::parse(&buf, v4(SRC), v4(DST)), Ok(a));
}

/// Re-checksums a tampered v3 message so that only the tampering is judged.
fn fix(mut buf: Vec<u8>) -> Vec<u8> {
    buf[6] = 0;
    buf[7] = 0;
    let sum = checksum(Version::V3, &buf, v4(SRC), v4(DST));
    buf[6..8].copy_from_slice(&sum.to_be_bytes());
    buf
}

#[test]
fn every_kind_of_bad_packet_has_its_reason() {
    let good = advert(Version::V3).encode(v4(SRC), v4(DST));
    let check = |buf: &[u8], want: Malformed| {
        assert_eq!(
            Advert::parse(buf, v4(SRC), v4(DST)),
            Err(want),
            "{buf:02x?}"
        );
    };
    check(&good[..7], Malformed::Short);
    check(&good[..12], Malformed::Short);
    let mut b = good.clone();
    b[0] = 0x41;
    check(&fix(b), Malformed::Version);
    let mut b = good.clone();
    b[0] = 0x32;
    check(&fix(b), Malformed::Type);
    let mut b = good.clone();
    b[2] ^= 1;
    check(&b, Malformed::Checksum);
    let mut b = good.clone();
    b.extend_from_slice(&[0; 4]);
    check(&fix(b), Malformed::Length);
    let mut b = good.clone();
    b[4] = 0;
    b[5] = 0;
    check(&fix(b), Malformed::Interval);
    let mut v2 = advert(Version::V2).encode(v4(SRC), v4(DST));
    v2[4] = 2;
    v2[6] = 0;
    v2[7] = 0;
    let sum = checksum(Version::V2, &v2, v4(SRC), v4(DST));
    v2[6..8].copy_from_slice(&sum.to_be_bytes());
    check(&v2, Malformed::Auth);
}

#[test]
fn ipv4_header() {
    let mut h = [0u8; 24];
    h[0] = 0x45;
    h[2..4].copy_from_slice(&24u16.to_be_bytes());
    h[8] = 255;
    h[9] = 112;
    h[12..16].copy_from_slice(&[10, 0, 0, 1]);
    h[16..20].copy_from_slice(&[224, 0, 0, 18]);
    let p = Ipv4Header::parse(&h).unwrap();
    assert_eq!(
        (p.ttl, p.protocol, p.header_len, p.total_len),
        (255, 112, 20, 24)
    );
    assert_eq!(p.src, Ipv4Addr::new(10, 0, 0, 1));
    assert_eq!(Ipv4Header::parse(&h[..19]), Err(Malformed::Short));
    h[0] = 0x44;
    assert_eq!(Ipv4Header::parse(&h), Err(Malformed::Short));
}

fn arb_advert() -> impl Strategy<Value = Advert> {
    (
        any::<bool>(),
        any::<u8>(),
        any::<u8>(),
        1u16..=0x0fff,
        proptest::collection::vec(any::<[u8; 4]>(), 0..20),
        proptest::option::of(any::<[u8; 8]>()),
        proptest::option::of((any::<u64>(), any::<[u8; 16]>())),
    )
        .prop_map(|(v2, vrid, priority, interval, addrs, pw, tr)| {
            let version = if v2 { Version::V2 } else { Version::V3 };
            Advert {
                version,
                vrid,
                priority,
                interval_cs: if v2 {
                    (interval % 255 + 1) * 100
                } else {
                    interval
                },
                addrs: addrs.into_iter().map(|a| IpAddr::V4(a.into())).collect(),
                password: if v2 { pw } else { None },
                trailer: if v2 {
                    None
                } else {
                    tr.map(|(seq, mac)| Trailer { seq, mac })
                },
            }
        })
}

proptest! {
    #[test]
    fn encode_then_parse_is_identity(a in arb_advert()) {
        let buf = a.encode(v4(SRC), v4(DST));
        prop_assert_eq!(Advert::parse(&buf, v4(SRC), v4(DST)), Ok(a));
    }

    #[test]
    fn arbitrary_bytes_never_panic(buf in proptest::collection::vec(any::<u8>(), 0..200)) {
        if let Ok(a) = Advert::parse(&buf, v4(SRC), v4(DST)) {
            // What parses re-encodes to a packet that parses to the same thing.
            let again = a.encode(v4(SRC), v4(DST));
            prop_assert_eq!(Advert::parse(&again, v4(SRC), v4(DST)), Ok(a));
        }
        let _ = Ipv4Header::parse(&buf);
    }
}
