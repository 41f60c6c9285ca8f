//! Builders shared by the schedulers' unit tests.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};

use herd_core::model::SchedFlags;

use super::{ConnInfo, DestView};

/// A real server `10.1.x.y:80` numbered `n`.
pub(crate) fn dest(n: u32, weight: u32, active: u32, inactive: u32) -> DestView {
    DestView {
        addr: SocketAddr::new(ip(10, 1, n), 80),
        weight,
        active,
        inactive,
        overloaded: false,
    }
}

pub(crate) fn overloaded(mut d: DestView) -> DestView {
    d.overloaded = true;
    d
}

/// `a.b.x.y` with `x.y` the low 16 bits of `n`.
pub(crate) fn ip(a: u8, b: u8, n: u32) -> IpAddr {
    IpAddr::V4(Ipv4Addr::new(a, b, (n >> 8) as u8, n as u8))
}

/// A connection from client `192.168.x.y:port` to virtual address `10.9.x.y:80`.
pub(crate) fn conn(client: u32, port: u16, vip: u32) -> ConnInfo {
    ConnInfo {
        client: SocketAddr::new(ip(192, 168, client), port),
        vip: SocketAddr::new(ip(10, 9, vip), 80),
    }
}

pub(crate) fn all_flags() -> [SchedFlags; 4] {
    [
        SchedFlags {
            fallback: false,
            port: false,
        },
        SchedFlags {
            fallback: true,
            port: false,
        },
        SchedFlags {
            fallback: false,
            port: true,
        },
        SchedFlags {
            fallback: true,
            port: true,
        },
    ]
}

/// Runs `n` schedules on an unchanging list and returns the picked indices.
pub(crate) fn picks(
    s: &mut dyn super::Scheduler,
    dests: &[DestView],
    n: usize,
) -> Vec<Option<usize>> {
    (0..n)
        .map(|i| s.schedule(dests, &conn(i as u32, 1000, 1), 0))
        .collect()
}
