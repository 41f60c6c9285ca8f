//! What every handler shares: the backend, this node's [`Info`], the `[web]` section in force,
//! sessions, the login limiter, the audit log, the history for the charts, the counters and the
//! caps. It knows nothing of HTTP: the transport (`server.rs`) and the views (`api.rs`,
//! `pages.rs`, `metrics.rs`) read it; only the apply path (`lib.rs`) replaces what is in it.

use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering::Relaxed};
use std::sync::{Arc, Mutex, OnceLock, RwLock};

use herd_core::api::{ApiError, ErrorKind, Request, Response};
use herd_core::config::web::WebConfig;

use crate::{audit, auth, history};

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

/// Live pages one session may have open at once (so that one user cannot take them all).
pub(crate) const STREAMS_PER_SESSION: usize = 8;
/// Live pages open at once.
const STREAMS: usize = 64;
/// Connections one client address may hold at once.
const MAX_PER_ADDR: usize = 32;
/// Password checks at once: each takes ~19 MiB and tens of milliseconds.
const VERIFYING: usize = 2;

pub(crate) struct State {
    pub backend: Arc<dyn Backend>,
    /// What the pages say about this node (a reload may rename it).
    info: RwLock<Info>,
    /// The `[web]` section in force (without `[web]`: no users, nothing served).
    cfg: RwLock<Arc<WebConfig>>,
    pub sessions: Mutex<auth::Sessions>,
    pub limiter: Mutex<auth::Limiter>,
    /// At most [`VERIFYING`] argon2 checks at once.
    pub verifying: Arc<tokio::sync::Semaphore>,
    /// Compared against when the user name is unknown, so that the answer takes as long.
    dummy_hash: OnceLock<String>,
    pub history: Mutex<history::History>,
    pub audit: audit::Audit,
    /// Live pages open at once (each a task refreshing every second).
    pub streams: Arc<tokio::sync::Semaphore>,
    /// Live pages open per session token.
    pub session_streams: Arc<PerKey<String>>,
    /// Connections served at once, over every listener (an old one finishing its connections
    /// after a move counts too).
    pub connections: Arc<ConnCap>,
    /// Connections per client (IPv4 address or IPv6 /64), over every listener.
    pub per_client: Arc<PerKey<std::net::IpAddr>>,
    pub counters: WebCounters,
    /// Set when the daemon starts shutting down.
    pub closing: AtomicBool,
    /// `/metrics`' bearer token, read from `web.metrics-token-file`.
    pub metrics_token: RwLock<Option<String>>,
}

impl State {
    /// What the pages say about this node now.
    pub fn info(&self) -> Info {
        self.info.read().unwrap_or_else(|p| p.into_inner()).clone()
    }

    pub fn set_info(&self, info: Info) {
        *self.info.write().unwrap_or_else(|p| p.into_inner()) = info;
    }

    pub fn new(backend: Arc<dyn Backend>, info: Info, max_connections: usize) -> State {
        State {
            backend,
            info: RwLock::new(info),
            cfg: RwLock::new(Arc::new(WebConfig::default())),
            sessions: Mutex::default(),
            limiter: Mutex::default(),
            verifying: Arc::new(tokio::sync::Semaphore::new(VERIFYING)),
            dummy_hash: OnceLock::new(),
            history: Mutex::default(),
            audit: audit::Audit::new(None),
            streams: Arc::new(tokio::sync::Semaphore::new(STREAMS)),
            session_streams: PerKey::new(STREAMS_PER_SESSION),
            connections: ConnCap::new(max_connections),
            per_client: PerKey::new(MAX_PER_ADDR),
            counters: WebCounters::default(),
            closing: AtomicBool::new(false),
            metrics_token: RwLock::new(None),
        }
    }

    /// An argon2id hash of a random password: an unknown user's password is checked against
    /// it, so that the answer takes as long as for a known user.
    pub fn dummy_hash(&self) -> String {
        self.dummy_hash
            .get_or_init(|| auth::hash_password(&auth::token()).unwrap_or_default())
            .clone()
    }

    pub fn cfg(&self) -> Arc<WebConfig> {
        self.cfg.read().unwrap_or_else(|p| p.into_inner()).clone()
    }

    pub fn set_cfg(&self, cfg: WebConfig) {
        *self.cfg.write().unwrap_or_else(|p| p.into_inner()) = Arc::new(cfg);
    }

    pub fn metrics_token(&self) -> Option<String> {
        self.metrics_token
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    pub fn set_metrics_token(&self, t: Option<String>) {
        *self
            .metrics_token
            .write()
            .unwrap_or_else(|p| p.into_inner()) = t;
    }

    pub fn closing(&self) -> bool {
        self.closing.load(Relaxed)
    }

    /// Calls the backend on the blocking pool.
    pub async fn call(self: &Arc<Self>, req: Request) -> Response {
        let s = self.clone();
        match tokio::task::spawn_blocking(move || s.backend.call(req)).await {
            Ok(r) => r,
            Err(e) => Response::Error(ApiError::new(
                ErrorKind::Internal,
                format!("the request failed: {e}"),
            )),
        }
    }
}

/// The web server's own counters.
#[derive(Debug, Default)]
pub struct WebCounters {
    pub logins_ok: AtomicU64,
    pub logins_failed: AtomicU64,
    pub logins_limited: AtomicU64,
}

impl WebCounters {
    pub fn login(&self, outcome: &str) {
        match outcome {
            "ok" => &self.logins_ok,
            "limited" => &self.logins_limited,
            _ => &self.logins_failed,
        }
        .fetch_add(1, Relaxed);
    }
}

/// The cap on connections served at once, which a reload may move (the daemon sizes it from
/// its open-files limit and the listeners the config has). Lowered below what is open, it
/// takes the difference back as connections end instead of closing any.
pub(crate) struct ConnCap {
    slots: Arc<tokio::sync::Semaphore>,
    max: Mutex<usize>,
    /// Slots to take back as connections end.
    owed: AtomicUsize,
}

/// One connection's slot, given back (or taken back, when the cap was lowered) on drop.
pub(crate) struct ConnSlot {
    permit: Option<tokio::sync::OwnedSemaphorePermit>,
    cap: Arc<ConnCap>,
}

impl ConnCap {
    pub fn new(max: usize) -> Arc<ConnCap> {
        let max = max.max(1);
        Arc::new(ConnCap {
            slots: Arc::new(tokio::sync::Semaphore::new(max)),
            max: Mutex::new(max),
            owed: AtomicUsize::new(0),
        })
    }

    /// Waits for a free slot.
    pub async fn take(self: &Arc<Self>) -> Option<ConnSlot> {
        let permit = self.slots.clone().acquire_owned().await.ok()?;
        Some(ConnSlot {
            permit: Some(permit),
            cap: self.clone(),
        })
    }

    /// Moves the cap to `max` (at least 1).
    pub fn resize(&self, max: usize) {
        let max = max.max(1);
        let mut now = self.max.lock().unwrap_or_else(|p| p.into_inner());
        if max > *now {
            let grow = max - *now;
            // What is owed is forgiven first, then new slots are made.
            let forgiven = self
                .owed
                .fetch_update(Relaxed, Relaxed, |o| Some(o - o.min(grow)))
                .map_or(0, |o| o.min(grow));
            self.slots.add_permits(grow - forgiven);
        } else {
            let shrink = *now - max;
            let free = self.slots.forget_permits(shrink);
            self.owed.fetch_add(shrink - free, Relaxed);
        }
        *now = max;
    }
}

impl Drop for ConnSlot {
    fn drop(&mut self) {
        let owed = self
            .cap
            .owed
            .fetch_update(Relaxed, Relaxed, |o| o.checked_sub(1));
        if let (Ok(_), Some(p)) = (owed, self.permit.take()) {
            p.forget();
        }
    }
}

/// At most `max` of something per key at once (connections per client address, live pages
/// per session); a key is forgotten when its last one ends.
pub(crate) struct PerKey<K> {
    max: usize,
    held: Mutex<std::collections::HashMap<K, usize>>,
}

/// One of a key's share, given back on drop.
pub(crate) struct KeySlot<K: Eq + std::hash::Hash + Clone>(Arc<PerKey<K>>, K);

impl<K: Eq + std::hash::Hash + Clone> PerKey<K> {
    pub(crate) fn new(max: usize) -> Arc<PerKey<K>> {
        Arc::new(PerKey {
            max,
            held: Mutex::default(),
        })
    }

    /// A slot for `key`, or none if it holds `max` already.
    pub(crate) fn take(self: &Arc<Self>, key: &K) -> Option<KeySlot<K>> {
        let mut m = self.held.lock().unwrap_or_else(|p| p.into_inner());
        let n = m.entry(key.clone()).or_default();
        if *n >= self.max {
            return None;
        }
        *n += 1;
        Some(KeySlot(self.clone(), key.clone()))
    }
}

impl<K: Eq + std::hash::Hash + Clone> Drop for KeySlot<K> {
    fn drop(&mut self) {
        let mut m = self.0.held.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(n) = m.get_mut(&self.1) {
            *n -= 1;
            if *n == 0 {
                m.remove(&self.1);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(flavor = "current_thread")]
    async fn a_lowered_cap_takes_its_slots_back_as_connections_end() {
        let cap = ConnCap::new(3);
        let a = cap.take().await.unwrap();
        let b = cap.take().await.unwrap();
        assert_eq!(cap.slots.available_permits(), 1);
        // Two open, cap 1: the free slot goes now, one more when a connection ends.
        cap.resize(1);
        assert_eq!(cap.slots.available_permits(), 0);
        drop(a);
        assert_eq!(cap.slots.available_permits(), 0, "taken back");
        drop(b);
        assert_eq!(cap.slots.available_permits(), 1);
        // Raised while something is owed: forgiven first.
        let c = cap.take().await.unwrap();
        cap.resize(0);
        assert_eq!(cap.owed.load(Relaxed), 0, "1 is the least");
        cap.resize(4);
        assert_eq!(cap.slots.available_permits(), 3);
        drop(c);
        assert_eq!(cap.slots.available_permits(), 4);
        let d = cap.take().await.unwrap();
        let e = cap.take().await.unwrap();
        cap.resize(1);
        assert_eq!(
            (cap.slots.available_permits(), cap.owed.load(Relaxed)),
            (0, 1)
        );
        cap.resize(2);
        assert_eq!(
            (cap.slots.available_permits(), cap.owed.load(Relaxed)),
            (0, 0)
        );
        drop((d, e));
        assert_eq!(cap.slots.available_permits(), 2);
    }
}
