//! herd's web side: the dashboard, the HTTP JSON API and `/metrics`.
//!
//! The daemon hands this crate a [`Backend`]: the same request/response API the CLI speaks over
//! the Unix socket (`herd_core::api`). Everything here is a view of it or an action through it,
//! so the dashboard, the HTTP API, the CLI and `moncmd` cannot disagree about the state.
//!
//! - `http.rs`: the HTTP/1.1 server (hyper), TLS, limits, security headers, routing.
//! - `auth.rs`: argon2id logins, sessions, CSRF tokens, the login rate limiter.
//! - `api.rs`: the `/api/v1` routes, one table that both routes requests and generates the
//!   OpenAPI document.
//! - `actions.rs`: what an admin can do (drain, weight, enable, disable, silence, ack,
//!   failover), checked, audited, carried out through the backend.
//! - `pages.rs`, `assets/`: server-rendered HTML, a little JavaScript (confirmations, live
//!   updates over server-sent events), no build step.
//! - `metrics.rs`: the Prometheus text format. `history.rs`: recent rates for the charts.

mod actions;
mod api;
mod audit;
pub mod auth;
mod history;
mod http;
mod metrics;
mod pages;
mod snapshot;

use std::sync::{Arc, Mutex, RwLock};

use herd_core::api::{Request, Response};
use herd_core::config::web::WebConfig;

pub use api::openapi;

/// The daemon's API as the web side sees it: one request in, one response out, exactly as over
/// the control socket. Calls may block for a moment (a reload reads files); the web server makes
/// them on tokio's blocking pool.
pub trait Backend: Send + Sync + 'static {
    fn call(&self, req: Request) -> Response;
}

/// What the pages say about this node.
#[derive(Debug, Clone)]
pub struct Info {
    pub version: &'static str,
    /// This node's name (the agent's, else the host name).
    pub node: String,
}

/// The running web server; [`Web::reload`] takes a new `[web]` section.
#[derive(Clone)]
pub struct Web {
    state: Arc<State>,
}

impl std::fmt::Debug for Web {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Web").finish_non_exhaustive()
    }
}

struct State {
    backend: Arc<dyn Backend>,
    info: Info,
    cfg: RwLock<Arc<WebConfig>>,
    tls: bool,
    sessions: Mutex<auth::Sessions>,
    limiter: Mutex<auth::Limiter>,
    /// At most this many argon2 checks at once: each takes ~19 MiB and tens of milliseconds.
    verifying: Arc<tokio::sync::Semaphore>,
    /// Compared against when the user name is unknown, so that the answer takes as long.
    dummy_hash: std::sync::OnceLock<String>,
    history: Mutex<history::History>,
    audit: audit::Audit,
    /// Live pages open at once (each a task refreshing every second).
    streams: Arc<tokio::sync::Semaphore>,
    /// Live pages open per session token.
    session_streams: Arc<http::PerKey<String>>,
    counters: metrics::WebCounters,
    /// Set when the daemon starts shutting down.
    closing: std::sync::atomic::AtomicBool,
    /// `/metrics`' bearer token, read from `web.metrics-token-file`.
    metrics_token: RwLock<Option<String>>,
}

/// The token in `web.metrics-token-file` (its first line), if the config names one.
fn read_token(cfg: &WebConfig) -> Result<Option<String>, String> {
    let Some(p) = &cfg.metrics_token_file else {
        return Ok(None);
    };
    let text = std::fs::read_to_string(p)
        .map_err(|e| format!("web.metrics-token-file: {}: {e}", p.display()))?;
    let t = text.lines().next().unwrap_or("").trim().to_string();
    if t.len() < 16 {
        return Err(format!(
            "web.metrics-token-file: {}: the token is shorter than 16 characters",
            p.display()
        ));
    }
    Ok(Some(t))
}

impl State {
    /// An argon2id hash of a random password: an unknown user's password is checked against
    /// it, so that the answer takes as long as for a known user.
    fn dummy_hash(&self) -> String {
        self.dummy_hash
            .get_or_init(|| auth::hash_password(&auth::token()).unwrap_or_default())
            .clone()
    }

    fn cfg(&self) -> Arc<WebConfig> {
        self.cfg.read().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// Calls the backend on the blocking pool.
    async fn call(self: &Arc<Self>, req: Request) -> Response {
        let s = self.clone();
        match tokio::task::spawn_blocking(move || s.backend.call(req)).await {
            Ok(r) => r,
            Err(e) => Response::Error(herd_core::api::ApiError::new(
                herd_core::api::ErrorKind::Internal,
                format!("the request failed: {e}"),
            )),
        }
    }
}

impl Web {
    /// Binds the configured address (before the daemon says it is ready) and loads the TLS
    /// certificate when there is one; nothing is served until [`Web::spawn`].
    pub async fn bind(
        cfg: &WebConfig,
        backend: Arc<dyn Backend>,
        info: Info,
    ) -> Result<(Web, http::Listener), String> {
        let metrics_token = read_token(cfg)?;
        let listener = http::Listener::bind(cfg).await?;
        let state = Arc::new(State {
            backend,
            info,
            tls: cfg.tls.is_some(),
            cfg: RwLock::new(Arc::new(cfg.clone())),
            sessions: Mutex::default(),
            limiter: Mutex::default(),
            verifying: Arc::new(tokio::sync::Semaphore::new(2)),
            dummy_hash: std::sync::OnceLock::new(),
            history: Mutex::default(),
            audit: audit::Audit::new(cfg.audit_log.clone()),
            streams: Arc::new(tokio::sync::Semaphore::new(64)),
            session_streams: http::PerKey::new(pages::STREAMS_PER_SESSION),
            counters: metrics::WebCounters::default(),
            closing: Default::default(),
            metrics_token: RwLock::new(metrics_token),
        });
        Ok((Web { state }, listener))
    }

    /// Serves the listener with at most `max_connections` clients at once (at most
    /// [`MAX_CONNECTIONS`]) and samples the history; the tasks end with the runtime. The dummy
    /// hash is made off the start-up path, before the first login is likely to need it.
    pub fn spawn(&self, listener: http::Listener, max_connections: usize) {
        let st = self.state.clone();
        tokio::task::spawn_blocking(move || {
            st.dummy_hash();
        });
        let max = max_connections.min(MAX_CONNECTIONS);
        tokio::spawn(http::serve(self.state.clone(), listener, max));
        tokio::spawn(history::sample(self.state.clone()));
    }

    /// Applies a reloaded `[web]` section: users, roles, timeouts and the audit log at once
    /// (sessions of removed users or changed roles end); returns what waits for a restart.
    /// Without the section, nobody can log in any more and every session ends; the listener
    /// stays (for `/metrics`) until the daemon restarts.
    pub fn reload(&self, cfg: Option<&WebConfig>) -> Vec<String> {
        let Some(cfg) = cfg else {
            let mut c = (*self.state.cfg()).clone();
            c.users.clear();
            *self.state.cfg.write().unwrap_or_else(|p| p.into_inner()) = Arc::new(c);
            self.state
                .sessions
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .clear();
            return vec!["web".to_string()];
        };
        let old = self.state.cfg();
        let mut pending = Vec::new();
        if old.listen != cfg.listen || old.tls != cfg.tls {
            pending.push("web.listen/tls".to_string());
        }
        match read_token(cfg) {
            Ok(t) => {
                *self
                    .state
                    .metrics_token
                    .write()
                    .unwrap_or_else(|p| p.into_inner()) = t
            }
            Err(e) => tracing::error!("{e}; keeping the previous metrics token"),
        }
        let mut new = cfg.clone();
        new.listen = old.listen;
        new.tls = old.tls.clone();
        self.state.audit.set_path(cfg.audit_log.clone());
        *self.state.cfg.write().unwrap_or_else(|p| p.into_inner()) = Arc::new(new);
        pending
    }

    /// The daemon is shutting down: actions are refused from now on (pages and reads go on).
    pub fn stop_actions(&self) {
        self.state
            .closing
            .store(true, std::sync::atomic::Ordering::Relaxed);
    }

    /// Where it listens (the port is the kernel's choice when the config said 0).
    pub fn url(&self, listener: &http::Listener) -> String {
        listener.url(self.state.tls)
    }
}

pub use http::{check_tls, Listener, MAX_CONNECTIONS};

impl Web {
    /// Whether a line can go to the audit log now (`web.audit-log`; none set: yes). Other
    /// doors to the same actions (the mon port) refuse a change when it cannot.
    pub fn audit_writable(&self) -> Result<(), String> {
        self.state.audit.writable()
    }

    /// Writes one audit line for an action taken through another door (the mon port), so
    /// that the dashboard's audit log is the one record of who changed what.
    pub fn audit(
        &self,
        user: &str,
        role: &str,
        from: std::net::IpAddr,
        event: &str,
        detail: String,
        result: Result<(), String>,
    ) {
        self.state
            .audit
            .record(user, role, from, event, detail, result);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use herd_core::api::{AdminState, ApiError, ErrorKind, ServiceStatus, Stats, VrrpStatus};
    use herd_core::config::web::{WebRole, WebUser};
    use herd_core::model::{Protocol, RealSpec, ServiceKey};

    /// Answers like a daemon with one service and one VRRP master; records every request.
    #[derive(Default)]
    struct Fake(Mutex<Vec<Request>>);

    impl Backend for Fake {
        fn call(&self, req: Request) -> Response {
            self.0.lock().unwrap().push(req.clone());
            match req {
                Request::List { .. } => Response::Services {
                    services: vec![ServiceStatus {
                        spec: herd_core::api::service_spec(
                            key(),
                            herd_core::model::SchedulerKind::Rr,
                        ),
                        reals: vec![herd_core::api::RealStatus {
                            spec: RealSpec {
                                address: "10.0.0.2:80".parse().unwrap(),
                                weight: 0,
                                upper_threshold: 5,
                                lower_threshold: 3,
                                forward: Default::default(),
                            },
                            active_conns: 0,
                            inactive_conns: 0,
                            persistent_conns: 0,
                            overloaded: false,
                            draining: false,
                            health: Default::default(),
                            configured_weight: 4,
                            admin: AdminState::Draining,
                            sorry: false,
                            stats: Stats::default(),
                            rates: Default::default(),
                        }],
                        quorum: None,
                        stats: Stats::default(),
                        rates: Default::default(),
                    }],
                },
                Request::HaStatus => Response::Ha {
                    instances: vec![vrrp()],
                },
                Request::Reload => {
                    Response::Error(ApiError::new(ErrorKind::Config, "bad.toml:1: x"))
                }
                _ => Response::Ok,
            }
        }
    }

    fn key() -> ServiceKey {
        ServiceKey {
            protocol: Protocol::Tcp,
            address: "10.0.0.1:80".parse().unwrap(),
        }
    }

    fn vrrp() -> VrrpStatus {
        VrrpStatus {
            name: "vi_1".into(),
            interface: "eth0".into(),
            vrid: 51,
            version: 3,
            state: "master".into(),
            priority: 150,
            configured_priority: 150,
            standby: false,
            master: Some("10.0.0.5".into()),
            address: "10.0.0.5".into(),
            advert_interval_ms: 1000,
            vips: vec!["10.0.0.100/24".into()],
            transitions: Vec::new(),
            transitions_total: 25,
            adverts_sent: 12,
            adverts_received: 0,
            dropped: [("auth".to_string(), 2)].into_iter().collect(),
            handover: None,
            real_server: false,
            tracking: Vec::new(),
        }
    }

    async fn web(fake: Arc<Fake>) -> Web {
        let cfg = WebConfig {
            listen: "127.0.0.1:0".parse().unwrap(),
            ..WebConfig::default()
        };
        Web::bind(
            &cfg,
            fake,
            Info {
                version: "9.9",
                node: "n1".into(),
            },
        )
        .await
        .unwrap()
        .0
    }

    fn admin() -> auth::Session {
        let u = WebUser {
            name: "ann".into(),
            password: String::new(),
            role: WebRole::Admin,
        };
        auth::Sessions::default()
            .open(
                &u,
                std::time::Instant::now(),
                std::time::Duration::from_secs(60),
            )
            .1
    }

    #[tokio::test(flavor = "current_thread")]
    async fn actions_become_the_clis_requests_and_are_audited() {
        use actions::Action;
        let fake = Arc::new(Fake::default());
        let w = web(fake.clone()).await;
        let s = admin();
        let ip = "10.9.9.9".parse().unwrap();
        let svc = key();
        let real = "10.0.0.2:80".parse().unwrap();
        for a in [
            Action::Failover {
                instances: vec!["vi_1".into()],
            },
            Action::Resume { instances: vec![] },
            Action::Weight {
                service: svc,
                real,
                weight: 9,
            },
            Action::Reload,
        ] {
            actions::perform(&w.state, &s, ip, a).await;
        }
        let got = fake.0.lock().unwrap().clone();
        assert_eq!(
            got,
            vec![
                Request::HaFailover {
                    instances: vec!["vi_1".into()]
                },
                Request::HaResume { instances: vec![] },
                Request::List { service: Some(svc) },
                // The configured thresholds stay; the listed weight (0: drained) is replaced.
                Request::EditReal {
                    service: svc,
                    real: herd_core::api::RealEdit::replacing(RealSpec {
                        address: real,
                        weight: 9,
                        upper_threshold: 5,
                        lower_threshold: 3,
                        forward: Default::default()
                    })
                },
                Request::Reload,
            ]
        );
        let audit = w.state.audit.recent();
        let seen: Vec<(&str, bool)> = audit.iter().map(|e| (e.event.as_str(), e.ok)).collect();
        assert_eq!(
            seen,
            [
                ("failover", true),
                ("resume", true),
                ("weight", true),
                ("reload", false)
            ]
        );
        assert_eq!(audit[0].detail, "Hand over vi_1 to a backup director");
        assert_eq!(audit[3].error, "bad.toml:1: x");
        assert!(audit
            .iter()
            .all(|e| e.user == "ann" && e.from == "10.9.9.9"));
        // Reads through the generic route are not audited.
        actions::perform(&w.state, &s, ip, Action::Request(Request::HaStatus)).await;
        assert_eq!(w.state.audit.recent().len(), 4);
        // Once the daemon shuts down, actions are refused before they reach it; reads go on.
        w.stop_actions();
        let n = fake.0.lock().unwrap().len();
        let r = actions::perform(&w.state, &s, ip, Action::Reload).await;
        assert!(matches!(r, Response::Error(e) if e.message.contains("shutting down")));
        assert_eq!(fake.0.lock().unwrap().len(), n);
        let r = actions::perform(&w.state, &s, ip, Action::Request(Request::HaStatus)).await;
        assert!(matches!(r, Response::Ha { .. }));
    }

    #[tokio::test(flavor = "current_thread")]
    async fn vrrp_metrics_have_one_series_per_state() {
        let w = web(Arc::new(Fake::default())).await;
        let snap = snapshot::take(&w.state, snapshot::Want::default()).await;
        let text = metrics::render(&snap, &w.state.counters, 0, "9.9");
        for (state, v) in [("init", 0), ("backup", 0), ("master", 1), ("fault", 0)] {
            let line = format!(
                "herd_vrrp_state{{instance=\"vi_1\",interface=\"eth0\",state=\"{state}\"}} {v}"
            );
            assert!(text.contains(&line), "{line}\n{text}");
        }
        assert!(text.contains("herd_vrrp_dropped_packets_total{instance=\"vi_1\",interface=\"eth0\",reason=\"auth\"} 2"));
        assert!(
            text.contains("herd_vrrp_adverts_sent_total{instance=\"vi_1\",interface=\"eth0\"} 12")
                && text.contains(
                    "herd_vrrp_transitions_total{instance=\"vi_1\",interface=\"eth0\"} 25"
                )
        );
        assert!(text.contains("herd_lb_real_admin_state{service=\"TCP 10.0.0.1:80\",protocol=\"tcp\",vip=\"10.0.0.1:80\",real=\"10.0.0.2:80\",state=\"draining\"} 1"));
        // Every family has HELP and TYPE once, before its samples.
        let mut seen = std::collections::HashSet::new();
        for l in text.lines().filter(|l| l.starts_with("# TYPE ")) {
            assert!(seen.insert(l.split(' ').nth(2).unwrap().to_string()), "{l}");
        }
    }
}
