//! Alert sinks: where a notification goes, and how.
//!
//! `exec` sinks follow mon's alert protocol, so the scripts in mon's `alert.d` work unchanged:
//!
//! ```text
//! ALERT -s CHECK -g GROUP -h "HOST ..." -t UNIXTIME [-u] ARGS...
//! ```
//!
//! with the summary line and then the detail on stdin, and mon's environment: `MON_ALERTTYPE`
//! (`failure`, `up` or `test`), `MON_OPSTATUS` (0 = failing, 1 = ok), `MON_SERVICE`,
//! `MON_GROUP`, `MON_DESCRIPTION`, `MON_LAST_SUMMARY`, `MON_LAST_OUTPUT`, `MON_FIRST_FAILURE`,
//! `MON_LAST_FAILURE`, `MON_LAST_SUCCESS`, `MON_RETVAL`. Every run has a timeout (the process
//! group is killed at it) and its outcome is returned for the record.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use herd_core::config::health::{HealthConfig, DEFAULT_CERT_WARNING};
use herd_core::config::{parse_http_url, HttpUrl};
use herd_rules::spec::{Sink, Tls};

use crate::notice::{Delivery, Kind, Notice};
use crate::program::{dirs, find_program, run_program};

/// Sends `notice` to `sink` (`cfg` gives the alert directories and the mail relay); never
/// fails, the outcome says how it went.
pub async fn send(sink: &Sink, notice: &Notice, timeout: Duration, cfg: &HealthConfig) -> Delivery {
    let start = Instant::now();
    let result = match sink {
        Sink::Log => {
            tracing::warn!(
                kind = ?notice.kind,
                check = %notice.check,
                group = %notice.group,
                hosts = %notice.hosts.join(" "),
                "{}",
                notice.summary
            );
            Ok(())
        }
        Sink::Exec { command } => exec(command, notice, timeout, &cfg.alertdir).await,
        Sink::Email { to } => match &cfg.smtp {
            Some(smtp) => crate::email::send(smtp, to, notice, timeout)
                .await
                .map_err(|e| e.to_string()),
            None => Err("no [health.smtp] relay configured".into()),
        },
        Sink::Webhook { url, tls_ca } => {
            match tokio::time::timeout(timeout, webhook(url, tls_ca.as_deref(), notice)).await {
                Ok(r) => r,
                Err(_) => Err(format!("{url}: no answer within {timeout:?}")),
            }
        }
    };
    let took_ms = u64::try_from(start.elapsed().as_millis()).unwrap_or(u64::MAX);
    match result {
        Ok(()) => Delivery {
            ok: true,
            error: String::new(),
            took_ms,
        },
        Err(error) => Delivery {
            ok: false,
            error,
            took_ms,
        },
    }
}

/// POSTs the notice as JSON (`{"kind": "failure", "check": ..., "hosts": [...], ...}`);
/// any 2xx answer is success. An https URL's certificate is verified against `tls_ca`, else
/// the system's CAs.
async fn webhook(url: &str, tls_ca: Option<&Path>, n: &Notice) -> Result<(), String> {
    let u = parse_http_url(url).map_err(|e| e.to_string())?;
    let s = tokio::net::TcpStream::connect((u.host.as_str(), u.port))
        .await
        .map_err(|e| format!("{url}: connect: {e}"))?;
    if !u.tls {
        return post(s, url, &u, n).await;
    }
    let tls = Tls {
        sni: None,
        verify: true,
        ca: tls_ca.map(Path::to_path_buf),
        expiry_warning: DEFAULT_CERT_WARNING,
    };
    let config = crate::tls::client_config(&tls).map_err(|e| e.to_string())?;
    let name = rustls::pki_types::ServerName::try_from(u.host.clone())
        .map_err(|e| format!("{url}: {e}"))?;
    let s = tokio_rustls::TlsConnector::from(config)
        .connect(name, s)
        .await
        .map_err(|e| format!("{url}: TLS: {e}"))?;
    post(s, url, &u, n).await
}

/// The POST itself, over plain TCP or TLS.
async fn post<S>(mut s: S, url: &str, u: &HttpUrl, n: &Notice) -> Result<(), String>
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let body = serde_json::to_vec(n).map_err(|e| e.to_string())?;
    let (host, port, path) = (&u.host, u.port, &u.path);
    let host_header = if port == if u.tls { 443 } else { 80 } {
        host.clone()
    } else {
        format!("{host}:{port}")
    };
    let head = format!(
        "POST {path} HTTP/1.1\r\nHost: {host_header}\r\nUser-Agent: herd-health\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    );
    s.write_all(head.as_bytes())
        .await
        .map_err(|e| format!("{url}: send: {e}"))?;
    s.write_all(&body)
        .await
        .map_err(|e| format!("{url}: send: {e}"))?;
    s.flush().await.map_err(|e| format!("{url}: send: {e}"))?;
    // The status line is all that matters; read a little.
    let mut buf = vec![0u8; 512];
    let mut got = 0;
    while got < buf.len() && !buf[..got].contains(&b'\n') {
        match s.read(&mut buf[got..]).await {
            Ok(0) => break,
            Ok(k) => got += k,
            Err(e) => return Err(format!("{url}: read: {e}")),
        }
    }
    let line = String::from_utf8_lossy(&buf[..got]);
    let line = line.lines().next().unwrap_or_default();
    match line
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse::<u16>().ok())
    {
        Some(c) if (200..300).contains(&c) => Ok(()),
        _ => Err(format!("{url}: {line:?}")),
    }
}

async fn exec(
    command: &[String],
    n: &Notice,
    timeout: Duration,
    alertdir: &[PathBuf],
) -> Result<(), String> {
    let program = command.first().ok_or("empty command")?;
    let path = find_program(program, alertdir)
        .ok_or_else(|| format!("{program}: not found (searched {})", dirs(alertdir)))?;
    let mut cmd = tokio::process::Command::new(&path);
    cmd.arg("-s")
        .arg(&n.check)
        .arg("-g")
        .arg(&n.group)
        .arg("-h")
        .arg(n.hosts.join(" "))
        .arg("-t")
        .arg(n.time.to_string());
    if n.kind == Kind::Up {
        cmd.arg("-u");
    }
    cmd.args(&command[1..]);
    let failing = matches!(n.kind, Kind::Failure | Kind::Flapping);
    cmd.env("MON_ALERTTYPE", n.kind.mon_type())
        .env("MON_OPSTATUS", if failing { "0" } else { "1" })
        .env("MON_RETVAL", if failing { "1" } else { "0" })
        .env("MON_SERVICE", &n.check)
        .env("MON_GROUP", &n.group)
        .env("MON_DESCRIPTION", format!("{} of {}", n.check, n.group))
        .env("MON_LAST_SUMMARY", &n.summary)
        .env("MON_LAST_OUTPUT", format!("{}\n{}", n.summary, n.detail))
        .env("MON_FIRST_FAILURE", n.first_failure.to_string())
        .env("MON_LAST_FAILURE", n.last_failure.to_string())
        .env("MON_LAST_SUCCESS", n.last_success.to_string());
    let mut input = n.summary.clone().into_bytes();
    input.push(b'\n');
    input.extend_from_slice(n.detail.as_bytes());
    if !n.detail.is_empty() && !n.detail.ends_with('\n') {
        input.push(b'\n');
    }
    let run = run_program(cmd, Some(input), timeout)
        .await
        .map_err(|e| format!("{}: {e}", path.display()))?;
    if run.timed_out {
        return Err(format!(
            "{}: killed after {timeout:?} (timeout)",
            path.display()
        ));
    }
    match run.status {
        Some(s) if s.success() => Ok(()),
        Some(s) => Err(format!("{}: {s}", path.display())),
        None => Err(format!("{}: no exit status", path.display())),
    }
}

#[cfg(test)]
mod tests {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::TcpListener;

    use super::*;

    fn notice() -> Notice {
        Notice {
            kind: Kind::Failure,
            check: "http".into(),
            group: "web".into(),
            hosts: vec!["127.0.0.11:80".into(), "127.0.0.12:80".into()],
            summary: "2 targets down".into(),
            detail: String::new(),
            time: 1_700_000_000,
            first_failure: 1_699_999_990,
            last_failure: 1_700_000_000,
            last_success: 1_699_999_980,
        }
    }

    /// A one-request HTTP server answering `status`; returns its URL and the request it got.
    async fn hook(status: &'static str) -> (String, tokio::task::JoinHandle<String>) {
        let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}/hooks/herd", l.local_addr().unwrap());
        let got = tokio::spawn(async move {
            let (mut s, _) = l.accept().await.unwrap();
            let mut req = Vec::new();
            let mut buf = [0u8; 4096];
            loop {
                let n = s.read(&mut buf).await.unwrap();
                req.extend_from_slice(&buf[..n]);
                let text = String::from_utf8_lossy(&req).to_string();
                if let Some((head, body)) = text.split_once("\r\n\r\n") {
                    let len: usize = head
                        .lines()
                        .find_map(|l| l.strip_prefix("Content-Length: "))
                        .and_then(|v| v.parse().ok())
                        .unwrap_or(0);
                    if body.len() >= len {
                        break;
                    }
                }
                if n == 0 {
                    break;
                }
            }
            let _ = s
                .write_all(format!("HTTP/1.1 {status}\r\nContent-Length: 0\r\n\r\n").as_bytes())
                .await;
            String::from_utf8_lossy(&req).to_string()
        });
        (url, got)
    }

    #[tokio::test]
    async fn a_webhook_gets_the_notice_as_json() {
        let (url, got) = hook("204 No Content").await;
        let sink = Sink::Webhook {
            url: url.clone(),
            tls_ca: None,
        };
        let d = send(
            &sink,
            &notice(),
            Duration::from_secs(5),
            &HealthConfig::default(),
        )
        .await;
        assert!(d.ok, "{}", d.error);
        let req = got.await.unwrap();
        assert!(req.starts_with("POST /hooks/herd HTTP/1.1\r\n"), "{req}");
        assert!(req.contains("Content-Type: application/json\r\n"));
        let body = req.split_once("\r\n\r\n").unwrap().1;
        let v: serde_json::Value = serde_json::from_str(body).unwrap();
        assert_eq!(v["kind"], "failure");
        assert_eq!(v["check"], "http");
        assert_eq!(v["hosts"][1], "127.0.0.12:80");
        assert_eq!(v["first_failure"], 1_699_999_990u64);
    }

    #[tokio::test]
    async fn a_webhook_that_fails_or_hangs_is_recorded_as_failed() {
        let (url, _got) = hook("500 Internal Server Error").await;
        let d = send(
            &Sink::Webhook { url, tls_ca: None },
            &notice(),
            Duration::from_secs(5),
            &HealthConfig::default(),
        )
        .await;
        assert!(!d.ok);
        assert!(d.error.contains("500"), "{}", d.error);

        // Accepts (the kernel does) and never answers.
        let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}/", l.local_addr().unwrap());
        let d = send(
            &Sink::Webhook { url, tls_ca: None },
            &notice(),
            Duration::from_millis(300),
            &HealthConfig::default(),
        )
        .await;
        assert!(!d.ok);
        assert!(d.error.contains("no answer"), "{}", d.error);
        drop(l);
    }

    /// An `exec` sink whose program never ends, killed at the alert's timeout on tokio's
    /// paused clock (no real waiting).
    #[tokio::test(start_paused = true)]
    async fn an_alert_program_that_hangs_is_killed_at_its_timeout() {
        use std::os::unix::fs::PermissionsExt;
        let dir = std::env::temp_dir().join(format!("herd-alert-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let script = dir.join("hang.alert");
        std::fs::write(&script, "#!/bin/sh\nexec sleep 60\n").unwrap();
        std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o755)).unwrap();
        let sink = Sink::Exec {
            command: vec![script.display().to_string()],
        };
        let start = tokio::time::Instant::now();
        let timeout = Duration::from_secs(15);
        let d = send(&sink, &notice(), timeout, &HealthConfig::default()).await;
        let took = start.elapsed();
        let _ = std::fs::remove_dir_all(&dir);
        assert!(
            took >= timeout && took < timeout + Duration::from_secs(1),
            "{took:?}"
        );
        assert!(!d.ok);
        assert!(
            d.error.ends_with("killed after 15s (timeout)"),
            "{}",
            d.error
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_webhook_that_never_answers_fails_at_its_timeout() {
        let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}/", l.local_addr().unwrap());
        let start = tokio::time::Instant::now();
        let d = send(
            &Sink::Webhook {
                url: url.clone(),
                tls_ca: None,
            },
            &notice(),
            Duration::from_secs(10),
            &HealthConfig::default(),
        )
        .await;
        assert!(
            start.elapsed() >= Duration::from_secs(10),
            "{:?}",
            start.elapsed()
        );
        assert_eq!(d.error, format!("{url}: no answer within 10s"));
        drop(l);
    }
}
