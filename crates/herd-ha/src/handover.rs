//! Hand-over without losing connections (planned failover, preemption, shutdown).
//!
//! VRRP moves an address, not connections: when the VIP moves, the new master's kernel
//! answers the old master's connections with resets. When the old master is alive, herd
//! lets those connections finish where they are, for the instance's `handover-window`:
//!
//! - **The old master parks its VIPs**: it adds each as a /32 on `lo` before removing it from
//!   the LAN interface, and sets `arp_ignore=1` and `arp_announce=2` there (the seeds'
//!   `lvs-r.sh` real-server trick), so it still accepts packets for the VIPs but no longer
//!   claims them in ARP. Its listeners and open connections carry on.
//! - **The new master forwards what it does not know**: an nftables table in the prerouting
//!   hook sends TCP packets for a VIP that belong to no connection of its own (conntrack:
//!   new but not a SYN, or a stray FIN/RST) to the old master's own address with `dup to`,
//!   unchanged (the VIP stays the destination), and drops the original. New connections
//!   (SYNs) stay with the new master.
//!
//! When the window closes, the old master takes the VIPs off `lo` and restores the two
//! sysctls, and the new master deletes its table: connections still open then are reset, as
//! without a hand-over. Needs `nft` (nftables) on the new master; without it the hand-over
//! still happens, only the old master's connections are reset as before.

use std::io;
use std::net::IpAddr;
use std::path::PathBuf;
use std::process::Stdio;

use tokio::io::AsyncWriteExt;
use tokio::process::Command;

/// `arp_ignore` and `arp_announce` of one interface, set for parking and put back after.
#[derive(Debug)]
pub struct ArpQuiet {
    iface: String,
    saved: Option<(String, String)>,
}

impl ArpQuiet {
    pub fn new(iface: &str) -> ArpQuiet {
        ArpQuiet {
            iface: iface.to_string(),
            saved: None,
        }
    }

    fn path(&self, key: &str) -> PathBuf {
        PathBuf::from(format!("/proc/sys/net/ipv4/conf/{}/{key}", self.iface))
    }

    /// Whether the interface is quieted now.
    pub fn engaged(&self) -> bool {
        self.saved.is_some()
    }

    /// The interface answers ARP only for its own addresses (not for VIPs parked on `lo`) and
    /// sources its ARP requests from them.
    pub fn engage(&mut self) -> io::Result<()> {
        if self.saved.is_some() {
            return Ok(());
        }
        let read = |k: &str| -> io::Result<String> {
            let p = self.path(k);
            std::fs::read_to_string(&p)
                .map(|s| s.trim().to_string())
                .map_err(|e| io::Error::new(e.kind(), format!("{}: {e}", p.display())))
        };
        let saved = (read("arp_ignore")?, read("arp_announce")?);
        self.write("arp_ignore", "1")?;
        self.write("arp_announce", "2")?;
        self.saved = Some(saved);
        Ok(())
    }

    fn write(&self, key: &str, value: &str) -> io::Result<()> {
        let p = self.path(key);
        std::fs::write(&p, value)
            .map_err(|e| io::Error::new(e.kind(), format!("{}: {e}", p.display())))
    }

    /// Puts the saved values back.
    pub fn release(&mut self) -> io::Result<()> {
        match self.saved.take() {
            Some((ignore, announce)) => {
                self.write("arp_ignore", &ignore)?;
                self.write("arp_announce", &announce)
            }
            None => Ok(()),
        }
    }
}

/// The nftables table that forwards one instance's strays, with its family (`ip` or `ip6`:
/// an IPv4 and an IPv6 instance may share a VRID).
pub fn table(index: u32, vrid: u8, v6: bool) -> String {
    let family = if v6 { "ip6" } else { "ip" };
    format!("{family} herd_handover_{index}_{vrid}")
}

/// The ruleset that replaces `table` (atomically): TCP packets that arrive on `iface` for one
/// of `vips` and belong to no connection of ours go, unchanged, to `to` (all of one family).
pub fn ruleset(table: &str, iface: &str, vips: &[IpAddr], to: IpAddr) -> String {
    let set = vips
        .iter()
        .map(IpAddr::to_string)
        .collect::<Vec<_>>()
        .join(", ");
    let daddr = if to.is_ipv6() {
        "ip6 daddr"
    } else {
        "ip daddr"
    };
    format!(
        "add table {table}\n\
         delete table {table}\n\
         table {table} {{\n\
         \tchain prerouting {{\n\
         \t\ttype filter hook prerouting priority mangle; policy accept;\n\
         \t\tiifname \"{iface}\" {daddr} {{ {set} }} tcp flags & syn == 0 ct state new dup to {to} device \"{iface}\" drop\n\
         \t\tiifname \"{iface}\" {daddr} {{ {set} }} tcp flags & (fin | rst) != 0 ct state invalid dup to {to} device \"{iface}\" drop\n\
         \t}}\n\
         }}\n"
    )
}

/// What deletes `table`, whether or not it exists.
pub fn removal(table: &str) -> String {
    format!("add table {table}\ndelete table {table}\n")
}

/// Runs `nft -f -` with `script`.
pub async fn nft(script: &str) -> io::Result<()> {
    let mut child = Command::new("nft")
        .args(["-f", "-"])
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .map_err(|e| io::Error::new(e.kind(), format!("nft: {e}")))?;
    if let Some(mut stdin) = child.stdin.take() {
        stdin.write_all(script.as_bytes()).await?;
    }
    let out = child.wait_with_output().await?;
    if out.status.success() {
        Ok(())
    } else {
        Err(io::Error::other(format!(
            "nft: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        )))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_ruleset_forwards_strays_of_every_vip() {
        let ip = |s: &str| s.parse::<IpAddr>().unwrap();
        let r = ruleset(
            &table(3, 61, false),
            "eth0",
            &[ip("10.0.0.100"), ip("10.0.0.101")],
            ip("10.0.0.1"),
        );
        assert!(
            r.starts_with("add table ip herd_handover_3_61\ndelete table ip herd_handover_3_61\n")
        );
        assert!(r.contains("ip daddr { 10.0.0.100, 10.0.0.101 } tcp flags & syn == 0 ct state new dup to 10.0.0.1 device \"eth0\" drop"));
        assert!(r.contains("ct state invalid dup to 10.0.0.1"));
        let r = ruleset(
            &table(3, 61, true),
            "eth0",
            &[ip("fd00::100")],
            ip("fe80::1"),
        );
        assert!(r.starts_with("add table ip6 herd_handover_3_61\n"));
        assert!(r.contains("ip6 daddr { fd00::100 } tcp flags & syn == 0 ct state new dup to fe80::1 device \"eth0\" drop"));
        assert_eq!(
            removal(&table(3, 61, true)),
            "add table ip6 herd_handover_3_61\ndelete table ip6 herd_handover_3_61\n"
        );
    }
}
