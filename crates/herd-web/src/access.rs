//! Who may do what, shared by the API and the pages: the session a request's cookie names, a
//! login (rate limit, password check, new session), a logout, and the checks every state
//! change passes (an admin, the same origin, the CSRF token), with refusals audited.

use std::net::IpAddr;
use std::sync::Arc;
use std::time::Instant;

use herd_core::config::web::WebRole;
use hyper::StatusCode;

use crate::auth::Session;
use crate::http::{cookie_name, error, Req, Resp};
use crate::state::State;

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

/// The checks every state change passes: an admin session, a same-origin request and the
/// session's CSRF token (header or form field, compared in constant time).
pub fn may_act(req: &Req, s: &Session, token: Option<&str>) -> Result<(), Resp> {
    if s.role != WebRole::Admin {
        return Err(error(
            StatusCode::FORBIDDEN,
            "forbidden",
            format!("{} is read-only", s.user),
        ));
    }
    if !req.same_origin() {
        return Err(error(
            StatusCode::FORBIDDEN,
            "csrf",
            "cross-origin request refused",
        ));
    }
    match token {
        Some(t) if crate::auth::same(t, &s.csrf) => Ok(()),
        _ => Err(error(
            StatusCode::FORBIDDEN,
            "csrf",
            "missing or wrong CSRF token (send the session's token as X-CSRF-Token)",
        )),
    }
}

/// Ends a session (its CSRF token checked by the caller) and audits it.
pub fn logout(st: &State, token: &str, s: &Session, from: IpAddr) {
    st.sessions
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .close(token);
    st.audit.record(
        &s.user,
        s.role.as_str(),
        from,
        "logout",
        String::new(),
        Ok(()),
    );
}

/// [`may_act`], and a refusal goes to the audit log (who tried what, and why not).
pub fn may_act_audited(
    st: &State,
    req: &Req,
    s: &Session,
    token: Option<&str>,
    what: &str,
) -> Result<(), Resp> {
    may_act(req, s, token).inspect_err(|_| {
        let why = if s.role != WebRole::Admin {
            "read-only user"
        } else if !req.same_origin() {
            "cross-origin request"
        } else {
            "missing or wrong CSRF token"
        };
        st.audit.record(
            &s.user,
            s.role.as_str(),
            req.ip(),
            "refused",
            what.to_string(),
            Err(why.to_string()),
        );
    })
}

/// Logout changes state too: the CSRF token is needed, whatever the role.
pub fn may_act_any_role(req: &Req, s: &Session) -> Result<(), Resp> {
    let mut admin = s.clone();
    admin.role = WebRole::Admin;
    may_act(req, &admin, req.header("x-csrf-token"))
}

/// Outcome of a password check, for the API and the login form alike.
pub enum LoginOutcome {
    Ok { token: String, session: Session },
    Refused,
    Wait(std::time::Duration),
}

/// Checks a login: rate limit first (the attempt counts from here), then the password (at
/// most two argon2 checks at once; an unknown user is checked against a dummy hash, so both
/// take as long), then opens a session. Names that are not users are not recorded anywhere
/// (people type passwords into the user field).
pub async fn check_login(st: &Arc<State>, ip: IpAddr, user: &str, pw: &str) -> LoginOutcome {
    let cfg = st.cfg();
    let found = cfg.users.iter().find(|u| u.name == user).cloned();
    let allowed = st
        .limiter
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .attempt(ip, found.as_ref().map(|u| u.name.as_str()), Instant::now());
    if let Err(wait) = allowed {
        // Counted, not audited: a flood of attempts must not flood the audit log.
        st.counters.login("limited");
        tracing::debug!(%ip, "web: login rate-limited");
        return LoginOutcome::Wait(wait);
    }
    let hash = found.as_ref().map(|u| u.password.clone());
    // The permit goes with the check: a client that leaves cannot free it while argon2 runs.
    let ok = match st.verifying.clone().acquire_owned().await {
        Ok(permit) => {
            let (pw, st) = (pw.to_string(), st.clone());
            tokio::task::spawn_blocking(move || {
                let _permit = permit;
                let hash = hash.unwrap_or_else(|| st.dummy_hash());
                crate::auth::verify_password(&pw, &hash)
            })
            .await
            .unwrap_or(false)
        }
        Err(_) => false,
    };
    match found {
        Some(u) if ok => {
            st.limiter
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .succeeded(ip, &u.name, Instant::now());
            let (token, session) = st.sessions.lock().unwrap_or_else(|p| p.into_inner()).open(
                &u,
                Instant::now(),
                cfg.session_timeout,
            );
            st.counters.login("ok");
            st.audit
                .record(&u.name, u.role.as_str(), ip, "login", String::new(), Ok(()));
            LoginOutcome::Ok { token, session }
        }
        Some(u) => {
            st.counters.login("failed");
            st.audit.record(
                &u.name,
                "",
                ip,
                "login-failed",
                String::new(),
                Err("wrong password".into()),
            );
            LoginOutcome::Refused
        }
        None => {
            st.counters.login("failed");
            st.audit.record(
                "(unknown)",
                "",
                ip,
                "login-failed",
                String::new(),
                Err("no such user".into()),
            );
            LoginOutcome::Refused
        }
    }
}
