//! The control API: one set of types for the CLI (over the Unix socket), the dashboard's HTTP API
//! (herd-web) and the mon port.
//!
//! Wire format on the Unix socket: one JSON [`Request`] per line, answered by one JSON
//! [`Response`] per line. A connection may carry several requests in sequence.

use std::net::SocketAddr;

use serde::{Deserialize, Serialize};

use crate::model::{
    Forward, Persistence, Quorum, RealSpec, SchedFlags, SchedulerKind, ServiceKey, ServiceSpec,
    Timeouts,
};

/// Version of the API, bumped on incompatible changes. 2: `EditService` and `EditReal` carry
/// the fields to change ([`ServiceEdit`], [`RealEdit`]); an absent field is kept, where in 1 it
/// took its default.
pub const API_VERSION: u32 = 2;

/// Largest request or response line accepted on the control socket.
pub const MAX_MESSAGE: usize = 16 << 20;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(tag = "op", rename_all = "kebab-case", deny_unknown_fields)]
pub enum Request {
    /// Daemon identity and uptime.
    Status,
    /// Re-read the config file and apply the difference.
    Reload,
    /// Virtual services with real servers, counters and rates.
    List {
        #[serde(default, skip_serializing_if = "Option::is_none")]
        service: Option<ServiceKey>,
    },
    AddService {
        service: ServiceSpec,
    },
    /// Change scheduler, flags, persistence, name or PROXY protocol of an existing service
    /// (the fields the edit gives).
    EditService {
        service: ServiceEdit,
    },
    DeleteService {
        service: ServiceKey,
    },
    /// Remove every virtual service (ipvsadm `-C`).
    Clear,
    AddReal {
        service: ServiceKey,
        real: RealSpec,
    },
    /// Change weight, thresholds or forwarding of a real server (the fields the edit gives).
    EditReal {
        service: ServiceKey,
        real: RealEdit,
    },
    DeleteReal {
        service: ServiceKey,
        address: SocketAddr,
    },
    /// Zero the counters of one service or of all (ipvsadm `-Z`).
    Zero {
        #[serde(default, skip_serializing_if = "Option::is_none")]
        service: Option<ServiceKey>,
    },
    GetTimeouts,
    /// Change timeouts; `0` leaves a value unchanged, as with ipvsadm `--set`.
    SetTimeouts {
        timeouts: Timeouts,
    },
    /// The connection table (ipvsadm `-L -c`).
    Connections,
    /// The effective state rendered as a config file (`herd lb save`); with `redact`, its
    /// secrets (login hashes, VRRPv2 passwords) replaced by a note.
    ExportConfig {
        #[serde(default, skip_serializing_if = "std::ops::Not::not")]
        redact: bool,
    },
    /// Every health check with its targets' states (`herd health list`).
    HealthList,
    /// Recent state changes, alerts and holds, newest last (`herd health history`).
    HealthHistory {
        #[serde(default, skip_serializing_if = "Option::is_none")]
        limit: Option<usize>,
    },
    /// Hold the alerts of a check, a target or both (mon's `ack`).
    HealthSilence {
        #[serde(default, skip_serializing_if = "Option::is_none")]
        check: Option<String>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        target: Option<String>,
        /// Seconds from now; `None` = until lifted.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        secs: Option<u64>,
        /// Also ends when every target it covers is up again (mon's `ack`).
        #[serde(default, skip_serializing_if = "std::ops::Not::not")]
        until_recovery: bool,
        author: String,
        reason: String,
    },
    HealthUnsilence {
        id: u64,
    },
    /// Stop (`disabled`) or resume running a check, or one of its targets (mon's
    /// `disable`/`enable`).
    HealthDisable {
        check: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        target: Option<String>,
        disabled: bool,
    },
    /// Send a test notification through every alert of a check.
    HealthTestAlert {
        check: String,
    },
    /// Past outages, newest last (mon's downtime log).
    HealthDowntime {
        #[serde(default, skip_serializing_if = "Option::is_none")]
        limit: Option<usize>,
    },
    /// An operator's drain, disable or enable of a real server (the dashboard's actions, `herd
    /// lb drain|disable|enable`). Kept across reloads while the real server stays configured.
    SetRealState {
        service: ServiceKey,
        address: SocketAddr,
        state: AdminState,
    },
    /// The nodes of `[nodes]` and how their agents answered the last ping (`herd ping`'s view,
    /// refreshed by the daemon every few seconds when it runs an agent).
    Nodes,
    /// VRRP instances: role, priority, master, transitions, counters.
    HaStatus,
    /// Planned hand-over: each named master instance (all if none named) resigns and stands by
    /// until `HaResume`.
    HaFailover {
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        instances: Vec<String>,
    },
    /// Ends a standby: the instances rank by their priority again.
    HaResume {
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        instances: Vec<String>,
    },
}

impl Request {
    /// Whether the request only reads. Listed by what reads, so that a request added later
    /// counts as a change (needing an admin, audited) on every door — the dashboard's
    /// generic route and the mon port — until it is named here.
    pub fn is_read(&self) -> bool {
        matches!(
            self,
            Request::Status
                | Request::List { .. }
                | Request::GetTimeouts
                | Request::Connections
                | Request::HealthList
                | Request::HealthHistory { .. }
                | Request::HealthDowntime { .. }
                | Request::HaStatus
                | Request::Nodes
        )
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(tag = "result", rename_all = "kebab-case")]
pub enum Response {
    Ok,
    Error(ApiError),
    /// The reload is applied; `pending` names the changed sections that only a restart
    /// applies (`lb.workers`, `vrrp`).
    Reloaded {
        pending: Vec<String>,
    },
    Status(DaemonStatus),
    Services {
        services: Vec<ServiceStatus>,
    },
    Timeouts {
        timeouts: Timeouts,
    },
    Connections {
        connections: Vec<ConnEntry>,
    },
    Config {
        toml: String,
    },
    Health {
        checks: Vec<HealthCheckStatus>,
        silences: Vec<SilenceStatus>,
    },
    HealthHistory {
        entries: Vec<HealthEvent>,
    },
    Downtime {
        entries: Vec<DowntimeEntry>,
    },
    Silenced {
        id: u64,
    },
    /// Outcomes of `HealthTestAlert`, one per alert rule.
    Deliveries {
        deliveries: Vec<DeliveryStatus>,
    },
    Ha {
        instances: Vec<VrrpStatus>,
    },
    /// The instances that `HaFailover` or `HaResume` changed.
    HaChanged {
        instances: Vec<String>,
    },
    Nodes {
        /// This node's agent name, when it runs one.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        this: Option<String>,
        nodes: Vec<NodeStatus>,
    },
}

/// A node of `[nodes]` as its agent answered the last ping.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "kebab-case")]
pub struct NodeStatus {
    pub name: String,
    /// The agent's address (`host:port`).
    pub address: String,
    /// Answered the last ping.
    pub up: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub version: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub uptime_secs: Option<u64>,
    /// 1, 5 and 15 minute load averages.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub load: Option<[f64; 3]>,
    /// Why it did not answer.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub error: String,
    /// Milliseconds since the Unix epoch of the last ping; 0 = not pinged yet.
    pub checked_ms: u64,
}

impl NodeStatus {
    /// A node that did not answer (or was not asked: `checked_ms` 0), and why.
    pub fn unanswered(name: String, address: String, error: String, checked_ms: u64) -> Self {
        NodeStatus {
            name,
            address,
            up: false,
            version: None,
            uptime_secs: None,
            load: None,
            error,
            checked_ms,
        }
    }
}

/// One VRRP instance, as `herd ha status` shows it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "kebab-case")]
pub struct VrrpStatus {
    pub name: String,
    pub interface: String,
    pub vrid: u8,
    pub version: u8,
    /// init, backup, master or fault.
    pub state: String,
    /// The priority in effect (after tracking).
    pub priority: u8,
    pub configured_priority: u8,
    /// After `herd ha failover`: ranks lowest and does not preempt until resumed.
    pub standby: bool,
    /// The master's address as last heard (ours while master).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub master: Option<String>,
    /// Our address on the interface, the adverts' source.
    pub address: String,
    pub advert_interval_ms: u64,
    pub vips: Vec<String>,
    /// The last few, most recent last.
    pub transitions: Vec<VrrpTransition>,
    /// State changes since the daemon started (the list above keeps only the last few).
    #[serde(default)]
    pub transitions_total: u64,
    pub adverts_sent: u64,
    pub adverts_received: u64,
    /// Received packets dropped, by reason (short, version, type, checksum, length, ttl, vrid,
    /// auth, interval, peer).
    pub dropped: std::collections::BTreeMap<String, u64>,
    /// A hand-over in progress (the VIPs parked here, or strays forwarded to the old master).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub handover: Option<String>,
    /// The real-server role (`real-server = true`) is on now: a backup holding the VIPs on
    /// `lo`, with ARP for them quiet.
    #[serde(default)]
    pub real_server: bool,
    /// Tracked interfaces, scripts and services, and how each stands.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tracking: Vec<TrackStatus>,
}

/// One tracked object of a VRRP instance.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "kebab-case")]
pub struct TrackStatus {
    /// interface, script or service.
    pub kind: String,
    /// The interface, the script's command, the service's name.
    pub name: String,
    pub passing: bool,
    /// Failing with a negative weight lowers the priority by it; passing with a positive one
    /// raises it; 0 = fault while failing.
    pub weight: i32,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "kebab-case")]
pub struct VrrpTransition {
    /// Milliseconds since the Unix epoch.
    pub at_ms: u64,
    pub from: String,
    pub to: String,
    pub reason: String,
}

/// A health check and its targets.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "kebab-case")]
pub struct HealthCheckStatus {
    pub name: String,
    #[serde(rename = "type")]
    pub kind: String,
    /// Its service, host group or `hosts`.
    pub group: String,
    pub interval_ms: u64,
    pub disabled: bool,
    /// Notifications sent through its alert rules since the daemon started (tests included),
    /// and those that failed.
    #[serde(default)]
    pub alerts_delivered: u64,
    #[serde(default)]
    pub alerts_failed: u64,
    pub targets: Vec<HealthTargetStatus>,
}

/// One target of a check: its state and its last result (latency, verdict, summary).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "kebab-case")]
pub struct HealthTargetStatus {
    pub target: String,
    /// `unknown`, `up` or `down`.
    pub status: String,
    /// Milliseconds since the Unix epoch of the last state change.
    pub since_ms: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_ms: Option<u64>,
    /// `ok`, `warning`, `critical` or `unknown`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub verdict: Option<String>,
    #[serde(default)]
    pub summary: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub latency_us: Option<u64>,
    pub flapping: bool,
    pub disabled: bool,
    /// The silence holding its alerts, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub silenced: Option<u64>,
}

/// A silence in force.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "kebab-case")]
pub struct SilenceStatus {
    pub id: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub check: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub until_ms: Option<u64>,
    /// Ends when every target it covers is up again (mon's `ack`).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub until_recovery: bool,
    pub author: String,
    pub reason: String,
    pub created_ms: u64,
}

/// One entry of the health history.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "kebab-case")]
pub struct HealthEvent {
    /// Milliseconds since the Unix epoch.
    pub time_ms: u64,
    pub check: String,
    /// Space-separated targets.
    pub targets: String,
    /// `up`, `down`, `alert`, `upalert`, `flapping`, `settled`, `held` or `test`.
    pub event: String,
    /// The summary, or the alert's sink and outcome.
    pub detail: String,
}

/// One outage of one target (mon's downtime log).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "kebab-case")]
pub struct DowntimeEntry {
    pub check: String,
    pub target: String,
    /// Milliseconds since the Unix epoch: when it went down and when it came back.
    pub down_ms: u64,
    pub up_ms: u64,
    /// The last failure's summary.
    pub summary: String,
}

/// The outcome of one alert run.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "kebab-case")]
pub struct DeliveryStatus {
    pub sink: String,
    pub ok: bool,
    pub error: String,
    pub took_ms: u64,
}

/// Why a request failed. The kinds map onto ipvsadm's error messages and exit codes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "kebab-case")]
pub enum ErrorKind {
    /// The request is malformed or a value is out of range.
    Invalid,
    ServiceExists,
    NoService,
    RealExists,
    NoReal,
    /// A listener could not be bound (address in use, not local, …).
    Bind,
    /// The config file could not be read or is invalid.
    Config,
    Internal,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct ApiError {
    pub kind: ErrorKind,
    pub message: String,
}

impl ApiError {
    pub fn new(kind: ErrorKind, message: impl Into<String>) -> Self {
        ApiError {
            kind,
            message: message.into(),
        }
    }
}

impl std::fmt::Display for ApiError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for ApiError {}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "kebab-case")]
pub struct DaemonStatus {
    pub version: String,
    pub api_version: u32,
    pub pid: u32,
    pub uptime_secs: u64,
    pub config_path: Option<String>,
    pub data_plane: String,
    pub workers: usize,
    pub reloads: u64,
}

/// Cumulative counters (ipvsadm `--stats`).
///
/// For TCP through the userspace proxy, "packets" are the chunks the proxy moved (one read or
/// one splice), not wire segments; for UDP they are datagrams.
#[derive(
    Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema,
)]
#[serde(rename_all = "kebab-case")]
pub struct Stats {
    pub conns: u64,
    pub pkts_in: u64,
    pub pkts_out: u64,
    pub bytes_in: u64,
    pub bytes_out: u64,
}

/// Rates per second, averaged like the kernel's estimator (ipvsadm `--rate`).
#[derive(
    Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema,
)]
#[serde(rename_all = "kebab-case")]
pub struct Rates {
    pub cps: u64,
    pub pps_in: u64,
    pub pps_out: u64,
    pub bps_in: u64,
    pub bps_out: u64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "kebab-case")]
pub struct RealStatus {
    #[serde(flatten)]
    pub spec: RealSpec,
    pub active_conns: u32,
    pub inactive_conns: u32,
    /// Persistence templates pointing at this real server.
    pub persistent_conns: u32,
    /// Above its upper threshold: no new connections until it falls below the lower one.
    pub overloaded: bool,
    /// Removed from the config but still carrying connections.
    pub draining: bool,
    /// The health monitor's verdict; `weight` above is 0 unless `up`.
    #[serde(default)]
    pub health: RealHealth,
    /// The weight as configured (`weight` above is what the schedulers see).
    #[serde(default)]
    pub configured_weight: u32,
    /// What an operator has done to it; `weight` above is 0 unless `enabled`.
    #[serde(default)]
    pub admin: AdminState,
    /// The service's sorry server, listed while it stands in for a lost quorum.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub sorry: bool,
    pub stats: Stats,
    pub rates: Rates,
}

/// A service's quorum and whether it holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "kebab-case")]
pub struct QuorumStatus {
    #[serde(flatten)]
    pub quorum: Quorum,
    /// Real servers up now (in service, weight > 0, passing their checks).
    pub up: u32,
    /// Below quorum: new connections go to the sorry server (if there is one).
    pub lost: bool,
}

impl RealStatus {
    /// In the kernel's table as ipvsadm would list it: not on its way out after a reload, not
    /// disabled by an operator, not removed by the health monitor.
    pub fn listed(&self) -> bool {
        !self.draining && self.admin != AdminState::Disabled && self.health != RealHealth::Removed
    }
}

/// What an operator has done to a real server, apart from its weight.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize, schemars::JsonSchema,
)]
#[serde(rename_all = "kebab-case")]
pub enum AdminState {
    /// In service at its configured weight.
    #[default]
    Enabled,
    /// No new connections (persistent clients included); open ones continue. Listed with
    /// weight 0.
    Draining,
    /// Out of the table as after `ipvsadm -d`; open connections continue. Not listed by
    /// `ipvsadm -L`, kept so that `enabled` brings it back.
    Disabled,
}

impl AdminState {
    pub fn as_str(self) -> &'static str {
        match self {
            AdminState::Enabled => "enabled",
            AdminState::Draining => "draining",
            AdminState::Disabled => "disabled",
        }
    }
}

/// What the health monitor has done to a real server.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize, schemars::JsonSchema,
)]
#[serde(rename_all = "kebab-case")]
pub enum RealHealth {
    /// In service (also: not monitored, or not checked yet).
    #[default]
    Up,
    /// Failing its checks: weight 0, open connections drain.
    Quiesced,
    /// Failing its checks: out of the table until it recovers.
    Removed,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "kebab-case")]
pub struct ServiceStatus {
    #[serde(flatten)]
    pub spec: ServiceSpec,
    pub reals: Vec<RealStatus>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub quorum: Option<QuorumStatus>,
    pub stats: Stats,
    pub rates: Rates,
}

/// One entry of the connection table (ipvsadm `-L -c`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "kebab-case")]
pub struct ConnEntry {
    pub protocol: crate::model::Protocol,
    /// Seconds until the entry expires if nothing happens.
    pub expire_secs: u32,
    /// ESTABLISHED, FIN_WAIT, CLOSE, UDP, NONE (persistence template), …
    pub state: String,
    pub client: SocketAddr,
    pub virtual_addr: SocketAddr,
    pub real: SocketAddr,
}

/// Helper for building a [`ServiceSpec`] with ipvsadm's defaults.
pub fn service_spec(key: ServiceKey, scheduler: SchedulerKind) -> ServiceSpec {
    ServiceSpec {
        key,
        name: None,
        scheduler,
        sched_flags: SchedFlags::default(),
        persistence: None::<Persistence>,
        proxy_protocol: false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::Protocol;

    #[test]
    fn requests_round_trip_as_json() {
        let key = ServiceKey {
            protocol: Protocol::Tcp,
            address: "127.0.0.1:80".parse().unwrap(),
        };
        let reqs = vec![
            Request::Status,
            Request::List { service: Some(key) },
            Request::AddService {
                service: service_spec(key, SchedulerKind::Wlc),
            },
            Request::SetTimeouts {
                timeouts: Timeouts::default(),
            },
        ];
        for r in reqs {
            let line = serde_json::to_string(&r).unwrap();
            assert!(!line.contains('\n'));
            assert_eq!(serde_json::from_str::<Request>(&line).unwrap(), r);
        }
        let e = Response::Error(ApiError::new(ErrorKind::NoService, "No such service"));
        let line = serde_json::to_string(&e).unwrap();
        assert_eq!(serde_json::from_str::<Response>(&line).unwrap(), e);
    }
}

/// A change to a virtual service (ipvsadm `-E`, `herd lb edit`): each field given replaces the
/// running one, the others stay as they are. The daemon applies it to the running service, so
/// two clients editing different fields at once do not undo each other's change.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
pub struct ServiceEdit {
    #[serde(flatten)]
    pub key: ServiceKey,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scheduler: Option<SchedulerKind>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sched_flags: Option<SchedFlags>,
    /// `null` ends persistence; absent keeps it.
    #[serde(default, skip_serializing_if = "Option::is_none", with = "given")]
    #[schemars(with = "Option<Persistence>")]
    pub persistence: Option<Option<Persistence>>,
    /// `null` removes the name; absent keeps it.
    #[serde(default, skip_serializing_if = "Option::is_none", with = "given")]
    #[schemars(with = "Option<String>")]
    pub name: Option<Option<String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub proxy_protocol: Option<bool>,
}

impl ServiceEdit {
    /// An edit that replaces every field with `spec`'s.
    pub fn replacing(spec: ServiceSpec) -> ServiceEdit {
        ServiceEdit {
            key: spec.key,
            scheduler: Some(spec.scheduler),
            sched_flags: Some(spec.sched_flags),
            persistence: Some(spec.persistence),
            name: Some(spec.name),
            proxy_protocol: Some(spec.proxy_protocol),
        }
    }

    /// `spec` with this edit applied.
    pub fn apply(&self, spec: &ServiceSpec) -> ServiceSpec {
        ServiceSpec {
            key: spec.key,
            name: self.name.clone().unwrap_or_else(|| spec.name.clone()),
            scheduler: self.scheduler.unwrap_or(spec.scheduler),
            sched_flags: self.sched_flags.unwrap_or(spec.sched_flags),
            persistence: self.persistence.unwrap_or(spec.persistence),
            proxy_protocol: self.proxy_protocol.unwrap_or(spec.proxy_protocol),
        }
    }
}

/// A change to a real server (ipvsadm `-e`, `herd lb real edit`, the dashboard's weight): each
/// field given replaces the running one, the others stay.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
pub struct RealEdit {
    pub address: SocketAddr,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub weight: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub upper_threshold: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lower_threshold: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub forward: Option<Forward>,
}

impl RealEdit {
    /// An edit that replaces every field with `spec`'s.
    pub fn replacing(spec: RealSpec) -> RealEdit {
        RealEdit {
            address: spec.address,
            weight: Some(spec.weight),
            upper_threshold: Some(spec.upper_threshold),
            lower_threshold: Some(spec.lower_threshold),
            forward: Some(spec.forward),
        }
    }

    /// An edit of the weight alone.
    pub fn weight(address: SocketAddr, weight: u32) -> RealEdit {
        RealEdit {
            address,
            weight: Some(weight),
            upper_threshold: None,
            lower_threshold: None,
            forward: None,
        }
    }

    /// `spec` with this edit applied.
    pub fn apply(&self, spec: &RealSpec) -> RealSpec {
        RealSpec {
            address: spec.address,
            weight: self.weight.unwrap_or(spec.weight),
            upper_threshold: self.upper_threshold.unwrap_or(spec.upper_threshold),
            lower_threshold: self.lower_threshold.unwrap_or(spec.lower_threshold),
            forward: self.forward.unwrap_or(spec.forward),
        }
    }
}

/// A field that may be absent (keep), `null` (clear) or a value (set): `Option<Option<T>>`
/// with the outer `None` for absent (with `#[serde(default)]`).
mod given {
    use serde::{Deserialize, Deserializer, Serialize, Serializer};

    pub fn serialize<T: Serialize, S: Serializer>(
        v: &Option<Option<T>>,
        s: S,
    ) -> Result<S::Ok, S::Error> {
        match v {
            Some(inner) => inner.serialize(s),
            None => s.serialize_none(),
        }
    }

    pub fn deserialize<'de, T: Deserialize<'de>, D: Deserializer<'de>>(
        d: D,
    ) -> Result<Option<Option<T>>, D::Error> {
        Option::<T>::deserialize(d).map(Some)
    }
}
