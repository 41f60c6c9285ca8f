//! Local users, from /etc/passwd: who the agent runs commands as.

/// A local user, from /etc/passwd.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct User {
    pub name: String,
    pub uid: u32,
    pub gid: u32,
    pub home: String,
    pub shell: String,
}

/// Why a user could not be looked up.
#[derive(Debug, thiserror::Error)]
pub enum UserError {
    #[error("cannot read /etc/passwd: {0}")]
    Passwd(#[source] std::io::Error),
    #[error("no user {0:?} in /etc/passwd")]
    Unknown(String),
}

pub fn lookup_user(name: &str) -> Result<User, UserError> {
    let passwd = std::fs::read_to_string("/etc/passwd").map_err(UserError::Passwd)?;
    parse_passwd(&passwd, name).ok_or_else(|| UserError::Unknown(name.to_string()))
}

fn parse_passwd(passwd: &str, name: &str) -> Option<User> {
    passwd.lines().find_map(|l| {
        let f: Vec<&str> = l.split(':').collect();
        if f.len() < 7 || f[0] != name {
            return None;
        }
        Some(User {
            name: f[0].to_string(),
            uid: f[2].parse().ok()?,
            gid: f[3].parse().ok()?,
            home: f[5].to_string(),
            shell: f[6].to_string(),
        })
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passwd_lines_give_users() {
        let p = "root:x:0:0:root:/root:/bin/bash\nnobody:x:65534:65534:nobody:/nonexistent:/usr/sbin/nologin\nbad:x:y\n";
        let u = parse_passwd(p, "nobody").unwrap();
        assert_eq!(
            (u.uid, u.gid, u.home.as_str()),
            (65534, 65534, "/nonexistent")
        );
        assert!(parse_passwd(p, "bad").is_none());
        assert!(parse_passwd(p, "alice").is_none());
    }

    #[test]
    fn a_missing_user_is_named_in_the_error() {
        let e = lookup_user("no-such-user-herd-test").unwrap_err();
        assert_eq!(
            e.to_string(),
            "no user \"no-such-user-herd-test\" in /etc/passwd"
        );
    }
}
