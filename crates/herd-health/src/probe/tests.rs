//! Probes against real sockets and real programs.

use std::io::Write;
use std::os::unix::fs::PermissionsExt;

use tokio::net::TcpListener;

use super::*;

const T: Duration = Duration::from_secs(5);

fn target(addr: SocketAddr) -> Target {
    Target {
        host: addr.ip().to_string(),
        addr: Some(addr),
        port: Some(addr.port()),
    }
}

/// A one-shot server on loopback: answers every connection with `reply` after reading a
/// request head (or at once when `reply_first`).
async fn server(reply: &'static [u8], reply_first: bool) -> SocketAddr {
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    tokio::spawn(async move {
        loop {
            let Ok((mut s, _)) = l.accept().await else {
                return;
            };
            tokio::spawn(async move {
                if !reply_first {
                    let mut buf = Vec::new();
                    let mut chunk = [0u8; 1024];
                    while find(&buf, b"\r\n\r\n").is_none() && find(&buf, b"\n").is_none() {
                        match s.read(&mut chunk).await {
                            Ok(0) | Err(_) => return,
                            Ok(n) => buf.extend_from_slice(&chunk[..n]),
                        }
                    }
                }
                let _ = s.write_all(reply).await;
            });
        }
    });
    addr
}

/// A port with nothing listening.
async fn closed_port() -> SocketAddr {
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    l.local_addr().unwrap()
}

fn http(status: Vec<(u16, u16)>, expect: Option<&str>) -> CheckKind {
    CheckKind::Http {
        method: "GET".into(),
        path: "/health".into(),
        host: None,
        status,
        expect: expect.map(Into::into),
        tls: None,
    }
}

async fn probe(kind: &CheckKind, addr: SocketAddr) -> Outcome {
    run(kind, &target(addr), T, &ExecEnv::default()).await
}

#[tokio::test]
async fn tcp_connects_sends_and_expects() {
    let up = server(b"+PONG\r\n", false).await;
    let plain = CheckKind::Tcp {
        send: None,
        expect: None,
    };
    assert_eq!(probe(&plain, up).await.verdict, Verdict::Ok);
    let o = probe(&plain, closed_port().await).await;
    assert_eq!(o.verdict, Verdict::Critical);
    assert!(o.summary.contains("refused"), "{}", o.summary);

    let ping = |want: &str| CheckKind::Tcp {
        send: Some("PING\r\n".into()),
        expect: Some(want.into()),
    };
    assert_eq!(probe(&ping("PONG"), up).await.verdict, Verdict::Ok);
    let o = probe(&ping("OK"), up).await;
    assert_eq!(o.verdict, Verdict::Critical);
    assert!(o.summary.contains("closed without"), "{}", o.summary);
}

#[tokio::test]
async fn http_judges_status_and_body() {
    let ok = server(
        b"HTTP/1.1 200 OK\r\nContent-Length: 11\r\n\r\nnode01 ok\r\n",
        false,
    )
    .await;
    let err = server(b"HTTP/1.1 503 Service Unavailable\r\n\r\n", false).await;
    let chunked = server(
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n4\r\nnode\r\n3\r\n-02\r\n0\r\n\r\n",
        false,
    )
    .await;
    let garbage = server(b"SSH-2.0-OpenSSH\r\n", true).await;
    let two = vec![(200, 399)];

    let o = probe(&http(two.clone(), None), ok).await;
    assert_eq!(o.verdict, Verdict::Ok, "{}", o.summary);
    assert!(o.summary.ends_with("HTTP/1.1 200 OK"), "{}", o.summary);
    assert_eq!(
        probe(&http(two.clone(), Some("node0[1-3]")), ok)
            .await
            .verdict,
        Verdict::Ok
    );
    let o = probe(&http(two.clone(), Some("node09")), ok).await;
    assert_eq!(o.verdict, Verdict::Critical);
    assert!(o.summary.contains("does not match"), "{}", o.summary);

    assert_eq!(
        probe(&http(two.clone(), None), err).await.verdict,
        Verdict::Critical
    );
    assert_eq!(
        probe(&http(vec![(200, 200), (500, 503)], None), err)
            .await
            .verdict,
        Verdict::Ok,
        "status ranges are inclusive"
    );
    // The body is de-chunked before matching: "node" + "-02".
    assert_eq!(
        probe(&http(two.clone(), Some("node-02")), chunked)
            .await
            .verdict,
        Verdict::Ok
    );
    let o = probe(&http(two.clone(), None), garbage).await;
    assert_eq!(o.verdict, Verdict::Critical);
    let o = probe(&http(two, None), closed_port().await).await;
    assert!(o.summary.contains("connect"), "{}", o.summary);
}

#[tokio::test]
async fn a_silent_server_times_out() {
    // Accepts (the kernel does) but never answers.
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    let o = run(
        &http(vec![(200, 299)], None),
        &target(addr),
        Duration::from_millis(200),
        &ExecEnv::default(),
    )
    .await;
    assert_eq!(o.verdict, Verdict::Critical);
    assert!(o.summary.contains("timed out"), "{}", o.summary);
    assert!(o.latency >= Duration::from_millis(200));
    drop(l);
}

/// Writes an executable script into a fresh temp dir; returns the dir (kept alive by the
/// caller) and the script's name.
fn script(body: &str) -> (TempDir, String) {
    let dir = TempDir::new();
    let name = "probe.sh".to_string();
    let p = dir.0.join(&name);
    let mut f = std::fs::File::create(&p).unwrap();
    writeln!(f, "#!/bin/sh\n{body}").unwrap();
    drop(f);
    std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o755)).unwrap();
    (dir, name)
}

/// A temp dir removed on drop.
struct TempDir(PathBuf);

impl TempDir {
    fn new() -> TempDir {
        use std::sync::atomic::{AtomicU32, Ordering};
        static N: AtomicU32 = AtomicU32::new(0);
        let p = std::env::temp_dir().join(format!(
            "herd-probe-{}-{}",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        ));
        std::fs::create_dir_all(&p).unwrap();
        TempDir(p)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

async fn exec_probe(
    body: &str,
    protocol: ExecProtocol,
    args: &[&str],
    no_hosts: bool,
    timeout: Duration,
) -> Outcome {
    let (dir, name) = script(body);
    let mut command = vec![name];
    command.extend(args.iter().map(|s| s.to_string()));
    let kind = CheckKind::Exec {
        command,
        protocol,
        no_hosts,
    };
    let env = ExecEnv {
        check: "web".into(),
        last_summary: "before".into(),
        mondir: vec![dir.0.clone()],
        ..ExecEnv::default()
    };
    let t = Target {
        host: "127.0.0.7".into(),
        addr: None,
        port: None,
    };
    run(&kind, &t, timeout, &env).await
}

#[tokio::test]
async fn exec_follows_the_mon_protocol() {
    let body = r#"echo "args: $*"; echo "check=$MON_CHECK last=$MON_LAST_SUMMARY"; exit 0"#;
    let o = exec_probe(body, ExecProtocol::Mon, &["-p", "80"], false, T).await;
    assert_eq!(o.verdict, Verdict::Ok);
    assert_eq!(o.summary, "args: -p 80 127.0.0.7", "hosts are appended");
    assert_eq!(o.detail, "check=web last=before\n");

    let o = exec_probe(
        r#"echo "args: $*"; exit 1"#,
        ExecProtocol::Mon,
        &["x"],
        true,
        T,
    )
    .await;
    assert_eq!(o.verdict, Verdict::Critical);
    assert_eq!(o.summary, "args: x", "no hosts after ;;");
}

#[tokio::test]
async fn exec_follows_the_nagios_protocol() {
    for (code, v) in [
        (0, Verdict::Ok),
        (1, Verdict::Warning),
        (2, Verdict::Critical),
        (3, Verdict::Unknown),
        (7, Verdict::Unknown),
    ] {
        let body = format!("echo 'HTTP OK - 0.01s | time=0.01s;1;2'; echo long; exit {code}");
        let o = exec_probe(&body, ExecProtocol::Nagios, &[], true, T).await;
        assert_eq!(o.verdict, v, "exit {code}");
        assert_eq!(o.summary, "HTTP OK - 0.01s");
        assert_eq!(o.detail, "perfdata: time=0.01s;1;2\nlong\n");
    }
}

#[tokio::test]
async fn a_hanging_program_is_killed_with_its_children_at_the_timeout() {
    let dir = TempDir::new();
    let marker = dir.0.join("survived");
    // The child of the monitor would write the marker after 2 s if it outlived the kill.
    let body = format!("(sleep 2; touch {}) & sleep 30; exit 0", marker.display());
    let start = Instant::now();
    let o = exec_probe(
        &body,
        ExecProtocol::Mon,
        &[],
        true,
        Duration::from_millis(300),
    )
    .await;
    assert!(
        start.elapsed() < Duration::from_secs(2),
        "{:?}",
        start.elapsed()
    );
    assert_eq!(o.verdict, Verdict::Critical);
    assert!(o.summary.contains("timeout"), "{}", o.summary);
    tokio::time::sleep(Duration::from_millis(2500)).await;
    assert!(!marker.exists(), "the monitor's child was not killed");
}

#[tokio::test]
async fn megabytes_of_output_are_truncated_to_4_kib() {
    let body = "echo summary; head -c 5000000 /dev/zero | tr '\\0' x; echo; exit 1";
    let o = exec_probe(body, ExecProtocol::Mon, &[], true, T).await;
    assert_eq!(o.verdict, Verdict::Critical);
    assert_eq!(o.summary, "summary");
    assert!(o.detail.len() <= MAX_OUTPUT + 32, "{}", o.detail.len());
    assert!(o.detail.ends_with("[output truncated]"));
}

#[tokio::test]
async fn a_missing_program_is_unknown_with_the_search_path() {
    let kind = CheckKind::Exec {
        command: vec!["no-such.monitor".into()],
        protocol: ExecProtocol::Mon,
        no_hosts: false,
    };
    let t = Target {
        host: "h".into(),
        addr: None,
        port: None,
    };
    let env = ExecEnv {
        mondir: vec!["/nonexistent/mon.d".into()],
        ..ExecEnv::default()
    };
    let o = run(&kind, &t, T, &env).await;
    assert_eq!(o.verdict, Verdict::Unknown);
    assert!(
        o.summary.contains("/nonexistent/mon.d, PATH"),
        "{}",
        o.summary
    );
}

#[tokio::test]
async fn udp_gets_a_reply_and_sees_a_closed_port_as_refused() {
    let echo = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let addr = echo.local_addr().unwrap();
    tokio::spawn(async move {
        let mut buf = [0u8; 512];
        while let Ok((n, from)) = echo.recv_from(&mut buf).await {
            let mut reply = b"pong:".to_vec();
            reply.extend_from_slice(&buf[..n]);
            let _ = echo.send_to(&reply, from).await;
        }
    });
    let kind = |expect: Option<&str>| CheckKind::Udp {
        send: "ping".into(),
        expect: expect.map(Into::into),
    };
    assert_eq!(probe(&kind(None), addr).await.verdict, Verdict::Ok);
    assert_eq!(
        probe(&kind(Some("pong:ping")), addr).await.verdict,
        Verdict::Ok
    );
    let o = probe(&kind(Some("PONG")), addr).await;
    assert_eq!(o.verdict, Verdict::Critical);
    assert!(o.summary.contains("without"), "{}", o.summary);

    let closed = {
        let s = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        s.local_addr().unwrap()
    };
    let o = probe(&kind(None), closed).await;
    assert_eq!(o.verdict, Verdict::Critical);
    assert!(o.summary.contains("refused"), "{}", o.summary);
}

#[tokio::test]
async fn icmp_echo_gets_a_reply_from_loopback() {
    let t = |ip: &str| Target {
        host: ip.into(),
        addr: None,
        port: None,
    };
    let o = run(&CheckKind::Icmp, &t("127.0.0.1"), T, &ExecEnv::default()).await;
    assert_eq!(o.verdict, Verdict::Ok, "{}", o.summary);
    assert_eq!(o.summary, "127.0.0.1: echo reply");
    let o = run(
        &CheckKind::Icmp,
        &t("not-an-address"),
        T,
        &ExecEnv::default(),
    )
    .await;
    assert_eq!(o.verdict, Verdict::Critical);
}

#[test]
fn the_internet_checksum_matches_rfc_1071() {
    // RFC 1071's example words 0001 f203 f4f5 f6f7 sum to ddf2; the checksum is its complement.
    assert_eq!(
        checksum(&[0x00, 0x01, 0xf2, 0x03, 0xf4, 0xf5, 0xf6, 0xf7]),
        !0xddf2
    );
    // A packet with its checksum in place sums to zero.
    let mut p = vec![8, 0, 0, 0, 0x12, 0x34, 0, 1, b'x'];
    let c = checksum(&p);
    p[2..4].copy_from_slice(&c.to_be_bytes());
    assert_eq!(checksum(&p), 0);
}

#[test]
fn certificate_expiry_warns_then_fails() {
    let day = 86_400;
    let judge = |not_after: Option<i64>, verdict: Verdict| {
        let mut o = Outcome::new(verdict, "200 OK");
        judge_expiry(
            &mut o,
            not_after,
            100 * day,
            Duration::from_secs(14 * day as u64),
        );
        o
    };
    let far = judge(Some(130 * day), Verdict::Ok);
    assert_eq!((far.verdict, far.summary.as_str()), (Verdict::Ok, "200 OK"));
    let near = judge(Some(110 * day + 5), Verdict::Ok);
    assert_eq!(near.verdict, Verdict::Warning);
    assert_eq!(near.summary, "200 OK, certificate expires in 10 days");
    // A failing response stays failing; the expiry is still named.
    let near_bad = judge(Some(110 * day), Verdict::Critical);
    assert_eq!(near_bad.verdict, Verdict::Critical);
    assert!(near_bad.summary.ends_with("expires in 10 days"));
    let gone = judge(Some(97 * day), Verdict::Ok);
    assert_eq!(gone.verdict, Verdict::Critical);
    assert_eq!(gone.summary, "200 OK, certificate expired 3 days ago");
    let unread = judge(None, Verdict::Ok);
    assert_eq!(unread.verdict, Verdict::Ok);
    assert!(unread.detail.contains("cannot read"));
}

/// On tokio's paused clock the timeout is exact and costs no real time: the probe ends at
/// its timeout, not before (a lower bound) and not a moment of real waiting later.
#[tokio::test(start_paused = true)]
async fn a_program_that_hangs_fails_at_its_timeout_on_tokios_clock() {
    let start = tokio::time::Instant::now();
    let real = Instant::now();
    let timeout = Duration::from_secs(20);
    let o = exec_probe("sleep 60; exit 0", ExecProtocol::Mon, &[], true, timeout).await;
    let took = start.elapsed();
    assert!(
        took >= timeout && took < timeout + Duration::from_secs(1),
        "{took:?}"
    );
    assert!(
        real.elapsed() < Duration::from_secs(10),
        "{:?}",
        real.elapsed()
    );
    assert_eq!(o.verdict, Verdict::Critical);
    assert!(
        o.summary.ends_with("killed after 20s (timeout)"),
        "{}",
        o.summary
    );
}

#[tokio::test(start_paused = true)]
async fn a_server_that_never_answers_fails_the_probe_at_its_timeout() {
    // Connections complete in the kernel's backlog; nothing ever reads or writes.
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = l.local_addr().unwrap();
    let kind = CheckKind::Tcp {
        send: None,
        expect: Some("never".into()),
    };
    let start = tokio::time::Instant::now();
    let timeout = Duration::from_secs(30);
    let o = run(&kind, &target(addr), timeout, &ExecEnv::default()).await;
    assert!(start.elapsed() >= timeout, "{:?}", start.elapsed());
    assert_eq!(o.summary, format!("{addr}: timed out after 30s"));
    drop(l);
}
