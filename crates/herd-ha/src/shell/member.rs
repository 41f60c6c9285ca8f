//! One instance inside its group: its configuration, state machine, authentication state and
//! what `herd ha status` shows; the checks a received advert passes before the state machine
//! sees it, and the advert it sends. No I/O here.

use std::collections::{BTreeMap, VecDeque};
use std::net::IpAddr;
use std::sync::atomic::AtomicBool;
use std::sync::Arc;
use std::time::Instant;

use herd_core::api::{TrackStatus, VrrpStatus, VrrpTransition};
use herd_core::config::vrrp::VrrpInstance;

use super::io::{Datagram, Watch};
use crate::auth::{Key, Replay, Sequence};
use crate::packet::{Advert, Malformed, Version, GROUP_V4, GROUP_V6};
use crate::state::{Instance, Params, Reason, State};

/// Transitions kept per instance for `herd ha status`.
const KEEP_TRANSITIONS: usize = 20;

/// An instance's configuration with what had to be read for it (the auth key), ready to be
/// started or applied without anything left that can fail.
#[derive(Debug, Clone)]
pub(crate) struct Prepared {
    pub cfg: VrrpInstance,
    /// The key of `auth-key-file`, and its bytes (to tell whether a reload changed it).
    pub key: Option<(Key, Vec<u8>)>,
}

/// Why a member's VIPs are on `lo`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Parked {
    /// A hand-over: the old master's connections drain here until then.
    Until(Instant),
    /// The real-server role: for as long as the instance is backup.
    RealServer,
}

/// One instance inside its group.
#[derive(Debug)]
pub(crate) struct Member {
    pub cfg: VrrpInstance,
    pub vm: Instance,
    pub key: Option<(Key, Vec<u8>)>,
    pub seq: Sequence,
    pub replay: Replay,
    pub password: Option<[u8; 8]>,
    pub vips: Vec<IpAddr>,
    pub transitions: VecDeque<VrrpTransition>,
    pub transitions_total: u64,
    pub sent: u64,
    pub received: u64,
    /// Our VIPs are on `lo`: for a hand-over, or as a real server.
    pub parked: Option<Parked>,
    /// Hand-over: strays go to this old master until then.
    pub forwarding: Option<(IpAddr, Instant)>,
    /// One per `cfg.track_scripts`: passing now.
    pub scripts: Vec<Arc<AtomicBool>>,
    /// The tasks that run `cfg.track_scripts`.
    pub watches: Vec<Watch>,
    pub tracking: Vec<TrackStatus>,
}

/// The state machine's parameters of an instance.
pub(crate) fn params(cfg: &VrrpInstance) -> Params {
    Params {
        vrid: cfg.vrid,
        version: if cfg.version == 2 {
            Version::V2
        } else {
            Version::V3
        },
        priority: cfg.priority,
        interval_cs: cfg.interval_cs(),
        preempt: cfg.preempt,
        preempt_delay: cfg.preempt_delay,
    }
}

/// v2's simple-text password, padded to 8 bytes.
fn password(cfg: &VrrpInstance) -> Option<[u8; 8]> {
    cfg.auth_pass.as_ref().map(|p| {
        let mut b = [0u8; 8];
        let n = p.len().min(8);
        b[..n].copy_from_slice(&p.as_bytes()[..n]);
        b
    })
}

impl Member {
    /// A member that has not started; `local` is its group's address.
    pub fn new(p: Prepared, local: IpAddr) -> Member {
        let cfg = p.cfg;
        Member {
            vm: Instance::new(params(&cfg), local),
            vips: cfg.vips.iter().map(|v| v.addr).collect(),
            key: p.key,
            seq: Sequence::default(),
            replay: Replay::default(),
            password: password(&cfg),
            transitions: VecDeque::new(),
            transitions_total: 0,
            sent: 0,
            received: 0,
            parked: None,
            forwarding: None,
            scripts: new_scripts(&cfg),
            watches: Vec::new(),
            tracking: Vec::new(),
            cfg,
        }
    }

    /// Takes a changed configuration (and key): everything but the state machine, which the
    /// group reconfigures. Returns the old configuration.
    pub fn take(&mut self, p: Prepared) -> VrrpInstance {
        self.password = password(&p.cfg);
        self.vips = p.cfg.vips.iter().map(|v| v.addr).collect();
        self.key = p.key;
        if p.cfg.track_scripts != self.cfg.track_scripts {
            // The old scripts' tasks end with their watches; the new ones start passing.
            self.watches.clear();
            self.scripts = new_scripts(&p.cfg);
        }
        std::mem::replace(&mut self.cfg, p.cfg)
    }

    pub fn name(&self) -> &str {
        &self.cfg.name
    }

    pub fn record(&mut self, from: State, to: State, reason: Reason, wall_ms: u64) {
        self.transitions_total += 1;
        if self.transitions.len() == KEEP_TRANSITIONS {
            self.transitions.pop_front();
        }
        self.transitions.push_back(VrrpTransition {
            at_ms: wall_ms,
            from: from.as_str().into(),
            to: to.as_str().into(),
            reason: reason.as_str().into(),
        });
    }

    /// The checks a valid advert for this instance passes before the state machine sees it:
    /// the sender is a configured peer, the version is ours, authentication holds (and is not
    /// a replay), and for v2 the password and interval are ours.
    pub fn accept(&mut self, d: &Datagram, adv: &Advert) -> Result<(), Malformed> {
        let src = d.src;
        // IPv6 adverts come from link-local addresses, which `unicast-peers` does not name.
        if src.is_ipv4()
            && !self.cfg.unicast_peers.is_empty()
            && !self.cfg.unicast_peers.contains(&src)
        {
            return Err(Malformed::Peer);
        }
        if adv.version != self.vm.params().version {
            return Err(Malformed::Version);
        }
        match &self.key {
            Some((key, _)) => match key.verify(adv, src, d.dst) {
                Some(seq) if self.replay.accept(src, seq) => {}
                _ => return Err(Malformed::Auth),
            },
            None if adv.trailer.is_some() => return Err(Malformed::Auth),
            None => {}
        }
        if adv.version == Version::V2 {
            if adv.password != self.password {
                return Err(Malformed::Auth);
            }
            if adv.interval_cs != self.vm.params().interval_cs {
                return Err(Malformed::Interval);
            }
        }
        Ok(())
    }

    /// The advert to send, signed if the group is authenticated, and where it goes (the
    /// group's multicast address, or each unicast peer).
    pub fn advert(
        &mut self,
        priority: u8,
        interval_cs: u16,
        local: IpAddr,
        wall_us: u64,
    ) -> (Advert, Vec<IpAddr>) {
        let mut adv = Advert {
            version: self.vm.params().version,
            vrid: self.cfg.vrid,
            priority,
            interval_cs,
            addrs: self.vips.clone(),
            password: self.password,
            trailer: None,
        };
        let dsts: Vec<IpAddr> = match (self.cfg.unicast_peers.is_empty(), local) {
            (true, IpAddr::V4(_)) => vec![IpAddr::V4(GROUP_V4)],
            (true, IpAddr::V6(_)) => vec![IpAddr::V6(GROUP_V6)],
            (false, _) => self.cfg.unicast_peers.clone(),
        };
        if let Some((key, _)) = &self.key {
            key.sign(&mut adv, self.seq.advance(wall_us), local, dsts[0]);
        }
        (adv, dsts)
    }

    /// What `herd ha status` shows of this member.
    pub fn status(
        &self,
        iface: &str,
        local: IpAddr,
        dropped: &BTreeMap<Malformed, u64>,
        now: Instant,
    ) -> VrrpStatus {
        VrrpStatus {
            name: self.cfg.name.clone(),
            interface: iface.to_string(),
            vrid: self.cfg.vrid,
            version: self.cfg.version,
            state: self.vm.state().as_str().into(),
            priority: self.vm.priority(),
            configured_priority: self.cfg.priority,
            standby: self.vm.standby(),
            master: self.vm.master().map(|a| a.to_string()),
            address: local.to_string(),
            advert_interval_ms: u64::from(self.vm.master_interval_cs()) * 10,
            vips: self.cfg.vips.iter().map(|v| v.to_string()).collect(),
            transitions: self.transitions.iter().cloned().collect(),
            transitions_total: self.transitions_total,
            adverts_sent: self.sent,
            adverts_received: self.received,
            dropped: dropped
                .iter()
                .map(|(k, v)| (k.as_str().to_string(), *v))
                .collect(),
            handover: self.handover_note(now),
            real_server: self.parked == Some(Parked::RealServer),
            tracking: self.tracking.clone(),
        }
    }

    /// What `herd ha status` says about a hand-over in progress.
    fn handover_note(&self, now: Instant) -> Option<String> {
        let left = |t: Instant| t.saturating_duration_since(now).as_secs();
        match (self.parked, self.forwarding) {
            (Some(Parked::Until(t)), _) => Some(format!(
                "VIPs parked on lo, old connections drain here ({}s left)",
                left(t)
            )),
            (_, Some((to, t))) => Some(format!(
                "forwarding connections we do not know to {to} ({}s left)",
                left(t)
            )),
            (_, None) => None,
        }
    }
}

fn new_scripts(cfg: &VrrpInstance) -> Vec<Arc<AtomicBool>> {
    cfg.track_scripts
        .iter()
        .map(|_| Arc::new(AtomicBool::new(true)))
        .collect()
}
