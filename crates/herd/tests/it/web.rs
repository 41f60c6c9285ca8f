//! The dashboard's HTTP API, logins and `/metrics`, against a running daemon.

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::process::{Command, Stdio};
use std::time::Duration;

use crate::exec::{kill, Cluster};
use crate::lb::service;
use crate::util::{herd_bin, tally, wait_for, Backend, Daemon, Net, Netns};

/// An HTTP answer.
#[derive(Debug)]
pub struct Http {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: String,
}

impl Http {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    pub fn json(&self) -> serde_json::Value {
        serde_json::from_str(&self.body).unwrap_or_else(|e| panic!("{e}: {}", self.body))
    }

    /// The session cookie the answer sets, as `name=value`.
    pub fn cookie(&self) -> String {
        let c = self.header("set-cookie").expect("a session cookie");
        c.split(';').next().unwrap().to_string()
    }
}

/// One request on a connection of its own (`Connection: close`).
pub fn http(
    addr: SocketAddr,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &str,
) -> Http {
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    let mut req = format!(
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\nContent-Length: {}\r\n",
        body.len()
    );
    for (k, v) in headers {
        req.push_str(&format!("{k}: {v}\r\n"));
    }
    req.push_str("\r\n");
    req.push_str(body);
    s.write_all(req.as_bytes()).unwrap();
    let mut raw = Vec::new();
    s.read_to_end(&mut raw).unwrap();
    let text = String::from_utf8_lossy(&raw).into_owned();
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    let mut lines = head.lines();
    let status = lines
        .next()
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|c| c.parse().ok())
        .unwrap_or_else(|| panic!("not HTTP: {text}"));
    let headers = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_string(), v.trim().to_string()))
        .collect();
    Http {
        status,
        headers,
        body: body.to_string(),
    }
}

/// `herd user add NAME --role ROLE` with the password on stdin: the TOML table it prints.
pub fn user_table(name: &str, role: &str, password: &str) -> String {
    let mut c = Command::new(herd_bin())
        .args(["user", "add", name, "--role", role, "--password-stdin"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    c.stdin
        .take()
        .unwrap()
        .write_all(format!("{password}\n").as_bytes())
        .unwrap();
    let out = c.wait_with_output().unwrap();
    assert!(out.status.success());
    String::from_utf8(out.stdout).unwrap()
}

fn login(web: SocketAddr, user: &str, password: &str) -> (String, String) {
    let r = http(
        web,
        "POST",
        "/api/v1/login",
        &[("Content-Type", "application/json")],
        &format!(r#"{{"user":"{user}","password":"{password}"}}"#),
    );
    assert_eq!(r.status, 200, "{}", r.body);
    let cookie = r.header("set-cookie").unwrap();
    assert!(
        cookie.contains("HttpOnly") && cookie.contains("SameSite=Strict"),
        "{cookie}"
    );
    (
        r.cookie(),
        r.json()["csrf-token"].as_str().unwrap().to_string(),
    )
}

struct Setup {
    d: Daemon,
    web: SocketAddr,
    vip: SocketAddr,
    reals: Vec<Backend>,
}

fn setup(test: &str, extra: &str) -> Setup {
    let net = Net::new(test);
    let reals: Vec<Backend> = (1..=2)
        .map(|i| Backend::http(net.addr(10 + i, 8080), &format!("node0{i}")))
        .collect();
    let vip = net.addr(100, 8080);
    let web = net.addr(1, 9000);
    let mut cfg = service(vip, "rr", &[(reals[0].addr, 1), (reals[1].addr, 1)]);
    cfg.push_str(&format!("\n[web]\nlisten = \"{web}\"\n{extra}\n"));
    cfg.push_str(&user_table("ann", "admin", "ann-password"));
    cfg.push_str(&user_table("rob", "read-only", "rob-password"));
    let d = Daemon::start(test, &cfg);
    Setup { d, web, vip, reals }
}

#[test]
fn the_api_wants_a_login_an_admin_and_the_csrf_token() {
    let s = setup("web_api", "");
    let audit = s.d.dir.path("web-audit.log");
    // The audit log is set by a reload: the [web] section applies at once.
    let mut text = std::fs::read_to_string(&s.d.config).unwrap();
    text = text.replace(
        "[web]\n",
        &format!("[web]\naudit-log = \"{}\"\n", audit.display()),
    );
    s.d.write_config(&text);
    s.d.ok(&["reload"]);
    let web = s.web;
    let real = s.reals[0].addr;
    let state_path = format!("/api/v1/services/tcp/{}/reals/{real}/state", s.vip);
    let drain = r#"{"state":"draining"}"#;
    let json = [("Content-Type", "application/json")];

    // Unauthenticated: 401, reads and actions alike; the OpenAPI document is public.
    assert_eq!(http(web, "GET", "/api/v1/services", &[], "").status, 401);
    assert_eq!(http(web, "POST", &state_path, &json, drain).status, 401);
    let r = http(
        web,
        "GET",
        "/api/v1/services",
        &[("Cookie", "herd_session=forged")],
        "",
    );
    assert_eq!(r.status, 401);
    let doc = http(web, "GET", "/api/v1/openapi.json", &[], "").json();
    assert_eq!(doc["openapi"], "3.0.3");
    assert!(
        doc["paths"]["/api/v1/services/{protocol}/{vip}/reals/{real}/state"]["post"].is_object()
    );
    // A name that is not ours (DNS rebinding: a page of evil.example resolving to us) is refused.
    let mut raw = TcpStream::connect(web).unwrap();
    raw.write_all(b"GET /metrics HTTP/1.1\r\nHost: evil.example:9000\r\nConnection: close\r\n\r\n")
        .unwrap();
    let mut got = String::new();
    raw.read_to_string(&mut got).unwrap();
    assert!(got.starts_with("HTTP/1.1 421"), "{got}");
    // HEAD is GET without a body; unknown paths are 404, known ones with another method 405.
    let r = http(web, "HEAD", "/login", &[], "");
    assert_eq!((r.status, r.body.as_str()), (200, ""));
    assert_eq!(http(web, "PUT", "/nothing", &[], "").status, 404);
    let r = http(web, "PUT", "/login", &[], "");
    assert_eq!((r.status, r.header("allow")), (405, Some("GET, POST")));
    // A page without a session goes to the login.
    let r = http(web, "GET", "/services", &[], "");
    assert_eq!(
        (r.status, r.header("location")),
        (303, Some("/login?next=/services"))
    );

    // Wrong password: 401, and no cookie.
    let r = http(
        web,
        "POST",
        "/api/v1/login",
        &json,
        r#"{"user":"ann","password":"nope"}"#,
    );
    assert_eq!(r.status, 401);
    assert!(r.header("set-cookie").is_none());

    // Read-only: may read, may not act (403), even with its own CSRF token.
    let (rob, rob_csrf) = login(web, "rob", "rob-password");
    let r = http(web, "GET", "/api/v1/services", &[("Cookie", &rob)], "");
    assert_eq!(r.status, 200);
    assert_eq!(
        r.json()["services"][0]["reals"].as_array().unwrap().len(),
        2
    );
    let r = http(
        web,
        "POST",
        &state_path,
        &[("Cookie", &rob), ("X-CSRF-Token", &rob_csrf), json[0]],
        drain,
    );
    assert_eq!(r.status, 403, "{}", r.body);
    assert_eq!(r.json()["kind"], "forbidden");
    let r = http(
        web,
        "POST",
        "/api/v1/request",
        &[("Cookie", &rob), ("X-CSRF-Token", &rob_csrf), json[0]],
        r#"{"op":"clear"}"#,
    );
    assert_eq!(r.status, 403);
    // ... but reads through the generic route work.
    let r = http(
        web,
        "POST",
        "/api/v1/request",
        &[("Cookie", &rob), json[0]],
        r#"{"op":"status"}"#,
    );
    assert_eq!(
        (r.status, r.json()["result"].as_str()),
        (200, Some("status"))
    );

    // Admin without the token, with a wrong one, or from another origin: refused (CSRF).
    let (ann, csrf) = login(web, "ann", "ann-password");
    for h in [
        vec![("Cookie", ann.as_str()), json[0]],
        vec![
            ("Cookie", ann.as_str()),
            ("X-CSRF-Token", rob_csrf.as_str()),
            json[0],
        ],
        vec![
            ("Cookie", ann.as_str()),
            ("X-CSRF-Token", csrf.as_str()),
            ("Origin", "http://evil.example"),
            json[0],
        ],
    ] {
        let r = http(web, "POST", &state_path, &h, drain);
        assert_eq!(
            (r.status, r.json()["kind"].as_str()),
            (403, Some("csrf")),
            "{h:?}"
        );
    }
    // A dashboard form without the token is refused too.
    let form = format!(
        "op=state&service=tcp+{}&real={real}&state=draining&confirmed=1&back=%2Fservices",
        s.vip
    );
    let r = http(
        web,
        "POST",
        "/action",
        &[
            ("Cookie", &ann),
            ("Content-Type", "application/x-www-form-urlencoded"),
        ],
        &form,
    );
    assert_eq!(r.status, 403);
    let listed = |d: &Daemon| -> serde_json::Value {
        serde_json::from_str(&d.ok(&["lb", "list", "--json"])).unwrap()
    };
    assert_eq!(
        listed(&s.d)[0]["reals"][1]["admin"],
        "enabled",
        "nothing changed yet"
    );
    assert_eq!(
        listed(&s.d)[0]["reals"][0]["admin"],
        "enabled",
        "nothing changed yet"
    );

    // With everything: done, and visible to the CLI.
    let r = http(
        web,
        "POST",
        &state_path,
        &[
            ("Cookie", &ann),
            ("X-CSRF-Token", &csrf),
            ("Origin", &format!("http://{web}")),
            json[0],
        ],
        drain,
    );
    assert_eq!(r.status, 200, "{}", r.body);
    let l = listed(&s.d);
    let r0 = l[0]["reals"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["address"] == real.to_string())
        .unwrap()
        .clone();
    assert_eq!(
        (r0["admin"].as_str(), r0["weight"].as_u64()),
        (Some("draining"), Some(0))
    );
    assert_eq!(tally(s.vip, 6).get("node02"), Some(&6));
    // The weight route, and errors mapped to statuses.
    let weight = format!(
        "/api/v1/services/tcp/{}/reals/{}/weight",
        s.vip, s.reals[1].addr
    );
    let h = [
        ("Cookie", ann.as_str()),
        ("X-CSRF-Token", csrf.as_str()),
        json[0],
    ];
    assert_eq!(
        http(web, "POST", &weight, &h, r#"{"weight":7}"#).status,
        200
    );
    assert_eq!(
        http(web, "POST", &weight, &h, r#"{"weight":70000}"#).status,
        400
    );
    assert_eq!(http(web, "POST", &weight, &h, r#"{"wait":7}"#).status, 400);
    let nowhere = format!("/api/v1/services/tcp/{}/reals/127.0.0.1:1/weight", s.vip);
    assert_eq!(
        http(web, "POST", &nowhere, &h, r#"{"weight":1}"#).status,
        404
    );
    assert_eq!(http(web, "GET", &weight, &h, "").status, 405);
    assert!(s
        .d
        .ok(&["ipvsadm", "-L", "-n"])
        .contains(&format!("{}", s.reals[1].addr)));
    // Disable: out of the ipvsadm listing; enable: back, at the weight set above.
    let r1 = s.reals[1].addr.to_string();
    let state1 = format!("/api/v1/services/tcp/{}/reals/{r1}/state", s.vip);
    assert_eq!(
        http(web, "POST", &state1, &h, r#"{"state":"disabled"}"#).status,
        200
    );
    assert!(!s.d.ok(&["ipvsadm", "-L", "-n"]).contains(&r1));
    assert_eq!(
        http(web, "POST", &state1, &h, r#"{"state":"enabled"}"#).status,
        200
    );
    let ipvs = s.d.ok(&["ipvsadm", "-L", "-n"]);
    let line = ipvs
        .lines()
        .find(|l| l.contains(&r1))
        .expect("listed again");
    assert_eq!(line.split_whitespace().nth(3), Some("7"), "{ipvs}");
    // A config exported through the web keeps its password hashes to itself.
    let r = http(
        web,
        "POST",
        "/api/v1/request",
        &h,
        r#"{"op":"export-config"}"#,
    );
    let toml = r.json()["toml"].as_str().unwrap().to_string();
    assert!(
        toml.contains("[web.user.ann]") && toml.contains("(redacted"),
        "{toml}"
    );
    assert!(!toml.contains("$argon2id"), "{toml}");

    // Logout ends the session.
    let r = http(web, "POST", "/api/v1/logout", &h, "");
    assert_eq!(r.status, 200);
    assert_eq!(
        http(web, "GET", "/api/v1/session", &[("Cookie", &ann)], "").status,
        401
    );

    // The audit log has the action with its user, and the refusals changed nothing.
    let log = std::fs::read_to_string(&audit).unwrap();
    let lines: Vec<serde_json::Value> = log
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert!(
        lines.iter().any(|e| e["event"] == "drain"
            && e["user"] == "ann"
            && e["ok"] == true
            && e["detail"].as_str().unwrap().contains(&real.to_string())),
        "{log}"
    );
    assert!(
        lines
            .iter()
            .any(|e| e["event"] == "login-failed" && e["user"] == "ann"),
        "{log}"
    );
    assert!(
        lines
            .iter()
            .any(|e| e["event"] == "weight" && e["ok"] == false),
        "{log}"
    );

    // Failed logins from one address are limited: after five within a minute (a good login
    // clears the address's count), even the right password waits (429).
    let mut refused = 0;
    loop {
        let r = http(
            web,
            "POST",
            "/api/v1/login",
            &json,
            r#"{"user":"ann","password":"nope"}"#,
        );
        if r.status == 429 {
            break;
        }
        assert_eq!(r.status, 401);
        refused += 1;
        assert!(refused <= 5, "no limit after {refused} failures");
    }
    let r = http(
        web,
        "POST",
        "/api/v1/login",
        &json,
        r#"{"user":"ann","password":"ann-password"}"#,
    );
    assert_eq!(r.status, 429, "{}", r.body);
    assert!(r.header("retry-after").unwrap().parse::<u64>().unwrap() <= 60);
}

#[test]
fn a_reload_that_removes_a_user_ends_their_sessions() {
    let s = setup("web_reload", "");
    let (rob, _) = login(s.web, "rob", "rob-password");
    assert_eq!(
        http(s.web, "GET", "/api/v1/session", &[("Cookie", &rob)], "").status,
        200
    );
    let text = std::fs::read_to_string(&s.d.config).unwrap();
    let cut = text.find("[web.user.rob]").unwrap();
    s.d.write_config(&text[..cut]);
    s.d.ok(&["reload"]);
    assert_eq!(
        http(s.web, "GET", "/api/v1/session", &[("Cookie", &rob)], "").status,
        401
    );
    // A bad [web] section is refused like any bad config, and the old users stay.
    s.d.write_config(&format!(
        "{}\n[web.user.eve]\npassword = \"hunter2\"\nrole = \"admin\"\n",
        &text[..cut]
    ));
    let out = s.d.herd(&["reload"]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("web.user.eve.password") && err.contains("not an argon2id hash"),
        "{err}"
    );
    let (ann, _) = login(s.web, "ann", "ann-password");
    // Without [web] at all, the dashboard stops: nothing listens; with it back, it serves
    // again, and the old session is gone.
    let no_web = text[..text.find("[web]").unwrap()].to_string();
    s.d.write_config(&no_web);
    let out = s.d.ok(&["reload"]);
    assert!(!out.contains("restart"), "{out}");
    let e = std::net::TcpStream::connect(s.web).unwrap_err();
    assert_eq!(e.kind(), std::io::ErrorKind::ConnectionRefused);
    s.d.write_config(&text);
    s.d.ok(&["reload"]);
    assert_eq!(
        http(s.web, "GET", "/api/v1/session", &[("Cookie", &ann)], "").status,
        401
    );
    login(s.web, "ann", "ann-password");
}

/// `herd user add --config`: appended to the file (its mode kept), refused twice, applied by
/// a reload.
#[test]
fn herd_user_add_appends_to_the_config() {
    use std::os::unix::fs::PermissionsExt;
    let s = setup("web_user_add", "");
    std::fs::set_permissions(&s.d.config, std::fs::Permissions::from_mode(0o640)).unwrap();
    let add = |name: &str| {
        let mut c = Command::new(herd_bin())
            .args([
                "user",
                "add",
                name,
                "--role",
                "admin",
                "--password-stdin",
                "--config",
            ])
            .arg(&s.d.config)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        // A refused add stops before reading the password: the pipe may be closed by then.
        let _ = c.stdin.take().unwrap().write_all(b"carol-password\n");
        c.wait_with_output().unwrap()
    };
    let out = add("carol");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stderr).contains("`herd reload` applies it"));
    let mode = std::fs::metadata(&s.d.config).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o640);
    let text = std::fs::read_to_string(&s.d.config).unwrap();
    assert!(
        text.contains("[web.user.carol]\npassword = \"$argon2id$"),
        "{text}"
    );
    let again = add("carol");
    assert_eq!(again.status.code(), Some(65));
    assert_eq!(
        std::fs::read_to_string(&s.d.config).unwrap(),
        text,
        "unchanged"
    );
    s.d.ok(&["reload"]);
    login(s.web, "carol", "carol-password");
}

/// A real server the health monitor removes is still shown (and counted) by the dashboard and
/// /metrics, though ipvsadm no longer lists it.
#[test]
fn a_removed_real_server_shows_on_the_dashboard() {
    let net = Net::new("web_removed");
    let up = Backend::http(net.addr(11, 8080), "node01");
    let dead = net.addr(12, 8080);
    let vip = net.addr(100, 8080);
    let web = net.addr(1, 9000);
    let cfg = format!(
        "{}\n[[health.check]]\nname = \"tcp\"\ntype = \"tcp\"\nservice = \"{vip}\"\ninterval = \"200ms\"\n\
         fall = 1\non-failure = \"remove\"\n\n[web]\nlisten = \"{web}\"\n{}",
        service(vip, "rr", &[(up.addr, 1), (dead, 1)]),
        user_table("rob", "read-only", "rob-password"),
    );
    let d = Daemon::start("web_removed", &cfg);
    let real_up = format!(
        "herd_lb_real_up{{service=\"TCP {vip}\",protocol=\"tcp\",vip=\"{vip}\",real=\"{dead}\"}} 0"
    );
    wait_for("removed", Duration::from_secs(10), || {
        http(web, "GET", "/metrics", &[], "")
            .body
            .contains(&real_up)
    });
    assert!(!d.ok(&["ipvsadm", "-L", "-n"]).contains(&dead.to_string()));
    let (c, _) = login(web, "rob", "rob-password");
    let page = http(web, "GET", "/services", &[("Cookie", &c)], "").body;
    assert!(page.contains(&format!("data-real=\"{dead}\"")), "{page}");
    assert!(
        page.contains("failing (removed)") && page.contains(">degraded<"),
        "{page}"
    );
}

/// `/metrics` parsed by Prometheus' own tools: `promtool check metrics` (the text format and
/// its naming conventions) and the reference client library's parser (Python
/// `prometheus_client`), whose families we check against the director's counters.
#[test]
fn metrics_parse_and_follow_prometheus_conventions() {
    let s = setup("web_metrics", "");
    tally(s.vip, 10);
    let r = http(s.web, "GET", "/metrics", &[], "");
    assert_eq!(r.status, 200);
    assert!(r
        .header("content-type")
        .unwrap()
        .starts_with("text/plain; version=0.0.4"));
    let text = r.body;
    let ci = std::env::var("CI").is_ok_and(|v| v == "true");

    let promtool = Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn();
    match promtool {
        Ok(mut c) => {
            c.stdin.take().unwrap().write_all(text.as_bytes()).unwrap();
            let out = c.wait_with_output().unwrap();
            assert!(
                out.status.success() && out.stdout.is_empty() && out.stderr.is_empty(),
                "promtool check metrics: {}{}\n{text}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            );
        }
        Err(e) if !ci => eprintln!("SKIPPED promtool check (apt-get install prometheus): {e}"),
        Err(e) => panic!("promtool is needed under CI: {e}"),
    }

    let py = "import sys, json\n\
              from prometheus_client.parser import text_string_to_metric_families as parse\n\
              out = {}\n\
              for f in parse(sys.stdin.read()):\n\
              \x20   out[f.name] = {'type': f.type, 'help': f.documentation, 'samples': [[s.name, s.labels, s.value] for s in f.samples]}\n\
              print(json.dumps(out))\n";
    let parsed = Command::new("/usr/bin/python3")
        .args(["-c", py])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn();
    let fams: BTreeMap<String, serde_json::Value> = match parsed {
        Ok(mut c) => {
            c.stdin.take().unwrap().write_all(text.as_bytes()).unwrap();
            let out = c.wait_with_output().unwrap();
            let err = String::from_utf8_lossy(&out.stderr);
            if !out.status.success() && err.contains("No module named") && !ci {
                eprintln!("SKIPPED the prometheus_client parser (apt-get install python3-prometheus-client)");
                return;
            }
            assert!(
                out.status.success(),
                "the parser refused /metrics: {err}\n{text}"
            );
            serde_json::from_slice(&out.stdout).unwrap()
        }
        Err(e) => panic!("no /usr/bin/python3: {e}"),
    };
    for (name, f) in &fams {
        // The client library strips `_total` from counter family names.
        assert!(name.starts_with("herd_"), "{name}");
        assert!(
            !f["help"].as_str().unwrap().is_empty(),
            "{name} has no HELP"
        );
        for s in f["samples"].as_array().unwrap() {
            let sample = s[0].as_str().unwrap();
            if f["type"] == "counter" {
                assert!(sample.ends_with("_total"), "counter sample {sample}");
            } else {
                assert!(!sample.ends_with("_total"), "{} sample {sample}", f["type"]);
            }
        }
    }
    let value = |fam: &str, real: Option<SocketAddr>| -> f64 {
        fams[fam]["samples"]
            .as_array()
            .unwrap()
            .iter()
            .find(|s| real.is_none_or(|r| s[1]["real"] == r.to_string()))
            .unwrap_or_else(|| panic!("{fam}: {:?}", fams[fam]))[2]
            .as_f64()
            .unwrap()
    };
    assert_eq!(fams["herd_lb_connections"]["type"], "counter");
    assert_eq!(value("herd_lb_connections", None), 10.0);
    assert_eq!(
        value("herd_lb_real_connections", Some(s.reals[0].addr)),
        5.0
    );
    assert_eq!(value("herd_lb_real_up", Some(s.reals[1].addr)), 1.0);
    assert!(value("herd_lb_received_bytes", None) > 0.0);
    assert_eq!(fams["herd_lb_real_weight"]["type"], "gauge");
    let svc = &fams["herd_lb_connections"]["samples"][0][1];
    assert_eq!(svc["vip"], s.vip.to_string());
    assert_eq!(svc["protocol"], "tcp");
    // A drained server reads 0 in service, 1 in the draining state.
    s.d.ok(&[
        "lb",
        "real",
        "drain",
        &s.vip.to_string(),
        &s.reals[0].addr.to_string(),
    ]);
    let text = http(s.web, "GET", "/metrics", &[], "").body;
    let line = |prefix: &str| {
        text.lines()
            .find(|l| l.starts_with(prefix))
            .map(str::to_string)
    };
    let r0 = s.reals[0].addr;
    assert!(
        line(&format!(
            "herd_lb_real_up{{service=\"TCP {}\",protocol=\"tcp\",vip=\"{}\",real=\"{r0}\"}} 0",
            s.vip, s.vip
        ))
        .is_some(),
        "{text}"
    );
    assert!(
        text.contains(&format!("real=\"{r0}\",state=\"draining\"}} 1")),
        "{text}"
    );
}

#[test]
fn metrics_can_require_a_login_or_a_token() {
    let token_file =
        std::env::temp_dir().join(format!("herd-it-metrics-token-{}", std::process::id()));
    std::fs::write(&token_file, "s3cret-scraper-token-0123\n").unwrap();
    let s = setup(
        "web_metrics_login",
        &format!(
            "metrics-public = false\nmetrics-token-file = \"{}\"",
            token_file.display()
        ),
    );
    let _ = std::fs::remove_file(&token_file);
    assert_eq!(http(s.web, "GET", "/metrics", &[], "").status, 401);
    let (c, _) = login(s.web, "rob", "rob-password");
    assert_eq!(
        http(s.web, "GET", "/metrics", &[("Cookie", &c)], "").status,
        200
    );
    // A scraper with the token (Prometheus' `authorization: credentials_file`).
    let bearer = |t: &str| {
        http(
            s.web,
            "GET",
            "/metrics",
            &[("Authorization", &format!("Bearer {t}"))],
            "",
        )
        .status
    };
    assert_eq!(bearer("s3cret-scraper-token-0123"), 200);
    assert_eq!(bearer("s3cret-scraper-token-0124"), 401);
    assert_eq!(bearer(""), 401);
    // The token opens /metrics only.
    let r = http(
        s.web,
        "GET",
        "/api/v1/services",
        &[("Authorization", "Bearer s3cret-scraper-token-0123")],
        "",
    );
    assert_eq!(r.status, 401);
}

#[test]
fn pages_render_for_a_read_only_user_without_action_forms() {
    let s = setup("web_pages", "");
    let (c, _) = login(s.web, "rob", "rob-password");
    for p in ["/", "/services", "/reals", "/alerts", "/nodes"] {
        let r = http(s.web, "GET", p, &[("Cookie", &c)], "");
        assert_eq!(r.status, 200, "{p}");
        assert!(r
            .header("content-security-policy")
            .unwrap()
            .contains("script-src 'self'"));
        assert!(r.body.contains("<div id=\"live\""), "{p}");
        assert!(
            !r.body.contains("name=\"op\""),
            "{p}: a read-only user gets no action forms"
        );
    }
    let r = http(s.web, "GET", "/services", &[("Cookie", &c)], "");
    for b in &s.reals {
        assert!(
            r.body.contains(&format!("data-real=\"{}\"", b.addr)),
            "{}",
            r.body
        );
    }
    // The live region comes as server-sent events.
    let mut sock = TcpStream::connect(s.web).unwrap();
    sock.set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    write!(
        sock,
        "GET /events?page=services HTTP/1.1\r\nHost: {}\r\nCookie: {c}\r\n\r\n",
        s.web
    )
    .unwrap();
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    while !String::from_utf8_lossy(&got).contains("event: live") {
        let n = sock.read(&mut buf).unwrap();
        assert!(n > 0);
        got.extend_from_slice(&buf[..n]);
    }
    let got = String::from_utf8_lossy(&got);
    assert!(got.contains("text/event-stream"), "{got}");
    assert!(got.contains("data: "), "{got}");
    // One session has at most 8 live pages (this is its second to ninth).
    let mut open = vec![sock];
    for i in 2..=9 {
        let mut x = TcpStream::connect(s.web).unwrap();
        x.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        write!(
            x,
            "GET /events?page=overview HTTP/1.1\r\nHost: {}\r\nCookie: {c}\r\n\r\n",
            s.web
        )
        .unwrap();
        let mut head = [0u8; 12];
        x.read_exact(&mut head).unwrap();
        let code = if i <= 8 { "200" } else { "429" };
        assert_eq!(&head[9..12], code.as_bytes(), "live page {i}");
        open.push(x);
    }
}

/// The nodes page's data: the daemon pings the agents of `[nodes]` with its node certificate.
#[test]
fn the_nodes_api_shows_each_agents_version_and_who_is_down() {
    let mut c = Cluster::new("web_nodes", 2);
    let pki = c.dir.path("pki").display().to_string();
    Command::new(herd_bin())
        .args(["cert", "issue", "node03", "--pki", &pki])
        .output()
        .unwrap();
    let web = c.net.addr(3, 9000);
    let o = c.net.ip(1).octets();
    let cfg = format!(
        "[lb]\nworkers = 1\n[nodes]\n\"node[01-03]\" = \"127.{}.{}.[1-3]\"\n\
         [agent]\nlisten = [\"{}\"]\nname = \"node03\"\npki = \"{pki}\"\n\
         [web]\nlisten = \"{web}\"\n{}",
        o[1],
        o[2],
        c.net.ip(3),
        user_table("rob", "read-only", "rob-password"),
    );
    let _d = Daemon::start("web_nodes-node03", &cfg);
    let (cookie, _) = login(web, "rob", "rob-password");
    let nodes = || {
        let v = http(web, "GET", "/api/v1/nodes", &[("Cookie", &cookie)], "").json();
        assert_eq!(v["this"], "node03");
        v["nodes"].as_array().unwrap().clone()
    };
    wait_for("three agents up", Duration::from_secs(20), || {
        let n = nodes();
        n.len() == 3 && n.iter().all(|x| x["up"] == true)
    });
    let n = nodes();
    assert_eq!(n[0]["name"], "node01");
    assert_eq!(n[0]["version"], env!("CARGO_PKG_VERSION"));
    assert!(n[0]["load"].as_array().is_some_and(|l| l.len() == 3));
    let page = http(web, "GET", "/nodes", &[("Cookie", &cookie)], "").body;
    assert!(page.contains("data-node=\"node02\""), "{page}");
    kill(&mut c.agents[1]);
    wait_for("node02 down", Duration::from_secs(30), || {
        let n = nodes();
        n[1]["up"] == false && !n[1]["error"].as_str().unwrap_or("").is_empty()
    });
    assert_eq!(nodes()[0]["up"], true);
}

/// Alerts: a failing real server shows as an open alert; an admin acknowledges it through a
/// dashboard form (confirmation page first), lifts the silence, silences it by the API; each
/// is audited; the alerts page and the metrics follow.
#[test]
fn alerts_are_acknowledged_silenced_and_lifted_from_the_dashboard() {
    let net = Net::new("web_alerts");
    let up = Backend::http(net.addr(11, 8080), "node01");
    let dead = net.addr(12, 8080); // nothing listens there
    let vip = net.addr(100, 8080);
    let web = net.addr(1, 9000);
    let cfg = format!(
        "{}\n[[health.check]]\nname = \"tcp\"\ntype = \"tcp\"\nservice = \"{vip}\"\ninterval = \"200ms\"\nfall = 1\n\
         [[health.check.alert]]\non = \"down\"\nexec = \"/bin/true\"\n\
         \n[web]\nlisten = \"{web}\"\n{}",
        service(vip, "rr", &[(up.addr, 1), (dead, 1)]),
        user_table("ann", "admin", "ann-password"),
    );
    let d = Daemon::start("web_alerts", &cfg);
    let (cookie, csrf) = login(web, "ann", "ann-password");
    let page = |p: &str| http(web, "GET", p, &[("Cookie", &cookie)], "").body;
    wait_for("an open alert", Duration::from_secs(10), || {
        page("/alerts").contains(&format!("<td>{dead}</td>"))
    });
    let overview = page("/");
    assert!(overview.contains("id=\"alerts-open\">1<"), "{overview}");
    assert!(overview.contains(">degraded<"), "{overview}");

    // The form without confirmation answers with a confirmation page; nothing happens yet.
    let form = format!("_csrf={csrf}&op=ack&check=tcp&target={dead}&back=%2Falerts");
    let ctype = ("Content-Type", "application/x-www-form-urlencoded");
    let r = http(web, "POST", "/action", &[("Cookie", &cookie), ctype], &form);
    assert_eq!(r.status, 200);
    assert!(
        r.body.contains(&format!(
            "Acknowledge check tcp on {dead} (its alerts are held until it recovers)?"
        )),
        "{}",
        r.body
    );
    assert!(r.body.contains("name=\"confirmed\" value=\"1\""));
    let silences = |d: &Daemon| -> Vec<serde_json::Value> {
        let v: serde_json::Value =
            serde_json::from_str(&d.ok(&["health", "list", "--json"])).unwrap();
        v["silences"].as_array().cloned().unwrap_or_default()
    };
    assert!(silences(&d).is_empty());
    // Confirmed: done, and back to the page with a notice.
    let r = http(
        web,
        "POST",
        "/action",
        &[("Cookie", &cookie), ctype],
        &format!("{form}&confirmed=1"),
    );
    assert_eq!(r.status, 303);
    assert!(
        r.header("location")
            .unwrap()
            .starts_with("/alerts?msg=Done"),
        "{:?}",
        r.headers
    );
    let s = silences(&d);
    assert_eq!(s.len(), 1);
    assert_eq!(
        (s[0]["author"].as_str(), s[0]["reason"].as_str()),
        (Some("ann"), Some("acknowledged"))
    );
    assert_eq!(s[0]["until-recovery"], true, "an ack lasts until recovery");
    let alerts = page("/alerts");
    assert!(alerts.contains("badge muted\">silenced"), "{alerts}");
    let metrics = http(web, "GET", "/metrics", &[], "").body;
    assert!(
        metrics.contains("herd_health_alerts_unsilenced 0"),
        "{metrics}"
    );
    // The down alert went out once, through /bin/true (after its grouping wait).
    wait_for("the alert counted", Duration::from_secs(10), || {
        http(web, "GET", "/metrics", &[], "")
            .body
            .contains("herd_health_alerts_total{check=\"tcp\",outcome=\"delivered\"} 1")
    });
    assert!(
        metrics.contains(&format!(
            "herd_health_target_up{{check=\"tcp\",target=\"{dead}\"}} 0"
        )),
        "{metrics}"
    );

    // Lift it from the page, then silence for 30 minutes through the API.
    let id = s[0]["id"].as_u64().unwrap();
    let r = http(
        web,
        "POST",
        "/action",
        &[("Cookie", &cookie), ctype],
        &format!("_csrf={csrf}&op=unsilence&id={id}&confirmed=1&back=%2Falerts"),
    );
    assert_eq!(r.status, 303);
    assert!(silences(&d).is_empty());
    let r = http(
        web,
        "POST",
        "/api/v1/silences",
        &[
            ("Cookie", &cookie),
            ("X-CSRF-Token", &csrf),
            ("Content-Type", "application/json"),
        ],
        &format!(r#"{{"target":"{dead}","secs":1800,"reason":"replacing the disk"}}"#),
    );
    assert_eq!(
        (r.status, r.json()["result"].as_str()),
        (200, Some("silenced")),
        "{}",
        r.body
    );
    assert_eq!(silences(&d)[0]["reason"], "replacing the disk");
    // Acknowledged through the API, then the server comes back: the ack ends by itself, the
    // timed silence stays.
    let r = http(
        web,
        "POST",
        "/api/v1/alerts/ack",
        &[
            ("Cookie", &cookie),
            ("X-CSRF-Token", &csrf),
            ("Content-Type", "application/json"),
        ],
        &format!(r#"{{"check":"tcp","target":"{dead}"}}"#),
    );
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(silences(&d).len(), 2);
    let _back = Backend::http(dead, "node02");
    wait_for(
        "the ack to end with the recovery",
        Duration::from_secs(10),
        || {
            let s = silences(&d);
            s.len() == 1 && s[0]["reason"] == "replacing the disk"
        },
    );
    let recent = http(web, "GET", "/api/v1/audit", &[("Cookie", &cookie)], "").json();
    let events: Vec<&str> = recent
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["event"].as_str().unwrap())
        .collect();
    assert_eq!(events, ["login", "ack", "unsilence", "silence", "ack"]);
}

/// With `tls-cert`/`tls-key` the dashboard speaks HTTPS only, marks its cookie `Secure` and
/// sends HSTS (curl is the client; the certificate is self-signed by openssl).
#[test]
fn over_tls_cookies_are_secure() {
    let net = Net::new("web_tls");
    let dir = crate::util::TempDir::new("web_tls-pki");
    let (cert, key) = (dir.path("web.crt"), dir.path("web.key"));
    let st = Command::new("openssl")
        .args([
            "req",
            "-x509",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:prime256v1",
            "-nodes",
            "-days",
            "1",
            "-subj",
            "/CN=herd",
        ])
        .arg("-addext")
        .arg(format!("subjectAltName=IP:{}", net.ip(1)))
        .arg("-keyout")
        .arg(&key)
        .arg("-out")
        .arg(&cert)
        .output()
        .unwrap();
    assert!(
        st.status.success(),
        "{}",
        String::from_utf8_lossy(&st.stderr)
    );
    let web = net.addr(1, 9443);
    let cfg = format!(
        "[lb]\nworkers = 1\n[web]\nlisten = \"{web}\"\ntls-cert = \"{}\"\ntls-key = \"{}\"\n{}",
        cert.display(),
        key.display(),
        user_table("ann", "admin", "ann-password")
    );
    let _d = Daemon::start("web_tls", &cfg);
    let out = Command::new("curl")
        .args(["-sS", "-i", "--cacert"])
        .arg(&cert)
        .args([
            "-H",
            "Content-Type: application/json",
            "-d",
            r#"{"user":"ann","password":"ann-password"}"#,
        ])
        .arg(format!("https://{web}/api/v1/login"))
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout).to_lowercase();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(text.starts_with("http/1.1 200"), "{text}");
    let cookie = text.lines().find(|l| l.starts_with("set-cookie:")).unwrap();
    assert!(
        cookie.contains("; secure")
            && cookie.contains("httponly")
            && cookie.contains("samesite=strict"),
        "{cookie}"
    );
    assert!(
        text.contains("strict-transport-security: max-age="),
        "{text}"
    );
    // Plain HTTP gets no answer from the TLS port.
    let mut s = TcpStream::connect(web).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(15))).unwrap();
    let _ = s.write_all(b"GET /api/v1/status HTTP/1.1\r\nHost: x\r\n\r\n");
    let mut buf = Vec::new();
    let _ = s.read_to_end(&mut buf);
    assert!(
        !String::from_utf8_lossy(&buf).contains("HTTP/1.1"),
        "answered in clear text"
    );
}

/// A `[web]` address already taken stops the start-up with a clear error; nothing is left half up.
#[test]
fn a_web_address_in_use_stops_the_start() {
    let net = Net::new("web_busy");
    let web = net.addr(1, 9000);
    let _taken = std::net::TcpListener::bind(web).unwrap();
    let err = Daemon::try_start(
        "web_busy",
        &format!("[lb]\nworkers = 1\n[web]\nlisten = \"{web}\"\n"),
    )
    .unwrap_err();
    assert!(
        err.contains(&format!("web.listen: cannot bind {web}")),
        "{err}"
    );
}

/// Behind a trusted reverse proxy (the test, on loopback): the login limit and the audit log
/// see the forwarded client, and `X-Forwarded-Proto: https` makes the cookie `Secure`.
#[test]
fn a_trusted_proxy_forwards_the_client() {
    let audit = std::env::temp_dir().join(format!("herd-it-proxy-audit-{}", std::process::id()));
    let _ = std::fs::remove_file(&audit);
    let s = setup(
        "web_proxy",
        &format!(
            "trusted-proxies = [\"127.0.0.0/8\"]\naudit-log = \"{}\"",
            audit.display()
        ),
    );
    let login_as = |xff: &str, pw: &str| {
        http(
            s.web,
            "POST",
            "/api/v1/login",
            &[
                ("Content-Type", "application/json"),
                ("X-Forwarded-For", xff),
                ("X-Forwarded-Proto", "https"),
            ],
            &format!(r#"{{"user":"ann","password":"{pw}"}}"#),
        )
    };
    let r = login_as("198.51.100.7", "ann-password");
    assert_eq!(r.status, 200);
    let c = r.header("set-cookie").unwrap();
    assert!(
        c.starts_with("__Host-herd_session=") && c.contains("; Secure"),
        "{c}"
    );
    // Five failures from one forwarded client limit that client, not the proxy's others.
    for _ in 0..5 {
        assert_eq!(login_as("198.51.100.8", "nope").status, 401);
    }
    assert_eq!(login_as("198.51.100.8", "ann-password").status, 429);
    assert_eq!(login_as("198.51.100.9", "ann-password").status, 200);
    let log = std::fs::read_to_string(&audit).unwrap();
    let _ = std::fs::remove_file(&audit);
    assert!(log.contains("\"from\":\"198.51.100.7\""), "{log}");
    assert!(log.contains("\"from\":\"198.51.100.8\""), "{log}");
    assert!(!log.contains("\"from\":\"127."), "{log}");
}

/// 40 connections from 40 addresses of one IPv6 /64, then one from another /64, inside a
/// network namespace of the test's own (the whole of `fd00:64::/64` and `fd00:65::/64` is local
/// there, so any of their addresses can be a client).
const SIXTY_FOUR_CLIENT: &str = r#"
import socket, sys, time
port = int(sys.argv[1])
held = []
for i in range(40):
    s = socket.socket(socket.AF_INET6)
    s.bind(("fd00:64::%x" % (i + 2), 0))
    s.connect(("fd00:64::1", port))
    held.append(s)
time.sleep(1.0)
still = 0
for s in held:
    s.setblocking(False)
    try:
        if s.recv(1) == b"":
            continue
    except BlockingIOError:
        still += 1
    except OSError:
        pass
other = socket.create_connection(("fd00:64::1", port), timeout=5, source_address=("fd00:65::7", 0))
other.sendall(b"GET /login HTTP/1.1\r\nHost: [fd00:64::1]\r\nConnection: close\r\n\r\n")
first = other.recv(64).split(b"\r\n")[0].decode()
print(still, first)
"#;

#[test]
fn one_ipv6_64_is_one_client_for_the_connection_cap() {
    let ns = Netns::new("web64");
    ns.run(&[
        "ip",
        "-6",
        "route",
        "add",
        "local",
        "fd00:64::/64",
        "dev",
        "lo",
    ]);
    ns.run(&[
        "ip",
        "-6",
        "route",
        "add",
        "local",
        "fd00:65::/64",
        "dev",
        "lo",
    ]);
    // Addresses of a local route are delivered here; binding them needs nonlocal binds.
    ns.run(&["sysctl", "-qw", "net.ipv6.ip_nonlocal_bind=1"]);
    let cfg = format!(
        "[web]\nlisten = \"[fd00:64::1]:9000\"\ninsecure = true\n{}",
        user_table("ann", "admin", "ann-password")
    );
    let _d = Daemon::start_with("web64", &cfg, &["ip", "netns", "exec", &ns.0]);
    let out = Command::new("ip")
        .args([
            "netns",
            "exec",
            &ns.0,
            "python3",
            "-c",
            SIXTY_FOUR_CLIENT,
            "9000",
        ])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{text} {}",
        String::from_utf8_lossy(&out.stderr)
    );
    // 32 connections per client, the /64 being the client; another /64 still gets in.
    assert_eq!(text.trim(), "32 HTTP/1.1 200 OK", "{text}");
}

#[test]
fn an_action_without_its_audit_line_is_not_taken() {
    let s = setup("web_audit_closed", "");
    // The audit log's path is a directory: no line can be written there.
    let audit = s.d.dir.path("audit-dir");
    std::fs::create_dir(&audit).unwrap();
    let text = std::fs::read_to_string(&s.d.config).unwrap().replace(
        "[web]\n",
        &format!("[web]\naudit-log = \"{}\"\n", audit.display()),
    );
    s.d.write_config(&text);
    s.d.ok(&["reload"]);
    let (cookie, csrf) = login(s.web, "ann", "ann-password");
    let real = s.reals[0].addr;
    let path = format!("/api/v1/services/tcp/{}/reals/{real}/state", s.vip);
    let drain = |web| {
        http(
            web,
            "POST",
            &path,
            &[
                ("Content-Type", "application/json"),
                ("Cookie", &cookie),
                ("X-CSRF-Token", &csrf),
            ],
            r#"{"state":"draining"}"#,
        )
    };
    let r = drain(s.web);
    assert_eq!(r.status, 500, "{}", r.body);
    assert!(
        r.body.contains("cannot be written") && r.body.contains("audit line"),
        "{}",
        r.body
    );
    // Nothing was done: both real servers still take connections.
    let t = tally(s.vip, 8);
    assert_eq!(
        (t.get("node01"), t.get("node02")),
        (Some(&4), Some(&4)),
        "{t:?}"
    );
    // Once the log can be written, the same action goes through and is in it.
    std::fs::remove_dir(&audit).unwrap();
    assert_eq!(drain(s.web).status, 200);
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(&audit).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o640);
    assert!(std::fs::read_to_string(&audit)
        .unwrap()
        .contains("\"event\":\"drain\""));
}
