//! Black-box tests of the `herd` binary over real sockets on loopback.
// Helpers outside #[test] functions unwrap too: a failed unwrap is a failed test.
#![allow(clippy::unwrap_used)]

mod agent;
mod browser;
mod config;
mod daemon;
mod demo;
mod exec;
mod flood;
mod health;
mod ipvsadm;
mod lb;
mod mon;
mod nodeset;
mod sync;
mod util;
mod vrrp;
mod web;
