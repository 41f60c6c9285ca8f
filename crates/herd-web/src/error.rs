//! The errors of the web side's public functions. Their texts are what operators read in the
//! daemon's log and in `herd reload`'s answer; the HTTP API keeps answering with the wire type
//! `herd_core::api::ApiError` (see `http::error`).

use std::net::SocketAddr;
use std::path::PathBuf;

/// Applying a `[web]` section failed; what was running goes on unchanged.
#[derive(Debug, thiserror::Error)]
pub enum WebError {
    #[error("web.listen: cannot bind {addr}: {source}")]
    Bind {
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error(transparent)]
    Tls(#[from] TlsError),
    #[error("web.metrics-token-file: {}: {source}", .path.display())]
    TokenFile {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("web.metrics-token-file: {}: the token is shorter than 16 characters", .path.display())]
    TokenTooShort { path: PathBuf },
    #[error("the dashboard needs a tokio runtime to serve on")]
    NoRuntime,
}

impl WebError {
    /// The address is taken (by us, on an overlapping address, or by another program).
    pub fn addr_in_use(&self) -> bool {
        matches!(self, WebError::Bind { source, .. } if source.kind() == std::io::ErrorKind::AddrInUse)
    }
}

/// The dashboard's certificate or key does not load.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("web.tls-cert: {}: {source}", .path.display())]
    Cert {
        path: PathBuf,
        source: rustls::pki_types::pem::Error,
    },
    #[error("web.tls-cert: {}: no certificate", .path.display())]
    NoCert { path: PathBuf },
    #[error("web.tls-key: {}: {source}", .path.display())]
    Key {
        path: PathBuf,
        source: rustls::pki_types::pem::Error,
    },
    #[error("web TLS: {0}")]
    Provider(rustls::Error),
    #[error("web.tls-key: {0}")]
    Rejected(rustls::Error),
}

/// The audit log cannot take a line now: the action it would record is not taken.
#[derive(Debug, thiserror::Error)]
#[error("the audit log {} cannot be written: {source}", .path.display())]
pub struct AuditError {
    pub path: PathBuf,
    pub source: std::io::Error,
}

/// A password could not be hashed.
#[derive(Debug, thiserror::Error)]
#[error("cannot hash the password: {0}")]
pub struct HashError(pub argon2::password_hash::Error);
