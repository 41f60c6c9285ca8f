//! A node relaying a push to its subtree: content flows down the agent tree, and the sender
//! sends each file once per subtree, not once per node.
//!
//! The relay is a router between the link above and its links below: its own copy (the
//! ordinary receiving side, run on an in-memory pipe) and one connection per child group
//! (made with the node's certificate, carrying the admin's grant). The manifest goes to every
//! link; every frame coming up (wants, signatures, answers; tagged with their node's rank)
//! goes up as it is, and the relay notes which files each link wants, in which form. Then
//! each file coming down goes only to the links that want it in that form.

use std::collections::{BTreeMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt};
use tokio::sync::mpsc;

use super::send::Wants;
use super::{
    chunked, parse_file_start, read_chunked, receive, within, SyncError, Verify, MAX_MANIFEST,
    STALL,
};
use crate::client::{plan, reach, Outcome, Target};
use crate::frame::{write_frames, Frame, FrameReader, Kind};
use crate::proto::{Failure, FailureKind, Request, SyncRequest};

/// (path, BLAKE3 of the signature a delta is for) that a link's nodes want.
type Wanted = Arc<Mutex<HashSet<(String, Option<[u8; 32]>)>>>;

/// A link below: where its frames go, and what its nodes want.
struct Down {
    tx: mpsc::Sender<Arc<Vec<u8>>>,
    wanted: Wanted,
}

fn encode(f: &Frame) -> Vec<u8> {
    let mut out = Vec::with_capacity(crate::frame::HEADER + f.payload.len());
    f.encode(&mut out);
    out
}

fn failure(rank: u32, kind: FailureKind, message: String) -> Vec<u8> {
    encode(&Frame::json(Kind::Error, rank, &Failure { kind, message }))
}

/// Serves a push that carries a subtree: this node's copy, and the subtree's.
pub async fn relay<R, W>(
    req: SyncRequest,
    mut up: FrameReader<R>,
    up_wr: W,
    tls: Arc<rustls::ClientConfig>,
    me: String,
    verify: Option<&Verify>,
) -> Result<(), SyncError>
where
    R: AsyncRead + Unpin,
    W: AsyncWrite + Unpin + Send + 'static,
{
    let manifest = match read_checked(&mut up, verify).await {
        Ok(m) => Arc::new(m),
        Err((kind, e)) => {
            // Nothing runs: this node and its subtree say why.
            refuse_all(up_wr, &req, &me, kind, &e.to_string()).await;
            return Err(e);
        }
    };
    let (up_tx, upward) = upward(up_wr);
    let mut readers = tokio::task::JoinSet::new();
    let (own, mine) = own_copy(&req, &manifest, &up_tx, &me, &mut readers);
    let mut downs = vec![mine];
    downs.extend(children(&req, tls, &manifest, &up_tx, &me, &mut readers).await);
    let res = route_files(&mut up, &downs).await;
    // The links below finish on their own (each node answers); their readers end with them.
    drop(downs);
    if let Err(e) = &res {
        tracing::warn!(me = %me, "sync relay: {e}");
    }
    while readers.join_next().await.is_some() {}
    let _ = own.await;
    drop(up_tx);
    let _ = upward.await;
    res
}

/// The manifest from above, and the grant that must cover it (a relayed push); how to fail
/// when either does not hold.
async fn read_checked<R: AsyncRead + Unpin>(
    up: &mut FrameReader<R>,
    verify: Option<&Verify>,
) -> Result<Vec<u8>, (FailureKind, SyncError)> {
    let m = read_chunked(up, Kind::Manifest, MAX_MANIFEST)
        .await
        .map_err(|e| (FailureKind::Agent, e))?;
    match verify.map(|check| check(&m)) {
        Some(Err(e)) => Err((FailureKind::Refused, SyncError::Refused(e))),
        _ => Ok(m),
    }
}

/// A push that does not run: this node's error, and its subtree's, then the end.
async fn refuse_all<W: AsyncWrite + Unpin>(
    mut wr: W,
    req: &SyncRequest,
    me: &str,
    kind: FailureKind,
    why: &str,
) {
    let mut out = failure(req.rank, kind, why.to_string());
    for t in &req.subtree {
        out.extend(failure(
            t.rank,
            kind,
            format!("not run: its relay {me}: {why}"),
        ));
    }
    let _ = wr.write_all(&out).await;
    let _ = wr.flush().await;
    let _ = wr.shutdown().await;
}

/// Everything going up is written by one task, in the order it comes.
fn upward<W: AsyncWrite + Unpin + Send + 'static>(
    mut wr: W,
) -> (mpsc::Sender<Vec<u8>>, tokio::task::JoinHandle<()>) {
    let (up_tx, mut up_rx) = mpsc::channel::<Vec<u8>>(64);
    let task = tokio::spawn(async move {
        while let Some(b) = up_rx.recv().await {
            if within("the link above", wr.write_all(&b)).await.is_err() {
                return;
            }
            if up_rx.is_empty() && within("the link above", wr.flush()).await.is_err() {
                return;
            }
        }
        let _ = wr.flush().await;
        let _ = wr.shutdown().await;
    });
    (up_tx, task)
}

/// This node's own copy: the receiving side, over an in-memory pipe, as a link like the
/// others.
fn own_copy(
    req: &SyncRequest,
    manifest: &[u8],
    up_tx: &mpsc::Sender<Vec<u8>>,
    me: &str,
    readers: &mut tokio::task::JoinSet<()>,
) -> (tokio::task::JoinHandle<()>, Down) {
    let (mine, theirs) = tokio::io::duplex(1 << 20);
    let local = SyncRequest {
        subtree: Vec::new(),
        fanout: 0,
        auth: None,
        ..req.clone()
    };
    let own = tokio::spawn(async move {
        let (rd, mut wr) = tokio::io::split(mine);
        let mut rd = FrameReader::new(rd);
        if let Err(e) = receive(&local, &mut rd, &mut wr, None).await {
            let _ = wr
                .write_all(&failure(local.rank, FailureKind::Agent, e.to_string()))
                .await;
        }
        let _ = wr.shutdown().await;
    });
    let (rd, wr) = tokio::io::split(theirs);
    let first = chunked(Kind::Manifest, req.rank, manifest);
    let down = link(
        FrameReader::new(rd),
        wr,
        first,
        vec![req.rank],
        up_tx.clone(),
        me,
        readers,
    );
    (own, down)
}

/// The children: groups of the subtree, each reached through its first reachable node (the
/// others of the group it relays to); a node not reached is reported up.
async fn children(
    req: &SyncRequest,
    tls: Arc<rustls::ClientConfig>,
    manifest: &[u8],
    up_tx: &mpsc::Sender<Vec<u8>>,
    me: &str,
    readers: &mut tokio::task::JoinSet<()>,
) -> Vec<Down> {
    let limit = match req.connect_timeout_ms {
        0 => Duration::from_secs(10),
        ms => Duration::from_millis(ms),
    };
    let mut downs = Vec::new();
    for (head, sub) in plan(req.subtree.clone(), (req.fanout as usize).max(1)) {
        let mut group: Vec<Target> = std::iter::once(head).chain(sub).collect();
        while !group.is_empty() {
            let head = group.remove(0);
            let stream = match reach(tls.clone(), &head, limit).await {
                Ok(s) => s,
                Err(o) => {
                    let why = match o {
                        Outcome::Failed { message, .. } => message,
                        o => o.problem().unwrap_or_default(),
                    };
                    let msg = format!("via {me}: {why}");
                    let _ = up_tx
                        .send(failure(head.rank, FailureKind::Connect, msg))
                        .await;
                    continue;
                }
            };
            let child = SyncRequest {
                rank: head.rank,
                subtree: std::mem::take(&mut group),
                ..req.clone()
            };
            let mut ranks = vec![head.rank];
            ranks.extend(child.subtree.iter().map(|t| t.rank));
            let mut first = vec![Frame::json(Kind::Request, head.rank, &Request::Sync(child))];
            first.extend(chunked(Kind::Manifest, head.rank, manifest));
            let (rd, wr) = tokio::io::split(stream);
            let up = up_tx.clone();
            downs.push(link(
                FrameReader::new(rd),
                wr,
                first,
                ranks,
                up,
                me,
                readers,
            ));
        }
    }
    downs
}

/// The files from above, each to the links that want it in its form; then the end, to all.
async fn route_files<R: AsyncRead + Unpin>(
    up: &mut FrameReader<R>,
    downs: &[Down],
) -> Result<(), SyncError> {
    let mut to: Vec<usize> = Vec::new();
    loop {
        let f = within("the sender", up.read())
            .await?
            .ok_or(SyncError::SenderGone)?;
        let bytes = Arc::new(encode(&f));
        match f.kind {
            Kind::FileStart if f.payload.is_empty() => {
                for d in downs {
                    let _ = tokio::time::timeout(STALL, d.tx.send(bytes.clone())).await;
                }
                return Ok(());
            }
            Kind::FileStart => {
                let start = parse_file_start(&f.payload).ok_or(SyncError::BadFileStart)?;
                let key = (start.path.to_string(), start.sig);
                to = (0..downs.len())
                    .filter(|&i| {
                        downs[i]
                            .wanted
                            .lock()
                            .unwrap_or_else(|p| p.into_inner())
                            .contains(&key)
                    })
                    .collect();
            }
            Kind::FileData => {}
            k => return Err(SyncError::NotFileData(k)),
        }
        for &i in &to {
            // A link whose writer is gone (or stalled: it gives up on its own) has its
            // nodes reported by its reader.
            let _ = tokio::time::timeout(STALL, downs[i].tx.send(bytes.clone())).await;
        }
    }
}

/// Starts a link below: a writer (its first frames, then what the router sends it) and a
/// reader that notes its nodes' wants and passes every frame up.
fn link<R, W>(
    mut rd: FrameReader<R>,
    mut wr: W,
    first: Vec<Frame>,
    ranks: Vec<u32>,
    up: mpsc::Sender<Vec<u8>>,
    me: &str,
    readers: &mut tokio::task::JoinSet<()>,
) -> Down
where
    R: AsyncRead + Unpin + Send + 'static,
    W: AsyncWrite + Unpin + Send + 'static,
{
    let (tx, mut rx) = mpsc::channel::<Arc<Vec<u8>>>(16);
    tokio::spawn(async move {
        if write_frames(&mut wr, &first).await.is_err() {
            return;
        }
        while let Some(b) = rx.recv().await {
            if within("a link below", wr.write_all(&b)).await.is_err() {
                // Closed, so that the nodes below see the end, not silence.
                let _ = wr.shutdown().await;
                return;
            }
            if rx.is_empty() && within("a link below", wr.flush()).await.is_err() {
                let _ = wr.shutdown().await;
                return;
            }
        }
        // Everything sent, or the push given up: either way the nodes below see the end.
        let _ = within("a link below", wr.flush()).await;
        let _ = wr.shutdown().await;
    });
    let wanted: Wanted = Arc::default();
    let noted = wanted.clone();
    let me = me.to_string();
    readers.spawn(async move {
        let mut wants: BTreeMap<u32, (Wants, (bool, usize))> = ranks
            .iter()
            .map(|r| (*r, (Wants::default(), (false, 0))))
            .collect();
        let mut ended: HashSet<u32> = HashSet::new();
        let why = loop {
            if ranks.iter().all(|r| ended.contains(r)) {
                return;
            }
            let f = match within("a link below", rd.read()).await {
                Ok(Some(f)) => f,
                Ok(None) => break "the connection closed".to_string(),
                Err(e) => break e.to_string(),
            };
            if !ranks.contains(&f.node) {
                break format!("a frame for node rank {}, not of this link", f.node);
            }
            match f.kind {
                Kind::Want | Kind::Signature => {
                    let Some((w, seen)) = wants.get_mut(&f.node) else {
                        continue;
                    };
                    if let Err(e) = w.take(&f) {
                        break e;
                    }
                    // Noted before the frame goes up: the sender sends a file only after it
                    // has seen the want (the list, or the signature), so the file finds its
                    // way down.
                    let mut set = noted.lock().unwrap_or_else(|p| p.into_inner());
                    *seen = w.known_since(*seen, |path, sig| {
                        set.insert((path.to_string(), sig));
                    });
                }
                Kind::SyncDone | Kind::Error => {
                    ended.insert(f.node);
                }
                k => break format!("unexpected {k:?} frame"),
            }
            if up.send(encode(&f)).await.is_err() {
                return;
            }
        };
        for r in ranks.iter().filter(|r| !ended.contains(r)) {
            let _ = up
                .send(failure(*r, FailureKind::Lost, format!("via {me}: {why}")))
                .await;
        }
    });
    Down { tx, wanted }
}
