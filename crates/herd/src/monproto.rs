//! mon's client protocol (TCP, mon's port 2583), so Debian's `moncmd` and scripts built on
//! it work against herd: one command per line; the reply is data lines, then one line that
//! starts with a 3-digit code (`220` done, `520` refused, `530` login refused).
//!
//! A mon group is a check's group (its service, host group or `hosts`); a mon service is the
//! check (a check's name is unique, so the group of `disable`/`enable`/`ack` is not
//! looked at). Supported: `list opstatus`, `list failures`, `list disabled`, `disable service G S`,
//! `enable service G S`, `ack G S TEXT`, `login USER PASS`, `checkauth CMD`, `protid`,
//! `version`, `quit`. And what `monshow` asks: `list state|watch|deps|descriptions|group G`
//! (no dependencies are listed: herd's name checks, not mon expressions). Every command goes
//! through the same [`Request`]s as `herd health`, so both see and change the same state.
//!
//! Reading is open to every client, as in mon. Everything that changes state needs a `login`
//! on the connection first (`moncmd -a -l USER`), checked against the dashboard's users
//! (`[web.user.NAME]`, argon2id), and an `admin` among them: see [`auth`]. The connection
//! handling (cap, idle timeout, accept back-off) is in [`conn`].

pub mod auth;
mod conn;

pub use conn::{Accounts, Limits, Port};

use herd_core::api::{HealthCheckStatus, Request, Response};

/// The longest command line taken.
const MAX_LINE: u64 = 4096;

/// What a command line asks for.
#[derive(Debug, PartialEq)]
enum Command {
    /// Answered without the daemon: the reply lines.
    Local(Vec<String>),
    Quit,
    /// `login USER PASS` (the password is everything after the user name).
    Login {
        user: String,
        password: String,
    },
    /// `checkauth CMD`: may this connection run CMD?
    CheckAuth(String),
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

/// mon's commands that change its state (mon 1.3.6 checks these against `auth.cf`). A line
/// starting with one of them needs a login whether herd supports the command or not, so
/// that a client without one learns nothing but the refusal.
const WRITE_VERBS: &[&str] = &[
    "ack",
    "clear",
    "disable",
    "enable",
    "loadstate",
    "reload",
    "reset",
    "savestate",
    "set",
    "start",
    "stop",
    "term",
    "test",
];

/// Does the command line start with one of mon's state-changing commands (in any case, as
/// mon reads them)?
fn is_write_verb(line: &str) -> bool {
    line.split_whitespace()
        .next()
        .is_some_and(|v| WRITE_VERBS.contains(&v.to_ascii_lowercase().as_str()))
}

/// Does the request change anything? ([`Request::is_read`] lists what only reads.)
fn writes(req: &Request) -> bool {
    !req.is_read()
}

/// Parses one command line. The command word is read in any case, as mon does.
fn parse(line: &str) -> Command {
    let words: Vec<&str> = line.split_whitespace().collect();
    let Some((first, args)) = words.split_first() else {
        return refuse("empty command");
    };
    let verb = first.to_ascii_lowercase();
    match (verb.as_str(), args) {
        ("quit", []) => Command::Quit,
        ("login", _) => login(line),
        ("checkauth", [cmd, ..]) => Command::CheckAuth(cmd.to_ascii_lowercase()),
        // Mon::Client's handshake; herd speaks one protocol, so any id is taken.
        ("protid", [_]) => Command::Local(vec!["220 protid completed".into()]),
        ("version", []) => {
            Command::Local(vec!["version 0".into(), "220 version completed".into()])
        }
        ("list", [what, rest @ ..]) => list(what, rest),
        ("disable" | "enable", ["service", _group, check]) => {
            let disable = verb == "disable";
            Command::Api(
                Request::HealthDisable {
                    check: check.to_string(),
                    target: None,
                    disabled: disable,
                },
                Render::Done(if disable { "disable" } else { "enable" }),
            )
        }
        ("ack", [_group, check, comment @ ..]) => Command::Api(
            Request::HealthSilence {
                check: Some(check.to_string()),
                target: None,
                secs: None,
                // mon's ack holds until the service recovers.
                until_recovery: true,
                // Replaced by the logged-in user before the request is made.
                author: String::new(),
                reason: comment.join(" "),
            },
            Render::Done("ack"),
        ),
        _ => refuse(&format!(
            "unknown or unsupported command: {} (herd speaks list opstatus|failures|disabled, disable/enable service, ack, login, checkauth, version, quit)",
            printable(line)
        )),
    }
}

/// A client's text as it may be echoed in a reply: control characters (a NUL, a carriage
/// return, an escape sequence for the client's terminal) become `?`.
fn printable(s: &str) -> String {
    s.chars()
        .map(|c| if c.is_control() { '?' } else { c })
        .collect()
}

/// `520 WHY` as the only reply line.
fn refuse(why: &str) -> Command {
    Command::Local(vec![format!("520 {why}")])
}

/// The refusal of a `login` line without a user and a password.
const LOGIN_USAGE: &str = "530 login unsuccessful (login USER PASSWORD)";

/// `login USER PASS`: the password is the rest of the line after the user name (mon splits
/// the arguments in two the same way), so it may hold spaces. It is never echoed.
fn login(line: &str) -> Command {
    let args = line
        .trim_start()
        .split_once(char::is_whitespace)
        .map_or("", |(_, rest)| rest.trim_start());
    match args.split_once(char::is_whitespace) {
        Some((user, password)) if !password.trim().is_empty() => Command::Login {
            user: user.to_string(),
            password: password.trim_start().to_string(),
        },
        _ => Command::Local(vec![LOGIN_USAGE.into()]),
    }
}

/// `list WHAT ...`.
fn list(what: &str, rest: &[&str]) -> Command {
    let health = |how| Command::Api(Request::HealthList, how);
    match (what, rest) {
        ("opstatus", _) => health(Render::Opstatus {
            failures_only: false,
        }),
        ("failures", []) => health(Render::Opstatus {
            failures_only: true,
        }),
        ("disabled", []) => health(Render::Disabled),
        ("watch", []) => health(Render::Watch),
        ("descriptions", []) => health(Render::Descriptions),
        ("group", [g]) => health(Render::Group(g.to_string())),
        ("state", []) => Command::Local(vec![
            "scheduler running".into(),
            "220 list state completed".into(),
        ]),
        // herd's dependencies name checks, not mon expressions: none are listed.
        ("deps", []) => Command::Local(vec!["220 list deps completed".into()]),
        _ => refuse(&format!(
            "unknown or unsupported command: list {} (herd lists opstatus, failures, disabled, watch, descriptions, group G, state, deps)",
            printable(what)
        )),
    }
}

/// Runs the parser, the write classification and the renderer on arbitrary bytes, as a
/// client could send them (the fuzz target's entry point). Panics only if an invariant
/// breaks: a password echoed back, or a state change not classified as one.
pub fn fuzz_parse(bytes: &[u8]) {
    let text = String::from_utf8_lossy(bytes);
    let line = text.trim();
    let cmd = parse(line);
    match &cmd {
        Command::Local(lines) => {
            assert!(!lines.is_empty());
            assert!(
                lines.iter().all(|l| !l.chars().any(char::is_control)),
                "{lines:?}"
            );
            let verb = line.split_whitespace().next().unwrap_or_default();
            // A login's own refusal is a fixed text: nothing the client sent is echoed.
            if verb.eq_ignore_ascii_case("login") {
                assert_eq!(lines, &[LOGIN_USAGE], "{line:?}");
            }
        }
        Command::Login { user, password } => {
            assert!(!user.is_empty() && !password.is_empty());
            assert!(!user.chars().any(char::is_whitespace));
        }
        Command::Api(req, how) => {
            assert_eq!(writes(req), is_write_verb(line), "{line:?}");
            for resp in fuzz_responses() {
                let out = render(how.clone(), resp);
                let last = out.last().map(String::as_str).unwrap_or_default();
                assert!(
                    last.starts_with("220 ") || last.starts_with("520 "),
                    "{out:?}"
                );
            }
        }
        Command::Quit | Command::CheckAuth(_) => {}
    }
    let _ = esc(line);
}

/// Answers a daemon could give, for [`fuzz_parse`].
fn fuzz_responses() -> Vec<Response> {
    use herd_core::api::{ApiError, ErrorKind};
    vec![
        Response::Ok,
        Response::Error(ApiError::new(ErrorKind::Invalid, "no check x")),
        Response::Health {
            checks: Vec::new(),
            silences: Vec::new(),
        },
    ]
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
        // One line: a message with line breaks must not end the reply early.
        (_, Response::Error(e)) => vec![format!("520 {}", e.message.replace('\n', " "))],
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
                return vec![format!("520 no group {}", printable(&g))];
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
            let now = herd_health::clock::wall_ms();
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
    fn what_a_client_sent_is_echoed_without_control_characters() {
        match parse("\u{0}x\u{1b}[2J") {
            Command::Local(l) => assert!(l[0].contains(": ?x?[2J (herd speaks"), "{l:?}"),
            other => panic!("{other:?}"),
        }
        fuzz_parse(b"list group \x00\x07");
        fuzz_parse(b"LOGIN ann secret words");
        fuzz_parse(b"login ann");
        // Found by the fuzzer: not a login, so echoed like any unknown command.
        fuzz_parse(b"loginpro%%%");
        fuzz_parse(b"login\n");
    }

    #[test]
    fn values_are_escaped_like_mon() {
        assert_eq!(esc("127.0.0.1:80 down"), "127.0.0.1:80\\20down");
        assert_eq!(esc("a=b\n"), "a\\3db\\0a");
    }
}
