//! The seeds' ipvsadm sequences, run as written (addresses moved to loopback, ports 80 → 8080
//! and 22 → 2222 so no privileged or busy port is needed), against the running daemon.

use std::io::Write;
use std::process::{Command, Stdio};

use crate::util::{tally, Backend, Daemon, Net};

/// Runs `herd ipvsadm` with a shell-like argument string; returns (exit code, stdout, stderr).
fn ipvsadm(d: &Daemon, args: &str) -> (i32, String, String) {
    let mut argv = vec!["ipvsadm"];
    argv.extend(args.split_whitespace());
    let out = d.herd(&argv);
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8(out.stdout).unwrap(),
        String::from_utf8(out.stderr).unwrap(),
    )
}

fn run_ok(d: &Daemon, args: &str) -> String {
    let (code, out, err) = ipvsadm(d, args);
    assert_eq!(code, 0, "herd ipvsadm {args}: {err}");
    out
}

/// Trailing blanks are part of ipvsadm's layout; compare them exactly.
fn check_listing(got: &str, expect: &str) {
    assert_eq!(
        got, expect,
        "\n--- got ---\n{got}--- expected ---\n{expect}"
    );
}

#[test]
fn seed_001_sequences_run_as_written() {
    let net = Net::new("seed001");
    let vip = net.ip(170);
    let (r165, r164) = (net.ip(165), net.ip(164));
    let d = Daemon::start("seed001", "[lb]\nworkers = 1\n");

    // §2.2.2: a persistent wlc service and two real servers.
    run_ok(&d, &format!("-A -t {vip}:8080 -s wlc -p 360"));
    run_ok(&d, &format!("-a -t {vip}:8080 -r {r165} -g -w 100"));
    run_ok(
        &d,
        &format!("-a -t {vip}:8080 -r {} -g -w 100", net.ip(166)),
    );
    check_listing(
        &run_ok(&d, "-L -n"),
        &format!(
            "IP Virtual Server version 1.2.1 (size=4096)\n\
             Prot LocalAddress:Port Scheduler Flags\n  \
             -> RemoteAddress:Port           Forward Weight ActiveConn InActConn\n\
             TCP  {vip}:8080 wlc persistent 360\n  \
             -> {r165}:8080{pad165}Route   100    0          0         \n  \
             -> {r166}:8080{pad166}Route   100    0          0         \n",
            pad165 = " ".repeat(28 - format!("{r165}:8080").len() + 1),
            r166 = net.ip(166),
            pad166 = " ".repeat(28 - format!("{}:8080", net.ip(166)).len() + 1),
        ),
    );
    run_ok(&d, "-C");

    // §2.3.1: two services, real servers without ports (they take the service's).
    run_ok(&d, &format!("-A -t {vip}:8080 -s wlc"));
    run_ok(&d, &format!("-A -t {vip}:2222 -s wlc"));
    run_ok(&d, &format!("-a -t {vip}:8080 -r {r165} -g"));
    run_ok(&d, &format!("-a -t {vip}:8080 -r {r164} -g"));
    run_ok(&d, &format!("-a -t {vip}:2222 -r {r165} -g"));
    let list = run_ok(&d, "-L -n");
    let lines: Vec<&str> = list.lines().collect();
    assert_eq!(lines[3], format!("TCP  {vip}:2222 wlc"), "{list}");
    assert!(
        lines[4].starts_with(&format!("  -> {r165}:2222"))
            && lines[4].contains("Route   1      0          0"),
        "{list}"
    );
    assert_eq!(lines[5], format!("TCP  {vip}:8080 wlc"), "{list}");
    assert!(
        lines[6].starts_with(&format!("  -> {r164}:8080")),
        "sorted by address: {list}"
    );
    assert!(lines[7].starts_with(&format!("  -> {r165}:8080")), "{list}");

    // lvs.alert: take a real server out when it is down and put it back when it is up.
    run_ok(&d, &format!("-d -t {vip}:8080 -r {r165}"));
    assert!(!run_ok(&d, "-L -n").contains(&format!("{r165}:8080")));
    run_ok(&d, &format!("-a -t {vip}:8080 -r {r165} -w 100 -g"));
    let list = run_ok(&d, "-L -n");
    let row = list
        .lines()
        .find(|l| l.starts_with(&format!("  -> {r165}:8080")))
        .unwrap();
    assert!(row.contains("Route   100    0          0"), "{list}");
    run_ok(&d, "-C");
    check_listing(
        &run_ok(&d, ""),
        "IP Virtual Server version 1.2.1 (size=4096)\n\
         Prot LocalAddress:Port Scheduler Flags\n  \
         -> RemoteAddress:Port           Forward Weight ActiveConn InActConn\n",
    );
}

#[test]
fn seed_004_sequence_with_capital_r_and_bare_w_forwards_traffic() {
    let net = Net::new("seed004");
    let vip = net.ip(1);
    let b: Vec<Backend> = (2..=4)
        .map(|i| Backend::http(net.addr(i, 8080), &format!("node{i}")))
        .collect();
    let d = Daemon::start("seed004", "[lb]\nworkers = 1\n");
    run_ok(&d, &format!("-A -t {vip}:8080 -s wlc"));
    // Exactly as the seed writes it: `-R` for the real server and `w 1` without a dash.
    run_ok(&d, &format!("-a -t {vip}:8080 -R {} -g w 1", net.ip(2)));
    run_ok(&d, &format!("-a -t {vip}:8080 -R {} -g w 2", net.ip(3)));
    run_ok(&d, &format!("-a -t {vip}:8080 -R {} -g w 3", net.ip(4)));
    let list = run_ok(&d, "-L -n");
    for (i, w) in [(2, 1), (3, 2), (4, 3)] {
        let line = format!("  -> {}:8080", net.ip(i));
        let row = list
            .lines()
            .find(|l| l.starts_with(&line))
            .unwrap_or_else(|| panic!("{line} missing in\n{list}"));
        assert!(row.contains(&format!("Route   {w:<6}")), "{row}");
    }
    // The seed's expectation: the servers take turns in proportion to their weights. With wlc
    // and one connection at a time every server is idle, so the seed's wrr shows it exactly.
    run_ok(&d, &format!("-E -t {vip}:8080 -s wrr"));
    let t = tally(std::net::SocketAddr::from((vip, 8080)), 60);
    assert_eq!((t["node2"], t["node3"], t["node4"]), (10, 20, 30), "{t:?}");
    let stats = run_ok(&d, "-L -n --stats");
    let row = stats
        .lines()
        .find(|l| l.starts_with(&format!("TCP  {vip}:8080")))
        .unwrap();
    assert_eq!(row.split_whitespace().nth(2), Some("60"), "{stats}");
    drop(b);
}

#[test]
fn save_and_restore_round_trip_and_ipvsadm_exit_codes() {
    let net = Net::new("saverestore");
    let d = Daemon::start("saverestore", "[lb]\nworkers = 1\n");
    let v = net.ip(100);
    run_ok(
        &d,
        &format!("-A -t {v}:8080 -s sh -b sh-port -p 600 -M 255.255.255.0"),
    );
    run_ok(
        &d,
        &format!("-a -t {v}:8080 -r {}:9000 -m -w 5", net.ip(11)),
    );
    run_ok(
        &d,
        &format!("-a -t {v}:8080 -r {}:9000 -i -w 0", net.ip(12)),
    );
    run_ok(&d, &format!("-A -u {v}:5353 -s rr"));
    run_ok(&d, &format!("-a -u {v}:5353 -r {}:53 -m", net.ip(11)));
    let saved = run_ok(&d, "-S -n");
    assert!(
        saved.contains(&format!(
            "-A -t {v}:8080 -s sh -p 600 -M 255.255.255.0 -b sh-port"
        )),
        "{saved}"
    );
    assert!(
        saved.contains(&format!("-a -t {v}:8080 -r {}:9000 -m -w 5", net.ip(11))),
        "{saved}"
    );
    let before = run_ok(&d, "-L -n");
    run_ok(&d, "-C");
    assert!(!run_ok(&d, "-L -n").contains("TCP"));
    let mut child = Command::new(crate::util::herd_bin())
        .args(["ipvsadm", "-R"])
        .env("HERD_SOCKET", &d.socket)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(saved.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(run_ok(&d, "-L -n"), before);

    // ipvsadm's messages and exit codes.
    let cases = [
        (
            format!("-A -t {v}:8080 -s wlc"),
            255,
            "Service already exists",
        ),
        (
            format!("-a -t {v}:9 -r {}", net.ip(11)),
            255,
            "Service not defined",
        ),
        (
            format!("-a -t {v}:8080 -r {}:9000", net.ip(11)),
            255,
            "Destination already exists",
        ),
        (
            format!("-d -t {v}:8080 -r {}:1", net.ip(11)),
            255,
            "No such destination",
        ),
        (format!("-D -t {v}:1"), 255, "No such service"),
        (
            format!("-A -t {v}:1 -s fastest"),
            255,
            "Scheduler or persistence engine not found",
        ),
        (
            format!("-a -t {v}:8080 -r {} -w 70000", net.ip(13)),
            2,
            "illegal weight specified",
        ),
        (
            "-A -t 300.1.1.1:80".to_string(),
            2,
            "illegal virtual server address[:port] specified",
        ),
        ("-L -Q".to_string(), 255, ""),
    ];
    for (args, code, msg) in cases {
        let (c, _, err) = ipvsadm(&d, &args);
        assert_eq!(c, code, "herd ipvsadm {args}: {err}");
        assert!(
            err.contains(msg),
            "herd ipvsadm {args}: expected {msg:?} in {err:?}"
        );
    }
    // A port in use is refused with the reason, and nothing changes.
    let blocker = std::net::TcpListener::bind(net.addr(101, 8080)).unwrap();
    let (c, _, err) = ipvsadm(&d, &format!("-A -t {}:8080", net.ip(101)));
    assert_eq!(c, 255);
    assert!(err.contains("Address already in use"), "{err}");
    drop(blocker);
    assert_eq!(run_ok(&d, "-L -n"), before);

    // Timeouts.
    run_ok(&d, "--set 100 0 30");
    assert_eq!(
        run_ok(&d, "-L --timeout"),
        "Timeout (tcp tcpfin udp): 100 120 30\n"
    );
}

#[test]
fn without_a_daemon_ipvsadm_says_so() {
    let out = Command::new(crate::util::herd_bin())
        .args(["ipvsadm", "-L", "-n"])
        .env("HERD_SOCKET", "/nonexistent/herd.sock")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr)
        .contains("Are you sure that the herd daemon is running?"));
}
