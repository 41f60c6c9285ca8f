//! The wire as the handlers see it: one request with its body read ([`Req`]), responses
//! ([`Resp`]) and their helpers, cookies, forms, the JSON error body of the API. No handler
//! and no server state here: the transport is `server.rs`, the dispatch `routes.rs`.

use std::convert::Infallible;
use std::net::IpAddr;
use std::pin::Pin;
use std::task::{Context, Poll};

use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt, Full};
use hyper::body::{Bytes, Frame};
use hyper::header::{HeaderMap, HeaderValue};
use hyper::{Method, StatusCode};
use serde::Serialize;

pub type Body = BoxBody<Bytes, Infallible>;
pub type Resp = hyper::Response<Body>;

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

/// An error answer of the API (also `Response`'s `error` variant).
#[derive(Debug, Serialize, schemars::JsonSchema)]
pub struct ErrorBody {
    result: String,
    kind: String,
    message: String,
}

/// The API's JSON error answer.
pub fn error(status: StatusCode, kind: &str, msg: impl Into<String>) -> Resp {
    json(
        status,
        &ErrorBody {
            result: "error".into(),
            kind: kind.into(),
            message: msg.into(),
        },
    )
}

pub fn unauthorized() -> Resp {
    with_header(
        error(
            StatusCode::UNAUTHORIZED,
            "unauthorized",
            "log in first (POST /api/v1/login)",
        ),
        "www-authenticate",
        "Cookie realm=\"herd\"",
    )
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
