//! `email` alerts: one mail per notice through the `[health.smtp]` relay (lettre), worded
//! like mon's `mail.alert` so people who read mon's mails find the same lines.

use std::path::{Path, PathBuf};
use std::time::{Duration, UNIX_EPOCH};

use herd_core::config::smtp::{Smtp, SmtpTls};
use lettre::message::header::ContentType;
use lettre::message::Mailbox;
use lettre::transport::smtp::authentication::Credentials;
use lettre::transport::smtp::client::{Certificate, CertificateStore, Tls, TlsParameters};
use lettre::transport::smtp::extension::ClientId;
use lettre::{AsyncSmtpTransport, AsyncTransport, Message, Tokio1Executor};

use crate::notice::{Kind, Notice};

/// Why a mail was not sent; the text names the step that failed.
#[derive(Debug, thiserror::Error)]
pub enum EmailError {
    /// A sender or recipient that is not a mail address.
    #[error("{0:?}: {1}")]
    Address(String, lettre::address::AddressError),
    /// The message cannot be built.
    #[error("{0}")]
    Message(#[from] lettre::error::Error),
    /// A file (the CA, the password) cannot be read.
    #[error("{}: {source}", path.display())]
    File {
        path: PathBuf,
        source: std::io::Error,
    },
    /// The CA file is not a certificate.
    #[error("{}: {source}", path.display())]
    Ca {
        path: PathBuf,
        source: lettre::transport::smtp::Error,
    },
    /// TLS to the relay cannot be set up.
    #[error("{relay}: TLS: {source}")]
    Tls {
        relay: String,
        source: lettre::transport::smtp::Error,
    },
    /// The relay refused or failed.
    #[error("{relay}: {source}")]
    Relay {
        relay: String,
        source: lettre::transport::smtp::Error,
    },
    #[error("{relay}: no answer within {timeout:?}")]
    Timeout { relay: String, timeout: Duration },
}

/// Reads a file `send` needs, as bytes or as text.
fn read<T>(path: &Path, how: fn(&Path) -> std::io::Result<T>) -> Result<T, EmailError> {
    how(path).map_err(|source| EmailError::File {
        path: path.to_path_buf(),
        source,
    })
}

/// Sends `n` to `to` through `smtp`; the error names the step that failed.
pub async fn send(
    smtp: &Smtp,
    to: &[String],
    n: &Notice,
    timeout: Duration,
) -> Result<(), EmailError> {
    let relay = format!("smtp {}:{}", smtp.host, smtp.port);
    let message = message(smtp, to, n)?;
    let mut b = AsyncSmtpTransport::<Tokio1Executor>::builder_dangerous(smtp.host.as_str())
        .port(smtp.port)
        .timeout(Some(timeout))
        .hello_name(ClientId::Domain(hostname()));
    if smtp.tls != SmtpTls::None {
        let mut p = TlsParameters::builder(smtp.host.clone());
        if let Some(ca) = &smtp.tls_ca {
            let cert =
                Certificate::from_pem(&read(ca, |p| std::fs::read(p))?).map_err(|source| {
                    EmailError::Ca {
                        path: ca.clone(),
                        source,
                    }
                })?;
            p = p
                .certificate_store(CertificateStore::None)
                .add_root_certificate(cert);
        }
        let p = p.build_rustls().map_err(|source| EmailError::Tls {
            relay: relay.clone(),
            source,
        })?;
        b = b.tls(match smtp.tls {
            SmtpTls::Opportunistic => Tls::Opportunistic(p),
            SmtpTls::Starttls => Tls::Required(p),
            SmtpTls::Tls | SmtpTls::None => Tls::Wrapper(p),
        });
    }
    if let (Some(user), Some(file)) = (&smtp.username, &smtp.password_file) {
        // Read at each send, so a changed password needs no reload.
        let pass = read(file, |p| std::fs::read_to_string(p))?;
        b = b.credentials(Credentials::new(user.clone(), pass.trim_end().to_string()));
    }
    let mailer = b.build();
    match tokio::time::timeout(timeout, mailer.send(message)).await {
        Ok(Ok(_)) => Ok(()),
        Ok(Err(source)) => Err(EmailError::Relay { relay, source }),
        Err(_) => Err(EmailError::Timeout { relay, timeout }),
    }
}

/// The mail: mon's `mail.alert` subject and body, in plain text.
fn message(smtp: &Smtp, to: &[String], n: &Notice) -> Result<Message, EmailError> {
    let addr = |a: &str| {
        a.parse::<Mailbox>()
            .map_err(|e| EmailError::Address(a.to_string(), e))
    };
    let mut m = Message::builder().from(addr(&smtp.from)?);
    for t in to {
        m = m.to(addr(t)?);
    }
    let (subject, body) = text(n);
    m.subject(subject)
        .header(ContentType::TEXT_PLAIN)
        .body(body)
        .map_err(EmailError::from)
}

/// Subject and body of a notice.
fn text(n: &Notice) -> (String, String) {
    let word = match n.kind {
        Kind::Failure => "ALERT",
        Kind::Up => "UPALERT",
        Kind::Flapping => "FLAPPING",
        Kind::Test => "TESTALERT",
    };
    let when = ctime(n.time);
    let subject = format!("{word} {}/{}: {} ({when})", n.group, n.check, n.summary);
    let mut body = format!(
        "Summary output        : {}\n\nGroup                 : {}\nService               : {}\nTime noticed          : {when}\nMembers               : {}\n\nDetailed text (if any) follows:\n-------------------------------\n",
        n.summary,
        n.group,
        n.check,
        n.hosts.join(" ")
    );
    body.push_str(&n.detail);
    if !body.ends_with('\n') {
        body.push('\n');
    }
    (subject, body)
}

/// Unix seconds as local `ctime(3)` text: `Sun Nov 22 11:25:45 2026`.
fn ctime(secs: u64) -> String {
    const DAYS: [&str; 7] = ["Sun", "Mon", "Tue", "Wed", "Thu", "Fri", "Sat"];
    const MONTHS: [&str; 12] = [
        "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
    ];
    let t = crate::clock::local_at(UNIX_EPOCH + Duration::from_secs(secs));
    format!(
        "{} {} {:2} {:02}:{:02}:{:02} {}",
        DAYS[usize::from(t.wday % 7)],
        MONTHS[usize::from(t.month.clamp(1, 12) - 1)],
        t.mday,
        t.hour,
        t.minute,
        t.second,
        t.year
    )
}

/// This host's name for the SMTP greeting.
fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_string())
        .ok()
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "localhost".into())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_mail_reads_like_mon_mail_alert() {
        let n = Notice {
            kind: Kind::Up,
            check: "http".into(),
            group: "web".into(),
            hosts: vec!["127.0.0.11:80".into(), "127.0.0.12:80".into()],
            summary: "2 targets up".into(),
            detail: "127.0.0.11:80: 200 OK".into(),
            time: 1_700_000_000,
            first_failure: 0,
            last_failure: 0,
            last_success: 0,
        };
        let (subject, body) = text(&n);
        assert!(
            subject.starts_with("UPALERT web/http: 2 targets up ("),
            "{subject}"
        );
        assert!(subject.ends_with(" 2023)"), "{subject}");
        assert!(body.contains("Members               : 127.0.0.11:80 127.0.0.12:80\n"));
        assert!(body.ends_with("-------------------------------\n127.0.0.11:80: 200 OK\n"));
        // 1_700_000_000 is Tue Nov 14 22:13:20 2023 UTC; any zone keeps the shape.
        let c = ctime(1_700_000_000);
        assert_eq!(c.len(), "Tue Nov 14 22:13:20 2023".len(), "{c}");
        assert!(c.contains("Nov 1") && c.ends_with("2023"), "{c}");
    }

    #[test]
    fn bad_addresses_are_named() {
        let smtp = Smtp {
            host: "127.0.0.1".into(),
            port: 25,
            from: "herd@example.com".into(),
            tls: SmtpTls::None,
            tls_ca: None,
            username: None,
            password_file: None,
        };
        let n = Notice {
            kind: Kind::Test,
            check: "c".into(),
            group: "g".into(),
            hosts: vec![],
            summary: "s".into(),
            detail: String::new(),
            time: 0,
            first_failure: 0,
            last_failure: 0,
            last_success: 0,
        };
        assert!(message(&smtp, &["ops@example.com".into()], &n).is_ok());
        let e = message(&smtp, &["ops@@x".into()], &n).unwrap_err();
        assert!(e.to_string().contains("ops@@x"), "{e}");
    }
}
