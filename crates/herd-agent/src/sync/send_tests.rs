//! The sender's decisions, against an in-memory peer: what it sends for a tree and a link's
//! wants (the union, whole or as deltas, in which frames), and what it reports per node.

use std::collections::HashMap;
use std::path::PathBuf;
use std::time::Duration;

use tokio::io::{AsyncWriteExt, DuplexStream, ReadHalf, WriteHalf};

use super::*;
use crate::client::{Outcome, Stage};
use crate::frame::{Frame, FrameReader, Kind};
use crate::proto::{Failure, FailureKind, SyncDone};
use crate::sync::{parse_file_start, Start};

/// A source tree in a directory of its own (removed on drop).
struct Src {
    root: PathBuf,
}

impl Src {
    fn new(test: &str, files: &[(&str, &[u8])]) -> Src {
        let root = std::env::temp_dir().join(format!("herd-send-{test}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&root);
        for (path, data) in files {
            let p = root.join(path);
            std::fs::create_dir_all(p.parent().unwrap()).unwrap();
            std::fs::write(p, data).unwrap();
        }
        std::fs::create_dir_all(&root).unwrap();
        Src { root }
    }

    fn tree(&self) -> Tree {
        let m = herd_sync::manifest::scan(&self.root, &Default::default()).unwrap();
        Tree::new(&self.root, &m)
    }
}

impl Drop for Src {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.root);
    }
}

fn head() -> Target {
    Target {
        rank: 0,
        name: "n0".into(),
        addr: "mem".into(),
    }
}

/// The receiving end of a link: reads what the sender sends, and answers as told.
struct Peer {
    rd: FrameReader<ReadHalf<DuplexStream>>,
    wr: WriteHalf<DuplexStream>,
}

impl Peer {
    async fn frame(&mut self) -> Option<Frame> {
        self.rd.read().await.unwrap()
    }

    /// The manifest's lines, up to its empty frame.
    async fn manifest(&mut self) -> Vec<u8> {
        let mut all = Vec::new();
        loop {
            let f = self.frame().await.expect("a manifest frame");
            assert_eq!(f.kind, Kind::Manifest);
            if f.payload.is_empty() {
                return all;
            }
            all.extend_from_slice(&f.payload);
        }
    }

    async fn send(&mut self, frames: &[Frame]) {
        crate::frame::write_frames(&mut self.wr, frames)
            .await
            .unwrap();
    }

    /// `rank`'s wants ("F path" / "D path" lines) and the signatures of its "D" files.
    async fn want(&mut self, rank: u32, lines: &str, signatures: &[Vec<u8>]) {
        self.send(&chunked(Kind::Want, rank, lines.as_bytes()))
            .await;
        for s in signatures {
            self.send(&chunked(Kind::Signature, rank, s)).await;
        }
    }

    /// Every frame up to the empty `FileStart` that ends the files, as (kind, payload).
    async fn files(&mut self) -> Vec<(Kind, Vec<u8>)> {
        let mut out = Vec::new();
        loop {
            let f = self.frame().await.expect("the files' frames");
            let end = f.kind == Kind::FileStart && f.payload.is_empty();
            out.push((f.kind, f.payload));
            if end {
                return out;
            }
        }
    }

    async fn done(&mut self, rank: u32, written: u64) {
        let done = SyncDone {
            written,
            ..SyncDone::default()
        };
        self.send(&[Frame::json(Kind::SyncDone, rank, &done)]).await;
    }
}

/// A link to `ranks` over an in-memory pipe: the sender runs in a task, the peer is returned.
fn link(
    ranks: Vec<u32>,
    tree: Tree,
    opts: PushOptions,
) -> (Peer, tokio::task::JoinHandle<Results>) {
    let (ours, theirs) = tokio::io::duplex(4 << 20);
    let (rd, mut wr) = tokio::io::split(ours);
    let sender = tokio::spawn(async move {
        let rd = FrameReader::new(rd);
        send_link(rd, &mut wr, &head(), ranks, &tree, &opts).await
    });
    let (rd, wr) = tokio::io::split(theirs);
    let peer = Peer {
        rd: FrameReader::new(rd),
        wr,
    };
    (peer, sender)
}

/// The files' frames as text: `FileStart` payloads as they are, content as `<n bytes>`, the
/// end of a file as `end`.
fn outline(frames: &[(Kind, Vec<u8>)]) -> Vec<String> {
    frames
        .iter()
        .map(|(k, p)| match (k, p.is_empty()) {
            (Kind::FileStart, true) => "done".to_string(),
            (Kind::FileStart, false) => String::from_utf8_lossy(p).into_owned(),
            (Kind::FileData, true) => "end".to_string(),
            (Kind::FileData, false) => format!("<{} bytes>", p.len()),
            (k, _) => format!("{k:?}"),
        })
        .collect()
}

fn results(r: Results) -> HashMap<u32, Result<SyncDone, Outcome>> {
    r.into_iter().collect()
}

#[tokio::test]
async fn each_file_a_link_wants_goes_once_whole_in_path_order() {
    let src = Src::new(
        "whole",
        &[("b.txt", b"bee\n"), ("a/c.txt", b"sea\n"), ("z", b"")],
    );
    let tree = src.tree();
    let (mut peer, sender) = link(vec![0, 1], tree.clone(), PushOptions::default());
    let manifest = peer.manifest().await;
    assert_eq!(manifest, *tree.lines, "the manifest goes first, as scanned");
    // Node 1 is relayed to: its wants come tagged with its rank.
    peer.want(0, "F b.txt\nF a/c.txt\n", &[]).await;
    peer.want(1, "F b.txt\n", &[]).await;
    let frames = peer.files().await;
    assert_eq!(
        outline(&frames),
        [
            "F a/c.txt",
            "<4 bytes>",
            "end",
            "F b.txt",
            "<4 bytes>",
            "end",
            "done"
        ]
    );
    assert_eq!(frames[1].1, b"sea\n");
    assert_eq!(frames[4].1, b"bee\n");
    peer.done(0, 2).await;
    peer.done(1, 1).await;
    let r = results(sender.await.unwrap());
    assert_eq!(r[&0].as_ref().unwrap().written, 2);
    assert_eq!(r[&1].as_ref().unwrap().written, 1);
}

#[tokio::test]
async fn nothing_wanted_sends_only_the_end_of_the_files() {
    let src = Src::new("none", &[("a", b"x")]);
    let (mut peer, sender) = link(vec![0], src.tree(), PushOptions::default());
    peer.manifest().await;
    peer.want(0, "", &[]).await;
    assert_eq!(outline(&peer.files().await), ["done"]);
    peer.done(0, 0).await;
    assert!(results(sender.await.unwrap())[&0].is_ok());
}

/// A file big enough for deltas, and two old copies of it that differ.
fn big() -> (Vec<u8>, Vec<u8>, Vec<u8>) {
    let new: Vec<u8> = (0..200_000u32).map(|i| (i * 7 % 251) as u8).collect();
    let mut old1 = new.clone();
    old1[1000..1100].fill(0);
    let mut old2 = new.clone();
    old2[150_000..150_050].fill(1);
    (new, old1, old2)
}

fn sig(old: &[u8]) -> Vec<u8> {
    herd_sync::delta::signature(old, old.len() as u64).unwrap()
}

/// Rebuilds the new content from `old` and a delta body (its BLAKE3, then the delta).
fn patched(old: &[u8], body: &[u8], size: u64) -> Vec<u8> {
    let path = std::env::temp_dir().join(format!("herd-send-old-{}", std::process::id()));
    std::fs::write(&path, old).unwrap();
    let f = std::fs::File::open(&path).unwrap();
    let (hash, delta) = body.split_first_chunk::<32>().unwrap();
    let mut out = Vec::new();
    herd_sync::delta::patch(&f, delta, size, hash, &mut out).unwrap();
    let _ = std::fs::remove_file(&path);
    out
}

#[tokio::test]
async fn a_delta_is_made_once_per_distinct_old_copy_and_whole_when_any_node_wants_it_so() {
    let (new, old1, old2) = big();
    let src = Src::new("delta", &[("big", &new)]);
    let (mut peer, sender) = link(vec![0, 1, 2, 3], src.tree(), PushOptions::default());
    peer.manifest().await;
    // Nodes 0 and 1 hold the same old copy, node 2 another; node 3 wants the file whole.
    peer.want(0, "D big\n", &[sig(&old1)]).await;
    peer.want(1, "D big\n", &[sig(&old1)]).await;
    peer.want(2, "D big\n", &[sig(&old2)]).await;
    peer.want(3, "F big\n", &[]).await;
    let frames = peer.files().await;
    let starts: Vec<Start> = frames
        .iter()
        .filter(|(k, p)| *k == Kind::FileStart && !p.is_empty())
        .map(|(_, p)| parse_file_start(p).unwrap())
        .collect();
    // Whole first, then one delta per distinct signature, in the order of their hashes.
    let mut hashes = [sig(&old1), sig(&old2)].map(|s| *blake3::hash(&s).as_bytes());
    hashes.sort();
    assert_eq!(
        starts,
        [
            Start {
                sig: None,
                zstd: false,
                path: "big"
            },
            Start {
                sig: Some(hashes[0]),
                zstd: false,
                path: "big"
            },
            Start {
                sig: Some(hashes[1]),
                zstd: false,
                path: "big"
            },
        ]
    );
    // Each form's content, joined, up to its end frame.
    let mut bodies: Vec<Vec<u8>> = Vec::new();
    for (k, p) in &frames {
        match k {
            Kind::FileStart if !p.is_empty() => bodies.push(Vec::new()),
            Kind::FileData => bodies.last_mut().unwrap().extend_from_slice(p),
            _ => {}
        }
    }
    assert_eq!(bodies[0], new);
    let old_for = |h: &[u8; 32]| {
        if *h == *blake3::hash(&sig(&old1)).as_bytes() {
            &old1
        } else {
            &old2
        }
    };
    for (start, body) in starts[1..].iter().zip(&bodies[1..]) {
        assert!(
            body.len() < new.len() / 2,
            "a delta of {} bytes",
            body.len()
        );
        let old = old_for(start.sig.as_ref().unwrap());
        assert_eq!(patched(old, body, new.len() as u64), new);
    }
    for r in 0..4 {
        peer.done(r, 1).await;
    }
    assert!(results(sender.await.unwrap()).values().all(Result::is_ok));
}

#[tokio::test]
async fn compressed_content_goes_as_zstd_frames() {
    let text = b"the same line again\n".repeat(5000);
    let src = Src::new("zstd", &[("t", &text)]);
    let opts = PushOptions {
        compress: true,
        ..PushOptions::default()
    };
    let (mut peer, sender) = link(vec![0], src.tree(), opts);
    peer.manifest().await;
    peer.want(0, "F t\n", &[]).await;
    let frames = peer.files().await;
    assert_eq!(frames[0].1, b"FZ t");
    let mut plain = Vec::new();
    let mut wire = 0;
    for (k, p) in &frames[1..] {
        if *k == Kind::FileData && !p.is_empty() {
            wire += p.len();
            plain.extend(zstd::bulk::decompress(p, crate::frame::MAX_PAYLOAD).unwrap());
        }
    }
    assert_eq!(plain, text);
    assert!(wire < text.len() / 10, "{wire} bytes on the wire");
    peer.done(0, 1).await;
    assert!(results(sender.await.unwrap())[&0].is_ok());
}

#[tokio::test]
async fn a_node_that_asks_for_what_the_manifest_lacks_is_served_no_more() {
    let src = Src::new("lacks", &[("a", b"aa"), ("small", b"s")]);
    let (mut peer, sender) = link(vec![0, 1, 2], src.tree(), PushOptions::default());
    peer.manifest().await;
    peer.want(0, "F a\n", &[]).await;
    peer.want(1, "F ../etc/shadow\n", &[]).await;
    // A delta of a file too small for one is not in the manifest's offer either.
    peer.want(2, "D small\n", &[b"sig".to_vec()]).await;
    assert_eq!(
        outline(&peer.files().await),
        ["F a", "<2 bytes>", "end", "done"]
    );
    peer.done(0, 1).await;
    let r = results(sender.await.unwrap());
    assert!(r[&0].is_ok());
    for (rank, path) in [(1, "../etc/shadow"), (2, "small")] {
        let Err(Outcome::Failed { stage, message }) = &r[&rank] else {
            panic!("{:?}", r[&rank]);
        };
        assert_eq!(*stage, Stage::Agent);
        assert_eq!(
            *message,
            format!("asked for {path:?}, which the manifest does not offer")
        );
    }
}

#[tokio::test]
async fn a_node_error_is_its_result_and_the_others_go_on() {
    let src = Src::new("error", &[("a", b"aa")]);
    let (mut peer, sender) = link(vec![0, 1], src.tree(), PushOptions::default());
    peer.manifest().await;
    let full = Failure {
        kind: FailureKind::Agent,
        message: "/srv: no space left on device".into(),
    };
    peer.send(&[Frame::json(Kind::Error, 1, &full)]).await;
    peer.want(0, "F a\n", &[]).await;
    assert_eq!(
        outline(&peer.files().await),
        ["F a", "<2 bytes>", "end", "done"]
    );
    peer.done(0, 1).await;
    let r = results(sender.await.unwrap());
    assert!(r[&0].is_ok());
    assert_eq!(
        r[&1].as_ref().unwrap_err().problem().unwrap(),
        "agent: /srv: no space left on device"
    );
}

#[tokio::test]
async fn a_link_that_closes_loses_every_node_it_had_not_answered_for() {
    let src = Src::new("closed", &[("a", b"aa")]);
    let (mut peer, sender) = link(vec![0, 1], src.tree(), PushOptions::default());
    peer.manifest().await;
    peer.want(0, "F a\n", &[]).await;
    peer.want(1, "F a\n", &[]).await;
    peer.files().await;
    peer.done(0, 1).await;
    peer.wr.shutdown().await.unwrap();
    drop(peer);
    let r = results(sender.await.unwrap());
    assert!(r[&0].is_ok());
    assert_eq!(
        r[&1],
        Err(Outcome::Failed {
            stage: Stage::Lost,
            message: "the connection closed before the sync ended".into()
        })
    );
}

#[tokio::test]
async fn frames_out_of_place_end_the_link() {
    let src = Src::new("oop", &[("a", b"aa")]);
    let (mut peer, sender) = link(vec![0], src.tree(), PushOptions::default());
    peer.manifest().await;
    peer.send(&[Frame::new(Kind::Stdout, 0, b"hello".to_vec())])
        .await;
    let r = results(sender.await.unwrap());
    assert_eq!(
        r[&0].as_ref().unwrap_err().problem().unwrap(),
        "lost: unexpected Stdout frame"
    );
}

#[test]
fn wants_parse_whole_and_delta_lines_and_count_signatures() {
    let mut w = Wants::default();
    let take = |w: &mut Wants, kind, p: &[u8]| w.take(&Frame::new(kind, 0, p.to_vec()));
    assert_eq!(take(&mut w, Kind::Want, b"F a\nD b c\n"), Ok(false));
    assert_eq!(take(&mut w, Kind::Want, b""), Ok(false));
    assert_eq!(
        w.list,
        Some(vec![(false, "a".to_string()), (true, "b c".to_string())])
    );
    let mut seen = Vec::new();
    let at = w.known_since((false, 0), |p, s| seen.push((p.to_string(), s)));
    assert_eq!(
        (at, seen.len()),
        ((true, 0), 1),
        "the delta waits for its signature"
    );
    assert_eq!(take(&mut w, Kind::Signature, b"sig"), Ok(false));
    assert_eq!(take(&mut w, Kind::Signature, b""), Ok(true));
    let mut seen = Vec::new();
    w.known_since(at, |p, s| seen.push((p.to_string(), s)));
    assert_eq!(
        seen,
        [("b c".to_string(), Some(*blake3::hash(b"sig").as_bytes()))]
    );
    // One signature too many, a bad line, a frame of another kind.
    assert_eq!(
        take(&mut w, Kind::Signature, b""),
        Err("more signatures than files wanted as deltas".into())
    );
    let mut w = Wants::default();
    assert_eq!(take(&mut w, Kind::Want, b"X a\n"), Ok(false));
    assert_eq!(
        take(&mut w, Kind::Want, b""),
        Err("a bad want line \"X a\"".into())
    );
    assert_eq!(
        take(&mut Wants::default(), Kind::Signature, b"s"),
        Err("unexpected Signature frame".into())
    );
}

#[tokio::test(start_paused = true)]
async fn a_link_that_goes_silent_is_given_up_after_the_stall_time() {
    let src = Src::new("silent", &[("a", b"aa")]);
    let (mut peer, sender) = link(vec![0, 1], src.tree(), PushOptions::default());
    peer.manifest().await;
    // Node 0 answers, node 1 never does; the link stays open.
    peer.want(0, "F a\n", &[]).await;
    let started = tokio::time::Instant::now();
    let r = results(sender.await.unwrap());
    let waited = started.elapsed();
    assert!(
        waited >= super::super::STALL && waited < super::super::STALL + Duration::from_secs(1),
        "{waited:?}"
    );
    let message = format!("the nodes: nothing for {} s", super::super::STALL.as_secs());
    for rank in [0, 1] {
        assert_eq!(
            r[&rank],
            Err(Outcome::Failed {
                stage: Stage::Lost,
                message: message.clone()
            })
        );
    }
    drop(peer);
}
