//! Shared helpers: a `herd daemon` process per test, backends, a tiny HTTP client.

use std::collections::hash_map::DefaultHasher;
use std::hash::{Hash, Hasher};
use std::io::{Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

/// Held by tests that run `herd demo`: its addresses are fixed (127.0.0.100:8080, …).
pub static DEMO: std::sync::Mutex<()> = std::sync::Mutex::new(());

pub fn herd_bin() -> &'static str {
    env!("CARGO_BIN_EXE_herd")
}

/// A loopback /24 of the test's own, derived from its name and the process id, so tests
/// running in parallel (threads or processes) never share addresses: `127.A.B.0/24`.
#[derive(Debug, Clone, Copy)]
pub struct Net(u8, u8);

impl Net {
    pub fn new(test: &str) -> Net {
        let mut h = DefaultHasher::new();
        test.hash(&mut h);
        std::process::id().hash(&mut h);
        let v = h.finish();
        // Avoid 127.0.x.x, which developers' machines use for real services.
        Net(10 + (v % 240) as u8, (v >> 8) as u8)
    }

    pub fn ip(&self, host: u8) -> Ipv4Addr {
        Ipv4Addr::new(127, self.0, self.1, host)
    }

    pub fn addr(&self, host: u8, port: u16) -> SocketAddr {
        SocketAddr::from((self.ip(host), port))
    }
}

/// A scratch directory removed on drop.
#[derive(Debug)]
pub struct TempDir(pub PathBuf);

impl TempDir {
    pub fn new(test: &str) -> TempDir {
        let p = std::env::temp_dir().join(format!("herd-it-{test}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&p);
        std::fs::create_dir_all(&p).unwrap();
        TempDir(p)
    }

    pub fn path(&self, name: &str) -> PathBuf {
        self.0.join(name)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A running `herd daemon`, killed on drop (also when the test panics).
#[derive(Debug)]
pub struct Daemon {
    pub child: Option<Child>,
    pub socket: PathBuf,
    pub config: PathBuf,
    pub dir: TempDir,
}

impl Daemon {
    pub fn start(test: &str, config: &str) -> Daemon {
        Self::try_start(test, config).unwrap_or_else(|e| panic!("daemon did not start: {e}"))
    }

    pub fn try_start(test: &str, config: &str) -> Result<Daemon, String> {
        Self::try_start_with(test, config, &[])
    }

    /// Starts the daemon inside a network namespace (`ip netns exec NS herd daemon ...`); the
    /// control socket is a file, so the CLI reaches it from outside.
    pub fn start_in(ns: &Netns, test: &str, config: &str) -> Daemon {
        Self::try_start_with(test, config, &["ip", "netns", "exec", &ns.0])
            .unwrap_or_else(|e| panic!("daemon did not start: {e}"))
    }

    /// Starts the daemon under a command prefix (`unshare -m ...`, `ip netns exec NS`).
    pub fn start_with(test: &str, config: &str, prefix: &[&str]) -> Daemon {
        Self::try_start_with(test, config, prefix)
            .unwrap_or_else(|e| panic!("daemon did not start: {e}"))
    }

    /// Its process id (the daemon itself: prefixes exec it).
    pub fn pid(&self) -> u32 {
        self.child.as_ref().map(|c| c.id()).unwrap_or(0)
    }

    fn try_start_with(test: &str, config: &str, prefix: &[&str]) -> Result<Daemon, String> {
        let dir = TempDir::new(test);
        let cfg = dir.path("herd.toml");
        std::fs::write(&cfg, config).unwrap();
        let socket = dir.path("herd.sock");
        let log = std::fs::File::create(dir.path("daemon.log")).unwrap();
        let mut cmd = match prefix.split_first() {
            Some((first, rest)) => {
                let mut c = Command::new(first);
                c.args(rest).arg(herd_bin());
                c
            }
            None => Command::new(herd_bin()),
        };
        let child = cmd
            .args(["daemon", "--config"])
            .arg(&cfg)
            .arg("--socket")
            .arg(&socket)
            .env("HERD_LOG", "debug")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .unwrap();
        let mut d = Daemon {
            child: Some(child),
            socket,
            config: cfg,
            dir,
        };
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if std::os::unix::net::UnixStream::connect(&d.socket).is_ok() {
                return Ok(d);
            }
            if let Some(st) = d.child.as_mut().unwrap().try_wait().unwrap() {
                d.child = None;
                return Err(format!("exited with {st}: {}", d.log()));
            }
            if Instant::now() > deadline {
                return Err(format!("no control socket after 20 s: {}", d.log()));
            }
            thread::sleep(Duration::from_millis(20));
        }
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path("daemon.log")).unwrap_or_default()
    }

    /// Runs `herd ARGS` against this daemon.
    pub fn herd(&self, args: &[&str]) -> Output {
        Command::new(herd_bin())
            .args(args)
            .env("HERD_SOCKET", &self.socket)
            .output()
            .unwrap()
    }

    /// Runs `herd ARGS`, asserts success, returns stdout.
    pub fn ok(&self, args: &[&str]) -> String {
        let out = self.herd(args);
        assert!(
            out.status.success(),
            "herd {args:?} failed ({}):\nstdout: {}\nstderr: {}",
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap()
    }

    pub fn signal(&self, sig: &str) {
        let pid = self.child.as_ref().unwrap().id().to_string();
        let st = Command::new("kill")
            .args(["-s", sig, &pid])
            .status()
            .unwrap();
        assert!(st.success());
    }

    pub fn write_config(&self, text: &str) {
        std::fs::write(&self.config, text).unwrap();
    }

    /// Waits for the daemon to exit; returns its exit code.
    pub fn wait(&mut self, timeout: Duration) -> Option<i32> {
        let deadline = Instant::now() + timeout;
        let child = self.child.as_mut()?;
        loop {
            if let Some(st) = child.try_wait().unwrap() {
                self.child = None;
                return st.code();
            }
            if Instant::now() > deadline {
                return None;
            }
            thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// A network namespace of the test's own with only `lo` up, removed on drop (also when the
/// test panics). Nothing in it reaches the outside: an address other than loopback has no
/// route.
#[derive(Debug)]
pub struct Netns(pub String);

/// Prefix of [`Netns`] names; the test's name and the PID follow.
const NETNS_PREFIX: &str = "herd-t-";

impl Netns {
    pub fn new(test: &str) -> Netns {
        // Namespaces of test processes that were killed before their `Drop` ran, swept the way
        // the testkit sweeps its own: only those whose process is gone.
        herd_testkit::sweep_namespaces(NETNS_PREFIX);
        let name = format!("{NETNS_PREFIX}{test}-{}", std::process::id());
        // A leftover of a crashed run under the same name; usually there is none, and `ip`
        // would say so on stderr.
        let _ = Command::new("ip")
            .args(["netns", "del", &name])
            .stderr(std::process::Stdio::null())
            .status();
        let ok = Command::new("ip")
            .args(["netns", "add", &name])
            .status()
            .map(|s| s.success())
            .unwrap_or(false);
        assert!(
            ok,
            "cannot create network namespace {name} (needs root and iproute2)"
        );
        let ns = Netns(name);
        ns.run(&["ip", "link", "set", "lo", "up"]);
        ns
    }

    /// Runs a command inside the namespace; asserts it succeeds.
    pub fn run(&self, args: &[&str]) {
        let st = Command::new("ip")
            .args(["netns", "exec", &self.0])
            .args(args)
            .status()
            .unwrap();
        assert!(st.success(), "{args:?} in {} failed", self.0);
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        let _ = Command::new("ip").args(["netns", "del", &self.0]).status();
    }
}

/// A peer program (nginx, dnsmasq, an SMTP server) started by a test in a process group of
/// its own; the whole group is killed on drop, so no worker outlives the test (an nginx
/// worker left behind would hold the test's stdout open).
#[derive(Debug)]
pub struct Peer(pub std::process::Child);

impl Peer {
    /// Starts `cmd` with stdin and stderr closed.
    pub fn spawn(cmd: &mut Command) -> Peer {
        use std::os::unix::process::CommandExt;
        let child = cmd
            .stdin(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .process_group(0)
            .spawn()
            .unwrap_or_else(|e| panic!("{cmd:?}: {e}"));
        Peer(child)
    }
}

impl Drop for Peer {
    fn drop(&mut self) {
        let group = format!("-{}", self.0.id());
        let _ = Command::new("kill").args(["-KILL", "--", &group]).status();
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// A thread-per-connection HTTP backend answering `NAME\n`; stops (closes its port) on drop.
#[derive(Debug)]
pub struct Backend {
    pub addr: SocketAddr,
    stop: Arc<AtomicBool>,
    thread: Option<thread::JoinHandle<()>>,
}

impl Backend {
    pub fn http(addr: SocketAddr, name: &str) -> Backend {
        let name = name.to_string();
        Self::custom(addr, move |mut s: TcpStream| {
            let mut buf = [0u8; 4096];
            let mut got = Vec::new();
            while !got.windows(4).any(|w| w == b"\r\n\r\n") {
                match s.read(&mut buf) {
                    Ok(0) | Err(_) => return,
                    Ok(n) => got.extend_from_slice(&buf[..n]),
                }
            }
            let body = format!("{name}\n");
            let _ = write!(
                s,
                "HTTP/1.0 200 OK\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                body.len()
            );
        })
    }

    /// Calls `f` on a new thread for every accepted connection.
    pub fn custom(addr: SocketAddr, f: impl Fn(TcpStream) + Send + Sync + 'static) -> Backend {
        let l = TcpListener::bind(addr).unwrap_or_else(|e| panic!("backend {addr}: {e}"));
        l.set_nonblocking(true).unwrap();
        let stop = Arc::new(AtomicBool::new(false));
        let stop2 = stop.clone();
        let f = Arc::new(f);
        let thread = thread::spawn(move || {
            while !stop2.load(Ordering::Relaxed) {
                match l.accept() {
                    Ok((s, _)) => {
                        s.set_nonblocking(false).unwrap();
                        let f = f.clone();
                        thread::spawn(move || f(s));
                    }
                    Err(_) => thread::sleep(Duration::from_millis(2)),
                }
            }
        });
        Backend {
            addr,
            stop,
            thread: Some(thread),
        }
    }
}

impl Drop for Backend {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// `GET /` over a new connection; returns the body, or the error.
pub fn get(addr: SocketAddr) -> Result<String, String> {
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(5))
        .map_err(|e| format!("connect: {e}"))?;
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    s.write_all(b"GET / HTTP/1.0\r\nHost: test\r\n\r\n")
        .map_err(|e| format!("write: {e}"))?;
    let mut resp = String::new();
    s.read_to_string(&mut resp)
        .map_err(|e| format!("read: {e}"))?;
    if !resp.starts_with("HTTP/1.0 200") && !resp.starts_with("HTTP/1.1 200") {
        return Err(format!("bad response: {resp:?}"));
    }
    Ok(resp
        .split("\r\n\r\n")
        .nth(1)
        .unwrap_or("")
        .trim()
        .to_string())
}

/// Counts the answers of `n` sequential requests by body.
pub fn tally(addr: SocketAddr, n: usize) -> std::collections::BTreeMap<String, usize> {
    let mut m = std::collections::BTreeMap::new();
    for _ in 0..n {
        *m.entry(get(addr).unwrap()).or_insert(0) += 1;
    }
    m
}

pub fn wait_for(what: &str, timeout: Duration, mut f: impl FnMut() -> bool) {
    let deadline = Instant::now() + timeout;
    while !f() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        thread::sleep(Duration::from_millis(20));
    }
}

pub fn repo_root() -> &'static Path {
    Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/../.."))
}
