//! The command line: one file per subcommand.

mod cert;
mod config;
mod daemon;
mod demo;
mod exec;
mod ha;
mod health;
mod import;
mod ipvsadm;
mod lb;
mod nodeset;
mod sync;
mod user;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

use crate::client::{Client, DEFAULT_SOCKET};
use herd_core::api::{ApiError, Request, Response};

/// sysexits(3) codes, so scripts can tell a bad config from a daemon that is down.
pub mod exit {
    pub const OK: u8 = 0;
    /// The command itself failed (the daemon refused a change).
    pub const FAILURE: u8 = 1;
    pub const USAGE: u8 = 64;
    pub const DATAERR: u8 = 65;
    /// The daemon is not running or not reachable.
    pub const UNAVAILABLE: u8 = 69;
    pub const SOFTWARE: u8 = 70;
    pub const CANTCREAT: u8 = 73;
    pub const CONFIG: u8 = 78;
}

#[derive(Debug, Parser)]
#[command(
    name = "herd",
    version,
    about = "Run a highly available, load-balanced Linux server cluster",
    long_about = "herd runs a load-balancing director with IPVS semantics (virtual services, real \
servers, the fourteen IPVS schedulers), controlled through an ipvsadm-compatible command line.\n\n\
Start here:\n  herd demo                      a director with three built-in web servers, no root needed\n  \
herd daemon --config FILE      the node daemon\n  herd ipvsadm -L -n             what the director does now\n  \
herd lb list                   the same, friendlier (--json for scripts)\n  \
herd health list               health checks and what they did to the real servers\n  \
herd ha status                 which director holds the VIP (VRRP)\n  \
herd init; herd cert issue N   the cluster CA, and a certificate for each node's agent\n  \
herd exec -w 'node[01-64]' CMD run a command on many nodes (herd nodeset -e to see a set)\n  \
herd user add NAME --role admin  a login for the dashboard ([web] in the config)",
    after_help = "The CLI talks to the daemon over a Unix socket: --socket or HERD_SOCKET choose it \
(default /run/herd/herd.sock)."
)]
pub struct Cli {
    /// Control socket of the daemon [default: /run/herd/herd.sock]
    #[arg(long, global = true, env = "HERD_SOCKET", value_name = "PATH")]
    socket: Option<PathBuf>,

    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Debug, Subcommand)]
enum Cmd {
    /// Run the node daemon in the foreground
    Daemon(daemon::Args),
    /// Check config files
    #[command(subcommand)]
    Config(config::Cmd),
    /// Make the daemon re-read its config and apply the difference (same as SIGHUP)
    Reload,
    /// Show the daemon's identity and uptime
    Status {
        /// Print JSON
        #[arg(long)]
        json: bool,
    },
    /// Virtual services and real servers (the friendly front end)
    #[command(subcommand)]
    Lb(lb::Cmd),
    /// Convert another tool's config to herd's (`herd import mon.cf FILE`)
    #[command(subcommand)]
    Import(import::Cmd),
    /// Health checks, alerts, silences (`herd health list`)
    #[command(subcommand)]
    Health(health::Cmd),
    /// Director failover with VRRP (`herd ha status`, `herd ha failover`)
    #[command(subcommand)]
    Ha(ha::Cmd),
    /// ipvsadm-compatible front end to the running daemon (`herd ipvsadm -h` for its options)
    #[command(disable_help_flag = true)]
    Ipvsadm {
        /// ipvsadm arguments, e.g. -A -t 127.0.0.100:80 -s wlc
        #[arg(trailing_var_arg = true, allow_hyphen_values = true, num_args = 0..)]
        args: Vec<String>,
    },
    /// Expand, fold and count node sets (`herd nodeset -e 'node[01-04],@web'`)
    Nodeset(nodeset::Args),
    /// Run a command on many nodes through their agents (`herd exec -w 'node[01-64]' uptime`)
    Exec(exec::Args),
    /// Copy a tree to many nodes through their agents (`herd sync push DIR -w @web --delete`)
    #[command(subcommand)]
    Sync(sync::Cmd),
    /// Ask agents who and how they are (any certificate role may)
    Ping(exec::PingArgs),
    /// Create the cluster CA and an admin certificate (`herd init`, then `herd cert issue NODE`)
    Init(cert::InitArgs),
    /// Issue and show certificates signed by the cluster CA
    #[command(subcommand)]
    Cert(cert::Cmd),
    /// Logins for the dashboard and HTTP API (`herd user add NAME --role admin -c FILE`)
    #[command(subcommand)]
    User(user::Cmd),
    /// Run a director with three built-in web servers behind 127.0.0.100:8080, and the
    /// dashboard (no root needed)
    Demo(demo::Args),
}

/// Parses the command line and runs the command.
pub fn run() -> ExitCode {
    let cli = Cli::parse();
    let socket = cli.socket.clone();
    if !matches!(cli.cmd, Cmd::Daemon(_) | Cmd::Demo(_)) {
        quiet_broken_pipe();
    }
    let code = match cli.cmd {
        Cmd::Daemon(a) => daemon::run(a, socket),
        Cmd::Config(c) => config::run(c),
        Cmd::Reload => simple(socket, Request::Reload, |r| match r {
            Response::Reloaded { pending } if !pending.is_empty() => println!(
                "reloaded; changed but applied only at restart: {}",
                pending.join(", ")
            ),
            _ => println!("reloaded"),
        }),
        Cmd::Status { json } => status(socket, json),
        Cmd::Lb(c) => lb::run(c, socket),
        Cmd::Health(c) => health::run(c, socket),
        Cmd::Ha(c) => ha::run(c, socket),
        Cmd::Import(c) => import::run(c),
        Cmd::Ipvsadm { args } => ipvsadm::run(args, socket),
        Cmd::Nodeset(a) => nodeset::run(a),
        Cmd::Exec(a) => exec::run(a),
        Cmd::Ping(a) => exec::ping(a),
        Cmd::Sync(c) => sync::run(c),
        Cmd::Init(a) => cert::init(a),
        Cmd::Cert(c) => cert::run(c),
        Cmd::User(c) => user::run(c),
        Cmd::Demo(a) => demo::run(a, socket),
    };
    ExitCode::from(code)
}

/// `herd … | head` ends quietly, as a program killed by SIGPIPE does (status 141), instead of
/// panicking in `println!` (Rust ignores SIGPIPE, so a closed pipe is an error there).
fn quiet_broken_pipe() {
    let default = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        let payload = info.payload();
        let msg = payload
            .downcast_ref::<String>()
            .map(String::as_str)
            .or_else(|| payload.downcast_ref::<&str>().copied())
            .unwrap_or("");
        if msg.starts_with("failed printing to stdout") && msg.contains("Broken pipe") {
            std::process::exit(141);
        }
        default(info)
    }));
}

/// The socket to use: `--socket`, then `HERD_SOCKET` (both handled by clap), then the default.
pub fn socket_path(socket: Option<PathBuf>) -> PathBuf {
    socket.unwrap_or_else(|| PathBuf::from(DEFAULT_SOCKET))
}

/// Sends one request; prints errors and maps them to exit codes.
pub fn call(socket: &Option<PathBuf>, req: &Request) -> Result<Response, u8> {
    let path = socket_path(socket.clone());
    let mut c = Client::connect(&path).map_err(|e| {
        eprintln!("herd: {e}");
        exit::UNAVAILABLE
    })?;
    match c.call(req) {
        Ok(Response::Error(e)) => {
            eprintln!("herd: {}", e.message);
            Err(api_exit(&e))
        }
        Ok(r) => Ok(r),
        Err(e) => {
            eprintln!("herd: {e}");
            Err(exit::UNAVAILABLE)
        }
    }
}

/// Replaces `path` with `bytes` at once: a temporary file beside it, created exclusively with
/// `mode` (a config holds password hashes and secrets: never wider than asked, not even for a
/// moment; a symlink planted at the temporary name is removed, not written through), synced,
/// then renamed over it.
pub(crate) fn write_atomic(path: &std::path::Path, bytes: &[u8], mode: u32) -> std::io::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let mut name = path.file_name().unwrap_or_default().to_os_string();
    name.push(".herd-tmp");
    let tmp = path.with_file_name(name);
    let _ = std::fs::remove_file(&tmp); // left by a run that was killed
    let res = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(mode)
        .open(&tmp)
        .and_then(|mut f| f.write_all(bytes).and_then(|()| f.sync_all()))
        .and_then(|()| std::fs::rename(&tmp, path));
    if res.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    res
}

fn api_exit(e: &ApiError) -> u8 {
    use herd_core::api::ErrorKind::*;
    match e.kind {
        Config => exit::CONFIG,
        Invalid => exit::DATAERR,
        Internal => exit::SOFTWARE,
        _ => exit::FAILURE,
    }
}

fn simple(socket: Option<PathBuf>, req: Request, on_ok: impl FnOnce(Response)) -> u8 {
    match call(&socket, &req) {
        Ok(r) => {
            on_ok(r);
            exit::OK
        }
        Err(code) => code,
    }
}

fn status(socket: Option<PathBuf>, json: bool) -> u8 {
    simple(socket, Request::Status, |r| {
        if let Response::Status(s) = r {
            if json {
                println!("{}", serde_json::to_string_pretty(&s).unwrap_or_default());
            } else {
                println!("herd {} (pid {}), up {}s", s.version, s.pid, s.uptime_secs);
                if let Some(c) = &s.config_path {
                    println!("config:     {c}");
                }
                println!("data plane: {} ({} workers)", s.data_plane, s.workers);
                println!("reloads:    {}", s.reloads);
            }
        }
    })
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_command_line_is_well_formed() {
        // Clap's own checks (unique names and shorts, ...) for every subcommand.
        <super::Cli as clap::CommandFactory>::command().debug_assert();
    }
}
