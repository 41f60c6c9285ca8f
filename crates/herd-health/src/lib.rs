//! herd-health: health monitoring that drives the director (mon, reborn).
//!
//! - [`rules`]: the rule engine, without I/O: results in; state changes, alerts and holds out.
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
pub mod monitor;
pub mod probe;
pub mod rules;
pub mod tls;
