//! Applying a plan under a destination root.
//!
//! New content is written to a temporary file beside its target (`.NAME.herd-tmp.PID.N`),
//! given its mode, owner and mtime, and renamed into place: whatever stops a sync, each file
//! is the old one or the new one. Paths are checked before anything is touched, and symlinks
//! that would lead out of the destination are refused (and reported), not created.

use std::fs;
use std::io::Write;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};

use rustix::fs::{utimensat, AtFlags, Timespec, Timestamps, CWD, UTIME_OMIT};

use crate::manifest::{Entry, Kind};
use crate::path;
use crate::plan::{Action, Plan};

/// Where new content comes from (a local tree, or the agent's stream).
pub trait Source {
    /// Writes the new content of `rel` to `out`; the bytes written.
    fn copy_to(&mut self, rel: &str, out: &mut dyn Write) -> std::io::Result<u64>;
}

/// A source tree on this host.
#[derive(Debug)]
pub struct LocalSource<'a>(pub &'a Path);

impl Source for LocalSource<'_> {
    fn copy_to(&mut self, rel: &str, out: &mut dyn Write) -> std::io::Result<u64> {
        let p = path::join(self.0, rel).map_err(std::io::Error::other)?;
        std::io::copy(&mut fs::File::open(p)?, out)
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

static TMP: AtomicU64 = AtomicU64::new(0);

fn io(rel: &str, e: impl std::fmt::Display) -> String {
    format!("{rel}: {e}")
}

/// Applies `plan` under `root`, taking content from `src`. An error that would leave the tree
/// inconsistent (a write or rename failing: disk full, permissions) stops the sync and is
/// returned; refusals of single entries are collected in the stats.
pub fn apply(plan: &Plan, root: &Path, src: &mut dyn Source) -> Result<Stats, String> {
    let mut st = Stats::default();
    let as_root = rustix::process::geteuid().is_root();
    for a in &plan.actions {
        match a {
            Action::Remove { path: rel, dir } => {
                let p = path::join(root, rel)?;
                let res = if *dir {
                    fs::remove_dir_all(&p)
                } else {
                    fs::remove_file(&p)
                };
                match res {
                    Ok(()) => st.removed += 1,
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                    Err(e) => return Err(io(rel, e)),
                }
            }
            Action::Mkdir(e) => {
                let p = path::join(root, &e.path)?;
                match fs::create_dir(&p) {
                    Ok(()) => {}
                    Err(err) if err.kind() == std::io::ErrorKind::AlreadyExists && p.is_dir() => {}
                    Err(err) => return Err(io(&e.path, err)),
                }
            }
            Action::Write { entry, .. } => {
                let n = write_file(root, entry, src, as_root)?;
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
                let p = path::join(root, &e.path)?;
                let tmp = tmp_name(&p);
                std::os::unix::fs::symlink(target, &tmp).map_err(|err| io(&e.path, err))?;
                set_meta(&tmp, e, as_root, true).map_err(|err| io(&e.path, err))?;
                if let Err(err) = fs::rename(&tmp, &p) {
                    let _ = fs::remove_file(&tmp);
                    return Err(io(&e.path, err));
                }
            }
            Action::Meta(e) => {
                let p = path::join(root, &e.path)?;
                set_meta(&p, e, as_root, matches!(e.kind, Kind::Symlink { .. }))
                    .map_err(|err| io(&e.path, err))?;
                st.meta += 1;
            }
        }
    }
    Ok(st)
}

fn tmp_name(p: &Path) -> std::path::PathBuf {
    let name = p
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    p.with_file_name(format!(
        ".{name}.herd-tmp.{}.{}",
        std::process::id(),
        TMP.fetch_add(1, Ordering::Relaxed)
    ))
}

fn write_file(root: &Path, e: &Entry, src: &mut dyn Source, as_root: bool) -> Result<u64, String> {
    let p = path::join(root, &e.path)?;
    let tmp = tmp_name(&p);
    let result = (|| -> std::io::Result<u64> {
        let mut out = fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode_private()
            .open(&tmp)?;
        let n = src.copy_to(&e.path, &mut out)?;
        drop(out);
        set_meta(&tmp, e, as_root, false)?;
        fs::rename(&tmp, &p)?;
        Ok(n)
    })();
    result.map_err(|err| {
        let _ = fs::remove_file(&tmp);
        let hint = if err.raw_os_error() == Some(28) {
            " (the destination's file system is full; the old file is untouched)"
        } else {
            ""
        };
        format!("{}: {err}{hint}", e.path)
    })
}

/// Owner (as root only), then mode (a chown clears setuid bits), then mtime.
fn set_meta(p: &Path, e: &Entry, as_root: bool, symlink: bool) -> std::io::Result<()> {
    if as_root {
        std::os::unix::fs::lchown(p, Some(e.uid), Some(e.gid))?;
    }
    if !symlink {
        fs::set_permissions(p, fs::Permissions::from_mode(e.mode))?;
    }
    let times = Timestamps {
        last_access: Timespec {
            tv_sec: 0,
            tv_nsec: UTIME_OMIT,
        },
        last_modification: Timespec {
            tv_sec: e.mtime,
            tv_nsec: e.mtime_nsec.into(),
        },
    };
    utimensat(CWD, p, &times, AtFlags::SYMLINK_NOFOLLOW)?;
    Ok(())
}

trait ModePrivate {
    fn mode_private(&mut self) -> &mut Self;
}

impl ModePrivate for fs::OpenOptions {
    /// Readable by nobody else until its real mode is set.
    fn mode_private(&mut self) -> &mut Self {
        std::os::unix::fs::OpenOptionsExt::mode(self, 0o600)
    }
}
