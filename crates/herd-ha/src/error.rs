//! The errors at herd-ha's boundary. The texts are the ones `herd` has always printed.

use std::io;
use std::path::PathBuf;

/// Why VRRP could not start, apply a config or carry out a command.
#[derive(Debug, thiserror::Error)]
pub enum HaError {
    /// The VRRP thread is gone (it ended, or never started).
    #[error("VRRP is not running")]
    NotRunning,
    /// The VRRP thread or its runtime could not be made.
    #[error("{0}")]
    Thread(io::Error),
    /// The VRRP thread ended while it started.
    #[error("the VRRP thread ended during start-up")]
    Ended,
    /// A command for instances, and none is configured.
    #[error("no vrrp instances are configured")]
    NoInstances,
    /// A command named an instance that does not run.
    #[error("no vrrp instance {0:?}")]
    NoInstance(String),
    /// A planned failover named an instance that is not master.
    #[error("vrrp instance {name} is {state}, not master")]
    NotMaster { name: String, state: &'static str },
    /// The netlink connection could not be opened.
    #[error("netlink: {0}")]
    Netlink(io::Error),
    /// An interface (or its addresses) could not be looked up; the text names it.
    #[error("{0}")]
    Interface(io::Error),
    /// The interface has no address to send adverts from.
    #[error("interface {iface} has no {what} to send VRRP from")]
    NoSource { iface: String, what: &'static str },
    /// A socket could not be opened or set up (VRRP needs CAP_NET_RAW and CAP_NET_ADMIN).
    #[error("{what} socket on {iface}: {source}")]
    Socket {
        what: &'static str,
        iface: String,
        source: io::Error,
    },
    /// The VRRP socket could not be registered with the runtime.
    #[error("{0}")]
    Reactor(io::Error),
    /// An instance's `auth-key-file` cannot be read.
    #[error("vrrp instance {instance}: auth-key-file {}: {source}", path.display())]
    KeyFile {
        instance: String,
        path: PathBuf,
        source: io::Error,
    },
    /// An instance's `auth-key-file` is too short to be a key.
    #[error("vrrp instance {instance}: auth-key-file {} holds fewer than 16 bytes", path.display())]
    ShortKey { instance: String, path: PathBuf },
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_texts_are_those_herd_always_printed() {
        let cases: Vec<(HaError, &str)> = vec![
            (HaError::NotRunning, "VRRP is not running"),
            (HaError::NoInstance("x".into()), "no vrrp instance \"x\""),
            (
                HaError::NotMaster {
                    name: "vi".into(),
                    state: "backup",
                },
                "vrrp instance vi is backup, not master",
            ),
            (
                HaError::Socket {
                    what: "VRRP",
                    iface: "eth0".into(),
                    source: io::Error::from_raw_os_error(1),
                },
                "VRRP socket on eth0: Operation not permitted (os error 1)",
            ),
            (
                HaError::NoSource {
                    iface: "eth0".into(),
                    what: "an IPv4 address of its own",
                },
                "interface eth0 has no an IPv4 address of its own to send VRRP from",
            ),
        ];
        for (e, text) in cases {
            assert_eq!(e.to_string(), text);
        }
    }
}
