//! Director failover: the VRRP instances of `[[vrrp.instance]]`.

use std::net::IpAddr;
use std::path::PathBuf;
use std::time::Duration;

use serde::{Deserialize, Serialize};

/// A virtual address with its prefix length (`10.0.0.100/24`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Vip {
    pub addr: IpAddr,
    pub prefix: u8,
}

impl std::fmt::Display for Vip {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.addr, self.prefix)
    }
}

/// An interface whose state changes the priority (`weight` ≠ 0) or, with weight 0, puts the
/// instance in the fault state while it is down.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TrackInterface {
    pub name: String,
    pub weight: i32,
}

/// A program run every `interval` (`sh -c`, killed with its process group at `timeout`):
/// exit status 0 is a pass. After `fall` failures in a row it is failing, after `rise` passes
/// it is passing again. keepalived's `vrrp_script` weights: failing with weight < 0 lowers the
/// priority by it, passing with weight > 0 raises it, weight 0 = fault while failing.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TrackScript {
    pub command: String,
    pub interval: Duration,
    pub timeout: Duration,
    pub weight: i32,
    pub fall: u32,
    pub rise: u32,
}

/// A virtual service of this director whose health moves the priority: it fails when its
/// quorum is lost (or, without a quorum, when no real server is up). Weights as for scripts.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TrackService {
    pub name: String,
    pub weight: i32,
}

/// Programs run on role changes (`sh -c`), with keepalived's arguments
/// (`INSTANCE name STATE priority`) and `HERD_VRRP_*` variables.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Notify {
    pub master: Option<String>,
    pub backup: Option<String>,
    pub fault: Option<String>,
    pub stop: Option<String>,
}

/// One VRRP virtual router on one interface.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VrrpInstance {
    pub name: String,
    pub interface: String,
    pub vrid: u8,
    /// 2 or 3.
    pub version: u8,
    /// 1..=255; 255 = the address owner.
    pub priority: u8,
    /// v3: a multiple of 10 ms up to 40.95 s; v2: whole seconds up to 255.
    pub advert_int: Duration,
    pub preempt: bool,
    pub preempt_delay: Duration,
    /// All of one family.
    pub vips: Vec<Vip>,
    /// Empty: multicast to 224.0.0.18 / ff02::12.
    pub unicast_peers: Vec<IpAddr>,
    /// herd-only groups: the shared secret of the HMAC trailer.
    pub auth_key_file: Option<PathBuf>,
    /// v2 only: keepalived's `auth_type PASS` (at most 8 bytes).
    pub auth_pass: Option<String>,
    /// Gratuitous ARPs / unsolicited NAs sent on becoming master, and the gap between them.
    pub garp_count: u32,
    pub garp_interval: Duration,
    pub notify: Notify,
    pub notify_timeout: Duration,
    /// Planned hand-over (failover, preemption, shutdown) without losing connections: the
    /// old master keeps the VIPs on `lo` (answering no ARP for them) and serves the
    /// connections it has, and the new master forwards packets of connections it does not
    /// know to it, for this long. Zero: the old master drops the VIPs at once.
    pub handover_window: Duration,
    /// While backup, the VIPs sit on `lo` with ARP for them quiet (`arp_ignore=1`,
    /// `arp_announce=2`), so this director can serve as a real server for them (LVS-DR: the
    /// master forwards packets still addressed to the VIP), as the seeds' `lvs-r.sh` does.
    pub real_server: bool,
    pub track_interfaces: Vec<TrackInterface>,
    pub track_scripts: Vec<TrackScript>,
    pub track_services: Vec<TrackService>,
}

impl VrrpInstance {
    pub fn is_ipv6(&self) -> bool {
        self.vips.first().is_some_and(|v| v.addr.is_ipv6())
    }

    /// The advert interval in centiseconds.
    pub fn interval_cs(&self) -> u16 {
        (self.advert_int.as_millis() / 10).min(u128::from(u16::MAX)) as u16
    }
}

/// `[vrrp]`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct VrrpConfig {
    pub instances: Vec<VrrpInstance>,
}
