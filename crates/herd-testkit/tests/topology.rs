//! The kit itself: links, cuts, loss, processes and cleanup.

use std::time::Duration;

use herd_testkit::{require_root, wait_until, Lan};

fn reachable(from: &herd_testkit::Host, to: &str) -> bool {
    // A TCP connect that is refused proves the path as well as one that is accepted.
    let out = from.output(&[
        "bash",
        "-c",
        &format!("timeout 1 bash -c 'echo > /dev/tcp/{to}/9' 2>&1"),
    ]);
    // Exit 0: connected; "refused": the host answered with a reset; 124: no answer in time.
    out.status.success() || String::from_utf8_lossy(&out.stdout).contains("refused")
}

#[test]
fn hosts_talk_cut_heal_loss_and_cleanup() {
    if !require_root("hosts_talk_cut_heal_loss_and_cleanup") {
        return;
    }
    let names;
    {
        let lan = Lan::new("topo");
        let a = lan.host("a", &["10.77.0.1/24"]);
        let b = lan.host("b", &["10.77.0.2/24", "fd77::2/64"]);
        names = vec![
            lan.switch().to_string(),
            a.netns().to_string(),
            b.netns().to_string(),
        ];
        assert!(b.has_addr("fd77::2") && b.has_addr("10.77.0.2"));
        assert!(reachable(&a, "10.77.0.2"), "a reaches b");
        assert_eq!(a.neighbour("10.77.0.2"), Some(b.mac()));

        b.cut();
        assert!(wait_until(Duration::from_secs(2), || {
            String::from_utf8_lossy(&b.run(&["cat", "/sys/class/net/eth0/operstate"]).stdout).trim()
                != "up"
        }));
        assert!(!reachable(&a, "10.77.0.2"), "cut: a cannot reach b");
        b.heal();
        assert!(wait_until(Duration::from_secs(3), || reachable(
            &a,
            "10.77.0.2"
        )));

        b.loss(100);
        let rules = b.run(&["nft", "list", "ruleset"]);
        assert!(String::from_utf8_lossy(&rules.stdout).contains("htk_loss"));
        assert!(!reachable(&a, "10.77.0.2"), "100% loss: no answer");
        b.clear_loss();
        assert!(reachable(&a, "10.77.0.2"));

        let log = std::env::temp_dir().join(format!("htk-sleep-{}.log", std::process::id()));
        let mut p = b.spawn("sleep", &["30"], &log);
        let pid = p.pid();
        assert!(p.is_running());
        drop(p);
        assert!(
            !std::path::Path::new(&format!("/proc/{pid}")).exists(),
            "killed on drop"
        );
        let _ = std::fs::remove_file(log);
    }
    let list = std::process::Command::new("ip")
        .args(["netns", "list"])
        .output()
        .unwrap();
    let list = String::from_utf8_lossy(&list.stdout);
    for n in names {
        assert!(!list.contains(&n), "{n} left behind");
    }
}

/// What a killed test run leaves behind (a namespace whose creating process is gone) is swept;
/// the namespace of a process that still runs is not, so parallel test binaries keep theirs.
#[test]
fn sweep_deletes_namespaces_of_dead_processes_only() {
    if !require_root("sweep_deletes_namespaces_of_dead_processes_only") {
        return;
    }
    // A PID that certainly belonged to a process that has exited: one this test ran and reaped.
    let mut gone = std::process::Command::new("true").spawn().unwrap();
    let dead = gone.id();
    gone.wait().unwrap();
    let me = std::process::id();
    let prefix = format!("htk-sweep{me}-");
    let left = format!("{prefix}killedrun-{dead}");
    let live = format!("{prefix}running-{me}");
    let exists = |n: &str| std::path::Path::new("/run/netns").join(n).exists();
    for n in [&left, &live] {
        let ok = std::process::Command::new("ip")
            .args(["netns", "add", n])
            .status()
            .unwrap()
            .success();
        assert!(ok, "ip netns add {n}");
    }
    herd_testkit::sweep_namespaces(&prefix);
    let (left_gone, live_kept) = (!exists(&left), exists(&live));
    let _ = std::process::Command::new("ip")
        .args(["netns", "del", &live])
        .status();
    let _ = std::process::Command::new("ip")
        .args(["netns", "del", &left])
        .stderr(std::process::Stdio::null())
        .status();
    assert!(
        left_gone,
        "{left}: its process {dead} is gone, yet it was kept"
    );
    assert!(live_kept, "{live}: its process runs, yet it was swept");
}
