//! A group's side of hand-overs and of the real-server role: VIPs parked on `lo` with ARP
//! for them quiet, and the new master's forwarding of connections it does not know (see
//! [`crate::handover`]).

use std::net::IpAddr;
use std::time::Instant;

use herd_core::config::vrrp::Vip;

use super::group::Group;
use super::io::{Dev, Io};
use super::member::{Member, Parked};
use super::now;
use crate::handover;
use crate::state::State;

/// A VIP as a host address, as it is parked on `lo`.
pub(crate) fn host_route(vip: Vip) -> Vip {
    Vip {
        addr: vip.addr,
        prefix: if vip.addr.is_ipv6() { 128 } else { 32 },
    }
}

impl<I: Io> Group<I> {
    /// Hand-overs whose window has closed end.
    pub async fn expire(&mut self, now: Instant) {
        for i in 0..self.members.len() {
            if matches!(self.members[i].parked, Some(Parked::Until(t)) if t <= now) {
                tracing::info!(instance = %self.members[i].cfg.name, "hand-over window closed: parked VIPs removed");
                self.unpark(i).await;
            }
            if self.members[i].forwarding.is_some_and(|(_, t)| t <= now) {
                tracing::info!(instance = %self.members[i].cfg.name, "hand-over window closed: forwarding ends");
                self.unforward(i).await;
            }
        }
    }

    /// The old master's side of a hand-over: the VIPs go on `lo` (and ARP for them goes
    /// quiet) before they leave the interface, so open connections carry on.
    pub async fn park(&mut self, i: usize) {
        let window = self.members[i].cfg.handover_window;
        if window.is_zero() || !self.put_on_lo(i).await {
            return;
        }
        self.members[i].parked = Some(Parked::Until(now() + window));
        tracing::info!(instance = %self.members[i].cfg.name, "hand-over: VIPs parked on lo for {window:?}, open connections carry on");
    }

    /// The real-server role follows the state: on as backup (after a hand-over, too: the
    /// VIPs simply stay on `lo`), off otherwise. Leaving it (fault, stop) is a hand-over of
    /// its own: connections to the VIP drain for the window.
    pub async fn real_server(&mut self, i: usize, to: State) {
        let name = self.members[i].cfg.name.clone();
        match (to, self.members[i].parked) {
            (State::Backup, Some(Parked::RealServer)) | (State::Master, _) => {}
            (State::Backup, parked) => {
                if parked.is_some() || self.put_on_lo(i).await {
                    self.members[i].parked = Some(Parked::RealServer);
                    tracing::info!(instance = %name, "real server: VIPs on lo, ARP for them quiet");
                }
            }
            (_, Some(Parked::RealServer)) => {
                let window = self.members[i].cfg.handover_window;
                if window.is_zero() {
                    self.unpark(i).await;
                } else {
                    self.members[i].parked = Some(Parked::Until(now() + window));
                }
                tracing::info!(instance = %name, "real server role ends");
            }
            (_, _) => {}
        }
    }

    /// Adds the member's VIPs to `lo` as host addresses, with ARP for them quiet (IPv4);
    /// whether that could be done.
    pub async fn put_on_lo(&mut self, i: usize) -> bool {
        let name = self.members[i].cfg.name.clone();
        // IPv6 needs no quieting: Linux answers neighbour solicitations only for addresses
        // on the interface they arrive on, never for those on `lo`.
        let quiet = if self.local.is_ipv6() {
            Ok(())
        } else {
            self.io.quiet_arp()
        };
        if let Err(e) = quiet {
            tracing::warn!(instance = %name, "cannot quiet ARP ({e}): the VIPs stay off lo");
            return false;
        }
        for vip in self.members[i].cfg.vips.clone() {
            if let Err(e) = self.io.add(Dev::Lo, host_route(vip)).await {
                tracing::warn!(instance = %name, "put VIP on lo: {e}");
            }
        }
        true
    }

    pub async fn unpark(&mut self, i: usize) {
        if self.members[i].parked.take().is_none() {
            return;
        }
        for vip in self.members[i].cfg.vips.clone() {
            if let Err(e) = self.io.del(Dev::Lo, host_route(vip)).await {
                tracing::warn!(instance = %self.members[i].cfg.name, "hand-over: {e}");
            }
        }
        if self.members.iter().all(|m| m.parked.is_none()) && self.io.arp_quiet() {
            if let Err(e) = self.io.release_arp() {
                tracing::warn!(interface = %self.iface, "hand-over: restore ARP settings: {e}");
            }
        }
    }

    /// The new master's side: packets of connections we do not know go to the old master.
    pub async fn forward(&mut self, i: usize, to: IpAddr) {
        let m = &self.members[i];
        let (window, name) = (m.cfg.handover_window, m.cfg.name.clone());
        if window.is_zero() || m.vips.is_empty() || to.is_ipv6() != self.local.is_ipv6() {
            return;
        }
        let table = self.table(m);
        let script = handover::ruleset(&table, &self.iface, &m.vips, to);
        match self.io.nft(script).await {
            Ok(()) => {
                self.members[i].forwarding = Some((to, now() + window));
                tracing::info!(instance = %name, "hand-over: connections of {to} stay there for {window:?}");
            }
            Err(e) => tracing::warn!(
                instance = %name,
                "hand-over: cannot forward to {to} ({e}); its open connections will be reset"
            ),
        }
    }

    pub async fn unforward(&mut self, i: usize) {
        if self.members[i].forwarding.take().is_none() {
            return;
        }
        let table = self.table(&self.members[i]);
        if let Err(e) = self.io.nft(handover::removal(&table)).await {
            tracing::warn!(instance = %self.members[i].cfg.name, "hand-over: remove {table}: {e}");
        }
    }

    /// The nftables table of a member's hand-over forwarding.
    pub fn table(&self, m: &Member) -> String {
        handover::table(self.index, m.cfg.vrid, self.local.is_ipv6())
    }
}
