//! herd's authentication for VRRP groups made only of herd directors.
//!
//! VRRPv3 dropped authentication (RFC 5798 §9); on a LAN that is not trusted, anyone can then
//! claim the VIP with priority 255. herd can append a trailer to its v3 adverts (see
//! [`crate::packet::Trailer`]): a sequence number and HMAC-SHA256, truncated to 128 bits, over
//! the sender's address and the advert (checksum zeroed). Receivers drop adverts without a valid
//! trailer and adverts whose sequence number is not above the last one seen from that sender,
//! so a captured advert cannot be replayed. Sequence numbers are the sender's wall clock in
//! microseconds (kept increasing), so they keep growing across restarts of the sender.
//!
//! keepalived does not speak this trailer: a group with keepalived in it runs without it.

use ring::hmac;
use std::collections::HashMap;
use std::net::IpAddr;

use crate::packet::{Advert, Trailer};

/// A group's shared secret.
#[derive(Debug, Clone)]
pub struct Key(hmac::Key);

impl Key {
    pub fn new(secret: &[u8]) -> Key {
        Key(hmac::Key::new(hmac::HMAC_SHA256, secret))
    }

    fn mac(&self, adv: &Advert, seq: u64, src: IpAddr, dst: IpAddr) -> [u8; 16] {
        let mut unsigned = adv.clone();
        unsigned.trailer = Some(Trailer { seq, mac: [0; 16] });
        let mut bytes = unsigned.encode(src, dst);
        bytes[6] = 0;
        bytes[7] = 0;
        let mut ctx = hmac::Context::with_key(&self.0);
        match src {
            IpAddr::V4(a) => ctx.update(&a.octets()),
            IpAddr::V6(a) => ctx.update(&a.octets()),
        }
        ctx.update(&bytes);
        let tag = ctx.sign();
        let mut mac = [0; 16];
        mac.copy_from_slice(&tag.as_ref()[..16]);
        mac
    }

    /// Adds the trailer with `seq` to an advert that `src` sends.
    pub fn sign(&self, adv: &mut Advert, seq: u64, src: IpAddr, dst: IpAddr) {
        let mac = self.mac(adv, seq, src, dst);
        adv.trailer = Some(Trailer { seq, mac });
    }

    /// Whether the advert carries a valid trailer for `src`; returns its sequence number.
    pub fn verify(&self, adv: &Advert, src: IpAddr, dst: IpAddr) -> Option<u64> {
        let t = adv.trailer?;
        let want = self.mac(adv, t.seq, src, dst);
        // Compare in constant time.
        let diff = want.iter().zip(t.mac).fold(0u8, |d, (a, b)| d | (a ^ b));
        (diff == 0).then_some(t.seq)
    }
}

/// The sender's side: sequence numbers from the wall clock, always increasing.
#[derive(Debug, Default)]
pub struct Sequence(u64);

impl Sequence {
    /// The next sequence number, given the wall clock in microseconds since the Unix epoch
    /// (the caller reads the clock: this crate does no I/O).
    pub fn advance(&mut self, wall_us: u64) -> u64 {
        self.0 = wall_us.max(self.0 + 1);
        self.0
    }
}

/// The receiver's side: the highest sequence number seen per sender.
#[derive(Debug, Default)]
pub struct Replay(HashMap<IpAddr, u64>);

impl Replay {
    /// Accepts `seq` from `src` if it is above every one seen from `src` before.
    pub fn accept(&mut self, src: IpAddr, seq: u64) -> bool {
        let last = self.0.entry(src).or_insert(0);
        if seq > *last {
            *last = seq;
            true
        } else {
            false
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::packet::Version;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    fn adv() -> Advert {
        Advert {
            version: Version::V3,
            vrid: 7,
            priority: 100,
            interval_cs: 10,
            addrs: vec![ip("10.0.0.100")],
            password: None,
            trailer: None,
        }
    }

    #[test]
    fn signed_adverts_verify_after_the_wire() {
        let (src, dst) = (ip("10.0.0.1"), ip("224.0.0.18"));
        let key = Key::new(b"s3cret");
        let mut a = adv();
        key.sign(&mut a, 42, src, dst);
        let wire = a.encode(src, dst);
        let back = Advert::parse(&wire, src, dst).unwrap();
        assert_eq!(key.verify(&back, src, dst), Some(42));
        // Wrong key, other sender, tampered priority, no trailer: all refused.
        assert_eq!(Key::new(b"other").verify(&back, src, dst), None);
        assert_eq!(key.verify(&back, ip("10.0.0.2"), dst), None);
        let mut t = back.clone();
        t.priority = 255;
        assert_eq!(key.verify(&t, src, dst), None);
        assert_eq!(key.verify(&adv(), src, dst), None);
    }

    #[test]
    fn replays_are_refused() {
        let mut r = Replay::default();
        assert!(r.accept(ip("10.0.0.1"), 5));
        assert!(!r.accept(ip("10.0.0.1"), 5));
        assert!(!r.accept(ip("10.0.0.1"), 4));
        assert!(r.accept(ip("10.0.0.2"), 1));
        assert!(r.accept(ip("10.0.0.1"), 6));
    }

    #[test]
    fn sequence_numbers_grow() {
        let wall = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_micros() as u64;
        let mut s = Sequence::default();
        let a = s.advance(wall);
        let b = s.advance(wall);
        assert!(b > a && a > 1_600_000_000_000_000);
    }
}
