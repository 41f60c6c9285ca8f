//! herd agent
pub mod agent;
pub mod client;
pub mod frame;
pub mod pki;
pub mod proto;
pub mod tls;
pub mod x509;
