//! The control API: one set of types for the CLI (over the Unix socket) and, later, the HTTP API.
//!
//! Wire format on the Unix socket: one JSON [`Request`] per line, answered by one JSON
//! [`Response`] per line. A connection may carry several requests in sequence.

use std::net::SocketAddr;

use serde::{Deserialize, Serialize};

use crate::model::{
    Persistence, RealSpec, SchedFlags, SchedulerKind, ServiceKey, ServiceSpec, Timeouts,
};

/// Version of the API, bumped on incompatible changes.
pub const API_VERSION: u32 = 1;

/// Largest request or response line accepted on the control socket.
pub const MAX_MESSAGE: usize = 16 << 20;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
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
    /// Change scheduler, flags, persistence or PROXY protocol of an existing service.
    EditService {
        service: ServiceSpec,
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
    EditReal {
        service: ServiceKey,
        real: RealSpec,
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
    /// The effective state rendered as a config file (`herd lb save`).
    ExportConfig,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "result", rename_all = "kebab-case")]
pub enum Response {
    Ok,
    Error(ApiError),
    Status(DaemonStatus),
    Services { services: Vec<ServiceStatus> },
    Timeouts { timeouts: Timeouts },
    Connections { connections: Vec<ConnEntry> },
    Config { toml: String },
}

/// Why a request failed. The kinds map onto ipvsadm's error messages and exit codes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
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

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
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

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
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
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub struct Stats {
    pub conns: u64,
    pub pkts_in: u64,
    pub pkts_out: u64,
    pub bytes_in: u64,
    pub bytes_out: u64,
}

/// Rates per second, averaged like the kernel's estimator (ipvsadm `--rate`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub struct Rates {
    pub cps: u64,
    pub pps_in: u64,
    pub pps_out: u64,
    pub bps_in: u64,
    pub bps_out: u64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
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
    pub stats: Stats,
    pub rates: Rates,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub struct ServiceStatus {
    #[serde(flatten)]
    pub spec: ServiceSpec,
    pub reals: Vec<RealStatus>,
    pub stats: Stats,
    pub rates: Rates,
}

/// One entry of the connection table (ipvsadm `-L -c`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
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
