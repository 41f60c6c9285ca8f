//! No listener starves another: with the daemon at 256 open files, idle connections flood the
//! mon port, the dashboard and the agent while requests go through a virtual service and
//! `herd status` asks the control socket.

use std::io::Read;
use std::net::{SocketAddr, TcpStream};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::lb::service;
use crate::util::{get, herd_bin, Backend, Daemon, Net, TempDir};

/// Idle connections opened to each flooded port.
const FLOOD: usize = 300;
/// The daemon's open-files limit, soft and hard (so that raising it cannot escape).
const NOFILE: &str = "--nofile=256:256";

fn herd_ok(args: &[&str]) {
    let o = Command::new(herd_bin())
        .args(args)
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert!(o.status.success(), "herd {args:?}: {o:?}");
}

/// What a flood of one port came to.
struct Flooded {
    /// Connections the server keeps (served, or waiting in its backlog).
    held: Vec<TcpStream>,
    /// Connections the server closed at once (refused beyond its cap).
    closed: usize,
    /// Connections the kernel did not take within 300 ms (the backlog was full).
    unanswered: usize,
}

/// Opens `n` connections to `addr` and keeps the ones the server keeps.
fn flood(addr: SocketAddr, n: usize) -> Flooded {
    let mut held: Vec<TcpStream> = (0..n)
        .filter_map(|_| TcpStream::connect_timeout(&addr, Duration::from_millis(300)).ok())
        .collect();
    let unanswered = n - held.len();
    // Give the server time to accept (or refuse) them all.
    std::thread::sleep(Duration::from_millis(500));
    let before = held.len();
    held.retain(|s| {
        s.set_nonblocking(true).unwrap();
        let mut b = [0u8; 256];
        // Closed by the server: EOF, maybe after a last line (mon's "520 too many").
        let mut s = s;
        loop {
            match s.read(&mut b) {
                Ok(0) => return false,
                Ok(_) => continue,
                Err(_) => return true,
            }
        }
    });
    Flooded {
        closed: before - held.len(),
        held,
        unanswered,
    }
}

/// `herd status` against the daemon, given up after `limit` (a starved control socket takes
/// the connection into its backlog and never answers).
fn status_within(d: &Daemon, limit: Duration) -> Result<(), String> {
    let mut c = Command::new(herd_bin())
        .arg("status")
        .env("HERD_SOCKET", &d.socket)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + limit;
    loop {
        if let Some(st) = c.try_wait().unwrap() {
            return if st.success() {
                Ok(())
            } else {
                Err(format!("exited with {st}"))
            };
        }
        if Instant::now() > deadline {
            let _ = c.kill();
            let _ = c.wait();
            return Err(format!("no answer within {limit:?}"));
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Descriptors the process holds now.
fn open_fds(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd")).map_or(0, |d| d.count())
}

#[test]
fn floods_of_idle_connections_starve_neither_the_data_plane_nor_the_control_socket() {
    let test = "flood";
    let net = Net::new(test);
    let dir = TempDir::new("flood-pki");
    let pki = dir.path("pki").display().to_string();
    herd_ok(&["init", "--pki", &pki]);
    herd_ok(&["cert", "issue", "node01", "--pki", &pki]);
    let real = Backend::http(net.addr(11, 8080), "node01");
    let vip = net.addr(100, 8080);
    let (mon, web, agent) = (net.addr(2, 2583), net.addr(3, 9000), net.addr(4, 2875));
    let mut cfg = service(vip, "rr", &[(real.addr, 1)]).replace("workers = 2", "workers = 1");
    cfg.push_str(&format!(
        "\n[health]\nmon-listen = \"{mon}\"\n\n[web]\nlisten = \"{web}\"\n\n\
         [agent]\nlisten = [\"{}\"]\nname = \"node01\"\npki = \"{pki}\"\naudit-log = \"{}\"\n",
        agent.ip(),
        dir.path("audit.log").display()
    ));
    let d = Daemon::start_with(test, &cfg, &["prlimit", NOFILE]);

    let mut held = Vec::new();
    let mut figures = Vec::new();
    for (name, addr) in [("mon", mon), ("web", web), ("agent", agent)] {
        let f = flood(addr, FLOOD);
        figures.push(format!(
            "{name}: {FLOOD} tried, {} held, {} closed by the daemon, {} not taken by the kernel",
            f.held.len(),
            f.closed,
            f.unanswered
        ));
        held.extend(f.held);
    }
    figures.push(format!("daemon's descriptors: {}", open_fds(d.pid())));
    // Meanwhile the data plane and the control socket answer every time.
    let t0 = Instant::now();
    let (mut ok, mut failed) = (0, Vec::new());
    for i in 0..200 {
        match get(vip) {
            Ok(body) if body == "node01" => ok += 1,
            other => failed.push(format!("request {i}: {other:?}")),
        }
        if i % 20 == 0 {
            if let Err(e) = status_within(&d, Duration::from_secs(10)) {
                failed.push(format!("status {i}: {e}"));
            }
        }
        // A starved daemon fails each request only after the client's timeouts: three
        // failures tell enough.
        if failed.len() >= 3 {
            break;
        }
    }
    eprintln!(
        "flood at {NOFILE}: {}; {ok} requests through the VIP ok, {} failed, in {:?}",
        figures.join("; "),
        failed.len(),
        t0.elapsed()
    );
    assert!(failed.is_empty(), "{failed:#?}\n{}", d.log());
    assert_eq!(ok, 200);
    let log = crate::mon::plain(&d.log());
    assert!(!log.contains("Too many open files"), "{log}");
    // The caps came from the limit the test set.
    assert!(log.contains("open_files=256"), "{log}");
    drop(held);
}
