//! `[health.smtp]`: the mail relay of `email` alerts, and the addresses those alerts name.

use std::path::PathBuf;

use serde::{Deserialize, Serialize};
use toml::Spanned;

use super::error::{ConfigError, Lines};
use super::values::host_port;

/// The SMTP relay of `email` alerts (`[health.smtp]`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Smtp {
    /// Host name or address of the relay.
    pub host: String,
    pub port: u16,
    /// The envelope sender and `From:` address.
    pub from: String,
    pub tls: SmtpTls,
    /// Trusted CAs (PEM) for the relay's certificate; default: Mozilla's roots.
    pub tls_ca: Option<PathBuf>,
    /// AUTH (PLAIN or LOGIN) user; the password is read from `password_file` at each send.
    pub username: Option<String>,
    pub password_file: Option<PathBuf>,
}

/// How an SMTP connection is secured.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum SmtpTls {
    /// Plain text (a relay on loopback).
    None,
    /// STARTTLS when the relay offers it, else plain text.
    Opportunistic,
    /// STARTTLS, or fail.
    Starttls,
    /// TLS from the first byte (SMTPS, port 465).
    Tls,
}

impl SmtpTls {
    /// The port that goes with the mode when the config gives none.
    pub fn default_port(self) -> u16 {
        match self {
            SmtpTls::Tls => 465,
            _ => 25,
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct RawSmtp {
    pub server: Spanned<String>,
    pub from: Spanned<String>,
    pub tls: Option<Spanned<String>>,
    pub tls_ca: Option<Spanned<String>>,
    pub username: Option<Spanned<String>>,
    pub password_file: Option<Spanned<String>>,
}

/// One address or a list of them.
#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
pub enum RawAddresses {
    One(String),
    Many(Vec<String>),
}

/// Validates `[health.smtp]`.
pub(super) fn validate(
    l: &Lines<'_>,
    raw: &Spanned<RawSmtp>,
    errs: &mut Vec<ConfigError>,
) -> Option<Smtp> {
    let r = raw.get_ref();
    let before = errs.len();
    let tls = match r.tls.as_ref().map(|t| t.get_ref().as_str()) {
        None | Some("opportunistic") => SmtpTls::Opportunistic,
        Some("none") => SmtpTls::None,
        Some("starttls") => SmtpTls::Starttls,
        Some("tls") => SmtpTls::Tls,
        Some(other) => {
            errs.push(l.err(
                r.tls.as_ref(),
                "health.smtp.tls",
                format!("unknown mode {other:?} (expected none, opportunistic, starttls or tls)"),
            ));
            SmtpTls::Opportunistic
        }
    };
    let (host, port) = host_port(r.server.get_ref());
    let bad_port = r.server.get_ref().ends_with(':')
        || (port.is_none()
            && r.server
                .get_ref()
                .rsplit_once(':')
                .is_some_and(|(h, _)| !h.contains(':')));
    if host.is_empty() || host.contains(char::is_whitespace) || bad_port || port == Some(0) {
        errs.push(l.err(
            Some(&r.server),
            "health.smtp.server",
            format!("{:?} is not host[:port]", r.server.get_ref()),
        ));
    }
    if let Err(e) = address(r.from.get_ref()) {
        errs.push(l.err(Some(&r.from), "health.smtp.from", e));
    }
    let path = |v: &Option<Spanned<String>>, key: &str, errs: &mut Vec<ConfigError>| {
        let p = v.as_ref()?;
        if p.get_ref().is_empty() {
            errs.push(l.err(Some(p), format!("health.smtp.{key}"), "an empty path"));
            return None;
        }
        Some(PathBuf::from(p.get_ref()))
    };
    let tls_ca = path(&r.tls_ca, "tls-ca", errs);
    let password_file = path(&r.password_file, "password-file", errs);
    if r.username.is_some() != r.password_file.is_some() {
        errs.push(l.err(
            Some(raw),
            "health.smtp",
            "username and password-file go together",
        ));
    }
    // Opportunistic STARTTLS falls back to plain text (or is stripped on the way): a
    // password needs a mode that refuses to go on without TLS.
    if r.username.is_some() && matches!(tls, SmtpTls::None | SmtpTls::Opportunistic) {
        errs.push(l.err(
            r.tls.as_ref().or(r.username.as_ref()),
            "health.smtp.tls",
            "a password is not sent over plain text: use tls = \"starttls\" or \"tls\"",
        ));
    }
    (errs.len() == before).then(|| Smtp {
        host: host.to_string(),
        port: port.unwrap_or(tls.default_port()),
        from: r.from.get_ref().clone(),
        tls,
        tls_ca,
        username: r.username.as_ref().map(|u| u.get_ref().clone()),
        password_file,
    })
}

/// The recipients of an `email` alert: each `local@domain`, at least one.
pub(super) fn addresses(raw: &RawAddresses) -> Result<Vec<String>, String> {
    let list = match raw {
        RawAddresses::One(s) => vec![s.clone()],
        RawAddresses::Many(v) => v.clone(),
    };
    if list.is_empty() {
        return Err("needs at least one address".into());
    }
    for a in &list {
        address(a)?;
    }
    Ok(list)
}

/// A bare mail address (`local@domain`, no display name).
fn address(a: &str) -> Result<(), String> {
    match a.split_once('@') {
        Some((local, domain))
            if !local.is_empty()
                && !domain.is_empty()
                && !domain.contains('@')
                && !a.contains(|c: char| c.is_whitespace() || "<>,;\"".contains(c)) =>
        {
            Ok(())
        }
        _ => Err(format!("{a:?} is not a mail address (local@domain)")),
    }
}

/// `[health.smtp]` as written back by `herd config show` (the password file's name only).
#[derive(Serialize)]
#[serde(rename_all = "kebab-case")]
pub(super) struct SmtpOut {
    server: String,
    from: String,
    tls: SmtpTls,
    #[serde(skip_serializing_if = "Option::is_none")]
    tls_ca: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    username: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    password_file: Option<String>,
}

impl From<&Smtp> for SmtpOut {
    fn from(s: &Smtp) -> Self {
        let host = if s.host.contains(':') {
            format!("[{}]", s.host)
        } else {
            s.host.clone()
        };
        SmtpOut {
            server: format!("{host}:{}", s.port),
            from: s.from.clone(),
            tls: s.tls,
            tls_ca: s.tls_ca.as_ref().map(|p| p.display().to_string()),
            username: s.username.clone(),
            password_file: s.password_file.as_ref().map(|p| p.display().to_string()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mail_addresses() {
        let one = RawAddresses::One("ops@example.com".into());
        assert_eq!(addresses(&one), Ok(vec!["ops@example.com".to_string()]));
        let two = RawAddresses::Many(vec!["a@x".into(), "b@y.z".into()]);
        assert_eq!(addresses(&two).unwrap().len(), 2);
        for bad in [
            "ops",
            "@x",
            "a@",
            "a b@x",
            "a@b@c",
            "Ops <ops@x>",
            "a@x,b@y",
        ] {
            assert!(addresses(&RawAddresses::One(bad.into())).is_err(), "{bad}");
        }
        assert!(addresses(&RawAddresses::Many(vec![])).is_err());
    }
}
