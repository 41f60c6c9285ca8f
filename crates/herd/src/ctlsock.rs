//! The control socket's path: what may be removed there, and binding it with mode 0600 from
//! the first moment.
//!
//! `herd daemon --socket PATH` runs as root, so a typo in PATH must never cost a file: only a
//! socket that nobody answers on (a crashed daemon's) is removed; anything else at PATH — a
//! regular file, a directory, a symbolic link (never followed), a device — stops the start-up
//! with an error that names the path and says what is there.

use std::io;
use std::os::unix::fs::{DirBuilderExt, FileTypeExt, MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use tokio::net::{UnixListener, UnixStream};

/// What is at a path, in words for an error message.
fn kind(t: std::fs::FileType) -> &'static str {
    if t.is_symlink() {
        "a symbolic link"
    } else if t.is_dir() {
        "a directory"
    } else if t.is_file() {
        "a regular file"
    } else if t.is_fifo() {
        "a named pipe"
    } else if t.is_block_device() || t.is_char_device() {
        "a device"
    } else if t.is_socket() {
        "a socket"
    } else {
        "something that is not a socket"
    }
}

/// Prepares the control socket's path: creates its directory, refuses to go on if another
/// daemon answers on it or if something other than a socket is there, and removes a stale
/// socket (one nobody listens on).
pub async fn check(path: &Path) -> Result<()> {
    if let Some(dir) = path.parent() {
        if !dir.as_os_str().is_empty() && !dir.exists() {
            std::fs::create_dir_all(dir)
                .with_context(|| format!("cannot create {}", dir.display()))?;
        }
    }
    // lstat: a symbolic link is reported as one, never followed.
    let meta = match std::fs::symlink_metadata(path) {
        Ok(m) => m,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(e).with_context(|| format!("cannot look at {}", path.display())),
    };
    if !meta.file_type().is_socket() {
        anyhow::bail!(
            "{} is {}, not a stale control socket: not removing it (choose another --socket, \
             or move it away)",
            path.display(),
            kind(meta.file_type())
        );
    }
    match UnixStream::connect(path).await {
        Ok(_) => anyhow::bail!("another herd daemon is listening on {}", path.display()),
        // Nobody listens: the socket of a daemon that did not clean up.
        Err(e) if e.kind() == io::ErrorKind::ConnectionRefused => {}
        Err(e) => {
            return Err(e).with_context(|| {
                format!(
                    "cannot tell whether the socket {} is in use: not removing it",
                    path.display()
                )
            })
        }
    }
    // The path must still be the socket just tried (not replaced in between).
    let again = std::fs::symlink_metadata(path)
        .with_context(|| format!("cannot look at {}", path.display()))?;
    if (again.dev(), again.ino()) != (meta.dev(), meta.ino()) {
        anyhow::bail!(
            "{} changed while it was checked: not removing it",
            path.display()
        );
    }
    std::fs::remove_file(path)
        .with_context(|| format!("cannot remove stale socket {}", path.display()))
}

/// Binds the control socket. Its appearance tells clients (and tests) that the daemon is
/// ready: it is bound only after every virtual service is.
///
/// The control API can change the director, so only the daemon's user may connect — from the
/// first moment: the socket is bound inside a new directory of mode 0700 beside PATH, set to
/// 0600 there, and only then renamed to PATH (refusing to replace anything that appeared
/// there meanwhile). The umask is not touched: it is the whole process's, and the daemon's
/// other threads create files at the same time.
pub fn bind(path: &Path) -> Result<UnixListener> {
    let private = PrivateDir::new(path)?;
    let tmp = private.0.join("s");
    let listener = UnixListener::bind(&tmp)
        .with_context(|| format!("cannot bind control socket {}", path.display()))?;
    std::fs::set_permissions(&tmp, std::fs::Permissions::from_mode(0o600))
        .with_context(|| format!("cannot set permissions on {}", tmp.display()))?;
    rustix::fs::renameat_with(
        rustix::fs::CWD,
        &tmp,
        rustix::fs::CWD,
        path,
        rustix::fs::RenameFlags::NOREPLACE,
    )
    .map_err(io::Error::from)
    .with_context(|| {
        format!(
            "cannot put the control socket at {} (did something appear there?)",
            path.display()
        )
    })?;
    Ok(listener)
}

/// A directory of mode 0700 next to the socket's path, removed on drop (with anything left
/// in it: a socket that was not renamed).
struct PrivateDir(PathBuf);

impl PrivateDir {
    fn new(path: &Path) -> Result<PrivateDir> {
        let name = path
            .file_name()
            .with_context(|| format!("{} names no file", path.display()))?;
        // Unique enough: `create` fails rather than reuse a directory that is already there.
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.subsec_nanos());
        let dir = path.with_file_name(format!(
            ".{}.{}.{nanos}",
            name.to_string_lossy(),
            std::process::id()
        ));
        // Mode 0700 at creation (the umask can only narrow it).
        std::fs::DirBuilder::new()
            .mode(0o700)
            .create(&dir)
            .with_context(|| format!("cannot create {}", dir.display()))?;
        Ok(PrivateDir(dir))
    }
}

impl Drop for PrivateDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(self.0.join("s"));
        let _ = std::fs::remove_dir(&self.0);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scratch(test: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!("herd-ctlsock-{test}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(&d).unwrap();
        d
    }

    #[tokio::test]
    async fn only_a_stale_socket_is_removed() {
        let d = scratch("stale");
        let file = d.join("file");
        std::fs::write(&file, "config").unwrap();
        let e = check(&file).await.unwrap_err().to_string();
        assert!(
            e.contains(&file.display().to_string()) && e.contains("a regular file"),
            "{e}"
        );
        assert_eq!(std::fs::read_to_string(&file).unwrap(), "config");

        let dir = d.join("dir");
        std::fs::create_dir(&dir).unwrap();
        let e = check(&dir).await.unwrap_err().to_string();
        assert!(e.contains("a directory"), "{e}");
        assert!(dir.is_dir());

        // A link to a stale socket is neither followed nor removed.
        let stale = d.join("stale.sock");
        drop(std::os::unix::net::UnixListener::bind(&stale).unwrap());
        let link = d.join("link");
        std::os::unix::fs::symlink(&stale, &link).unwrap();
        let e = check(&link).await.unwrap_err().to_string();
        assert!(e.contains("a symbolic link"), "{e}");
        assert!(std::fs::symlink_metadata(&link)
            .unwrap()
            .file_type()
            .is_symlink());
        assert!(stale.exists());

        check(&stale).await.unwrap();
        assert!(
            std::fs::symlink_metadata(&stale).is_err(),
            "stale socket removed"
        );

        let live = d.join("live.sock");
        let _l = std::os::unix::net::UnixListener::bind(&live).unwrap();
        let e = check(&live).await.unwrap_err().to_string();
        assert!(e.contains("another herd daemon"), "{e}");
        assert!(live.exists());
        std::fs::remove_dir_all(&d).unwrap();
    }

    #[tokio::test]
    async fn the_socket_is_0600_and_its_private_directory_goes() {
        let d = scratch("bind");
        let p = d.join("herd.sock");
        let l = bind(&p).unwrap();
        let m = std::fs::symlink_metadata(&p).unwrap();
        assert!(m.file_type().is_socket());
        assert_eq!(m.permissions().mode() & 0o7777, 0o600);
        let left: Vec<_> = std::fs::read_dir(&d).unwrap().collect();
        assert_eq!(left.len(), 1, "only the socket: {left:?}");
        // It answers where it was put.
        let _c = UnixStream::connect(&p).await.unwrap();
        let (_s, _) = l.accept().await.unwrap();
        // Something at the path is never replaced.
        drop(l);
        let e = bind(&p).unwrap_err().to_string();
        assert!(e.contains("cannot put the control socket"), "{e}");
        assert_eq!(std::fs::read_dir(&d).unwrap().count(), 1);
        std::fs::remove_dir_all(&d).unwrap();
    }
}
