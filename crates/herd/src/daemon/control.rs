//! The control socket (one JSON request per line) and the signals the daemon handles.

use super::*;

pub use crate::ctlsock::{bind as bind_control, check as check_control};

pub(super) async fn serve_control(daemon: Arc<Daemon>, listener: UnixListener) {
    let mut backoff = herd_core::backoff::Backoff::default();
    loop {
        match listener.accept().await {
            Ok((stream, _)) => {
                backoff.succeeded();
                let d = daemon.clone();
                tokio::spawn(async move {
                    if let Err(e) = serve_client(d, stream).await {
                        tracing::debug!(error = %e, "control connection ended");
                    }
                });
            }
            Err(e) => {
                // Out of descriptors and the like: wait (growing) rather than spin.
                tracing::warn!(error = %e, "control accept failed");
                tokio::time::sleep(backoff.failed()).await;
            }
        }
    }
}

async fn serve_client(daemon: Arc<Daemon>, stream: UnixStream) -> io::Result<()> {
    let (rd, mut wr) = stream.into_split();
    let mut rd = BufReader::new(rd);
    let mut line = Vec::new();
    loop {
        line.clear();
        let n = (&mut rd)
            .take(MAX_MESSAGE as u64 + 1)
            .read_until(b'\n', &mut line)
            .await?;
        if n == 0 {
            return Ok(());
        }
        let resp = if line.len() > MAX_MESSAGE {
            Response::Error(ApiError::new(ErrorKind::Invalid, "request too large"))
        } else {
            match serde_json::from_slice::<Request>(&line) {
                Ok(req) => {
                    let d = daemon.clone();
                    // Requests may bind sockets or take the table lock: keep them off the
                    // async workers.
                    tokio::task::spawn_blocking(move || d.handle(req))
                        .await
                        .unwrap_or_else(|e| {
                            Response::Error(ApiError::new(ErrorKind::Internal, e.to_string()))
                        })
                }
                Err(e) => Response::Error(ApiError::new(
                    ErrorKind::Invalid,
                    format!("bad request: {e}"),
                )),
            }
        };
        let mut out =
            serde_json::to_vec(&resp).unwrap_or_else(|_| b"{\"result\":\"error\"}".to_vec());
        out.push(b'\n');
        wr.write_all(&out).await?;
        if line.len() > MAX_MESSAGE {
            return Ok(());
        }
    }
}

/// The signals the daemon handles. Installed before anything is bound, so that a SIGHUP
/// (`systemctl reload`) during start-up cannot kill the daemon with the default action.
#[derive(Debug)]
pub struct Signals {
    pub(super) term: tokio::signal::unix::Signal,
    pub(super) int: tokio::signal::unix::Signal,
    pub(super) hup: tokio::signal::unix::Signal,
}

impl Signals {
    pub fn install() -> Result<Signals> {
        Ok(Signals {
            term: signal(SignalKind::terminate()).context("cannot install SIGTERM handler")?,
            int: signal(SignalKind::interrupt()).context("cannot install SIGINT handler")?,
            hup: signal(SignalKind::hangup()).context("cannot install SIGHUP handler")?,
        })
    }
}

/// The next SIGTERM or SIGINT.
pub(super) async fn stop_signal(
    term: &mut tokio::signal::unix::Signal,
    int: &mut tokio::signal::unix::Signal,
) -> &'static str {
    tokio::select! {
        _ = term.recv() => "SIGTERM",
        _ = int.recv() => "SIGINT",
    }
}
