use super::*;

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

fn params(priority: u8) -> Params {
    Params {
        vrid: 51,
        version: Version::V3,
        priority,
        interval_cs: 10,
        preempt: true,
        preempt_delay: Duration::ZERO,
    }
}

fn adv(priority: u8, interval_cs: u16) -> Advert {
    Advert {
        version: Version::V3,
        vrid: 51,
        priority,
        interval_cs,
        addrs: vec![ip("10.0.0.100")],
        password: None,
        trailer: None,
    }
}

fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

fn became(actions: &[Action]) -> Option<(State, Reason)> {
    actions.iter().find_map(|a| match a {
        Action::Transition { to, reason, .. } => Some((*to, *reason)),
        _ => None,
    })
}

fn sends(actions: &[Action]) -> Vec<u8> {
    actions
        .iter()
        .filter_map(|a| match a {
            Action::Send { priority, .. } => Some(*priority),
            _ => None,
        })
        .collect()
}

#[test]
fn skew_and_master_down_follow_the_rfc() {
    let i = Instance::new(params(100), ip("10.0.0.1"));
    // (256 - 100) * 10 cs / 256 = 6.09375 cs.
    assert_eq!(i.skew(), Duration::from_micros(60_937));
    assert_eq!(i.master_down(), ms(300) + Duration::from_micros(60_937));
    let mut p = params(100);
    p.version = Version::V2;
    p.interval_cs = 100;
    let i = Instance::new(p, ip("10.0.0.1"));
    assert_eq!(i.skew(), Duration::from_micros(609_375));
    assert_eq!(i.master_down(), ms(3000) + Duration::from_micros(609_375));
}

#[test]
fn a_backup_takes_over_when_the_master_falls_silent() {
    let t0 = Instant::now();
    let mut i = Instance::new(params(100), ip("10.0.0.1"));
    assert_eq!(became(&i.start(t0)), Some((State::Backup, Reason::Startup)));
    // Adverts from a master of higher priority keep pushing the timer out.
    for k in 1..=10 {
        let now = t0 + ms(100 * k);
        assert!(i.advert(now, ip("10.0.0.2"), &adv(200, 10)).is_empty());
        assert!(i.poll(now + ms(300)).is_empty());
    }
    assert_eq!(i.master(), Some(ip("10.0.0.2")));
    let last = t0 + ms(1000);
    let deadline = i.deadline().unwrap();
    assert_eq!(deadline, last + i.master_down());
    assert!(i.poll(deadline - ms(1)).is_empty());
    let out = i.poll(deadline);
    assert_eq!(became(&out), Some((State::Master, Reason::MasterDown)));
    assert_eq!(sends(&out), vec![100]);
    assert_eq!(i.master(), Some(ip("10.0.0.1")));
    // A master advertises every interval.
    assert_eq!(sends(&i.poll(deadline + ms(100))), vec![100]);
    assert!(i.poll(deadline + ms(150)).is_empty());
}

#[test]
fn a_resigning_master_is_replaced_after_the_skew_time() {
    let t0 = Instant::now();
    let mut i = Instance::new(params(100), ip("10.0.0.1"));
    i.start(t0);
    i.advert(t0, ip("10.0.0.2"), &adv(200, 10));
    i.advert(t0 + ms(50), ip("10.0.0.2"), &adv(0, 10));
    assert_eq!(i.deadline(), Some(t0 + ms(50) + i.skew()));
    let out = i.poll(t0 + ms(50) + i.skew());
    assert_eq!(became(&out), Some((State::Master, Reason::MasterDown)));
    assert!(
        out.contains(&Action::Inherit {
            from: ip("10.0.0.2")
        }),
        "the resigned master keeps its connections: {out:?}"
    );
}

#[test]
fn only_a_live_master_hands_its_connections_over() {
    let inherits = |out: &[Action]| out.iter().any(|a| matches!(a, Action::Inherit { .. }));
    let t0 = Instant::now();
    // A master that crashed (silent for the master-down interval) has nothing to hand over.
    let mut i = Instance::new(params(100), ip("10.0.0.1"));
    i.start(t0);
    i.advert(t0, ip("10.0.0.2"), &adv(200, 10));
    let out = i.poll(i.deadline().unwrap());
    assert_eq!(became(&out), Some((State::Master, Reason::MasterDown)));
    assert!(!inherits(&out), "{out:?}");
    // A resignation that another master answered is history: when that one crashes later,
    // nothing is inherited.
    let mut i = Instance::new(params(100), ip("10.0.0.1"));
    i.start(t0);
    i.advert(t0, ip("10.0.0.2"), &adv(200, 10));
    i.advert(t0 + ms(10), ip("10.0.0.2"), &adv(0, 10));
    i.advert(t0 + ms(20), ip("10.0.0.3"), &adv(150, 10));
    let out = i.poll(i.deadline().unwrap());
    assert_eq!(became(&out), Some((State::Master, Reason::MasterDown)));
    assert!(!inherits(&out), "{out:?}");
}

#[test]
fn the_address_owner_is_master_at_once() {
    let mut i = Instance::new(params(255), ip("10.0.0.1"));
    let out = i.start(Instant::now());
    assert_eq!(became(&out), Some((State::Master, Reason::Startup)));
    assert_eq!(sends(&out), vec![255]);
}

#[test]
fn preemption_by_priority_and_address() {
    let t0 = Instant::now();
    let mut i = Instance::new(params(100), ip("10.0.0.5"));
    i.start(t0);
    let t = i.deadline().unwrap();
    i.poll(t);
    assert_eq!(i.state(), State::Master);
    // Lower priority: we stay, advertise at once and announce again (split brain healed).
    let out = i.advert(t, ip("10.0.0.9"), &adv(50, 10));
    assert_eq!(sends(&out), vec![100]);
    assert!(out.contains(&Action::Announce));
    assert_eq!(i.state(), State::Master);
    // Equal priority, lower address: we stay.
    i.advert(t, ip("10.0.0.4"), &adv(100, 10));
    assert_eq!(i.state(), State::Master);
    // Equal priority, higher address: we yield.
    let out = i.advert(t, ip("10.0.0.6"), &adv(100, 20));
    assert_eq!(became(&out), Some((State::Backup, Reason::Preempted)));
    assert_eq!(
        i.master_interval_cs(),
        20,
        "v3 learns the master's interval"
    );
    assert_eq!(i.master(), Some(ip("10.0.0.6")));
}

#[test]
fn a_preempting_backup_ignores_lower_masters_and_takes_over() {
    let t0 = Instant::now();
    let mut i = Instance::new(params(200), ip("10.0.0.1"));
    i.start(t0);
    i.advert(t0 + ms(10), ip("10.0.0.2"), &adv(100, 10));
    // The lower master's adverts do not push the timer out.
    assert_eq!(i.deadline(), Some(t0 + i.master_down()));
    let out = i.poll(t0 + i.master_down());
    assert_eq!(became(&out), Some((State::Master, Reason::MasterDown)));
}

#[test]
fn nopreempt_and_preempt_delay() {
    let t0 = Instant::now();
    let mut p = params(200);
    p.preempt = false;
    let mut i = Instance::new(p, ip("10.0.0.1"));
    i.start(t0);
    i.advert(t0 + ms(10), ip("10.0.0.2"), &adv(100, 10));
    assert_eq!(i.deadline(), Some(t0 + ms(10) + i.master_down()));

    let mut p = params(200);
    p.preempt_delay = Duration::from_secs(5);
    let mut i = Instance::new(p, ip("10.0.0.1"));
    i.start(t0);
    i.advert(t0 + ms(10), ip("10.0.0.2"), &adv(100, 10));
    assert_eq!(
        i.deadline(),
        Some(t0 + ms(10) + i.master_down()),
        "still within the delay"
    );
    i.advert(t0 + ms(5010), ip("10.0.0.2"), &adv(100, 10));
    assert_eq!(
        i.deadline(),
        Some(t0 + ms(10) + i.master_down()),
        "delay over: preempts"
    );
}

#[test]
fn planned_failover_hands_over_and_stands_by() {
    let t0 = Instant::now();
    let mut i = Instance::new(params(200), ip("10.0.0.1"));
    assert_eq!(i.failover(t0).unwrap_err(), State::Init);
    i.start(t0);
    let t = i.deadline().unwrap();
    i.poll(t);
    let out = i.failover(t).unwrap();
    assert_eq!(sends(&out), vec![0]);
    assert_eq!(became(&out), Some((State::Backup, Reason::Failover)));
    assert!(i.standby());
    // Standing by, we rank lowest: the longest skew, and a lower master is followed.
    assert_eq!(i.skew(), Duration::from_micros(255 * 10 * 10_000 / 256));
    i.advert(t + ms(80), ip("10.0.0.2"), &adv(100, 10));
    assert_eq!(i.deadline(), Some(t + ms(80) + i.master_down()));
    // Resumed, we preempt the lower master again.
    i.resume();
    let before = i.deadline();
    i.advert(t + ms(180), ip("10.0.0.2"), &adv(100, 10));
    i.advert(t + ms(280), ip("10.0.0.2"), &adv(100, 10));
    assert_eq!(i.deadline(), before);
    let out = i.poll(before.unwrap());
    assert_eq!(became(&out), Some((State::Master, Reason::MasterDown)));
    // The master we preempted is alive: it hands its connections over.
    assert!(out.contains(&Action::Inherit {
        from: ip("10.0.0.2")
    }));
}

#[test]
fn fault_silences_and_recovery_restarts_as_backup() {
    let t0 = Instant::now();
    let mut i = Instance::new(params(200), ip("10.0.0.1"));
    i.start(t0);
    i.poll(i.deadline().unwrap());
    let out = i.set_fault(t0 + ms(500), true);
    assert_eq!(sends(&out), vec![0]);
    assert_eq!(became(&out), Some((State::Fault, Reason::Fault)));
    assert_eq!(i.deadline(), None);
    assert!(i
        .advert(t0 + ms(600), ip("10.0.0.2"), &adv(100, 10))
        .is_empty());
    let out = i.set_fault(t0 + ms(700), false);
    assert_eq!(became(&out), Some((State::Backup, Reason::Fault)));
}

#[test]
fn a_master_announces_a_changed_priority_at_once() {
    let t0 = Instant::now();
    let mut i = Instance::new(params(200), ip("10.0.0.1"));
    i.start(t0);
    i.poll(i.deadline().unwrap());
    assert_eq!(sends(&i.set_priority(t0 + ms(400), 150)), vec![150]);
    assert_eq!(i.priority(), 150);
    assert!(i.set_priority(t0 + ms(400), 150).is_empty());
    assert_eq!(
        sends(&i.set_priority(t0 + ms(400), 0)),
        vec![1],
        "clamped to 1"
    );
}

#[test]
fn shutdown_resigns() {
    let t0 = Instant::now();
    let mut i = Instance::new(params(200), ip("10.0.0.1"));
    i.start(t0);
    i.poll(i.deadline().unwrap());
    let out = i.stop();
    assert_eq!(sends(&out), vec![0]);
    assert_eq!(became(&out), Some((State::Init, Reason::Shutdown)));
}

#[test]
fn v2_keeps_its_own_interval() {
    let t0 = Instant::now();
    let mut p = params(100);
    p.version = Version::V2;
    p.interval_cs = 100;
    let mut i = Instance::new(p, ip("10.0.0.1"));
    i.start(t0);
    let mut a = adv(200, 300);
    a.version = Version::V2;
    i.advert(t0, ip("10.0.0.2"), &a);
    assert_eq!(i.master_interval_cs(), 100);
}

#[test]
fn own_adverts_are_ignored() {
    let t0 = Instant::now();
    let mut i = Instance::new(params(100), ip("10.0.0.1"));
    i.start(t0);
    let d = i.deadline();
    i.advert(t0 + ms(10), ip("10.0.0.1"), &adv(200, 10));
    assert_eq!(i.deadline(), d);
}

fn intervals(actions: &[Action]) -> Vec<u16> {
    actions
        .iter()
        .filter_map(|a| match a {
            Action::Send { interval_cs, .. } => Some(*interval_cs),
            _ => None,
        })
        .collect()
}

/// An instance that became master at `t0` (no one else heard).
fn master_at(t0: Instant, priority: u8) -> Instance {
    let mut i = Instance::new(params(priority), ip("10.0.0.1"));
    i.start(t0);
    let out = i.poll(i.deadline().unwrap());
    assert_eq!(became(&out), Some((State::Master, Reason::MasterDown)));
    i
}

#[test]
fn a_master_reconfigured_stays_master_and_advertises_the_new_settings_at_once() {
    let t0 = Instant::now();
    let mut i = master_at(t0, 100);
    let now = i.deadline().unwrap() - ms(50);
    let mut p = params(80);
    p.interval_cs = 25;
    let out = i.reconfigure(now, p, 80);
    assert_eq!(became(&out), None, "the role stays: {out:?}");
    assert_eq!(sends(&out), vec![80]);
    assert_eq!(intervals(&out), vec![25]);
    assert_eq!((i.priority(), i.master_interval_cs()), (80, 25));
    // The next adverts follow the new interval.
    assert_eq!(i.deadline(), Some(now + ms(250)));
    assert!(i.poll(now + ms(249)).is_empty());
    assert_eq!(intervals(&i.poll(now + ms(250))), vec![25]);
    // Unchanged settings send nothing extra.
    let mut p = params(80);
    p.interval_cs = 25;
    assert!(i.reconfigure(now + ms(260), p, 80).is_empty());
}

#[test]
fn a_master_whose_priority_drops_is_preempted_by_a_peer_that_now_outranks_it() {
    let t0 = Instant::now();
    let (a_ip, b_ip) = (ip("10.0.0.1"), ip("10.0.0.2"));
    let mut a = master_at(t0, 100);
    let mut b = Instance::new(params(90), b_ip);
    let t1 = a.deadline().unwrap();
    b.start(t1);
    b.advert(t1, a_ip, &adv(100, 10));
    // The reload lowers a's priority below b's: a says so at once, and b lets its timer run.
    let out = a.reconfigure(t1 + ms(10), params(50), 50);
    assert_eq!(sends(&out), vec![50]);
    assert_eq!(a.state(), State::Master);
    let deadline = b.deadline().unwrap();
    assert!(b.advert(t1 + ms(10), a_ip, &adv(50, 10)).is_empty());
    assert_eq!(
        b.deadline(),
        Some(deadline),
        "a master of lower priority resets nothing"
    );
    let out = b.poll(deadline);
    assert_eq!(became(&out), Some((State::Master, Reason::MasterDown)));
    // a hears b's advert of higher priority and steps down.
    let out = a.advert(deadline, b_ip, &adv(90, 10));
    assert_eq!(became(&out), Some((State::Backup, Reason::Preempted)));
}

#[test]
fn a_backup_raised_above_the_master_takes_over_only_with_preempt() {
    let t0 = Instant::now();
    let m = ip("10.0.0.2");
    for preempt in [true, false] {
        let mut b = Instance::new(params(90), ip("10.0.0.1"));
        b.start(t0);
        b.advert(t0, m, &adv(100, 10));
        let mut p = params(150);
        p.preempt = preempt;
        assert!(b.reconfigure(t0 + ms(10), p, 150).is_empty());
        assert_eq!((b.state(), b.priority()), (State::Backup, 150));
        let mut now = t0 + ms(100);
        let mut took_over = false;
        while now < t0 + ms(2000) && !took_over {
            b.advert(now, m, &adv(100, 10));
            took_over = became(&b.poll(now + ms(1))) == Some((State::Master, Reason::MasterDown));
            now += ms(100);
        }
        assert_eq!(took_over, preempt, "preempt = {preempt}");
    }
}

#[test]
fn a_v2_backup_expects_its_new_interval() {
    let mut p = params(100);
    p.version = Version::V2;
    p.interval_cs = 100;
    let mut b = Instance::new(p.clone(), ip("10.0.0.1"));
    b.start(Instant::now());
    p.interval_cs = 200;
    assert!(b.reconfigure(Instant::now(), p, 100).is_empty());
    assert_eq!(b.master_interval_cs(), 200);
    assert_eq!(b.master_down(), ms(6000) + b.skew());
}

#[test]
fn a_backup_that_becomes_master_advertises_its_own_interval() {
    let t0 = Instant::now();
    let mut b = Instance::new(params(100), ip("10.0.0.1"));
    b.start(t0);
    b.advert(t0, ip("10.0.0.2"), &adv(200, 50));
    assert_eq!(b.master_interval_cs(), 50);
    b.poll(b.deadline().unwrap());
    assert_eq!((b.state(), b.master_interval_cs()), (State::Master, 10));
}
