//! `[[vrrp.instance]]`: director failover.

use std::collections::HashSet;
use std::net::IpAddr;
use std::path::PathBuf;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use toml::Spanned;

use super::error::{ConfigError, Lines};
use super::lb::LbConfig;
use super::values::{duration, duration_value, format_duration, RawDuration};

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

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct RawVrrp {
    #[serde(default)]
    pub instance: Vec<Spanned<RawInstance>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct RawInstance {
    pub name: Spanned<String>,
    pub interface: Spanned<String>,
    pub vrid: Spanned<i64>,
    pub priority: Spanned<i64>,
    pub version: Option<Spanned<i64>>,
    pub advert_int: Option<Spanned<RawDuration>>,
    pub preempt: Option<bool>,
    pub preempt_delay: Option<Spanned<RawDuration>>,
    pub vips: Spanned<Vec<Spanned<String>>>,
    #[serde(default)]
    pub unicast_peers: Vec<Spanned<String>>,
    pub auth_key_file: Option<Spanned<String>>,
    pub auth_pass: Option<Spanned<String>>,
    pub garp_count: Option<Spanned<i64>>,
    pub garp_interval: Option<Spanned<RawDuration>>,
    pub notify_master: Option<String>,
    pub notify_backup: Option<String>,
    pub notify_fault: Option<String>,
    pub notify_stop: Option<String>,
    pub notify_timeout: Option<Spanned<RawDuration>>,
    pub handover_window: Option<Spanned<RawDuration>>,
    pub real_server: Option<bool>,
    #[serde(default)]
    pub track_interface: Vec<Spanned<RawTrack>>,
    #[serde(default)]
    pub track_script: Vec<Spanned<RawScript>>,
    #[serde(default)]
    pub track_service: Vec<Spanned<RawTrack>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct RawScript {
    pub command: String,
    pub interval: Option<RawDuration>,
    pub timeout: Option<RawDuration>,
    #[serde(default)]
    pub weight: i64,
    pub fall: Option<i64>,
    pub rise: Option<i64>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct RawTrack {
    pub name: String,
    #[serde(default)]
    pub weight: i64,
}

const DEFAULT_ADVERT: Duration = Duration::from_secs(1);
const DEFAULT_HANDOVER: Duration = Duration::from_secs(30);

/// An interface name as the kernel allows it.
fn ifname(s: &str) -> Result<(), String> {
    if s.is_empty() || s.len() > 15 || s.contains(['/', ' ', '\t', ':']) || s == "." || s == ".." {
        Err(format!("{s:?} is not an interface name"))
    } else {
        Ok(())
    }
}

/// A virtual address that [`parse_vip`] refuses.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum VipError {
    #[error("{0:?} is not an address[/prefix]")]
    NotAddress(String),
    #[error("{text:?}: prefix must be 0..={max}")]
    Prefix { text: String, max: u8 },
    /// Unspecified, multicast and loopback addresses.
    #[error("{0:?} cannot be a virtual address")]
    NotVirtual(String),
}

/// `10.0.0.100/24`, `fd00::100/64`, or a bare address (a host prefix).
pub fn parse_vip(s: &str) -> Result<Vip, VipError> {
    let (a, p) = match s.split_once('/') {
        Some((a, p)) => (a, Some(p)),
        None => (s, None),
    };
    let addr: IpAddr = a.parse().map_err(|_| VipError::NotAddress(s.to_string()))?;
    let max = if addr.is_ipv4() { 32 } else { 128 };
    let prefix = match p {
        None => max,
        Some(p) => match p.parse::<u8>() {
            Ok(n) if n <= max => n,
            _ => {
                return Err(VipError::Prefix {
                    text: s.to_string(),
                    max,
                })
            }
        },
    };
    if addr.is_unspecified() || addr.is_multicast() || addr.is_loopback() {
        return Err(VipError::NotVirtual(s.to_string()));
    }
    Ok(Vip { addr, prefix })
}

/// A tracking weight: -254..=254, 0 = fault.
fn weight(w: i64) -> Result<i32, String> {
    match i32::try_from(w) {
        Ok(w) if (-254..=254).contains(&w) => Ok(w),
        _ => Err(format!(
            "{w} is out of range -254..=254 (0 = fault while down)"
        )),
    }
}

pub(super) fn validate(
    l: &Lines<'_>,
    raw: &RawVrrp,
    lb: &LbConfig,
    errs: &mut Vec<ConfigError>,
) -> VrrpConfig {
    let mut out = VrrpConfig::default();
    let mut names = HashSet::new();
    let mut routers = HashSet::new();
    for (i, inst) in raw.instance.iter().enumerate() {
        let r = inst.get_ref();
        let p = format!("vrrp.instance[{i}]");
        let before = errs.len();
        let mut ctx = Findings { l, p: &p, errs };
        let instance = instance(&mut ctx, r, lb, &mut names);
        if errs.len() != before {
            continue;
        }
        let v6 = instance.vips.first().is_some_and(|v| v.addr.is_ipv6());
        if !routers.insert((instance.interface.clone(), instance.vrid, v6)) {
            errs.push(l.err(
                Some(&r.vrid),
                format!("{p}.vrid"),
                format!(
                    "another instance is virtual router {} for {} on {}",
                    instance.vrid,
                    if v6 { "IPv6" } else { "IPv4" },
                    r.interface.get_ref()
                ),
            ));
            continue;
        }
        out.instances.push(instance);
    }
    out
}

/// One instance's place in the file (`vrrp.instance[2]`) and the errors found in it.
struct Findings<'a, 'b> {
    l: &'a Lines<'b>,
    p: &'a str,
    errs: &'a mut Vec<ConfigError>,
}

impl Findings<'_, '_> {
    fn bad(&mut self, span: Option<&dyn Spanless>, key: &str, reason: impl std::fmt::Display) {
        self.errs.push(ConfigError {
            file: self.l.file.to_string(),
            line: span.map(|s| self.l.line(s.start())),
            key: format!("{}.{key}", self.p),
            reason: reason.to_string(),
        });
    }
}

/// Validates one `[[vrrp.instance]]`, in the order of its keys' errors: the instance as far as
/// it could be read (the caller drops it when it has errors).
fn instance(
    ctx: &mut Findings<'_, '_>,
    r: &RawInstance,
    lb: &LbConfig,
    names: &mut HashSet<String>,
) -> VrrpInstance {
    let name = r.name.get_ref().clone();
    if name.is_empty() || name.contains(char::is_whitespace) {
        ctx.bad(
            Some(&r.name),
            "name",
            format!("{name:?} is not a name (no blanks)"),
        );
    } else if !names.insert(name.clone()) {
        ctx.bad(
            Some(&r.name),
            "name",
            format!("duplicate instance {name:?}"),
        );
    }
    if let Err(e) = ifname(r.interface.get_ref()) {
        ctx.bad(Some(&r.interface), "interface", e);
    }
    let (vrid, priority, version) = router(ctx, r);
    let advert_int = advert_int(ctx, r, version);
    let preempt_delay = match &r.preempt_delay {
        None => Duration::ZERO,
        Some(d) => duration(d).unwrap_or_else(|e| {
            ctx.bad(Some(d), "preempt-delay", e);
            Duration::ZERO
        }),
    };
    let vips = vips(ctx, r, version);
    let v6 = vips.first().is_some_and(|v| v.addr.is_ipv6());
    let unicast_peers = unicast_peers(ctx, r, v6);
    let (auth_key_file, auth_pass) = auth(ctx, r, version);
    let (garp_count, garp_interval) = garp(ctx, r);
    let (notify_timeout, handover_window) = hook_timers(ctx, r);
    let track_interfaces = track_interfaces(ctx, r);
    let track_scripts = track_scripts(ctx, r);
    let track_services = track_services(ctx, r, lb);
    VrrpInstance {
        name,
        interface: r.interface.get_ref().clone(),
        vrid,
        version,
        priority,
        advert_int,
        preempt: r.preempt.unwrap_or(true),
        preempt_delay,
        vips,
        unicast_peers,
        auth_key_file,
        auth_pass,
        garp_count,
        garp_interval,
        notify: Notify {
            master: r.notify_master.clone(),
            backup: r.notify_backup.clone(),
            fault: r.notify_fault.clone(),
            stop: r.notify_stop.clone(),
        },
        notify_timeout,
        handover_window,
        real_server: r.real_server.unwrap_or(false),
        track_interfaces,
        track_scripts,
        track_services,
    }
}

/// `vrid`, `priority` and `version`.
fn router(ctx: &mut Findings<'_, '_>, r: &RawInstance) -> (u8, u8, u8) {
    let vrid = match u8::try_from(*r.vrid.get_ref()) {
        Ok(v) if v >= 1 => v,
        _ => {
            ctx.bad(
                Some(&r.vrid),
                "vrid",
                format!("{} is out of range 1..=255", r.vrid.get_ref()),
            );
            1
        }
    };
    let priority = match u8::try_from(*r.priority.get_ref()) {
        Ok(v) if v >= 1 => v,
        _ => {
            ctx.bad(
                Some(&r.priority),
                "priority",
                format!(
                    "{} is out of range 1..=255 (255 = the address owner)",
                    r.priority.get_ref()
                ),
            );
            100
        }
    };
    let version = match r.version.as_ref().map(|v| *v.get_ref()) {
        None | Some(3) => 3,
        Some(2) => 2,
        Some(n) => {
            ctx.bad(
                r.version.as_ref().map(|s| s as &dyn Spanless),
                "version",
                format!("{n} is not 2 or 3"),
            );
            3
        }
    };
    (vrid, priority, version)
}

/// `advert-int`, in the units of the version's packets.
fn advert_int(ctx: &mut Findings<'_, '_>, r: &RawInstance, version: u8) -> Duration {
    let Some(d) = &r.advert_int else {
        return DEFAULT_ADVERT;
    };
    match duration(d) {
        Err(e) => {
            ctx.bad(Some(d), "advert-int", e);
            DEFAULT_ADVERT
        }
        Ok(v)
            if version == 3
                && (v < Duration::from_millis(10)
                    || v > Duration::from_millis(40_950)
                    || v.subsec_nanos() % 10_000_000 != 0) =>
        {
            ctx.bad(
                Some(d),
                "advert-int",
                format!(
                    "{} is not a multiple of 10ms from 10ms to 40.95s (VRRPv3 counts centiseconds)",
                    format_duration(v)
                ),
            );
            DEFAULT_ADVERT
        }
        Ok(v)
            if version == 2 && (v.subsec_nanos() != 0 || v.as_secs() < 1 || v.as_secs() > 255) =>
        {
            ctx.bad(
                Some(d),
                "advert-int",
                format!(
                    "{} is not whole seconds from 1 to 255 (VRRPv2 counts seconds)",
                    format_duration(v)
                ),
            );
            DEFAULT_ADVERT
        }
        Ok(v) => v,
    }
}

/// `vips`: one family, at most 255, IPv6 with VRRPv3 only.
fn vips(ctx: &mut Findings<'_, '_>, r: &RawInstance, version: u8) -> Vec<Vip> {
    let mut vips = Vec::new();
    for v in r.vips.get_ref() {
        match parse_vip(v.get_ref()) {
            Ok(vip) => vips.push(vip),
            Err(e) => ctx.bad(Some(v), "vips", e),
        }
    }
    if r.vips.get_ref().is_empty() {
        ctx.bad(Some(&r.vips), "vips", "needs at least one virtual address");
    }
    let v6 = vips.first().is_some_and(|v| v.addr.is_ipv6());
    if vips.iter().any(|v| v.addr.is_ipv6() != v6) {
        ctx.bad(
            Some(&r.vips),
            "vips",
            "mixes IPv4 and IPv6: a VRRP instance carries one family (make two instances)",
        );
    }
    if v6 && version == 2 {
        ctx.bad(
            Some(&r.vips),
            "vips",
            "VRRPv2 carries IPv4 only: use version = 3",
        );
    }
    if vips.len() > 255 {
        ctx.bad(Some(&r.vips), "vips", "more than 255 addresses");
    }
    vips
}

/// `unicast-peers`: unicast addresses of the VIPs' family.
fn unicast_peers(ctx: &mut Findings<'_, '_>, r: &RawInstance, v6: bool) -> Vec<IpAddr> {
    let mut unicast_peers = Vec::new();
    for s in &r.unicast_peers {
        match s.get_ref().parse::<IpAddr>() {
            Ok(a) if a.is_ipv6() == v6 && !a.is_multicast() && !a.is_unspecified() => {
                unicast_peers.push(a)
            }
            Ok(_) => ctx.bad(
                Some(s),
                "unicast-peers",
                format!(
                    "{:?} is not a unicast address of the VIPs' family",
                    s.get_ref()
                ),
            ),
            Err(_) => ctx.bad(
                Some(s),
                "unicast-peers",
                format!("{:?} is not an address", s.get_ref()),
            ),
        }
    }
    unicast_peers
}

/// `auth-key-file` (VRRPv3) and `auth-pass` (VRRPv2).
fn auth(
    ctx: &mut Findings<'_, '_>,
    r: &RawInstance,
    version: u8,
) -> (Option<PathBuf>, Option<String>) {
    let auth_key_file = r.auth_key_file.as_ref().and_then(|f| {
        if f.get_ref().is_empty() {
            ctx.bad(Some(f), "auth-key-file", "an empty path");
            None
        } else if version == 2 {
            ctx.bad(
                Some(f),
                "auth-key-file",
                "herd's authentication is VRRPv3 only",
            );
            None
        } else {
            Some(PathBuf::from(f.get_ref()))
        }
    });
    let auth_pass = r.auth_pass.as_ref().and_then(|pw| {
        if version != 2 {
            ctx.bad(
                Some(pw),
                "auth-pass",
                "VRRPv3 has no password (RFC 5798 §9): use auth-key-file between herd directors",
            );
            None
        } else if pw.get_ref().is_empty() || pw.get_ref().len() > 8 {
            ctx.bad(Some(pw), "auth-pass", "must be 1 to 8 bytes");
            None
        } else {
            Some(pw.get_ref().clone())
        }
    });
    (auth_key_file, auth_pass)
}

/// `garp-count` and `garp-interval`.
fn garp(ctx: &mut Findings<'_, '_>, r: &RawInstance) -> (u32, Duration) {
    let garp_count = match &r.garp_count {
        None => 3,
        Some(n) => match u32::try_from(*n.get_ref()) {
            Ok(v) if v <= 100 => v,
            _ => {
                ctx.bad(
                    Some(n),
                    "garp-count",
                    format!("{} is out of range 0..=100", n.get_ref()),
                );
                3
            }
        },
    };
    let garp_interval = match &r.garp_interval {
        None => Duration::from_millis(100),
        Some(d) => duration(d).unwrap_or_else(|e| {
            ctx.bad(Some(d), "garp-interval", e);
            Duration::from_millis(100)
        }),
    };
    (garp_count, garp_interval)
}

/// `notify-timeout` and `handover-window`.
fn hook_timers(ctx: &mut Findings<'_, '_>, r: &RawInstance) -> (Duration, Duration) {
    let notify_timeout = match &r.notify_timeout {
        None => Duration::from_secs(10),
        Some(d) => match duration(d) {
            Ok(v) if !v.is_zero() => v,
            Ok(_) => {
                ctx.bad(Some(d), "notify-timeout", "must be above 0");
                Duration::from_secs(10)
            }
            Err(e) => {
                ctx.bad(Some(d), "notify-timeout", e);
                Duration::from_secs(10)
            }
        },
    };
    let handover_window = match &r.handover_window {
        None => DEFAULT_HANDOVER,
        Some(d) => match duration(d) {
            Ok(v) if v <= Duration::from_secs(3600) => v,
            Ok(_) => {
                ctx.bad(Some(d), "handover-window", "must be at most 1h");
                DEFAULT_HANDOVER
            }
            Err(e) => {
                ctx.bad(Some(d), "handover-window", e);
                DEFAULT_HANDOVER
            }
        },
    };
    (notify_timeout, handover_window)
}

fn track_interfaces(ctx: &mut Findings<'_, '_>, r: &RawInstance) -> Vec<TrackInterface> {
    let mut track_interfaces = Vec::new();
    for t in &r.track_interface {
        let tr = t.get_ref();
        if let Err(e) = ifname(&tr.name) {
            ctx.bad(Some(t), "track-interface.name", e);
        }
        match weight(tr.weight) {
            Ok(w) => track_interfaces.push(TrackInterface {
                name: tr.name.clone(),
                weight: w,
            }),
            Err(e) => ctx.bad(Some(t), "track-interface.weight", e),
        }
    }
    track_interfaces
}

fn track_scripts(ctx: &mut Findings<'_, '_>, r: &RawInstance) -> Vec<TrackScript> {
    let dur = |v: &Option<RawDuration>, default: Duration| match v {
        None => Ok(default),
        Some(d) => match duration_value(d) {
            Ok(v) if !v.is_zero() => Ok(v),
            Ok(_) => Err("must be above 0".to_string()),
            Err(e) => Err(e.to_string()),
        },
    };
    let count = |v: Option<i64>| match v {
        None => Ok(1),
        Some(n) if (1..=100).contains(&n) => Ok(n as u32),
        Some(n) => Err(format!("{n} is out of range 1..=100")),
    };
    let mut track_scripts = Vec::new();
    for t in &r.track_script {
        let sc = t.get_ref();
        if sc.command.trim().is_empty() {
            ctx.bad(Some(t), "track-script.command", "is empty");
        }
        let interval = dur(&sc.interval, Duration::from_secs(1))
            .map_err(|e| ctx.bad(Some(t), "track-script.interval", e));
        let timeout = dur(&sc.timeout, Duration::from_secs(1))
            .map_err(|e| ctx.bad(Some(t), "track-script.timeout", e));
        let w = weight(sc.weight).map_err(|e| ctx.bad(Some(t), "track-script.weight", e));
        let fall = count(sc.fall).map_err(|e| ctx.bad(Some(t), "track-script.fall", e));
        let rise = count(sc.rise).map_err(|e| ctx.bad(Some(t), "track-script.rise", e));
        if let (Ok(interval), Ok(timeout), Ok(weight), Ok(fall), Ok(rise)) =
            (interval, timeout, w, fall, rise)
        {
            track_scripts.push(TrackScript {
                command: sc.command.clone(),
                interval,
                timeout,
                weight,
                fall,
                rise,
            });
        }
    }
    track_scripts
}

fn track_services(ctx: &mut Findings<'_, '_>, r: &RawInstance, lb: &LbConfig) -> Vec<TrackService> {
    let mut track_services = Vec::new();
    for t in &r.track_service {
        let tr = t.get_ref();
        if !lb
            .services
            .iter()
            .any(|s| s.spec.name.as_deref() == Some(tr.name.as_str()))
        {
            ctx.bad(
                Some(t),
                "track-service.name",
                format!("no [[lb.service]] is named {:?}", tr.name),
            );
        }
        match weight(tr.weight) {
            Ok(w) => track_services.push(TrackService {
                name: tr.name.clone(),
                weight: w,
            }),
            Err(e) => ctx.bad(Some(t), "track-service.weight", e),
        }
    }
    track_services
}

/// Anything with a place in the file.
trait Spanless {
    fn start(&self) -> usize;
}

impl<T> Spanless for Spanned<T> {
    fn start(&self) -> usize {
        self.span().start
    }
}

// Serialize-only mirror, used by `Config::to_toml`.

#[derive(Serialize)]
#[serde(rename_all = "kebab-case")]
pub(super) struct VrrpOut {
    instance: Vec<InstanceOut>,
}

#[derive(Serialize)]
#[serde(rename_all = "kebab-case")]
struct InstanceOut {
    name: String,
    interface: String,
    vrid: u8,
    priority: u8,
    version: u8,
    advert_int: String,
    preempt: bool,
    preempt_delay: String,
    vips: Vec<String>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    unicast_peers: Vec<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    auth_key_file: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    auth_pass: Option<String>,
    garp_count: u32,
    garp_interval: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    notify_master: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    notify_backup: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    notify_fault: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    notify_stop: Option<String>,
    notify_timeout: String,
    handover_window: String,
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    real_server: bool,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    track_interface: Vec<TrackOut>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    track_script: Vec<ScriptOut>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    track_service: Vec<TrackOut>,
}

#[derive(Serialize)]
struct ScriptOut {
    command: String,
    interval: String,
    timeout: String,
    weight: i32,
    fall: u32,
    rise: u32,
}

#[derive(Serialize)]
struct TrackOut {
    name: String,
    weight: i32,
}

impl From<&VrrpConfig> for VrrpOut {
    fn from(c: &VrrpConfig) -> VrrpOut {
        VrrpOut {
            instance: c
                .instances
                .iter()
                .map(|i| InstanceOut {
                    name: i.name.clone(),
                    interface: i.interface.clone(),
                    vrid: i.vrid,
                    priority: i.priority,
                    version: i.version,
                    advert_int: format_duration(i.advert_int),
                    preempt: i.preempt,
                    preempt_delay: format_duration(i.preempt_delay),
                    vips: i.vips.iter().map(|v| v.to_string()).collect(),
                    unicast_peers: i.unicast_peers.iter().map(|a| a.to_string()).collect(),
                    auth_key_file: i.auth_key_file.as_ref().map(|p| p.display().to_string()),
                    auth_pass: i.auth_pass.clone(),
                    garp_count: i.garp_count,
                    garp_interval: format_duration(i.garp_interval),
                    notify_master: i.notify.master.clone(),
                    notify_backup: i.notify.backup.clone(),
                    notify_fault: i.notify.fault.clone(),
                    notify_stop: i.notify.stop.clone(),
                    notify_timeout: format_duration(i.notify_timeout),
                    handover_window: format_duration(i.handover_window),
                    real_server: i.real_server,
                    track_interface: i
                        .track_interfaces
                        .iter()
                        .map(|t| TrackOut {
                            name: t.name.clone(),
                            weight: t.weight,
                        })
                        .collect(),
                    track_script: i
                        .track_scripts
                        .iter()
                        .map(|t| ScriptOut {
                            command: t.command.clone(),
                            interval: format_duration(t.interval),
                            timeout: format_duration(t.timeout),
                            weight: t.weight,
                            fall: t.fall,
                            rise: t.rise,
                        })
                        .collect(),
                    track_service: i
                        .track_services
                        .iter()
                        .map(|t| TrackOut {
                            name: t.name.clone(),
                            weight: t.weight,
                        })
                        .collect(),
                })
                .collect(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::Config;
    use super::*;

    fn parse(body: &str) -> Result<Config, String> {
        Config::parse("t.toml", body).map_err(|e| e.to_string())
    }

    const MIN: &str = r#"
[[vrrp.instance]]
name = "VI_1"
interface = "eth0"
vrid = 51
priority = 150
advert-int = "100ms"
vips = ["10.0.0.100/24", "10.0.0.101"]
"#;

    #[test]
    fn defaults_and_round_trip() {
        let cfg = parse(MIN).unwrap();
        let i = &cfg.vrrp.instances[0];
        assert_eq!((i.vrid, i.priority, i.version), (51, 150, 3));
        assert_eq!(i.interval_cs(), 10);
        assert!(i.preempt);
        assert_eq!(i.vips[1].prefix, 32);
        assert_eq!(
            (i.garp_count, i.garp_interval),
            (3, Duration::from_millis(100))
        );
        assert_eq!(i.handover_window, Duration::from_secs(30));
        let again = Config::parse("again.toml", &cfg.to_toml()).unwrap();
        assert_eq!(again.vrrp, cfg.vrrp);
    }

    fn check(replace: (&str, &str), want: &str) {
        let body = MIN.replace(replace.0, replace.1);
        let e = parse(&body).expect_err(&body);
        assert!(e.contains(want), "{e}\nwanted: {want}");
    }

    #[test]
    fn bad_values_name_line_and_key() {
        check(
            ("vrid = 51", "vrid = 0"),
            "t.toml:5: vrrp.instance[0].vrid: 0 is out of range",
        );
        check(
            ("priority = 150", "priority = 256"),
            "vrrp.instance[0].priority: 256",
        );
        check(
            ("advert-int = \"100ms\"", "advert-int = \"105ms\""),
            "multiple of 10ms",
        );
        check(
            (
                "advert-int = \"100ms\"",
                "version = 2\nadvert-int = \"100ms\"",
            ),
            "whole seconds",
        );
        check(("\"10.0.0.101\"", "\"fd00::1\""), "mixes IPv4 and IPv6");
        check(
            ("\"10.0.0.101\"", "\"10.0.0.101/33\""),
            "prefix must be 0..=32",
        );
        check(
            ("\"10.0.0.101\"", "\"224.0.0.18\""),
            "cannot be a virtual address",
        );
        check(
            (
                "interface = \"eth0\"",
                "interface = \"a-very-long-interface\"",
            ),
            "not an interface name",
        );
        check(
            ("vips = [\"10.0.0.100/24\", \"10.0.0.101\"]", "vips = []"),
            "at least one",
        );
        check(
            ("name = \"VI_1\"", "name = \"VI_1\"\nauth-pass = \"x\""),
            "VRRPv3 has no password",
        );
        check(
            ("name = \"VI_1\"", "name = \"VI_1\"\nbogus = 1"),
            "unknown field",
        );
        check(
            (
                "name = \"VI_1\"",
                "name = \"VI_1\"\nunicast-peers = [\"fd00::2\"]",
            ),
            "not a unicast address of the VIPs' family",
        );
        check(
            (
                "name = \"VI_1\"",
                "name = \"VI_1\"\ntrack-interface = [{ name = \"eth1\", weight = 300 }]",
            ),
            "out of range -254..=254",
        );
        check(
            (
                "name = \"VI_1\"",
                "name = \"VI_1\"\nhandover-window = \"2h\"",
            ),
            "vrrp.instance[0].handover-window: must be at most 1h",
        );
    }

    #[test]
    fn scripts_and_services_are_tracked() {
        let body = format!(
            "{}{MIN}track-script = [{{ command = \"pidof nginx\", interval = \"2s\", weight = -50, fall = 2 }}]\ntrack-service = [{{ name = \"web\", weight = -60 }}]\n",
            "[[lb.service]]\nname = \"web\"\naddress = \"10.0.0.100:80\"\n"
        );
        let cfg = parse(&body).unwrap();
        let i = &cfg.vrrp.instances[0];
        assert_eq!(
            i.track_scripts,
            vec![TrackScript {
                command: "pidof nginx".into(),
                interval: Duration::from_secs(2),
                timeout: Duration::from_secs(1),
                weight: -50,
                fall: 2,
                rise: 1,
            }]
        );
        assert_eq!(i.track_services[0].weight, -60);
        let again = Config::parse("again.toml", &cfg.to_toml()).unwrap();
        assert_eq!(again.vrrp, cfg.vrrp);
        let e = parse(&format!("{MIN}track-service = [{{ name = \"nope\" }}]\n")).unwrap_err();
        assert!(
            e.contains("track-service.name: no [[lb.service]] is named \"nope\""),
            "{e}"
        );
        let e = parse(&format!(
            "{MIN}track-script = [{{ command = \"true\", fall = 0 }}]\n"
        ))
        .unwrap_err();
        assert!(
            e.contains("track-script.fall: 0 is out of range 1..=100"),
            "{e}"
        );
    }

    #[test]
    fn handover_can_be_turned_off() {
        let cfg = parse(&MIN.replace(
            "name = \"VI_1\"",
            "name = \"VI_1\"\nhandover-window = \"0s\"",
        ))
        .unwrap();
        assert_eq!(cfg.vrrp.instances[0].handover_window, Duration::ZERO);
        let again = Config::parse("again.toml", &cfg.to_toml()).unwrap();
        assert_eq!(again.vrrp, cfg.vrrp);
    }

    #[test]
    fn real_server_role_is_off_unless_asked_for() {
        assert!(!parse(MIN).unwrap().vrrp.instances[0].real_server);
        let cfg =
            parse(&MIN.replace("name = \"VI_1\"", "name = \"VI_1\"\nreal-server = true")).unwrap();
        assert!(cfg.vrrp.instances[0].real_server);
        let again = Config::parse("again.toml", &cfg.to_toml()).unwrap();
        assert_eq!(again.vrrp, cfg.vrrp);
        let e = parse(&MIN.replace("name = \"VI_1\"", "name = \"VI_1\"\nreal-server = \"yes\""))
            .unwrap_err();
        assert!(e.contains("real-server"), "{e}");
    }

    #[test]
    fn one_router_per_vrid_family_and_interface() {
        let two = format!("{MIN}{}", MIN.replace("VI_1", "VI_2"));
        let e = parse(&two).unwrap_err();
        assert!(e.contains("another instance is virtual router 51"), "{e}");
        let two = format!(
            "{MIN}{}",
            MIN.replace("VI_1", "VI_2")
                .replace("vrid = 51", "vrid = 52")
        );
        assert_eq!(parse(&two).unwrap().vrrp.instances.len(), 2);
        let dup = format!("{MIN}{}", MIN.replace("vrid = 51", "vrid = 52"));
        assert!(parse(&dup).unwrap_err().contains("duplicate instance"));
    }

    #[test]
    fn v2_with_password() {
        let cfg = parse(&MIN.replace(
            "advert-int = \"100ms\"",
            "version = 2\nadvert-int = 1\nauth-pass = \"secret\"",
        ))
        .unwrap();
        assert_eq!(cfg.vrrp.instances[0].interval_cs(), 100);
        assert_eq!(cfg.vrrp.instances[0].auth_pass.as_deref(), Some("secret"));
        // Shown through the web, the password is not.
        let mut shown = cfg.clone();
        shown.redact_secrets();
        let out = shown.to_toml();
        assert!(
            !out.contains("s3cret") && !out.contains("\"secret\""),
            "{out}"
        );
        assert!(
            out.contains("auth-pass = \"(redacted; see the config file)\""),
            "{out}"
        );
    }
}
