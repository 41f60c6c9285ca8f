//! ipvsadm's argument parsing: popt's reading of the command line, then ipvsadm's checks in
//! ipvsadm's order, so that the first error reported is the one ipvsadm reports.

use std::net::{IpAddr, SocketAddr};

use super::resolve::{
    atoi, mask_prefix, parse_netmask_v4, parse_service, string_to_number, NumericOnly, Resolver,
};
use super::{
    Command, ListOptions, UsageError, UsageErrorKind, DEFAULT_PERSISTENT_TIMEOUT, MAX_TIMEOUT,
};
use herd_core::model::{
    Forward, Persistence, Protocol, RealSpec, SchedFlags, SchedulerKind, ServiceKey, ServiceSpec,
    Timeouts, MAX_THRESHOLD, MAX_WEIGHT,
};

/// ipvsadm's commands, in the order of its `commands_v_options` table.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Cmd {
    Add,
    Edit,
    Del,
    Flush,
    List,
    AddDest,
    DelDest,
    EditDest,
    Timeout,
    Restore,
    Save,
    Zero,
}

impl Cmd {
    /// The names ipvsadm uses in its messages (`cmdnames`).
    fn name(self) -> &'static str {
        match self {
            Cmd::Add => "add-service",
            Cmd::Edit => "edit-service",
            Cmd::Del => "delete-service",
            Cmd::Flush => "flush",
            Cmd::List => "list",
            Cmd::AddDest => "add-server",
            Cmd::DelDest => "delete-server",
            Cmd::EditDest => "edit-server",
            Cmd::Timeout => "set",
            Cmd::Restore => "restore",
            Cmd::Save => "save",
            Cmd::Zero => "zero",
        }
    }

    /// The command's row of ipvsadm's table of legal options, one character per [`OPT_NAMES`]
    /// entry: `+` compulsory, `x` illegal, `1` exclusive, blank optional. (The columns of the
    /// options herd does not support are left out; their relative order is ipvsadm's.)
    fn row(self) -> &'static [u8; NOPT] {
        // Columns: -n -c svc -s -p -M -r fwd -w -x -y --timeout --daemon --stats --rate
        // --thresholds --persistent-conn --nosort --exact -b --tun-info --tun-type --tun-port
        // --tun-nocsum --tun-csum --tun-remcsum.
        match self {
            Cmd::Add | Cmd::Edit => b"xx+   xxxxxxxxxxxxx xxxxxx",
            Cmd::Del => b"xx+xxxxxxxxxxxxxxxxxxxxxxx",
            Cmd::List => b" 11xxxxxxxx11      x xxxxx",
            Cmd::AddDest | Cmd::EditDest => b"xx+xxx+    xxxxxxxxxx     ",
            Cmd::DelDest => b"xx+xxx+xxxxxxxxxxxxxxxxxxx",
            Cmd::Save => b" xxxxxxxxxxxxxxxxxxxxxxxxx",
            Cmd::Zero => b"xx xxxxxxxxxxxxxxxxxxxxxxx",
            Cmd::Flush | Cmd::Timeout | Cmd::Restore => b"xxxxxxxxxxxxxxxxxxxxxxxxxx",
        }
    }
}

const NOPT: usize = 26;

/// ipvsadm's option names (`optnames`) for the options herd supports, in ipvsadm's order.
const OPT_NAMES: [&str; NOPT] = [
    "numeric",
    "connection",
    "service-address",
    "scheduler",
    "persistent",
    "netmask",
    "real-server",
    "forwarding-method",
    "weight",
    "u-threshold",
    "l-threshold",
    "timeout",
    "daemon",
    "stats",
    "rate",
    "thresholds",
    "persistent-conn",
    "nosort",
    "exact",
    "sched-flags",
    "tun-info",
    "tun-type",
    "tun-port",
    "tun-nocsum",
    "tun-csum",
    "tun-remcsum",
];

/// Indexes into [`OPT_NAMES`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(usize)]
enum Opt {
    Numeric,
    Connection,
    Service,
    Scheduler,
    Persistent,
    Netmask,
    Server,
    Forward,
    Weight,
    UThreshold,
    LThreshold,
    Timeout,
    Daemon,
    Stats,
    Rate,
    Thresholds,
    PersistentConn,
    NoSort,
    Exact,
    SchedFlags,
    TunInfo,
    TunType,
    TunPort,
    TunNoCsum,
    TunCsum,
    TunRemCsum,
}

impl Opt {
    fn bit(self) -> u32 {
        1 << self as usize
    }
}

/// Every option of ipvsadm 1.31's popt table.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Id {
    AddService,
    EditService,
    DeleteService,
    Clear,
    List,
    Zero,
    AddServer,
    EditServer,
    DeleteServer,
    Set,
    Help,
    Version,
    Restore,
    Save,
    StartDaemon,
    StopDaemon,
    Tcp,
    Udp,
    Sctp,
    Fwmark,
    Scheduler,
    Persistent,
    Netmask,
    RealServer,
    Masquerading,
    Ipip,
    Gatewaying,
    Weight,
    UThreshold,
    LThreshold,
    Numeric,
    Connection,
    McastInterface,
    Syncid,
    Timeout,
    Daemon,
    Stats,
    Rate,
    Thresholds,
    PersistentConn,
    NoSort,
    Sort,
    Exact,
    Ipv6,
    Ops,
    Pe,
    SchedFlags,
    McastGroup,
    McastPort,
    McastTtl,
    SyncMaxlen,
    TunInfo,
    TunType,
    TunPort,
    TunNoCsum,
    TunCsum,
    TunRemCsum,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Arg {
    No,
    Required,
    Optional,
}

struct OptSpec {
    long: &'static str,
    short: Option<u8>,
    arg: Arg,
    id: Id,
}

const fn o(long: &'static str, short: u8, arg: Arg, id: Id) -> OptSpec {
    OptSpec {
        long,
        short: if short == 0 { None } else { Some(short) },
        arg,
        id,
    }
}

/// ipvsadm 1.31's `options_table`, in its order (popt takes the first match).
const OPTIONS: &[OptSpec] = &[
    o("add-service", b'A', Arg::No, Id::AddService),
    o("edit-service", b'E', Arg::No, Id::EditService),
    o("delete-service", b'D', Arg::No, Id::DeleteService),
    o("clear", b'C', Arg::No, Id::Clear),
    o("list", b'L', Arg::No, Id::List),
    o("list", b'l', Arg::No, Id::List),
    o("zero", b'Z', Arg::No, Id::Zero),
    o("add-server", b'a', Arg::No, Id::AddServer),
    o("edit-server", b'e', Arg::No, Id::EditServer),
    o("delete-server", b'd', Arg::No, Id::DeleteServer),
    o("set", 0, Arg::No, Id::Set),
    o("help", b'h', Arg::No, Id::Help),
    o("version", b'v', Arg::No, Id::Version),
    o("restore", b'R', Arg::No, Id::Restore),
    o("save", b'S', Arg::No, Id::Save),
    o("start-daemon", 0, Arg::Required, Id::StartDaemon),
    o("stop-daemon", 0, Arg::Required, Id::StopDaemon),
    o("tcp-service", b't', Arg::Required, Id::Tcp),
    o("udp-service", b'u', Arg::Required, Id::Udp),
    o("sctp-service", 0, Arg::Required, Id::Sctp),
    o("fwmark-service", b'f', Arg::Required, Id::Fwmark),
    o("scheduler", b's', Arg::Required, Id::Scheduler),
    o("persistent", b'p', Arg::Optional, Id::Persistent),
    o("netmask", b'M', Arg::Required, Id::Netmask),
    o("real-server", b'r', Arg::Required, Id::RealServer),
    o("masquerading", b'm', Arg::No, Id::Masquerading),
    o("ipip", b'i', Arg::No, Id::Ipip),
    o("gatewaying", b'g', Arg::No, Id::Gatewaying),
    o("weight", b'w', Arg::Required, Id::Weight),
    o("u-threshold", b'x', Arg::Required, Id::UThreshold),
    o("l-threshold", b'y', Arg::Required, Id::LThreshold),
    o("numeric", b'n', Arg::No, Id::Numeric),
    o("connection", b'c', Arg::No, Id::Connection),
    o("mcast-interface", 0, Arg::Required, Id::McastInterface),
    o("syncid", 0, Arg::Required, Id::Syncid),
    o("timeout", 0, Arg::No, Id::Timeout),
    o("daemon", 0, Arg::No, Id::Daemon),
    o("stats", 0, Arg::No, Id::Stats),
    o("rate", 0, Arg::No, Id::Rate),
    o("thresholds", 0, Arg::No, Id::Thresholds),
    o("persistent-conn", 0, Arg::No, Id::PersistentConn),
    o("nosort", 0, Arg::No, Id::NoSort),
    o("sort", 0, Arg::No, Id::Sort),
    o("exact", b'X', Arg::No, Id::Exact),
    o("ipv6", b'6', Arg::No, Id::Ipv6),
    o("ops", b'o', Arg::No, Id::Ops),
    o("pe", 0, Arg::Required, Id::Pe),
    o("sched-flags", b'b', Arg::Required, Id::SchedFlags),
    o("mcast-group", 0, Arg::Required, Id::McastGroup),
    o("mcast-port", 0, Arg::Required, Id::McastPort),
    o("mcast-ttl", 0, Arg::Required, Id::McastTtl),
    o("sync-maxlen", 0, Arg::Required, Id::SyncMaxlen),
    o("tun-info", 0, Arg::No, Id::TunInfo),
    o("tun-type", 0, Arg::Required, Id::TunType),
    o("tun-port", 0, Arg::Required, Id::TunPort),
    o("tun-nocsum", 0, Arg::No, Id::TunNoCsum),
    o("tun-csum", 0, Arg::No, Id::TunCsum),
    o("tun-remcsum", 0, Arg::No, Id::TunRemCsum),
];

/// One option as popt returns it: which, its value, and the argument it came from (popt names
/// that argument in its error messages).
struct Got<'a> {
    id: Id,
    value: Option<String>,
    token: &'a str,
}

/// popt's reading of the arguments, one option at a time; non-option arguments are collected.
struct Popt<'a> {
    args: &'a [String],
    next: usize,
    /// The rest of a cluster of short options (`-Ln` → `n`) and the argument it belongs to.
    cluster: Option<(&'a str, usize)>,
    rest_are_args: bool,
    leftovers: Vec<String>,
    /// Accept the compatibility forms `-R ADDR` and `w N` of old ipvsadm tutorials.
    compat_dest: bool,
}

/// popt's error codes, as it prints them.
#[derive(Debug)]
enum PoptError {
    Unknown,
    MissingArg,
    UnwantedArg,
}

impl PoptError {
    fn text(&self) -> &'static str {
        match self {
            PoptError::Unknown => "unknown option",
            PoptError::MissingArg => "missing argument",
            PoptError::UnwantedArg => "option does not take an argument",
        }
    }
}

impl<'a> Popt<'a> {
    fn new(args: &'a [String]) -> Self {
        Popt {
            args,
            next: 0,
            cluster: None,
            rest_are_args: false,
            leftovers: Vec::new(),
            compat_dest: false,
        }
    }

    /// The next option, `Ok(None)` at the end, or popt's error with the offending argument.
    fn next_opt(&mut self) -> Result<Option<Got<'a>>, (PoptError, &'a str)> {
        if let Some((rest, idx)) = self.cluster.take() {
            return self.short(rest, idx).map(Some);
        }
        while self.next < self.args.len() {
            let idx = self.next;
            let tok = self.args[idx].as_str();
            self.next += 1;
            if self.rest_are_args {
                self.leftovers.push(tok.to_string());
                continue;
            }
            if tok == "--" {
                self.rest_are_args = true;
                continue;
            }
            if self.compat_dest {
                let following = self.args.get(self.next).map(String::as_str);
                match (tok, following) {
                    ("-R", Some(v)) if !v.starts_with('-') => {
                        self.next += 1;
                        return Ok(Some(Got {
                            id: Id::RealServer,
                            value: Some(v.to_string()),
                            token: tok,
                        }));
                    }
                    ("w", Some(v)) => {
                        self.next += 1;
                        return Ok(Some(Got {
                            id: Id::Weight,
                            value: Some(v.to_string()),
                            token: tok,
                        }));
                    }
                    _ => {}
                }
            }
            if let Some(long) = tok.strip_prefix("--") {
                return self.long(long, tok).map(Some);
            }
            if tok.len() > 1 && tok.starts_with('-') {
                return self.short(&tok[1..], idx).map(Some);
            }
            self.leftovers.push(tok.to_string());
        }
        Ok(None)
    }

    fn long(&mut self, body: &'a str, tok: &'a str) -> Result<Got<'a>, (PoptError, &'a str)> {
        let (name, inline) = match body.split_once('=') {
            Some((n, v)) => (n, Some(v)),
            None => (body, None),
        };
        let spec = OPTIONS
            .iter()
            .find(|s| s.long == name)
            .ok_or((PoptError::Unknown, tok))?;
        let value = match (spec.arg, inline) {
            (Arg::No, Some(_)) => return Err((PoptError::UnwantedArg, tok)),
            (Arg::No, None) => None,
            (_, Some(v)) => Some(v.to_string()),
            (Arg::Required, None) => {
                Some(self.take_required().ok_or((PoptError::MissingArg, tok))?)
            }
            (Arg::Optional, None) => self.take_optional(),
        };
        Ok(Got {
            id: spec.id,
            value,
            token: tok,
        })
    }

    fn short(&mut self, rest: &'a str, idx: usize) -> Result<Got<'a>, (PoptError, &'a str)> {
        let tok = self.args[idx].as_str();
        let c = rest.as_bytes()[0];
        let spec = OPTIONS
            .iter()
            .find(|s| s.short == Some(c))
            .ok_or((PoptError::Unknown, tok))?;
        let after = &rest[1..];
        let value = match spec.arg {
            Arg::No => {
                if !after.is_empty() {
                    self.cluster = Some((after, idx));
                }
                None
            }
            _ if !after.is_empty() => Some(after.strip_prefix('=').unwrap_or(after).to_string()),
            Arg::Required => Some(self.take_required().ok_or((PoptError::MissingArg, tok))?),
            Arg::Optional => self.take_optional(),
        };
        Ok(Got {
            id: spec.id,
            value,
            token: tok,
        })
    }

    fn take_required(&mut self) -> Option<String> {
        let v = self.args.get(self.next)?.clone();
        self.next += 1;
        Some(v)
    }

    fn take_optional(&mut self) -> Option<String> {
        let v = self
            .args
            .get(self.next)
            .filter(|v| !v.starts_with('-'))?
            .clone();
        self.next += 1;
        Some(v)
    }
}

/// A persistence netmask as read by `-M`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mask {
    V4(u8),
    V6(u8),
}

/// What the options said, before ipvsadm's checks turn it into a [`Command`].
struct Entry {
    cmd: Cmd,
    options: u32,
    protocol: Option<Protocol>,
    svc_ip: Option<IpAddr>,
    svc_port: u16,
    scheduler: Option<String>,
    persistent: Option<u32>,
    netmask: Option<Mask>,
    dest: Option<(IpAddr, Option<u16>)>,
    forward: Forward,
    weight: u32,
    u_threshold: u32,
    l_threshold: u32,
    sched_flags: String,
    list: ListOptions,
}

impl Entry {
    fn new(cmd: Cmd) -> Self {
        Entry {
            cmd,
            options: 0,
            protocol: None,
            svc_ip: None,
            svc_port: 0,
            scheduler: None,
            persistent: None,
            netmask: None,
            dest: None,
            forward: Forward::Route,
            weight: 1,
            u_threshold: 0,
            l_threshold: 0,
            sched_flags: String::new(),
            list: ListOptions::default(),
        }
    }

    fn has(&self, opt: Opt) -> bool {
        self.options & opt.bit() != 0
    }

    /// ipvsadm's `set_option`: each option at most once.
    fn set(&mut self, opt: Opt) -> Result<(), UsageError> {
        if self.has(opt) {
            return Err(UsageError::invalid(format!(
                "multiple '{}' options specified",
                OPT_NAMES[opt as usize]
            )));
        }
        self.options |= opt.bit();
        Ok(())
    }

    fn service_is_v6(&self) -> bool {
        matches!(self.svc_ip, Some(IpAddr::V6(_)))
    }
}

fn invalid(msg: &str) -> UsageError {
    UsageError::invalid(msg)
}

/// ipvsadm's `parse_timeout`.
fn parse_timeout(buf: &str, min: u32) -> Result<u32, UsageError> {
    string_to_number(buf, i64::from(min), i64::from(MAX_TIMEOUT))
        .and_then(|n| u32::try_from(n).ok())
        .ok_or_else(|| UsageError::invalid(format!("invalid timeout value `{buf}' specified")))
}

fn number(buf: &str, max: u32, msg: &str) -> Result<u32, UsageError> {
    string_to_number(buf, 0, i64::from(max))
        .and_then(|n| u32::try_from(n).ok())
        .ok_or_else(|| invalid(msg))
}

/// Parses ipvsadm's arguments (without the program name) with no name lookups: hosts and ports
/// must be numeric. See [`parse_args_with`].
pub fn parse_args(args: &[String]) -> Result<Command, UsageError> {
    parse_args_with(args, &NumericOnly)
}

/// Parses ipvsadm's arguments (without the program name, e.g. `["-A", "-t", "10.0.0.1:80"]`).
///
/// No arguments at all means `-L`, as with ipvsadm. Host and port names are looked up with
/// `resolver`. Besides ipvsadm's own forms, `-a`/`-e`/`-d` accept `-R ADDR` for `-r ADDR` and a
/// bare `w N` for `-w N`, as some old tutorials write them. A real server given without a port
/// takes the service's port; a port given is kept whatever the forwarding method (ipvsadm would
/// replace it with the service's port for `-g` and `-i`).
pub fn parse_args_with(args: &[String], resolver: &dyn Resolver) -> Result<Command, UsageError> {
    if args.is_empty() {
        return Ok(Command::List(ListOptions::default()));
    }
    let mut popt = Popt::new(args);

    // The first option must be the command.
    let first = match popt.next_opt() {
        Ok(Some(g)) => g,
        Ok(None) | Err(_) => return Err(UsageError::try_help()),
    };
    let cmd = match first.id {
        Id::AddService => Cmd::Add,
        Id::EditService => Cmd::Edit,
        Id::DeleteService => Cmd::Del,
        Id::AddServer => Cmd::AddDest,
        Id::EditServer => Cmd::EditDest,
        Id::DeleteServer => Cmd::DelDest,
        Id::Clear => Cmd::Flush,
        Id::List => Cmd::List,
        Id::Zero => Cmd::Zero,
        Id::Set => Cmd::Timeout,
        Id::Restore => Cmd::Restore,
        Id::Save => Cmd::Save,
        Id::Help => return Ok(Command::Help),
        Id::Version => return Ok(Command::Version),
        Id::StartDaemon | Id::StopDaemon => {
            return Err(UsageError::unsupported(
                "the connection synchronization daemon (--start-daemon, --stop-daemon) is",
            ))
        }
        _ => return Err(UsageError::try_help()),
    };
    popt.compat_dest = matches!(cmd, Cmd::AddDest | Cmd::EditDest | Cmd::DelDest);
    let mut e = Entry::new(cmd);

    loop {
        let got = match popt.next_opt() {
            Ok(Some(g)) => g,
            Ok(None) => break,
            Err((err, tok)) => {
                return Err(UsageError::new(
                    UsageErrorKind::BadOption,
                    format!("{tok}: {}", err.text()),
                ))
            }
        };
        option(&mut e, got, resolver)?;
    }

    let mut leftovers = popt.leftovers.into_iter();
    let mut timeouts = Timeouts {
        tcp: 0,
        tcp_fin: 0,
        udp: 0,
    };
    if cmd == Cmd::Timeout {
        let (Some(tcp), Some(fin), Some(udp)) =
            (leftovers.next(), leftovers.next(), leftovers.next())
        else {
            return Err(invalid("--set option requires 3 timeout values"));
        };
        timeouts = Timeouts {
            tcp: parse_timeout(&tcp, 0)?,
            tcp_fin: parse_timeout(&fin, 0)?,
            udp: parse_timeout(&udp, 0)?,
        };
    }
    if let Some(extra) = leftovers.next() {
        return Err(UsageError::invalid(format!("unexpected argument {extra}")));
    }

    let sched_name = match e.scheduler.as_deref() {
        None | Some("") => "wlc",
        Some(s) => s,
    }
    .to_string();
    let sched_flags = if e.sched_flags.is_empty() {
        SchedFlags::default()
    } else {
        parse_sched_flags(&sched_name, &e.sched_flags)?
    };

    generic_opt_check(&e)?;

    build(e, &sched_name, sched_flags, timeouts)
}

/// One option of the command's option loop (ipvsadm's `parse_options`).
fn option(e: &mut Entry, got: Got<'_>, resolver: &dyn Resolver) -> Result<(), UsageError> {
    let has_value = got.value.is_some();
    let value = got.value.unwrap_or_default();
    match got.id {
        Id::Tcp | Id::Udp => {
            e.set(Opt::Service)?;
            let protocol = if got.id == Id::Tcp {
                Protocol::Tcp
            } else {
                Protocol::Udp
            };
            e.protocol = Some(protocol);
            let hp = parse_service(&value, Some(protocol), resolver)
                .ok_or_else(|| invalid("illegal virtual server address[:port] specified"))?;
            e.svc_ip = Some(hp.ip);
            if let Some(p) = hp.port {
                e.svc_port = p;
            }
            if hp.ip.is_ipv6() {
                // parse_service resets the persistence granularity of an IPv6 service.
                e.netmask = Some(Mask::V6(128));
            }
        }
        Id::Scheduler => {
            e.set(Opt::Scheduler)?;
            e.scheduler = Some(value);
        }
        Id::Persistent => {
            e.set(Opt::Persistent)?;
            e.persistent = Some(if has_value {
                parse_timeout(&value, 1)?
            } else {
                DEFAULT_PERSISTENT_TIMEOUT
            });
        }
        Id::Netmask => {
            e.set(Opt::Netmask)?;
            if e.service_is_v6() {
                let n = atoi(&value);
                if !(1..=128).contains(&n) {
                    return Err(invalid("illegal ipv6 netmask specified"));
                }
                e.netmask = Some(Mask::V6(n as u8));
            } else {
                // ipvsadm takes any address as a mask; herd needs a prefix.
                let prefix = parse_netmask_v4(&value, resolver)
                    .and_then(mask_prefix)
                    .ok_or_else(|| invalid("illegal virtual server persistent mask specified"))?;
                e.netmask = Some(Mask::V4(prefix));
            }
        }
        Id::RealServer => {
            e.set(Opt::Server)?;
            let hp = parse_service(&value, e.protocol, resolver)
                .ok_or_else(|| invalid("illegal real server address[:port] specified"))?;
            e.dest = Some((hp.ip, hp.port));
        }
        Id::Ipip | Id::Gatewaying | Id::Masquerading => {
            e.set(Opt::Forward)?;
            e.forward = match got.id {
                Id::Ipip => Forward::Tunnel,
                Id::Masquerading => Forward::Masq,
                _ => Forward::Route,
            };
        }
        Id::Weight => {
            e.set(Opt::Weight)?;
            e.weight = number(&value, MAX_WEIGHT, "illegal weight specified")?;
        }
        Id::UThreshold => {
            e.set(Opt::UThreshold)?;
            e.u_threshold = number(&value, MAX_THRESHOLD, "illegal u_threshold specified")?;
        }
        Id::LThreshold => {
            e.set(Opt::LThreshold)?;
            e.l_threshold = number(&value, MAX_THRESHOLD, "illegal l_threshold specified")?;
        }
        _ => return flag_option(e, got.id, got.token, value),
    }
    Ok(())
}

/// The options that set a listing flag or a tunnel detail, and the ones herd refuses.
fn flag_option(e: &mut Entry, id: Id, token: &str, value: String) -> Result<(), UsageError> {
    match id {
        Id::Connection => {
            e.set(Opt::Connection)?;
            e.list.connections = true;
        }
        Id::Numeric => {
            e.set(Opt::Numeric)?;
            e.list.numeric = true;
        }
        Id::Timeout => {
            e.set(Opt::Timeout)?;
            e.list.timeout = true;
        }
        Id::Daemon => {
            e.set(Opt::Daemon)?;
            e.list.daemon = true;
        }
        Id::Stats => {
            e.set(Opt::Stats)?;
            e.list.stats = true;
        }
        Id::Rate => {
            e.set(Opt::Rate)?;
            e.list.rate = true;
        }
        Id::Thresholds => {
            e.set(Opt::Thresholds)?;
            e.list.thresholds = true;
        }
        Id::PersistentConn => {
            e.set(Opt::PersistentConn)?;
            e.list.persistent_conn = true;
        }
        Id::NoSort => {
            e.set(Opt::NoSort)?;
            e.list.sort = false;
        }
        Id::Sort => {}
        Id::Exact => {
            e.set(Opt::Exact)?;
            e.list.exact = true;
        }
        Id::TunInfo => {
            e.set(Opt::TunInfo)?;
            e.list.tun_info = true;
        }
        Id::SchedFlags => {
            e.set(Opt::SchedFlags)?;
            e.sched_flags = value;
        }
        Id::TunType => {
            e.set(Opt::TunType)?;
            match value.as_str() {
                "ipip" => {}
                "gue" | "gre" => {
                    return Err(UsageError::unsupported(&format!(
                        "tunnel type `{value}' (--tun-type) is"
                    )))
                }
                _ => return Err(invalid("illegal tunnel type specified")),
            }
        }
        Id::TunPort => {
            e.set(Opt::TunPort)?;
            if string_to_number(&value, 1, 65535).is_none() {
                return Err(invalid("illegal tunnel port specified"));
            }
        }
        Id::TunNoCsum => e.set(Opt::TunNoCsum)?,
        Id::TunCsum => e.set(Opt::TunCsum)?,
        Id::TunRemCsum => e.set(Opt::TunRemCsum)?,
        _ => return Err(refused(id, token)),
    }
    Ok(())
}

/// Why ipvsadm's options that herd does not take, and commands in an option's place, are
/// refused.
fn refused(id: Id, token: &str) -> UsageError {
    match id {
        Id::Ipv6 => invalid("-6 used before -f\n"),
        Id::Fwmark => UsageError::unsupported("firewall-mark services (-f, --fwmark-service) are"),
        Id::Sctp => UsageError::unsupported("SCTP services (--sctp-service) are"),
        Id::Ops => UsageError::unsupported("one-packet scheduling (-o, --ops) is"),
        Id::Pe => UsageError::unsupported("persistence engines (--pe) are"),
        Id::McastInterface
        | Id::Syncid
        | Id::McastGroup
        | Id::McastPort
        | Id::McastTtl
        | Id::SyncMaxlen => {
            UsageError::unsupported("the connection synchronization daemon and its options are")
        }
        // Commands are not options here; the service and server options never come here
        // (`option` takes them), nor do the flags (`flag_option` takes them).
        _ => UsageError::invalid(format!("invalid option `{token}'")),
    }
}

/// ipvsadm's `parse_sched_flags`, for the scheduler given (or `wlc`).
fn parse_sched_flags(sched: &str, arg: &str) -> Result<SchedFlags, UsageError> {
    let mut flags = SchedFlags::default();
    let parts: Vec<&str> = arg.split(',').filter(|p| !p.is_empty()).collect();
    if parts.is_empty() {
        // ipvsadm crashes on a -b made of commas only.
        return Err(UsageError::invalid(format!(
            "invalid scheduler flag `{arg}'"
        )));
    }
    for flag in parts {
        let needs = match flag {
            "flag-1" => {
                flags.fallback = true;
                None
            }
            "flag-2" => {
                flags.port = true;
                None
            }
            "sh-fallback" => {
                flags.fallback = true;
                Some("sh")
            }
            "sh-port" => {
                flags.port = true;
                Some("sh")
            }
            "mh-fallback" => {
                flags.fallback = true;
                Some("mh")
            }
            "mh-port" => {
                flags.port = true;
                Some("mh")
            }
            "flag-3" => return Err(UsageError::unsupported("scheduler flag `flag-3' is")),
            _ => {
                return Err(UsageError::invalid(format!(
                    "invalid scheduler flag `{flag}'"
                )))
            }
        };
        if needs.is_some_and(|s| s != sched) {
            return Err(UsageError::invalid(format!(
                "incompatible scheduler flag `{flag}'"
            )));
        }
    }
    Ok(flags)
}

/// ipvsadm's `generic_opt_check` against the command's row of the option table.
fn generic_opt_check(e: &Entry) -> Result<(), UsageError> {
    let row = e.cmd.row();
    let mut last: Option<usize> = None;
    for (j, &rule) in row.iter().enumerate() {
        let set = e.options & (1 << j) != 0;
        if !set {
            if rule == b'+' {
                return Err(UsageError::invalid(format!(
                    "You need to supply the '{}' option for the '{}' command",
                    OPT_NAMES[j],
                    e.cmd.name()
                )));
            }
            continue;
        }
        match rule {
            b'x' => {
                return Err(UsageError::invalid(format!(
                    "Illegal '{}' option with the '{}' command",
                    OPT_NAMES[j],
                    e.cmd.name()
                )))
            }
            b'1' => match last {
                None => last = Some(j),
                Some(l) => {
                    return Err(UsageError::invalid(format!(
                        "The option '{}' conflicts with the '{}' option in the '{}' command",
                        OPT_NAMES[j],
                        OPT_NAMES[l],
                        e.cmd.name()
                    )))
                }
            },
            _ => {}
        }
    }
    Ok(())
}

/// The rest of ipvsadm's `process_options`: per-command checks, then the command.
fn build(
    e: Entry,
    sched_name: &str,
    sched_flags: SchedFlags,
    timeouts: Timeouts,
) -> Result<Command, UsageError> {
    let key = e.svc_ip.zip(e.protocol).map(|(ip, protocol)| ServiceKey {
        protocol,
        address: SocketAddr::new(ip, e.svc_port),
    });
    let need_key = || key.ok_or_else(UsageError::try_help);
    match e.cmd {
        Cmd::Add | Cmd::Edit => {
            let key = need_key()?;
            if e.svc_port == 0 && e.persistent.is_none() {
                return Err(invalid("Zero port specified for non-persistent service"));
            }
            let scheduler: SchedulerKind = sched_name.parse().map_err(|_| {
                UsageError::new(
                    UsageErrorKind::Rejected,
                    "Scheduler or persistence engine not found",
                )
            })?;
            let v6 = key.address.is_ipv6();
            let persistence = e.persistent.map(|timeout| Persistence {
                timeout,
                prefix: match e.netmask {
                    Some(Mask::V6(p)) if v6 => p,
                    Some(Mask::V4(p)) if !v6 => p,
                    _ if v6 => 128,
                    _ => 32,
                },
            });
            let spec = ServiceSpec {
                key,
                name: None,
                scheduler,
                sched_flags,
                persistence,
                proxy_protocol: false,
            };
            Ok(if e.cmd == Cmd::Add {
                Command::AddService(spec)
            } else {
                Command::EditService(spec)
            })
        }
        Cmd::Del => Ok(Command::DeleteService(need_key()?)),
        Cmd::Flush => Ok(Command::Clear),
        Cmd::Zero => Ok(Command::Zero { service: key }),
        Cmd::Save => Ok(Command::Save {
            numeric: e.list.numeric,
        }),
        Cmd::Restore => Ok(Command::Restore),
        Cmd::Timeout => Ok(Command::SetTimeouts(timeouts)),
        Cmd::List => {
            let l = e.list;
            if ((l.connections || l.timeout || l.daemon) && (l.stats || l.rate || l.thresholds))
                || ((l.timeout || l.daemon) && l.persistent_conn)
            {
                return Err(invalid("options conflicts in the list command"));
            }
            Ok(Command::List(ListOptions { service: key, ..l }))
        }
        Cmd::AddDest | Cmd::EditDest | Cmd::DelDest => {
            let service = need_key()?;
            let (ip, port) = e.dest.ok_or_else(UsageError::try_help)?;
            let address = SocketAddr::new(ip, port.unwrap_or(e.svc_port));
            if e.cmd == Cmd::DelDest {
                return Ok(Command::DeleteReal { service, address });
            }
            if ip.is_ipv6() != service.address.is_ipv6() && e.forward != Forward::Tunnel {
                return Err(invalid(
                    "Different address family is allowed only for tunneling servers",
                ));
            }
            let tun_opts = [
                Opt::TunType,
                Opt::TunPort,
                Opt::TunNoCsum,
                Opt::TunCsum,
                Opt::TunRemCsum,
            ];
            if tun_opts.iter().any(|&o| e.has(o)) && e.forward != Forward::Tunnel {
                return Err(invalid("Tunnel options conflict with forward method"));
            }
            // ipvsadm's tunnel_opt_check for the one tunnel type herd has, ipip: no options.
            for o in [Opt::TunPort, Opt::TunNoCsum, Opt::TunCsum, Opt::TunRemCsum] {
                if e.has(o) {
                    return Err(UsageError::invalid(format!(
                        "Illegal '{}' option with the 'ipip' tunnel type",
                        OPT_NAMES[o as usize]
                    )));
                }
            }
            if e.l_threshold > e.u_threshold {
                // The kernel refuses it with ERANGE.
                return Err(UsageError::new(
                    UsageErrorKind::Rejected,
                    "Numerical result out of range",
                ));
            }
            let real = RealSpec {
                address,
                weight: e.weight,
                upper_threshold: e.u_threshold,
                lower_threshold: e.l_threshold,
                forward: e.forward,
            };
            Ok(if e.cmd == Cmd::AddDest {
                Command::AddReal { service, real }
            } else {
                Command::EditReal { service, real }
            })
        }
    }
}
