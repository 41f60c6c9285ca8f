//! Tracking moves the VIP: a failing `track-script`, then a failing `track-service` (its real
//! servers down, as the health monitor sees them) lower the master's priority below the
//! backup's, and the backup takes over; a script that passes again lets the master preempt.

use std::time::Duration;

use herd_testkit::{require_root, wait_until};

use super::{Director, Site, Vrrp};

#[test]
fn failing_scripts_and_services_hand_the_vip_over() {
    if !require_root("failing_scripts_and_services_hand_the_vip_over") {
        return;
    }
    let mut site = Site::new("vrrptrack");
    let (lan, dir) = (&site.lan, &site.dir);
    let ok = dir.join("d1.ok");
    std::fs::write(&ok, "").unwrap();
    let d1 = Director::custom(
        lan,
        dir,
        1,
        Some(Vrrp {
            priority: 200,
            advert_ms: 100,
        }),
        &format!(
            r#"track-script = [{{ command = "test -e {ok}", interval = "100ms", weight = -100 }}]
track-service = [{{ name = "web", weight = -100 }}]

[[health.check]]
name = "tcp"
type = "tcp"
service = "web"
interval = "200ms"
timeout = "150ms"
fall = 1
rise = 1
"#,
            ok = ok.display()
        ),
    );
    let d2 = Director::new(lan, dir, 2, 150);
    let roles = |a: &str, b: &str| {
        wait_until(Duration::from_secs(5), || {
            d1.state().as_deref() == Some(a) && d2.state().as_deref() == Some(b)
        })
    };
    assert!(
        roles("master", "backup"),
        "{}",
        d1.report("d1 never master")
    );
    let tracking = |d: &Director| d.status()[0]["tracking"].clone();
    let t = tracking(&d1);
    assert_eq!(t.as_array().map(Vec::len), Some(2), "{t:#}");
    assert!(
        t.as_array().unwrap().iter().all(|x| x["passing"] == true),
        "{t:#}"
    );

    // The script fails: 200 - 100 < 150, d2 takes over.
    std::fs::remove_file(&ok).unwrap();
    assert!(
        roles("backup", "master"),
        "{}",
        d1.report("script failure did not hand over")
    );
    let s = d1.status();
    assert_eq!(s[0]["priority"], 100, "{s:#}");
    assert_eq!(s[0]["tracking"][0]["kind"], "script");
    assert_eq!(s[0]["tracking"][0]["passing"], false);
    let text = String::from_utf8_lossy(&d1.herd(&["ha", "status"]).stdout).to_string();
    assert!(text.contains("FAILING"), "{text}");

    // It passes again: d1 preempts.
    std::fs::write(&ok, "").unwrap();
    assert!(
        roles("master", "backup"),
        "{}",
        d1.report("no preemption after the script passed")
    );
    assert_eq!(d1.status()[0]["priority"], 200);

    // Both real servers die: the health monitor quiesces them, `web` fails, d2 takes over.
    for (_, p) in &mut site.reals {
        p.kill();
    }
    assert!(
        wait_until(Duration::from_secs(8), || d2.state().as_deref()
            == Some("master")),
        "{}",
        d1.report("service failure did not hand over")
    );
    let s = d1.status();
    assert_eq!(s[0]["tracking"][1]["kind"], "service");
    assert_eq!(s[0]["tracking"][1]["passing"], false, "{s:#}");
    assert_eq!(s[0]["priority"], 100);
    site.clean();
}
