//! The rule engine against a fake clock: every rule of the module docs, one at a time.

use std::time::Duration;

use crate::period::{LocalTime, Period};
use crate::spec::{AlertOn, AlertSpec, CheckKind, CheckSpec, Flap, OnFailure, Sink, Targets};

use super::*;

const SEC: u64 = 1000;

/// Monday 2026-11-23, 12:00:00.
fn noon() -> LocalTime {
    LocalTime {
        year: 2026,
        month: 11,
        mday: 23,
        wday: 1,
        yday: 327,
        hour: 12,
        minute: 0,
        second: 0,
    }
}

fn alert(on: AlertOn) -> AlertSpec {
    AlertSpec {
        on,
        sink: Sink::Log,
        period: Period::always(),
        every: None,
        after: 1,
        within: None,
        max: 0,
        timeout: Duration::from_secs(30),
    }
}

fn check(name: &str, alerts: Vec<AlertSpec>) -> CheckSpec {
    CheckSpec {
        name: name.into(),
        kind: CheckKind::Tcp {
            send: None,
            expect: None,
        },
        targets: Targets::Hosts(vec!["a".into(), "b".into()]),
        reals: vec![],
        port: Some(80),
        interval: Duration::from_secs(1),
        failure_interval: Duration::from_secs(1),
        timeout: Duration::from_secs(1),
        rise: 1,
        fall: 1,
        depends: vec![],
        on_failure: OnFailure::Quiesce,
        flap: None,
        alerts,
        disabled: false,
    }
}

/// An engine over the given checks (each with targets a and b) and a clock.
struct Rig {
    e: Engine,
    now: u64,
    local: LocalTime,
}

impl Rig {
    fn new(checks: Vec<CheckSpec>) -> Rig {
        let checks = checks
            .into_iter()
            .map(|c| (c, vec!["a".to_string(), "b".to_string()]))
            .collect();
        Rig {
            e: Engine::new(checks, 0),
            now: 0,
            local: noon(),
        }
    }

    /// Advances the clock by `secs` and feeds one result for target a of check 0.
    fn run(&mut self, secs: u64, ok: bool) -> Vec<Event> {
        self.run_on(0, 0, secs, ok)
    }

    fn run_on(&mut self, check: usize, target: usize, secs: u64, ok: bool) -> Vec<Event> {
        self.now += secs * SEC;
        let o = if ok {
            Outcome::ok("fine")
        } else {
            Outcome::fail("a")
        };
        self.e
            .observe(Key { check, target }, o, self.now, &self.local)
    }
}

fn alerts(ev: &[Event]) -> Vec<(usize, AlertOn)> {
    ev.iter()
        .filter_map(|e| match e {
            Event::Alert { rule, on, .. } => Some((*rule, *on)),
            _ => None,
        })
        .collect()
}

fn held(ev: &[Event]) -> Vec<Suppression> {
    ev.iter()
        .filter_map(|e| match e {
            Event::Suppressed { why, .. } => Some(why.clone()),
            _ => None,
        })
        .collect()
}

fn changes(ev: &[Event]) -> Vec<(Status, Status)> {
    ev.iter()
        .filter_map(|e| match e {
            Event::StateChanged { from, to, .. } => Some((*from, *to)),
            _ => None,
        })
        .collect()
}

#[test]
fn first_result_sets_the_state_then_rise_and_fall_apply() {
    let mut c = check("http", vec![]);
    c.rise = 2;
    c.fall = 3;
    let mut r = Rig::new(vec![c]);
    assert_eq!(changes(&r.run(1, true)), [(Status::Unknown, Status::Up)]);
    assert!(changes(&r.run(1, false)).is_empty());
    assert!(changes(&r.run(1, false)).is_empty());
    assert_eq!(changes(&r.run(1, false)), [(Status::Up, Status::Down)]);
    assert!(changes(&r.run(1, true)).is_empty());
    // A failure in between restarts the count of passes.
    assert!(changes(&r.run(1, false)).is_empty());
    assert!(changes(&r.run(1, true)).is_empty());
    assert_eq!(changes(&r.run(1, true)), [(Status::Down, Status::Up)]);
    let t = r.e.target(Key {
        check: 0,
        target: 0,
    });
    assert_eq!(t.status, Status::Up);
    assert_eq!(t.since_ms, 8 * SEC);
    // Target b was never checked.
    assert_eq!(
        r.e.target(Key {
            check: 0,
            target: 1
        })
        .status,
        Status::Unknown
    );
}

#[test]
fn a_down_alert_goes_out_once_per_outage_and_the_up_alert_after_it() {
    let mut r = Rig::new(vec![check(
        "http",
        vec![alert(AlertOn::Down), alert(AlertOn::Up)],
    )]);
    assert!(
        alerts(&r.run(1, true)).is_empty(),
        "no up alert without an outage"
    );
    assert_eq!(alerts(&r.run(1, false)), [(0, AlertOn::Down)]);
    assert!(alerts(&r.run(1, false)).is_empty());
    assert!(alerts(&r.run(100, false)).is_empty());
    assert_eq!(alerts(&r.run(1, true)), [(1, AlertOn::Up)]);
    assert!(alerts(&r.run(1, true)).is_empty());
    // The next outage alerts again.
    assert_eq!(alerts(&r.run(1, false)), [(0, AlertOn::Down)]);
}

#[test]
fn alertevery_repeats_and_numalerts_caps() {
    let mut a = alert(AlertOn::Down);
    a.every = Some(Duration::from_secs(10));
    a.max = 3;
    let mut r = Rig::new(vec![check("http", vec![a])]);
    let mut sent_at = vec![];
    for _ in 0..60 {
        if !alerts(&r.run(1, false)).is_empty() {
            sent_at.push(r.now / SEC);
        }
    }
    assert_eq!(sent_at, [1, 11, 21], "every 10 s, at most 3");
    // Recovery and a new outage reset the cap.
    r.run(1, true);
    assert_eq!(alerts(&r.run(1, false)), [(0, AlertOn::Down)]);
}

#[test]
fn alertafter_counts_consecutive_failures() {
    let mut a = alert(AlertOn::Down);
    a.after = 3;
    let mut r = Rig::new(vec![check("http", vec![a])]);
    assert!(alerts(&r.run(1, false)).is_empty());
    assert!(alerts(&r.run(1, false)).is_empty());
    assert_eq!(alerts(&r.run(1, false)), [(0, AlertOn::Down)]);
}

#[test]
fn alertafter_within_counts_failures_in_the_window() {
    let mut a = alert(AlertOn::Down);
    a.after = 3;
    a.within = Some(Duration::from_secs(30));
    let mut c = check("http", vec![a]);
    c.rise = 5; // stays down across single passes
    let mut r = Rig::new(vec![c]);
    assert!(alerts(&r.run(1, false)).is_empty()); // t=1
    assert!(alerts(&r.run(20, false)).is_empty()); // t=21
                                                   // Three failures, but the first is 40 s old: not enough.
    assert!(alerts(&r.run(20, false)).is_empty()); // t=41
                                                   // Not consecutive (a pass between), but three within 30 s.
    assert!(alerts(&r.run(5, true)).is_empty()); // t=46
    assert_eq!(alerts(&r.run(5, false)), [(0, AlertOn::Down)]); // t=51: 41, 51 + 21? no: 21 is 30 s old
}

#[test]
fn alerts_fire_only_inside_their_period() {
    let mut a = alert(AlertOn::Down);
    a.period = "wd {Mon-Fri} hr {7am-10pm}".parse().expect("period");
    a.every = Some(Duration::from_secs(60));
    let mut r = Rig::new(vec![check("http", vec![a])]);
    r.local.hour = 23;
    assert!(alerts(&r.run(1, false)).is_empty(), "11pm is outside");
    r.local.wday = 6;
    r.local.hour = 12;
    assert!(alerts(&r.run(1, false)).is_empty(), "Saturday is outside");
    r.local.wday = 2;
    assert_eq!(
        alerts(&r.run(1, false)),
        [(0, AlertOn::Down)],
        "Tuesday noon is inside: the outage's first alert goes out now"
    );
}

#[test]
fn a_failing_parent_holds_the_childs_alerts_for_the_same_target() {
    let mut child = check("http", vec![alert(AlertOn::Down)]);
    child.depends = vec!["ping".into()];
    let mut r = Rig::new(vec![check("ping", vec![]), child]);
    r.run_on(0, 0, 1, false); // ping down for a
    r.run_on(0, 1, 0, true); // ping up for b
    let ev = r.run_on(1, 0, 1, false);
    assert!(alerts(&ev).is_empty());
    assert_eq!(
        held(&ev),
        [Suppression::Dependency {
            parent: "ping".into()
        }]
    );
    // Reported once per outage, not at every run.
    assert!(held(&r.run_on(1, 0, 1, false)).is_empty());
    // Target b's parent is up: its alert goes out.
    assert_eq!(alerts(&r.run_on(1, 1, 1, false)), [(0, AlertOn::Down)]);
    // Once the parent is back, a's alert is due at the next failure.
    r.run_on(0, 0, 1, true);
    assert_eq!(alerts(&r.run_on(1, 0, 1, false)), [(0, AlertOn::Down)]);
}

#[test]
fn a_parent_without_the_target_holds_while_any_of_its_targets_is_down() {
    let mut child = check("http", vec![alert(AlertOn::Down)]);
    child.depends = vec!["gateway".into()];
    let gw = check("gateway", vec![]);
    let mut e = Engine::new(
        vec![(gw, vec!["router".into()]), (child, vec!["a".into()])],
        0,
    );
    let k = |check| Key { check, target: 0 };
    e.observe(k(0), Outcome::fail("router"), 1000, &noon());
    let ev = e.observe(k(1), Outcome::fail("a"), 2000, &noon());
    assert_eq!(
        held(&ev),
        [Suppression::Dependency {
            parent: "gateway".into()
        }]
    );
}

#[test]
fn silences_hold_alerts_until_they_expire_or_are_lifted() {
    let mut a = alert(AlertOn::Down);
    a.every = Some(Duration::from_secs(1));
    let mut r = Rig::new(vec![check("http", vec![a, alert(AlertOn::Up)])]);
    let id =
        r.e.silence(Silence {
            id: 0,
            check: Some("http".into()),
            target: Some("a".into()),
            until_ms: Some(10 * SEC),
            until_recovery: false,
            author: "kim".into(),
            reason: "maintenance".into(),
            created_ms: 0,
        })
        .expect("silence");
    let ev = r.run(1, false);
    assert_eq!(held(&ev), [Suppression::Silenced { id }]);
    assert!(alerts(&ev).is_empty());
    // Target b is not silenced.
    assert_eq!(alerts(&r.run_on(0, 1, 0, false)), [(0, AlertOn::Down)]);
    for _ in 0..8 {
        assert!(alerts(&r.run(1, false)).is_empty()); // t = 2..=9
    }
    assert_eq!(r.e.silences(r.now).len(), 1);
    // Expired at t=10: the held alert goes out.
    assert_eq!(alerts(&r.run(1, false)), [(0, AlertOn::Down)]);
    assert!(r.e.silences(r.now).is_empty());

    // A silence without expiry, lifted by hand; an up alert under it is held.
    let id2 =
        r.e.silence(Silence {
            id: 0,
            check: None,
            target: None,
            until_ms: None,
            until_recovery: false,
            author: "kim".into(),
            reason: "".into(),
            created_ms: 0,
        })
        .expect("silence");
    let ev = r.run(1, true);
    assert!(alerts(&ev).is_empty());
    assert_eq!(held(&ev), [Suppression::Silenced { id: id2 }]);
    assert!(r.e.unsilence(id2));
    assert!(!r.e.unsilence(id2));
    assert_eq!(alerts(&r.run(1, false)), [(0, AlertOn::Down)]);
}

#[test]
fn an_ack_lasts_until_everything_it_covers_recovers() {
    let mut r = Rig::new(vec![check("http", vec![alert(AlertOn::Down)])]);
    r.run(1, false); // a down
    r.run_on(0, 1, 0, false); // b down
    let ack = |e: &mut Engine, target: Option<&str>| {
        e.silence(Silence {
            id: 0,
            check: Some("http".into()),
            target: target.map(str::to_string),
            until_ms: None,
            until_recovery: true,
            author: "kim".into(),
            reason: "ack".into(),
            created_ms: 0,
        })
        .expect("silence")
    };
    let whole = ack(&mut r.e, None);
    let only_b = ack(&mut r.e, Some("b"));
    // a recovers: the check-wide ack holds on (b is still down); b's own ack is untouched.
    let ev = r.run(1, true);
    assert!(
        !ev.iter().any(|e| matches!(e, Event::SilenceLifted { .. })),
        "{ev:?}"
    );
    assert_eq!(r.e.silences(r.now).len(), 2);
    // b recovers: both end, each reported.
    let ev = r.run_on(0, 1, 1, true);
    let lifted: Vec<u64> = ev
        .iter()
        .filter_map(|e| match e {
            Event::SilenceLifted { id } => Some(*id),
            _ => None,
        })
        .collect();
    assert_eq!(lifted, [whole, only_b]);
    assert!(r.e.silences(r.now).is_empty());
    // The next outage alerts again.
    assert_eq!(alerts(&r.run(1, false)), [(0, AlertOn::Down)]);
}

#[test]
fn silencing_an_unknown_check_or_target_is_an_error() {
    let mut r = Rig::new(vec![check("http", vec![])]);
    let s = |c: Option<&str>, t: Option<&str>| Silence {
        id: 0,
        check: c.map(Into::into),
        target: t.map(Into::into),
        until_ms: None,
        until_recovery: false,
        author: String::new(),
        reason: String::new(),
        created_ms: 0,
    };
    assert!(r.e.silence(s(Some("htp"), None)).is_err());
    assert!(r.e.silence(s(Some("http"), Some("z"))).is_err());
    assert!(r.e.silence(s(None, Some("z"))).is_err());
    assert!(r.e.silence(s(None, Some("b"))).is_ok());
}

#[test]
fn flapping_sends_one_notice_holds_alerts_and_settles() {
    let mut c = check("http", vec![alert(AlertOn::Down), alert(AlertOn::Up)]);
    c.flap = Some(Flap {
        changes: 4,
        window: Duration::from_secs(60),
    });
    let mut r = Rig::new(vec![c]);
    r.run(1, true); // unknown -> up: not a change for flapping
    let mut notices = 0;
    let mut sent = vec![];
    let mut holds = 0;
    for i in 0..10 {
        let ev = r.run(1, i % 2 == 1);
        notices += ev
            .iter()
            .filter(|e| matches!(e, Event::Flapping { started: true, .. }))
            .count();
        sent.extend(alerts(&ev));
        holds += held(&ev).len();
    }
    assert_eq!(notices, 1);
    // Changes 1-3 alert normally (down, up, down); from the 4th the target flaps.
    assert_eq!(
        sent,
        [(0, AlertOn::Down), (1, AlertOn::Up), (0, AlertOn::Down)]
    );
    assert!(holds >= 1);
    assert!(
        r.e.target(Key {
            check: 0,
            target: 0
        })
        .flapping
    );
    // It ends down (i = 9 passes... the last run above passed: up). Stay up for a window.
    let mut settled = None;
    let mut after = vec![];
    for _ in 0..70 {
        let ev = r.run(1, true);
        if ev
            .iter()
            .any(|e| matches!(e, Event::Flapping { started: false, .. }))
        {
            settled = Some(r.now);
        }
        after.extend(alerts(&ev));
    }
    assert!(settled.is_some(), "settles after a quiet window");
    // A down alert went out before flapping; its up alert was held and goes out on settling.
    assert_eq!(after, [(1, AlertOn::Up)]);
}

#[test]
fn disabled_checks_and_targets_are_reported() {
    let mut r = Rig::new(vec![check("http", vec![])]);
    let a = Key {
        check: 0,
        target: 0,
    };
    let b = Key {
        check: 0,
        target: 1,
    };
    assert!(r.e.enabled(a));
    r.e.set_disabled("http", Some("a"), true).expect("disable");
    assert!(!r.e.enabled(a) && r.e.enabled(b));
    r.e.set_disabled("http", None, true).expect("disable");
    assert!(!r.e.enabled(b));
    r.e.set_disabled("http", None, false).expect("enable");
    r.e.set_disabled("http", Some("a"), false).expect("enable");
    assert!(r.e.enabled(a));
    assert!(r.e.set_disabled("nope", None, true).is_err());
    assert!(r.e.set_disabled("http", Some("z"), true).is_err());
}

#[test]
fn warnings_pass_and_unknowns_fail() {
    let mut r = Rig::new(vec![check("http", vec![])]);
    let k = Key {
        check: 0,
        target: 0,
    };
    let ev =
        r.e.observe(k, Outcome::new(Verdict::Warning, "slow"), 1, &noon());
    assert_eq!(changes(&ev), [(Status::Unknown, Status::Up)]);
    let ev =
        r.e.observe(k, Outcome::new(Verdict::Unknown, "?"), 2, &noon());
    assert_eq!(changes(&ev), [(Status::Up, Status::Down)]);
}
