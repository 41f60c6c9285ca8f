//! The health monitor driving the director, with real sockets, real programs (mon's monitor
//! and alert scripts from Debian's `mon` package) and the CLI.

use std::net::SocketAddr;
use std::path::Path;
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::util::{get, wait_for, Backend, Daemon, Net, Peer, TempDir};

const MON_D: &str = "/usr/lib/mon/mon.d";
const ALERT_D: &str = "/usr/lib/mon/alert.d";

/// mon's scripts are peers these tests run against; CI installs them (`.ci/run`). A machine
/// without them fails here, with the fix, rather than skipping.
fn need_mon() {
    for f in ["tcp.monitor", "http.monitor", "fping.monitor"] {
        assert!(
            Path::new(MON_D).join(f).exists(),
            "{MON_D}/{f} is missing: apt-get install mon fping"
        );
    }
    assert!(
        Path::new(ALERT_D).join("file.alert").exists(),
        "{ALERT_D}/file.alert is missing: apt-get install mon"
    );
}

fn web(vip: SocketAddr, reals: &[SocketAddr], health: &str) -> String {
    let mut s = format!(
        "[lb]\nworkers = 1\nconnect-timeout = \"1s\"\n\n[[lb.service]]\nname = \"web\"\naddress = \"{vip}\"\nscheduler = \"rr\"\n"
    );
    for a in reals {
        s.push_str(&format!(
            "[[lb.service.real]]\naddress = \"{a}\"\nweight = 3\n"
        ));
    }
    s.push_str(health);
    s
}

fn health(d: &Daemon) -> Value {
    serde_json::from_str(&d.ok(&["health", "list", "--json"])).unwrap()
}

/// State of one target of one check, from `herd health list --json`.
fn state(d: &Daemon, check: &str, target: &str) -> String {
    let h = health(d);
    let c = h["checks"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["name"] == check)
        .unwrap_or_else(|| panic!("no check {check}: {h}"));
    let t = c["targets"]
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["target"] == target)
        .unwrap_or_else(|| panic!("no target {target}: {c}"));
    t["status"].as_str().unwrap().to_string()
}

/// (weight, health) of a real server, from `herd lb list --json`; None if not listed.
fn real(d: &Daemon, addr: SocketAddr) -> Option<(u64, String)> {
    let v: Value = serde_json::from_str(&d.ok(&["lb", "list", "--json"])).unwrap();
    v[0]["reals"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["address"] == addr.to_string())
        .map(|r| {
            (
                r["weight"].as_u64().unwrap(),
                r["health"].as_str().unwrap().to_string(),
            )
        })
}

/// Three HTTP backends node01..03 at .11-.13; a slot set to None stops one.
fn three_backends(net: Net) -> (Vec<SocketAddr>, Vec<Option<Backend>>) {
    let addrs: Vec<SocketAddr> = (1..=3).map(|i| net.addr(10 + i, 8080)).collect();
    let b = addrs
        .iter()
        .enumerate()
        .map(|(i, a)| Some(Backend::http(*a, &format!("node0{}", i + 1))))
        .collect();
    (addrs, b)
}

fn wait_all_up(d: &Daemon, addrs: &[SocketAddr]) {
    wait_for("all up", Duration::from_secs(5), || {
        addrs
            .iter()
            .all(|a| state(d, "http", &a.to_string()) == "up")
    });
}

#[test]
fn a_failing_real_server_is_quiesced_and_restored_within_the_thresholds() {
    let net = Net::new("hc_quiesce");
    let (addrs, mut b) = three_backends(net);
    let vip = net.addr(100, 8080);
    let cfg = web(
        vip,
        &addrs,
        "[[health.check]]\nname = \"http\"\ntype = \"http\"\nservice = \"web\"\ninterval = \"300ms\"\ntimeout = \"250ms\"\nrise = 2\nfall = 2\n",
    );
    let d = Daemon::start("hc_quiesce", &cfg);
    wait_all_up(&d, &addrs);

    // Stop node01: out within fall × interval + 1 s.
    b[0] = None;
    let t0 = Instant::now();
    wait_for("node01 quiesced", Duration::from_secs(5), || {
        real(&d, addrs[0]) == Some((0, "quiesced".into()))
    });
    let out = t0.elapsed();
    assert!(out <= Duration::from_millis(2 * 300 + 1000), "took {out:?}");
    assert_eq!(state(&d, "http", &addrs[0].to_string()), "down");
    // No client is sent there now.
    for _ in 0..30 {
        let body = get(vip).unwrap();
        assert_ne!(body, "node01");
    }

    // Back: in again within rise × interval + 1 s, with its configured weight.
    b[0] = Some(Backend::http(addrs[0], "node01"));
    let t1 = Instant::now();
    wait_for("node01 restored", Duration::from_secs(5), || {
        real(&d, addrs[0]) == Some((3, "up".into()))
    });
    let back = t1.elapsed();
    assert!(
        back <= Duration::from_millis(2 * 300 + 1000),
        "took {back:?}"
    );
    let seen: Vec<String> = (0..6).map(|_| get(vip).unwrap()).collect();
    assert!(seen.iter().any(|s| s == "node01"), "{seen:?}");
    eprintln!("quiesced after {out:?}, restored after {back:?}");

    // The history recorded both changes.
    let h: Value = serde_json::from_str(&d.ok(&["health", "history", "--json"])).unwrap();
    let events: Vec<&str> = h
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["targets"] == addrs[0].to_string())
        .map(|e| e["event"].as_str().unwrap())
        .collect();
    assert_eq!(&events[events.len() - 2..], ["down", "up"], "{h}");
}

#[test]
fn on_failure_remove_takes_the_server_out_of_the_table() {
    let net = Net::new("hc_remove");
    let addrs = [net.addr(11, 8080), net.addr(12, 8080)];
    let _b2 = Backend::http(addrs[1], "node02");
    let vip = net.addr(100, 8080);
    let cfg = web(
        vip,
        &addrs,
        "[[health.check]]\nname = \"tcp\"\ntype = \"tcp\"\nservice = \"web\"\ninterval = \"200ms\"\nfall = 1\non-failure = \"remove\"\n",
    );
    let d = Daemon::start("hc_remove", &cfg);
    wait_for("node01 removed", Duration::from_secs(5), || {
        real(&d, addrs[0]) == Some((0, "removed".into()))
    });
    assert_eq!(real(&d, addrs[1]), Some((3, "up".into())));
    let ipvs = d.ok(&["ipvsadm", "-L", "-n"]);
    assert!(!ipvs.contains(&addrs[0].to_string()), "{ipvs}");
    // Reload keeps the verdict (the monitor hands its state over).
    d.ok(&["reload"]);
    assert_eq!(real(&d, addrs[0]), Some((0, "removed".into())));
    assert!(!d
        .ok(&["ipvsadm", "-L", "-n"])
        .contains(&addrs[0].to_string()));
    assert_eq!(state(&d, "tcp", &addrs[0].to_string()), "down");
}

#[test]
fn mon_monitors_run_as_exec_checks_with_the_right_results() {
    need_mon();
    let net = Net::new("hc_mon_monitors");
    let up = net.addr(11, 8080);
    let down = net.addr(12, 8080);
    let _b = Backend::http(up, "node01");
    let cfg = format!(
        r#"[health]
mondir = ["{MON_D}"]

[[health.check]]
name = "tcp"
type = "exec"
hosts = ["{up_ip}", "{down_ip}"]
command = "tcp.monitor -p 8080"
interval = "500ms"
timeout = "10s"
rise = 1
fall = 1

[[health.check]]
name = "http"
type = "exec"
hosts = ["{up_ip}", "{down_ip}"]
command = "http.monitor -p 8080 -t 5 -u /"
interval = "500ms"
timeout = "10s"
rise = 1
fall = 1

[[health.check]]
name = "ping"
type = "exec"
hosts = ["{up_ip}"]
command = "fping.monitor"
interval = "500ms"
timeout = "10s"
rise = 1
fall = 1
"#,
        up_ip = up.ip(),
        down_ip = down.ip(),
    );
    let d = Daemon::start("hc_mon_monitors", &cfg);
    let want = [
        ("tcp", up.ip(), "up"),
        ("tcp", down.ip(), "down"),
        ("http", up.ip(), "up"),
        ("http", down.ip(), "down"),
        ("ping", up.ip(), "up"),
    ];
    wait_for("mon monitors' verdicts", Duration::from_secs(20), || {
        want.iter()
            .all(|(c, ip, s)| state(&d, c, &ip.to_string()) == *s)
    });
    // mon's summary line names the failing host.
    let h = health(&d);
    let tcp_down = h["checks"][0]["targets"][1]["summary"]
        .as_str()
        .unwrap()
        .to_string();
    assert!(tcp_down.contains(&down.ip().to_string()), "{tcp_down}");
}

#[test]
fn mons_file_alert_gets_mons_arguments_environment_and_stdin() {
    need_mon();
    let net = Net::new("hc_file_alert");
    let addr = net.addr(11, 8080);
    let dir = TempDir::new("hc_file_alert_out");
    let out = dir.path("alerts.log");
    let b = Backend::http(addr, "node01");
    let cfg = format!(
        r#"[health]
alertdir = ["{ALERT_D}"]

[[health.check]]
name = "http"
type = "http"
hosts = ["{addr}"]
interval = "200ms"
rise = 1
fall = 1

  [[health.check.alert]]
  exec = "file.alert -d {dir} alerts.log"

  [[health.check.alert]]
  on = "up"
  exec = "file.alert -d {dir} alerts.log"
"#,
        dir = dir.0.display(),
    );
    let d = Daemon::start("hc_file_alert", &cfg);
    wait_for("up", Duration::from_secs(5), || {
        state(&d, "http", &addr.to_string()) == "up"
    });
    drop(b);
    wait_for("the failure alert", Duration::from_secs(10), || {
        std::fs::read_to_string(&out).is_ok_and(|s| s.contains("OPSTATUS=0"))
    });
    let _b = Backend::http(addr, "node01");
    wait_for("the up alert", Duration::from_secs(10), || {
        std::fs::read_to_string(&out).is_ok_and(|s| s.contains("OPSTATUS=1"))
    });
    let text = std::fs::read_to_string(&out).unwrap();
    // file.alert writes: "$MON_ALERTTYPE $opt_g $opt_s $opt_t (date) $summary", DESCR, OPSTATUS,
    // the rest of stdin, ".".
    let records: Vec<&str> = text.split("\n.\n").filter(|r| !r.is_empty()).collect();
    assert_eq!(records.len(), 2, "{text}");
    let first: Vec<&str> = records[0].lines().collect();
    let head: Vec<&str> = first[0].splitn(5, ' ').collect();
    assert_eq!(&head[..3], ["failure", "hosts", "http"], "{text}");
    let t: u64 = head[3].parse().unwrap();
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    assert!(now - t < 60, "-t is the alert time: {t}");
    assert!(
        first[0].contains(&format!("{addr}: connect")),
        "summary: {text}"
    );
    assert_eq!(first[1], "DESCR=http of hosts");
    assert_eq!(first[2], "OPSTATUS=0");
    let second: Vec<&str> = records[1].lines().collect();
    assert!(second[0].starts_with("up hosts http "), "{text}");
    assert!(second[0].ends_with("HTTP/1.0 200 OK"), "{text}");
    assert_eq!(second[2], "OPSTATUS=1");
    // The history has both alerts, delivered.
    let h: Value = serde_json::from_str(&d.ok(&["health", "history", "--json"])).unwrap();
    let alerts: Vec<(&str, &str)> = h
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["event"] == "alert" || e["event"] == "upalert")
        .map(|e| (e["event"].as_str().unwrap(), e["detail"].as_str().unwrap()))
        .collect();
    assert_eq!(alerts.len(), 2, "{h}");
    assert!(
        alerts.iter().all(|(_, det)| det.contains(" ok in ")),
        "{alerts:?}"
    );
}

#[test]
fn silences_disables_and_test_alerts_from_the_cli() {
    let net = Net::new("hc_cli");
    let addr = net.addr(11, 8080);
    let dir = TempDir::new("hc_cli_out");
    let script = dir.path("record.alert");
    let record = dir.path("record.txt");
    std::fs::write(
        &script,
        format!(
            "#!/bin/sh\necho \"$MON_ALERTTYPE $*\" >> {}\n",
            record.display()
        ),
    )
    .unwrap();
    std::fs::set_permissions(&script, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    let cfg = format!(
        r#"[[health.check]]
name = "web"
type = "tcp"
hosts = ["{addr}"]
interval = "200ms"
fall = 1

  [[health.check.alert]]
  exec = "{script} extra-arg"
"#,
        script = script.display()
    );
    // Up at first (something listens), so that nothing can alert before the silence is in.
    let up = std::net::TcpListener::bind(addr).unwrap();
    let d = Daemon::start("hc_cli", &cfg);
    // Silence first, then nothing listens: down, and the alert is held.
    let out = d.ok(&[
        "health",
        "silence",
        "--check",
        "web",
        "--for",
        "1h",
        "--reason",
        "maintenance",
        "--author",
        "kim",
    ]);
    assert_eq!(out.trim(), "silence #1");
    drop(up);
    wait_for("down", Duration::from_secs(5), || {
        state(&d, "web", &addr.to_string()) == "down"
    });
    std::thread::sleep(Duration::from_millis(1500));
    assert!(!record.exists(), "a silenced alert was sent");
    let h = health(&d);
    assert_eq!(h["silences"][0]["author"], "kim");
    assert_eq!(h["checks"][0]["targets"][0]["silenced"], 1);
    let hist = d.ok(&["health", "history"]);
    assert!(hist.contains("held"), "{hist}");

    // Unknown names are errors, not silent no-ops.
    let bad = d.herd(&["health", "silence", "--check", "nope"]);
    assert_eq!(bad.status.code(), Some(65));
    assert!(String::from_utf8_lossy(&bad.stderr).contains("no check named \"nope\""));

    // Lifted: the alert goes out at the next failure.
    d.ok(&["health", "unsilence", "1"]);
    wait_for("the alert", Duration::from_secs(5), || {
        std::fs::read_to_string(&record).is_ok_and(|s| s.contains("failure"))
    });
    let line = std::fs::read_to_string(&record).unwrap();
    assert!(
        line.starts_with(&format!("failure -s web -g hosts -h {addr} -t ")),
        "{line}"
    );
    assert!(line.trim_end().ends_with(" extra-arg"), "{line}");

    // test-alert reports each sink's outcome.
    let out = d.ok(&["health", "test-alert", "web"]);
    assert!(out.starts_with("ok "), "{out}");
    wait_for("the test alert", Duration::from_secs(5), || {
        std::fs::read_to_string(&record).is_ok_and(|s| s.contains("test -s web"))
    });

    // Disabled: the target keeps its state and is not checked.
    d.ok(&["health", "disable", "web"]);
    let last = health(&d)["checks"][0]["targets"][0]["last-ms"]
        .as_u64()
        .unwrap();
    std::thread::sleep(Duration::from_millis(800));
    let h = health(&d);
    assert_eq!(
        h["checks"][0]["targets"][0]["last-ms"].as_u64().unwrap(),
        last
    );
    assert_eq!(h["checks"][0]["disabled"], true);
    d.ok(&["health", "enable", "web"]);
    wait_for("checked again", Duration::from_secs(5), || {
        health(&d)["checks"][0]["targets"][0]["last-ms"]
            .as_u64()
            .unwrap()
            > last
    });
    let text = d.ok(&["health", "list"]);
    assert!(text.contains("web (tcp of hosts"), "{text}");
}

#[test]
fn a_bad_health_config_is_refused_with_file_line_and_key() {
    let dir = TempDir::new("hc_bad_config");
    let p = dir.path("bad.toml");
    std::fs::write(
        &p,
        "[[health.check]]\nname = \"x\"\ntype = \"http\"\nservice = \"nope\"\n",
    )
    .unwrap();
    let out = std::process::Command::new(crate::util::herd_bin())
        .args(["config", "validate"])
        .arg(&p)
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("bad.toml:4: health.check[0].service: no lb.service named or at \"nope\""),
        "{err}"
    );
}

/// The issue's end-to-end check: under `wrk` load through the VIP, one real server stops and
/// comes back; herd takes it out and puts it back within the thresholds, and no request fails.
#[test]
fn under_wrk_load_a_stopped_server_goes_out_and_back_without_failed_requests() {
    assert!(
        std::process::Command::new("wrk")
            .arg("--version")
            .output()
            .is_ok(),
        "wrk is missing: apt-get install wrk"
    );
    let net = Net::new("hc_wrk");
    let (addrs, mut b) = three_backends(net);
    let vip = net.addr(100, 8080);
    let (interval, fall, rise) = (500u64, 2u64, 2u64);
    let cfg = web(
        vip,
        &addrs,
        &format!("[[health.check]]\nname = \"http\"\ntype = \"http\"\nservice = \"web\"\ninterval = \"{interval}ms\"\ntimeout = \"400ms\"\nrise = {rise}\nfall = {fall}\n"),
    );
    let d = Daemon::start("hc_wrk", &cfg);
    wait_all_up(&d, &addrs);
    let wrk = std::process::Command::new("wrk")
        .args(["-t1", "-c8", "-d8s", "--timeout", "2s"])
        .arg(format!("http://{vip}/"))
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_secs(1));
    b[0] = None;
    let t0 = Instant::now();
    wait_for("node01 out", Duration::from_secs(5), || {
        real(&d, addrs[0]).is_some_and(|r| r.0 == 0)
    });
    let out = t0.elapsed();
    std::thread::sleep(Duration::from_secs(1));
    b[0] = Some(Backend::http(addrs[0], "node01"));
    let t1 = Instant::now();
    wait_for("node01 back", Duration::from_secs(5), || {
        real(&d, addrs[0]).is_some_and(|r| r.0 == 3)
    });
    let back = t1.elapsed();
    let res = wrk.wait_with_output().unwrap();
    let text = String::from_utf8_lossy(&res.stdout);
    eprintln!("out after {out:?}, back after {back:?}\n{text}");
    assert!(
        out <= Duration::from_millis(fall * interval + 1000),
        "out after {out:?}"
    );
    assert!(
        back <= Duration::from_millis(rise * interval + 1000),
        "back after {back:?}"
    );
    assert!(!text.contains("Socket errors"), "{text}");
    assert!(!text.contains("Non-2xx"), "{text}");
    let requests: u64 = text
        .lines()
        .find(|l| l.contains("requests in"))
        .and_then(|l| l.split_whitespace().next())
        .and_then(|n| n.parse().ok())
        .unwrap_or(0);
    assert!(requests > 1000, "{text}");
}

#[test]
fn herd_import_mon_cf_on_the_seeds_yields_configs_that_validate() {
    let dir = TempDir::new("hc_import");
    let fixtures = crate::util::repo_root().join("crates/herd-import/src/fixtures");
    for name in ["seed001-mon.cf", "seed004-mon.cf", "seed004-first-mon.cf"] {
        let out = std::process::Command::new(crate::util::herd_bin())
            .args(["import", "mon.cf"])
            .arg(fixtures.join(name))
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{name}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let converted = dir.path(&format!("{name}.toml"));
        std::fs::write(&converted, &out.stdout).unwrap();
        let v = std::process::Command::new(crate::util::herd_bin())
            .args(["config", "validate"])
            .arg(&converted)
            .output()
            .unwrap();
        assert!(
            v.status.success(),
            "{name}: {}\n{}",
            String::from_utf8_lossy(&v.stderr),
            String::from_utf8_lossy(&out.stdout)
        );
        let stdout = String::from_utf8_lossy(&v.stdout);
        assert!(stdout.contains("health check"), "{stdout}");
        // The notes name the mon.cf and a line.
        let notes = String::from_utf8_lossy(&out.stderr);
        assert!(
            notes.lines().all(|l| l.contains(&format!("{name}:"))),
            "{notes}"
        );
    }
    // A file that is not there: a clear error and the config exit code.
    let out = std::process::Command::new(crate::util::herd_bin())
        .args(["import", "mon.cf", "/nonexistent/mon.cf"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(78));
    assert!(String::from_utf8_lossy(&out.stderr).contains("/nonexistent/mon.cf"));
}

#[test]
fn below_quorum_the_sorry_server_answers_until_enough_servers_are_back() {
    let net = Net::new("hc_quorum");
    let (addrs, mut b) = three_backends(net);
    let sorry = Backend::http(net.addr(99, 8080), "sorry");
    let vip = net.addr(100, 8080);
    let mut cfg = web(
        vip,
        &addrs,
        "[[health.check]]\nname = \"http\"\ntype = \"http\"\nservice = \"web\"\ninterval = \"200ms\"\nrise = 1\nfall = 1\n",
    );
    cfg = cfg.replace(
        "scheduler = \"rr\"\n",
        &format!(
            "scheduler = \"rr\"\nquorum = 2\nsorry-server = \"{}\"\n",
            sorry.addr
        ),
    );
    let d = Daemon::start("hc_quorum", &cfg);
    wait_all_up(&d, &addrs);
    let quorum = |d: &Daemon| {
        let v: Value = serde_json::from_str(&d.ok(&["lb", "list", "--json"])).unwrap();
        (
            v[0]["quorum"]["up"].as_u64().unwrap(),
            v[0]["quorum"]["lost"].as_bool().unwrap(),
        )
    };
    assert_eq!(quorum(&d), (3, false));
    // One down: 2 of 3 still make the quorum; nobody sees the sorry server.
    b[0] = None;
    wait_for("node01 out", Duration::from_secs(5), || quorum(&d).0 == 2);
    for _ in 0..10 {
        let body = get(vip).unwrap();
        assert!(body == "node02" || body == "node03", "{body}");
    }
    // Two down: below quorum, every new connection goes to the sorry server.
    b[1] = None;
    wait_for("quorum lost", Duration::from_secs(5), || {
        quorum(&d) == (1, true)
    });
    for _ in 0..10 {
        assert_eq!(get(vip).unwrap(), "sorry");
    }
    let ipvs = d.ok(&["ipvsadm", "-L", "-n"]);
    assert!(
        ipvs.contains(&sorry.addr.to_string()),
        "the sorry server is listed: {ipvs}"
    );
    // One back: quorum again, the sorry server steps aside.
    b[0] = Some(Backend::http(addrs[0], "node01"));
    wait_for("quorum back", Duration::from_secs(5), || {
        quorum(&d) == (2, false)
    });
    for _ in 0..10 {
        let body = get(vip).unwrap();
        assert!(body == "node01" || body == "node03", "{body}");
    }
}

#[test]
fn the_history_and_downtime_log_outlive_a_restart() {
    let net = Net::new("hc_history");
    let addr = net.addr(11, 8080);
    let dir = TempDir::new("hc_history_db");
    let db = dir.path("state/health.db");
    let cfg = format!(
        "[health]\nhistory = \"{}\"\n\n[[health.check]]\nname = \"web\"\ntype = \"tcp\"\nhosts = [\"{addr}\"]\ninterval = \"200ms\"\nrise = 1\nfall = 1\n",
        db.display()
    );
    {
        let d = Daemon::start("hc_history", &cfg);
        wait_for("down", Duration::from_secs(5), || {
            state(&d, "web", &addr.to_string()) == "down"
        });
        let b = Backend::http(addr, "node01");
        wait_for("up", Duration::from_secs(5), || {
            state(&d, "web", &addr.to_string()) == "up"
        });
        // The writer thread commits asynchronously: wait until the outage is on disk.
        wait_for("the outage recorded", Duration::from_secs(5), || {
            let v: Value = serde_json::from_str(&d.ok(&["health", "downtime", "--json"])).unwrap();
            v.as_array().is_some_and(|a| !a.is_empty())
        });
        drop(b);
    }
    // A new daemon on the same file still knows.
    let d = Daemon::start("hc_history2", &cfg);
    let v: Value = serde_json::from_str(&d.ok(&["health", "downtime", "--json"])).unwrap();
    let o = &v[0];
    assert_eq!(o["check"], "web");
    assert_eq!(o["target"], addr.to_string());
    assert!(o["up-ms"].as_u64().unwrap() >= o["down-ms"].as_u64().unwrap());
    assert!(o["summary"].as_str().unwrap().contains("connect"), "{o}");
    let h: Value = serde_json::from_str(&d.ok(&["health", "history", "--json"])).unwrap();
    let events: Vec<&str> = h
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["event"].as_str().unwrap())
        .collect();
    assert!(events.starts_with(&["down", "up"]), "{events:?}");
    let text = d.ok(&["health", "downtime"]);
    assert!(text.contains(&addr.to_string()), "{text}");
}

/// A peer these tests run against; CI installs it (`.ci/run`). A machine without it fails
/// here, with the fix, rather than skipping.
fn need(path: &str, package: &str) {
    assert!(
        Path::new(path).exists(),
        "{path} is missing: apt-get install {package}"
    );
}

#[test]
fn dns_checks_ask_a_real_server() {
    need("/usr/sbin/dnsmasq", "dnsmasq-base");
    let net = Net::new("hc_dns");
    let server = net.addr(53, 5399);
    // dnsmasq as the DNS server under test, on a loopback address of the test's own.
    let _dns = Peer::spawn(
        std::process::Command::new("/usr/sbin/dnsmasq")
            .args([
                "-k",
                "--conf-file=/dev/null",
                "--no-resolv",
                "--no-hosts",
                "--bind-interfaces",
                "--pid-file=",
                "--port=5399",
                "--address=/www.herd.test/192.0.2.7",
                "--address=/v6.herd.test/2001:db8::7",
            ])
            .arg(format!("--listen-address={}", server.ip()))
            .stdout(std::process::Stdio::null()),
    );
    let check = |name: &str, query: &str, qtype: &str, expect: &str| {
        format!(
            "[[health.check]]\nname = \"{name}\"\ntype = \"dns\"\nhosts = [\"{server}\"]\nquery = \"{query}\"\nquery-type = \"{qtype}\"\n{expect}interval = \"200ms\"\nrise = 1\nfall = 1\n"
        )
    };
    let cfg = [
        check("a", "www.herd.test", "A", "expect = \"192.0.2.7\"\n"),
        check("aaaa", "v6.herd.test", "AAAA", "expect = \"2001:db8::7\"\n"),
        check("wrong", "www.herd.test", "A", "expect = \"192.0.2.8\"\n"),
        check("unknown", "nx.herd.test", "A", ""),
    ]
    .concat();
    let d = Daemon::start("hc_dns", &cfg);
    let target = server.to_string();
    // dnsmasq may start after the first probes ("refused"): wait for answered verdicts.
    let answered = |i: usize| {
        let s = health(&d)["checks"][i]["targets"][0]["summary"].clone();
        s.as_str().is_some_and(|s| !s.contains("refused"))
    };
    wait_for("dns verdicts", Duration::from_secs(10), || {
        state(&d, "a", &target) == "up"
            && state(&d, "aaaa", &target) == "up"
            && state(&d, "wrong", &target) == "down"
            && state(&d, "unknown", &target) == "down"
            && answered(2)
            && answered(3)
    });
    let h = health(&d);
    let summary = |i: usize| {
        h["checks"][i]["targets"][0]["summary"]
            .as_str()
            .unwrap()
            .to_string()
    };
    assert!(
        summary(0).ends_with("www.herd.test A: 192.0.2.7"),
        "{}",
        summary(0)
    );
    assert!(summary(2).contains("not 192.0.2.8"), "{}", summary(2));
    assert!(
        summary(3).contains("REFUSED") || summary(3).contains("NXDOMAIN"),
        "{}",
        summary(3)
    );
}

/// Down hosts for icmp checks and mon's fping.monitor, in a namespace of the test's own where
/// 10.255.0.1 has no route: nothing leaves the namespace, and the host is unreachable.
#[test]
fn icmp_and_fping_monitor_tell_a_reachable_host_from_an_unreachable_one() {
    need_mon();
    let ns = crate::util::Netns::new("hc_icmp");
    let cfg = format!(
        r#"[health]
mondir = ["{MON_D}"]

[[health.check]]
name = "icmp"
type = "icmp"
hosts = ["127.0.0.1", "10.255.0.1"]
interval = "300ms"
timeout = "1s"
rise = 1
fall = 1

[[health.check]]
name = "fping"
type = "exec"
hosts = ["127.0.0.1", "10.255.0.1"]
command = "fping.monitor -r 0 -t 200"
interval = "500ms"
timeout = "5s"
rise = 1
fall = 1
"#
    );
    let d = Daemon::start_in(&ns, "hc_icmp", &cfg);
    wait_for("icmp and fping verdicts", Duration::from_secs(15), || {
        state(&d, "icmp", "127.0.0.1") == "up"
            && state(&d, "icmp", "10.255.0.1") == "down"
            && state(&d, "fping", "127.0.0.1") == "up"
            && state(&d, "fping", "10.255.0.1") == "down"
    });
    let h = health(&d);
    let fping_down = h["checks"][1]["targets"][1]["summary"]
        .as_str()
        .unwrap()
        .to_string();
    assert!(
        fping_down.contains("10.255.0.1"),
        "mon's summary names the host: {fping_down}"
    );
}

/// Makes a self-signed end-entity certificate for `san` (e.g. `DNS:herd.test`), valid for 5
/// days, in `dir`: (certificate, key). Not a CA: webpki refuses a CA certificate used as a
/// server's.
fn self_signed(dir: &TempDir, cn: &str, san: &str) -> (std::path::PathBuf, std::path::PathBuf) {
    let (cert, key) = (dir.path("cert.pem"), dir.path("key.pem"));
    let st = std::process::Command::new("openssl")
        .args([
            "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "5",
        ])
        .args(["-subj", &format!("/CN={cn}")])
        .args(["-addext", &format!("subjectAltName={san}")])
        .args(["-addext", "basicConstraints=critical,CA:FALSE"])
        .arg("-keyout")
        .arg(&key)
        .arg("-out")
        .arg(&cert)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .status()
        .unwrap();
    assert!(st.success(), "openssl req failed");
    (cert, key)
}

#[test]
fn https_checks_verify_certificates_and_warn_before_they_expire() {
    need("/usr/sbin/nginx", "nginx-light");
    need("/usr/bin/openssl", "openssl");
    let net = Net::new("hc_https");
    let addr = net.addr(11, 8443);
    let dir = TempDir::new("hc_https_files");
    let san = format!("DNS:herd.test,IP:{}", addr.ip());
    let (cert, key) = self_signed(&dir, "herd.test", &san);
    let conf = dir.path("nginx.conf");
    let d = dir.0.display();
    std::fs::write(
        &conf,
        format!(
            "pid {d}/nginx.pid; error_log {d}/error.log; daemon off; worker_processes 1;\n\
             events {{ worker_connections 64; }}\n\
             http {{ access_log off; client_body_temp_path {d}; proxy_temp_path {d}; fastcgi_temp_path {d}; uwsgi_temp_path {d}; scgi_temp_path {d};\n\
             server {{ listen {addr} ssl; ssl_certificate {c}; ssl_certificate_key {k};\n\
             location / {{ return 200 \"tls ok\\n\"; }} location /hook {{ return 204; }} }} }}\n",
            c = cert.display(),
            k = key.display()
        ),
    )
    .unwrap();
    let _nginx = Peer::spawn(
        std::process::Command::new("/usr/sbin/nginx")
            .arg("-c")
            .arg(&conf)
            .arg("-p")
            .arg(&dir.0),
    );
    let check = |name: &str, extra: &str| {
        format!(
            "[[health.check]]\nname = \"{name}\"\ntype = \"https\"\nhosts = [\"{addr}\"]\nexpect = \"tls ok\"\ninterval = \"300ms\"\nrise = 1\nfall = 1\n{extra}"
        )
    };
    let ca = format!("tls-ca = \"{}\"\n", cert.display());
    // Webhooks over TLS to the same nginx: one trusting its certificate, one not.
    let hook =
        |extra: &str| format!("[[health.check.alert]]\nwebhook = \"https://{addr}/hook\"\n{extra}");
    let hooks = hook(&ca) + &hook("");
    let cfg = [
        check("trusted", &format!("sni = \"herd.test\"\n{ca}{hooks}")),
        check("unknown-ca", "sni = \"herd.test\"\n"),
        check("wrong-name", &format!("sni = \"other.test\"\n{ca}")),
        check("no-verify", "tls-verify = false\ncert-warning = \"1d\"\n"),
    ]
    .concat();
    let d = Daemon::start("hc_https", &cfg);
    let t = addr.to_string();
    // nginx may start after the first probes ("refused"): wait for TLS verdicts.
    let answered = |i: usize| {
        let s = health(&d)["checks"][i]["targets"][0]["summary"].clone();
        s.as_str().is_some_and(|s| s.contains("TLS"))
    };
    wait_for("https verdicts", Duration::from_secs(15), || {
        state(&d, "trusted", &t) == "up"
            && state(&d, "unknown-ca", &t) == "down"
            && state(&d, "wrong-name", &t) == "down"
            && state(&d, "no-verify", &t) == "up"
            && answered(1)
            && answered(2)
    });
    let h = health(&d);
    let target = |i: usize| h["checks"][i]["targets"][0].clone();
    // Trusted, but expiring within the 14-day default: up, with a warning.
    assert_eq!(target(0)["verdict"], "warning", "{}", target(0));
    let s = target(0)["summary"].as_str().unwrap().to_string();
    // Whole days, rounded down: 5 when the check ran in the second the certificate was made.
    let days = [
        "certificate expires in 4 days",
        "certificate expires in 5 days",
    ];
    assert!(
        s.contains("200 OK") && days.iter().any(|d| s.contains(d)),
        "{s}"
    );
    let why = |i: usize| target(i)["summary"].as_str().unwrap().to_lowercase();
    assert!(
        why(1).contains("tls") && why(1).contains("unknownissuer"),
        "{}",
        why(1)
    );
    assert!(why(2).contains("not valid for name"), "{}", why(2));
    assert_eq!(target(3)["verdict"], "ok", "{}", target(3));

    // An https webhook verifies the receiver's certificate: against tls-ca, it is delivered
    // (nginx answers 204); against the system's CAs, it is refused.
    let r = d.herd(&["health", "test-alert", "trusted"]);
    let out = String::from_utf8_lossy(&r.stdout).to_string();
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines.len(), 2, "{out}");
    assert!(
        lines[0].starts_with(&format!("ok      webhook https://{addr}/hook")),
        "{out}"
    );
    assert!(
        lines[1].starts_with("FAILED  webhook") && lines[1].contains("UnknownIssuer"),
        "{out}"
    );
    assert_ne!(r.status.code(), Some(0));
}

#[test]
fn email_alerts_go_through_an_smtp_relay_with_starttls_and_auth() {
    need(
        "/usr/lib/python3/dist-packages/aiosmtpd",
        "python3-aiosmtpd",
    );
    need("/usr/bin/openssl", "openssl");
    let net = Net::new("hc_smtp");
    let relay = net.addr(25, 2525);
    let target = net.addr(11, 8080); // nothing listens there: down
    let dir = TempDir::new("hc_smtp_files");
    let (cert, key) = self_signed(&dir, "relay", &format!("IP:{}", relay.ip()));
    let (out, pass) = (dir.path("mail.jsonl"), dir.path("smtp.pass"));
    std::fs::write(&pass, "s3cret\n").unwrap();
    // aiosmtpd (Debian's python3-aiosmtpd) requires STARTTLS, then AUTH as herd/s3cret.
    let mut peer = Peer::spawn(
        std::process::Command::new("/usr/bin/python3")
            .arg(crate::util::repo_root().join("crates/herd/tests/peers/smtp_peer.py"))
            .args(["--listen", &relay.to_string(), "--out"])
            .arg(&out)
            .arg("--starttls")
            .args([&cert, &key])
            .args(["--auth", "herd", "s3cret"])
            .stdout(std::process::Stdio::piped()),
    );
    let mut ready = String::new();
    std::io::BufRead::read_line(
        &mut std::io::BufReader::new(peer.0.stdout.take().unwrap()),
        &mut ready,
    )
    .unwrap();
    assert_eq!(ready.trim(), "ready", "the SMTP peer did not start");
    let cfg = format!(
        r#"[health.smtp]
server = "{relay}"
from = "herd@herd.test"
tls = "starttls"
tls-ca = "{cert}"
username = "herd"
password-file = "{pass}"

[[health.check]]
name = "web"
type = "tcp"
hosts = ["{target}"]
interval = "200ms"
fall = 1

  [[health.check.alert]]
  email = ["ops@herd.test", "web@herd.test"]
"#,
        cert = cert.display(),
        pass = pass.display()
    );
    let d = Daemon::start("hc_smtp", &cfg);
    wait_for("the mail", Duration::from_secs(10), || {
        std::fs::read_to_string(&out).is_ok_and(|s| !s.is_empty())
    });
    let text = std::fs::read_to_string(&out).unwrap();
    let mail: Value = serde_json::from_str(text.lines().next().unwrap()).unwrap();
    assert_eq!(mail["from"], "herd@herd.test");
    assert_eq!(
        mail["to"],
        serde_json::json!(["ops@herd.test", "web@herd.test"])
    );
    assert_eq!(mail["tls"], true, "sent before STARTTLS");
    assert_eq!(mail["login"], "herd");
    let data = mail["data"].as_str().unwrap();
    assert!(
        data.contains(&format!("Subject: ALERT hosts/web: {target}: connect")),
        "{data}"
    );
    assert!(
        data.contains(&format!("Members               : {target}")),
        "{data}"
    );
    let h: Value = serde_json::from_str(&d.ok(&["health", "history", "--json"])).unwrap();
    let sent = h.as_array().unwrap().iter().find(|e| e["event"] == "alert");
    let detail = sent.map(|e| e["detail"].as_str().unwrap().to_string());
    assert!(
        detail
            .as_deref()
            .is_some_and(|s| s.contains("email ops@herd.test, web@herd.test ok in ")),
        "{h}"
    );

    // The password file is read at each send: a wrong one fails, and says why.
    std::fs::write(&pass, "wrong\n").unwrap();
    let r = d.herd(&["health", "test-alert", "web"]);
    let said = String::from_utf8_lossy(&r.stdout).to_string() + &String::from_utf8_lossy(&r.stderr);
    assert!(
        said.starts_with("FAILED") && said.contains("(535)"),
        "{said}"
    );
    assert_ne!(
        r.status.code(),
        Some(0),
        "a failed test alert exits non-zero"
    );
    assert_eq!(std::fs::read_to_string(&out).unwrap().lines().count(), 1);
}

#[test]
fn moncmd_lists_disables_and_acks_through_mons_client_protocol() {
    need("/usr/bin/moncmd", "mon-client");
    let net = Net::new("hc_moncmd");
    let (up, down) = (net.addr(11, 8080), net.addr(12, 8080));
    let mon = net.addr(2, 2583);
    let _b = Backend::http(up, "node01");
    let cfg = format!(
        "[health]\nmon-listen = \"{mon}\"\n\n\
         [[health.check]]\nname = \"web\"\ntype = \"tcp\"\nhosts = [\"{up}\"]\ninterval = \"200ms\"\nrise = 1\n\n\
         [[health.check]]\nname = \"db\"\ntype = \"tcp\"\nhosts = [\"{down}\"]\ninterval = \"200ms\"\nfall = 1\n\n\
         [web]\nlisten = \"{}\"\n{}",
        net.addr(1, 9000),
        crate::web::user_table("ann", "admin", "ann-secret")
    );
    let d = Daemon::start("hc_moncmd", &cfg);
    wait_for("verdicts", Duration::from_secs(5), || {
        state(&d, "web", &up.to_string()) == "up" && state(&d, "db", &down.to_string()) == "down"
    });
    let moncmd = |args: &[&str]| {
        let o = std::process::Command::new("/usr/bin/moncmd")
            .args(["-s", &mon.ip().to_string(), "-p", &mon.port().to_string()])
            .args(args)
            .output()
            .unwrap();
        assert!(o.status.success(), "moncmd {args:?}: {o:?}");
        String::from_utf8_lossy(&o.stdout).to_string()
    };
    // Changes need a login: `moncmd -a -l ann`, the password on stdin (moncmd drops the
    // line after the credentials, hence the empty one).
    let admin = |cmd: &str| {
        let mut c = std::process::Command::new("/usr/bin/moncmd")
            .args(["-s", &mon.ip().to_string(), "-p", &mon.port().to_string()])
            .args(["-a", "-l", "ann"])
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        let stdin = format!("pass=ann-secret\n\n{cmd}\n");
        std::io::Write::write_all(&mut c.stdin.take().unwrap(), stdin.as_bytes()).unwrap();
        let o = c.wait_with_output().unwrap();
        assert!(o.status.success(), "moncmd -a {cmd}: {o:?}");
        String::from_utf8_lossy(&o.stdout).to_string()
    };
    let all = moncmd(&["list", "opstatus"]);
    let lines: Vec<&str> = all.lines().collect();
    assert_eq!(lines.len(), 3, "{all}");
    assert!(
        lines[0].starts_with("group=hosts service=web opstatus=1 "),
        "{all}"
    );
    assert!(
        lines[1].starts_with("group=hosts service=db opstatus=0 "),
        "{all}"
    );
    assert!(lines[1].contains(&format!("last_summary={down} ")), "{all}");
    assert_eq!(lines[2], "220 list opstatus completed");
    let failures = moncmd(&["list", "failures"]);
    assert!(
        failures.lines().count() == 2 && failures.contains("service=db "),
        "{failures}"
    );

    // disable and ack change the same state as `herd health`.
    assert_eq!(
        admin("disable service hosts db").trim(),
        "220 disable completed"
    );
    assert_eq!(health(&d)["checks"][1]["disabled"], true);
    assert!(moncmd(&["list", "disabled"]).starts_with("watch hosts service db\n"));
    admin("enable service hosts db");
    assert_eq!(health(&d)["checks"][1]["disabled"], false);
    assert_eq!(admin("ack hosts db disk swap").trim(), "220 ack completed");
    let h = health(&d);
    assert_eq!(h["silences"][0]["check"], "db");
    assert_eq!(h["silences"][0]["reason"], "disk swap");
    assert!(moncmd(&["list", "opstatus"]).contains("ack=1 ackcomment=disk\\20swap "));
    // monshow (Mon::Client: protid, list state|watch|opstatus|disabled|descriptions|group).
    let o = std::process::Command::new("/usr/bin/monshow")
        .args([
            "--server",
            &mon.ip().to_string(),
            "--port",
            &mon.port().to_string(),
        ])
        .output()
        .unwrap();
    let shown = String::from_utf8_lossy(&o.stdout).to_string();
    assert!(o.status.success(), "monshow: {o:?}");
    assert!(shown.contains("state: scheduler running"), "{shown}");
    let row = |svc: &str| {
        shown
            .lines()
            .find(|l| l.split_whitespace().nth(2) == Some(svc))
            .unwrap_or_else(|| panic!("no row for {svc}: {shown}"))
            .to_string()
    };
    assert!(row("db").contains("FAIL"), "{shown}");
    assert!(row("web").contains("-"), "{shown}");
    // Unknown names and commands are refused with a 520 line.
    assert!(admin("disable service hosts nope").starts_with("520 "));
    assert!(moncmd(&["list", "pids"]).starts_with("520 unknown or unsupported command"));
    // A line longer than 4 KiB is refused whole, not run as two commands.
    let long = format!("list opstatus {}", "x".repeat(5000));
    assert!(moncmd(&[&long]).starts_with("520 command line too long"));
}
