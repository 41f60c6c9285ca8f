//! File descriptors: the daemon raises its soft `RLIMIT_NOFILE` to the hard limit at start,
//! and sizes the connection caps of the listeners beside the data plane (mon port,
//! dashboard, node agent) from it, so that no listener can take the descriptors that the
//! proxied connections and the control socket need.
//!
//! Measured before (issue 21): at `ulimit -n 256`, 367 idle connections to the mon port made
//! the proxied service time out and the control socket fail with "Too many open files".

use herd_core::config::Config;
use rustix::process::{getrlimit, setrlimit, Resource, Rlimit};

/// Descriptors the daemon holds whatever its clients do: stdio, the runtimes' epoll and
/// eventfds, the listeners of the virtual services (one per worker each), the history's
/// SQLite files, the log, the data plane's pipe pool at rest, health probes in flight.
const FIXED: u64 = 64;
/// Kept for the control socket (`herd status`, `herd reload` while everything else is busy).
const CONTROL: u64 = 16;
/// Descriptors one agent connection may hold: its TLS socket, and a command's stdin,
/// stdout and stderr pipes.
const AGENT_FDS: usize = 4;

/// Raises the soft limit on open files to the hard limit (the hard limit is the
/// administrator's to set: `LimitNOFILE=` or `ulimit -Hn`); returns the soft limit in force.
pub fn raise() -> u64 {
    let now = getrlimit(Resource::Nofile);
    if now.current != now.maximum {
        let want = Rlimit {
            current: now.maximum,
            maximum: now.maximum,
        };
        if let Err(e) = setrlimit(Resource::Nofile, want) {
            tracing::warn!(error = %e, "cannot raise the open-files limit to the hard limit");
        }
    }
    current()
}

/// The soft limit on open files (no limit counts as a very large one).
pub fn current() -> u64 {
    getrlimit(Resource::Nofile).current.unwrap_or(u64::MAX)
}

/// The connection caps of the listeners beside the data plane.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Caps {
    pub mon: usize,
    pub web: usize,
    pub agent: usize,
}

/// Caps for a config under `limit` open files: each configured listener gets an equal share
/// of half of what is left after the fixed part and the control socket's reserve; the other
/// half (and every share a listener does not use) stays with the data plane. A cap is never
/// above what the config asks, and never below 1 for a listener the config has.
pub fn caps(limit: u64, cfg: &Config) -> Caps {
    let wanted = [
        cfg.health
            .mon_listen
            .map(|_| cfg.health.mon_max_connections),
        cfg.web.as_ref().map(|_| herd_web::MAX_CONNECTIONS),
        (!cfg.agent.listen.is_empty()).then_some(cfg.agent.max_connections),
    ];
    let listeners = wanted.iter().flatten().count().max(1) as u64;
    let share = limit.saturating_sub(FIXED + CONTROL) / 2 / listeners;
    let share = usize::try_from(share).unwrap_or(usize::MAX);
    // 0 for a listener the config does not have.
    let cap = |wanted: Option<usize>, fds_each: usize| {
        wanted.map_or(0, |want| want.min(share / fds_each).max(1))
    };
    Caps {
        mon: cap(wanted[0], 1),
        web: cap(wanted[1], 1),
        agent: wanted[2].map_or(0, |want| want.min(agent_cap(share)).max(1)),
    }
}

/// The largest `max-connections` whose descriptors fit `share`: each verified peer's
/// [`AGENT_FDS`] (its socket among them), and the sockets of unfinished and closing
/// handshakes (`herd_agent::agent::sockets_for`).
fn agent_cap(share: usize) -> usize {
    let fits = |m: usize| m * (AGENT_FDS - 1) + herd_agent::agent::sockets_for(m) <= share;
    // `fits` is monotone: the largest m that fits, by halving.
    let (mut lo, mut hi) = (0usize, share);
    while lo < hi {
        let mid = lo + (hi - lo).div_ceil(2);
        if fits(mid) {
            lo = mid;
        } else {
            hi = mid - 1;
        }
    }
    lo
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(text: &str) -> Config {
        Config::parse("t.toml", text).unwrap()
    }

    #[test]
    fn caps_follow_the_limit_and_never_exceed_the_config() {
        let all = config(
            "[health]\nmon-listen = \"127.0.0.1:2583\"\n\
             [web]\n[agent]\nlisten = [\"127.0.0.1:2875\"]\n",
        );
        // (256 - 80) / 2 / 3 = 29 descriptors for each listener.
        assert_eq!(
            caps(256, &all),
            Caps {
                mon: 29,
                web: 29,
                agent: 4
            }
        );
        // Plenty of descriptors: what the config says (mon 64, web 512, agent 1024).
        assert_eq!(
            caps(1 << 20, &all),
            Caps {
                mon: 64,
                web: 512,
                agent: 1024
            }
        );
        assert_eq!(caps(u64::MAX, &all).agent, 1024);
        // Absurdly few: every listener still takes one client.
        assert_eq!(
            caps(10, &all),
            Caps {
                mon: 1,
                web: 1,
                agent: 1
            }
        );
        // Alone, the mon port gets the whole half.
        let mon = config("[health]\nmon-listen = \"127.0.0.1:2583\"\nmon-max-connections = 500\n");
        assert_eq!(
            caps(256, &mon),
            Caps {
                mon: 88,
                web: 0,
                agent: 0
            }
        );
    }

    #[test]
    fn the_soft_limit_is_raised_to_the_hard_one() {
        let before = getrlimit(Resource::Nofile);
        let now = raise();
        assert_eq!(Some(now), before.maximum.or(Some(u64::MAX)));
        assert_eq!(getrlimit(Resource::Nofile).maximum, before.maximum);
    }
}
