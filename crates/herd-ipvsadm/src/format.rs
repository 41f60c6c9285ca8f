//! ipvsadm's output: the listings of `-L`, the rules of `-S`, the connection table of `-L -c`
//! and the timeouts of `-L --timeout`, with ipvsadm's column widths and order.

use std::fmt::Write as _;
use std::net::IpAddr;

use super::resolve::{addrport_name, truncate_bytes, Resolver};
use super::{ListOptions, CONN_TAB_SIZE, IPVS_VERSION};
use herd_core::api::{ConnEntry, RealStatus, ServiceStatus};
use herd_core::model::{
    prefix_to_netmask, Forward, Protocol, SchedulerKind, ServiceSpec, Timeouts,
};

/// ipvsadm's `FMT_*` flags.
#[derive(Debug, Clone, Copy, Default)]
struct Fmt {
    numeric: bool,
    rule: bool,
    stats: bool,
    rate: bool,
    thresholds: bool,
    persistent_conn: bool,
    sort: bool,
    exact: bool,
    tun_info: bool,
}

impl Fmt {
    fn list(o: &ListOptions) -> Self {
        Fmt {
            numeric: o.numeric,
            rule: false,
            stats: o.stats,
            rate: o.rate,
            thresholds: o.thresholds,
            persistent_conn: o.persistent_conn,
            sort: o.sort,
            exact: o.exact,
            tun_info: o.tun_info,
        }
    }
}

/// The listing of `-L` (with `-n`, `--stats`, `--rate`, `--exact`, `--thresholds`,
/// `--persistent-conn`, `--tun-info`, `--nosort` as `opts` says).
///
/// Without [`ListOptions::service`] it starts with the version header and lists every service;
/// with one it lists only that service, without the header, as ipvsadm does. Services and real
/// servers are sorted as ipvsadm 1.31 sorts them (unless `--nosort`): IPv4 before IPv6, TCP
/// before UDP, then by address and port, with ipvsadm's comparison of addresses as a 32-bit
/// difference (so 200.0.0.1 comes before 10.0.0.1). Draining real servers (removed, still
/// carrying connections) are not listed, like the kernel's destinations in its trash.
pub fn format_list(
    services: &[ServiceStatus],
    opts: &ListOptions,
    resolver: &dyn Resolver,
) -> String {
    let fmt = Fmt::list(opts);
    let mut out = String::new();
    let mut list: Vec<&ServiceStatus> = services.iter().collect();
    if let Some(key) = opts.service {
        list.retain(|s| s.spec.key == key);
        list.truncate(1);
    } else {
        let _ = writeln!(
            out,
            "IP Virtual Server version {IPVS_VERSION} (size={CONN_TAB_SIZE})"
        );
        if fmt.sort {
            msort(&mut list, &|a, b| cmp_services(&a.spec, &b.spec));
        }
    }
    print_title(&mut out, fmt);
    for s in list {
        print_service_entry(&mut out, s, fmt, resolver);
    }
    out
}

/// The rules of `-S` (`-S -n` with `numeric`): one `-A` line per service, then one `-a` line
/// per real server, sorted as [`format_list`] sorts; `-R` reads them back.
///
/// ipvsadm does not save thresholds (`-x`, `-y`), so neither does this.
pub fn format_save(services: &[ServiceStatus], numeric: bool, resolver: &dyn Resolver) -> String {
    let fmt = Fmt {
        numeric,
        rule: true,
        sort: true,
        ..Fmt::default()
    };
    let mut list: Vec<&ServiceStatus> = services.iter().collect();
    msort(&mut list, &|a, b| cmp_services(&a.spec, &b.spec));
    let mut out = String::new();
    for s in list {
        print_service_entry(&mut out, s, fmt, resolver);
    }
    out
}

/// The output of `-L --timeout`.
pub fn format_timeouts(t: &Timeouts) -> String {
    format!(
        "Timeout (tcp tcpfin udp): {} {} {}\n",
        t.tcp, t.tcp_fin, t.udp
    )
}

/// The output of `-L --daemon`: one line per running sync daemon; herd runs none.
pub fn format_daemon() -> String {
    String::new()
}

/// The connection table of `-L -c` (with `-n` and `--persistent-conn` as `opts` says), entries
/// in the order given (ipvsadm prints the kernel's hash table order).
pub fn format_connections(
    conns: &[ConnEntry],
    opts: &ListOptions,
    resolver: &dyn Resolver,
) -> String {
    let mut out = String::from("IPVS connection entries\n");
    if opts.persistent_conn {
        let _ = writeln!(
            out,
            "pro expire {:<11} {:<18} {:<18} {:<18} {:<16} pe_data",
            "state", "source", "virtual", "destination", "pe name"
        );
    } else {
        let _ = writeln!(
            out,
            "pro expire {:<11} {:<18} {:<18} destination",
            "state", "source", "virtual"
        );
    }
    for c in conns {
        let name = |a: std::net::SocketAddr| {
            addrport_name(a.ip(), a.port(), Some(c.protocol), opts.numeric, resolver)
        };
        let expire = format!("{:02}:{:02}", c.expire_secs / 60, c.expire_secs % 60);
        // herd has no persistence engines, so the pe columns of an entry stay empty, as they do
        // for ipvsadm on a kernel entry without pe data.
        let _ = writeln!(
            out,
            "{:<3} {:<6} {:<11} {:<18} {:<18} {}",
            c.protocol.ipvs_name(),
            expire,
            c.state,
            name(c.client),
            name(c.virtual_addr),
            name(c.real)
        );
    }
    out
}

fn print_title(out: &mut String, fmt: Fmt) {
    const LOCAL: &str = "Prot LocalAddress:Port";
    const REMOTE: &str = "  -> RemoteAddress:Port";
    if fmt.stats {
        let _ = writeln!(
            out,
            "{LOCAL:<33} {:>8} {:>8} {:>8} {:>8} {:>8}\n{REMOTE}",
            "Conns", "InPkts", "OutPkts", "InBytes", "OutBytes"
        );
    } else if fmt.rate {
        let _ = writeln!(
            out,
            "{LOCAL:<33} {:>8} {:>8} {:>8} {:>8} {:>8}\n{REMOTE}",
            "CPS", "InPPS", "OutPPS", "InBPS", "OutBPS"
        );
    } else if fmt.thresholds {
        let _ = writeln!(
            out,
            "{LOCAL:<33} {:<10} {:<10} {:<10} {:<10}\n{REMOTE}",
            "Uthreshold", "Lthreshold", "ActiveConn", "InActConn"
        );
    } else if fmt.persistent_conn {
        let _ = writeln!(
            out,
            "{LOCAL:<33} {:<9} {:<11} {:<10} {:<10}\n{REMOTE}",
            "Weight", "PersistConn", "ActiveConn", "InActConn"
        );
    } else if fmt.tun_info {
        out.push_str(
            "Prot LocalAddress:Port Scheduler Flags\n  -> RemoteAddress:Port           Forward TunnelInfo    Weight ActiveConn InActConn\n",
        );
    } else if !fmt.rule {
        out.push_str(
            "Prot LocalAddress:Port Scheduler Flags\n  -> RemoteAddress:Port           Forward Weight ActiveConn InActConn\n",
        );
    }
}

/// ipvsadm's `print_largenum`: right-aligned in 9 columns, abbreviated with K/M/G/T unless
/// `--exact`.
fn largenum(out: &mut String, i: u64, exact: bool) {
    if exact {
        let s = i.to_string();
        let width = if s.len() <= 8 { 9 } else { s.len() + 1 };
        let _ = write!(out, "{s:>width$}");
    } else if i < 100_000_000 {
        let _ = write!(out, "{i:>9}");
    } else if i < 1_000_000_000 {
        let _ = write!(out, "{:>8}K", i / 1_000);
    } else if i < 100_000_000_000 {
        let _ = write!(out, "{:>8}M", i / 1_000_000);
    } else if i < 100_000_000_000_000 {
        let _ = write!(out, "{:>8}G", i / 1_000_000_000);
    } else {
        let _ = write!(out, "{:>8}T", i / 1_000_000_000_000);
    }
}

/// ipvsadm's `print_sched_flags`: names by scheduler, comma-separated; empty if none.
fn sched_flags_text(spec: &ServiceSpec) -> String {
    let f = spec.sched_flags;
    let (fallback, port) = match spec.scheduler {
        SchedulerKind::Sh => ("sh-fallback", "sh-port"),
        SchedulerKind::Mh => ("mh-fallback", "mh-port"),
        _ => ("flag-1", "flag-2"),
    };
    let mut names = Vec::new();
    if f.fallback {
        names.push(fallback);
    }
    if f.port {
        names.push(port);
    }
    names.join(",")
}

fn protocol_switch(p: Protocol) -> &'static str {
    match p {
        Protocol::Tcp => "-t",
        Protocol::Udp => "-u",
    }
}

fn print_service_entry(out: &mut String, s: &ServiceStatus, fmt: Fmt, resolver: &dyn Resolver) {
    let spec = &s.spec;
    let proto = spec.key.protocol;
    let v6 = spec.key.address.is_ipv6();
    let vname = addrport_name(
        spec.key.address.ip(),
        spec.key.address.port(),
        Some(proto),
        fmt.numeric,
        resolver,
    );
    let svc_name = if fmt.rule {
        format!("{} {vname}", protocol_switch(proto))
    } else {
        let mut n = format!("{:<4} {vname}", proto.ipvs_name());
        if !v6 {
            truncate_bytes(&mut n, 33);
        }
        n
    };
    let flags = sched_flags_text(spec);
    let mask = spec.persistence.and_then(|p| {
        let full = if v6 { 128 } else { 32 };
        (p.prefix != full).then(|| prefix_to_netmask(p.prefix, v6))
    });

    if fmt.rule {
        let _ = write!(out, "-A {svc_name} -s {}", spec.scheduler);
        if let Some(p) = spec.persistence {
            let _ = write!(out, " -p {}", p.timeout);
            if let Some(m) = &mask {
                let _ = write!(out, " -M {m}");
            }
        }
        if !flags.is_empty() {
            let _ = write!(out, " -b {flags}");
        }
    } else if fmt.stats {
        let _ = write!(out, "{svc_name:<33}");
        let st = &s.stats;
        for v in [st.conns, st.pkts_in, st.pkts_out, st.bytes_in, st.bytes_out] {
            largenum(out, v, fmt.exact);
        }
    } else if fmt.rate {
        let _ = write!(out, "{svc_name:<33}");
        let r = &s.rates;
        for v in [r.cps, r.pps_in, r.pps_out, r.bps_in, r.bps_out] {
            largenum(out, v, fmt.exact);
        }
    } else {
        let _ = write!(out, "{svc_name} {}", spec.scheduler);
        if !flags.is_empty() {
            let _ = write!(out, " ({flags})");
        }
        if let Some(p) = spec.persistence {
            let _ = write!(out, " persistent {}", p.timeout);
            if let Some(m) = &mask {
                let _ = write!(out, " mask {m}");
            }
        }
    }
    out.push('\n');

    let mut reals: Vec<&RealStatus> = s.reals.iter().filter(|r| r.listed()).collect();
    if fmt.sort {
        msort(&mut reals, &|a, b| {
            cmp_dests(
                a.spec.address.ip(),
                a.spec.address.port(),
                b.spec.address.ip(),
                b.spec.address.port(),
            )
        });
    }
    for r in reals {
        print_dest(out, &svc_name, proto, r, fmt, resolver);
    }
}

fn print_dest(
    out: &mut String,
    svc_name: &str,
    proto: Protocol,
    r: &RealStatus,
    fmt: Fmt,
    resolver: &dyn Resolver,
) {
    let spec = &r.spec;
    let mut dname = addrport_name(
        spec.address.ip(),
        spec.address.port(),
        Some(proto),
        fmt.numeric,
        resolver,
    );
    if !fmt.rule && !spec.address.is_ipv6() {
        truncate_bytes(&mut dname, 28);
    }
    if fmt.rule {
        let switch = match spec.forward {
            Forward::Masq => "-m",
            Forward::Tunnel => "-i",
            Forward::Route => "-g",
        };
        let _ = write!(out, "-a {svc_name} -r {dname} {switch} -w {}", spec.weight);
        if spec.forward == Forward::Tunnel {
            out.push_str(" --tun-type ipip");
        }
        out.push('\n');
    } else if fmt.stats {
        let _ = write!(out, "  -> {dname:<28}");
        let st = &r.stats;
        for v in [st.conns, st.pkts_in, st.pkts_out, st.bytes_in, st.bytes_out] {
            largenum(out, v, fmt.exact);
        }
        out.push('\n');
    } else if fmt.rate {
        let rt = &r.rates;
        let _ = write!(
            out,
            "  -> {dname:<28} {:>8} {:>8} {:>8}",
            rt.cps, rt.pps_in, rt.pps_out
        );
        largenum(out, rt.bps_in, fmt.exact);
        largenum(out, rt.bps_out, fmt.exact);
        out.push('\n');
    } else if fmt.thresholds {
        let _ = writeln!(
            out,
            "  -> {dname:<28} {:<10} {:<10} {:<10} {:<10}",
            spec.upper_threshold, spec.lower_threshold, r.active_conns, r.inactive_conns
        );
    } else if fmt.persistent_conn {
        let _ = writeln!(
            out,
            "  -> {dname:<28} {:<9} {:<11} {:<10} {:<10}",
            spec.weight, r.persistent_conns, r.active_conns, r.inactive_conns
        );
    } else if fmt.tun_info {
        let info = if spec.forward == Forward::Tunnel {
            "ipip"
        } else {
            "n/a"
        };
        let _ = writeln!(
            out,
            "  -> {dname:<28} {:<7} {:<13} {:<6} {:<10} {:<10}",
            spec.forward.ipvs_name(),
            info,
            spec.weight,
            r.active_conns,
            r.inactive_conns
        );
    } else {
        let _ = writeln!(
            out,
            "  -> {dname:<28} {:<7} {:<6} {:<10} {:<10}",
            spec.forward.ipvs_name(),
            spec.weight,
            r.active_conns,
            r.inactive_conns
        );
    }
}

/// An address as libipvs compares it: four 32-bit words in host order, IPv4 in the first.
fn words(ip: IpAddr) -> [u32; 4] {
    match ip {
        IpAddr::V4(a) => [u32::from(a), 0, 0, 0],
        IpAddr::V6(a) => {
            let s = a.segments();
            [0, 1, 2, 3].map(|i| (u32::from(s[2 * i]) << 16) | u32::from(s[2 * i + 1]))
        }
    }
}

/// libipvs' address comparison: the difference of words as a C `int`, so it wraps around for
/// addresses 2^31 or more apart. The family of the first address decides how many words count.
fn cmp_addr(a: IpAddr, b: IpAddr) -> i32 {
    let (wa, wb) = (words(a), words(b));
    let n = if a.is_ipv6() { 4 } else { 1 };
    for i in 0..n {
        let r = wa[i].wrapping_sub(wb[i]) as i32;
        if r != 0 {
            return r;
        }
    }
    0
}

/// libipvs' `ipvs_cmp_services`: family, protocol, address, port.
fn cmp_services(a: &ServiceSpec, b: &ServiceSpec) -> i32 {
    let af = |s: &ServiceSpec| if s.key.address.is_ipv6() { 10 } else { 2 };
    let proto = |s: &ServiceSpec| match s.key.protocol {
        Protocol::Tcp => 6,
        Protocol::Udp => 17,
    };
    let r = af(a) - af(b);
    if r != 0 {
        return r;
    }
    let r = proto(a) - proto(b);
    if r != 0 {
        return r;
    }
    let r = cmp_addr(a.key.address.ip(), b.key.address.ip());
    if r != 0 {
        return r;
    }
    i32::from(a.key.address.port()) - i32::from(b.key.address.port())
}

/// libipvs' `ipvs_cmp_dests`: address, port.
fn cmp_dests(a: IpAddr, ap: u16, b: IpAddr, bp: u16) -> i32 {
    let r = cmp_addr(a, b);
    if r != 0 {
        return r;
    }
    i32::from(ap) - i32::from(bp)
}

/// glibc's `qsort` as ipvsadm gets it (glibc 2.36: a top-down merge sort that takes from the
/// left half on ties). Followed step by step because libipvs' comparison is not transitive, so
/// another algorithm could order some tables differently.
fn msort<T: Copy>(v: &mut [T], cmp: &dyn Fn(&T, &T) -> i32) {
    let n = v.len();
    if n <= 1 {
        return;
    }
    let n1 = n / 2;
    let (b1, b2) = v.split_at_mut(n1);
    msort(b1, cmp);
    msort(b2, cmp);
    let mut tmp = Vec::with_capacity(n);
    let (mut i, mut j) = (0, 0);
    while i < b1.len() && j < b2.len() {
        if cmp(&b1[i], &b2[j]) <= 0 {
            tmp.push(b1[i]);
            i += 1;
        } else {
            tmp.push(b2[j]);
            j += 1;
        }
    }
    tmp.extend_from_slice(&b1[i..]);
    let done = tmp.len();
    v[..done].copy_from_slice(&tmp);
}
