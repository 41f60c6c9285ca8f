//! Director failover with VRRP.
//!
//! - [`packet`]: the wire format (v3 for IPv4 and IPv6, v2 for IPv4), parsing that never
//!   panics and names why a packet is dropped.
//! - [`state`]: the state machine of one virtual router, without I/O (a fake clock tests it).
//! - [`auth`]: herd's HMAC-SHA256 trailer with anti-replay, for herd-only groups.
//! - [`shell`]: the I/O around them: raw sockets, timers, VIPs over netlink ([`netlink`]),
//!   gratuitous ARP and unsolicited NA ([`announce`]), role-change hooks ([`notify`]), and
//!   hand-overs that keep open connections ([`handover`]), tracked scripts and services
//!   ([`track`]).
pub mod auth;
pub mod packet;
pub mod state;

pub mod ancillary;
pub mod announce;
pub mod handover;
pub mod netlink;
pub mod notify;
pub mod shell;
mod sys;
pub mod track;

pub use shell::Ha;
