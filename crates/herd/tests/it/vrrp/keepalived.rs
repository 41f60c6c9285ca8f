//! Interoperation with Debian's keepalived (VRRPv3, same VRID, one LAN), both ways: keepalived
//! backs herd up and takes over when herd dies; herd backs keepalived up and takes over when
//! keepalived dies. d2 runs herd as a load balancer only, beside keepalived, so the client's
//! requests through the VIP work whoever holds it.

use std::time::Duration;

use herd_testkit::{require_root, wait_until};

use super::{now, Client, Director, Keepalived, Site, Vrrp, VIP};

#[test]
fn keepalived_backs_up_herd_and_herd_backs_up_keepalived() {
    if !require_root("keepalived_backs_up_herd_and_herd_backs_up_keepalived") {
        return;
    }
    let site = Site::new("vrrpka");
    let (lan, dir, client) = (&site.lan, &site.dir, &site.client);
    let mut d1 = Director::new(lan, dir, 1, 200);
    let mut d2 = Director::with(lan, dir, 2, None);
    let mut ka = Keepalived::new(&d2.host, dir, 150, "0.1");

    // herd is master; keepalived hears it and stays backup.
    assert!(
        wait_until(Duration::from_secs(5), || d1.state().as_deref()
            == Some("master")),
        "{}",
        d1.report("herd never became master")
    );
    assert!(
        wait_until(Duration::from_secs(5), || std::fs::read_to_string(&ka.log)
            .unwrap_or_default()
            .contains("Entering BACKUP STATE")),
        "{}",
        ka.report("keepalived never entered BACKUP")
    );
    std::thread::sleep(Duration::from_millis(800));
    assert!(
        !ka.said_master() && !d2.host.has_addr(VIP),
        "{}",
        ka.report("keepalived took the VIP from a live herd master")
    );
    let status = d1.status();
    assert_eq!(
        status[0]["dropped"].as_object().map(|m| m.len()),
        Some(0),
        "herd dropped packets: {status:#}"
    );

    let clog = Client::start(&site, 40, Duration::from_secs(5), || d1.report(""));

    // herd dies: keepalived takes over, with gratuitous ARP.
    let t0 = now();
    d1.kill();
    assert!(
        wait_until(Duration::from_secs(5), || ka.said_master()
            && d2.host.has_addr(VIP)),
        "{}",
        ka.report("keepalived did not take over from herd")
    );
    let to_keepalived = clog.recovered(t0, Duration::from_secs(5), || ka.report(""));
    assert!(wait_until(Duration::from_secs(2), || client.neighbour(VIP)
        == Some(d2.host.mac())));

    // herd comes back ranked below keepalived: it backs keepalived up (no preemption).
    d1.configure(Some(Vrrp {
        priority: 100,
        advert_ms: 100,
    }));
    d1.start();
    assert!(
        wait_until(Duration::from_secs(5), || {
            let s = d1.status();
            s[0]["state"] == "backup" && s[0]["master"] == "10.61.0.2"
        }),
        "{}",
        d1.report("herd does not back keepalived up")
    );
    std::thread::sleep(Duration::from_millis(800));
    assert_eq!(d1.state().as_deref(), Some("backup"));
    assert!(!d1.host.has_addr(VIP));
    let status = d1.status();
    assert!(
        status[0]["adverts-received"].as_u64() > Some(3),
        "{status:#}"
    );
    assert_eq!(
        status[0]["dropped"].as_object().map(|m| m.len()),
        Some(0),
        "herd dropped keepalived's adverts: {status:#}"
    );

    // keepalived's director dies (keepalived and its load balancer; a killed keepalived
    // leaves the VIP behind): herd takes over.
    let t1 = now();
    ka.kill();
    d2.kill();
    assert!(
        wait_until(Duration::from_secs(5), || d1.state().as_deref()
            == Some("master")
            && d1.host.has_addr(VIP)),
        "{}",
        d1.report("herd did not take over from keepalived")
    );
    let to_herd = clog.recovered(t1, Duration::from_secs(5), || d1.report(""));
    assert!(wait_until(Duration::from_secs(2), || client.neighbour(VIP)
        == Some(d1.host.mac())));
    eprintln!(
        "keepalived interop: herd -> keepalived {to_keepalived:.3}s, keepalived -> herd {to_herd:.3}s (kill to first answer)"
    );
    site.clean();
}
