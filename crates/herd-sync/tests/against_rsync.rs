//! herd's plan-and-apply against `rsync -a --delete` on the same trees: the destination must
//! come out the same (paths, kinds, contents, modes, owners, mtimes, symlink targets).
#![allow(clippy::unwrap_used)]

use std::fs;
use std::os::unix::fs::{symlink, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::Command;

use herd_sync::apply::{apply, LocalSource};
use herd_sync::manifest::{scan, Manifest, ScanOptions};
use herd_sync::plan::{plan, Action, PlanOptions};

struct Dir(PathBuf);

impl Dir {
    fn new(name: &str) -> Dir {
        let p = std::env::temp_dir().join(format!("herd-sync-{name}-{}", std::process::id()));
        let _ = fs::remove_dir_all(&p);
        fs::create_dir_all(&p).unwrap();
        Dir(p)
    }
}

impl Drop for Dir {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.0);
    }
}

fn touch(p: &Path, secs: i64) {
    let st = Command::new("touch")
        .args(["-h", "-d", &format!("@{secs}.123456789")])
        .arg(p)
        .status()
        .unwrap();
    assert!(st.success());
}

fn file(root: &Path, rel: &str, content: &[u8], mode: u32, secs: i64) {
    let p = root.join(rel);
    fs::create_dir_all(p.parent().unwrap()).unwrap();
    fs::write(&p, content).unwrap();
    fs::set_permissions(&p, fs::Permissions::from_mode(mode)).unwrap();
    touch(&p, secs);
}

fn source(root: &Path) {
    file(root, "index.html", b"<h1>node</h1>\n", 0o644, 1_700_000_000);
    file(root, "big.bin", &vec![7u8; 3 << 20], 0o600, 1_700_000_100);
    file(
        root,
        "run.sh",
        b"#!/bin/sh\necho hi\n",
        0o755,
        1_700_000_200,
    );
    file(root, "a/b/c/deep.txt", b"deep\n", 0o640, 1_700_000_300);
    file(root, "a/same.txt", b"unchanged\n", 0o644, 1_600_000_000);
    file(root, "kind/was-dir", b"now a file\n", 0o644, 1_700_000_400);
    fs::create_dir_all(root.join("empty")).unwrap();
    fs::create_dir_all(root.join("kind/was-file")).unwrap();
    symlink("b/c/deep.txt", root.join("a/link")).unwrap();
    symlink("../index.html", root.join("a/up")).unwrap();
    for d in ["a/b/c", "a/b", "a", "empty", "kind/was-file", "kind"] {
        fs::set_permissions(root.join(d), fs::Permissions::from_mode(0o750)).unwrap();
        touch(&root.join(d), 1_650_000_000);
    }
    touch(&root.join("a/link"), 1_690_000_000);
    touch(root, 1_650_000_001);
}

/// A destination that has drifted: stale files, changed content, other modes, kinds swapped.
fn stale(root: &Path) {
    file(root, "index.html", b"<h1>old</h1>\n", 0o644, 1_600_000_000);
    file(root, "a/same.txt", b"unchanged\n", 0o600, 1_600_000_000);
    file(root, "stale/old.txt", b"gone soon\n", 0o644, 1_500_000_000);
    file(
        root,
        "kind/was-file",
        b"a file where a dir goes\n",
        0o644,
        1_500_000_000,
    );
    file(
        root,
        "kind/was-dir/inner",
        b"a dir where a file goes\n",
        0o644,
        1_500_000_000,
    );
    symlink("elsewhere", root.join("a/link")).unwrap();
    file(root, "big.bin", &vec![9u8; 1 << 20], 0o600, 1_500_000_000);
}

fn sorted_view(m: &Manifest) -> Vec<String> {
    m.entries
        .iter()
        .map(|e| {
            // Symlink mtimes are not compared: rsync sets them only where lutimes exists.
            let t = match e.kind {
                herd_sync::manifest::Kind::Symlink { .. } => String::new(),
                _ => format!("{}.{:09}", e.mtime, e.mtime_nsec),
            };
            format!(
                "{} {:?} {:o} {}:{} {t}",
                e.path, e.kind, e.mode, e.uid, e.gid
            )
        })
        .collect()
}

#[test]
fn push_leaves_the_same_tree_as_rsync_a_delete() {
    let src = Dir::new("src");
    let ours = Dir::new("ours");
    let theirs = Dir::new("theirs");
    source(&src.0);
    stale(&ours.0);
    stale(&theirs.0);

    let hashed = ScanOptions {
        hash: true,
        ..ScanOptions::default()
    };
    let s = scan(&src.0, &ScanOptions::default()).unwrap();
    let d = scan(&ours.0, &ScanOptions::default()).unwrap();
    let p = plan(
        &s,
        &d,
        PlanOptions {
            delete: true,
            ..PlanOptions::default()
        },
    );
    let st = apply(&p, &ours.0, &mut LocalSource::new(&src.0).unwrap()).unwrap();
    assert!(st.refused.is_empty(), "{:?}", st.refused);

    let out = Command::new("rsync")
        .args(["-a", "--delete"])
        .arg(format!("{}/", src.0.display()))
        .arg(format!("{}/", theirs.0.display()))
        .output()
        .expect("rsync (Debian package rsync; .ci/run installs it)");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    let a = scan(&ours.0, &hashed).unwrap();
    let b = scan(&theirs.0, &hashed).unwrap();
    assert_eq!(sorted_view(&a), sorted_view(&b));
    // And the source itself, hashes included.
    assert_eq!(
        sorted_view(&a),
        sorted_view(&scan(&src.0, &hashed).unwrap())
    );

    // A second push has nothing to do.
    let again = plan(
        &s,
        &scan(&ours.0, &ScanOptions::default()).unwrap(),
        PlanOptions {
            delete: true,
            ..PlanOptions::default()
        },
    );
    assert_eq!(again.actions, Vec::<Action>::new());
}

#[test]
fn a_symlink_leading_out_is_refused_and_nothing_is_left_half_written() {
    let src = Dir::new("src-esc");
    let dst = Dir::new("dst-esc");
    file(&src.0, "ok.txt", b"fine\n", 0o644, 1_700_000_000);
    symlink("/etc/passwd", src.0.join("abs")).unwrap();
    symlink("../../outside", src.0.join("climb")).unwrap();
    let s = scan(&src.0, &ScanOptions::default()).unwrap();
    let p = plan(
        &s,
        &scan(&dst.0, &ScanOptions::default()).unwrap(),
        PlanOptions::default(),
    );
    let st = apply(&p, &dst.0, &mut LocalSource::new(&src.0).unwrap()).unwrap();
    let refused: Vec<&str> = st.refused.iter().map(|(p, _)| p.as_str()).collect();
    assert_eq!(refused, ["abs", "climb"]);
    assert!(dst.0.join("ok.txt").exists());
    assert!(fs::symlink_metadata(dst.0.join("abs")).is_err());

    // A source that fails mid-file: the old file stays whole, no temporary file is left.
    struct Failing;
    impl herd_sync::apply::Source for Failing {
        fn copy_to(&mut self, _: &str, out: &mut dyn std::io::Write) -> std::io::Result<u64> {
            for _ in 0..25 {
                out.write_all(&[b'x'; 4096])?;
            }
            Err(std::io::Error::other("connection lost"))
        }
    }
    file(&src.0, "ok.txt", &vec![b'n'; 500_000], 0o644, 1_700_000_500);
    let s = scan(&src.0, &ScanOptions::default()).unwrap();
    let p = plan(
        &s,
        &scan(&dst.0, &ScanOptions::default()).unwrap(),
        PlanOptions::default(),
    );
    let err = apply(&p, &dst.0, &mut Failing).unwrap_err().to_string();
    assert!(err.contains("ok.txt: connection lost"), "{err}");
    assert_eq!(fs::read(dst.0.join("ok.txt")).unwrap(), b"fine\n");
    let left: Vec<_> = fs::read_dir(&dst.0)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.contains("herd-tmp"))
        .collect();
    assert!(left.is_empty(), "{left:?}");
}
