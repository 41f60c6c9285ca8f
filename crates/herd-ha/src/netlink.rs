//! Interfaces and addresses over rtnetlink: what an interface is (index, MAC, addresses) and
//! adding or removing the virtual addresses.

use std::io;
use std::net::IpAddr;

use futures_util::TryStreamExt;
use herd_core::config::vrrp::Vip;
use rtnetlink::packet_route::address::{AddressAttribute, AddressFlags, AddressMessage};
use rtnetlink::packet_route::link::LinkAttribute;
use rtnetlink::{AddressMessageBuilder, Handle};

/// What VRRP needs to know about an interface.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Link {
    pub index: u32,
    pub mac: [u8; 6],
    /// Addresses in the kernel's order: the primary address of each subnet first.
    pub addrs: Vec<(IpAddr, u8)>,
}

fn nl_err(what: &str, e: rtnetlink::Error) -> io::Error {
    match e {
        rtnetlink::Error::NetlinkError(m) => {
            let io = m.to_io();
            io::Error::new(io.kind(), format!("{what}: {io}"))
        }
        other => io::Error::other(format!("{what}: {other}")),
    }
}

/// A netlink connection, driven by a task on the current runtime.
#[derive(Debug, Clone)]
pub struct Netlink(Handle);

impl Netlink {
    pub fn connect() -> io::Result<Netlink> {
        let (conn, handle, _) = rtnetlink::new_connection()?;
        tokio::spawn(conn);
        Ok(Netlink(handle))
    }

    /// Looks an interface up by name.
    pub async fn link(&self, name: &str) -> io::Result<Link> {
        let mut links = self.0.link().get().match_name(name.to_string()).execute();
        let msg = links
            .try_next()
            .await
            .map_err(|e| nl_err(&format!("interface {name}"), e))?
            .ok_or_else(|| {
                io::Error::new(io::ErrorKind::NotFound, format!("no interface {name}"))
            })?;
        let index = msg.header.index;
        let mut mac = [0; 6];
        for a in &msg.attributes {
            if let LinkAttribute::Address(m) = a {
                if m.len() == 6 {
                    mac.copy_from_slice(m);
                }
            }
        }
        let mut addrs = Vec::new();
        let mut list = self
            .0
            .address()
            .get()
            .set_link_index_filter(index)
            .execute();
        while let Some(m) = list
            .try_next()
            .await
            .map_err(|e| nl_err(&format!("addresses of {name}"), e))?
        {
            let prefix = m.header.prefix_len;
            let addr = m.attributes.iter().find_map(|a| match a {
                AddressAttribute::Local(ip) => Some(*ip),
                _ => None,
            });
            let addr = addr.or_else(|| {
                m.attributes.iter().find_map(|a| match a {
                    AddressAttribute::Address(ip) => Some(*ip),
                    _ => None,
                })
            });
            if let Some(a) = addr {
                addrs.push((a, prefix));
            }
        }
        Ok(Link { index, mac, addrs })
    }

    fn message(index: u32, vip: Vip) -> AddressMessage {
        match vip.addr {
            IpAddr::V4(a) => AddressMessageBuilder::<std::net::Ipv4Addr>::new()
                .index(index)
                .address(a, vip.prefix)
                .build(),
            IpAddr::V6(a) => AddressMessageBuilder::<std::net::Ipv6Addr>::new()
                .index(index)
                .address(a, vip.prefix)
                .build(),
        }
    }

    /// Adds a virtual address; one that is there already is fine. IPv6 addresses skip
    /// duplicate address detection: the VIP moves between directors by design.
    pub async fn add(&self, index: u32, vip: Vip) -> io::Result<()> {
        let mut req = self.0.address().add(index, vip.addr, vip.prefix);
        if vip.addr.is_ipv6() {
            req.message_mut()
                .attributes
                .push(AddressAttribute::Flags(AddressFlags::Nodad));
        }
        match req.execute().await {
            Ok(()) => Ok(()),
            Err(rtnetlink::Error::NetlinkError(m)) if m.raw_code() == -libc::EEXIST => Ok(()),
            Err(e) => Err(nl_err(&format!("add {vip}"), e)),
        }
    }

    /// Removes a virtual address; one that is gone already is fine.
    pub async fn del(&self, index: u32, vip: Vip) -> io::Result<()> {
        match self
            .0
            .address()
            .del(Self::message(index, vip))
            .execute()
            .await
        {
            Ok(()) => Ok(()),
            Err(rtnetlink::Error::NetlinkError(m))
                if m.raw_code() == -libc::EADDRNOTAVAIL || m.raw_code() == -libc::ENOENT =>
            {
                Ok(())
            }
            Err(e) => Err(nl_err(&format!("remove {vip}"), e)),
        }
    }
}

/// Whether an interface is up with carrier (`/sys/class/net/IF/operstate`); interfaces that do
/// not report a state ("unknown", as `lo` and some tunnels) count as up.
pub fn link_up(name: &str) -> bool {
    match std::fs::read_to_string(format!("/sys/class/net/{name}/operstate")) {
        Ok(s) => matches!(s.trim(), "up" | "unknown"),
        Err(_) => false,
    }
}
