//! IPv6 instances: VRRPv3 to ff02::12 from link-local addresses, the VIP fd61::100 moved with
//! unsolicited neighbour advertisements. A chain of takeovers across herd and keepalived
//! (herd → herd → keepalived → herd), and hand-made bad packets.

use std::time::Duration;

use herd_testkit::{require_root, wait_until, Lan};

use super::{link_local, now, tempdir, Client, Director, Keepalived, Site, VRID};

pub const VIP6: &str = "fd61::100";

/// A virtual service on [VIP6]:80 and, with a priority, the IPv6 VRRP instance that moves it.
pub fn v6(priority: Option<u8>) -> String {
    let mut text = format!(
        r#"
[[lb.service]]
name = "web6"
address = "[{VIP6}]:80"
scheduler = "rr"
  [[lb.service.real]]
  address = "[fd61::21]:8080"
  [[lb.service.real]]
  address = "[fd61::22]:8080"
"#
    );
    if let Some(p) = priority {
        text += &format!(
            r#"
[[vrrp.instance]]
name = "VI_6"
interface = "eth0"
vrid = {VRID}
priority = {p}
advert-int = "100ms"
vips = ["{VIP6}/64"]
"#
        );
    }
    text
}

fn no_drops(d: &Director) {
    let s = d.status();
    assert_eq!(
        s[0]["dropped"].as_object().map(|m| m.len()),
        Some(0),
        "{} dropped packets: {s:#}",
        d.host.name()
    );
}

#[test]
fn ipv6_vip_moves_between_herd_and_keepalived() {
    if !require_root("ipv6_vip_moves_between_herd_and_keepalived") {
        return;
    }
    let site = Site::new("vrrp6");
    let (lan, dir, client) = (&site.lan, &site.dir, &site.client);
    client.run(&["ip", "addr", "add", "fd61::10/64", "dev", "eth0", "nodad"]);
    let mut d1 = Director::dual(lan, dir, 1, &v6(Some(200)));
    let mut d2 = Director::dual(lan, dir, 2, &v6(Some(150)));
    let mut d3 = Director::dual(lan, dir, 3, &v6(None));
    let mut ka = Keepalived::for_vip(&d3.host, dir, 100, "0.1", &format!("{VIP6}/64"));

    // d1 is master, from its link-local address; d2 and keepalived hear it and stay backup.
    assert!(
        wait_until(Duration::from_secs(5), || d1.state().as_deref()
            == Some("master")),
        "{}",
        d1.report("d1 never became master")
    );
    assert!(d1.host.has_addr(VIP6));
    let s1 = d1.status();
    assert_eq!(s1[0]["address"], link_local(&d1.host).as_str(), "{s1:#}");
    std::thread::sleep(Duration::from_millis(800));
    assert_eq!(d2.state().as_deref(), Some("backup"), "{}", d2.report(""));
    assert_eq!(d2.status()[0]["master"], link_local(&d1.host).as_str());
    assert!(!d2.host.has_addr(VIP6) && !d3.host.has_addr(VIP6));
    assert!(
        !ka.said_master(),
        "{}",
        ka.report("keepalived took the VIP from a live herd master")
    );
    no_drops(&d2);

    let clog = Client::start_at(&site, VIP6, 40, Duration::from_secs(5), || d1.report(""));

    // herd → herd: the unsolicited neighbour advertisement moves the client's entry.
    let t0 = now();
    d1.kill();
    assert!(
        wait_until(Duration::from_secs(5), || d2.state().as_deref()
            == Some("master")),
        "{}",
        d2.report("d2 did not take over")
    );
    let to_d2 = clog.recovered(t0, Duration::from_secs(5), || d2.report(""));
    assert!(
        wait_until(Duration::from_secs(2), || client.neighbour(VIP6)
            == Some(d2.host.mac())),
        "{:?}",
        client.neighbour(VIP6)
    );

    // herd → keepalived.
    let t1 = now();
    d2.kill();
    assert!(
        wait_until(Duration::from_secs(5), || ka.said_master()
            && d3.host.has_addr(VIP6)),
        "{}",
        ka.report("keepalived did not take over from herd")
    );
    let to_ka = clog.recovered(t1, Duration::from_secs(5), || ka.report(""));
    assert!(wait_until(Duration::from_secs(2), || client
        .neighbour(VIP6)
        == Some(d3.host.mac())));

    // herd comes back ranked below keepalived and backs it up, hearing its adverts.
    d1.extra = v6(Some(50));
    d1.configure(None);
    d1.start();
    let ka_addr = link_local(&d3.host);
    assert!(
        wait_until(Duration::from_secs(5), || {
            let s = d1.status();
            s[0]["state"] == "backup" && s[0]["master"] == ka_addr.as_str()
        }),
        "{}",
        d1.report("herd does not back keepalived up")
    );
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(d1.state().as_deref(), Some("backup"));
    assert!(!d1.host.has_addr(VIP6));
    no_drops(&d1);

    // keepalived → herd.
    let t2 = now();
    ka.kill();
    d3.kill();
    assert!(
        wait_until(Duration::from_secs(5), || d1.state().as_deref()
            == Some("master")
            && d1.host.has_addr(VIP6)),
        "{}",
        d1.report("herd did not take over from keepalived")
    );
    let to_d1 = clog.recovered(t2, Duration::from_secs(5), || d1.report(""));
    assert!(wait_until(Duration::from_secs(2), || client
        .neighbour(VIP6)
        == Some(d1.host.mac())));
    eprintln!(
        "IPv6 failover (kill to first answer through [{VIP6}]:80): herd -> herd {to_d2:.3}s, herd -> keepalived {to_ka:.3}s, keepalived -> herd {to_d1:.3}s"
    );
    assert!(to_d2 < 3.0 && to_ka < 3.0 && to_d1 < 3.0);
    site.clean();
}

/// Bad IPv6 packets (hop limit, checksum over the pseudo-header…) are dropped and counted.
#[test]
fn bad_ipv6_packets_are_dropped_and_counted() {
    if !require_root("bad_ipv6_packets_are_dropped_and_counted") {
        return;
    }
    let dir = tempdir("vrrpbad6");
    let lan = Lan::new("vrrpbad6");
    let d = Director::dual(&lan, &dir, 1, &v6(Some(100)));
    let sender = lan.host("s", &["10.61.0.9/24"]);
    assert!(
        wait_until(Duration::from_secs(5), || d.state().as_deref()
            == Some("master")),
        "{}",
        d.log()
    );
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/peers/vrrp_send.py");
    let src = link_local(&sender);
    sender.run(&["/usr/bin/python3", script, &src, "61", VIP6]);
    let mut last = serde_json::Value::Null;
    let ok = wait_until(Duration::from_secs(3), || {
        last = d.status();
        ["short", "version", "ttl", "checksum", "vrid"]
            .iter()
            .all(|k| last[0]["dropped"][k].as_u64() == Some(1))
            && last[0]["adverts-received"].as_u64() == Some(1)
    });
    assert!(ok, "{last:#}\n{}", d.log());
    assert_eq!(d.state().as_deref(), Some("master"));
    let _ = std::fs::remove_dir_all(&dir);
}
