//! The one place in herd-ha with `unsafe`: a link-layer socket address (`sockaddr_ll`), which
//! neither socket2 nor rustix can build safely (gratuitous ARP sends a frame out of one
//! interface with it), and handing a socket to tokio's reactor.
#![allow(unsafe_code)]

use socket2::{SockAddr, SockAddrStorage};

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
pub fn register(
    sock: socket2::Socket,
) -> std::io::Result<tokio::io::unix::AsyncFd<socket2::Socket>> {
    // SAFETY: tokio requires that the descriptor stays open and refers to the same open file
    // for the lifetime of the `AsyncFd`. A `Socket` owns its descriptor exclusively: it is
    // closed only when the `Socket` is dropped, which the `AsyncFd` does after deregistering.
    unsafe { tokio::io::unix::AsyncFd::register_with_interest(sock, tokio::io::Interest::READABLE) }
        .map_err(|e| e.into())
}
