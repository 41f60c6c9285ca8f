//! VRRP between real `herd` daemons (and Debian's keepalived) in network namespaces: a LAN
//! (bridge) with directors, real servers and a client on 10.61.0.0/24.

mod bench;
mod failover;
mod handover;
mod ipv6;
mod keepalived;
mod real_server;
mod reload;
mod tracking;
mod unicast;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use herd_testkit::{wait_until, Host, Lan, Proc};

use crate::util::herd_bin;

pub const VIP: &str = "10.61.0.100";
pub const VRID: u8 = 61;

pub fn now() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs_f64()
}

/// A director's VRRP settings; `None` runs herd as a load balancer only (another program
/// moves the VIP).
#[derive(Debug, Clone, Copy)]
pub struct Vrrp {
    pub priority: u8,
    pub advert_ms: u32,
}

/// A `herd daemon` on host `d{n}` (10.61.0.n) balancing VIP:80 over the two real servers.
pub struct Director {
    pub host: Host,
    pub n: u8,
    pub dir: PathBuf,
    pub config: PathBuf,
    pub socket: PathBuf,
    pub log: PathBuf,
    pub proc: Option<Proc>,
    /// Appended to the config: keys of the VRRP instance, then further tables.
    pub extra: String,
}

impl Director {
    pub fn new(lan: &Lan, dir: &Path, n: u8, priority: u8) -> Director {
        Director::with(
            lan,
            dir,
            n,
            Some(Vrrp {
                priority,
                advert_ms: 100,
            }),
        )
    }

    pub fn with(lan: &Lan, dir: &Path, n: u8, vrrp: Option<Vrrp>) -> Director {
        Director::custom(lan, dir, n, vrrp, "")
    }

    pub fn custom(lan: &Lan, dir: &Path, n: u8, vrrp: Option<Vrrp>, extra: &str) -> Director {
        let host = lan.host(&format!("d{n}"), &[&format!("10.61.0.{n}/24")]);
        Director::on(host, dir, n, vrrp, extra)
    }

    /// A director with fd61::n/64 besides 10.61.0.n/24, and no IPv4 VRRP instance.
    pub fn dual(lan: &Lan, dir: &Path, n: u8, extra: &str) -> Director {
        let host = lan.host(
            &format!("d{n}"),
            &[&format!("10.61.0.{n}/24"), &format!("fd61::{n}/64")],
        );
        Director::on(host, dir, n, None, extra)
    }

    fn on(host: Host, dir: &Path, n: u8, vrrp: Option<Vrrp>, extra: &str) -> Director {
        let mut d = Director {
            host,
            n,
            dir: dir.to_path_buf(),
            config: dir.join(format!("d{n}.toml")),
            socket: dir.join(format!("d{n}.sock")),
            log: dir.join(format!("d{n}.log")),
            proc: None,
            extra: extra.to_string(),
        };
        d.configure(vrrp);
        d.start();
        d
    }

    /// Writes the config (it takes effect at the next start).
    pub fn configure(&self, vrrp: Option<Vrrp>) {
        let mut text = format!(
            r#"
[daemon]
socket = "{socket}"
drain-timeout = "10s"

[lb]
workers = 1
connect-timeout = "200ms"

[[lb.service]]
name = "web"
address = "{VIP}:80"
scheduler = "rr"
  [[lb.service.real]]
  address = "10.61.0.21:8080"
  [[lb.service.real]]
  address = "10.61.0.22:8080"
"#,
            socket = self.socket.display(),
        );
        if let Some(v) = vrrp {
            text += &format!(
                r#"
[[vrrp.instance]]
name = "VI_1"
interface = "eth0"
vrid = {VRID}
priority = {priority}
advert-int = "{advert}ms"
vips = ["{VIP}/24"]
notify-master = "echo $HERD_VRRP_OLD_STATE-$HERD_VRRP_STATE >> {dir}/d{n}.notify"
"#,
                priority = v.priority,
                advert = v.advert_ms,
                dir = self.dir.display(),
                n = self.n,
            );
        }
        text += &self.extra;
        std::fs::write(&self.config, text).unwrap();
    }

    pub fn start(&mut self) {
        let config = self.config.display().to_string();
        self.proc = Some(
            self.host
                .spawn(herd_bin(), &["daemon", "--config", &config], &self.log),
        );
    }

    pub fn kill(&mut self) {
        if let Some(mut p) = self.proc.take() {
            p.kill();
        }
    }

    /// `herd ha status --json` through the daemon's socket (the file system is shared).
    pub fn status(&self) -> serde_json::Value {
        let out = self.herd(&["ha", "status", "--json"]);
        serde_json::from_slice(&out.stdout).unwrap_or_default()
    }

    /// The first instance's state: "master", "backup", "fault"…
    pub fn state(&self) -> Option<String> {
        self.status()[0]["state"].as_str().map(str::to_string)
    }

    pub fn herd(&self, args: &[&str]) -> std::process::Output {
        Command::new(herd_bin())
            .args(["--socket", &self.socket.display().to_string()])
            .args(args)
            .output()
            .unwrap()
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// What went wrong, with the daemon's log.
    pub fn report(&self, what: &str) -> String {
        format!("{what}\n--- {}:\n{}", self.host.name(), self.log())
    }
}

/// Debian's keepalived on `host`, VRRPv3 for the same VIP and VRID, run in the foreground
/// with its VRRP process only.
pub struct Keepalived {
    pub host: Host,
    pub log: PathBuf,
    pub proc: Option<Proc>,
    args: Vec<String>,
}

impl Keepalived {
    /// `advert` in seconds as keepalived writes it ("1", "0.1").
    pub fn new(host: &Host, dir: &Path, priority: u8, advert: &str) -> Keepalived {
        Keepalived::for_vip(host, dir, priority, advert, &format!("{VIP}/24"))
    }

    /// The same for another virtual address (`fd61::100/64` makes an IPv6 instance).
    pub fn for_vip(host: &Host, dir: &Path, priority: u8, advert: &str, vip: &str) -> Keepalived {
        assert!(
            Path::new("/usr/sbin/keepalived").exists(),
            "keepalived is not installed (.ci/run installs it): apt-get install keepalived"
        );
        let name = host.name();
        let conf = dir.join(format!("{name}.keepalived.conf"));
        std::fs::write(
            &conf,
            format!(
                "global_defs {{\n  router_id {name}\n}}\n\
                 vrrp_instance VI_1 {{\n  state BACKUP\n  interface eth0\n  \
                 virtual_router_id {VRID}\n  priority {priority}\n  advert_int {advert}\n  \
                 version 3\n  virtual_ipaddress {{\n    {vip}\n  }}\n}}\n"
            ),
        )
        .unwrap();
        let pid = |what: &str| dir.join(format!("{name}.{what}.pid")).display().to_string();
        let args = vec![
            "--dont-fork".into(),
            "--log-console".into(),
            "--log-detail".into(),
            "--vrrp".into(),
            "--use-file".into(),
            conf.display().to_string(),
            "--pid".into(),
            pid("keepalived"),
            "--vrrp_pid".into(),
            pid("vrrp"),
        ];
        let mut k = Keepalived {
            host: host.clone(),
            log: dir.join(format!("{name}.keepalived.log")),
            proc: None,
            args,
        };
        k.start();
        k
    }

    pub fn start(&mut self) {
        let args: Vec<&str> = self.args.iter().map(String::as_str).collect();
        self.proc = Some(self.host.spawn("/usr/sbin/keepalived", &args, &self.log));
    }

    /// SIGKILL to keepalived and its VRRP child (one process group). Like a crash, this
    /// leaves the VIP on the interface.
    pub fn kill(&mut self) {
        if let Some(mut p) = self.proc.take() {
            p.kill();
        }
    }

    /// Whether keepalived said it entered MASTER state (its log).
    pub fn said_master(&self) -> bool {
        std::fs::read_to_string(&self.log)
            .unwrap_or_default()
            .contains("Entering MASTER STATE")
    }

    pub fn report(&self, what: &str) -> String {
        format!(
            "{what}\n--- keepalived on {}:\n{}",
            self.host.name(),
            std::fs::read_to_string(&self.log).unwrap_or_default()
        )
    }
}

/// The two real servers, 10.61.0.21 and .22 (and fd61::21, ::22): Python's HTTP server on
/// :8080 (keep-alive), on both families.
pub fn real_servers(lan: &Lan, dir: &Path) -> Vec<(Host, Proc)> {
    [21u8, 22]
        .iter()
        .map(|n| {
            let h = lan.host(
                &format!("r{n}"),
                &[&format!("10.61.0.{n}/24"), &format!("fd61::{n}/64")],
            );
            let log = dir.join(format!("r{n}.log"));
            let p = h.spawn(
                "/usr/bin/python3",
                &[
                    "-m",
                    "http.server",
                    "8080",
                    "--protocol",
                    "HTTP/1.1",
                    "--bind",
                    "::",
                    "--directory",
                    "/",
                ],
                &log,
            );
            (h, p)
        })
        .collect()
}

/// What every VRRP test starts from: a LAN with the client (10.61.0.10) and the two real
/// servers, and a directory for configs and logs.
pub struct Site {
    pub dir: PathBuf,
    pub lan: Lan,
    pub client: Host,
    pub reals: Vec<(Host, Proc)>,
}

impl Site {
    pub fn new(name: &str) -> Site {
        let dir = tempdir(name);
        let lan = Lan::new(name);
        let client = lan.host("c", &["10.61.0.10/24"]);
        let reals = real_servers(&lan, &dir);
        Site {
            dir,
            lan,
            client,
            reals,
        }
    }

    /// Removes the test's files (a failed test keeps them, for its logs).
    pub fn clean(&self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// `tests/peers/vip_client.py` on the site's client: GET / through the VIP over and over,
/// each attempt logged as `start end ok`.
pub struct Client {
    _proc: Proc,
    pub log: PathBuf,
}

impl Client {
    /// Starts the client for `secs` and waits up to `timeout` for its first answer through the
    /// VIP; panics with `why()` if none comes.
    pub fn start(site: &Site, secs: u32, timeout: Duration, why: impl Fn() -> String) -> Client {
        Client::start_at(site, VIP, secs, timeout, why)
    }

    /// The same through another virtual address.
    pub fn start_at(
        site: &Site,
        vip: &str,
        secs: u32,
        timeout: Duration,
        why: impl Fn() -> String,
    ) -> Client {
        let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/peers/vip_client.py");
        let log = site.dir.join("client.log");
        let proc = site.client.spawn(
            "/usr/bin/python3",
            &[
                script,
                vip,
                "80",
                &log.display().to_string(),
                &secs.to_string(),
            ],
            &site.dir.join("client.out"),
        );
        let c = Client { _proc: proc, log };
        assert!(
            wait_until(timeout, || c.attempts().iter().any(|a| a.2)),
            "the client never got through the VIP: {:?}\n{}",
            c.attempts().last(),
            why()
        );
        c
    }

    /// Attempts so far: (start, end, ok).
    pub fn attempts(&self) -> Vec<(f64, f64, bool)> {
        std::fs::read_to_string(&self.log)
            .unwrap_or_default()
            .lines()
            .filter_map(|l| {
                let mut w = l.split_whitespace();
                Some((
                    w.next()?.parse().ok()?,
                    w.next()?.parse().ok()?,
                    w.next()? == "1",
                ))
            })
            .collect()
    }

    /// Waits up to `timeout` for an answer to a request begun at `t0` or later; the seconds
    /// from `t0` to that answer. Panics with `why()` if none comes.
    pub fn recovered(&self, t0: f64, timeout: Duration, why: impl Fn() -> String) -> f64 {
        let first = || {
            self.attempts()
                .into_iter()
                .find(|&(start, _, ok)| ok && start >= t0)
                .map(|(_, end, _)| end - t0)
        };
        assert!(
            wait_until(timeout, || first().is_some()),
            "no answer: {}",
            why()
        );
        first().unwrap()
    }
}

/// Whether `vip` (a host address: `/32`, `/128`) is on the host's `lo`.
pub fn on_lo(host: &Host, vip: &str) -> bool {
    let out = host.output(&["ip", "-o", "addr", "show", "dev", "lo"]);
    String::from_utf8_lossy(&out.stdout).contains(&format!(" {vip} "))
}

/// A sysctl's value inside the host.
pub fn sysctl(host: &Host, key: &str) -> String {
    let out = host.output(&["sysctl", "-n", key]);
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

/// The host's IPv6 link-local address on `eth0`.
pub fn link_local(host: &Host) -> String {
    let out = host.run(&[
        "ip", "-6", "-o", "addr", "show", "dev", "eth0", "scope", "link",
    ]);
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let mut words = text.split_whitespace();
    words.find(|w| *w == "inet6");
    let a = words.next().and_then(|a| a.split('/').next());
    a.unwrap_or_else(|| panic!("{} has no link-local address: {text}", host.name()))
        .to_string()
}

pub fn masters(ds: &[&Director]) -> Vec<usize> {
    ds.iter()
        .enumerate()
        .filter(|(_, d)| d.state().as_deref() == Some("master"))
        .map(|(i, _)| i)
        .collect()
}

pub fn tempdir(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("herd-it-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}
