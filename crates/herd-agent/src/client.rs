//! The parallel client: runs one command on many agents and reports, per node, whole output
//! lines and how the command ended.
//!
//! Up to `fanout` nodes, the client connects to each. Beyond that it splits the nodes into
//! `fanout` contiguous groups and connects to the first node of each, which relays the run
//! to the rest of its group the same way (gexec's n-ary tree): the client holds `fanout`
//! connections whatever the size of the run. Every frame carries the rank of the node it is
//! about, so a relay forwards its subtree's frames as they are. A node that cannot be reached
//! is reported, and if it was to relay, the next node of its group takes its place; a relay
//! lost in the middle of the run has each of its unfinished nodes reported. No node is ever
//! silently dropped: every rank ends with an exit or an error.
//!
//! Output is cut into lines at the end (per node and per stream), so that a line is one event
//! however long it is, and a last line without a newline is one too.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use rustls::pki_types::ServerName;
use serde::Serialize;
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;
use tokio::sync::{mpsc, watch};
use tokio::task::JoinSet;
use tokio::time::timeout;
use tokio_rustls::TlsConnector;

use crate::deadlines::KILL_GRACE;
use crate::frame::{write_frames, Frame, FrameReader, Kind, MAX_PAYLOAD};
pub use crate::proto::Hop as Target;
use crate::proto::{ExecRequest, Exit, Failure, FailureKind, Pong, Request};

/// The connect timeout when a request does not say.
pub const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

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
    /// Refused: the certificate's role, or a grant that does not hold.
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
    fn from_failure(f: Failure) -> Outcome {
        let stage = match f.kind {
            FailureKind::Refused => return Outcome::Refused { message: f.message },
            FailureKind::Agent => Stage::Agent,
            FailureKind::Connect => Stage::Connect,
            FailureKind::Lost => Stage::Lost,
        };
        Outcome::Failed {
            stage,
            message: f.message,
        }
    }

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

/// The client's stdin, in chunks, for every node; closing the sender ends stdin.
pub type StdinReceiver = mpsc::UnboundedReceiver<Arc<Vec<u8>>>;

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

/// One run: the TLS identity to connect with and the request every node gets (its `rank`
/// and `subtree` are filled in per connection).
#[derive(Debug)]
pub struct Run {
    pub tls: Arc<rustls::ClientConfig>,
    pub request: ExecRequest,
}

impl Run {
    fn connect_timeout(&self) -> Duration {
        match self.request.connect_timeout_ms {
            0 => DEFAULT_CONNECT_TIMEOUT,
            ms => Duration::from_millis(ms),
        }
    }

    fn fanout(&self) -> usize {
        (self.request.fanout as usize).max(1)
    }
}

/// Splits the nodes of a run into the connections to make: up to `fanout` nodes, one each;
/// beyond, `fanout` contiguous groups whose first node relays to the rest.
pub fn plan(mut targets: Vec<Target>, fanout: usize) -> Vec<(Target, Vec<Target>)> {
    let fanout = fanout.max(1);
    if targets.len() <= fanout {
        return targets.into_iter().map(|t| (t, Vec::new())).collect();
    }
    let n = targets.len();
    let mut groups = Vec::with_capacity(fanout);
    for i in (0..fanout).rev() {
        let start = i * n / fanout;
        let mut group = targets.split_off(start);
        let head = group.remove(0);
        groups.push((head, group));
    }
    groups.reverse();
    groups
}

/// Runs `run` on every target; events go to `events` as they happen. `stdin` goes to every
/// node; each change of `signals` is sent to every running command.
pub async fn exec(
    run: Run,
    targets: Vec<Target>,
    stdin: Option<StdinReceiver>,
    signals: watch::Receiver<Option<i32>>,
    events: mpsc::UnboundedSender<Event>,
) {
    let n = targets.len();
    let (sink, mut frames) = mpsc::channel::<Frame>(1024);
    let tree = tokio::spawn(relay(Arc::new(run), targets, stdin, signals, sink));
    // Frames → lines and outcomes, per rank.
    let mut bufs: Vec<(LineBuf, LineBuf)> = (0..n).map(|_| Default::default()).collect();
    let mut done = vec![false; n];
    while let Some(f) = frames.recv().await {
        let rank = f.node;
        let Some((out, err)) = bufs.get_mut(rank as usize) else {
            continue; // not a node of this run
        };
        if done[rank as usize] {
            continue;
        }
        let outcome = match f.kind {
            Kind::Stdout | Kind::Stderr => {
                let (buf, stream) = if f.kind == Kind::Stdout {
                    (out, Stream::Stdout)
                } else {
                    (err, Stream::Stderr)
                };
                buf.push(&f.payload, |line| {
                    let _ = events.send(Event::Line {
                        rank,
                        stream,
                        line,
                        newline: true,
                    });
                });
                continue;
            }
            Kind::Exit => f
                .parse::<Exit>()
                .map(Outcome::Exited)
                .unwrap_or_else(|e| lost_outcome(e.to_string())),
            Kind::Error => f
                .parse::<Failure>()
                .map(Outcome::from_failure)
                .unwrap_or_else(|e| lost_outcome(e.to_string())),
            _ => continue,
        };
        for (buf, stream) in [(out, Stream::Stdout), (err, Stream::Stderr)] {
            if let Some(line) = buf.finish() {
                let _ = events.send(Event::Line {
                    rank,
                    stream,
                    line,
                    newline: false,
                });
            }
        }
        done[rank as usize] = true;
        let _ = events.send(Event::Done { rank, outcome });
    }
    let _ = tree.await;
    // The tree reports every node; this is a last guard against a bug there.
    for (rank, d) in done.iter().enumerate() {
        if !d {
            let _ = events.send(Event::Done {
                rank: rank as u32,
                outcome: lost_outcome("no result".into()),
            });
        }
    }
}

fn lost_outcome(message: String) -> Outcome {
    Outcome::Failed {
        stage: Stage::Lost,
        message,
    }
}

fn failure(rank: u32, kind: FailureKind, message: impl Into<String>) -> Frame {
    Frame::json(
        Kind::Error,
        rank,
        &Failure {
            kind,
            message: message.into(),
        },
    )
}

/// Runs `run` on `targets` and sends every frame about them to `sink`: the client's whole
/// run, or a relay's subtree. Returns when every target has ended (each with an exit or an
/// error frame).
pub async fn relay(
    run: Arc<Run>,
    targets: Vec<Target>,
    stdin: Option<StdinReceiver>,
    signals: watch::Receiver<Option<i32>>,
    sink: mpsc::Sender<Frame>,
) {
    let groups = plan(targets, run.fanout());
    // Each connection gets its own copy of stdin.
    let mut inputs: Vec<Option<StdinReceiver>> = Vec::with_capacity(groups.len());
    if let Some(mut rx) = stdin {
        let (txs, rxs): (Vec<_>, Vec<_>) = groups.iter().map(|_| mpsc::unbounded_channel()).unzip();
        inputs.extend(rxs.into_iter().map(Some));
        tokio::spawn(async move {
            while let Some(chunk) = rx.recv().await {
                for tx in &txs {
                    let _ = tx.send(chunk.clone());
                }
            }
        });
    } else {
        inputs.resize_with(groups.len(), || None);
    }
    let mut set = JoinSet::new();
    for ((head, rest), input) in groups.into_iter().zip(inputs) {
        set.spawn(session(
            run.clone(),
            head,
            rest,
            input,
            signals.clone(),
            sink.clone(),
        ));
    }
    while set.join_next().await.is_some() {}
}

/// A client connection to an agent.
pub type Tls = tokio_rustls::client::TlsStream<TcpStream>;

/// Why an agent could not be reached (the text is what the node's outcome says).
#[derive(Debug, thiserror::Error)]
pub enum ConnectError {
    #[error("{0:?} is not a DNS name, so no certificate can name it")]
    NotADnsName(String),
    #[error("{addr}: {error}")]
    Tcp { addr: String, error: std::io::Error },
    #[error("{addr}: TLS: {error}")]
    Tls { addr: String, error: std::io::Error },
    #[error("{addr}: no answer within {limit:?}")]
    Timeout { addr: String, limit: Duration },
}

/// Connects to an agent and completes the TLS handshake, within `limit`.
pub async fn connect(
    tls: Arc<rustls::ClientConfig>,
    t: &Target,
    limit: Duration,
) -> Result<Tls, ConnectError> {
    let name = ServerName::try_from(t.name.clone())
        .map_err(|_| ConnectError::NotADnsName(t.name.clone()))?;
    let addr = || t.addr.clone();
    let attempt = async {
        let tcp = TcpStream::connect(&t.addr)
            .await
            .map_err(|error| ConnectError::Tcp {
                addr: addr(),
                error,
            })?;
        let _ = tcp.set_nodelay(true);
        TlsConnector::from(tls)
            .connect(name, tcp)
            .await
            .map_err(|error| ConnectError::Tls {
                addr: addr(),
                error,
            })
    };
    timeout(limit, attempt)
        .await
        .map_err(|_| ConnectError::Timeout {
            addr: addr(),
            limit,
        })?
}

/// The TLS alert in a read error, if the peer sent one.
fn refusal(e: &std::io::Error) -> Option<String> {
    match e.get_ref()?.downcast_ref::<rustls::Error>()? {
        rustls::Error::AlertReceived(a) => Some(format!("{a:?}")),
        _ => None,
    }
}

/// One connection: to `head`, which runs the command and relays it to `rest`.
async fn session(
    run: Arc<Run>,
    head: Target,
    rest: Vec<Target>,
    stdin: Option<StdinReceiver>,
    signals: watch::Receiver<Option<i32>>,
    sink: mpsc::Sender<Frame>,
) {
    let Some((stream, head, rest)) = reach_group(&run, head, rest, &sink).await else {
        return;
    };
    let mut pending: HashSet<u32> = rest.iter().map(|t| t.rank).collect();
    pending.insert(head.rank);
    let req = Request::Exec(ExecRequest {
        rank: head.rank,
        subtree: rest,
        ..run.request.clone()
    });
    let (rd, mut wr) = tokio::io::split(stream);
    if let Err(e) = write_frames(&mut wr, &[Frame::json(Kind::Request, head.rank, &req)]).await {
        let why = format!("sending the request: {e}");
        report_rest(&sink, &head, &pending, FailureKind::Lost, &why).await;
        return;
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
    let feeder = tokio::spawn(feed(stdin, head.rank, tx.clone()));
    let mut rd = FrameReader::new(rd);
    let mut s = Session {
        head: &head,
        pending,
        sink: &sink,
        tx: &tx,
    };
    if let Some((kind, why)) = s.pass(&run, &mut rd, signals).await {
        report_rest(&sink, &head, &s.pending, kind, &why).await;
    }
    feeder.abort();
    drop(tx);
    writer.abort();
}

/// The group's first node that can be reached, and the rest it relays to; each node that
/// cannot be reached is reported, and the next of the group relays instead.
async fn reach_group(
    run: &Run,
    mut head: Target,
    mut rest: Vec<Target>,
    sink: &mpsc::Sender<Frame>,
) -> Option<(Tls, Target, Vec<Target>)> {
    loop {
        match connect(run.tls.clone(), &head, run.connect_timeout()).await {
            Ok(s) => return Some((s, head, rest)),
            Err(e) => {
                let _ = sink
                    .send(failure(head.rank, FailureKind::Connect, e.to_string()))
                    .await;
                if rest.is_empty() {
                    return None;
                }
                head = rest.remove(0);
            }
        }
    }
}

/// The nodes of a connection that have not ended, reported with `why` (via its head).
async fn report_rest(
    sink: &mpsc::Sender<Frame>,
    head: &Target,
    pending: &HashSet<u32>,
    kind: FailureKind,
    why: &str,
) {
    for &r in pending {
        let msg = if r == head.rank {
            why.to_string()
        } else {
            format!("via {}: {why}", head.name)
        };
        let _ = sink.send(failure(r, kind, msg)).await;
    }
}

/// The client's stdin to one connection, in frames, then its end.
async fn feed(stdin: Option<StdinReceiver>, rank: u32, tx: mpsc::UnboundedSender<Frame>) {
    let Some(mut input) = stdin else {
        return;
    };
    while let Some(chunk) = input.recv().await {
        for part in chunk.chunks(MAX_PAYLOAD) {
            if tx.send(Frame::new(Kind::Stdin, rank, part)).is_err() {
                return;
            }
        }
    }
    let _ = tx.send(Frame::new(Kind::StdinEnd, rank, Vec::new()));
}

/// A connection while its command runs: the nodes not ended yet, where their frames go, and
/// the writer's queue (for signals).
struct Session<'a> {
    head: &'a Target,
    pending: HashSet<u32>,
    sink: &'a mpsc::Sender<Frame>,
    tx: &'a mpsc::UnboundedSender<Frame>,
}

impl Session<'_> {
    /// Passes the agent's frames on until every node has ended; signals go the other way.
    /// `Some` when the connection ends first: how its remaining nodes fail.
    async fn pass<R: tokio::io::AsyncRead + Unpin>(
        &mut self,
        run: &Run,
        rd: &mut FrameReader<R>,
        mut signals: watch::Receiver<Option<i32>>,
    ) -> Option<(FailureKind, String)> {
        // The agents end the command at its timeout; past that (the kill grace, the relays'
        // connects and a margin) the rest of this connection's nodes are reported as gone
        // silent.
        let silence = run.request.timeout_ms.map(|ms| {
            tokio::time::Instant::now()
                + Duration::from_millis(ms)
                + KILL_GRACE
                + 4 * run.connect_timeout()
                + Duration::from_secs(5)
        });
        let far = tokio::time::Instant::now() + Duration::from_secs(86_400 * 365);
        let mut answered = false;
        loop {
            tokio::select! {
                f = rd.read() => {
                    let f = match f {
                        Ok(Some(f)) => f,
                        Ok(None) => return Some((FailureKind::Lost, "the connection closed before the command ended".into())),
                        Err(e) => return Some(self.broken(&e, answered)),
                    };
                    answered = true;
                    if let Err(ended) = self.forward(f).await {
                        return ended;
                    }
                }
                r = signals.changed() => {
                    if r.is_ok() {
                        if let Some(sig) = *signals.borrow_and_update() {
                            let _ = self.tx.send(Frame::new(Kind::Signal, self.head.rank, vec![sig as u8]));
                        }
                    }
                }
                _ = tokio::time::sleep_until(silence.unwrap_or(far)), if silence.is_some() => {
                    return Some((FailureKind::Lost, "no answer after the command's timeout".into()));
                }
            }
        }
    }

    /// A read that failed: TLS 1.3 checks the client's certificate after the client's
    /// handshake is done, so a refusal arrives as an alert on the first read.
    fn broken(&self, e: &std::io::Error, answered: bool) -> (FailureKind, String) {
        if e.kind() == std::io::ErrorKind::UnexpectedEof {
            return (
                FailureKind::Lost,
                "the connection broke before the command ended".into(),
            );
        }
        match refusal(e).filter(|_| !answered) {
            Some(alert) => (
                FailureKind::Connect,
                format!(
                    "{}: TLS: the agent refused this certificate ({alert})",
                    self.head.addr
                ),
            ),
            None => (FailureKind::Lost, e.to_string()),
        }
    }

    /// One frame from the agent to the sink. `Err(None)`: every node has ended (or the sink
    /// is gone); `Err(Some(..))`: the frame ends the connection.
    async fn forward(&mut self, f: Frame) -> Result<(), Option<(FailureKind, String)>> {
        if !self.pending.contains(&f.node) {
            let why = format!(
                "{} sent a frame about a node it does not serve",
                self.head.name
            );
            return Err(Some((FailureKind::Lost, why)));
        }
        if !matches!(
            f.kind,
            Kind::Stdout | Kind::Stderr | Kind::Exit | Kind::Error
        ) {
            let why = format!("unexpected {:?} frame", f.kind);
            return Err(Some((FailureKind::Lost, why)));
        }
        let last = matches!(f.kind, Kind::Exit | Kind::Error);
        let node = f.node;
        if self.sink.send(f).await.is_err() {
            return Err(None);
        }
        if last {
            self.pending.remove(&node);
            if self.pending.is_empty() {
                return Err(None);
            }
        }
        Ok(())
    }
}

/// [`connect`], its failure as a node's outcome.
pub(crate) async fn reach(
    tls: Arc<rustls::ClientConfig>,
    t: &Target,
    limit: Duration,
) -> Result<Tls, Outcome> {
    connect(tls, t, limit).await.map_err(|e| Outcome::Failed {
        stage: Stage::Connect,
        message: e.to_string(),
    })
}

/// A read that failed before the agent answered: a TLS alert there is the agent refusing this
/// certificate (TLS 1.3 checks it after the client's handshake is done).
pub(crate) fn unanswered(e: &std::io::Error, t: &Target) -> Outcome {
    match refusal(e) {
        Some(alert) => Outcome::Failed {
            stage: Stage::Connect,
            message: format!(
                "{}: TLS: the agent refused this certificate ({alert})",
                t.addr
            ),
        },
        None => lost_outcome(e.to_string()),
    }
}

/// An agent's error frame as a node's outcome.
pub(crate) fn error_outcome(f: &Frame) -> Outcome {
    f.parse::<Failure>()
        .map(Outcome::from_failure)
        .unwrap_or_else(|e| lost_outcome(e.to_string()))
}

/// Asks one agent who and how it is (any role may).
pub async fn ping(
    tls: Arc<rustls::ClientConfig>,
    t: &Target,
    limit: Duration,
) -> Result<Pong, Outcome> {
    let stream = reach(tls, t, limit).await?;
    let (rd, mut wr) = tokio::io::split(stream);
    write_frames(
        &mut wr,
        &[Frame::json(Kind::Request, t.rank, &Request::Ping)],
    )
    .await
    .map_err(|e| lost_outcome(e.to_string()))?;
    let mut rd = FrameReader::new(rd);
    let f = timeout(limit, rd.read())
        .await
        .map_err(|_| lost_outcome("no answer".into()))?
        .map_err(|e| unanswered(&e, t))?
        .ok_or_else(|| lost_outcome("the connection closed".into()))?;
    match f.kind {
        Kind::Pong => f.parse().map_err(|e| lost_outcome(e.to_string())),
        Kind::Error => Err(error_outcome(&f)),
        k => Err(lost_outcome(format!("unexpected {k:?} frame"))),
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

    fn targets(n: u32) -> Vec<Target> {
        (0..n)
            .map(|rank| Target {
                rank,
                name: format!("n{rank}"),
                addr: String::new(),
            })
            .collect()
    }

    #[test]
    fn the_plan_covers_every_node_once_with_fanout_connections() {
        assert_eq!(plan(targets(3), 8).len(), 3);
        for (n, k) in [(10, 3), (1000, 64), (65, 64), (256, 16), (7, 1)] {
            let groups = plan(targets(n), k);
            assert_eq!(groups.len(), k);
            let mut seen: Vec<u32> = groups
                .iter()
                .flat_map(|(h, r)| std::iter::once(h.rank).chain(r.iter().map(|t| t.rank)))
                .collect();
            seen.sort();
            assert_eq!(seen, (0..n).collect::<Vec<_>>());
            let sizes: Vec<usize> = groups.iter().map(|(_, r)| r.len() + 1).collect();
            assert!(
                sizes.iter().max().unwrap() - sizes.iter().min().unwrap() <= 1,
                "{sizes:?}"
            );
        }
    }
}
