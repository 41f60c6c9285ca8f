//! `herd sync push` through real agents, checked against `rsync -a --delete` on the same trees.

use std::fs;
use std::os::unix::fs::{symlink, PermissionsExt};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use herd_sync::manifest::{scan, Kind, Manifest, ScanOptions};

use crate::exec::Cluster;
use crate::util::{herd_bin, wait_for};

fn touch(p: &Path, secs: i64) {
    let st = Command::new("touch")
        .args(["-h", "-d", &format!("@{secs}.5")])
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

fn view(m: &Manifest) -> Vec<String> {
    m.entries
        .iter()
        .map(|e| {
            let t = match e.kind {
                Kind::Symlink { .. } => String::new(),
                _ => format!("{}.{:09}", e.mtime, e.mtime_nsec),
            };
            format!(
                "{} {:?} {:o} {}:{} {t}",
                e.path, e.kind, e.mode, e.uid, e.gid
            )
        })
        .collect()
}

fn hashed(p: &Path) -> Vec<String> {
    view(
        &scan(
            p,
            &ScanOptions {
                hash: true,
                ..ScanOptions::default()
            },
        )
        .unwrap(),
    )
}

fn stale(root: &Path) {
    file(root, "index.html", b"old\n", 0o600, 1_500_000_000);
    file(root, "gone/old.txt", b"stale\n", 0o644, 1_500_000_000);
    file(
        root,
        "keep.log",
        b"excluded, so kept\n",
        0o644,
        1_500_000_000,
    );
    file(
        root,
        "conf",
        b"a file where the source has a directory\n",
        0o644,
        1_500_000_000,
    );
}

#[test]
fn push_makes_each_node_the_same_tree_as_rsync_would() {
    let c = Cluster::new("sync", 2);
    let src = c.dir.path("src");
    file(&src, "index.html", b"<h1>herd</h1>\n", 0o644, 1_700_000_000);
    file(&src, "conf/app.toml", b"x = 1\n", 0o640, 1_700_000_100);
    file(&src, "bin/run", b"#!/bin/sh\n", 0o755, 1_700_000_200);
    file(&src, "data/big", &vec![3u8; 5 << 20], 0o644, 1_700_000_300);
    file(&src, "skip.log", b"not sent\n", 0o644, 1_700_000_400);
    symlink("../conf/app.toml", src.join("bin/conf")).unwrap();
    fs::create_dir_all(src.join("empty")).unwrap();
    for d in ["conf", "bin", "data", "empty"] {
        touch(&src.join(d), 1_650_000_000);
    }
    touch(&src, 1_650_000_001);

    let (ours, theirs) = (c.dir.path("ours"), c.dir.path("theirs"));
    stale(&ours);
    stale(&theirs);
    let cfg = c.client.display().to_string();
    let push = |extra: &[&str]| {
        let mut args = vec![
            "sync",
            "push",
            src.to_str().unwrap(),
            "--config",
            &cfg,
            "-w",
            "node01",
        ];
        args.extend_from_slice(extra);
        Command::new(herd_bin())
            .args(&args)
            .stdin(Stdio::null())
            .output()
            .unwrap()
    };
    let dest = ours.display().to_string();
    let o = push(&[
        "--dest",
        &dest,
        "--delete",
        "--exclude",
        "*.log",
        "--dry-run",
    ]);
    let out = String::from_utf8_lossy(&o.stdout).into_owned();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert!(
        out.contains("node01: would remove gone")
            && out.contains("node01: would update index.html"),
        "{out}"
    );
    assert!(
        !out.contains("keep.log") && !out.contains("skip.log"),
        "{out}"
    );
    assert_eq!(
        fs::read(ours.join("index.html")).unwrap(),
        b"old\n",
        "a dry run changes nothing"
    );

    let t = Instant::now();
    let o = push(&["--dest", &dest, "--delete", "--exclude", "*.log"]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    eprintln!("push: {:?}", t.elapsed());
    let out = String::from_utf8_lossy(&o.stdout).into_owned();
    assert!(out.starts_with("node01: 4 written"), "{out}");

    let r = Command::new("rsync")
        .args(["-a", "--delete", "--exclude", "*.log"])
        .arg(format!("{}/", src.display()))
        .arg(format!("{}/", theirs.display()))
        .output()
        .expect("rsync");
    assert!(r.status.success(), "{}", String::from_utf8_lossy(&r.stderr));
    assert_eq!(hashed(&ours), hashed(&theirs));
    assert_eq!(
        fs::read(ours.join("keep.log")).unwrap(),
        b"excluded, so kept\n"
    );

    // Nothing to do the second time; a changed file is all that travels.
    let o = push(&["--dest", &dest, "--delete", "--exclude", "*.log"]);
    assert!(String::from_utf8_lossy(&o.stdout)
        .starts_with("node01: 0 written (0 bytes, 0 sent), 0 removed"));
    file(&src, "conf/app.toml", b"x = 2\n", 0o640, 1_700_000_500);
    let o = push(&["--dest", &dest, "--delete", "--exclude", "*.log"]);
    assert!(
        String::from_utf8_lossy(&o.stdout).starts_with("node01: 1 written (6 bytes, 6 sent)"),
        "{}",
        String::from_utf8_lossy(&o.stdout)
    );

    // A large file changed by 1 %: a delta against the old copy travels, not the file.
    let mut big: Vec<u8> = (0..(5u32 << 20))
        .map(|i| (i.wrapping_mul(2654435761) >> 11) as u8)
        .collect();
    file(&src, "data/big", &big, 0o644, 1_700_000_600);
    let o = push(&["--dest", &dest, "--delete", "--exclude", "*.log"]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    big[2_000_000..2_052_000].fill(0);
    file(&src, "data/big", &big, 0o644, 1_700_000_700);
    let o = push(&["--dest", &dest, "--delete", "--exclude", "*.log"]);
    let out = String::from_utf8_lossy(&o.stdout).into_owned();
    let sent: u64 = out
        .split(" bytes, ")
        .nth(1)
        .and_then(|r| r.split(' ').next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("{out}"));
    assert!(out.starts_with("node01: 1 written (5242880 bytes"), "{out}");
    assert!(
        sent < 5_242_880 / 20,
        "a delta of {sent} bytes for a 1 % change: {out}"
    );
    eprintln!("delta: {sent} bytes sent for a 1 % change of 5 MiB");
    let r = Command::new("rsync")
        .args(["-a", "--delete", "--exclude", "*.log"])
        .arg(format!("{}/", src.display()))
        .arg(format!("{}/", theirs.display()))
        .output()
        .unwrap();
    assert!(r.status.success());
    assert_eq!(hashed(&ours), hashed(&theirs));

    // --bwlimit holds the rate down: 1 MiB at 1 MiB/s takes a second at least.
    file(&src, "paced", &vec![4u8; 1 << 20], 0o644, 1_700_000_800);
    let t = Instant::now();
    let o = push(&["--dest", &dest, "--bwlimit", "1M", "--exclude", "*.log"]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert!(
        t.elapsed() >= Duration::from_millis(950),
        "{:?}",
        t.elapsed()
    );

    // Only an admin certificate may push.
    let o = push(&[
        "--dest",
        &dest,
        "--cert",
        &c.pki("node02.crt"),
        "--key",
        &c.pki("node02.key"),
    ]);
    assert_eq!(o.status.code(), Some(1));
    assert!(
        String::from_utf8_lossy(&o.stderr).contains("refused: sync needs an admin certificate"),
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );
}

#[test]
fn an_interrupted_push_leaves_no_partial_file_and_traversal_is_refused() {
    let c = Cluster::new("syncint", 1);
    let src = c.dir.path("src");
    let dst = c.dir.path("dst");
    file(&dst, "big", b"the old version\n", 0o644, 1_500_000_000);
    file(&src, "big", &vec![1u8; 128 << 20], 0o644, 1_700_000_000);
    let mut child = Command::new(herd_bin())
        .args([
            "sync",
            "push",
            src.to_str().unwrap(),
            "--config",
            c.client.to_str().unwrap(),
            "-w",
            "node01",
            "--dest",
            dst.to_str().unwrap(),
        ])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let tmp_exists = || {
        fs::read_dir(&dst).unwrap().any(|e| {
            e.unwrap()
                .file_name()
                .to_string_lossy()
                .contains("herd-tmp")
        })
    };
    wait_for("the transfer to start", Duration::from_secs(20), tmp_exists);
    child.kill().unwrap();
    child.wait().unwrap();
    wait_for("the temporary file to go", Duration::from_secs(10), || {
        !tmp_exists()
    });
    assert_eq!(fs::read(dst.join("big")).unwrap(), b"the old version\n");

    // A manifest with a path out of the destination: the agent refuses the whole sync.
    let (rt, tls, target) = c.raw_client("admin", 1);
    let evil = b"{\"path\":\"\",\"type\":\"dir\",\"mode\":493,\"uid\":0,\"gid\":0,\"mtime\":0,\"mtime-nsec\":0}\n\
{\"path\":\"../escape\",\"type\":\"file\",\"size\":1,\"mode\":420,\"uid\":0,\"gid\":0,\"mtime\":0,\"mtime-nsec\":0}\n"
        .to_vec();
    let req = herd_agent::proto::SyncRequest {
        dest: dst.display().to_string(),
        ..Default::default()
    };
    let mut res = rt.block_on(herd_agent::sync::push(
        tls,
        vec![target],
        1,
        req,
        herd_agent::sync::Tree {
            root: src.clone(),
            lines: std::sync::Arc::new(evil),
            files: Default::default(),
        },
        herd_agent::sync::PushOptions {
            limit: Duration::from_secs(5),
            ..Default::default()
        },
    ));
    let err = res.pop().unwrap().1.unwrap_err().problem().unwrap();
    assert!(err.contains("'..' leads out of the tree"), "{err}");
    assert!(!c.dir.path("escape").exists());
}

/// A tmpfs mounted for the test, unmounted on drop (also when the test panics).
struct Tmpfs(std::path::PathBuf);

impl Tmpfs {
    fn new(at: std::path::PathBuf, size: &str) -> Tmpfs {
        fs::create_dir_all(&at).unwrap();
        let st = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(&at)
            .status()
            .unwrap();
        assert!(st.success(), "mount tmpfs (the tests run as root)");
        Tmpfs(at)
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(&self.0).status();
    }
}

#[test]
fn a_full_disk_is_a_clear_error_and_the_old_file_stays() {
    let c = Cluster::new("syncfull", 1);
    let src = c.dir.path("src");
    let small = Tmpfs::new(c.dir.path("small"), "1m");
    file(&small.0, "data", b"the old version\n", 0o644, 1_500_000_000);
    file(&src, "data", &vec![5u8; 3 << 20], 0o644, 1_700_000_000);
    file(&src, "other", b"small enough\n", 0o644, 1_700_000_000);
    let o = Command::new(herd_bin())
        .args([
            "sync",
            "push",
            src.to_str().unwrap(),
            "--config",
            c.client.to_str().unwrap(),
            "-w",
            "node01",
            "--dest",
            small.0.to_str().unwrap(),
        ])
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(1));
    let err = String::from_utf8_lossy(&o.stderr).into_owned();
    assert!(
        err.contains("node01: agent: data:")
            && err.contains("file system is full; the old file is untouched"),
        "{err}"
    );
    assert_eq!(
        fs::read(small.0.join("data")).unwrap(),
        b"the old version\n"
    );
    let names: Vec<String> = fs::read_dir(&small.0)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(names, ["data"], "no temporary file left");
}

/// The served tree of the module tests.
fn served(root: &Path) {
    file(
        root,
        "index.html",
        b"<h1>node03</h1>\n",
        0o644,
        1_700_000_000,
    );
    file(
        root,
        "img/logo.png",
        &vec![9u8; 300_000],
        0o644,
        1_700_000_100,
    );
    file(
        root,
        "draft.tmp",
        b"excluded by the module\n",
        0o644,
        1_700_000_200,
    );
    file(root, "cgi/run", b"#!/bin/sh\n", 0o755, 1_700_000_300);
    file(root, "cgi/suid", b"#!/bin/sh\n", 0o4755, 1_700_000_400);
    for d in ["img", "cgi"] {
        touch(&root.join(d), 1_650_000_000);
    }
    touch(root, 1_650_000_001);
}

#[test]
fn modules_are_pulled_as_allowed_pushed_into_as_writable_and_on_schedule() {
    let c = Cluster::with("pull", 3, |dir, net| {
        let o = net.ip(1).octets();
        format!(
            "[nodes]\n\"node[01-03]\" = \"127.{}.{}.[1-3]\"\n[groups]\nweb = \"node[01-02]\"\n\
             [sync.module.webdata]\npath = \"{served}\"\nallow = [\"@web\"]\nexclude = [\"*.tmp\"]\n\
             max-connections = 4\n[sync.module.webdata.schedule]\nfrom = \"node03\"\n\
             nodes = \"node02\"\nevery = \"1s\"\ndest = \"{sched}\"\ndelete = true\n\
             [sync.module.drop]\npath = \"{drop}\"\nread-only = false\nwrite = [\"node01\"]\n",
            o[1],
            o[2],
            served = dir.path("served").display(),
            sched = dir.path("scheduled").display(),
            drop = dir.path("drop").display(),
        )
    });
    let (srv, pulled) = (c.dir.path("served"), c.dir.path("pulled"));
    served(&srv);
    // What rsync makes of the module with its exclude: the reference.
    let expect = c.dir.path("expect");
    let st = Command::new("rsync")
        .args(["-a", "--delete", "--exclude", "*.tmp"])
        .arg(format!("{}/", srv.display()))
        .arg(&expect)
        .status()
        .unwrap();
    assert!(st.success());
    // A pull is not an admin's push: no setuid bit comes with it.
    fs::set_permissions(expect.join("cgi/suid"), fs::Permissions::from_mode(0o755)).unwrap();
    touch(&expect.join("cgi/suid"), 1_700_000_400);
    let cfg = c.client.display().to_string();
    let herd = |args: &[&str]| {
        Command::new(herd_bin())
            .args(["sync"])
            .args(args)
            .args(["--config", &cfg])
            .stdin(Stdio::null())
            .output()
            .unwrap()
    };
    let as_node = |n: &str| [c.pki(&format!("{n}.crt")), c.pki(&format!("{n}.key"))];
    let dest = pulled.display().to_string();

    // An admin pulls; stale local files go with --delete.
    file(
        &pulled,
        "stale.txt",
        b"not in the module\n",
        0o644,
        1_500_000_000,
    );
    let o = herd(&["pull", "node03::webdata", &dest, "--delete", "--dry-run"]);
    let out = String::from_utf8_lossy(&o.stdout).into_owned();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert!(
        out.contains("would remove stale.txt") && out.contains("would create img/logo.png"),
        "{out}"
    );
    assert!(pulled.join("stale.txt").exists() && !pulled.join("index.html").exists());
    let o = herd(&["pull", "node03::webdata", &dest, "--delete", "--json"]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(v["ok"], true, "{v}");
    assert_eq!(v["result"]["written"], 4, "{v}");
    assert_eq!(v["result"]["removed"], 1, "{v}");
    assert_eq!(hashed(&pulled), hashed(&expect));

    // A node of @web may pull; node03 is not in the list; unknown modules are named.
    let [crt, key] = as_node("node01");
    let again = c.dir.path("by-node01").display().to_string();
    let o = herd(&[
        "pull",
        "node03::webdata",
        &again,
        "-z",
        "--cert",
        &crt,
        "--key",
        &key,
    ]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert_eq!(hashed(&c.dir.path("by-node01")), hashed(&expect));
    let [crt3, key3] = as_node("node03");
    let o = herd(&[
        "pull",
        "node01::webdata",
        "/tmp/never",
        "--cert",
        &crt3,
        "--key",
        &key3,
    ]);
    let err = String::from_utf8_lossy(&o.stderr).into_owned();
    assert!(!o.status.success(), "{err}");
    assert!(
        err.contains("\"node03\" (node certificate) may not pull module \"webdata\""),
        "{err}"
    );
    assert!(!Path::new("/tmp/never").exists());
    let o = herd(&["pull", "node03::nope", &dest]);
    let err = String::from_utf8_lossy(&o.stderr).into_owned();
    assert!(
        !o.status.success() && err.contains("node03 has no module \"nope\""),
        "{err}"
    );
    let o = herd(&["pull", "node03-webdata", &dest]);
    assert_eq!(
        o.status.code(),
        Some(64),
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );

    // A puller that asks for what the manifest does not offer (an excluded file, a path
    // outside) gets none of it: the agent sends only the manifest's regular files.
    let asked = {
        use herd_agent::frame::{Frame, FrameReader, Kind};
        let (rt, tls, node03) = c.raw_client("node01", 3);
        rt.block_on(async {
            let stream = herd_agent::client::connect(tls, &node03, Duration::from_secs(5))
                .await
                .unwrap();
            let (rd, mut wr) = tokio::io::split(stream);
            let mut rd = FrameReader::new(rd);
            let req = herd_agent::proto::Request::Pull(herd_agent::proto::PullRequest {
                module: "webdata".into(),
                ..Default::default()
            });
            herd_agent::frame::write_frames(&mut wr, &[Frame::json(Kind::Request, 0, &req)])
                .await
                .unwrap();
            // The manifest, to its end.
            while let Some(f) = rd.read().await.unwrap() {
                if f.kind == Kind::Manifest && f.payload.is_empty() {
                    break;
                }
            }
            let wants = b"F draft.tmp\nF img/../../secret\nF index.html\n".to_vec();
            herd_agent::frame::write_frames(
                &mut wr,
                &[
                    Frame::new(Kind::Want, 0, wants),
                    Frame::new(Kind::Want, 0, Vec::new()),
                ],
            )
            .await
            .unwrap();
            let mut got = Vec::new();
            while let Ok(Some(f)) = rd.read().await {
                got.push((f.kind, String::from_utf8_lossy(&f.payload).into_owned()));
            }
            got
        })
    };
    assert!(
        !asked
            .iter()
            .any(|(k, p)| *k == herd_agent::frame::Kind::FileData && !p.is_empty()),
        "{asked:?}"
    );
    assert!(
        !asked
            .iter()
            .any(|(_, p)| p.contains("draft") || p.contains("node03</h1>")),
        "{asked:?}"
    );

    // Pushes into a module: its write list (and admins), never into a read-only one.
    let src = c.dir.path("upload");
    file(&src, "report.csv", b"a,b\n1,2\n", 0o644, 1_700_000_500);
    let s = src.display().to_string();
    let o = herd(&[
        "push", &s, "-w", "node02", "--module", "drop", "--cert", &crt, "--key", &key,
    ]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert_eq!(
        fs::read(c.dir.path("drop/report.csv")).unwrap(),
        b"a,b\n1,2\n"
    );
    let [crt2, key2] = as_node("node02");
    let o = herd(&[
        "push", &s, "-w", "node02", "--module", "drop", "--cert", &crt2, "--key", &key2,
    ]);
    let err = String::from_utf8_lossy(&o.stderr).into_owned();
    assert!(
        !o.status.success() && err.contains("may not push into module \"drop\""),
        "{err}"
    );
    let o = herd(&[
        "push", &s, "-w", "node02", "--module", "webdata", "--cert", &crt, "--key", &key,
    ]);
    let err = String::from_utf8_lossy(&o.stderr).into_owned();
    assert!(
        !o.status.success() && err.contains("(it is read-only)"),
        "{err}"
    );
    assert!(!srv.join("report.csv").exists());

    // node02's daemon pulls node03::webdata on its schedule, and again after a change.
    let sched = c.dir.path("scheduled");
    wait_for("the scheduled pull", Duration::from_secs(20), || {
        sched.exists() && hashed(&sched) == hashed(&expect)
    });
    file(&srv, "news.html", b"new\n", 0o644, 1_700_000_900);
    fs::remove_file(srv.join("cgi/run")).unwrap();
    // The module as it is now, less its excludes (rsync -a would leave the two changed
    // directories with the time of its run, so the source itself is the reference here).
    let module_now = || {
        let mut v = hashed(&srv);
        v.retain(|l| !l.starts_with("draft.tmp "));
        for l in &mut v {
            if l.starts_with("cgi/suid ") {
                *l = l.replace(" 4755 ", " 755 ");
            }
        }
        v
    };
    wait_for("the next scheduled pull", Duration::from_secs(20), || {
        hashed(&sched) == module_now()
    });
    // The agent's audit log has the pulls, with who asked.
    let audit = fs::read_to_string(c.dir.path("audit-node03.log")).unwrap();
    assert!(
        audit
            .lines()
            .any(|l| l.contains("\"pull\"") && l.contains("\"node02\"")),
        "{audit}"
    );
}

/// A directory that is a private tmpfs in each agent's mount namespace (and an empty mount
/// point here, removed at the end).
struct PrivateDest(String);

impl PrivateDest {
    fn new(test: &str) -> PrivateDest {
        PrivateDest(format!("/tmp/herd-{test}-{}", std::process::id()))
    }

    /// The command prefix that gives an agent its own tmpfs there.
    fn script(&self) -> String {
        format!(
            "mkdir -p {0} && mount -t tmpfs -o size=64m herd-test {0} && exec \"$0\" \"$@\"",
            self.0
        )
    }

    /// The agent's copy, seen through its root in /proc.
    fn of(&self, pid: u32) -> std::path::PathBuf {
        std::path::PathBuf::from(format!("/proc/{pid}/root{}", self.0))
    }
}

impl Drop for PrivateDest {
    fn drop(&mut self) {
        let _ = fs::remove_dir(&self.0);
    }
}

#[test]
fn a_push_through_the_agent_tree_makes_every_node_the_same() {
    let dest = PrivateDest::new("tree");
    let script = dest.script();
    let mut c = Cluster::with_prefix(
        "synctree",
        8,
        |_, _| String::new(),
        &[
            "unshare",
            "-m",
            "--propagation",
            "private",
            "--",
            "sh",
            "-c",
            &script,
        ],
    );
    let src = c.dir.path("src");
    file(&src, "index.html", b"<h1>tree</h1>\n", 0o644, 1_700_000_000);
    for i in 0..50 {
        file(
            &src,
            &format!("d{}/f{i}", i % 5),
            format!("file {i}\n").as_bytes(),
            0o640,
            1_700_000_000 + i,
        );
    }
    let big: Vec<u8> = (0..2_000_000u32)
        .map(|i| (i.wrapping_mul(2654435761) >> 11) as u8)
        .collect();
    file(&src, "data/big.bin", &big, 0o644, 1_700_000_100);
    symlink("../index.html", src.join("data/home")).unwrap();
    // An admin's push keeps setuid bits (a pull or a module push would not).
    file(&src, "data/tool", b"#!/bin/sh\n", 0o4755, 1_700_000_150);
    for d in ["d0", "d1", "d2", "d3", "d4", "data"] {
        touch(&src.join(d), 1_650_000_000);
    }
    touch(&src, 1_650_000_001);
    let reference = c.dir.path("reference");
    let rsync = |from: &Path, to: &Path| {
        let _ = fs::remove_dir_all(to);
        let st = Command::new("rsync")
            .args(["-a", "--delete"])
            .arg(format!("{}/", from.display()))
            .arg(to)
            .status()
            .unwrap();
        assert!(st.success());
    };
    rsync(&src, &reference);
    let cfg = c.client.display().to_string();
    let push = |extra: &[&str]| {
        let o = Command::new(herd_bin())
            .args([
                "sync",
                "push",
                src.to_str().unwrap(),
                "--config",
                &cfg,
                "--dest",
                &dest.0,
            ])
            .args(["--delete", "--fanout", "2"])
            .args(extra)
            .stdin(Stdio::null())
            .output()
            .unwrap();
        (
            String::from_utf8_lossy(&o.stdout).into_owned(),
            String::from_utf8_lossy(&o.stderr).into_owned(),
            o.status.code(),
        )
    };
    let (out, err, code) = push(&["-w", "node[01-08]"]);
    assert_eq!(code, Some(0), "{out}{err}");
    assert_eq!(out.lines().count(), 8, "{out}");
    for (i, a) in c.agents.iter().enumerate() {
        assert_eq!(
            hashed(&dest.of(a.pid())),
            hashed(&reference),
            "node{:02}",
            i + 1
        );
    }
    // The client reached two nodes (one per group); the others got it from their relays.
    let who = |n: usize| {
        let log = fs::read_to_string(c.dir.path(&format!("audit-node{n:02}.log"))).unwrap();
        log.lines()
            .filter(|l| l.contains("\"start\""))
            .map(|l| {
                serde_json::from_str::<serde_json::Value>(l).unwrap()["who"]
                    .as_str()
                    .unwrap()
                    .to_string()
            })
            .next_back()
            .unwrap()
    };
    let by_admin: Vec<usize> = (1..=8).filter(|&n| who(n) == "admin").collect();
    assert_eq!(by_admin, [1, 5]);
    assert!((2..=8)
        .filter(|n| *n != 5)
        .all(|n| who(n).starts_with("node")));

    // A change: a 1 % rewrite of the big file travels as one delta down the tree, a removed
    // file goes; and a group head that is down is replaced by the next node of its group.
    let mut changed = big.clone();
    changed[1_000_000..1_020_000].fill(1);
    file(&src, "data/big.bin", &changed, 0o644, 1_700_000_200);
    fs::remove_file(src.join("d3/f8")).unwrap();
    // A new file sorted before the delta: it goes out while the nodes still sign their old
    // copies, and each relay must already know who wants it.
    file(
        &src,
        "a-first.txt",
        b"sent before the delta\n",
        0o644,
        1_700_000_250,
    );
    touch(&src, 1_650_000_001);
    touch(&src.join("data"), 1_650_000_000);
    touch(&src.join("d3"), 1_650_000_000);
    rsync(&src, &reference);
    crate::exec::kill(&mut c.agents[4]);
    let (out, err, code) = push(&["-w", "node[01-08]"]);
    assert_eq!(code, Some(1), "{out}{err}");
    assert!(err.contains("node05: not reached"), "{err}");
    for (i, a) in c.agents.iter().enumerate().filter(|(i, _)| *i != 4) {
        assert_eq!(
            hashed(&dest.of(a.pid())),
            hashed(&reference),
            "node{:02}",
            i + 1
        );
    }
    // Each node took the big file as a delta: far fewer bytes than the file.
    for line in out.lines() {
        let sent: u64 = line
            .split(" sent)")
            .next()
            .and_then(|l| l.rsplit(", ").next())
            .and_then(|n| n.parse().ok())
            .unwrap_or_else(|| panic!("{line}"));
        assert!(sent < 200_000, "{line}");
    }
    assert_eq!(who(6), "admin", "node06 took over its group");

    // Compressed on the wire (-z): text shrinks, through the relays as it is.
    let text: String = (0..40_000)
        .map(|i| format!("line {i} of a log\n"))
        .collect();
    file(&src, "logs/app.log", text.as_bytes(), 0o644, 1_700_000_300);
    touch(&src.join("logs"), 1_650_000_000);
    touch(&src, 1_650_000_001);
    rsync(&src, &reference);
    let (out, err, code) = push(&["-w", "node[01-04],node[06-08]", "-z"]);
    assert_eq!(code, Some(0), "{out}{err}");
    for (i, a) in c.agents.iter().enumerate().filter(|(i, _)| *i != 4) {
        assert_eq!(
            hashed(&dest.of(a.pid())),
            hashed(&reference),
            "node{:02}",
            i + 1
        );
    }
    for line in out.lines() {
        // "nodeNN: 1 written (BYTES bytes, SENT sent), ..."
        let nums: Vec<u64> = line
            .split(|c: char| !c.is_ascii_digit())
            .filter_map(|n| n.parse().ok())
            .collect();
        let (bytes, sent) = (nums[2], nums[3]);
        assert!(bytes > 600_000 && sent * 5 < bytes, "{line}");
    }

    // A push through relays killed mid-transfer: every node below sees the end, drops its
    // temporary file and keeps the old copy (nothing waits for ever).
    file(
        &src,
        "data/huge.bin",
        &vec![5u8; 24 << 20],
        0o644,
        1_700_000_400,
    );
    let mut child = Command::new(herd_bin())
        .args(["sync", "push", src.to_str().unwrap(), "--config", &cfg])
        .args(["--dest", &dest.0, "-w", "node[01-04]", "--fanout", "1"])
        .args(["--bwlimit", "2M"])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let tmp_in = |pid: u32| {
        fs::read_dir(dest.of(pid).join("data")).is_ok_and(|mut d| {
            d.any(|e| e.is_ok_and(|e| e.file_name().to_string_lossy().contains("herd-tmp")))
        })
    };
    let chain: Vec<u32> = c.agents[..4].iter().map(|a| a.pid()).collect();
    wait_for(
        "the transfer to reach the end of the chain",
        Duration::from_secs(20),
        || tmp_in(chain[3]),
    );
    child.kill().unwrap();
    child.wait().unwrap();
    wait_for(
        "every temporary file to go",
        Duration::from_secs(15),
        || chain.iter().all(|&p| !tmp_in(p)),
    );
    for &p in &chain {
        assert!(!dest.of(p).join("data/huge.bin").exists());
    }

    // A node's certificate cannot push by itself, grant or not.
    let (out, err, code) = push(&[
        "-w",
        "node01",
        "--cert",
        &c.pki("node02.crt"),
        "--key",
        &c.pki("node02.key"),
    ]);
    assert_ne!(code, Some(0), "{out}{err}");
    assert!(err.contains("needs an admin certificate"), "{err}");
}

/// Everything under `base` but `skip` (the module, whose root takes the manifest's mode) and
/// its content: kind, mode, mtime, content or target.
fn snapshot(base: &Path, skip: &Path) -> Vec<String> {
    let mut out = Vec::new();
    let mut todo = vec![base.to_path_buf()];
    while let Some(dir) = todo.pop() {
        for item in fs::read_dir(&dir).unwrap() {
            let p = item.unwrap().path();
            if p == skip {
                continue;
            }
            let m = fs::symlink_metadata(&p).unwrap();
            let what = if m.file_type().is_symlink() {
                format!("-> {}", fs::read_link(&p).unwrap().display())
            } else if m.is_file() {
                format!("{:?}", fs::read(&p).unwrap())
            } else {
                "dir".into()
            };
            use std::os::unix::fs::MetadataExt;
            out.push(format!(
                "{} {what} {:o} {}",
                p.display(),
                m.mode(),
                m.mtime()
            ));
            if m.is_dir() {
                todo.push(p);
            }
        }
    }
    out.sort();
    out
}

#[test]
fn a_node_pushing_into_a_module_writes_nothing_outside_it() {
    let c = Cluster::with("syncesc", 2, |dir, net| {
        let o = net.ip(1).octets();
        format!(
            "[nodes]\n\"node[01-02]\" = \"127.{}.{}.[1-2]\"\n\
             [sync.module.drop]\npath = \"{}\"\nread-only = false\nwrite = [\"node02\"]\n",
            o[1],
            o[2],
            dir.path("base/drop").display(),
        )
    });
    let base = c.dir.path("base");
    let drop = base.join("drop");
    fs::create_dir_all(&drop).unwrap();
    fs::set_permissions(&drop, fs::Permissions::from_mode(0o755)).unwrap();
    file(&base, "cron.d/job", b"# a job\n", 0o644, 1_500_000_000);
    let before = snapshot(&base, &drop);
    // node02 may write into the module; it speaks the protocol itself, with hand-made
    // manifests (what a compromised node can send).
    let (rt, tls, target) = c.raw_client("node02", 1);
    let push = |manifest: &str| {
        let req = herd_agent::proto::SyncRequest {
            module: Some("drop".into()),
            ..Default::default()
        };
        let tree = herd_agent::sync::Tree {
            root: c.dir.path("src"),
            lines: std::sync::Arc::new(manifest.as_bytes().to_vec()),
            files: Default::default(),
        };
        let opts = herd_agent::sync::PushOptions {
            limit: Duration::from_secs(5),
            ..Default::default()
        };
        let mut res = rt.block_on(herd_agent::sync::push(
            tls.clone(),
            vec![target.clone()],
            1,
            req,
            tree,
            opts,
        ));
        res.pop().unwrap().1
    };
    let e = |path: &str, kind: &str| {
        format!(
            "{{\"path\":\"{path}\",{kind},\"mode\":511,\"uid\":0,\"gid\":0,\"mtime\":0,\"mtime-nsec\":0}}\n"
        )
    };
    let root = e("", "\"type\":\"dir\"");
    let link = |p: &str, t: &str| e(p, &format!("\"type\":\"symlink\",\"target\":\"{t}\""));
    let f = |p: &str| e(p, "\"type\":\"file\",\"size\":5");
    // Chained symlinks (`s -> .`, `t -> s/s/../../cron.d`) with a file under `t`, a file under
    // a file, a file under an absolute symlink: each manifest is refused whole.
    for (manifest, why) in [
        (
            format!(
                "{root}{}{}{}",
                link("s", "."),
                link("t", "s/s/../../cron.d"),
                f("t/evil")
            ),
            "\"t/evil\": its parent is not a directory of the tree",
        ),
        (
            format!("{root}{}{}", f("x"), f("x/evil")),
            "\"x/evil\": its parent",
        ),
        (
            format!("{root}{}{}", link("a", "/etc"), f("a/evil")),
            "\"a/evil\": its parent",
        ),
        (
            format!("{root}{}", f("../cron.d/evil")),
            "'..' leads out of the tree",
        ),
    ] {
        let err = push(&manifest).unwrap_err().problem().unwrap();
        assert!(err.contains(why), "{manifest}: {err}");
    }
    // The symlinks alone: the ones that lead out are refused, the rest are made.
    let done = push(&format!(
        "{root}{}{}{}",
        link("s", "."),
        link("t", "s/s/../../cron.d"),
        link("u", "/etc")
    ))
    .unwrap();
    let refused: Vec<&str> = done.refused.iter().map(|(p, _)| p.as_str()).collect();
    assert_eq!(refused, ["t", "u"], "{done:?}");
    assert_eq!(fs::read_link(drop.join("s")).unwrap(), Path::new("."));
    assert!(fs::symlink_metadata(drop.join("t")).is_err());
    assert_eq!(snapshot(&base, &drop), before);
    // The module root keeps its own mode: the manifests said 0777.
    let mode = fs::metadata(&drop).unwrap().permissions().mode() & 0o7777;
    assert_eq!(mode, 0o755, "{mode:o}");
}
