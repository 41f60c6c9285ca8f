//! One connection after its handshake: who the peer is, a slot, its request, whether its role
//! (or the admin's grant it carries) allows it, and the request served: ping, exec
//! (`exec.rs`), a pull from a module, a push.

use std::net::SocketAddr;
use std::sync::Arc;

use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt, ReadHalf, WriteHalf};
use tokio::net::TcpStream;
use tokio::time::timeout;
use tokio_rustls::server::TlsStream;

use super::audit::AuditRecord;
use super::exec::Caller;
use super::{Agent, Conn, Settings};
use crate::client;
use crate::deadlines::{BUSY_GRACE, REQUEST_TIMEOUT, WRITE_STALL};
use crate::frame::{write_frames, Frame, FrameReader, Kind};
use crate::grant::GrantError;
use crate::pki::{Identity, Role};
use crate::proto::{
    ExecRequest, Failure, FailureKind, Pong, PullRequest, Request, StdinDigest, SyncRequest,
    RELAYED_STDIN_MAX,
};

type Tls = TlsStream<TcpStream>;
type Reader = FrameReader<ReadHalf<Tls>>;
type Writer = WriteHalf<Tls>;

impl Agent {
    /// Serves one connection with the settings it was accepted under.
    pub(super) async fn serve(&self, s: &Settings, tls: Tls, peer: SocketAddr) {
        Conn {
            agent: self,
            s,
            peer,
        }
        .serve(tls)
        .await
    }
}

/// The peer's identity, and why it may not be served when it may not (revoked, expired).
/// Checked again after the verifier: a resumed session did not go through it. A refusal waits
/// for the request, so that it can name the nodes it concerns.
fn identify(tls: &Tls, s: &Settings) -> Option<(Identity, Option<String>)> {
    let der = tls.get_ref().1.peer_certificates()?.first()?;
    match crate::tls::check_identity(der, &s.revoked) {
        Ok(id) => Some((id, None)),
        Err(why) => Identity::from_der(der)
            .ok()
            .map(|id| (id, Some(why.to_string()))),
    }
}

impl Conn<'_> {
    async fn serve(&self, tls: Tls) {
        let peer = self.peer;
        if tls.get_ref().1.handshake_kind() == Some(rustls::HandshakeKind::Resumed) {
            tracing::debug!(%peer, "agent: TLS session resumed");
        }
        let Some((id, invalid)) = identify(&tls, self.s) else {
            return;
        };
        // Only a peer the cluster's CA vouches for takes a slot; it holds it to the end.
        let Some(_slot) = self.agent.slots.try_take() else {
            tracing::warn!(%peer, who = %id.name, "agent: max-connections verified peers served already; turning this one away");
            self.turn_away(tls).await;
            return;
        };
        let (rd, mut wr) = tokio::io::split(tls);
        let mut rd = FrameReader::new(rd);
        let Some(req) = self.read_request(&mut rd, &mut wr).await else {
            return;
        };
        let Some((caller, via)) = self.admit(&id, invalid, &req, &mut wr).await else {
            return;
        };
        self.dispatch(req, &id, &caller, via, rd, wr).await
    }

    /// The connection's one request, or `None` (logged, or answered when it is malformed).
    async fn read_request(&self, rd: &mut Reader, wr: &mut Writer) -> Option<Request> {
        let peer = self.peer;
        let req = match timeout(REQUEST_TIMEOUT, rd.read()).await {
            Ok(Ok(Some(f))) if f.kind == Kind::Request => f.parse::<Request>(),
            Ok(Ok(Some(f))) => {
                tracing::info!(%peer, kind = ?f.kind, "agent: expected a request");
                return None;
            }
            Ok(Ok(None)) => return None,
            Ok(Err(e)) => {
                tracing::info!(%peer, error = %e, "agent: bad frame; closing");
                return None;
            }
            Err(_) => {
                tracing::info!(%peer, "agent: no request in time");
                return None;
            }
        };
        match req {
            Ok(r) => Some(r),
            Err(e) => {
                let _ = fail(wr, 0, FailureKind::Agent, format!("bad request: {e}")).await;
                None
            }
        }
    }

    /// Whether the peer may make `req`: its certificate still valid, its role, and for a
    /// command a node relays, the admin's grant. Returns who the request runs for and the
    /// node that relayed it; a refusal is answered (and audited) here.
    async fn admit(
        &self,
        id: &Identity,
        invalid: Option<String>,
        req: &Request,
        wr: &mut Writer,
    ) -> Option<(Identity, Option<String>)> {
        let (peer, me) = (self.peer, self.s.name.as_str());
        if let Some(why) = invalid {
            tracing::warn!(%peer, who = %id.name, "agent: refused after the handshake: {why}");
            let _ = refuse(wr, req, me, format!("refused: {why}")).await;
            return None;
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
                command: match req {
                    Request::Exec(e) => Some(&e.command),
                    Request::Pull(p) => Some(&p.module),
                    Request::Ping | Request::Sync(_) => None,
                },
                ..AuditRecord::new(id, peer, self.s)
            });
            let _ = refuse(wr, req, me, message).await;
            return None;
        }
        match req {
            Request::Exec(e) if id.role == Role::Node => self.relayed(id, e, req, wr).await,
            _ => Some((id.clone(), None)),
        }
    }

    /// A node relays an admin's run: the grant must hold, and the admin is who runs it.
    async fn relayed(
        &self,
        id: &Identity,
        e: &ExecRequest,
        req: &Request,
        wr: &mut Writer,
    ) -> Option<(Identity, Option<String>)> {
        let checked = e
            .auth
            .as_ref()
            .ok_or(GrantError::Missing("request"))
            .and_then(|a| self.s.grants.check(a, e, &self.s.name))
            .map_err(|e| e.to_string());
        match checked {
            Ok(admin) => Some((admin, Some(id.name.clone()))),
            Err(why) => {
                self.refused_relay(id, &e.command, &why);
                let _ = refuse(wr, req, &self.s.name, format!("refused: {why}")).await;
                None
            }
        }
    }

    async fn dispatch(
        &self,
        req: Request,
        id: &Identity,
        caller: &Identity,
        via: Option<String>,
        mut rd: Reader,
        mut wr: Writer,
    ) {
        match req {
            Request::Ping => self.pong(id, &mut wr).await,
            Request::Exec(e) => {
                let input = match self.granted_stdin(id, &e, &mut rd).await {
                    Ok(input) => input,
                    Err(why) => {
                        let req = Request::Exec(e);
                        let _ = refuse(&mut wr, &req, &self.s.name, why).await;
                        return;
                    }
                };
                let who = Caller {
                    id: caller,
                    via: via.as_deref(),
                };
                self.exec(who, e, input, rd, wr).await
            }
            Request::Pull(p) => self.pull(caller, p, rd, wr).await,
            Request::Sync(r) => self.push(caller, r, rd, wr).await,
        }
    }

    async fn pong(&self, id: &Identity, wr: &mut Writer) {
        let pong = Pong {
            name: self.s.name.clone(),
            version: env!("CARGO_PKG_VERSION").to_string(),
            you: id.name.clone(),
            role: id.role,
            uptime_secs: self.agent.started.elapsed().as_secs(),
            load: loadavg(),
        };
        let _ = write_frames(wr, &[Frame::json(Kind::Pong, 0, &pong)]).await;
        let _ = wr.shutdown().await;
    }

    /// A verified peer beyond `max-connections`: its request gets an answer that says so
    /// (within [`BUSY_GRACE`], no slot held), so that its client can tell busy from broken.
    async fn turn_away(&self, tls: Tls) {
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
        let me = &self.s.name;
        let why = format!(
            "busy: {me} serves {} connections already ([agent] max-connections); try again",
            self.agent.slots.max()
        );
        let frames = match &req {
            Request::Exec(e) => not_run(e.rank, &e.subtree, me, &why),
            Request::Sync(r) => not_run(r.rank, &r.subtree, me, &why),
            Request::Ping | Request::Pull(_) => not_run(0, &[], me, &why),
        };
        let _ = timeout(BUSY_GRACE, write_frames(&mut wr, &frames)).await;
        let _ = timeout(BUSY_GRACE, wr.shutdown()).await;
    }

    /// Logs and audits a relayed run refused (a grant that does not hold, stdin that does
    /// not match it); `via` is the relaying node.
    fn refused_relay(&self, via: &Identity, command: &str, why: &str) {
        let peer = self.peer;
        tracing::warn!(%peer, via = %via.name, "agent: relayed request refused: {why}");
        let _ = self.audit(&AuditRecord {
            event: "refused",
            request: "exec",
            command: Some(command),
            reason: Some(why),
            ..AuditRecord::new(via, peer, self.s)
        });
    }

    /// The whole stdin of a run whose grant covers it (a run through relays), checked against
    /// the grant's hash; `None` when stdin streams (a direct run). A refusal is audited.
    async fn granted_stdin<R: AsyncRead + Unpin>(
        &self,
        id: &Identity,
        req: &ExecRequest,
        rd: &mut FrameReader<R>,
    ) -> Result<Option<Arc<Vec<u8>>>, String> {
        let Some(want) = req.stdin_digest.as_ref().filter(|_| req.stdin) else {
            return Ok(None);
        };
        match read_stdin(rd, want).await {
            Ok(data) => Ok(Some(Arc::new(data))),
            Err(why) => {
                self.refused_relay(id, &req.command, &why);
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
    ) -> Result<crate::module::Open, String> {
        let res = self
            .s
            .modules
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .open(name, id, write, &self.s.name)
            .map_err(|e| e.to_string());
        if let Err(why) = &res {
            let peer = self.peer;
            tracing::warn!(%peer, who = %id.name, module = name, "agent: {why}");
            let _ = self.audit(&AuditRecord {
                event: "refused",
                request: if write { "sync" } else { "pull" },
                command: Some(name),
                reason: Some(why),
                ..AuditRecord::new(id, peer, self.s)
            });
        }
        res
    }

    /// `herd sync pull NODE::MODULE`: this agent sends the module's tree.
    async fn pull<R, W>(&self, id: &Identity, req: PullRequest, rd: FrameReader<R>, mut wr: W)
    where
        R: AsyncRead + Unpin + Send + 'static,
        W: AsyncWrite + Unpin,
    {
        let peer = self.peer;
        let open = match self.open_module(&req.module, id, false) {
            Ok(o) => o,
            Err(why) => {
                let _ = fail(&mut wr, 0, FailureKind::Refused, why).await;
                return;
            }
        };
        let m = &open.module;
        let record = AuditRecord {
            request: "pull",
            command: Some(&m.name),
            ..AuditRecord::new(id, peer, self.s)
        };
        if let Err(why) = self.audit(&AuditRecord {
            event: "start",
            ..record.clone()
        }) {
            let _ = fail(&mut wr, 0, FailureKind::Agent, format!("not served: {why}")).await;
            return;
        }
        let res = send_module(m, id, peer, &req, rd, &mut wr).await;
        let failed = res.as_ref().err().cloned();
        let _ = self.audit(&AuditRecord {
            event: "end",
            reason: failed.as_deref(),
            ..record
        });
        let _ = wr.shutdown().await;
        if let Some(e) = failed {
            tracing::warn!(%peer, module = %m.name, "agent: pull failed: {e}");
        }
    }

    /// A push, into a module when it names one (whose slot it holds to the end).
    async fn push<W>(&self, caller: &Identity, mut r: SyncRequest, rd: Reader, mut wr: W)
    where
        W: AsyncWrite + Unpin + Send + 'static,
    {
        let Some(name) = r.module.clone() else {
            return self.sync(caller, r, rd, wr).await;
        };
        match self.open_module(&name, caller, true) {
            Ok(open) => {
                r.dest = open.module.path.display().to_string();
                r.exclude.extend(open.module.exclude.iter().cloned());
                self.sync(caller, r, rd, wr).await;
                drop(open);
            }
            Err(why) => {
                let _ = fail(&mut wr, r.rank, FailureKind::Refused, why).await;
            }
        }
    }

    /// A push: this agent makes `r.dest` the copy of the client's tree (and relays it to the
    /// subtree the request names).
    async fn sync<R, W>(
        &self,
        caller: &Identity,
        mut r: SyncRequest,
        mut rd: FrameReader<R>,
        mut wr: W,
    ) where
        R: AsyncRead + Unpin,
        W: AsyncWrite + Unpin + Send + 'static,
    {
        let peer = self.peer;
        let started = self.audit(&AuditRecord {
            event: "start",
            request: "sync",
            command: Some(&r.dest),
            ..AuditRecord::new(caller, peer, self.s)
        });
        if let Err(why) = started {
            let msg = format!("not run: {why}");
            let _ = fail(&mut wr, r.rank, FailureKind::Agent, msg).await;
            return;
        }
        // An admin's tree: from an admin, or relayed with an admin's grant (checked below).
        r.trusted = caller.role == Role::Admin || (caller.role == Role::Node && r.module.is_none());
        let verify = self.push_grant(caller, &r);
        if !r.subtree.is_empty() {
            return self.relay_push(caller, r, rd, wr, verify).await;
        }
        let res = crate::sync::receive(&r, &mut rd, &mut wr, verify.as_deref())
            .await
            .map(|_| ())
            .map_err(|e| e.to_string());
        let failed = res.as_ref().err().cloned();
        self.audit_push_end(caller, &r, failed.as_deref());
        if let Err(e) = res {
            tracing::warn!(%peer, dest = %r.dest, "agent: sync failed: {e}");
            let _ = fail(&mut wr, r.rank, FailureKind::Agent, e).await;
        }
    }

    /// A node relaying an admin's push: the grant must cover the request and the manifest
    /// (whose file hashes each node checks).
    fn push_grant(&self, caller: &Identity, r: &SyncRequest) -> Option<Box<crate::sync::Verify>> {
        if caller.role != Role::Node || r.module.is_some() {
            return None;
        }
        let (auth, checker, me, req) = (
            r.auth.clone(),
            self.s.grants.clone(),
            self.s.name.clone(),
            r.clone(),
        );
        Some(Box::new(move |m: &[u8]| -> Result<(), GrantError> {
            let a = auth.as_ref().ok_or(GrantError::Missing("push"))?;
            checker
                .check_sync(a, &crate::sync::grant_text(&req, m), &me)
                .map(|_| ())
        }))
    }

    /// A push with a subtree: the relay answers for itself and its subtree, errors included.
    async fn relay_push<R, W>(
        &self,
        caller: &Identity,
        r: SyncRequest,
        rd: FrameReader<R>,
        mut wr: W,
        verify: Option<Box<crate::sync::Verify>>,
    ) where
        R: AsyncRead + Unpin,
        W: AsyncWrite + Unpin + Send + 'static,
    {
        let why = match (&r.module, self.s.relay_tls.clone()) {
            (Some(_), _) => {
                "a push into a module goes to each node directly, not through relays".to_string()
            }
            (None, None) => "this agent cannot relay (no client certificate)".to_string(),
            (None, Some(tls)) => {
                let me = self.s.name.clone();
                let res = crate::sync::relay(r.clone(), rd, wr, tls, me, verify.as_deref()).await;
                let failed = res.err().map(|e| e.to_string());
                self.audit_push_end(caller, &r, failed.as_deref());
                return;
            }
        };
        let _ = fail(&mut wr, r.rank, FailureKind::Refused, why).await;
    }

    fn audit_push_end(&self, caller: &Identity, r: &SyncRequest, failed: Option<&str>) {
        let _ = self.audit(&AuditRecord {
            event: "end",
            request: "sync",
            command: Some(&r.dest),
            reason: failed,
            ..AuditRecord::new(caller, self.peer, self.s)
        });
    }
}

/// Scans a module and sends it to the client that pulls it.
async fn send_module<R, W>(
    m: &herd_core::config::sync::SyncModule,
    id: &Identity,
    peer: SocketAddr,
    req: &PullRequest,
    rd: FrameReader<R>,
    wr: &mut W,
) -> Result<(), String>
where
    R: AsyncRead + Unpin + Send + 'static,
    W: AsyncWrite + Unpin,
{
    let opts = herd_sync::manifest::ScanOptions {
        hash: req.checksum,
        exclude: m.exclude.clone(),
    };
    let path = m.path.clone();
    let scanned = tokio::task::spawn_blocking(move || herd_sync::manifest::scan(&path, &opts))
        .await
        .map_err(|e| e.to_string())
        .and_then(|r| r.map_err(|e| e.to_string()));
    let manifest = match scanned {
        Ok(m) => m,
        Err(e) => {
            let e = format!("module {:?}: {e}", m.name);
            let _ = fail(wr, 0, FailureKind::Agent, e.clone()).await;
            return Err(e);
        }
    };
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
    let mut res = crate::sync::send_link(rd, wr, &client, vec![0], &tree, &opts).await;
    match res.pop() {
        Some((_, Ok(_))) => Ok(()),
        Some((_, Err(o))) => Err(o.problem().unwrap_or_default()),
        None => Err("no answer".into()),
    }
}

pub(super) async fn fail<W: AsyncWrite + Unpin>(
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
pub(super) fn not_run(rank: u32, subtree: &[crate::proto::Hop], me: &str, why: &str) -> Vec<Frame> {
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
