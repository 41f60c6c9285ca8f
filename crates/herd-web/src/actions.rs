//! What an admin can do from the dashboard or the HTTP API. Every action is checked (admin
//! role, CSRF token: by the callers), carried out through the backend as the CLI would, and
//! written to the audit log with its outcome.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;

use herd_core::api::{AdminState, ApiError, ErrorKind, Request, Response};
use herd_core::model::ServiceKey;

use crate::auth::Session;
use crate::state::State;

/// `{protocol}/{vip}` of the path → a service key.
pub fn service_key(protocol: &str, vip: &str) -> Result<ServiceKey, String> {
    let protocol = match protocol {
        "tcp" => herd_core::model::Protocol::Tcp,
        "udp" => herd_core::model::Protocol::Udp,
        p => return Err(format!("protocol {p:?}: expected tcp or udp")),
    };
    let address = herd_core::config::parse_socket_addr(vip)
        .map_err(|e| format!("virtual service {vip:?}: {e}"))?;
    Ok(ServiceKey { protocol, address })
}

#[derive(Debug, Clone, PartialEq)]
pub enum Action {
    /// Drain, disable or enable a real server.
    RealState {
        service: ServiceKey,
        real: SocketAddr,
        state: AdminState,
    },
    /// Set a real server's configured weight.
    Weight {
        service: ServiceKey,
        real: SocketAddr,
        weight: u32,
    },
    /// Hold the alerts of a check and/or a target, for `secs` or until lifted.
    Silence {
        check: Option<String>,
        target: Option<String>,
        secs: Option<u64>,
        until_recovery: bool,
        reason: String,
    },
    /// Acknowledge a failing check or target: its alerts are held until it recovers (or the
    /// silence is lifted), mon's `ack`.
    Ack {
        check: String,
        target: Option<String>,
        reason: String,
    },
    Unsilence {
        id: u64,
    },
    /// Planned VRRP hand-over of these instances (all when empty).
    Failover {
        instances: Vec<String>,
    },
    Resume {
        instances: Vec<String>,
    },
    Reload,
    /// Any other request of the API, as `POST /api/v1/request` carries it.
    Request(Request),
}

impl Action {
    pub fn name(&self) -> &'static str {
        match self {
            Action::RealState { state, .. } => match state {
                AdminState::Enabled => "enable",
                AdminState::Draining => "drain",
                AdminState::Disabled => "disable",
            },
            Action::Weight { .. } => "weight",
            Action::Silence { .. } => "silence",
            Action::Ack { .. } => "ack",
            Action::Unsilence { .. } => "unsilence",
            Action::Failover { .. } => "failover",
            Action::Resume { .. } => "resume",
            Action::Reload => "reload",
            Action::Request(_) => "request",
        }
    }

    /// In words, for confirmations and the audit log.
    pub fn describe(&self) -> String {
        let all = |v: &Vec<String>| {
            if v.is_empty() {
                "every VRRP instance".to_string()
            } else {
                v.join(", ")
            }
        };
        match self {
            Action::RealState {
                service,
                real,
                state,
            } => {
                let verb = match state {
                    AdminState::Enabled => "Enable",
                    AdminState::Draining => "Drain",
                    AdminState::Disabled => "Disable",
                };
                format!("{verb} real server {real} of {service}")
            }
            Action::Weight {
                service,
                real,
                weight,
            } => format!("Set the weight of real server {real} of {service} to {weight}"),
            Action::Silence {
                check,
                target,
                secs,
                reason,
                ..
            } => format!(
                "Silence {}{}{} ({})",
                what(check.as_deref(), target.as_deref()),
                match secs {
                    Some(s) => format!(" for {s} s"),
                    None => " until lifted".to_string(),
                },
                if reason.is_empty() { "" } else { ":" },
                reason
            )
            .replace(" ()", ""),
            Action::Ack {
                check,
                target,
                reason,
            } => format!(
                "Acknowledge {} (its alerts are held until it recovers){}",
                what(Some(check), target.as_deref()),
                if reason.is_empty() {
                    String::new()
                } else {
                    format!(" ({reason})")
                }
            ),
            Action::Unsilence { id } => format!("Lift silence {id}"),
            Action::Failover { instances } => {
                format!("Hand over {} to a backup director", all(instances))
            }
            Action::Resume { instances } => format!("End the standby of {}", all(instances)),
            Action::Reload => "Reload the config".to_string(),
            Action::Request(r) => serde_json::to_string(r).unwrap_or_default(),
        }
    }

    /// Changes nothing (a read through the generic request route).
    pub fn is_read(&self) -> bool {
        matches!(self, Action::Request(r) if r.is_read())
    }
}

fn what(check: Option<&str>, target: Option<&str>) -> String {
    match (check, target) {
        (Some(c), Some(t)) => format!("check {c} on {t}"),
        (Some(c), None) => format!("check {c}"),
        (None, Some(t)) => format!("target {t}"),
        (None, None) => "everything".to_string(),
    }
}

/// Carries out an action for a session (the caller has checked role and CSRF token) and
/// audits it; reads are not audited. It runs as a task of its own: a client that goes away
/// mid-way cannot leave an action done but not audited.
pub async fn perform(st: &Arc<State>, who: &Session, from: IpAddr, a: Action) -> Response {
    if !a.is_read() && st.closing() {
        return Response::Error(ApiError::new(
            ErrorKind::Internal,
            "the daemon is shutting down: no more actions",
        ));
    }
    let (st, who) = (st.clone(), who.clone());
    match tokio::spawn(async move { perform_now(&st, &who, from, a).await }).await {
        Ok(r) => r,
        Err(e) => Response::Error(ApiError::new(
            ErrorKind::Internal,
            format!("the action failed: {e}"),
        )),
    }
}

async fn perform_now(st: &Arc<State>, who: &Session, from: IpAddr, a: Action) -> Response {
    if !a.is_read() {
        if let Err(why) = st.audit.writable() {
            tracing::error!(user = %who.user, %from, action = a.name(), "web: refused: {why}");
            return Response::Error(ApiError::new(
                ErrorKind::Internal,
                format!("{why}: no action is taken without its audit line"),
            ));
        }
    }
    let resp = match a.clone() {
        Action::RealState {
            service,
            real,
            state,
        } => {
            st.call(Request::SetRealState {
                service,
                address: real,
                state,
            })
            .await
        }
        Action::Weight {
            service,
            real,
            weight,
        } => set_weight(st, service, real, weight).await,
        // A silence is signed by whoever is logged in, whatever a request's body says.
        Action::Silence {
            check,
            target,
            secs,
            until_recovery,
            reason,
        }
        | Action::Request(Request::HealthSilence {
            check,
            target,
            secs,
            until_recovery,
            reason,
            ..
        }) => {
            st.call(Request::HealthSilence {
                check,
                target,
                secs,
                until_recovery,
                author: who.user.clone(),
                reason,
            })
            .await
        }
        Action::Ack {
            check,
            target,
            reason,
        } => {
            st.call(Request::HealthSilence {
                check: Some(check),
                target,
                secs: None,
                until_recovery: true,
                author: who.user.clone(),
                reason: if reason.is_empty() {
                    "acknowledged".to_string()
                } else {
                    format!("acknowledged: {reason}")
                },
            })
            .await
        }
        Action::Unsilence { id } => st.call(Request::HealthUnsilence { id }).await,
        Action::Failover { instances } => st.call(Request::HaFailover { instances }).await,
        Action::Resume { instances } => st.call(Request::HaResume { instances }).await,
        Action::Reload => st.call(Request::Reload).await,
        // Secrets stay in the config file: the web is a wider door than the socket.
        Action::Request(Request::ExportConfig { .. }) => {
            st.call(Request::ExportConfig { redact: true }).await
        }
        Action::Request(r) => st.call(r).await,
    };
    if !a.is_read() {
        let outcome = match &resp {
            Response::Error(e) => Err(e.message.clone()),
            _ => Ok(()),
        };
        st.audit.record(
            &who.user,
            who.role.as_str(),
            from,
            a.name(),
            a.describe(),
            outcome,
        );
    }
    resp
}

/// The API edits a real server as a whole: read its spec, change the weight, write it back.
async fn set_weight(
    st: &Arc<State>,
    service: ServiceKey,
    real: SocketAddr,
    weight: u32,
) -> Response {
    if weight > 65_535 {
        return Response::Error(ApiError::new(
            ErrorKind::Invalid,
            format!("weight {weight} is out of range 0..=65535"),
        ));
    }
    // Only the weight: the daemon keeps the real server's thresholds and forwarding (and
    // says if there is no such real server).
    st.call(Request::EditReal {
        service,
        real: herd_core::api::RealEdit::weight(real, weight),
    })
    .await
}
