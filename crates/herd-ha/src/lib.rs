//! Director failover with VRRP.
//!
//! - [`packet`], [`state`], [`auth`]: the protocol core, re-exported from the crate
//!   `herd-vrrp`, which cannot do I/O.
//! - [`shell`]: the I/O around them: raw sockets, timers, VIPs over netlink ([`netlink`]),
//!   gratuitous ARP and unsolicited NA ([`announce`]), role-change hooks ([`notify`]), and
//!   hand-overs that keep open connections ([`handover`]), tracked scripts and services
//!   ([`track`]).
pub use herd_vrrp::{auth, packet, state};

pub mod ancillary;
pub mod announce;
pub mod handover;
pub mod netlink;
pub mod notify;
pub mod shell;
mod sys;
pub mod track;

pub use shell::Ha;
