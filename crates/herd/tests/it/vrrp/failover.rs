//! Three herd directors, two real servers and a client: succession, preemption, partition,
//! planned hand-over; and bad packets.

use std::time::Duration;

use herd_testkit::{require_root, wait_until, Lan};

use super::{masters, now, tempdir, Client, Director, Site, VIP};

#[test]
fn three_directors_failover_succession_partition_and_handover() {
    if !require_root("three_directors_failover_succession_partition_and_handover") {
        return;
    }
    let site = Site::new("vrrp3");
    let (lan, dir, client) = (&site.lan, &site.dir, &site.client);
    let mut d1 = Director::new(lan, dir, 1, 200);
    let mut d2 = Director::new(lan, dir, 2, 150);
    let d3 = Director::new(lan, dir, 3, 100);

    assert!(
        wait_until(Duration::from_secs(5), || d1.state().as_deref()
            == Some("master")),
        "{}",
        d1.report("d1 never became master")
    );
    assert!(d1.host.has_addr(VIP));
    assert!(!d2.host.has_addr(VIP) && !d3.host.has_addr(VIP));

    let clog = Client::start(&site, 40, Duration::from_secs(5), || d1.report(""));

    // Kill the master: rank 2 takes over, and the client's neighbour entry follows it.
    let t0 = now();
    d1.kill();
    assert!(
        wait_until(Duration::from_secs(5), || d2.state().as_deref()
            == Some("master")),
        "{}",
        d2.report("d2 did not take over")
    );
    let first = clog.recovered(t0, Duration::from_secs(5), || d2.report(""));
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
    let second = clog.recovered(t1, Duration::from_secs(5), || d3.report(""));
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
        d1.report("d1 did not preempt")
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
    assert!(one, "{}", d1.report("no single master after healing"));
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
    let all = clog.attempts();
    let failed = all.iter().filter(|a| !a.2).count();
    eprintln!(
        "client: {} requests, {failed} failed (during the failovers)",
        all.len()
    );
    drop(d2);
    site.clean();
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
