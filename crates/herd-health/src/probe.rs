//! The probes: one run of a check against one target, bounded in time and in output.
//!
//! Every probe returns an [`Outcome`]; none returns an error. A probe that cannot run (a
//! program that does not exist, an address that does not resolve) is a failure with the reason
//! as its summary, because to the director an unreachable real server and a broken probe look
//! the same: do not send clients there.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use herd_rules::spec::{CheckKind, ExecProtocol};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::clock::wall_ms;
pub use crate::program::MAX_OUTPUT;
use crate::program::{dirs, find_program, read_capped, run_program};
use herd_rules::{Outcome, Verdict};

/// Largest HTTP response head + body read by the http probe.
const MAX_HTTP: usize = 64 * 1024;

/// Where a probe runs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    /// The host as written (a name or an address); given to `exec` programs.
    pub host: String,
    /// Resolved address with the port to probe; `None` for `exec` checks of plain hosts and
    /// for names not looked up yet.
    pub addr: Option<SocketAddr>,
    /// The port to probe.
    pub port: Option<u16>,
}

/// Context an `exec` probe passes to its program (mon's `MON_*` environment).
#[derive(Debug, Clone, Default)]
pub struct ExecEnv {
    pub check: String,
    pub last_summary: String,
    pub last_detail: String,
    /// Unix seconds; 0 = never.
    pub last_failure: u64,
    pub first_failure: u64,
    pub last_success: u64,
    pub mondir: Vec<PathBuf>,
}

/// Runs one probe, killed (with its process group) at `timeout`.
pub async fn run(kind: &CheckKind, target: &Target, timeout: Duration, env: &ExecEnv) -> Outcome {
    let start = Instant::now();
    let mut out = match kind {
        CheckKind::Exec {
            command,
            protocol,
            no_hosts,
        } => exec(command, *protocol, *no_hosts, target, timeout, env).await,
        CheckKind::Icmp => {
            let ip = match target.addr {
                Some(a) => Some(a.ip()),
                None => target.host.trim_matches(['[', ']']).parse().ok(),
            };
            let Some(ip) = ip else {
                return Outcome::fail(format!("{}: cannot resolve", target.host));
            };
            match tokio::time::timeout(timeout, icmp(ip)).await {
                Ok(o) => o,
                Err(_) => Outcome::fail(format!("{ip}: no echo reply within {timeout:?}")),
            }
        }
        _ => {
            let Some(addr) = target.addr else {
                return Outcome::fail(format!("{}: cannot resolve", target.host));
            };
            match tokio::time::timeout(timeout, net(kind, addr, &target.host)).await {
                Ok(o) => o,
                Err(_) => Outcome::fail(format!("{addr}: timed out after {timeout:?}")),
            }
        }
    };
    out.latency = start.elapsed();
    out
}

async fn net(kind: &CheckKind, addr: SocketAddr, host: &str) -> Outcome {
    match kind {
        CheckKind::Udp { send, expect } => {
            return udp(addr, send.as_bytes(), expect.as_deref()).await
        }
        CheckKind::Dns {
            query,
            query_type,
            expect,
        } => return dns(addr, query, query_type, expect.as_deref()).await,
        _ => {}
    }
    let mut s = match TcpStream::connect(addr).await {
        Ok(s) => s,
        Err(e) => return Outcome::fail(format!("{addr}: connect: {e}")),
    };
    match kind {
        CheckKind::Tcp { send, expect } => tcp(s, addr, send.as_deref(), expect.as_deref()).await,
        CheckKind::Http {
            method,
            path,
            host: host_header,
            status,
            expect,
            tls,
        } => {
            let default_port = if tls.is_some() { 443 } else { 80 };
            let host_header = host_header.clone().unwrap_or_else(|| match addr.port() {
                p if p == default_port => host.to_string(),
                p => format!("{host}:{p}"),
            });
            let req = format!(
                "{method} {path} HTTP/1.1\r\nHost: {host_header}\r\nUser-Agent: herd-health\r\nAccept: */*\r\nConnection: close\r\n\r\n"
            );
            let Some(tls) = tls else {
                let buf = match exchange_http(&mut s, &req).await {
                    Ok(b) => b,
                    Err(e) => return Outcome::fail(format!("{addr}: {e}")),
                };
                return http_verdict(addr, &buf, method, status, expect.as_deref());
            };
            let (buf, expires) = match https(s, addr, tls, &host_header, &req).await {
                Ok(r) => r,
                Err(o) => return o,
            };
            let mut o = http_verdict(addr, &buf, method, status, expect.as_deref());
            let now = (wall_ms() / 1000) as i64;
            judge_expiry(&mut o, expires, now, tls.expiry_warning);
            o
        }
        _ => Outcome::fail("not a TCP probe"),
    }
}

/// A tcp probe on a connected stream: sends `send`, then waits for `expect`.
async fn tcp(
    mut s: TcpStream,
    addr: SocketAddr,
    send: Option<&str>,
    expect: Option<&str>,
) -> Outcome {
    if let Some(data) = send {
        if let Err(e) = s.write_all(data.as_bytes()).await {
            return Outcome::fail(format!("{addr}: send: {e}"));
        }
    }
    let Some(want) = expect else {
        return Outcome::ok(format!("{addr}: connected"));
    };
    let mut buf = Vec::new();
    let mut chunk = [0u8; 1024];
    loop {
        if contains(&buf, want.as_bytes()) {
            return Outcome::ok(format!("{addr}: got {want:?}"));
        }
        match s.read(&mut chunk).await {
            Ok(0) => {
                return Outcome::fail(format!(
                    "{addr}: closed without {want:?} (got {:?})",
                    shown(&buf)
                ))
            }
            Ok(n) if buf.len() < MAX_OUTPUT => buf.extend_from_slice(&chunk[..n]),
            Ok(_) => {
                return Outcome::fail(format!(
                    "{addr}: no {want:?} in the first {MAX_OUTPUT} bytes"
                ))
            }
            Err(e) => return Outcome::fail(format!("{addr}: read: {e}")),
        }
    }
}

/// The request over TLS: the response, and when the server's certificate expires (Unix
/// seconds), or the outcome that ends the probe.
async fn https(
    s: TcpStream,
    addr: SocketAddr,
    tls: &herd_rules::spec::Tls,
    host_header: &str,
    req: &str,
) -> Result<(Vec<u8>, Option<i64>), Outcome> {
    let config = crate::tls::client_config(tls)
        .map_err(|e| Outcome::new(Verdict::Unknown, e.to_string()))?;
    // SNI: the configured name, else the Host header's name, else the target.
    let sni = tls
        .sni
        .clone()
        .unwrap_or_else(|| herd_core::config::host_port(host_header).0.to_string());
    let name = rustls::pki_types::ServerName::try_from(sni.clone())
        .map_err(|e| Outcome::new(Verdict::Unknown, format!("sni {sni:?}: {e}")))?;
    let mut ts = tokio_rustls::TlsConnector::from(config)
        .connect(name, s)
        .await
        .map_err(|e| Outcome::fail(format!("{addr}: TLS: {e}")))?;
    let expires = ts
        .get_ref()
        .1
        .peer_certificates()
        .and_then(|c| c.first())
        .and_then(|c| crate::tls::not_after(c));
    let buf = exchange_http(&mut ts, req)
        .await
        .map_err(|e| Outcome::fail(format!("{addr}: {e}")))?;
    Ok((buf, expires))
}

/// One ICMP echo request and its reply. A ping socket (`SOCK_DGRAM`, allowed by
/// `net.ipv4.ping_group_range`) needs no privilege; otherwise a raw socket (root).
async fn icmp(ip: std::net::IpAddr) -> Outcome {
    use socket2::{Domain, Protocol, Socket, Type};
    let (domain, proto, request, reply) = if ip.is_ipv4() {
        (Domain::IPV4, Protocol::ICMPV4, 8u8, 0u8)
    } else {
        (Domain::IPV6, Protocol::ICMPV6, 128, 129)
    };
    let (sock, raw) = match Socket::new(domain, Type::DGRAM, Some(proto)) {
        Ok(s) => (s, false),
        Err(_) => match Socket::new(domain, Type::RAW, Some(proto)) {
            Ok(s) => (s, true),
            Err(e) => {
                return Outcome::new(
                    Verdict::Unknown,
                    format!("{ip}: cannot open an ICMP socket ({e}): run as root or widen net.ipv4.ping_group_range"),
                )
            }
        },
    };
    let sock = match sock
        .set_nonblocking(true)
        .and_then(|()| tokio::net::UdpSocket::from_std(std::net::UdpSocket::from(sock)))
    {
        Ok(s) => s,
        Err(e) => return Outcome::new(Verdict::Unknown, format!("{ip}: {e}")),
    };
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    let id = (now.subsec_nanos() & 0xffff) as u16;
    let seq = ((now.subsec_nanos() >> 16) & 0xffff) as u16;
    let mut pkt = vec![request, 0, 0, 0];
    pkt.extend_from_slice(&id.to_be_bytes());
    pkt.extend_from_slice(&seq.to_be_bytes());
    pkt.extend_from_slice(b"herd-health-echo");
    if raw && ip.is_ipv4() {
        // Ping sockets and ICMPv6 raw sockets fill the checksum in; ICMPv4 raw ones do not.
        let sum = checksum(&pkt);
        pkt[2..4].copy_from_slice(&sum.to_be_bytes());
    }
    if let Err(e) = sock.send_to(&pkt, (ip, 0)).await {
        return Outcome::fail(format!("{ip}: send: {e}"));
    }
    let mut buf = vec![0u8; 1500];
    loop {
        let (n, from) = match sock.recv_from(&mut buf).await {
            Ok(r) => r,
            Err(e) => return Outcome::fail(format!("{ip}: {e}")),
        };
        if from.ip() != ip {
            continue;
        }
        let mut m = &buf[..n];
        if raw && ip.is_ipv4() {
            // A raw IPv4 socket hands over the IP header too.
            let ihl = usize::from(m.first().map_or(0, |b| b & 0x0f)) * 4;
            m = m.get(ihl..).unwrap_or_default();
        }
        // A ping socket rewrites the identifier to its own; the sequence number and the
        // payload identify the reply either way.
        let ours = m.len() >= 8
            && m[0] == reply
            && m[6..8] == seq.to_be_bytes()
            && (!raw || m[4..6] == id.to_be_bytes())
            && m[8..] == pkt[8..];
        if ours {
            return Outcome::ok(format!("{ip}: echo reply"));
        }
    }
}

/// The Internet checksum (RFC 1071).
fn checksum(data: &[u8]) -> u16 {
    let mut sum: u32 = data
        .chunks(2)
        .map(|c| u32::from(u16::from_be_bytes([c[0], *c.get(1).unwrap_or(&0)])))
        .sum();
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    !(sum as u16)
}

/// One datagram out, one back (`expect` in it, if set). An ICMP port unreachable shows as
/// "refused".
async fn udp(addr: SocketAddr, send: &[u8], expect: Option<&str>) -> Outcome {
    let reply = match exchange(addr, send).await {
        Ok(r) => r,
        Err(e) => return Outcome::fail(e),
    };
    match expect {
        Some(want) if !contains(&reply, want.as_bytes()) => Outcome::fail(format!(
            "{addr}: reply without {want:?} (got {:?})",
            shown(&reply)
        )),
        _ => Outcome::ok(format!("{addr}: {} bytes back", reply.len())),
    }
}

/// Sends a datagram on a connected socket and waits for the reply (the caller's timeout
/// bounds the wait).
async fn exchange(addr: SocketAddr, send: &[u8]) -> Result<Vec<u8>, String> {
    let local: SocketAddr = if addr.is_ipv4() {
        (std::net::Ipv4Addr::UNSPECIFIED, 0).into()
    } else {
        (std::net::Ipv6Addr::UNSPECIFIED, 0).into()
    };
    let sock = tokio::net::UdpSocket::bind(local)
        .await
        .map_err(|e| format!("{addr}: bind: {e}"))?;
    sock.connect(addr)
        .await
        .map_err(|e| format!("{addr}: connect: {e}"))?;
    sock.send(send)
        .await
        .map_err(|e| format!("{addr}: send: {e}"))?;
    let mut buf = vec![0u8; 65536];
    match sock.recv(&mut buf).await {
        Ok(n) => {
            buf.truncate(n);
            Ok(buf)
        }
        Err(e) if e.kind() == std::io::ErrorKind::ConnectionRefused => {
            Err(format!("{addr}: refused (nothing listens on that port)"))
        }
        Err(e) => Err(format!("{addr}: recv: {e}")),
    }
}

/// A DNS query over UDP: passes on NOERROR with a record of the type (`expect` among them,
/// if set).
async fn dns(addr: SocketAddr, name: &str, qtype_name: &str, expect: Option<&str>) -> Outcome {
    let Some(qtype) = crate::dns::qtype(qtype_name) else {
        return Outcome::new(
            Verdict::Unknown,
            format!("unknown record type {qtype_name}"),
        );
    };
    let id = (std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.subsec_nanos())
        & 0xffff) as u16;
    let q = match crate::dns::query(id, name, qtype) {
        Ok(q) => q,
        Err(e) => return Outcome::new(Verdict::Unknown, e.to_string()),
    };
    let reply = match exchange(addr, &q).await {
        Ok(r) => r,
        Err(e) => return Outcome::fail(e),
    };
    let a = match crate::dns::parse(&reply, id, qtype) {
        Ok(a) => a,
        Err(e) => return Outcome::fail(format!("{addr}: {e}")),
    };
    let what = format!("{addr}: {name} {qtype_name}");
    if a.rcode != 0 {
        return Outcome::fail(format!("{what}: {}", crate::dns::rcode_name(a.rcode)));
    }
    if a.records.is_empty() {
        return Outcome::fail(format!("{what}: no {qtype_name} record"));
    }
    let got = a.records.join(" ");
    match expect {
        Some(want)
            if !a
                .records
                .iter()
                .any(|r| r.trim_end_matches('.') == want.trim_end_matches('.')) =>
        {
            Outcome::fail(format!("{what}: {got}, not {want}"))
        }
        _ => Outcome::ok(format!("{what}: {got}")),
    }
}

/// Adds the certificate's expiry to an https verdict: expired is critical, expiring within
/// `warn` turns an ok into a warning; both are named in the summary.
fn judge_expiry(o: &mut Outcome, not_after: Option<i64>, now: i64, warn: Duration) {
    match not_after {
        Some(t) if t <= now => {
            o.verdict = Verdict::Critical;
            o.summary = format!(
                "{}, certificate expired {} days ago",
                o.summary,
                (now - t) / 86400
            );
        }
        Some(t) if t - now <= warn.as_secs() as i64 => {
            if o.verdict == Verdict::Ok {
                o.verdict = Verdict::Warning;
            }
            o.summary = format!(
                "{}, certificate expires in {} days",
                o.summary,
                (t - now) / 86400
            );
        }
        Some(_) => {}
        None => o.detail.push_str("cannot read the certificate's expiry\n"),
    }
}

/// Sends a request and reads the response (at most [`MAX_HTTP`] bytes kept).
async fn exchange_http<S>(s: &mut S, req: &str) -> Result<Vec<u8>, String>
where
    S: AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    s.write_all(req.as_bytes())
        .await
        .map_err(|e| format!("send: {e}"))?;
    let mut buf = Vec::new();
    match read_capped(s, &mut buf, MAX_HTTP).await {
        Ok(_) => Ok(buf),
        // A TLS server that closes without close_notify after a complete response: keep what
        // came (the verdict judges it).
        Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof && !buf.is_empty() => Ok(buf),
        Err(e) => Err(format!("read: {e}")),
    }
}

/// Judges an HTTP response.
fn http_verdict(
    addr: SocketAddr,
    resp: &[u8],
    method: &str,
    status: &[(u16, u16)],
    expect: Option<&str>,
) -> Outcome {
    let Some(head_end) = find(resp, b"\r\n\r\n") else {
        return Outcome::fail(format!("{addr}: no HTTP response (got {:?})", shown(resp)));
    };
    let head = String::from_utf8_lossy(&resp[..head_end]);
    let mut lines = head.split("\r\n");
    let status_line = lines.next().unwrap_or_default();
    let code = status_line
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse::<u16>().ok());
    let Some(code) = code.filter(|_| status_line.starts_with("HTTP/")) else {
        return Outcome::fail(format!("{addr}: bad status line {status_line:?}"));
    };
    let summary = format!("{addr}: {status_line}");
    if !status.iter().any(|&(lo, hi)| (lo..=hi).contains(&code)) {
        return Outcome::fail(summary);
    }
    if let Some(want) = expect {
        if method.eq_ignore_ascii_case("HEAD") {
            return Outcome::ok(summary);
        }
        let chunked = lines.any(|l| {
            l.split_once(':').is_some_and(|(k, v)| {
                k.trim().eq_ignore_ascii_case("transfer-encoding")
                    && v.to_ascii_lowercase().contains("chunked")
            })
        });
        let raw = &resp[head_end + 4..];
        let body = if chunked { dechunk(raw) } else { raw.to_vec() };
        let re = match body_regex(want) {
            Ok(re) => re,
            Err(e) => return Outcome::new(Verdict::Unknown, format!("bad expect regex: {e}")),
        };
        if !re.is_match(&String::from_utf8_lossy(&body)) {
            return Outcome::fail(format!("{summary}, body does not match {want:?}"));
        }
    }
    Outcome::ok(summary)
}

/// The compiled `expect` regex: compiled once per pattern, not at every run.
fn body_regex(pattern: &str) -> Result<regex_lite::Regex, regex_lite::Error> {
    use std::collections::HashMap;
    use std::sync::{Mutex, OnceLock};
    static CACHE: OnceLock<Mutex<HashMap<String, regex_lite::Regex>>> = OnceLock::new();
    let cache = CACHE.get_or_init(|| Mutex::new(HashMap::new()));
    if let Some(re) = cache.lock().unwrap_or_else(|p| p.into_inner()).get(pattern) {
        return Ok(re.clone());
    }
    let re = regex_lite::Regex::new(pattern)?;
    cache
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .insert(pattern.to_string(), re.clone());
    Ok(re)
}

/// Decodes a chunked body as far as it is complete.
fn dechunk(mut raw: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    while let Some(eol) = find(raw, b"\r\n") {
        let size = std::str::from_utf8(&raw[..eol])
            .ok()
            .and_then(|l| usize::from_str_radix(l.split(';').next().unwrap_or("").trim(), 16).ok());
        let Some(size) = size.filter(|&n| n > 0) else {
            break;
        };
        let start = eol + 2;
        let end = (start + size).min(raw.len());
        out.extend_from_slice(&raw[start..end]);
        if end + 2 > raw.len() {
            break;
        }
        raw = &raw[end + 2..];
    }
    out
}

async fn exec(
    command: &[String],
    protocol: ExecProtocol,
    no_hosts: bool,
    target: &Target,
    timeout: Duration,
    env: &ExecEnv,
) -> Outcome {
    let Some(program) = command.first() else {
        return Outcome::new(Verdict::Unknown, "empty command");
    };
    let Some(path) = find_program(program, &env.mondir) else {
        return Outcome::new(
            Verdict::Unknown,
            format!("{program}: not found (searched {})", dirs(&env.mondir)),
        );
    };
    let mut cmd = tokio::process::Command::new(&path);
    cmd.args(&command[1..]);
    if !no_hosts {
        cmd.arg(&target.host);
    }
    cmd.env("MON_CHECK", &env.check)
        .env("MON_LAST_SUMMARY", &env.last_summary)
        .env("MON_LAST_OUTPUT", &env.last_detail)
        .env("MON_LAST_FAILURE", env.last_failure.to_string())
        .env("MON_FIRST_FAILURE", env.first_failure.to_string())
        .env("MON_LAST_SUCCESS", env.last_success.to_string())
        .env("MON_DESCRIPTION", &env.check);
    if let Some(dir) = path.parent() {
        cmd.env("MON_MONDIR", dir);
    }
    let r = run_program(cmd, None, timeout).await;
    let r = match r {
        Ok(r) => r,
        Err(e) => return Outcome::new(Verdict::Unknown, format!("{}: {e}", path.display())),
    };
    if r.timed_out {
        return Outcome::fail(format!(
            "{}: killed after {timeout:?} (timeout)",
            path.display()
        ));
    }
    let text = String::from_utf8_lossy(&r.stdout);
    let (first, rest) = match text.split_once('\n') {
        Some((a, b)) => (a.to_string(), b.to_string()),
        None => (text.to_string(), String::new()),
    };
    let code = r.status.and_then(|s| s.code());
    let mut outcome = match protocol {
        ExecProtocol::Mon => {
            let v = if code == Some(0) {
                Verdict::Ok
            } else {
                Verdict::Critical
            };
            Outcome {
                verdict: v,
                summary: first,
                detail: rest,
                latency: Duration::ZERO,
            }
        }
        ExecProtocol::Nagios => {
            let v = match code {
                Some(0) => Verdict::Ok,
                Some(1) => Verdict::Warning,
                Some(2) => Verdict::Critical,
                _ => Verdict::Unknown,
            };
            // "TEXT | perfdata" on the first line; long text and more perfdata after.
            let (summary, perf) = match first.split_once('|') {
                Some((a, b)) => (a.trim().to_string(), b.trim().to_string()),
                None => (first.trim().to_string(), String::new()),
            };
            let mut detail = rest;
            if !perf.is_empty() {
                detail = format!("perfdata: {perf}\n{detail}");
            }
            Outcome {
                verdict: v,
                summary,
                detail,
                latency: Duration::ZERO,
            }
        }
    };
    if code.is_none() {
        outcome.verdict = Verdict::Unknown;
        outcome.summary = format!("{}: killed by a signal", path.display());
    }
    if r.truncated {
        outcome.detail.push_str("\n[output truncated]");
    }
    outcome
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

fn contains(hay: &[u8], needle: &[u8]) -> bool {
    needle.is_empty() || find(hay, needle).is_some()
}

fn shown(b: &[u8]) -> String {
    let s = String::from_utf8_lossy(&b[..b.len().min(80)]);
    s.into_owned()
}

#[cfg(test)]
mod tests;
