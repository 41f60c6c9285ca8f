//! herd-core: the vocabulary every other herd crate shares.
//!
//! - [`model`]: virtual services, real servers, schedulers, timeouts.
//! - [`config`]: the strict TOML config and its validation (errors name file, line and key).
//! - [`health`]: the health monitor's checks, alert rules and sinks; [`period`]: mon's time
//!   periods (`wd {Mon-Fri} hr {7am-10pm}`).
//! - [`ha`]: the VRRP instances of director failover.
//! - [`nodeset`]: node sets in ClusterShell's syntax (`node[01-20]`, `@web`, `,!&^`);
//!   [`cluster`]: the cluster's nodes, their agents' addresses, and groups.
//! - [`api`]: requests and responses of the control API (Unix socket now, HTTP later).
//! - [`backoff`]: how long an accept loop waits after a failed accept.
//!
//! This crate does no I/O beyond reading a config file on request.

pub mod addr;
pub mod api;
pub mod backoff;
pub mod config;
pub mod model;
pub mod nodeset;
pub mod x509;
