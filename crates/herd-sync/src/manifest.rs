//! What a tree holds, read without following symlinks.

use std::fs;
use std::io::Read;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::path;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case", tag = "type")]
pub enum Kind {
    Dir,
    File {
        size: u64,
        /// BLAKE3 of the content, hex; only when asked for (`--checksum`, or to pick a basis).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        hash: Option<String>,
    },
    Symlink {
        target: String,
    },
}

/// One path of a tree. The root itself is the entry with the empty path.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub struct Entry {
    /// '/'-separated, relative to the root.
    pub path: String,
    #[serde(flatten)]
    pub kind: Kind,
    /// Permission bits with setuid, setgid and sticky (`0o7777`).
    pub mode: u32,
    pub uid: u32,
    pub gid: u32,
    pub mtime: i64,
    pub mtime_nsec: u32,
}

impl Entry {
    pub fn is_dir(&self) -> bool {
        matches!(self.kind, Kind::Dir)
    }
}

/// A tree: its entries sorted by path (so a directory comes before what it holds).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Manifest {
    pub entries: Vec<Entry>,
    /// What was left out, and why (sockets, devices, unreadable directories).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub skipped: Vec<(String, String)>,
}

impl Manifest {
    /// Checks a manifest that came from a peer, sorted by path: the root first and a
    /// directory, every path checked ([`path::check`]) and there once, and every other
    /// entry's parent a directory of the manifest. A hand-made manifest cannot then put a
    /// file under something that is not a directory of the tree (`link/file`, `file/file`).
    pub fn check_tree(&self) -> Result<(), TreeError> {
        let mut dirs = std::collections::HashSet::new();
        match self.entries.first() {
            Some(e) if e.path.is_empty() && e.is_dir() => {}
            _ => return Err(TreeError::NoRoot),
        }
        for (i, e) in self.entries.iter().enumerate() {
            path::check(&e.path)?;
            if i > 0 && self.entries[i - 1].path >= e.path {
                return Err(TreeError::Order(e.path.clone()));
            }
            if i > 0 {
                let parent = e.path.rsplit_once('/').map_or("", |(p, _)| p);
                if !dirs.contains(parent) {
                    return Err(TreeError::Parent(e.path.clone()));
                }
            }
            if e.is_dir() {
                dirs.insert(e.path.as_str());
            }
        }
        Ok(())
    }
}

/// A manifest that is not a tree (a peer's).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TreeError {
    #[error(transparent)]
    Path(#[from] path::PathError),
    #[error("the root directory is missing")]
    NoRoot,
    #[error("{0:?}: listed twice or out of order")]
    Order(String),
    #[error("{0:?}: its parent is not a directory of the tree")]
    Parent(String),
}

/// Why a tree could not be read.
#[derive(Debug, thiserror::Error)]
pub enum ScanError {
    /// `path` (the root, a directory, a file being hashed, a symlink) could not be read.
    #[error("{}: {error}", path.display())]
    Io {
        path: std::path::PathBuf,
        error: std::io::Error,
    },
    #[error("{}: not a directory", .0.display())]
    NotADirectory(std::path::PathBuf),
    #[error(transparent)]
    Path(#[from] path::PathError),
    #[error("a hashing thread failed")]
    Thread,
}

fn io_at(path: impl Into<std::path::PathBuf>) -> impl FnOnce(std::io::Error) -> ScanError {
    let path = path.into();
    move |error| ScanError::Io { path, error }
}

/// Options of a scan.
#[derive(Debug, Clone, Default)]
pub struct ScanOptions {
    /// Hash every regular file.
    pub hash: bool,
    /// rsync-style patterns: without '/', matched against each name; with '/', against the
    /// path from the root; a trailing '/' matches directories only. `*` and `?` as in a shell.
    pub exclude: Vec<String>,
}

/// Reads the tree under `root` (a directory; it is not followed if it is a symlink).
pub fn scan(root: &Path, opts: &ScanOptions) -> Result<Manifest, ScanError> {
    let meta = fs::symlink_metadata(root).map_err(io_at(root))?;
    if !meta.is_dir() {
        return Err(ScanError::NotADirectory(root.to_path_buf()));
    }
    let mut m = Manifest::default();
    m.entries.push(entry(String::new(), &meta, Kind::Dir));
    walk(root, "", opts, &mut m)?;
    if opts.hash {
        hash_all(root, &mut m)?;
    }
    m.entries.sort_by(|a, b| a.path.cmp(&b.path));
    Ok(m)
}

/// Hashes every file of `m`, on as many threads as there are cores (largest files first, each
/// thread taking the next file when it is done).
fn hash_all(root: &Path, m: &mut Manifest) -> Result<(), ScanError> {
    let mut files: Vec<(u64, usize)> = m
        .entries
        .iter()
        .enumerate()
        .filter_map(|(i, e)| match e.kind {
            Kind::File { size, .. } => Some((size, i)),
            _ => None,
        })
        .collect();
    files.sort_unstable_by(|a, b| b.cmp(a));
    let next = std::sync::atomic::AtomicUsize::new(0);
    let threads = std::thread::available_parallelism()
        .map_or(2, |n| n.get())
        .min(files.len().max(1));
    let entries = &m.entries;
    let beneath = path::Beneath::new(root).map_err(io_at(root))?;
    let hashed: Vec<Result<Vec<(usize, String)>, ScanError>> = std::thread::scope(|s| {
        let workers: Vec<_> = (0..threads)
            .map(|_| {
                s.spawn(|| {
                    let mut out = Vec::new();
                    loop {
                        let k = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                        let Some(&(_, i)) = files.get(k) else {
                            return Ok(out);
                        };
                        let rel = &entries[i].path;
                        // Beneath the root: a symlink put in the path since the scan is
                        // not followed (the hash of a file outside would leave the host).
                        let h = beneath.open(rel).and_then(hash_open).map_err(io_at(rel))?;
                        out.push((i, h));
                    }
                })
            })
            .collect();
        workers
            .into_iter()
            .map(|w| w.join().unwrap_or(Err(ScanError::Thread)))
            .collect()
    });
    for part in hashed {
        for (i, h) in part? {
            if let Kind::File { hash, .. } = &mut m.entries[i].kind {
                *hash = Some(h);
            }
        }
    }
    Ok(())
}

fn entry(path: String, meta: &fs::Metadata, kind: Kind) -> Entry {
    Entry {
        path,
        kind,
        mode: meta.mode() & 0o7777,
        uid: meta.uid(),
        gid: meta.gid(),
        mtime: meta.mtime(),
        mtime_nsec: meta.mtime_nsec() as u32,
    }
}

fn walk(root: &Path, rel: &str, opts: &ScanOptions, m: &mut Manifest) -> Result<(), ScanError> {
    let dir = path::join(root, rel)?;
    let rd = match fs::read_dir(&dir) {
        Ok(rd) => rd,
        Err(e) if rel.is_empty() => return Err(io_at(&dir)(e)),
        Err(e) => {
            m.skipped.push((rel.to_string(), e.to_string()));
            return Ok(());
        }
    };
    for item in rd {
        let item = item.map_err(io_at(&dir))?;
        let Some(name) = item.file_name().to_str().map(str::to_string) else {
            m.skipped
                .push((format!("{rel}/{:?}", item.file_name()), "not UTF-8".into()));
            continue;
        };
        let child = if rel.is_empty() {
            name.clone()
        } else {
            format!("{rel}/{name}")
        };
        let meta = match fs::symlink_metadata(item.path()) {
            Ok(m) => m,
            // Gone since the listing: nothing to send.
            Err(_) => continue,
        };
        let ft = meta.file_type();
        if excluded(&opts.exclude, &child, &name, ft.is_dir()) {
            continue;
        }
        if ft.is_dir() {
            m.entries.push(entry(child.clone(), &meta, Kind::Dir));
            walk(root, &child, opts, m)?;
        } else if ft.is_file() {
            // Hashes, when asked for, come after the walk (in parallel).
            let kind = Kind::File {
                size: meta.len(),
                hash: None,
            };
            m.entries.push(entry(child, &meta, kind));
        } else if ft.is_symlink() {
            let target = fs::read_link(item.path()).map_err(io_at(&child))?;
            let Some(target) = target.to_str().map(str::to_string) else {
                m.skipped.push((child, "symlink target not UTF-8".into()));
                continue;
            };
            m.entries
                .push(entry(child, &meta, Kind::Symlink { target }));
        } else {
            let what = if ft.is_socket() {
                "a socket"
            } else if ft.is_fifo() {
                "a FIFO"
            } else {
                "a device"
            };
            m.skipped.push((child, format!("{what} is not synced")));
        }
    }
    Ok(())
}

/// BLAKE3 of a file's content, hex.
pub fn hash_file(p: &Path) -> std::io::Result<String> {
    hash_open(fs::File::open(p)?)
}

/// The BLAKE3 of an open file's content, hex.
pub fn hash_open(mut f: fs::File) -> std::io::Result<String> {
    let mut h = blake3::Hasher::new();
    let mut buf = vec![0u8; 256 * 1024];
    loop {
        let n = f.read(&mut buf)?;
        if n == 0 {
            break;
        }
        h.update(&buf[..n]);
    }
    Ok(h.finalize().to_hex().to_string())
}

/// Whether an exclude pattern drops `rel` (whose last component is `name`).
pub fn excluded(patterns: &[String], rel: &str, name: &str, is_dir: bool) -> bool {
    patterns.iter().any(|p| {
        let (p, dir_only) = match p.strip_suffix('/') {
            Some(p) => (p, true),
            None => (p.as_str(), false),
        };
        if dir_only && !is_dir {
            return false;
        }
        match p.strip_prefix('/') {
            Some(anchored) => glob(anchored, rel),
            // Matched against the path's tail from any directory boundary.
            None if p.contains('/') => {
                glob(p, rel) || rel.match_indices('/').any(|(i, _)| glob(p, &rel[i + 1..]))
            }
            None => glob(p, name),
        }
    })
}

/// `*` (not across '/'), `?`, and literal characters.
fn glob(p: &str, s: &str) -> bool {
    fn go(p: &[u8], s: &[u8]) -> bool {
        match p.split_first() {
            None => s.is_empty(),
            Some((b'*', rest)) => (0..=s.len())
                .take_while(|&i| i == 0 || s[i - 1] != b'/')
                .any(|i| go(rest, &s[i..])),
            Some((b'?', rest)) => s.first().is_some_and(|&c| c != b'/') && go(rest, &s[1..]),
            Some((c, rest)) => s.first() == Some(c) && go(rest, &s[1..]),
        }
    }
    go(p.as_bytes(), s.as_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hashes_made_in_parallel_belong_to_their_files() {
        let root = std::env::temp_dir().join(format!("herd-hash-{}", std::process::id()));
        let _ = fs::remove_dir_all(&root);
        for i in 0..40 {
            let p = root.join(format!("d{}/f{i}", i % 3));
            fs::create_dir_all(p.parent().unwrap()).unwrap();
            fs::write(&p, vec![i as u8; 1000 * i]).unwrap();
        }
        let m = scan(
            &root,
            &ScanOptions {
                hash: true,
                ..ScanOptions::default()
            },
        )
        .unwrap();
        let mut files = 0;
        for e in &m.entries {
            if let Kind::File { hash, .. } = &e.kind {
                let want = hash_file(&root.join(&e.path)).unwrap();
                assert_eq!(hash.as_deref(), Some(want.as_str()), "{}", e.path);
                files += 1;
            }
        }
        assert_eq!(files, 40);
        fs::remove_dir_all(&root).unwrap();
    }

    #[test]
    fn excludes_follow_rsyncs_rules() {
        let p = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        assert!(excluded(&p(&["*.log"]), "a/b/x.log", "x.log", false));
        assert!(!excluded(&p(&["*.log"]), "a/x.logs", "x.logs", false));
        assert!(excluded(&p(&["cache/"]), "a/cache", "cache", true));
        assert!(!excluded(&p(&["cache/"]), "a/cache", "cache", false));
        assert!(excluded(&p(&["/top"]), "top", "top", false));
        assert!(!excluded(&p(&["/top"]), "a/top", "top", false));
        assert!(excluded(&p(&["b/*.tmp"]), "a/b/x.tmp", "x.tmp", false));
        assert!(!excluded(&p(&["a*"]), "b/c", "c", false));
    }
}
