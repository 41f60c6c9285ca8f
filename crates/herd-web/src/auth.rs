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
use herd_core::config::web::{WebRole, WebUser};
use subtle::ConstantTimeEq;

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
pub fn hash_password(password: &str) -> Result<String, String> {
    Argon2::default()
        .hash_password(password.as_bytes())
        .map(|h| h.to_string())
        .map_err(|e| format!("cannot hash the password: {e}"))
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

#[derive(Debug, Clone)]
pub struct Session {
    pub user: String,
    pub role: WebRole,
    pub csrf: String,
    last_seen: Instant,
}

#[derive(Debug, Default)]
pub struct Sessions {
    by_token: HashMap<String, Session>,
}

impl Sessions {
    /// A new session for a user who just logged in; returns its token.
    pub fn open(&mut self, user: &WebUser, now: Instant, idle: Duration) -> (String, Session) {
        self.by_token
            .retain(|_, s| now.duration_since(s.last_seen) < idle);
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
            last_seen: now,
        };
        let t = token();
        self.by_token.insert(t.clone(), s.clone());
        (t, s)
    }

    /// The session of a token, if it is alive and its user still exists with the same role;
    /// marks it used.
    pub fn get(
        &mut self,
        token: &str,
        users: &[WebUser],
        now: Instant,
        idle: Duration,
    ) -> Option<Session> {
        let s = self.by_token.get_mut(token)?;
        let valid = now.duration_since(s.last_seen) < idle
            && users.iter().any(|u| u.name == s.user && u.role == s.role);
        if !valid {
            self.by_token.remove(token);
            return None;
        }
        s.last_seen = now;
        Some(s.clone())
    }

    pub fn close(&mut self, token: &str) {
        self.by_token.remove(token);
    }

    pub fn len(&self) -> usize {
        self.by_token.len()
    }

    pub fn is_empty(&self) -> bool {
        self.by_token.is_empty()
    }
}

/// Failed logins per client address and per user name, in a sliding window.
#[derive(Debug, Default)]
pub struct Limiter {
    by_addr: HashMap<IpAddr, Vec<Instant>>,
    by_user: HashMap<String, Vec<Instant>>,
}

impl Limiter {
    /// `Some(wait)` when this address or user name has failed too often lately.
    pub fn check(&mut self, addr: IpAddr, user: &str, now: Instant) -> Option<Duration> {
        self.prune(now);
        let wait = |v: Option<&Vec<Instant>>, max: usize| {
            let v = v?;
            (v.len() >= max).then(|| WINDOW.saturating_sub(now.duration_since(v[v.len() - max])))
        };
        wait(self.by_addr.get(&addr), MAX_FAILS_PER_ADDR)
            .into_iter()
            .chain(wait(self.by_user.get(user), MAX_FAILS_PER_USER))
            .max()
    }

    /// Records a failed login; `user` is the name tried when it is a configured user (other
    /// names are not kept: anyone could fill the table with them).
    pub fn failed(&mut self, addr: IpAddr, user: Option<&str>, now: Instant) {
        self.by_addr.entry(addr).or_default().push(now);
        if let Some(u) = user {
            self.by_user.entry(u.to_string()).or_default().push(now);
        }
    }

    /// A good login clears its address's record (not the user's: an attacker guessing from
    /// elsewhere is still counted).
    pub fn succeeded(&mut self, addr: IpAddr) {
        self.by_addr.remove(&addr);
    }

    fn prune(&mut self, now: Instant) {
        let fresh = |v: &mut Vec<Instant>| {
            v.retain(|t| now.duration_since(*t) < WINDOW);
            !v.is_empty()
        };
        self.by_addr.retain(|_, v| fresh(v));
        self.by_user.retain(|_, v| fresh(v));
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
    fn the_limiter_counts_failures_per_address_and_per_user() {
        let t0 = Instant::now();
        let (a, b): (IpAddr, IpAddr) = ("10.0.0.1".parse().unwrap(), "10.0.0.2".parse().unwrap());
        let mut l = Limiter::default();
        for i in 0..MAX_FAILS_PER_ADDR {
            assert_eq!(l.check(a, "ann", t0), None, "attempt {i}");
            l.failed(a, Some("ann"), t0 + Duration::from_secs(i as u64));
        }
        let wait = l.check(a, "bob", t0 + Duration::from_secs(10)).unwrap();
        assert_eq!(wait, Duration::from_secs(50));
        assert_eq!(l.check(b, "bob", t0), None, "another address");
        assert_eq!(
            l.check(a, "bob", t0 + WINDOW + Duration::from_secs(5)),
            None
        );
        // Spread over addresses, a user's failures still add up.
        let mut l = Limiter::default();
        for i in 0..MAX_FAILS_PER_USER {
            l.failed(IpAddr::from([10, 0, 1, i as u8]), Some("ann"), t0);
        }
        assert!(l.check(b, "ann", t0).is_some());
        assert!(l.check(b, "bob", t0).is_none());
        let mut l = Limiter::default();
        l.failed(a, None, t0);
        assert!(l.by_user.is_empty());
        l.succeeded(a);
        assert!(l.by_addr.is_empty());
    }
}
