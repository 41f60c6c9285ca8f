//! The dashboard as the daemon drives it: actions through a fake backend, and the apply
//! path over real sockets on 127.0.0.1.

use super::*;
use herd_core::api::{AdminState, ApiError, ErrorKind, ServiceStatus, Stats, VrrpStatus};
use herd_core::config::web::{WebRole, WebUser};
use herd_core::model::{Protocol, RealSpec, ServiceKey};

/// Answers like a daemon with one service and one VRRP master; records every request.
#[derive(Default)]
struct Fake(Mutex<Vec<Request>>);

impl Backend for Fake {
    fn call(&self, req: Request) -> Response {
        self.0.lock().unwrap().push(req.clone());
        match req {
            Request::List { .. } => Response::Services {
                services: vec![ServiceStatus {
                    spec: herd_core::api::service_spec(key(), herd_core::model::SchedulerKind::Rr),
                    reals: vec![herd_core::api::RealStatus {
                        spec: RealSpec {
                            address: "10.0.0.2:80".parse().unwrap(),
                            weight: 0,
                            upper_threshold: 5,
                            lower_threshold: 3,
                            forward: Default::default(),
                        },
                        active_conns: 0,
                        inactive_conns: 0,
                        persistent_conns: 0,
                        overloaded: false,
                        draining: false,
                        health: Default::default(),
                        configured_weight: 4,
                        admin: AdminState::Draining,
                        sorry: false,
                        stats: Stats::default(),
                        rates: Default::default(),
                    }],
                    quorum: None,
                    stats: Stats::default(),
                    rates: Default::default(),
                }],
            },
            Request::HaStatus => Response::Ha {
                instances: vec![vrrp()],
            },
            Request::Reload => Response::Error(ApiError::new(ErrorKind::Config, "bad.toml:1: x")),
            _ => Response::Ok,
        }
    }
}

fn key() -> ServiceKey {
    ServiceKey {
        protocol: Protocol::Tcp,
        address: "10.0.0.1:80".parse().unwrap(),
    }
}

fn vrrp() -> VrrpStatus {
    VrrpStatus {
        name: "vi_1".into(),
        interface: "eth0".into(),
        vrid: 51,
        version: 3,
        state: "master".into(),
        priority: 150,
        configured_priority: 150,
        standby: false,
        master: Some("10.0.0.5".into()),
        address: "10.0.0.5".into(),
        advert_interval_ms: 1000,
        vips: vec!["10.0.0.100/24".into()],
        transitions: Vec::new(),
        transitions_total: 25,
        adverts_sent: 12,
        adverts_received: 0,
        dropped: [("auth".to_string(), 2)].into_iter().collect(),
        handover: None,
        real_server: false,
        tracking: Vec::new(),
    }
}

/// A dashboard that serves nothing (no sampler calling the backend on its own).
async fn web(fake: Arc<Fake>) -> Web {
    Web::new(
        fake,
        Info {
            version: "9.9",
            node: "n1".into(),
        },
        MAX_CONNECTIONS,
    )
}

fn admin() -> auth::Session {
    let u = WebUser {
        name: "ann".into(),
        password: String::new(),
        role: WebRole::Admin,
    };
    auth::Sessions::default()
        .open(
            &u,
            std::time::Instant::now(),
            std::time::Duration::from_secs(60),
        )
        .1
}

#[tokio::test(flavor = "current_thread")]
async fn actions_become_the_clis_requests_and_are_audited() {
    use actions::Action;
    let fake = Arc::new(Fake::default());
    let w = web(fake.clone()).await;
    let s = admin();
    let ip = "10.9.9.9".parse().unwrap();
    let svc = key();
    let real = "10.0.0.2:80".parse().unwrap();
    for a in [
        Action::Failover {
            instances: vec!["vi_1".into()],
        },
        Action::Resume { instances: vec![] },
        Action::Weight {
            service: svc,
            real,
            weight: 9,
        },
        Action::Reload,
    ] {
        actions::perform(&w.state, &s, ip, a).await;
    }
    let got = fake.0.lock().unwrap().clone();
    assert_eq!(
        got,
        vec![
            Request::HaFailover {
                instances: vec!["vi_1".into()]
            },
            Request::HaResume { instances: vec![] },
            // The weight alone: the daemon keeps the thresholds and forwarding.
            Request::EditReal {
                service: svc,
                real: herd_core::api::RealEdit::weight(real, 9),
            },
            Request::Reload,
        ]
    );
    let audit = w.state.audit.recent();
    let seen: Vec<(&str, bool)> = audit.iter().map(|e| (e.event.as_str(), e.ok)).collect();
    assert_eq!(
        seen,
        [
            ("failover", true),
            ("resume", true),
            ("weight", true),
            ("reload", false)
        ]
    );
    assert_eq!(audit[0].detail, "Hand over vi_1 to a backup director");
    assert_eq!(audit[3].error, "bad.toml:1: x");
    assert!(audit
        .iter()
        .all(|e| e.user == "ann" && e.from == "10.9.9.9"));
    // Reads through the generic route are not audited.
    actions::perform(&w.state, &s, ip, Action::Request(Request::HaStatus)).await;
    assert_eq!(w.state.audit.recent().len(), 4);
    // Once the daemon shuts down, actions are refused before they reach it; reads go on.
    w.stop_actions();
    let n = fake.0.lock().unwrap().len();
    let r = actions::perform(&w.state, &s, ip, Action::Reload).await;
    assert!(matches!(r, Response::Error(e) if e.message.contains("shutting down")));
    assert_eq!(fake.0.lock().unwrap().len(), n);
    let r = actions::perform(&w.state, &s, ip, Action::Request(Request::HaStatus)).await;
    assert!(matches!(r, Response::Ha { .. }));
}

#[tokio::test(flavor = "current_thread")]
async fn vrrp_metrics_have_one_series_per_state() {
    let w = web(Arc::new(Fake::default())).await;
    let snap = snapshot::take(&w.state, snapshot::Want::default()).await;
    let text = metrics::render(&snap, &w.state.counters, 0, "9.9");
    for (state, v) in [("init", 0), ("backup", 0), ("master", 1), ("fault", 0)] {
        let line = format!(
            "herd_vrrp_state{{instance=\"vi_1\",interface=\"eth0\",state=\"{state}\"}} {v}"
        );
        assert!(text.contains(&line), "{line}\n{text}");
    }
    assert!(text.contains(
        "herd_vrrp_dropped_packets_total{instance=\"vi_1\",interface=\"eth0\",reason=\"auth\"} 2"
    ));
    assert!(
        text.contains("herd_vrrp_adverts_sent_total{instance=\"vi_1\",interface=\"eth0\"} 12")
            && text
                .contains("herd_vrrp_transitions_total{instance=\"vi_1\",interface=\"eth0\"} 25")
    );
    assert!(text.contains("herd_lb_real_admin_state{service=\"TCP 10.0.0.1:80\",protocol=\"tcp\",vip=\"10.0.0.1:80\",real=\"10.0.0.2:80\",state=\"draining\"} 1"));
    // Every family has HELP and TYPE once, before its samples.
    let mut seen = std::collections::HashSet::new();
    for l in text.lines().filter(|l| l.starts_with("# TYPE ")) {
        assert!(seen.insert(l.split(' ').nth(2).unwrap().to_string()), "{l}");
    }
}

/// `GET /static/app.css` over a new connection: the status line, or the connect error.
async fn get(addr: SocketAddr) -> std::io::Result<String> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut c = tokio::net::TcpStream::connect(addr).await?;
    c.write_all(b"GET /static/app.css HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n")
        .await?;
    let mut out = Vec::new();
    c.read_to_end(&mut out).await?;
    let text = String::from_utf8_lossy(&out);
    Ok(text.lines().next().unwrap_or("").to_string())
}

/// Waits (at most two seconds) until nothing listens at `addr` any more.
async fn refused(addr: SocketAddr) -> bool {
    for _ in 0..200 {
        match tokio::net::TcpStream::connect(addr).await {
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionRefused => return true,
            _ => tokio::time::sleep(std::time::Duration::from_millis(10)).await,
        }
    }
    false
}

fn listen(addr: &str) -> WebConfig {
    WebConfig {
        listen: addr.parse().unwrap(),
        ..WebConfig::default()
    }
}

/// A port nothing listens on now.
fn free_port() -> u16 {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    l.local_addr().unwrap().port()
}

#[tokio::test(flavor = "current_thread")]
async fn a_reload_that_moves_the_port_serves_on_the_new_port_and_not_the_old() {
    let w = web(Arc::new(Fake::default())).await;
    w.apply(Some(&listen("127.0.0.1:0"))).unwrap();
    let old = w.local_addr().unwrap();
    assert_eq!(get(old).await.unwrap(), "HTTP/1.1 200 OK");
    let port = free_port();
    w.apply(Some(&listen(&format!("127.0.0.1:{port}"))))
        .unwrap();
    let new = w.local_addr().unwrap();
    assert_eq!(new.port(), port);
    assert_eq!(get(new).await.unwrap(), "HTTP/1.1 200 OK");
    // Refused from the moment the reload returns.
    let e = tokio::net::TcpStream::connect(old).await.unwrap_err();
    assert_eq!(e.kind(), std::io::ErrorKind::ConnectionRefused, "{old}");
    // The same section again changes nothing: the listener stays.
    w.apply(Some(&listen(&format!("127.0.0.1:{port}"))))
        .unwrap();
    assert_eq!(w.local_addr(), Some(new));
    assert_eq!(get(new).await.unwrap(), "HTTP/1.1 200 OK");
}

#[tokio::test(flavor = "current_thread")]
async fn a_reload_with_a_bad_certificate_keeps_the_old_listener_and_reports_the_error() {
    let w = web(Arc::new(Fake::default())).await;
    w.apply(Some(&listen("127.0.0.1:0"))).unwrap();
    let old = w.local_addr().unwrap();
    let dir = std::env::temp_dir().join(format!("herd-web-badcert-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let (cert, key) = (dir.join("cert.pem"), dir.join("key.pem"));
    std::fs::write(&cert, "not a certificate\n").unwrap();
    std::fs::write(&key, "not a key\n").unwrap();
    let port = free_port();
    let mut cfg = listen(&format!("127.0.0.1:{port}"));
    cfg.tls = Some((cert.clone(), key));
    cfg.users.push(herd_core::config::web::WebUser {
        name: "ann".into(),
        password: String::new(),
        role: herd_core::config::web::WebRole::Admin,
    });
    let e = w.apply(Some(&cfg)).unwrap_err();
    assert!(matches!(e, WebError::Tls(TlsError::NoCert { .. })), "{e:?}");
    assert_eq!(
        e.to_string(),
        format!("web.tls-cert: {}: no certificate", cert.display())
    );
    // Nothing of the new section applied: the old listener serves, the new port is not
    // bound, the new user is unknown.
    assert_eq!(w.local_addr(), Some(old));
    assert_eq!(get(old).await.unwrap(), "HTTP/1.1 200 OK");
    let new: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
    assert!(refused(new).await);
    assert!(w.state.cfg().users.is_empty());
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test(flavor = "current_thread")]
async fn adding_web_starts_the_dashboard_and_removing_it_stops_it() {
    let w = web(Arc::new(Fake::default())).await;
    assert_eq!(w.local_addr(), None);
    w.apply(None).unwrap();
    let mut cfg = listen("127.0.0.1:0");
    cfg.users.push(herd_core::config::web::WebUser {
        name: "ann".into(),
        password: String::new(),
        role: herd_core::config::web::WebRole::Admin,
    });
    w.apply(Some(&cfg)).unwrap();
    let addr = w.local_addr().unwrap();
    assert_eq!(get(addr).await.unwrap(), "HTTP/1.1 200 OK");
    let (token, _) = w.state.sessions.lock().unwrap().open(
        &cfg.users[0],
        std::time::Instant::now(),
        cfg.session_timeout,
    );
    w.apply(None).unwrap();
    assert_eq!(w.local_addr(), None);
    assert!(refused(addr).await, "{addr} still accepts");
    assert!(w.state.cfg().users.is_empty());
    let s = w.state.sessions.lock().unwrap().get(
        &token,
        &cfg.users,
        std::time::Instant::now(),
        cfg.session_timeout,
    );
    assert!(s.is_none(), "the session outlived [web]");
    // And back: a new listener.
    w.apply(Some(&cfg)).unwrap();
    let again = w.local_addr().unwrap();
    assert_eq!(get(again).await.unwrap(), "HTTP/1.1 200 OK");
}

/// A self-signed certificate for `localhost`, written to `dir` as `NAME.crt` and
/// `NAME.key`; returns the paths and the certificate's DER.
fn certificate(
    dir: &std::path::Path,
    name: &str,
) -> (std::path::PathBuf, std::path::PathBuf, Vec<u8>) {
    let c = rcgen::generate_simple_self_signed(vec!["localhost".to_string()]).unwrap();
    let (crt, key) = (
        dir.join(format!("{name}.crt")),
        dir.join(format!("{name}.key")),
    );
    std::fs::write(&crt, c.cert.pem()).unwrap();
    std::fs::write(&key, c.signing_key.serialize_pem()).unwrap();
    (crt, key, c.cert.der().to_vec())
}

/// A TLS handshake with `addr` trusting `der` only; the certificate the server showed.
async fn handshake(addr: SocketAddr, der: &[u8]) -> Result<Vec<u8>, String> {
    use rustls::pki_types::{CertificateDer, ServerName};
    let mut roots = rustls::RootCertStore::empty();
    roots.add(CertificateDer::from(der.to_vec())).unwrap();
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let cfg = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    let tcp = tokio::net::TcpStream::connect(addr)
        .await
        .map_err(|e| e.to_string())?;
    let name = ServerName::try_from("localhost").unwrap();
    let s = tokio_rustls::TlsConnector::from(Arc::new(cfg))
        .connect(name, tcp)
        .await
        .map_err(|e| e.to_string())?;
    let shown = s.get_ref().1.peer_certificates().unwrap()[0].to_vec();
    Ok(shown)
}

#[tokio::test(flavor = "current_thread")]
async fn a_new_certificate_serves_new_connections_on_the_same_listener() {
    let dir = std::env::temp_dir().join(format!("herd-web-certs-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let (crt_a, key_a, der_a) = certificate(&dir, "a");
    let (crt_b, key_b, der_b) = certificate(&dir, "b");
    let w = web(Arc::new(Fake::default())).await;
    w.apply(Some(&listen("127.0.0.1:0"))).unwrap();
    let addr = w.local_addr().unwrap();
    assert_eq!(get(addr).await.unwrap(), "HTTP/1.1 200 OK");
    let mut cfg = listen(&addr.to_string());
    cfg.tls = Some((crt_a, key_a));
    w.apply(Some(&cfg)).unwrap();
    assert_eq!(w.local_addr(), Some(addr), "the same listener");
    assert_eq!(handshake(addr, &der_a).await.unwrap(), der_a);
    // Plain HTTP is not answered any more.
    assert_ne!(get(addr).await.unwrap_or_default(), "HTTP/1.1 200 OK");
    cfg.tls = Some((crt_b, key_b));
    w.apply(Some(&cfg)).unwrap();
    assert_eq!(handshake(addr, &der_b).await.unwrap(), der_b);
    assert!(
        handshake(addr, &der_a).await.is_err(),
        "the old certificate"
    );
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test(flavor = "current_thread")]
async fn a_reload_to_an_overlapping_address_on_the_same_port_takes_the_port_over() {
    let w = web(Arc::new(Fake::default())).await;
    let port = free_port();
    w.apply(Some(&listen(&format!("127.0.0.1:{port}"))))
        .unwrap();
    let lo: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
    // A request begun before the move is finished after it.
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut open = tokio::net::TcpStream::connect(lo).await.unwrap();
    open.write_all(b"GET /static/app.css HTTP/1.1\r\n")
        .await
        .unwrap();
    tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    w.apply(Some(&listen(&format!("0.0.0.0:{port}")))).unwrap();
    assert_eq!(
        w.local_addr(),
        Some(format!("0.0.0.0:{port}").parse().unwrap())
    );
    assert_eq!(get(lo).await.unwrap(), "HTTP/1.1 200 OK", "through 0.0.0.0");
    open.write_all(b"Host: 127.0.0.1\r\n\r\n").await.unwrap();
    let mut answer = Vec::new();
    open.read_to_end(&mut answer).await.unwrap();
    assert!(answer.starts_with(b"HTTP/1.1 200 OK"), "{answer:?}");
    // And back.
    w.apply(Some(&listen(&format!("127.0.0.1:{port}"))))
        .unwrap();
    assert_eq!(w.local_addr(), Some(lo));
    assert_eq!(get(lo).await.unwrap(), "HTTP/1.1 200 OK");
}

#[tokio::test(flavor = "current_thread")]
async fn a_port_another_program_holds_is_refused_and_the_old_listener_serves_on() {
    let w = web(Arc::new(Fake::default())).await;
    w.apply(Some(&listen("127.0.0.1:0"))).unwrap();
    let old = w.local_addr().unwrap();
    let other = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let taken = other.local_addr().unwrap();
    let e = w.apply(Some(&listen(&taken.to_string()))).unwrap_err();
    assert!(e.addr_in_use(), "{e:?}");
    assert!(
        e.to_string()
            .starts_with(&format!("web.listen: cannot bind {taken}: ")),
        "{e}"
    );
    assert_eq!(w.local_addr(), Some(old));
    assert_eq!(get(old).await.unwrap(), "HTTP/1.1 200 OK");
}

#[tokio::test(flavor = "current_thread")]
async fn a_failed_takeover_of_the_same_port_gives_the_old_address_back() {
    let w = web(Arc::new(Fake::default())).await;
    let port = free_port();
    let lo: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
    w.apply(Some(&listen(&lo.to_string()))).unwrap();
    // Another program on the same port of another loopback address: 0.0.0.0 cannot be had
    // even once ours stops listening.
    let _other = std::net::TcpListener::bind(format!("127.0.0.2:{port}")).unwrap();
    let e = w
        .apply(Some(&listen(&format!("0.0.0.0:{port}"))))
        .unwrap_err();
    assert!(e.addr_in_use(), "{e:?}");
    assert_eq!(w.local_addr(), Some(lo));
    assert_eq!(get(lo).await.unwrap(), "HTTP/1.1 200 OK");
}
