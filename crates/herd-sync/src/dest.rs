//! A destination tree, changed only beneath its root.
//!
//! A receiver writes what a peer sends, as root: every path it touches is therefore reached
//! from the root's directory handle without following a symlink, in the middle of the path or
//! at its end ([`Beneath::resolve`]), and every change is made relative to the handle of the
//! entry's parent directory (`openat`, `mkdirat`, `renameat`, `unlinkat`, `symlinkat`,
//! `fchownat` and `utimensat` with `AT_SYMLINK_NOFOLLOW`, `fchmod` on an open file). A
//! symlink anywhere on the way — sent by the peer a moment ago, or put there by someone else
//! since the tree was read — makes the operation fail (`ELOOP`/`ENOTDIR`); it is never
//! followed out of the root. A parent that is a file fails the same way.

use std::ffi::{CStr, CString};
use std::fs::File;
use std::io;
use std::os::fd::AsRawFd;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};

use rustix::fd::{AsFd, BorrowedFd, OwnedFd};
use rustix::fs::{
    chmodat, chownat, fchmod, fchown, fstat, futimens, mkdirat, openat, renameat, statat,
    symlinkat, unlinkat, utimensat, AtFlags, FileType, Gid, Mode, OFlags, Timespec, Timestamps,
    Uid, CWD, UTIME_OMIT,
};

use crate::manifest::Entry;
use crate::path::Beneath;

static TMP: AtomicU64 = AtomicU64::new(0);

/// A destination's root, opened once.
#[derive(Debug)]
pub struct Dest {
    root: Beneath,
    /// The last parent directory opened (entries come in path order, so most share it).
    parent: Option<(String, OwnedFd)>,
    /// Whether owners are set (only root may give files away).
    as_root: bool,
}

/// `rel` split into its parent's path and its last component.
fn split(rel: &str) -> (&str, &str) {
    rel.rsplit_once('/').unwrap_or(("", rel))
}

fn tmp_name(name: &str) -> String {
    format!(
        ".{name}.herd-tmp.{}.{}",
        std::process::id(),
        TMP.fetch_add(1, Ordering::Relaxed)
    )
}

fn times(e: &Entry) -> Timestamps {
    Timestamps {
        last_access: Timespec {
            tv_sec: 0,
            tv_nsec: UTIME_OMIT,
        },
        last_modification: Timespec {
            tv_sec: e.mtime,
            tv_nsec: e.mtime_nsec.into(),
        },
    }
}

fn owner(e: &Entry) -> (Option<Uid>, Option<Gid>) {
    (Some(Uid::from_raw(e.uid)), Some(Gid::from_raw(e.gid)))
}

fn mode(e: &Entry) -> Mode {
    Mode::from_raw_mode(e.mode & 0o7777)
}

impl Dest {
    /// Opens the destination `root` (a directory; not followed if it is a symlink).
    pub fn open(root: &Path) -> io::Result<Dest> {
        Ok(Dest {
            root: Beneath::new(root)?,
            parent: None,
            as_root: rustix::process::geteuid().is_root(),
        })
    }

    /// A reader of the same root (for the old copies deltas are made against).
    pub fn reader(&self) -> io::Result<Beneath> {
        self.root.try_clone()
    }

    /// The directory `dir` (a checked relative path; empty for the root), reached without a
    /// symlink. Kept for the next entry of the same directory.
    fn dir(&mut self, dir: &str) -> io::Result<BorrowedFd<'_>> {
        if dir.is_empty() {
            return Ok(self.root.root());
        }
        if self.parent.as_ref().is_none_or(|(p, _)| p != dir) {
            let fd = self.root.resolve(dir, OFlags::RDONLY | OFlags::DIRECTORY)?;
            self.parent = Some((dir.to_string(), fd));
        }
        Ok(self
            .parent
            .as_ref()
            .map_or(self.root.root(), |(_, fd)| fd.as_fd()))
    }

    /// Forgets the kept directory: removing or creating entries can replace it.
    fn forget(&mut self) {
        self.parent = None;
    }

    /// Removes `rel`: a directory with everything in it, anything else by itself. `false`
    /// when there was nothing there.
    pub fn remove(&mut self, rel: &str) -> io::Result<bool> {
        crate::path::check(rel).map_err(io::Error::other)?;
        self.forget();
        let (dir, name) = split(rel);
        let parent = self.dir(dir)?;
        let st = match statat(parent, name, AtFlags::SYMLINK_NOFOLLOW) {
            Err(rustix::io::Errno::NOENT) => return Ok(false),
            other => other?,
        };
        if FileType::from_raw_mode(st.st_mode) == FileType::Directory {
            let name = CString::new(name).map_err(io::Error::other)?;
            remove_tree(parent, &name)?;
        } else {
            unlinkat(parent, name, AtFlags::empty())?;
        }
        Ok(true)
    }

    /// Creates the directory `rel` (mode 0700 until its metadata is set); one already there
    /// is kept.
    pub fn mkdir(&mut self, rel: &str) -> io::Result<()> {
        crate::path::check(rel).map_err(io::Error::other)?;
        self.forget();
        let (dir, name) = split(rel);
        let parent = self.dir(dir)?;
        match mkdirat(parent, name, Mode::from_raw_mode(0o700)) {
            Err(rustix::io::Errno::EXIST) => {
                let st = statat(parent, name, AtFlags::SYMLINK_NOFOLLOW)?;
                if FileType::from_raw_mode(st.st_mode) != FileType::Directory {
                    return Err(io::Error::other(
                        "something other than a directory is there",
                    ));
                }
                Ok(())
            }
            other => Ok(other?),
        }
    }

    /// Writes the regular file `e.path`: `fill` writes its content to a new temporary file
    /// beside it (0600, created exclusively), which gets `e`'s owner, mode and mtime and is
    /// then renamed over the old one. Returns what `fill` returned.
    pub fn write(
        &mut self,
        e: &Entry,
        fill: &mut dyn FnMut(&mut File) -> io::Result<u64>,
    ) -> io::Result<u64> {
        crate::path::check(&e.path).map_err(io::Error::other)?;
        let as_root = self.as_root;
        let (dir, name) = split(&e.path);
        let parent = self.dir(dir)?;
        let tmp = tmp_name(name);
        let flags = OFlags::WRONLY | OFlags::CREATE | OFlags::EXCL | OFlags::NOFOLLOW;
        let fd = openat(
            parent,
            &tmp,
            flags | OFlags::CLOEXEC,
            Mode::from_raw_mode(0o600),
        )?;
        let mut f = File::from(fd);
        let done = (|| {
            let n = fill(&mut f)?;
            // Owner first: a chown clears the setuid and setgid bits the mode then sets.
            if as_root {
                let (u, g) = owner(e);
                fchown(&f, u, g)?;
            }
            fchmod(&f, mode(e))?;
            futimens(&f, &times(e))?;
            drop(f);
            renameat(parent, &tmp, parent, name)?;
            Ok(n)
        })();
        if done.is_err() {
            let _ = unlinkat(parent, &tmp, AtFlags::empty());
        }
        done
    }

    /// Creates (or replaces) the symlink `e.path` pointing at `target`, with `e`'s owner and
    /// mtime. The caller decides whether the target may be linked to.
    pub fn symlink(&mut self, e: &Entry, target: &str) -> io::Result<()> {
        crate::path::check(&e.path).map_err(io::Error::other)?;
        self.forget();
        let as_root = self.as_root;
        let (dir, name) = split(&e.path);
        let parent = self.dir(dir)?;
        let tmp = tmp_name(name);
        symlinkat(target, parent, &tmp)?;
        let done = (|| {
            if as_root {
                let (u, g) = owner(e);
                chownat(parent, &tmp, u, g, AtFlags::SYMLINK_NOFOLLOW)?;
            }
            utimensat(parent, &tmp, &times(e), AtFlags::SYMLINK_NOFOLLOW)?;
            renameat(parent, &tmp, parent, name)
        })();
        if done.is_err() {
            let _ = unlinkat(parent, &tmp, AtFlags::empty());
        }
        Ok(done?)
    }

    /// Sets `e`'s owner (as root), mode (not on a symlink) and mtime on what is at `e.path`
    /// now, without following it if it is a symlink.
    pub fn set_meta(&mut self, e: &Entry, symlink: bool) -> io::Result<()> {
        crate::path::check(&e.path).map_err(io::Error::other)?;
        let as_root = self.as_root;
        if e.path.is_empty() {
            let root = self.root.root();
            if as_root {
                let (u, g) = owner(e);
                fchown(root, u, g)?;
            }
            fchmod(root, mode(e))?;
            return Ok(futimens(root, &times(e))?);
        }
        let (dir, name) = split(&e.path);
        let parent = self.dir(dir)?;
        if as_root {
            let (u, g) = owner(e);
            chownat(parent, name, u, g, AtFlags::SYMLINK_NOFOLLOW)?;
        }
        if !symlink {
            chmod_nofollow(parent, name, mode(e))?;
        }
        Ok(utimensat(
            parent,
            name,
            &times(e),
            AtFlags::SYMLINK_NOFOLLOW,
        )?)
    }
}

/// `fchmodat(…, AT_SYMLINK_NOFOLLOW)`, which Linux lacks before fchmodat2: the entry is
/// opened with `O_PATH | O_NOFOLLOW` (no side effect, whatever it is), refused if it is a
/// symlink, and changed through its `/proc/self/fd` link, which names that very inode. Without
/// /proc, it is opened for reading (still `O_NOFOLLOW`) and `fchmod`ed.
fn chmod_nofollow(parent: BorrowedFd<'_>, name: &str, mode: Mode) -> io::Result<()> {
    let fd = openat(
        parent,
        name,
        OFlags::PATH | OFlags::NOFOLLOW | OFlags::CLOEXEC,
        Mode::empty(),
    )?;
    if FileType::from_raw_mode(fstat(&fd)?.st_mode) == FileType::Symlink {
        return Err(io::Error::other("a symlink is there now"));
    }
    match chmodat(
        CWD,
        format!("/proc/self/fd/{}", fd.as_raw_fd()),
        mode,
        AtFlags::empty(),
    ) {
        Err(rustix::io::Errno::NOENT) => {
            let flags = OFlags::RDONLY | OFlags::NOFOLLOW | OFlags::NONBLOCK | OFlags::NOCTTY;
            let f = openat(parent, name, flags | OFlags::CLOEXEC, Mode::empty())?;
            Ok(fchmod(f, mode)?)
        }
        other => Ok(other?),
    }
}

/// Removes the directory `name` in `parent` and everything in it; nothing on the way is
/// followed (each directory is opened `O_NOFOLLOW` from its parent's handle).
fn remove_tree(parent: BorrowedFd<'_>, name: &CStr) -> io::Result<()> {
    let fd = openat(
        parent,
        name,
        OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
        Mode::empty(),
    )?;
    // Names first, then removals: the directory is not changed while it is being read.
    let mut children = Vec::new();
    for item in rustix::fs::Dir::read_from(&fd)? {
        let item = item?;
        let child = item.file_name().to_bytes();
        if child == b"." || child == b".." {
            continue;
        }
        children.push((item.file_name().to_owned(), item.file_type()));
    }
    for (child, kind) in children {
        let kind = match kind {
            FileType::Unknown => {
                FileType::from_raw_mode(statat(&fd, &*child, AtFlags::SYMLINK_NOFOLLOW)?.st_mode)
            }
            k => k,
        };
        if kind == FileType::Directory {
            remove_tree(fd.as_fd(), &child)?;
        } else {
            unlinkat(&fd, &*child, AtFlags::empty())?;
        }
    }
    Ok(unlinkat(parent, name, AtFlags::REMOVEDIR)?)
}
