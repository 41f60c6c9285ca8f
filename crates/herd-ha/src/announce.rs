//! Telling the LAN who owns a virtual address now: gratuitous ARP (IPv4) and unsolicited
//! neighbour advertisements (IPv6, RFC 4861 §7.2.6), sent by a new master so that switches and
//! neighbour caches move to it at once instead of after their entries expire.

use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddrV6};

use socket2::{Domain, Protocol, SockAddr, Socket, Type};

const ETH_P_ARP: u16 = 0x0806;
const BROADCAST: [u8; 6] = [0xff; 6];
/// All-nodes multicast group.
const ALL_NODES: Ipv6Addr = Ipv6Addr::new(0xff02, 0, 0, 0, 0, 0, 0, 1);

/// A gratuitous ARP request for `ip` from `mac` (the ARP packet; the kernel adds the
/// Ethernet header). Requests rather than replies: every Linux neighbour cache that holds an
/// entry for `ip` updates it from a request, and some devices ignore unsolicited replies.
pub fn garp(mac: [u8; 6], ip: Ipv4Addr) -> [u8; 28] {
    let mut p = [0u8; 28];
    p[0..2].copy_from_slice(&1u16.to_be_bytes()); // Ethernet
    p[2..4].copy_from_slice(&0x0800u16.to_be_bytes()); // IPv4
    p[4] = 6;
    p[5] = 4;
    p[6..8].copy_from_slice(&1u16.to_be_bytes()); // request
    p[8..14].copy_from_slice(&mac);
    p[14..18].copy_from_slice(&ip.octets());
    p[18..24].copy_from_slice(&BROADCAST);
    p[24..28].copy_from_slice(&ip.octets());
    p
}

/// An unsolicited neighbour advertisement for `target` with override set and our link-layer
/// address as option (the kernel fills in the ICMPv6 checksum).
pub fn unsolicited_na(mac: [u8; 6], target: Ipv6Addr) -> [u8; 32] {
    let mut p = [0u8; 32];
    p[0] = 136; // neighbour advertisement
    p[4] = 0x20; // override
    p[8..24].copy_from_slice(&target.octets());
    p[24] = 2; // target link-layer address
    p[25] = 1; // length in units of 8 bytes
    p[26..32].copy_from_slice(&mac);
    p
}

/// Sockets to announce addresses on one interface.
#[derive(Debug)]
pub struct Announcer {
    ifindex: u32,
    mac: [u8; 6],
    arp: Option<Socket>,
    icmp6: Option<Socket>,
}

impl Announcer {
    pub fn new(ifindex: u32, mac: [u8; 6], v4: bool, v6: bool) -> io::Result<Announcer> {
        let arp = if v4 {
            let s = Socket::new(
                Domain::PACKET,
                Type::DGRAM.nonblocking().cloexec(),
                Some(Protocol::from(i32::from(ETH_P_ARP.to_be()))),
            )?;
            // We only send: a zero receive buffer keeps the LAN's ARP traffic from queueing.
            s.set_recv_buffer_size(0)?;
            Some(s)
        } else {
            None
        };
        let icmp6 = if v6 {
            let s = Socket::new(
                Domain::IPV6,
                Type::RAW.nonblocking().cloexec(),
                Some(Protocol::ICMPV6),
            )?;
            s.set_multicast_hops_v6(255)?;
            s.set_unicast_hops_v6(255)?;
            s.set_multicast_if_v6(ifindex)?;
            s.set_multicast_loop_v6(false)?;
            s.set_recv_buffer_size(0)?;
            Some(s)
        } else {
            None
        };
        Ok(Announcer {
            ifindex,
            mac,
            arp,
            icmp6,
        })
    }

    /// Announces every address once.
    pub fn announce(&self, addrs: &[IpAddr]) -> io::Result<()> {
        for a in addrs {
            match (a, &self.arp, &self.icmp6) {
                (IpAddr::V4(ip), Some(s), _) => {
                    let to = crate::sys::link_addr(self.ifindex, ETH_P_ARP, BROADCAST);
                    s.send_to(&garp(self.mac, *ip), &to)?;
                }
                (IpAddr::V6(ip), _, Some(s)) => {
                    let to = SockAddr::from(SocketAddrV6::new(ALL_NODES, 0, 0, self.ifindex));
                    s.send_to(&unsolicited_na(self.mac, *ip), &to)?;
                }
                _ => {}
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn garp_layout() {
        let mac = [2, 0, 0, 0, 0, 1];
        let p = garp(mac, Ipv4Addr::new(10, 0, 0, 100));
        assert_eq!(&p[..8], &[0, 1, 8, 0, 6, 4, 0, 1]);
        assert_eq!(&p[8..14], &mac);
        assert_eq!(&p[14..18], &[10, 0, 0, 100]);
        assert_eq!(&p[24..28], &[10, 0, 0, 100]);
    }

    #[test]
    fn na_layout() {
        let mac = [2, 0, 0, 0, 0, 1];
        let p = unsolicited_na(mac, "fd00::100".parse().unwrap());
        assert_eq!(p[0], 136);
        assert_eq!(p[4], 0x20);
        assert_eq!(&p[8..10], &[0xfd, 0]);
        assert_eq!(&p[24..26], &[2, 1]);
        assert_eq!(&p[26..], &mac);
    }
}
