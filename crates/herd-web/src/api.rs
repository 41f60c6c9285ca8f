//! `/api/v1`: the HTTP JSON API. One table ([`ROUTES`]) routes the requests and generates the
//! OpenAPI document (`GET /api/v1/openapi.json`), with the schemas of `herd_core::api`'s types
//! derived from the code: what is documented is what is served.
//!
//! Access: `public` routes need nothing; `read` routes a session (cookie from `POST
//! /api/v1/login`; without one, 401); `admin` routes an admin session (a read-only user gets
//! 403) and the session's CSRF token in the `X-CSRF-Token` header (without it, 403). Answers
//! are the control socket's `Response` values; errors map to HTTP statuses by kind.

use std::net::SocketAddr;
use std::sync::Arc;

use herd_core::api::{AdminState, ErrorKind, Request, Response};
use herd_core::model::ServiceKey;
use hyper::{Method, StatusCode};
use schemars::{JsonSchema, Schema, SchemaGenerator};
use serde::{Deserialize, Serialize};
use serde_json::{json, Map, Value};

use crate::access::{
    check_login, logout, may_act_any_role, may_act_audited, session, LoginOutcome,
};
use crate::actions::{perform, service_key, Action};
use crate::auth::Session;
use crate::http::{self, error, unauthorized, ErrorBody, Req, Resp};
use crate::state::State;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    Public,
    Read,
    Admin,
}

type Params = Vec<(&'static str, String)>;
type Bad = (StatusCode, String);

#[derive(Clone, Copy)]
enum Handler {
    /// A read: the request to make of the backend.
    Read(fn(&Params, &Req) -> Result<Request, Bad>),
    /// An action: parsed from the path and the JSON body.
    Act(fn(&Params, &[u8]) -> Result<Action, Bad>),
    Login,
    Logout,
    Session,
    Audit,
    OpenApi,
    /// Any request of the control API.
    Generic,
}

struct Route {
    method: Method,
    path: &'static str,
    summary: &'static str,
    access: Access,
    body: Option<fn(&mut SchemaGenerator) -> Schema>,
    reply: fn(&mut SchemaGenerator) -> Schema,
    handler: Handler,
}

fn schema<T: JsonSchema>(g: &mut SchemaGenerator) -> Schema {
    g.subschema_for::<T>()
}

/// `POST /api/v1/login`.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct LoginBody {
    pub user: String,
    pub password: String,
}

/// Who is logged in, and the token every action must send as `X-CSRF-Token`.
#[derive(Debug, Serialize, JsonSchema)]
#[serde(rename_all = "kebab-case")]
pub struct SessionInfo {
    pub user: String,
    pub role: herd_core::config::web::WebRole,
    pub csrf_token: String,
}

#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
struct StateBody {
    state: AdminState,
}

#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
struct WeightBody {
    /// 0..=65535; 0 quiesces.
    weight: u32,
}

#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
struct SilenceBody {
    #[serde(default)]
    check: Option<String>,
    #[serde(default)]
    target: Option<String>,
    /// Seconds from now; absent = until lifted.
    #[serde(default)]
    secs: Option<u64>,
    /// Also end when every target it covers is up again.
    #[serde(default)]
    until_recovery: bool,
    #[serde(default)]
    reason: String,
}

#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
struct AckBody {
    check: String,
    #[serde(default)]
    target: Option<String>,
    #[serde(default)]
    reason: String,
}

#[derive(Debug, Default, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
struct InstancesBody {
    /// VRRP instance names; empty = all.
    #[serde(default)]
    instances: Vec<String>,
}

fn bad(msg: impl Into<String>) -> Bad {
    (StatusCode::BAD_REQUEST, msg.into())
}

fn body<T: serde::de::DeserializeOwned>(b: &[u8]) -> Result<T, Bad> {
    let b = if b.iter().all(u8::is_ascii_whitespace) {
        b"{}".as_slice()
    } else {
        b
    };
    serde_json::from_slice(b).map_err(|e| bad(format!("bad JSON body: {e}")))
}

fn param<'a>(p: &'a Params, name: &str) -> &'a str {
    p.iter()
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v.as_str())
        .unwrap_or("")
}

fn real_of(p: &Params) -> Result<(ServiceKey, SocketAddr), Bad> {
    let service = service_key(param(p, "protocol"), param(p, "vip")).map_err(bad)?;
    let real = herd_core::config::parse_real_addr(param(p, "real"), service.address.port())
        .map_err(|e| bad(format!("real server {:?}: {e}", param(p, "real"))))?;
    Ok((service, real))
}

fn limit(req: &Req) -> Result<Option<usize>, Bad> {
    req.param("limit")
        .map(|l| {
            l.parse()
                .map_err(|_| bad(format!("limit {l:?} is not a number")))
        })
        .transpose()
}

static ROUTES: &[Route] = &[
    Route {
        method: Method::POST,
        path: "/api/v1/login",
        summary: "Log in: sets the session cookie and returns the CSRF token. Failed attempts are rate-limited per client address and per user (429 with Retry-After).",
        access: Access::Public,
        body: Some(schema::<LoginBody>),
        reply: schema::<SessionInfo>,
        handler: Handler::Login,
    },
    Route {
        method: Method::POST,
        path: "/api/v1/logout",
        summary: "End the session.",
        access: Access::Read,
        body: None,
        reply: schema::<Response>,
        handler: Handler::Logout,
    },
    Route {
        method: Method::GET,
        path: "/api/v1/session",
        summary: "The session's user, role and CSRF token.",
        access: Access::Read,
        body: None,
        reply: schema::<SessionInfo>,
        handler: Handler::Session,
    },
    Route {
        method: Method::GET,
        path: "/api/v1/openapi.json",
        summary: "This document.",
        access: Access::Public,
        body: None,
        reply: |_| schemars::json_schema!({"type": "object", "description": "An OpenAPI 3.0 document"}),
        handler: Handler::OpenApi,
    },
    Route {
        method: Method::GET,
        path: "/api/v1/status",
        summary: "The daemon: version, uptime, data plane, reloads.",
        access: Access::Read,
        body: None,
        reply: schema::<Response>,
        handler: Handler::Read(|_, _| Ok(Request::Status)),
    },
    Route {
        method: Method::GET,
        path: "/api/v1/services",
        summary: "Virtual services with their real servers, counters and rates (ipvsadm -L -n --stats --rate).",
        access: Access::Read,
        body: None,
        reply: schema::<Response>,
        handler: Handler::Read(|_, _| Ok(Request::List { service: None })),
    },
    Route {
        method: Method::GET,
        path: "/api/v1/connections",
        summary: "The connection table (ipvsadm -L -c).",
        access: Access::Read,
        body: None,
        reply: schema::<Response>,
        handler: Handler::Read(|_, _| Ok(Request::Connections)),
    },
    Route {
        method: Method::GET,
        path: "/api/v1/health",
        summary: "Health checks with their targets' states and last results, and the silences in force.",
        access: Access::Read,
        body: None,
        reply: schema::<Response>,
        handler: Handler::Read(|_, _| Ok(Request::HealthList)),
    },
    Route {
        method: Method::GET,
        path: "/api/v1/health/history",
        summary: "Recent state changes and alerts, newest last (?limit=N).",
        access: Access::Read,
        body: None,
        reply: schema::<Response>,
        handler: Handler::Read(|_, r| Ok(Request::HealthHistory { limit: limit(r)? })),
    },
    Route {
        method: Method::GET,
        path: "/api/v1/health/downtime",
        summary: "Past outages, newest last (?limit=N): mon's downtime log.",
        access: Access::Read,
        body: None,
        reply: schema::<Response>,
        handler: Handler::Read(|_, r| Ok(Request::HealthDowntime { limit: limit(r)? })),
    },
    Route {
        method: Method::GET,
        path: "/api/v1/nodes",
        summary: "The nodes of [nodes] and how their agents answered the last ping (version, uptime, load).",
        access: Access::Read,
        body: None,
        reply: schema::<Response>,
        handler: Handler::Read(|_, _| Ok(Request::Nodes)),
    },
    Route {
        method: Method::GET,
        path: "/api/v1/ha",
        summary: "VRRP instances: role, priority, master, transitions.",
        access: Access::Read,
        body: None,
        reply: schema::<Response>,
        handler: Handler::Read(|_, _| Ok(Request::HaStatus)),
    },
    Route {
        method: Method::GET,
        path: "/api/v1/audit",
        summary: "Recent logins and actions through the web, newest last.",
        access: Access::Read,
        body: None,
        reply: schema::<Vec<crate::audit::AuditEntry>>,
        handler: Handler::Audit,
    },
    Route {
        method: Method::POST,
        path: "/api/v1/services/{protocol}/{vip}/reals/{real}/state",
        summary: "Drain, disable or enable a real server (audited).",
        access: Access::Admin,
        body: Some(schema::<StateBody>),
        reply: schema::<Response>,
        handler: Handler::Act(|p, b| {
            let (service, real) = real_of(p)?;
            let StateBody { state } = body(b)?;
            Ok(Action::RealState {
                service,
                real,
                state,
            })
        }),
    },
    Route {
        method: Method::POST,
        path: "/api/v1/services/{protocol}/{vip}/reals/{real}/weight",
        summary: "Set a real server's weight (audited).",
        access: Access::Admin,
        body: Some(schema::<WeightBody>),
        reply: schema::<Response>,
        handler: Handler::Act(|p, b| {
            let (service, real) = real_of(p)?;
            let WeightBody { weight } = body(b)?;
            Ok(Action::Weight {
                service,
                real,
                weight,
            })
        }),
    },
    Route {
        method: Method::POST,
        path: "/api/v1/silences",
        summary: "Hold the alerts of a check and/or a target (audited).",
        access: Access::Admin,
        body: Some(schema::<SilenceBody>),
        reply: schema::<Response>,
        handler: Handler::Act(|_, b| {
            let s: SilenceBody = body(b)?;
            Ok(Action::Silence {
                check: s.check,
                target: s.target,
                secs: s.secs,
                until_recovery: s.until_recovery,
                reason: s.reason,
            })
        }),
    },
    Route {
        method: Method::DELETE,
        path: "/api/v1/silences/{id}",
        summary: "Lift a silence (audited).",
        access: Access::Admin,
        body: None,
        reply: schema::<Response>,
        handler: Handler::Act(|p, _| {
            let id = param(p, "id");
            Ok(Action::Unsilence {
                id: id
                    .parse()
                    .map_err(|_| bad(format!("silence {id:?} is not a number")))?,
            })
        }),
    },
    Route {
        method: Method::POST,
        path: "/api/v1/alerts/ack",
        summary: "Acknowledge a failing check (or one target), as mon's ack: its alerts are held until everything it covers is up again, or the silence is lifted (DELETE /api/v1/silences/{id}) (audited).",
        access: Access::Admin,
        body: Some(schema::<AckBody>),
        reply: schema::<Response>,
        handler: Handler::Act(|_, b| {
            let a: AckBody = body(b)?;
            Ok(Action::Ack {
                check: a.check,
                target: a.target,
                reason: a.reason,
            })
        }),
    },
    Route {
        method: Method::POST,
        path: "/api/v1/ha/failover",
        summary: "Planned VRRP hand-over: the named master instances (all if none) resign and stand by (audited).",
        access: Access::Admin,
        body: Some(schema::<InstancesBody>),
        reply: schema::<Response>,
        handler: Handler::Act(|_, b| {
            let InstancesBody { instances } = body(b)?;
            Ok(Action::Failover { instances })
        }),
    },
    Route {
        method: Method::POST,
        path: "/api/v1/ha/resume",
        summary: "End a standby: the instances rank by their priority again (audited).",
        access: Access::Admin,
        body: Some(schema::<InstancesBody>),
        reply: schema::<Response>,
        handler: Handler::Act(|_, b| {
            let InstancesBody { instances } = body(b)?;
            Ok(Action::Resume { instances })
        }),
    },
    Route {
        method: Method::POST,
        path: "/api/v1/reload",
        summary: "Re-read the config file and apply the difference (audited).",
        access: Access::Admin,
        body: None,
        reply: schema::<Response>,
        handler: Handler::Act(|_, _| Ok(Action::Reload)),
    },
    Route {
        method: Method::POST,
        path: "/api/v1/request",
        summary: "Any request of the control API (the CLI's), as JSON. Reads need a session; everything else an admin and the CSRF token (audited).",
        access: Access::Read,
        body: Some(schema::<Request>),
        reply: schema::<Response>,
        handler: Handler::Generic,
    },
];

/// Matches `path` against a template with `{name}` segments.
fn matches(template: &'static str, path: &str) -> Option<Params> {
    let mut t = template.split('/');
    let mut p = path.split('/');
    let mut out = Vec::new();
    loop {
        match (t.next(), p.next()) {
            (None, None) => return Some(out),
            (Some(ts), Some(ps)) => {
                if let Some(name) = ts.strip_prefix('{').and_then(|n| n.strip_suffix('}')) {
                    if ps.is_empty() {
                        return None;
                    }
                    out.push((name, http::percent_decode(&ps.replace('+', "%2B"))));
                } else if ts != ps {
                    return None;
                }
            }
            _ => return None,
        }
    }
}

fn status_of(r: &Response) -> StatusCode {
    match r {
        Response::Error(e) => match e.kind {
            ErrorKind::Invalid | ErrorKind::Config => StatusCode::BAD_REQUEST,
            ErrorKind::NoService | ErrorKind::NoReal => StatusCode::NOT_FOUND,
            ErrorKind::ServiceExists | ErrorKind::RealExists | ErrorKind::Bind => {
                StatusCode::CONFLICT
            }
            ErrorKind::Internal => StatusCode::INTERNAL_SERVER_ERROR,
        },
        _ => StatusCode::OK,
    }
}

pub async fn route(st: &Arc<State>, req: Req) -> Resp {
    let mut allowed = Vec::new();
    let found = ROUTES.iter().find_map(|r| {
        let p = matches(r.path, &req.path)?;
        if r.method == req.method {
            Some((r, p))
        } else {
            allowed.push(r.method.as_str());
            None
        }
    });
    let Some((r, params)) = found else {
        if allowed.is_empty() {
            return error(
                StatusCode::NOT_FOUND,
                "not-found",
                format!("no route {}", req.path),
            );
        }
        return http::with_header(
            error(
                StatusCode::METHOD_NOT_ALLOWED,
                "method",
                "method not allowed",
            ),
            "allow",
            &allowed.join(", "),
        );
    };
    match r.handler {
        Handler::Login => return login(st, &req).await,
        Handler::OpenApi => return http::json(StatusCode::OK, &openapi()),
        _ => {}
    }
    let Some((token, s)) = session(st, &req) else {
        return unauthorized();
    };
    match r.handler {
        Handler::Read(f) => match f(&params, &req) {
            Ok(q) => reply(st.call(q).await),
            Err((code, msg)) => error(code, "invalid", msg),
        },
        Handler::Act(f) => {
            let what = format!("{} {}", req.method, req.path);
            if let Err(resp) = may_act_audited(st, &req, &s, req.header("x-csrf-token"), &what) {
                return resp;
            }
            match f(&params, &req.body) {
                Ok(a) => reply(perform(st, &s, req.ip(), a).await),
                Err((code, msg)) => error(code, "invalid", msg),
            }
        }
        Handler::Generic => {
            let q: Request = match body(&req.body) {
                Ok(q) => q,
                Err((code, msg)) => return error(code, "invalid", msg),
            };
            let a = Action::Request(q);
            if !a.is_read() {
                let what = a.describe();
                if let Err(resp) = may_act_audited(st, &req, &s, req.header("x-csrf-token"), &what)
                {
                    return resp;
                }
            }
            reply(perform(st, &s, req.ip(), a).await)
        }
        Handler::Logout => {
            if let Err(resp) = may_act_any_role(&req, &s) {
                return resp;
            }
            logout(st, &token, &s, req.ip());
            http::with_header(
                http::json(StatusCode::OK, &Response::Ok),
                "set-cookie",
                &http::clear_cookie(&req),
            )
        }
        Handler::Session => http::json(StatusCode::OK, &info(&s)),
        Handler::Audit => http::json(StatusCode::OK, &st.audit.recent()),
        Handler::Login | Handler::OpenApi => unreachable_route(),
    }
}

fn unreachable_route() -> Resp {
    error(
        StatusCode::INTERNAL_SERVER_ERROR,
        "internal",
        "unhandled route",
    )
}

fn info(s: &Session) -> SessionInfo {
    SessionInfo {
        user: s.user.clone(),
        role: s.role,
        csrf_token: s.csrf.clone(),
    }
}

fn reply(r: Response) -> Resp {
    http::json(status_of(&r), &r)
}

async fn login(st: &Arc<State>, req: &Req) -> Resp {
    if !req.same_origin() {
        return error(StatusCode::FORBIDDEN, "csrf", "cross-origin login refused");
    }
    let b: LoginBody = match body(&req.body) {
        Ok(b) => b,
        Err((code, msg)) => return error(code, "invalid", msg),
    };
    match check_login(st, req.ip(), &b.user, &b.password).await {
        LoginOutcome::Ok { token, session } => http::with_header(
            http::json(StatusCode::OK, &info(&session)),
            "set-cookie",
            &http::session_cookie(req, &token),
        ),
        LoginOutcome::Refused => error(
            StatusCode::UNAUTHORIZED,
            "unauthorized",
            "wrong user name or password",
        ),
        LoginOutcome::Wait(w) => http::with_header(
            error(
                StatusCode::TOO_MANY_REQUESTS,
                "rate-limited",
                format!(
                    "too many failed logins; try again in {} s",
                    w.as_secs().max(1)
                ),
            ),
            "retry-after",
            &w.as_secs().max(1).to_string(),
        ),
    }
}

/// The OpenAPI 3.0 document of [`ROUTES`].
pub fn openapi() -> Value {
    let mut g = schemars::generate::SchemaSettings::openapi3().into_generator();
    let mut paths = Map::new();
    for r in ROUTES {
        let params: Vec<Value> = r
            .path
            .split('/')
            .filter_map(|s| s.strip_prefix('{').and_then(|n| n.strip_suffix('}')))
            .map(|n| {
                json!({"name": n, "in": "path", "required": true, "schema": {"type": "string"},
                "description": match n {
                    "protocol" => "tcp or udp",
                    "vip" => "the virtual service's address:port (IPv6 in brackets)",
                    "real" => "the real server's address[:port]",
                    _ => "",
                }})
            })
            .collect();
        let mut op = json!({
            "summary": r.summary,
            "operationId": format!("{}{}", r.method.as_str().to_lowercase(), r.path.replace(['/', '{', '}', '.'], "_")),
            "responses": {
                "200": {"description": "OK", "content": {"application/json": {"schema": (r.reply)(&mut g)}}},
                "default": {"description": "An error", "content": {"application/json": {"schema": schema::<ErrorBody>(&mut g)}}}
            },
            "x-herd-access": match r.access { Access::Public => "public", Access::Read => "read", Access::Admin => "admin" },
        });
        if !params.is_empty() {
            op["parameters"] = Value::Array(params);
        }
        if let Some(b) = r.body {
            op["requestBody"] =
                json!({"required": true, "content": {"application/json": {"schema": b(&mut g)}}});
        }
        match r.access {
            Access::Public => op["security"] = json!([]),
            Access::Read => op["security"] = json!([{"session": []}]),
            Access::Admin => op["security"] = json!([{"session": [], "csrf": []}]),
        }
        let entry = paths
            .entry(r.path.to_string())
            .or_insert_with(|| Value::Object(Map::new()));
        entry[r.method.as_str().to_lowercase()] = op;
    }
    json!({
        "openapi": "3.0.3",
        "info": {
            "title": "herd",
            "version": env!("CARGO_PKG_VERSION"),
            "description": "The herd daemon's HTTP API: the same requests and responses as the control socket (herd_core::api)."
        },
        "paths": paths,
        "components": {
            "schemas": g.take_definitions(true),
            "securitySchemes": {
                "session": {"type": "apiKey", "in": "cookie", "name": http::SESSION_COOKIE,
                            "description": format!("Set by POST /api/v1/login; named {} when the dashboard serves TLS", http::SESSION_COOKIE_TLS)},
                "csrf": {"type": "apiKey", "in": "header", "name": "X-CSRF-Token"}
            }
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn templates_match_and_capture() {
        let p = matches(
            "/api/v1/services/{protocol}/{vip}/reals/{real}/state",
            "/api/v1/services/tcp/%5B%3A%3A1%5D%3A80/reals/[::2]:80/state",
        )
        .unwrap();
        assert_eq!(param(&p, "vip"), "[::1]:80");
        assert_eq!(param(&p, "real"), "[::2]:80");
        assert!(matches("/api/v1/ha", "/api/v1/ha/").is_none());
        assert!(matches("/api/v1/silences/{id}", "/api/v1/silences/").is_none());
        let (k, r) = real_of(&p).unwrap();
        assert_eq!(k.address.to_string(), "[::1]:80");
        assert_eq!(r.to_string(), "[::2]:80");
    }

    #[test]
    fn every_route_is_documented_with_resolvable_schemas() {
        let doc = openapi();
        let text = doc.to_string();
        for r in ROUTES {
            assert!(
                doc["paths"][r.path][r.method.as_str().to_lowercase()].is_object(),
                "{} {}",
                r.method,
                r.path
            );
        }
        // Every reference points at a schema in the document.
        let schemas = doc["components"]["schemas"].as_object().unwrap();
        for (i, _) in text.match_indices("#/components/schemas/") {
            let name: String = text[i + 21..].chars().take_while(|c| *c != '"').collect();
            assert!(schemas.contains_key(&name), "dangling reference {name}");
        }
        assert!(schemas.contains_key("Request") && schemas.contains_key("Response"));
        // OpenAPI 3.0 has no boolean schemas (JSON Schema's `true`): every schema is an object.
        fn objects_only(v: &Value, path: &str) {
            match v {
                Value::Object(m) => {
                    for (k, x) in m {
                        let p = format!("{path}/{k}");
                        let is_schema = matches!(k.as_str(), "schema" | "items" | "not")
                            || path.ends_with("/properties")
                            || path.ends_with("/schemas");
                        assert!(
                            !is_schema || x.is_object(),
                            "{p} is not a schema object: {x}"
                        );
                        objects_only(x, &p);
                    }
                }
                Value::Array(a) => {
                    for (i, x) in a.iter().enumerate() {
                        if ["allOf", "anyOf", "oneOf"]
                            .iter()
                            .any(|k| path.ends_with(k))
                        {
                            assert!(x.is_object(), "{path}/{i} is not a schema object");
                        }
                        objects_only(x, &format!("{path}/{i}"));
                    }
                }
                _ => {}
            }
        }
        objects_only(&doc, "");
        assert!(schemas.contains_key("AdminState"));
    }
}
