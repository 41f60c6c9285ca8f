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
        .stderr(Stdio::piped())
        .process_group(0)
        .kill_on_drop(true);
    let child = match cmd.spawn() {
        Ok(c) => c,
        Err(e) => {
            tracing::warn!(instance = %ev.instance, state = ev.state, "notify {command:?}: cannot start: {e}");
            return;
        }
    };
    let pid = child.id();
    match tokio::time::timeout(timeout, child.wait_with_output()).await {
        Ok(Ok(out)) if out.status.success() => {
            tracing::info!(instance = %ev.instance, state = ev.state, "notify {command:?}: ok");
        }
        Ok(Ok(out)) => {
            let err = String::from_utf8_lossy(&out.stderr);
            tracing::warn!(instance = %ev.instance, state = ev.state, "notify {command:?}: {} {}", out.status, err.trim());
        }
        Ok(Err(e)) => tracing::warn!(instance = %ev.instance, "notify {command:?}: {e}"),
        Err(_) => {
            // The child itself was killed on drop; its group may hold more.
            kill_group(pid);
            tracing::warn!(instance = %ev.instance, state = ev.state, "notify {command:?}: killed after {timeout:?}");
        }
    }
}

/// SIGKILL to the process group a child started (with `process_group(0)`) leads.
pub(crate) fn kill_group(pid: Option<u32>) {
    if let Some(pid) = pid.and_then(|p| rustix::process::Pid::from_raw(p as i32)) {
        let _ = rustix::process::kill_process_group(pid, rustix::process::Signal::KILL);
    }
}
