//! `herd daemon`.

use std::path::PathBuf;

use herd_core::config::Config;

use super::exit;
use crate::daemon::{bind_control, check_control, serve, Bound, Daemon, Signals, Source};

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Config file (TOML; see examples/herd.toml)
    #[arg(
        long,
        short,
        value_name = "FILE",
        default_value = "/etc/herd/herd.toml"
    )]
    config: PathBuf,
}

pub fn run(a: Args, socket: Option<PathBuf>) -> u8 {
    // 1. Parse and validate before anything is bound.
    let cfg = match Config::load(&a.config) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("{e}");
            return exit::CONFIG;
        }
    };
    let socket = socket
        .or_else(|| cfg.daemon.socket.clone())
        .unwrap_or_else(|| super::socket_path(None));
    init_logging(&cfg.daemon.log_level);
    let Some(rt) = runtime() else {
        return exit::SOFTWARE;
    };
    rt.block_on(daemon_main(
        Source::File(a.config),
        cfg,
        socket,
        std::future::pending(),
    ))
}

/// Installs the log formatter (stderr; systemd's journal picks it up).
pub fn init_logging(level: &str) {
    let level = std::env::var("HERD_LOG").unwrap_or_else(|_| level.to_string());
    let max = level.parse().unwrap_or(tracing::Level::INFO);
    let _ = tracing_subscriber::fmt()
        .with_max_level(max)
        .with_writer(std::io::stderr)
        .with_target(false)
        .try_init();
}

/// The runtime of the control side (API, signals, housekeeping). The data plane runs on its own
/// worker threads (see `herd_proxy::Proxy`).
pub fn runtime() -> Option<tokio::runtime::Runtime> {
    match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .thread_name("herd-control")
        .enable_all()
        .build()
    {
        Ok(rt) => Some(rt),
        Err(e) => {
            eprintln!("herd: cannot start the runtime: {e}");
            None
        }
    }
}

/// Binds, serves until a signal or `shutdown`, drains. Returns the exit code.
pub async fn daemon_main(
    source: Source,
    cfg: Config,
    socket: PathBuf,
    shutdown: impl std::future::Future<Output = ()>,
) -> u8 {
    // Before anything is opened or sized: every listener's cap follows from this limit.
    let open_files = crate::fdlimit::raise();
    tracing::debug!(open_files, "open-files limit");
    let signals = match Signals::install() {
        Ok(s) => s,
        Err(e) => {
            eprintln!("herd: {e:#}");
            return exit::SOFTWARE;
        }
    };
    // 2. Refuse if another daemon answers; 3. apply the config (every listener, the services,
    // VRRP, checks, the agent); 4. the control socket (whose appearance means ready).
    if let Err(e) = check_control(&socket).await {
        eprintln!("herd: {e:#}");
        return exit::CANTCREAT;
    }
    let drain = cfg.daemon.drain_timeout;
    // Listeners are bound in the apply: off the async workers.
    let started = tokio::task::spawn_blocking(move || Daemon::start(source, cfg)).await;
    let daemon = match started.unwrap_or_else(|e| {
        Err(herd_core::api::ApiError::new(
            herd_core::api::ErrorKind::Internal,
            e.to_string(),
        ))
    }) {
        Ok(d) => d,
        Err(e) => {
            eprintln!("herd: {}", e.message);
            return exit::CANTCREAT;
        }
    };
    let control = match bind_control(&socket) {
        Ok(l) => l,
        Err(e) => {
            eprintln!("herd: {e:#}");
            return exit::CANTCREAT;
        }
    };
    // 3. Serve; 4. drain.
    match serve(
        daemon,
        signals,
        Bound {
            control,
            control_path: socket,
        },
        drain,
        shutdown,
    )
    .await
    {
        Ok(()) => exit::OK,
        Err(e) => {
            eprintln!("herd: {e:#}");
            exit::SOFTWARE
        }
    }
}
