//! The director's vocabulary: virtual services, real servers, schedulers, timeouts.
//!
//! These types are shared by the config, the API, the ipvsadm front end and the data planes, so
//! that every layer speaks about the same things in the same words.

use std::fmt;
use std::net::{IpAddr, SocketAddr};
use std::str::FromStr;

use serde::{Deserialize, Serialize};

/// Transport protocol of a virtual service (ipvsadm `-t` / `-u`).
#[derive(
    Debug,
    Clone,
    Copy,
    PartialEq,
    Eq,
    Hash,
    PartialOrd,
    Ord,
    Serialize,
    Deserialize,
    schemars::JsonSchema,
)]
#[serde(rename_all = "lowercase")]
pub enum Protocol {
    Tcp,
    Udp,
}

impl Protocol {
    /// The upper-case name ipvsadm prints in its `Prot` column.
    pub fn ipvs_name(self) -> &'static str {
        match self {
            Protocol::Tcp => "TCP",
            Protocol::Udp => "UDP",
        }
    }
}

impl fmt::Display for Protocol {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Protocol::Tcp => "tcp",
            Protocol::Udp => "udp",
        })
    }
}

impl FromStr for Protocol {
    type Err = ModelError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.to_ascii_lowercase().as_str() {
            "tcp" => Ok(Protocol::Tcp),
            "udp" => Ok(Protocol::Udp),
            _ => Err(ModelError::UnknownProtocol(s.to_string())),
        }
    }
}

/// A name or mask of the director's vocabulary that does not parse.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ModelError {
    #[error("unknown protocol {0:?} (expected tcp or udp)")]
    UnknownProtocol(String),
    #[error("unknown scheduler {0:?} (expected one of {names})", names = scheduler_names())]
    UnknownScheduler(String),
    #[error("unknown scheduler flag {0:?}")]
    UnknownSchedFlag(String),
    #[error("unknown forwarding method {0:?} (expected route, masq or tunnel)")]
    UnknownForward(String),
    #[error("invalid netmask {0:?}")]
    InvalidNetmask(String),
    #[error("netmask {0:?} is not contiguous")]
    NonContiguousNetmask(String),
}

/// The schedulers' names, space-separated, for [`ModelError::UnknownScheduler`].
fn scheduler_names() -> String {
    let names: Vec<&str> = SchedulerKind::ALL.iter().map(|k| k.name()).collect();
    names.join(" ")
}

/// The fourteen IPVS scheduling methods, with the kernel's names.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum SchedulerKind {
    /// Round robin.
    Rr,
    /// Weighted round robin.
    Wrr,
    /// Least connection.
    Lc,
    /// Weighted least connection (ipvsadm's default).
    Wlc,
    /// Locality-based least connection.
    Lblc,
    /// Locality-based least connection with replication.
    Lblcr,
    /// Destination hashing.
    Dh,
    /// Source hashing.
    Sh,
    /// Shortest expected delay.
    Sed,
    /// Never queue.
    Nq,
    /// Weighted failover.
    Fo,
    /// Weighted overflow.
    Ovf,
    /// Maglev hashing.
    Mh,
    /// Weighted random twos choice.
    Twos,
}

impl SchedulerKind {
    pub const ALL: [SchedulerKind; 14] = [
        SchedulerKind::Rr,
        SchedulerKind::Wrr,
        SchedulerKind::Lc,
        SchedulerKind::Wlc,
        SchedulerKind::Lblc,
        SchedulerKind::Lblcr,
        SchedulerKind::Dh,
        SchedulerKind::Sh,
        SchedulerKind::Sed,
        SchedulerKind::Nq,
        SchedulerKind::Fo,
        SchedulerKind::Ovf,
        SchedulerKind::Mh,
        SchedulerKind::Twos,
    ];

    pub fn name(self) -> &'static str {
        match self {
            SchedulerKind::Rr => "rr",
            SchedulerKind::Wrr => "wrr",
            SchedulerKind::Lc => "lc",
            SchedulerKind::Wlc => "wlc",
            SchedulerKind::Lblc => "lblc",
            SchedulerKind::Lblcr => "lblcr",
            SchedulerKind::Dh => "dh",
            SchedulerKind::Sh => "sh",
            SchedulerKind::Sed => "sed",
            SchedulerKind::Nq => "nq",
            SchedulerKind::Fo => "fo",
            SchedulerKind::Ovf => "ovf",
            SchedulerKind::Mh => "mh",
            SchedulerKind::Twos => "twos",
        }
    }
}

impl fmt::Display for SchedulerKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for SchedulerKind {
    type Err = ModelError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        SchedulerKind::ALL
            .into_iter()
            .find(|k| k.name() == s)
            .ok_or_else(|| ModelError::UnknownScheduler(s.to_string()))
    }
}

/// Scheduler flags (ipvsadm `-b`): hashing variations of `sh` and `mh`.
#[derive(
    Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize, schemars::JsonSchema,
)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
pub struct SchedFlags {
    /// sh/mh: if the hashed real server is unavailable, pick another one (`sh-fallback`,
    /// `mh-fallback`).
    #[serde(default, skip_serializing_if = "is_false")]
    pub fallback: bool,
    /// sh/mh: hash the source port too (`sh-port`, `mh-port`).
    #[serde(default, skip_serializing_if = "is_false")]
    pub port: bool,
}

fn is_false(b: &bool) -> bool {
    !*b
}

impl SchedFlags {
    pub fn is_empty(&self) -> bool {
        !self.fallback && !self.port
    }

    /// The flags as ipvsadm spells them for a scheduler, e.g. `sh-fallback,sh-port`.
    pub fn ipvs_names(&self, kind: SchedulerKind) -> Vec<String> {
        let prefix = match kind {
            SchedulerKind::Mh => "mh",
            _ => "sh",
        };
        let mut out = Vec::new();
        if self.fallback {
            out.push(format!("{prefix}-fallback"));
        }
        if self.port {
            out.push(format!("{prefix}-port"));
        }
        out
    }

    /// Parses ipvsadm's `-b` argument: a comma-separated list of flag names.
    pub fn parse_ipvs(s: &str) -> Result<Self, ModelError> {
        let mut flags = SchedFlags::default();
        for part in s.split(',').map(str::trim).filter(|p| !p.is_empty()) {
            match part {
                "sh-fallback" | "mh-fallback" => flags.fallback = true,
                "sh-port" | "mh-port" => flags.port = true,
                other => return Err(ModelError::UnknownSchedFlag(other.to_string())),
            }
        }
        Ok(flags)
    }
}

/// Packet-forwarding method of a real server (ipvsadm `-g`, `-m`, `-i`).
///
/// The userspace `proxy` data plane is a full proxy and forwards every method the same way
/// (like `masq`); the kernel data planes honour the method. The method is kept and shown so that
/// rules round-trip through `ipvsadm -S`/`-R` unchanged.
#[derive(
    Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize, schemars::JsonSchema,
)]
#[serde(rename_all = "lowercase")]
pub enum Forward {
    /// Direct routing, ipvsadm's default (`-g`, "Route").
    #[default]
    Route,
    /// NAT (`-m`, "Masq").
    Masq,
    /// IP-in-IP tunnelling (`-i`, "Tunnel").
    Tunnel,
}

impl Forward {
    /// The word ipvsadm prints in its `Forward` column.
    pub fn ipvs_name(self) -> &'static str {
        match self {
            Forward::Route => "Route",
            Forward::Masq => "Masq",
            Forward::Tunnel => "Tunnel",
        }
    }

    /// The ipvsadm option that selects this method.
    pub fn ipvs_flag(self) -> &'static str {
        match self {
            Forward::Route => "-g",
            Forward::Masq => "-m",
            Forward::Tunnel => "-i",
        }
    }
}

impl fmt::Display for Forward {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Forward::Route => "route",
            Forward::Masq => "masq",
            Forward::Tunnel => "tunnel",
        })
    }
}

impl FromStr for Forward {
    type Err = ModelError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.to_ascii_lowercase().as_str() {
            "route" | "dr" | "gatewaying" => Ok(Forward::Route),
            "masq" | "nat" | "masquerading" => Ok(Forward::Masq),
            "tunnel" | "tun" | "ipip" => Ok(Forward::Tunnel),
            _ => Err(ModelError::UnknownForward(s.to_string())),
        }
    }
}

/// Identity of a virtual service: protocol and VIP:port.
#[derive(
    Debug,
    Clone,
    Copy,
    PartialEq,
    Eq,
    Hash,
    PartialOrd,
    Ord,
    Serialize,
    Deserialize,
    schemars::JsonSchema,
)]
pub struct ServiceKey {
    pub protocol: Protocol,
    pub address: SocketAddr,
}

impl fmt::Display for ServiceKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {}", self.protocol.ipvs_name(), self.address)
    }
}

/// Persistence (ipvsadm `-p [timeout]` and `-M netmask`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
pub struct Persistence {
    /// Seconds a client stays bound to its real server after its last connection ends.
    pub timeout: u32,
    /// Prefix length that groups clients: 32 (or 128) = one client address; 24 = a /24.
    pub prefix: u8,
}

/// Masks `ip` to `prefix` bits (the persistence granularity).
pub fn mask_addr(ip: IpAddr, prefix: u8) -> IpAddr {
    match ip {
        IpAddr::V4(v4) => {
            let p = u32::from(prefix.min(32));
            let mask = if p == 0 { 0 } else { u32::MAX << (32 - p) };
            IpAddr::V4((u32::from(v4) & mask).into())
        }
        IpAddr::V6(v6) => {
            let p = u32::from(prefix.min(128));
            let mask = if p == 0 { 0 } else { u128::MAX << (128 - p) };
            IpAddr::V6((u128::from(v6) & mask).into())
        }
    }
}

/// Converts a dotted netmask (`255.255.255.0`) into a prefix length, refusing non-contiguous
/// masks.
pub fn netmask_to_prefix(mask: &str) -> Result<u8, ModelError> {
    if let Ok(n) = mask.parse::<u8>() {
        if n <= 128 {
            return Ok(n);
        }
    }
    let addr: IpAddr = mask
        .parse()
        .map_err(|_| ModelError::InvalidNetmask(mask.to_string()))?;
    let (bits, width) = match addr {
        IpAddr::V4(v4) => (u128::from(u32::from(v4)) << 96, 32u32),
        IpAddr::V6(v6) => (u128::from(v6), 128u32),
    };
    let ones = bits.leading_ones();
    if bits.checked_shl(ones).unwrap_or(0) != 0 {
        return Err(ModelError::NonContiguousNetmask(mask.to_string()));
    }
    Ok(ones.min(width) as u8)
}

/// Renders a prefix as ipvsadm prints the persistence mask: dotted for IPv4, a number for IPv6.
pub fn prefix_to_netmask(prefix: u8, v6: bool) -> String {
    if v6 {
        return prefix.to_string();
    }
    let p = u32::from(prefix.min(32));
    let mask = if p == 0 { 0 } else { u32::MAX << (32 - p) };
    std::net::Ipv4Addr::from(mask).to_string()
}

/// A virtual service as configured.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
pub struct ServiceSpec {
    #[serde(flatten)]
    pub key: ServiceKey,
    /// Optional human name (used by `herd lb` and the dashboard).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    pub scheduler: SchedulerKind,
    #[serde(default, skip_serializing_if = "SchedFlags::is_empty")]
    pub sched_flags: SchedFlags,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub persistence: Option<Persistence>,
    /// Send a PROXY protocol v2 header to real servers so they see the client address.
    #[serde(default, skip_serializing_if = "is_false")]
    pub proxy_protocol: bool,
}

/// Largest weight ipvsadm accepts.
pub const MAX_WEIGHT: u32 = 65535;
/// Largest connection threshold ipvsadm accepts.
pub const MAX_THRESHOLD: u32 = 65535;

/// A real server (destination) as configured.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
pub struct RealSpec {
    pub address: SocketAddr,
    /// 0..=65535; 0 quiesces the real server: no new connections, existing ones continue.
    pub weight: u32,
    /// ipvsadm `-x`: no new connections once this many are open (0 = no limit).
    #[serde(default)]
    pub upper_threshold: u32,
    /// ipvsadm `-y`: accept new connections again below this many (0 = ¾ of the upper one).
    #[serde(default)]
    pub lower_threshold: u32,
    #[serde(default)]
    pub forward: Forward,
}

/// Connection timeouts (ipvsadm `--set tcp tcpfin udp`), in seconds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
pub struct Timeouts {
    /// Idle timeout of an established TCP connection.
    pub tcp: u32,
    /// How long a half-closed TCP connection (one side sent FIN) may linger.
    pub tcp_fin: u32,
    /// Idle timeout of a UDP session.
    pub udp: u32,
}

impl Default for Timeouts {
    /// The kernel's defaults: 900 s, 120 s, 300 s.
    fn default() -> Self {
        Timeouts {
            tcp: 900,
            tcp_fin: 120,
            udp: 300,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scheduler_names_round_trip() {
        for k in SchedulerKind::ALL {
            assert_eq!(k.name().parse::<SchedulerKind>(), Ok(k));
        }
        assert!("fastest".parse::<SchedulerKind>().is_err());
    }

    #[test]
    fn netmasks() {
        assert_eq!(netmask_to_prefix("255.255.255.0"), Ok(24));
        assert_eq!(netmask_to_prefix("255.255.255.255"), Ok(32));
        assert_eq!(netmask_to_prefix("0.0.0.0"), Ok(0));
        assert_eq!(netmask_to_prefix("64"), Ok(64));
        assert!(netmask_to_prefix("255.0.255.0").is_err());
        assert_eq!(prefix_to_netmask(24, false), "255.255.255.0");
        assert_eq!(
            mask_addr("10.1.2.3".parse().unwrap(), 24),
            "10.1.2.0".parse::<IpAddr>().unwrap()
        );
        assert_eq!(
            mask_addr("2001:db8::1".parse().unwrap(), 64),
            "2001:db8::".parse::<IpAddr>().unwrap()
        );
    }
}

/// A virtual service's quorum (keepalived's `quorum`, `hysteresis`, `sorry_server`): while
/// fewer than `min` real servers are up (in service, weight > 0, passing their health checks),
/// new connections go to the sorry server instead. The quorum is lost below
/// `min - hysteresis` and regained at `min + hysteresis`, so one server flapping at the edge
/// does not switch the service back and forth.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "kebab-case")]
pub struct Quorum {
    pub min: u32,
    #[serde(default)]
    pub hysteresis: u32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sorry_server: Option<SocketAddr>,
}
