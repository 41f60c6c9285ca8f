//! `herd sync push` over the agent: the sender sends its tree's manifest, the receiver
//! compares it with the destination and asks for the files that differ, the sender streams
//! them in path order, and the receiver writes each to a temporary file renamed into place
//! (herd-sync). For `herd sync pull` the roles turn: the agent sends (`send.rs`), the client
//! receives ([`receive`]). Every frame carries the rank of the node it is about, so a relay
//! (`relay.rs`) passes its subtree's answers up unchanged.
//!
//! ```text
//! sender (client)                          receiver (agent)
//! Request{sync} ────────────────────────►  checks role (or grant) and the destination
//! Manifest* , Manifest("") ─────────────►  scans the destination, plans
//!               ◄────────────────────────  Want* , Want("")    lines "F path" (whole) or
//!                                                               "D path" (delta)
//!               ◄────────────────────────  Signature* , Signature("") per "D" line, in
//!                                          order (sent while the files already come)
//! per file and form (whole once, one delta per distinct old copy), in path order:
//!   FileStart("F path" | "D <sig> path") ►  <sig>: hex BLAKE3 of the signature the delta
//!   FileData* , FileData("") ───────────►   was made against; "FZ"/"DZ": each FileData is
//!                                           zstd; a delta's data is the new content's
//!                                           BLAKE3 (32 bytes), then the delta
//! FileStart("") ────────────────────────►  the end of the files
//!               ◄────────────────────────  SyncDone (or Error)
//! ```

use std::io::{self, Write};
use std::path::PathBuf;
use std::sync::Arc;

use herd_sync::apply::{apply_in, Source};
use herd_sync::dest::Dest;
use herd_sync::manifest::{scan, Entry, Manifest, ScanOptions};
use herd_sync::path::Beneath;
use herd_sync::plan::{plan, Action, PlanOptions};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::sync::mpsc;

use crate::frame::{decode_header, write_frames, Frame, FrameReader, Kind, HEADER, MAX_PAYLOAD};
use crate::grant::GrantError;
use crate::proto::{Failure, SyncDone, SyncRequest};

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
) -> Result<Vec<u8>, SyncError> {
    let mut all = Vec::new();
    loop {
        let f = within("the sender", rd.read())
            .await?
            .ok_or(SyncError::Closed)?;
        if f.kind == Kind::Error {
            let why = f
                .parse::<Failure>()
                .map(|f| f.message)
                .unwrap_or_else(|e| e.to_string());
            return Err(SyncError::Peer(why));
        }
        if f.kind != kind {
            return Err(SyncError::Unexpected {
                expected: kind,
                got: f.kind,
            });
        }
        if f.payload.is_empty() {
            return Ok(all);
        }
        if all.len() + f.payload.len() > limit {
            return Err(SyncError::TooLong { kind, limit });
        }
        all.extend_from_slice(&f.payload);
    }
}

/// How long any step of a sync may make no progress (a read that gets nothing, a write that
/// takes nothing) before the peer is given up: a peer that goes quiet holds no connection,
/// slot or temporary file for ever. Long enough for the slowest honest step (a 2 GiB delta
/// made or applied).
pub const STALL: std::time::Duration = std::time::Duration::from_secs(300);

/// `f`, or an error once it has made no progress for [`STALL`].
pub(crate) async fn within<T>(
    what: &str,
    f: impl std::future::Future<Output = io::Result<T>>,
) -> io::Result<T> {
    tokio::time::timeout(STALL, f).await.unwrap_or_else(|_| {
        Err(io::Error::new(
            io::ErrorKind::TimedOut,
            format!("{what}: nothing for {} s", STALL.as_secs()),
        ))
    })
}

/// Bytes handed at a time from the connection to the thread writing files, and from the thread
/// reading files to the connection.
const CHUNK: usize = 256 << 10;

/// Checks the manifest's bytes before anything is done with them (a relayed push: the
/// admin's grant covers their hash).
pub type Verify = dyn Fn(&[u8]) -> Result<(), GrantError> + Send + Sync;

/// What an admin's grant for a relayed push says: the request as every node gets it (less
/// its place in the tree) and the manifest's hash.
pub fn grant_text(req: &SyncRequest, manifest: &[u8]) -> String {
    format!(
        "sync dest={:?} delete={} checksum={} dry-run={} exclude={:?} module={:?} manifest={}",
        req.dest,
        req.delete,
        req.checksum,
        req.dry_run,
        req.exclude,
        req.module,
        blake3::hash(manifest).to_hex()
    )
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

pub fn parse_manifest(lines: &[u8]) -> Result<Manifest, SyncError> {
    let mut m = Manifest::default();
    for (i, line) in lines.split(|&b| b == b'\n').enumerate() {
        if line.is_empty() {
            continue;
        }
        let e: Entry = serde_json::from_slice(line)
            .map_err(|error| SyncError::ManifestLine { line: i + 1, error })?;
        herd_sync::path::check(&e.path)?;
        m.entries.push(e);
    }
    m.entries.sort_by(|a, b| a.path.cmp(&b.path));
    m.check_tree()?;
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
    /// The destination, for the old copies deltas are made against.
    old: Arc<Beneath>,
    /// Path → new size, for the files that come as deltas.
    deltas: std::collections::HashMap<String, u64>,
    /// Path → BLAKE3 of the new content, where the manifest has it: checked before the file
    /// goes into place (a relay cannot change what the admin's manifest says).
    hashes: std::collections::HashMap<String, [u8; 32]>,
    /// Content bytes received.
    received: u64,
    /// For compressed files; made once.
    unpack: Option<zstd::bulk::Decompressor<'static>>,
}

/// What a `FileStart` frame says: for a delta the BLAKE3 of the signature it was made
/// against, whether each content frame is compressed (zstd), and the path.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Start<'a> {
    pub sig: Option<[u8; 32]>,
    pub zstd: bool,
    pub path: &'a str,
}

/// Reads a `FileStart` frame: `F PATH`, `D HASH PATH`, and `FZ`/`DZ` for compressed content.
pub fn parse_file_start(p: &[u8]) -> Option<Start<'_>> {
    let s = std::str::from_utf8(p).ok()?;
    let (form, rest) = s.split_once(' ')?;
    let zstd = form.ends_with('Z');
    match form.trim_end_matches('Z') {
        "F" if form.len() - usize::from(zstd) == 1 => Some(Start {
            sig: None,
            zstd,
            path: rest,
        }),
        "D" if form.len() - usize::from(zstd) == 1 => {
            let (h, path) = rest.split_once(' ')?;
            Some(Start {
                sig: Some(unhex32(h)?),
                zstd,
                path,
            })
        }
        _ => None,
    }
}

/// The text of a `FileStart` frame.
pub fn file_start(sig: Option<&[u8; 32]>, zstd: bool, path: &str) -> Vec<u8> {
    let z = if zstd { "Z" } else { "" };
    match sig {
        None => format!("F{z} {path}").into_bytes(),
        Some(h) => format!("D{z} {} {path}", hex(h)).into_bytes(),
    }
}

/// zstd's level for `--compress` (fast; most of the gain on text).
pub const ZSTD_LEVEL: i32 = 3;

pub(crate) fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

pub(crate) fn unhex32(s: &str) -> Option<[u8; 32]> {
    if s.len() != 64 {
        return None;
    }
    let mut out = [0u8; 32];
    for (i, o) in out.iter_mut().enumerate() {
        *o = u8::from_str_radix(s.get(2 * i..2 * i + 2)?, 16).ok()?;
    }
    Some(out)
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

    /// The next frame's kind and payload length.
    fn header(&mut self) -> io::Result<(Kind, usize)> {
        let mut head = [0u8; HEADER];
        let mut at = 0;
        self.take(HEADER, &mut |b| {
            head[at..at + b.len()].copy_from_slice(b);
            at += b.len();
            Ok(())
        })?;
        let (kind, _, len) = decode_header(&head)?;
        Ok((kind, len))
    }

    /// File `rel`: its `FileStart` frame (which must name it), then its frames, each payload
    /// to `sink`, up to the empty frame that ends the file.
    fn file(
        &mut self,
        rel: &str,
        sink: &mut dyn FnMut(&[u8]) -> io::Result<()>,
    ) -> io::Result<u64> {
        let (kind, len) = self.header()?;
        let mut start = Vec::with_capacity(len);
        if kind == Kind::FileStart {
            self.take(len, &mut |b| {
                start.extend_from_slice(b);
                Ok(())
            })?;
        }
        let zstd = match parse_file_start(&start) {
            Some(s) if kind == Kind::FileStart && s.path == rel => s.zstd,
            _ => {
                return Err(io::Error::other(format!(
                    "expected the content of {rel:?}, got {kind:?} {:?}",
                    String::from_utf8_lossy(&start)
                )))
            }
        };
        // Bytes on the wire, and of content.
        let (mut total, mut content) = (0u64, 0u64);
        let (mut packed, mut plain) = (Vec::new(), Vec::new());
        loop {
            let (kind, len) = self.header()?;
            if kind != Kind::FileData {
                return Err(io::Error::other(format!(
                    "expected file data, got {kind:?}"
                )));
            }
            if len == 0 {
                self.received += total;
                return Ok(content);
            }
            if zstd {
                // Each frame is a zstd frame of at most MAX_PAYLOAD bytes.
                packed.clear();
                self.take(len, &mut |b| {
                    packed.extend_from_slice(b);
                    Ok(())
                })?;
                plain.clear();
                plain.reserve(MAX_PAYLOAD);
                let unpack = match &mut self.unpack {
                    Some(d) => d,
                    None => self.unpack.insert(zstd::bulk::Decompressor::new()?),
                };
                unpack
                    .decompress_to_buffer(&packed, &mut plain)
                    .map_err(|e| io::Error::other(format!("compressed data: {e}")))?;
                sink(&plain)?;
                content += plain.len() as u64;
            } else {
                self.take(len, sink)?;
                content += len as u64;
            }
            total += len as u64;
        }
    }
}

impl Source for Streamed {
    fn copy_to(&mut self, rel: &str, out: &mut dyn Write) -> io::Result<u64> {
        let want = self.hashes.get(rel).copied();
        let Some(&size) = self.deltas.get(rel) else {
            let mut hasher = want.map(|_| blake3::Hasher::new());
            let n = self.file(rel, &mut |b| {
                if let Some(h) = hasher.as_mut() {
                    h.update(b);
                }
                out.write_all(b)
            })?;
            if let (Some(h), Some(want)) = (hasher, want) {
                if h.finalize().as_bytes() != &want {
                    return Err(io::Error::other(
                        "its content is not what the manifest says (its hash differs)",
                    ));
                }
            }
            return Ok(n);
        };
        // The new content's hash, then the delta: literals can make it a little longer than
        // the file, never much.
        let limit = 32 + size + size / 16 + (64 << 10);
        let mut data = Vec::new();
        self.file(rel, &mut |b| {
            if (data.len() + b.len()) as u64 > limit {
                return Err(io::Error::other("a delta longer than its file"));
            }
            data.extend_from_slice(b);
            Ok(())
        })?;
        let (hash, delta) = data
            .split_first_chunk::<32>()
            .ok_or_else(|| io::Error::other("a delta without its hash"))?;
        if want.is_some_and(|w| &w != hash) {
            return Err(io::Error::other(
                "the delta is for other content than the manifest says",
            ));
        }
        let old = self.old.open(rel)?;
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
    verify: Option<&Verify>,
) -> Result<SyncDone, SyncError>
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
        return Err(SyncError::Destination(req.dest.clone()));
    }
    let mut src = read_manifest(req, rd, verify).await?;
    let (have, target) = open_dest(&dest, req).await?;
    if req.module.is_some() && !req.trusted {
        // A module is the admin's directory: a node pushing into it changes what is in it,
        // not the module root's own owner and mode (a manifest saying 0777 would otherwise
        // open it to every local user).
        if let (Some(s), Some(h)) = (src.entries.first_mut(), have.entries.first()) {
            (s.mode, s.uid, s.gid) = (h.mode, h.uid, h.gid);
        }
    }
    let opts = PlanOptions {
        delete: req.delete,
        checksum: req.checksum,
    };
    let p = plan(&src, &have, opts);
    let Some(target) = target.filter(|_| !req.dry_run) else {
        let done = SyncDone {
            changes: p.actions.iter().map(describe).collect(),
            ..SyncDone::default()
        };
        return finish(wr, req.rank, done).await;
    };
    let old = Arc::new(target.reader().map_err(SyncError::local(&dest))?);
    let wanted = Wanted::of(&p, &have)?;
    within(
        "the sender",
        write_frames(wr, &chunked(Kind::Want, req.rank, &wanted.text)),
    )
    .await?;
    let (stats, received) = transfer(req.rank, p, target, old, wanted, rd, wr).await?;
    let done = SyncDone {
        written: stats.written,
        bytes: stats.bytes,
        received,
        removed: stats.removed,
        meta: stats.meta,
        refused: stats.refused,
        changes: Vec::new(),
    };
    finish(wr, req.rank, done).await
}

/// The sender's manifest, checked (the grant of a relayed push), confined (no setuid or
/// setgid from a peer that is not an admin) and less this side's excludes.
async fn read_manifest<R: AsyncRead + Unpin>(
    req: &SyncRequest,
    rd: &mut FrameReader<R>,
    verify: Option<&Verify>,
) -> Result<Manifest, SyncError> {
    let lines = read_chunked(rd, Kind::Manifest, MAX_MANIFEST).await?;
    if let Some(check) = verify {
        check(&lines)?;
    }
    let mut src = parse_manifest(&lines)?;
    drop(lines);
    if !req.trusted {
        for e in &mut src.entries {
            e.mode &= !0o6000;
        }
    }
    // This side's excludes (a module's) hold whatever the sender's were.
    drop_excluded(&mut src, &req.exclude);
    Ok(src)
}

/// The destination as it is, and its handle (`None` for a dry run of a destination that
/// does not exist). It is opened once, before it is read; every change goes through that
/// handle and no symlink beneath it is followed (herd_sync::dest).
async fn open_dest(
    dest: &std::path::Path,
    req: &SyncRequest,
) -> Result<(Manifest, Option<Dest>), SyncError> {
    let opts = ScanOptions {
        hash: req.checksum,
        exclude: req.exclude.clone(),
    };
    let (d, dry) = (dest.to_path_buf(), req.dry_run);
    tokio::task::spawn_blocking(move || {
        if !d.exists() {
            if dry {
                return Ok((Manifest::default(), None));
            }
            std::fs::create_dir_all(&d).map_err(SyncError::local(&d))?;
        }
        let target = Dest::open(&d).map_err(SyncError::local(&d))?;
        Ok::<_, SyncError>((scan(&d, &opts)?, Some(target)))
    })
    .await?
}

/// What this side asks for: the want lines, the files that come as deltas (path → new size)
/// and the old copies to sign for them (in the order the sender expects their signatures),
/// and the content hashes the manifest gives.
struct Wanted {
    text: Vec<u8>,
    deltas: std::collections::HashMap<String, u64>,
    to_sign: Vec<String>,
    hashes: std::collections::HashMap<String, [u8; 32]>,
}

impl Wanted {
    /// Each file the plan writes: whole, or as a delta against the old copy when both are big
    /// enough.
    fn of(p: &herd_sync::plan::Plan, have: &Manifest) -> Result<Wanted, SyncError> {
        let old_sizes: std::collections::HashMap<&str, u64> = have
            .entries
            .iter()
            .filter_map(|e| match e.kind {
                herd_sync::manifest::Kind::File { size, .. } => Some((e.path.as_str(), size)),
                _ => None,
            })
            .collect();
        let mut w = Wanted {
            text: Vec::new(),
            deltas: Default::default(),
            to_sign: Vec::new(),
            hashes: Default::default(),
        };
        for a in &p.actions {
            let Action::Write { entry, basis } = a else {
                continue;
            };
            let size = match &entry.kind {
                herd_sync::manifest::Kind::File { size, hash } => {
                    if let Some(h) = hash {
                        let h = unhex32(h).ok_or_else(|| SyncError::BadHash(entry.path.clone()))?;
                        w.hashes.insert(entry.path.clone(), h);
                    }
                    *size
                }
                _ => 0,
            };
            let old = old_sizes.get(entry.path.as_str()).copied().unwrap_or(0);
            let delta = *basis && herd_sync::delta::worth_it(size, old);
            if delta {
                w.deltas.insert(entry.path.clone(), size);
                w.to_sign.push(entry.path.clone());
            }
            w.text.extend_from_slice(if delta { b"D " } else { b"F " });
            w.text.extend_from_slice(entry.path.as_bytes());
            w.text.push(b'\n');
        }
        Ok(w)
    }
}

/// The files: the plan applied on a blocking thread, from the connection's bytes (handed
/// over as they come), while the signatures of the old copies go out. The write stats and
/// the content bytes received.
async fn transfer<R, W>(
    rank: u32,
    p: herd_sync::plan::Plan,
    mut target: Dest,
    old: Arc<Beneath>,
    wanted: Wanted,
    rd: &mut FrameReader<R>,
    wr: &mut W,
) -> Result<(herd_sync::apply::Stats, u64), SyncError>
where
    R: AsyncRead + Unpin,
    W: AsyncWrite + Unpin,
{
    let (tx, rx) = mpsc::channel::<Vec<u8>>(8);
    let mut source = Streamed {
        rx,
        cur: Vec::new(),
        pos: 0,
        old: old.clone(),
        deltas: wanted.deltas,
        hashes: wanted.hashes,
        received: 0,
        unpack: None,
    };
    let applying = tokio::task::spawn_blocking(move || {
        apply_in(&p, &mut target, &mut source).map(|stats| (stats, source.received))
    });
    tokio::pin!(applying);
    let forward = forward(rd, tx);
    tokio::pin!(forward);
    // The signatures go out while files already come in and are written (a delta's old copy
    // is replaced only once its own delta, made from this signature, has come).
    let signing = sign(rank, old, wanted.to_sign, wr);
    tokio::pin!(signing);
    let (mut signed, mut forwarded) = (false, false);
    let applied = loop {
        tokio::select! {
            res = &mut applying => break res,
            res = &mut signing, if !signed => {
                res?;
                signed = true;
            }
            () = &mut forward, if !forwarded => forwarded = true,
        }
    };
    Ok(applied??)
}

/// Hands the connection's bytes to the writing thread until it is done (or the stream ends
/// or breaks: the writing thread then sees it end).
async fn forward<R: AsyncRead + Unpin>(rd: &mut FrameReader<R>, tx: mpsc::Sender<Vec<u8>>) {
    let first = rd.take_buffered();
    let inner = rd.get_mut();
    if !first.is_empty() && tx.send(first).await.is_err() {
        return;
    }
    loop {
        let mut chunk = Vec::with_capacity(CHUNK + (64 << 10));
        match within("the sender", read_some(inner, &mut chunk, CHUNK)).await {
            Ok(n) if n > 0 => {}
            _ => return,
        }
        if tx.send(chunk).await.is_err() {
            return;
        }
    }
}

/// The signature of each old copy a delta is wanted for, in order.
async fn sign<W: AsyncWrite + Unpin>(
    rank: u32,
    old: Arc<Beneath>,
    to_sign: Vec<String>,
    wr: &mut W,
) -> Result<(), SyncError> {
    for basis in to_sign {
        let old = old.clone();
        let sig = tokio::task::spawn_blocking(move || {
            old.open(&basis)
                .and_then(|f| {
                    let len = f.metadata()?.len();
                    herd_sync::delta::signature(std::io::BufReader::new(f), len)
                })
                .map_err(SyncError::local(&basis))
        })
        .await??;
        within(
            "the sender",
            write_frames(&mut *wr, &chunked(Kind::Signature, rank, &sig)),
        )
        .await?;
    }
    Ok(())
}

/// The receiving side's last word: what it did (or would do), then the end of its stream.
async fn finish<W: AsyncWrite + Unpin>(
    wr: &mut W,
    rank: u32,
    done: SyncDone,
) -> Result<SyncDone, SyncError> {
    within(
        "the sender",
        write_frames(wr, &[Frame::json(Kind::SyncDone, rank, &done)]),
    )
    .await?;
    let _ = wr.shutdown().await;
    Ok(done)
}

mod error;
mod relay;
mod send;

pub use error::SyncError;

pub use relay::relay;
pub use send::{pull, push, send_link, DeltaCache, Files, Progress, PushOptions, Tree};

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn file_starts_read_back_and_bad_ones_are_refused() {
        let h = [7u8; 32];
        for (sig, zstd) in [
            (None, false),
            (None, true),
            (Some(h), false),
            (Some(h), true),
        ] {
            let text = file_start(sig.as_ref(), zstd, "a dir/with spaces.txt");
            assert_eq!(
                parse_file_start(&text),
                Some(Start {
                    sig,
                    zstd,
                    path: "a dir/with spaces.txt"
                })
            );
        }
        for bad in [
            "",
            "F",
            "X path",
            "FF path",
            "FZZ path",
            "D 12 path",
            "Dpath",
        ] {
            assert_eq!(parse_file_start(bad.as_bytes()), None, "{bad:?}");
        }
    }
}
