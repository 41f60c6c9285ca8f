//! herd's web side: the dashboard, the HTTP JSON API and `/metrics`.
//!
//! The daemon hands this crate a [`Backend`]: the same request/response API the CLI speaks over
//! the Unix socket (`herd_core::api`). Everything here is a view of it or an action through it,
//! so the dashboard, the HTTP API, the CLI and `moncmd` cannot disagree about the state.
//!
//! One way in: [`Web::new`] makes a dashboard that serves nothing, and [`Web::apply`] makes the
//! running one what a `[web]` section says — start is an apply from nothing, a reload an apply
//! of the difference, `None` stops it. Every key applies in place.
//!
//! Layers, each using only those below it (no module imports one beside or above it):
//! - `lib.rs`: [`Web`], the apply path, the history sampler.
//! - `server.rs`: the transport — listeners, TLS, the accept loop and its caps, hyper
//!   connections, the `Host` check, body limits, security headers.
//! - `routes.rs`: the dispatch of a path to a handler.
//! - `api.rs` (the `/api/v1` routes: one table that both routes requests and generates the
//!   OpenAPI document), `pages.rs` + `assets/` (server-rendered HTML, live updates over
//!   server-sent events, no build step), `metrics.rs` (`/metrics` through `prometheus-client`).
//! - `access.rs` (sessions from cookies, logins, the checks every action passes), `actions.rs`
//!   (what an admin can do, audited, carried out through the backend), `snapshot.rs` (one look
//!   at the daemon for a page or a scrape).
//! - `state.rs`: what the handlers share ([`Backend`], the config in force, sessions, caps).
//! - leaves: `http.rs` (requests, responses, cookies, forms), `auth.rs` (argon2id, sessions,
//!   CSRF tokens, the login limiter), `audit.rs`, `history.rs` (recent rates for the charts),
//!   `error.rs`. Tests of the whole: `tests.rs`.

mod access;
mod actions;
mod api;
mod audit;
pub mod auth;
mod error;
mod history;
mod http;
mod metrics;
mod pages;
mod routes;
mod server;
mod snapshot;
mod state;

use std::net::SocketAddr;
use std::sync::{Arc, Mutex, RwLock};

use herd_core::api::{Request, Response};
use herd_core::config::web::WebConfig;

use crate::server::Serving;
use crate::state::State;

pub use api::openapi;
pub use error::{AuditError, HashError, TlsError, WebError};
pub use server::{check_tls, MAX_CONNECTIONS};
pub use state::{Backend, Info};

/// The dashboard and HTTP API: serving what the last [`Web::apply`] said, or nothing.
#[derive(Clone)]
pub struct Web {
    state: Arc<State>,
    running: Arc<Mutex<Option<Running>>>,
}

impl std::fmt::Debug for Web {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Web")
            .field("listening", &self.local_addr())
            .finish_non_exhaustive()
    }
}

/// The dashboard while it serves: its listener and the task sampling the charts' history.
struct Running {
    serving: Serving,
    sampler: tokio::task::JoinHandle<()>,
}

/// The token in `web.metrics-token-file` (its first line), if the config names one.
fn read_token(cfg: &WebConfig) -> Result<Option<String>, WebError> {
    let Some(p) = &cfg.metrics_token_file else {
        return Ok(None);
    };
    let text = std::fs::read_to_string(p).map_err(|source| WebError::TokenFile {
        path: p.clone(),
        source,
    })?;
    let t = text.lines().next().unwrap_or("").trim().to_string();
    if t.len() < 16 {
        return Err(WebError::TokenTooShort { path: p.clone() });
    }
    Ok(Some(t))
}

impl Web {
    /// A dashboard that serves nothing until [`Web::apply`] gives it a `[web]` section. Its
    /// listeners together serve at most `max_connections` clients at once (at most
    /// [`MAX_CONNECTIONS`]; the daemon sizes it from its open-files limit).
    pub fn new(backend: Arc<dyn Backend>, info: Info, max_connections: usize) -> Web {
        Web {
            state: Arc::new(State::new(
                backend,
                info,
                max_connections.min(MAX_CONNECTIONS),
            )),
            running: Arc::default(),
        }
    }

    /// Makes the dashboard what `cfg` says, in place: from nothing it binds and serves (at
    /// start, before the daemon says it is ready: the socket is listening when this returns);
    /// with `None` it stops (nobody can log in, every session ends, the listener closes). A
    /// change of `listen` binds the new address first and then retires the old listener,
    /// whose open connections finish; a new certificate serves new connections; users,
    /// roles, host names, proxies, limits, timeouts, the audit log and the metrics token
    /// apply at once. What can fail (the token file, the certificate, the bind) is done
    /// before anything changes: on an error the dashboard goes on as it was. Call it within
    /// a tokio runtime (an async task or one of its blocking threads).
    pub fn apply(&self, cfg: Option<&WebConfig>) -> Result<(), WebError> {
        let rt = tokio::runtime::Handle::try_current().map_err(|_| WebError::NoRuntime)?;
        let _in_runtime = rt.enter();
        let mut running = self.running.lock().unwrap_or_else(|p| p.into_inner());
        let Some(cfg) = cfg else {
            self.stop(&mut running);
            return Ok(());
        };
        let token = read_token(cfg)?;
        let acceptor = match &cfg.tls {
            Some((cert, key)) => Some(server::tls_acceptor(cert, key)?),
            None => None,
        };
        // The same address, or the one the kernel chose for port 0: the listener stays.
        let moved = running
            .as_ref()
            .is_none_or(|r| r.serving.addr != cfg.listen && r.serving.local != cfg.listen);
        let listener = if moved {
            Some(self.bind_moved(&mut running, cfg.listen)?)
        } else {
            None
        };
        // Nothing fails from here on.
        let st = &self.state;
        st.set_metrics_token(token);
        st.audit.set_path(cfg.audit_log.clone());
        st.set_cfg(cfg.clone());
        if let Some(l) = listener {
            let tls = Arc::new(RwLock::new(acceptor));
            let serving = Serving::start(st.clone(), cfg.listen, l, tls);
            tracing::info!(url = %url(&serving), users = cfg.users.len(), "dashboard");
            match running.as_mut() {
                Some(r) => std::mem::replace(&mut r.serving, serving).retire(),
                None => *running = Some(self.start(serving)),
            }
        } else if let Some(r) = running.as_mut() {
            *r.serving.tls.write().unwrap_or_else(|p| p.into_inner()) = acceptor;
        }
        Ok(())
    }

    /// Binds the address a `[web]` section moves to. Where the running listener holds that
    /// port on an overlapping address (`127.0.0.1:P` to `0.0.0.0:P`) the two cannot listen at
    /// once: the old one stops listening first, and if the new address still cannot be
    /// bound, a new socket takes the old address back (open connections go on either way).
    fn bind_moved(
        &self,
        running: &mut Option<Running>,
        addr: SocketAddr,
    ) -> Result<tokio::net::TcpListener, WebError> {
        let e = match server::bind(addr) {
            Ok(l) => return Ok(l),
            Err(e) => e,
        };
        let Some(r) = running
            .as_mut()
            .filter(|r| e.addr_in_use() && r.serving.local.port() == addr.port())
        else {
            return Err(e);
        };
        r.serving.stop_listening();
        let e = match server::bind(addr) {
            Ok(l) => return Ok(l),
            Err(e) => e,
        };
        match server::bind(r.serving.local) {
            Ok(back) => {
                let (addr, tls) = (r.serving.addr, r.serving.tls.clone());
                let serving = Serving::start(self.state.clone(), addr, back, tls);
                std::mem::replace(&mut r.serving, serving).retire();
            }
            Err(lost) => tracing::error!("{lost}: the dashboard does not listen any more"),
        }
        Err(e)
    }

    /// Starts what goes with the first listener: the history sampler, and the dummy hash
    /// (made off the start-up path, before the first login is likely to need it).
    fn start(&self, serving: Serving) -> Running {
        let st = self.state.clone();
        tokio::task::spawn_blocking(move || {
            st.dummy_hash();
        });
        Running {
            serving,
            sampler: tokio::spawn(sample(self.state.clone())),
        }
    }

    /// Without `[web]`: the listener closes, nobody can log in, every session ends, the audit
    /// log and the metrics token are forgotten.
    fn stop(&self, running: &mut Option<Running>) {
        if let Some(r) = running.take() {
            r.serving.retire();
            r.sampler.abort();
            tracing::info!("dashboard stopped");
        }
        let st = &self.state;
        let mut cfg = (*st.cfg()).clone();
        cfg.users.clear();
        st.set_cfg(cfg);
        st.sessions
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clear();
        st.audit.set_path(None);
        st.set_metrics_token(None);
    }

    /// Moves the cap on connections served at once (at most [`MAX_CONNECTIONS`], at least 1),
    /// as the daemon resizes its listeners' shares of the open-files limit. Lowered below what
    /// is open, no connection is closed: the difference is taken back as they end.
    /// What the pages say about this node (the agent's name changed in a reload).
    pub fn set_info(&self, info: Info) {
        self.state.set_info(info);
    }

    pub fn set_max_connections(&self, max_connections: usize) {
        self.state
            .connections
            .resize(max_connections.min(MAX_CONNECTIONS));
    }

    /// Where it listens (the port is the kernel's choice when the config said 0); `None`
    /// without `[web]`.
    pub fn local_addr(&self) -> Option<SocketAddr> {
        let running = self.running.lock().unwrap_or_else(|p| p.into_inner());
        running.as_ref().map(|r| r.serving.local)
    }

    /// The daemon is shutting down: actions are refused from now on (pages and reads go on).
    pub fn stop_actions(&self) {
        self.state
            .closing
            .store(true, std::sync::atomic::Ordering::Relaxed);
    }

    /// Whether a line can go to the audit log now (`web.audit-log`; none set: yes). Other
    /// doors to the same actions (the mon port) refuse a change when it cannot.
    pub fn audit_writable(&self) -> Result<(), AuditError> {
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

fn url(s: &Serving) -> String {
    let tls = s.tls.read().unwrap_or_else(|p| p.into_inner()).is_some();
    format!("{}://{}/", if tls { "https" } else { "http" }, s.local)
}

/// Every [`history::PERIOD`], the rates and latencies for the charts.
async fn sample(st: Arc<State>) {
    let mut tick = tokio::time::interval(history::PERIOD);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let services = match st.call(Request::List { service: None }).await {
            Response::Services { services } => services,
            _ => continue,
        };
        let checks = match st.call(Request::HealthList).await {
            Response::Health { checks, .. } => checks,
            _ => Vec::new(),
        };
        st.history
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .record(&services, &checks);
    }
}

#[cfg(test)]
mod tests;
