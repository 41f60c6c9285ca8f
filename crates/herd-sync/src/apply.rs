//! Applying a plan under a destination root.
//!
//! New content is written to a temporary file beside its target (`.NAME.herd-tmp.PID.N`),
//! given its mode, owner and mtime, and renamed into place: whatever stops a sync, each file
//! is the old one or the new one. Every change is made beneath the root without following a
//! symlink ([`Dest`]), and symlinks that would lead out of the destination are refused (and
//! reported), not created.

use std::io::Write;
use std::path::Path;

use crate::dest::Dest;
use crate::manifest::Kind;
use crate::path::{self, Beneath};
use crate::plan::{Action, Plan};

/// Where new content comes from (a local tree, or the agent's stream).
pub trait Source {
    /// Writes the new content of `rel` to `out`; the bytes written.
    fn copy_to(&mut self, rel: &str, out: &mut dyn Write) -> std::io::Result<u64>;
}

/// A source tree on this host, read beneath its root without following symlinks.
#[derive(Debug)]
pub struct LocalSource(Beneath);

impl LocalSource {
    pub fn new(root: &Path) -> std::io::Result<LocalSource> {
        Ok(LocalSource(Beneath::new(root)?))
    }
}

impl Source for LocalSource {
    fn copy_to(&mut self, rel: &str, out: &mut dyn Write) -> std::io::Result<u64> {
        std::io::copy(&mut self.0.open(rel)?, out)
    }
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Stats {
    pub written: u64,
    pub bytes: u64,
    pub removed: u64,
    pub meta: u64,
    /// Entries not applied, and why (the rest of the plan is applied).
    pub refused: Vec<(String, String)>,
}

/// Why a plan could not be applied (the entries applied before stay).
#[derive(Debug, thiserror::Error)]
pub enum ApplyError {
    /// The destination's root could not be opened.
    #[error("{}: {error}", root.display())]
    Root {
        root: std::path::PathBuf,
        error: std::io::Error,
    },
    /// A change to `path` failed.
    #[error("{path}: {error}")]
    Io { path: String, error: std::io::Error },
    /// New content for `path` could not be written (or came wrong from its source).
    #[error("{path}: {error}{}", full_hint(error))]
    Write { path: String, error: std::io::Error },
}

fn io(rel: &str, error: std::io::Error) -> ApplyError {
    ApplyError::Io {
        path: rel.to_string(),
        error,
    }
}

/// Applies `plan` under `root`, taking content from `src`. An error that would leave the tree
/// inconsistent (a write or rename failing: disk full, permissions, a symlink or a file where
/// a directory should be) stops the sync and is returned; refusals of single entries are
/// collected in the stats.
pub fn apply(plan: &Plan, root: &Path, src: &mut dyn Source) -> Result<Stats, ApplyError> {
    let mut dest = Dest::open(root).map_err(|error| ApplyError::Root {
        root: root.to_path_buf(),
        error,
    })?;
    apply_in(plan, &mut dest, src)
}

/// [`apply`] to a destination already open.
pub fn apply_in(plan: &Plan, dest: &mut Dest, src: &mut dyn Source) -> Result<Stats, ApplyError> {
    let mut st = Stats::default();
    for a in &plan.actions {
        match a {
            Action::Remove { path: rel, .. } => {
                if dest.remove(rel).map_err(|e| io(rel, e))? {
                    st.removed += 1;
                }
            }
            Action::Mkdir(e) => dest.mkdir(&e.path).map_err(|err| io(&e.path, err))?,
            Action::Write { entry, .. } => {
                let n = dest
                    .write(entry, &mut |f| src.copy_to(&entry.path, f))
                    .map_err(|error| ApplyError::Write {
                        path: entry.path.clone(),
                        error,
                    })?;
                st.written += 1;
                st.bytes += n;
            }
            Action::Symlink(e) => {
                let Kind::Symlink { target } = &e.kind else {
                    continue;
                };
                if !path::symlink_stays_inside(&e.path, target) {
                    st.refused.push((
                        e.path.clone(),
                        format!("symlink to {target:?} leads out of the destination"),
                    ));
                    continue;
                }
                dest.symlink(e, target).map_err(|err| io(&e.path, err))?;
            }
            Action::Meta(e) => {
                dest.set_meta(e, matches!(e.kind, Kind::Symlink { .. }))
                    .map_err(|err| io(&e.path, err))?;
                st.meta += 1;
            }
        }
    }
    Ok(st)
}

/// What a full disk means for the sync.
fn full_hint(err: &std::io::Error) -> &'static str {
    if err.raw_os_error() == Some(28) {
        " (the destination's file system is full; the old file is untouched)"
    } else {
        ""
    }
}
