//! herd-vrrp: the VRRP protocol core, without I/O.
//!
//! - [`packet`]: the wire format (v3 for IPv4 and IPv6, v2 for IPv4); parsing never panics
//!   and names why a packet is dropped ([`packet::Malformed`]).
//! - [`state`]: the state machine of one virtual router (RFC 5798 §6.4): time and adverts in,
//!   [`state::Action`]s out; [`state::Instance::reconfigure`] applies a changed configuration
//!   in place.
//! - [`auth`]: herd's HMAC-SHA256 trailer with anti-replay, for herd-only groups.
//!
//! Invariant: nothing in this crate opens a socket, reads a clock, spawns a thread or touches
//! a file; time is an argument (`now`, an `Instant` the caller read, or the wall clock in
//! microseconds for sequence numbers). The I/O shell around it is herd-ha.
#![forbid(unsafe_code)]

pub mod auth;
pub mod packet;
pub mod state;
