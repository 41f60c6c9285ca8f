//! A command's run: `/bin/sh -c` as the configured user in a process group of its own, its
//! output pumped to one writer that alone touches the socket, stdin and signals from the
//! client (and to the subtree this node relays to), and the kill at the timeout or when the
//! client goes away.
//!
//! The tasks of one run: two pumps (stdout, stderr) and the subtree's relay feed the writer
//! through one channel; the reader carries stdin and signals in. Whatever ends the run (the
//! writer or the reader losing the client) says so on the `gone` channel, which the waits
//! below watch.

use std::process::Stdio;
use std::sync::Arc;
use std::time::{Duration, Instant};

use rustix::process::{kill_process_group, Pid, Signal};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;
use tokio::time::{sleep_until, timeout};

use super::audit::AuditRecord;
use super::serve::not_run;
use super::{Conn, PATH};
use crate::client::{self, Run};
use crate::deadlines::{INTERRUPT_GRACE, KILL_GRACE, WRITE_STALL};
use crate::frame::{write_frames, Frame, FrameReader, Kind};
use crate::pki::Identity;
use crate::proto::{ExecRequest, Exit, Failure, FailureKind, Hop, SIGNALS};

/// Bytes read from a command's output at a time (one frame at most).
const CHUNK: usize = 64 * 1024;

/// Who a run is for: the identity it runs as (the admin's, for a relayed run) and the node
/// that relayed it.
pub(super) struct Caller<'a> {
    pub id: &'a Identity,
    pub via: Option<&'a str>,
}

/// Why a run's client is gone (the writer or the reader found out).
type Gone = mpsc::Receiver<&'static str>;

impl Conn<'_> {
    pub(super) async fn exec<R, W>(
        &self,
        caller: Caller<'_>,
        mut req: ExecRequest,
        input: Option<Arc<Vec<u8>>>,
        rd: FrameReader<R>,
        mut wr: W,
    ) where
        R: AsyncRead + Unpin + Send + 'static,
        W: AsyncWrite + Unpin + Send + 'static,
    {
        let (id, peer, rank) = (caller.id, self.peer, req.rank);
        let started = Instant::now();
        let subtree = std::mem::take(&mut req.subtree);
        let mut base = AuditRecord {
            request: "exec",
            via: caller.via,
            command: Some(&req.command),
            ..AuditRecord::new(id, peer, self.s)
        };
        let mut child = match self.start_command(id, &req, &base) {
            Ok(c) => c,
            Err(e) => {
                tracing::warn!(%peer, error = %e, "agent: cannot run the command");
                let _ = write_frames(&mut wr, &not_run(rank, &subtree, &self.s.name, &e)).await;
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
        let (out_tx, out_rx) = mpsc::channel::<Frame>(16);
        let mut pumps = Vec::new();
        if let Some(o) = child.stdout.take() {
            pumps.push(tokio::spawn(pump(o, Kind::Stdout, rank, out_tx.clone())));
        }
        if let Some(e) = child.stderr.take() {
            pumps.push(tokio::spawn(pump(e, Kind::Stderr, rank, out_tx.clone())));
        }
        let (gone_tx, gone_rx) = mpsc::channel::<&'static str>(2);
        let writer = tokio::spawn(write_output(out_rx, wr, gone_tx.clone()));
        let sub = self.relay_run(&req, subtree, &out_tx).await;
        let (interrupted_tx, interrupted) = watch::channel(false);
        let reader = tokio::spawn(read_input(
            rd,
            Input {
                stdin: child.stdin.take(),
                sub_stdin: sub.stdin,
                sub_signals: sub.signals,
                pid,
                interrupted: interrupted_tx,
                gone: gone_tx,
            },
            input,
        ));

        let mut run = Ending::new(pid, req.timeout_ms, gone_rx);
        let status = run.wait_shell(&mut child).await;
        run.wait_output(pumps, interrupted).await;
        let exit = exit_of(status, run.timed_out);
        // Every output frame is queued before it: the exit frame is the node's last.
        if run.gone.is_none() {
            let _ = out_tx.send(Frame::json(Kind::Exit, rank, &exit)).await;
        }
        drop(out_tx);
        run.wait_relay(sub.task).await;
        // The reader also carried stdin and signals to the subtree: it stops last.
        reader.abort();
        let _ = writer.await;
        tracing::info!(%peer, who = %id.name, pid = pid.as_raw_nonzero().get(), status = exit.status(), timed_out = run.timed_out, "agent: exec ended");
        let _ = self.audit(&AuditRecord {
            event: "end",
            exit: exit.code,
            signal: exit.signal,
            timed_out: run.timed_out,
            ended_by: run.gone,
            ms: Some(started.elapsed().as_millis() as u64),
            ..base
        });
    }

    /// No audit line, no command: the line is written before the command starts (so it has
    /// no pid; the end line has it). A command that cannot start has its end line too.
    fn start_command(
        &self,
        id: &Identity,
        req: &ExecRequest,
        base: &AuditRecord<'_>,
    ) -> Result<tokio::process::Child, String> {
        let start = AuditRecord {
            event: "start",
            ..base.clone()
        };
        if let Err(e) = self.audit(&start) {
            return Err(format!("not run: {e}"));
        }
        self.spawn_command(id, req).inspect_err(|e| {
            let _ = self.audit(&AuditRecord {
                event: "end",
                reason: Some(e),
                ..base.clone()
            });
        })
    }

    fn spawn_command(
        &self,
        id: &Identity,
        req: &ExecRequest,
    ) -> Result<tokio::process::Child, String> {
        let user = crate::user::lookup_user(&self.s.user).map_err(|e| e.to_string())?;
        let mut cmd = tokio::process::Command::new("/bin/sh");
        cmd.arg("-c")
            .arg(&req.command)
            .env_clear()
            .env("PATH", PATH)
            .env("HOME", &user.home)
            .env("USER", &user.name)
            .env("LOGNAME", &user.name)
            .env("SHELL", &user.shell)
            .env("HERD_NODE", &self.s.name)
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

    /// The subtree, when this agent relays: its frames join this connection's output; it gets
    /// stdin (when the command reads it) and signals from the reader.
    async fn relay_run(
        &self,
        req: &ExecRequest,
        subtree: Vec<Hop>,
        out: &mpsc::Sender<Frame>,
    ) -> Subtree {
        let (signals, signals_rx) = watch::channel(None);
        let (stdin, stdin_rx) = match (req.stdin, subtree.is_empty()) {
            (true, false) => {
                let (tx, rx) = mpsc::unbounded_channel();
                (Some(tx), Some(rx))
            }
            _ => (None, None),
        };
        let task = match (&self.s.relay_tls, subtree.is_empty()) {
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
                let relay =
                    client::relay(Arc::new(run), subtree, stdin_rx, signals_rx, out.clone());
                Some(tokio::spawn(relay))
            }
            (None, false) => {
                let message = format!("{} cannot relay (no client identity)", self.s.name);
                for h in subtree {
                    let failure = Failure {
                        kind: FailureKind::Agent,
                        message: message.clone(),
                    };
                    let _ = out.send(Frame::json(Kind::Error, h.rank, &failure)).await;
                }
                None
            }
        };
        Subtree {
            stdin,
            signals,
            task,
        }
    }
}

/// The relay of a run to this node's subtree.
struct Subtree {
    stdin: Option<mpsc::UnboundedSender<Arc<Vec<u8>>>>,
    signals: watch::Sender<Option<i32>>,
    task: Option<JoinHandle<()>>,
}

/// The one task that writes to the client: batches of up to 8 frames; a write that fails or
/// stalls for [`WRITE_STALL`] says the client is gone.
async fn write_output<W: AsyncWrite + Unpin>(
    mut rx: mpsc::Receiver<Frame>,
    mut wr: W,
    gone: mpsc::Sender<&'static str>,
) {
    while let Some(first) = rx.recv().await {
        let mut batch = vec![first];
        while let Ok(f) = rx.try_recv() {
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
}

/// Where the reader sends what the client sends.
struct Input {
    stdin: Option<tokio::process::ChildStdin>,
    sub_stdin: Option<mpsc::UnboundedSender<Arc<Vec<u8>>>>,
    sub_signals: watch::Sender<Option<i32>>,
    pid: Pid,
    interrupted: watch::Sender<bool>,
    gone: mpsc::Sender<&'static str>,
}

/// Stdin frames to the command (and the subtree), signals to its process group (and the
/// subtree), until the client closes or sends what it should not.
async fn read_input<R: AsyncRead + Unpin>(
    mut rd: FrameReader<R>,
    mut to: Input,
    whole: Option<Arc<Vec<u8>>>,
) {
    // Stdin read whole and checked already: it goes first, and is all there is.
    if let Some(data) = whole {
        if let Some(tx) = to.sub_stdin.take() {
            let _ = tx.send(data.clone());
        }
        if let Some(mut s) = to.stdin.take() {
            let _ = s.write_all(&data).await;
        }
    }
    let why = loop {
        let f = match rd.read().await {
            Ok(Some(f)) => f,
            Ok(None) => break "the client went away",
            Err(_) => break "the client sent a bad frame",
        };
        match f.kind {
            Kind::Stdin => {
                if let Some(tx) = &to.sub_stdin {
                    let _ = tx.send(Arc::new(f.payload.clone()));
                }
                if let Some(s) = to.stdin.as_mut() {
                    if s.write_all(&f.payload).await.is_err() {
                        // The command closed its stdin: the rest is not wanted.
                        to.stdin = None;
                    }
                }
            }
            Kind::StdinEnd => {
                to.stdin = None;
                to.sub_stdin = None;
            }
            Kind::Signal => {
                let sig = f.payload.first().map(|&s| i32::from(s));
                if let Some(sig) = sig.filter(|s| SIGNALS.contains(s)) {
                    signal_group(to.pid, sig);
                    let _ = to.interrupted.send(true);
                    let _ = to.sub_signals.send(Some(sig));
                }
            }
            _ => break "the client sent a frame out of place",
        }
    };
    let _ = to.gone.try_send(why);
}

/// How a run ends: its deadline, the kill after it, and whether the client went away.
struct Ending {
    pid: Pid,
    deadline: Option<tokio::time::Instant>,
    timed_out: bool,
    kill_at: Option<tokio::time::Instant>,
    gone: Option<&'static str>,
    gone_rx: Gone,
}

/// A time that never comes (for a `select!` branch that is off).
fn far() -> tokio::time::Instant {
    tokio::time::Instant::now() + Duration::from_secs(86_400 * 365)
}

impl Ending {
    fn new(pid: Pid, timeout_ms: Option<u64>, gone_rx: Gone) -> Ending {
        Ending {
            pid,
            deadline: timeout_ms.map(|ms| tokio::time::Instant::now() + Duration::from_millis(ms)),
            timed_out: false,
            kill_at: None,
            gone: None,
            gone_rx,
        }
    }

    /// Until the shell exits: at the deadline SIGTERM, then SIGKILL after [`KILL_GRACE`]; a
    /// client gone, SIGHUP (and the same SIGKILL).
    async fn wait_shell(
        &mut self,
        child: &mut tokio::process::Child,
    ) -> Option<std::process::ExitStatus> {
        let pid = self.pid;
        loop {
            tokio::select! {
                s = child.wait() => return s.ok(),
                _ = sleep_until(self.deadline.unwrap_or_else(far)), if self.deadline.is_some() && !self.timed_out => {
                    self.timed_out = true;
                    signal_group(pid, Signal::TERM.as_raw());
                    self.kill_at = Some(tokio::time::Instant::now() + KILL_GRACE);
                }
                _ = sleep_until(self.kill_at.unwrap_or_else(far)), if self.kill_at.is_some() => {
                    signal_group(pid, Signal::KILL.as_raw());
                    self.kill_at = None;
                }
                why = self.gone_rx.recv(), if self.gone.is_none() => {
                    self.gone = Some(why.unwrap_or("the client went away"));
                    signal_group(pid, Signal::HUP.as_raw());
                    self.kill_at.get_or_insert(tokio::time::Instant::now() + KILL_GRACE);
                }
            }
        }
    }

    /// The shell is gone; its output ends when every process that holds the pipes is (as
    /// with ssh). A timeout or a lost client ends the wait and the process group. After the
    /// client's signal, what is left (a background job that ignores SIGINT) may keep running,
    /// but the run does not wait for it past [`INTERRUPT_GRACE`].
    async fn wait_output(
        &mut self,
        pumps: Vec<JoinHandle<()>>,
        mut interrupted: watch::Receiver<bool>,
    ) {
        let pid = self.pid;
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
                _ = sleep_until(self.deadline.unwrap_or_else(far)), if self.deadline.is_some() && !self.timed_out => {
                    self.timed_out = true;
                    signal_group(pid, Signal::KILL.as_raw());
                }
                why = self.gone_rx.recv(), if self.gone.is_none() => {
                    self.gone = Some(why.unwrap_or("the client went away"));
                    signal_group(pid, Signal::KILL.as_raw());
                }
            }
        }
        if self.timed_out {
            signal_group(pid, Signal::KILL.as_raw());
        }
    }

    /// The subtree's last frames, unless the client is gone (then the relay is stopped).
    async fn wait_relay(&mut self, relay: Option<JoinHandle<()>>) {
        let Some(mut r) = relay else {
            return;
        };
        if self.gone.is_some() {
            r.abort();
            return;
        }
        tokio::select! {
            _ = &mut r => {}
            why = self.gone_rx.recv() => {
                self.gone = Some(why.unwrap_or("the client went away"));
                r.abort();
            }
        }
    }
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
