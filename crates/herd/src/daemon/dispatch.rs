//! The control API's requests, answered from the daemon's running state.

use super::*;

impl Daemon {
    /// The node watch's last look; before its first, or without an agent, the configured
    /// nodes, not pinged.
    pub(super) fn nodes(&self) -> Response {
        let watch = self.agent.node_watch();
        let watching = watch.is_some();
        if let Some(cache) = watch {
            let (this, nodes) = cache.lock().unwrap_or_else(|p| p.into_inner()).clone();
            if this.is_some() {
                return Response::Nodes { this, nodes };
            }
        }
        let why = if watching {
            "not pinged yet"
        } else {
            "not pinged: this daemon runs no agent ([agent] listen)"
        };
        let cfg = self.config.lock().unwrap_or_else(|p| p.into_inner());
        let nodes = cfg
            .cluster
            .nodes
            .keys()
            .map(|n| {
                herd_core::api::NodeStatus::unanswered(
                    n.clone(),
                    cfg.cluster.agent_address(n, cfg.agent.port),
                    why.to_string(),
                    0,
                )
            })
            .collect();
        Response::Nodes { this: None, nodes }
    }

    pub(super) fn monitor(&self) -> Result<&Monitor, ApiError> {
        Ok(&self.monitor)
    }

    /// Answers one API request.
    pub fn handle(&self, req: Request) -> Response {
        match self.dispatch(req) {
            Ok(r) => r,
            Err(e) => Response::Error(e),
        }
    }

    fn dispatch(&self, req: Request) -> Result<Response, ApiError> {
        let dp = self.dp.as_ref();
        let ok = |r: Result<(), ApiError>| r.map(|()| Response::Ok);
        let lb = |r: Result<(), herd_lb::table::LbError>| ok(r.map_err(lb_error));
        match req {
            Request::Status => Ok(Response::Status(DaemonStatus {
                version: env!("CARGO_PKG_VERSION").to_string(),
                api_version: API_VERSION,
                pid: std::process::id(),
                uptime_secs: self.started.elapsed().as_secs(),
                config_path: match &self.source {
                    Source::File(p) => Some(p.display().to_string()),
                    Source::Embedded { name, .. } => Some(name.clone()),
                },
                data_plane: dp.name().to_string(),
                workers: dp.workers(),
                reloads: self.reloads.load(Relaxed),
            })),
            Request::Reload => self.reload().map(|pending| Response::Reloaded { pending }),
            Request::List { service } => Ok(Response::Services {
                services: self.table().status(service.as_ref()).map_err(lb_error)?,
            }),
            Request::AddService { service } => lb(self.table().add_service(service, &[])),
            Request::EditService { service } => lb(self.table().edit_service(&service)),
            Request::DeleteService { service } => lb(self.table().delete_service(&service)),
            Request::Clear => lb(self.table().clear()),
            Request::AddReal { service, real } => lb(self.table().add_real(&service, real)),
            Request::EditReal { service, real } => lb(self.table().edit_real(&service, &real)),
            Request::DeleteReal { service, address } => {
                lb(self.table().delete_real(&service, address))
            }
            Request::Zero { service } => lb(self.table().zero(service.as_ref())),
            Request::GetTimeouts => Ok(Response::Timeouts {
                timeouts: self.table().settings().timeouts,
            }),
            Request::SetTimeouts { timeouts } => {
                self.table().set_timeouts(timeouts);
                Ok(Response::Ok)
            }
            Request::Connections => Ok(Response::Connections {
                connections: self.table().connections(now_ms()),
            }),
            Request::HealthList => {
                let (checks, silences) = self.monitor()?.status();
                Ok(Response::Health { checks, silences })
            }
            Request::HealthHistory { limit } => Ok(Response::HealthHistory {
                entries: self.monitor()?.history(limit.unwrap_or(100)),
            }),
            Request::HealthDowntime { limit } => Ok(Response::Downtime {
                entries: self.monitor()?.downtime(limit.unwrap_or(100)),
            }),
            Request::HealthSilence {
                check,
                target,
                secs,
                until_recovery,
                author,
                reason,
            } => self
                .monitor()?
                .silence(check, target, secs, until_recovery, author, reason)
                .map(|id| Response::Silenced { id })
                .map_err(invalid),
            Request::HealthUnsilence { id } => ok(self.monitor()?.unsilence(id).map_err(invalid)),
            Request::HealthDisable {
                check,
                target,
                disabled,
            } => ok(self
                .monitor()?
                .set_disabled(&check, target.as_deref(), disabled)
                .map_err(invalid)),
            Request::HealthTestAlert { check } => {
                let m = self.monitor()?;
                // Requests run on a blocking thread: wait here for the alert programs.
                tokio::runtime::Handle::current()
                    .block_on(m.test_alert(&check))
                    .map(|deliveries| Response::Deliveries { deliveries })
                    .map_err(invalid)
            }
            Request::SetRealState {
                service,
                address,
                state,
            } => lb(self.table().set_admin(&service, address, state)),
            Request::Nodes => Ok(self.nodes()),
            Request::HaStatus => Ok(Response::Ha {
                instances: self.ha.status(),
            }),
            Request::HaFailover { instances } => self
                .ha
                .failover(instances)
                .map(|instances| Response::HaChanged { instances })
                .map_err(invalid),
            Request::HaResume { instances } => self
                .ha
                .resume(instances)
                .map(|instances| Response::HaChanged { instances })
                .map_err(invalid),
            Request::ExportConfig { redact } => {
                let mut cfg = self
                    .config
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .clone();
                let lb: LbConfig = self.table().to_config(&cfg.lb);
                cfg.lb = lb;
                if redact {
                    cfg.redact_secrets();
                }
                Ok(Response::Config {
                    toml: cfg.to_toml(),
                })
            }
        }
    }
}

/// The API's form of the director core's refusals.
pub(super) fn lb_error(e: herd_lb::table::LbError) -> ApiError {
    use herd_lb::dataplane::DataPlaneError;
    use herd_lb::table::LbError;
    let kind = match &e {
        LbError::NoService(_) => ErrorKind::NoService,
        LbError::ServiceExists(_) => ErrorKind::ServiceExists,
        LbError::RealExists { .. } => ErrorKind::RealExists,
        LbError::NoReal { .. } => ErrorKind::NoReal,
        LbError::Invalid(_) => ErrorKind::Invalid,
        LbError::DataPlane(DataPlaneError::Bind { .. }) => ErrorKind::Bind,
        LbError::DataPlane(DataPlaneError::Internal { .. }) => ErrorKind::Internal,
    };
    ApiError::new(kind, e.to_string())
}

pub(super) fn invalid(message: impl ToString) -> ApiError {
    ApiError::new(ErrorKind::Invalid, message.to_string())
}
