//! `herd demo` as a new user runs it.

use std::process::{Command, Stdio};
use std::time::Duration;

use crate::util::{herd_bin, tally, wait_for, TempDir, DEMO};

/// A running demo, killed on drop.
struct Demo(std::process::Child);

impl Drop for Demo {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[test]
fn demo_serves_the_vip_with_wrr_1_2_3() {
    let _lock = DEMO.lock().unwrap_or_else(|p| p.into_inner());
    let t = TempDir::new("demo");
    let sock = t.path("demo.sock");
    // The dashboard on a port of the kernel's choosing, not the default 9000.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let mut demo = Demo(
        Command::new(herd_bin())
            .args(["demo", "--web", &format!("127.0.0.1:{port}")])
            .env("HERD_SOCKET", &sock)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap(),
    );
    wait_for("demo socket", Duration::from_secs(20), || {
        assert!(
            demo.0.try_wait().unwrap().is_none(),
            "demo exited early (is 127.0.0.100:8080 in use?)"
        );
        std::os::unix::net::UnixStream::connect(&sock).is_ok()
    });
    let vip = "127.0.0.100:8080".parse().unwrap();
    let counts = tally(vip, 60);
    assert_eq!(counts.get("node01"), Some(&10), "{counts:?}");
    assert_eq!(counts.get("node02"), Some(&20), "{counts:?}");
    assert_eq!(counts.get("node03"), Some(&30), "{counts:?}");
    let out = Command::new(herd_bin())
        .args(["ipvsadm", "-L", "-n", "--socket"])
        .arg(&sock)
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{text}");
    assert!(text.contains("TCP  127.0.0.100:8080 wrr"), "{text}");
    assert!(
        text.contains("  -> 127.0.0.13:8080              Masq    3"),
        "{text}"
    );
    // Ctrl-C stops it cleanly.
    let pid = demo.0.id().to_string();
    Command::new("kill").args(["-INT", &pid]).status().unwrap();
    wait_for("demo to exit", Duration::from_secs(10), || {
        demo.0.try_wait().unwrap().is_some()
    });
    let mut stdout = String::new();
    std::io::Read::read_to_string(demo.0.stdout.as_mut().unwrap(), &mut stdout).unwrap();
    assert!(
        stdout.contains("for i in $(seq 60); do curl -s http://127.0.0.100:8080/"),
        "{stdout}"
    );
}

#[test]
fn a_taken_dashboard_port_is_explained() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = taken.local_addr().unwrap().to_string();
    let out = Command::new(herd_bin())
        .args(["demo", "--web", &addr])
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(73));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains(&format!("cannot listen on {addr} for the dashboard"))
            && err.contains("--no-web"),
        "{err}"
    );
}
