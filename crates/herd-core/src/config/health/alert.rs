//! One `[[health.check.alert]]`: the event, exactly one sink, the period and the repetition
//! rules.

use std::path::PathBuf;
use std::time::Duration;

use herd_rules::period::Period;
use herd_rules::spec::{AlertOn, AlertSpec, Sink};
use toml::Spanned;

use super::super::error::{ConfigError, Lines};
use super::super::smtp::{self, RawAddresses};
use super::super::values::{duration, RawDuration};
use super::{command, parse_http_url, RawAlert, DEFAULT_ALERT_TIMEOUT};

/// Validates one alert of a check; `None` if it has errors (they are in `errs`).
pub(super) fn alert(
    l: &Lines<'_>,
    key: &str,
    ra: &Spanned<RawAlert>,
    have_smtp: bool,
    errs: &mut Vec<ConfigError>,
) -> Option<AlertSpec> {
    let r = ra.get_ref();
    let before = errs.len();
    let on = match r.on.as_ref().map(|s| s.get_ref().as_str()) {
        None | Some("down") => AlertOn::Down,
        Some("up") => AlertOn::Up,
        Some(other) => {
            errs.push(l.err(
                r.on.as_ref(),
                format!("{key}.on"),
                format!("unknown event {other:?} (expected down or up)"),
            ));
            AlertOn::Down
        }
    };
    let sink = sink(l, key, ra, have_smtp, errs);
    let period = match &r.period {
        None => Period::always(),
        Some(p) => match Period::parse(p.get_ref()) {
            Ok(p) => p,
            Err(e) => {
                errs.push(l.err(Some(p), format!("{key}.period"), e));
                Period::always()
            }
        },
    };
    let (every, within, timeout, after, max) = repeat_rules(l, key, ra, on, errs);
    if errs.len() != before {
        return None;
    }
    Some(AlertSpec {
        on,
        sink,
        period,
        every,
        after,
        within,
        max,
        timeout,
    })
}

/// Exactly one of `exec`, `webhook`, `email` or `log = true`.
fn sink(
    l: &Lines<'_>,
    key: &str,
    ra: &Spanned<RawAlert>,
    have_smtp: bool,
    errs: &mut Vec<ConfigError>,
) -> Sink {
    let r = ra.get_ref();
    let sinks = usize::from(r.exec.is_some())
        + usize::from(r.webhook.is_some())
        + usize::from(r.email.is_some())
        + usize::from(r.log.unwrap_or(false));
    if sinks != 1 {
        errs.push(l.err(
            Some(ra),
            key.to_string(),
            "needs exactly one of exec, webhook, email or log = true",
        ));
        Sink::Log
    } else if let Some(cmd) = &r.exec {
        match command(cmd.get_ref()) {
            Ok((command, _)) => Sink::Exec { command },
            Err(e) => {
                errs.push(l.err(Some(cmd), format!("{key}.exec"), e));
                Sink::Log
            }
        }
    } else if let Some(url) = &r.webhook {
        webhook(l, key, r, url, errs)
    } else if let Some(to) = &r.email {
        email(l, key, r, to, have_smtp, errs)
    } else {
        Sink::Log
    }
}

/// A webhook sink; `tls-ca` for https:// URLs only.
fn webhook(
    l: &Lines<'_>,
    key: &str,
    r: &RawAlert,
    url: &Spanned<String>,
    errs: &mut Vec<ConfigError>,
) -> Sink {
    match parse_http_url(url.get_ref()) {
        Ok(u) => Sink::Webhook {
            url: url.get_ref().clone(),
            tls_ca: match &r.tls_ca {
                Some(ca) if !u.tls => {
                    errs.push(l.err(
                        Some(ca),
                        format!("{key}.tls-ca"),
                        "only for https:// webhooks",
                    ));
                    None
                }
                Some(ca) if ca.get_ref().is_empty() => {
                    errs.push(l.err(Some(ca), format!("{key}.tls-ca"), "an empty path"));
                    None
                }
                ca => ca.as_ref().map(|c| PathBuf::from(c.get_ref())),
            },
        },
        Err(e) => {
            errs.push(l.err(Some(url), format!("{key}.webhook"), e));
            Sink::Log
        }
    }
}

/// An e-mail sink, which needs `[health.smtp]`.
fn email(
    l: &Lines<'_>,
    key: &str,
    r: &RawAlert,
    to: &Spanned<RawAddresses>,
    have_smtp: bool,
    errs: &mut Vec<ConfigError>,
) -> Sink {
    if let Some(ca) = &r.tls_ca {
        errs.push(l.err(
            Some(ca),
            format!("{key}.tls-ca"),
            "only for https:// webhooks",
        ));
    }
    match smtp::addresses(to.get_ref()) {
        Ok(_) if !have_smtp => {
            errs.push(l.err(
                Some(to),
                format!("{key}.email"),
                "e-mail alerts need a [health.smtp] section (server, from)",
            ));
            Sink::Log
        }
        Ok(to) => Sink::Email { to },
        Err(e) => {
            errs.push(l.err(Some(to), format!("{key}.email"), e));
            Sink::Log
        }
    }
}

/// An alert's repetition rules and timeout: `(every, within, timeout, after, max)`; all but
/// the timeout are for down alerts only, and `within` needs `after`.
type RepeatRules = (Option<Duration>, Option<Duration>, Duration, u32, u32);

fn repeat_rules(
    l: &Lines<'_>,
    key: &str,
    ra: &Spanned<RawAlert>,
    on: AlertOn,
    errs: &mut Vec<ConfigError>,
) -> RepeatRules {
    let r = ra.get_ref();
    let mut opt_dur = |v: &Option<Spanned<RawDuration>>, k: &str| match v {
        None => None,
        Some(d) => match duration(d) {
            Ok(x) if !x.is_zero() => Some(x),
            Ok(_) => {
                errs.push(l.err(Some(d), format!("{key}.{k}"), "must be greater than zero"));
                None
            }
            Err(e) => {
                errs.push(l.err(Some(d), format!("{key}.{k}"), e));
                None
            }
        },
    };
    let every = opt_dur(&r.every, "every");
    let within = opt_dur(&r.within, "within");
    let timeout = opt_dur(&r.timeout, "timeout").unwrap_or(DEFAULT_ALERT_TIMEOUT);
    let mut num = |v: &Option<Spanned<i64>>, k: &str, lo: u32, default: u32| match v {
        None => default,
        Some(n) => match u32::try_from(*n.get_ref()) {
            Ok(x) if x >= lo && x <= 1_000_000 => x,
            _ => {
                errs.push(l.err(
                    Some(n),
                    format!("{key}.{k}"),
                    format!("{} is out of range {lo}..=1000000", n.get_ref()),
                ));
                default
            }
        },
    };
    let after = num(&r.after, "after", 1, 1);
    let max = num(&r.max, "max", 0, 0);
    if on == AlertOn::Up {
        for (set, k) in [
            (r.every.is_some(), "every"),
            (r.after.is_some(), "after"),
            (r.within.is_some(), "within"),
            (r.max.is_some(), "max"),
        ] {
            if set {
                errs.push(l.err(
                    Some(ra),
                    format!("{key}.{k}"),
                    "only for on = \"down\" alerts",
                ));
            }
        }
    }
    if r.within.is_some() && r.after.is_none() {
        errs.push(l.err(r.within.as_ref(), format!("{key}.within"), "needs after"));
    }
    (every, within, timeout, after, max)
}
