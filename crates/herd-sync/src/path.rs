//! Relative paths inside a synced tree, and the checks that keep a sync inside its root.

use std::path::{Component, Path, PathBuf};

/// Checks a manifest path (`dir/file`, '/'-separated, relative): no empty, `.` or `..`
/// components, no NUL, not absolute. The root itself is the empty path.
pub fn check(rel: &str) -> Result<(), String> {
    if rel.is_empty() {
        return Ok(());
    }
    if rel.starts_with('/') {
        return Err(format!("{rel:?}: an absolute path"));
    }
    if rel.contains('\0') {
        return Err(format!("{rel:?}: a NUL byte in a path"));
    }
    for c in rel.split('/') {
        match c {
            "" | "." => return Err(format!("{rel:?}: an empty or '.' component")),
            ".." => return Err(format!("{rel:?}: '..' leads out of the tree")),
            _ => {}
        }
    }
    Ok(())
}

/// `root` joined with a checked relative path.
pub fn join(root: &Path, rel: &str) -> Result<PathBuf, String> {
    check(rel)?;
    Ok(if rel.is_empty() {
        root.to_path_buf()
    } else {
        root.join(rel)
    })
}

/// A tree's root, opened once, to open the regular files beneath it for reading without
/// following any symlink, in the path or its directories, and without leaving the root
/// (openat2 with RESOLVE_BENEATH and RESOLVE_NO_SYMLINKS; on kernels without openat2, the last
/// component is still not followed). What a sender reads is what its manifest says, whatever
/// a peer asks for or the tree became since.
#[derive(Debug)]
pub struct Beneath {
    root: PathBuf,
    dir: rustix::fd::OwnedFd,
}

impl Beneath {
    pub fn new(root: &Path) -> std::io::Result<Beneath> {
        use rustix::fs::{Mode, OFlags};
        let dir = rustix::fs::open(
            root,
            OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC,
            Mode::empty(),
        )?;
        Ok(Beneath {
            root: root.to_path_buf(),
            dir,
        })
    }

    /// The regular file `rel`, for reading.
    pub fn open(&self, rel: &str) -> std::io::Result<std::fs::File> {
        use rustix::fs::{openat2, Mode, OFlags, ResolveFlags, CWD};
        check(rel).map_err(std::io::Error::other)?;
        // NONBLOCK: a FIFO put there does not hang the open (regular files ignore it).
        let flags =
            OFlags::RDONLY | OFlags::CLOEXEC | OFlags::NOFOLLOW | OFlags::NOCTTY | OFlags::NONBLOCK;
        let fd = match openat2(
            &self.dir,
            rel,
            flags,
            Mode::empty(),
            ResolveFlags::BENEATH | ResolveFlags::NO_SYMLINKS | ResolveFlags::NO_MAGICLINKS,
        ) {
            Err(rustix::io::Errno::NOSYS) => {
                rustix::fs::openat(CWD, self.root.join(rel), flags, Mode::empty())?
            }
            other => other?,
        };
        let f = std::fs::File::from(fd);
        if !f.metadata()?.is_file() {
            return Err(std::io::Error::other("not a regular file"));
        }
        Ok(f)
    }
}

/// Whether a symlink at `rel` with `target` stays inside the tree: an absolute target, or a
/// relative one that climbs above the root, escapes.
pub fn symlink_stays_inside(rel: &str, target: &str) -> bool {
    if target.is_empty() || Path::new(target).is_absolute() || target.contains('\0') {
        return false;
    }
    // Depth of the link's directory below the root.
    let mut depth: i64 = rel.split('/').count() as i64 - 1;
    for c in Path::new(target).components() {
        match c {
            Component::ParentDir => depth -= 1,
            Component::Normal(_) => depth += 1,
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
        assert!(symlink_stays_inside("link", "a/b/../c"));
    }
}
