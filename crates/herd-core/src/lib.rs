//! herd-core: the vocabulary every other herd crate shares.
//!
//! - [`config`]: the strict TOML config, one module per section holding its raw form, its
//!   validated form and its validation (errors name file, line and key): `config/daemon.rs`,
//!   `lb.rs` (virtual services), `health.rs` (+ `health/check.rs`: which keys each check type
//!   takes), `smtp.rs`, `vrrp.rs`, `cluster.rs` (`[nodes]`, `[groups]`), `agent.rs`, `sync.rs`,
//!   `web.rs`; `values.rs`: durations and addresses; `mod.rs`: load, parse, errors, sections.
//! - [`model`]: the director's vocabulary shared by the config, the API and herd-lb: virtual
//!   services, real servers, schedulers, forwarding methods, timeouts.
//! - [`api`]: requests and responses of the control API (the Unix socket, the dashboard's HTTP
//!   API in herd-web, the mon port).
//! - [`nodeset`]: node sets in ClusterShell's syntax (`node[01-20]`, `@web`, `,!&^`).
//! - [`x509`]: a small DER reader (certificate validity, serial, names).
//! - [`addr`]: what counts as one client for per-client limits.
//! - [`backoff`]: how long an accept loop waits after a failed accept.
//! - [`clock`]: the wall clock, for the shells' stamps.
//!
//! Elsewhere: the health checks' own types and mon's periods are herd-rules' (herd-core
//! depends on it for validation); the ipvsadm front end is herd-ipvsadm; importers of other
//! tools' configs are herd-import.
//!
//! This crate does no I/O beyond reading a config file on request (and the wall clock in
//! [`clock`], for its callers).

pub mod addr;
pub mod api;
pub mod backoff;
pub mod clock;
pub mod config;
pub mod model;
pub mod nodeset;
pub mod x509;
