//! The value syntax every section shares: durations, socket addresses, real server addresses,
//! `host[:port]`.

use std::net::SocketAddr;
use std::time::Duration;

use serde::Deserialize;
use toml::Spanned;

/// A duration the config or the command line cannot use.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DurationError {
    #[error("invalid duration {0:?} (expected e.g. 500ms, 30s, 15m, 2h)")]
    Invalid(String),
    #[error("invalid duration {text:?}: unknown unit {unit:?}")]
    UnknownUnit { text: String, unit: String },
    #[error("{0} is negative")]
    Negative(i64),
    #[error("{} is longer than a year", format_duration(*.0))]
    LongerThanAYear(Duration),
    /// More seconds than a 32-bit field (the kernel's timeouts) holds.
    #[error("{0}s is too long")]
    TooLong(u64),
}

/// An address that does not parse.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AddressError {
    /// A virtual service's address: a port is required.
    #[error("invalid address {0:?} (expected IPv4:port or [IPv6]:port)")]
    NotIpPort(String),
    /// A real server's address: the port may be left out.
    #[error("invalid address {0:?} (expected IP or IP:port)")]
    NotIp(String),
}

/// A duration in the config: an integer number of seconds or a string with a unit
/// (`"500ms"`, `"30s"`, `"15m"`, `"2h"`).
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(untagged)]
pub enum RawDuration {
    Secs(i64),
    Text(String),
}

/// Parses `"10us"`, `"500ms"`, `"30s"`, `"15m"`, `"2h"`, `"1d"` or a bare number of seconds.
pub fn parse_duration(s: &str) -> Result<Duration, DurationError> {
    let s = s.trim();
    let split = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
    let (num, unit) = s.split_at(split);
    let n: u64 = num
        .parse()
        .map_err(|_| DurationError::Invalid(s.to_string()))?;
    let d = match unit.trim() {
        "us" => Duration::from_micros(n),
        "ms" => Duration::from_millis(n),
        "" | "s" => Duration::from_secs(n),
        "m" => Duration::from_secs(n.saturating_mul(60)),
        "h" => Duration::from_secs(n.saturating_mul(3600)),
        "d" => Duration::from_secs(n.saturating_mul(86400)),
        _ => {
            return Err(DurationError::UnknownUnit {
                text: s.to_string(),
                unit: unit.to_string(),
            })
        }
    };
    Ok(d)
}

/// Renders a duration the way [`parse_duration`] reads it.
pub fn format_duration(d: Duration) -> String {
    if !d.subsec_nanos().is_multiple_of(1_000_000) {
        format!("{}us", d.as_micros())
    } else if d.subsec_millis() != 0 || d.as_secs() == 0 && !d.is_zero() {
        format!("{}ms", d.as_millis())
    } else {
        format!("{}s", d.as_secs())
    }
}

/// The longest duration any setting takes (a year): far beyond any sensible timeout, and far
/// from where adding it to a clock could overflow.
pub const MAX_DURATION: Duration = Duration::from_secs(366 * 86400);

pub(super) fn duration(d: &Spanned<RawDuration>) -> Result<Duration, DurationError> {
    duration_value(d.get_ref())
}

pub fn duration_value(d: &RawDuration) -> Result<Duration, DurationError> {
    let v = match d {
        RawDuration::Secs(n) if *n >= 0 => Duration::from_secs(*n as u64),
        RawDuration::Secs(n) => return Err(DurationError::Negative(*n)),
        RawDuration::Text(s) => parse_duration(s)?,
    };
    if v > MAX_DURATION {
        return Err(DurationError::LongerThanAYear(v));
    }
    Ok(v)
}

pub(super) fn secs_u32(d: Duration) -> Result<u32, DurationError> {
    u32::try_from(d.as_secs()).map_err(|_| DurationError::TooLong(d.as_secs()))
}

/// Parses `VIP:port` — `127.0.0.1:80` or `[::1]:80`. A port is required.
pub fn parse_socket_addr(s: &str) -> Result<SocketAddr, AddressError> {
    s.trim()
        .parse::<SocketAddr>()
        .map_err(|_| AddressError::NotIpPort(s.to_string()))
}

/// Parses a real server address; without a port it takes the virtual service's port, as
/// ipvsadm does.
pub fn parse_real_addr(s: &str, default_port: u16) -> Result<SocketAddr, AddressError> {
    let s = s.trim();
    if let Ok(a) = s.parse::<SocketAddr>() {
        return Ok(a);
    }
    let bare = s.trim_start_matches('[').trim_end_matches(']');
    bare.parse::<std::net::IpAddr>()
        .map(|ip| SocketAddr::new(ip, default_port))
        .map_err(|_| AddressError::NotIp(s.to_string()))
}

/// Splits `"host:port"`, `"[v6]:port"`, `"v4"`, `"v6"` or `"name"` into host and port.
pub fn host_port(s: &str) -> (&str, Option<u16>) {
    if let Some(rest) = s.strip_prefix('[') {
        if let Some((h, p)) = rest.split_once("]:") {
            return (h, p.parse().ok());
        }
        return (rest.trim_end_matches(']'), None);
    }
    match s.rsplit_once(':') {
        // One colon: host:port. More: a bare IPv6 address.
        Some((h, p)) if !h.contains(':') => match p.parse() {
            Ok(port) => (h, Some(port)),
            Err(_) => (s, None),
        },
        _ => (s, None),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations() {
        assert_eq!(parse_duration("500ms"), Ok(Duration::from_millis(500)));
        assert_eq!(parse_duration("2h"), Ok(Duration::from_secs(7200)));
        assert_eq!(parse_duration("42"), Ok(Duration::from_secs(42)));
        assert!(parse_duration("-1s").is_err());
        assert!(parse_duration("s").is_err());
        assert_eq!(format_duration(Duration::from_millis(1500)), "1500ms");
        assert_eq!(format_duration(Duration::from_secs(30)), "30s");
        assert_eq!(parse_duration("10us"), Ok(Duration::from_micros(10)));
        assert_eq!(format_duration(Duration::from_micros(10)), "10us");
        assert_eq!(format_duration(Duration::from_micros(2500)), "2500us");
    }
}
