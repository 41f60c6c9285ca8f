//! `herd health`: the health monitor (mon's `moncmd`/`monshow`, the herd way).

use std::path::PathBuf;
use std::time::UNIX_EPOCH;

use herd_core::api::{HealthCheckStatus, Request, Response};
use herd_core::config::parse_duration;
use herd_health::clock::wall_ms;

use super::{call, exit};

#[derive(Debug, clap::Subcommand)]
pub enum Cmd {
    /// Checks with each target's state, last result and latency
    #[command(
        after_help = "STATE is up, down or unknown (not checked yet); a real server whose \
check is down gets weight 0 in the director (or is removed, with on-failure = \"remove\")."
    )]
    List {
        /// Print JSON
        #[arg(long)]
        json: bool,
    },
    /// Recent state changes, alerts (with their outcome) and held alerts
    History {
        /// How many entries, newest last
        #[arg(long, short = 'n', default_value_t = 50)]
        limit: usize,
        /// Print JSON
        #[arg(long)]
        json: bool,
    },
    /// Past outages: when each target went down, came back, and why (mon's downtime log)
    Downtime {
        /// How many, newest last
        #[arg(long, short = 'n', default_value_t = 50)]
        limit: usize,
        /// Print JSON
        #[arg(long)]
        json: bool,
    },
    /// Hold alerts of a check and/or a target (mon's ack); state changes still drive the director
    #[command(
        after_help = "Examples:\n  herd health silence --check http --target 127.0.0.11:80 --for 2h --reason 'kernel update'\n  herd health silence --check ping --for 30m"
    )]
    Silence {
        /// Check name (default: every check)
        #[arg(long)]
        check: Option<String>,
        /// Target as `herd health list` shows it (default: every target)
        #[arg(long)]
        target: Option<String>,
        /// How long, e.g. 30m, 2h (default: until `herd health unsilence`)
        #[arg(long = "for", value_name = "DURATION")]
        duration: Option<String>,
        /// Also end when every target it covers is up again (mon's ack)
        #[arg(long)]
        until_recovery: bool,
        /// Why (shown in `herd health list --json` and the history)
        #[arg(long, default_value = "")]
        reason: String,
        /// Who (default: $SUDO_USER, $USER)
        #[arg(long)]
        author: Option<String>,
    },
    /// Lift a silence
    Unsilence {
        /// The silence's number
        id: u64,
    },
    /// Stop running a check, or one of its targets (mon's disable); its state is kept
    Disable {
        check: String,
        target: Option<String>,
    },
    /// Resume a disabled check or target
    Enable {
        check: String,
        target: Option<String>,
    },
    /// Send a test notification through every alert of a check, and report each outcome
    TestAlert { check: String },
}

pub fn run(cmd: Cmd, socket: Option<PathBuf>) -> u8 {
    match cmd {
        Cmd::List { json } => list(&socket, json),
        Cmd::History { limit, json } => {
            let r = call(&socket, &Request::HealthHistory { limit: Some(limit) });
            match r {
                Ok(Response::HealthHistory { entries }) => {
                    if json {
                        print_json(&entries);
                    } else {
                        for e in entries {
                            println!(
                                "{}  {:<10} {:<12} {:<22} {}",
                                clock(e.time_ms),
                                e.event,
                                e.check,
                                e.targets,
                                e.detail
                            );
                        }
                    }
                    exit::OK
                }
                Ok(_) => unexpected(),
                Err(c) => c,
            }
        }
        Cmd::Downtime { limit, json } => {
            match call(&socket, &Request::HealthDowntime { limit: Some(limit) }) {
                Ok(Response::Downtime { entries }) => {
                    if json {
                        print_json(&entries);
                    } else {
                        if entries.is_empty() {
                            println!("no outages recorded");
                        }
                        for e in entries {
                            let secs = e.up_ms.saturating_sub(e.down_ms) / 1000;
                            println!(
                                "{} -> {}  {:>8}  {:<12} {:<22} {}",
                                clock(e.down_ms),
                                clock(e.up_ms),
                                span(secs),
                                e.check,
                                e.target,
                                e.summary
                            );
                        }
                    }
                    exit::OK
                }
                Ok(_) => unexpected(),
                Err(c) => c,
            }
        }
        Cmd::Silence {
            check,
            target,
            duration,
            until_recovery,
            reason,
            author,
        } => {
            let secs = match duration.map(|d| parse_duration(&d)).transpose() {
                Ok(d) => d.map(|d| d.as_secs().max(1)),
                Err(e) => {
                    eprintln!("herd: --for: {e}");
                    return exit::USAGE;
                }
            };
            let author = author
                .or_else(|| std::env::var("SUDO_USER").ok())
                .or_else(|| std::env::var("USER").ok())
                .unwrap_or_else(|| "unknown".into());
            match call(
                &socket,
                &Request::HealthSilence {
                    check,
                    target,
                    secs,
                    until_recovery,
                    author,
                    reason,
                },
            ) {
                Ok(Response::Silenced { id }) => {
                    println!("silence #{id}");
                    exit::OK
                }
                Ok(_) => unexpected(),
                Err(c) => c,
            }
        }
        Cmd::Unsilence { id } => ok(call(&socket, &Request::HealthUnsilence { id })),
        Cmd::Disable { check, target } => ok(call(
            &socket,
            &Request::HealthDisable {
                check,
                target,
                disabled: true,
            },
        )),
        Cmd::Enable { check, target } => ok(call(
            &socket,
            &Request::HealthDisable {
                check,
                target,
                disabled: false,
            },
        )),
        Cmd::TestAlert { check } => match call(&socket, &Request::HealthTestAlert { check }) {
            Ok(Response::Deliveries { deliveries }) => {
                let mut code = exit::OK;
                for d in deliveries {
                    if d.ok {
                        println!("ok      {} ({} ms)", d.sink, d.took_ms);
                    } else {
                        println!("FAILED  {}: {}", d.sink, d.error);
                        code = exit::FAILURE;
                    }
                }
                code
            }
            Ok(_) => unexpected(),
            Err(c) => c,
        },
    }
}

fn list(socket: &Option<PathBuf>, json: bool) -> u8 {
    let (checks, silences) = match call(socket, &Request::HealthList) {
        Ok(Response::Health { checks, silences }) => (checks, silences),
        Ok(_) => return unexpected(),
        Err(c) => return c,
    };
    if json {
        print_json(&serde_json::json!({ "checks": checks, "silences": silences }));
        return exit::OK;
    }
    if checks.is_empty() {
        println!("no health checks configured ([[health.check]] in the config)");
    }
    for c in &checks {
        print_check(c);
    }
    if !silences.is_empty() {
        println!("\nSilences:");
        for s in silences {
            let until = s.until_ms.map_or("until lifted".to_string(), |u| {
                format!("until {}", clock(u))
            });
            println!(
                "  #{} check={} target={} {} by {}: {}",
                s.id,
                s.check.as_deref().unwrap_or("*"),
                s.target.as_deref().unwrap_or("*"),
                until,
                s.author,
                s.reason
            );
        }
    }
    exit::OK
}

fn print_check(c: &HealthCheckStatus) {
    println!(
        "{} ({} of {}, every {}s){}",
        c.name,
        c.kind,
        c.group,
        c.interval_ms as f64 / 1000.0,
        if c.disabled { " DISABLED" } else { "" }
    );
    println!(
        "  {:<24} {:<8} {:<9} {:>10}  LAST RESULT",
        "TARGET", "STATE", "SINCE", "LATENCY"
    );
    for t in &c.targets {
        let mut state = t.status.clone();
        if t.flapping {
            state.push('~');
        }
        let mut notes = Vec::new();
        if t.disabled {
            notes.push("disabled".to_string());
        }
        if let Some(id) = t.silenced {
            notes.push(format!("silenced #{id}"));
        }
        let latency = t
            .latency_us
            .map_or("-".to_string(), |us| format!("{:.1}ms", us as f64 / 1000.0));
        let verdict = t.verdict.as_deref().unwrap_or("-");
        println!(
            "  {:<24} {:<8} {:<9} {:>10}  {}: {}{}",
            t.target,
            state,
            ago(t.since_ms),
            latency,
            verdict,
            t.summary,
            if notes.is_empty() {
                String::new()
            } else {
                format!(" [{}]", notes.join(", "))
            }
        );
    }
}

fn ok(r: Result<Response, u8>) -> u8 {
    match r {
        Ok(_) => exit::OK,
        Err(c) => c,
    }
}

pub(super) fn unexpected() -> u8 {
    eprintln!("herd: unexpected answer from the daemon");
    exit::SOFTWARE
}

pub(super) fn print_json<T: serde::Serialize>(v: &T) {
    println!("{}", serde_json::to_string_pretty(v).unwrap_or_default());
}

/// "12s", "5m", "3h", "2d" since `ms`.
pub(super) fn ago(ms: u64) -> String {
    span(wall_ms().saturating_sub(ms) / 1000)
}

/// "12s", "5m", "3h", "2d".
fn span(s: u64) -> String {
    match s {
        0..60 => format!("{s}s"),
        60..3600 => format!("{}m", s / 60),
        3600..86400 => format!("{}h", s / 3600),
        _ => format!("{}d", s / 86400),
    }
}

/// Local wall-clock time of a Unix-epoch millisecond: `HH:MM:SS` today, else with the date.
pub(super) fn clock(ms: u64) -> String {
    let at =
        |ms: u64| herd_health::clock::local_at(UNIX_EPOCH + std::time::Duration::from_millis(ms));
    let t = at(ms);
    let today = at(wall_ms());
    let hms = format!("{:02}:{:02}:{:02}", t.hour, t.minute, t.second);
    if (t.year, t.yday) == (today.year, today.yday) {
        hms
    } else {
        format!("{}-{:02}-{:02} {hms}", t.year, t.month, t.mday)
    }
}
