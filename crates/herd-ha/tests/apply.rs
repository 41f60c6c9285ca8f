//! `Ha::apply` between two routers in network namespaces: changes to priority and advert
//! interval apply in the running process, the expected router becomes or stays master, and
//! the interval the backup hears on the wire follows the master's config.
//!
//! Each router is this test binary run again inside a host's namespace (`ip netns exec`, so
//! that `/sys` shows the host's interfaces), driven over stdin/stdout: `HERD_HA_ROUTER` set
//! makes `main` a router. The harness is ours (`harness = false`) for that reason. Everything
//! lives in namespaces the test made, which go (with the routers) when it ends.

use std::io::{BufRead, BufReader, Write};
use std::process::{Child, ChildStdin, ChildStdout, Command, Stdio};
use std::time::{Duration, Instant};

use herd_core::config::vrrp::{Notify, Vip, VrrpConfig, VrrpInstance};
use herd_ha::Ha;
use herd_testkit::{require_root, wait_until, Host, Lan};

const VIP: &str = "10.62.0.100";

fn main() {
    if std::env::var_os("HERD_HA_ROUTER").is_some() {
        return router();
    }
    let test = "apply_changes_priority_and_interval_in_place";
    if !require_root(test) {
        return;
    }
    print!("test {test} ... ");
    apply_changes_priority_and_interval_in_place();
    println!("ok");
}

/// One VRRP instance `vi` (VRID 62) on `iface` with the VIP and `more` VIPs.
fn config(iface: &str, priority: u8, advert_ms: u64, more: &[&str]) -> VrrpConfig {
    let vips = std::iter::once(VIP)
        .chain(more.iter().copied())
        .map(|a| Vip {
            addr: a.parse().expect("an address"),
            prefix: 24,
        })
        .collect();
    VrrpConfig {
        instances: vec![VrrpInstance {
            name: "vi".into(),
            interface: iface.into(),
            vrid: 62,
            version: 3,
            priority,
            advert_int: Duration::from_millis(advert_ms),
            preempt: true,
            preempt_delay: Duration::ZERO,
            vips,
            unicast_peers: Vec::new(),
            auth_key_file: None,
            auth_pass: None,
            garp_count: 1,
            garp_interval: Duration::ZERO,
            notify: Notify::default(),
            notify_timeout: Duration::from_secs(5),
            handover_window: Duration::ZERO,
            real_server: false,
            track_interfaces: Vec::new(),
            track_scripts: Vec::new(),
            track_services: Vec::new(),
        }],
    }
}

/// The router: starts with no instance, then obeys one command per line:
/// `apply IFACE PRIORITY ADVERT_MS [VIP…]`, `clear` (apply an empty config), `status`, `quit`.
fn router() {
    let ha = Ha::new().expect("VRRP starts without instances");
    let mut out = std::io::stdout();
    for line in std::io::stdin().lines() {
        let line = line.expect("stdin");
        let words: Vec<&str> = line.split_whitespace().collect();
        let answer = match words.as_slice() {
            ["apply", iface, priority, ms, more @ ..] => {
                let cfg = config(
                    iface,
                    priority.parse().expect("priority"),
                    ms.parse().expect("ms"),
                    more,
                );
                match ha.apply(&cfg) {
                    Ok(a) => format!("ok {:?}", a),
                    Err(e) => format!("err {e}"),
                }
            }
            ["clear"] => match ha.apply(&VrrpConfig::default()) {
                Ok(a) => format!("ok {:?}", a),
                Err(e) => format!("err {e}"),
            },
            ["status"] => match ha.status().first() {
                Some(s) => format!(
                    "{} {} {} {} {} {}",
                    s.state,
                    s.priority,
                    s.advert_interval_ms,
                    s.adverts_received,
                    s.adverts_sent,
                    s.transitions_total
                ),
                None => "none".into(),
            },
            ["quit"] => break,
            _ => format!("err unknown command {line:?}"),
        };
        writeln!(out, "{answer}").expect("stdout");
        out.flush().expect("stdout");
    }
    ha.stop();
    ha.finish();
}

/// A router process in a host; killed (with its process group) on drop.
struct Router {
    child: Child,
    stdin: ChildStdin,
    stdout: BufReader<ChildStdout>,
}

/// What a router's `status` says.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Status {
    state: String,
    priority: u8,
    advert_interval_ms: u64,
    received: u64,
    sent: u64,
    transitions: u64,
}

impl Router {
    fn start(host: &Host) -> Router {
        use std::os::unix::process::CommandExt;
        let exe = std::env::current_exe().expect("the test binary");
        let mut cmd: Command = host.cmd(exe);
        let mut child = cmd
            .env("HERD_HA_ROUTER", "1")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .process_group(0)
            .spawn()
            .expect("the router starts");
        let stdin = child.stdin.take().expect("stdin");
        let stdout = BufReader::new(child.stdout.take().expect("stdout"));
        Router {
            child,
            stdin,
            stdout,
        }
    }

    fn ask(&mut self, line: &str) -> String {
        writeln!(self.stdin, "{line}").expect("to the router");
        let mut answer = String::new();
        self.stdout.read_line(&mut answer).expect("from the router");
        assert!(!answer.is_empty(), "the router ended on {line:?}");
        answer.trim().to_string()
    }

    fn apply(&mut self, iface: &str, priority: u8, advert_ms: u64) -> String {
        self.ask(&format!("apply {iface} {priority} {advert_ms}"))
    }

    fn status(&mut self) -> Status {
        let s = self.ask("status");
        let w: Vec<&str> = s.split_whitespace().collect();
        assert_eq!(w.len(), 6, "status: {s:?}");
        let n = |i: usize| w[i].parse::<u64>().expect("a number");
        Status {
            state: w[0].to_string(),
            priority: n(1) as u8,
            advert_interval_ms: n(2),
            received: n(3),
            sent: n(4),
            transitions: n(5),
        }
    }

    fn running(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }

    fn exited_ok(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(Some(s)) if s.success())
    }
}

impl Drop for Router {
    fn drop(&mut self) {
        let _ = Command::new("kill")
            .args(["-KILL", "--", &format!("-{}", self.child.id())])
            .stderr(Stdio::null())
            .status();
        let _ = self.child.wait();
    }
}

fn wait_for(what: &str, secs: u64, mut f: impl FnMut() -> bool) {
    assert!(
        wait_until(Duration::from_secs(secs), &mut f),
        "timed out: {what}"
    );
}

fn apply_changes_priority_and_interval_in_place() {
    let lan = Lan::new("haapply");
    let d1 = lan.host("d1", &["10.62.0.1/24"]);
    let d2 = lan.host("d2", &["10.62.0.2/24"]);
    let mut r1 = Router::start(&d1);
    let mut r2 = Router::start(&d2);
    assert_eq!(r1.ask("status"), "none", "a Ha without instances");

    // From no instance to one: r1 (150) is master, r2 (100) backup.
    assert!(r1.apply("eth0", 150, 100).starts_with("ok"));
    assert!(r2.apply("eth0", 100, 100).starts_with("ok"));
    wait_for("r1 master, r2 backup", 10, || {
        r1.status().state == "master" && r2.status().state == "backup"
    });
    wait_for("the VIP on d1", 5, || d1.has_addr(VIP));
    wait_for("r2 hears the 100 ms interval", 5, || {
        r2.status().advert_interval_ms == 100
    });

    // A failing apply changes nothing and says why.
    let bad = r1.apply("nope0", 10, 1000);
    assert!(bad.starts_with("err interface nope0: "), "{bad}");
    let s = r1.status();
    assert_eq!(
        (s.state.as_str(), s.priority, s.advert_interval_ms),
        ("master", 150, 100)
    );

    // The master's priority drops but stays above r2's, and its interval grows: it stays
    // master (no transition), and r2 hears adverts every 300 ms.
    let before = r1.status();
    let answer = r1.apply("eth0", 120, 300);
    assert!(answer.contains(r#"changed: ["vi"]"#), "{answer}");
    wait_for("r2 hears the 300 ms interval", 5, || {
        r2.status().advert_interval_ms == 300
    });
    let heard = r2.status().received;
    let t = Instant::now();
    std::thread::sleep(Duration::from_millis(1500));
    let rate = (r2.status().received - heard) as f64 / t.elapsed().as_secs_f64();
    assert!(
        (2.0..=5.0).contains(&rate),
        "adverts per second at 300 ms: {rate:.1}"
    );
    let after = r1.status();
    assert_eq!(
        (
            after.state.as_str(),
            after.priority,
            after.advert_interval_ms,
            after.transitions
        ),
        ("master", 120, 300, before.transitions),
        "r1 stayed master all along"
    );
    assert_eq!(r2.status().state, "backup");
    assert!(d1.has_addr(VIP) && !d2.has_addr(VIP));

    // A VIP more, then one less: the master adds it and removes it, and stays master.
    let answer = r1.ask("apply eth0 120 300 10.62.0.101");
    assert!(answer.contains(r#"changed: ["vi"]"#), "{answer}");
    wait_for("the new VIP on d1", 5, || d1.has_addr("10.62.0.101"));
    assert!(d1.has_addr(VIP) && !d2.has_addr("10.62.0.101"));
    assert!(r1.apply("eth0", 120, 300).contains(r#"changed: ["vi"]"#));
    wait_for("the VIP gone from d1", 5, || !d1.has_addr("10.62.0.101"));
    assert!(d1.has_addr(VIP));
    let s = r1.status();
    assert_eq!(
        (s.state.as_str(), s.transitions),
        ("master", before.transitions)
    );

    // Below r2's priority: r2 preempts, the VIP moves.
    assert!(r1.apply("eth0", 50, 300).contains(r#"changed: ["vi"]"#));
    wait_for("r2 master, r1 backup", 10, || {
        r2.status().state == "master" && r1.status().state == "backup"
    });
    wait_for("the VIP on d2 only", 5, || {
        d2.has_addr(VIP) && !d1.has_addr(VIP)
    });
    assert_eq!(r1.status().priority, 50);
    wait_for("r1 hears r2's 100 ms interval", 5, || {
        r1.status().advert_interval_ms == 100
    });

    // A backup raised above the master takes over (preempt).
    assert!(r1.apply("eth0", 200, 100).contains(r#"changed: ["vi"]"#));
    wait_for("r1 master again", 10, || {
        r1.status().state == "master" && r2.status().state == "backup"
    });
    wait_for("the VIP back on d1", 5, || {
        d1.has_addr(VIP) && !d2.has_addr(VIP)
    });

    // From one instance to none: r1 resigns and removes its VIP, r2 takes over at once.
    assert!(r1.ask("clear").contains(r#"removed: ["vi"]"#));
    assert_eq!(r1.ask("status"), "none");
    wait_for("r2 master after r1 left", 5, || {
        r2.status().state == "master"
    });
    wait_for("the VIP on d2", 5, || d2.has_addr(VIP) && !d1.has_addr(VIP));

    // Every step ran in the same two processes, which stop cleanly.
    for r in [&mut r1, &mut r2] {
        assert!(r.running(), "the router still runs");
        writeln!(r.stdin, "quit").expect("to the router");
        wait_for("the router stops", 10, || r.exited_ok());
    }
}
