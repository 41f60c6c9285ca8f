//! Who may change state through the mon port: a client that has logged in on its connection
//! (`login USER PASS`) as one of the dashboard's users (`[web.user.NAME]`) with the `admin`
//! role. mon keeps its own users in `auth.cf`; herd has one list of logins, so a password
//! changed or a user removed there (and reloaded) counts on the mon port at once too.
//!
//! Passwords are checked with the dashboard's own code (`herd_web::auth`): argon2id off the
//! async threads, at most two at once, an unknown user checked against a dummy hash so that
//! the answer takes as long, and the same rate limit on failures per address and per user.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Instant;

use herd_core::config::web::{WebRole, WebUser};
use herd_web::auth::{hash_password, token, verify_password, Limiter};
use tokio::sync::Semaphore;

/// mon 1.3.6's replies, word for word, so that `moncmd -a` reads them as mon's.
pub const LOGIN_ACCEPTED: &str = "220 login accepted";
pub const LOGIN_REFUSED: &str = "530 login unsuccessful";
/// mon's refusal of a command the client may not run ("520 command could not be executed"),
/// followed by why.
const NOT_AUTHORIZED: &str = "520 command could not be executed";

/// State shared by every mon connection of the daemon.
pub struct Gate {
    limiter: Mutex<Limiter>,
    /// argon2 checks running at once: each takes ~19 MiB and tens of milliseconds.
    verifying: Arc<Semaphore>,
    /// An unknown user's password is checked against this, made once on first need.
    dummy_hash: OnceLock<String>,
}

impl std::fmt::Debug for Gate {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Gate").finish_non_exhaustive()
    }
}

impl Default for Gate {
    fn default() -> Gate {
        Gate {
            limiter: Mutex::default(),
            verifying: Arc::new(Semaphore::new(2)),
            dummy_hash: OnceLock::new(),
        }
    }
}

/// A login on one connection.
#[derive(Debug, Clone, PartialEq)]
pub struct Login {
    pub user: String,
    pub role: WebRole,
    /// The password hash at login: a changed password (reloaded) ends the login.
    phc: String,
}

impl Gate {
    /// Checks `login USER PASS` from `peer` against `users`: the reply line, and the login
    /// when it succeeded. Every attempt is audited; the password never leaves this function.
    pub async fn login(
        self: &Arc<Self>,
        users: &[WebUser],
        peer: SocketAddr,
        user: &str,
        password: &str,
    ) -> (String, Option<Login>) {
        let found = users.iter().find(|u| u.name == user).cloned();
        let allowed = self
            .limiter
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .attempt(
                peer.ip(),
                found.as_ref().map(|u| u.name.as_str()),
                Instant::now(),
            );
        if let Err(wait) = allowed {
            // Not audited: a flood of guesses must not flood the log.
            tracing::debug!(%peer, "mon: login rate-limited");
            let reply = format!(
                "{LOGIN_REFUSED} (too many failed logins: try again in {} s)",
                wait.as_secs().max(1)
            );
            return (reply, None);
        }
        let ok = self
            .verify(found.as_ref().map(|u| u.password.clone()), password)
            .await;
        match found {
            Some(u) if ok => {
                self.limiter
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .succeeded(peer.ip(), &u.name, Instant::now());
                audit(&u.name, u.role.as_str(), peer, "login", "", Ok(()));
                let login = Login {
                    user: u.name,
                    role: u.role,
                    phc: u.password,
                };
                (LOGIN_ACCEPTED.to_string(), Some(login))
            }
            Some(u) => {
                audit(&u.name, "", peer, "login-failed", "", Err("wrong password"));
                (LOGIN_REFUSED.to_string(), None)
            }
            None => {
                // The name is not kept: people type passwords into the user field.
                audit(
                    "(unknown)",
                    "",
                    peer,
                    "login-failed",
                    "",
                    Err("no such user"),
                );
                (LOGIN_REFUSED.to_string(), None)
            }
        }
    }

    /// argon2id on the blocking pool, at most two at once; `None` = an unknown user, checked
    /// against the dummy hash so that the answer takes as long.
    async fn verify(self: &Arc<Self>, phc: Option<String>, password: &str) -> bool {
        // The permit goes with the check: a client that leaves cannot free it while argon2
        // runs.
        let Ok(permit) = self.verifying.clone().acquire_owned().await else {
            return false;
        };
        let (gate, password) = (self.clone(), password.to_string());
        tokio::task::spawn_blocking(move || {
            let _permit = permit;
            let phc = phc.unwrap_or_else(|| gate.dummy_hash().to_string());
            verify_password(&password, &phc)
        })
        .await
        .unwrap_or(false)
    }

    fn dummy_hash(&self) -> &str {
        self.dummy_hash
            .get_or_init(|| hash_password(&token()).unwrap_or_default())
    }
}

/// May this connection change state now? `Ok(user)` for an admin whose login still holds
/// (same user, role and password in the running config); else mon's refusal with the reason.
pub fn may_write(login: &mut Option<Login>, users: &[WebUser]) -> Result<String, String> {
    let Some(l) = login.as_ref() else {
        return Err(format!(
            "{NOT_AUTHORIZED}, not authorized: log in first (login USER PASSWORD, an admin of [web.user])"
        ));
    };
    let current = users
        .iter()
        .any(|u| u.name == l.user && u.role == l.role && u.password == l.phc);
    if !current {
        *login = None;
        return Err(format!(
            "{NOT_AUTHORIZED}, not authorized: the login ended (user, role or password changed); log in again"
        ));
    }
    if l.role != WebRole::Admin {
        return Err(format!(
            "{NOT_AUTHORIZED}, not authorized: {} is {}; changes need an admin",
            l.user,
            l.role.as_str()
        ));
    }
    Ok(l.user.clone())
}

/// One audit line: who, from where, what, and whether it was done. The daemon's log carries
/// it (target `herd::audit`, message "mon audit"), beside the dashboard's "web audit" lines.
pub fn audit(
    user: &str,
    role: &str,
    peer: SocketAddr,
    event: &str,
    detail: &str,
    result: Result<(), &str>,
) {
    let (ok, error) = match result {
        Ok(()) => (true, ""),
        Err(e) => (false, e),
    };
    tracing::info!(
        target: "herd::audit",
        user, role, from = %peer.ip(), event, detail, ok, error, "mon audit"
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    fn users() -> Vec<WebUser> {
        vec![
            WebUser {
                name: "ann".into(),
                password: hash_password("right horse").unwrap(),
                role: WebRole::Admin,
            },
            WebUser {
                name: "rob".into(),
                password: hash_password("read only").unwrap(),
                role: WebRole::ReadOnly,
            },
        ]
    }

    #[tokio::test]
    async fn only_an_admin_with_the_right_password_may_write() {
        let (gate, users) = (Arc::new(Gate::default()), users());
        let peer: SocketAddr = "127.0.0.1:40000".parse().unwrap();
        let mut none = None;
        assert!(may_write(&mut none, &users)
            .unwrap_err()
            .starts_with("520 command could not be executed, not authorized: log in first"));

        let (reply, login) = gate.login(&users, peer, "ann", "wrong horse").await;
        assert_eq!((reply.as_str(), &login), (LOGIN_REFUSED, &None));
        let (reply, login) = gate.login(&users, peer, "nobody", "right horse").await;
        assert_eq!((reply.as_str(), &login), (LOGIN_REFUSED, &None));

        let (reply, mut login) = gate.login(&users, peer, "ann", "right horse").await;
        assert_eq!(reply, LOGIN_ACCEPTED);
        assert_eq!(may_write(&mut login, &users), Ok("ann".to_string()));

        let (_, mut ro) = gate.login(&users, peer, "rob", "read only").await;
        assert!(may_write(&mut ro, &users)
            .unwrap_err()
            .contains("rob is read-only"));

        // A reload that changes ann's password ends her login.
        let mut changed = users.clone();
        changed[0].password = hash_password("new horse").unwrap();
        assert!(may_write(&mut login, &changed)
            .unwrap_err()
            .contains("the login ended"));
        assert_eq!(login, None);
    }

    #[tokio::test]
    async fn failed_logins_are_rate_limited_per_address() {
        let (gate, users) = (Arc::new(Gate::default()), users());
        let peer: SocketAddr = "127.0.0.2:40000".parse().unwrap();
        for _ in 0..herd_web::auth::MAX_FAILS_PER_ADDR {
            let (reply, _) = gate.login(&users, peer, "ann", "guess").await;
            assert_eq!(reply, LOGIN_REFUSED);
        }
        // Now even the right password waits: the guesser cannot tell.
        let (reply, login) = gate.login(&users, peer, "ann", "right horse").await;
        assert!(
            reply.starts_with("530 login unsuccessful (too many failed logins"),
            "{reply}"
        );
        assert_eq!(login, None);
        // Another address is not held back.
        let other: SocketAddr = "127.0.0.3:40000".parse().unwrap();
        let (reply, _) = gate.login(&users, other, "ann", "right horse").await;
        assert_eq!(reply, LOGIN_ACCEPTED);
    }
}
