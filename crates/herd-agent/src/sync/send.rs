//! The sending side: `herd sync push` to nodes (directly, or through the agent tree), and an
//! agent serving `herd sync pull`.
//!
//! Each connection ("link") reaches a group of nodes: its head, and the subtree the head
//! relays to. The sender gives the link the manifest, reads every node's wants (tagged with
//! the node's rank), and sends the union of what they want once: each file whole if any node
//! wants it whole, and one delta per distinct old copy (signature). Relays pass each file on
//! to the nodes that want it in that form.

use std::collections::{BTreeMap, HashMap};
use std::io::Read;
use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt};
use tokio::sync::mpsc;

use super::{chunked, file_start, receive, within, CHUNK};
use crate::client::{error_outcome, plan, reach, unanswered, Outcome, Stage, Target};
use crate::frame::{encode_header, write_frames, Frame, FrameReader, Kind, HEADER, MAX_PAYLOAD};
use crate::proto::{PullRequest, Request, SyncDone, SyncRequest};

/// Counters of a push to many nodes, for a progress line.
#[derive(Debug, Default)]
pub struct Progress {
    /// Content bytes the nodes asked for so far (once per connection).
    pub planned: std::sync::atomic::AtomicU64,
    /// Content bytes sent.
    pub sent: std::sync::atomic::AtomicU64,
    /// Nodes finished (well or not).
    pub done: std::sync::atomic::AtomicU64,
    /// Files to send (once per connection), and sent.
    pub files: std::sync::atomic::AtomicU64,
    pub files_sent: std::sync::atomic::AtomicU64,
}

/// How a push runs.
#[derive(Debug, Clone, Default)]
pub struct PushOptions {
    /// Connect timeout.
    pub limit: Duration,
    /// At most this many content bytes a second on each connection (rsync's --bwlimit).
    pub bwlimit: Option<u64>,
    pub progress: Arc<Progress>,
    /// Deltas computed once, for every node with the same old copy.
    pub deltas: Arc<DeltaCache>,
    /// Content compressed with zstd on the wire (rsync's -z).
    pub compress: bool,
}

/// (path, BLAKE3 of the node's signature) → the body sent for it (hash and delta).
pub type DeltaCache = std::sync::Mutex<
    HashMap<(String, [u8; 32]), Arc<tokio::sync::OnceCell<Result<Arc<Vec<u8>>, String>>>>,
>;

/// The regular files of a manifest, with their sizes: all a sender sends.
pub type Files = HashMap<String, u64>;

/// What a sender sends from: the tree's root, its manifest (as sent), and its regular files.
#[derive(Debug, Clone)]
pub struct Tree {
    pub root: PathBuf,
    pub lines: Arc<Vec<u8>>,
    pub files: Arc<Files>,
}

impl Tree {
    pub fn new(root: &Path, m: &herd_sync::manifest::Manifest) -> Tree {
        let files = m
            .entries
            .iter()
            .filter_map(|e| match e.kind {
                herd_sync::manifest::Kind::File { size, .. } => Some((e.path.clone(), size)),
                _ => None,
            })
            .collect();
        Tree {
            root: root.to_path_buf(),
            lines: Arc::new(super::manifest_lines(m)),
            files: Arc::new(files),
        }
    }
}

/// What each node of a push ended with, by rank.
pub type Results = Vec<(u32, Result<SyncDone, Outcome>)>;

/// Keeps a connection's average rate under a limit.
struct Pace {
    rate: Option<u64>,
    start: tokio::time::Instant,
    sent: u64,
}

impl Pace {
    async fn sent(&mut self, n: u64, progress: &Progress) {
        self.sent += n;
        progress.sent.fetch_add(n, Relaxed);
        if let Some(rate) = self.rate.filter(|r| *r > 0) {
            let due = Duration::from_secs_f64(self.sent as f64 / rate as f64);
            tokio::time::sleep_until(self.start + due).await;
        }
    }
}

/// A node's answer to the manifest, as its frames come: the paths it wants ("F" whole, "D"
/// as a delta), then one signature per delta.
#[derive(Debug, Default)]
pub(super) struct Wants {
    text: Vec<u8>,
    /// Parsed once the list has ended: (delta?, path).
    pub list: Option<Vec<(bool, String)>>,
    pub signatures: Vec<Vec<u8>>,
    cur: Vec<u8>,
}

impl Wants {
    /// Takes a Want or Signature frame; true once the node's wants are complete.
    pub(super) fn take(&mut self, f: &Frame) -> Result<bool, String> {
        match (f.kind, &self.list) {
            (Kind::Want, None) if f.payload.is_empty() => {
                let list = self
                    .text
                    .split(|&b| b == b'\n')
                    .filter(|l| !l.is_empty())
                    .map(|l| {
                        let l = String::from_utf8_lossy(l);
                        match l.split_once(' ') {
                            Some(("D", p)) => Ok((true, p.to_string())),
                            Some(("F", p)) => Ok((false, p.to_string())),
                            _ => Err(format!("a bad want line {l:?}")),
                        }
                    })
                    .collect::<Result<Vec<_>, _>>()?;
                self.text = Vec::new();
                self.list = Some(list);
            }
            (Kind::Want, None) => {
                if self.text.len() + f.payload.len() > super::MAX_MANIFEST {
                    return Err("too long a list of wants".into());
                }
                self.text.extend_from_slice(&f.payload);
            }
            (Kind::Signature, Some(list)) if f.payload.is_empty() => {
                if self.signatures.len() >= list.iter().filter(|(d, _)| *d).count() {
                    return Err("more signatures than files wanted as deltas".into());
                }
                self.signatures.push(std::mem::take(&mut self.cur));
            }
            (Kind::Signature, Some(_)) => {
                if self.cur.len() + f.payload.len() > 64 << 20 {
                    return Err("too long a signature".into());
                }
                self.cur.extend_from_slice(&f.payload);
            }
            (k, _) => return Err(format!("unexpected {k:?} frame")),
        }
        Ok(self.complete())
    }

    pub fn complete(&self) -> bool {
        self.list
            .as_ref()
            .is_some_and(|l| l.iter().filter(|(d, _)| *d).count() == self.signatures.len())
    }

    /// The forms known so far, past `seen` (what an earlier call returned): each file wanted
    /// whole once the list is in, and each delta once its signature is (path, BLAKE3 of the
    /// signature). Returns the new `seen`.
    pub fn known_since(
        &self,
        seen: (bool, usize),
        mut each: impl FnMut(&str, Option<[u8; 32]>),
    ) -> (bool, usize) {
        let Some(list) = &self.list else {
            return seen;
        };
        if !seen.0 {
            for (_, path) in list.iter().filter(|(d, _)| !*d) {
                each(path, None);
            }
        }
        let deltas = list.iter().filter(|(d, _)| *d).map(|(_, p)| p);
        for (path, sig) in deltas.zip(&self.signatures).skip(seen.1) {
            each(path, Some(*blake3::hash(sig).as_bytes()));
        }
        (true, self.signatures.len())
    }
}

/// `herd sync push`: the nodes of `targets`, directly up to `fanout`, beyond through the
/// agent tree (the request must then carry the admin's grant). Unreachable group heads are
/// replaced by the next node of their group.
pub async fn push(
    tls: Arc<rustls::ClientConfig>,
    targets: Vec<Target>,
    fanout: usize,
    req: SyncRequest,
    tree: Tree,
    opts: PushOptions,
) -> Results {
    let mut groups = tokio::task::JoinSet::new();
    for (head, sub) in plan(targets, fanout) {
        let (tls, req, tree, opts) = (tls.clone(), req.clone(), tree.clone(), opts.clone());
        let fanout = fanout as u32;
        groups.spawn(async move {
            let mut out = Vec::new();
            let mut group = std::iter::once(head).chain(sub).collect::<Vec<_>>();
            while !group.is_empty() {
                let head = group.remove(0);
                let stream = match reach(tls.clone(), &head, opts.limit).await {
                    Ok(s) => s,
                    Err(o) => {
                        opts.progress.done.fetch_add(1, Relaxed);
                        out.push((head.rank, Err(o)));
                        continue;
                    }
                };
                let (rd, mut wr) = tokio::io::split(stream);
                let rd = FrameReader::new(rd);
                let r = SyncRequest {
                    rank: head.rank,
                    subtree: std::mem::take(&mut group),
                    fanout,
                    ..req.clone()
                };
                let mut ranks = vec![head.rank];
                ranks.extend(r.subtree.iter().map(|t| t.rank));
                let sent = write_frames(
                    &mut wr,
                    &[Frame::json(Kind::Request, head.rank, &Request::Sync(r))],
                )
                .await;
                if let Err(e) = sent {
                    out.extend(lost_all(&ranks, &e.to_string(), &opts));
                    continue;
                }
                out.extend(send_link(rd, &mut wr, &head, ranks, &tree, &opts).await);
            }
            out
        });
    }
    let mut out = Vec::new();
    while let Some(res) = groups.join_next().await {
        // A task that panicked has lost its nodes' results; the caller reports them.
        out.extend(res.unwrap_or_default());
    }
    out
}

fn lost_all(ranks: &[u32], why: &str, opts: &PushOptions) -> Results {
    opts.progress.done.fetch_add(ranks.len() as u64, Relaxed);
    ranks
        .iter()
        .map(|r| {
            (
                *r,
                Err(Outcome::Failed {
                    stage: Stage::Lost,
                    message: why.to_string(),
                }),
            )
        })
        .collect()
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
    receive(&local, &mut rd, &mut wr, None)
        .await
        .map_err(|e| Outcome::Failed {
            stage: Stage::Agent,
            message: e.to_string(),
        })
}

/// The delta bodies for one path, one per distinct old copy, once every node of the link
/// that wants the path as a delta has sent its signature.
type Bodies = Vec<([u8; 32], Arc<Vec<u8>>)>;

/// What the link sends, in path order: a file whole, or its deltas when they are ready.
enum Item {
    Whole(String),
    Deltas(
        String,
        tokio::sync::oneshot::Receiver<Result<Bodies, String>>,
    ),
}

/// A path some nodes want as a delta: the signatures still to come, the distinct ones so far,
/// and where the bodies go when all are in.
struct Slot {
    expected: usize,
    sigs: Vec<([u8; 32], Vec<u8>)>,
    tx: Option<tokio::sync::oneshot::Sender<Result<Bodies, String>>>,
}

/// The link's pipeline of deltas: nodes send signatures while files already flow, and each
/// path's deltas are made as soon as its last signature is in.
struct Deltas {
    slots: HashMap<String, Slot>,
    /// Per rank: its paths wanted as deltas, and how many of its signatures are accounted.
    owed: HashMap<u32, (Vec<String>, usize)>,
    src: PathBuf,
    opts: PushOptions,
}

impl Deltas {
    /// Accounts the signatures `w` holds for `rank` (or, when the node has ended, the ones it
    /// will never send).
    fn settle(&mut self, rank: u32, w: Option<&Wants>) {
        let Some((paths, used)) = self.owed.get_mut(&rank) else {
            return;
        };
        let upto = w.map_or(paths.len(), |w| w.signatures.len().min(paths.len()));
        while *used < upto {
            let path = paths[*used].clone();
            let sig = w.and_then(|w| w.signatures.get(*used)).cloned();
            *used += 1;
            let Some(slot) = self.slots.get_mut(&path) else {
                continue;
            };
            if let Some(sig) = sig {
                let h = *blake3::hash(&sig).as_bytes();
                if !slot.sigs.iter().any(|(x, _)| *x == h) {
                    slot.sigs.push((h, sig));
                }
            }
            slot.expected = slot.expected.saturating_sub(1);
            if slot.expected == 0 {
                if let Some(tx) = slot.tx.take() {
                    let sigs = std::mem::take(&mut slot.sigs);
                    fire(&self.src, &self.opts, path, sigs, tx);
                }
            }
        }
    }
}

/// Makes a path's deltas (at once, one per core at most, shared through the cache).
fn fire(
    src: &Path,
    opts: &PushOptions,
    path: String,
    sigs: Vec<([u8; 32], Vec<u8>)>,
    tx: tokio::sync::oneshot::Sender<Result<Bodies, String>>,
) {
    let (src, opts) = (src.to_path_buf(), opts.clone());
    tokio::spawn(async move {
        let res = async {
            let mut jobs = tokio::task::JoinSet::new();
            for (h, sig) in sigs {
                let (cache, path, root) = (opts.deltas.clone(), path.clone(), src.clone());
                jobs.spawn(async move { (h, delta_body(&cache, &path, root, sig).await) });
            }
            let mut bodies = Vec::new();
            while let Some(done) = jobs.join_next().await {
                let (h, body) = done.map_err(|e| e.to_string())?;
                let body = body?;
                opts.progress.planned.fetch_add(body.len() as u64, Relaxed);
                bodies.push((h, body));
            }
            bodies.sort_by_key(|(h, _)| *h);
            Ok(bodies)
        }
        .await;
        let _ = tx.send(res);
    });
}

/// Each node's result so far, by rank.
type Done = HashMap<u32, Result<SyncDone, Outcome>>;

fn lost(message: impl Into<String>) -> Outcome {
    Outcome::Failed {
        stage: Stage::Lost,
        message: message.into(),
    }
}

/// One link: the manifest to its head, the wants of each of its nodes (`ranks`), the union
/// of the files they want, then each node's answer.
pub async fn send_link<R, W>(
    mut rd: FrameReader<R>,
    wr: &mut W,
    head: &Target,
    ranks: Vec<u32>,
    tree: &Tree,
    opts: &PushOptions,
) -> Results
where
    R: AsyncRead + Unpin + Send + 'static,
    W: AsyncWrite + Unpin,
{
    let manifest = chunked(Kind::Manifest, head.rank, &tree.lines);
    if let Err(e) = within("the nodes", write_frames(wr, &manifest)).await {
        return lost_all(&ranks, &e.to_string(), opts);
    }
    let mut done = Done::new();
    let mut wants: BTreeMap<u32, Wants> = ranks.iter().map(|r| (*r, Wants::default())).collect();
    read_wants(&mut rd, head, &ranks, &mut done, &mut wants).await;
    refuse_unoffered(&tree.files, &wants, &mut done);
    let (items, mut deltas) = union(&wants, &done, tree, opts);
    for (r, w) in &wants {
        if !done.contains_key(r) {
            deltas.settle(*r, Some(w));
        }
    }
    // The rest comes while the files go out: signatures, then each node's answer.
    let pending: Vec<u32> = ranks
        .iter()
        .copied()
        .filter(|r| !done.contains_key(r))
        .collect();
    let reader = tokio::spawn(answers(rd, pending, done, wants, deltas));
    let broken = send_files(wr, items, &tree.root, head.rank, opts).await;
    // A node that failed (a full disk) stops reading: its error frame says why.
    let done = match broken {
        None => reader.await.unwrap_or_default(),
        Some(_) => tokio::time::timeout(Duration::from_secs(5), reader)
            .await
            .ok()
            .and_then(|r| r.ok())
            .unwrap_or_default(),
    };
    let why = broken.unwrap_or_else(|| "the connection closed before the sync ended".into());
    let out: Results = ranks
        .iter()
        .map(|r| (*r, done.get(r).cloned().unwrap_or_else(|| Err(lost(&why)))))
        .collect();
    opts.progress.done.fetch_add(out.len() as u64, Relaxed);
    out
}

/// Reads until every node of the link has its list of wants (its signatures follow, while
/// the files go out) or has answered; a broken link ends every node.
async fn read_wants<R: AsyncRead + Unpin>(
    rd: &mut FrameReader<R>,
    head: &Target,
    ranks: &[u32],
    done: &mut Done,
    wants: &mut BTreeMap<u32, Wants>,
) {
    let mut first = true;
    while ranks
        .iter()
        .any(|r| !done.contains_key(r) && wants[r].list.is_none())
    {
        let res = match within("the nodes", rd.read()).await {
            Ok(Some(f)) => answer(&f, done, wants),
            Ok(None) => return,
            // A TLS alert before the first answer is the agent refusing this certificate.
            Err(e) if first => Err(unanswered(&e, head)),
            Err(e) => Err(lost(e.to_string())),
        };
        first = false;
        if let Err(o) = res {
            for r in ranks {
                done.entry(*r).or_insert_with(|| Err(o.clone()));
            }
            return;
        }
    }
}

/// A node gets only what the manifest has: regular files (deltas within the sizes they are
/// made for); one that asks for anything else is answered no more.
fn refuse_unoffered(files: &Files, wants: &BTreeMap<u32, Wants>, done: &mut Done) {
    for (r, w) in wants {
        if done.contains_key(r) {
            continue;
        }
        let bad = w.list.iter().flatten().find(|(delta, path)| {
            files.get(path).is_none_or(|&size| {
                *delta && !(herd_sync::delta::MIN..=herd_sync::delta::MAX).contains(&size)
            })
        });
        if let Some((_, path)) = bad {
            done.insert(
                *r,
                Err(Outcome::Failed {
                    stage: Stage::Agent,
                    message: format!("asked for {path:?}, which the manifest does not offer"),
                }),
            );
        }
    }
}

/// The union of the wants of the nodes still in: each path once, whole if any node wants it
/// whole, and its deltas (made once all their signatures are in) after.
fn union(
    wants: &BTreeMap<u32, Wants>,
    done: &Done,
    tree: &Tree,
    opts: &PushOptions,
) -> (Vec<Item>, Deltas) {
    let mut whole: BTreeMap<String, bool> = BTreeMap::new();
    let mut deltas = Deltas {
        slots: HashMap::new(),
        owed: HashMap::new(),
        src: tree.root.clone(),
        opts: opts.clone(),
    };
    let mut receivers = HashMap::new();
    for (r, w) in wants.iter().filter(|(r, _)| !done.contains_key(r)) {
        let mut owed = Vec::new();
        for (delta, path) in w.list.iter().flatten() {
            let any = whole.entry(path.clone()).or_default();
            if !*delta {
                *any = true;
                continue;
            }
            owed.push(path.clone());
            let slot = deltas.slots.entry(path.clone()).or_insert_with(|| {
                let (tx, rx) = tokio::sync::oneshot::channel();
                receivers.insert(path.clone(), rx);
                Slot {
                    expected: 0,
                    sigs: Vec::new(),
                    tx: Some(tx),
                }
            });
            slot.expected += 1;
        }
        deltas.owed.insert(*r, (owed, 0));
    }
    let mut items = Vec::new();
    opts.progress.files.fetch_add(whole.len() as u64, Relaxed);
    for (path, is_whole) in whole {
        if is_whole {
            // The manifest's size: no second look at the file.
            let size = tree.files.get(&path).copied().unwrap_or(0);
            opts.progress.planned.fetch_add(size, Relaxed);
            items.push(Item::Whole(path.clone()));
        }
        if let Some(rx) = receivers.remove(&path) {
            items.push(Item::Deltas(path, rx));
        }
    }
    (items, deltas)
}

/// The link's frames while the files go out: signatures (each settles its deltas), then
/// each pending node's answer; a node with none when the link ends is lost.
async fn answers<R: AsyncRead + Unpin>(
    mut rd: FrameReader<R>,
    pending: Vec<u32>,
    mut done: Done,
    mut wants: BTreeMap<u32, Wants>,
    mut deltas: Deltas,
) -> Done {
    let mut why = None;
    while pending.iter().any(|r| !done.contains_key(r)) {
        let f = match within("the nodes", rd.read()).await {
            Ok(Some(f)) => f,
            Ok(None) => break,
            Err(e) => {
                why = Some(e.to_string());
                break;
            }
        };
        let ended = matches!(f.kind, Kind::SyncDone | Kind::Error);
        if let Err(o) = answer(&f, &mut done, &mut wants) {
            why = o.problem();
            break;
        }
        if ended {
            deltas.settle(f.node, None);
        } else if f.kind == Kind::Signature {
            deltas.settle(f.node, wants.get(&f.node));
        }
    }
    let why = why.unwrap_or_else(|| "the connection closed before the sync ended".into());
    for r in &pending {
        done.entry(*r).or_insert_with(|| Err(lost(&why)));
    }
    // Whatever still waits for signatures will not get them.
    drop(deltas);
    done
}

/// Frames the files on a blocking thread and writes them at the pace `bwlimit` allows;
/// what broke the link, if anything did.
async fn send_files<W: AsyncWrite + Unpin>(
    wr: &mut W,
    items: Vec<Item>,
    src: &Path,
    rank: u32,
    opts: &PushOptions,
) -> Option<String> {
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
        let (src, zstd) = (src.to_path_buf(), opts.compress);
        let progress = opts.progress.clone();
        tokio::task::spawn_blocking(move || {
            frame_files(&src, items, rank, batch, zstd, &btx, &progress)
        })
    };
    let mut broken = None;
    while let Some((bytes, payload)) = brx.recv().await {
        if let Err(e) = within("the nodes", wr.write_all(&bytes)).await {
            broken = Some(e.to_string());
            break;
        }
        pace.sent(payload, &opts.progress).await;
    }
    drop(brx);
    if broken.is_none() {
        if let Err(e) = within("the nodes", wr.flush()).await {
            broken = Some(e.to_string());
        }
    }
    let produced = producing.await.map_err(|e| e.to_string()).and_then(|r| r);
    if let Err(e) = &produced {
        // A source file that cannot be read: the nodes get nothing more, and say so.
        broken.get_or_insert_with(|| e.clone());
        let _ = wr.shutdown().await;
    }
    broken
}

/// A frame from a link's nodes while the push is not over: wants, or a node's answer.
fn answer(
    f: &Frame,
    done: &mut HashMap<u32, Result<SyncDone, Outcome>>,
    wants: &mut BTreeMap<u32, Wants>,
) -> Result<(), Outcome> {
    let lost = |m: String| Outcome::Failed {
        stage: Stage::Lost,
        message: m,
    };
    match f.kind {
        Kind::SyncDone => {
            done.insert(f.node, f.parse().map_err(|e| lost(e.to_string())));
        }
        Kind::Error => {
            done.insert(f.node, Err(error_outcome(f)));
        }
        Kind::Want | Kind::Signature => {
            let w = wants
                .get_mut(&f.node)
                .ok_or_else(|| lost(format!("wants from node rank {}, not asked", f.node)))?;
            w.take(f).map_err(lost)?;
        }
        k => return Err(lost(format!("unexpected {k:?} frame"))),
    }
    Ok(())
}

/// The body sent for a file wanted as a delta (its BLAKE3, then the delta), computed once for
/// all the nodes whose old copies have the same signature; one per core at a time.
async fn delta_body(
    cache: &DeltaCache,
    rel: &str,
    root: PathBuf,
    sig: Vec<u8>,
) -> Result<Arc<Vec<u8>>, String> {
    let key = (rel.to_string(), *blake3::hash(&sig).as_bytes());
    let cell = cache
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .entry(key)
        .or_default()
        .clone();
    let rel = rel.to_string();
    cell.get_or_init(|| async {
        // Each holds its new file in memory.
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
            let mut data = Vec::new();
            herd_sync::path::Beneath::new(&root)
                .and_then(|b| b.open(&rel))
                .and_then(|mut f| f.read_to_end(&mut data))
                .map_err(|e| format!("{rel}: {e}"))?;
            herd_sync::delta::delta(sig, &data)
                .map(|d| {
                    let mut body = blake3::hash(&data).as_bytes().to_vec();
                    body.extend_from_slice(&d);
                    Arc::new(body)
                })
                .map_err(|e| e.to_string())
        })
        .await
        .map_err(|e| e.to_string())?
    })
    .await
    .clone()
}

/// The files as frames: for each, a FileStart naming it (and the old copy a delta is for),
/// its content, an empty FileData; then an empty FileStart. In batches of about `batch`
/// bytes with the content bytes each holds; read straight into the batch, or with `zstd`
/// compressed one frame at a time.
fn frame_files(
    src: &Path,
    items: Vec<Item>,
    rank: u32,
    batch: usize,
    zstd: bool,
    tx: &mpsc::Sender<(Vec<u8>, u64)>,
    progress: &Progress,
) -> Result<(), String> {
    let packer = if zstd {
        Some(zstd::bulk::Compressor::new(super::ZSTD_LEVEL).map_err(|e| e.to_string())?)
    } else {
        None
    };
    let mut f = Framer {
        out: Vec::new(),
        payload: 0,
        batch,
        frame_max: batch.min(MAX_PAYLOAD),
        rank,
        packer,
        chunk: Vec::new(),
        tx,
    };
    f.out = f.fresh();
    let beneath =
        herd_sync::path::Beneath::new(src).map_err(|e| format!("{}: {e}", src.display()))?;
    let mut last: Option<String> = None;
    for item in items {
        // A path counts once, whole or as deltas (or both).
        let path = match &item {
            Item::Whole(p) | Item::Deltas(p, _) => p,
        };
        if last.as_ref() != Some(path) {
            progress.files_sent.fetch_add(1, Relaxed);
            last = Some(path.clone());
        }
        let more = match item {
            Item::Whole(rel) => f.whole(src, &beneath, &rel)?,
            Item::Deltas(rel, rx) => f.deltas(&rel, rx)?,
        };
        if !more {
            // The connection is gone.
            return Ok(());
        }
    }
    encode_header(Kind::FileStart, rank, 0, &mut f.out);
    f.ship(true);
    Ok(())
}

/// Frames files into batches for the connection.
struct Framer<'a> {
    out: Vec<u8>,
    /// Content bytes in `out`.
    payload: u64,
    batch: usize,
    frame_max: usize,
    rank: u32,
    packer: Option<zstd::bulk::Compressor<'static>>,
    /// A frame's content read for compression.
    chunk: Vec<u8>,
    tx: &'a mpsc::Sender<(Vec<u8>, u64)>,
}

impl Framer<'_> {
    fn fresh(&self) -> Vec<u8> {
        Vec::with_capacity(self.batch + self.frame_max + 4 * HEADER)
    }

    /// Sends the batch when it is full (or `force`); false when the connection is gone.
    fn ship(&mut self, force: bool) -> bool {
        if self.out.len() < self.batch && !force {
            return true;
        }
        let fresh = self.fresh();
        let out = std::mem::replace(&mut self.out, fresh);
        let ok = self.tx.blocking_send((out, self.payload)).is_ok();
        self.payload = 0;
        ok
    }

    /// One content frame of `data` (compressed when asked); counts its payload.
    fn frame(&mut self, data: &[u8]) -> Result<(), String> {
        let n = match self.packer.as_mut() {
            None => {
                encode_header(Kind::FileData, self.rank, data.len(), &mut self.out);
                self.out.extend_from_slice(data);
                data.len()
            }
            Some(z) => {
                let packed = z.compress(data).map_err(|e| format!("zstd: {e}"))?;
                encode_header(Kind::FileData, self.rank, packed.len(), &mut self.out);
                self.out.extend_from_slice(&packed);
                packed.len()
            }
        };
        self.payload += n as u64;
        Ok(())
    }

    fn start(&mut self, sig: Option<&[u8; 32]>, rel: &str) {
        let start = file_start(sig, self.packer.is_some(), rel);
        encode_header(Kind::FileStart, self.rank, start.len(), &mut self.out);
        self.out.extend_from_slice(&start);
    }

    /// A path's deltas, once their bodies are made: what is framed so far goes out before
    /// waiting for them. False when the connection is gone.
    fn deltas(
        &mut self,
        rel: &str,
        rx: tokio::sync::oneshot::Receiver<Result<Bodies, String>>,
    ) -> Result<bool, String> {
        if !self.out.is_empty() && !self.ship(true) {
            return Ok(false);
        }
        let bodies = rx
            .blocking_recv()
            .map_err(|_| format!("{rel}: the nodes' signatures did not all come"))??;
        for (h, body) in bodies {
            self.start(Some(&h), rel);
            for c in body.chunks(self.frame_max) {
                self.frame(c)?;
                if !self.ship(false) {
                    return Ok(false);
                }
            }
            encode_header(Kind::FileData, self.rank, 0, &mut self.out);
        }
        Ok(true)
    }

    /// A whole file, read beneath the root a frame at a time (straight into the batch when
    /// not compressed). False when the connection is gone.
    fn whole(
        &mut self,
        src: &Path,
        beneath: &herd_sync::path::Beneath,
        rel: &str,
    ) -> Result<bool, String> {
        self.start(None, rel);
        let p = herd_sync::path::join(src, rel).map_err(|e| e.to_string())?;
        let read_err = |e: std::io::Error| format!("{}: {e}", p.display());
        let mut f = beneath.open(rel).map_err(read_err)?;
        let max = self.frame_max;
        loop {
            let n = if self.packer.is_some() {
                let mut chunk = std::mem::take(&mut self.chunk);
                chunk.clear();
                let n = (&mut f)
                    .take(max as u64)
                    .read_to_end(&mut chunk)
                    .map_err(read_err)?;
                if n > 0 {
                    self.frame(&chunk)?;
                }
                self.chunk = chunk;
                n
            } else {
                let at = self.out.len();
                encode_header(Kind::FileData, self.rank, 0, &mut self.out);
                let n = (&mut f)
                    .take(max as u64)
                    .read_to_end(&mut self.out)
                    .map_err(read_err)?;
                self.out[at..at + 4].copy_from_slice(&((5 + n) as u32).to_be_bytes());
                self.payload += n as u64;
                n
            };
            // The end of the file (when n = 0 without zstd, the frame just written).
            if n < max && (n > 0 || self.packer.is_some()) {
                encode_header(Kind::FileData, self.rank, 0, &mut self.out);
            }
            if !self.ship(false) {
                return Ok(false);
            }
            if n < max {
                return Ok(true);
            }
        }
    }
}

#[cfg(test)]
#[path = "send_tests.rs"]
mod tests;
