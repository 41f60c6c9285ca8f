//! The parallel client: runs one request on many agents at once and reports, per node,
//! whole output lines and how the command ended.
//!
//! Each node is one task with one connection (at most `fanout` at a time). Output is cut into
//! lines here, per node and per stream, so that whoever prints the events never has to
//! split or interleave a line: a line is one event however long it is, and a last line
//! without a newline is one too.

use std::sync::Arc;
use std::time::Duration;

use rustls::pki_types::ServerName;
use serde::Serialize;
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;
use tokio::sync::{mpsc, watch, Semaphore};
use tokio::time::timeout;
use tokio_rustls::TlsConnector;

use crate::agent::KILL_GRACE;
use crate::frame::{write_frames, Frame, FrameReader, Kind, MAX_PAYLOAD};
use crate::proto::{ExecRequest, Exit, Failure, Pong, Request};

/// A node to run on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    /// Position in the run (gexec's numbering, from 0).
    pub rank: u32,
    pub name: String,
    /// `host:port` of its agent.
    pub addr: String,
}

#[derive(Debug, Clone)]
pub struct Options {
    pub command: String,
    /// For TCP connect and TLS handshake together.
    pub connect_timeout: Duration,
    /// The agent kills the command after this long.
    pub timeout: Option<Duration>,
    /// Nodes served at once.
    pub fanout: usize,
    /// Whether stdin is sent (see [`stdin_channels`]).
    pub stdin: bool,
    /// Nodes in the run (`HERD_SIZE`).
    pub size: u32,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Stream {
    Stdout,
    Stderr,
}

/// What happened on a node.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case", tag = "outcome")]
pub enum Outcome {
    /// The command ran and ended (maybe killed at its timeout).
    Exited(Exit),
    /// The agent refused the request (the certificate's role).
    Refused { message: String },
    /// Not reached, or lost on the way.
    Failed { stage: Stage, message: String },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Stage {
    /// TCP connect or TLS handshake (including a refused certificate).
    Connect,
    /// The agent said it could not run the command.
    Agent,
    /// The connection broke or went silent while the command ran.
    Lost,
}

impl Outcome {
    /// The exit status this outcome counts as: the command's, 124 for a timeout (as
    /// timeout(1)), 255 for a node not reached or lost (as ssh), 126 for a refusal.
    pub fn status(&self) -> i32 {
        match self {
            Outcome::Exited(e) if e.timed_out => 124,
            Outcome::Exited(e) => e.status(),
            Outcome::Refused { .. } => 126,
            Outcome::Failed { .. } => 255,
        }
    }

    /// A short description for a failure summary; `None` for success.
    pub fn problem(&self) -> Option<String> {
        match self {
            Outcome::Exited(e) if e.timed_out => Some("timed out (killed)".to_string()),
            Outcome::Exited(e) => match (e.code, e.signal) {
                (Some(0), _) => None,
                (Some(c), _) => Some(format!("exited with {c}")),
                (None, Some(s)) => Some(format!("killed by signal {s}")),
                (None, None) => Some("ended without a status".to_string()),
            },
            Outcome::Refused { message } => Some(message.clone()),
            Outcome::Failed { stage, message } => Some(match stage {
                Stage::Connect => format!("not reached: {message}"),
                Stage::Agent => format!("agent: {message}"),
                Stage::Lost => format!("lost: {message}"),
            }),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    /// A whole line (without its newline; `newline` is false for a last line without one).
    Line {
        rank: u32,
        stream: Stream,
        line: Vec<u8>,
        newline: bool,
    },
    /// The node is done; its last event.
    Done { rank: u32, outcome: Outcome },
}

/// Sends the client's stdin to every node: each chunk goes to all, dropping it ends stdin.
#[derive(Debug)]
pub struct StdinSender(Vec<mpsc::UnboundedSender<Arc<Vec<u8>>>>);

impl StdinSender {
    /// Queues a chunk for every node; false once no node wants more.
    pub fn send(&self, chunk: Vec<u8>) -> bool {
        let chunk = Arc::new(chunk);
        let mut any = false;
        for tx in &self.0 {
            any |= tx.send(chunk.clone()).is_ok();
        }
        any
    }
}

pub type StdinReceiver = mpsc::UnboundedReceiver<Arc<Vec<u8>>>;

/// One sender for the client's stdin and a receiver per node.
pub fn stdin_channels(n: usize) -> (StdinSender, Vec<StdinReceiver>) {
    let (txs, rxs) = (0..n).map(|_| mpsc::unbounded_channel()).unzip();
    (StdinSender(txs), rxs)
}

/// Cuts a byte stream into lines.
#[derive(Debug, Default)]
pub struct LineBuf {
    buf: Vec<u8>,
}

impl LineBuf {
    /// Calls `emit` with each line that `data` completes.
    pub fn push(&mut self, mut data: &[u8], mut emit: impl FnMut(Vec<u8>)) {
        while let Some(i) = data.iter().position(|&b| b == b'\n') {
            let mut line = std::mem::take(&mut self.buf);
            line.extend_from_slice(&data[..i]);
            emit(line);
            data = &data[i + 1..];
        }
        self.buf.extend_from_slice(data);
    }

    /// The unfinished last line, if any.
    pub fn finish(&mut self) -> Option<Vec<u8>> {
        (!self.buf.is_empty()).then(|| std::mem::take(&mut self.buf))
    }
}

/// Runs `opts.command` on every target; events go to `events` as they happen. `stdin` has a
/// receiver per target (in order) when `opts.stdin`; each change of `signals` is sent to
/// every running command.
pub async fn exec(
    tls: Arc<rustls::ClientConfig>,
    targets: Vec<Target>,
    opts: Options,
    stdin: Vec<StdinReceiver>,
    signals: watch::Receiver<Option<i32>>,
    events: mpsc::UnboundedSender<Event>,
) {
    let slots = Arc::new(Semaphore::new(opts.fanout.max(1)));
    let opts = Arc::new(opts);
    let mut stdin = stdin.into_iter();
    let mut tasks = Vec::with_capacity(targets.len());
    for t in targets {
        let (tls, opts, events, signals, slots) = (
            tls.clone(),
            opts.clone(),
            events.clone(),
            signals.clone(),
            slots.clone(),
        );
        let input = stdin.next();
        tasks.push(tokio::spawn(async move {
            let Ok(_slot) = slots.acquire().await else {
                return;
            };
            let rank = t.rank;
            let outcome = exec_one(tls, &t, &opts, input, signals, &events).await;
            let _ = events.send(Event::Done { rank, outcome });
        }));
    }
    for t in tasks {
        let _ = t.await;
    }
}

type Tls = tokio_rustls::client::TlsStream<TcpStream>;

async fn connect(
    tls: Arc<rustls::ClientConfig>,
    t: &Target,
    limit: Duration,
) -> Result<Tls, String> {
    let name = ServerName::try_from(t.name.clone()).map_err(|_| {
        format!(
            "{:?} is not a DNS name, so no certificate can name it",
            t.name
        )
    })?;
    let attempt = async {
        let tcp = TcpStream::connect(&t.addr)
            .await
            .map_err(|e| format!("{}: {e}", t.addr))?;
        let _ = tcp.set_nodelay(true);
        TlsConnector::from(tls)
            .connect(name, tcp)
            .await
            .map_err(|e| format!("{}: TLS: {e}", t.addr))
    };
    timeout(limit, attempt)
        .await
        .map_err(|_| format!("{}: no answer within {:?}", t.addr, limit))?
}

fn lost(message: impl Into<String>) -> Outcome {
    Outcome::Failed {
        stage: Stage::Lost,
        message: message.into(),
    }
}

async fn exec_one(
    tls: Arc<rustls::ClientConfig>,
    t: &Target,
    opts: &Options,
    stdin: Option<StdinReceiver>,
    mut signals: watch::Receiver<Option<i32>>,
    events: &mpsc::UnboundedSender<Event>,
) -> Outcome {
    let stream = match connect(tls, t, opts.connect_timeout).await {
        Ok(s) => s,
        Err(message) => {
            return Outcome::Failed {
                stage: Stage::Connect,
                message,
            }
        }
    };
    let rank = t.rank;
    let req = Request::Exec(ExecRequest {
        command: opts.command.clone(),
        timeout_ms: opts.timeout.map(|d| d.as_millis() as u64),
        stdin: opts.stdin,
        rank,
        size: opts.size,
    });
    let (rd, mut wr) = tokio::io::split(stream);
    if let Err(e) = write_frames(&mut wr, &[Frame::json(Kind::Request, rank, &req)]).await {
        return lost(format!("sending the request: {e}"));
    }
    // One writer task: stdin and signals never wait for the output, nor it for them.
    let (tx, mut rx) = mpsc::unbounded_channel::<Frame>();
    let writer = tokio::spawn(async move {
        while let Some(f) = rx.recv().await {
            if write_frames(&mut wr, &[f]).await.is_err() {
                return;
            }
        }
        let _ = wr.shutdown().await;
    });
    let feeder = {
        let tx = tx.clone();
        let use_stdin = opts.stdin;
        tokio::spawn(async move {
            if let (true, Some(mut input)) = (use_stdin, stdin) {
                while let Some(chunk) = input.recv().await {
                    for part in chunk.chunks(MAX_PAYLOAD) {
                        if tx.send(Frame::new(Kind::Stdin, rank, part)).is_err() {
                            return;
                        }
                    }
                }
                let _ = tx.send(Frame::new(Kind::StdinEnd, rank, Vec::new()));
            }
        })
    };
    let mut rd = FrameReader::new(rd);
    let (mut out, mut err) = (LineBuf::default(), LineBuf::default());
    // The agent ends the command at its timeout; past that (and the kill grace, and a margin)
    // the node is reported as gone silent.
    let silence = opts
        .timeout
        .map(|d| tokio::time::Instant::now() + d + KILL_GRACE + Duration::from_secs(5));
    let far = tokio::time::Instant::now() + Duration::from_secs(86_400 * 365);
    let mut answered = false;
    let outcome = loop {
        tokio::select! {
            f = rd.read() => {
                let f = match f {
                    Ok(Some(f)) => f,
                    Ok(None) => break lost("the connection closed before the command ended"),
                    // TLS 1.3 checks the client's certificate after the client's handshake is
                    // done: a refusal arrives as an alert on the first read.
                    Err(e) if !answered => match refusal(&e) {
                        Some(alert) => break Outcome::Failed {
                            stage: Stage::Connect,
                            message: format!("{}: TLS: the agent refused this certificate ({alert})", t.addr),
                        },
                        None => break lost(e.to_string()),
                    },
                    Err(e) => break lost(e.to_string()),
                };
                answered = true;
                match f.kind {
                    Kind::Stdout | Kind::Stderr => {
                        let (buf, stream) = if f.kind == Kind::Stdout {
                            (&mut out, Stream::Stdout)
                        } else {
                            (&mut err, Stream::Stderr)
                        };
                        buf.push(&f.payload, |line| {
                            let _ = events.send(Event::Line { rank, stream, line, newline: true });
                        });
                    }
                    Kind::Exit => match f.parse::<Exit>() {
                        Ok(e) => break Outcome::Exited(e),
                        Err(e) => break lost(e.to_string()),
                    },
                    Kind::Error => match f.parse::<Failure>() {
                        Ok(Failure { refused: true, message }) => break Outcome::Refused { message },
                        Ok(Failure { message, .. }) => break Outcome::Failed { stage: Stage::Agent, message },
                        Err(e) => break lost(e.to_string()),
                    },
                    k => break lost(format!("unexpected {k:?} frame")),
                }
            }
            r = signals.changed() => {
                if r.is_ok() {
                    if let Some(sig) = *signals.borrow_and_update() {
                        let _ = tx.send(Frame::new(Kind::Signal, rank, vec![sig as u8]));
                    }
                }
            }
            _ = tokio::time::sleep_until(silence.unwrap_or(far)), if silence.is_some() => {
                break lost("no answer after the command's timeout");
            }
        }
    };
    for (buf, stream) in [(&mut out, Stream::Stdout), (&mut err, Stream::Stderr)] {
        if let Some(line) = buf.finish() {
            let _ = events.send(Event::Line {
                rank,
                stream,
                line,
                newline: false,
            });
        }
    }
    feeder.abort();
    drop(tx);
    writer.abort();
    outcome
}

/// The TLS alert in a read error, if the peer sent one.
fn refusal(e: &std::io::Error) -> Option<String> {
    match e.get_ref()?.downcast_ref::<rustls::Error>()? {
        rustls::Error::AlertReceived(a) => Some(format!("{a:?}")),
        _ => None,
    }
}

/// Asks one agent who and how it is (any role may).
pub async fn ping(
    tls: Arc<rustls::ClientConfig>,
    t: &Target,
    limit: Duration,
) -> Result<Pong, Outcome> {
    let stream = connect(tls, t, limit)
        .await
        .map_err(|message| Outcome::Failed {
            stage: Stage::Connect,
            message,
        })?;
    let (rd, mut wr) = tokio::io::split(stream);
    write_frames(
        &mut wr,
        &[Frame::json(Kind::Request, t.rank, &Request::Ping)],
    )
    .await
    .map_err(|e| lost(e.to_string()))?;
    let mut rd = FrameReader::new(rd);
    let f = timeout(limit, rd.read())
        .await
        .map_err(|_| lost("no answer"))?
        .map_err(|e| match refusal(&e) {
            Some(alert) => Outcome::Failed {
                stage: Stage::Connect,
                message: format!(
                    "{}: TLS: the agent refused this certificate ({alert})",
                    t.addr
                ),
            },
            None => lost(e.to_string()),
        })?
        .ok_or_else(|| lost("the connection closed"))?;
    match f.kind {
        Kind::Pong => f.parse().map_err(|e| lost(e.to_string())),
        Kind::Error => match f.parse::<Failure>() {
            Ok(Failure {
                refused: true,
                message,
            }) => Err(Outcome::Refused { message }),
            Ok(Failure { message, .. }) => Err(Outcome::Failed {
                stage: Stage::Agent,
                message,
            }),
            Err(e) => Err(lost(e.to_string())),
        },
        k => Err(lost(format!("unexpected {k:?} frame"))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_are_whole_whatever_the_chunks() {
        let text = b"one\ntwo two\n\nthree without newline";
        for cut in 1..text.len() {
            let mut lb = LineBuf::default();
            let mut lines = Vec::new();
            for chunk in text.chunks(cut) {
                lb.push(chunk, |l| lines.push(l));
            }
            lines.extend(lb.finish());
            assert_eq!(
                lines,
                vec![
                    b"one".to_vec(),
                    b"two two".to_vec(),
                    Vec::new(),
                    b"three without newline".to_vec()
                ]
            );
        }
    }
}
