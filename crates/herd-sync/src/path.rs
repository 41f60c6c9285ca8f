//! Relative paths inside a synced tree, and the checks that keep a sync inside its root.

use std::path::{Component, Path, PathBuf};

use rustix::fd::{AsFd, BorrowedFd, OwnedFd};
use rustix::fs::{openat, openat2, Mode, OFlags, ResolveFlags};

/// A manifest path that is not one (a peer's manifest, or a peer asking for a path).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PathError {
    #[error("{0:?}: an absolute path")]
    Absolute(String),
    #[error("{0:?}: a NUL byte in a path")]
    Nul(String),
    #[error("{0:?}: an empty or '.' component")]
    Empty(String),
    #[error("{0:?}: '..' leads out of the tree")]
    Parent(String),
}

/// Checks a manifest path (`dir/file`, '/'-separated, relative): no empty, `.` or `..`
/// components, no NUL, not absolute. The root itself is the empty path.
pub fn check(rel: &str) -> Result<(), PathError> {
    if rel.is_empty() {
        return Ok(());
    }
    if rel.starts_with('/') {
        return Err(PathError::Absolute(rel.to_string()));
    }
    if rel.contains('\0') {
        return Err(PathError::Nul(rel.to_string()));
    }
    for c in rel.split('/') {
        match c {
            "" | "." => return Err(PathError::Empty(rel.to_string())),
            ".." => return Err(PathError::Parent(rel.to_string())),
            _ => {}
        }
    }
    Ok(())
}

/// `root` joined with a checked relative path.
pub fn join(root: &Path, rel: &str) -> Result<PathBuf, PathError> {
    check(rel)?;
    Ok(if rel.is_empty() {
        root.to_path_buf()
    } else {
        root.join(rel)
    })
}

/// A tree's root, opened once, to reach what lies beneath it without following any symlink,
/// in the path or its directories, and without leaving the root (openat2 with
/// `RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS`; on kernels without openat2, a walk that opens one
/// component at a time with `O_NOFOLLOW`). What a sender reads is what its manifest says,
/// whatever a peer asks for or the tree became since; what a receiver writes lands beneath
/// its root (see [`crate::dest::Dest`]).
#[derive(Debug)]
pub struct Beneath {
    dir: OwnedFd,
}

impl Beneath {
    /// Opens `root`, a directory (not followed if it is a symlink).
    pub fn new(root: &Path) -> std::io::Result<Beneath> {
        let dir = rustix::fs::open(
            root,
            OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC | OFlags::NOFOLLOW,
            Mode::empty(),
        )?;
        Ok(Beneath { dir })
    }

    /// A second handle on the same root (a reader beside a writer).
    pub fn try_clone(&self) -> std::io::Result<Beneath> {
        Ok(Beneath {
            dir: rustix::io::fcntl_dupfd_cloexec(&self.dir, 0)?,
        })
    }

    /// The root's directory handle.
    pub fn root(&self) -> BorrowedFd<'_> {
        self.dir.as_fd()
    }

    /// Opens `rel` (checked; not empty) beneath the root with `flags`, following no symlink.
    pub fn resolve(&self, rel: &str, flags: OFlags) -> std::io::Result<OwnedFd> {
        check(rel).map_err(std::io::Error::other)?;
        if rel.is_empty() {
            return Err(std::io::Error::other("the root itself"));
        }
        let flags = flags | OFlags::CLOEXEC | OFlags::NOFOLLOW;
        let how = ResolveFlags::BENEATH | ResolveFlags::NO_SYMLINKS | ResolveFlags::NO_MAGICLINKS;
        match openat2(&self.dir, rel, flags, Mode::empty(), how) {
            Err(rustix::io::Errno::NOSYS) => walk(&self.dir, rel, flags),
            other => Ok(other?),
        }
    }

    /// The regular file `rel`, for reading.
    pub fn open(&self, rel: &str) -> std::io::Result<std::fs::File> {
        // NONBLOCK: a FIFO put there does not hang the open (regular files ignore it).
        let fd = self.resolve(rel, OFlags::RDONLY | OFlags::NOCTTY | OFlags::NONBLOCK)?;
        let f = std::fs::File::from(fd);
        if !f.metadata()?.is_file() {
            return Err(std::io::Error::other("not a regular file"));
        }
        Ok(f)
    }
}

/// openat2's resolution done by hand: every directory on the way is opened with
/// `O_DIRECTORY | O_NOFOLLOW` (so a symlink there fails with `ELOOP` or `ENOTDIR`), and the
/// checked path has no `..` to climb with.
fn walk(root: &OwnedFd, rel: &str, flags: OFlags) -> std::io::Result<OwnedFd> {
    let (dirs, last) = rel.rsplit_once('/').unwrap_or(("", rel));
    let mut at: Option<OwnedFd> = None;
    for c in dirs.split('/').filter(|c| !c.is_empty()) {
        let base = at.as_ref().map_or(root.as_fd(), |d| d.as_fd());
        let dirflags = OFlags::PATH | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC;
        at = Some(openat(base, c, dirflags, Mode::empty())?);
    }
    let base = at.as_ref().map_or(root.as_fd(), |d| d.as_fd());
    Ok(openat(base, last, flags, Mode::empty())?)
}

/// Whether a symlink at `rel` with `target` stays inside the tree. An absolute target
/// escapes; so does a relative one that climbs above the root. A `..` is taken only before
/// the first name (`../../lib/x`, not `lib/../x`): after a name it would climb out of whatever
/// that name resolves to, and if that is another symlink (`s -> .`, then
/// `t -> s/s/../../x`), counting the text's depth says nothing about where it leads. Leading
/// `..`s climb from the link's own directory, which a receiver reaches without any symlink
/// (see [`crate::dest::Dest`]), so they are counted exactly.
pub fn symlink_stays_inside(rel: &str, target: &str) -> bool {
    if target.is_empty() || Path::new(target).is_absolute() || target.contains('\0') {
        return false;
    }
    // Depth of the link's directory below the root.
    let mut depth: i64 = rel.split('/').count() as i64 - 1;
    let mut named = false;
    for c in Path::new(target).components() {
        match c {
            Component::ParentDir if named => return false,
            Component::ParentDir => depth -= 1,
            Component::Normal(_) => named = true,
            Component::CurDir => {}
            Component::RootDir | Component::Prefix(_) => return false,
        }
        if depth < 0 {
            return false;
        }
    }
    true
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn beneath_follows_no_symlink_and_stays_under_the_root() {
        let base = std::env::temp_dir().join(format!("herd-beneath-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&base);
        let root = base.join("root");
        std::fs::create_dir_all(root.join("dir")).unwrap();
        std::fs::write(root.join("dir/file"), b"inside").unwrap();
        std::fs::write(base.join("secret"), b"outside").unwrap();
        std::os::unix::fs::symlink("../../secret", root.join("dir/link")).unwrap();
        std::os::unix::fs::symlink(&base, root.join("up")).unwrap();
        rustix::fs::mknodat(
            rustix::fs::CWD,
            root.join("fifo"),
            rustix::fs::FileType::Fifo,
            rustix::fs::Mode::from_raw_mode(0o600),
            0,
        )
        .unwrap();
        let mut s = String::new();
        use std::io::Read;
        let beneath = Beneath::new(&root).unwrap();
        beneath
            .open("dir/file")
            .unwrap()
            .read_to_string(&mut s)
            .unwrap();
        assert_eq!(s, "inside");
        for rel in ["dir/link", "up/secret", "../secret", "dir", "fifo", "nope"] {
            assert!(beneath.open(rel).is_err(), "{rel}");
        }
        std::fs::remove_dir_all(&base).unwrap();
    }

    #[test]
    fn traversal_and_absolute_paths_are_refused() {
        for bad in [
            "/etc/passwd",
            "a/../../b",
            "..",
            "a//b",
            "./a",
            "a/./b",
            "a\0b",
        ] {
            assert!(check(bad).is_err(), "{bad:?}");
        }
        for good in ["", "a", "a/b.c", "..a/b..", "a/.hidden"] {
            assert!(check(good).is_ok(), "{good:?}");
        }
    }

    #[test]
    fn symlinks_that_climb_out_are_caught() {
        assert!(symlink_stays_inside("a/link", "../b"));
        assert!(symlink_stays_inside("a/b/link", "../../c/d"));
        assert!(!symlink_stays_inside("link", "../x"));
        assert!(!symlink_stays_inside("a/link", "../../x"));
        assert!(!symlink_stays_inside("a/link", "/etc/passwd"));
        assert!(!symlink_stays_inside("a/link", "b/../../../x"));
        assert!(symlink_stays_inside("a/b/link", "./../c"));
        // A '..' after a name climbs out of whatever the name is: refused.
        assert!(!symlink_stays_inside("link", "a/b/../c"));
        assert!(!symlink_stays_inside("t", "s/s/../../outside"));
        assert!(!symlink_stays_inside("a/b/t", "../s/../x"));
    }
}
