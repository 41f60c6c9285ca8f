//! Unicast VRRP (`unicast-peers`): two herd directors that never use the multicast group; a
//! stranger's advert, however well-formed and however high its priority, is dropped.

use std::time::Duration;

use herd_testkit::{require_root, wait_until};

use super::{now, Client, Director, Site, Vrrp, VIP, VRID};

fn unicast(n: u8, priority: u8, peer: u8) -> (u8, Option<Vrrp>, String) {
    let v = Vrrp {
        priority,
        advert_ms: 100,
    };
    (
        n,
        Some(v),
        format!("unicast-peers = [\"10.61.0.{peer}\"]\n"),
    )
}

#[test]
fn unicast_peers_fail_over_and_drop_strangers() {
    if !require_root("unicast_peers_fail_over_and_drop_strangers") {
        return;
    }
    let site = Site::new("vrrpuni");
    let (lan, dir) = (&site.lan, &site.dir);
    let (n, v, extra) = unicast(1, 200, 2);
    let mut d1 = Director::custom(lan, dir, n, v, &extra);
    let (n, v, extra) = unicast(2, 100, 1);
    let d2 = Director::custom(lan, dir, n, v, &extra);
    assert!(
        wait_until(Duration::from_secs(5), || d1.state().as_deref()
            == Some("master")),
        "{}",
        d1.report("d1 never became master")
    );
    assert!(
        wait_until(Duration::from_secs(3), || {
            let s = d2.status();
            s[0]["state"] == "backup" && s[0]["adverts-received"].as_u64() > Some(3)
        }),
        "{}",
        d2.report("d2 hears no unicast adverts")
    );

    // A stranger on the LAN sends d1 a well-formed advert of the same VRID with priority 254
    // (after one bad packet of each kind): not a peer, so dropped; d1 stays master.
    let stranger = lan.host("s", &["10.61.0.9/24"]);
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/peers/vrrp_send.py");
    let vrid = VRID.to_string();
    stranger.run(&[
        "/usr/bin/python3",
        script,
        "10.61.0.9",
        &vrid,
        VIP,
        "10.61.0.1",
        "254",
    ]);
    let mut last = serde_json::Value::Null;
    let counted = wait_until(Duration::from_secs(3), || {
        last = d1.status();
        ["short", "version", "ttl", "checksum", "vrid", "peer"]
            .iter()
            .all(|k| last[0]["dropped"][k].as_u64() == Some(1))
    });
    assert!(counted, "{last:#}");
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(
        d1.state().as_deref(),
        Some("master"),
        "{}",
        d1.report("a stranger's advert made d1 step down")
    );

    // Kill the master: its peer takes over, and the client follows.
    let clog = Client::start(&site, 20, Duration::from_secs(5), || d1.report(""));
    let t0 = now();
    d1.kill();
    assert!(
        wait_until(Duration::from_secs(5), || d2.state().as_deref()
            == Some("master")),
        "{}",
        d2.report("d2 did not take over")
    );
    let took = clog.recovered(t0, Duration::from_secs(5), || d2.report(""));
    assert_eq!(site.client.neighbour(VIP), Some(d2.host.mac()));

    // Back again: d1 preempts over unicast.
    d1.start();
    assert!(
        wait_until(Duration::from_secs(5), || d1.state().as_deref()
            == Some("master")
            && d2.state().as_deref() == Some("backup")),
        "{}\n{}",
        d1.report("d1 did not preempt"),
        d2.report("")
    );
    eprintln!("unicast failover (SIGKILL to first answer through the VIP): {took:.3}s");
    assert!(took < 3.0, "failover took {took:.3}s");
    drop(d2);
    site.clean();
}
