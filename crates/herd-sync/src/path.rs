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
