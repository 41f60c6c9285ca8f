//! Names of hosts and ports, and the C library's number and address parsers as ipvsadm uses
//! them (`inet_aton`, `inet_ntop`, `strtol`, `atoi`).

use std::fmt::Write as _;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use herd_core::model::Protocol;

/// Looks up names for the ipvsadm front end. Every method may answer `None`; then numbers are
/// used, as ipvsadm does when a lookup fails.
///
/// herd implements it from `/etc/services` and `/etc/hosts` only ([`HostTables`]), never DNS.
pub trait Resolver {
    /// The service name of a port (`getservbyport`), for listings without `-n`.
    fn port_name(&self, _port: u16, _protocol: Protocol) -> Option<String> {
        None
    }
    /// The host name of an address (`gethostbyaddr`), for listings without `-n`.
    fn host_name(&self, _addr: IpAddr) -> Option<String> {
        None
    }
    /// The port of a service name (`getservbyname`), for arguments like `VIP:http`.
    fn port_by_name(&self, _name: &str, _protocol: Protocol) -> Option<u16> {
        None
    }
    /// The IPv4 address of a host name (`gethostbyname`), for arguments like `web1:80`.
    fn host_by_name(&self, _name: &str) -> Option<Ipv4Addr> {
        None
    }
}

/// A resolver that knows no names: everything stays numeric.
#[derive(Debug, Clone, Copy, Default)]
pub struct NumericOnly;

impl Resolver for NumericOnly {}

#[derive(Debug, Clone, PartialEq, Eq)]
struct ServiceEntry {
    name: String,
    aliases: Vec<String>,
    port: u16,
    protocol: Protocol,
}

#[derive(Debug, Clone, PartialEq, Eq)]
struct HostEntry {
    addr: IpAddr,
    name: String,
    aliases: Vec<String>,
}

/// Names from the text of `/etc/services` and `/etc/hosts`, looked up the way the C library's
/// `files` backend does: the first matching line wins; host names match without regard to case.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct HostTables {
    services: Vec<ServiceEntry>,
    hosts: Vec<HostEntry>,
}

fn strip_comment(line: &str) -> &str {
    line.split('#').next().unwrap_or("")
}

impl HostTables {
    pub fn new() -> Self {
        HostTables::default()
    }

    /// Adds the entries of a `services(5)` file (`name port/protocol [aliases…]`).
    pub fn add_services(&mut self, text: &str) -> &mut Self {
        for line in text.lines() {
            let mut fields = strip_comment(line).split_whitespace();
            let (Some(name), Some(port_proto)) = (fields.next(), fields.next()) else {
                continue;
            };
            let Some((port, proto)) = port_proto.split_once('/') else {
                continue;
            };
            let (Ok(port), Ok(protocol)) = (port.parse::<u16>(), proto.parse::<Protocol>()) else {
                continue;
            };
            self.services.push(ServiceEntry {
                name: name.to_string(),
                aliases: fields.map(str::to_string).collect(),
                port,
                protocol,
            });
        }
        self
    }

    /// Adds the entries of a `hosts(5)` file (`address name [aliases…]`).
    pub fn add_hosts(&mut self, text: &str) -> &mut Self {
        for line in text.lines() {
            let mut fields = strip_comment(line).split_whitespace();
            let (Some(addr), Some(name)) = (fields.next(), fields.next()) else {
                continue;
            };
            let Ok(addr) = addr.parse::<IpAddr>() else {
                continue;
            };
            self.hosts.push(HostEntry {
                addr,
                name: name.to_string(),
                aliases: fields.map(str::to_string).collect(),
            });
        }
        self
    }
}

impl Resolver for HostTables {
    fn port_name(&self, port: u16, protocol: Protocol) -> Option<String> {
        self.services
            .iter()
            .find(|s| s.port == port && s.protocol == protocol)
            .map(|s| s.name.clone())
    }

    fn host_name(&self, addr: IpAddr) -> Option<String> {
        self.hosts
            .iter()
            .find(|h| h.addr == addr)
            .map(|h| h.name.clone())
    }

    fn port_by_name(&self, name: &str, protocol: Protocol) -> Option<u16> {
        self.services
            .iter()
            .find(|s| {
                s.protocol == protocol && (s.name == name || s.aliases.iter().any(|a| a == name))
            })
            .map(|s| s.port)
    }

    fn host_by_name(&self, name: &str) -> Option<Ipv4Addr> {
        self.hosts.iter().find_map(|h| match h.addr {
            IpAddr::V4(v4)
                if h.name.eq_ignore_ascii_case(name)
                    || h.aliases.iter().any(|a| a.eq_ignore_ascii_case(name)) =>
            {
                Some(v4)
            }
            _ => None,
        })
    }
}

/// C's `isspace` in the "C" locale.
fn is_c_space(b: u8) -> bool {
    matches!(b, b' ' | b'\t' | b'\n' | 0x0b | 0x0c | b'\r')
}

/// `strtol(s, &end, 10)` that must consume the whole string: ipvsadm's `string_to_number`
/// without the range check. `None` when nothing or not everything was parsed, or on overflow.
pub(crate) fn strtol_exact(s: &str) -> Option<i64> {
    let b = s.as_bytes();
    let mut i = 0;
    while i < b.len() && is_c_space(b[i]) {
        i += 1;
    }
    let neg = match b.get(i) {
        Some(b'-') => {
            i += 1;
            true
        }
        Some(b'+') => {
            i += 1;
            false
        }
        _ => false,
    };
    let start = i;
    let mut v: i64 = 0;
    while i < b.len() && b[i].is_ascii_digit() {
        v = v.checked_mul(10)?.checked_add(i64::from(b[i] - b'0'))?;
        i += 1;
    }
    if i == start || i != b.len() {
        return None;
    }
    Some(if neg { -v } else { v })
}

/// ipvsadm's `string_to_number`: a whole decimal number within `min..=max`.
pub(crate) fn string_to_number(s: &str, min: i64, max: i64) -> Option<i64> {
    strtol_exact(s).filter(|n| (min..=max).contains(n))
}

/// C's `atoi`: leading blanks, a sign, digits; stops at the first other character; 0 if none.
pub(crate) fn atoi(s: &str) -> i64 {
    let b = s.as_bytes();
    let mut i = 0;
    while i < b.len() && is_c_space(b[i]) {
        i += 1;
    }
    let neg = match b.get(i) {
        Some(b'-') => {
            i += 1;
            true
        }
        Some(b'+') => {
            i += 1;
            false
        }
        _ => false,
    };
    let mut v: i64 = 0;
    while i < b.len() && b[i].is_ascii_digit() {
        v = v.saturating_mul(10).saturating_add(i64::from(b[i] - b'0'));
        i += 1;
    }
    if neg {
        -v
    } else {
        v
    }
}

/// ipvsadm's `str_is_digit`: true for the empty string too.
pub(crate) fn str_is_digit(s: &str) -> bool {
    s.bytes().all(|b| b.is_ascii_digit())
}

/// glibc's `inet_aton`: one to four parts in decimal, octal (`0…`) or hex (`0x…`); the last part
/// fills the remaining bytes (`127.1` is 127.0.0.1); anything after a blank is ignored.
pub(crate) fn inet_aton(s: &str) -> Option<Ipv4Addr> {
    let b = s.as_bytes();
    let mut i = 0;
    let mut parts: Vec<u64> = Vec::with_capacity(4);
    let mut val: u64;
    let mut digit: bool;
    let at = |i: usize| b.get(i).copied().unwrap_or(0);
    loop {
        if !at(i).is_ascii_digit() {
            return None;
        }
        val = 0;
        let mut base = 10;
        digit = false;
        if at(i) == b'0' {
            i += 1;
            if at(i) == b'x' || at(i) == b'X' {
                base = 16;
                i += 1;
            } else {
                base = 8;
                digit = true;
            }
        }
        loop {
            let c = at(i);
            if c.is_ascii_digit() {
                if base == 8 && (c == b'8' || c == b'9') {
                    return None;
                }
                val = val * base + u64::from(c - b'0');
            } else if base == 16 && c.is_ascii_hexdigit() {
                val = (val << 4) | u64::from(c.to_ascii_lowercase() - b'a' + 10);
            } else {
                break;
            }
            if val > 0xffff_ffff {
                return None;
            }
            i += 1;
            digit = true;
        }
        if at(i) == b'.' {
            if parts.len() > 2 || val > 0xff {
                return None;
            }
            parts.push(val);
            i += 1;
        } else {
            break;
        }
    }
    if !digit {
        return None;
    }
    let c = at(i);
    if c != 0 && !is_c_space(c) {
        return None;
    }
    let (limit, shift_parts) = match parts.len() {
        0 => (0xffff_ffff, 0),
        1 => (0xff_ffff, 1),
        2 => (0xffff, 2),
        _ => (0xff, 3),
    };
    if val > limit {
        return None;
    }
    let mut addr = val;
    for (k, p) in parts.iter().take(shift_parts).enumerate() {
        addr |= p << (24 - 8 * k);
    }
    Some(Ipv4Addr::from(u32::try_from(addr).ok()?))
}

/// glibc's `inet_ntop` for IPv6: the longest run of two or more zero groups (the first of equal
/// ones) becomes `::`; `::a.b.c.d` and `::ffff:a.b.c.d` keep the dotted IPv4 part.
pub(crate) fn ntop6(addr: Ipv6Addr) -> String {
    let w = addr.segments();
    let (mut best_base, mut best_len) = (None::<usize>, 0usize);
    let mut cur: Option<(usize, usize)> = None;
    for (i, &seg) in w.iter().enumerate() {
        if seg == 0 {
            cur = Some(match cur {
                Some((b, l)) => (b, l + 1),
                None => (i, 1),
            });
        } else {
            cur = None;
        }
        if let Some((b, l)) = cur {
            if l > best_len {
                best_base = Some(b);
                best_len = l;
            }
        }
    }
    if best_len < 2 {
        best_base = None;
    }
    let mut out = String::new();
    let mut i = 0;
    while i < 8 {
        if let Some(b) = best_base {
            if i >= b && i < b + best_len {
                if i == b {
                    out.push(':');
                }
                i += 1;
                continue;
            }
        }
        if i != 0 {
            out.push(':');
        }
        if i == 6 && best_base == Some(0) && (best_len == 6 || (best_len == 5 && w[5] == 0xffff)) {
            let o = addr.octets();
            let _ = write!(out, "{}.{}.{}.{}", o[12], o[13], o[14], o[15]);
            return out;
        }
        let _ = write!(out, "{:x}", w[i]);
        i += 1;
    }
    if let Some(b) = best_base {
        if b + best_len == 8 {
            out.push(':');
        }
    }
    out
}

/// An address as `inet_ntop` prints it.
pub(crate) fn ntop(ip: IpAddr) -> String {
    match ip {
        IpAddr::V4(v4) => v4.to_string(),
        IpAddr::V6(v6) => ntop6(v6),
    }
}

/// The result of ipvsadm's `parse_service`: an address and, if one was given, a port.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct HostPort {
    pub ip: IpAddr,
    pub port: Option<u16>,
}

/// ipvsadm's `parse_service`: `host[:port]`, `[v6]:port` or a bare IPv6 address. Host names are
/// IPv4 only; ports may be service names of `protocol`. `None` means "illegal address".
pub(crate) fn parse_service(
    buf: &str,
    protocol: Option<Protocol>,
    resolver: &dyn Resolver,
) -> Option<HostPort> {
    if str_is_digit(buf) {
        return None;
    }
    let mut host = buf;
    let mut port_str: Option<&str> = None;
    let mut bracketed = false;
    if let Some(rest) = buf.strip_prefix('[') {
        let (inner, after) = rest.split_once(']')?;
        let after = after.strip_prefix(':')?;
        host = inner;
        port_str = Some(after);
        bracketed = true;
    }
    let ip = if let Ok(v6) = host.parse::<Ipv6Addr>() {
        IpAddr::V6(v6)
    } else {
        // ipvsadm looks for the port after the last ':' of what is left; for a bracketed
        // non-IPv6 host that drops the port it found after the ']'.
        if bracketed {
            port_str = None;
        }
        if let Some((h, p)) = host.rsplit_once(':') {
            host = h;
            port_str = Some(p);
        }
        match inet_aton(host) {
            Some(v4) => IpAddr::V4(v4),
            None => IpAddr::V4(resolver.host_by_name(host)?),
        }
    };
    let port = match port_str {
        None => None,
        Some(p) => match string_to_number(p, 0, 65535) {
            Some(n) => Some(u16::try_from(n).ok()?),
            None => Some(protocol.and_then(|proto| resolver.port_by_name(p, proto))?),
        },
    };
    Some(HostPort { ip, port })
}

/// ipvsadm's `parse_netmask` for IPv4: an address (`inet_aton`, then a host name).
pub(crate) fn parse_netmask_v4(buf: &str, resolver: &dyn Resolver) -> Option<Ipv4Addr> {
    inet_aton(buf).or_else(|| resolver.host_by_name(buf))
}

/// A dotted netmask as a prefix length, if its ones are contiguous.
pub(crate) fn mask_prefix(mask: Ipv4Addr) -> Option<u8> {
    let m = u32::from(mask);
    let ones = m.leading_ones();
    (m.checked_shl(ones).unwrap_or(0) == 0).then_some(ones as u8)
}

/// An address and port as ipvsadm's `addrport_to_anyname` prints them: `a.b.c.d:port` or
/// `[v6]:port`, with names unless `numeric`. Cut to 59 bytes like its 60-byte buffer.
pub(crate) fn addrport_name(
    ip: IpAddr,
    port: u16,
    protocol: Option<Protocol>,
    numeric: bool,
    resolver: &dyn Resolver,
) -> String {
    let (l, r) = if ip.is_ipv6() { ("[", "]") } else { ("", "") };
    let mut s = if numeric {
        format!("{l}{}{r}:{port}", ntop(ip))
    } else {
        let host = resolver.host_name(ip).unwrap_or_else(|| ntop(ip));
        let port = protocol
            .and_then(|p| resolver.port_name(port, p))
            .unwrap_or_else(|| port.to_string());
        format!("{l}{host}{r}:{port}")
    };
    truncate_bytes(&mut s, 59);
    s
}

/// Cuts a string to at most `max` bytes, at a character boundary.
pub(crate) fn truncate_bytes(s: &mut String, max: usize) {
    if s.len() > max {
        let mut cut = max;
        while !s.is_char_boundary(cut) {
            cut -= 1;
        }
        s.truncate(cut);
    }
}
