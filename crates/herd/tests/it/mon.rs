//! The mon port (mon's client protocol): reading is open, changing state needs an admin's
//! login on the connection; connections are capped and idle ones closed.

use std::io::{BufRead, BufReader, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::util::{wait_for, Backend, Daemon, Net};
use crate::web::user_table;

const ANN: &str = "ann-secret-1";
const ROB: &str = "rob-secret-1";

/// A daemon with a mon port, two checks (`web` up, `db` down) and two dashboard users: `ann`
/// (admin) and `rob` (read-only).
struct Mon {
    d: Daemon,
    port: SocketAddr,
    _up: Backend,
    /// The config it was started with.
    cfg: String,
    net: Net,
}

fn start(test: &str, extra: &str) -> Mon {
    let net = Net::new(test);
    let (up, down) = (net.addr(11, 8080), net.addr(12, 8080));
    let port = net.addr(2, 2583);
    let b = Backend::http(up, "node01");
    let mut cfg = format!(
        "[health]\nmon-listen = \"{port}\"\n{extra}\n\
         [[health.check]]\nname = \"web\"\ntype = \"tcp\"\nhosts = [\"{up}\"]\ninterval = \"200ms\"\nrise = 1\n\n\
         [[health.check]]\nname = \"db\"\ntype = \"tcp\"\nhosts = [\"{down}\"]\ninterval = \"200ms\"\nfall = 1\n\n\
         [web]\nlisten = \"{}\"\n",
        net.addr(1, 9000)
    );
    cfg.push_str(&user_table("ann", "admin", ANN));
    cfg.push_str(&user_table("rob", "read-only", ROB));
    let d = Daemon::start(test, &cfg);
    Mon {
        d,
        port,
        _up: b,
        cfg,
        net,
    }
}

/// The `db` check as `herd health list --json` shows it, and the silences.
fn db(d: &Daemon) -> (Value, Value) {
    let h: Value = serde_json::from_str(&d.ok(&["health", "list", "--json"])).unwrap();
    let db = h["checks"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["name"] == "db")
        .unwrap()
        .clone();
    (db, h["silences"].clone())
}

/// One mon client connection.
struct Client {
    r: BufReader<TcpStream>,
    w: TcpStream,
}

impl Client {
    fn connect(addr: SocketAddr) -> Client {
        let s = TcpStream::connect_timeout(&addr, Duration::from_secs(5)).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        Client {
            w: s.try_clone().unwrap(),
            r: BufReader::new(s),
        }
    }

    /// Sends one command; returns the reply lines, the last being the code line.
    fn cmd(&mut self, line: &str) -> Vec<String> {
        writeln!(self.w, "{line}").unwrap();
        self.reply()
    }

    fn reply(&mut self) -> Vec<String> {
        let mut out = Vec::new();
        loop {
            let mut l = String::new();
            if self.r.read_line(&mut l).unwrap() == 0 {
                return out;
            }
            let l = l.trim_end().to_string();
            let code =
                l.len() >= 4 && l[..3].bytes().all(|b| b.is_ascii_digit()) && &l[3..4] == " ";
            out.push(l);
            if code {
                return out;
            }
        }
    }

    /// The last line of the reply to `line`.
    fn last(&mut self, line: &str) -> String {
        self.cmd(line).pop().unwrap_or_default()
    }
}

const REFUSED: &str = "520 command could not be executed";

#[test]
fn without_an_admin_login_the_mon_port_changes_nothing() {
    let m = start("mon_login", "");
    wait_for("db down", Duration::from_secs(10), || {
        db(&m.d).0["targets"][0]["status"] == "down"
    });
    let mut c = Client::connect(m.port);
    // Reading stays open.
    let list = c.cmd("list opstatus");
    assert_eq!(
        list.last().unwrap(),
        "220 list opstatus completed",
        "{list:?}"
    );
    assert_eq!(list.len(), 3, "{list:?}");
    assert_eq!(c.last("list disabled"), "220 list disabled completed");
    // Every change is refused, supported by herd or not, in any case.
    for cmd in [
        "disable service hosts db",
        "DISABLE service hosts db",
        "enable service hosts db",
        "ack hosts db going home",
        "reset",
        "set hosts db opstatus 1",
        "test alert hosts db 1 wd",
    ] {
        let r = c.last(cmd);
        assert!(
            r.starts_with(REFUSED) && r.contains("log in first"),
            "{cmd}: {r}"
        );
    }
    assert_eq!(c.last("checkauth disable"), REFUSED);
    assert_eq!(c.last("checkauth list"), "220 command authorized");
    let (check, silences) = db(&m.d);
    assert_eq!(check["disabled"], false);
    assert_eq!(silences, serde_json::json!([]));

    // A wrong password and an unknown user are refused alike; the refusal stays.
    assert_eq!(
        c.last("login ann not-the-password"),
        "530 login unsuccessful"
    );
    assert_eq!(
        c.last(&format!("login nobody {ANN}")),
        "530 login unsuccessful"
    );
    assert_eq!(
        c.last("login ann"),
        "530 login unsuccessful (login USER PASSWORD)"
    );
    assert!(c.last("disable service hosts db").starts_with(REFUSED));
    // A read-only user logs in, and still changes nothing.
    assert_eq!(c.last(&format!("login rob {ROB}")), "220 login accepted");
    let r = c.last("disable service hosts db");
    assert!(
        r.starts_with(REFUSED) && r.contains("rob is read-only"),
        "{r}"
    );
    assert_eq!(db(&m.d).0["disabled"], false);

    // An admin: the changes go through, signed with the user's name.
    assert_eq!(c.last(&format!("login ann {ANN}")), "220 login accepted");
    assert_eq!(c.last("checkauth disable"), "220 command authorized");
    assert_eq!(c.last("disable service hosts db"), "220 disable completed");
    assert_eq!(db(&m.d).0["disabled"], true);
    assert_eq!(c.last("enable service hosts db"), "220 enable completed");
    assert_eq!(c.last("ack hosts db going home"), "220 ack completed");
    let (check, silences) = db(&m.d);
    assert_eq!(check["disabled"], false);
    assert_eq!(silences[0]["author"], "ann", "{silences}");
    assert_eq!(silences[0]["reason"], "going home");
    // The login belongs to that connection only.
    let mut other = Client::connect(m.port);
    assert!(other.last("disable service hosts db").starts_with(REFUSED));
    assert_eq!(c.last("quit"), "220 quitting");

    // Each change and each refusal is audited with the user and the client's address; the
    // password is never written.
    let log = plain(&m.d.log());
    let audit: Vec<&str> = log.lines().filter(|l| l.contains("mon audit")).collect();
    assert!(
        audit.iter().any(|l| l.contains("user=\"ann\"")
            && l.contains("event=\"command\"")
            && l.contains("disable service hosts db")
            && l.contains("from=127.")),
        "{audit:#?}"
    );
    assert!(
        audit
            .iter()
            .any(|l| l.contains("event=\"refused\"") && l.contains("reset")),
        "{audit:#?}"
    );
    assert!(
        audit.iter().any(|l| l.contains("login-failed")),
        "{audit:#?}"
    );
    assert!(
        !log.contains(ANN) && !log.contains("not-the-password"),
        "{log}"
    );
}

/// The log without its colours (ANSI escape sequences).
pub fn plain(log: &str) -> String {
    let mut out = String::with_capacity(log.len());
    let mut chars = log.chars();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' {
            // ESC [ ... m
            for d in chars.by_ref() {
                if d == 'm' {
                    break;
                }
            }
        } else {
            out.push(c);
        }
    }
    out
}

#[test]
fn failed_mon_logins_are_rate_limited() {
    let m = start("mon_limit", "");
    let mut c = Client::connect(m.port);
    for i in 0..5 {
        assert_eq!(
            c.last(&format!("login ann guess{i}")),
            "530 login unsuccessful"
        );
    }
    let r = c.last(&format!("login ann {ANN}"));
    assert!(
        r.starts_with("530 login unsuccessful (too many failed logins"),
        "{r}"
    );
    assert!(c.last("disable service hosts db").starts_with(REFUSED));
}

#[test]
fn the_mon_port_serves_64_clients_and_refuses_the_65th() {
    let m = start("mon_cap", "");
    let mut held: Vec<Client> = (0..64).map(|_| Client::connect(m.port)).collect();
    for (i, c) in held.iter_mut().enumerate() {
        assert_eq!(c.last("version"), "220 version completed", "client {i}");
    }
    let mut extra = Client::connect(m.port);
    let r = extra.reply();
    assert_eq!(r, ["520 too many connections, try again later"]);
    assert!(extra.reply().is_empty(), "and closed");
    // A slot that frees up serves the next client.
    assert_eq!(held.pop().unwrap().last("quit"), "220 quitting");
    wait_for("a free slot", Duration::from_secs(5), || {
        let mut c = Client::connect(m.port);
        c.cmd("version").last().map(String::as_str) == Some("220 version completed")
    });
    m.d.ok(&["status"]);
}

#[test]
fn a_reload_moves_the_mon_port_and_changes_its_cap_in_place() {
    let m = start("mon_reload", "");
    let mut old = Client::connect(m.port);
    assert_eq!(old.last("version"), "220 version completed");
    let pid = m.d.ok(&["status", "--json"]);
    let pid = serde_json::from_str::<Value>(&pid).unwrap()["pid"].clone();
    // Moved to another address, with room for two clients: the one still on the old address
    // counts, so one more.
    let moved = m.net.addr(3, 2583);
    let cfg = m.cfg.replace(
        &format!("mon-listen = \"{}\"", m.port),
        &format!("mon-listen = \"{moved}\"\nmon-max-connections = 2"),
    );
    m.d.write_config(&cfg);
    let out = m.d.ok(&["reload"]);
    assert!(!out.contains("restart"), "{out}");
    // The old port takes no one new; the client it was serving goes on.
    assert!(TcpStream::connect_timeout(&m.port, Duration::from_secs(2)).is_err());
    assert_eq!(old.last("version"), "220 version completed");
    let mut first = Client::connect(moved);
    assert_eq!(first.last("version"), "220 version completed");
    let mut second = Client::connect(moved);
    assert_eq!(
        second.reply(),
        ["520 too many connections, try again later"]
    );
    // A reload cannot open the mon port beyond loopback without `mon-insecure`: the config
    // is refused whole and the port stays where it was.
    let open = m.cfg.replace(
        &format!("mon-listen = \"{}\"", m.port),
        "mon-listen = \"0.0.0.0:2583\"",
    );
    m.d.write_config(&open);
    let out = m.d.herd(&["reload"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(78), "{err}");
    assert!(err.contains("mon-listen"), "{err}");
    assert_eq!(first.last("version"), "220 version completed");
    // An address that cannot be bound: refused, and the port stays where it was.
    let taken = std::net::TcpListener::bind(m.net.addr(4, 2583)).unwrap();
    let bad = m.cfg.replace(
        &format!("mon-listen = \"{}\"", m.port),
        &format!("mon-listen = \"{}\"", taken.local_addr().unwrap()),
    );
    m.d.write_config(&bad);
    let out = m.d.herd(&["reload"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success() && err.contains("cannot bind"),
        "{err}"
    );
    assert_eq!(first.last("version"), "220 version completed");
    let status: Value = serde_json::from_str(&m.d.ok(&["status", "--json"])).unwrap();
    assert_eq!(status["pid"], pid, "the same process throughout");
}

#[test]
fn an_idle_mon_client_is_closed_after_the_idle_timeout() {
    let m = start("mon_idle", "mon-idle-timeout = \"1s\"\n");
    let mut busy = Client::connect(m.port);
    let mut idle = Client::connect(m.port);
    let t0 = Instant::now();
    // The busy client sends a command every 300 ms for 2.4 s and stays.
    for _ in 0..8 {
        std::thread::sleep(Duration::from_millis(300));
        assert_eq!(busy.last("version"), "220 version completed");
    }
    assert_eq!(idle.reply(), ["520 idle timeout, closing"]);
    assert!(idle.reply().is_empty(), "closed");
    let took = t0.elapsed();
    assert!(took >= Duration::from_secs(1), "{took:?}");
    assert_eq!(busy.last("version"), "220 version completed");
}

/// `moncmd`, Debian's mon client, when installed. Under CI it must be.
fn moncmd_or_skip() -> Option<&'static str> {
    const MONCMD: &str = "/usr/bin/moncmd";
    if Path::new(MONCMD).exists() {
        return Some(MONCMD);
    }
    assert!(
        std::env::var("CI").as_deref() != Ok("true"),
        "{MONCMD} is missing: apt-get install mon-client"
    );
    eprintln!("skipped: {MONCMD} is missing (apt-get install mon-client)");
    None
}

/// Runs `moncmd -s IP -p PORT ARGS` as user `nobody` with `stdin`; returns its output.
fn moncmd_as_nobody(moncmd: &str, port: SocketAddr, args: &[&str], stdin: &str) -> String {
    let mut c = Command::new("setpriv")
        .args([
            "--reuid=nobody",
            "--regid=nogroup",
            "--clear-groups",
            moncmd,
        ])
        .args(["-s", &port.ip().to_string(), "-p", &port.port().to_string()])
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    c.stdin.take().unwrap().write_all(stdin.as_bytes()).unwrap();
    let o = c.wait_with_output().unwrap();
    assert!(o.status.success(), "moncmd {args:?}: {o:?}");
    String::from_utf8_lossy(&o.stdout).to_string()
}

#[test]
fn user_nobody_cannot_disable_a_check_with_moncmd_until_an_admin_logs_in() {
    let Some(moncmd) = moncmd_or_skip() else {
        return;
    };
    let m = start("mon_moncmd", "");
    let out = moncmd_as_nobody(moncmd, m.port, &["disable", "service", "hosts", "db"], "");
    assert!(out.trim().starts_with(REFUSED), "{out}");
    let out = moncmd_as_nobody(moncmd, m.port, &["ack", "hosts", "db", "mine"], "");
    assert!(out.trim().starts_with(REFUSED), "{out}");
    let (check, silences) = db(&m.d);
    assert_eq!(
        (check["disabled"].clone(), silences),
        (false.into(), serde_json::json!([]))
    );
    // Reading works for anyone.
    let out = moncmd_as_nobody(moncmd, m.port, &["list", "opstatus"], "");
    assert!(
        out.contains("service=db ") && out.ends_with("220 list opstatus completed\n"),
        "{out}"
    );

    // `moncmd -a -l USER` takes the password from stdin (`pass=...`; moncmd drops the line
    // after the credentials, hence the empty one) and logs in first.
    let login = |pw: &str, cmd: &str| format!("pass={pw}\n\n{cmd}\n");
    let out = moncmd_as_nobody(
        moncmd,
        m.port,
        &["-a", "-l", "rob"],
        &login(ROB, "disable service hosts db"),
    );
    assert!(out.trim().starts_with(REFUSED), "read-only: {out}");
    let c = Command::new("setpriv")
        .args([
            "--reuid=nobody",
            "--regid=nogroup",
            "--clear-groups",
            moncmd,
        ])
        .args([
            "-s",
            &m.port.ip().to_string(),
            "-p",
            &m.port.port().to_string(),
        ])
        .args(["-a", "-l", "ann"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut c = c;
    c.stdin
        .take()
        .unwrap()
        .write_all(login("wrong", "disable service hosts db").as_bytes())
        .unwrap();
    let o = c.wait_with_output().unwrap();
    assert!(!o.status.success(), "{o:?}");
    assert!(
        String::from_utf8_lossy(&o.stderr).contains("Could not authenticate"),
        "{o:?}"
    );
    assert_eq!(db(&m.d).0["disabled"], false);

    let out = moncmd_as_nobody(
        moncmd,
        m.port,
        &["-a", "-l", "ann"],
        &login(ANN, "disable service hosts db"),
    );
    assert_eq!(out.trim(), "220 disable completed");
    assert_eq!(db(&m.d).0["disabled"], true);
}

#[test]
fn mon_changes_go_to_the_dashboards_audit_log_or_are_not_made() {
    let m = start("mon_audit", "");
    // The dashboard's audit log is a directory: no line can be written.
    let audit = m.d.dir.path("audit");
    std::fs::create_dir(&audit).unwrap();
    let text = std::fs::read_to_string(&m.d.config).unwrap().replace(
        "[web]\n",
        &format!("[web]\naudit-log = \"{}\"\n", audit.display()),
    );
    m.d.write_config(&text);
    m.d.ok(&["reload"]);
    let mut c = Client::connect(m.port);
    assert_eq!(c.last(&format!("login ann {ANN}")), "220 login accepted");
    let r = c.last("disable service hosts db");
    assert!(
        r.starts_with(REFUSED) && r.contains("no change without its audit line"),
        "{r}"
    );
    assert_eq!(db(&m.d).0["disabled"], false);
    // Once it can be written, the change is made and is in the dashboard's audit log.
    std::fs::remove_dir(&audit).unwrap();
    assert_eq!(c.last("disable service hosts db"), "220 disable completed");
    assert_eq!(db(&m.d).0["disabled"], true);
    let log = std::fs::read_to_string(&audit).unwrap();
    assert!(
        log.contains("\"user\":\"ann\"") && log.contains("mon: disable service hosts db"),
        "{log}"
    );
}
