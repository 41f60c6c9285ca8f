//! The HTTP/1.1 server: listener and TLS, per-connection limits, the request and response
//! types the handlers use, security headers, sessions from cookies, and the routing table of
//! the pages (the API's is in `api.rs`).

use std::convert::Infallible;
use std::net::{IpAddr, SocketAddr};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use herd_core::config::web::WebConfig;
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::{Bytes, Frame, Incoming};
use hyper::header::{HeaderMap, HeaderValue};
use hyper::{Method, StatusCode};
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::TcpListener;

use crate::auth::Session;
use crate::State;

/// Largest request body read (forms and JSON are small).
const MAX_BODY: usize = 64 << 10;
/// Connections served at once unless the daemon asks for fewer (it sizes the cap from its
/// open-files limit); more wait in the kernel's backlog.
pub const MAX_CONNECTIONS: usize = 512;
/// A client has this long to send its request headers, and again for the body.
const HEADER_TIMEOUT: Duration = Duration::from_secs(10);
/// Connections one client address may hold at once.
const MAX_PER_ADDR: usize = 32;

pub type Body = BoxBody<Bytes, Infallible>;
pub type Resp = hyper::Response<Body>;

/// The bound socket, and the TLS acceptor when `web.tls-cert` is set.
pub struct Listener {
    tcp: TcpListener,
    tls: Option<tokio_rustls::TlsAcceptor>,
}

impl std::fmt::Debug for Listener {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Listener")
            .field("addr", &self.tcp.local_addr().ok())
            .field("tls", &self.tls.is_some())
            .finish()
    }
}

impl Listener {
    pub async fn bind(cfg: &WebConfig) -> Result<Listener, String> {
        let tls = match &cfg.tls {
            Some((cert, key)) => Some(tls_acceptor(cert, key)?),
            None => None,
        };
        let tcp = TcpListener::bind(cfg.listen)
            .await
            .map_err(|e| format!("web.listen: cannot bind {}: {e}", cfg.listen))?;
        Ok(Listener { tcp, tls })
    }

    pub fn local_addr(&self) -> SocketAddr {
        self.tcp
            .local_addr()
            .unwrap_or_else(|_| SocketAddr::from(([0, 0, 0, 0], 0)))
    }

    pub fn url(&self, tls: bool) -> String {
        format!(
            "{}://{}/",
            if tls { "https" } else { "http" },
            self.local_addr()
        )
    }
}

/// Whether the dashboard's certificate and key load (`herd config validate`): the very
/// loading the daemon does at start.
pub fn check_tls(cert: &std::path::Path, key: &std::path::Path) -> Result<(), String> {
    tls_acceptor(cert, key).map(|_| ())
}

fn tls_acceptor(
    cert: &std::path::Path,
    key: &std::path::Path,
) -> Result<tokio_rustls::TlsAcceptor, String> {
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer};
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(cert)
        .and_then(|it| it.collect())
        .map_err(|e| format!("web.tls-cert: {}: {e}", cert.display()))?;
    if certs.is_empty() {
        return Err(format!("web.tls-cert: {}: no certificate", cert.display()));
    }
    let key = PrivateKeyDer::from_pem_file(key)
        .map_err(|e| format!("web.tls-key: {}: {e}", key.display()))?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut cfg = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| format!("web TLS: {e}"))?
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .map_err(|e| format!("web.tls-key: {e}"))?;
    cfg.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(tokio_rustls::TlsAcceptor::from(Arc::new(cfg)))
}

/// At most `max` of something per key at once (connections per client address, live pages
/// per session); a key is forgotten when its last one ends.
pub(crate) struct PerKey<K> {
    max: usize,
    held: std::sync::Mutex<std::collections::HashMap<K, usize>>,
}

/// One of a key's share, given back on drop.
pub(crate) struct KeySlot<K: Eq + std::hash::Hash + Clone>(Arc<PerKey<K>>, K);

impl<K: Eq + std::hash::Hash + Clone> PerKey<K> {
    pub(crate) fn new(max: usize) -> Arc<PerKey<K>> {
        Arc::new(PerKey {
            max,
            held: std::sync::Mutex::default(),
        })
    }

    /// A slot for `key`, or none if it holds `max` already.
    pub(crate) fn take(self: &Arc<Self>, key: &K) -> Option<KeySlot<K>> {
        let mut m = self.held.lock().unwrap_or_else(|p| p.into_inner());
        let n = m.entry(key.clone()).or_default();
        if *n >= self.max {
            return None;
        }
        *n += 1;
        Some(KeySlot(self.clone(), key.clone()))
    }
}

impl<K: Eq + std::hash::Hash + Clone> Drop for KeySlot<K> {
    fn drop(&mut self) {
        let mut m = self.0.held.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(n) = m.get_mut(&self.1) {
            *n -= 1;
            if *n == 0 {
                m.remove(&self.1);
            }
        }
    }
}

pub(crate) async fn serve(st: Arc<State>, l: Listener, max_connections: usize) {
    let slots = Arc::new(tokio::sync::Semaphore::new(max_connections.max(1)));
    let per_addr = PerKey::new(MAX_PER_ADDR);
    let mut backoff = herd_core::backoff::Backoff::default();
    loop {
        let Ok(permit) = slots.clone().acquire_owned().await else {
            return;
        };
        let (stream, peer) = match l.tcp.accept().await {
            Ok(c) => {
                backoff.succeeded();
                c
            }
            Err(e) => {
                // Out of descriptors and the like: wait (growing) rather than spin.
                tracing::warn!(error = %e, "web: accept failed");
                tokio::time::sleep(backoff.failed()).await;
                continue;
            }
        };
        // A trusted proxy carries many clients: it is not held to one client's share.
        let proxy = st
            .cfg()
            .trusted_proxies
            .iter()
            .any(|n| herd_core::config::web::in_net(peer.ip(), *n));
        let addr_slot = if proxy {
            None
        } else {
            // IPv6 clients by /64, as the login limiter counts them: one host usually has the
            // whole /64, and counting each of its addresses would give it 2^64 shares.
            match per_addr.take(&herd_core::addr::client_key(peer.ip())) {
                Some(s) => Some(s),
                None => {
                    tracing::debug!(%peer, "web: too many connections from one address");
                    continue;
                }
            }
        };
        let _ = stream.set_nodelay(true);
        let st = st.clone();
        let tls = l.tls.clone();
        tokio::spawn(async move {
            let _permit = (permit, addr_slot);
            match tls {
                Some(acc) => match tokio::time::timeout(HEADER_TIMEOUT, acc.accept(stream)).await {
                    Ok(Ok(s)) => connection(st, peer, TokioIo::new(s)).await,
                    Ok(Err(e)) => tracing::debug!(%peer, error = %e, "web: TLS handshake"),
                    Err(_) => tracing::debug!(%peer, "web: TLS handshake timed out"),
                },
                None => connection(st, peer, TokioIo::new(stream)).await,
            }
        });
    }
}

async fn connection<I>(st: Arc<State>, peer: SocketAddr, io: I)
where
    I: hyper::rt::Read + hyper::rt::Write + Unpin + Send + 'static,
{
    let svc = hyper::service::service_fn(move |req| {
        let st = st.clone();
        async move { Ok::<_, Infallible>(handle(st, peer, req).await) }
    });
    let conn = hyper::server::conn::http1::Builder::new()
        .timer(TokioTimer::new())
        .header_read_timeout(HEADER_TIMEOUT)
        .max_buf_size(64 << 10)
        .serve_connection(io, svc);
    if let Err(e) = conn.await {
        tracing::debug!(%peer, error = %e, "web: connection");
    }
}

/// One request, its body read (small), with what the handlers need.
#[derive(Debug)]
pub struct Req {
    pub method: Method,
    pub path: String,
    pub query: String,
    pub headers: HeaderMap,
    pub body: Bytes,
    /// The client: the peer, or what a trusted proxy says in `X-Forwarded-For`.
    pub client: IpAddr,
    /// Came over HTTPS: ours, or a trusted proxy's (`X-Forwarded-Proto: https`).
    pub secure: bool,
}

/// The client's address: the peer's, or, when the peer is a trusted proxy, the right-most
/// address of `X-Forwarded-For` that is not one of the trusted proxies (the left part of the
/// header is whatever the client wrote).
fn client_of(peer: IpAddr, headers: &HeaderMap, trusted: &[(IpAddr, u8)]) -> IpAddr {
    let peer = peer.to_canonical();
    let is_trusted = |ip: IpAddr| {
        trusted
            .iter()
            .any(|n| herd_core::config::web::in_net(ip, *n))
    };
    if !is_trusted(peer) {
        return peer;
    }
    let hops: Vec<IpAddr> = headers
        .get_all("x-forwarded-for")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .filter_map(|a| a.trim().parse::<IpAddr>().ok())
        .map(|a| a.to_canonical())
        .collect();
    hops.iter()
        .rev()
        .find(|a| !is_trusted(**a))
        .copied()
        .unwrap_or(peer)
}

impl Req {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }

    pub fn cookie(&self, name: &str) -> Option<&str> {
        self.headers
            .get_all(hyper::header::COOKIE)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(';'))
            .filter_map(|kv| kv.trim().split_once('='))
            .find(|(k, _)| *k == name)
            .map(|(_, v)| v)
    }

    /// A query parameter, percent-decoded.
    pub fn param(&self, name: &str) -> Option<String> {
        form_pairs(&self.query)
            .into_iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v)
    }

    /// The client's address (an IPv4 client of a dual-stack listener as IPv4; behind a trusted
    /// proxy, the address it forwards for).
    pub fn ip(&self) -> IpAddr {
        self.client
    }

    /// The request comes from a page of this site, as far as the browser says: an `Origin`
    /// naming another host, or `Sec-Fetch-Site` other than `same-origin` or `none` (typed by
    /// the user), is refused for anything that changes state (SameSite cookies and CSRF tokens
    /// are the main guard; this is a second). Clients that are not browsers send neither.
    pub fn same_origin(&self) -> bool {
        if matches!(
            self.header("sec-fetch-site"),
            Some("cross-site" | "same-site")
        ) {
            return false;
        }
        match (self.header("origin"), self.header("host")) {
            // Browsers send `null` from privacy-sensitive contexts; Sec-Fetch-Site decided.
            (None | Some("null"), _) => true,
            (Some(o), Some(h)) => o
                .split_once("://")
                .is_some_and(|(_, rest)| rest.trim_end_matches('/') == h),
            (Some(_), None) => false,
        }
    }
}

pub const SESSION_COOKIE: &str = "herd_session";
/// Under TLS: a cookie only this origin can set (no sibling subdomain can plant one).
pub const SESSION_COOKIE_TLS: &str = "__Host-herd_session";

pub fn cookie_name(tls: bool) -> &'static str {
    if tls {
        SESSION_COOKIE_TLS
    } else {
        SESSION_COOKIE
    }
}

/// The request's session, if its cookie names a live one.
pub fn session(st: &State, req: &Req) -> Option<(String, Session)> {
    let token = req.cookie(cookie_name(req.secure))?;
    let cfg = st.cfg();
    let s = st.sessions.lock().unwrap_or_else(|p| p.into_inner()).get(
        token,
        &cfg.users,
        Instant::now(),
        cfg.session_timeout,
    )?;
    Some((token.to_string(), s))
}

pub fn session_cookie(req: &Req, token: &str) -> String {
    format!(
        "{}={token}; Path=/; HttpOnly; SameSite=Strict{}",
        cookie_name(req.secure),
        if req.secure { "; Secure" } else { "" }
    )
}

pub fn clear_cookie(req: &Req) -> String {
    format!(
        "{}=; Path=/; HttpOnly; SameSite=Strict; Max-Age=0{}",
        cookie_name(req.secure),
        if req.secure { "; Secure" } else { "" }
    )
}

/// `a=1&b=x%20y` → pairs, `+` as space, percent-decoded.
pub fn form_pairs(s: &str) -> Vec<(String, String)> {
    s.split('&')
        .filter(|p| !p.is_empty())
        .map(|p| {
            let (k, v) = p.split_once('=').unwrap_or((p, ""));
            (percent_decode(k), percent_decode(v))
        })
        .collect()
}

pub fn percent_decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'+' => out.push(b' '),
            b'%' if i + 2 < b.len()
                && b[i + 1].is_ascii_hexdigit()
                && b[i + 2].is_ascii_hexdigit() =>
            {
                let h = std::str::from_utf8(&b[i + 1..i + 3])
                    .ok()
                    .and_then(|h| u8::from_str_radix(h, 16).ok());
                match h {
                    Some(v) => {
                        out.push(v);
                        i += 2;
                    }
                    None => out.push(b'%'),
                }
            }
            c => out.push(c),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

pub fn full(status: StatusCode, ctype: &str, body: impl Into<Bytes>) -> Resp {
    let mut r = hyper::Response::new(Full::new(body.into()).boxed());
    *r.status_mut() = status;
    if let Ok(v) = HeaderValue::from_str(ctype) {
        r.headers_mut().insert(hyper::header::CONTENT_TYPE, v);
    }
    r
}

pub fn json(status: StatusCode, v: &impl serde::Serialize) -> Resp {
    let body = serde_json::to_vec_pretty(v).unwrap_or_else(|_| b"{}".to_vec());
    full(status, "application/json", body)
}

pub fn html(status: StatusCode, body: String) -> Resp {
    full(status, "text/html; charset=utf-8", body)
}

pub fn redirect(to: &str) -> Resp {
    let mut r = full(StatusCode::SEE_OTHER, "text/plain", "");
    let v = HeaderValue::from_str(to).unwrap_or(HeaderValue::from_static("/"));
    r.headers_mut().insert(hyper::header::LOCATION, v);
    r
}

pub fn with_header(mut r: Resp, name: &'static str, value: &str) -> Resp {
    if let Ok(v) = HeaderValue::from_str(value) {
        r.headers_mut().append(name, v);
    }
    r
}

/// A local path to go back to after a login or an action: `/…` of visible ASCII, not `//…`
/// (another host), no backslash and no blank or control character (browsers drop tabs and
/// newlines from `Location`, which would make `/\t/evil` into `//evil`).
pub fn local_path(p: Option<String>) -> String {
    match p {
        Some(p)
            if p.starts_with('/')
                && !p.starts_with("//")
                && p.bytes().all(|b| b.is_ascii_graphic() && b != b'\\') =>
        {
            p
        }
        _ => "/".to_string(),
    }
}

fn security_headers(st: &State, r: &mut Resp) {
    let h = r.headers_mut();
    let mut set = |k: &'static str, v: &'static str| {
        h.entry(k).or_insert(HeaderValue::from_static(v));
    };
    set(
        "content-security-policy",
        "default-src 'self'; img-src 'self' data:; style-src 'self'; script-src 'self'; \
         connect-src 'self'; frame-ancestors 'none'; form-action 'self'; base-uri 'none'",
    );
    set("x-content-type-options", "nosniff");
    set("x-frame-options", "DENY");
    // Not `no-referrer`: with it, browsers send `Origin: null` on form posts.
    set("referrer-policy", "same-origin");
    set("cache-control", "no-store");
    if st.tls {
        set("strict-transport-security", "max-age=31536000");
    }
}

/// The `Host` header names this server as an IP address, `localhost` or one of
/// `web.hostnames` (a page of another site whose name resolves here — DNS rebinding — names
/// its own host). No `Host` (HTTP/1.0 clients) passes.
fn host_ok(hostnames: &[String], host: Option<&str>) -> bool {
    let Some(h) = host else {
        return true;
    };
    let name = match h.strip_prefix('[') {
        Some(v6) => {
            return v6
                .split(']')
                .next()
                .is_some_and(|a| a.parse::<IpAddr>().is_ok())
        }
        None => h.rsplit_once(':').map_or(h, |(n, port)| {
            if port.bytes().all(|b| b.is_ascii_digit()) {
                n
            } else {
                h
            }
        }),
    };
    let name = name.trim_end_matches('.').to_ascii_lowercase();
    name.parse::<IpAddr>().is_ok() || name == "localhost" || hostnames.contains(&name)
}

async fn handle(st: Arc<State>, peer: SocketAddr, req: hyper::Request<Incoming>) -> Resp {
    let (parts, body) = req.into_parts();
    let host = parts
        .headers
        .get(hyper::header::HOST)
        .and_then(|v| v.to_str().ok());
    let cfg = st.cfg();
    let mut r = if !host_ok(&cfg.hostnames, host) {
        full(
            StatusCode::MISDIRECTED_REQUEST,
            "text/plain",
            "unknown host name: list it in web.hostnames\n",
        )
    } else {
        match tokio::time::timeout(HEADER_TIMEOUT, Limited::new(body, MAX_BODY).collect()).await {
            Ok(Ok(b)) => {
                let trusted = &cfg.trusted_proxies;
                let client = client_of(peer.ip(), &parts.headers, trusted);
                let via_proxy = client != peer.ip().to_canonical()
                    || trusted
                        .iter()
                        .any(|n| herd_core::config::web::in_net(peer.ip(), *n));
                let secure = st.tls
                    || (via_proxy
                        && parts
                            .headers
                            .get("x-forwarded-proto")
                            .and_then(|v| v.to_str().ok())
                            .is_some_and(|p| p.trim().eq_ignore_ascii_case("https")));
                let req = Req {
                    client,
                    secure,
                    // HEAD is GET without the body (hyper leaves it out).
                    method: if parts.method == Method::HEAD {
                        Method::GET
                    } else {
                        parts.method
                    },
                    path: parts.uri.path().to_string(),
                    query: parts.uri.query().unwrap_or("").to_string(),
                    headers: parts.headers,
                    body: b.to_bytes(),
                };
                route(&st, req).await
            }
            Ok(Err(_)) => full(
                StatusCode::PAYLOAD_TOO_LARGE,
                "text/plain",
                "request body too large or broken\n",
            ),
            Err(_) => full(
                StatusCode::REQUEST_TIMEOUT,
                "text/plain",
                "the request body was too slow\n",
            ),
        }
    };
    security_headers(&st, &mut r);
    r
}

async fn route(st: &Arc<State>, req: Req) -> Resp {
    if req.path.starts_with("/api/") {
        return crate::api::route(st, req).await;
    }
    match (req.method.clone(), req.path.as_str()) {
        (Method::GET, "/static/app.js") => asset("text/javascript", crate::pages::APP_JS),
        (Method::GET, "/static/app.css") => asset("text/css", crate::pages::APP_CSS),
        (Method::GET, "/metrics") => crate::metrics::serve(st, &req).await,
        (Method::GET, "/login") => crate::pages::login_page(st, &req, None),
        (Method::POST, "/login") => crate::pages::login_form(st, &req).await,
        (Method::POST, "/logout") => crate::pages::logout_form(st, &req),
        (Method::POST, "/action") => crate::pages::action_form(st, &req).await,
        (Method::GET, "/events") => crate::pages::events(st, &req).await,
        (Method::GET, p) if crate::pages::Page::from_path(p).is_some() => {
            crate::pages::page(st, &req).await
        }
        (Method::GET, _) => html(
            StatusCode::NOT_FOUND,
            crate::pages::message_page("Not found", "There is no such page."),
        ),
        (_, p) => {
            let allow = match p {
                "/login" => "GET, POST",
                "/logout" | "/action" => "POST",
                "/metrics" | "/events" | "/static/app.js" | "/static/app.css" => "GET",
                p if crate::pages::Page::from_path(p).is_some() => "GET",
                _ => return full(StatusCode::NOT_FOUND, "text/plain", "not found\n"),
            };
            with_header(
                full(
                    StatusCode::METHOD_NOT_ALLOWED,
                    "text/plain",
                    "method not allowed\n",
                ),
                "allow",
                allow,
            )
        }
    }
}

fn asset(ctype: &str, body: &'static str) -> Resp {
    let mut r = full(StatusCode::OK, ctype, body);
    r.headers_mut().insert(
        "cache-control",
        HeaderValue::from_static("public, max-age=300"),
    );
    r
}

/// A response body fed by a channel: server-sent events.
pub struct ChannelBody(pub tokio::sync::mpsc::Receiver<Bytes>);

impl hyper::body::Body for ChannelBody {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        self.0.poll_recv(cx).map(|o| o.map(|b| Ok(Frame::data(b))))
    }
}

pub fn stream(rx: tokio::sync::mpsc::Receiver<Bytes>) -> Resp {
    let mut r = hyper::Response::new(ChannelBody(rx).boxed());
    r.headers_mut().insert(
        hyper::header::CONTENT_TYPE,
        HeaderValue::from_static("text/event-stream"),
    );
    r
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn forms_decode() {
        assert_eq!(
            form_pairs("a=1&b=x+y%20z&c=%2Fp%3F&d&e=%zz"),
            vec![
                ("a".into(), "1".into()),
                ("b".into(), "x y z".into()),
                ("c".into(), "/p?".into()),
                ("d".into(), "".into()),
                ("e".into(), "%zz".into()),
            ]
        );
        assert_eq!(percent_decode("%"), "%");
        assert_eq!(percent_decode("a%4"), "a%4");
        assert_eq!(percent_decode("%5B%3A%3A1%5D"), "[::1]");
        assert_eq!(percent_decode("%+a"), "%+a".replace('+', " "));
    }

    #[test]
    fn the_client_is_who_a_trusted_proxy_says() {
        use herd_core::config::web::parse_net;
        let trusted = vec![parse_net("10.0.0.0/8").unwrap(), parse_net("::1").unwrap()];
        let mut h = HeaderMap::new();
        h.append(
            "x-forwarded-for",
            HeaderValue::from_static("6.6.6.6, 198.51.100.7"),
        );
        h.append("x-forwarded-for", HeaderValue::from_static("10.1.1.1"));
        let ip = |s: &str| s.parse::<IpAddr>().unwrap();
        // Through two trusted hops: the right-most untrusted address.
        assert_eq!(client_of(ip("10.0.0.5"), &h, &trusted), ip("198.51.100.7"));
        assert_eq!(client_of(ip("::1"), &h, &trusted), ip("198.51.100.7"));
        // From anyone else, the header is the client's own words: ignored.
        assert_eq!(client_of(ip("192.0.2.1"), &h, &trusted), ip("192.0.2.1"));
        // A trusted proxy without the header is the client.
        assert_eq!(
            client_of(ip("10.0.0.5"), &HeaderMap::new(), &trusted),
            ip("10.0.0.5")
        );
        assert_eq!(parse_net("10.0.0.0/33"), None);
        assert!(herd_core::config::web::in_net(
            ip("::ffff:10.9.9.9"),
            trusted[0]
        ));
        assert!(!herd_core::config::web::in_net(ip("11.0.0.1"), trusted[0]));
    }

    #[test]
    fn only_our_host_names_pass() {
        let names = vec!["herd.example.com".to_string()];
        for ok in [
            None,
            Some("127.0.0.1:9000"),
            Some("[::1]:9000"),
            Some("[fe80::1]"),
            Some("10.0.0.5"),
            Some("localhost:9000"),
            Some("HERD.example.com."),
            Some("herd.example.com:443"),
        ] {
            assert!(host_ok(&names, ok), "{ok:?}");
        }
        for bad in [
            Some("evil.example"),
            Some("evil.example:9000"),
            Some("[evil]:80"),
            Some("127.0.0.1.evil.example"),
            Some(""),
        ] {
            assert!(!host_ok(&names, bad), "{bad:?}");
        }
    }

    #[test]
    fn only_local_paths_are_followed() {
        assert_eq!(local_path(Some("/\t/evil.example".into())), "/");
        assert_eq!(local_path(Some("/ok path".into())), "/");
        assert_eq!(
            local_path(Some("/alerts?msg=Done%3A".into())),
            "/alerts?msg=Done%3A"
        );
        assert_eq!(local_path(Some("/services".into())), "/services");
        assert_eq!(local_path(Some("//evil.example/".into())), "/");
        assert_eq!(local_path(Some("https://evil.example/".into())), "/");
        assert_eq!(local_path(Some("/\\evil".into())), "/");
        assert_eq!(local_path(None), "/");
    }
}
