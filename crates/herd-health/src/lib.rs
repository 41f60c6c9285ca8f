//! herd-health: health monitoring that drives the director (mon, reborn).
//!
//! - [`localtime`]: the system's local time, which the rule engine (the `herd-rules` crate)
//!   evaluates alert periods in.
//! - [`monitor`]: the runner: schedules, the director's real servers, alert dispatch, history.
//! - [`history`]: the SQLite history and downtime log.
//! - [`alert`]: alert sinks (mon's alert protocol for programs, webhooks, e-mail, the log).
//! - [`email`]: e-mail alerts over SMTP, worded like mon's `mail.alert`.
//! - [`tls`]: TLS client configs and certificate expiry for https checks.
//! - [`dns`]: just enough DNS for the dns probe.
//! - [`probe`]: the probes (tcp, http, udp, dns, exec with mon's or Nagios' protocol), bounded in time
//!   and output.

pub mod alert;
pub mod dns;
pub mod email;
pub mod history;
pub mod localtime;
pub mod monitor;
pub mod probe;
pub mod tls;
