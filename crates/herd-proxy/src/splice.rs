//! Zero-copy forwarding of one direction of a TCP connection with `splice(2)`.
//!
//! Bytes move socket → pipe → socket inside the kernel; they never enter this process. Pipes
//! are pooled per thread: a connection borrows two and returns them empty, so a busy proxy
//! does not pay `pipe2` and four `close` calls per connection.

use std::cell::RefCell;
use std::io;
use std::os::fd::OwnedFd;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

use rustix::net::Shutdown;
use rustix::pipe::{pipe_with, splice, PipeFlags, SpliceFlags};
use tokio::io::Interest;
use tokio::net::TcpStream;

/// Largest amount moved by one splice call (the default pipe capacity).
const CHUNK: usize = 1 << 16;
/// Pipes kept per thread for reuse.
const POOL_MAX: usize = 256;

/// A pipe borrowed from the pool; goes back on drop if it is empty.
#[derive(Debug)]
pub struct Pipe {
    fds: Option<(OwnedFd, OwnedFd)>,
    /// Bytes sitting in the pipe (moved in, not yet moved out).
    buffered: usize,
}

thread_local! {
    static POOL: RefCell<Vec<(OwnedFd, OwnedFd)>> = const { RefCell::new(Vec::new()) };
}

impl Pipe {
    pub fn take() -> io::Result<Pipe> {
        let pooled = POOL.with(|p| p.borrow_mut().pop());
        let fds = match pooled {
            Some(fds) => fds,
            None => pipe_with(PipeFlags::NONBLOCK | PipeFlags::CLOEXEC)?,
        };
        Ok(Pipe {
            fds: Some(fds),
            buffered: 0,
        })
    }
}

impl Drop for Pipe {
    fn drop(&mut self) {
        // A pipe that still holds bytes (the connection failed mid-transfer) is closed, never
        // reused: its leftovers would leak into another connection.
        if let (Some(fds), 0) = (self.fds.take(), self.buffered) {
            POOL.with(|p| {
                let mut p = p.borrow_mut();
                if p.len() < POOL_MAX {
                    p.push(fds);
                }
            });
        }
    }
}

/// Moves bytes from `from` to `to` until `from` reaches end of stream, then shuts down the
/// write side of `to` (passing the FIN on). `activity` is bumped on every chunk (the idle
/// timer watches it) and `record(bytes)` accounts each chunk.
pub async fn forward(
    from: &TcpStream,
    to: &TcpStream,
    pipe: &mut Pipe,
    activity: &AtomicU64,
    mut record: impl FnMut(u64),
) -> io::Result<()> {
    let Some((rd, wr)) = pipe.fds.as_ref() else {
        return Err(io::Error::other("pipe already closed"));
    };
    loop {
        let n = loop {
            from.readable().await?;
            match from.try_io(Interest::READABLE, || {
                splice(
                    from,
                    None,
                    wr,
                    None,
                    CHUNK,
                    SpliceFlags::MOVE | SpliceFlags::NONBLOCK,
                )
                .map_err(io::Error::from)
            }) {
                Ok(n) => break n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
                Err(e) => return Err(e),
            }
        };
        if n == 0 {
            // End of stream from `from`: pass the half-close on.
            let _ = rustix::net::shutdown(to, Shutdown::Write);
            return Ok(());
        }
        pipe.buffered += n;
        // A plain load and store: only this connection's task writes it.
        activity.store(activity.load(Relaxed).wrapping_add(1), Relaxed);
        record(n as u64);
        while pipe.buffered > 0 {
            to.writable().await?;
            match to.try_io(Interest::WRITABLE, || {
                splice(
                    rd,
                    None,
                    to,
                    None,
                    pipe.buffered,
                    SpliceFlags::MOVE | SpliceFlags::NONBLOCK,
                )
                .map_err(io::Error::from)
            }) {
                Ok(m) => pipe.buffered -= m,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
                Err(e) => return Err(e),
            }
        }
    }
}
