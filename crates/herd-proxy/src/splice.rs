//! Forwarding one direction of a TCP connection: copy small messages, splice bulk data.
//!
//! Sockets are registered with the runtime as [`AsyncFd`]s rather than tokio's `TcpStream`, for
//! one reason: a read that returns fewer bytes than asked for has emptied the socket's receive
//! queue, and [`AsyncFdReadyGuard::clear_ready`] lets us say so. Without it every chunk costs
//! one more `read` that only answers `EAGAIN` — a third of the system calls of a small
//! request/response exchange. (tokio's readiness ticks make this safe: data that arrives after
//! the read raises a new readiness event that `clear_ready` does not erase.)
//!
//! When the same wake-up also reported the peer's FIN (EPOLLRDHUP), the short read reached the
//! end of the stream, so the `read` that would only return 0 is skipped too.
//!
//! A direction starts by copying through a small pooled buffer (two system calls per message).
//! When a read fills the buffer the peer is sending bulk data, and the direction switches to
//! `splice(2)`: socket → pipe → socket inside the kernel, the bytes never entering this
//! process. Buffers and pipes are pooled per thread, so a connection allocates neither.
//!
//! [`AsyncFdReadyGuard::clear_ready`]: tokio::io::unix::AsyncFdReadyGuard::clear_ready

use std::cell::RefCell;
use std::io;
use std::os::fd::OwnedFd;
use std::sync::atomic::{AtomicU64, AtomicU8, Ordering::Relaxed};
use std::sync::Mutex;

// recv/send rather than read/write: socket calls skip the VFS layer's file-position lock.
use rustix::net::{RecvFlags, SendFlags, Shutdown};
use rustix::pipe::{pipe_with, splice, PipeFlags, SpliceFlags};
use tokio::io::unix::{AsyncFd, AsyncFdReadyGuard};
use tokio::io::Interest;

/// A connected, non-blocking socket registered with the runtime.
pub(crate) type Sock = AsyncFd<OwnedFd>;

/// Size of the copy buffer; a read that fills it switches the direction to splice.
const COPY_BUF: usize = 16 * 1024;
/// Largest amount moved by one splice call (the default pipe capacity).
const CHUNK: usize = 1 << 16;
/// Pipes and buffers kept per thread for reuse.
const POOL_MAX: usize = 256;

thread_local! {
    static PIPES: RefCell<Vec<(OwnedFd, OwnedFd)>> = const { RefCell::new(Vec::new()) };
    static BUFS: RefCell<Vec<Box<[u8]>>> = const { RefCell::new(Vec::new()) };
}

/// A pipe borrowed from the pool; goes back on drop if it is empty.
#[derive(Debug)]
struct Pipe {
    fds: Option<(OwnedFd, OwnedFd)>,
    /// Bytes sitting in the pipe (moved in, not yet moved out).
    buffered: usize,
}

impl Pipe {
    fn take() -> io::Result<Pipe> {
        let fds = match PIPES.with(|p| p.borrow_mut().pop()) {
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
            PIPES.with(|p| {
                let mut p = p.borrow_mut();
                if p.len() < POOL_MAX {
                    p.push(fds);
                }
            });
        }
    }
}

/// A copy buffer borrowed from the pool.
#[derive(Debug)]
pub(crate) struct Buf(Option<Box<[u8]>>);

impl Buf {
    pub(crate) fn take() -> Buf {
        let b = BUFS.with(|b| b.borrow_mut().pop());
        Buf(Some(
            b.unwrap_or_else(|| vec![0u8; COPY_BUF].into_boxed_slice()),
        ))
    }

    pub(crate) fn get(&mut self) -> &mut [u8] {
        self.0.as_deref_mut().unwrap_or_default()
    }
}

impl Drop for Buf {
    fn drop(&mut self) {
        if let Some(b) = self.0.take() {
            BUFS.with(|p| {
                let mut p = p.borrow_mut();
                if p.len() < POOL_MAX {
                    p.push(b);
                }
            });
        }
    }
}

/// What the two directions of one connection share.
#[derive(Debug, Default)]
pub(crate) struct Flow {
    /// Bumped on every chunk moved; the idle timer watches it.
    pub(crate) activity: AtomicU64,
    /// Directions that reached end of stream.
    ended: AtomicU8,
}

impl Flow {
    fn bump(&self) {
        // A plain load and store: only this connection's task writes it.
        self.activity
            .store(self.activity.load(Relaxed).wrapping_add(1), Relaxed);
    }

    /// `from` reached end of stream: pass the half-close on to `to` — unless the other
    /// direction has ended already, in which case both sockets are about to be closed and the
    /// `shutdown` would be a wasted system call.
    fn end(&self, to: &Sock) {
        if self.ended.fetch_add(1, Relaxed) == 0 {
            let _ = rustix::net::shutdown(to.get_ref(), Shutdown::Write);
        }
    }
}

/// Waits until `sock` is readable, at end of stream or failed.
///
/// `AsyncFd::readable` and `ready` queue a waiter on a locked list per wait; the poll-based
/// form keeps one waker per direction in the registration instead, a third of the proxy's
/// user-space time in keep-alive traffic. It allows one waiting task per direction, which is
/// how every socket here is used: one task owns a connection.
pub(crate) async fn read_ready(sock: &Sock) -> io::Result<AsyncFdReadyGuard<'_, OwnedFd>> {
    std::future::poll_fn(|cx| sock.poll_read_ready(cx)).await
}

/// Waits until `sock` is writable or failed; see [`read_ready`].
pub(crate) async fn write_ready(sock: &Sock) -> io::Result<AsyncFdReadyGuard<'_, OwnedFd>> {
    std::future::poll_fn(|cx| sock.poll_write_ready(cx)).await
}

/// After a short read: has `sock` received TCP urgent data (`.0`), or its peer's FIN and
/// nothing after it (`.1`)?
///
/// The read readiness does not carry EPOLLPRI, so this looks at the registration's
/// PRIORITY readiness, whose mask also holds "read closed": an atomic load in the common case
/// where neither is set, and a wait that is ready at once otherwise. A socket that also shows
/// an error (a reset: EPOLLHUP with EPOLLERR) does not count as cleanly ended, so that the
/// next read reports the reset.
async fn urgent_or_eof(sock: &Sock) -> io::Result<(bool, bool)> {
    if sock.try_io(Interest::PRIORITY, |_| Ok(())).is_err() {
        return Ok((false, false));
    }
    let ready = sock.ready(Interest::PRIORITY).await?.ready();
    let failed = sock.try_io(Interest::ERROR, |_| Ok(())).is_ok();
    Ok((ready.is_priority(), ready.is_read_closed() && !failed))
}

/// Writes all of `buf` to `to`.
pub(crate) async fn write_all(to: &Sock, mut buf: &[u8]) -> io::Result<()> {
    while !buf.is_empty() {
        let mut g = write_ready(to).await?;
        match g.try_io(|fd| {
            rustix::net::send(fd.get_ref(), buf, SendFlags::NOSIGNAL).map_err(io::Error::from)
        }) {
            Ok(Ok(n)) => buf = &buf[n..],
            Ok(Err(e)) => return Err(e),
            Err(_would_block) => continue,
        }
    }
    Ok(())
}

/// Moves bytes from `from` to `to` until `from` reaches end of stream, then shuts down the
/// write side of `to` (passing the FIN on). `flow` is shared with the other direction and
/// the idle timer; `record(bytes)` accounts each chunk.
///
/// `buf` is the buffer to read into (else one from the pool). With `hand_back`, a reset
/// before the first byte returns the buffer there, untouched, with the error: it may hold
/// bytes the caller wants to send elsewhere.
pub(crate) async fn forward(
    from: &Sock,
    to: &Sock,
    flow: &Flow,
    mut record: impl FnMut(u64),
    buf: Option<Buf>,
    hand_back: Option<&Mutex<Option<Buf>>>,
) -> io::Result<()> {
    let mut buf = buf.unwrap_or_else(Buf::take);
    let mut hand_back = hand_back;
    // TCP urgent data makes a read stop short at the urgent mark with bytes still queued, so
    // once a peer has sent any, a short read no longer proves the queue empty.
    let mut urgent = false;
    let mut eof_next = false;
    loop {
        let n = loop {
            let mut g = read_ready(from).await?;
            match g.try_io(|fd| {
                rustix::net::recv(fd.get_ref(), buf.get(), RecvFlags::empty())
                    .map(|(n, _)| n)
                    .map_err(io::Error::from)
            }) {
                Ok(Ok(n)) => {
                    if n > 0 && n < COPY_BUF && !urgent {
                        let (pri, closed) = urgent_or_eof(from).await?;
                        urgent = pri;
                        if !urgent {
                            // A short read emptied the receive queue: skip the read that
                            // would only say EAGAIN. If the peer's FIN had arrived too
                            // (EPOLLRDHUP), the queue ended with it, and the read that would
                            // only say 0 is skipped as well.
                            eof_next = closed;
                            g.clear_ready();
                        }
                    }
                    break n;
                }
                Ok(Err(e)) => {
                    if let Some(slot) =
                        hand_back.filter(|_| e.kind() == io::ErrorKind::ConnectionReset)
                    {
                        *slot.lock().unwrap_or_else(|p| p.into_inner()) = Some(buf);
                    }
                    return Err(e);
                }
                Err(_would_block) => continue,
            }
        };
        if n == 0 {
            flow.end(to);
            return Ok(());
        }
        // The first byte came: the buffer's old content is gone.
        hand_back = None;
        flow.bump();
        record(n as u64);
        write_all(to, &buf.get()[..n]).await?;
        if eof_next {
            flow.end(to);
            return Ok(());
        }
        if n == COPY_BUF {
            // Bulk data: hand the rest of this direction to the kernel.
            drop(buf);
            return splice_all(from, to, flow, record).await;
        }
    }
}

async fn splice_all(
    from: &Sock,
    to: &Sock,
    flow: &Flow,
    mut record: impl FnMut(u64),
) -> io::Result<()> {
    let mut pipe = Pipe::take()?;
    let Some((rd, wr)) = pipe.fds.as_ref() else {
        return Err(io::Error::other("pipe already closed"));
    };
    let flags = SpliceFlags::MOVE | SpliceFlags::NONBLOCK;
    loop {
        let n = loop {
            let mut g = read_ready(from).await?;
            match g.try_io(|fd| {
                splice(fd.get_ref(), None, wr, None, CHUNK, flags).map_err(io::Error::from)
            }) {
                Ok(Ok(n)) => break n,
                Ok(Err(e)) => return Err(e),
                Err(_would_block) => continue,
            }
        };
        if n == 0 {
            flow.end(to);
            return Ok(());
        }
        pipe.buffered += n;
        flow.bump();
        record(n as u64);
        while pipe.buffered > 0 {
            let mut g = write_ready(to).await?;
            match g.try_io(|fd| {
                splice(rd, None, fd.get_ref(), None, pipe.buffered, flags).map_err(io::Error::from)
            }) {
                Ok(Ok(m)) => pipe.buffered -= m,
                Ok(Err(e)) => return Err(e),
                Err(_would_block) => continue,
            }
        }
    }
}
