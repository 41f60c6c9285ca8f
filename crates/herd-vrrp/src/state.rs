//! The VRRP state machine of one virtual router (RFC 5798 §6.4), without I/O.
//!
//! Time and received adverts come in; [`Action`]s come out (send an advert, change role). The
//! shell calls [`Instance::poll`] when [`Instance::deadline`] has passed. Packets reach
//! [`Instance::advert`] only after the shell has checked TTL, checksum, version, VRID and
//! authentication.
//!
//! Beyond the RFC, as keepalived does:
//! - `preempt-delay`: for that long after start-up a backup does not take over from a master of
//!   lower priority;
//! - a master that hears a master of lower priority (a split brain that has just healed)
//!   advertises at once and announces its addresses again (keepalived issue #166), so the LAN's
//!   neighbour caches point at the one master left;
//! - `Fault`: a tracked interface is down; no adverts, no addresses;
//! - planned failover: the master resigns (priority 0) and stays a backup of the lowest rank,
//!   without preempting, until it is resumed.

use std::net::IpAddr;
use std::time::{Duration, Instant};

use crate::packet::{Advert, Version};

/// What an instance is configured with.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Params {
    pub vrid: u8,
    pub version: Version,
    /// Configured priority, 1..=255 (255 = the address owner).
    pub priority: u8,
    /// Advertisement interval in centiseconds (v2: a multiple of 100).
    pub interval_cs: u16,
    pub preempt: bool,
    pub preempt_delay: Duration,
}

/// The role of an instance.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum State {
    Init,
    Backup,
    Master,
    Fault,
}

impl State {
    pub fn as_str(self) -> &'static str {
        match self {
            State::Init => "init",
            State::Backup => "backup",
            State::Master => "master",
            State::Fault => "fault",
        }
    }
}

/// Why a transition happened.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reason {
    Startup,
    /// A backup heard no master for the master-down interval (or the skew time after a master
    /// resigned).
    MasterDown,
    /// A master heard a master of higher priority (or of equal priority and higher address).
    Preempted,
    /// A fault (a tracked interface is down) began or ended.
    Fault,
    /// Planned failover: this master resigned.
    Failover,
    Shutdown,
}

impl Reason {
    pub fn as_str(self) -> &'static str {
        match self {
            Reason::Startup => "startup",
            Reason::MasterDown => "master-down",
            Reason::Preempted => "preempted",
            Reason::Fault => "fault",
            Reason::Failover => "failover",
            Reason::Shutdown => "shutdown",
        }
    }
}

/// What the shell must do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    /// Send an advert with this priority (0 = resign) and interval.
    Send { priority: u8, interval_cs: u16 },
    /// The role changed. Entering `Master`: add the addresses and announce them; leaving it:
    /// remove them.
    Transition {
        from: State,
        to: State,
        reason: Reason,
    },
    /// Announce the addresses again (gratuitous ARP / unsolicited NA): a split brain healed.
    Announce,
    /// This backup became master in place of a master that is still alive (it resigned, or
    /// it is being preempted), at `from`. That master keeps serving the connections it has:
    /// packets of connections this director does not know go to it for the hand-over window.
    Inherit { from: IpAddr },
}

/// One virtual router.
#[derive(Debug, Clone)]
pub struct Instance {
    p: Params,
    /// Our primary address on the interface: the tie-breaker between equal priorities.
    local: IpAddr,
    state: State,
    /// Priority after tracking (1..=254; 255 only when configured so).
    priority: u8,
    /// Planned failover: behave as the lowest-ranked backup, never preempt.
    standby: bool,
    fault: bool,
    master_interval_cs: u16,
    deadline: Option<Instant>,
    started: Option<Instant>,
    master: Option<IpAddr>,
    /// A master that resigned (priority 0) while we were backup.
    resigned: Option<IpAddr>,
    /// The last advert heard as backup: who, and when. A master heard within two intervals
    /// is alive when we preempt it.
    heard: Option<(IpAddr, Instant)>,
}

fn cs(n: u64) -> Duration {
    Duration::from_millis(n * 10)
}

impl Instance {
    pub fn new(p: Params, local: IpAddr) -> Instance {
        Instance {
            priority: p.priority,
            master_interval_cs: p.interval_cs,
            p,
            local,
            state: State::Init,
            standby: false,
            fault: false,
            deadline: None,
            started: None,
            master: None,
            resigned: None,
            heard: None,
        }
    }

    pub fn params(&self) -> &Params {
        &self.p
    }

    pub fn state(&self) -> State {
        self.state
    }

    /// The priority in effect (after tracking).
    pub fn priority(&self) -> u8 {
        self.priority
    }

    pub fn standby(&self) -> bool {
        self.standby
    }

    /// The master's address as last heard (our own while we are master).
    pub fn master(&self) -> Option<IpAddr> {
        self.master
    }

    /// The interval the master advertises, in centiseconds.
    pub fn master_interval_cs(&self) -> u16 {
        self.master_interval_cs
    }

    /// When [`poll`](Self::poll) has work to do.
    pub fn deadline(&self) -> Option<Instant> {
        self.deadline
    }

    /// The priority that ranks us among backups: the lowest while standing by.
    fn rank(&self) -> u8 {
        if self.standby {
            1
        } else {
            self.priority
        }
    }

    /// Skew time (RFC 5798 §6.1): higher priorities wait less.
    pub fn skew(&self) -> Duration {
        let left = 256 - u64::from(self.rank());
        match self.p.version {
            Version::V3 => {
                Duration::from_micros(left * u64::from(self.master_interval_cs) * 10_000 / 256)
            }
            Version::V2 => Duration::from_micros(left * 1_000_000 / 256),
        }
    }

    /// Master-down interval: three missed adverts plus the skew time.
    pub fn master_down(&self) -> Duration {
        cs(3 * u64::from(self.master_interval_cs)) + self.skew()
    }

    fn send(&self, priority: u8) -> Action {
        Action::Send {
            priority,
            interval_cs: self.p.interval_cs,
        }
    }

    fn transition(&mut self, to: State, reason: Reason, out: &mut Vec<Action>) {
        let from = self.state;
        self.state = to;
        if from != to {
            out.push(Action::Transition { from, to, reason });
        }
    }

    fn become_master(&mut self, now: Instant, reason: Reason, out: &mut Vec<Action>) {
        // First, so that the shell forwards the old master's connections before the VIPs
        // arrive here and the LAN is told.
        let alive = cs(2 * u64::from(self.master_interval_cs));
        let from = self.resigned.take().or(self
            .heard
            .take()
            .filter(|(_, at)| now.saturating_duration_since(*at) <= alive)
            .map(|(a, _)| a));
        if let (Some(from), Reason::MasterDown) = (from, reason) {
            out.push(Action::Inherit { from });
        }
        out.push(self.send(self.priority));
        self.transition(State::Master, reason, out);
        // A master advertises its own interval (RFC 5798 §6.4.3), whatever it heard before.
        self.master_interval_cs = self.p.interval_cs;
        self.master = Some(self.local);
        self.deadline = Some(now + cs(u64::from(self.p.interval_cs)));
    }

    fn become_backup(&mut self, now: Instant, reason: Reason, out: &mut Vec<Action>) {
        self.transition(State::Backup, reason, out);
        self.resigned = None;
        self.heard = None;
        if self.master == Some(self.local) {
            self.master = None;
        }
        self.deadline = Some(now + self.master_down());
    }

    /// Leaves Init (or Fault, once it has cleared).
    fn enter(&mut self, now: Instant, reason: Reason, out: &mut Vec<Action>) {
        self.master_interval_cs = self.p.interval_cs;
        if self.fault {
            self.deadline = None;
            self.transition(State::Fault, reason, out);
        } else if self.priority == 255 && !self.standby {
            self.become_master(now, reason, out);
        } else {
            self.become_backup(now, reason, out);
        }
    }

    /// The Startup event.
    pub fn start(&mut self, now: Instant) -> Vec<Action> {
        let mut out = Vec::new();
        if self.state == State::Init {
            self.started = Some(now);
            self.enter(now, Reason::Startup, &mut out);
        }
        out
    }

    /// The Shutdown event: a master resigns with priority 0.
    pub fn stop(&mut self) -> Vec<Action> {
        let mut out = Vec::new();
        if self.state == State::Master {
            out.push(self.send(0));
        }
        self.deadline = None;
        self.master = None;
        self.transition(State::Init, Reason::Shutdown, &mut out);
        out
    }

    /// Timers: a master's advert timer, a backup's master-down timer.
    pub fn poll(&mut self, now: Instant) -> Vec<Action> {
        let mut out = Vec::new();
        if self.deadline.is_none_or(|d| now < d) {
            return out;
        }
        match self.state {
            State::Master => {
                out.push(self.send(self.priority));
                self.deadline = Some(now + cs(u64::from(self.p.interval_cs)));
            }
            State::Backup => self.become_master(now, Reason::MasterDown, &mut out),
            State::Init | State::Fault => self.deadline = None,
        }
        out
    }

    fn may_preempt(&self, now: Instant) -> bool {
        self.p.preempt
            && !self.standby
            && self
                .started
                .is_some_and(|s| now.saturating_duration_since(s) >= self.p.preempt_delay)
    }

    /// A valid advert for this virtual router arrived from `src`.
    pub fn advert(&mut self, now: Instant, src: IpAddr, adv: &Advert) -> Vec<Action> {
        let mut out = Vec::new();
        if src == self.local {
            // Our own advert, looped back by a multicast router or a unicast peer list that
            // names us.
            return out;
        }
        match self.state {
            State::Init | State::Fault => {}
            State::Backup => {
                if adv.priority == 0 {
                    self.resigned = Some(src);
                    self.deadline = Some(now + self.skew());
                    return out;
                }
                // Someone is master (another backup took over, or the one that resigned is
                // back): the resignation is history.
                self.resigned = None;
                self.heard = Some((src, now));
                if !self.may_preempt(now) || adv.priority >= self.rank() {
                    if self.p.version == Version::V3 {
                        self.master_interval_cs = adv.interval_cs;
                    }
                    self.master = Some(src);
                    self.deadline = Some(now + self.master_down());
                }
                // Else a master of lower priority: let the master-down timer run out.
            }
            State::Master => {
                if adv.priority == 0 {
                    out.push(self.send(self.priority));
                    self.deadline = Some(now + cs(u64::from(self.p.interval_cs)));
                } else if adv.priority > self.priority
                    || (adv.priority == self.priority && src > self.local)
                {
                    if self.p.version == Version::V3 {
                        self.master_interval_cs = adv.interval_cs;
                    }
                    self.master = Some(src);
                    self.transition(State::Backup, Reason::Preempted, &mut out);
                    self.deadline = Some(now + self.master_down());
                } else {
                    out.push(self.send(self.priority));
                    out.push(Action::Announce);
                    self.deadline = Some(now + cs(u64::from(self.p.interval_cs)));
                }
            }
        }
        out
    }

    /// A priority in effect: 255 only for the address owner.
    fn clamp(&self, priority: u8) -> u8 {
        if self.p.priority == 255 {
            priority
        } else {
            priority.clamp(1, 254)
        }
    }

    /// Tracking changed the priority in effect. A master advertises the new priority at once,
    /// so that a backup that now outranks it can preempt without waiting for the next advert.
    pub fn set_priority(&mut self, now: Instant, priority: u8) -> Vec<Action> {
        let priority = self.clamp(priority);
        if priority == self.priority {
            return Vec::new();
        }
        self.priority = priority;
        self.advertise(now)
    }

    /// A master advertises at once (its priority, interval or addresses changed) and again one
    /// interval later; in any other state nothing happens.
    pub fn advertise(&mut self, now: Instant) -> Vec<Action> {
        if self.state != State::Master {
            return Vec::new();
        }
        self.deadline = Some(now + cs(u64::from(self.p.interval_cs)));
        vec![self.send(self.priority)]
    }

    /// A reload changed the configuration; `priority` is the priority in effect under it (the
    /// configured one moved by tracking). The role stays:
    /// - a master advertises at once with the new priority and interval, and every new interval
    ///   after; a backup that now outranks it preempts it as RFC 5798 §6.4.2 says;
    /// - a backup ranks by the new priority from the next advert on: with preempt, a master it
    ///   now outranks no longer resets its master-down timer, so it takes over when that runs
    ///   out. A v2 backup expects its own interval (v2 groups share one);
    /// - preempt and preempt-delay (counted from start-up) apply to the next advert heard.
    ///
    /// VRID and version cannot change in place: the shell replaces such an instance.
    pub fn reconfigure(&mut self, now: Instant, p: Params, priority: u8) -> Vec<Action> {
        debug_assert!(p.vrid == self.p.vrid && p.version == self.p.version);
        let interval_changed = p.interval_cs != self.p.interval_cs;
        self.p = p;
        let priority = self.clamp(priority);
        let priority_changed = priority != self.priority;
        self.priority = priority;
        match self.state {
            State::Master => {
                self.master_interval_cs = self.p.interval_cs;
                if interval_changed || priority_changed {
                    return self.advertise(now);
                }
            }
            State::Backup | State::Init | State::Fault if self.p.version == Version::V2 => {
                self.master_interval_cs = self.p.interval_cs;
            }
            _ => {}
        }
        Vec::new()
    }

    /// A tracked interface went down (`true`) or came back (`false`).
    pub fn set_fault(&mut self, now: Instant, fault: bool) -> Vec<Action> {
        let mut out = Vec::new();
        if fault == self.fault {
            return out;
        }
        self.fault = fault;
        match (fault, self.state) {
            (_, State::Init) => {}
            (true, state) => {
                if state == State::Master {
                    out.push(self.send(0));
                }
                self.master = None;
                self.deadline = None;
                self.transition(State::Fault, Reason::Fault, &mut out);
            }
            (false, _) => self.enter(now, Reason::Fault, &mut out),
        }
        out
    }

    /// Planned failover: a master resigns and stands by as the lowest-ranked backup, so the
    /// next-ranked director takes over after its skew time. A standby still takes over if no
    /// one else does. Fails unless this instance is master.
    pub fn failover(&mut self, now: Instant) -> Result<Vec<Action>, State> {
        if self.state != State::Master {
            return Err(self.state);
        }
        let mut out = vec![self.send(0)];
        self.standby = true;
        self.become_backup(now, Reason::Failover, &mut out);
        Ok(out)
    }

    /// Ends a standby: the instance ranks by its priority again (and preempts, if configured,
    /// at the next advert of a master of lower priority).
    pub fn resume(&mut self) {
        self.standby = false;
    }
}

#[cfg(test)]
mod tests;
