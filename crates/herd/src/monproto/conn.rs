//! The mon port's connections: accepting (with a cap and a back-off on errors), reading
//! command lines with an idle timeout, and the login gate in front of every change.

use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicUsize, Ordering::Relaxed};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use herd_core::api::Request;
use herd_core::config::web::WebUser;
use herd_web::Backend;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinHandle;
use tokio::time::timeout;

use super::auth::{self, Gate, Login};
use super::{is_write_verb, parse, render, writes, Command, MAX_LINE};

/// What one mon port allows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Clients served at once; the next is told so and closed.
    pub max_connections: usize,
    /// A client that sends nothing (or reads nothing) for this long is closed.
    pub idle: Duration,
}

/// Who may change state through the mon port and where that is recorded: the dashboard's
/// logins and audit log (the daemon provides them; the requests themselves go through the
/// same [`Backend`] as the dashboard's).
pub trait Accounts: Send + Sync + 'static {
    /// The logins a `login` is checked against.
    fn users(&self) -> Vec<WebUser>;
    /// Whether the audit log can take a line now (`Err(why)` when not: no change then).
    fn audit_writable(&self) -> Result<(), String>;
    /// One line in the audit log (the daemon's log has it already).
    fn audit(
        &self,
        user: &str,
        role: &str,
        peer: IpAddr,
        event: &str,
        detail: String,
        result: Result<(), String>,
    );
}

/// The mon port: nothing, or one address being served. [`Port::apply`] takes it from one to
/// the other (start, reload and stop are all an apply).
pub struct Port {
    running: Mutex<Option<Running>>,
    /// Kept across moves: the clients being served (on an old address too) count against the
    /// cap, and the login limiter remembers failures.
    shared: Arc<Shared>,
}

impl std::fmt::Debug for Port {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Port").finish_non_exhaustive()
    }
}

struct Running {
    /// As configured.
    addr: SocketAddr,
    task: JoinHandle<()>,
}

impl Drop for Running {
    fn drop(&mut self) {
        // Stops accepting; connections already served run to their end.
        self.task.abort();
    }
}

/// What every connection of one port reads: the limits (a reload changes them in place) and
/// how many clients are being served.
struct Shared {
    limits: Mutex<Limits>,
    open: AtomicUsize,
    backend: Arc<dyn Backend>,
    accounts: Arc<dyn Accounts>,
    gate: Arc<Gate>,
}

impl Shared {
    fn limits(&self) -> Limits {
        *self.limits.lock().unwrap_or_else(|p| p.into_inner())
    }
}

impl Port {
    /// Serves `addr` with `limits` (`None`: stops accepting). A new address is bound before
    /// the old one closes; if it cannot be bound, the port stays as it was and the error says
    /// why. Connections being served continue either way. Call within a tokio runtime.
    /// A port serving nothing yet, whose clients reach `backend` and log in against
    /// `accounts`.
    pub fn new(backend: Arc<dyn Backend>, accounts: Arc<dyn Accounts>) -> Port {
        let limits = Limits {
            max_connections: 1,
            idle: Duration::from_secs(60),
        };
        Port {
            running: Mutex::new(None),
            shared: Arc::new(Shared {
                limits: Mutex::new(limits),
                open: AtomicUsize::new(0),
                backend,
                accounts,
                gate: Arc::default(),
            }),
        }
    }

    pub fn apply(&self, addr: Option<SocketAddr>, limits: Limits) -> std::io::Result<()> {
        let shared = &self.shared;
        let mut running = self.running.lock().unwrap_or_else(|p| p.into_inner());
        let Some(addr) = addr else {
            *running = None;
            return Ok(());
        };
        if running.as_ref().is_some_and(|r| r.addr == addr) {
            *shared.limits.lock().unwrap_or_else(|p| p.into_inner()) = limits;
            return Ok(());
        }
        let listener = bind(addr)?;
        *shared.limits.lock().unwrap_or_else(|p| p.into_inner()) = limits;
        let bound = listener.local_addr().unwrap_or(addr);
        tracing::info!(addr = %bound, max_connections = limits.max_connections, "mon client protocol");
        let task = tokio::spawn(serve(listener, shared.clone()));
        *running = Some(Running { addr, task });
        Ok(())
    }

    /// Stops accepting (the apply to nothing); connections being served continue.
    pub fn stop(&self) {
        *self.running.lock().unwrap_or_else(|p| p.into_inner()) = None;
    }
}

fn bind(addr: SocketAddr) -> std::io::Result<TcpListener> {
    let l = std::net::TcpListener::bind(addr).map_err(|e| {
        std::io::Error::new(
            e.kind(),
            format!("health.mon-listen: cannot bind {addr}: {e}"),
        )
    })?;
    l.set_nonblocking(true)?;
    TcpListener::from_std(l)
}

/// Counts one client being served while alive.
struct Slot(Arc<Shared>);

impl Drop for Slot {
    fn drop(&mut self) {
        self.0.open.fetch_sub(1, Relaxed);
    }
}

/// Accepts mon clients until the task is aborted.
async fn serve(listener: TcpListener, shared: Arc<Shared>) {
    let mut backoff = herd_core::backoff::Backoff::default();
    loop {
        let (stream, peer) = match listener.accept().await {
            Ok(c) => {
                backoff.succeeded();
                c
            }
            Err(e) => {
                // Out of descriptors and the like: wait (growing) rather than spin.
                tracing::warn!(error = %e, "mon client accept failed");
                tokio::time::sleep(backoff.failed()).await;
                continue;
            }
        };
        let limits = shared.limits();
        if shared.open.fetch_add(1, Relaxed) >= limits.max_connections.max(1) {
            shared.open.fetch_sub(1, Relaxed);
            // Told, not left waiting: the socket is closed at once either way, so a flood
            // holds no more than one descriptor beyond the cap.
            tracing::debug!(%peer, "mon: too many connections; closing this one");
            let _ = stream.try_write(b"520 too many connections, try again later\n");
            continue;
        }
        let slot = Slot(shared.clone());
        tokio::spawn(async move {
            let mut c = Client {
                shared: slot.0.clone(),
                peer,
                login: None,
                idle: limits.idle,
            };
            if let Err(e) = c.run(stream).await {
                tracing::debug!(%peer, error = %e, "mon client connection ended");
            }
            drop(slot);
        });
    }
}

/// One connection's state.
struct Client {
    shared: Arc<Shared>,
    peer: SocketAddr,
    login: Option<Login>,
    idle: Duration,
}

/// An error that ends the connection because the client went quiet.
fn idle_error() -> std::io::Error {
    std::io::Error::new(std::io::ErrorKind::TimedOut, "idle timeout")
}

impl Client {
    async fn run(&mut self, stream: TcpStream) -> std::io::Result<()> {
        let (rd, mut wr) = stream.into_split();
        let mut rd = BufReader::new(rd);
        let mut line = Vec::new();
        loop {
            line.clear();
            let mut limited = (&mut rd).take(MAX_LINE);
            let read = limited.read_until(b'\n', &mut line);
            let n = match timeout(self.idle, read).await {
                Ok(r) => r?,
                Err(_) => {
                    // Best effort: a client that reads nothing does not hold the close up.
                    let bye = wr.write_all(b"520 idle timeout, closing\n");
                    let _ = timeout(Duration::from_secs(1), bye).await;
                    return Err(idle_error());
                }
            };
            if n == 0 {
                return Ok(());
            }
            if !line.ends_with(b"\n") && line.len() as u64 == MAX_LINE {
                // Not cut into two commands: refused, and the connection closed.
                wr.write_all(b"520 command line too long\n").await?;
                return Ok(());
            }
            let text = String::from_utf8_lossy(&line).trim().to_string();
            let Some(reply) = self.answer(&text).await else {
                wr.write_all(b"220 quitting\n").await?;
                return Ok(());
            };
            let mut out = reply.join("\n");
            out.push('\n');
            // A client that stops reading is closed like one that stops writing.
            timeout(self.idle, wr.write_all(out.as_bytes()))
                .await
                .map_err(|_| idle_error())??;
        }
    }

    /// The reply lines to one command line; `None` for `quit`.
    async fn answer(&mut self, text: &str) -> Option<Vec<String>> {
        let cmd = parse(text);
        let write = is_write_verb(text) || matches!(&cmd, Command::Api(r, _) if writes(r));
        if write {
            if let Err(refusal) = self.may_write() {
                let (who, role) = self
                    .login
                    .as_ref()
                    .map_or(("(none)", ""), |l| (l.user.as_str(), l.role.as_str()));
                let (who, role) = (who.to_string(), role.to_string());
                self.audit(&who, &role, "refused", text, Err("not authorized"));
                return Some(vec![refusal]);
            }
            // No change that cannot be accounted for: the dashboard's audit log (when there
            // is one) must take the line first, as for the dashboard's own actions.
            if let Err(why) = self.shared.accounts.audit_writable() {
                tracing::error!(peer = %self.peer, "mon: refused: {why}");
                return Some(vec![format!(
                    "520 command could not be executed, {why}: no change without its audit line"
                )]);
            }
        }
        Some(match cmd {
            Command::Quit => return None,
            Command::Local(lines) => lines,
            Command::Login { user, password } => {
                let users = self.shared.accounts.users();
                let gate = &self.shared.gate;
                let (reply, login) = gate.login(&users, self.peer, &user, &password).await;
                if login.is_some() {
                    self.login = login;
                }
                vec![reply]
            }
            Command::CheckAuth(verb) => {
                let ok = !WRITE_CHECK.contains(&verb.as_str()) || self.may_write().is_ok();
                vec![if ok {
                    "220 command authorized".to_string()
                } else {
                    "520 command could not be executed".to_string()
                }]
            }
            Command::Api(req, how) => self.request(req, how, text, write).await,
        })
    }

    /// One audit line: to the daemon's log, and to the dashboard's audit log if there is one.
    fn audit(&self, user: &str, role: &str, event: &str, text: &str, result: Result<(), &str>) {
        auth::audit(user, role, self.peer, event, text, result);
        let result = result.map_err(str::to_string);
        let detail = format!("mon: {text}");
        let accounts = &self.shared.accounts;
        accounts.audit(user, role, self.peer.ip(), event, detail, result);
    }

    fn may_write(&mut self) -> Result<String, String> {
        let users = self.shared.accounts.users();
        auth::may_write(&mut self.login, &users)
    }

    /// Makes the request (a write signed with the logged-in user) and renders its answer.
    async fn request(
        &self,
        mut req: Request,
        how: super::Render,
        text: &str,
        write: bool,
    ) -> Vec<String> {
        let (user, role) = self
            .login
            .as_ref()
            .map(|l| (l.user.clone(), l.role.as_str()))
            .unwrap_or_default();
        if let Request::HealthSilence { author, .. } = &mut req {
            author.clone_from(&user);
        }
        let backend = self.shared.backend.clone();
        let resp = match tokio::task::spawn_blocking(move || backend.call(req)).await {
            Ok(r) => r,
            Err(e) => return vec![format!("520 the request failed: {e}")],
        };
        if write {
            let result = match &resp {
                herd_core::api::Response::Error(e) => Err(e.message.as_str()),
                _ => Ok(()),
            };
            self.audit(&user, role, "command", text, result);
        }
        render(how, resp)
    }
}

/// Commands `checkauth` answers "authorized" for only after an admin's login.
const WRITE_CHECK: &[&str] = super::WRITE_VERBS;
