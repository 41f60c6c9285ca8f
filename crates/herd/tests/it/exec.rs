//! `herd exec` against real agents: each a `herd daemon` process with its own certificate,
//! listening on its own loopback address.

use std::io::{BufRead, BufReader, Read, Write};
use std::path::PathBuf;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use crate::util::{herd_bin, Daemon, Net, TempDir};

/// A cluster of `n` agents named node01…, with a CA, an admin certificate and a client config.
pub struct Cluster {
    pub dir: TempDir,
    pub net: Net,
    pub agents: Vec<Daemon>,
    pub client: PathBuf,
}

fn herd(args: &[&str]) -> Output {
    Command::new(herd_bin())
        .args(args)
        .stdin(Stdio::null())
        .output()
        .unwrap()
}

fn ok(args: &[&str]) -> String {
    let o = herd(args);
    assert!(
        o.status.success(),
        "herd {args:?}: {}",
        String::from_utf8_lossy(&o.stderr)
    );
    String::from_utf8(o.stdout).unwrap()
}

fn name(i: usize) -> String {
    format!("node{i:02}")
}

impl Cluster {
    pub fn new(test: &str, n: usize) -> Cluster {
        Cluster::with(test, n, |_, _| String::new())
    }

    /// `extra(dir, net)` is more config for every agent.
    pub fn with(test: &str, n: usize, extra: impl Fn(&TempDir, &Net) -> String) -> Cluster {
        Cluster::with_prefix(test, n, extra, &[])
    }

    /// Agents started under a command prefix (`unshare -m ...`: a mount namespace each).
    pub fn with_prefix(
        test: &str,
        n: usize,
        extra: impl Fn(&TempDir, &Net) -> String,
        prefix: &[&str],
    ) -> Cluster {
        let dir = TempDir::new(test);
        let net = Net::new(test);
        let pki = dir.path("pki").display().to_string();
        ok(&["init", "--pki", &pki]);
        // One call issues a certificate per node of a node set.
        let issued = ok(&["cert", "issue", &format!("node[01-{n:02}]"), "--pki", &pki]);
        assert_eq!(issued.lines().count(), n, "{issued}");
        let mut agents = Vec::new();
        for i in 1..=n {
            let cfg = format!(
                "[lb]\nworkers = 1\n[agent]\nlisten = [\"{}\"]\nname = \"{}\"\npki = \"{pki}\"\n\
                 audit-log = \"{}\"\n{}",
                net.ip(i as u8),
                name(i),
                dir.path(&format!("audit-{}.log", name(i))).display(),
                extra(&dir, &net),
            );
            agents.push(Daemon::start_with(
                &format!("{test}-{}", name(i)),
                &cfg,
                prefix,
            ));
        }
        let client = dir.path("client.toml");
        std::fs::write(
            &client,
            format!(
                "[nodes]\n\"node[01-{n:02}]\" = \"{}\"\n[groups]\nodd = \"node[01-{n:02}/2]\"\n\
                 low = \"node[01-08]\"\n[agent]\nname = \"node07\"\npki = \"{pki}\"\n",
                if n == 1 {
                    net.ip(1).to_string()
                } else {
                    format!(
                        "127.{}.{}.[1-{n}]",
                        net.ip(1).octets()[1],
                        net.ip(1).octets()[2]
                    )
                }
            ),
        )
        .unwrap();
        Cluster {
            dir,
            net,
            agents,
            client,
        }
    }

    fn cmd(&self, args: &[&str]) -> Command {
        let mut c = Command::new(herd_bin());
        c.arg("exec").arg("--config").arg(&self.client).args(args);
        c
    }

    pub(crate) fn exec(&self, args: &[&str]) -> Output {
        self.cmd(args).stdin(Stdio::null()).output().unwrap()
    }

    pub(crate) fn exec_with_stdin(&self, args: &[&str], input: &[u8]) -> Output {
        let mut child = self
            .cmd(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let mut stdin = child.stdin.take().unwrap();
        let input = input.to_vec();
        let feeder = std::thread::spawn(move || {
            let _ = stdin.write_all(&input);
        });
        let out = child.wait_with_output().unwrap();
        feeder.join().unwrap();
        out
    }

    pub fn pki(&self, file: &str) -> String {
        self.dir.path("pki").join(file).display().to_string()
    }

    /// To talk to node `node`'s agent in a test's own words: a runtime, the TLS config of the
    /// certificate `who` (`admin`, `node01`, …) and the node as a target.
    pub fn raw_client(
        &self,
        who: &str,
        node: u8,
    ) -> (
        tokio::runtime::Runtime,
        std::sync::Arc<rustls::ClientConfig>,
        herd_agent::client::Target,
    ) {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let tls = herd_agent::tls::client_config(&herd_agent::tls::Files {
            ca: self.dir.path("pki/ca.crt"),
            cert: self.dir.path(&format!("pki/{who}.crt")),
            key: self.dir.path(&format!("pki/{who}.key")),
        })
        .unwrap();
        let target = herd_agent::client::Target {
            rank: 0,
            name: format!("node{node:02}"),
            addr: format!("{}:2875", self.net.ip(node)),
        };
        (rt, tls, target)
    }
}

pub fn kill(d: &mut Daemon) {
    if let Some(mut ch) = d.child.take() {
        ch.kill().unwrap();
        ch.wait().unwrap();
    }
}

pub(crate) fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

/// The sorted lines of an output.
pub(crate) fn sorted_lines(b: &[u8]) -> Vec<String> {
    let mut l: Vec<String> = text(b).lines().map(str::to_string).collect();
    l.sort();
    l
}

fn expect_lines(out: &Output, want: impl IntoIterator<Item = String>) {
    let mut want: Vec<String> = want.into_iter().collect();
    want.sort();
    assert_eq!(
        sorted_lines(&out.stdout),
        want,
        "stderr: {}",
        text(&out.stderr)
    );
}

#[test]
fn exec_on_64_agents() {
    let mut c = Cluster::new("exec64", 64);
    let all = || (1..=64).map(name);

    // Output and exit codes: each node's own line, the highest status wins, failures summed up.
    let t = Instant::now();
    let o = c.exec(&[
        "-a",
        "echo $HERD_NODE rank $HERD_RANK of $HERD_SIZE; exit $(( ${HERD_RANK} % 5 ))",
    ]);
    eprintln!("64 agents: {:?}", t.elapsed());
    expect_lines(
        &o,
        all().map(|n| {
            let r = n[4..].parse::<usize>().unwrap() - 1;
            format!("{n}: {n} rank {r} of 64")
        }),
    );
    assert_eq!(o.status.code(), Some(4), "{}", text(&o.stderr));
    let err = text(&o.stderr);
    assert!(err.contains("herd exec: 51 of 64 nodes failed"), "{err}");
    assert!(
        err.contains("node[05,10,15,20,25,30,35,40,45,50,55,60]: exited with 4"),
        "{err}"
    );

    // stdout and stderr apart, a last line without newline, the minimal environment, the user.
    let o = c.exec(&[
        "-w",
        "node[01-03]",
        "echo out; echo err >&2; printf 'no newline'; env | sort | tr '\\n' ' ' >&2",
    ]);
    assert!(o.status.success());
    expect_lines(
        &o,
        (1..=3).flat_map(|i| {
            [
                format!("{}: out", name(i)),
                format!("{}: no newline", name(i)),
            ]
        }),
    );
    let err = text(&o.stderr);
    assert!(err.contains("node02: err\n"), "{err}");
    assert!(
        err.contains("PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"),
        "{err}"
    );
    assert!(
        err.contains("HERD_CALLER=admin") && !err.contains("CARGO"),
        "{err}"
    );

    // Prefixes: -N none, --prefix index gexec's numbering; --json one object per node.
    let o = c.exec(&["-w", "node[03-04]", "-N", "echo x"]);
    expect_lines(&o, ["x".to_string(), "x".to_string()]);
    let o = c.exec(&["-w", "node[03-04]", "--prefix", "index", "echo x"]);
    expect_lines(&o, ["0: x".to_string(), "1: x".to_string()]);
    let o = c.exec(&["-w", "node[03-04]", "--json", "echo x; echo y >&2; exit 2"]);
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(v[1]["node"], "node04");
    assert_eq!(
        (v[1]["stdout"].as_str(), v[1]["stderr"].as_str()),
        (Some("x\n"), Some("y\n"))
    );
    assert_eq!(v[1]["status"], 2);
    assert_eq!(o.status.code(), Some(2));

    // Node selection: -n, -x, -X (this node is [agent] name = node07), expressions and groups.
    let o = c.exec(&["-a", "-n", "5", "echo x"]);
    expect_lines(&o, (1..=5).map(|i| format!("{}: x", name(i))));
    let o = c.exec(&["-a", "-x", "node[02-63]", "echo x"]);
    expect_lines(&o, ["node01: x".to_string(), "node64: x".to_string()]);
    let o = c.exec(&["-w", "@low", "-X", "echo x"]);
    expect_lines(&o, [1, 2, 3, 4, 5, 6, 8].map(|i| format!("{}: x", name(i))));
    let o = c.exec(&[
        "-w",
        "@odd&node[01-10],node[20-21]!node05",
        "-w",
        "node33",
        "echo x",
    ]);
    expect_lines(
        &o,
        [1, 3, 7, 9, 20, 21, 33].map(|i| format!("{}: x", name(i))),
    );
    let o = c.exec(&["-w", "node[1-", "true"]);
    assert_eq!(o.status.code(), Some(64), "{}", text(&o.stderr));

    // stdin goes to every node, all of it.
    let input: Vec<u8> = (0..300_000u32).flat_map(|i| i.to_le_bytes()).collect();
    let sum = {
        let mut p = Command::new("md5sum")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .unwrap();
        p.stdin.take().unwrap().write_all(&input).unwrap();
        text(&p.wait_with_output().unwrap().stdout)
            .split_whitespace()
            .next()
            .unwrap()
            .to_string()
    };
    let o = c.exec_with_stdin(&["-a", "md5sum | cut -d' ' -f1"], &input);
    assert!(o.status.success(), "{}", text(&o.stderr));
    expect_lines(&o, all().map(|n| format!("{n}: {sum}")));

    // Lines are never split or mixed: 64 nodes × 2000 lines, and one line of 1 MiB.
    let o = c.exec(&["-a", "seq 1 2000 | sed \"s/^/$HERD_NODE-/\""]);
    let got = sorted_lines(&o.stdout);
    assert_eq!(got.len(), 64 * 2000);
    for l in &got {
        let (prefix, rest) = l.split_once(": ").unwrap();
        assert!(rest.starts_with(&format!("{prefix}-")), "mixed line: {l:?}");
    }
    let o = c.exec(&[
        "-w",
        "node01,node02",
        "head -c 1048576 /dev/zero | tr '\\0' a; [ $HERD_RANK = 0 ] && echo; echo end",
    ]);
    let out = text(&o.stdout);
    let big: Vec<&str> = out.lines().filter(|l| l.len() > 1000).collect();
    assert_eq!(big.len(), 2, "two lines of 1 MiB");
    for l in big {
        assert!(
            l == format!("node01: {}", "a".repeat(1 << 20))
                || l == format!("node02: {}end", "a".repeat(1 << 20)),
            "a split line"
        );
    }
    assert!(out.contains("node01: end\n"));

    // -b: nodes with the same output and the same status are one block.
    let o = c.exec(&[
        "-w",
        "node[01-06]",
        "-b",
        "echo same; [ $HERD_RANK -ge 4 ] && exit 3; true",
    ]);
    assert_eq!(text(&o.stdout), "---------------\nnode[01-04]\n---------------\nsame\n---------------\nnode[05-06] (exit 3)\n---------------\nsame\n");
    assert_eq!(o.status.code(), Some(3));

    // A timeout kills the remote process group: the sleep is gone at once.
    let t = Instant::now();
    let o = c.exec(&[
        "-w",
        "node[01-04]",
        "-u",
        "1s",
        "sleep 37.5 & sleep 38.5; echo never",
    ]);
    assert!(t.elapsed() < Duration::from_secs(8), "{:?}", t.elapsed());
    assert_eq!(o.status.code(), Some(124));
    assert!(
        text(&o.stderr).contains("node[01-04]: timed out (killed)"),
        "{}",
        text(&o.stderr)
    );
    std::thread::sleep(Duration::from_millis(200));
    let left = Command::new("pgrep")
        .args(["-f", "sleep 3[78].5"])
        .output()
        .unwrap();
    assert!(
        left.stdout.is_empty(),
        "sleeps left: {}",
        text(&left.stdout)
    );

    // Ctrl-C reaches the remote process groups: the shells' traps run.
    let mut child = c
        .cmd(&[
            "-w",
            "node[10-13]",
            "trap 'echo got INT; exit 7' INT; echo ready; while :; do sleep 0.1; done",
        ])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut rd = BufReader::new(child.stdout.take().unwrap());
    let mut seen = Vec::new();
    for _ in 0..4 {
        let mut l = String::new();
        rd.read_line(&mut l).unwrap();
        seen.push(l);
    }
    assert!(seen.iter().all(|l| l.ends_with(": ready\n")), "{seen:?}");
    let t = Instant::now();
    Command::new("kill")
        .args(["-INT", &child.id().to_string()])
        .status()
        .unwrap();
    let mut rest = String::new();
    rd.read_to_string(&mut rest).unwrap();
    let st = child.wait().unwrap();
    assert!(t.elapsed() < Duration::from_secs(5));
    assert_eq!(rest.matches(": got INT").count(), 4, "{rest}");
    assert_eq!(st.code(), Some(7));

    // A hung node (its agent stopped) and a dead one are reported without holding up the rest.
    let stopped = c.agents[19].child.as_ref().unwrap().id().to_string();
    Command::new("kill")
        .args(["-STOP", &stopped])
        .status()
        .unwrap();
    kill(&mut c.agents[20]);
    let t = Instant::now();
    let o = c.exec(&["-w", "node[17-24]", "-t", "1s", "echo up"]);
    let took = t.elapsed();
    Command::new("kill")
        .args(["-CONT", &stopped])
        .status()
        .unwrap();
    assert!(took < Duration::from_secs(4), "{took:?}");
    expect_lines(
        &o,
        [17, 18, 19, 22, 23, 24].map(|i| format!("{}: up", name(i))),
    );
    let err = text(&o.stderr);
    assert!(err.contains("2 of 8 nodes failed"), "{err}");
    assert!(
        err.contains(&format!(
            "node20: not reached: {}:2875: no answer within 1s",
            c.net.ip(20)
        )),
        "{err}"
    );
    assert!(
        err.contains("node21: not reached:") && err.contains("refused"),
        "{err}"
    );
    assert_eq!(o.status.code(), Some(255));

    // Tree fanout: the client holds 4 connections and relays carry the rest, stdin too; the
    // dead node21, a relay in this tree, is reported and node22 relays in its place.
    let o = c.exec_with_stdin(
        &[
            "-a",
            "--fanout",
            "4",
            "-t",
            "1s",
            "read x; echo $x $HERD_NODE",
        ],
        b"tree\n",
    );
    expect_lines(
        &o,
        all()
            .filter(|n| n != "node21")
            .map(|n| format!("{n}: tree {n}")),
    );
    let err = text(&o.stderr);
    assert!(
        err.contains("1 of 64 nodes failed") && err.contains("node21: not reached:"),
        "{err}"
    );
    let direct: Vec<String> = all()
        .filter(|n| n != "node21")
        .filter(|n| {
            let log = std::fs::read_to_string(c.dir.path(&format!("audit-{n}.log"))).unwrap();
            let last = log.lines().rfind(|l| l.contains("\"start\"")).unwrap();
            !last.contains("\"via\"")
        })
        .collect();
    assert_eq!(direct, ["node01", "node17", "node33", "node49"]);
    let log = std::fs::read_to_string(c.dir.path("audit-node22.log")).unwrap();
    assert!(
        log.lines().last().unwrap().contains("\"via\":\"node17\""),
        "{log}"
    );

    // A relay lost in the middle of the run: each node it carried is reported.
    let child = c
        .cmd(&["-w", "node[33-48]", "--fanout", "4", "sleep 1.5; echo done"])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_millis(700));
    kill(&mut c.agents[36]);
    let o = child.wait_with_output().unwrap();
    expect_lines(
        &o,
        [33, 34, 35, 36, 41, 42, 43, 44, 45, 46, 47, 48].map(|i| format!("{}: done", name(i))),
    );
    let err = text(&o.stderr);
    assert!(
        err.contains("4 of 16 nodes failed")
            && err.contains("node37: lost: the connection broke")
            && err.contains("node[38-40]: lost: via node37: the connection broke"),
        "{err}"
    );
    assert_eq!(o.status.code(), Some(255));

    // The audit log has who, what, where and the exit.
    let log = std::fs::read_to_string(c.dir.path("audit-node05.log")).unwrap();
    let last: serde_json::Value = serde_json::from_str(
        log.lines()
            .rfind(|l| l.contains("\"end\"") && l.contains("exit 3"))
            .unwrap(),
    )
    .unwrap();
    assert_eq!(
        (
            last["who"].as_str(),
            last["node"].as_str(),
            last["user"].as_str()
        ),
        (Some("admin"), Some("node05"), Some("root"))
    );
    assert!(
        last["command"].as_str().unwrap().contains("exit 3"),
        "{last}"
    );
    assert_eq!(last["exit"], 3);
}

#[test]
fn agents_refuse_strangers_node_certificates_and_revoked_ones() {
    let c = Cluster::new("execauth", 2);
    let pki = c.dir.path("pki").display().to_string();
    let other = c.dir.path("other").display().to_string();
    ok(&["init", "--pki", &other]);
    ok(&["cert", "issue", "alice", "--role", "admin", "--pki", &pki]);
    ok(&[
        "cert",
        "issue",
        "carol",
        "--role",
        "read-only",
        "--pki",
        &pki,
    ]);

    // The admin certificate works.
    let o = c.exec(&["-a", "true"]);
    assert!(o.status.success(), "{}", text(&o.stderr));

    // A certificate from another CA: the handshake fails.
    let o = c.exec(&[
        "-w",
        "node01",
        "--cert",
        &format!("{other}/admin.crt"),
        "--key",
        &format!("{other}/admin.key"),
        "true",
    ]);
    assert_eq!(o.status.code(), Some(255));
    assert!(
        text(&o.stderr).contains("node01: not reached:") && text(&o.stderr).contains("TLS"),
        "{}",
        text(&o.stderr)
    );

    // A node's certificate may not run commands; a read-only one may only ping.
    let o = c.exec(&[
        "-w",
        "node01",
        "--cert",
        &c.pki("node02.crt"),
        "--key",
        &c.pki("node02.key"),
        "true",
    ]);
    assert_eq!(o.status.code(), Some(126));
    assert!(
        text(&o.stderr).contains(
            "refused: exec needs an admin certificate; \"node02\" holds a node certificate"
        ),
        "{}",
        text(&o.stderr)
    );
    let (n2c, n2k) = (c.pki("node02.crt"), c.pki("node02.key"));
    let o = c.exec(&["-a", "--fanout", "1", "--cert", &n2c, "--key", &n2k, "true"]);
    assert_eq!(o.status.code(), Some(126));
    let err = text(&o.stderr);
    assert!(
        err.contains("node01: refused: grant: signed by a node certificate, not an admin's"),
        "{err}"
    );
    assert!(
        err.contains("node02: not run: its relay node01 was refused"),
        "{err}"
    );
    let o = c.exec(&[
        "-w",
        "node01",
        "--cert",
        &c.pki("carol.crt"),
        "--key",
        &c.pki("carol.key"),
        "true",
    ]);
    assert_eq!(o.status.code(), Some(126));
    let o = herd(&[
        "ping",
        "--config",
        c.client.to_str().unwrap(),
        "-a",
        "--cert",
        &c.pki("carol.crt"),
        "--key",
        &c.pki("carol.key"),
    ]);
    assert!(o.status.success(), "{}", text(&o.stderr));
    assert!(
        text(&o.stdout).contains("node02: herd")
            && text(&o.stdout).contains("(you are \"carol\", read-only)"),
        "{}",
        text(&o.stdout)
    );

    // No certificate at all: the agent ends the handshake.
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let refused = rt.block_on(async {
        let mut roots = rustls::RootCertStore::empty();
        for cert in herd_agent::pki::load_certs(&c.dir.path("pki/ca.crt")).unwrap() {
            roots.add(cert).unwrap();
        }
        let cfg = rustls::ClientConfig::builder_with_provider(std::sync::Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
        let tcp = tokio::net::TcpStream::connect((c.net.ip(1), 2875))
            .await
            .unwrap();
        let name = rustls::pki_types::ServerName::try_from("node01").unwrap();
        let tls = tokio_rustls_connect(cfg, name, tcp).await;
        tls.err().unwrap_or_default()
    });
    assert!(
        refused.contains("CertificateRequired") || refused.contains("certificate"),
        "{refused}"
    );

    // Revoked: alice's serial in [agent] revoked, applied by a reload; the admin still gets in.
    let serial = ok(&["cert", "show", "--json", &c.pki("alice.crt")]);
    let serial: serde_json::Value = serde_json::from_str(&serial).unwrap();
    let serial = serial[0]["serial"].as_str().unwrap().to_string();
    let alice = [
        "--cert".to_string(),
        c.pki("alice.crt"),
        "--key".to_string(),
        c.pki("alice.key"),
    ];
    let with_alice = |extra: &[&str]| {
        let mut a: Vec<&str> = alice.iter().map(String::as_str).collect();
        a.extend_from_slice(extra);
        c.exec(&a)
    };
    assert!(with_alice(&["-w", "node01", "true"]).status.success());
    let d = &c.agents[0];
    let cfg = std::fs::read_to_string(&d.config).unwrap();
    d.write_config(&format!("{cfg}revoked = [\"{serial}\"]\n"));
    d.ok(&["reload"]);
    let o = with_alice(&["-w", "node[01-02]", "true"]);
    assert_eq!(o.status.code(), Some(255));
    let err = text(&o.stderr);
    assert!(
        err.contains("1 of 2 nodes failed") && err.contains("node01: not reached:"),
        "{err}"
    );
    assert!(c.exec(&["-w", "node01", "true"]).status.success());
    // A relay resumes its TLS sessions run after run; revoked, it is refused even then.
    for _ in 0..2 {
        let o = c.exec(&["-a", "--fanout", "1", "true"]);
        assert!(o.status.success(), "{}", text(&o.stderr));
    }
    assert!(
        c.agents[1].log().contains("TLS session resumed"),
        "{}",
        c.agents[1].log()
    );
    let relay: serde_json::Value =
        serde_json::from_str(&ok(&["cert", "show", "--json", &c.pki("node01.crt")])).unwrap();
    let d = &c.agents[1];
    let cfg = std::fs::read_to_string(&d.config).unwrap();
    d.write_config(&format!(
        "{cfg}revoked = [\"{}\"]\n",
        relay[0]["serial"].as_str().unwrap()
    ));
    d.ok(&["reload"]);
    let o = c.exec(&["-a", "--fanout", "1", "true"]);
    assert_eq!(o.status.code(), Some(126), "{}", text(&o.stderr));
    assert!(
        text(&o.stderr).contains("node02: refused: the certificate of \"node01\" is revoked"),
        "{}",
        text(&o.stderr)
    );
    let audit = std::fs::read_to_string(c.dir.path("audit-node01.log")).unwrap();
    assert!(
        audit.contains("\"event\":\"refused\"") && audit.contains("\"who\":\"carol\""),
        "{audit}"
    );
}

async fn tokio_rustls_connect(
    cfg: rustls::ClientConfig,
    name: rustls::pki_types::ServerName<'static>,
    tcp: tokio::net::TcpStream,
) -> Result<(), String> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let conn =
        rustls::ClientConnection::new(std::sync::Arc::new(cfg), name).map_err(|e| e.to_string())?;
    // Drive the handshake by hand over the socket: send, read, until the server answers or
    // closes (TLS 1.3 reports a missing client certificate after the client's Finished).
    let mut conn = conn;
    let mut tcp = tcp;
    let mut buf = vec![0u8; 16384];
    for _ in 0..20 {
        while conn.wants_write() {
            let mut out = Vec::new();
            conn.write_tls(&mut out).map_err(|e| e.to_string())?;
            tcp.write_all(&out).await.map_err(|e| e.to_string())?;
        }
        let n = tcp.read(&mut buf).await.map_err(|e| e.to_string())?;
        if n == 0 {
            return Err("closed by the agent without a certificate".into());
        }
        conn.read_tls(&mut &buf[..n]).map_err(|e| e.to_string())?;
        conn.process_new_packets().map_err(|e| e.to_string())?;
    }
    Ok(())
}

#[test]
fn bad_frames_close_the_connection_and_a_stalled_client_stalls_only_itself() {
    use herd_agent::client::{connect, Target};
    use herd_agent::frame::{write_frames, Frame, FrameReader, Kind};
    use herd_agent::proto::{ExecRequest, Request};
    use herd_agent::tls::{client_config, Files};
    use tokio::io::AsyncWriteExt;

    let c = Cluster::new("execbad", 1);
    let tls = client_config(&Files {
        ca: c.dir.path("pki/ca.crt"),
        cert: c.dir.path("pki/admin.crt"),
        key: c.dir.path("pki/admin.key"),
    })
    .unwrap();
    let target = Target {
        rank: 0,
        name: "node01".into(),
        addr: format!("{}:2875", c.net.ip(1)),
    };
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let limit = Duration::from_secs(5);
        // A length past the maximum, an unknown kind, a request that is not JSON: each ends
        // the connection (the agent reads nothing more from it).
        let oversized = [0x00, 0x20, 0x00, 0x06, 1, 0, 0, 0, 0, b'x'].to_vec();
        let unknown = [0, 0, 0, 5, 77, 0, 0, 0, 0].to_vec();
        let mut not_json = Vec::new();
        Frame::new(Kind::Request, 0, b"{not json".to_vec()).encode(&mut not_json);
        for bad in [oversized, unknown, not_json] {
            let mut s = connect(tls.clone(), &target, limit).await.unwrap();
            s.write_all(&bad).await.unwrap();
            s.flush().await.unwrap();
            let (rd, _wr) = tokio::io::split(s);
            let mut rd = FrameReader::new(rd);
            let end = tokio::time::timeout(limit, async {
                loop {
                    match rd.read().await {
                        Ok(Some(f)) if f.kind == Kind::Error => continue,
                        other => return other.map(|f| f.map(|f| f.kind)),
                    }
                }
            })
            .await
            .expect("the agent closes the connection");
            assert!(matches!(end, Ok(None) | Err(_)), "{end:?}");
        }

        // A client that asks for a lot of output and never reads it.
        let mut stalled = connect(tls.clone(), &target, limit).await.unwrap();
        let req = Request::Exec(ExecRequest {
            command: "exec yes herd-stall-marker".into(),
            ..ExecRequest::default()
        });
        write_frames(&mut stalled, &[Frame::json(Kind::Request, 0, &req)])
            .await
            .unwrap();
        tokio::time::sleep(Duration::from_millis(500)).await;
        // Meanwhile the agent serves others at once.
        let t = Instant::now();
        let o = tokio::task::spawn_blocking({
            let client = c.client.clone();
            move || {
                Command::new(herd_bin())
                    .args(["exec", "--config"])
                    .arg(client)
                    .args(["-w", "node01", "echo served"])
                    .stdin(Stdio::null())
                    .output()
                    .unwrap()
            }
        })
        .await
        .unwrap();
        assert_eq!(text(&o.stdout), "node01: served\n", "{}", text(&o.stderr));
        assert!(t.elapsed() < Duration::from_secs(3), "{:?}", t.elapsed());
        // The stalled client goes away: its command is killed.
        drop(stalled);
    });
    crate::util::wait_for(
        "the stalled command to be killed",
        Duration::from_secs(10),
        || {
            Command::new("pgrep")
                .args(["-f", "herd-stall-marker"])
                .output()
                .unwrap()
                .stdout
                .is_empty()
        },
    );
}
