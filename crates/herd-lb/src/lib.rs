//! herd-lb: the director's core, without I/O.
//!
//! - [`sched`]: the fourteen IPVS schedulers.
//! - [`service`]: a virtual service at run time: its real servers, connection counts,
//!   persistence templates and the connection table; [`service::Conn`] is the handle a data
//!   plane holds for each forwarded connection.
//! - [`table`]: the set of virtual services and the operations of ipvsadm and of a reload.
//! - [`stats`]: counters and the kernel's rate estimator.
//! - [`dataplane`]: the trait a data plane implements (the userspace proxy today, kernel NAT/DR
//!   later).
//!
//! Invariant: nothing in this crate opens a socket, reads a clock or spawns a thread; time is an
//! argument (`now_ms`, milliseconds on the caller's monotonic clock).

pub mod dataplane;
pub mod sched;
pub mod service;
pub mod stats;
pub mod table;
