//! Planned hand-overs under load lose no request: `herd ha failover`, preemption after
//! `herd ha resume`, and a graceful stop (SIGTERM) of the master, each in the middle of a
//! `wrk` run with keep-alive connections through the VIP.

use std::time::Duration;

use herd_testkit::{require_root, wait_until, Host};

use super::ipv6::{v6, VIP6};
use super::{link_local, on_lo, sysctl, Director, Site, VIP};

/// What wrk said: requests, and its error lines (socket errors, non-2xx/3xx answers).
struct Wrk {
    requests: u64,
    errors: Vec<String>,
    text: String,
}

/// Runs wrk on `client` against `url` for `secs` with keep-alive connections, calling
/// `during` after `after` seconds.
fn wrk_while(client: &Host, url: &str, secs: u32, after: Duration, during: impl FnOnce()) -> Wrk {
    let child = client
        .cmd("/usr/bin/wrk")
        .args(["-t2", "-c16", &format!("-d{secs}s"), "--timeout", "2s", url])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("wrk (apt-get install wrk)");
    std::thread::sleep(after);
    during();
    let out = child.wait_with_output().unwrap();
    let text =
        String::from_utf8_lossy(&out.stdout).to_string() + &String::from_utf8_lossy(&out.stderr);
    let requests = text
        .lines()
        .find(|l| l.contains("requests in"))
        .and_then(|l| l.split_whitespace().next())
        .and_then(|n| n.parse().ok())
        .unwrap_or(0);
    let errors = text
        .lines()
        .filter(|l| l.contains("Socket errors") || l.contains("Non-2xx"))
        .map(|l| l.trim().to_string())
        .collect();
    Wrk {
        requests,
        errors,
        text,
    }
}

/// wrk got answers, and every one of them.
fn lossless(w: &Wrk, what: &str, d1: &Director, d2: &Director) {
    eprintln!("{what}: {} requests, errors {:?}", w.requests, w.errors);
    assert!(
        w.requests > 100 && w.errors.is_empty(),
        "{what} under load:\n{}\n{}\n{}",
        w.text,
        d1.report(""),
        d2.report("")
    );
}

#[test]
fn planned_handovers_under_wrk_lose_no_request() {
    if !require_root("planned_handovers_under_wrk_lose_no_request") {
        return;
    }
    let site = Site::new("vrrpho");
    let (lan, dir, client) = (&site.lan, &site.dir, &site.client);
    let mut d1 = Director::new(lan, dir, 1, 200);
    let d2 = Director::new(lan, dir, 2, 150);
    assert!(
        wait_until(Duration::from_secs(5), || d1.state().as_deref()
            == Some("master")
            && d2.state().as_deref() == Some("backup")),
        "{}",
        d1.report("no master")
    );
    // The real servers are up.
    assert!(wait_until(Duration::from_secs(5), || client
        .output(&["curl", "-sf", "-o", "/dev/null", &format!("http://{VIP}/")])
        .status
        .success()));

    // 1. herd ha failover: d1 resigns, d2 takes over, d1's connections drain on d1.
    let url = format!("http://{VIP}/");
    let mut handover_seen = (None, None);
    let w = wrk_while(client, &url, 5, Duration::from_secs(2), || {
        let out = d1.herd(&["ha", "failover"]);
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(wait_until(Duration::from_secs(2), || d2.state().as_deref()
            == Some("master")));
        handover_seen = (
            d1.status()[0]["handover"].as_str().map(str::to_string),
            d2.status()[0]["handover"].as_str().map(str::to_string),
        );
    });
    lossless(&w, "failover", &d1, &d2);
    let (parked, forwarding) = handover_seen;
    assert!(
        parked
            .as_deref()
            .is_some_and(|h| h.contains("parked on lo")),
        "{parked:?}"
    );
    assert!(
        forwarding
            .as_deref()
            .is_some_and(|h| h.contains("to 10.61.0.1")),
        "{forwarding:?}"
    );
    assert!(!d1.host.has_addr(VIP), "d1 left eth0");
    assert!(
        on_lo(&d1.host, &format!("{VIP}/32")),
        "d1 parked the VIP on lo"
    );

    // 2. herd ha resume: d1 preempts d2; d2's connections drain on d2.
    let w = wrk_while(client, &url, 5, Duration::from_secs(2), || {
        assert!(d1.herd(&["ha", "resume"]).status.success());
        assert!(wait_until(Duration::from_secs(2), || d1.state().as_deref()
            == Some("master")));
    });
    lossless(&w, "preemption", &d1, &d2);

    // 3. SIGTERM to the master: it resigns, d2 takes over, d1 drains and exits.
    let w = wrk_while(client, &url, 5, Duration::from_secs(2), || {
        d1.proc.as_ref().unwrap().term();
        assert!(wait_until(Duration::from_secs(2), || d2.state().as_deref()
            == Some("master")));
    });
    lossless(&w, "graceful stop", &d1, &d2);
    // d1 is gone and left nothing behind.
    assert!(d1
        .proc
        .as_mut()
        .unwrap()
        .wait_timeout(Duration::from_secs(5))
        .is_some());
    assert!(!d1.host.has_addr(VIP), "{}", d1.host.addrs());
    assert!(
        !on_lo(&d1.host, &format!("{VIP}/32")),
        "d1 took the parked VIP away when it exited"
    );
    assert_eq!(
        sysctl(&d1.host, "net.ipv4.conf.eth0.arp_ignore"),
        "0",
        "arp_ignore restored"
    );
    site.clean();
}

/// The same over IPv6: the old master parks the VIP as a /128 on `lo`, the new one forwards
/// strays to the old one's link-local address (an `ip6` nftables table).
#[test]
fn ipv6_planned_handovers_under_wrk_lose_no_request() {
    if !require_root("ipv6_planned_handovers_under_wrk_lose_no_request") {
        return;
    }
    let site = Site::new("vrrpho6");
    let (lan, dir, client) = (&site.lan, &site.dir, &site.client);
    client.run(&["ip", "addr", "add", "fd61::10/64", "dev", "eth0", "nodad"]);
    let d1 = Director::dual(lan, dir, 1, &v6(Some(200)));
    let d2 = Director::dual(lan, dir, 2, &v6(Some(150)));
    assert!(
        wait_until(Duration::from_secs(5), || d1.state().as_deref()
            == Some("master")
            && d2.state().as_deref() == Some("backup")),
        "{}",
        d1.report("no master")
    );
    let url = format!("http://[{VIP6}]/");
    assert!(wait_until(Duration::from_secs(5), || client
        .output(&["curl", "-sf", "-o", "/dev/null", &url])
        .status
        .success()));

    let mut handover_seen = (None, None);
    let w = wrk_while(client, &url, 5, Duration::from_secs(2), || {
        assert!(d1.herd(&["ha", "failover"]).status.success());
        assert!(wait_until(Duration::from_secs(2), || d2.state().as_deref()
            == Some("master")));
        handover_seen = (
            d1.status()[0]["handover"].as_str().map(str::to_string),
            d2.status()[0]["handover"].as_str().map(str::to_string),
        );
    });
    lossless(&w, "IPv6 failover", &d1, &d2);
    let (parked, forwarding) = handover_seen;
    assert!(
        parked
            .as_deref()
            .is_some_and(|h| h.contains("parked on lo")),
        "{parked:?}"
    );
    let old = link_local(&d1.host);
    assert!(
        forwarding
            .as_deref()
            .is_some_and(|h| h.contains(&format!("to {old}"))),
        "{forwarding:?}"
    );
    assert!(!d1.host.has_addr(VIP6));
    assert!(on_lo(&d1.host, &format!("{VIP6}/128")));

    let w = wrk_while(client, &url, 5, Duration::from_secs(2), || {
        assert!(d1.herd(&["ha", "resume"]).status.success());
        assert!(wait_until(Duration::from_secs(2), || d1.state().as_deref()
            == Some("master")));
    });
    lossless(&w, "IPv6 preemption", &d1, &d2);
    site.clean();
}
