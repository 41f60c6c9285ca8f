//! `herd reload` applies VRRP changes in the running daemon: priority and advert interval, with
//! the data plane's workers in the same reload.

use std::time::Duration;

use herd_testkit::{require_root, wait_until, Lan};

use super::{tempdir, Director, Vrrp, VIP};

#[test]
fn a_reload_applies_priority_and_advert_interval_in_place() {
    if !require_root("a_reload_applies_priority_and_advert_interval_in_place") {
        return;
    }
    let dir = tempdir("vrrpreload");
    let lan = Lan::new("vrrpreload");
    let d1 = Director::new(&lan, &dir, 1, 200);
    let d2 = Director::new(&lan, &dir, 2, 150);
    let pid = d1.proc.as_ref().unwrap().pid();
    assert!(
        wait_until(Duration::from_secs(5), || d1.state().as_deref()
            == Some("master")
            && d2.state().as_deref() == Some("backup")),
        "{}",
        d1.report("d1 never became master")
    );
    // Priority 100 (below d2's 150), a 300 ms interval and 2 data-plane workers instead of 1:
    // all three apply in this process.
    d1.configure(Some(Vrrp {
        priority: 100,
        advert_ms: 300,
    }));
    let text = std::fs::read_to_string(&d1.config).unwrap();
    assert!(text.contains("workers = 1\n"), "{text}");
    std::fs::write(&d1.config, text.replace("workers = 1\n", "workers = 2\n")).unwrap();
    let out = d1.herd(&["reload"]);
    let said =
        String::from_utf8_lossy(&out.stdout).to_string() + &String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{said}");
    assert!(!said.contains("restart"), "{said}");
    let s = d1.status();
    assert_eq!(s[0]["priority"], 100, "{s}");
    let st: serde_json::Value =
        serde_json::from_slice(&d1.herd(&["status", "--json"]).stdout).unwrap();
    assert_eq!(st["workers"], 2, "{st}");
    assert!(
        wait_until(Duration::from_secs(5), || d2.state().as_deref()
            == Some("master")
            && d1.state().as_deref() == Some("backup")),
        "{}",
        d2.report("d2 did not preempt")
    );
    assert!(wait_until(Duration::from_secs(5), || d2.host.has_addr(VIP)
        && !d1.host.has_addr(VIP)));
    // Back above d2, as master d1 advertises every 300 ms: d2 hears it on the wire.
    d1.configure(Some(Vrrp {
        priority: 250,
        advert_ms: 300,
    }));
    assert!(d1.herd(&["reload"]).status.success());
    assert!(
        wait_until(Duration::from_secs(5), || d1.state().as_deref()
            == Some("master")
            && d2.status()[0]["advert-interval-ms"] == 300),
        "{}",
        d1.report("d1 did not take over at 300 ms")
    );
    assert_eq!(d1.proc.as_ref().unwrap().pid(), pid);
}
