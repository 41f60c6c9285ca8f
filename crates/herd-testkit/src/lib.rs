//! Network-namespace topologies for herd's integration tests.
//!
//! A [`Lan`] is a namespace holding a Linux bridge (the switch); each [`Host`] is a namespace
//! with `eth0`, one end of a veth pair whose other end is a port of the bridge. Nothing is
//! created in the root namespace, and traffic between hosts never leaves the namespaces the
//! test created. Loss is made with nftables in the host's namespace. Processes started with [`Host::spawn`] run inside the host in a process
//! group of their own ([`Proc`]).
//!
//! Cleanup always happens: namespaces (and with them every interface) are deleted when the
//! last handle to the LAN is dropped, which unwinding does when a test panics; processes are
//! killed when their [`Proc`] is dropped. A test process that is killed outright cannot run
//! `Drop`, so [`Lan::new`] first deletes namespaces left by test processes that no longer
//! exist (names end in the PID that made them).
//!
//! Everything here needs root and iproute2; see [`require_root`].

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Prefix of every namespace this crate makes.
const PREFIX: &str = "htk-";

/// Whether the test can build topologies. Without root (or iproute2) it panics under
/// `CI=true`, so CI never passes by skipping; elsewhere it says why and returns false.
pub fn require_root(test: &str) -> bool {
    let root = fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("Uid:"))
                .and_then(|l| l.split_whitespace().nth(2).map(|u| u == "0"))
        })
        .unwrap_or(false);
    let ip = Command::new("ip")
        .args(["netns", "list"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if root && ip {
        return true;
    }
    let why = if root {
        "iproute2's `ip netns` does not work"
    } else {
        "it needs root"
    };
    if std::env::var("CI").is_ok_and(|v| v == "true") {
        panic!("{test}: cannot run under CI: {why}");
    }
    eprintln!("{test}: skipped: {why}");
    false
}

/// Polls `f` every 10 ms until it holds or `timeout` passes.
pub fn wait_until(timeout: Duration, mut f: impl FnMut() -> bool) -> bool {
    let end = Instant::now() + timeout;
    loop {
        if f() {
            return true;
        }
        if Instant::now() >= end {
            return false;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

fn run_cmd(cmd: &mut Command) -> Output {
    let out = cmd
        .stdin(Stdio::null())
        .output()
        .unwrap_or_else(|e| panic!("{cmd:?}: {e}"));
    assert!(
        out.status.success(),
        "{cmd:?} failed ({}): {}",
        out.status,
        String::from_utf8_lossy(&out.stderr).trim()
    );
    out
}

fn ip(args: &[&str]) -> Output {
    run_cmd(Command::new("ip").args(args))
}

fn pid_alive(pid: u32) -> bool {
    Path::new(&format!("/proc/{pid}")).exists()
}

/// Deletes namespaces of earlier test processes that died without cleaning up.
fn sweep() {
    sweep_namespaces(PREFIX);
}

/// Deletes the namespaces named `{prefix}…-{PID}` whose PID is no longer a live process: what a
/// test process killed outright (SIGKILL, a timeout) left behind. A namespace of a process that
/// still runs, this one or a parallel test binary, is never touched; a leftover whose PID was
/// reused by another process stays until that process is gone too. Names are made by this
/// crate (`htk-`) and by herd's integration tests (`herd-t-`), each ending in the PID.
pub fn sweep_namespaces(prefix: &str) {
    let Ok(out) = Command::new("ip").args(["netns", "list"]).output() else {
        return;
    };
    for line in String::from_utf8_lossy(&out.stdout).lines() {
        let name = line.split_whitespace().next().unwrap_or("");
        let Some(rest) = name.strip_prefix(prefix) else {
            continue;
        };
        let pid = rest.rsplit('-').next().and_then(|p| p.parse::<u32>().ok());
        if let Some(pid) = pid {
            if pid != std::process::id() && !pid_alive(pid) {
                let _ = Command::new("ip").args(["netns", "del", name]).status();
            }
        }
    }
}

/// The namespaces of one LAN; deleted when the last handle goes.
#[derive(Debug)]
struct Guard {
    switch: String,
    hosts: Mutex<Vec<String>>,
}

impl Drop for Guard {
    fn drop(&mut self) {
        let hosts = std::mem::take(&mut *self.hosts.lock().unwrap_or_else(|p| p.into_inner()));
        for ns in hosts.iter().chain(std::iter::once(&self.switch)) {
            let _ = Command::new("ip")
                .args(["netns", "del", ns])
                .stderr(Stdio::null())
                .status();
        }
    }
}

static LANS: AtomicUsize = AtomicUsize::new(0);

/// A LAN: a bridge in a namespace of its own.
#[derive(Debug, Clone)]
pub struct Lan {
    tag: String,
    guard: Arc<Guard>,
    ports: Arc<AtomicUsize>,
}

impl Lan {
    /// A new, empty LAN. `test` (a few letters) goes into the namespace names, with a counter
    /// and the PID, so parallel tests and leftovers can be told apart.
    pub fn new(test: &str) -> Lan {
        sweep();
        let n = LANS.fetch_add(1, Ordering::Relaxed);
        let short: String = test
            .chars()
            .filter(|c| c.is_ascii_alphanumeric())
            .take(12)
            .collect();
        let tag = format!("{short}{n}-{}", std::process::id());
        let switch = format!("{PREFIX}sw-{tag}");
        let _ = Command::new("ip")
            .args(["netns", "del", &switch])
            .stderr(Stdio::null())
            .status();
        ip(&["netns", "add", &switch]);
        let guard = Arc::new(Guard {
            switch: switch.clone(),
            hosts: Mutex::new(Vec::new()),
        });
        ip(&["-n", &switch, "link", "add", "br0", "type", "bridge"]);
        // No spanning tree and no forwarding delay: a port forwards as soon as it is up, so a
        // healed link carries traffic at once.
        ip(&[
            "-n",
            &switch,
            "link",
            "set",
            "br0",
            "type",
            "bridge",
            "stp_state",
            "0",
            "forward_delay",
            "0",
        ]);
        ip(&["-n", &switch, "link", "set", "br0", "up"]);
        Lan {
            tag,
            guard,
            ports: Arc::new(AtomicUsize::new(0)),
        }
    }

    /// The switch's namespace.
    pub fn switch(&self) -> &str {
        &self.guard.switch
    }

    /// Adds a host with `eth0` on this LAN and the given addresses (`10.0.0.1/24`,
    /// `fd00::1/64`; IPv6 ones without duplicate address detection). In the host:
    /// `ip_nonlocal_bind` is on and broadcast pings are answered.
    pub fn host(&self, name: &str, addrs: &[&str]) -> Host {
        let ns = format!("{PREFIX}{name}-{}", self.tag);
        let _ = Command::new("ip")
            .args(["netns", "del", &ns])
            .stderr(Stdio::null())
            .status();
        ip(&["netns", "add", &ns]);
        self.guard
            .hosts
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push(ns.clone());
        let port = format!("p{}", self.ports.fetch_add(1, Ordering::Relaxed));
        let h = Host {
            name: name.to_string(),
            ns,
            port,
            lan: self.clone(),
        };
        ip(&["-n", &h.ns, "link", "set", "lo", "up"]);
        ip(&[
            "link",
            "add",
            "eth0",
            "netns",
            &h.ns,
            "type",
            "veth",
            "peer",
            "name",
            &h.port,
            "netns",
            self.switch(),
        ]);
        ip(&[
            "-n",
            self.switch(),
            "link",
            "set",
            &h.port,
            "master",
            "br0",
            "up",
        ]);
        for (k, v) in [
            ("net.ipv4.ip_nonlocal_bind", "1"),
            ("net.ipv6.ip_nonlocal_bind", "1"),
            ("net.ipv4.icmp_echo_ignore_broadcasts", "0"),
            ("net.ipv6.conf.eth0.accept_dad", "0"),
        ] {
            h.run(&["sysctl", "-q", "-w", &format!("{k}={v}")]);
        }
        ip(&["-n", &h.ns, "link", "set", "eth0", "up"]);
        for a in addrs {
            if a.contains(':') {
                ip(&["-n", &h.ns, "addr", "add", a, "dev", "eth0", "nodad"]);
            } else {
                ip(&["-n", &h.ns, "addr", "add", a, "dev", "eth0"]);
            }
        }
        h
    }
}

/// A host on a [`Lan`]: a namespace with `eth0`. It keeps the LAN alive.
#[derive(Debug, Clone)]
pub struct Host {
    name: String,
    ns: String,
    /// Its port on the bridge, in the switch's namespace.
    port: String,
    lan: Lan,
}

impl Host {
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The host's namespace (for `ip netns exec`).
    pub fn netns(&self) -> &str {
        &self.ns
    }

    /// A command that runs `program` inside the host.
    pub fn cmd(&self, program: impl AsRef<std::ffi::OsStr>) -> Command {
        let mut c = Command::new("ip");
        c.args(["netns", "exec", &self.ns]).arg(program);
        c
    }

    /// Runs a command inside the host; panics with its stderr if it fails.
    pub fn run(&self, args: &[&str]) -> Output {
        let (first, rest) = args.split_first().expect("a command");
        run_cmd(self.cmd(first).args(rest))
    }

    /// Runs a command inside the host and returns what happened, failure included.
    pub fn output(&self, args: &[&str]) -> Output {
        let (first, rest) = args.split_first().expect("a command");
        self.cmd(first)
            .args(rest)
            .stdin(Stdio::null())
            .output()
            .unwrap_or_else(|e| panic!("{args:?} in {}: {e}", self.ns))
    }

    /// Starts a command inside the host (see [`Proc::spawn`]).
    pub fn spawn(&self, program: impl AsRef<std::ffi::OsStr>, args: &[&str], log: &Path) -> Proc {
        let mut c = self.cmd(program);
        c.args(args);
        Proc::spawn(c, log)
    }

    /// Cuts the host off the LAN: its port on the switch goes down, so the host sees its
    /// `eth0` lose carrier (as when a cable is pulled).
    pub fn cut(&self) {
        ip(&["-n", self.lan.switch(), "link", "set", &self.port, "down"]);
    }

    /// Reconnects a host cut with [`cut`](Self::cut).
    pub fn heal(&self) {
        ip(&["-n", self.lan.switch(), "link", "set", &self.port, "up"]);
    }

    /// Drops `percent` (0-100) of the packets the host sends and receives on `eth0`, IP and
    /// ARP alike; the link stays up, so the host does not notice: a silent partition at 100.
    /// (nftables `numgen random` in the host's namespace: this kernel has no netem.)
    pub fn loss(&self, percent: u32) {
        let p = if percent >= 100 {
            String::new()
        } else {
            format!("numgen random mod 100 < {percent} ")
        };
        let rules = format!(
            "table inet htk_loss {{
  chain i {{ type filter hook input priority -300; iifname \"eth0\" {p}drop; }}
  chain o {{ type filter hook output priority -300; oifname \"eth0\" {p}drop; }}
}}
table arp htk_loss {{
  chain i {{ type filter hook input priority 0; iifname \"eth0\" {p}drop; }}
  chain o {{ type filter hook output priority 0; oifname \"eth0\" {p}drop; }}
}}
"
        );
        self.clear_loss();
        let mut c = self.cmd("nft");
        c.args(["-f", "-"])
            .stdin(Stdio::piped())
            .stdout(Stdio::null());
        let mut child = c
            .spawn()
            .unwrap_or_else(|e| panic!("nft in {}: {e}", self.ns));
        if let Some(mut stdin) = child.stdin.take() {
            use std::io::Write;
            stdin
                .write_all(rules.as_bytes())
                .unwrap_or_else(|e| panic!("nft in {}: {e}", self.ns));
        }
        let st = child
            .wait()
            .unwrap_or_else(|e| panic!("nft in {}: {e}", self.ns));
        assert!(st.success(), "nft in {} failed: {st}", self.ns);
    }

    /// Removes the loss set by [`loss`](Self::loss).
    pub fn clear_loss(&self) {
        for family in ["inet", "arp"] {
            let _ = self
                .cmd("nft")
                .args(["delete", "table", family, "htk_loss"])
                .stderr(Stdio::null())
                .status();
        }
    }

    /// `ip -o addr show dev eth0`.
    pub fn addrs(&self) -> String {
        String::from_utf8_lossy(
            &self
                .run(&["ip", "-o", "addr", "show", "dev", "eth0"])
                .stdout,
        )
        .into_owned()
    }

    /// Whether `addr` (without prefix) is on the host's `eth0`.
    pub fn has_addr(&self, addr: &str) -> bool {
        self.addrs()
            .split_whitespace()
            .any(|w| w.split('/').next() == Some(addr))
    }

    /// The MAC address of `eth0`.
    pub fn mac(&self) -> String {
        let out = self.run(&["cat", "/sys/class/net/eth0/address"]);
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    }

    /// The link-layer address the host's neighbour table holds for `addr`, if any.
    pub fn neighbour(&self, addr: &str) -> Option<String> {
        let out = self.output(&["ip", "neigh", "show", "to", addr, "dev", "eth0"]);
        let s = String::from_utf8_lossy(&out.stdout).into_owned();
        let mut words = s.split_whitespace();
        words.find(|w| *w == "lladdr")?;
        words.next().map(str::to_string)
    }
}

/// A process started by a test, in a process group of its own; the group is killed on drop.
#[derive(Debug)]
pub struct Proc {
    child: Child,
    log: PathBuf,
}

impl Proc {
    /// Starts `cmd` with stdin closed and stdout and stderr appended to `log`.
    pub fn spawn(mut cmd: Command, log: &Path) -> Proc {
        use std::os::unix::process::CommandExt;
        let file = fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(log)
            .unwrap_or_else(|e| panic!("{}: {e}", log.display()));
        let err = file
            .try_clone()
            .unwrap_or_else(|e| panic!("{}: {e}", log.display()));
        let child = cmd
            .stdin(Stdio::null())
            .stdout(file)
            .stderr(err)
            .process_group(0)
            .spawn()
            .unwrap_or_else(|e| panic!("{cmd:?}: {e}"));
        Proc {
            child,
            log: log.to_path_buf(),
        }
    }

    /// The process id (`ip netns exec` execs the program, so it is the program's).
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    fn signal_group(&self, sig: &str) {
        let _ = Command::new("kill")
            .args([sig, "--", &format!("-{}", self.child.id())])
            .stderr(Stdio::null())
            .status();
    }

    /// SIGKILL to the whole group, then reaps the process.
    pub fn kill(&mut self) {
        self.signal_group("-KILL");
        let _ = self.child.wait();
    }

    /// SIGTERM to the whole group.
    pub fn term(&self) {
        self.signal_group("-TERM");
    }

    /// Waits up to `timeout` for the process to end.
    pub fn wait_timeout(&mut self, timeout: Duration) -> Option<ExitStatus> {
        let mut status = None;
        wait_until(timeout, || {
            status = self.child.try_wait().ok().flatten();
            status.is_some()
        });
        status
    }

    pub fn is_running(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }

    /// What the process has written so far.
    pub fn log(&self) -> String {
        fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        self.signal_group("-KILL");
        let _ = self.child.wait();
    }
}
