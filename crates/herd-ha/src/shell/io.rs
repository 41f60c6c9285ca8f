//! Everything a group of instances does to the world, behind one narrow trait ([`Io`]), so
//! that the group's decisions can be tested with a fake; [`Sys`] is the real thing: the raw
//! VRRP socket of one interface and family, netlink, the announcer, nft, hooks and scripts.

use std::future::Future;
use std::io::{self, Read};
use std::net::{IpAddr, SocketAddr, SocketAddrV6};
use std::sync::atomic::AtomicBool;
use std::sync::Arc;
use std::time::Duration;

use herd_core::config::vrrp::{TrackScript, Vip};
use socket2::{Domain, InterfaceIndexOrAddress, Protocol, SockAddr, Socket, Type};
use tokio::io::unix::AsyncFd;

use crate::announce::Announcer;
use crate::handover::{self, ArpQuiet};
use crate::netlink::{Link, Netlink};
use crate::notify;
use crate::packet::{Ipv4Header, Malformed, GROUP_V4, GROUP_V6, IPPROTO_VRRP, TTL};
use crate::HaError;

/// Where an address goes: the group's interface, or `lo` (parked VIPs).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Dev {
    Iface,
    Lo,
}

/// A VRRP packet as the raw socket gave it: the payload and what the IP header said.
#[derive(Debug, Clone)]
pub(crate) struct Datagram {
    pub payload: Vec<u8>,
    pub src: IpAddr,
    pub dst: IpAddr,
    pub ttl: u8,
}

/// A background task (a track script) that ends when this is dropped.
#[derive(Debug, Default)]
pub(crate) struct Watch(Option<tokio::task::AbortHandle>);

impl Drop for Watch {
    fn drop(&mut self) {
        if let Some(h) = self.0.take() {
            h.abort();
        }
    }
}

/// What a group does to the world. Errors are the group's to log: a VIP that cannot be
/// added is no reason to stop advertising.
pub(crate) trait Io: Send + 'static {
    /// The next packets once there are some (at most 64, so a flood cannot starve timers).
    fn recv(&mut self) -> impl Future<Output = Vec<Result<Datagram, Malformed>>> + Send;
    /// Sends an encoded advert to `dst` from the group's address.
    fn send(&self, buf: &[u8], dst: IpAddr) -> io::Result<()>;
    /// Adds an address; one that is there already is fine.
    fn add(&self, dev: Dev, vip: Vip) -> impl Future<Output = io::Result<()>> + Send;
    /// Removes an address; one that is gone already is fine.
    fn del(&self, dev: Dev, vip: Vip) -> impl Future<Output = io::Result<()>> + Send;
    /// Gratuitous ARPs / unsolicited NAs for `vips`: `count` rounds `gap` apart, in the
    /// background.
    fn announce(&self, instance: &str, vips: Vec<IpAddr>, count: u32, gap: Duration);
    /// Runs a role-change hook: to its end if `wait` (stopping), else in the background.
    fn hook(
        &self,
        command: String,
        ev: notify::Event,
        timeout: Duration,
        wait: bool,
    ) -> impl Future<Output = ()> + Send;
    /// Runs an nftables script (hand-over forwarding).
    fn nft(&self, script: String) -> impl Future<Output = io::Result<()>> + Send;
    /// Quiets ARP for addresses on `lo` (idempotent).
    fn quiet_arp(&mut self) -> io::Result<()>;
    /// Whether ARP is quieted now.
    fn arp_quiet(&self) -> bool;
    /// Puts the ARP settings back.
    fn release_arp(&mut self) -> io::Result<()>;
    /// Whether an interface is up with carrier.
    fn link_up(&self, name: &str) -> bool;
    /// Runs a track script on its schedule, keeping `passing` up to date, until the
    /// [`Watch`] is dropped.
    fn watch(&self, instance: &str, script: TrackScript, passing: Arc<AtomicBool>) -> Watch;
}

/// The real I/O of one group.
pub(crate) struct Sys {
    iface: String,
    index: u32,
    lo: u32,
    local: IpAddr,
    sock: AsyncFd<Socket>,
    announcer: Arc<Announcer>,
    nl: Netlink,
    arp: ArpQuiet,
    buf: Vec<u8>,
}

/// An opened group: its I/O, its address and its interface's index.
pub(crate) struct Opened {
    pub sys: Sys,
    pub local: IpAddr,
    pub index: u32,
}

impl std::fmt::Debug for Sys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Sys")
            .field("iface", &self.iface)
            .field("local", &self.local)
            .finish_non_exhaustive()
    }
}

impl Sys {
    /// Looks the interface up and opens its sockets. `vips`: the VIPs of the group's instances,
    /// which are never the source of adverts.
    pub async fn open(
        nl: &Netlink,
        iface: &str,
        v6: bool,
        vips: &[IpAddr],
    ) -> Result<Opened, HaError> {
        let link = nl.link(iface).await.map_err(HaError::Interface)?;
        let lo = nl.link("lo").await.map_err(HaError::Interface)?.index;
        let local = source_address(iface, &link, v6, vips)?;
        let socket = |what, source| HaError::Socket {
            what,
            iface: iface.to_string(),
            source,
        };
        let sock = match local {
            IpAddr::V4(l) => open_v4(iface, link.index, l),
            IpAddr::V6(_) => open_v6(iface, link.index),
        }
        .map_err(|e| socket("VRRP", e))?;
        let announcer = Announcer::new(link.index, link.mac, !v6, v6)
            .map_err(|e| socket(if v6 { "neighbour advertisement" } else { "ARP" }, e))?;
        let sys = Sys {
            iface: iface.to_string(),
            index: link.index,
            lo,
            local,
            sock: crate::sys::register(sock).map_err(HaError::Reactor)?,
            announcer: Arc::new(announcer),
            nl: nl.clone(),
            arp: ArpQuiet::new(iface),
            buf: vec![0u8; 4096],
        };
        Ok(Opened {
            sys,
            local,
            index: link.index,
        })
    }

    fn dev(&self, dev: Dev) -> u32 {
        match dev {
            Dev::Iface => self.index,
            Dev::Lo => self.lo,
        }
    }
}

impl Io for Sys {
    async fn recv(&mut self) -> Vec<Result<Datagram, Malformed>> {
        let mut packets = Vec::new();
        let v6 = self.local.is_ipv6();
        let buf = &mut self.buf;
        match self.sock.readable().await {
            Ok(mut guard) => {
                while packets.len() < 64 {
                    match guard.try_io(|s| read(s.get_ref(), v6, buf)) {
                        Ok(Ok(p)) => packets.push(p),
                        Ok(Err(e)) => {
                            tracing::warn!(interface = %self.iface, "VRRP receive: {e}");
                            break;
                        }
                        Err(_would_block) => break,
                    }
                }
            }
            Err(e) => tracing::warn!(interface = %self.iface, "VRRP receive: {e}"),
        }
        packets
    }

    fn send(&self, buf: &[u8], dst: IpAddr) -> io::Result<()> {
        match (self.local, dst) {
            (IpAddr::V6(local), IpAddr::V6(d)) => {
                // The source must be the address the checksum covers: pinned per packet.
                let scope = if d.is_multicast() || d.is_unicast_link_local() {
                    self.index
                } else {
                    0
                };
                let to = SockAddr::from(SocketAddrV6::new(d, 0, 0, scope));
                let control = crate::ancillary::source(local, self.index);
                crate::sys::send_msg(self.sock.get_ref(), buf, &to, &control).map(|_| ())
            }
            _ => {
                let to = SockAddr::from(SocketAddr::new(dst, 0));
                self.sock.get_ref().send_to(buf, &to).map(|_| ())
            }
        }
    }

    fn add(&self, dev: Dev, vip: Vip) -> impl Future<Output = io::Result<()>> + Send {
        let (nl, index) = (self.nl.clone(), self.dev(dev));
        async move { nl.add(index, vip).await }
    }

    fn del(&self, dev: Dev, vip: Vip) -> impl Future<Output = io::Result<()>> + Send {
        let (nl, index) = (self.nl.clone(), self.dev(dev));
        async move { nl.del(index, vip).await }
    }

    fn announce(&self, instance: &str, vips: Vec<IpAddr>, count: u32, gap: Duration) {
        let name = instance.to_string();
        let announcer = self.announcer.clone();
        tokio::spawn(async move {
            for k in 0..count {
                if k > 0 {
                    tokio::time::sleep(gap).await;
                }
                if let Err(e) = announcer.announce(&vips) {
                    tracing::warn!(instance = %name, "gratuitous ARP: {e}");
                }
            }
        });
    }

    async fn hook(&self, command: String, ev: notify::Event, timeout: Duration, wait: bool) {
        let run = notify::run(command, ev, timeout);
        if wait {
            run.await;
        } else {
            tokio::spawn(run);
        }
    }

    async fn nft(&self, script: String) -> io::Result<()> {
        handover::nft(&script).await
    }

    fn quiet_arp(&mut self) -> io::Result<()> {
        self.arp.engage()
    }

    fn arp_quiet(&self) -> bool {
        self.arp.engaged()
    }

    fn release_arp(&mut self) -> io::Result<()> {
        self.arp.release()
    }

    fn link_up(&self, name: &str) -> bool {
        crate::netlink::link_up(name)
    }

    fn watch(&self, instance: &str, script: TrackScript, passing: Arc<AtomicBool>) -> Watch {
        Watch(Some(crate::track::spawn(
            instance.to_string(),
            script,
            passing,
        )))
    }
}

fn open_v4(iface: &str, index: u32, local: std::net::Ipv4Addr) -> io::Result<Socket> {
    let s = Socket::new(
        Domain::IPV4,
        Type::RAW.nonblocking().cloexec(),
        Some(Protocol::from(i32::from(IPPROTO_VRRP))),
    )?;
    s.bind_device(Some(iface.as_bytes()))?;
    s.join_multicast_v4_n(&GROUP_V4, &InterfaceIndexOrAddress::Index(index))?;
    s.set_multicast_if_v4(&local)?;
    s.set_multicast_ttl_v4(u32::from(TTL))?;
    s.set_ttl_v4(u32::from(TTL))?;
    s.set_multicast_loop_v4(false)?;
    Ok(s)
}

/// The IPv6 socket hands over payloads only: the hop limit and the destination come as
/// control messages ([`crate::ancillary`]).
fn open_v6(iface: &str, index: u32) -> io::Result<Socket> {
    let s = Socket::new(
        Domain::IPV6,
        Type::RAW.nonblocking().cloexec(),
        Some(Protocol::from(i32::from(IPPROTO_VRRP))),
    )?;
    s.bind_device(Some(iface.as_bytes()))?;
    s.join_multicast_v6(&GROUP_V6, index)?;
    s.set_multicast_if_v6(index)?;
    s.set_multicast_hops_v6(u32::from(TTL))?;
    s.set_unicast_hops_v6(u32::from(TTL))?;
    s.set_multicast_loop_v6(false)?;
    s.set_recv_hoplimit_v6(true)?;
    crate::sys::set_recv_pktinfo_v6(&s)?;
    Ok(s)
}

/// The address a group's adverts come from: the interface's first IPv4 address that is not
/// a VIP, or (IPv6, RFC 5798 §5.1.2.1) its link-local address.
pub(crate) fn source_address(
    iface: &str,
    link: &Link,
    v6: bool,
    vips: &[IpAddr],
) -> Result<IpAddr, HaError> {
    let found = link.addrs.iter().find_map(|(a, _)| match a {
        IpAddr::V4(_) if !v6 && !vips.contains(a) => Some(*a),
        IpAddr::V6(l) if v6 && l.is_unicast_link_local() && !vips.contains(a) => Some(*a),
        _ => None,
    });
    found.ok_or_else(|| HaError::NoSource {
        iface: iface.to_string(),
        what: if v6 {
            "an IPv6 link-local address (fe80::/10; is IPv6 disabled there, or addr_gen_mode none?)"
        } else {
            "an IPv4 address of its own"
        },
    })
}

/// Reads one packet. IPv4 raw sockets hand over the IP header; IPv6 ones the payload, with
/// the hop limit and destination as control messages.
fn read(sock: &Socket, v6: bool, buf: &mut [u8]) -> io::Result<Result<Datagram, Malformed>> {
    if !v6 {
        let n = (&mut &*sock).read(buf)?;
        let pkt = &buf[..n];
        return Ok(Ipv4Header::parse(pkt).map(|h| Datagram {
            payload: pkt[h.header_len..h.total_len].to_vec(),
            src: IpAddr::V4(h.src),
            dst: IpAddr::V4(h.dst),
            ttl: h.ttl,
        }));
    }
    let m = crate::sys::recv_msg(sock, buf, crate::ancillary::RECEIVE_SPACE)?;
    if m.truncated {
        return Ok(Err(Malformed::Length));
    }
    let Some(src) = m.from.as_socket_ipv6() else {
        return Ok(Err(Malformed::Short));
    };
    let seen = crate::ancillary::parse(&m.control);
    // Without the kernel's word on the hop limit the routed-packet check cannot be made.
    let (Some(ttl), Some(dst)) = (seen.hop_limit, seen.dst) else {
        return Ok(Err(Malformed::Ttl));
    };
    Ok(Ok(Datagram {
        payload: buf[..m.len].to_vec(),
        src: IpAddr::V6(*src.ip()),
        dst: IpAddr::V6(dst),
        ttl,
    }))
}
