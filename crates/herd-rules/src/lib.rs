//! herd-rules: the health monitor's brain, without I/O: check results in; state changes,
//! alerts and holds out.
//!
//! - [`spec`]: what a check is (probe, targets, thresholds, alert rules, sinks), as the config
//!   validates it.
//! - [`period`]: mon's time periods (`wd {Mon-Fri} hr {7am-10pm}`) and the [`LocalTime`] they
//!   are evaluated in.
//! - [`Engine`] (in `engine.rs`): up/down with rise/fall, alert rules, dependencies, flapping,
//!   silences and disables.
//!
//! Invariant: this crate cannot do I/O. It depends on no runtime, socket, file or clock crate;
//! time comes in as arguments (`now_ms`, [`LocalTime`]), and the system's time zone is read by
//! the caller (herd-health's `localtime`).
//!
//! Dependency direction: herd-core depends on herd-rules, not the other way round. herd-core's
//! config validation builds [`spec::CheckSpec`]s and parses [`period::Period`]s, so the types
//! the engine runs live here and herd-core's `[health]` section holds them; herd-rules needs
//! nothing of herd-core.

mod engine;
pub mod period;
pub mod spec;

pub use engine::{Engine, Event, Key, Outcome, Silence, Status, Suppression, TargetState, Verdict};
pub use period::LocalTime;
