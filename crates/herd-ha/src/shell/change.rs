//! A group's part of an apply: instances that go, change in place, or start.

use std::time::Duration;

use herd_core::config::vrrp::{Vip, VrrpInstance};

use super::group::{Change, Group};
use super::io::{Dev, Io};
use super::member::{params, Member, Parked, Prepared};
use super::park::host_route;
use super::{lock, now};
use crate::handover;
use crate::state::{Action, State};

impl<I: Io> Group<I> {
    /// Carries out a [`Change`]: removals first (a VRID they free can be taken by an
    /// addition), then changes in place, then additions.
    pub async fn change(&mut self, c: Change) {
        for name in &c.remove {
            if let Some(i) = self.position(name) {
                self.remove(i).await;
            }
        }
        for p in c.update {
            if let Some(i) = self.position(&p.cfg.name) {
                self.update(i, p).await;
            }
        }
        self.start_members(c.add).await;
        self.publish();
    }

    /// New instances start: what a crashed predecessor may have left is cleared first (a
    /// backup must not answer for the VIP), then each starts as backup (or as master, for an
    /// address owner).
    pub async fn start_members(&mut self, add: Vec<Prepared>) {
        let first = self.members.len();
        let local = self.local;
        self.members
            .extend(add.into_iter().map(|p| Member::new(p, local)));
        // Hand-over tables a crashed predecessor left: one nft run for all of them.
        let stale: String = self.members[first..]
            .iter()
            .filter(|m| !m.cfg.handover_window.is_zero())
            .map(|m| handover::removal(&self.table(m)))
            .collect();
        if !stale.is_empty() {
            if let Err(e) = self.io.nft(stale).await {
                tracing::debug!(interface = %self.iface, "hand-over tables: {e}");
            }
        }
        for i in first..self.members.len() {
            for vip in self.members[i].cfg.vips.clone() {
                if let Err(e) = self.io.del(Dev::Iface, vip).await {
                    tracing::warn!(instance = %self.members[i].cfg.name, "{e}");
                }
                if let Err(e) = self.io.del(Dev::Lo, host_route(vip)).await {
                    tracing::warn!(instance = %self.members[i].cfg.name, "{e}");
                }
            }
            self.watch_scripts(i);
            let actions = self.members[i].vm.start(now());
            self.perform(i, actions).await;
            tracing::info!(instance = %self.members[i].cfg.name, interface = %self.iface, "vrrp instance started");
        }
    }

    /// Starts the tasks of a member's track scripts (their results start passing).
    fn watch_scripts(&mut self, i: usize) {
        let m = &self.members[i];
        let watches = m
            .cfg
            .track_scripts
            .iter()
            .zip(&m.scripts)
            .map(|(s, passing)| self.io.watch(&m.cfg.name, s.clone(), passing.clone()))
            .collect();
        self.members[i].watches = watches;
    }

    /// An instance goes: it resigns as on stop, and its VIPs go at once (nothing of it stays
    /// for a hand-over window), its scripts end and `herd ha status` forgets it.
    async fn remove(&mut self, i: usize) {
        self.members[i].cfg.handover_window = Duration::ZERO;
        let actions = self.members[i].vm.stop();
        self.perform(i, actions).await;
        self.unforward(i).await;
        self.unpark(i).await;
        let m = self.members.remove(i);
        lock(&self.board).by_name.remove(m.name());
        tracing::info!(instance = %m.name(), "vrrp instance removed");
    }

    /// An instance's configuration changes in place: the role stays, and every change
    /// takes effect at once (see [`crate::state::Instance::reconfigure`]): VIPs come and go
    /// (added before the advert that lists them and their announcement), scripts restart
    /// if they changed, tracking is looked at again with the new weights.
    async fn update(&mut self, i: usize, p: Prepared) {
        let old = self.members[i].take(p);
        if old.track_scripts != self.members[i].cfg.track_scripts {
            self.watch_scripts(i);
        }
        let (added, removed) = vip_changes(&old, &self.members[i].cfg);
        self.move_vips(i, &added, &removed).await;
        if old.real_server != self.members[i].cfg.real_server {
            self.real_server_changed(i).await;
        }
        let own = self.io.link_up(&self.iface);
        let failing = lock(&self.failing).clone();
        let (tracking, priority, fault) = self.tracking_of(i, &failing);
        let now = now();
        let m = &mut self.members[i];
        m.tracking = tracking;
        let mut actions = m.vm.reconfigure(now, params(&m.cfg), priority);
        actions.extend(m.vm.set_fault(now, fault || !own));
        let sends = actions.iter().any(|a| matches!(a, Action::Send { .. }));
        let vips_changed = !added.is_empty() || !removed.is_empty();
        if vips_changed && !sends {
            actions.extend(m.vm.advertise(now));
        }
        self.perform(i, actions).await;
        if !added.is_empty() && self.members[i].vm.state() == State::Master {
            self.announce(i, added.iter().map(|v| v.addr).collect());
        }
        let m = &self.members[i];
        tracing::info!(
            instance = %m.name(),
            priority = m.vm.priority(),
            advert_interval_ms = u64::from(m.cfg.interval_cs()) * 10,
            state = m.vm.state().as_str(),
            "vrrp instance changed in place"
        );
    }

    /// VIPs a change added or removed: on the interface while master, on `lo` while parked.
    async fn move_vips(&mut self, i: usize, added: &[Vip], removed: &[Vip]) {
        let m = &self.members[i];
        let (master, parked) = (m.vm.state() == State::Master, m.parked.is_some());
        let name = m.cfg.name.clone();
        for &vip in removed {
            if master {
                if let Err(e) = self.io.del(Dev::Iface, vip).await {
                    tracing::error!(instance = %name, "{e}");
                }
            }
            if parked {
                if let Err(e) = self.io.del(Dev::Lo, host_route(vip)).await {
                    tracing::warn!(instance = %name, "{e}");
                }
            }
        }
        for &vip in added {
            if master {
                if let Err(e) = self.io.add(Dev::Iface, vip).await {
                    tracing::error!(instance = %name, "{e}");
                }
            }
            if parked {
                if let Err(e) = self.io.add(Dev::Lo, host_route(vip)).await {
                    tracing::warn!(instance = %name, "{e}");
                }
            }
        }
    }

    /// `real-server` was switched: on, a backup puts its VIPs on `lo`; off, they leave it.
    async fn real_server_changed(&mut self, i: usize) {
        let m = &self.members[i];
        if m.cfg.real_server {
            let state = m.vm.state();
            self.real_server(i, state).await;
        } else if m.parked == Some(Parked::RealServer) {
            self.unpark(i).await;
        }
    }
}

/// The VIPs a change added and removed (one whose prefix changed is both).
fn vip_changes(old: &VrrpInstance, new: &VrrpInstance) -> (Vec<Vip>, Vec<Vip>) {
    let added = new
        .vips
        .iter()
        .filter(|v| !old.vips.contains(v))
        .copied()
        .collect();
    let removed = old
        .vips
        .iter()
        .filter(|v| !new.vips.contains(v))
        .copied()
        .collect();
    (added, removed)
}
