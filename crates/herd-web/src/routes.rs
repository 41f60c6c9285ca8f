//! The dispatch: which handler answers a path. The transport (`server.rs`) calls [`route`];
//! the handlers (`api.rs`, `pages.rs`, `metrics.rs`) know neither the transport nor each
//! other.

use std::sync::Arc;

use hyper::header::HeaderValue;
use hyper::{Method, StatusCode};

use crate::http::{full, html, with_header, Req, Resp};
use crate::pages::{self, Page};
use crate::state::State;
use crate::{api, metrics};

pub(crate) async fn route(st: &Arc<State>, req: Req) -> Resp {
    if req.path.starts_with("/api/") {
        return api::route(st, req).await;
    }
    match (req.method.clone(), req.path.as_str()) {
        (Method::GET, "/static/app.js") => asset("text/javascript", pages::APP_JS),
        (Method::GET, "/static/app.css") => asset("text/css", pages::APP_CSS),
        (Method::GET, "/metrics") => metrics::serve(st, &req).await,
        (Method::GET, "/login") => pages::login_page(st, &req, None),
        (Method::POST, "/login") => pages::login_form(st, &req).await,
        (Method::POST, "/logout") => pages::logout_form(st, &req),
        (Method::POST, "/action") => pages::action_form(st, &req).await,
        (Method::GET, "/events") => pages::events(st, &req).await,
        (Method::GET, p) if Page::from_path(p).is_some() => pages::page(st, &req).await,
        (Method::GET, _) => html(
            StatusCode::NOT_FOUND,
            pages::message_page("Not found", "There is no such page."),
        ),
        (_, p) => not_allowed(p),
    }
}

/// A path served with another method: 405 with `Allow`; an unknown path: 404.
fn not_allowed(path: &str) -> Resp {
    let allow = match path {
        "/login" => "GET, POST",
        "/logout" | "/action" => "POST",
        "/metrics" | "/events" | "/static/app.js" | "/static/app.css" => "GET",
        p if Page::from_path(p).is_some() => "GET",
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

fn asset(ctype: &str, body: &'static str) -> Resp {
    let mut r = full(StatusCode::OK, ctype, body);
    r.headers_mut().insert(
        "cache-control",
        HeaderValue::from_static("public, max-age=300"),
    );
    r
}
