//! Running a program for a probe or an alert: in its own process group, fed its input,
//! its output capped, the whole group killed at a timeout. Shared by the `exec` probe and the
//! `exec` alert sink, which depend on it and not on each other.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt};

/// Output kept from a probe (mon keeps what its monitors print; herd keeps the first 4 KiB and
/// drains the rest so the program never blocks on a full pipe).
pub const MAX_OUTPUT: usize = 4096;

/// A finished (or killed) program.
#[derive(Debug)]
pub(crate) struct ProgramRun {
    pub status: Option<std::process::ExitStatus>,
    /// The first [`MAX_OUTPUT`] bytes of stdout.
    pub stdout: Vec<u8>,
    pub truncated: bool,
    pub timed_out: bool,
}

/// Runs a program in its own process group with `stdin` as input; at `timeout` the whole
/// group is killed (a monitor's children too). Keeps the first [`MAX_OUTPUT`] bytes of
/// stdout and discards the rest; stderr is discarded.
pub(crate) async fn run_program(
    mut cmd: tokio::process::Command,
    stdin: Option<Vec<u8>>,
    timeout: Duration,
) -> std::io::Result<ProgramRun> {
    cmd.stdin(if stdin.is_some() {
        Stdio::piped()
    } else {
        Stdio::null()
    })
    .stdout(Stdio::piped())
    .stderr(Stdio::null())
    .process_group(0)
    .kill_on_drop(true);
    let mut child = cmd.spawn()?;
    let pid = child.id();
    let input = child.stdin.take();
    let mut stdout = child.stdout.take();
    let work = async {
        let feed = async {
            if let (Some(mut w), Some(data)) = (input, stdin) {
                // A program that does not read its input is not an error.
                let _ = w.write_all(&data).await;
            }
        };
        let mut buf = Vec::new();
        let read = async {
            match stdout.as_mut() {
                Some(out) => read_capped(out, &mut buf, MAX_OUTPUT)
                    .await
                    .unwrap_or(false),
                None => false,
            }
        };
        let ((), truncated) = tokio::join!(feed, read);
        let status = child.wait().await;
        (status, buf, truncated)
    };
    match tokio::time::timeout(timeout, work).await {
        Ok((status, stdout, truncated)) => Ok(ProgramRun {
            status: Some(status?),
            stdout,
            truncated,
            timed_out: false,
        }),
        Err(_) => {
            if let Some(pid) = pid.and_then(|p| rustix::process::Pid::from_raw(p as i32)) {
                let _ = rustix::process::kill_process_group(pid, rustix::process::Signal::KILL);
            }
            Ok(ProgramRun {
                status: None,
                stdout: Vec::new(),
                truncated: false,
                timed_out: true,
            })
        }
    }
}

/// Reads to EOF, keeping the first `cap` bytes; returns whether more was discarded.
pub(crate) async fn read_capped<R: AsyncRead + Unpin>(
    r: &mut R,
    buf: &mut Vec<u8>,
    cap: usize,
) -> std::io::Result<bool> {
    let mut chunk = [0u8; 8192];
    let mut truncated = false;
    loop {
        let n = r.read(&mut chunk).await?;
        if n == 0 {
            return Ok(truncated);
        }
        let room = cap.saturating_sub(buf.len());
        if n > room {
            truncated = true;
        }
        buf.extend_from_slice(&chunk[..n.min(room)]);
    }
}

/// A program given without a `/` is looked up in `dirs`, then in `PATH`.
pub(crate) fn find_program(name: &str, dirs: &[PathBuf]) -> Option<PathBuf> {
    if name.contains('/') {
        let p = PathBuf::from(name);
        return p.is_file().then_some(p);
    }
    let path = std::env::var_os("PATH").unwrap_or_default();
    dirs.iter()
        .cloned()
        .chain(std::env::split_paths(&path))
        .map(|d| d.join(name))
        .find(|p| is_executable(p))
}

fn is_executable(p: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    p.metadata()
        .is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
}

pub(crate) fn dirs(d: &[PathBuf]) -> String {
    let mut v: Vec<String> = d.iter().map(|p| p.display().to_string()).collect();
    v.push("PATH".into());
    v.join(", ")
}
