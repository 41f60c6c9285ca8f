//! Black-box tests of the `herd` binary over real sockets on loopback.

mod config;
mod daemon;
mod demo;
mod ipvsadm;
mod lb;
mod util;
