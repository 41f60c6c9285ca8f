//! The agent's own defences, tried against the real binary: connections that never finish
//! their handshake, a relay that changes stdin, an audit log that cannot be written, and the
//! modes of the files that hold secrets.

use std::io::Read;
use std::net::{Ipv4Addr, SocketAddr};
use std::os::unix::fs::PermissionsExt;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use herd_agent::frame::{write_frames, Frame, FrameReader, Kind};
use herd_agent::proto::{ExecRequest, Failure, Request, StdinDigest};

use crate::exec::{text, Cluster};
use crate::util::herd_bin;

/// Opens `n` TCP connections to `to` that never say anything, spread over the source
/// addresses `from` (`None`: the one the kernel picks, as `herd exec` gets).
fn idle_connections(
    to: SocketAddr,
    from: &[Option<Ipv4Addr>],
    n: usize,
) -> Vec<std::net::TcpStream> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let mut all = Vec::with_capacity(n);
        for i in 0..n {
            let s = tokio::net::TcpSocket::new_v4().unwrap();
            if let Some(ip) = from[i % from.len()] {
                s.bind(SocketAddr::from((ip, 0))).unwrap();
            }
            all.push(s.connect(to).await.unwrap().into_std().unwrap());
        }
        all
    })
}

/// How many of the connections the agent has not closed.
fn still_open(conns: &[std::net::TcpStream]) -> usize {
    conns
        .iter()
        .filter(|s| {
            let _ = s.set_nonblocking(true);
            let mut b = [0u8; 1];
            matches!(s.peek(&mut b), Err(e) if e.kind() == std::io::ErrorKind::WouldBlock)
        })
        .count()
}

#[test]
fn seventy_idle_connections_leave_room_for_an_admin() {
    let c = Cluster::with("agentidle", 1, |_, _| "max-connections = 64\n".into());
    let agent = c.net.addr(1, 2875);
    let ten: Vec<_> = (100..110).map(|h| Some(c.net.ip(h))).collect();
    // What each source may hold: 8 from one address; 32 (half of max-connections) in all.
    let cases: [(&str, Vec<Option<Ipv4Addr>>, usize); 3] = [
        ("one other source", vec![Some(c.net.ip(200))], 8),
        ("ten sources", ten, 32),
        ("the admin's own source", vec![None], 8),
    ];
    for (what, from, cap) in cases {
        let flood = idle_connections(agent, &from, 70);
        // The agent holds no more than the caps; the rest it closes at once.
        let t = Instant::now();
        while still_open(&flood) > cap && t.elapsed() < Duration::from_secs(1) {
            std::thread::sleep(Duration::from_millis(20));
        }
        let held = still_open(&flood);
        assert!((1..=cap).contains(&held), "{what}: {held} held");
        let t = Instant::now();
        let o = c.exec(&["-w", "node01", "echo served"]);
        let took = t.elapsed();
        eprintln!(
            "{what}: {held} of 70 idle connections held; herd exec took {took:?}; {} left open",
            still_open(&flood)
        );
        assert_eq!(
            text(&o.stdout),
            "node01: served\n",
            "{what}: {}",
            text(&o.stderr)
        );
        assert!(o.status.success(), "{what}");
        assert!(took < Duration::from_secs(5), "{what}: {took:?}");
        drop(flood);
        // The agent sees these close before the next case floods it.
        std::thread::sleep(Duration::from_millis(300));
    }
}

#[test]
fn verified_peers_past_max_connections_are_told_the_agent_is_busy() {
    let c = Cluster::with("agentbusy", 1, |_, _| "max-connections = 1\n".into());
    let (rt, tls, target) = c.raw_client("admin", 1);
    // An admin's connection that has done its handshake holds the one slot.
    let holder = rt.block_on(herd_agent::client::connect(
        tls,
        &target,
        Duration::from_secs(5),
    ));
    let holder = holder.unwrap();
    let o = c.exec(&["-w", "node01", "true"]);
    assert_eq!(o.status.code(), Some(255), "{}", text(&o.stderr));
    assert!(
        text(&o.stderr).contains(
            "node01: agent: busy: node01 serves 1 connections already ([agent] max-connections)"
        ),
        "{}",
        text(&o.stderr)
    );
    // Its slot comes back when it goes.
    drop(holder);
    drop(rt);
    crate::util::wait_for("the slot to come back", Duration::from_secs(5), || {
        c.exec(&["-w", "node01", "true"]).status.success()
    });
}

#[test]
fn a_handshake_that_stalls_is_closed_after_two_seconds() {
    let c = Cluster::new("agentstall", 1);
    let agent = c.net.addr(1, 2875);
    // Nothing at all, and half a ClientHello (a record header promising 512 bytes, then 5).
    let partial: &[u8] = &[0x16, 0x03, 0x01, 0x02, 0x00, 0x01, 0x00, 0x01, 0xfc, 0x03];
    for sent in [&[][..], partial] {
        let mut s = std::net::TcpStream::connect(agent).unwrap();
        std::io::Write::write_all(&mut s, sent).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(15))).unwrap();
        let t = Instant::now();
        let mut buf = [0u8; 64];
        // The agent closes: end of stream, or a reset; a timeout here is the failure.
        let res = s.read(&mut buf);
        let took = t.elapsed();
        eprintln!("{} bytes sent: closed after {took:?} ({res:?})", sent.len());
        assert!(
            matches!(&res, Ok(0))
                || matches!(&res, Err(e) if e.kind() != std::io::ErrorKind::WouldBlock && e.kind() != std::io::ErrorKind::TimedOut),
            "{res:?}"
        );
        assert!(
            took >= Duration::from_millis(1500) && took < Duration::from_secs(5),
            "{took:?}"
        );
    }
}

/// A hand-made relay: node01's certificate, a genuine admin grant for `req`, and `stdin` as
/// the stdin it passes on. The frames the agent answers with.
fn relay_to(c: &Cluster, node: u8, req: &ExecRequest, stdin: &[u8]) -> Vec<Frame> {
    let (rt, tls, target) = c.raw_client("node01", node);
    let cert = herd_agent::pki::load_certs(&c.dir.path("pki/admin.crt"))
        .unwrap()
        .remove(0);
    let key = herd_agent::tls::signing_key(&c.dir.path("pki/admin.key")).unwrap();
    let nodes = herd_core::nodeset::NodeSet::parse("node[01-03]").unwrap();
    let mut req = req.clone();
    req.auth = Some(herd_agent::grant::sign(&req, &nodes, &cert, key.as_ref()).unwrap());
    rt.block_on(async {
        let s = herd_agent::client::connect(tls, &target, Duration::from_secs(5))
            .await
            .unwrap();
        let (rd, mut wr) = tokio::io::split(s);
        let mut frames = vec![Frame::json(Kind::Request, req.rank, &Request::Exec(req))];
        frames.extend(
            stdin
                .chunks(1000)
                .map(|c| Frame::new(Kind::Stdin, 1, c.to_vec())),
        );
        frames.push(Frame::new(Kind::StdinEnd, 1, Vec::new()));
        write_frames(&mut wr, &frames).await.unwrap();
        let mut rd = FrameReader::new(rd);
        let mut got = Vec::new();
        let read_all = async {
            while let Ok(Some(f)) = rd.read().await {
                got.push(f);
            }
        };
        tokio::time::timeout(Duration::from_secs(10), read_all)
            .await
            .expect("the agent answers");
        got
    })
}

#[test]
fn a_relay_that_changes_stdin_is_refused_and_relayed_stdin_reaches_every_node() {
    let c = Cluster::new("agentstdin", 3);
    let marker = c.dir.path("ran");
    let req = ExecRequest {
        command: format!("cat > {}; echo ran", marker.display()),
        stdin: true,
        stdin_digest: Some(StdinDigest::of(b"echo genuine\n")),
        rank: 1,
        size: 3,
        ..ExecRequest::default()
    };
    // Other bytes of the same length, and the genuine bytes with more after them.
    for forged in [&b"rm -rf /tmp\n"[..], b"echo genuine\nreboot\n"] {
        let got = relay_to(&c, 2, &req, forged);
        let refusal = got
            .iter()
            .find(|f| f.kind == Kind::Error)
            .map(|f| f.parse::<Failure>().unwrap().message);
        let refusal = refusal.unwrap_or_else(|| panic!("no refusal: {got:?}"));
        assert!(
            refusal.contains("refused: stdin is") && refusal.contains("grant"),
            "{refusal}"
        );
        assert!(!got.iter().any(|f| f.kind == Kind::Exit), "{got:?}");
        assert!(!marker.exists(), "the command ran on a changed stdin");
    }
    let audit = std::fs::read_to_string(c.dir.path("audit-node02.log")).unwrap();
    let refused: Vec<&str> = audit
        .lines()
        .filter(|l| l.contains("\"refused\"") && l.contains("stdin"))
        .collect();
    assert_eq!(refused.len(), 2, "{audit}");
    assert!(refused[0].contains("\"who\":\"node01\""), "{audit}");

    // The genuine stdin, through the same hand-made relay (a new run): it runs.
    let got = relay_to(&c, 2, &req, b"echo genuine\n");
    assert!(
        got.iter()
            .any(|f| f.kind == Kind::Stdout && f.payload == b"ran\n"),
        "{got:?}"
    );
    assert_eq!(std::fs::read(&marker).unwrap(), b"echo genuine\n");

    // Through a real tree (fanout 1: node01 relays to node02, which relays to node03), a
    // script on stdin reaches every node, and a large one too (many frames).
    let o = c.exec_with_stdin(
        &["-a", "--fanout", "1", "sh"],
        b"echo \"script on $HERD_NODE\"\n",
    );
    assert_eq!(
        crate::exec::sorted_lines(&o.stdout),
        [
            "node01: script on node01",
            "node02: script on node02",
            "node03: script on node03"
        ],
        "{}",
        text(&o.stderr)
    );
    let audit = std::fs::read_to_string(c.dir.path("audit-node03.log")).unwrap();
    assert!(
        audit.lines().last().unwrap().contains("\"via\":\"node02\""),
        "{audit}"
    );
    let big = vec![b'x'; 3 << 20];
    let o = c.exec_with_stdin(&["-a", "--fanout", "1", "wc -c"], &big);
    assert_eq!(
        crate::exec::sorted_lines(&o.stdout),
        ["node01: 3145728", "node02: 3145728", "node03: 3145728"],
        "{}",
        text(&o.stderr)
    );
    // Past the cap, a clear error before anything runs.
    let o = c.exec_with_stdin(
        &["-a", "--fanout", "1", "wc -c"],
        &vec![b'x'; (16 << 20) + 1],
    );
    assert_eq!(o.status.code(), Some(64), "{}", text(&o.stderr));
    assert!(
        text(&o.stderr).contains("standard input is over 16 MiB"),
        "{}",
        text(&o.stderr)
    );
    assert!(o.stdout.is_empty());
}

#[test]
fn an_audit_log_that_cannot_be_written_stops_commands() {
    let c = Cluster::new("agentaudit", 1);
    let marker = c.dir.path("ran");
    let audit = c.dir.path("audit-node01.log");
    // A directory where the log should be: no line can be written.
    std::fs::create_dir(&audit).unwrap();
    let cmd = format!("touch {}", marker.display());
    let o = c.exec(&["-w", "node01", &cmd]);
    assert_eq!(o.status.code(), Some(255), "{}", text(&o.stderr));
    let err = text(&o.stderr);
    assert!(
        err.contains("not run: cannot write the audit log") && err.contains("Is a directory"),
        "{err}"
    );
    assert!(!marker.exists(), "the command ran without its audit line");
    // A push writes files as root: it fails closed too.
    let (src, dest) = (c.dir.path("src"), c.dir.path("dest"));
    std::fs::create_dir_all(&src).unwrap();
    std::fs::write(src.join("f"), "x").unwrap();
    let o = Command::new(herd_bin())
        .args(["sync", "push", src.to_str().unwrap(), "--config"])
        .arg(&c.client)
        .args(["-w", "node01", "--dest", dest.to_str().unwrap()])
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert!(!o.status.success());
    assert!(
        text(&o.stderr).contains("cannot write the audit log"),
        "{}",
        text(&o.stderr)
    );
    assert!(!dest.exists(), "the push wrote without its audit line");

    // Once it can be written, the command runs; the log is created 0600.
    std::fs::remove_dir(&audit).unwrap();
    let o = c.exec(&["-w", "node01", &cmd]);
    assert!(o.status.success(), "{}", text(&o.stderr));
    assert!(marker.exists());
    let mode = std::fs::metadata(&audit).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600, "audit log mode {mode:o}");
    // A log an older herd left world-readable loses those bits at the next line.
    std::fs::set_permissions(&audit, std::fs::Permissions::from_mode(0o644)).unwrap();
    assert!(c.exec(&["-w", "node01", "true"]).status.success());
    let mode = std::fs::metadata(&audit).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o640, "audit log mode {mode:o}");
}

#[test]
fn keys_are_created_0600_and_certificates_0644() {
    let dir = crate::util::TempDir::new("agentkeys");
    let pki = dir.path("pki");
    let pki_s = pki.display().to_string();
    let run = |args: &[&str]| {
        let o = Command::new(herd_bin())
            .args(args)
            .stdin(Stdio::null())
            .output()
            .unwrap();
        assert!(o.status.success(), "{args:?}: {}", text(&o.stderr));
    };
    run(&["init", "--pki", &pki_s]);
    run(&["cert", "issue", "node[01-02]", "--pki", &pki_s]);
    run(&["cert", "issue", "alice", "--role", "admin", "--pki", &pki_s]);
    // Replaced with --force: the new key is created 0600 too, not copied over the old mode.
    run(&["cert", "issue", "node01", "--pki", &pki_s, "--force"]);
    let mode = |f: &str| std::fs::metadata(pki.join(f)).unwrap().permissions().mode() & 0o777;
    for key in [
        "ca.key",
        "admin.key",
        "node01.key",
        "node02.key",
        "alice.key",
    ] {
        assert_eq!(mode(key), 0o600, "{key}");
    }
    for crt in ["ca.crt", "admin.crt", "node01.crt", "alice.crt"] {
        assert_eq!(mode(crt), 0o644, "{crt}");
    }
}
