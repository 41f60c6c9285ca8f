//! Role-change hooks: the seeds' `take_vip` / `honor_vip`, keepalived's `notify_*` scripts.

use std::process::Stdio;
use std::time::Duration;

use tokio::process::Command;

/// What a hook is told.
#[derive(Debug, Clone)]
pub struct Event {
    pub instance: String,
    pub state: &'static str,
    pub old_state: &'static str,
    pub priority: u8,
    pub vips: String,
    pub reason: &'static str,
}

/// Runs `command` with `sh -c`, keepalived's arguments (`INSTANCE name STATE priority`) and
/// `HERD_VRRP_*` variables, in its own process group; the group is killed at `timeout`. The
/// outcome is logged; a hook never blocks the state machine (the caller spawns this).
pub async fn run(command: String, ev: Event, timeout: Duration) {
    let mut cmd = Command::new("/bin/sh");
    cmd.arg("-c")
        .arg(format!("{command} \"$@\""))
        .arg("herd-notify")
        .args([
            "INSTANCE",
            &ev.instance,
            &ev.state.to_ascii_uppercase(),
            &ev.priority.to_string(),
        ])
        .env("HERD_VRRP_INSTANCE", &ev.instance)
        .env("HERD_VRRP_STATE", ev.state)
        .env("HERD_VRRP_OLD_STATE", ev.old_state)
        .env("HERD_VRRP_PRIORITY", ev.priority.to_string())
        .env("HERD_VRRP_VIPS", &ev.vips)
        .env("HERD_VRRP_REASON", ev.reason)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    match run_bounded(cmd, timeout).await {
        Ok(Some(out)) if out.status.success() => {
            tracing::info!(instance = %ev.instance, state = ev.state, "notify {command:?}: ok");
        }
        Ok(Some(out)) => {
            let err = String::from_utf8_lossy(&out.stderr);
            tracing::warn!(instance = %ev.instance, state = ev.state, "notify {command:?}: {} {}", out.status, err.trim());
        }
        Ok(None) => {
            tracing::warn!(instance = %ev.instance, state = ev.state, "notify {command:?}: killed after {timeout:?}");
        }
        Err(e) => {
            tracing::warn!(instance = %ev.instance, state = ev.state, "notify {command:?}: {e}")
        }
    }
}

/// Runs `cmd` in a process group of its own and waits for it, at most `timeout`: then the
/// whole group is killed and the answer is `None`.
pub(crate) async fn run_bounded(
    mut cmd: Command,
    timeout: Duration,
) -> std::io::Result<Option<std::process::Output>> {
    let child = cmd.process_group(0).kill_on_drop(true).spawn()?;
    let pid = child.id();
    match tokio::time::timeout(timeout, child.wait_with_output()).await {
        Ok(out) => out.map(Some),
        Err(_) => {
            // The child itself was killed on drop; its group may hold more.
            kill_group(pid);
            Ok(None)
        }
    }
}

/// SIGKILL to the process group a child started (with `process_group(0)`) leads.
fn kill_group(pid: Option<u32>) {
    if let Some(pid) = pid.and_then(|p| rustix::process::Pid::from_raw(p as i32)) {
        let _ = rustix::process::kill_process_group(pid, rustix::process::Signal::KILL);
    }
}
