//! herd-health: health monitoring that drives the director (mon, reborn).
//!
//! - the rule engine, without I/O, is the `herd-rules` crate: results in; state changes, alerts
//!   and holds out.
//! - [`monitor`]: the runner: schedules, the director's real servers, alert dispatch, history;
//!   one way in from a config, [`monitor::Monitor::apply`] (start, reload and stop alike).
//! - [`history`]: the SQLite history and downtime log.
//! - [`alert`]: alert sinks (mon's alert protocol for programs, webhooks, e-mail, the log).
//! - [`notice`]: what a sink is given (a notice) and gives back (a delivery).
//! - [`email`]: e-mail alerts over SMTP, worded like mon's `mail.alert`.
//! - [`tls`]: TLS client configs and certificate expiry for https checks.
//! - [`dns`]: just enough DNS for the dns probe.
//! - [`probe`]: the probes (tcp, http, udp, dns, exec with mon's or Nagios' protocol), bounded in time
//!   and output.
//! - `program`: running a program in its own process group with a timeout (exec probes and
//!   exec alerts).
//! - [`clock`]: the wall clock (`wall_ms`, herd-core's) and the local time zone (`local_now`),
//!   the one place in this crate either is read.
//!
//! Uses between modules go one way: `monitor` → `probe`, `alert`, `history` (and the
//! `herd-rules` engine); the
//! probes and the sinks → the small shared modules (`notice`, `program`, `clock`, `tls`, `dns`);
//! nothing depends on `monitor`. Timers run on tokio's clock (tests pause it); the time of day
//! (stamps, the engine's "now", alert periods) is read only in `clock`.

pub mod alert;
pub mod clock;
pub mod dns;
pub mod email;
pub mod history;
pub mod monitor;
pub mod notice;
pub mod probe;
pub(crate) mod program;
pub mod tls;
