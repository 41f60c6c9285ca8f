//! What the daemon needs from this host to start with a config, checked without binding or
//! changing anything: `herd config validate` runs it, so that a config that validates also
//! starts. Each check uses the loading code the daemon itself uses (certificates through
//! herd-agent's and herd-web's loaders, users through the agent's passwd lookup).

use std::path::Path;

use herd_core::config::Config;

/// Every problem found, as `key: reason` lines; empty when the daemon has what it needs.
pub fn check(cfg: &Config) -> Vec<String> {
    let mut out = Vec::new();
    agent(cfg, &mut out);
    web(cfg, &mut out);
    for i in &cfg.vrrp.instances {
        if !Path::new("/sys/class/net").join(&i.interface).exists() {
            out.push(format!(
                "vrrp.instance.{}.interface: this host has no interface {:?}",
                i.name, i.interface
            ));
        }
    }
    if let Some(h) = &cfg.health.history {
        parent_dir(h, "health.history", &mut out);
    }
    if let Some(p) = cfg
        .health
        .smtp
        .as_ref()
        .and_then(|s| s.password_file.as_ref())
    {
        readable(p, "health.smtp.password-file", &mut out);
    }
    out
}

fn agent(cfg: &Config, out: &mut Vec<String>) {
    let a = &cfg.agent;
    if a.listen.is_empty() {
        return;
    }
    let name = crate::agent::node_name(a);
    let (cert, key) = a.node_paths(&name);
    let files = herd_agent::tls::Files {
        ca: a.ca_path(),
        cert,
        key,
    };
    let revoked = crate::agent::revoked_set(a);
    if let Err(e) = herd_agent::tls::server_parts(&files, revoked) {
        out.push(format!(
            "agent.pki: the agent of node {name:?} cannot load its certificates ({e}); \
             herd init, then herd cert issue {name}"
        ));
    } else if let Err(e) = herd_agent::tls::relay_client_config(&files) {
        out.push(format!("agent.pki: {name}'s certificate as a client: {e}"));
    }
    if let Err(e) = herd_agent::agent::lookup_user(&a.user) {
        out.push(format!("agent.user: {e}"));
    }
    if let Some(log) = &a.audit_log {
        log_file(log, "agent.audit-log", out);
    }
}

fn web(cfg: &Config, out: &mut Vec<String>) {
    let Some(w) = &cfg.web else {
        return;
    };
    if let Some((cert, key)) = &w.tls {
        if let Err(e) = herd_web::check_tls(cert, key) {
            out.push(e.to_string());
        }
    }
    if let Some(p) = &w.metrics_token_file {
        readable(p, "web.metrics-token-file", out);
    }
    if let Some(log) = &w.audit_log {
        log_file(log, "web.audit-log", out);
    }
}

/// A file the daemon reads: there, a regular file, readable.
fn readable(p: &Path, key: &str, out: &mut Vec<String>) {
    if let Err(e) = std::fs::File::open(p).and_then(|f| f.metadata()) {
        out.push(format!("{key}: {}: {e}", p.display()));
    } else if !p.is_file() {
        out.push(format!("{key}: {}: not a regular file", p.display()));
    }
}

/// A log the daemon appends to: a regular file if it is there (not a directory, a symlink or
/// a device), and a directory it can be made in.
fn log_file(p: &Path, key: &str, out: &mut Vec<String>) {
    match std::fs::symlink_metadata(p) {
        Ok(m) if m.is_file() => {}
        Ok(_) => out.push(format!(
            "{key}: {} is there and is not a regular file",
            p.display()
        )),
        Err(_) => parent_dir(p, key, out),
    }
}

/// The nearest directory above `p` that exists is a directory (the daemon creates the rest).
fn parent_dir(p: &Path, key: &str, out: &mut Vec<String>) {
    let mut dir = p.parent();
    while let Some(d) = dir.filter(|d| !d.as_os_str().is_empty()) {
        match std::fs::metadata(d) {
            Ok(m) if m.is_dir() => return,
            Ok(_) => {
                out.push(format!(
                    "{key}: {}: {} is not a directory",
                    p.display(),
                    d.display()
                ));
                return;
            }
            Err(_) => dir = d.parent(),
        }
    }
}
