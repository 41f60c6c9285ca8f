//! Grants: an admin's signature over one run, so that agents can relay it.
//!
//! In a tree run, an agent reaches its subtree with its own (node) certificate, and a node
//! certificate may not run commands. What lets the subtree run the command is the grant the
//! admin's client signed: the command and its settings, the node set it is meant for, a
//! random run id and the time. An agent that receives a request from a node runs it only if
//! the grant's certificate chains to the cluster CA, is an admin's and not revoked, the
//! signature is good, the request matches the grant, the agent is in the grant's node set,
//! the grant is fresh (±[`MAX_SKEW`]) and its run id has not been seen before.
//! So a relay can drop or delay the run it carries, and see its output, but it cannot change
//! the command, run it on other nodes, or run it twice on a node. Nor its stdin: a grant that
//! lets the command read stdin names its length and BLAKE3, and the agent checks the bytes it
//! got before it runs the command (a grant with stdin and no hash is refused).

use std::collections::HashMap;
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use herd_core::nodeset::{contains_name, NodeSet};
use rustls::pki_types::{CertificateDer, UnixTime};
use rustls::server::danger::ClientCertVerifier;
use rustls::sign::SigningKey;
use rustls::SignatureScheme;
use serde::{Deserialize, Serialize};

use crate::pki::{Identity, Role};
use crate::proto::{Auth, ExecRequest, StdinDigest};

/// How far a grant's time may be from the agent's clock.
pub const MAX_SKEW: Duration = Duration::from_secs(300);

/// Why a grant could not be signed, or does not allow a request here.
#[derive(Debug, thiserror::Error)]
pub enum GrantError {
    #[error("no randomness")]
    NoRandomness,
    #[error("{0}")]
    Json(#[from] serde_json::Error),
    #[error("the client key is not an ECDSA P-256 key (herd cert issue makes those)")]
    KeyType,
    #[error("{0}")]
    Sign(#[from] rustls::Error),
    #[error(
        "grant: stdin through relays needs the grant to cover its hash \
                        (the client is an older herd; or use --no-stdin)"
    )]
    StdinUnhashed,
    /// A relayed `request` or `push` without the admin's grant.
    #[error("a relayed {0} carries no grant")]
    Missing(&'static str),
    #[error("grant: bad certificate")]
    BadCertificate,
    #[error("grant: the signer's certificate: {0}")]
    Signer(rustls::Error),
    #[error("grant: {0}")]
    Identity(crate::pki::PkiError),
    #[error("grant: signed by a {0} certificate, not an admin's")]
    NotAdmin(Role),
    #[error("grant: bad signature encoding")]
    SignatureEncoding,
    #[error("grant: the signature does not verify: {0:?}")]
    Signature(webpki::Error),
    #[error("grant: {0}")]
    Malformed(serde_json::Error),
    /// `what`: "a sync" or "a command", what it was signed for.
    #[error("grant: signed for {0}, not for this request")]
    OtherKind(&'static str),
    #[error("grant: the request is not the one the admin signed")]
    OtherRequest,
    #[error("grant: {0}")]
    NodeSet(herd_core::nodeset::NodeSetError),
    #[error("grant: signed for {nodes}, not for {me}")]
    OtherNodes { nodes: String, me: String },
    #[error(
        "grant: issued {ahead}s from this node's clock (at most {}s; are the clocks in sync?)",
        MAX_SKEW.as_secs()
    )]
    Skew { ahead: i64 },
    #[error("grant: this run was already served here (a replay)")]
    Replay,
}

/// What the admin signs (serialised to JSON; the signature covers those exact bytes).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
pub struct Grant {
    pub command: String,
    pub timeout_ms: Option<u64>,
    pub stdin: bool,
    /// The whole stdin's length and hash, when `stdin` is set.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stdin_digest: Option<StdinDigest>,
    /// The run's node set, folded.
    pub nodes: String,
    /// Random, hex.
    pub run: String,
    /// Unix seconds.
    pub issued: u64,
    /// A grant for `herd sync push` (its `command` describes the sync and the manifest's
    /// hash), never good for running a command.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub sync: bool,
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

fn unhex(s: &str) -> Option<Vec<u8>> {
    if !s.len().is_multiple_of(2) {
        return None;
    }
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(s.get(i..i + 2)?, 16).ok())
        .collect()
}

fn now_secs() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// Signs a grant for `req` on `nodes` with the admin's key.
pub fn sign(
    req: &ExecRequest,
    nodes: &NodeSet,
    cert: &CertificateDer<'_>,
    key: &dyn SigningKey,
) -> Result<Auth, GrantError> {
    sign_grant(req, false, nodes, cert, key)
}

/// Signs a grant for a sync described by `what` (the request and its manifest's hash, see
/// [`crate::sync::grant_text`]) on `nodes`.
pub fn sign_sync(
    what: &str,
    nodes: &NodeSet,
    cert: &CertificateDer<'_>,
    key: &dyn SigningKey,
) -> Result<Auth, GrantError> {
    let req = ExecRequest {
        command: what.to_string(),
        ..ExecRequest::default()
    };
    sign_grant(&req, true, nodes, cert, key)
}

fn sign_grant(
    req: &ExecRequest,
    sync: bool,
    nodes: &NodeSet,
    cert: &CertificateDer<'_>,
    key: &dyn SigningKey,
) -> Result<Auth, GrantError> {
    let mut run = [0u8; 16];
    rustls::crypto::ring::default_provider()
        .secure_random
        .fill(&mut run)
        .map_err(|_| GrantError::NoRandomness)?;
    let grant = Grant {
        command: req.command.clone(),
        timeout_ms: req.timeout_ms,
        stdin: req.stdin,
        stdin_digest: req.stdin_digest.clone(),
        nodes: nodes.fold(),
        run: hex(&run),
        issued: now_secs(),
        sync,
    };
    let signed = serde_json::to_string(&grant)?;
    let signer = key
        .choose_scheme(&[SignatureScheme::ECDSA_NISTP256_SHA256])
        .ok_or(GrantError::KeyType)?;
    let sig = signer.sign(signed.as_bytes())?;
    Ok(Auth {
        cert: hex(cert),
        signed,
        sig: hex(&sig),
    })
}

/// Checks grants for one agent, remembering the run ids it has seen.
#[derive(Debug)]
pub struct Checker {
    /// The agent's client-certificate verifier (the CA, revocations); a reload that changes
    /// the CA replaces it, keeping the run ids seen.
    verifier: RwLock<Arc<dyn ClientCertVerifier>>,
    seen: Mutex<HashMap<String, u64>>,
}

impl Checker {
    pub fn new(verifier: Arc<dyn ClientCertVerifier>) -> Checker {
        Checker {
            verifier: RwLock::new(verifier),
            seen: Mutex::new(HashMap::new()),
        }
    }

    /// Checks the signers of the next grants with `verifier` (a reloaded CA).
    pub fn set_verifier(&self, verifier: Arc<dyn ClientCertVerifier>) {
        *self.verifier.write().unwrap_or_else(|p| p.into_inner()) = verifier;
    }

    /// The admin who signed `auth`, if it allows `req` on the node `me`. When the command
    /// reads stdin, the grant names its hash (`req.stdin_digest`, the same), which the caller
    /// must check against the bytes it gets before running anything.
    pub fn check(&self, auth: &Auth, req: &ExecRequest, me: &str) -> Result<Identity, GrantError> {
        if req.stdin && req.stdin_digest.is_none() {
            return Err(GrantError::StdinUnhashed);
        }
        self.check_grant(auth, req, false, me)
    }

    /// The admin who signed `auth`, if it allows the sync described by `what` on `me`.
    pub fn check_sync(&self, auth: &Auth, what: &str, me: &str) -> Result<Identity, GrantError> {
        let req = ExecRequest {
            command: what.to_string(),
            ..ExecRequest::default()
        };
        self.check_grant(auth, &req, true, me)
    }

    fn check_grant(
        &self,
        auth: &Auth,
        req: &ExecRequest,
        sync: bool,
        me: &str,
    ) -> Result<Identity, GrantError> {
        let der = CertificateDer::from(unhex(&auth.cert).ok_or(GrantError::BadCertificate)?);
        let verifier = self
            .verifier
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone();
        verifier
            .verify_client_cert(&der, &[], UnixTime::now())
            .map_err(GrantError::Signer)?;
        let id = Identity::from_der(&der).map_err(GrantError::Identity)?;
        if id.role != Role::Admin {
            return Err(GrantError::NotAdmin(id.role));
        }
        let sig = unhex(&auth.sig).ok_or(GrantError::SignatureEncoding)?;
        webpki::EndEntityCert::try_from(&der)
            .and_then(|c| {
                c.verify_signature(
                    webpki::ring::ECDSA_P256_SHA256,
                    auth.signed.as_bytes(),
                    &sig,
                )
            })
            .map_err(GrantError::Signature)?;
        let g: Grant = serde_json::from_str(&auth.signed).map_err(GrantError::Malformed)?;
        if g.sync != sync {
            return Err(GrantError::OtherKind(if g.sync {
                "a sync"
            } else {
                "a command"
            }));
        }
        if g.command != req.command
            || g.timeout_ms != req.timeout_ms
            || g.stdin != req.stdin
            || g.stdin_digest != req.stdin_digest
        {
            return Err(GrantError::OtherRequest);
        }
        // Checked without expanding the set: a node of a 1000-node run checks one name.
        if !contains_name(&g.nodes, me).map_err(GrantError::NodeSet)? {
            return Err(GrantError::OtherNodes {
                nodes: g.nodes,
                me: me.to_string(),
            });
        }
        let now = now_secs();
        if g.issued.abs_diff(now) > MAX_SKEW.as_secs() {
            return Err(GrantError::Skew {
                ahead: g.issued as i64 - now as i64,
            });
        }
        let mut seen = self.seen.lock().unwrap_or_else(|p| p.into_inner());
        seen.retain(|_, issued| issued.abs_diff(now) <= 2 * MAX_SKEW.as_secs());
        if seen.insert(g.run.clone(), g.issued).is_some() {
            return Err(GrantError::Replay);
        }
        Ok(id)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pki;
    use crate::tls::{self, Files};
    use std::collections::HashSet;

    fn write(
        dir: &std::path::Path,
        name: &str,
        i: &pki::Issued,
    ) -> (std::path::PathBuf, std::path::PathBuf) {
        let (c, k) = (
            dir.join(format!("{name}.crt")),
            dir.join(format!("{name}.key")),
        );
        std::fs::write(&c, &i.cert_pem).unwrap();
        std::fs::write(&k, &i.key_pem).unwrap();
        (c, k)
    }

    #[test]
    fn grants_verify_and_refuse_tampering_strangers_and_replays() {
        let dir = std::env::temp_dir().join(format!("herd-grant-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let ca = pki::new_ca("t", 1).unwrap();
        let (ca_crt, _) = write(&dir, "ca", &ca);
        let admin = pki::issue(&ca.cert_pem, &ca.key_pem, "alice", Role::Admin, 1).unwrap();
        let node = pki::issue(&ca.cert_pem, &ca.key_pem, "n1", Role::Node, 1).unwrap();
        let (ac, ak) = write(&dir, "alice", &admin);
        let (nc, nk) = write(&dir, "n1", &node);
        let revoked = Arc::new(RwLock::new(HashSet::new()));
        let (_, verifier) = tls::server_parts(
            &Files {
                ca: ca_crt.clone(),
                cert: nc.clone(),
                key: nk.clone(),
            },
            revoked.clone(),
        )
        .unwrap();
        let checker = Checker::new(verifier);
        let req = ExecRequest {
            command: "uptime".into(),
            ..ExecRequest::default()
        };
        let nodes = NodeSet::parse("n[1-3]").unwrap();
        let signer = tls::signing_key(&ak).unwrap();
        let cert = pki::load_certs(&ac).unwrap().remove(0);
        let auth = sign(&req, &nodes, &cert, signer.as_ref()).unwrap();

        assert_eq!(checker.check(&auth, &req, "n2").unwrap().name, "alice");
        // The same run again is a replay; another node may still serve it once.
        assert!(checker
            .check(&auth, &req, "n2")
            .unwrap_err()
            .to_string()
            .contains("replay"));
        assert!(checker
            .check(&auth, &req, "n4")
            .unwrap_err()
            .to_string()
            .contains("not for n4"));
        let other = ExecRequest {
            command: "rm -rf /".into(),
            ..req.clone()
        };
        let auth2 = sign(&req, &nodes, &cert, signer.as_ref()).unwrap();
        assert!(checker
            .check(&auth2, &other, "n1")
            .unwrap_err()
            .to_string()
            .contains("not the one"));
        let mut forged = sign(&req, &nodes, &cert, signer.as_ref()).unwrap();
        forged.signed = forged.signed.replace("uptime", "reboot");
        let forged_req = ExecRequest {
            command: "reboot".into(),
            ..req.clone()
        };
        assert!(checker
            .check(&forged, &forged_req, "n1")
            .unwrap_err()
            .to_string()
            .contains("does not verify"));
        // Signed with a node's key: refused.
        let ncert = pki::load_certs(&nc).unwrap().remove(0);
        let nsigner = tls::signing_key(&nk).unwrap();
        let by_node = sign(&req, &nodes, &ncert, nsigner.as_ref()).unwrap();
        assert!(checker
            .check(&by_node, &req, "n1")
            .unwrap_err()
            .to_string()
            .contains("not an admin"));
        // A sync grant runs no command, and a command's grant is no sync's.
        let what = "sync dest=/srv manifest=ab12";
        let sync = sign_sync(what, &nodes, &cert, signer.as_ref()).unwrap();
        let as_command = ExecRequest {
            command: what.into(),
            ..ExecRequest::default()
        };
        assert!(checker
            .check(&sync, &as_command, "n1")
            .unwrap_err()
            .to_string()
            .contains("signed for a sync"));
        assert!(checker
            .check_sync(&sync, "sync dest=/etc manifest=ab12", "n1")
            .unwrap_err()
            .to_string()
            .contains("not the one"));
        assert_eq!(checker.check_sync(&sync, what, "n3").unwrap().name, "alice");
        let command = sign(&as_command, &nodes, &cert, signer.as_ref()).unwrap();
        assert!(checker
            .check_sync(&command, what, "n1")
            .unwrap_err()
            .to_string()
            .contains("signed for a command"));
        // Stdin: the grant covers its hash; another stdin, or one without a hash, is refused.
        let with_stdin = ExecRequest {
            command: "sh".into(),
            stdin: true,
            stdin_digest: Some(StdinDigest::of(b"echo ok\n")),
            ..ExecRequest::default()
        };
        let auth4 = sign(&with_stdin, &nodes, &cert, signer.as_ref()).unwrap();
        let changed = ExecRequest {
            stdin_digest: Some(StdinDigest::of(b"rm -rf /\n")),
            ..with_stdin.clone()
        };
        assert!(checker
            .check(&auth4, &changed, "n1")
            .unwrap_err()
            .to_string()
            .contains("not the one"));
        assert_eq!(
            checker.check(&auth4, &with_stdin, "n1").unwrap().name,
            "alice"
        );
        let unhashed = ExecRequest {
            stdin_digest: None,
            ..with_stdin.clone()
        };
        let auth5 = sign(&unhashed, &nodes, &cert, signer.as_ref()).unwrap();
        assert!(checker
            .check(&auth5, &unhashed, "n1")
            .unwrap_err()
            .to_string()
            .contains("cover its hash"));
        // A revoked admin: refused.
        revoked.write().unwrap().insert(admin.serial.clone());
        let auth3 = sign(&req, &nodes, &cert, signer.as_ref()).unwrap();
        assert!(checker
            .check(&auth3, &req, "n1")
            .unwrap_err()
            .to_string()
            .contains("certificate"));
        let _ = std::fs::remove_dir_all(&dir);
    }
}
