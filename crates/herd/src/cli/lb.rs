//! `herd lb`: virtual services and real servers, the friendly way.

use std::net::SocketAddr;
use std::path::PathBuf;

use herd_core::api::{AdminState, RealHealth, Request, Response, ServiceStatus};
use herd_core::config::{parse_duration, parse_real_addr, parse_socket_addr};
use herd_core::model::{
    netmask_to_prefix, Forward, Persistence, Protocol, RealSpec, SchedFlags, SchedulerKind,
    ServiceKey, ServiceSpec,
};

use super::{call, exit};

#[derive(Debug, clap::Subcommand)]
pub enum Cmd {
    /// List virtual services with their real servers, counters and rates
    List {
        /// Only this service (VIP:PORT)
        service: Option<String>,
        /// UDP service (with SERVICE)
        #[arg(long)]
        udp: bool,
        /// Print JSON
        #[arg(long)]
        json: bool,
    },
    /// Add a virtual service
    Add(ServiceArgs),
    /// Change a virtual service's scheduler, persistence or PROXY protocol setting
    Edit(ServiceArgs),
    /// Remove a virtual service (its open connections finish)
    Remove {
        /// VIP:PORT
        service: String,
        #[arg(long)]
        udp: bool,
    },
    /// Real servers of a virtual service
    #[command(subcommand)]
    Real(RealCmd),
    /// Zero counters (of one service, or of all)
    Zero {
        service: Option<String>,
        #[arg(long)]
        udp: bool,
    },
    /// Write the running state as a config file (`-` for stdout)
    Save {
        /// Output file; written atomically (temporary file, then rename)
        file: PathBuf,
    },
}

#[derive(Debug, clap::Args)]
pub struct ServiceArgs {
    /// VIP:PORT, e.g. 127.0.0.100:80 or [::1]:80
    service: String,
    /// UDP instead of TCP
    #[arg(long)]
    udp: bool,
    /// Scheduler: rr wrr lc wlc lblc lblcr dh sh sed nq fo ovf mh twos
    #[arg(long, short, default_value = "wlc")]
    scheduler: String,
    /// Persistence timeout, e.g. 300s (clients stick to one real server)
    #[arg(long, short = 'p', value_name = "DURATION")]
    persistence: Option<String>,
    /// Persistence granularity: netmask or prefix length (e.g. 255.255.255.0 or 24)
    #[arg(long, short = 'M', requires = "persistence")]
    netmask: Option<String>,
    /// sh/mh: fall back to another real server when the hashed one is unavailable
    #[arg(long)]
    hash_fallback: bool,
    /// sh/mh: hash the client's port too
    #[arg(long)]
    hash_port: bool,
    /// Send a PROXY protocol v2 header to the real servers
    #[arg(long)]
    proxy_protocol: bool,
    /// A name for the service
    #[arg(long)]
    name: Option<String>,
}

#[derive(Debug, clap::Subcommand)]
pub enum RealCmd {
    /// Add a real server
    Add(RealArgs),
    /// Change a real server's weight, thresholds or forwarding method
    Edit(RealArgs),
    /// Remove a real server (its open connections finish)
    Remove {
        service: String,
        /// IP[:PORT] of the real server
        real: String,
        #[arg(long)]
        udp: bool,
    },
    /// Drain a real server: no new connections (persistent clients' too), open ones finish;
    /// listed with weight 0. Kept across reloads until `enable`
    Drain(StateArgs),
    /// Take a real server out of the table (as `ipvsadm -d`, open connections finish) but keep
    /// it, to `enable` later
    Disable(StateArgs),
    /// Put a drained or disabled real server back at its configured weight
    Enable(StateArgs),
}

#[derive(Debug, clap::Args)]
pub struct StateArgs {
    /// VIP:PORT of the virtual service
    service: String,
    /// IP[:PORT] of the real server (the port defaults to the service's)
    real: String,
    #[arg(long)]
    udp: bool,
}

#[derive(Debug, clap::Args)]
pub struct RealArgs {
    /// VIP:PORT of the virtual service
    service: String,
    /// IP[:PORT] of the real server (the port defaults to the service's)
    real: String,
    #[arg(long)]
    udp: bool,
    /// Weight 0..65535; 0 drains: no new connections, open ones continue
    #[arg(long, short, default_value_t = 1)]
    weight: u32,
    /// No new connections above this many (0 = no limit)
    #[arg(long, short = 'x', default_value_t = 0)]
    upper_threshold: u32,
    /// Accept again below this many (0 = ¾ of the upper threshold)
    #[arg(long, short = 'y', default_value_t = 0)]
    lower_threshold: u32,
    /// Forwarding method shown by ipvsadm: route, masq or tunnel
    #[arg(long, default_value = "route")]
    forward: String,
}

fn key(service: &str, udp: bool) -> Result<ServiceKey, u8> {
    let address = parse_socket_addr(service).map_err(usage)?;
    Ok(ServiceKey {
        protocol: if udp { Protocol::Udp } else { Protocol::Tcp },
        address,
    })
}

fn usage(msg: impl std::fmt::Display) -> u8 {
    eprintln!("herd: {msg}");
    exit::USAGE
}

fn spec(a: ServiceArgs) -> Result<ServiceSpec, u8> {
    let key = key(&a.service, a.udp)?;
    let scheduler: SchedulerKind = a.scheduler.parse().map_err(usage)?;
    let persistence = match a.persistence {
        None => None,
        Some(p) => {
            let timeout = parse_duration(&p).map_err(usage)?.as_secs();
            let timeout = u32::try_from(timeout)
                .map_err(|_| usage(format!("persistence {p} is too long")))?;
            let full = if key.address.is_ipv6() { 128 } else { 32 };
            let prefix = match a.netmask {
                Some(m) => netmask_to_prefix(&m).map_err(usage)?,
                None => full,
            };
            Some(Persistence { timeout, prefix })
        }
    };
    Ok(ServiceSpec {
        key,
        name: a.name,
        scheduler,
        sched_flags: SchedFlags {
            fallback: a.hash_fallback,
            port: a.hash_port,
        },
        persistence,
        proxy_protocol: a.proxy_protocol,
    })
}

fn real(a: &RealArgs) -> Result<(ServiceKey, RealSpec), u8> {
    let k = key(&a.service, a.udp)?;
    let address = parse_real_addr(&a.real, k.address.port()).map_err(usage)?;
    let forward: Forward = a.forward.parse().map_err(usage)?;
    Ok((
        k,
        RealSpec {
            address,
            weight: a.weight,
            upper_threshold: a.upper_threshold,
            lower_threshold: a.lower_threshold,
            forward,
        },
    ))
}

pub fn run(cmd: Cmd, socket: Option<PathBuf>) -> u8 {
    match exec(cmd, &socket) {
        Ok(()) => exit::OK,
        Err(code) => code,
    }
}

fn exec(cmd: Cmd, socket: &Option<PathBuf>) -> Result<(), u8> {
    let req = match cmd {
        Cmd::List { service, udp, json } => {
            let service = service.map(|s| key(&s, udp)).transpose()?;
            if let Response::Services { services } = call(socket, &Request::List { service })? {
                if json {
                    println!(
                        "{}",
                        serde_json::to_string_pretty(&services).unwrap_or_default()
                    );
                } else {
                    print!("{}", render(&services));
                }
            }
            return Ok(());
        }
        Cmd::Save { file } => {
            let Response::Config { toml } = call(socket, &Request::ExportConfig { redact: false })?
            else {
                return Err(exit::SOFTWARE);
            };
            return save(&file, &toml);
        }
        Cmd::Add(a) => Request::AddService { service: spec(a)? },
        // Every field, as ipvsadm -E: what is not given takes its default.
        Cmd::Edit(a) => Request::EditService {
            service: herd_core::api::ServiceEdit::replacing(spec(a)?),
        },
        Cmd::Remove { service, udp } => Request::DeleteService {
            service: key(&service, udp)?,
        },
        Cmd::Zero { service, udp } => Request::Zero {
            service: service.map(|s| key(&s, udp)).transpose()?,
        },
        Cmd::Real(RealCmd::Add(a)) => {
            let (service, real) = real(&a)?;
            Request::AddReal { service, real }
        }
        Cmd::Real(RealCmd::Edit(a)) => {
            let (service, real) = real(&a)?;
            let real = herd_core::api::RealEdit::replacing(real);
            Request::EditReal { service, real }
        }
        Cmd::Real(RealCmd::Remove { service, real, udp }) => {
            let service = key(&service, udp)?;
            let address: SocketAddr =
                parse_real_addr(&real, service.address.port()).map_err(usage)?;
            Request::DeleteReal { service, address }
        }
        Cmd::Real(RealCmd::Drain(a)) => set_state(a, AdminState::Draining)?,
        Cmd::Real(RealCmd::Disable(a)) => set_state(a, AdminState::Disabled)?,
        Cmd::Real(RealCmd::Enable(a)) => set_state(a, AdminState::Enabled)?,
    };
    call(socket, &req).map(|_| ())
}

fn set_state(a: StateArgs, state: AdminState) -> Result<Request, u8> {
    let service = key(&a.service, a.udp)?;
    let address = parse_real_addr(&a.real, service.address.port()).map_err(usage)?;
    Ok(Request::SetRealState {
        service,
        address,
        state,
    })
}

fn save(file: &std::path::Path, toml: &str) -> Result<(), u8> {
    let text = format!("# Written by `herd lb save`: the director's running state.\n{toml}");
    if file.as_os_str() == "-" {
        print!("{text}");
        return Ok(());
    }
    // 0600: the running state is a whole config, the dashboard's password hashes included.
    super::write_atomic(file, text.as_bytes(), 0o600).map_err(|e| {
        eprintln!("herd: cannot write {}: {e}", file.display());
        exit::CANTCREAT
    })?;
    eprintln!("saved {}", file.display());
    Ok(())
}

fn human_bytes(n: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut v = n as f64;
    let mut u = 0;
    while v >= 1024.0 && u < UNITS.len() - 1 {
        v /= 1024.0;
        u += 1;
    }
    if u == 0 {
        format!("{n} B")
    } else {
        format!("{v:.1} {}", UNITS[u])
    }
}

/// A readable table: one block per service, one line per real server.
pub fn render(services: &[ServiceStatus]) -> String {
    use std::fmt::Write;
    let mut out = String::new();
    if services.is_empty() {
        out.push_str("no virtual services\n");
        return out;
    }
    for s in services {
        let name = s
            .spec
            .name
            .as_deref()
            .map(|n| format!("{n}: "))
            .unwrap_or_default();
        let mut flags = String::new();
        if let Some(p) = s.spec.persistence {
            let _ = write!(flags, ", persistent {}s /{}", p.timeout, p.prefix);
        }
        if s.spec.proxy_protocol {
            flags.push_str(", proxy-protocol");
        }
        let _ = writeln!(
            out,
            "{name}{} {} ({}{flags})  conns {}  in {}  out {}  {} conn/s",
            s.spec.key.protocol.ipvs_name(),
            s.spec.key.address,
            s.spec.scheduler,
            s.stats.conns,
            human_bytes(s.stats.bytes_in),
            human_bytes(s.stats.bytes_out),
            s.rates.cps,
        );
        let _ = writeln!(
            out,
            "  {:<28} {:>6} {:>7} {:>8} {:>10}  state",
            "real server", "weight", "active", "inactive", "conns"
        );
        for r in &s.reals {
            let state = if r.draining {
                "draining (removed)"
            } else if r.admin != AdminState::Enabled {
                r.admin.as_str()
            } else if r.health != RealHealth::Up {
                "failing checks"
            } else if r.overloaded {
                "overloaded"
            } else if r.spec.weight == 0 {
                "quiesced"
            } else {
                "up"
            };
            let _ = writeln!(
                out,
                "  {:<28} {:>6} {:>7} {:>8} {:>10}  {state}",
                r.spec.address.to_string(),
                r.spec.weight,
                r.active_conns,
                r.inactive_conns,
                r.stats.conns
            );
        }
    }
    out
}
