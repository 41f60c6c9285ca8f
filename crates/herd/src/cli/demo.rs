//! `herd demo`: the director on an embedded config, with three built-in web servers.

use std::path::PathBuf;

use herd_core::config::Config;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

use super::daemon::{daemon_main, init_logging, runtime};
use super::exit;
use crate::daemon::Source;

/// The demo's config, also shipped as `examples/demo.toml`.
pub const DEMO_CONFIG: &str = include_str!("../../../../examples/demo.toml");

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Data-plane worker threads (0 = one per core)
    #[arg(long, default_value_t = 0)]
    workers: usize,
    /// Where the dashboard and HTTP API listen (an admin login with a fresh password is
    /// printed at start)
    #[arg(long, value_name = "ADDR:PORT", default_value = "127.0.0.1:9000")]
    web: std::net::SocketAddr,
    /// No dashboard
    #[arg(long)]
    no_web: bool,
}

/// The demo's config text: the embedded file, plus a `[web]` section with an `admin` login
/// whose password is made up now (there is no default password anywhere).
fn demo_text(a: &Args) -> Result<(String, Option<String>), String> {
    if a.no_web {
        return Ok((DEMO_CONFIG.to_string(), None));
    }
    let password = herd_web::auth::token()[..20].to_string();
    let hash = herd_web::auth::hash_password(&password).map_err(|e| e.to_string())?;
    let text = format!(
        "{DEMO_CONFIG}\n# Added by `herd demo`: the dashboard, and a login made up at start.\n\
         [web]\nlisten = \"{}\"\n\n[web.user.admin]\npassword = \"{hash}\"\nrole = \"admin\"\n",
        a.web
    );
    Ok((text, Some(password)))
}

/// The demo's control socket: `$XDG_RUNTIME_DIR/herd-demo.sock`, else `/tmp/herd-demo-UID.sock`.
fn demo_socket() -> PathBuf {
    match std::env::var_os("XDG_RUNTIME_DIR") {
        Some(d) if !d.is_empty() => PathBuf::from(d).join("herd-demo.sock"),
        _ => PathBuf::from(format!(
            "/tmp/herd-demo-{}.sock",
            rustix::process::getuid().as_raw()
        )),
    }
}

pub fn run(a: Args, socket: Option<PathBuf>) -> u8 {
    let (text, password) = match demo_text(&a) {
        Ok(t) => t,
        Err(e) => {
            eprintln!("herd demo: {e}");
            return exit::SOFTWARE;
        }
    };
    let mut cfg = match Config::parse("demo.toml", &text) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("herd: the embedded demo config is invalid (a bug):\n{e}");
            return exit::SOFTWARE;
        }
    };
    cfg.lb.workers = a.workers;
    init_logging("warn");
    let socket = socket.unwrap_or_else(demo_socket);
    // Say how to get around a taken dashboard port before anything starts.
    if !a.no_web {
        if let Err(e) = std::net::TcpListener::bind(a.web) {
            eprintln!(
                "herd demo: cannot listen on {} for the dashboard: {e}\n  \
                 --web 127.0.0.1:PORT picks another address, --no-web leaves the dashboard out",
                a.web
            );
            return exit::CANTCREAT;
        }
    }
    let Some(rt) = runtime() else {
        return exit::SOFTWARE;
    };
    rt.block_on(async move {
        let svc = &cfg.lb.services[0];
        let vip = svc.spec.key.address;
        let mut names = Vec::new();
        for (i, real) in svc.reals.iter().enumerate() {
            let name = format!("node{:02}", i + 1);
            match TcpListener::bind(real.address).await {
                Ok(l) => {
                    tokio::spawn(web_server(l, name.clone()));
                }
                Err(e) => {
                    eprintln!(
                        "herd demo: cannot start the web server {name} on {}: {e}",
                        real.address
                    );
                    return exit::CANTCREAT;
                }
            }
            names.push(format!("{name} {} (weight {})", real.address, real.weight));
        }
        let s = socket.display();
        println!(
            "herd demo: virtual service TCP {vip}, scheduler {}",
            svc.spec.scheduler
        );
        for n in &names {
            println!("  -> {n}");
        }
        println!();
        println!("Try, in another terminal:");
        println!("  for i in $(seq 60); do curl -s http://{vip}/; done | sort | uniq -c");
        println!("  herd ipvsadm -L -n --socket {s}");
        println!("  herd ipvsadm -L -n --stats --socket {s}");
        println!(
            "  herd ipvsadm -e -t {vip} -r {} -w 0 --socket {s}    # drain node03",
            svc.reals[2].address
        );
        println!("  herd lb list --socket {s}");
        if let Some(pw) = &password {
            println!();
            println!("Dashboard: http://{}/  (user admin, password {pw})", a.web);
            println!("Metrics:   http://{}/metrics", a.web);
        }
        println!();
        println!("Ctrl-C stops the demo.");
        daemon_main(
            Source::Embedded {
                name: "demo.toml".into(),
                text,
            },
            cfg,
            socket,
            std::future::pending(),
        )
        .await
    })
}

/// A small HTTP/1.1 server that answers every request with its name (keep-alive aware).
pub async fn web_server(l: TcpListener, name: String) {
    let body = format!("{name}\n");
    let resp_keep = format!(
        "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: {}\r\nX-Node: {name}\r\n\r\n{body}",
        body.len()
    );
    let resp_close = format!(
        "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: {}\r\nX-Node: {name}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    let resp: std::sync::Arc<(String, String)> = std::sync::Arc::new((resp_keep, resp_close));
    loop {
        let Ok((s, _)) = l.accept().await else {
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
            continue;
        };
        let resp = resp.clone();
        tokio::spawn(async move {
            let _ = serve_http(s, &resp.0, &resp.1).await;
        });
    }
}

async fn serve_http(mut s: TcpStream, keep: &str, close: &str) -> std::io::Result<()> {
    let _ = s.set_nodelay(true);
    let mut buf = vec![0u8; 8192];
    let mut filled = 0;
    loop {
        let n = s.read(&mut buf[filled..]).await?;
        if n == 0 {
            return Ok(());
        }
        filled += n;
        // Answer every complete request head in the buffer (pipelining works too).
        while let Some(end) = find_head_end(&buf[..filled]) {
            let head = String::from_utf8_lossy(&buf[..end]).to_ascii_lowercase();
            let wants_close = head.contains("connection: close")
                || (head.contains("http/1.0") && !head.contains("keep-alive"));
            s.write_all(if wants_close { close } else { keep }.as_bytes())
                .await?;
            if wants_close {
                return Ok(());
            }
            buf.copy_within(end..filled, 0);
            filled -= end;
        }
        if filled == buf.len() {
            return Ok(()); // head too large
        }
    }
}

fn find_head_end(b: &[u8]) -> Option<usize> {
    b.windows(4).position(|w| w == b"\r\n\r\n").map(|p| p + 4)
}
