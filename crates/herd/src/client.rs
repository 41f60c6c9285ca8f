//! The CLI side of the control API: one JSON line out, one JSON line back.

use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::time::Duration;

use herd_core::api::{Request, Response, MAX_MESSAGE};

/// The control socket when neither `--socket` nor `HERD_SOCKET` names one.
pub const DEFAULT_SOCKET: &str = "/run/herd/herd.sock";

/// Failure to talk to the daemon (as opposed to an error the daemon answered with).
#[derive(Debug)]
pub struct ClientError {
    pub socket: PathBuf,
    pub message: String,
}

impl std::fmt::Display for ClientError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.socket.display(), self.message)
    }
}

impl std::error::Error for ClientError {}

#[derive(Debug)]
pub struct Client {
    path: PathBuf,
    rd: BufReader<UnixStream>,
    wr: UnixStream,
}

impl Client {
    pub fn connect(path: &Path) -> Result<Client, ClientError> {
        let err = |m: String| ClientError {
            socket: path.to_path_buf(),
            message: m,
        };
        let s = UnixStream::connect(path).map_err(|e| {
            err(match e.kind() {
                std::io::ErrorKind::NotFound | std::io::ErrorKind::ConnectionRefused => {
                    format!("cannot reach the herd daemon ({e}); is `herd daemon` running? (--socket / HERD_SOCKET choose the socket)")
                }
                _ => format!("cannot connect: {e}"),
            })
        })?;
        // A request that binds many listeners can take a moment; a hung daemon should not
        // hang the CLI forever.
        let _ = s.set_read_timeout(Some(Duration::from_secs(60)));
        let wr = s.try_clone().map_err(|e| err(e.to_string()))?;
        Ok(Client {
            path: path.to_path_buf(),
            rd: BufReader::new(s),
            wr,
        })
    }

    pub fn call(&mut self, req: &Request) -> Result<Response, ClientError> {
        let err = |m: String| ClientError {
            socket: self.path.clone(),
            message: m,
        };
        let mut line = serde_json::to_vec(req).map_err(|e| err(e.to_string()))?;
        line.push(b'\n');
        self.wr
            .write_all(&line)
            .map_err(|e| err(format!("send failed: {e}")))?;
        let mut buf = Vec::new();
        std::io::Read::take(&mut self.rd, MAX_MESSAGE as u64 + 1)
            .read_until(b'\n', &mut buf)
            .map_err(|e| err(format!("receive failed: {e}")))?;
        if buf.is_empty() {
            return Err(err("the daemon closed the connection".into()));
        }
        serde_json::from_slice(&buf).map_err(|e| err(format!("bad response: {e}")))
    }
}
