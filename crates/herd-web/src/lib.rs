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
    verifying: tokio::sync::Semaphore,
    /// Compared against when the user name is unknown, so that the answer takes as long.
    dummy_hash: String,
    history: Mutex<history::History>,
    audit: audit::Audit,
    /// Live pages open at once (each a task refreshing every second).
    streams: Arc<tokio::sync::Semaphore>,
    counters: metrics::WebCounters,
}

impl State {
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
        let listener = http::Listener::bind(cfg).await?;
        let dummy_hash = tokio::task::spawn_blocking(|| auth::hash_password(&auth::token()))
            .await
            .map_err(|e| e.to_string())??;
        let state = Arc::new(State {
            backend,
            info,
            tls: cfg.tls.is_some(),
            cfg: RwLock::new(Arc::new(cfg.clone())),
            sessions: Mutex::default(),
            limiter: Mutex::default(),
            verifying: tokio::sync::Semaphore::new(2),
            dummy_hash,
            history: Mutex::default(),
            audit: audit::Audit::new(cfg.audit_log.clone()),
            streams: Arc::new(tokio::sync::Semaphore::new(64)),
            counters: metrics::WebCounters::default(),
        });
        Ok((Web { state }, listener))
    }

    /// Serves the listener and samples the history; the tasks end with the runtime.
    pub fn spawn(&self, listener: http::Listener) {
        tokio::spawn(http::serve(self.state.clone(), listener));
        tokio::spawn(history::sample(self.state.clone()));
    }

    /// Applies a reloaded `[web]` section: users, roles, timeouts and the audit log at once
    /// (sessions of removed users or changed roles end); returns what waits for a restart.
    pub fn reload(&self, cfg: Option<&WebConfig>) -> Vec<String> {
        let Some(cfg) = cfg else {
            return vec!["web".to_string()];
        };
        let old = self.state.cfg();
        let mut pending = Vec::new();
        if old.listen != cfg.listen || old.tls != cfg.tls {
            pending.push("web.listen/tls".to_string());
        }
        let mut new = cfg.clone();
        new.listen = old.listen;
        new.tls = old.tls.clone();
        self.state.audit.set_path(cfg.audit_log.clone());
        *self.state.cfg.write().unwrap_or_else(|p| p.into_inner()) = Arc::new(new);
        pending
    }

    /// Where it listens (the port is the kernel's choice when the config said 0).
    pub fn url(&self, listener: &http::Listener) -> String {
        listener.url(self.state.tls)
    }
}

pub use http::Listener;
