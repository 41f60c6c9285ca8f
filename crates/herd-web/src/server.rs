//! The transport: listening sockets, TLS, the accept loop with its caps, one hyper HTTP/1.1
//! connection per client, and what every request passes before the dispatch (`routes.rs`):
//! the `Host` check, the body limits, the client's address, the security headers.
//!
//! A [`Serving`] is one listener and its accept loop. The apply path (`lib.rs`) binds a new
//! one before it retires the old (an address that cannot be bound leaves the old one serving),
//! swaps the TLS acceptor in place for new connections, and on retiring a listener stops
//! accepting at once while its open connections finish their requests and close.

use std::convert::Infallible;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use http_body_util::{BodyExt, Limited};
use hyper::body::Incoming;
use hyper::header::{HeaderMap, HeaderValue};
use hyper::{Method, StatusCode};
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::{TcpListener, TcpSocket};
use tokio::sync::watch;

use crate::error::{TlsError, WebError};
use crate::http::{full, Req, Resp};
use crate::state::{KeySlot, State};

/// Largest request body read (forms and JSON are small).
const MAX_BODY: usize = 64 << 10;
/// Connections served at once unless the daemon asks for fewer (it sizes the cap from its
/// open-files limit); more wait in the kernel's backlog.
pub const MAX_CONNECTIONS: usize = 512;
/// A client has this long to send its request headers, and again for the body.
const HEADER_TIMEOUT: Duration = Duration::from_secs(10);
/// The kernel's queue of connections not yet accepted (tokio's default).
const BACKLOG: u32 = 1024;

/// The TLS acceptor new connections get (none: plain HTTP); replaced in place by a reload.
pub(crate) type Tls = Arc<RwLock<Option<tokio_rustls::TlsAcceptor>>>;

/// Binds `addr` (with `SO_REUSEADDR`, as tokio's `TcpListener::bind`). Needs the runtime's
/// context (the caller enters it), not an async caller: a reload runs on a blocking thread.
pub(crate) fn bind(addr: SocketAddr) -> Result<TcpListener, WebError> {
    let bind = || {
        let s = if addr.is_ipv4() {
            TcpSocket::new_v4()?
        } else {
            TcpSocket::new_v6()?
        };
        s.set_reuseaddr(true)?;
        s.bind(addr)?;
        s.listen(BACKLOG)
    };
    bind().map_err(|source| WebError::Bind { addr, source })
}

/// Whether the dashboard's certificate and key load (`herd config validate`): the very
/// loading the daemon does at start and at a reload.
pub fn check_tls(cert: &std::path::Path, key: &std::path::Path) -> Result<(), TlsError> {
    tls_acceptor(cert, key).map(|_| ())
}

pub(crate) fn tls_acceptor(
    cert: &std::path::Path,
    key: &std::path::Path,
) -> Result<tokio_rustls::TlsAcceptor, TlsError> {
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer};
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(cert)
        .and_then(|it| it.collect())
        .map_err(|source| TlsError::Cert {
            path: cert.to_path_buf(),
            source,
        })?;
    if certs.is_empty() {
        return Err(TlsError::NoCert {
            path: cert.to_path_buf(),
        });
    }
    let key = PrivateKeyDer::from_pem_file(key).map_err(|source| TlsError::Key {
        path: key.to_path_buf(),
        source,
    })?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut cfg = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(TlsError::Provider)?
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .map_err(TlsError::Rejected)?;
    cfg.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(tokio_rustls::TlsAcceptor::from(Arc::new(cfg)))
}

/// One listener being served: its accept loop, and the signal that retires it.
pub(crate) struct Serving {
    /// The configured address (the key a reload compares).
    pub addr: SocketAddr,
    /// Where it listens (the kernel's port when the config said 0).
    pub local: SocketAddr,
    pub tls: Tls,
    listener: Arc<TcpListener>,
    retire: watch::Sender<bool>,
}

impl Serving {
    /// Serves `l` on the current runtime (the caller has entered it).
    pub fn start(st: Arc<State>, addr: SocketAddr, l: TcpListener, tls: Tls) -> Serving {
        let local = l.local_addr().unwrap_or(addr);
        let listener = Arc::new(l);
        let (retire, retired) = watch::channel(false);
        tokio::spawn(accept_loop(st, listener.clone(), tls.clone(), retired));
        Serving {
            addr,
            local,
            tls,
            listener,
            retire,
        }
    }

    /// Stops listening now, before the accept loop has seen anything: new connections are
    /// refused from here on, and the port can be bound again (the socket stays bound, not
    /// listening; with `SO_REUSEADDR` Linux lets another socket bind beside it). This is
    /// `shutdown(2)` of a listening socket, which Linux turns into a close of its queue.
    pub fn stop_listening(&self) {
        if let Err(e) = rustix::net::shutdown(&*self.listener, rustix::net::Shutdown::Both) {
            tracing::debug!(addr = %self.local, error = %e, "web: shutdown of a listener");
        }
    }

    /// Stops accepting at once; the accept loop ends (and the socket closes) as it sees the
    /// signal, and open connections finish the request they are on and close.
    pub fn retire(self) {
        self.stop_listening();
        let _ = self.retire.send(true);
    }
}

async fn accept_loop(
    st: Arc<State>,
    l: Arc<TcpListener>,
    tls: Tls,
    mut retired: watch::Receiver<bool>,
) {
    let mut backoff = herd_core::backoff::Backoff::default();
    loop {
        let permit = tokio::select! {
            _ = retired.changed() => return,
            p = st.connections.take() => match p {
                Some(p) => p,
                None => return,
            },
        };
        let accepted = tokio::select! {
            _ = retired.changed() => return,
            a = l.accept() => a,
        };
        let (stream, peer) = match accepted {
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
        let Some(share) = share(&st, peer) else {
            tracing::debug!(%peer, "web: too many connections from one address");
            continue;
        };
        let _ = stream.set_nodelay(true);
        let acceptor = tls.read().unwrap_or_else(|p| p.into_inner()).clone();
        let (st, retired) = (st.clone(), retired.clone());
        tokio::spawn(async move {
            let _held = (permit, share);
            match acceptor {
                Some(acc) => match tokio::time::timeout(HEADER_TIMEOUT, acc.accept(stream)).await {
                    Ok(Ok(s)) => connection(st, peer, true, TokioIo::new(s), retired).await,
                    Ok(Err(e)) => tracing::debug!(%peer, error = %e, "web: TLS handshake"),
                    Err(_) => tracing::debug!(%peer, "web: TLS handshake timed out"),
                },
                None => connection(st, peer, false, TokioIo::new(stream), retired).await,
            }
        });
    }
}

/// What an accepted connection holds of the per-client cap, given back when it ends.
enum Share {
    /// A trusted proxy carries many clients: it is not held to one client's share.
    Proxy,
    Client(#[allow(dead_code, reason = "held for its drop")] KeySlot<IpAddr>),
}

/// The peer's share of the connections, or none when its client holds its share already.
fn share(st: &State, peer: SocketAddr) -> Option<Share> {
    let proxy = st
        .cfg()
        .trusted_proxies
        .iter()
        .any(|n| herd_core::config::web::in_net(peer.ip(), *n));
    if proxy {
        return Some(Share::Proxy);
    }
    // IPv6 clients by /64, as the login limiter counts them: one host usually has the whole
    // /64, and counting each of its addresses would give it 2^64 shares.
    st.per_client
        .take(&herd_core::addr::client_key(peer.ip()))
        .map(Share::Client)
}

async fn connection<I>(
    st: Arc<State>,
    peer: SocketAddr,
    tls: bool,
    io: I,
    mut retired: watch::Receiver<bool>,
) where
    I: hyper::rt::Read + hyper::rt::Write + Unpin + Send + 'static,
{
    let svc = hyper::service::service_fn(move |req| {
        let st = st.clone();
        async move { Ok::<_, Infallible>(handle(st, peer, tls, req).await) }
    });
    let conn = hyper::server::conn::http1::Builder::new()
        .timer(TokioTimer::new())
        .header_read_timeout(HEADER_TIMEOUT)
        .max_buf_size(64 << 10)
        .serve_connection(io, svc);
    tokio::pin!(conn);
    let done = tokio::select! {
        r = conn.as_mut() => Some(r),
        _ = retired.wait_for(|r| *r) => None,
    };
    let r = match done {
        Some(r) => r,
        None => {
            // The listener is retired: the request in progress finishes, then it closes.
            conn.as_mut().graceful_shutdown();
            conn.await
        }
    };
    if let Err(e) = r {
        tracing::debug!(%peer, error = %e, "web: connection");
    }
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

fn security_headers(tls: bool, r: &mut Resp) {
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
    if tls {
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

async fn handle(
    st: Arc<State>,
    peer: SocketAddr,
    tls: bool,
    req: hyper::Request<Incoming>,
) -> Resp {
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
                let req = request(parts, b.to_bytes(), peer, tls, &cfg.trusted_proxies);
                crate::routes::route(&st, req).await
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
    security_headers(tls, &mut r);
    r
}

/// The request as the handlers see it: the client behind a trusted proxy, HTTPS as ours or as
/// the proxy says, HEAD as GET.
fn request(
    parts: hyper::http::request::Parts,
    body: hyper::body::Bytes,
    peer: SocketAddr,
    tls: bool,
    trusted: &[(IpAddr, u8)],
) -> Req {
    let client = client_of(peer.ip(), &parts.headers, trusted);
    let via_proxy = client != peer.ip().to_canonical()
        || trusted
            .iter()
            .any(|n| herd_core::config::web::in_net(peer.ip(), *n));
    let secure = tls
        || (via_proxy
            && parts
                .headers
                .get("x-forwarded-proto")
                .and_then(|v| v.to_str().ok())
                .is_some_and(|p| p.trim().eq_ignore_ascii_case("https")));
    Req {
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
        body,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
}
