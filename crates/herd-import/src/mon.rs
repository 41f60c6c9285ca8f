//! `herd import mon.cf`: mon's config file to herd's `[health]` (and the `[[lb.service]]`
//! entries that mon's `lvs.alert` lines stood for).
//!
//! mon's syntax as its `read_cf` reads it: `#` comment lines, a trailing `\` continues a line,
//! leading and trailing blanks do not matter; `key = value` globals; `hostgroup NAME hosts...`
//! (more hosts on the following lines, up to a blank line); `watch GROUP`, then `service NAME`
//! with its keys (`interval`, `monitor`, `depend`, ...), then `period [label:] SPEC` blocks with
//! `alert`/`upalert` lines and their rules (`alertevery`, `alertafter`, `numalerts`).
//!
//! The mapping:
//! - each watch/service becomes a `[[health.check]]` named `GROUP-SERVICE`, of type `exec`
//!   running the same monitor over the hostgroup, with mon's thresholds (`rise = 1`,
//!   `fall = 1`: mon alerts from the first failure);
//! - each `alert`/`upalert` line becomes a `[[health.check.alert]]` with its period's rules; a
//!   service without `alertevery` alerts at every failed run in mon, so `every` is its interval;
//! - `lvs.alert ... -V VIP -R RIP -W w -F dr -X down` lines become director integration: the
//!   VIP becomes an `[[lb.service]]` with RIP as a real server (weight, forwarding method), and
//!   the check drives it (`service = "VIP"`, `reals = ["RIP"]`, `on-failure = "remove"` as
//!   lvs.alert's `ipvsadm -d` did; `fall` from `alertafter`);
//! - everything without an equivalent is listed in the notes, with its line.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use herd_core::config::split_words;

/// A remark about the conversion, at a line of the mon.cf.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Note {
    pub line: usize,
    pub text: String,
}

/// The converted config and what could not be converted faithfully.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Imported {
    pub toml: String,
    pub notes: Vec<Note>,
}

#[derive(Debug, Default)]
struct Period {
    line: usize,
    spec: String,
    alerts: Vec<(usize, bool, String)>,
    every: Option<String>,
    after: Option<(u32, Option<String>)>,
    max: Option<u32>,
}

#[derive(Debug, Default)]
struct Service {
    line: usize,
    watch: String,
    name: String,
    description: Option<String>,
    interval: Option<String>,
    failure_interval: Option<String>,
    monitor: Option<String>,
    depend: Option<(usize, String)>,
    periods: Vec<Period>,
}

/// One `lvs.alert` binding: a real server of a virtual service.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Lvs {
    protocol: String,
    vip: String,
    rip: String,
    weight: Option<u32>,
    forward: Option<&'static str>,
}

/// Converts mon.cf text.
pub fn import(src: &str) -> Imported {
    let mut notes = Vec::new();
    let mut note = |line: usize, text: String| notes.push(Note { line, text });
    let mut globals: Vec<(usize, String, String)> = Vec::new();
    let mut groups: BTreeMap<String, Vec<String>> = BTreeMap::new();
    let mut group_order: Vec<String> = Vec::new();
    let mut services: Vec<Service> = Vec::new();
    let mut in_group: Option<String> = None;
    let mut watch: Option<String> = None;

    for (line, l) in logical_lines(src) {
        let l = l
            .replace(['\u{201c}', '\u{201d}'], "\"")
            .replace(['\u{2018}', '\u{2019}'], "'");
        if l.is_empty() {
            in_group = None;
            continue;
        }
        let (word, rest) = match l.split_once(char::is_whitespace) {
            Some((w, r)) => (w, r.trim()),
            None => (l.as_str(), ""),
        };
        if word == "hostgroup" {
            let mut it = rest.split_whitespace();
            let Some(name) = it.next() else {
                note(line, "hostgroup without a name: skipped".into());
                continue;
            };
            if !groups.contains_key(name) {
                group_order.push(name.to_string());
            }
            groups.insert(name.to_string(), it.map(str::to_string).collect());
            in_group = Some(name.to_string());
            watch = None;
            continue;
        }
        if let Some(g) = &in_group {
            if word == "watch" {
                note(
                    line,
                    format!(
                        "mon reads this line as more hosts of hostgroup {g} (a hostgroup ends at a blank line); imported as the watch it was meant to be"
                    ),
                );
                in_group = None;
            } else {
                if let Some(hs) = groups.get_mut(g) {
                    hs.extend(l.split_whitespace().map(str::to_string));
                }
                continue;
            }
        }
        if watch.is_none() && word != "watch" {
            if let Some((k, v)) = l.split_once('=') {
                globals.push((line, k.trim().to_string(), v.trim().to_string()));
                continue;
            }
        }
        match word {
            "watch" => {
                let g = rest
                    .split_whitespace()
                    .next()
                    .unwrap_or_default()
                    .to_string();
                if !groups.contains_key(&g) {
                    note(
                        line,
                        format!("watch {g}: no hostgroup {g} (mon creates an empty one)"),
                    );
                    groups.insert(g.clone(), Vec::new());
                    group_order.push(g.clone());
                }
                watch = Some(g);
            }
            "service" => match &watch {
                Some(w) => services.push(Service {
                    line,
                    watch: w.clone(),
                    name: rest.to_string(),
                    ..Service::default()
                }),
                None => note(line, "service outside a watch: skipped".into()),
            },
            _ => {
                let Some(svc) = services.last_mut().filter(|_| watch.is_some()) else {
                    note(line, format!("{word}: not understood here, skipped"));
                    continue;
                };
                service_line(svc, line, word, rest, &mut note);
            }
        }
    }

    let toml = render(&globals, &groups, &group_order, &services, &mut note);
    Imported { toml, notes }
}

/// A line inside a `service` block: one of the current period's alert rules, or a key of the
/// service itself.
fn service_line(
    svc: &mut Service,
    line: usize,
    word: &str,
    rest: &str,
    note: &mut impl FnMut(usize, String),
) {
    let is_rule = matches!(
        word,
        "alert" | "upalert" | "alertevery" | "alertafter" | "numalerts"
    );
    if let Some(p) = svc.periods.last_mut().filter(|_| is_rule) {
        period_rule(p, line, word, rest, note);
        return;
    }
    match word {
        "description" => svc.description = Some(rest.to_string()),
        "interval" => svc.interval = Some(rest.to_string()),
        "failure_interval" => svc.failure_interval = Some(rest.to_string()),
        "monitor" => svc.monitor = Some(rest.to_string()),
        "depend" => svc.depend = Some((line, rest.to_string())),
        "period" => {
            // "period [label:] spec"
            let spec = match rest.split_once(':') {
                Some((label, spec)) if !label.contains('{') && !label.contains(' ') => spec.trim(),
                _ => rest,
            };
            svc.periods.push(Period {
                line,
                spec: spec.to_string(),
                ..Period::default()
            });
        }
        "alert" | "upalert" | "alertevery" | "alertafter" | "numalerts" => {
            note(line, format!("{word} outside a period: skipped"));
        }
        other => note(
            line,
            format!("service key {other}: no herd equivalent, skipped"),
        ),
    }
}

/// An `alert`/`upalert` line or an alert rule of a period.
fn period_rule(
    p: &mut Period,
    line: usize,
    word: &str,
    rest: &str,
    note: &mut impl FnMut(usize, String),
) {
    match word {
        "alert" | "upalert" => p.alerts.push((line, word == "upalert", rest.to_string())),
        "alertevery" => {
            let mut it = rest.split_whitespace();
            p.every = it.next().map(str::to_string);
            if let Some(x) = it.next() {
                note(
                    line,
                    format!("alertevery option {x:?}: herd repeats on time only"),
                );
            }
        }
        "alertafter" => {
            let parts: Vec<&str> = rest.split_whitespace().collect();
            match parts.as_slice() {
                [n] if n.parse::<u32>().is_ok() => {
                    p.after = Some((n.parse().unwrap_or(1), None));
                }
                [n, t] if n.parse::<u32>().is_ok() => {
                    p.after = Some((n.parse().unwrap_or(1), Some(t.to_string())));
                }
                _ => note(
                    line,
                    format!("alertafter {rest:?}: not converted (expected N or N TIME)"),
                ),
            }
        }
        _ => match rest.parse::<u32>() {
            Ok(n) => p.max = Some(n),
            Err(_) => note(line, format!("numalerts {rest:?}: not a number, skipped")),
        },
    }
}

fn render(
    globals: &[(usize, String, String)],
    groups: &BTreeMap<String, Vec<String>>,
    group_order: &[String],
    services: &[Service],
    note: &mut impl FnMut(usize, String),
) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "# Converted from mon.cf by `herd import mon.cf`; read the notes it printed."
    );
    let lvs_of: Vec<Vec<Lvs>> = services.iter().map(|s| lvs_bindings(s, note)).collect();
    render_virtual_services(&mut out, &lvs_of);
    let _ = writeln!(out, "\n[health]");
    render_globals(&mut out, globals, note);
    render_hostgroups(&mut out, groups, group_order);
    for (s, lvs) in services.iter().zip(&lvs_of) {
        render_check(&mut out, s, lvs, groups, note);
    }
    out
}

/// The service's `lvs.alert` down-alert bindings, each once, in order of appearance.
fn lvs_bindings(s: &Service, note: &mut impl FnMut(usize, String)) -> Vec<Lvs> {
    let mut found = Vec::new();
    for p in &s.periods {
        for (line, up, cmd) in &p.alerts {
            if !is_lvs(cmd) {
                continue;
            }
            match parse_lvs(cmd) {
                Ok(b) => {
                    if !*up && !found.contains(&b) {
                        found.push(b);
                    }
                }
                Err(e) => note(*line, format!("lvs.alert: {e}; skipped")),
            }
        }
    }
    found
}

/// One `[[lb.service]]` per (protocol, VIP) of all the bindings, with each real server once.
fn render_virtual_services(out: &mut String, lvs_of: &[Vec<Lvs>]) {
    let mut vips: Vec<(String, String, Vec<Lvs>)> = Vec::new();
    for b in lvs_of.iter().flatten() {
        match vips.iter_mut().find(|v| v.0 == b.protocol && v.1 == b.vip) {
            Some(v) => {
                if !v.2.iter().any(|x| x.rip == b.rip) {
                    v.2.push(b.clone());
                }
            }
            None => vips.push((b.protocol.clone(), b.vip.clone(), vec![b.clone()])),
        }
    }
    for (proto, vip, reals) in &vips {
        let _ = writeln!(out, "\n[[lb.service]]");
        if proto != "tcp" {
            let _ = writeln!(out, "protocol = {}", q(proto));
        }
        let _ = writeln!(out, "address = {}\nscheduler = \"wlc\"", q(vip));
        for r in reals {
            let _ = writeln!(out, "  [[lb.service.real]]\n  address = {}", q(&r.rip));
            if let Some(w) = r.weight {
                let _ = writeln!(out, "  weight = {w}");
            }
            if let Some(f) = r.forward {
                let _ = writeln!(out, "  forward = {}", q(f));
            }
        }
    }
}

/// mon's global `key = value` lines as `[health]` keys, or notes.
fn render_globals(
    out: &mut String,
    globals: &[(usize, String, String)],
    note: &mut impl FnMut(usize, String),
) {
    let mut dirs = BTreeMap::new();
    for (line, k, v) in globals {
        match k.as_str() {
            "maxprocs" => match v.parse::<u32>() {
                Ok(n) if n > 0 => {
                    let _ = writeln!(out, "max-concurrent = {n}");
                }
                _ => note(
                    *line,
                    format!("maxprocs = {v}: not converted (0 or not a number)"),
                ),
            },
            "randstart" => {
                let _ = writeln!(out, "randstart = {}", q(v));
            }
            "mondir" | "alertdir" => {
                dirs.insert(k.clone(), v.clone());
            }
            _ => global_note(*line, k, note),
        }
    }
    for (k, default) in [
        ("mondir", "/usr/lib/mon/mon.d"),
        ("alertdir", "/usr/lib/mon/alert.d"),
    ] {
        match dirs.get(k) {
            Some(v) if v != default => {
                let _ = writeln!(out, "{k} = [{}, {}]    # then Debian's", q(v), q(default));
            }
            _ => {}
        }
    }
}

/// The note for a global key herd does not convert (none for the ones that need none).
fn global_note(line: usize, k: &str, note: &mut impl FnMut(usize, String)) {
    match k {
        "histlength" => note(
            line,
            "histlength: herd keeps the last 2000 history entries".into(),
        ),
        "dtlogging" | "dtlogfile" => note(
            line,
            format!("{k}: herd records every state change; see `herd health history`"),
        ),
        "authtype" | "userfile" => note(
            line,
            format!("{k}: herd's control socket is root-only; the dashboard has its own logins"),
        ),
        "cfbasedir" | "logdir" | "statedir" | "basedir" | "pidfile" => {}
        other => note(line, format!("{other}: no herd equivalent, skipped")),
    }
}

/// `[health.hostgroups]`, the non-empty groups in the mon.cf's order.
fn render_hostgroups(
    out: &mut String,
    groups: &BTreeMap<String, Vec<String>>,
    group_order: &[String],
) {
    let used: Vec<&String> = group_order
        .iter()
        .filter(|g| !groups[*g].is_empty())
        .collect();
    if !used.is_empty() {
        let _ = writeln!(out, "\n[health.hostgroups]");
        for g in used {
            let hosts: Vec<String> = groups[g].iter().map(|h| q(h)).collect();
            let _ = writeln!(out, "{} = [{}]", key(g), hosts.join(", "));
        }
    }
}

fn name_of(s: &Service) -> String {
    format!("{}-{}", s.watch, s.name)
}

/// One watch/service as a `[[health.check]]` with its alerts.
fn render_check(
    out: &mut String,
    s: &Service,
    lvs: &[Lvs],
    groups: &BTreeMap<String, Vec<String>>,
    note: &mut impl FnMut(usize, String),
) {
    let _ = writeln!(out, "\n[[health.check]]");
    let _ = writeln!(
        out,
        "# watch {}, service {} (mon.cf line {})",
        s.watch, s.name, s.line
    );
    if let Some(d) = &s.description {
        let _ = writeln!(out, "# {d}");
    }
    let _ = writeln!(out, "name = {}", q(&name_of(s)));
    let Some(monitor) = &s.monitor else {
        note(
            s.line,
            format!(
                "{}: no monitor (a trap service?); converted as a check of nothing, disabled",
                name_of(s)
            ),
        );
        let _ = writeln!(out, "type = \"exec\"\ncommand = \"true\"\ndisabled = true");
        let _ = writeln!(out, "hosts = [\"none\"]");
        return;
    };
    let _ = writeln!(out, "type = \"exec\"\ncommand = {}", q(monitor));
    if lvs.is_empty() {
        render_group_targets(out, s, groups, note);
    } else {
        render_lvs_targets(out, s, lvs, note);
    }
    render_timing(out, s, lvs);
    if let Some((line, dep)) = &s.depend {
        render_depends(out, *line, dep, note);
    }
    for p in &s.periods {
        for alert in &p.alerts {
            render_alert(out, s, p, alert, note);
        }
    }
}

/// A check without `lvs.alert` checks its hostgroup (disabled when the group is empty).
fn render_group_targets(
    out: &mut String,
    s: &Service,
    groups: &BTreeMap<String, Vec<String>>,
    note: &mut impl FnMut(usize, String),
) {
    if groups.get(&s.watch).is_some_and(|h| !h.is_empty()) {
        let _ = writeln!(out, "group = {}", q(&s.watch));
    } else {
        note(
            s.line,
            format!(
                "{}: hostgroup {} has no hosts; the check is disabled",
                name_of(s),
                s.watch
            ),
        );
        let _ = writeln!(out, "hosts = [\"none\"]\ndisabled = true");
    }
}

/// A check with `lvs.alert` bindings drives the first binding's virtual service.
fn render_lvs_targets(
    out: &mut String,
    s: &Service,
    lvs: &[Lvs],
    note: &mut impl FnMut(usize, String),
) {
    let vip = &lvs[0].vip;
    if lvs.iter().any(|b| &b.vip != vip) {
        note(s.line, format!("{}: lvs.alert lines for several virtual services; herd binds the check to {vip} only", name_of(s)));
    }
    let reals: Vec<String> = lvs
        .iter()
        .filter(|b| &b.vip == vip)
        .map(|b| q(&b.rip))
        .collect();
    let _ = writeln!(out, "service = {}\nreals = [{}]\non-failure = \"remove\"    # lvs.alert ran `ipvsadm -d`; \"quiesce\" lets connections drain", q(vip), reals.join(", "));
    note(s.line, format!("{}: lvs.alert is now the director integration; the monitor checks the real servers' addresses ({}), not the hostgroup's names", name_of(s), reals.join(" ")));
}

/// Intervals, thresholds and the timeout.
fn render_timing(out: &mut String, s: &Service, lvs: &[Lvs]) {
    if let Some(i) = &s.interval {
        let _ = writeln!(out, "interval = {}", q(i));
    }
    if let Some(i) = &s.failure_interval {
        let _ = writeln!(out, "failure-interval = {}", q(i));
    }
    // mon alerts from the first failure, and an upalert comes with the first success.
    let fall = if lvs.is_empty() {
        1
    } else {
        s.periods
            .iter()
            .find(|p| p.alerts.iter().any(|(_, up, c)| !up && is_lvs(c)))
            .and_then(|p| p.after.as_ref().map(|a| a.0))
            .unwrap_or(1)
    };
    let _ = writeln!(
        out,
        "rise = 1\nfall = {fall}\ntimeout = {}",
        q(&timeout_for(s.interval.as_deref()))
    );
}

/// mon's `depend` expression as herd's `depends` list (an AND of checks).
fn render_depends(out: &mut String, line: usize, dep: &str, note: &mut impl FnMut(usize, String)) {
    let mut deps = Vec::new();
    for part in dep.split(|c: char| c.is_whitespace() || c == '&' || c == '(' || c == ')') {
        if part.is_empty() {
            continue;
        }
        match part.split_once(':') {
            Some((g, sv)) => deps.push(q(&format!("{g}-{sv}"))),
            None => note(
                line,
                format!("depend {dep:?}: {part:?} is not GROUP:SERVICE; skipped"),
            ),
        }
    }
    if dep.contains("||") || dep.contains('!') {
        note(
            line,
            format!(
                "depend {dep:?}: herd's depends is an AND of checks; || and ! are not converted"
            ),
        );
    }
    if !deps.is_empty() {
        let _ = writeln!(out, "depends = [{}]", deps.join(", "));
    }
}

/// One `alert`/`upalert` line of a period as a `[[health.check.alert]]` (`lvs.alert` lines are
/// the director integration instead).
fn render_alert(
    out: &mut String,
    s: &Service,
    p: &Period,
    (line, up, cmd): &(usize, bool, String),
    note: &mut impl FnMut(usize, String),
) {
    if is_lvs(cmd) {
        if !p.spec.trim().is_empty() && !is_always(&p.spec) {
            note(
                *line,
                format!(
                    "lvs.alert in period {:?}: herd's director integration works at all times",
                    p.spec
                ),
            );
        }
        return;
    }
    let _ = writeln!(out, "\n  [[health.check.alert]]");
    if *up {
        let _ = writeln!(out, "  on = \"up\"");
    }
    let _ = writeln!(out, "  exec = {}", q(cmd));
    if !p.spec.trim().is_empty() {
        match herd_rules::period::Period::parse(p.spec.trim()) {
            Ok(_) => {
                let _ = writeln!(out, "  period = {}", q(p.spec.trim()));
            }
            Err(e) => note(
                p.line,
                format!(
                    "period {:?}: {e}; the alert is converted without it",
                    p.spec
                ),
            ),
        }
    }
    if !*up {
        render_alert_rules(out, s, p);
    }
}

/// A down alert's repetition rules: `every`, `after`/`within`, `max`.
fn render_alert_rules(out: &mut String, s: &Service, p: &Period) {
    match (&p.every, &s.interval) {
        (Some(e), _) => {
            let _ = writeln!(out, "  every = {}", q(e));
        }
        (None, Some(i)) => {
            let _ = writeln!(
                out,
                "  every = {}    # mon alerts at every failed run without alertevery",
                q(i)
            );
        }
        (None, None) => {}
    }
    if let Some((n, t)) = &p.after {
        let _ = writeln!(out, "  after = {n}");
        if let Some(t) = t {
            let _ = writeln!(out, "  within = {}", q(t));
        }
    }
    if let Some(m) = p.max {
        let _ = writeln!(out, "  max = {m}");
    }
}

/// mon's monitors get killed at the next interval at the latest; herd wants an explicit
/// timeout: the interval, capped at 30 s.
fn timeout_for(interval: Option<&str>) -> String {
    let secs = interval
        .and_then(|i| herd_core::config::parse_duration(i).ok())
        .map_or(30, |d| d.as_secs().clamp(1, 30));
    format!("{secs}s")
}

fn is_always(spec: &str) -> bool {
    let s: String = spec
        .chars()
        .filter(|c| !c.is_whitespace())
        .collect::<String>()
        .to_ascii_lowercase();
    s == "wd{sun-sat}" || s.is_empty()
}

fn is_lvs(cmd: &str) -> bool {
    cmd.split_whitespace()
        .next()
        .is_some_and(|p| p.rsplit('/').next() == Some("lvs.alert"))
}

/// `lvs.alert -P tcp -V VIP:port -R RIP[:port] -W w -F dr|nat|tun [-X down]`.
fn parse_lvs(cmd: &str) -> Result<Lvs, String> {
    let words = split_words(cmd).map_err(|e| e.to_string())?;
    let mut opt = BTreeMap::new();
    let mut it = words.iter().skip(1);
    while let Some(w) = it.next() {
        if let Some(flag) = w.strip_prefix('-') {
            if ["s", "g", "h", "t", "l", "P", "V", "R", "W", "F", "X"].contains(&flag) {
                opt.insert(flag.to_string(), it.next().cloned().unwrap_or_default());
            }
        }
    }
    let vip = opt.get("V").ok_or("no -V VIP:port")?.clone();
    let vport = vip
        .rsplit_once(':')
        .and_then(|(_, p)| p.parse::<u16>().ok())
        .ok_or_else(|| format!("-V {vip}: no port"))?;
    let mut rip = opt.get("R").ok_or("no -R real server")?.clone();
    if !rip.contains(':') {
        rip = format!("{rip}:{vport}");
    }
    let protocol = opt
        .get("P")
        .map_or("tcp".to_string(), |p| p.to_ascii_lowercase());
    let forward = match opt.get("F").map(String::as_str) {
        None => None,
        Some("dr") | Some("gate") => Some("route"),
        Some("nat") | Some("masq") => Some("masq"),
        Some("tun") => Some("tunnel"),
        Some(other) => return Err(format!("-F {other}: unknown forwarding method")),
    };
    let weight = match opt.get("W") {
        None => None,
        Some(w) => Some(
            w.parse::<u32>()
                .map_err(|_| format!("-W {w}: not a weight"))?,
        ),
    };
    Ok(Lvs {
        protocol,
        vip,
        rip,
        weight,
        forward,
    })
}

/// mon's logical lines with their first physical line's number: comment lines dropped,
/// trailing `\` continuations joined, blanks trimmed.
fn logical_lines(src: &str) -> Vec<(usize, String)> {
    let mut out = Vec::new();
    let mut acc = String::new();
    let mut start = 0;
    for (i, raw) in src.lines().enumerate() {
        let n = i + 1;
        if raw.trim_start().starts_with('#') {
            continue;
        }
        let part = if acc.is_empty() {
            raw
        } else {
            raw.trim_start()
        };
        if acc.is_empty() {
            start = n;
        }
        let t = part.trim_end();
        if let Some(head) = t.strip_suffix('\\') {
            // mon keeps all but the last backslash; herd drops them all: a `\\` at a line's
            // end (as some guides print it) is a continuation too.
            acc.push_str(head.trim_end_matches('\\'));
            acc.push(' ');
            continue;
        }
        acc.push_str(t);
        out.push((start, acc.trim().to_string()));
        acc.clear();
    }
    if !acc.is_empty() {
        out.push((start, acc.trim().to_string()));
    }
    out
}

/// A TOML string.
fn q(s: &str) -> String {
    toml::Value::String(s.to_string()).to_string()
}

/// A TOML key (bare when it can be).
fn key(s: &str) -> String {
    if !s.is_empty()
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
    {
        s.to_string()
    } else {
        q(s)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use herd_core::config::Config;
    use herd_rules::spec::{AlertOn, OnFailure, Sink, Targets};

    fn check(src: &str) -> (Config, Imported) {
        let imp = import(src);
        let cfg = Config::parse("imported.toml", &imp.toml)
            .unwrap_or_else(|e| panic!("{e}\n---\n{}", imp.toml));
        (cfg, imp)
    }

    #[test]
    fn seed_001_converts_to_a_valid_config_with_director_integration() {
        let (cfg, imp) = check(include_str!("fixtures/seed001-mon.cf"));
        let h = &cfg.health;
        assert_eq!(h.max_concurrent, 20);
        assert_eq!(h.randstart, Some(std::time::Duration::from_secs(30)));
        assert_eq!(h.hostgroups["HTTP-server1"], ["www1"]);
        assert_eq!(h.hostgroups["HTTP-server2"], ["www2"]);
        let names: Vec<&str> = h.checks.iter().map(|c| c.name.as_str()).collect();
        assert_eq!(
            names,
            [
                "HTTP-server1-ping",
                "HTTP-server1-HTTP",
                "HTTP-server2-ping",
                "HTTP-server2-HTTP"
            ]
        );
        // lvs.alert became one virtual service with both real servers, weight 100, DR.
        assert_eq!(cfg.lb.services.len(), 1);
        let svc = &cfg.lb.services[0];
        assert_eq!(svc.spec.key.address.to_string(), "211.238.41.170:80");
        let reals: Vec<(String, u32)> = svc
            .reals
            .iter()
            .map(|r| (r.address.to_string(), r.weight))
            .collect();
        assert!(
            reals.contains(&("211.238.41.165:80".into(), 100)),
            "{reals:?}"
        );
        assert!(
            reals.contains(&("211.238.41.166:80".into(), 100)),
            "{reals:?}"
        );
        let http1 = &h.checks[1];
        assert_eq!(http1.targets, Targets::Service("211.238.41.170:80".into()));
        assert_eq!(http1.reals, ["211.238.41.165:80"]);
        assert_eq!(http1.on_failure, OnFailure::Remove);
        assert_eq!(http1.interval, std::time::Duration::from_secs(3));
        // test.alert stays an alert; lvs.alert does not.
        assert_eq!(http1.alerts.len(), 2);
        assert_eq!(
            http1.alerts[0].sink,
            Sink::Exec {
                command: vec!["test.alert".into(), "HTTPd is DOWN".into()]
            }
        );
        assert_eq!(http1.alerts[1].on, AlertOn::Up);
        // The ping service: alertevery 10m, alertafter 2 30m.
        let ping = &h.checks[0];
        assert_eq!(ping.targets, Targets::Group("HTTP-server1".into()));
        let a = &ping.alerts[0];
        assert_eq!(a.every, Some(std::time::Duration::from_secs(600)));
        assert_eq!(
            (a.after, a.within),
            (2, Some(std::time::Duration::from_secs(1800)))
        );
        // What had no equivalent is listed.
        let text: Vec<String> = imp
            .notes
            .iter()
            .map(|n| format!("{}: {}", n.line, n.text))
            .collect();
        assert!(text.iter().any(|t| t.contains("authtype")), "{text:?}");
        assert!(text.iter().any(|t| t.contains("dtlogging")), "{text:?}");
    }

    #[test]
    fn seed_004_converts_to_a_valid_config() {
        let (cfg, _) = check(include_str!("fixtures/seed004-mon.cf"));
        assert_eq!(cfg.lb.services.len(), 1);
        assert_eq!(cfg.lb.services[0].reals.len(), 3);
        assert!(cfg.lb.services[0]
            .reals
            .iter()
            .all(|r| r.address.port() == 80 && r.weight == 1));
        assert_eq!(cfg.health.checks.len(), 3);
        assert_eq!(
            cfg.health.checks[0].interval,
            std::time::Duration::from_secs(5)
        );
        assert_eq!(
            cfg.health.checks[1].interval,
            std::time::Duration::from_secs(3)
        );
        assert_eq!(cfg.health.checks[2].reals, ["123.123.123.5:80"]);

        let (cfg, _) = check(include_str!("fixtures/seed004-first-mon.cf"));
        let c = &cfg.health.checks[0];
        assert_eq!(c.name, "master_server-ping");
        assert_eq!(c.targets, Targets::Group("master_server".into()));
        assert_eq!(cfg.health.hostgroups["master_server"], ["123.123.123.2"]);
        assert_eq!(
            cfg.health.mondir,
            [
                std::path::PathBuf::from("/usr/local/mon/mon.d"),
                "/usr/lib/mon/mon.d".into()
            ]
        );
        // No alertevery: mon alerts at every failed run, so herd repeats every interval.
        assert_eq!(c.alerts[0].every, Some(std::time::Duration::from_secs(10)));
    }

    #[test]
    fn hosts_continue_to_a_blank_line_and_continuations_join() {
        let src = "hostgroup web a b\n  c d\n\nwatch web\nservice http\ninterval 1m\nmonitor http.monitor -p \\\n 8080\ndepend web:ping\nperiod wd {Mon-Fri}\nalert mail.alert ops\nalertafter 3\nnumalerts 5\nservice ping\nmonitor fping.monitor\nfrobnicate 1\n";
        let (cfg, imp) = check(src);
        assert_eq!(cfg.health.hostgroups["web"], ["a", "b", "c", "d"]);
        let http = &cfg.health.checks[0];
        assert_eq!(
            http.kind,
            herd_rules::spec::CheckKind::Exec {
                command: vec!["http.monitor".into(), "-p".into(), "8080".into()],
                protocol: herd_rules::spec::ExecProtocol::Mon,
                no_hosts: false
            }
        );
        assert_eq!(http.depends, ["web-ping"]);
        assert_eq!((http.alerts[0].after, http.alerts[0].max), (3, 5));
        assert!(
            imp.notes
                .iter()
                .any(|n| n.line == 16 && n.text.contains("frobnicate")),
            "{:?}",
            imp.notes
        );
    }

    /// The converted text and the notes, byte for byte, for fixtures that between them take
    /// every branch of the renderer (the golden files were written by the renderer before it
    /// was split into functions).
    #[test]
    fn output_and_notes_match_the_golden_files() {
        let cases = [
            (
                include_str!("fixtures/seed001-mon.cf"),
                include_str!("fixtures/seed001-mon.toml"),
                include_str!("fixtures/seed001-mon.notes"),
            ),
            (
                include_str!("fixtures/seed004-mon.cf"),
                include_str!("fixtures/seed004-mon.toml"),
                include_str!("fixtures/seed004-mon.notes"),
            ),
            (
                include_str!("fixtures/seed004-first-mon.cf"),
                include_str!("fixtures/seed004-first-mon.toml"),
                include_str!("fixtures/seed004-first-mon.notes"),
            ),
            (
                include_str!("fixtures/every-branch-mon.cf"),
                include_str!("fixtures/every-branch-mon.toml"),
                include_str!("fixtures/every-branch-mon.notes"),
            ),
        ];
        for (src, toml, notes) in cases {
            let imp = import(src);
            assert_eq!(imp.toml, toml);
            let got: String = imp
                .notes
                .iter()
                .map(|n| format!("{}: {}\n", n.line, n.text))
                .collect();
            assert_eq!(got, notes);
        }
    }
}
