//! Why a sync failed on this side (receiving, or relaying); the text is what the node's
//! outcome and the audit log say.

use std::io;
use std::path::PathBuf;

use herd_sync::apply::ApplyError;
use herd_sync::manifest::{ScanError, TreeError};
use herd_sync::path::PathError;

use crate::frame::Kind;
use crate::grant::GrantError;

#[derive(Debug, thiserror::Error)]
pub enum SyncError {
    #[error("{0:?}: the destination must be an absolute path without '..'")]
    Destination(String),
    /// The connection broke, stalled or failed.
    #[error("{0}")]
    Link(#[from] io::Error),
    #[error("the connection closed")]
    Closed,
    #[error("the sender went away")]
    SenderGone,
    /// The peer's error frame: its message.
    #[error("{0}")]
    Peer(String),
    #[error("expected {expected:?}, got {got:?}")]
    Unexpected { expected: Kind, got: Kind },
    #[error("expected file data, got {0:?}")]
    NotFileData(Kind),
    #[error("a bad file start")]
    BadFileStart,
    #[error("more than {limit} bytes of {kind:?}")]
    TooLong { kind: Kind, limit: usize },
    #[error("manifest line {line}: {error}")]
    ManifestLine {
        line: usize,
        error: serde_json::Error,
    },
    #[error("manifest: {0}")]
    ManifestPath(#[from] PathError),
    #[error("manifest: {0}")]
    ManifestTree(#[from] TreeError),
    #[error("manifest: {0}: a bad hash")]
    BadHash(String),
    /// A relayed push whose grant does not cover it (this node's own copy).
    #[error(transparent)]
    Grant(#[from] GrantError),
    /// The same, as a relay answers for itself and its subtree.
    #[error("refused: {0}")]
    Refused(GrantError),
    /// A file or directory on this node.
    #[error("{}: {error}", path.display())]
    Local { path: PathBuf, error: io::Error },
    #[error(transparent)]
    Scan(#[from] ScanError),
    #[error(transparent)]
    Apply(#[from] ApplyError),
    #[error("{0}")]
    Task(#[from] tokio::task::JoinError),
}

impl SyncError {
    /// A failure at `path` on this node.
    pub(crate) fn local(path: impl Into<PathBuf>) -> impl FnOnce(io::Error) -> SyncError {
        let path = path.into();
        move |error| SyncError::Local { path, error }
    }
}
