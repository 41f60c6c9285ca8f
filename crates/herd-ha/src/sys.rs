//! The one place in herd-ha with `unsafe`: a link-layer socket address (`sockaddr_ll`), which
//! neither socket2 nor rustix can build safely (gratuitous ARP sends a frame out of one
//! interface with it), `recvmsg`/`sendmsg` with control messages and the `IPV6_RECVPKTINFO`
//! option (IPv6 VRRP, see [`crate::ancillary`]), and handing a socket to tokio's reactor.
#![allow(unsafe_code)]

use std::io;
use std::os::fd::AsRawFd;

use socket2::{SockAddr, SockAddrStorage, Socket};

/// `sockaddr_ll` for sending frames of `ethertype` out of interface `ifindex` to `mac`.
pub fn link_addr(ifindex: u32, ethertype: u16, mac: [u8; 6]) -> SockAddr {
    let mut storage = SockAddrStorage::zeroed();
    // SAFETY: `sockaddr_ll` is a socket address type of this platform and smaller than
    // `sockaddr_storage` (view_as asserts the size); the storage is zeroed, which is a valid
    // `sockaddr_ll`.
    let ll = unsafe { storage.view_as::<libc::sockaddr_ll>() };
    ll.sll_family = libc::AF_PACKET as u16;
    ll.sll_protocol = ethertype.to_be();
    ll.sll_ifindex = ifindex as i32;
    ll.sll_halen = 6;
    ll.sll_addr[..6].copy_from_slice(&mac);
    let len = std::mem::size_of::<libc::sockaddr_ll>() as libc::socklen_t;
    // SAFETY: the storage holds an initialised `sockaddr_ll` of `len` bytes with its family set.
    unsafe { SockAddr::new(storage, len) }
}

/// Registers a socket with the current runtime's reactor for readability.
pub fn register(sock: Socket) -> io::Result<tokio::io::unix::AsyncFd<Socket>> {
    // SAFETY: tokio requires that the descriptor stays open and refers to the same open file
    // for the lifetime of the `AsyncFd`. A `Socket` owns its descriptor exclusively: it is
    // closed only when the `Socket` is dropped, which the `AsyncFd` does after deregistering.
    unsafe { tokio::io::unix::AsyncFd::register_with_interest(sock, tokio::io::Interest::READABLE) }
        .map_err(|e| e.into())
}

/// Asks for the destination address of each received packet (`IPV6_RECVPKTINFO`).
pub fn set_recv_pktinfo_v6(sock: &Socket) -> io::Result<()> {
    let on: libc::c_int = 1;
    // SAFETY: the option value is a live `c_int` and the length passed is its size.
    let r = unsafe {
        libc::setsockopt(
            sock.as_raw_fd(),
            libc::IPPROTO_IPV6,
            libc::IPV6_RECVPKTINFO,
            (&on as *const libc::c_int).cast(),
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    if r == -1 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// A datagram read with [`recv_msg`].
#[derive(Debug)]
pub struct Message {
    /// Bytes of the datagram placed in the buffer.
    pub len: usize,
    /// The datagram was longer than the buffer.
    pub truncated: bool,
    pub from: SockAddr,
    /// The control messages, as the kernel laid them out.
    pub control: Vec<u8>,
}

/// `recvmsg` with room for `control_space` bytes of control messages.
pub fn recv_msg(sock: &Socket, buf: &mut [u8], control_space: usize) -> io::Result<Message> {
    // u64 words: control messages must be aligned for `cmsghdr`.
    let mut control = vec![0u64; control_space.div_ceil(8)];
    let mut iov = libc::iovec {
        iov_base: buf.as_mut_ptr().cast(),
        iov_len: buf.len(),
    };
    // SAFETY: every pointer in the `msghdr` refers to memory that lives across the call and
    // has the length given with it: the address storage (`try_init` passes its size in
    // `len`), the one iovec over `buf`, and `control`. The kernel writes at most those
    // lengths and reports what it wrote in `msg_namelen` and `msg_controllen`.
    let ((len, control_len, flags), from) = unsafe {
        SockAddr::try_init(|storage, len| {
            let mut msg: libc::msghdr = std::mem::zeroed();
            msg.msg_name = storage.cast();
            msg.msg_namelen = *len;
            msg.msg_iov = &mut iov;
            msg.msg_iovlen = 1;
            msg.msg_control = control.as_mut_ptr().cast();
            msg.msg_controllen = control.len() * 8;
            let n = libc::recvmsg(sock.as_raw_fd(), &mut msg, libc::MSG_DONTWAIT);
            if n < 0 {
                return Err(io::Error::last_os_error());
            }
            *len = msg.msg_namelen;
            Ok((n as usize, msg.msg_controllen, msg.msg_flags))
        })
    }?;
    let control = control
        .iter()
        .flat_map(|w| w.to_ne_bytes())
        .take(control_len)
        .collect();
    Ok(Message {
        len: len.min(buf.len()),
        truncated: flags & libc::MSG_TRUNC != 0,
        from,
        control,
    })
}

/// `sendmsg` of `buf` to `to` with `control` (control messages as [`crate::ancillary`]
/// builds them).
pub fn send_msg(sock: &Socket, buf: &[u8], to: &SockAddr, control: &[u8]) -> io::Result<usize> {
    let mut words = vec![0u64; control.len().div_ceil(8)];
    for (w, chunk) in words.iter_mut().zip(control.chunks(8)) {
        let mut b = [0u8; 8];
        b[..chunk.len()].copy_from_slice(chunk);
        *w = u64::from_ne_bytes(b);
    }
    let mut iov = libc::iovec {
        iov_base: buf.as_ptr().cast_mut().cast(),
        iov_len: buf.len(),
    };
    // SAFETY: the `msghdr` points at the destination address (`to`, with its length), one
    // iovec over `buf` (which the kernel only reads), and `words`, holding `control.len()`
    // bytes of control messages; all live across the call.
    let n = unsafe {
        let mut msg: libc::msghdr = std::mem::zeroed();
        msg.msg_name = to.as_ptr().cast_mut().cast();
        msg.msg_namelen = to.len();
        msg.msg_iov = &mut iov;
        msg.msg_iovlen = 1;
        if !control.is_empty() {
            msg.msg_control = words.as_mut_ptr().cast();
            msg.msg_controllen = control.len();
        }
        libc::sendmsg(sock.as_raw_fd(), &msg, libc::MSG_DONTWAIT)
    };
    if n < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(n as usize)
}
