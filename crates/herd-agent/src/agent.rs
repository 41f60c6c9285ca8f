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

use std::io::Write;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rustix::process::{kill_process_group, Pid, Signal};
use serde::Serialize;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, oneshot, Semaphore};
use tokio::time::{sleep_until, timeout};
use tokio_rustls::server::TlsStream;
use tokio_rustls::TlsAcceptor;

use crate::client::{self, Run};
use crate::frame::{write_frames, Frame, FrameReader, Kind};
use crate::gate::{Handshakes, Source, PER_SOURCE};
use crate::grant::Checker;
use crate::pki::{Identity, Role};
use crate::proto::{
    ExecRequest, Exit, Failure, FailureKind, Pong, Request, StdinDigest, RELAYED_STDIN_MAX, SIGNALS,
};
use crate::tls::Revoked;

/// How long a client has to finish the TLS handshake. A handshake is two round trips and
/// a few signatures (milliseconds, even across continents); the deadline is what an idle
/// stranger can hold a place of the handshake budget for.
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(2);
/// How long a verified peer turned away for want of a slot has to send its request (it sends
/// it right after the handshake) and to take the answer.
const BUSY_GRACE: Duration = Duration::from_secs(1);
/// How long a client has to send its request after the handshake.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);
/// How long a write to a client may make no progress before the client is dropped.
pub const WRITE_STALL: Duration = Duration::from_secs(30);
/// After SIGTERM at a timeout, how long before SIGKILL.
pub const KILL_GRACE: Duration = Duration::from_secs(2);
/// After a signal from the client and the shell's exit, how long the output may stay open.
pub const INTERRUPT_GRACE: Duration = Duration::from_secs(1);
/// Bytes read from a command's output at a time (one frame at most).
const CHUNK: usize = 64 * 1024;

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
    settings: Settings,
    started: Instant,
    /// Verified peers: a connection takes one after its handshake and identity check.
    slots: Arc<Semaphore>,
    /// Unfinished handshakes, each with the sender whose drop makes it give up.
    handshakes: Mutex<Handshakes<oneshot::Sender<()>>>,
    /// Every socket the agent holds, whatever its stage ([`sockets_for`]): taken before an
    /// accept, given back when the connection is closed.
    sockets: Arc<Semaphore>,
    audit: Mutex<()>,
}

impl Agent {
    pub fn new(settings: Settings) -> Arc<Agent> {
        Arc::new(Agent {
            slots: Arc::new(Semaphore::new(settings.max_connections.max(1))),
            sockets: Arc::new(Semaphore::new(sockets_for(settings.max_connections))),
            handshakes: Mutex::new(Handshakes::new(
                handshake_budget(settings.max_connections),
                PER_SOURCE,
            )),
            settings,
            started: Instant::now(),
            audit: Mutex::new(()),
        })
    }

    pub fn settings(&self) -> &Settings {
        &self.settings
    }

    /// Serves every listener until the runtime ends.
    pub fn spawn(self: &Arc<Self>, listeners: Vec<TcpListener>) {
        for l in listeners {
            let agent = self.clone();
            tokio::spawn(async move { agent.accept_loop(l).await });
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
            let Ok(socket) = self.sockets.clone().acquire_owned().await else {
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
                let pending = Pending {
                    agent: &agent,
                    src,
                    id,
                };
                let Some(tls) = agent.handshake(tcp, peer, displaced).await else {
                    return;
                };
                drop(pending);
                agent.serve(tls, peer).await;
            });
        }
    }

    fn lock_handshakes(&self) -> std::sync::MutexGuard<'_, Handshakes<oneshot::Sender<()>>> {
        self.handshakes.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The TLS handshake, within [`HANDSHAKE_TIMEOUT`], unless the gate makes it give up.
    async fn handshake(
        &self,
        tcp: TcpStream,
        peer: SocketAddr,
        displaced: oneshot::Receiver<()>,
    ) -> Option<TlsStream<TcpStream>> {
        let _ = tcp.set_nodelay(true);
        let acceptor = TlsAcceptor::from(self.settings.tls.clone());
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

    async fn serve(&self, tls: TlsStream<TcpStream>, peer: SocketAddr) {
        if tls.get_ref().1.handshake_kind() == Some(rustls::HandshakeKind::Resumed) {
            tracing::debug!(%peer, "agent: TLS session resumed");
        }
        // Checked again here: a resumed session did not go through the verifier. A refusal
        // waits for the request, so that it can name the nodes it concerns.
        let (id, invalid) = match tls.get_ref().1.peer_certificates().and_then(|c| c.first()) {
            None => return,
            Some(der) => match crate::tls::check_identity(der, &self.settings.revoked) {
                Ok(id) => (id, None),
                Err(why) => match Identity::from_der(der) {
                    Ok(id) => (id, Some(why)),
                    Err(_) => return,
                },
            },
        };
        // Only a peer the cluster's CA vouches for takes a slot; it holds it to the end.
        let Ok(_slot) = self.slots.clone().try_acquire_owned() else {
            tracing::warn!(%peer, who = %id.name, "agent: max-connections verified peers served already; turning this one away");
            self.turn_away(tls).await;
            return;
        };
        let (rd, mut wr) = tokio::io::split(tls);
        let mut rd = FrameReader::new(rd);
        let req = match timeout(REQUEST_TIMEOUT, rd.read()).await {
            Ok(Ok(Some(f))) if f.kind == Kind::Request => f.parse::<Request>(),
            Ok(Ok(Some(f))) => {
                tracing::info!(%peer, kind = ?f.kind, "agent: expected a request");
                return;
            }
            Ok(Ok(None)) => return,
            Ok(Err(e)) => {
                tracing::info!(%peer, error = %e, "agent: bad frame; closing");
                return;
            }
            Err(_) => {
                tracing::info!(%peer, "agent: no request in time");
                return;
            }
        };
        let req = match req {
            Ok(r) => r,
            Err(e) => {
                let _ = fail(&mut wr, 0, FailureKind::Agent, format!("bad request: {e}")).await;
                return;
            }
        };
        if let Some(why) = invalid {
            tracing::warn!(%peer, who = %id.name, "agent: refused after the handshake: {why}");
            let _ = refuse(
                &mut wr,
                &req,
                &self.settings.name,
                format!("refused: {why}"),
            )
            .await;
            return;
        }
        if !req.allowed(id.role) {
            let message = format!(
                "refused: {} needs an admin certificate; {:?} holds a {} certificate",
                req.name(),
                id.name,
                id.role
            );
            tracing::warn!(%peer, who = %id.name, role = %id.role, request = req.name(), "agent: refused");
            let _ = self.audit(&AuditRecord {
                event: "refused",
                request: req.name(),
                command: match &req {
                    Request::Exec(e) => Some(&e.command),
                    Request::Pull(p) => Some(&p.module),
                    Request::Ping | Request::Sync(_) => None,
                },
                ..AuditRecord::new(&id, peer, &self.settings)
            });
            let _ = refuse(&mut wr, &req, &self.settings.name, message).await;
            return;
        }
        // A node relays an admin's run: the grant must hold, and the admin is who runs it.
        let (caller, via) = match &req {
            Request::Exec(e) if id.role == Role::Node => {
                let checked = e
                    .auth
                    .as_ref()
                    .ok_or_else(|| "a relayed request carries no grant".to_string())
                    .and_then(|a| self.settings.grants.check(a, e, &self.settings.name));
                match checked {
                    Ok(admin) => (admin, Some(id.name.clone())),
                    Err(why) => {
                        tracing::warn!(%peer, via = %id.name, "agent: relayed request refused: {why}");
                        let _ = self.audit(&AuditRecord {
                            event: "refused",
                            request: "exec",
                            command: Some(&e.command),
                            reason: Some(&why),
                            ..AuditRecord::new(&id, peer, &self.settings)
                        });
                        let _ = refuse(
                            &mut wr,
                            &req,
                            &self.settings.name,
                            format!("refused: {why}"),
                        )
                        .await;
                        return;
                    }
                }
            }
            _ => (id.clone(), None),
        };
        match req {
            Request::Ping => {
                let pong = Pong {
                    name: self.settings.name.clone(),
                    version: env!("CARGO_PKG_VERSION").to_string(),
                    you: id.name.clone(),
                    role: id.role,
                    uptime_secs: self.started.elapsed().as_secs(),
                    load: loadavg(),
                };
                let _ = write_frames(&mut wr, &[Frame::json(Kind::Pong, 0, &pong)]).await;
                let _ = wr.shutdown().await;
            }
            Request::Exec(e) => {
                let input = match self.granted_stdin(&id, peer, &e, &mut rd).await {
                    Ok(input) => input,
                    Err(why) => {
                        let req = Request::Exec(e);
                        let _ = refuse(&mut wr, &req, &self.settings.name, why).await;
                        return;
                    }
                };
                let who = Caller {
                    id: &caller,
                    via: via.as_deref(),
                    peer,
                };
                self.exec(who, e, input, rd, wr).await
            }
            Request::Pull(p) => self.pull(&caller, peer, p, rd, wr).await,
            Request::Sync(mut r) => {
                if let Some(name) = r.module.clone() {
                    match self.open_module(&name, &caller, true, peer) {
                        Ok(open) => {
                            r.dest = open.module.path.display().to_string();
                            r.exclude.extend(open.module.exclude.iter().cloned());
                            // The slot is held for the transfer.
                            let _open = open;
                            return self.sync(&caller, peer, r, rd, wr).await;
                        }
                        Err(why) => {
                            let _ = fail(&mut wr, r.rank, FailureKind::Refused, why).await;
                            return;
                        }
                    }
                }
                self.sync(&caller, peer, r, rd, wr).await;
            }
        }
    }

    /// A verified peer beyond `max-connections`: its request gets an answer that says so
    /// (within [`BUSY_GRACE`], no slot held), so that its client can tell busy from broken.
    async fn turn_away(&self, tls: TlsStream<TcpStream>) {
        let (rd, mut wr) = tokio::io::split(tls);
        let mut rd = FrameReader::new(rd);
        let Ok(Ok(Some(f))) = timeout(BUSY_GRACE, rd.read()).await else {
            return;
        };
        let Some(req) = (f.kind == Kind::Request)
            .then(|| f.parse::<Request>().ok())
            .flatten()
        else {
            return;
        };
        let why = format!(
            "busy: {} serves {} connections already ([agent] max-connections); try again",
            self.settings.name, self.settings.max_connections
        );
        let frames = match &req {
            Request::Exec(e) => not_run(e.rank, &e.subtree, &self.settings.name, &why),
            Request::Sync(r) => not_run(r.rank, &r.subtree, &self.settings.name, &why),
            Request::Ping | Request::Pull(_) => not_run(0, &[], &self.settings.name, &why),
        };
        let _ = timeout(BUSY_GRACE, write_frames(&mut wr, &frames)).await;
        let _ = timeout(BUSY_GRACE, wr.shutdown()).await;
    }

    /// The whole stdin of a run whose grant covers it (a run through relays), checked against
    /// the grant's hash; `None` when stdin streams (a direct run). A refusal is audited.
    async fn granted_stdin<R: AsyncRead + Unpin>(
        &self,
        id: &Identity,
        peer: SocketAddr,
        req: &ExecRequest,
        rd: &mut FrameReader<R>,
    ) -> Result<Option<Arc<Vec<u8>>>, String> {
        let Some(want) = req.stdin_digest.as_ref().filter(|_| req.stdin) else {
            return Ok(None);
        };
        match read_stdin(rd, want).await {
            Ok(data) => Ok(Some(Arc::new(data))),
            Err(why) => {
                tracing::warn!(%peer, via = %id.name, "agent: relayed request refused: {why}");
                let _ = self.audit(&AuditRecord {
                    event: "refused",
                    request: "exec",
                    command: Some(&req.command),
                    reason: Some(&why),
                    ..AuditRecord::new(id, peer, &self.settings)
                });
                Err(format!("refused: {why}"))
            }
        }
    }

    /// A module for a transfer, or why not (written to the audit log).
    fn open_module(
        &self,
        name: &str,
        id: &Identity,
        write: bool,
        peer: SocketAddr,
    ) -> Result<crate::module::Open, String> {
        let res = self
            .settings
            .modules
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .open(name, id, write, &self.settings.name);
        if let Err(why) = &res {
            tracing::warn!(%peer, who = %id.name, module = name, "agent: {why}");
            let _ = self.audit(&AuditRecord {
                event: "refused",
                request: if write { "sync" } else { "pull" },
                command: Some(name),
                reason: Some(why),
                ..AuditRecord::new(id, peer, &self.settings)
            });
        }
        res
    }

    /// `herd sync pull NODE::MODULE`: this agent sends the module's tree.
    async fn pull<R, W>(
        &self,
        id: &Identity,
        peer: SocketAddr,
        req: crate::proto::PullRequest,
        rd: FrameReader<R>,
        mut wr: W,
    ) where
        R: AsyncRead + Unpin + Send + 'static,
        W: AsyncWrite + Unpin,
    {
        let open = match self.open_module(&req.module, id, false, peer) {
            Ok(o) => o,
            Err(why) => {
                let _ = fail(&mut wr, 0, FailureKind::Refused, why).await;
                return;
            }
        };
        let m = &open.module;
        let started = self.audit(&AuditRecord {
            event: "start",
            request: "pull",
            command: Some(&m.name),
            ..AuditRecord::new(id, peer, &self.settings)
        });
        if let Err(why) = started {
            let _ = fail(&mut wr, 0, FailureKind::Agent, format!("not served: {why}")).await;
            return;
        }
        let opts = herd_sync::manifest::ScanOptions {
            hash: req.checksum,
            exclude: m.exclude.clone(),
        };
        let path = m.path.clone();
        let scanned = tokio::task::spawn_blocking(move || herd_sync::manifest::scan(&path, &opts))
            .await
            .map_err(|e| e.to_string())
            .and_then(|r| r);
        let res = match scanned {
            Err(e) => {
                let e = format!("module {:?}: {e}", m.name);
                let _ = fail(&mut wr, 0, FailureKind::Agent, e.clone()).await;
                Err(e)
            }
            Ok(manifest) => {
                let tree = crate::sync::Tree::new(&m.path, &manifest);
                let client = client::Target {
                    rank: 0,
                    name: id.name.clone(),
                    addr: peer.to_string(),
                };
                let opts = crate::sync::PushOptions {
                    compress: req.compress,
                    ..Default::default()
                };
                let mut res =
                    crate::sync::send_link(rd, &mut wr, &client, vec![0], &tree, &opts).await;
                match res.pop() {
                    Some((_, Ok(_))) => Ok(()),
                    Some((_, Err(o))) => Err(o.problem().unwrap_or_default()),
                    None => Err("no answer".into()),
                }
            }
        };
        let failed = res.as_ref().err().cloned();
        let _ = self.audit(&AuditRecord {
            event: "end",
            request: "pull",
            command: Some(&m.name),
            reason: failed.as_deref(),
            ..AuditRecord::new(id, peer, &self.settings)
        });
        let _ = wr.shutdown().await;
        if let Some(e) = failed {
            tracing::warn!(%peer, module = %m.name, "agent: pull failed: {e}");
        }
    }

    /// A push: this agent makes `r.dest` the copy of the client's tree.
    async fn sync<R, W>(
        &self,
        caller: &Identity,
        peer: SocketAddr,
        mut r: crate::proto::SyncRequest,
        mut rd: FrameReader<R>,
        mut wr: W,
    ) where
        R: AsyncRead + Unpin,
        W: AsyncWrite + Unpin + Send + 'static,
    {
        let started = self.audit(&AuditRecord {
            event: "start",
            request: "sync",
            command: Some(&r.dest),
            ..AuditRecord::new(caller, peer, &self.settings)
        });
        if let Err(why) = started {
            let _ = fail(
                &mut wr,
                r.rank,
                FailureKind::Agent,
                format!("not run: {why}"),
            )
            .await;
            return;
        }
        // A node relaying an admin's push: the grant must cover the request and the
        // manifest (whose file hashes each node checks).
        // An admin's tree: from an admin, or relayed with an admin's grant (checked below).
        r.trusted = caller.role == Role::Admin || (caller.role == Role::Node && r.module.is_none());
        let verify: Option<Box<crate::sync::Verify>> =
            (caller.role == Role::Node && r.module.is_none()).then(|| {
                let (auth, checker, me, req) = (
                    r.auth.clone(),
                    self.settings.grants.clone(),
                    self.settings.name.clone(),
                    r.clone(),
                );
                Box::new(move |m: &[u8]| -> Result<(), String> {
                    let a = auth.as_ref().ok_or("a relayed push carries no grant")?;
                    checker
                        .check_sync(a, &crate::sync::grant_text(&req, m), &me)
                        .map(|_| ())
                }) as Box<crate::sync::Verify>
            });
        if !r.subtree.is_empty() {
            let res: Result<(), String> = match (&r.module, self.settings.relay_tls.clone()) {
                (Some(_), _) => Err(
                    "a push into a module goes to each node directly, not through relays"
                        .to_string(),
                ),
                (None, None) => Err("this agent cannot relay (no client certificate)".into()),
                (None, Some(tls)) => {
                    // The relay answers for itself and its subtree, errors included.
                    let res = crate::sync::relay(
                        r.clone(),
                        rd,
                        wr,
                        tls,
                        self.settings.name.clone(),
                        verify.as_deref(),
                    )
                    .await;
                    let _ = self.audit(&AuditRecord {
                        event: "end",
                        request: "sync",
                        command: Some(&r.dest),
                        reason: res.as_ref().err().map(String::as_str),
                        ..AuditRecord::new(caller, peer, &self.settings)
                    });
                    return;
                }
            };
            if let Err(e) = res {
                let _ = fail(&mut wr, r.rank, FailureKind::Refused, e).await;
            }
            return;
        }
        let res = crate::sync::receive(&r, &mut rd, &mut wr, verify.as_deref())
            .await
            .map(|_| ());
        let failed = res.as_ref().err().cloned();
        let _ = self.audit(&AuditRecord {
            event: "end",
            request: "sync",
            command: Some(&r.dest),
            reason: failed.as_deref(),
            ..AuditRecord::new(caller, peer, &self.settings)
        });
        if let Err(e) = res {
            tracing::warn!(%peer, dest = %r.dest, "agent: sync failed: {e}");
            let _ = fail(&mut wr, r.rank, FailureKind::Agent, e).await;
        }
    }

    async fn exec<R, W>(
        &self,
        caller: Caller<'_>,
        mut req: ExecRequest,
        input: Option<Arc<Vec<u8>>>,
        mut rd: FrameReader<R>,
        mut wr: W,
    ) where
        R: AsyncRead + Unpin + Send + 'static,
        W: AsyncWrite + Unpin + Send + 'static,
    {
        let Caller { id, via, peer } = caller;
        let rank = req.rank;
        let started = Instant::now();
        let subtree = std::mem::take(&mut req.subtree);
        let mut base = AuditRecord {
            request: "exec",
            via,
            command: Some(&req.command),
            ..AuditRecord::new(id, peer, &self.settings)
        };
        // No audit line, no command: the line is written before the command starts (so it
        // has no pid; the end line has it).
        let start = AuditRecord {
            event: "start",
            ..base.clone()
        };
        let spawned = match self.audit(&start) {
            Err(e) => Err(format!("not run: {e}")),
            Ok(()) => self.spawn_command(id, &req).inspect_err(|e| {
                let _ = self.audit(&AuditRecord {
                    event: "end",
                    reason: Some(e),
                    ..base.clone()
                });
            }),
        };
        let mut child = match spawned {
            Ok(c) => c,
            Err(e) => {
                tracing::warn!(%peer, error = %e, "agent: cannot run the command");
                let _ =
                    write_frames(&mut wr, &not_run(rank, &subtree, &self.settings.name, &e)).await;
                let _ = wr.shutdown().await;
                return;
            }
        };
        let Some(pid) = child.id().and_then(|p| Pid::from_raw(p as i32)) else {
            return;
        };
        base.pid = Some(pid.as_raw_nonzero().get());
        tracing::info!(%peer, who = %id.name, pid = pid.as_raw_nonzero().get(), command = %req.command, "agent: exec");

        // Output: two pumps feed one writer, which alone touches the socket.
        let (out_tx, mut out_rx) = mpsc::channel::<Frame>(16);
        let mut pumps = Vec::new();
        if let Some(o) = child.stdout.take() {
            pumps.push(tokio::spawn(pump(o, Kind::Stdout, rank, out_tx.clone())));
        }
        if let Some(e) = child.stderr.take() {
            pumps.push(tokio::spawn(pump(e, Kind::Stderr, rank, out_tx.clone())));
        }
        let (gone_tx, mut gone_rx) = mpsc::channel::<&'static str>(2);
        let writer = {
            let gone = gone_tx.clone();
            tokio::spawn(async move {
                while let Some(first) = out_rx.recv().await {
                    let mut batch = vec![first];
                    while let Ok(f) = out_rx.try_recv() {
                        batch.push(f);
                        if batch.len() >= 8 {
                            break;
                        }
                    }
                    match timeout(WRITE_STALL, write_frames(&mut wr, &batch)).await {
                        Ok(Ok(())) => {}
                        Ok(Err(_)) => {
                            let _ = gone.try_send("the client went away");
                            return;
                        }
                        Err(_) => {
                            let _ = gone.try_send("the client stopped reading");
                            return;
                        }
                    }
                }
                let _ = wr.shutdown().await;
            })
        };
        // The subtree, when this agent relays: its frames join this connection's output.
        let (sub_stdin, sub_stdin_rx) = match (req.stdin, subtree.is_empty()) {
            (true, false) => {
                let (tx, rx) = mpsc::unbounded_channel();
                (Some(tx), Some(rx))
            }
            _ => (None, None),
        };
        let (sub_signals, sub_signals_rx) = tokio::sync::watch::channel(None);
        let relay = match (&self.settings.relay_tls, subtree.is_empty()) {
            (_, true) => None,
            (Some(tls), false) => {
                let run = Run {
                    tls: tls.clone(),
                    request: ExecRequest {
                        rank: 0,
                        subtree: Vec::new(),
                        ..req.clone()
                    },
                };
                Some(tokio::spawn(client::relay(
                    Arc::new(run),
                    subtree,
                    sub_stdin_rx,
                    sub_signals_rx,
                    out_tx.clone(),
                )))
            }
            (None, false) => {
                for h in subtree {
                    let _ = out_tx
                        .send(Frame::json(
                            Kind::Error,
                            h.rank,
                            &Failure {
                                kind: FailureKind::Agent,
                                message: format!(
                                    "{} cannot relay (no client identity)",
                                    self.settings.name
                                ),
                            },
                        ))
                        .await;
                }
                None
            }
        };
        // Input: stdin frames to the command (and the subtree), signals to its process group
        // (and the subtree).
        let mut stdin = child.stdin.take();
        let mut sub_stdin = sub_stdin;
        let (interrupted_tx, mut interrupted) = tokio::sync::watch::channel(false);
        let reader = tokio::spawn(async move {
            // Stdin read whole and checked already: it goes first, and is all there is.
            if let Some(data) = input {
                if let Some(tx) = sub_stdin.take() {
                    let _ = tx.send(data.clone());
                }
                if let Some(mut s) = stdin.take() {
                    let _ = s.write_all(&data).await;
                }
            }
            loop {
                match rd.read().await {
                    Ok(Some(f)) => match f.kind {
                        Kind::Stdin => {
                            if let Some(tx) = &sub_stdin {
                                let _ = tx.send(Arc::new(f.payload.clone()));
                            }
                            if let Some(s) = stdin.as_mut() {
                                if s.write_all(&f.payload).await.is_err() {
                                    // The command closed its stdin: the rest is not wanted.
                                    stdin = None;
                                }
                            }
                        }
                        Kind::StdinEnd => {
                            stdin = None;
                            sub_stdin = None;
                        }
                        Kind::Signal => {
                            let sig = f.payload.first().map(|&s| i32::from(s));
                            if let Some(sig) = sig.filter(|s| SIGNALS.contains(s)) {
                                signal_group(pid, sig);
                                let _ = interrupted_tx.send(true);
                                let _ = sub_signals.send(Some(sig));
                            }
                        }
                        _ => {
                            let _ = gone_tx.try_send("the client sent a frame out of place");
                            return;
                        }
                    },
                    Ok(None) => {
                        let _ = gone_tx.try_send("the client went away");
                        return;
                    }
                    Err(_) => {
                        let _ = gone_tx.try_send("the client sent a bad frame");
                        return;
                    }
                }
            }
        });

        let deadline = req
            .timeout_ms
            .map(|ms| tokio::time::Instant::now() + Duration::from_millis(ms));
        let mut timed_out = false;
        let mut kill_at: Option<tokio::time::Instant> = None;
        let mut gone: Option<&'static str> = None;
        let far = || tokio::time::Instant::now() + Duration::from_secs(86_400 * 365);
        let status = loop {
            tokio::select! {
                s = child.wait() => break s.ok(),
                _ = sleep_until(deadline.unwrap_or_else(far)), if deadline.is_some() && !timed_out => {
                    timed_out = true;
                    signal_group(pid, libc_sig(Signal::TERM));
                    kill_at = Some(tokio::time::Instant::now() + KILL_GRACE);
                }
                _ = sleep_until(kill_at.unwrap_or_else(far)), if kill_at.is_some() => {
                    signal_group(pid, libc_sig(Signal::KILL));
                    kill_at = None;
                }
                why = gone_rx.recv(), if gone.is_none() => {
                    gone = Some(why.unwrap_or("the client went away"));
                    signal_group(pid, libc_sig(Signal::HUP));
                    kill_at.get_or_insert(tokio::time::Instant::now() + KILL_GRACE);
                }
            }
        };
        // The shell is gone; its output ends when every process that holds the pipes is
        // (as with ssh). A timeout or a lost client ends the wait and the process group. After
        // the client's signal, what is left (a background job that ignores SIGINT) may keep
        // running, but the run does not wait for it past INTERRUPT_GRACE.
        let aborts: Vec<_> = pumps.iter().map(|p| p.abort_handle()).collect();
        let pumps_done = async {
            for p in pumps {
                let _ = p.await;
            }
        };
        tokio::pin!(pumps_done);
        let cut = async {
            if interrupted.wait_for(|v| *v).await.is_err() {
                std::future::pending::<()>().await;
            }
            tokio::time::sleep(INTERRUPT_GRACE).await;
        };
        tokio::pin!(cut);
        loop {
            tokio::select! {
                _ = &mut pumps_done => break,
                _ = &mut cut => {
                    aborts.iter().for_each(|a| a.abort());
                    break;
                }
                _ = sleep_until(deadline.unwrap_or_else(far)), if deadline.is_some() && !timed_out => {
                    timed_out = true;
                    signal_group(pid, libc_sig(Signal::KILL));
                }
                why = gone_rx.recv(), if gone.is_none() => {
                    gone = Some(why.unwrap_or("the client went away"));
                    signal_group(pid, libc_sig(Signal::KILL));
                }
            }
        }
        if timed_out {
            signal_group(pid, libc_sig(Signal::KILL));
        }
        let exit = exit_of(status, timed_out);
        // Every output frame is queued before it: the exit frame is the node's last.
        if gone.is_none() {
            let _ = out_tx.send(Frame::json(Kind::Exit, rank, &exit)).await;
        }
        drop(out_tx);
        if let Some(mut r) = relay {
            if gone.is_some() {
                r.abort();
            } else {
                tokio::select! {
                    _ = &mut r => {}
                    why = gone_rx.recv() => {
                        gone = Some(why.unwrap_or("the client went away"));
                        r.abort();
                    }
                }
            }
        }
        // The reader also carried stdin and signals to the subtree: it stops last.
        reader.abort();
        let _ = writer.await;
        tracing::info!(%peer, who = %id.name, pid = pid.as_raw_nonzero().get(), status = exit.status(), timed_out, "agent: exec ended");
        let _ = self.audit(&AuditRecord {
            event: "end",
            exit: exit.code,
            signal: exit.signal,
            timed_out,
            ended_by: gone,
            ms: Some(started.elapsed().as_millis() as u64),
            ..base
        });
    }

    fn spawn_command(
        &self,
        id: &Identity,
        req: &ExecRequest,
    ) -> Result<tokio::process::Child, String> {
        let user = lookup_user(&self.settings.user)?;
        let mut cmd = tokio::process::Command::new("/bin/sh");
        cmd.arg("-c")
            .arg(&req.command)
            .env_clear()
            .env("PATH", PATH)
            .env("HOME", &user.home)
            .env("USER", &user.name)
            .env("LOGNAME", &user.name)
            .env("SHELL", &user.shell)
            .env("HERD_NODE", &self.settings.name)
            .env("HERD_RANK", req.rank.to_string())
            .env("HERD_SIZE", req.size.to_string())
            .env("HERD_CALLER", &id.name)
            .current_dir(if std::path::Path::new(&user.home).is_dir() {
                user.home.as_str()
            } else {
                "/"
            })
            .process_group(0)
            .stdin(if req.stdin {
                Stdio::piped()
            } else {
                Stdio::null()
            })
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(false);
        let me = rustix::process::geteuid();
        if me.as_raw() != user.uid {
            if !me.is_root() {
                return Err(format!(
                    "the agent runs as uid {} and cannot run commands as {} (uid {})",
                    me.as_raw(),
                    user.name,
                    user.uid
                ));
            }
            cmd.uid(user.uid).gid(user.gid);
        }
        // Running as the user already: nothing to switch, so std can use posix_spawn (vfork)
        // rather than fork, which matters on a node answering many runs.
        cmd.spawn()
            .map_err(|e| format!("cannot run /bin/sh as {}: {e}", user.name))
    }

    /// Writes one line; the time is taken here (nothing is formatted when there is no log).
    /// An error says why; what the line records must not go ahead without it (fail closed),
    /// except what has happened already (an end, a refusal), which the error log then notes.
    fn audit(&self, rec: &AuditRecord<'_>) -> Result<(), String> {
        let Some(path) = &self.settings.audit_log else {
            return Ok(());
        };
        let rec = AuditRecord {
            time: jiff::Timestamp::now().to_string(),
            ..rec.clone()
        };
        let mut line = serde_json::to_vec(&rec).unwrap_or_default();
        line.push(b'\n');
        let _guard = self.audit.lock().unwrap_or_else(|p| p.into_inner());
        open_audit_log(path)
            .and_then(|mut f| f.write_all(&line))
            .map_err(|e| {
                tracing::error!(path = %path.display(), error = %e, "agent: cannot write the audit log");
                format!("cannot write the audit log {}: {e}", path.display())
            })
    }
}

/// Opens the audit log to append, creating it 0600: it names every command run as root. A log
/// an older herd made (0644) loses its bits for other users.
fn open_audit_log(path: &std::path::Path) -> std::io::Result<std::fs::File> {
    use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
    let f = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .mode(0o600)
        .open(path)?;
    let mode = f.metadata()?.permissions().mode();
    if mode & 0o007 != 0 {
        // Best effort: a file the agent does not own keeps what its owner chose.
        if let Err(e) = f.set_permissions(std::fs::Permissions::from_mode(mode & 0o770)) {
            tracing::warn!(path = %path.display(), error = %e, "agent: the audit log is readable by every user");
        }
    }
    Ok(f)
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

/// Who a run is for: the identity it runs as (the admin's, for a relayed run), the node that
/// relayed it, and the address it came from.
struct Caller<'a> {
    id: &'a Identity,
    via: Option<&'a str>,
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

fn libc_sig(s: Signal) -> i32 {
    s.as_raw()
}

fn signal_group(pid: Pid, sig: i32) {
    if let Some(s) = Signal::from_named_raw(sig) {
        // Gone already: nothing to do.
        let _ = kill_process_group(pid, s);
    }
}

fn exit_of(status: Option<std::process::ExitStatus>, timed_out: bool) -> Exit {
    use std::os::unix::process::ExitStatusExt;
    Exit {
        code: status.and_then(|s| s.code()),
        signal: status.and_then(|s| s.signal()),
        timed_out,
    }
}

async fn pump<R: AsyncRead + Unpin>(mut r: R, kind: Kind, rank: u32, tx: mpsc::Sender<Frame>) {
    // Read into spare capacity: a command with little output costs no 64 KiB memset.
    let mut buf = Vec::with_capacity(CHUNK);
    loop {
        buf.clear();
        match r.read_buf(&mut buf).await {
            Ok(0) | Err(_) => return,
            Ok(_) => {
                if tx.send(Frame::new(kind, rank, &buf[..])).await.is_err() {
                    return;
                }
            }
        }
    }
}

async fn fail<W: AsyncWrite + Unpin>(
    wr: &mut W,
    rank: u32,
    kind: FailureKind,
    message: String,
) -> std::io::Result<()> {
    write_frames(
        wr,
        &[Frame::json(Kind::Error, rank, &Failure { kind, message })],
    )
    .await?;
    wr.shutdown().await
}

/// The frames that say a run did not start here: for this node's rank and, since a relay
/// that does not run does not relay, for each node of its subtree.
fn not_run(rank: u32, subtree: &[crate::proto::Hop], me: &str, why: &str) -> Vec<Frame> {
    let failure = |rank, message| {
        Frame::json(
            Kind::Error,
            rank,
            &Failure {
                kind: FailureKind::Agent,
                message,
            },
        )
    };
    let mut frames = vec![failure(rank, why.to_string())];
    frames.extend(
        subtree
            .iter()
            .map(|h| failure(h.rank, format!("not run: its relay {me} failed: {why}"))),
    );
    frames
}

/// Reads a run's whole stdin (up to its `StdinDigest`) and checks it against the digest, which
/// the admin's grant covers: a command never reads stdin that a relay changed.
async fn read_stdin<R: AsyncRead + Unpin>(
    rd: &mut FrameReader<R>,
    want: &StdinDigest,
) -> Result<Vec<u8>, String> {
    if want.len > RELAYED_STDIN_MAX {
        return Err(format!(
            "stdin of {} bytes; a run through relays carries at most {RELAYED_STDIN_MAX}",
            want.len
        ));
    }
    // The length is the admin's (the grant was checked): what it reserves is bounded.
    let mut data = Vec::with_capacity(want.len as usize);
    loop {
        let f = match timeout(WRITE_STALL, rd.read()).await {
            Ok(Ok(Some(f))) => f,
            Ok(Ok(None)) => return Err("the connection closed before stdin ended".into()),
            Ok(Err(e)) => return Err(format!("a bad frame in stdin: {e}")),
            Err(_) => return Err("stdin stalled".into()),
        };
        match f.kind {
            Kind::Stdin if (data.len() + f.payload.len()) as u64 <= want.len => {
                data.extend_from_slice(&f.payload)
            }
            Kind::Stdin => return Err("stdin is longer than the admin's grant says".into()),
            Kind::StdinEnd => break,
            Kind::Signal => return Err("interrupted before stdin was whole".into()),
            k => return Err(format!("a {k:?} frame before the end of stdin")),
        }
    }
    if StdinDigest::of(&data) != *want {
        return Err("stdin is not the one the admin's grant covers (changed on the way)".into());
    }
    Ok(data)
}

/// Refuses a request: for its own rank, and for each node of its subtree (which is then not
/// reached at all).
async fn refuse<W: AsyncWrite + Unpin>(
    wr: &mut W,
    req: &Request,
    me: &str,
    message: String,
) -> std::io::Result<()> {
    let (rank, subtree) = match req {
        Request::Exec(e) => (e.rank, e.subtree.as_slice()),
        Request::Ping => (0, &[][..]),
        Request::Sync(r) => (r.rank, &[][..]),
        Request::Pull(_) => (0, &[][..]),
    };
    let mut frames = vec![Frame::json(
        Kind::Error,
        rank,
        &Failure {
            kind: FailureKind::Refused,
            message: message.clone(),
        },
    )];
    frames.extend(subtree.iter().map(|h| {
        Frame::json(
            Kind::Error,
            h.rank,
            &Failure {
                kind: FailureKind::Refused,
                message: format!("not run: its relay {me} was {message}"),
            },
        )
    }));
    write_frames(wr, &frames).await?;
    wr.shutdown().await
}

fn loadavg() -> [f64; 3] {
    let s = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    let mut it = s.split_whitespace().map(|x| x.parse().unwrap_or(0.0));
    [
        it.next().unwrap_or(0.0),
        it.next().unwrap_or(0.0),
        it.next().unwrap_or(0.0),
    ]
}

/// A local user, from /etc/passwd.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct User {
    pub name: String,
    pub uid: u32,
    pub gid: u32,
    pub home: String,
    pub shell: String,
}

pub fn lookup_user(name: &str) -> Result<User, String> {
    let passwd = std::fs::read_to_string("/etc/passwd")
        .map_err(|e| format!("cannot read /etc/passwd: {e}"))?;
    parse_passwd(&passwd, name).ok_or_else(|| format!("no user {name:?} in /etc/passwd"))
}

fn parse_passwd(passwd: &str, name: &str) -> Option<User> {
    passwd.lines().find_map(|l| {
        let f: Vec<&str> = l.split(':').collect();
        if f.len() < 7 || f[0] != name {
            return None;
        }
        Some(User {
            name: f[0].to_string(),
            uid: f[2].parse().ok()?,
            gid: f[3].parse().ok()?,
            home: f[5].to_string(),
            shell: f[6].to_string(),
        })
    })
}

/// One line of the audit log (JSON).
#[derive(Debug, Clone, Serialize)]
struct AuditRecord<'a> {
    time: String,
    event: &'static str,
    request: &'static str,
    who: &'a str,
    role: &'static str,
    serial: &'a str,
    from: String,
    node: &'a str,
    user: &'a str,
    /// The node that relayed the request (the admin's grant names `who`).
    #[serde(skip_serializing_if = "Option::is_none")]
    via: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    command: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    reason: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pid: Option<i32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    exit: Option<i32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    signal: Option<i32>,
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    timed_out: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    ended_by: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    ms: Option<u64>,
}

impl<'a> AuditRecord<'a> {
    fn new(id: &'a Identity, peer: SocketAddr, s: &'a Settings) -> Self {
        AuditRecord {
            time: String::new(),
            event: "",
            request: "",
            who: &id.name,
            role: id.role.as_str(),
            serial: &id.serial,
            from: peer.to_string(),
            node: &s.name,
            user: &s.user,
            via: None,
            command: None,
            reason: None,
            pid: None,
            exit: None,
            signal: None,
            timed_out: false,
            ended_by: None,
            ms: None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passwd_lines_give_users() {
        let p = "root:x:0:0:root:/root:/bin/bash\nnobody:x:65534:65534:nobody:/nonexistent:/usr/sbin/nologin\nbad:x:y\n";
        let u = parse_passwd(p, "nobody").unwrap();
        assert_eq!(
            (u.uid, u.gid, u.home.as_str()),
            (65534, 65534, "/nonexistent")
        );
        assert!(parse_passwd(p, "bad").is_none());
        assert!(parse_passwd(p, "alice").is_none());
    }
}
