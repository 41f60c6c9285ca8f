//! The real-server role (`real-server = true`, the seeds' `lvs-r.sh`): a backup director
//! holds the VIP on `lo` with ARP for it quiet, so a master forwarding LVS-DR style (packets
//! still addressed to the VIP, sent to the backup's MAC) can use it as a real server; the
//! role follows the state.

use std::time::Duration;

use herd_testkit::{require_root, wait_until, Host};

use super::{on_lo, sysctl, Director, Site, Vrrp, VIP};

/// Who answers an ARP request for the VIP (`tests/peers/arp_who_has.py` on `from`).
fn arp_answers(from: &Host) -> Vec<String> {
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/peers/arp_who_has.py");
    let out = from.run(&["/usr/bin/python3", script, VIP]);
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(str::to_string)
        .collect()
}

/// The ARP settings of the host's `eth0`: (arp_ignore, arp_announce).
fn arp_settings(host: &Host) -> (String, String) {
    (
        sysctl(host, "net.ipv4.conf.eth0.arp_ignore"),
        sysctl(host, "net.ipv4.conf.eth0.arp_announce"),
    )
}

/// The director plays a real server: on `lo`, quiet, flagged in `herd ha status`.
fn serving(d: &Director) -> bool {
    on_lo(&d.host, &format!("{VIP}/32"))
        && !d.host.has_addr(VIP)
        && arp_settings(&d.host) == ("1".into(), "2".into())
        && d.status()[0]["real-server"] == true
}

/// GET / through the VIP with the client's neighbour entry for it pinned to `mac`: the frame
/// goes to that host, still addressed to the VIP, as an LVS-DR director forwards it.
fn get_via(client: &Host, mac: &str) -> bool {
    client.run(&[
        "ip",
        "neigh",
        "replace",
        VIP,
        "lladdr",
        mac,
        "dev",
        "eth0",
        "nud",
        "permanent",
    ]);
    let ok = client
        .output(&[
            "curl",
            "-sf",
            "--max-time",
            "2",
            "-o",
            "/dev/null",
            &format!("http://{VIP}/"),
        ])
        .status
        .success();
    client.run(&["ip", "neigh", "del", VIP, "dev", "eth0"]);
    ok
}

#[test]
fn a_backup_serves_as_a_real_server_for_the_vip() {
    if !require_root("a_backup_serves_as_a_real_server_for_the_vip") {
        return;
    }
    let site = Site::new("vrrprs");
    let (lan, dir, client) = (&site.lan, &site.dir, &site.client);
    let vrrp = |priority| {
        Some(Vrrp {
            priority,
            advert_ms: 100,
        })
    };
    let mut d1 = Director::custom(lan, dir, 1, vrrp(200), "real-server = true\n");
    let d2 = Director::custom(lan, dir, 2, vrrp(150), "real-server = true\n");
    // A director without the role, for contrast.
    let d3 = Director::custom(lan, dir, 3, vrrp(100), "");
    assert!(
        wait_until(Duration::from_secs(5), || d1.state().as_deref()
            == Some("master")
            && serving(&d2)),
        "{}\n{}",
        d1.report("no master"),
        d2.report("d2 is not serving as a real server")
    );
    assert!(!on_lo(&d1.host, &format!("{VIP}/32")));
    assert_eq!(d1.status()[0]["real-server"], false);
    assert!(!on_lo(&d3.host, &format!("{VIP}/32")));
    assert_eq!(arp_settings(&d3.host), ("0".into(), "0".into()));

    // Only the master answers ARP for the VIP.
    for _ in 0..3 {
        assert_eq!(arp_answers(client), vec![d1.host.mac()]);
    }
    // Sent to d2's MAC, a request for the VIP is served there; d3 drops it.
    assert!(wait_until(Duration::from_secs(5), || get_via(
        client,
        &d1.host.mac()
    )));
    assert!(get_via(client, &d2.host.mac()), "{}", d2.report(""));
    assert!(!get_via(client, &d3.host.mac()));

    // d2 takes over: the VIP moves from lo to eth0 and ARP is as it was.
    d1.kill();
    assert!(
        wait_until(Duration::from_secs(5), || d2.state().as_deref()
            == Some("master")),
        "{}",
        d2.report("d2 did not take over")
    );
    assert!(d2.host.has_addr(VIP));
    assert!(!on_lo(&d2.host, &format!("{VIP}/32")));
    assert_eq!(arp_settings(&d2.host), ("0".into(), "0".into()));
    assert_eq!(d2.status()[0]["real-server"], false);
    // (The killed d1 left the VIP on its eth0, as a crash does: it answers too.)
    assert!(arp_answers(client).contains(&d2.host.mac()));

    // d1 comes back and preempts: d2 is a real server again, past its hand-over.
    d1.start();
    assert!(
        wait_until(Duration::from_secs(5), || d1.state().as_deref()
            == Some("master")
            && serving(&d2)),
        "{}",
        d2.report("d2 did not go back to the real-server role")
    );
    assert_eq!(arp_answers(client), vec![d1.host.mac()]);
    assert!(get_via(client, &d2.host.mac()));
    site.clean();
}
