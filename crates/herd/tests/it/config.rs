use std::process::Command;

use crate::util::{herd_bin, repo_root, TempDir};

#[test]
fn every_shipped_example_validates() {
    let dir = repo_root().join("examples");
    let mut n = 0;
    for e in std::fs::read_dir(&dir).unwrap() {
        let p = e.unwrap().path();
        if p.extension().is_some_and(|x| x == "toml") {
            let out = Command::new(herd_bin())
                .args(["config", "validate", "--config-only"])
                .arg(&p)
                .output()
                .unwrap();
            assert!(
                out.status.success(),
                "{}: {}",
                p.display(),
                String::from_utf8_lossy(&out.stderr)
            );
            n += 1;
        }
    }
    assert!(
        n >= 2,
        "expected the annotated example and the demo config, found {n}"
    );
}

#[test]
fn validate_reports_file_line_key_and_exits_78() {
    let t = TempDir::new("validate_reports");
    let f = t.path("bad.toml");
    std::fs::write(
        &f,
        "[[lb.service]]\naddress = \"127.0.0.1:80\"\nscheduler = \"fastest\"\n[[lb.service.real]]\naddress = \"127.0.0.2\"\nweight = 100000\n",
    )
    .unwrap();
    let out = Command::new(herd_bin())
        .args(["config", "validate"])
        .arg(&f)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(78));
    let err = String::from_utf8_lossy(&out.stderr);
    let name = f.display().to_string();
    assert!(
        err.contains(&format!(
            "{name}:3: lb.service[0].scheduler: unknown scheduler \"fastest\""
        )),
        "{err}"
    );
    assert!(
        err.contains(&format!(
            "{name}:6: lb.service[0].real[0].weight: 100000 is out of range 0..=65535"
        )),
        "{err}"
    );
}

#[test]
fn daemon_refuses_a_bad_config_before_binding() {
    let t = TempDir::new("daemon_refuses");
    let f = t.path("bad.toml");
    std::fs::write(&f, "[lb]\nworkers = \"many\"\n").unwrap();
    let sock = t.path("s.sock");
    let out = Command::new(herd_bin())
        .args(["daemon", "--config"])
        .arg(&f)
        .arg("--socket")
        .arg(&sock)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(78));
    assert!(!sock.exists(), "nothing may be bound for a bad config");
    assert!(String::from_utf8_lossy(&out.stderr).contains(":2: lb.workers"));
}

/// `herd … | head`: the reader goes away early; herd ends quietly as SIGPIPE would end it
/// (status 141), without a panic message.
#[test]
fn a_closed_pipe_ends_the_cli_quietly() {
    use std::io::Read;
    use std::process::Stdio;

    let dir = TempDir::new("cli_pipe");
    let mut cf = String::new();
    for i in 0..3000 {
        cf += &format!("hostgroup g{i} 127.0.0.1\nwatch g{i}\n    service ping\n        interval 1m\n        monitor fping.monitor\n");
    }
    let path = dir.path("mon.cf");
    std::fs::write(&path, cf).unwrap();
    // The import's notes (one per group, far beyond a pipe's buffer) go to a file, so that
    // herd never waits on a stderr pipe while this test waits on stdout.
    let notes = dir.path("notes");
    let mut child = Command::new(herd_bin())
        .args(["import", "mon.cf"])
        .arg(&path)
        .stdout(Stdio::piped())
        .stderr(std::fs::File::create(&notes).unwrap())
        .spawn()
        .unwrap();
    let mut first = [0u8; 16];
    child.stdout.take().unwrap().read_exact(&mut first).unwrap();
    // The read end is closed now; the rest of the output (far beyond a pipe's buffer) fails.
    let status = child.wait().unwrap();
    let stderr = std::fs::read_to_string(&notes).unwrap();
    assert_eq!(status.code(), Some(141), "{stderr}");
    assert!(!stderr.contains("panicked"), "{stderr}");
}

#[test]
fn validate_checks_what_the_daemon_needs_from_this_host() {
    let t = TempDir::new("validate_host");
    let f = t.path("node.toml");
    let pki = t.path("no-pki");
    std::fs::write(
        &f,
        format!(
            "[agent]\nlisten = [\"127.0.0.1:1\"]\nname = \"node01\"\npki = \"{}\"\n\
             user = \"no-such-user-herd\"\naudit-log = \"{}\"\n\
             [[vrrp.instance]]\nname = \"vi\"\ninterface = \"herdnoif0\"\nvrid = 1\n\
             priority = 100\nvips = [\"192.0.2.1/24\"]\n\
             [web]\nlisten = \"127.0.0.1:1\"\ntls-cert = \"{}\"\ntls-key = \"{}\"\n",
            pki.display(),
            t.path("").display(),
            t.path("no.crt").display(),
            t.path("no.key").display(),
        ),
    )
    .unwrap();
    let validate = |extra: &[&str]| {
        Command::new(herd_bin())
            .args(["config", "validate"])
            .args(extra)
            .arg(&f)
            .output()
            .unwrap()
    };
    let out = validate(&[]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(78), "{err}");
    let name = f.display().to_string();
    for want in [
        "agent.pki: the agent of node \"node01\" cannot load its certificates",
        "agent.user: ",
        "agent.audit-log: ",
        "vrrp.instance.vi.interface: this host has no interface \"herdnoif0\"",
        "web.tls-cert: ",
    ] {
        assert!(err.contains(&format!("{name}: {want}")), "{want}: {err}");
    }
    // The config alone is fine (written for another host).
    let out = validate(&["--config-only"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // And the daemon cannot start with it: what validate said.
    let sock = t.path("s.sock");
    let out = Command::new(herd_bin())
        .args(["daemon", "--config"])
        .arg(&f)
        .arg("--socket")
        .arg(&sock)
        .output()
        .unwrap();
    assert!(!out.status.success());
}

/// A systemd unit's `Key=value` settings, comments and section headers left out.
fn unit(name: &str) -> Vec<(String, String)> {
    let text = std::fs::read_to_string(repo_root().join("dist").join(name)).unwrap();
    text.lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#') && !l.starts_with('['))
        .filter_map(|l| l.split_once('='))
        .map(|(k, v)| (k.trim().to_string(), v.trim().to_string()))
        .collect()
}

#[test]
fn the_director_unit_is_sandboxed_and_the_agent_unit_can_change_its_node() {
    let director = unit("herd-director.service");
    let agent = unit("herd-agent.service");
    let has = |u: &[(String, String)], k: &str, v: &str| u.iter().any(|(a, b)| a == k && b == v);
    let key = |u: &[(String, String)], k: &str| u.iter().any(|(a, _)| a == k);
    for u in [&director, &agent] {
        assert!(has(
            u,
            "ExecStartPre",
            "/usr/local/bin/herd config validate /etc/herd/herd.toml"
        ));
        assert!(has(
            u,
            "ExecStart",
            "/usr/local/bin/herd daemon --config /etc/herd/herd.toml"
        ));
        // Where the daemon writes by default is writable under either unit: the control
        // socket's directory, the agent's audit log's, the health history's.
        let socket = std::path::Path::new(herd::client::DEFAULT_SOCKET);
        assert_eq!(socket.parent().unwrap(), std::path::Path::new("/run/herd"));
        assert!(has(u, "RuntimeDirectory", "herd"));
        let audit = herd_core::config::agent::AgentConfig::default()
            .audit_log
            .unwrap();
        assert_eq!(
            audit.parent().unwrap(),
            std::path::Path::new("/var/log/herd")
        );
        assert!(has(u, "LogsDirectory", "herd"));
        assert!(has(u, "StateDirectory", "herd"));
    }
    // The director: a read-only system, network capabilities only, no new privileges.
    for (k, v) in [
        ("ProtectSystem", "strict"),
        ("NoNewPrivileges", "yes"),
        ("PrivateTmp", "yes"),
    ] {
        assert!(has(&director, k, v), "director: {k}={v}");
    }
    // The agent exists to change its node (`herd exec apt-get upgrade`, sync into /var/www,
    // commands as another user): none of the sandbox that would stop it.
    for k in [
        "ProtectSystem",
        "ProtectHome",
        "PrivateTmp",
        "NoNewPrivileges",
        "CapabilityBoundingSet",
        "ReadOnlyPaths",
        "InaccessiblePaths",
    ] {
        assert!(!key(&agent, k), "agent: {k}");
    }
    // A restart of herd by an upgrade it runs must not kill that upgrade.
    assert!(has(&agent, "KillMode", "process"));
}
