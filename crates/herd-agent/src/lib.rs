//! herd's node agent and its client: mutual TLS from the cluster's own CA, length-prefixed
//! frames, remote execution, file distribution (`sync`) and the parallel client's tree.
//!
//! Dependencies inside the crate run one way: `agent` (the serving side) uses `client` (to
//! relay) and `sync`; `client` and `sync` never use `agent`; `frame`, `proto`, `deadlines`,
//! `pki`, `tls`, `grant`, `gate` and `module` use none of those three.
pub mod agent;
pub mod client;
pub mod deadlines;
pub mod frame;
pub mod gate;
pub mod grant;
pub mod module;
pub mod pki;
pub mod proto;
pub mod sync;
pub mod tls;
pub mod user;
pub use herd_core::x509;
