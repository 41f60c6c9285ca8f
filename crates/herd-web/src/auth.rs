//! Logins, sessions, CSRF tokens and the login rate limiter.
//!
//! Passwords are argon2id hashes in the config (`herd user add` makes them); a login that
//! succeeds gets a session: a 256-bit random token in an `HttpOnly`, `SameSite=Strict` cookie
//! (`Secure` under TLS), and a CSRF token of its own that every action must carry. A session
//! ends after `web.session-timeout` without a request, at logout, or when its user leaves the
//! config or changes role (checked on every request, so a reload takes effect at once).

use std::collections::HashMap;
use std::net::IpAddr;
use std::time::{Duration, Instant};

use argon2::password_hash::phc::PasswordHash;
use argon2::password_hash::{PasswordHasher, PasswordVerifier};
use argon2::Argon2;
use herd_core::addr::client_key;
use herd_core::config::web::{WebRole, WebUser};
use subtle::ConstantTimeEq;

pub use crate::error::HashError;

/// Failed logins one client address may make within [`WINDOW`] before it waits.
pub const MAX_FAILS_PER_ADDR: usize = 5;
/// Failed logins for one user name within [`WINDOW`], from anywhere, before it waits.
pub const MAX_FAILS_PER_USER: usize = 10;
pub const WINDOW: Duration = Duration::from_secs(60);
/// Sessions held at most; the oldest idle one goes first.
const MAX_SESSIONS: usize = 10_000;

/// 32 random bytes as 64 hex digits.
pub fn token() -> String {
    let mut b = [0u8; 32];
    // The kernel's CSPRNG; failing it leaves nothing safe to do.
    getrandom::fill(&mut b).expect("getrandom");
    hex(&b)
}

pub fn hex(b: &[u8]) -> String {
    use std::fmt::Write;
    let mut s = String::with_capacity(b.len() * 2);
    for x in b {
        let _ = write!(s, "{x:02x}");
    }
    s
}

/// Equal without telling, through timing, how much of it was.
pub fn same(a: &str, b: &str) -> bool {
    a.len() == b.len() && bool::from(a.as_bytes().ct_eq(b.as_bytes()))
}

/// An argon2id hash of `password` with a random salt and the crate's defaults (OWASP's
/// minimum: 19 MiB, 2 passes), in PHC form.
pub fn hash_password(password: &str) -> Result<String, HashError> {
    Argon2::default()
        .hash_password(password.as_bytes())
        .map(|h| h.to_string())
        .map_err(HashError)
}

/// Checks a password against a PHC string. Slow on purpose (tens of milliseconds).
pub fn verify_password(password: &str, phc: &str) -> bool {
    match PasswordHash::new(phc) {
        Ok(h) => Argon2::default()
            .verify_password(password.as_bytes(), &h)
            .is_ok(),
        Err(_) => false,
    }
}

/// A session ends this long after its login, however busy it is.
pub const MAX_SESSION_AGE: Duration = Duration::from_secs(12 * 3600);
/// An address that logged in successfully is not held back by a user's failures (someone
/// else guessing that user's password) for this long.
const TRUSTED_FOR: Duration = Duration::from_secs(24 * 3600);
/// Addresses remembered at most (failures or trust); the oldest go first.
const MAX_ADDRS: usize = 100_000;

#[derive(Debug, Clone)]
pub struct Session {
    pub user: String,
    pub role: WebRole,
    pub csrf: String,
    /// The password hash at login: a new password (and a reload) ends the session.
    phc: String,
    created: Instant,
    last_seen: Instant,
}

#[derive(Debug, Default)]
pub struct Sessions {
    by_token: HashMap<String, Session>,
}

impl Sessions {
    /// A new session for a user who just logged in; returns its token.
    pub fn open(&mut self, user: &WebUser, now: Instant, idle: Duration) -> (String, Session) {
        self.by_token.retain(|_, s| alive(s, now, idle));
        if self.by_token.len() >= MAX_SESSIONS {
            if let Some(oldest) = self
                .by_token
                .iter()
                .min_by_key(|(_, s)| s.last_seen)
                .map(|(t, _)| t.clone())
            {
                self.by_token.remove(&oldest);
            }
        }
        let s = Session {
            user: user.name.clone(),
            role: user.role,
            csrf: token(),
            phc: user.password.clone(),
            created: now,
            last_seen: now,
        };
        let t = token();
        self.by_token.insert(t.clone(), s.clone());
        (t, s)
    }

    /// The session of a token, if it is alive and its user still exists with the same role
    /// and password; marks it used.
    pub fn get(
        &mut self,
        token: &str,
        users: &[WebUser],
        now: Instant,
        idle: Duration,
    ) -> Option<Session> {
        let s = self.peek(token, users, now, idle)?;
        if let Some(x) = self.by_token.get_mut(token) {
            x.last_seen = now;
        }
        Some(s)
    }

    /// As [`Sessions::get`], without marking it used (a live page refreshing itself is not
    /// the user at work).
    pub fn peek(
        &mut self,
        token: &str,
        users: &[WebUser],
        now: Instant,
        idle: Duration,
    ) -> Option<Session> {
        let s = self.by_token.get(token)?;
        let valid = alive(s, now, idle)
            && users
                .iter()
                .any(|u| u.name == s.user && u.role == s.role && u.password == s.phc);
        if !valid {
            self.by_token.remove(token);
            return None;
        }
        Some(s.clone())
    }

    pub fn close(&mut self, token: &str) {
        self.by_token.remove(token);
    }

    /// Ends every session (the `[web]` section is gone).
    pub fn clear(&mut self) {
        self.by_token.clear();
    }

    /// Sessions alive now (expired ones are only dropped when next seen or at a login).
    pub fn live(&self, now: Instant, idle: Duration) -> usize {
        self.by_token
            .values()
            .filter(|s| alive(s, now, idle))
            .count()
    }

    pub fn len(&self) -> usize {
        self.by_token.len()
    }

    pub fn is_empty(&self) -> bool {
        self.by_token.is_empty()
    }
}

fn alive(s: &Session, now: Instant, idle: Duration) -> bool {
    now.duration_since(s.last_seen) < idle && now.duration_since(s.created) < MAX_SESSION_AGE
}

/// Failed logins per client address and per user name, in a sliding window. An attempt is
/// counted as failed the moment it is let through (so parallel attempts cannot all pass the
/// check before the first failure is recorded) and forgiven if it succeeds.
#[derive(Debug, Default)]
pub struct Limiter {
    by_addr: HashMap<IpAddr, Vec<Instant>>,
    by_user: HashMap<String, Vec<Instant>>,
    /// Addresses that logged in lately: a user's failures from elsewhere do not block them.
    trusted: HashMap<IpAddr, Instant>,
}

impl Limiter {
    /// Lets an attempt through and counts it, or says how long to wait. `user` is the name
    /// tried when it is a configured user (other names are not kept: anyone could fill the
    /// table with them).
    pub fn attempt(
        &mut self,
        addr: IpAddr,
        user: Option<&str>,
        now: Instant,
    ) -> Result<(), Duration> {
        self.prune(now);
        let addr = client_key(addr);
        let wait = |v: Option<&Vec<Instant>>, max: usize| {
            let v = v?;
            (v.len() >= max).then(|| WINDOW.saturating_sub(now.duration_since(v[v.len() - max])))
        };
        let by_user = match user {
            Some(u) if !self.trusted.contains_key(&addr) => {
                wait(self.by_user.get(u), MAX_FAILS_PER_USER)
            }
            _ => None,
        };
        if let Some(w) = wait(self.by_addr.get(&addr), MAX_FAILS_PER_ADDR)
            .into_iter()
            .chain(by_user)
            .max()
        {
            return Err(w.max(Duration::from_secs(1)));
        }
        if self.by_addr.len() >= MAX_ADDRS && !self.by_addr.contains_key(&addr) {
            // Under a flood from very many addresses, forget the quietest.
            if let Some(k) = self
                .by_addr
                .iter()
                .min_by_key(|(_, v)| v.last().copied())
                .map(|(k, _)| *k)
            {
                self.by_addr.remove(&k);
            }
        }
        self.by_addr.entry(addr).or_default().push(now);
        if let Some(u) = user {
            self.by_user.entry(u.to_string()).or_default().push(now);
        }
        Ok(())
    }

    /// The attempt was good: it is not counted, and the address is trusted for a while. The
    /// address's other failures stay (a user of one account cannot reset the count between
    /// guesses at another).
    pub fn succeeded(&mut self, addr: IpAddr, user: &str, now: Instant) {
        let addr = client_key(addr);
        if let Some(v) = self.by_addr.get_mut(&addr) {
            v.pop();
        }
        if let Some(v) = self.by_user.get_mut(user) {
            v.pop();
        }
        if self.trusted.len() < MAX_ADDRS || self.trusted.contains_key(&addr) {
            self.trusted.insert(addr, now);
        }
    }

    fn prune(&mut self, now: Instant) {
        let fresh = |v: &mut Vec<Instant>| {
            v.retain(|t| now.duration_since(*t) < WINDOW);
            !v.is_empty()
        };
        self.by_addr.retain(|_, v| fresh(v));
        self.by_user.retain(|_, v| fresh(v));
        self.trusted
            .retain(|_, t| now.duration_since(*t) < TRUSTED_FOR);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn user(name: &str, role: WebRole) -> WebUser {
        WebUser {
            name: name.into(),
            password: String::new(),
            role,
        }
    }

    #[test]
    fn hashes_are_argon2id_and_verify() {
        let h = hash_password("correct horse").unwrap();
        assert!(herd_core::config::web::argon2id_hash_ok(&h), "{h}");
        assert!(verify_password("correct horse", &h));
        assert!(!verify_password("correct horsf", &h));
        assert!(!verify_password("x", "not a hash"));
        assert_ne!(h, hash_password("correct horse").unwrap(), "salted");
    }

    #[test]
    fn sessions_end_when_idle_or_when_the_user_changes() {
        let (t0, idle) = (Instant::now(), Duration::from_secs(60));
        let mut users = vec![user("ann", WebRole::Admin)];
        let mut s = Sessions::default();
        let (tok, sess) = s.open(&users[0], t0, idle);
        assert_eq!(tok.len(), 64);
        assert_ne!(tok, sess.csrf);
        assert!(s
            .get(&tok, &users, t0 + Duration::from_secs(50), idle)
            .is_some());
        // Used at 50 s: alive at 100 s.
        assert!(s
            .get(&tok, &users, t0 + Duration::from_secs(100), idle)
            .is_some());
        assert!(s.get("nope", &users, t0, idle).is_none());
        users[0].role = WebRole::ReadOnly;
        assert!(s
            .get(&tok, &users, t0 + Duration::from_secs(101), idle)
            .is_none());
        let (tok, _) = s.open(&users[0], t0, idle);
        assert!(s
            .get(&tok, &users, t0 + Duration::from_secs(61), idle)
            .is_none());
        let (tok, _) = s.open(&users[0], t0, idle);
        s.close(&tok);
        assert!(s.get(&tok, &users, t0, idle).is_none());
    }

    #[test]
    fn the_limiter_counts_attempts_per_address_and_per_user() {
        let t0 = Instant::now();
        let (a, b): (IpAddr, IpAddr) = ("10.0.0.1".parse().unwrap(), "10.0.0.2".parse().unwrap());
        let mut l = Limiter::default();
        // Parallel attempts: each is counted when let through, before any password check.
        for i in 0..MAX_FAILS_PER_ADDR {
            assert_eq!(
                l.attempt(a, Some("ann"), t0 + Duration::from_secs(i as u64)),
                Ok(()),
                "attempt {i}"
            );
        }
        let wait = l
            .attempt(a, Some("bob"), t0 + Duration::from_secs(10))
            .unwrap_err();
        assert_eq!(wait, Duration::from_secs(50));
        assert_eq!(l.attempt(b, Some("bob"), t0), Ok(()), "another address");
        assert_eq!(
            l.attempt(a, None, t0 + WINDOW + Duration::from_secs(5)),
            Ok(())
        );
        // IPv6 counts by /64.
        let mut l = Limiter::default();
        for i in 0..MAX_FAILS_PER_ADDR {
            let x: IpAddr = format!("2001:db8::{i}").parse().unwrap();
            assert!(l.attempt(x, None, t0).is_ok());
        }
        assert!(l
            .attempt("2001:db8::ffff".parse().unwrap(), None, t0)
            .is_err());
        assert!(l
            .attempt("2001:db8:0:1::1".parse().unwrap(), None, t0)
            .is_ok());
        // IPv4 clients of a dual-stack listener (::ffff:a.b.c.d) count one by one, not as
        // one /64.
        let x: IpAddr = "::ffff:10.1.0.1".parse().unwrap();
        for _ in 0..MAX_FAILS_PER_ADDR {
            assert!(l.attempt(x, None, t0).is_ok());
        }
        assert!(l.attempt(x, None, t0).is_err());
        assert!(l
            .attempt("::ffff:10.1.0.2".parse().unwrap(), None, t0)
            .is_ok());
        assert!(
            l.attempt("10.1.0.1".parse().unwrap(), None, t0).is_err(),
            "the same client"
        );
        // Spread over addresses, a user's failures still add up ...
        let mut l = Limiter::default();
        for i in 0..MAX_FAILS_PER_USER {
            assert!(l
                .attempt(IpAddr::from([10, 0, 1, i as u8]), Some("ann"), t0)
                .is_ok());
        }
        assert!(l.attempt(b, Some("ann"), t0).is_err());
        assert!(l.attempt(b, Some("bob"), t0).is_ok());
        // ... but not for an address that logged in lately.
        let c: IpAddr = "10.0.0.3".parse().unwrap();
        assert!(l.attempt(c, Some("bob"), t0).is_ok());
        l.succeeded(c, "bob", t0);
        assert!(l.attempt(c, Some("ann"), t0).is_ok());
        // A success forgives itself only: the address's failures stay.
        let mut l = Limiter::default();
        for _ in 0..MAX_FAILS_PER_ADDR - 1 {
            assert!(l.attempt(a, None, t0).is_ok());
        }
        assert!(l.attempt(a, Some("rob"), t0).is_ok());
        l.succeeded(a, "rob", t0);
        assert!(l.attempt(a, None, t0).is_ok());
        assert!(l.attempt(a, None, t0).is_err());
        assert!(l.by_user.get("rob").is_none_or(|v| v.is_empty()));
    }
}
