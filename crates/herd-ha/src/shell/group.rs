//! A group: the instances of one family on one interface, which share one raw socket. The
//! group's task receives every VRRP packet on it and hands each to the instance with its
//! VRID, runs the timers, tracking and hand-overs, and carries out the state machines'
//! actions through [`Io`].

use std::collections::{BTreeMap, HashSet};
use std::net::IpAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use herd_core::api::TrackStatus;
use tokio::sync::{mpsc, oneshot};

use super::io::{Datagram, Dev, Io};
use super::member::{Member, Prepared};
use super::{lock, now, wall_ms, wall_us, Board};
use crate::notify;
use crate::packet::{Advert, Malformed, TTL};
use crate::state::{Action, Reason, State};
use crate::HaError;

/// How often tracked interfaces are looked at.
const TRACK_EVERY: Duration = Duration::from_millis(100);

/// Tracked services that are failing now, as the daemon last said.
pub(crate) type Failing = Arc<Mutex<HashSet<String>>>;

/// What a group is asked to do.
#[derive(Debug)]
pub(crate) enum GroupCmd {
    Failover(Vec<String>, oneshot::Sender<Result<Vec<String>, HaError>>),
    Resume(Vec<String>, oneshot::Sender<Result<Vec<String>, HaError>>),
    /// Masters resign; VIPs are parked for the hand-over window.
    Stop(oneshot::Sender<()>),
    /// After [`GroupCmd::Stop`]: the parked VIPs go, the task ends.
    Finish(oneshot::Sender<()>),
    /// Part of an apply.
    Change(Change, oneshot::Sender<()>),
}

/// A group's part of an apply, in this order: instances that go, instances that change in
/// place, instances that start. With `end`, the group has no instance left after it and its
/// task ends (and its socket closes).
#[derive(Debug, Default)]
pub(crate) struct Change {
    pub remove: Vec<String>,
    pub update: Vec<Prepared>,
    pub add: Vec<Prepared>,
    pub end: bool,
}

/// The instances of one family on one interface.
#[derive(Debug)]
pub(crate) struct Group<I: Io> {
    pub iface: String,
    /// The interface's index: part of the hand-over tables' names.
    pub index: u32,
    /// The adverts' source: an IPv4 address of the interface, or its IPv6 link-local one.
    pub local: IpAddr,
    pub io: I,
    pub failing: Failing,
    pub members: Vec<Member>,
    pub dropped: BTreeMap<Malformed, u64>,
    pub board: Board,
    /// Shutting down: stop hooks run to their end before the runtime goes.
    pub stopping: bool,
}

impl<I: Io> Group<I> {
    pub fn new(
        iface: String,
        index: u32,
        local: IpAddr,
        io: I,
        failing: Failing,
        board: Board,
    ) -> Group<I> {
        Group {
            iface,
            index,
            local,
            io,
            failing,
            members: Vec::new(),
            dropped: BTreeMap::new(),
            board,
            stopping: false,
        }
    }

    pub fn position(&self, name: &str) -> Option<usize> {
        self.members.iter().position(|m| m.name() == name)
    }

    /// The group's task: until [`GroupCmd::Finish`], an apply that ends it, or its channel
    /// closes.
    pub async fn run(mut self, mut rx: mpsc::UnboundedReceiver<GroupCmd>) {
        let mut track = tokio::time::interval(TRACK_EVERY);
        track.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            let next = self
                .members
                .iter()
                .filter_map(|m| m.vm.deadline())
                .min()
                .unwrap_or_else(|| now() + Duration::from_secs(3600));
            tokio::select! {
                biased;
                cmd = rx.recv() => {
                    if !self.command(cmd).await {
                        return;
                    }
                }
                _ = tokio::time::sleep_until(tokio::time::Instant::from_std(next)) => {
                    self.poll(now()).await;
                }
                packets = self.io.recv() => {
                    for p in packets {
                        match p {
                            Ok(d) => self.receive(d).await,
                            Err(why) => self.drop_packet(why),
                        }
                    }
                }
                _ = track.tick() => {
                    // Stopped (every instance back in Init), only hand-overs are left.
                    if self.members.iter().any(|m| m.vm.state() != State::Init) {
                        self.track().await;
                    }
                    self.expire(now()).await;
                }
            }
            self.publish();
        }
    }

    /// One command; whether the task goes on.
    async fn command(&mut self, cmd: Option<GroupCmd>) -> bool {
        match cmd {
            None => {
                self.stop().await;
                self.finish().await;
                return false;
            }
            Some(GroupCmd::Stop(done)) => {
                self.stop().await;
                self.publish();
                let _ = done.send(());
            }
            Some(GroupCmd::Finish(done)) => {
                self.finish().await;
                self.publish();
                let _ = done.send(());
                return false;
            }
            Some(GroupCmd::Failover(names, reply)) => {
                let r = self.failover(names).await;
                let _ = reply.send(r);
            }
            Some(GroupCmd::Resume(names, reply)) => {
                let _ = reply.send(Ok(self.resume(&names)));
            }
            Some(GroupCmd::Change(c, done)) => {
                let end = c.end;
                self.change(c).await;
                let _ = done.send(());
                return !end;
            }
        }
        true
    }

    /// Timers: adverts of masters, master-down of backups.
    pub async fn poll(&mut self, now: Instant) {
        for i in 0..self.members.len() {
            let actions = self.members[i].vm.poll(now);
            self.perform(i, actions).await;
        }
    }

    pub fn drop_packet(&mut self, why: Malformed) {
        *self.dropped.entry(why).or_default() += 1;
    }

    /// Which member a packet is for, once it passed every check: TTL, the codec, a VRID of
    /// ours, then the member's own (peer, version, authentication).
    pub fn route(&mut self, d: &Datagram) -> Result<(usize, Advert), Malformed> {
        if d.ttl != TTL {
            return Err(Malformed::Ttl);
        }
        let adv = Advert::parse(&d.payload, d.src, d.dst)?;
        let i = self
            .members
            .iter()
            .position(|m| m.cfg.vrid == adv.vrid)
            .ok_or(Malformed::Vrid)?;
        self.members[i].accept(d, &adv)?;
        Ok((i, adv))
    }

    /// One packet from the raw socket.
    pub async fn receive(&mut self, d: Datagram) {
        match self.route(&d) {
            Ok((i, adv)) => {
                self.members[i].received += 1;
                let actions = self.members[i].vm.advert(now(), d.src, &adv);
                self.perform(i, actions).await;
            }
            Err(why) => self.drop_packet(why),
        }
    }

    fn send(&mut self, i: usize, priority: u8, interval_cs: u16) {
        let local = self.local;
        let m = &mut self.members[i];
        let (adv, dsts) = m.advert(priority, interval_cs, local, wall_us());
        for dst in dsts {
            match self.io.send(&adv.encode(local, dst), dst) {
                Ok(()) => m.sent += 1,
                Err(e) => tracing::warn!(instance = %m.cfg.name, "send advert to {dst}: {e}"),
            }
        }
    }

    /// Gratuitous ARPs / unsolicited NAs for some of a member's VIPs.
    pub fn announce(&self, i: usize, vips: Vec<IpAddr>) {
        let m = &self.members[i];
        self.io
            .announce(&m.cfg.name, vips, m.cfg.garp_count, m.cfg.garp_interval);
    }

    /// Carries out a state machine's actions, in their order.
    pub async fn perform(&mut self, i: usize, actions: Vec<Action>) {
        for a in actions {
            match a {
                Action::Send {
                    priority,
                    interval_cs,
                } => self.send(i, priority, interval_cs),
                Action::Announce => {
                    tracing::info!(instance = %self.members[i].cfg.name, "another master heard: announcing again");
                    self.announce(i, self.members[i].vips.clone());
                }
                Action::Transition { from, to, reason } => {
                    self.transition(i, from, to, reason).await
                }
                Action::Inherit { from } => self.forward(i, from).await,
            }
        }
    }

    async fn transition(&mut self, i: usize, from: State, to: State, reason: Reason) {
        let m = &mut self.members[i];
        m.record(from, to, reason, wall_ms());
        tracing::info!(
            instance = %m.cfg.name,
            priority = m.vm.priority(),
            "{} -> {} ({})",
            from.as_str(),
            to.as_str(),
            reason.as_str()
        );
        if to == State::Master {
            for vip in self.members[i].cfg.vips.clone() {
                if let Err(e) = self.io.add(Dev::Iface, vip).await {
                    tracing::error!(instance = %self.members[i].cfg.name, "{e}");
                }
            }
            // Back before our parked VIPs expired: they are on the interface again, so the
            // copies on `lo` can go without a moment without the address.
            self.unpark(i).await;
            self.announce(i, self.members[i].vips.clone());
        } else if from == State::Master {
            // We are alive: our connections stay here for the hand-over window, whether the
            // new master forwards them (it heard us resign, or preempted us) or not (then
            // they end as they would have).
            self.park(i).await;
            self.unforward(i).await;
            for vip in self.members[i].cfg.vips.clone() {
                if let Err(e) = self.io.del(Dev::Iface, vip).await {
                    tracing::error!(instance = %self.members[i].cfg.name, "{e}");
                }
            }
        }
        if self.members[i].cfg.real_server {
            self.real_server(i, to).await;
        }
        self.hook(i, from, to, reason).await;
    }

    /// The role-change hook of the state entered, if one is configured.
    async fn hook(&mut self, i: usize, from: State, to: State, reason: Reason) {
        let m = &self.members[i];
        let hook = match to {
            State::Master => m.cfg.notify.master.clone(),
            State::Backup => m.cfg.notify.backup.clone(),
            State::Fault => m.cfg.notify.fault.clone(),
            State::Init => m.cfg.notify.stop.clone(),
        };
        let Some(cmd) = hook else {
            return;
        };
        let ev = notify::Event {
            instance: m.cfg.name.clone(),
            state: to.as_str(),
            old_state: from.as_str(),
            priority: m.vm.priority(),
            vips: m
                .cfg
                .vips
                .iter()
                .map(|v| v.to_string())
                .collect::<Vec<_>>()
                .join(" "),
            reason: reason.as_str(),
        };
        // Stopping: the runtime ends after this, so the hook runs to its end here.
        let wait = to == State::Init && self.stopping;
        self.io.hook(cmd, ev, m.cfg.notify_timeout, wait).await;
    }

    /// A member's tracked objects as they are now, and what they make of its priority: the
    /// statuses, the priority in effect, and whether it is in fault. The instance's own
    /// interface is not among them.
    pub fn tracking_of(&self, i: usize, failing: &HashSet<String>) -> (Vec<TrackStatus>, u8, bool) {
        let m = &self.members[i];
        let status = |kind: &str, name: &str, passing: bool, weight: i32| TrackStatus {
            kind: kind.into(),
            name: name.into(),
            passing,
            weight,
        };
        let tracking: Vec<TrackStatus> = m
            .cfg
            .track_interfaces
            .iter()
            .map(|t| status("interface", &t.name, self.io.link_up(&t.name), t.weight))
            .chain(m.cfg.track_scripts.iter().zip(&m.scripts).map(|(t, p)| {
                status(
                    "script",
                    &t.command,
                    p.load(std::sync::atomic::Ordering::Relaxed),
                    t.weight,
                )
            }))
            .chain(
                m.cfg
                    .track_services
                    .iter()
                    .map(|t| status("service", &t.name, !failing.contains(&t.name), t.weight)),
            )
            .collect();
        let (priority, fault) = crate::track::effect(
            m.cfg.priority,
            tracking.iter().map(|t| (t.passing, t.weight)),
        );
        (tracking, priority, fault)
    }

    /// Tracking: the instance's own interface down = fault; tracked interfaces, scripts and
    /// services move the priority by their weights (or mean fault, with weight 0).
    pub async fn track(&mut self) {
        let own = self.io.link_up(&self.iface);
        let failing = lock(&self.failing).clone();
        let now = now();
        for i in 0..self.members.len() {
            let (tracking, priority, fault) = self.tracking_of(i, &failing);
            let m = &mut self.members[i];
            m.tracking = tracking;
            let mut actions = m.vm.set_fault(now, fault || !own);
            actions.extend(m.vm.set_priority(now, priority));
            self.perform(i, actions).await;
        }
    }

    async fn failover(&mut self, names: Vec<String>) -> Result<Vec<String>, HaError> {
        let now = now();
        let mut done = Vec::new();
        for i in 0..self.members.len() {
            let name = self.members[i].cfg.name.clone();
            if !names.is_empty() && !names.contains(&name) {
                continue;
            }
            match self.members[i].vm.failover(now) {
                Ok(actions) => {
                    self.perform(i, actions).await;
                    done.push(name);
                }
                Err(state) if !names.is_empty() => {
                    return Err(HaError::NotMaster {
                        name,
                        state: state.as_str(),
                    });
                }
                Err(_) => {}
            }
        }
        Ok(done)
    }

    fn resume(&mut self, names: &[String]) -> Vec<String> {
        let mut done = Vec::new();
        for m in &mut self.members {
            if (names.is_empty() || names.contains(&m.cfg.name)) && m.vm.standby() {
                m.vm.resume();
                done.push(m.cfg.name.clone());
            }
        }
        done
    }

    async fn stop(&mut self) {
        self.stopping = true;
        for i in 0..self.members.len() {
            let actions = self.members[i].vm.stop();
            self.perform(i, actions).await;
            self.unforward(i).await;
        }
    }

    /// The end: parked VIPs and hand-over tables go.
    async fn finish(&mut self) {
        for i in 0..self.members.len() {
            self.unpark(i).await;
            self.unforward(i).await;
        }
    }

    /// Copies every member's state where `herd ha status` reads it.
    pub fn publish(&self) {
        let now = now();
        let mut board = lock(&self.board);
        for m in &self.members {
            let st = m.status(&self.iface, self.local, &self.dropped, now);
            board.by_name.insert(m.cfg.name.clone(), st);
        }
    }
}
