//! VRRP failover between real `herd` daemons in network namespaces: a LAN (bridge) with
//! three directors, two real servers and a client.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use herd_testkit::{require_root, wait_until, Host, Lan, Proc};

use crate::util::herd_bin;

const VIP: &str = "10.61.0.100";

fn now() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs_f64()
}

struct Director {
    host: Host,
    config: PathBuf,
    socket: PathBuf,
    log: PathBuf,
    proc: Option<Proc>,
}

impl Director {
    fn new(lan: &Lan, dir: &Path, n: u8, priority: u8) -> Director {
        let host = lan.host(&format!("d{n}"), &[&format!("10.61.0.{n}/24")]);
        let socket = dir.join(format!("d{n}.sock"));
        let config = dir.join(format!("d{n}.toml"));
        std::fs::write(
            &config,
            format!(
                r#"
[daemon]
socket = "{socket}"
drain-timeout = "1s"

[lb]
workers = 1
connect-timeout = "200ms"

[[lb.service]]
name = "web"
address = "{VIP}:80"
scheduler = "rr"
  [[lb.service.real]]
  address = "10.61.0.21:8080"
  [[lb.service.real]]
  address = "10.61.0.22:8080"

[[vrrp.instance]]
name = "VI_1"
interface = "eth0"
vrid = 61
priority = {priority}
advert-int = "100ms"
vips = ["{VIP}/24"]
notify-master = "echo $HERD_VRRP_OLD_STATE-$HERD_VRRP_STATE >> {dir}/d{n}.notify"
"#,
                socket = socket.display(),
                dir = dir.display(),
            ),
        )
        .unwrap();
        let log = dir.join(format!("d{n}.log"));
        let mut d = Director {
            host,
            config,
            socket,
            log,
            proc: None,
        };
        d.start();
        d
    }

    fn start(&mut self) {
        let config = self.config.display().to_string();
        self.proc = Some(
            self.host
                .spawn(herd_bin(), &["daemon", "--config", &config], &self.log),
        );
    }

    fn kill(&mut self) {
        if let Some(mut p) = self.proc.take() {
            p.kill();
        }
    }

    /// `herd ha status --json` through the daemon's socket (the file system is shared).
    fn state(&self) -> Option<String> {
        let out = Command::new(herd_bin())
            .args([
                "--socket",
                &self.socket.display().to_string(),
                "ha",
                "status",
                "--json",
            ])
            .output()
            .ok()?;
        let v: serde_json::Value = serde_json::from_slice(&out.stdout).ok()?;
        v[0]["state"].as_str().map(str::to_string)
    }

    fn herd(&self, args: &[&str]) -> std::process::Output {
        Command::new(herd_bin())
            .args(["--socket", &self.socket.display().to_string()])
            .args(args)
            .output()
            .unwrap()
    }

    fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

/// Attempts the client logged: (start, end, ok).
fn attempts(path: &Path) -> Vec<(f64, f64, bool)> {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .filter_map(|l| {
            let mut w = l.split_whitespace();
            Some((
                w.next()?.parse().ok()?,
                w.next()?.parse().ok()?,
                w.next()? == "1",
            ))
        })
        .collect()
}

/// Seconds from `t0` to the end of the first successful request started after it.
fn recovered_after(path: &Path, t0: f64) -> Option<f64> {
    attempts(path)
        .into_iter()
        .find(|&(start, _, ok)| ok && start >= t0)
        .map(|(_, end, _)| end - t0)
}

fn masters(ds: &[&Director]) -> Vec<usize> {
    ds.iter()
        .enumerate()
        .filter(|(_, d)| d.state().as_deref() == Some("master"))
        .map(|(i, _)| i)
        .collect()
}

#[test]
fn three_directors_failover_succession_partition_and_handover() {
    if !require_root("three_directors_failover_succession_partition_and_handover") {
        return;
    }
    let dir = tempdir("vrrp3");
    let lan = Lan::new("vrrp3");
    let client = lan.host("c", &["10.61.0.10/24"]);
    let mut reals = Vec::new();
    for n in [21u8, 22] {
        let h = lan.host(&format!("r{n}"), &[&format!("10.61.0.{n}/24")]);
        let log = dir.join(format!("r{n}.log"));
        let addr = format!("10.61.0.{n}");
        let p = h.spawn(
            "/usr/bin/python3",
            &[
                "-m",
                "http.server",
                "8080",
                "--bind",
                &addr,
                "--directory",
                "/",
            ],
            &log,
        );
        reals.push((h, p));
    }
    let mut d1 = Director::new(&lan, &dir, 1, 200);
    let mut d2 = Director::new(&lan, &dir, 2, 150);
    let d3 = Director::new(&lan, &dir, 3, 100);
    let report = |what: &str, d: &Director| format!("{what}\n--- {}:\n{}", d.host.name(), d.log());

    assert!(
        wait_until(Duration::from_secs(5), || d1.state().as_deref()
            == Some("master")),
        "{}",
        report("d1 never became master", &d1)
    );
    assert!(d1.host.has_addr(VIP));
    assert!(!d2.host.has_addr(VIP) && !d3.host.has_addr(VIP));

    let clog = dir.join("client.log");
    let _client = client.spawn(
        "/usr/bin/python3",
        &[env!("CARGO_MANIFEST_DIR").to_string() + "/tests/peers/vip_client.py"]
            .iter()
            .map(String::as_str)
            .chain([VIP, "80", &clog.display().to_string(), "40"])
            .collect::<Vec<_>>(),
        &dir.join("client.out"),
    );
    assert!(
        wait_until(Duration::from_secs(5), || attempts(&clog)
            .iter()
            .any(|a| a.2)),
        "the client never got through the VIP: {:?}\n{}",
        attempts(&clog).last(),
        report("", &d1)
    );

    // Kill the master: rank 2 takes over, and the client's neighbour entry follows it.
    let t0 = now();
    d1.kill();
    assert!(
        wait_until(Duration::from_secs(5), || d2.state().as_deref()
            == Some("master")),
        "{}",
        report("d2 did not take over", &d2)
    );
    assert!(wait_until(Duration::from_secs(5), || recovered_after(
        &clog, t0
    )
    .is_some()));
    let first = recovered_after(&clog, t0).unwrap();
    assert_eq!(
        client.neighbour(VIP),
        Some(d2.host.mac()),
        "gratuitous ARP moved the VIP"
    );
    assert_eq!(d3.state().as_deref(), Some("backup"));

    // Kill rank 2: rank 3 serves the VIP.
    let t1 = now();
    d2.kill();
    assert!(wait_until(Duration::from_secs(5), || d3.state().as_deref()
        == Some("master")));
    assert!(wait_until(Duration::from_secs(5), || recovered_after(
        &clog, t1
    )
    .is_some()));
    let second = recovered_after(&clog, t1).unwrap();
    assert_eq!(client.neighbour(VIP), Some(d3.host.mac()));
    eprintln!("failover (SIGKILL to first answer through the VIP): d1->d2 {first:.3}s, d2->d3 {second:.3}s");
    assert!(
        first < 3.0 && second < 3.0,
        "failover took {first:.3}s / {second:.3}s"
    );

    // Restore rank 1: it removes the VIP its killed predecessor left and preempts.
    d1.start();
    assert!(
        wait_until(Duration::from_secs(5), || d1.state().as_deref()
            == Some("master")
            && d3.state().as_deref() == Some("backup")),
        "{}",
        report("d1 did not preempt", &d1)
    );
    assert!(wait_until(Duration::from_secs(2), || !d3
        .host
        .has_addr(VIP)));
    assert!(wait_until(Duration::from_secs(2), || client.neighbour(VIP)
        == Some(d1.host.mac())));

    // Partition: cut the master's link. It goes to fault and gives the VIP up; rank 3 takes
    // over. Healed, exactly one master within a second.
    d1.host.cut();
    assert!(wait_until(Duration::from_secs(5), || d3.state().as_deref()
        == Some("master")));
    assert!(wait_until(Duration::from_secs(2), || d1.state().as_deref()
        == Some("fault")));
    assert!(!d1.host.has_addr(VIP));
    d1.host.heal();
    let healed = now();
    let one = wait_until(Duration::from_secs(3), || {
        masters(&[&d1, &d3]) == vec![0] && d3.state().as_deref() == Some("backup")
    });
    let settled = now() - healed;
    assert!(one, "{}", report("no single master after healing", &d1));
    eprintln!("partition healed: one master (d1) after {settled:.3}s");
    assert!(settled < 1.5, "{settled:.3}s to one master after healing");
    assert!(wait_until(Duration::from_secs(2), || client.neighbour(VIP)
        == Some(d1.host.mac())));

    // Planned hand-over: d1 resigns and stands by; d3 takes over; resume lets d1 back.
    let out = d1.herd(&["ha", "failover"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(wait_until(Duration::from_secs(3), || d3.state().as_deref()
        == Some("master")));
    let st = d1.herd(&["ha", "status"]);
    let st = String::from_utf8_lossy(&st.stdout);
    assert!(st.contains("BACKUP (standby)"), "{st}");
    std::thread::sleep(Duration::from_millis(600));
    assert_eq!(
        d1.state().as_deref(),
        Some("backup"),
        "a standby does not preempt"
    );
    let out = d1.herd(&["ha", "resume"]);
    assert!(out.status.success());
    assert!(wait_until(Duration::from_secs(3), || d1.state().as_deref()
        == Some("master")));
    let notes = std::fs::read_to_string(dir.join("d1.notify")).unwrap_or_default();
    assert!(
        notes
            .lines()
            .any(|l| l.starts_with("backup-master INSTANCE VI_1 MASTER 200")),
        "notify-master ran: {notes:?}"
    );

    // The client's view of the whole run.
    let all = attempts(&clog);
    let failed = all.iter().filter(|a| !a.2).count();
    eprintln!(
        "client: {} requests, {failed} failed (during the failovers)",
        all.len()
    );
    drop(d2);
    let _ = std::fs::remove_dir_all(&dir);
}

/// Hand-made bad packets are dropped and counted by reason; the director stays master.
#[test]
fn bad_packets_are_dropped_and_counted() {
    if !require_root("bad_packets_are_dropped_and_counted") {
        return;
    }
    let dir = tempdir("vrrpbad");
    let lan = Lan::new("vrrpbad");
    let d = Director::new(&lan, &dir, 1, 100);
    let sender = lan.host("s", &["10.61.0.9/24"]);
    assert!(
        wait_until(Duration::from_secs(5), || d.state().as_deref()
            == Some("master")),
        "{}",
        d.log()
    );
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/peers/vrrp_send.py");
    sender.run(&["/usr/bin/python3", script, "10.61.0.9", "61", VIP]);
    let counted = |status: &serde_json::Value| {
        ["short", "version", "ttl", "checksum", "vrid"]
            .iter()
            .all(|k| status[0]["dropped"][k].as_u64() == Some(1))
    };
    let mut last = serde_json::Value::Null;
    let ok = wait_until(Duration::from_secs(3), || {
        let out = d.herd(&["ha", "status", "--json"]);
        last = serde_json::from_slice(&out.stdout).unwrap_or_default();
        counted(&last) && last[0]["adverts-received"].as_u64() == Some(1)
    });
    assert!(ok, "{last:#}");
    assert_eq!(
        d.state().as_deref(),
        Some("master"),
        "priority 1 does not preempt"
    );
    let _ = std::fs::remove_dir_all(&dir);
}

fn tempdir(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("herd-it-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}
