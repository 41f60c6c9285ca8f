//! The one place in herd that needs `unsafe`: handing an owned file descriptor to tokio's
//! reactor.

use std::io;
use std::os::fd::OwnedFd;

use tokio::io::unix::AsyncFd;
use tokio::io::Interest;

/// Registers `fd` with the current runtime's reactor for read, write and priority (TCP urgent
/// data) readiness.
pub fn register(fd: OwnedFd) -> io::Result<AsyncFd<OwnedFd>> {
    // SAFETY: tokio requires that the descriptor stays open and refers to the same open file
    // for the lifetime of the `AsyncFd`. An `OwnedFd` owns its descriptor exclusively: it can
    // only be closed by dropping it, which happens when the `AsyncFd` drops it (after
    // deregistering), and its `as_raw_fd` never changes.
    #[allow(unsafe_code)]
    let registered = unsafe {
        AsyncFd::register_with_interest(
            fd,
            Interest::READABLE | Interest::WRITABLE | Interest::PRIORITY,
        )
    };
    registered.map_err(|e| e.into())
}
