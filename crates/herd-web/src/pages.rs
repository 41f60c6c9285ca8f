//! The dashboard: server-rendered HTML pages, each with a live region that server-sent events
//! (`GET /events?page=…`) replace every second, and small forms for the actions. Every action
//! form carries the session's CSRF token and asks for confirmation (a `confirm()` dialog with
//! JavaScript, a confirmation page without).

use std::fmt::Write;
use std::sync::Arc;
use std::time::Duration;

use herd_core::api::{AdminState, RealHealth, ServiceStatus};
use hyper::body::Bytes;
use hyper::StatusCode;

use crate::access::{check_login, logout, may_act_audited, session, LoginOutcome};
use crate::actions::{perform, service_key, Action};
use crate::auth::Session;
use crate::history::{self, sparkline};
use crate::http::{self, form_pairs, html, local_path, redirect, Req, Resp};
use crate::snapshot::{self, Snapshot, Standing, Want};
use crate::state::State;

pub const APP_JS: &str = include_str!("../assets/app.js");
pub const APP_CSS: &str = include_str!("../assets/app.css");

/// How often the live regions are refreshed.
const LIVE_EVERY: Duration = Duration::from_secs(1);
/// A live page whose client has read nothing for this long is closed.
const STALLED_STREAM: Duration = Duration::from_secs(30);

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Page {
    Overview,
    Services,
    Reals,
    Alerts,
    Nodes,
}

impl Page {
    const ALL: [Page; 5] = [
        Page::Overview,
        Page::Services,
        Page::Reals,
        Page::Alerts,
        Page::Nodes,
    ];

    pub fn from_path(p: &str) -> Option<Page> {
        Page::ALL.into_iter().find(|x| x.path() == p)
    }

    fn from_name(n: &str) -> Option<Page> {
        Page::ALL.into_iter().find(|x| x.name() == n)
    }

    fn path(self) -> &'static str {
        match self {
            Page::Overview => "/",
            Page::Services => "/services",
            Page::Reals => "/reals",
            Page::Alerts => "/alerts",
            Page::Nodes => "/nodes",
        }
    }

    fn name(self) -> &'static str {
        match self {
            Page::Overview => "overview",
            Page::Services => "services",
            Page::Reals => "reals",
            Page::Alerts => "alerts",
            Page::Nodes => "nodes",
        }
    }

    fn title(self) -> &'static str {
        match self {
            Page::Overview => "Overview",
            Page::Services => "Virtual services",
            Page::Reals => "Real servers",
            Page::Alerts => "Alerts",
            Page::Nodes => "Nodes",
        }
    }

    fn want(self) -> Want {
        Want {
            history: matches!(self, Page::Reals | Page::Alerts),
            nodes: self == Page::Nodes,
        }
    }
}

/// HTML-escapes text for element content and quoted attributes. Control characters become
/// spaces: the pages travel as server-sent events, where a bare CR would end a field.
pub fn esc(s: &str) -> String {
    let mut o = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            c if c.is_control() => o.push(' '),
            '&' => o.push_str("&amp;"),
            '<' => o.push_str("&lt;"),
            '>' => o.push_str("&gt;"),
            '"' => o.push_str("&quot;"),
            '\'' => o.push_str("&#39;"),
            c => o.push(c),
        }
    }
    o
}

fn url_enc(s: &str) -> String {
    let mut o = String::new();
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"-_.~/".contains(&b) {
            o.push(b as char);
        } else {
            let _ = write!(o, "%{b:02X}");
        }
    }
    o
}

fn head(title: &str) -> String {
    format!(
        "<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\">\
         <meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\
         <title>{}</title><link rel=\"stylesheet\" href=\"/static/app.css\">\
         <script src=\"/static/app.js\" defer></script></head>",
        esc(title)
    )
}

/// A page without a session: login, errors.
pub fn message_page(title: &str, text: &str) -> String {
    format!(
        "{}<body class=\"bare\"><main class=\"narrow\"><h1>{}</h1><p>{}</p>\
         <p><a href=\"/\">Back to the dashboard</a></p></main></body></html>",
        head(&format!("herd · {title}")),
        esc(title),
        esc(text)
    )
}

fn layout(st: &State, s: &Session, page: Page, notice: &str, live: &str, extra: &str) -> String {
    let mut nav = String::new();
    for p in Page::ALL {
        let _ = write!(
            nav,
            "<a href=\"{}\"{}>{}</a>",
            p.path(),
            if p == page {
                " aria-current=\"page\""
            } else {
                ""
            },
            esc(p.title())
        );
    }
    format!(
        "{}<body><header><a class=\"brand\" href=\"/\">herd</a><nav>{nav}</nav>\
         <span class=\"who\">{} <small>({})</small> <form method=\"post\" action=\"/logout\" class=\"inline\">\
         <input type=\"hidden\" name=\"_csrf\" value=\"{}\"><button class=\"link\">Log out</button></form></span></header>\
         <main><h1>{}</h1>{notice}<div id=\"live\" data-page=\"{}\" aria-live=\"polite\">{live}</div>{extra}</main>\
         <footer>herd {} on {} · <span id=\"conn\" class=\"muted\">static</span></footer></body></html>",
        head(&format!("herd · {} · {}", page.title(), st.info().node)),
        esc(&s.user),
        s.role,
        esc(&s.csrf),
        esc(page.title()),
        page.name(),
        esc(st.info().version),
        esc(&st.info().node),
    )
}

fn notice(req: &Req) -> String {
    match (req.param("msg"), req.param("err")) {
        (_, Some(e)) => format!("<p class=\"notice bad\" role=\"alert\">{}</p>", esc(&e)),
        (Some(m), _) => format!("<p class=\"notice ok\" role=\"status\">{}</p>", esc(&m)),
        _ => String::new(),
    }
}

pub async fn page(st: &Arc<State>, req: &Req) -> Resp {
    let Some(page) = Page::from_path(&req.path) else {
        return html(
            StatusCode::NOT_FOUND,
            message_page("Not found", "No such page."),
        );
    };
    let Some((_, s)) = session(st, req) else {
        return redirect(&format!("/login?next={}", url_enc(page.path())));
    };
    let snap = snapshot::take(st, page.want()).await;
    let live = render_live(st, page, &snap, &s);
    let extra = render_static(page, &snap, &s);
    html(
        StatusCode::OK,
        layout(st, &s, page, &notice(req), &live, &extra),
    )
}

/// `GET /events?page=NAME`: the page's live region, re-rendered every second, as server-sent
/// events named `live`. Ends when the session does.
pub async fn events(st: &Arc<State>, req: &Req) -> Resp {
    let Some((token, _)) = session(st, req) else {
        return http::unauthorized();
    };
    let Some(page) = req.param("page").and_then(|p| Page::from_name(&p)) else {
        return http::full(StatusCode::BAD_REQUEST, "text/plain", "unknown page\n");
    };
    let Some(mine) = st.session_streams.take(&token) else {
        return http::full(
            StatusCode::TOO_MANY_REQUESTS,
            "text/plain",
            "too many live pages open in this session\n",
        );
    };
    let Ok(permit) = st.streams.clone().try_acquire_owned() else {
        return http::full(
            StatusCode::SERVICE_UNAVAILABLE,
            "text/plain",
            "too many live pages open\n",
        );
    };
    let (tx, rx) = tokio::sync::mpsc::channel::<Bytes>(2);
    let st = st.clone();
    tokio::spawn(async move {
        let _permit = (permit, mine);
        if tx
            .send(Bytes::from_static(b"retry: 3000\n\n"))
            .await
            .is_err()
        {
            return;
        }
        let mut tick = tokio::time::interval(LIVE_EVERY);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            let cfg = st.cfg();
            // peek: a page left open does not keep its session alive.
            let Some(s) = st.sessions.lock().unwrap_or_else(|p| p.into_inner()).peek(
                &token,
                &cfg.users,
                std::time::Instant::now(),
                cfg.session_timeout,
            ) else {
                let _ = tx
                    .send(Bytes::from_static(b"event: ended\ndata: login\n\n"))
                    .await;
                return;
            };
            let snap = snapshot::take(&st, page.want()).await;
            let live = render_live(&st, page, &snap, &s);
            let mut ev = String::with_capacity(live.len() + 64);
            ev.push_str("event: live\n");
            for line in live.lines() {
                ev.push_str("data: ");
                ev.push_str(line);
                ev.push('\n');
            }
            ev.push('\n');
            // A client that stops reading loses its stream (and its slot) after a while.
            match tokio::time::timeout(STALLED_STREAM, tx.send(Bytes::from(ev))).await {
                Ok(Ok(())) => {}
                _ => return,
            }
        }
    });
    http::stream(rx)
}

fn render_live(st: &State, page: Page, snap: &Snapshot, s: &Session) -> String {
    let mut o = String::new();
    for e in &snap.errors {
        let _ = write!(o, "<p class=\"notice bad\">{}</p>", esc(e));
    }
    let h = st.history.lock().unwrap_or_else(|p| p.into_inner());
    match page {
        Page::Overview => overview(&mut o, st, snap, s),
        Page::Services => services(&mut o, snap, s, &h),
        Page::Reals => reals(&mut o, snap, &h),
        Page::Alerts => alerts(&mut o, snap, s),
        Page::Nodes => nodes(&mut o, st, snap),
    }
    o
}

fn render_static(page: Page, snap: &Snapshot, s: &Session) -> String {
    let admin = s.role == herd_core::config::web::WebRole::Admin;
    match page {
        Page::Alerts if admin => {
            let checks: String = snap
                .checks
                .iter()
                .map(|c| format!("<option value=\"{0}\">{0}</option>", esc(&c.name)))
                .collect();
            format!(
                "<section><h2>New silence</h2>\
                 <form method=\"post\" action=\"/action\" class=\"stack\" data-confirm=\"Silence these alerts?\">\
                 {}<input type=\"hidden\" name=\"op\" value=\"silence\"><input type=\"hidden\" name=\"back\" value=\"/alerts\">\
                 <label>Check <select name=\"check\"><option value=\"\">(any)</option>{checks}</select></label>\
                 <label>Target <input name=\"target\" placeholder=\"(any)\"></label>\
                 <label>For <input name=\"duration\" placeholder=\"e.g. 30m, 2h; empty = until lifted\"></label>\
                 <label><input type=\"checkbox\" name=\"until_recovery\" value=\"1\"> Also end when it recovers</label>\
                 <label>Reason <input name=\"reason\" required></label>\
                 <button>Silence</button></form></section>",
                csrf(s)
            )
        }
        _ => String::new(),
    }
}

fn csrf(s: &Session) -> String {
    format!(
        "<input type=\"hidden\" name=\"_csrf\" value=\"{}\">",
        esc(&s.csrf)
    )
}

/// A one-button action form; `fields` are hidden inputs.
fn button(
    s: &Session,
    a: &Action,
    fields: &[(&str, String)],
    label: &str,
    class: &str,
    back: &str,
) -> String {
    let mut o = format!(
        "<form method=\"post\" action=\"/action\" class=\"inline\" data-confirm=\"{}?\">{}",
        esc(&a.describe()),
        csrf(s)
    );
    for (k, v) in fields {
        let _ = write!(
            o,
            "<input type=\"hidden\" name=\"{k}\" value=\"{}\">",
            esc(v)
        );
    }
    let _ = write!(
        o,
        "<input type=\"hidden\" name=\"back\" value=\"{back}\"><button class=\"{class}\">{}</button></form>",
        esc(label)
    );
    o
}

fn badge(text: &str, class: &str) -> String {
    format!("<span class=\"badge {class}\">{}</span>", esc(text))
}

fn standing_badge(x: Standing) -> String {
    badge(
        x.as_str(),
        match x {
            Standing::Up => "ok",
            Standing::Degraded => "warn",
            Standing::Down => "bad",
        },
    )
}

fn when(ms: u64) -> String {
    if ms == 0 {
        return "—".to_string();
    }
    match jiff::Timestamp::from_millisecond(ms as i64) {
        Ok(t) => t.strftime("%Y-%m-%d %H:%M:%SZ").to_string(),
        Err(_) => ms.to_string(),
    }
}

fn bytes(n: u64) -> String {
    const U: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let (mut v, mut u) = (n as f64, 0);
    while v >= 1024.0 && u < U.len() - 1 {
        v /= 1024.0;
        u += 1;
    }
    if u == 0 {
        format!("{n} B")
    } else {
        format!("{v:.1} {}", U[u])
    }
}

fn is_admin(s: &Session) -> bool {
    s.role == herd_core::config::web::WebRole::Admin
}

fn overview(o: &mut String, st: &State, snap: &Snapshot, s: &Session) {
    let count = |x: Standing| {
        snap.services
            .iter()
            .filter(|v| snapshot::standing(v) == x)
            .count()
    };
    let _ = write!(
        o,
        "<section class=\"cards\"><div class=\"card\"><h2>Services</h2><p class=\"big\">\
         <span class=\"ok\" id=\"svc-up\">{} up</span> · <span class=\"warn\">{} degraded</span> · <span class=\"bad\">{} down</span></p></div>\
         <div class=\"card\"><h2>Open alerts</h2><p class=\"big\" id=\"alerts-open\">{}</p></div>\
         <div class=\"card\"><h2>Directors</h2><p class=\"big\">{}</p></div></section>",
        count(Standing::Up),
        count(Standing::Degraded),
        count(Standing::Down),
        snapshot::open_alerts(snap).len(),
        if snap.vrrp.is_empty() {
            "standalone".to_string()
        } else {
            snap.vrrp
                .iter()
                .map(|v| format!("{} {}", esc(&v.name), esc(&v.state)))
                .collect::<Vec<_>>()
                .join(", ")
        }
    );
    o.push_str("<section><h2>Virtual services</h2><div class=\"scroll\"><table><thead><tr><th>State</th><th>Service</th><th>Real servers in service</th><th>ActiveConn</th><th>Conn/s</th></tr></thead><tbody>");
    for v in &snap.services {
        let reals: Vec<_> = v.reals.iter().filter(|r| !r.sorry && !r.draining).collect();
        let up = reals.iter().filter(|r| snapshot::in_service(r)).count();
        let active: u32 = v.reals.iter().map(|r| r.active_conns).sum();
        let _ = write!(
            o,
            "<tr><td>{}</td><td><a href=\"/services\">{}</a> <small>{}</small></td><td>{up} / {}</td><td>{active}</td><td>{}</td></tr>",
            standing_badge(snapshot::standing(v)),
            esc(&snapshot::service_label(v)),
            esc(&v.spec.key.to_string()),
            reals.len(),
            v.rates.cps
        );
    }
    if snap.services.is_empty() {
        o.push_str("<tr><td colspan=\"5\">No virtual services.</td></tr>");
    }
    o.push_str("</tbody></table></div></section>");
    vrrp(o, snap, s);
    let open = snapshot::open_alerts(snap);
    o.push_str("<section><h2>Open alerts</h2>");
    if open.is_empty() {
        o.push_str("<p class=\"muted\">None: every checked target passes.</p>");
    } else {
        alert_table(o, &open, s, "/");
    }
    o.push_str("</section><section><h2>Recent actions</h2>");
    let recent = st.audit.recent();
    if recent.is_empty() {
        o.push_str("<p class=\"muted\">None since the daemon started.</p>");
    } else {
        o.push_str("<div class=\"scroll\"><table><thead><tr><th>Time</th><th>User</th><th>Event</th><th>Detail</th><th>Result</th></tr></thead><tbody>");
        for e in recent.iter().rev().take(10) {
            let _ = write!(
                o,
                "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
                when(e.time_ms),
                esc(&e.user),
                esc(&e.event),
                esc(&e.detail),
                if e.ok {
                    badge("ok", "ok")
                } else {
                    badge(&e.error, "bad")
                }
            );
        }
        o.push_str("</tbody></table></div>");
    }
    o.push_str("</section>");
}

fn vrrp(o: &mut String, snap: &Snapshot, s: &Session) {
    o.push_str("<section><h2>Directors (VRRP)</h2>");
    if snap.vrrp.is_empty() {
        o.push_str(
            "<p class=\"muted\">No VRRP instances: this director stands alone.</p></section>",
        );
        return;
    }
    o.push_str("<div class=\"scroll\"><table><thead><tr><th>Instance</th><th>Interface</th><th>VRID</th><th>State</th><th>Priority</th><th>Master</th><th>VIPs</th><th></th></tr></thead><tbody>");
    for v in &snap.vrrp {
        let state_class = match v.state.as_str() {
            "master" => "ok",
            "backup" => "",
            _ => "bad",
        };
        let action = if !is_admin(s) {
            String::new()
        } else if v.standby {
            let a = Action::Resume {
                instances: vec![v.name.clone()],
            };
            button(
                s,
                &a,
                &[("op", "resume".into()), ("instance", v.name.clone())],
                "Resume",
                "",
                "/",
            )
        } else if v.state == "master" {
            let a = Action::Failover {
                instances: vec![v.name.clone()],
            };
            button(
                s,
                &a,
                &[("op", "failover".into()), ("instance", v.name.clone())],
                "Fail over",
                "warn",
                "/",
            )
        } else {
            String::new()
        };
        let _ = write!(
            o,
            "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}{}</td><td>{} <small>(configured {})</small></td><td>{}</td><td>{}</td><td>{action}</td></tr>",
            esc(&v.name),
            esc(&v.interface),
            v.vrid,
            badge(&v.state, state_class),
            if v.standby { " standby" } else { "" },
            v.priority,
            v.configured_priority,
            esc(v.master.as_deref().unwrap_or("—")),
            esc(&v.vips.join(", ")),
        );
    }
    o.push_str("</tbody></table></div></section>");
}

fn svc_field(v: &ServiceStatus) -> String {
    format!(
        "{} {}",
        v.spec.key.protocol.ipvs_name().to_lowercase(),
        v.spec.key.address
    )
}

fn services(o: &mut String, snap: &Snapshot, s: &Session, h: &history::History) {
    if snap.services.is_empty() {
        o.push_str("<p class=\"muted\">No virtual services.</p>");
    }
    let empty = Default::default();
    for v in &snap.services {
        let key = v.spec.key.to_string();
        let _ = write!(
            o,
            "<section class=\"svc\" data-service=\"{}\"><h2>{} {} <small>{}{}</small> {}</h2>\
             <p class=\"stats\">{} conns · in {} · out {} · {} conn/s · in {}/s, {} pkt/s · out {}/s, {} pkt/s {}</p>",
            esc(&key),
            esc(&key),
            esc(&v.spec.scheduler.to_string()),
            esc(v.spec.name.as_deref().unwrap_or("")),
            v.spec
                .persistence
                .map(|p| format!(" · persistent {} s", p.timeout))
                .unwrap_or_default(),
            standing_badge(snapshot::standing(v)),
            v.stats.conns,
            bytes(v.stats.bytes_in),
            bytes(v.stats.bytes_out),
            v.rates.cps,
            bytes(v.rates.bps_in),
            v.rates.pps_in,
            bytes(v.rates.bps_out),
            v.rates.pps_out,
            sparkline(h.cps.get(&key).unwrap_or(&empty), "connections per second"),
        );
        o.push_str("<div class=\"scroll\"><table class=\"reals\"><thead><tr><th>RemoteAddress:Port</th><th>Forward</th><th>Weight</th><th>ActiveConn</th><th>InActConn</th><th>Conns</th><th>Conn/s</th><th>In · out /s</th><th>Health</th><th>State</th><th>Last 10 min</th>");
        if is_admin(s) {
            o.push_str("<th>Actions</th>");
        }
        o.push_str("</tr></thead><tbody>");
        for r in &v.reals {
            let addr = r.spec.address;
            let (health, hclass) = match r.health {
                RealHealth::Up => ("up", "ok"),
                RealHealth::Quiesced => ("failing (quiesced)", "bad"),
                RealHealth::Removed => ("failing (removed)", "bad"),
            };
            let state = if r.sorry {
                badge("sorry server", "warn")
            } else if r.draining {
                badge("removed, draining", "warn")
            } else {
                match r.admin {
                    AdminState::Enabled => badge("enabled", "ok"),
                    AdminState::Draining => badge("draining", "warn"),
                    AdminState::Disabled => badge("disabled", "bad"),
                }
            };
            let _ = write!(
                o,
                "<tr data-real=\"{addr}\"><td>{addr}</td><td>{}</td><td class=\"num weight\">{}</td><td class=\"num active\">{}</td><td class=\"num inactive\">{}</td><td class=\"num conns\">{}</td><td class=\"num\">{}</td><td class=\"num\">{} · {}</td><td>{}</td><td class=\"state\">{state}{}</td><td>{}</td>",
                r.spec.forward.ipvs_name(),
                if r.configured_weight != r.spec.weight && !r.sorry {
                    format!(
                        "{} <small title=\"configured weight\">(set {})</small>",
                        r.spec.weight, r.configured_weight
                    )
                } else {
                    r.spec.weight.to_string()
                },
                r.active_conns,
                r.inactive_conns,
                r.stats.conns,
                r.rates.cps,
                bytes(r.rates.bps_in),
                bytes(r.rates.bps_out),
                badge(health, hclass),
                if r.overloaded { " overloaded" } else { "" },
                sparkline(
                    h.cps.get(&history::real_key(&v.spec.key, addr)).unwrap_or(&empty),
                    "connections per second"
                ),
            );
            if is_admin(s) {
                o.push_str("<td class=\"actions\">");
                if !r.sorry && !r.draining {
                    real_actions(o, s, v, r);
                }
                o.push_str("</td>");
            }
            o.push_str("</tr>");
        }
        o.push_str("</tbody></table></div></section>");
    }
}

fn real_actions(o: &mut String, s: &Session, v: &ServiceStatus, r: &herd_core::api::RealStatus) {
    let service = v.spec.key;
    let real = r.spec.address;
    let fields = |state: &str| {
        vec![
            ("op", "state".to_string()),
            ("service", svc_field(v)),
            ("real", real.to_string()),
            ("state", state.to_string()),
        ]
    };
    for (state, label, class) in [
        (AdminState::Draining, "Drain", "warn"),
        (AdminState::Disabled, "Disable", "bad"),
        (AdminState::Enabled, "Enable", ""),
    ] {
        if r.admin != state {
            let a = Action::RealState {
                service,
                real,
                state,
            };
            o.push_str(&button(
                s,
                &a,
                &fields(state.as_str()),
                label,
                class,
                "/services",
            ));
        }
    }
    let a = Action::Weight {
        service,
        real,
        weight: 0,
    };
    let confirm = a.describe().replace(" to 0", " to {weight}");
    let _ = write!(
        o,
        "<form method=\"post\" action=\"/action\" class=\"inline weight\" data-confirm=\"{}?\">{}\
         <input type=\"hidden\" name=\"op\" value=\"weight\"><input type=\"hidden\" name=\"service\" value=\"{}\">\
         <input type=\"hidden\" name=\"real\" value=\"{real}\"><input type=\"hidden\" name=\"back\" value=\"/services\">\
         <input type=\"number\" name=\"weight\" min=\"0\" max=\"65535\" required aria-label=\"weight\" placeholder=\"weight\">\
         <button>Set</button></form>",
        esc(&confirm),
        csrf(s),
        esc(&svc_field(v)),
    );
}

/// Health targets name a real server by `ip:port` or by `ip`.
fn targets_of(
    snap: &Snapshot,
    real: std::net::SocketAddr,
) -> Vec<(&str, &herd_core::api::HealthTargetStatus)> {
    let (full, ip) = (real.to_string(), real.ip().to_string());
    let mut v = Vec::new();
    for c in &snap.checks {
        for t in &c.targets {
            if t.target == full || t.target == ip {
                v.push((c.name.as_str(), t));
            }
        }
    }
    v
}

fn reals(o: &mut String, snap: &Snapshot, h: &history::History) {
    let empty = Default::default();
    let mut any = false;
    for v in &snap.services {
        for r in v.reals.iter().filter(|r| !r.sorry) {
            any = true;
            let addr = r.spec.address;
            let _ = write!(
                o,
                "<section class=\"real\"><h2>{addr} <small>of {} ({})</small> {}</h2>",
                esc(&v.spec.key.to_string()),
                esc(&snapshot::service_label(v)),
                if snapshot::in_service(r) {
                    badge("in service", "ok")
                } else {
                    badge("out of service", "bad")
                },
            );
            let checks = targets_of(snap, addr);
            if checks.is_empty() {
                o.push_str("<p class=\"muted\">Not checked by the health monitor.</p>");
            } else {
                o.push_str("<div class=\"scroll\"><table><thead><tr><th>Check</th><th>State</th><th>Since</th><th>Last result</th><th>Latency</th><th>Latency, last 10 min (ms)</th></tr></thead><tbody>");
                for (c, t) in &checks {
                    let class = match t.status.as_str() {
                        "up" => "ok",
                        "down" => "bad",
                        _ => "",
                    };
                    let _ = write!(
                        o,
                        "<tr><td>{}</td><td>{}{}{}</td><td>{}</td><td>{} {}<br><small>{}</small></td><td class=\"num\">{}</td><td>{}</td></tr>",
                        esc(c),
                        badge(&t.status, class),
                        if t.flapping { " flapping" } else { "" },
                        if t.silenced.is_some() { " silenced" } else { "" },
                        when(t.since_ms),
                        esc(t.verdict.as_deref().unwrap_or("—")),
                        esc(&t.summary),
                        t.last_ms.map(when).unwrap_or_default(),
                        t.latency_us.map(|u| format!("{:.1} ms", u as f64 / 1000.0)).unwrap_or_default(),
                        sparkline(h.latency.get(&history::check_key(c, &t.target)).unwrap_or(&empty), "check latency"),
                    );
                }
                o.push_str("</tbody></table></div>");
            }
            let (full, ip) = (addr.to_string(), addr.ip().to_string());
            let events: Vec<_> = snap
                .history
                .iter()
                .rev()
                .filter(|e| e.targets.split(' ').any(|t| t == full || t == ip))
                .take(10)
                .collect();
            if !events.is_empty() {
                o.push_str("<details><summary>History</summary><ul class=\"events\">");
                for e in events {
                    let _ = write!(
                        o,
                        "<li>{} <b>{}</b> {}: {}</li>",
                        when(e.time_ms),
                        esc(&e.event),
                        esc(&e.check),
                        esc(&e.detail)
                    );
                }
                o.push_str("</ul></details>");
            }
            o.push_str("</section>");
        }
    }
    if !any {
        o.push_str("<p class=\"muted\">No real servers.</p>");
    }
}

fn alert_table(o: &mut String, open: &[snapshot::OpenAlert], s: &Session, back: &str) {
    o.push_str("<div class=\"scroll\"><table><thead><tr><th>Check</th><th>Target</th><th>Down since</th><th>Summary</th><th></th></tr></thead><tbody>");
    for a in open {
        let action = if a.silenced.is_some() {
            badge("silenced", "muted")
        } else if is_admin(s) {
            let act = Action::Ack {
                check: a.check.clone(),
                target: Some(a.target.clone()),
                reason: String::new(),
            };
            button(
                s,
                &act,
                &[
                    ("op", "ack".into()),
                    ("check", a.check.clone()),
                    ("target", a.target.clone()),
                ],
                "Acknowledge",
                "",
                back,
            )
        } else {
            String::new()
        };
        let _ = write!(
            o,
            "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{action}</td></tr>",
            esc(&a.check),
            esc(&a.target),
            when(a.since_ms),
            esc(&a.summary)
        );
    }
    o.push_str("</tbody></table></div>");
}

fn alerts(o: &mut String, snap: &Snapshot, s: &Session) {
    let open = snapshot::open_alerts(snap);
    o.push_str("<section><h2>Open alerts</h2>");
    if open.is_empty() {
        o.push_str("<p class=\"muted\">None: every checked target passes.</p>");
    } else {
        alert_table(o, &open, s, "/alerts");
    }
    o.push_str("</section><section><h2>Silences</h2>");
    if snap.silences.is_empty() {
        o.push_str("<p class=\"muted\">None in force.</p>");
    } else {
        o.push_str("<div class=\"scroll\"><table><thead><tr><th>#</th><th>Check</th><th>Target</th><th>Until</th><th>By</th><th>Reason</th><th></th></tr></thead><tbody>");
        for x in &snap.silences {
            let lift = if is_admin(s) {
                button(
                    s,
                    &Action::Unsilence { id: x.id },
                    &[("op", "unsilence".into()), ("id", x.id.to_string())],
                    "Lift",
                    "",
                    "/alerts",
                )
            } else {
                String::new()
            };
            let _ = write!(
                o,
                "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{lift}</td></tr>",
                x.id,
                esc(x.check.as_deref().unwrap_or("(any)")),
                esc(x.target.as_deref().unwrap_or("(any)")),
                {
                    let until = x.until_ms.map(when);
                    match (until, x.until_recovery) {
                        (Some(t), true) => format!("{t}, or recovery"),
                        (Some(t), false) => t,
                        (None, true) => "recovery".into(),
                        (None, false) => "lifted by hand".into(),
                    }
                },
                esc(&x.author),
                esc(&x.reason)
            );
        }
        o.push_str("</tbody></table></div>");
    }
    o.push_str("</section><section><h2>History</h2>");
    if snap.history.is_empty() {
        o.push_str("<p class=\"muted\">Nothing yet.</p>");
    } else {
        o.push_str("<div class=\"scroll\"><table><thead><tr><th>Time</th><th>Event</th><th>Check</th><th>Targets</th><th>Detail</th></tr></thead><tbody>");
        for e in snap.history.iter().rev().take(50) {
            let _ = write!(
                o,
                "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
                when(e.time_ms),
                esc(&e.event),
                esc(&e.check),
                esc(&e.targets),
                esc(&e.detail)
            );
        }
        o.push_str("</tbody></table></div>");
    }
    o.push_str("</section><section><h2>Downtime log</h2>");
    if snap.downtime.is_empty() {
        o.push_str("<p class=\"muted\">No outages recorded.</p>");
    } else {
        o.push_str("<div class=\"scroll\"><table><thead><tr><th>Check</th><th>Target</th><th>Down</th><th>Up</th><th>Lasted</th><th>Summary</th></tr></thead><tbody>");
        for d in snap.downtime.iter().rev() {
            let _ = write!(
                o,
                "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td class=\"num\">{} s</td><td>{}</td></tr>",
                esc(&d.check),
                esc(&d.target),
                when(d.down_ms),
                when(d.up_ms),
                d.up_ms.saturating_sub(d.down_ms) / 1000,
                esc(&d.summary)
            );
        }
        o.push_str("</tbody></table></div>");
    }
    o.push_str("</section>");
}

fn nodes(o: &mut String, st: &State, snap: &Snapshot) {
    o.push_str("<section><h2>This node</h2><table class=\"kv\"><tbody>");
    let mut row = |k: &str, v: String| {
        let _ = write!(o, "<tr><th>{}</th><td>{}</td></tr>", esc(k), esc(&v));
    };
    row("Name", st.info().node);
    row("Version", st.info().version.to_string());
    if let Some(d) = &snap.status {
        row("Uptime", format!("{} s", d.uptime_secs));
        row(
            "Data plane",
            format!("{} ({} workers)", d.data_plane, d.workers),
        );
        row(
            "Config",
            d.config_path.clone().unwrap_or_else(|| "(embedded)".into()),
        );
        row("Reloads", d.reloads.to_string());
        row("API version", d.api_version.to_string());
    }
    row("Dashboard sessions", {
        let idle = st.cfg().session_timeout;
        st.sessions
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .live(std::time::Instant::now(), idle)
            .to_string()
    });
    o.push_str("</tbody></table></section><section><h2>Agents</h2>");
    if snap.nodes.is_empty() {
        o.push_str("<p class=\"muted\">No [nodes] in the config.</p>");
    } else {
        o.push_str("<div class=\"scroll\"><table class=\"nodes\"><thead><tr><th>Node</th><th>Agent</th><th>State</th><th>Version</th><th>Up for</th><th>Load</th><th>Checked</th></tr></thead><tbody>");
        for n in &snap.nodes {
            let me = snap.this_node.as_deref() == Some(n.name.as_str());
            let _ = write!(
                o,
                "<tr data-node=\"{}\"><td>{}{}</td><td>{}</td><td>{}</td><td>{}</td><td class=\"num\">{}</td><td>{}</td><td>{}</td></tr>",
                esc(&n.name),
                esc(&n.name),
                if me { " <small>(this node)</small>" } else { "" },
                esc(&n.address),
                if n.up {
                    badge("up", "ok")
                } else if n.checked_ms == 0 {
                    badge("not pinged", "muted")
                } else {
                    badge("unreachable", "bad")
                } + &format!(" <small>{}</small>", esc(&n.error)),
                esc(n.version.as_deref().unwrap_or("—")),
                n.uptime_secs.map(|s| format!("{s} s")).unwrap_or_default(),
                n.load
                    .map(|l| format!("{:.2} {:.2} {:.2}", l[0], l[1], l[2]))
                    .unwrap_or_default(),
                when(n.checked_ms),
            );
        }
        o.push_str("</tbody></table></div>");
    }
    o.push_str("</section>");
    let _ = write!(
        o,
        "<section><h2>Directors</h2><p>{}</p></section>",
        if snap.vrrp.is_empty() {
            "No VRRP instances on this node.".to_string()
        } else {
            esc(&snap
                .vrrp
                .iter()
                .map(|v| format!("{} ({}, VRID {}): {}", v.name, v.interface, v.vrid, v.state))
                .collect::<Vec<_>>()
                .join("; "))
        }
    );
}

/// `GET /login`, or the form again after a failure (`next` from the form then).
pub fn login_page(st: &Arc<State>, req: &Req, error: Option<(StatusCode, &str)>) -> Resp {
    let next = local_path(req.param("next"));
    if error.is_none() && session(st, req).is_some() {
        return redirect(&next);
    }
    login_form_page(st, &next, error)
}

fn login_form_page(st: &State, next: &str, error: Option<(StatusCode, &str)>) -> Resp {
    let (status, err) = match error {
        Some((code, e)) => (
            code,
            format!("<p class=\"notice bad\" role=\"alert\">{}</p>", esc(e)),
        ),
        None => (StatusCode::OK, String::new()),
    };
    html(
        status,
        format!(
            "{}<body class=\"bare\"><main class=\"narrow\"><h1>herd</h1><p class=\"muted\">{}</p>{err}\
             <form method=\"post\" action=\"/login\" class=\"stack\">\
             <input type=\"hidden\" name=\"next\" value=\"{}\">\
             <label>User <input name=\"user\" id=\"user\" autocomplete=\"username\" required autofocus></label>\
             <label>Password <input name=\"password\" id=\"password\" type=\"password\" autocomplete=\"current-password\" required></label>\
             <button id=\"login\">Log in</button></form></main></body></html>",
            head("herd · log in"),
            esc(&st.info().node),
            esc(next)
        ),
    )
}

pub async fn login_form(st: &Arc<State>, req: &Req) -> Resp {
    if !req.same_origin() {
        return html(
            StatusCode::FORBIDDEN,
            message_page("Refused", "Cross-origin login refused."),
        );
    }
    let f = form_pairs(&String::from_utf8_lossy(&req.body));
    let get = |k: &str| f.iter().find(|(n, _)| n == k).map(|(_, v)| v.clone());
    let (user, pw) = (
        get("user").unwrap_or_default(),
        get("password").unwrap_or_default(),
    );
    match check_login(st, req.ip(), &user, &pw).await {
        LoginOutcome::Ok { token, .. } => http::with_header(
            redirect(&local_path(get("next"))),
            "set-cookie",
            &http::session_cookie(req, &token),
        ),
        LoginOutcome::Refused => login_form_page(
            st,
            &local_path(get("next")),
            Some((StatusCode::UNAUTHORIZED, "Wrong user name or password.")),
        ),
        LoginOutcome::Wait(w) => http::with_header(
            login_form_page(
                st,
                &local_path(get("next")),
                Some((
                    StatusCode::TOO_MANY_REQUESTS,
                    &format!(
                        "Too many failed logins: try again in {} s.",
                        w.as_secs().max(1)
                    ),
                )),
            ),
            "retry-after",
            &w.as_secs().max(1).to_string(),
        ),
    }
}

pub fn logout_form(st: &Arc<State>, req: &Req) -> Resp {
    let Some((token, s)) = session(st, req) else {
        return redirect("/login");
    };
    let f = form_pairs(&String::from_utf8_lossy(&req.body));
    let t = f
        .iter()
        .find(|(k, _)| k == "_csrf")
        .map(|(_, v)| v.as_str());
    if !req.same_origin() || !t.is_some_and(|t| crate::auth::same(t, &s.csrf)) {
        return html(
            StatusCode::FORBIDDEN,
            message_page("Refused", "Missing or wrong CSRF token."),
        );
    }
    logout(st, &token, &s, req.ip());
    http::with_header(redirect("/login"), "set-cookie", &http::clear_cookie(req))
}

/// An action from a form's fields.
fn form_action(f: &[(String, String)]) -> Result<Action, String> {
    let get = |k: &str| {
        f.iter()
            .find(|(n, _)| n == k)
            .map(|(_, v)| v.trim().to_string())
    };
    let opt = |k: &str| get(k).filter(|v| !v.is_empty());
    let service = || {
        let v = get("service").unwrap_or_default();
        let (p, a) = v.split_once(' ').ok_or(format!("bad service {v:?}"))?;
        service_key(p, a)
    };
    let real = |k: &herd_core::model::ServiceKey| {
        let r = get("real").unwrap_or_default();
        herd_core::config::parse_real_addr(&r, k.address.port())
            .map_err(|e| format!("real server {r:?}: {e}"))
    };
    let instances = || opt("instance").into_iter().collect::<Vec<_>>();
    match get("op").as_deref() {
        Some("state") => {
            let service = service()?;
            let state = match get("state").as_deref() {
                Some("enabled") => AdminState::Enabled,
                Some("draining") => AdminState::Draining,
                Some("disabled") => AdminState::Disabled,
                s => return Err(format!("unknown state {s:?}")),
            };
            Ok(Action::RealState {
                real: real(&service)?,
                service,
                state,
            })
        }
        Some("weight") => {
            let service = service()?;
            let w = get("weight").unwrap_or_default();
            let weight = w
                .parse()
                .map_err(|_| format!("weight {w:?} is not a number"))?;
            Ok(Action::Weight {
                real: real(&service)?,
                service,
                weight,
            })
        }
        Some("silence") => {
            let secs = match opt("duration") {
                Some(d) => Some(
                    herd_core::config::parse_duration(&d)
                        .map_err(|e| e.to_string())?
                        .as_secs()
                        .max(1),
                ),
                None => None,
            };
            Ok(Action::Silence {
                check: opt("check"),
                target: opt("target"),
                secs,
                until_recovery: get("until_recovery").as_deref() == Some("1"),
                reason: get("reason").unwrap_or_default(),
            })
        }
        Some("ack") => Ok(Action::Ack {
            check: opt("check").ok_or("which check?")?,
            target: opt("target"),
            reason: get("reason").unwrap_or_default(),
        }),
        Some("unsilence") => {
            let id = get("id").unwrap_or_default();
            Ok(Action::Unsilence {
                id: id.parse().map_err(|_| format!("silence {id:?}"))?,
            })
        }
        Some("failover") => Ok(Action::Failover {
            instances: instances(),
        }),
        Some("resume") => Ok(Action::Resume {
            instances: instances(),
        }),
        Some("reload") => Ok(Action::Reload),
        op => Err(format!("unknown action {op:?}")),
    }
}

/// `POST /action`: a dashboard form. Without `confirmed=1` it answers with a confirmation page
/// (the JavaScript asks in a dialog and sets it); then it acts and goes back to the page.
pub async fn action_form(st: &Arc<State>, req: &Req) -> Resp {
    let Some((_, s)) = session(st, req) else {
        return redirect("/login");
    };
    let f = form_pairs(&String::from_utf8_lossy(&req.body));
    let get = |k: &str| f.iter().find(|(n, _)| n == k).map(|(_, v)| v.clone());
    let what = format!("{} form", get("op").unwrap_or_default());
    if let Err(r) = may_act_audited(st, req, &s, get("_csrf").as_deref(), &what) {
        let why = if is_admin(&s) {
            "Missing or wrong CSRF token: reload the page and try again."
        } else {
            "Your role is read-only."
        };
        let mut page = html(r.status(), message_page("Refused", why));
        *page.status_mut() = r.status();
        return page;
    }
    let back = local_path(get("back"));
    let a = match form_action(&f) {
        Ok(a) => a,
        Err(e) => return redirect(&format!("{back}?err={}", url_enc(&e))),
    };
    if get("confirmed").as_deref() != Some("1") {
        let mut hidden = String::new();
        for (k, v) in &f {
            let _ = write!(
                hidden,
                "<input type=\"hidden\" name=\"{}\" value=\"{}\">",
                esc(k),
                esc(v)
            );
        }
        return html(
            StatusCode::OK,
            format!(
                "{}<body class=\"bare\"><main class=\"narrow\"><h1>Confirm</h1><p>{}?</p>\
                 <form method=\"post\" action=\"/action\">{hidden}<input type=\"hidden\" name=\"confirmed\" value=\"1\">\
                 <button class=\"warn\">Confirm</button> <a href=\"{}\">Cancel</a></form></main></body></html>",
                head("herd · confirm"),
                esc(&a.describe()),
                esc(&back)
            ),
        );
    }
    let what = a.describe();
    match perform(st, &s, req.ip(), a).await {
        herd_core::api::Response::Error(e) => {
            redirect(&format!("{back}?err={}", url_enc(&e.message)))
        }
        _ => redirect(&format!(
            "{back}?msg={}",
            url_enc(&format!("Done: {what}."))
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escaping() {
        assert_eq!(esc("a\rb\nc"), "a b c");
        assert_eq!(
            esc("<a href=\"x\">'&'</a>"),
            "&lt;a href=&quot;x&quot;&gt;&#39;&amp;&#39;&lt;/a&gt;"
        );
        assert_eq!(url_enc("Done: a b/c?"), "Done%3A%20a%20b/c%3F");
    }

    #[test]
    fn forms_become_actions() {
        let f = |s: &str| form_pairs(s);
        assert_eq!(
            form_action(&f(
                "op=state&service=tcp+127.0.0.1%3A80&real=127.0.0.2&state=draining"
            ))
            .unwrap(),
            Action::RealState {
                service: service_key("tcp", "127.0.0.1:80").unwrap(),
                real: "127.0.0.2:80".parse().unwrap(),
                state: AdminState::Draining
            }
        );
        assert_eq!(
            form_action(&f("op=silence&check=web&duration=30m&reason=deploy")).unwrap(),
            Action::Silence {
                check: Some("web".into()),
                target: None,
                secs: Some(1800),
                until_recovery: false,
                reason: "deploy".into()
            }
        );
        assert!(form_action(&f(
            "op=weight&service=tcp+127.0.0.1%3A80&real=127.0.0.2&weight=x"
        ))
        .is_err());
        assert!(form_action(&f(
            "op=state&service=sctp+127.0.0.1%3A80&real=127.0.0.2&state=enabled"
        ))
        .is_err());
        assert!(form_action(&f("op=rm-rf")).is_err());
        assert_eq!(
            form_action(&f("op=failover&instance=")).unwrap(),
            Action::Failover { instances: vec![] }
        );
    }
}
