//! The dashboard end to end in headless Chromium (Debian's `chromium` and `chromium-driver`,
//! driven over WebDriver by fantoccini): log in to `herd demo`, see its virtual service and its
//! three real servers, drain one, and check through the director's counters that it gets no
//! new connections. Leaves a screenshot (its path is printed).

use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use fantoccini::{ClientBuilder, Locator};
use herd_testkit::Proc;
use serde_json::json;

use crate::util::{herd_bin, tally, wait_for, TempDir, DEMO};

const CHROMIUM: &str = "/usr/bin/chromium";
const CHROMEDRIVER: &str = "/usr/bin/chromedriver";

/// A port nobody listens on now, on 127.0.0.1.
fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Conns per real server, from the director (`herd lb list --json`).
fn conns(sock: &Path) -> std::collections::BTreeMap<String, u64> {
    let out = Command::new(herd_bin())
        .args(["lb", "list", "--json", "--socket"])
        .arg(sock)
        .output()
        .unwrap();
    assert!(out.status.success());
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    v[0]["reals"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| {
            (
                r["address"].as_str().unwrap().to_string(),
                r["stats"]["conns"].as_u64().unwrap(),
            )
        })
        .collect()
}

#[test]
fn dashboard_login_and_drain_in_headless_chromium() {
    if !Path::new(CHROMIUM).exists() || !Path::new(CHROMEDRIVER).exists() {
        assert!(
            std::env::var("CI").as_deref() != Ok("true"),
            "CI needs {CHROMIUM} and {CHROMEDRIVER} (apt-get install chromium chromium-driver)"
        );
        eprintln!(
            "SKIPPED: no {CHROMIUM} or {CHROMEDRIVER} (apt-get install chromium chromium-driver)"
        );
        return;
    }
    let _demo_lock = DEMO.lock().unwrap_or_else(|p| p.into_inner());
    let t = TempDir::new("browser");
    let sock = t.path("demo.sock");
    let web: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
    let mut cmd = Command::new(herd_bin());
    cmd.args(["demo", "--web", &web.to_string()])
        .env("HERD_SOCKET", &sock);
    let demo_log = t.path("demo.log");
    let mut demo = Proc::spawn(cmd, &demo_log);
    wait_for("the demo's socket", Duration::from_secs(30), || {
        assert!(
            demo.wait_timeout(Duration::ZERO).is_none(),
            "the demo exited: {}",
            std::fs::read_to_string(&demo_log).unwrap_or_default()
        );
        std::os::unix::net::UnixStream::connect(&sock).is_ok()
    });
    let printed = std::fs::read_to_string(&demo_log).unwrap();
    let password = printed
        .lines()
        .find_map(|l| l.split("(user admin, password ").nth(1))
        .and_then(|r| r.strip_suffix(')'))
        .unwrap_or_else(|| panic!("no password printed: {printed}"))
        .to_string();
    assert!(
        printed.contains(&format!("Dashboard: http://{web}/")),
        "{printed}"
    );

    let wd_port = free_port();
    let mut cmd = Command::new(CHROMEDRIVER);
    cmd.arg(format!("--port={wd_port}"));
    let _driver = Proc::spawn(cmd, &t.path("chromedriver.log"));
    wait_for("chromedriver", Duration::from_secs(20), || {
        TcpStream::connect(("127.0.0.1", wd_port)).is_ok()
    });

    let profile = t.path("chromium-profile");
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let (shot, phone) = rt.block_on(async {
        let mut caps = serde_json::Map::new();
        caps.insert(
            "goog:chromeOptions".into(),
            json!({
                "binary": CHROMIUM,
                "args": [
                    "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                    "--disable-component-update", "--disable-sync", "--no-first-run",
                    "--disable-dev-shm-usage", "--window-size=1280,1100",
                    format!("--user-data-dir={}", profile.display()),
                ]
            }),
        );
        let c = ClientBuilder::new(
            hyper_util::client::legacy::connect::HttpConnector::new(),
        )
        .capabilities(caps)
        .connect(&format!("http://127.0.0.1:{wd_port}"))
        .await
        .expect("a WebDriver session");
        let result = drive(&c, web, &password, &sock).await;
        let _ = c.close().await;
        result
    });
    for (name, png) in [
        ("herd-dashboard.png", &shot),
        ("herd-dashboard-phone.png", &phone),
    ] {
        let path = Path::new(env!("CARGO_TARGET_TMPDIR")).join(name);
        std::fs::write(&path, png).unwrap();
        assert!(png.starts_with(b"\x89PNG\r\n\x1a\n"), "a PNG");
        println!("screenshot: {}", path.display());
        eprintln!("screenshot: {}", path.display());
    }
    demo.term();
    demo.wait_timeout(Duration::from_secs(10));
}

/// The text of an element of the page. The live region is replaced every second by design, so
/// an element found may be gone by the time it is read: then it is looked up again.
async fn live_text(c: &fantoccini::Client, css: &str) -> String {
    for _ in 0..50 {
        if let Ok(e) = c.find(Locator::Css(css)).await {
            if let Ok(t) = e.text().await {
                return t;
            }
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("{css}: not found or never readable");
}

/// Clicks an element of the page, looking it up again if the live region replaced it.
async fn live_click(c: &fantoccini::Client, css: &str) {
    for _ in 0..50 {
        if let Ok(e) = c.find(Locator::Css(css)).await {
            match e.click().await {
                Ok(()) => return,
                Err(e) if e.is_stale_element_reference() => {}
                Err(e) => panic!("{css}: {e}"),
            }
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("{css}: not found or never clickable");
}

/// The browser's part; returns screenshots of the services page (desktop) and of the overview
/// on a phone-sized screen.
async fn drive(
    c: &fantoccini::Client,
    web: SocketAddr,
    password: &str,
    sock: &Path,
) -> (Vec<u8>, Vec<u8>) {
    let wait = Duration::from_secs(15);
    // Not logged in: the dashboard sends us to the login page.
    c.goto(&format!("http://{web}/")).await.unwrap();
    let user = c
        .wait()
        .at_most(wait)
        .for_element(Locator::Css("#user"))
        .await
        .unwrap();
    assert!(c.current_url().await.unwrap().path().starts_with("/login"));
    user.send_keys("admin").await.unwrap();
    c.find(Locator::Css("#password"))
        .await
        .unwrap()
        .send_keys(password)
        .await
        .unwrap();
    c.find(Locator::Css("#login"))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    // The overview: the demo's service is up.
    if let Err(e) = c
        .wait()
        .at_most(wait)
        .for_element(Locator::Css("#svc-up"))
        .await
    {
        panic!(
            "no overview after the login ({e}): at {:?}\n{}",
            c.current_url().await.map(|u| u.to_string()),
            c.source().await.unwrap_or_default()
        );
    }
    let text = live_text(c, "main").await;
    assert!(text.contains("demo-web") && text.contains("1 up"), "{text}");

    // The virtual service and its three real servers.
    c.goto(&format!("http://{web}/services")).await.unwrap();
    let sel = |real: &str, rest: &str| format!("tr[data-real=\"{real}\"] {rest}");
    c.wait()
        .at_most(wait)
        .for_element(Locator::Css(&sel("127.0.0.11:8080", "td")))
        .await
        .unwrap();
    let head = live_text(c, "section.svc h2").await;
    assert!(head.contains("TCP 127.0.0.100:8080 wrr"), "{head}");
    let rows = c
        .find_all(Locator::Css("table.reals tbody tr"))
        .await
        .unwrap();
    assert_eq!(rows.len(), 3);
    for (real, weight) in [
        ("127.0.0.11:8080", "1"),
        ("127.0.0.12:8080", "2"),
        ("127.0.0.13:8080", "3"),
    ] {
        let w = live_text(c, &sel(real, "td.weight")).await;
        assert_eq!(w, weight, "{real}");
    }

    // Drain node01: the button asks for confirmation, we accept.
    tally("127.0.0.100:8080".parse().unwrap(), 12);
    let before = conns(sock);
    live_click(
        c,
        &sel("127.0.0.11:8080", "form[data-confirm^=\"Drain\"] button"),
    )
    .await;
    let deadline = Instant::now() + wait;
    while c.accept_alert().await.is_err() {
        assert!(Instant::now() < deadline, "no confirmation dialog");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let notice = c
        .wait()
        .at_most(wait)
        .for_element(Locator::Css("p.notice"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        notice.contains("Done: Drain real server 127.0.0.11:8080 of TCP 127.0.0.100:8080"),
        "{notice}"
    );
    let state = live_text(c, &sel("127.0.0.11:8080", "td.state")).await;
    assert!(state.contains("draining"), "{state}");

    // Through the director: node01 takes no new connections, the others take them all.
    let t = tally("127.0.0.100:8080".parse().unwrap(), 50);
    assert_eq!(t.get("node01"), None, "{t:?}");
    assert_eq!(
        t.get("node02").copied().unwrap_or(0) + t.get("node03").copied().unwrap_or(0),
        50
    );
    let after = conns(sock);
    assert_eq!(
        after["127.0.0.11:8080"], before["127.0.0.11:8080"],
        "{before:?} {after:?}"
    );
    let others =
        |m: &std::collections::BTreeMap<String, u64>| m["127.0.0.12:8080"] + m["127.0.0.13:8080"];
    assert_eq!(others(&after), others(&before) + 50);

    // The page follows by itself (server-sent events): node03's count appears without a reload.
    let want = after["127.0.0.13:8080"].to_string();
    let deadline = Instant::now() + wait;
    loop {
        let shown = live_text(c, &sel("127.0.0.13:8080", "td.conns")).await;
        if shown == want {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the live update shows {shown}, not {want}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let live = live_text(c, "#conn").await;
    assert_eq!(live, "live");
    let desktop = c.screenshot().await.unwrap();

    // On a phone: the page is as wide as the screen (wide tables scroll inside themselves).
    c.set_window_size(390, 844).await.unwrap();
    c.goto(&format!("http://{web}/")).await.unwrap();
    c.wait()
        .at_most(wait)
        .for_element(Locator::Css("#svc-up"))
        .await
        .unwrap();
    let w = c
        .execute(
            "return [document.documentElement.scrollWidth, window.innerWidth];",
            vec![],
        )
        .await
        .unwrap();
    let (page, screen) = (w[0].as_u64().unwrap(), w[1].as_u64().unwrap());
    assert!(
        page <= screen,
        "the overview is {page} px wide on a {screen} px screen"
    );
    let phone = c.screenshot().await.unwrap();
    (desktop, phone)
}
