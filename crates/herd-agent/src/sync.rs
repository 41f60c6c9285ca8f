//! `herd sync push` over the agent: the client sends its tree's manifest, the agent compares
//! it with the destination and asks for the files that differ, the client streams them in that
//! order, and the agent writes each to a temporary file renamed into place (herd-sync).
//!
//! ```text
//! client                              agent
//! Request{sync}  ─────────────────►   checks role (admin) and the destination path
//! Manifest* , Manifest("") ───────►   scans the destination, plans
//!                ◄─────────────────   Want* , Want("")        ("F path" whole, "D path" delta)
//!                ◄─────────────────   Signature* , Signature("") per "D" file (its old copy)
//! FileData* , FileData("") per file►  writes each file as it arrives; a delta file's data is
//!                                     its BLAKE3 (32 bytes) then the delta
//!                ◄─────────────────   SyncDone (or Error)
//! ```

use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use herd_sync::apply::{apply, Source};
use herd_sync::manifest::{scan, Entry, Manifest, ScanOptions};
use herd_sync::plan::{plan, Action, PlanOptions};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::sync::mpsc;

use crate::client::{error_outcome, reach, unanswered, Outcome, Stage, Target};
use crate::frame::{
    decode_header, encode_header, write_frames, Frame, FrameReader, Kind, HEADER, MAX_PAYLOAD,
};
use crate::proto::{Failure, PullRequest, Request, SyncDone, SyncRequest};

/// Splits newline-separated text into frames of at most `MAX_PAYLOAD` bytes (at line
/// boundaries), then an empty frame.
fn chunked(kind: Kind, rank: u32, text: &[u8]) -> Vec<Frame> {
    let mut frames = Vec::new();
    let mut rest = text;
    while !rest.is_empty() {
        let mut end = rest.len().min(MAX_PAYLOAD);
        if end < rest.len() {
            // Back to the last newline inside the limit (a longer line is cut: the reader
            // joins frames before splitting lines anyway).
            if let Some(nl) = rest[..end].iter().rposition(|&b| b == b'\n') {
                end = nl + 1;
            }
        }
        frames.push(Frame::new(kind, rank, &rest[..end]));
        rest = &rest[end..];
    }
    frames.push(Frame::new(kind, rank, Vec::new()));
    frames
}

/// Reads frames of `kind` up to the empty one; their payloads joined.
async fn read_chunked<R: AsyncRead + Unpin>(
    rd: &mut FrameReader<R>,
    kind: Kind,
    limit: usize,
) -> Result<Vec<u8>, String> {
    let mut all = Vec::new();
    loop {
        let f = rd
            .read()
            .await
            .map_err(|e| e.to_string())?
            .ok_or("the connection closed")?;
        if f.kind == Kind::Error {
            let why = f
                .parse::<Failure>()
                .map(|f| f.message)
                .unwrap_or_else(|e| e.to_string());
            return Err(why);
        }
        if f.kind != kind {
            return Err(format!("expected {kind:?}, got {:?}", f.kind));
        }
        if f.payload.is_empty() {
            return Ok(all);
        }
        if all.len() + f.payload.len() > limit {
            return Err(format!("more than {limit} bytes of {kind:?}"));
        }
        all.extend_from_slice(&f.payload);
    }
}

/// Bytes handed at a time from the connection to the thread writing files, and from the thread
/// reading files to the connection.
const CHUNK: usize = 256 << 10;

/// The largest manifest an agent takes (about 2 million entries).
pub const MAX_MANIFEST: usize = 512 << 20;

/// A manifest as JSON lines.
pub fn manifest_lines(m: &Manifest) -> Vec<u8> {
    let mut out = Vec::new();
    for e in &m.entries {
        // Plain data: serialising cannot fail.
        out.extend(serde_json::to_vec(e).unwrap_or_default());
        out.push(b'\n');
    }
    out
}

fn parse_manifest(lines: &[u8]) -> Result<Manifest, String> {
    let mut m = Manifest::default();
    for (i, line) in lines.split(|&b| b == b'\n').enumerate() {
        if line.is_empty() {
            continue;
        }
        let e: Entry =
            serde_json::from_slice(line).map_err(|e| format!("manifest line {}: {e}", i + 1))?;
        herd_sync::path::check(&e.path).map_err(|e| format!("manifest: {e}"))?;
        m.entries.push(e);
    }
    m.entries.sort_by(|a, b| a.path.cmp(&b.path));
    if m.entries
        .first()
        .is_none_or(|e| !e.path.is_empty() || !e.is_dir())
    {
        return Err("manifest: the root directory is missing".into());
    }
    Ok(m)
}

/// Removes the entries `patterns` exclude, and everything under an excluded directory.
fn drop_excluded(m: &mut Manifest, patterns: &[String]) {
    if patterns.is_empty() {
        return;
    }
    let mut gone: Vec<String> = Vec::new();
    m.entries.retain(|e| {
        if e.path.is_empty() {
            return true;
        }
        if gone.iter().any(|d| {
            e.path.starts_with(d.as_str()) && e.path.as_bytes().get(d.len()) == Some(&b'/')
        }) {
            return false;
        }
        let name = e.path.rsplit('/').next().unwrap_or(&e.path);
        if herd_sync::manifest::excluded(patterns, &e.path, name, e.is_dir()) {
            if e.is_dir() {
                gone.push(e.path.clone());
            }
            return false;
        }
        true
    });
}

/// The wanted files' frames as they come off the connection: byte chunks, as the TLS stream
/// yields them, parsed here, on the thread that writes the files, and each payload written
/// from where it lies. Files sent as deltas are rebuilt from the old copy under `dest`.
struct Streamed {
    rx: mpsc::Receiver<Vec<u8>>,
    cur: Vec<u8>,
    pos: usize,
    dest: PathBuf,
    /// Path → new size, for the files that come as deltas.
    deltas: std::collections::HashMap<String, u64>,
    /// Content bytes received.
    received: u64,
}

impl Streamed {
    /// Passes the next `n` bytes of the stream to `sink`, in the pieces they came in.
    fn take(
        &mut self,
        mut n: usize,
        sink: &mut dyn FnMut(&[u8]) -> io::Result<()>,
    ) -> io::Result<()> {
        while n > 0 {
            while self.pos == self.cur.len() {
                self.cur = self
                    .rx
                    .blocking_recv()
                    .ok_or_else(|| io::Error::other("the client went away mid-file"))?;
                self.pos = 0;
            }
            let k = n.min(self.cur.len() - self.pos);
            sink(&self.cur[self.pos..self.pos + k])?;
            self.pos += k;
            n -= k;
        }
        Ok(())
    }

    /// One file's frames, each payload to `sink`, up to the empty frame that ends the file.
    fn file(&mut self, sink: &mut dyn FnMut(&[u8]) -> io::Result<()>) -> io::Result<u64> {
        let mut total = 0u64;
        loop {
            let mut head = [0u8; HEADER];
            let mut at = 0;
            self.take(HEADER, &mut |b| {
                head[at..at + b.len()].copy_from_slice(b);
                at += b.len();
                Ok(())
            })?;
            let (kind, _, len) = decode_header(&head)?;
            if kind != Kind::FileData {
                return Err(io::Error::other(format!(
                    "expected file data, got {kind:?}"
                )));
            }
            if len == 0 {
                self.received += total;
                return Ok(total);
            }
            self.take(len, sink)?;
            total += len as u64;
        }
    }
}

impl Source for Streamed {
    fn copy_to(&mut self, rel: &str, out: &mut dyn Write) -> io::Result<u64> {
        let Some(&size) = self.deltas.get(rel) else {
            return self.file(&mut |b| out.write_all(b));
        };
        // The new content's hash, then the delta: literals can make it a little longer than
        // the file, never much.
        let limit = 32 + size + size / 16 + (64 << 10);
        let mut data = Vec::new();
        self.file(&mut |b| {
            if (data.len() + b.len()) as u64 > limit {
                return Err(io::Error::other("a delta longer than its file"));
            }
            data.extend_from_slice(b);
            Ok(())
        })?;
        let (hash, delta) = data
            .split_first_chunk::<32>()
            .ok_or_else(|| io::Error::other("a delta without its hash"))?;
        let old =
            std::fs::File::open(herd_sync::path::join(&self.dest, rel).map_err(io::Error::other)?)?;
        herd_sync::delta::patch(&old, delta, size, hash, out).map_err(io::Error::other)?;
        Ok(size)
    }
}

/// Reads what the stream has: waits for some bytes, then takes more while they are there at
/// once, up to about `want` (one hand-over to the writing thread per batch, not per record).
async fn read_some<R: AsyncRead + Unpin>(
    r: &mut R,
    buf: &mut Vec<u8>,
    want: usize,
) -> io::Result<usize> {
    let first = r.read_buf(buf).await?;
    if first == 0 {
        return Ok(0);
    }
    let mut cx = std::task::Context::from_waker(std::task::Waker::noop());
    while buf.len() < want {
        if buf.capacity() - buf.len() < 16 << 10 {
            buf.reserve(64 << 10);
        }
        let mut more = std::pin::pin!(r.read_buf(buf));
        match std::future::Future::poll(more.as_mut(), &mut cx) {
            std::task::Poll::Ready(Ok(n)) if n > 0 => {}
            std::task::Poll::Ready(Err(e)) => return Err(e),
            // The end of the stream (next read says so again), or nothing there yet.
            _ => break,
        }
    }
    Ok(buf.len())
}

fn describe(a: &Action) -> String {
    match a {
        Action::Remove { path, .. } => format!("remove {path}"),
        Action::Mkdir(e) => format!("mkdir {}", if e.path.is_empty() { "." } else { &e.path }),
        Action::Write { entry, basis } => {
            format!(
                "{} {}",
                if *basis { "update" } else { "create" },
                entry.path
            )
        }
        Action::Symlink(e) => format!("symlink {}", e.path),
        Action::Meta(e) => format!(
            "attributes {}",
            if e.path.is_empty() { "." } else { &e.path }
        ),
    }
}

/// The receiving side of one sync (an agent pushed to, or `herd sync pull`): reads the
/// sender's manifest, asks for what differs, writes it under `req.dest`, and answers (and
/// returns) what it did.
pub async fn receive<R, W>(
    req: &SyncRequest,
    rd: &mut FrameReader<R>,
    wr: &mut W,
) -> Result<SyncDone, String>
where
    R: AsyncRead + Unpin,
    W: AsyncWrite + Unpin,
{
    let dest = PathBuf::from(&req.dest);
    if !dest.is_absolute()
        || dest
            .components()
            .any(|c| matches!(c, std::path::Component::ParentDir))
    {
        return Err(format!(
            "{:?}: the destination must be an absolute path without '..'",
            req.dest
        ));
    }
    let mut src = parse_manifest(&read_chunked(rd, Kind::Manifest, MAX_MANIFEST).await?)?;
    // This side's excludes (a module's) hold whatever the sender's were.
    drop_excluded(&mut src, &req.exclude);
    let opts = ScanOptions {
        hash: req.checksum,
        exclude: req.exclude.clone(),
    };
    let (d, dry) = (dest.clone(), req.dry_run);
    let have = tokio::task::spawn_blocking(move || -> Result<Manifest, String> {
        if !d.exists() {
            if dry {
                return Ok(Manifest::default());
            }
            std::fs::create_dir_all(&d).map_err(|e| format!("{}: {e}", d.display()))?;
        }
        scan(&d, &opts)
    })
    .await
    .map_err(|e| e.to_string())??;
    let p = plan(
        &src,
        &have,
        PlanOptions {
            delete: req.delete,
            checksum: req.checksum,
        },
    );
    if req.dry_run {
        let done = SyncDone {
            changes: p.actions.iter().map(describe).collect(),
            ..SyncDone::default()
        };
        write_frames(wr, &[Frame::json(Kind::SyncDone, req.rank, &done)])
            .await
            .map_err(|e| e.to_string())?;
        let _ = wr.shutdown().await;
        return Ok(done);
    }
    // Whole, or as a delta against the old copy when both are big enough.
    let old_sizes: std::collections::HashMap<&str, u64> = have
        .entries
        .iter()
        .filter_map(|e| match e.kind {
            herd_sync::manifest::Kind::File { size, .. } => Some((e.path.as_str(), size)),
            _ => None,
        })
        .collect();
    let mut wants = Vec::new();
    let mut deltas = std::collections::HashMap::new();
    for a in &p.actions {
        if let Action::Write { entry, basis } = a {
            let size = match entry.kind {
                herd_sync::manifest::Kind::File { size, .. } => size,
                _ => 0,
            };
            let old = old_sizes.get(entry.path.as_str()).copied().unwrap_or(0);
            let delta = *basis && herd_sync::delta::worth_it(size, old);
            if delta {
                deltas.insert(entry.path.clone(), size);
            }
            wants.extend_from_slice(if delta { b"D " } else { b"F " });
            wants.extend_from_slice(entry.path.as_bytes());
            wants.push(b'\n');
        }
    }
    write_frames(wr, &chunked(Kind::Want, req.rank, &wants))
        .await
        .map_err(|e| e.to_string())?;
    for a in &p.actions {
        if let Action::Write { entry, .. } = a {
            if deltas.contains_key(&entry.path) {
                let basis = herd_sync::path::join(&dest, &entry.path)?;
                let sig = tokio::task::spawn_blocking(move || {
                    std::fs::File::open(&basis)
                        .and_then(|f| {
                            let len = f.metadata()?.len();
                            herd_sync::delta::signature(std::io::BufReader::new(f), len)
                        })
                        .map_err(|e| format!("{}: {e}", basis.display()))
                })
                .await
                .map_err(|e| e.to_string())??;
                write_frames(wr, &chunked(Kind::Signature, req.rank, &sig))
                    .await
                    .map_err(|e| e.to_string())?;
            }
        }
    }
    let (tx, rx) = mpsc::channel::<Vec<u8>>(8);
    let p = Arc::new(p);
    let applying = {
        let p = p.clone();
        let mut source = Streamed {
            rx,
            cur: Vec::new(),
            pos: 0,
            dest: dest.clone(),
            deltas,
            received: 0,
        };
        tokio::task::spawn_blocking(move || {
            apply(&p, &dest, &mut source).map(|stats| (stats, source.received))
        })
    };
    tokio::pin!(applying);
    // Hand the connection's bytes to the writing thread until it is done.
    let first = rd.take_buffered();
    let inner = rd.get_mut();
    let forward = async move {
        if !first.is_empty() && tx.send(first).await.is_err() {
            return;
        }
        loop {
            let mut chunk = Vec::with_capacity(CHUNK + (64 << 10));
            match read_some(inner, &mut chunk, CHUNK).await {
                Ok(n) if n > 0 => {}
                // The end of the stream, or a broken one: the writing thread sees it end.
                _ => return,
            }
            if tx.send(chunk).await.is_err() {
                return;
            }
        }
    };
    tokio::pin!(forward);
    let (stats, received) = tokio::select! {
        res = &mut applying => res,
        () = &mut forward => applying.await,
    }
    .map_err(|e| e.to_string())??;
    let done = SyncDone {
        written: stats.written,
        bytes: stats.bytes,
        received,
        removed: stats.removed,
        meta: stats.meta,
        refused: stats.refused,
        changes: Vec::new(),
    };
    write_frames(wr, &[Frame::json(Kind::SyncDone, req.rank, &done)])
        .await
        .map_err(|e| e.to_string())?;
    let _ = wr.shutdown().await;
    Ok(done)
}

/// Counters of a push to many nodes, for a progress line.
#[derive(Debug, Default)]
pub struct Progress {
    /// Content bytes the nodes asked for so far.
    pub planned: std::sync::atomic::AtomicU64,
    /// Content bytes sent.
    pub sent: std::sync::atomic::AtomicU64,
    /// Nodes finished (well or not).
    pub done: std::sync::atomic::AtomicU64,
}

/// How a push runs.
#[derive(Debug, Clone, Default)]
pub struct PushOptions {
    /// Connect timeout.
    pub limit: Duration,
    /// At most this many content bytes a second to each node (rsync's --bwlimit).
    pub bwlimit: Option<u64>,
    pub progress: Arc<Progress>,
    /// Deltas computed for one node, for the others with the same old copy.
    pub deltas: Arc<DeltaCache>,
}

/// (path, BLAKE3 of the node's signature) → the body sent for it (hash and delta).
pub type DeltaCache = std::sync::Mutex<
    std::collections::HashMap<
        (String, [u8; 32]),
        Arc<tokio::sync::OnceCell<Result<Arc<Vec<u8>>, String>>>,
    >,
>;

/// Keeps a connection's average rate under a limit.
struct Pace {
    rate: Option<u64>,
    start: tokio::time::Instant,
    sent: u64,
}

impl Pace {
    async fn sent(&mut self, n: usize, progress: &Progress) {
        self.sent += n as u64;
        progress
            .sent
            .fetch_add(n as u64, std::sync::atomic::Ordering::Relaxed);
        if let Some(rate) = self.rate.filter(|r| *r > 0) {
            let due = Duration::from_secs_f64(self.sent as f64 / rate as f64);
            tokio::time::sleep_until(self.start + due).await;
        }
    }
}

/// The client's side for one node: sends the manifest, then the files the node asks for.
pub async fn push(
    tls: Arc<rustls::ClientConfig>,
    t: &Target,
    req: SyncRequest,
    manifest: Arc<Vec<u8>>,
    src: &Path,
    opts: &PushOptions,
) -> Result<SyncDone, Outcome> {
    let res = push_one(tls, t, req, manifest, src, opts).await;
    opts.progress
        .done
        .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    res
}

async fn push_one(
    tls: Arc<rustls::ClientConfig>,
    t: &Target,
    req: SyncRequest,
    manifest: Arc<Vec<u8>>,
    src: &Path,
    opts: &PushOptions,
) -> Result<SyncDone, Outcome> {
    let limit = opts.limit;
    let lost = |m: String| Outcome::Failed {
        stage: Stage::Lost,
        message: m,
    };
    let stream = reach(tls, t, limit).await?;
    let (rd, mut wr) = tokio::io::split(stream);
    let mut rd = FrameReader::new(rd);
    write_frames(
        &mut wr,
        &[Frame::json(Kind::Request, t.rank, &Request::Sync(req))],
    )
    .await
    .map_err(|e| lost(e.to_string()))?;
    send(&mut rd, &mut wr, t.rank, &manifest, src, opts, &|e| {
        unanswered(e, t)
    })
    .await
}

/// `herd sync pull`: asks `t` for a module and makes `local.dest` (here) its copy.
pub async fn pull(
    tls: Arc<rustls::ClientConfig>,
    t: &Target,
    req: PullRequest,
    local: SyncRequest,
    limit: Duration,
) -> Result<SyncDone, Outcome> {
    let stream = reach(tls, t, limit).await?;
    let (rd, mut wr) = tokio::io::split(stream);
    let mut rd = FrameReader::new(rd);
    write_frames(
        &mut wr,
        &[Frame::json(Kind::Request, 0, &Request::Pull(req))],
    )
    .await
    .map_err(|e| Outcome::Failed {
        stage: Stage::Lost,
        message: e.to_string(),
    })?;
    receive(&local, &mut rd, &mut wr)
        .await
        .map_err(|message| Outcome::Failed {
            stage: Stage::Agent,
            message,
        })
}

/// The sending side of one sync (`herd sync push` to a node, or an agent serving a pull):
/// sends the manifest, then what the receiver asks for, and returns what the receiver did.
/// `unanswered` says what an error reading the receiver's first answer means.
pub async fn send<R, W>(
    rd: &mut FrameReader<R>,
    wr: &mut W,
    rank: u32,
    manifest: &[u8],
    src: &Path,
    opts: &PushOptions,
    unanswered: &(dyn Fn(&io::Error) -> Outcome + Sync),
) -> Result<SyncDone, Outcome>
where
    R: AsyncRead + Unpin,
    W: AsyncWrite + Unpin,
{
    let lost = |m: String| Outcome::Failed {
        stage: Stage::Lost,
        message: m,
    };
    write_frames(wr, &chunked(Kind::Manifest, rank, manifest))
        .await
        .map_err(|e| lost(e.to_string()))?;
    let first = rd
        .read()
        .await
        .map_err(|e| unanswered(&e))?
        .ok_or_else(|| lost("the connection closed".into()))?;
    let wants = match first.kind {
        Kind::SyncDone => return first.parse().map_err(|e| lost(e.to_string())),
        Kind::Error => return Err(error_outcome(&first)),
        Kind::Want => {
            let mut all = first.payload.clone();
            if !first.payload.is_empty() {
                all.extend(
                    read_chunked(rd, Kind::Want, MAX_MANIFEST)
                        .await
                        .map_err(lost)?,
                );
            }
            all
        }
        k => return Err(lost(format!("unexpected {k:?} frame"))),
    };
    let wants: Vec<(bool, String)> = wants
        .split(|&b| b == b'\n')
        .filter(|l| !l.is_empty())
        .map(|l| {
            let l = String::from_utf8_lossy(l);
            match l.split_once(' ') {
                Some(("D", p)) => Ok((true, p.to_string())),
                Some(("F", p)) => Ok((false, p.to_string())),
                _ => Err(lost(format!("a bad want line {l:?}"))),
            }
        })
        .collect::<Result<_, _>>()?;
    let mut signatures = Vec::new();
    for _ in wants.iter().filter(|(d, _)| *d) {
        signatures.push(
            read_chunked(rd, Kind::Signature, 64 << 20)
                .await
                .map_err(lost)?,
        );
    }
    for (_, rel) in &wants {
        if let Ok(m) = herd_sync::path::join(src, rel).map(std::fs::metadata) {
            let size = m.map(|m| m.len()).unwrap_or(0);
            opts.progress
                .planned
                .fetch_add(size, std::sync::atomic::Ordering::Relaxed);
        }
    }
    // Deltas first (nodes with the same old copy share one), then the files, framed in
    // batches on a blocking thread and written here.
    let mut jobs = tokio::task::JoinSet::new();
    for ((_, rel), sig) in wants.iter().filter(|(d, _)| *d).zip(signatures) {
        let p = herd_sync::path::join(src, rel).map_err(lost)?;
        let (cache, rel) = (opts.deltas.clone(), rel.clone());
        jobs.spawn(async move {
            let body = delta_body(&cache, &rel, p, sig).await;
            (rel, body)
        });
    }
    let mut bodies = std::collections::HashMap::new();
    while let Some(done) = jobs.join_next().await {
        let (rel, body) = done.map_err(|e| lost(e.to_string()))?;
        bodies.insert(rel, body.map_err(lost)?);
    }
    let mut pace = Pace {
        rate: opts.bwlimit,
        start: tokio::time::Instant::now(),
        sent: 0,
    };
    // With a rate limit, small batches: the pace is kept at a finer grain.
    let batch = opts
        .bwlimit
        .map_or(CHUNK, |r| (r / 20).clamp(4096, CHUNK as u64) as usize);
    let (btx, mut brx) = mpsc::channel::<(Vec<u8>, u64)>(4);
    let producing = {
        let src = src.to_path_buf();
        tokio::task::spawn_blocking(move || frame_files(&src, &wants, &bodies, rank, batch, &btx))
    };
    while let Some((bytes, payload)) = brx.recv().await {
        if let Err(e) = wr.write_all(&bytes).await {
            return Err(why_stopped(rd, e).await);
        }
        pace.sent(payload as usize, &opts.progress).await;
    }
    if let Err(e) = wr.flush().await {
        return Err(why_stopped(rd, e).await);
    }
    producing
        .await
        .map_err(|e| lost(e.to_string()))?
        .map_err(lost)?;
    let f = rd
        .read()
        .await
        .map_err(|e| lost(e.to_string()))?
        .ok_or_else(|| lost("the connection closed before the sync ended".into()))?;
    match f.kind {
        Kind::SyncDone => f.parse().map_err(|e| lost(e.to_string())),
        Kind::Error => Err(error_outcome(&f)),
        k => Err(lost(format!("unexpected {k:?} frame"))),
    }
}

/// The body sent for a file wanted as a delta (its BLAKE3, then the delta), computed once for
/// all the nodes whose old copies have the same signature; a node's deltas are computed at
/// once, one per core.
async fn delta_body(
    cache: &DeltaCache,
    rel: &str,
    p: PathBuf,
    sig: Vec<u8>,
) -> Result<Arc<Vec<u8>>, String> {
    let key = (rel.to_string(), *blake3::hash(&sig).as_bytes());
    let cell = cache
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .entry(key)
        .or_default()
        .clone();
    cell.get_or_init(|| async {
        // As many at once as there are cores (each holds its new file in memory).
        static AT_ONCE: std::sync::OnceLock<tokio::sync::Semaphore> = std::sync::OnceLock::new();
        let _turn = AT_ONCE
            .get_or_init(|| {
                tokio::sync::Semaphore::new(
                    std::thread::available_parallelism().map_or(2, |n| n.get()),
                )
            })
            .acquire()
            .await
            .map_err(|e| e.to_string())?;
        tokio::task::spawn_blocking(move || {
            let data = std::fs::read(&p).map_err(|e| format!("{}: {e}", p.display()))?;
            herd_sync::delta::delta(sig, &data).map(|d| {
                let mut body = blake3::hash(&data).as_bytes().to_vec();
                body.extend_from_slice(&d);
                Arc::new(body)
            })
        })
        .await
        .map_err(|e| e.to_string())?
    })
    .await
    .clone()
}

/// The wanted files as FileData frames (each file's content, then an empty frame), in batches
/// of about `batch` bytes with the content bytes each holds, read straight into the batch.
fn frame_files(
    src: &Path,
    wants: &[(bool, String)],
    bodies: &std::collections::HashMap<String, Arc<Vec<u8>>>,
    rank: u32,
    batch: usize,
    tx: &mpsc::Sender<(Vec<u8>, u64)>,
) -> Result<(), String> {
    let frame_max = batch.min(MAX_PAYLOAD);
    let fresh = || Vec::with_capacity(batch + frame_max + 2 * HEADER);
    let mut out = fresh();
    let mut payload = 0u64;
    for (is_delta, rel) in wants {
        if *is_delta {
            let body = bodies
                .get(rel)
                .ok_or_else(|| format!("{rel}: no delta computed"))?;
            for c in body.chunks(frame_max) {
                encode_header(Kind::FileData, rank, c.len(), &mut out);
                out.extend_from_slice(c);
                payload += c.len() as u64;
                if out.len() >= batch {
                    if tx
                        .blocking_send((std::mem::replace(&mut out, fresh()), payload))
                        .is_err()
                    {
                        return Ok(());
                    }
                    payload = 0;
                }
            }
            encode_header(Kind::FileData, rank, 0, &mut out);
            continue;
        }
        let p = herd_sync::path::join(src, rel)?;
        let mut f = std::fs::File::open(&p).map_err(|e| format!("{}: {e}", p.display()))?;
        loop {
            let at = out.len();
            encode_header(Kind::FileData, rank, 0, &mut out);
            let n = (&mut f)
                .take(frame_max as u64)
                .read_to_end(&mut out)
                .map_err(|e| format!("{}: {e}", p.display()))?;
            out[at..at + 4].copy_from_slice(&((5 + n) as u32).to_be_bytes());
            payload += n as u64;
            if n > 0 && n < frame_max {
                // The end of the file: its empty frame now, not after another read.
                encode_header(Kind::FileData, rank, 0, &mut out);
            }
            if out.len() >= batch {
                if tx
                    .blocking_send((std::mem::replace(&mut out, fresh()), payload))
                    .is_err()
                {
                    return Ok(());
                }
                payload = 0;
            }
            if n < frame_max {
                break;
            }
        }
    }
    if !out.is_empty() {
        let _ = tx.blocking_send((out, payload));
    }
    Ok(())
}

/// The agent stopped reading: its error frame says why (a full disk, ...), if it sent one.
async fn why_stopped<R: AsyncRead + Unpin>(rd: &mut FrameReader<R>, e: std::io::Error) -> Outcome {
    let said = tokio::time::timeout(Duration::from_secs(5), async {
        loop {
            match rd.read().await {
                Ok(Some(f)) if f.kind == Kind::Error => return f.parse::<Failure>().ok(),
                Ok(Some(_)) => continue,
                _ => return None,
            }
        }
    })
    .await
    .ok()
    .flatten();
    match said {
        Some(f) => Outcome::Failed {
            stage: Stage::Agent,
            message: f.message,
        },
        None => Outcome::Failed {
            stage: Stage::Lost,
            message: e.to_string(),
        },
    }
}
