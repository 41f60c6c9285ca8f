//! The `herd` binary's library: CLI, daemon wiring and the control-socket client.
//! `main.rs` only calls [`cli::run`].

pub mod agent;
pub mod cli;
pub mod client;
pub mod ctlsock;
pub mod daemon;
pub mod fdlimit;
pub mod monproto;
pub mod preflight;
