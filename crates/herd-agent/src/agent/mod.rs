//! The agent: accepts mutual-TLS connections and serves one request on each.
//!
//! A connection's life: TLS handshake (bounded by [`HANDSHAKE_TIMEOUT`], and held to the
//! handshake budget of [`crate::gate`]; the verifier has already refused strangers and revoked
//! certificates) → a slot of `max-connections`, taken only now → one `Request` frame → the
//! role check → the answer. `exec` runs `/bin/sh -c COMMAND` as the configured user in a
//! process group of its own, with a minimal environment, and streams its output back; the
//! client's `Signal` frames go to that process group, and so does the kill at the timeout or
//! when the client goes away. Every request that runs or is refused is written to the audit
//! log, and what runs only once its line is written (the log fails closed).
//!
//! A client that stops reading stalls only its own command (the pipes fill up); after
//! [`WRITE_STALL`] without progress the connection is dropped and the command killed.
//!
//! Everything the config sets can change while the agent runs ([`Agent::update`]): a
//! connection takes the settings in force when it is accepted (its TLS handshake, its request)
//! and keeps them to its end; listeners come and go one by one ([`Agent::listen`]), and the
//! connections a listener accepted outlive it.
//!
//! Where to look: `serve.rs` (one connection: identity, role, grant, dispatch; pull and push),
//! `exec.rs` (a command's run), `audit.rs` (the audit log), `limit.rs` (the resizable counts).

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, RwLock};
use std::time::Instant;

use tokio::net::{TcpListener, TcpStream};
use tokio::sync::oneshot;
use tokio::task::AbortHandle;
use tokio::time::timeout;
use tokio_rustls::server::TlsStream;
use tokio_rustls::TlsAcceptor;

use crate::gate::{Handshakes, Source, PER_SOURCE};
use crate::grant::Checker;
use crate::tls::Revoked;

mod audit;
mod exec;
mod limit;
mod serve;

pub use crate::deadlines::{
    HANDSHAKE_TIMEOUT, INTERRUPT_GRACE, KILL_GRACE, REQUEST_TIMEOUT, WRITE_STALL,
};
pub use crate::user::{lookup_user, User, UserError};

/// The `PATH` commands get.
pub const PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

#[derive(Debug, Clone)]
pub struct Settings {
    /// This node's name (the command sees it as `HERD_NODE`).
    pub name: String,
    pub tls: Arc<rustls::ServerConfig>,
    pub revoked: Revoked,
    /// Commands run as this user (the agent must be root to run them as someone else).
    pub user: String,
    pub audit_log: Option<PathBuf>,
    /// Verified peers served at once; more are closed once their handshake is done. Unfinished
    /// handshakes have a budget of their own, half as many (see [`crate::gate`]).
    pub max_connections: usize,
    /// Checks the grants of requests relayed by other nodes.
    pub grants: Arc<Checker>,
    /// This node's client side, to relay runs to its subtree (its node certificate).
    pub relay_tls: Option<Arc<rustls::ClientConfig>>,
    /// The sync modules it serves.
    pub modules: crate::module::Modules,
}

#[derive(Debug)]
pub struct Agent {
    /// The settings in force; a connection takes the current ones when it is accepted.
    settings: RwLock<Arc<Settings>>,
    started: Instant,
    /// Verified peers: a connection takes one after its handshake and identity check.
    slots: limit::Slots,
    /// Unfinished handshakes, each with the sender whose drop makes it give up.
    handshakes: Mutex<Handshakes<oneshot::Sender<()>>>,
    /// Every socket the agent holds, whatever its stage ([`sockets_for`]): taken before an
    /// accept, given back when the connection is closed.
    sockets: limit::Sockets,
    audit: Mutex<()>,
}

/// A listener the agent serves: it accepts until this is dropped (or [`Listening::stop`]);
/// the connections it accepted go on to their end.
#[derive(Debug)]
pub struct Listening {
    addr: SocketAddr,
    task: Option<AbortHandle>,
}

impl Listening {
    /// The address it is bound to.
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    /// Stops accepting (the socket closes once the accept loop has seen it).
    pub fn stop(mut self) {
        if let Some(t) = self.task.take() {
            t.abort();
        }
    }

    /// Serves for as long as the runtime runs.
    pub fn detach(mut self) {
        self.task = None;
    }
}

impl Drop for Listening {
    fn drop(&mut self) {
        if let Some(t) = self.task.take() {
            t.abort();
        }
    }
}

impl Agent {
    pub fn new(settings: Settings) -> Arc<Agent> {
        let max = settings.max_connections;
        Arc::new(Agent {
            slots: limit::Slots::new(max),
            sockets: limit::Sockets::new(sockets_for(max)),
            handshakes: Mutex::new(Handshakes::new(handshake_budget(max), PER_SOURCE)),
            settings: RwLock::new(Arc::new(settings)),
            started: Instant::now(),
            audit: Mutex::new(()),
        })
    }

    /// The settings in force.
    pub fn settings(&self) -> Arc<Settings> {
        self.settings
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// New settings, in force for the next connection: its TLS handshake (certificate, key,
    /// CA), name, user, audit log, modules. A new `max-connections` resizes the slots, the
    /// handshake budget and the socket bound at once; lowering them takes nothing from the
    /// connections that hold them, new ones wait or are turned away until enough have ended.
    pub fn update(&self, settings: Settings) {
        let max = settings.max_connections;
        self.slots.set(max);
        self.sockets.resize(sockets_for(max));
        self.lock_handshakes().set_budget(handshake_budget(max));
        *self.settings.write().unwrap_or_else(|p| p.into_inner()) = Arc::new(settings);
    }

    /// `max-connections` as the slots count it now.
    pub fn max_connections(&self) -> usize {
        self.slots.max()
    }

    /// Verified peers served now (each holds one of `max-connections`).
    pub fn served(&self) -> usize {
        self.slots.used()
    }

    /// Serves `listener` until the returned handle is dropped or stopped.
    pub fn listen(self: &Arc<Self>, listener: TcpListener) -> std::io::Result<Listening> {
        let addr = listener.local_addr()?;
        let agent = self.clone();
        let task = tokio::spawn(async move { agent.accept_loop(listener).await });
        Ok(Listening {
            addr,
            task: Some(task.abort_handle()),
        })
    }

    /// Serves every listener until the runtime ends.
    pub fn spawn(self: &Arc<Self>, listeners: Vec<TcpListener>) {
        for l in listeners {
            match self.listen(l) {
                Ok(l) => l.detach(),
                Err(e) => tracing::warn!(error = %e, "agent: a listener without an address"),
            }
        }
    }

    async fn accept_loop(self: Arc<Self>, listener: TcpListener) {
        let mut backoff = herd_core::backoff::Backoff::default();
        loop {
            // A flood makes the gate push out old handshakes as new ones come; their sockets
            // close when their tasks next run, so without this bound a burst of accepts would
            // hold hundreds of descriptors at once (measured at ulimit -n 256: EMFILE, which
            // every other listener and the data plane share). Beyond it, connections wait in
            // the kernel's backlog.
            let Some(socket) = self.sockets.take().await else {
                return;
            };
            let (tcp, peer) = match listener.accept().await {
                Ok(c) => {
                    backoff.succeeded();
                    c
                }
                Err(e) => {
                    // Out of file descriptors and the like: wait rather than spin.
                    tracing::warn!(error = %e, "agent: accept failed");
                    tokio::time::sleep(backoff.failed()).await;
                    continue;
                }
            };
            let src = Source::from(peer.ip());
            let (give_up, displaced) = oneshot::channel();
            let (id, pushed_out) = self.lock_handshakes().admit(src, give_up);
            if pushed_out.is_some() {
                tracing::info!(%peer, "agent: too many unfinished handshakes; the oldest of the busiest source closed to make room");
            }
            let agent = self.clone();
            tokio::spawn(async move {
                let _socket = socket;
                let s = agent.settings();
                let pending = Pending {
                    agent: &agent,
                    src,
                    id,
                };
                let Some(tls) = handshake(&s, tcp, peer, displaced).await else {
                    return;
                };
                drop(pending);
                agent.serve(&s, tls, peer).await;
            });
        }
    }

    fn lock_handshakes(&self) -> std::sync::MutexGuard<'_, Handshakes<oneshot::Sender<()>>> {
        self.handshakes.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// The TLS handshake with the settings' certificate, within [`HANDSHAKE_TIMEOUT`], unless the
/// gate makes it give up.
async fn handshake(
    s: &Settings,
    tcp: TcpStream,
    peer: SocketAddr,
    displaced: oneshot::Receiver<()>,
) -> Option<TlsStream<TcpStream>> {
    let _ = tcp.set_nodelay(true);
    let acceptor = TlsAcceptor::from(s.tls.clone());
    let res = tokio::select! {
        r = timeout(HANDSHAKE_TIMEOUT, acceptor.accept(tcp)) => r,
        _ = displaced => {
            tracing::info!(%peer, "agent: unfinished TLS handshake closed to make room");
            return None;
        }
    };
    match res {
        Ok(Ok(s)) => Some(s),
        Ok(Err(e)) => {
            tracing::info!(%peer, error = %e, "agent: TLS handshake refused");
            None
        }
        Err(_) => {
            tracing::info!(%peer, "agent: TLS handshake timed out");
            None
        }
    }
}

/// The handshake budget for `max_connections` verified slots: half as many, so that the agent
/// holds at most 1.5 × `max-connections` sockets (the daemon sizes it from its file limit).
pub fn handshake_budget(max_connections: usize) -> usize {
    max_connections.div_ceil(2).max(1)
}

/// Sockets pushed out of the handshake budget that may still be closing when new ones come.
const CLOSING: usize = 8;

/// The most sockets the agent holds at once: its verified peers, its unfinished handshakes,
/// and those still closing (the daemon sizes `max-connections` so that these, and each
/// command's pipes, fit its file descriptors).
pub fn sockets_for(max_connections: usize) -> usize {
    max_connections.max(1) + handshake_budget(max_connections) + CLOSING
}

/// One connection's view: the agent, the settings in force when it was accepted, the peer.
struct Conn<'a> {
    agent: &'a Agent,
    s: &'a Settings,
    peer: SocketAddr,
}

/// An unfinished handshake's place in the gate, given back when it ends (either way).
struct Pending<'a> {
    agent: &'a Agent,
    src: Source,
    id: u64,
}

impl Drop for Pending<'_> {
    fn drop(&mut self) {
        self.agent.lock_handshakes().finish(self.src, self.id);
    }
}
