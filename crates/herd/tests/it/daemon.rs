//! Daemon life cycle: reload without loss, refusing bad changes, draining on SIGTERM.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use crate::lb::service;
use crate::util::{get, tally, wait_for, Backend, Daemon, Net};

fn echo(mut s: TcpStream) {
    let mut buf = [0u8; 1024];
    while let Ok(n) = s.read(&mut buf) {
        if n == 0 || s.write_all(&buf[..n]).is_err() {
            break;
        }
    }
}

fn roundtrip(s: &mut TcpStream, msg: &[u8]) {
    s.write_all(msg).unwrap();
    let mut buf = vec![0u8; msg.len()];
    s.read_exact(&mut buf).unwrap();
    assert_eq!(buf, msg);
}

#[test]
fn reload_applies_a_diff_and_keeps_connections() {
    let net = Net::new("reload_diff");
    let b1 = Backend::custom(net.addr(11, 7000), echo);
    let b2 = Backend::custom(net.addr(12, 7000), echo);
    let b3 = Backend::custom(net.addr(13, 7000), echo);
    let vip = net.addr(100, 7000);
    let mut d = Daemon::start(
        "reload_diff",
        &service(vip, "rr", &[(b1.addr, 1), (b2.addr, 1)]),
    );
    let mut conns: Vec<TcpStream> = (0..4).map(|_| TcpStream::connect(vip).unwrap()).collect();
    for c in conns.iter_mut() {
        roundtrip(c, b"before");
    }
    // b2 leaves, b3 joins, the scheduler changes: a diff on a live service.
    d.write_config(&service(vip, "wlc", &[(b1.addr, 1), (b3.addr, 1)]));
    assert_eq!(d.ok(&["reload"]).trim(), "reloaded");
    for c in conns.iter_mut() {
        roundtrip(c, b"after reload");
    }
    let json: serde_json::Value = serde_json::from_str(&d.ok(&["lb", "list", "--json"])).unwrap();
    assert_eq!(json[0]["scheduler"], "wlc");
    let reals = json[0]["reals"].as_array().unwrap();
    let b2r = reals
        .iter()
        .find(|r| r["address"] == b2.addr.to_string().as_str())
        .expect("b2 drains, still listed");
    assert_eq!(b2r["draining"], true);
    assert_eq!(b2r["weight"], 0);
    assert_eq!(b2r["active-conns"], 2);
    // New connections avoid the draining server.
    for _ in 0..6 {
        let mut s = TcpStream::connect(vip).unwrap();
        roundtrip(&mut s, b"new");
    }
    let json: serde_json::Value = serde_json::from_str(&d.ok(&["lb", "list", "--json"])).unwrap();
    let b2r = json[0]["reals"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["address"] == b2.addr.to_string().as_str())
        .unwrap()
        .clone();
    assert_eq!(
        b2r["stats"]["conns"], 2,
        "no new connections to a removed real server"
    );
    // Once its connections end, the removed server disappears.
    drop(conns);
    wait_for("b2 to drain", Duration::from_secs(10), || {
        let json: serde_json::Value =
            serde_json::from_str(&d.ok(&["lb", "list", "--json"])).unwrap();
        !json[0]["reals"]
            .as_array()
            .unwrap()
            .iter()
            .any(|r| r["address"] == b2.addr.to_string().as_str())
    });
    // SIGHUP reloads too.
    d.write_config(&service(vip, "sed", &[(b1.addr, 1), (b3.addr, 1)]));
    d.signal("HUP");
    wait_for("SIGHUP reload", Duration::from_secs(10), || {
        let json: serde_json::Value =
            serde_json::from_str(&d.ok(&["lb", "list", "--json"])).unwrap();
        json[0]["scheduler"] == "sed"
    });
    // The number of workers changes in place, in the same process, and the connections
    // opened before carry on.
    let pid = serde_json::from_str::<serde_json::Value>(&d.ok(&["status", "--json"])).unwrap()
        ["pid"]
        .clone();
    let mut held: Vec<TcpStream> = (0..4).map(|_| TcpStream::connect(vip).unwrap()).collect();
    for c in held.iter_mut() {
        roundtrip(c, b"before the workers change");
    }
    let one_worker =
        service(vip, "sed", &[(b1.addr, 1), (b3.addr, 1)]).replace("workers = 2", "workers = 1");
    d.write_config(&one_worker);
    let out = d.ok(&["reload"]);
    assert!(!out.contains("restart"), "{out}");
    let status: serde_json::Value = serde_json::from_str(&d.ok(&["status", "--json"])).unwrap();
    assert_eq!(status["workers"], 1);
    assert_eq!(status["pid"], pid);
    for c in held.iter_mut() {
        roundtrip(c, b"after the workers changed");
    }
    for _ in 0..6 {
        let mut s = TcpStream::connect(vip).unwrap();
        roundtrip(&mut s, b"new, one worker");
    }
    assert_eq!(
        d.wait(Duration::from_millis(10)),
        None,
        "daemon still running"
    );
}

#[test]
fn a_bad_reload_is_refused_and_the_old_config_keeps_running() {
    let net = Net::new("bad_reload");
    let b1 = Backend::http(net.addr(11, 8080), "node01");
    let vip = net.addr(100, 8080);
    let good = service(vip, "rr", &[(b1.addr, 1)]);
    let d = Daemon::start("bad_reload", &good);
    d.write_config(&good.replace("scheduler = \"rr\"", "scheduler = \"nope\""));
    let out = d.herd(&["reload"]);
    assert_eq!(out.status.code(), Some(78));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("herd.toml:7: lb.service[0].scheduler: unknown scheduler"),
        "{err}"
    );
    assert_eq!(get(vip).unwrap(), "node01");

    // A new service on a port that is taken: refused as a whole, nothing changes.
    let blocker = std::net::TcpListener::bind(net.addr(101, 8080)).unwrap();
    let two = format!(
        "{good}\n[[lb.service]]\naddress = \"{}\"\n",
        net.addr(101, 8080)
    );
    d.write_config(&two);
    let out = d.herd(&["reload"]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains(&format!("cannot listen on TCP {}", net.addr(101, 8080))),
        "{err}"
    );
    assert_eq!(get(vip).unwrap(), "node01");
    let json: serde_json::Value = serde_json::from_str(&d.ok(&["lb", "list", "--json"])).unwrap();
    assert_eq!(json.as_array().unwrap().len(), 1);
    drop(blocker);
}

#[test]
fn api_errors_are_clear_and_the_daemon_keeps_its_state() {
    let net = Net::new("api_errors");
    let b1 = Backend::http(net.addr(11, 8080), "node01");
    let vip = net.addr(100, 8080);
    let d = Daemon::start("api_errors", &service(vip, "rr", &[(b1.addr, 1)]));
    let v = vip.to_string();
    let cases: &[(&[&str], &str)] = &[
        (&["lb", "add", &v], "already exists"),
        (&["lb", "add", "127.0.0.1"], "invalid address"),
        (
            &["lb", "add", "127.0.0.1:1", "-s", "fastest"],
            "unknown scheduler",
        ),
        (
            &["lb", "real", "add", &v, &b1.addr.to_string()],
            "already exists",
        ),
        (
            &["lb", "real", "add", &v, "127.0.0.9:80", "--weight", "70000"],
            "out of range",
        ),
        (
            &["lb", "real", "edit", &v, "127.0.0.9:80"],
            "no real server",
        ),
        (&["lb", "remove", "127.0.0.1:9"], "no virtual service"),
    ];
    for (args, expect) in cases {
        let out = d.herd(args);
        assert!(!out.status.success(), "{args:?} should fail");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(
            err.contains(expect),
            "{args:?}: expected {expect:?} in {err:?}"
        );
    }
    let blocker = std::net::TcpListener::bind(net.addr(102, 8080)).unwrap();
    let out = d.herd(&["lb", "add", &net.addr(102, 8080).to_string()]);
    assert!(String::from_utf8_lossy(&out.stderr).contains("Address already in use"));
    drop(blocker);
    assert_eq!(get(vip).unwrap(), "node01");
    let json: serde_json::Value = serde_json::from_str(&d.ok(&["lb", "list", "--json"])).unwrap();
    assert_eq!(json.as_array().unwrap().len(), 1);
}

/// A daemon with `drain-timeout` and one echo service, a connection open through it, and
/// SIGTERM sent: returns once the listener has closed, so the drain has begun.
struct Draining {
    d: Daemon,
    c: TcpStream,
    _backend: Backend,
    /// When SIGTERM was sent.
    signalled: Instant,
}

fn start_draining(test: &str, drain_timeout: &str) -> Draining {
    let net = Net::new(test);
    let backend = Backend::custom(net.addr(11, 7000), echo);
    let vip = net.addr(100, 7000);
    let cfg = format!(
        "[daemon]\ndrain-timeout = \"{drain_timeout}\"\n{}",
        service(vip, "rr", &[(backend.addr, 1)])
    );
    let d = Daemon::start(test, &cfg);
    let mut c = TcpStream::connect(vip).unwrap();
    roundtrip(&mut c, b"hello");
    let signalled = Instant::now();
    d.signal("TERM");
    // New connections are refused once the listener is gone.
    wait_for("listener to close", Duration::from_secs(5), || {
        TcpStream::connect(vip).is_err()
    });
    Draining {
        d,
        c,
        _backend: backend,
        signalled,
    }
}

#[test]
fn sigterm_drains_open_connections_then_exits() {
    let Draining { mut d, mut c, .. } = start_draining("drain", "20s");
    // The open connection still works.
    roundtrip(&mut c, b"still here");
    assert_eq!(
        d.wait(Duration::from_millis(300)),
        None,
        "must wait for the open connection"
    );
    let t = Instant::now();
    drop(c);
    assert_eq!(d.wait(Duration::from_secs(10)), Some(0));
    assert!(t.elapsed() < Duration::from_secs(5));
    assert!(!d.socket.exists(), "control socket removed on exit");
}

#[test]
fn drain_timeout_bounds_the_wait() {
    // The daemon must wait for the open connection (not skip the drain), and not much
    // longer than the timeout. The signal is sent before the drain starts, so the lower bound
    // holds however slow the machine is.
    let Draining {
        mut d,
        c,
        signalled,
        ..
    } = start_draining("drain_timeout", "1s");
    assert_eq!(d.wait(Duration::from_secs(10)), Some(0));
    let waited = signalled.elapsed();
    assert!(
        waited >= Duration::from_secs(1),
        "exited {waited:?} after SIGTERM: the drain did not wait for the open connection"
    );
    assert!(
        waited < Duration::from_secs(8),
        "the 1 s drain timeout did not bound the wait ({waited:?})"
    );
    // Held open until here, so that the drain had a connection to wait for.
    drop(c);
}

#[test]
fn a_second_daemon_on_the_same_socket_is_refused() {
    let net = Net::new("second");
    let vip = net.addr(100, 7000);
    let d = Daemon::start("second", &service(vip, "rr", &[]));
    let out = std::process::Command::new(crate::util::herd_bin())
        .args(["daemon", "--config"])
        .arg(&d.config)
        .arg("--socket")
        .arg(&d.socket)
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("another herd daemon"));
    d.ok(&["status"]);
}

#[test]
fn save_writes_the_running_state_as_a_loadable_config() {
    let net = Net::new("save");
    let b1 = Backend::http(net.addr(11, 8080), "node01");
    let b2 = Backend::http(net.addr(12, 8080), "node02");
    let vip = net.addr(100, 8080);
    let d = Daemon::start("save", &service(vip, "wrr", &[(b1.addr, 1)]));
    d.ok(&[
        "lb",
        "real",
        "add",
        &vip.to_string(),
        &b2.addr.to_string(),
        "-w",
        "3",
    ]);
    let out = d.dir.path("saved.toml");
    // A symlink planted where a temporary file could go is not written through.
    let victim = d.dir.path("victim");
    std::fs::write(&victim, "untouched").unwrap();
    for tmp in ["saved.toml.herd-tmp", "saved.tmp~"] {
        std::os::unix::fs::symlink(&victim, d.dir.path(tmp)).unwrap();
    }
    d.ok(&["lb", "save", out.to_str().unwrap()]);
    assert_eq!(std::fs::read_to_string(&victim).unwrap(), "untouched");
    // The running state is a whole config (password hashes too): for root's eyes only.
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::symlink_metadata(&out)
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(mode & 0o7777, 0o600, "{mode:o}");
    let text = std::fs::read_to_string(&out).unwrap();
    assert!(
        text.contains(&format!("address = \"{}\"\nweight = 3", b2.addr)),
        "{text}"
    );
    // Reloading the saved file changes nothing.
    std::fs::copy(&out, &d.config).unwrap();
    d.ok(&["reload"]);
    let t = tally(vip, 8);
    assert_eq!(t.get("node01"), Some(&2), "{t:?}");
    assert_eq!(t.get("node02"), Some(&6), "{t:?}");
}

#[test]
fn one_hundred_reloads_under_load_lose_nothing() {
    use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
    use std::sync::Arc;

    let net = Net::new("reload_load");
    let b: Vec<Backend> = (1..=3)
        .map(|i| Backend::http(net.addr(10 + i, 8080), &format!("node0{i}")))
        .collect();
    let vip = net.addr(100, 8080);
    let a = service(
        vip,
        "wrr",
        &[(b[0].addr, 1), (b[1].addr, 2), (b[2].addr, 3)],
    );
    let c = service(
        vip,
        "wlc",
        &[(b[0].addr, 3), (b[1].addr, 2), (b[2].addr, 1)],
    );
    let d = Daemon::start("reload_load", &a);
    let stop = Arc::new(AtomicBool::new(false));
    let ok = Arc::new(AtomicUsize::new(0));
    let failed = Arc::new(AtomicUsize::new(0));
    let clients: Vec<_> = (0..4)
        .map(|_| {
            let (stop, ok, failed) = (stop.clone(), ok.clone(), failed.clone());
            std::thread::spawn(move || {
                // Bounded: at most 100k requests per client even if the reloads were slow.
                for _ in 0..100_000 {
                    if stop.load(Ordering::Relaxed) {
                        break;
                    }
                    match get(vip) {
                        Ok(_) => ok.fetch_add(1, Ordering::Relaxed),
                        Err(e) => {
                            eprintln!("request failed: {e}");
                            failed.fetch_add(1, Ordering::Relaxed)
                        }
                    };
                }
            })
        })
        .collect();
    for i in 0..100 {
        d.write_config(if i % 2 == 0 { &c } else { &a });
        d.ok(&["reload"]);
    }
    stop.store(true, Ordering::Relaxed);
    for t in clients {
        t.join().unwrap();
    }
    let status: serde_json::Value = serde_json::from_str(&d.ok(&["status", "--json"])).unwrap();
    assert_eq!(status["reloads"], 100);
    assert_eq!(
        failed.load(Ordering::Relaxed),
        0,
        "{} ok",
        ok.load(Ordering::Relaxed)
    );
    assert!(ok.load(Ordering::Relaxed) > 100);
}

#[test]
fn udp_sessions_end_with_their_listener() {
    let net = Net::new("udp_drain");
    let backend = std::net::UdpSocket::bind(net.addr(11, 5300)).unwrap();
    let baddr = backend.local_addr().unwrap();
    let echo = std::thread::spawn(move || {
        backend
            .set_read_timeout(Some(Duration::from_secs(10)))
            .unwrap();
        let mut buf = [0u8; 512];
        while let Ok((n, from)) = backend.recv_from(&mut buf) {
            let _ = backend.send_to(&buf[..n], from);
        }
    });
    let vip = net.addr(100, 5300);
    let cfg = format!(
        "[daemon]\ndrain-timeout = \"30s\"\n{}",
        crate::lb::service_with(vip, "rr", "protocol = \"udp\"", &[(baddr, 1)])
    );
    let mut d = Daemon::start("udp_drain", &cfg);
    let ask = |from: u8| {
        let s = std::net::UdpSocket::bind(net.addr(from, 0)).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
        s.send_to(b"ping", vip).unwrap();
        let mut buf = [0u8; 16];
        s.recv_from(&mut buf).map(|(n, _)| buf[..n].to_vec())
    };
    for c in 0..4 {
        assert_eq!(ask(200 + c).unwrap(), b"ping");
    }
    // Removing the service and adding it back: every new client is served by the new listener
    // (an old socket kept open by live sessions would swallow some of them).
    let v = vip.to_string();
    d.ok(&["ipvsadm", "-D", "-u", &v]);
    d.ok(&["ipvsadm", "-A", "-u", &v, "-s", "rr"]);
    d.ok(&["ipvsadm", "-a", "-u", &v, "-r", &baddr.to_string(), "-m"]);
    for c in 0..20 {
        assert_eq!(
            ask(150 + c).expect("reply through the re-added service"),
            b"ping"
        );
    }
    // Open UDP sessions do not hold up shutdown: they cannot hear from their clients anymore.
    let t = Instant::now();
    d.signal("TERM");
    assert_eq!(d.wait(Duration::from_secs(20)), Some(0));
    assert!(
        t.elapsed() < Duration::from_secs(10),
        "waited {:?}",
        t.elapsed()
    );
    drop(echo);
}

#[test]
fn a_second_sigterm_ends_the_drain_at_once() {
    let Draining { mut d, c, .. } = start_draining("second_term", "60s");
    let t = Instant::now();
    d.signal("TERM");
    assert_eq!(d.wait(Duration::from_secs(10)), Some(0));
    assert!(t.elapsed() < Duration::from_secs(5));
    // Held open until here, so that the drain had a connection to wait for.
    drop(c);
}

/// `herd daemon --socket PATH` with something at PATH: its exit code and stderr.
fn start_on(test: &str, what: &std::path::Path) -> (Option<i32>, String) {
    let net = Net::new(test);
    let dir = crate::util::TempDir::new(&format!("{test}-config"));
    let cfg = dir.path("herd.toml");
    std::fs::write(&cfg, service(net.addr(100, 7000), "rr", &[])).unwrap();
    let log = dir.path("daemon.log");
    let child = std::process::Command::new(crate::util::herd_bin())
        .args(["daemon", "--config"])
        .arg(&cfg)
        .arg("--socket")
        .arg(what)
        .stdin(std::process::Stdio::null())
        .stderr(std::fs::File::create(&log).unwrap())
        .spawn()
        .unwrap();
    // Killed on drop: a daemon that starts after all must not outlive the test.
    let mut d = Daemon {
        child: Some(child),
        socket: what.to_path_buf(),
        config: cfg,
        dir,
    };
    let code = d.wait(Duration::from_secs(20));
    (code, std::fs::read_to_string(&log).unwrap_or_default())
}

#[test]
fn a_regular_file_or_a_symlink_at_the_socket_path_is_kept_and_named() {
    use std::os::unix::fs::FileTypeExt;
    let dir = crate::util::TempDir::new("socket_file");
    let file = dir.path("herd.toml.bak");
    std::fs::write(&file, "precious\n").unwrap();
    let (code, err) = start_on("socket_file", &file);
    assert_eq!(code, Some(73), "{err}");
    assert!(
        err.contains(&file.display().to_string()) && err.contains("is a regular file"),
        "{err}"
    );
    assert_eq!(std::fs::read_to_string(&file).unwrap(), "precious\n");

    // A symbolic link, here to a stale socket: neither followed nor removed.
    let stale = dir.path("stale.sock");
    drop(std::os::unix::net::UnixListener::bind(&stale).unwrap());
    let link = dir.path("link.sock");
    std::os::unix::fs::symlink(&stale, &link).unwrap();
    let (code, err) = start_on("socket_link", &link);
    assert_eq!(code, Some(73), "{err}");
    assert!(err.contains("is a symbolic link"), "{err}");
    assert_eq!(std::fs::read_link(&link).unwrap(), stale);
    assert!(std::fs::symlink_metadata(&stale)
        .unwrap()
        .file_type()
        .is_socket());

    let sub = dir.path("a-directory");
    std::fs::create_dir(&sub).unwrap();
    let (code, err) = start_on("socket_dir", &sub);
    assert_eq!(code, Some(73), "{err}");
    assert!(err.contains("is a directory"), "{err}");
    assert!(sub.is_dir());
}

#[test]
fn a_stale_socket_is_replaced_by_one_of_mode_0600() {
    use std::os::unix::fs::{FileTypeExt, MetadataExt};
    let net = Net::new("socket_stale");
    let dir = crate::util::TempDir::new("socket_stale");
    let path = dir.path("herd.sock");
    // A socket nobody answers on (a crashed daemon's): `herd status` below reaches the new one.
    drop(std::os::unix::net::UnixListener::bind(&path).unwrap());
    let cfg = dir.path("herd.toml");
    std::fs::write(&cfg, service(net.addr(100, 7000), "rr", &[])).unwrap();
    let child = std::process::Command::new(crate::util::herd_bin())
        .args(["daemon", "--config"])
        .arg(&cfg)
        .arg("--socket")
        .arg(&path)
        .stdin(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    // Killed on drop, also when an assertion fails.
    let d = Daemon {
        child: Some(child),
        socket: path.clone(),
        config: cfg,
        dir,
    };
    wait_for("the daemon's socket", Duration::from_secs(20), || {
        std::os::unix::net::UnixStream::connect(&path).is_ok()
    });
    d.ok(&["status"]);
    let m = std::fs::symlink_metadata(&path).unwrap();
    assert!(m.file_type().is_socket());
    assert_eq!(m.mode() & 0o7777, 0o600);
    // Only the socket: the private directory it was bound in is gone.
    let names: Vec<String> = std::fs::read_dir(&d.dir.0)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().to_string())
        .collect();
    assert!(names.iter().all(|n| !n.starts_with('.')), "{names:?}");
}
