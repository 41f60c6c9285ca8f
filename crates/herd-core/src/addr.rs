//! Client addresses as herd's limits count them.

use std::net::IpAddr;

/// The key a per-client limit counts a peer under: its IPv4 address (an IPv4-mapped IPv6
/// address counts as the IPv4 one), or the /64 of its IPv6 address — one host usually holds
/// a whole /64, and counting each of its addresses would give it 2^64 shares. The dashboard's
/// connection cap and login limiter and the agent's handshake budget all count by it.
pub fn client_key(ip: IpAddr) -> IpAddr {
    match ip.to_canonical() {
        IpAddr::V6(v6) => {
            let mut o = v6.octets();
            o[8..].fill(0);
            IpAddr::from(o)
        }
        v4 => v4,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ipv4_counts_by_address_ipv6_by_its_64() {
        let k = |s: &str| client_key(s.parse().unwrap()).to_string();
        assert_eq!(k("192.0.2.7"), "192.0.2.7");
        assert_eq!(k("::ffff:192.0.2.7"), "192.0.2.7");
        assert_eq!(k("2001:db8:1:2:aaaa::1"), "2001:db8:1:2::");
        assert_eq!(k("2001:db8:1:2:ffff::9"), "2001:db8:1:2::");
        assert_ne!(k("2001:db8:1:3::1"), k("2001:db8:1:2::1"));
    }
}
