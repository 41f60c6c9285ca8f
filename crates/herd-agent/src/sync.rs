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

use std::io::Read;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use herd_sync::apply::{apply, Source};
use herd_sync::manifest::{scan, Entry, Manifest, ScanOptions};
use herd_sync::plan::{plan, Action, PlanOptions};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::sync::mpsc;

use crate::client::{error_outcome, reach, unanswered, Outcome, Stage, Target};
use crate::frame::{write_frames, Frame, FrameReader, Kind, MAX_PAYLOAD};
use crate::proto::{Failure, Request, SyncDone, SyncRequest};

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

/// Content of the wanted files, as the client streams it (read on the blocking thread that
/// applies the plan). Files sent as deltas are rebuilt from the old copy under `dest`.
struct Streamed {
    rx: mpsc::Receiver<Vec<u8>>,
    dest: PathBuf,
    /// Path → new size, for the files that come as deltas.
    deltas: std::collections::HashMap<String, u64>,
}

impl Source for Streamed {
    fn open(&mut self, rel: &str) -> std::io::Result<Box<dyn Read + '_>> {
        let mut stream = FileStream {
            rx: &mut self.rx,
            cur: Vec::new(),
            pos: 0,
            done: false,
        };
        let Some(&size) = self.deltas.get(rel) else {
            return Ok(Box::new(stream));
        };
        let mut data = Vec::new();
        stream.read_to_end(&mut data)?;
        let (hash, delta) = data
            .split_first_chunk::<32>()
            .ok_or_else(|| std::io::Error::other("a delta without its hash"))?;
        let basis =
            std::fs::read(herd_sync::path::join(&self.dest, rel).map_err(std::io::Error::other)?)?;
        let new =
            herd_sync::delta::patch(&basis, delta, size, hash).map_err(std::io::Error::other)?;
        Ok(Box::new(std::io::Cursor::new(new)))
    }
}

struct FileStream<'a> {
    rx: &'a mut mpsc::Receiver<Vec<u8>>,
    cur: Vec<u8>,
    pos: usize,
    done: bool,
}

impl Read for FileStream<'_> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        while self.pos == self.cur.len() {
            if self.done {
                return Ok(0);
            }
            match self.rx.blocking_recv() {
                Some(c) if c.is_empty() => {
                    self.done = true;
                    return Ok(0);
                }
                Some(c) => {
                    self.cur = c;
                    self.pos = 0;
                }
                None => return Err(std::io::Error::other("the client went away mid-file")),
            }
        }
        let n = buf.len().min(self.cur.len() - self.pos);
        buf[..n].copy_from_slice(&self.cur[self.pos..self.pos + n]);
        self.pos += n;
        Ok(n)
    }
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

/// The agent's side of one sync.
pub async fn serve<R, W>(
    req: &SyncRequest,
    rd: &mut FrameReader<R>,
    wr: &mut W,
) -> Result<(), String>
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
    let src = parse_manifest(&read_chunked(rd, Kind::Manifest, MAX_MANIFEST).await?)?;
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
        return Ok(());
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
                    std::fs::read(&basis)
                        .map(|b| herd_sync::delta::signature(&b))
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
    let files = p
        .actions
        .iter()
        .filter(|a| matches!(a, Action::Write { .. }))
        .count();
    let (tx, rx) = mpsc::channel::<Vec<u8>>(64);
    let p = Arc::new(p);
    let applying = {
        let p = p.clone();
        let mut source = Streamed {
            rx,
            dest: dest.clone(),
            deltas,
        };
        tokio::task::spawn_blocking(move || apply(&p, &dest, &mut source))
    };
    tokio::pin!(applying);
    // Forward the files' frames to the writer until every wanted file has ended.
    let mut ended = 0;
    let mut received = 0u64;
    let mut tx = Some(tx);
    let stats = loop {
        tokio::select! {
            res = &mut applying => break res.map_err(|e| e.to_string())?,
            f = rd.read(), if ended < files => {
                let f = f.map_err(|e| e.to_string())?.ok_or("the client went away")?;
                if f.kind != Kind::FileData {
                    return Err(format!("expected file data, got {:?}", f.kind));
                }
                if f.payload.is_empty() {
                    ended += 1;
                }
                received += f.payload.len() as u64;
                if let Some(t) = &tx {
                    if t.send(f.payload).await.is_err() {
                        tx = None;
                    }
                }
            }
        }
    }?;
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
    Ok(())
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
#[derive(Debug, Clone)]
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
    let mut frames = vec![Frame::json(Kind::Request, t.rank, &Request::Sync(req))];
    frames.extend(chunked(Kind::Manifest, t.rank, &manifest));
    write_frames(&mut wr, &frames)
        .await
        .map_err(|e| lost(e.to_string()))?;
    let first = rd
        .read()
        .await
        .map_err(|e| unanswered(&e, t))?
        .ok_or_else(|| lost("the connection closed".into()))?;
    let wants = match first.kind {
        Kind::SyncDone => return first.parse().map_err(|e| lost(e.to_string())),
        Kind::Error => return Err(error_outcome(&first)),
        Kind::Want => {
            let mut all = first.payload.clone();
            if !first.payload.is_empty() {
                all.extend(
                    read_chunked(&mut rd, Kind::Want, MAX_MANIFEST)
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
    let mut signatures = std::collections::VecDeque::new();
    for _ in wants.iter().filter(|(d, _)| *d) {
        signatures.push_back(
            read_chunked(&mut rd, Kind::Signature, 64 << 20)
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
    let mut pace = Pace {
        rate: opts.bwlimit,
        start: tokio::time::Instant::now(),
        sent: 0,
    };
    let mut buf = vec![0u8; 256 * 1024];
    for (is_delta, rel) in wants {
        let p = herd_sync::path::join(src, &rel).map_err(lost)?;
        if is_delta {
            let sig = signatures.pop_front().unwrap_or_default();
            // Nodes with the same old copy send the same signature: one delta serves them all.
            let key = (rel.clone(), *blake3::hash(&sig).as_bytes());
            let cell = opts
                .deltas
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .entry(key)
                .or_default()
                .clone();
            let body = cell
                .get_or_init(|| async {
                    let data = tokio::fs::read(&p)
                        .await
                        .map_err(|e| format!("{}: {e}", p.display()))?;
                    tokio::task::spawn_blocking(move || {
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
                .map_err(lost)?;
            let mut frames: Vec<Frame> = body
                .chunks(MAX_PAYLOAD)
                .map(|c| Frame::new(Kind::FileData, t.rank, c))
                .collect();
            frames.push(Frame::new(Kind::FileData, t.rank, Vec::new()));
            for chunk in frames.chunks(4) {
                if let Err(e) = write_frames(&mut wr, chunk).await {
                    return Err(why_stopped(&mut rd, e).await);
                }
                pace.sent(chunk.iter().map(|f| f.payload.len()).sum(), &opts.progress)
                    .await;
            }
            continue;
        }
        let mut f = tokio::fs::File::open(&p)
            .await
            .map_err(|e| lost(format!("{}: {e}", p.display())))?;
        loop {
            let n = f
                .read(&mut buf)
                .await
                .map_err(|e| lost(format!("{}: {e}", p.display())))?;
            let frame = Frame::new(Kind::FileData, t.rank, &buf[..n]);
            if let Err(e) = write_frames(&mut wr, &[frame]).await {
                return Err(why_stopped(&mut rd, e).await);
            }
            pace.sent(n, &opts.progress).await;
            if n == 0 {
                break;
            }
        }
    }
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
