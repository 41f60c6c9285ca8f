//! What must change in a destination to make it the source.

use std::collections::{BTreeMap, BTreeSet};

use crate::manifest::{Entry, Kind, Manifest};

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    /// Remove a path (the source lacks it, or has something of another kind there); a
    /// directory goes with everything in it.
    Remove { path: String, dir: bool },
    /// Create a directory (its metadata comes with `Meta`, after its content).
    Mkdir(Entry),
    /// Write a file's content: new, or changed. `basis`: the destination has an older version
    /// (a delta against it can save the transfer).
    Write { entry: Entry, basis: bool },
    /// Create or replace a symlink.
    Symlink(Entry),
    /// Set mode, owner and mtime (content unchanged, or a directory after its content).
    Meta(Entry),
}

#[derive(Debug, Clone, Copy, Default)]
pub struct PlanOptions {
    /// Remove what the source does not have.
    pub delete: bool,
    /// Compare file content by hash (both manifests hashed), not by size and mtime.
    pub checksum: bool,
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Plan {
    pub actions: Vec<Action>,
    /// Content bytes to write (before any delta).
    pub bytes: u64,
}

fn same_meta(a: &Entry, b: &Entry) -> bool {
    a.mode == b.mode
        && a.uid == b.uid
        && a.gid == b.gid
        && a.mtime == b.mtime
        && a.mtime_nsec == b.mtime_nsec
}

fn same_content(a: &Entry, b: &Entry, checksum: bool) -> bool {
    match (&a.kind, &b.kind) {
        (Kind::File { size: sa, hash: ha }, Kind::File { size: sb, hash: hb }) => {
            if checksum {
                sa == sb && ha.is_some() && ha == hb
            } else {
                sa == sb && a.mtime == b.mtime && a.mtime_nsec == b.mtime_nsec
            }
        }
        (Kind::Symlink { target: ta }, Kind::Symlink { target: tb }) => ta == tb,
        (Kind::Dir, Kind::Dir) => true,
        _ => false,
    }
}

fn parent(path: &str) -> &str {
    path.rsplit_once('/').map(|(p, _)| p).unwrap_or("")
}

/// The actions, in an order that is safe to apply one by one: removals (deepest first), then
/// the source's entries in path order (a directory before its content), then directory
/// metadata deepest first (writing into a directory changes its mtime).
pub fn plan(src: &Manifest, dst: &Manifest, opts: PlanOptions) -> Plan {
    let have: BTreeMap<&str, &Entry> = dst.entries.iter().map(|e| (e.path.as_str(), e)).collect();
    let want: BTreeSet<&str> = src.entries.iter().map(|e| e.path.as_str()).collect();
    let mut p = Plan::default();
    let mut touched: BTreeSet<String> = BTreeSet::new();
    let mut removed: Vec<(&str, bool)> = Vec::new();
    // What the destination has that must go: not in the source (with --delete), or of
    // another kind than the source's entry at the same path.
    for e in &dst.entries {
        if e.path.is_empty() {
            continue;
        }
        let replaced = src
            .entries
            .binary_search_by(|s| s.path.as_str().cmp(&e.path))
            .ok()
            .map(|i| &src.entries[i])
            .is_some_and(|s| std::mem::discriminant(&s.kind) != std::mem::discriminant(&e.kind));
        if replaced || (opts.delete && !want.contains(e.path.as_str())) {
            // Inside a directory already removed: gone with it.
            if removed.iter().any(|(r, dir)| {
                *dir && e.path.starts_with(r) && e.path.as_bytes().get(r.len()) == Some(&b'/')
            }) {
                continue;
            }
            removed.push((&e.path, e.is_dir()));
        }
    }
    for (path, dir) in removed.iter().rev() {
        touched.insert(parent(path).to_string());
        p.actions.push(Action::Remove {
            path: path.to_string(),
            dir: *dir,
        });
    }
    let gone: BTreeSet<&str> = removed.iter().map(|(r, _)| *r).collect();
    let under_gone = |path: &str| {
        gone.contains(path)
            || removed.iter().any(|(r, dir)| {
                *dir && path.starts_with(r) && path.as_bytes().get(r.len()) == Some(&b'/')
            })
    };
    for s in &src.entries {
        let old = have
            .get(s.path.as_str())
            .copied()
            .filter(|_| !under_gone(&s.path));
        match (&s.kind, old) {
            (Kind::Dir, None) => {
                touched.insert(parent(&s.path).to_string());
                p.actions.push(Action::Mkdir(s.clone()));
            }
            (Kind::Dir, Some(_)) => {}
            (Kind::File { size, .. }, old) => {
                let unchanged = old.is_some_and(|o| same_content(s, o, opts.checksum));
                if !unchanged {
                    touched.insert(parent(&s.path).to_string());
                    p.bytes += size;
                    p.actions.push(Action::Write {
                        entry: s.clone(),
                        basis: old.is_some(),
                    });
                } else if !old.is_some_and(|o| same_meta(s, o)) {
                    p.actions.push(Action::Meta(s.clone()));
                }
            }
            (Kind::Symlink { .. }, old) => {
                if !old.is_some_and(|o| same_content(s, o, false)) {
                    touched.insert(parent(&s.path).to_string());
                    p.actions.push(Action::Symlink(s.clone()));
                } else if !old.is_some_and(|o| same_meta(s, o)) {
                    p.actions.push(Action::Meta(s.clone()));
                }
            }
        }
    }
    // Directories: metadata last, deepest first.
    for s in src.entries.iter().rev().filter(|s| s.is_dir()) {
        let old = have
            .get(s.path.as_str())
            .copied()
            .filter(|_| !under_gone(&s.path));
        if old.is_none_or(|o| !same_meta(s, o)) || touched.contains(&s.path) {
            p.actions.push(Action::Meta(s.clone()));
        }
    }
    p
}
