//! The monitor's timers under tokio's paused clock, with a fake prober and director: what
//! runs when, how alerts group, and what an apply keeps, starts and stops.

use super::plan::resolve_addr;
use super::*;

#[tokio::test]
async fn an_icmp_target_given_by_name_is_looked_up() {
    let cfg = herd_core::config::Config::parse(
        "t.toml",
        "[[health.check]]\nname = \"ping\"\ntype = \"icmp\"\nhosts = [\"localhost\"]\n",
    )
    .unwrap();
    let spec = &cfg.health.checks[0];
    let t = crate::probe::Target {
        host: "localhost".into(),
        addr: None,
        port: None,
    };
    let got = resolve_addr(&t, &spec.kind, spec.timeout).await;
    assert!(got.addr.is_some_and(|a| a.ip().is_loopback()), "{got:?}");
}

/// Answers at once (or after `latency`, on tokio's clock): fails for the hosts in `failing`,
/// passes for the others; remembers who was probed when.
#[derive(Debug, Default)]
struct Fake {
    t0: Mutex<Option<tokio::time::Instant>>,
    /// (check, host, ms since `t0`) of every probe, in order.
    runs: Mutex<Vec<(String, String, u64)>>,
    failing: Mutex<std::collections::HashSet<String>>,
    latency: Duration,
}

#[derive(Debug)]
struct FakeProber(Arc<Fake>);

impl Prober for FakeProber {
    fn probe<'a>(&'a self, s: &'a Schedule, env: &'a ExecEnv) -> run::ProbeFuture<'a> {
        Box::pin(async move {
            let f = &self.0;
            let t0 = lock(&f.t0).expect("t0 is set");
            let at = ms(tokio::time::Instant::now() - t0);
            lock(&f.runs).push((env.check.clone(), s.target.host.clone(), at));
            tokio::time::sleep(f.latency).await;
            if lock(&f.failing).contains(&s.target.host) {
                Outcome::fail(format!("{} fails", s.target.host))
            } else {
                Outcome::ok(format!("{} passes", s.target.host))
            }
        })
    }
}

impl Fake {
    fn set_failing(&self, host: &str, failing: bool) {
        let mut f = lock(&self.failing);
        if failing {
            f.insert(host.to_string());
        } else {
            f.remove(host);
        }
    }

    /// When `check` probed `host`, in ms since the start.
    fn times(&self, check: &str, host: &str) -> Vec<u64> {
        lock(&self.runs)
            .iter()
            .filter(|(c, h, _)| c == check && h == host)
            .map(|r| r.2)
            .collect()
    }
}

/// The director's side: the last verdict on each real server, and how many it got.
#[derive(Debug, Default)]
struct Verdicts(Mutex<(HashMap<SocketAddr, RealHealth>, usize)>);

impl Director for Verdicts {
    fn set_health(&self, _: &ServiceKey, real: SocketAddr, health: RealHealth) {
        let mut v = lock(&self.0);
        v.0.insert(real, health);
        v.1 += 1;
    }
}

impl Verdicts {
    fn of(&self, real: &str) -> Option<RealHealth> {
        lock(&self.0).0.get(&real.parse().unwrap()).copied()
    }
}

struct Rig {
    monitor: Monitor,
    fake: Arc<Fake>,
    verdicts: Arc<Verdicts>,
    t0: tokio::time::Instant,
}

impl Rig {
    fn new(latency: Duration) -> Rig {
        let t0 = tokio::time::Instant::now();
        let fake = Arc::new(Fake {
            t0: Mutex::new(Some(t0)),
            latency,
            ..Fake::default()
        });
        let verdicts = Arc::new(Verdicts::default());
        let monitor = Monitor::with_prober(verdicts.clone(), Box::new(FakeProber(fake.clone())));
        Rig {
            monitor,
            fake,
            verdicts,
            t0,
        }
    }

    fn apply(&self, toml: &str) {
        let cfg = Config::parse("t.toml", toml).unwrap_or_else(|e| panic!("{e}"));
        self.monitor.apply(&cfg);
    }

    /// Lets tokio's clock run to `secs` since the start (the tests pick times at which no
    /// run is due, so that nothing races them).
    async fn until(&self, secs: f64) {
        let at = self.t0 + Duration::from_secs_f64(secs);
        tokio::time::sleep_until(at).await;
    }

    /// The events of the history with this name: (targets, detail).
    fn events(&self, event: &str) -> Vec<String> {
        self.monitor
            .history(1000)
            .into_iter()
            .filter(|e| e.event == event)
            .map(|e| e.targets)
            .collect()
    }

    fn status_of(&self, check: &str, target: &str) -> String {
        let (checks, _) = self.monitor.status();
        let c = checks.iter().find(|c| c.name == check).unwrap();
        let t = c.targets.iter().find(|t| t.target == target).unwrap();
        t.status.clone()
    }
}

/// A config: `[health]` with no random start, then the checks.
fn checks(checks: &str) -> String {
    format!("[health]\nrandstart = \"0s\"\n\n{checks}")
}

fn check(name: &str, hosts: &[&str], extra: &str) -> String {
    let hosts: Vec<String> = hosts.iter().map(|h| format!("\"{h}:80\"")).collect();
    format!(
        "[[health.check]]\nname = \"{name}\"\ntype = \"tcp\"\nhosts = [{}]\nfall = 1\nrise = 1\n{extra}\n",
        hosts.join(", ")
    )
}

#[tokio::test(start_paused = true)]
async fn checks_run_every_interval_and_every_failure_interval_while_down() {
    let rig = Rig::new(Duration::ZERO);
    let c = check(
        "tcp",
        &["10.0.0.1"],
        "interval = \"10s\"\nfailure-interval = \"3s\"",
    );
    rig.apply(&checks(&c));
    rig.until(25.0).await;
    assert_eq!(rig.fake.times("tcp", "10.0.0.1"), [0, 10_000, 20_000]);
    rig.fake.set_failing("10.0.0.1", true);
    rig.until(35.0).await;
    // Down at 30 s: from then on every 3 s.
    assert_eq!(
        rig.fake.times("tcp", "10.0.0.1")[3..],
        [30_000, 33_000],
        "{:?}",
        rig.fake.times("tcp", "10.0.0.1")
    );
    assert_eq!(rig.status_of("tcp", "10.0.0.1:80"), "down");
    rig.fake.set_failing("10.0.0.1", false);
    rig.until(47.0).await;
    // Up again at 36 s: every 10 s again.
    assert_eq!(rig.fake.times("tcp", "10.0.0.1")[5..], [36_000, 46_000]);
}

#[tokio::test(start_paused = true)]
async fn a_run_that_overruns_its_interval_is_followed_at_once_by_the_next() {
    let rig = Rig::new(Duration::from_secs(15));
    rig.apply(&checks(&check("slow", &["10.0.0.1"], "interval = \"10s\"")));
    rig.until(40.0).await;
    assert_eq!(rig.fake.times("slow", "10.0.0.1"), [0, 15_000, 30_000]);
}

#[tokio::test(start_paused = true)]
async fn alerts_within_the_group_wait_go_out_as_one_notification() {
    let rig = Rig::new(Duration::ZERO);
    for h in ["10.0.0.1", "10.0.0.2"] {
        rig.fake.set_failing(h, true);
    }
    let c = check(
        "tcp",
        &["10.0.0.1", "10.0.0.2", "10.0.0.3"],
        "interval = \"10s\"\n\n  [[health.check.alert]]\n  log = true\n",
    );
    rig.apply(&checks(&c));
    // Both failed at 0 s; their alerts wait for the group to fill.
    rig.until(GROUP_WAIT.as_secs_f64() / 2.0).await;
    assert!(rig.events("alert").is_empty(), "{:?}", rig.events("alert"));
    rig.until(GROUP_WAIT.as_secs_f64() + 0.5).await;
    assert_eq!(rig.events("alert"), ["10.0.0.1:80 10.0.0.2:80"]);
    // The third fails at 10 s, long after: a notification of its own.
    rig.fake.set_failing("10.0.0.3", true);
    rig.until(12.0).await;
    assert_eq!(
        rig.events("alert"),
        ["10.0.0.1:80 10.0.0.2:80", "10.0.0.3:80"]
    );
    let (checks, _) = rig.monitor.status();
    assert_eq!(checks[0].alerts_delivered, 2);
}

#[tokio::test(start_paused = true)]
async fn an_apply_keeps_unchanged_checks_on_their_schedule_and_restarts_changed_ones() {
    let rig = Rig::new(Duration::ZERO);
    let every = |s: u32| format!("interval = \"{s}s\"");
    let same = check("same", &["10.0.0.1"], &every(10));
    let before = check("changed", &["10.0.0.2"], &every(10));
    let gone = check("gone", &["10.0.0.3"], &every(10));
    rig.apply(&checks(&format!("{same}{before}{gone}")));
    rig.until(7.0).await;
    assert_eq!(rig.status_of("changed", "10.0.0.2:80"), "up");
    // At 7 s: a check added in front (every index moves), one changed, one removed.
    let added = check("added", &["10.0.0.4"], &every(10));
    let after = check("changed", &["10.0.0.2"], &every(4));
    rig.apply(&checks(&format!("{added}{same}{after}")));
    // The changed check keeps its state across its restart.
    assert_eq!(rig.status_of("changed", "10.0.0.2:80"), "up");
    rig.until(21.0).await;
    assert_eq!(rig.fake.times("same", "10.0.0.1"), [0, 10_000, 20_000]);
    assert_eq!(
        rig.fake.times("changed", "10.0.0.2"),
        [0, 7_000, 11_000, 15_000, 19_000]
    );
    assert_eq!(rig.fake.times("added", "10.0.0.4"), [7_000, 17_000]);
    assert_eq!(rig.fake.times("gone", "10.0.0.3"), [0]);
    // An apply of the same config changes nothing.
    rig.apply(&checks(&format!("{added}{same}{after}")));
    rig.until(31.0).await;
    assert_eq!(rig.fake.times("same", "10.0.0.1")[3..], [30_000]);
    assert_eq!(rig.fake.times("added", "10.0.0.4")[2..], [27_000]);
    // An empty config stops everything.
    rig.apply("");
    rig.until(100.0).await;
    assert_eq!(rig.fake.times("same", "10.0.0.1").len(), 4);
    assert!(rig.monitor.status().0.is_empty());
}

/// A service with two real servers, and `checks` on it.
fn service(checks: &str) -> String {
    format!(
        "[lb]\n\n[[lb.service]]\nname = \"web\"\naddress = \"127.0.0.1:8080\"\nscheduler = \"rr\"\n\
         [[lb.service.real]]\naddress = \"10.0.0.1:80\"\n[[lb.service.real]]\naddress = \"10.0.0.2:80\"\n\
         \n[health]\nrandstart = \"0s\"\n\n{checks}"
    )
}

#[tokio::test(start_paused = true)]
async fn the_director_hears_an_added_check_and_no_longer_a_removed_one() {
    let rig = Rig::new(Duration::ZERO);
    rig.apply(&service(""));
    assert_eq!(rig.verdicts.of("10.0.0.1:80"), Some(RealHealth::Up));
    assert_eq!(rig.verdicts.of("10.0.0.2:80"), Some(RealHealth::Up));
    rig.fake.set_failing("10.0.0.1", true);
    let tcp = "[[health.check]]\nname = \"tcp\"\ntype = \"tcp\"\nservice = \"web\"\ninterval = \"10s\"\nfall = 1\non-failure = \"remove\"\n";
    rig.apply(&service(tcp));
    rig.until(1.0).await;
    assert_eq!(rig.verdicts.of("10.0.0.1:80"), Some(RealHealth::Removed));
    assert_eq!(rig.verdicts.of("10.0.0.2:80"), Some(RealHealth::Up));
    // Reapplied unchanged: the verdict stands (the state is kept, not re-learnt).
    rig.apply(&service(tcp));
    assert_eq!(rig.verdicts.of("10.0.0.1:80"), Some(RealHealth::Removed));
    // Quiesce instead of remove: the running verdict follows at once.
    let quiesce = tcp.replace("remove", "quiesce");
    rig.apply(&service(&quiesce));
    assert_eq!(rig.verdicts.of("10.0.0.1:80"), Some(RealHealth::Quiesced));
    // The check removed: nothing holds the server out any more.
    rig.apply(&service(""));
    assert_eq!(rig.verdicts.of("10.0.0.1:80"), Some(RealHealth::Up));
    rig.until(30.0).await;
    assert_eq!(rig.fake.times("tcp", "10.0.0.1"), [0]);
}

#[tokio::test(start_paused = true)]
async fn max_concurrent_holds_probes_back_and_an_apply_changes_it_in_place() {
    let rig = Rig::new(Duration::from_secs(4));
    let c = check("slow", &["10.0.0.1", "10.0.0.2"], "interval = \"10s\"");
    let cfg = |n: u32| format!("[health]\nrandstart = \"0s\"\nmax-concurrent = {n}\n\n{c}");
    rig.apply(&cfg(1));
    rig.until(25.0).await;
    // One probe at a time: each waits for the other's 4 s.
    let mut all = [
        rig.fake.times("slow", "10.0.0.1"),
        rig.fake.times("slow", "10.0.0.2"),
    ]
    .concat();
    all.sort_unstable();
    assert_eq!(all, [0, 4_000, 10_000, 14_000, 20_000, 24_000]);
    rig.apply(&cfg(2));
    rig.until(31.0).await;
    // Both tasks kept their timers (due at 30 s) and now run side by side.
    assert_eq!(rig.fake.times("slow", "10.0.0.1").last(), Some(&30_000));
    assert_eq!(rig.fake.times("slow", "10.0.0.2").last(), Some(&30_000));
}

#[tokio::test(start_paused = true)]
async fn a_disabled_target_stays_disabled_across_an_apply() {
    let rig = Rig::new(Duration::ZERO);
    let c = check("tcp", &["10.0.0.1", "10.0.0.2"], "interval = \"10s\"");
    rig.apply(&checks(&c));
    rig.until(5.0).await;
    rig.monitor
        .set_disabled("tcp", Some("10.0.0.1:80"), true)
        .unwrap();
    let more = check("other", &["10.0.0.3"], "interval = \"10s\"");
    rig.apply(&checks(&format!("{c}{more}")));
    rig.until(25.0).await;
    assert_eq!(rig.fake.times("tcp", "10.0.0.1"), [0]);
    assert_eq!(rig.fake.times("tcp", "10.0.0.2"), [0, 10_000, 20_000]);
    let err = rig.monitor.set_disabled("nope", None, true).unwrap_err();
    assert_eq!(err.to_string(), "no check named \"nope\"");
}

#[tokio::test(start_paused = true)]
async fn a_change_only_the_rule_engine_reads_takes_effect_without_touching_the_timer() {
    let rig = Rig::new(Duration::ZERO);
    let c = |fall: u32| {
        let c = check("tcp", &["10.0.0.1"], "interval = \"10s\"");
        checks(&c.replace("fall = 1", &format!("fall = {fall}")))
    };
    rig.apply(&c(1));
    rig.until(5.0).await;
    rig.apply(&c(3));
    rig.fake.set_failing("10.0.0.1", true);
    rig.until(21.0).await;
    assert_eq!(rig.fake.times("tcp", "10.0.0.1"), [0, 10_000, 20_000]);
    // Three failures are needed now, not one: two are not enough, the third is.
    assert_eq!(rig.status_of("tcp", "10.0.0.1:80"), "up");
    rig.until(31.0).await;
    assert_eq!(rig.status_of("tcp", "10.0.0.1:80"), "down");
}

/// The history file follows `health.history` across applies: a new path is opened, the old
/// one is left alone. (Real time: the file is written by its own thread.)
#[tokio::test]
async fn an_apply_moves_the_history_to_a_new_file() {
    let dir = std::env::temp_dir().join(format!("herd-monitor-history-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let cfg = |file: &str| {
        let c = check("tcp", &["10.0.0.1"], "interval = \"1h\"");
        let path = dir.join(file);
        format!("[health]\nhistory = \"{}\"\n\n{c}", path.display())
    };
    let events = |file: &str| -> Vec<String> {
        crate::history::Store::open_read(&dir.join(file))
            .and_then(|s| s.recent(100))
            .map(|v| v.into_iter().map(|e| e.event).collect())
            .unwrap_or_default()
    };
    let wait = |file: &str, event: &str| {
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while !events(file).iter().any(|e| e == event) {
            assert!(
                std::time::Instant::now() < deadline,
                "{event} never reached {file}"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    };
    let rig = Rig::new(Duration::ZERO);
    rig.apply(&cfg("a.db"));
    rig.monitor.set_disabled("tcp", None, true).unwrap();
    wait("a.db", "disabled");
    rig.apply(&cfg("b.db"));
    rig.monitor.set_disabled("tcp", None, false).unwrap();
    wait("b.db", "enabled");
    assert!(!events("a.db").iter().any(|e| e == "enabled"));
    let _ = std::fs::remove_dir_all(&dir);
}
