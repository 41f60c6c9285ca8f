//! Director failover with VRRP: the I/O shell around the protocol core.
//!
//! - [`packet`], [`state`], [`auth`]: the protocol core, re-exported from the crate
//!   `herd-vrrp`, which cannot do I/O.
//! - [`shell`]: [`Ha`], the running instances, and [`Ha::apply`], the one path from them to a
//!   config (start is an apply from empty; a reload applies the difference in place).
//!   Around the core: raw sockets, timers, VIPs over netlink ([`netlink`]), gratuitous ARP
//!   and unsolicited NA ([`announce`]), role-change hooks ([`notify`]), hand-overs that keep
//!   open connections ([`handover`]), tracked scripts and services ([`track`]).
//! - [`HaError`]: why starting, applying or a command failed.
pub use herd_vrrp::{auth, packet, state};

pub mod ancillary;
pub mod announce;
mod error;
pub mod handover;
pub mod netlink;
pub mod notify;
pub mod shell;
mod sys;
pub mod track;

pub use error::HaError;
pub use shell::{Applied, Ha};
