//! mon's client protocol (TCP, mon's port 2583), so Debian's `moncmd` and scripts built on
//! it work against herd: one command per line; the reply is data lines, then one line that
//! starts with a 3-digit code (`220` done, `520` refused).
//!
//! A mon group is a check's group (its service, host group or `hosts`); a mon service is the
//! check (a check's name is unique, so the group of `disable`/`enable`/`ack` is not
//! looked at). Supported: `list opstatus`, `list failures`, `list disabled`, `disable service G S`,
//! `enable service G S`, `ack G S TEXT`, `protid`, `version`, `quit`. And what `monshow`
//! asks: `list state|watch|deps|descriptions|group G` (no dependencies are listed: herd's
//! name checks, not mon expressions). Every command goes through the
//! same [`Request`]s as `herd health`, so both see and change the same state.

use std::sync::Arc;

use herd_core::api::{HealthCheckStatus, Request, Response};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::{TcpListener, TcpStream};

use crate::daemon::Daemon;

/// The longest command line taken.
const MAX_LINE: u64 = 4096;

/// What a command line asks for.
#[derive(Debug, PartialEq)]
enum Command {
    /// Answered without the daemon: the reply lines.
    Local(Vec<String>),
    Quit,
    /// A request, and how to render its response.
    Api(Request, Render),
}

#[derive(Debug, PartialEq, Clone)]
enum Render {
    Opstatus {
        failures_only: bool,
    },
    Disabled,
    /// `GROUP SERVICE` per check.
    Watch,
    /// `GROUP SERVICE DESCRIPTION` per check.
    Descriptions,
    /// `hostgroup G HOST...`: the targets of the checks of group G.
    Group(String),
    /// `220 {verb} completed`.
    Done(&'static str),
}

/// Parses one command line.
fn parse(line: &str) -> Command {
    let words: Vec<&str> = line.split_whitespace().collect();
    let refuse = |why: &str| Command::Local(vec![format!("520 {why}")]);
    match words.as_slice() {
        ["quit"] => Command::Quit,
        // Mon::Client's handshake; herd speaks one protocol, so any id is taken.
        ["protid", _] => Command::Local(vec!["220 protid completed".into()]),
        ["version"] => Command::Local(vec!["version 0".into(), "220 version completed".into()]),
        ["list", "opstatus", ..] => Command::Api(
            Request::HealthList,
            Render::Opstatus {
                failures_only: false,
            },
        ),
        ["list", "failures"] => Command::Api(
            Request::HealthList,
            Render::Opstatus {
                failures_only: true,
            },
        ),
        ["list", "disabled"] => Command::Api(Request::HealthList, Render::Disabled),
        ["list", "watch"] => Command::Api(Request::HealthList, Render::Watch),
        ["list", "descriptions"] => Command::Api(Request::HealthList, Render::Descriptions),
        ["list", "group", g] => Command::Api(Request::HealthList, Render::Group(g.to_string())),
        ["list", "state"] => Command::Local(vec![
            "scheduler running".into(),
            "220 list state completed".into(),
        ]),
        // herd's dependencies name checks, not mon expressions: none are listed.
        ["list", "deps"] => Command::Local(vec!["220 list deps completed".into()]),
        [verb @ ("disable" | "enable"), "service", _group, check] => Command::Api(
            Request::HealthDisable {
                check: check.to_string(),
                target: None,
                disabled: *verb == "disable",
            },
            Render::Done(if *verb == "disable" {
                "disable"
            } else {
                "enable"
            }),
        ),
        ["ack", _group, check, comment @ ..] => Command::Api(
            Request::HealthSilence {
                check: Some(check.to_string()),
                target: None,
                secs: None,
                // mon's ack holds until the service recovers.
                until_recovery: true,
                author: "mon client".into(),
                reason: comment.join(" "),
            },
            Render::Done("ack"),
        ),
        [] => refuse("empty command"),
        _ => refuse(&format!(
            "unknown or unsupported command: {line} (herd speaks list opstatus|failures|disabled, disable/enable service, ack, version, quit)"
        )),
    }
}

/// The reply lines of a response.
fn render(how: Render, resp: Response) -> Vec<String> {
    // One line per check, then `220 list VERB completed`.
    let listing = |lines: Vec<String>, verb: &str| {
        let mut out = lines;
        out.push(format!("220 list {verb} completed"));
        out
    };
    match (how, resp) {
        (_, Response::Error(e)) => vec![format!("520 {}", e.message)],
        (Render::Opstatus { failures_only }, Response::Health { checks, silences }) => {
            let lines = checks
                .iter()
                .filter(|c| !failures_only || failing(c))
                .map(|c| {
                    let acked = silences.iter().find(|s| {
                        s.check.as_deref() == Some(c.name.as_str()) && s.target.is_none()
                    });
                    opstatus(c, acked.map(|s| s.reason.as_str()))
                })
                .collect();
            listing(
                lines,
                if failures_only {
                    "failures"
                } else {
                    "opstatus"
                },
            )
        }
        (Render::Disabled, Response::Health { checks, .. }) => listing(
            checks
                .iter()
                .filter(|c| c.disabled)
                .map(|c| format!("watch {} service {}", esc(&c.group), esc(&c.name)))
                .collect(),
            "disabled",
        ),
        (Render::Watch, Response::Health { checks, .. }) => listing(
            checks
                .iter()
                .map(|c| format!("{} {}", esc(&c.group), esc(&c.name)))
                .collect(),
            "watch",
        ),
        (Render::Descriptions, Response::Health { checks, .. }) => listing(
            checks
                .iter()
                .map(|c| {
                    let what = format!("{} check of {}", c.kind, c.group);
                    format!("{} {} {}", esc(&c.group), esc(&c.name), esc(&what))
                })
                .collect(),
            "descriptions",
        ),
        (Render::Group(g), Response::Health { checks, .. }) => {
            let mut hosts: Vec<&str> = Vec::new();
            for c in checks.iter().filter(|c| c.group == g) {
                for t in &c.targets {
                    if !hosts.contains(&t.target.as_str()) {
                        hosts.push(&t.target);
                    }
                }
            }
            if hosts.is_empty() {
                return vec![format!("520 no group {g}")];
            }
            vec![
                format!("hostgroup {g} {}", hosts.join(" ")),
                "220 list group completed".into(),
            ]
        }
        (Render::Done(verb), _) => vec![format!("220 {verb} completed")],
        (_, other) => vec![format!("520 unexpected answer: {other:?}")],
    }
}

/// One `list opstatus` line: `group=G service=S opstatus=N ...`, values escaped as mon does.
fn opstatus(c: &HealthCheckStatus, ack: Option<&str>) -> String {
    let down: Vec<_> = c.targets.iter().filter(|t| t.status == "down").collect();
    let secs = |ms: Option<u64>| ms.map_or(0, |m| m / 1000);
    let last_check = c.targets.iter().filter_map(|t| t.last_ms).max();
    let last_failure = down.iter().map(|t| t.since_ms).max();
    let summary = match down.as_slice() {
        [] => c
            .targets
            .first()
            .map(|t| t.summary.clone())
            .unwrap_or_default(),
        f => f
            .iter()
            .map(|t| t.target.as_str())
            .collect::<Vec<_>>()
            .join(" "),
    };
    let detail: String = down
        .iter()
        .map(|t| format!("{}: {}\n", t.target, t.summary))
        .collect();
    let pairs = [
        ("group", c.group.clone()),
        ("service", c.name.clone()),
        ("opstatus", if down.is_empty() { "1" } else { "0" }.into()),
        ("exitval", if down.is_empty() { "0" } else { "1" }.into()),
        ("last_check", secs(last_check).to_string()),
        // Seconds to the next run (monshow's NEXT).
        ("timer", {
            let now = herd_health::monitor::wall_ms();
            let next = last_check.unwrap_or(now) + c.interval_ms;
            (next.saturating_sub(now) / 1000).to_string()
        }),
        ("last_failure", secs(last_failure).to_string()),
        ("interval", (c.interval_ms / 1000).max(1).to_string()),
        ("monitor", c.kind.clone()),
        ("ack", u8::from(ack.is_some()).to_string()),
        ("ackcomment", ack.unwrap_or_default().to_string()),
        ("disabled", u8::from(c.disabled).to_string()),
        ("last_summary", summary),
        ("last_detail", detail),
    ];
    pairs
        .iter()
        .map(|(k, v)| format!("{k}={}", esc(v)))
        .collect::<Vec<_>>()
        .join(" ")
}

/// Whether any target of the check is down (mon's opstatus 0).
fn failing(c: &HealthCheckStatus) -> bool {
    c.targets.iter().any(|t| t.status == "down")
}

/// mon's value escaping: anything but letters, digits and `_-.:/@` becomes `\xx` (hex).
fn esc(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"_-.:/@".contains(&b) {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("\\{b:02x}"));
        }
    }
    out
}

/// Accepts mon clients until the task is aborted.
pub async fn serve(daemon: Arc<Daemon>, listener: TcpListener) {
    loop {
        match listener.accept().await {
            Ok((stream, peer)) => {
                let d = daemon.clone();
                tokio::spawn(async move {
                    if let Err(e) = client(d, stream).await {
                        tracing::debug!(%peer, error = %e, "mon client connection ended");
                    }
                });
            }
            Err(e) => {
                tracing::warn!(error = %e, "mon client accept failed");
                tokio::time::sleep(std::time::Duration::from_millis(100)).await;
            }
        }
    }
}

async fn client(daemon: Arc<Daemon>, stream: TcpStream) -> std::io::Result<()> {
    let (rd, mut wr) = stream.into_split();
    let mut rd = BufReader::new(rd);
    let mut line = Vec::new();
    loop {
        line.clear();
        if (&mut rd)
            .take(MAX_LINE)
            .read_until(b'\n', &mut line)
            .await?
            == 0
        {
            return Ok(());
        }
        if !line.ends_with(b"\n") && line.len() as u64 == MAX_LINE {
            // Not cut into two commands: refused, and the connection closed.
            wr.write_all(b"520 command line too long\n").await?;
            return Ok(());
        }
        let text = String::from_utf8_lossy(&line).trim().to_string();
        let reply = match parse(&text) {
            Command::Quit => {
                wr.write_all(b"220 quitting\n").await?;
                return Ok(());
            }
            Command::Local(lines) => lines,
            Command::Api(req, how) => {
                let d = daemon.clone();
                let resp = tokio::task::spawn_blocking(move || d.handle(req))
                    .await
                    .map_err(std::io::Error::other)?;
                render(how, resp)
            }
        };
        let mut out = reply.join("\n");
        out.push('\n');
        wr.write_all(out.as_bytes()).await?;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn commands_map_to_requests() {
        assert_eq!(parse("quit"), Command::Quit);
        assert_eq!(
            parse("disable service web http"),
            Command::Api(
                Request::HealthDisable {
                    check: "http".into(),
                    target: None,
                    disabled: true
                },
                Render::Done("disable")
            )
        );
        match parse("ack web http kernel update tonight") {
            Command::Api(
                Request::HealthSilence {
                    check,
                    reason,
                    until_recovery,
                    ..
                },
                Render::Done("ack"),
            ) => {
                assert!(until_recovery, "mon's ack ends when the service recovers");
                assert_eq!(check.as_deref(), Some("http"));
                assert_eq!(reason, "kernel update tonight");
            }
            other => panic!("{other:?}"),
        }
        match parse("reset") {
            Command::Local(l) => assert!(l[0].starts_with("520 unknown"), "{l:?}"),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn values_are_escaped_like_mon() {
        assert_eq!(esc("127.0.0.1:80 down"), "127.0.0.1:80\\20down");
        assert_eq!(esc("a=b\n"), "a\\3db\\0a");
    }
}
