//! herd-ipvsadm: the ipvsadm-compatible front end of `herd ipvsadm`: argument parsing, output
//! formats and error messages. It turns ipvsadm's command line into herd's control requests
//! ([`herd_core::api::Request`]) and herd's answers into ipvsadm's output; the CLI
//! (`crates/herd/src/cli/ipvsadm.rs`) sends the requests.
//!
//! Invariant: everything here is pure: no sockets, no files, no DNS. Names (`http`, `localhost`) come from
//! a [`Resolver`] the caller supplies; [`HostTables`] builds one from the text of `/etc/services`
//! and `/etc/hosts`.
//!
//! The behaviour follows ipvsadm 1.31 as Debian ships it (the `ipvsadm.c` and `libipvs` sources of
//! the 1.31 release, checked against the binary of the Debian package):
//!
//! - [`parse_args`] reads the arguments as popt does for ipvsadm: the first option must be the
//!   command, short options may be clustered (`-Ln`, `-At VIP:80`), `-p` takes an optional value
//!   (360 seconds without one), `--set` takes three positional values. Errors carry ipvsadm's
//!   message and exit code ([`UsageError::exit_code`]).
//! - [`format_list`], [`format_save`], [`format_connections`], [`format_timeouts`] print ipvsadm's
//!   layouts byte for byte, including its sorting and its trailing blanks.
//! - [`parse_restore`] reads what `ipvsadm -S` prints (and what `ipvsadm -R` accepts).
//! - [`api_error_message`] maps a daemon error to the message and exit code ipvsadm prints when
//!   the kernel refuses the same change.

mod format;
mod help;
mod parse;
mod resolve;
mod restore;
#[cfg(test)]
mod tests;

use std::fmt;
use std::net::SocketAddr;

use herd_core::api::{ApiError, ErrorKind};
use herd_core::model::{RealSpec, ServiceKey, ServiceSpec, Timeouts};

pub use format::{format_connections, format_daemon, format_list, format_save, format_timeouts};
pub use help::{help_text, version_text};
pub use parse::{parse_args, parse_args_with};
pub use resolve::{HostTables, NumericOnly, Resolver};
pub use restore::{parse_restore, parse_restore_partial, parse_restore_with, RestoreError};

/// How the front end names itself in messages (`Try `herd ipvsadm -h' …`).
pub const PROGRAM: &str = "herd ipvsadm";

/// The IPVS version ipvsadm prints in its listing header (the kernel's `IP_VS_VERSION_CODE`).
pub const IPVS_VERSION: &str = "1.2.1";

/// The connection table size ipvsadm prints in its listing header (the kernel default, 2^12).
pub const CONN_TAB_SIZE: u32 = 4096;

/// The persistence timeout of `-p` without a value: libipvs' `IPVS_SVC_PERSISTENT_TIMEOUT`,
/// 6 minutes. (ipvsadm's man page says 300; the program sends 360.)
pub const DEFAULT_PERSISTENT_TIMEOUT: u32 = 360;

/// The largest timeout ipvsadm accepts for `-p` and `--set`: 31 days.
pub const MAX_TIMEOUT: u32 = 86400 * 31;

/// One ipvsadm command line, parsed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Command {
    /// `-A`: add a virtual service.
    AddService(ServiceSpec),
    /// `-E`: replace scheduler, flags and persistence of a service. As with ipvsadm, options not
    /// given take their defaults (`-E -t VIP:80` sets `wlc` and removes persistence). The
    /// herd-only fields `name` and `proxy_protocol` are `None`/`false`: ipvsadm cannot express
    /// them, so the daemon should keep the service's current values.
    EditService(ServiceSpec),
    /// `-D`.
    DeleteService(ServiceKey),
    /// `-C`.
    Clear,
    /// `-a`.
    AddReal { service: ServiceKey, real: RealSpec },
    /// `-e`: replace weight, thresholds and method; options not given take their defaults.
    EditReal { service: ServiceKey, real: RealSpec },
    /// `-d`.
    DeleteReal {
        service: ServiceKey,
        address: SocketAddr,
    },
    /// `-L`/`-l` (and no arguments at all).
    List(ListOptions),
    /// `-S [-n]`: print the rules in the form `-R` reads.
    Save { numeric: bool },
    /// `-R`: read commands from standard input, one per line (see [`parse_restore`]).
    Restore,
    /// `-Z [service]`.
    Zero { service: Option<ServiceKey> },
    /// `--set tcp tcpfin udp`; a zero leaves that timeout unchanged.
    SetTimeouts(Timeouts),
    /// `-h`/`--help`: print [`help_text`] to stdout, exit 0.
    Help,
    /// `-v`/`--version`: print [`version_text`] to stdout, exit 0.
    Version,
}

/// The options of `-L`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ListOptions {
    /// `-t`/`-u`: list only this service (no version header then).
    pub service: Option<ServiceKey>,
    /// `-n`: addresses and ports as numbers.
    pub numeric: bool,
    /// `-c`: the connection table instead of the services.
    pub connections: bool,
    /// `--timeout`: the timeouts instead of the services.
    pub timeout: bool,
    /// `--daemon`: the sync daemons instead of the services (herd runs none).
    pub daemon: bool,
    /// `--stats`: cumulative counters.
    pub stats: bool,
    /// `--rate`: rates per second.
    pub rate: bool,
    /// `--exact`: counters without K/M/G/T abbreviation.
    pub exact: bool,
    /// `--thresholds`: upper and lower connection thresholds.
    pub thresholds: bool,
    /// `--persistent-conn`: persistence templates per real server.
    pub persistent_conn: bool,
    /// `--tun-info`: the tunnel column.
    pub tun_info: bool,
    /// Sort services and real servers as ipvsadm does; `--nosort` clears it.
    pub sort: bool,
}

impl Default for ListOptions {
    fn default() -> Self {
        ListOptions {
            service: None,
            numeric: false,
            connections: false,
            timeout: false,
            daemon: false,
            stats: false,
            rate: false,
            exact: false,
            thresholds: false,
            persistent_conn: false,
            tun_info: false,
            sort: true,
        }
    }
}

/// What a `-L` command shows, in ipvsadm's order of precedence.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ListView {
    /// [`format_connections`] of the connection table.
    Connections,
    /// [`format_list`] of the services (all, or the one in [`ListOptions::service`]).
    Services,
    /// [`format_timeouts`].
    Timeout,
    /// [`format_daemon`].
    Daemon,
}

impl ListOptions {
    /// Which listing the options ask for: `-c` first, then a service, then `--timeout`, then
    /// `--daemon`, else all services.
    pub fn view(&self) -> ListView {
        if self.connections {
            ListView::Connections
        } else if self.service.is_some() {
            ListView::Services
        } else if self.timeout {
            ListView::Timeout
        } else if self.daemon {
            ListView::Daemon
        } else {
            ListView::Services
        }
    }
}

/// The classes of usage errors, which decide the exit code.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UsageErrorKind {
    /// No command first (or a malformed first option): ipvsadm only prints "Try …" and exits 255.
    TryHelp,
    /// An option popt itself refuses (`--foo: unknown option`, `-t: missing argument`): 255.
    BadOption,
    /// ipvsadm's own checks (`illegal weight specified`, …): exit 2.
    Invalid,
    /// A value ipvsadm passes on but the kernel refuses, so ipvsadm prints the kernel's error and
    /// exits 255 (an unknown scheduler, a lower threshold above the upper one).
    Rejected,
    /// Something ipvsadm can do but herd cannot (firewall marks, sync daemon, …): exit 2.
    Unsupported,
}

/// A command line ipvsadm would refuse, with its message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UsageError {
    pub kind: UsageErrorKind,
    /// The text ipvsadm prints on stderr (without the final newline).
    pub message: String,
}

impl UsageError {
    pub(crate) fn new(kind: UsageErrorKind, message: impl Into<String>) -> Self {
        UsageError {
            kind,
            message: message.into(),
        }
    }

    pub(crate) fn try_help() -> Self {
        UsageError::new(
            UsageErrorKind::TryHelp,
            format!("Try `{PROGRAM} -h' or '{PROGRAM} --help' for more information."),
        )
    }

    pub(crate) fn invalid(message: impl Into<String>) -> Self {
        UsageError::new(UsageErrorKind::Invalid, message)
    }

    pub(crate) fn unsupported(what: &str) -> Self {
        UsageError::new(
            UsageErrorKind::Unsupported,
            format!("{PROGRAM}: {what} not supported"),
        )
    }

    /// The exit status ipvsadm ends with for this error: 255 (popt errors, kernel refusals and
    /// "Try …") or 2 (ipvsadm's own checks).
    pub fn exit_code(&self) -> i32 {
        usage_exit_code(self)
    }
}

/// The exit status ipvsadm uses for a usage error (see [`UsageErrorKind`]).
pub fn usage_exit_code(err: &UsageError) -> i32 {
    match err.kind {
        UsageErrorKind::TryHelp | UsageErrorKind::BadOption | UsageErrorKind::Rejected => 255,
        UsageErrorKind::Invalid | UsageErrorKind::Unsupported => 2,
    }
}

impl fmt::Display for UsageError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for UsageError {}

/// ipvsadm's message for EINVAL from the kernel.
const EINVAL_MESSAGE: &str =
    "Invalid operation.  Possibly wrong module version, address not unicast, ...";

/// The message and exit status ipvsadm prints when the kernel refuses `cmd` the way the daemon
/// did (libipvs' `ipvs_strerror` table).
///
/// Listing commands (`-L`, `-S`) exit 1; every other command exits 255 (ipvsadm returns -1 from
/// `main`). For `-R`, ipvsadm prints the message of a refused line and goes on with the next;
/// its exit status is that of the last line.
pub fn api_error_message(kind: ErrorKind, cmd: &Command) -> (String, i32) {
    let code = match cmd {
        Command::List(_) | Command::Save { .. } => 1,
        _ => 255,
    };
    let dest_cmd = matches!(
        cmd,
        Command::AddReal { .. } | Command::EditReal { .. } | Command::DeleteReal { .. }
    );
    let msg = match kind {
        ErrorKind::ServiceExists => "Service already exists",
        ErrorKind::NoService if dest_cmd => "Service not defined",
        ErrorKind::NoService => "No such service",
        ErrorKind::RealExists => "Destination already exists",
        ErrorKind::NoReal => "No such destination",
        ErrorKind::Invalid | ErrorKind::Bind | ErrorKind::Config => EINVAL_MESSAGE,
        ErrorKind::Internal => "Memory allocation problem",
    };
    (msg.to_string(), code)
}

/// Like [`api_error_message`], but for the kinds ipvsadm has no specific message for (invalid
/// values, bind failures, config and internal errors) it keeps the daemon's own explanation.
pub fn api_error_report(err: &ApiError, cmd: &Command) -> (String, i32) {
    let (msg, code) = api_error_message(err.kind, cmd);
    match err.kind {
        ErrorKind::ServiceExists
        | ErrorKind::NoService
        | ErrorKind::RealExists
        | ErrorKind::NoReal => (msg, code),
        _ if err.message.is_empty() => (msg, code),
        _ => (err.message.clone(), code),
    }
}

/// What ipvsadm prints (exit 2) when it cannot reach IPVS; here: when the daemon is unreachable.
/// `detail` is the reason, e.g. "Connection refused".
pub fn unreachable_message(detail: &str) -> (String, i32) {
    (
        format!("Can't initialize ipvs: {detail}\nAre you sure that the herd daemon is running?"),
        2,
    )
}
