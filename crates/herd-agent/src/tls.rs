//! TLS 1.3 with certificates on both sides, all from the cluster CA.
//!
//! The agent's verifier accepts a client certificate only if it chains to the CA, names a
//! holder and one role, and its serial is not revoked; whether the role may make a given
//! request is decided per request (`proto::Request::allowed`). The client checks that the
//! agent's certificate chains to the CA and names the node it meant to reach.

use std::collections::{HashMap, HashSet};
use std::path::Path;
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::client::WebPkiServerVerifier;
use rustls::crypto::{ring, CryptoProvider};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use rustls::server::WebPkiClientVerifier;
use rustls::{
    CertificateError, ClientConfig, DigitallySignedStruct, DistinguishedName, Error, RootCertStore,
    ServerConfig, SignatureScheme,
};

use crate::pki::{self, Identity};

/// Serials (lower-case hex) of revoked certificates; shared so that a reload applies at once.
pub type Revoked = Arc<RwLock<HashSet<String>>>;

/// Why a TLS side could not be set up, or a peer's certificate is not good (any more).
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error(transparent)]
    Pki(#[from] pki::PkiError),
    #[error("{}: not a usable CA certificate: {error}", path.display())]
    Ca {
        path: std::path::PathBuf,
        error: Error,
    },
    #[error("{0}")]
    Verifier(#[from] rustls::server::VerifierBuilderError),
    #[error("{0}")]
    Rustls(#[from] Error),
    /// This side's certificate or key, refused by rustls.
    #[error("{}: {error}", path.display())]
    Identity {
        path: std::path::PathBuf,
        error: Error,
    },
    #[error("the certificate of {0:?} is revoked")]
    Revoked(String),
    #[error("the certificate of {0:?} has expired")]
    Expired(String),
}

/// Paths of the CA certificate, and of this side's certificate and key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Files {
    pub ca: std::path::PathBuf,
    pub cert: std::path::PathBuf,
    pub key: std::path::PathBuf,
}

/// One suite and one group: both ends are herd, and a run is thousands of handshakes, so
/// the cheapest strong choice (AES-128-GCM with SHA-256, X25519) is the only one offered.
fn provider() -> Arc<CryptoProvider> {
    let mut p = ring::default_provider();
    p.cipher_suites = vec![ring::cipher_suite::TLS13_AES_128_GCM_SHA256];
    p.kx_groups = vec![ring::kx_group::X25519];
    Arc::new(p)
}

fn roots(ca: &Path) -> Result<Arc<RootCertStore>, TlsError> {
    let mut roots = RootCertStore::empty();
    for c in pki::load_certs(ca)? {
        roots.add(c).map_err(|error| TlsError::Ca {
            path: ca.to_path_buf(),
            error,
        })?;
    }
    Ok(Arc::new(roots))
}

fn identity(
    files: &Files,
) -> Result<(Vec<CertificateDer<'static>>, PrivateKeyDer<'static>), TlsError> {
    Ok((pki::load_certs(&files.cert)?, pki::load_key(&files.key)?))
}

/// The agent's side, and its client-certificate verifier (which also checks grants' signers).
pub fn server_parts(
    files: &Files,
    revoked: Revoked,
) -> Result<(Arc<ServerConfig>, Arc<dyn ClientCertVerifier>), TlsError> {
    let inner =
        WebPkiClientVerifier::builder_with_provider(roots(&files.ca)?, provider()).build()?;
    let verifier: Arc<dyn ClientCertVerifier> = Arc::new(HerdClientVerifier {
        inner,
        revoked,
        known: Known::default(),
    });
    let (certs, key) = identity(files)?;
    let mut cfg = ServerConfig::builder_with_provider(provider())
        .with_protocol_versions(&[&rustls::version::TLS13])?
        .with_client_cert_verifier(verifier.clone())
        .with_single_cert(certs, key)
        .map_err(|error| TlsError::Identity {
            path: files.cert.clone(),
            error,
        })?;
    // One ticket per connection (stateless, under a key that lives in this process only): a
    // relay that comes back resumes without certificates and signatures. A resumed session
    // skips the verifier, so the agent checks revocation and expiry again after every
    // handshake (`check_identity`).
    cfg.send_tls13_tickets = 1;
    cfg.ticketer = ring::Ticketer::new()?;
    cfg.session_storage = Arc::new(rustls::server::NoServerSessionStorage {});
    Ok((Arc::new(cfg), verifier))
}

/// A private key for signing grants.
pub fn signing_key(path: &Path) -> Result<Arc<dyn rustls::sign::SigningKey>, TlsError> {
    provider()
        .key_provider
        .load_private_key(pki::load_key(path)?)
        .map_err(|error| TlsError::Identity {
            path: path.to_path_buf(),
            error,
        })
}

/// The client's side of `herd exec`: a new process each run, so no resumption.
pub fn client_config(files: &Files) -> Result<Arc<ClientConfig>, TlsError> {
    client_config_with(files, rustls::client::Resumption::disabled())
}

/// The client's side of an agent relaying to its subtree: long-lived, so it keeps a ticket per
/// node and resumes the next run's connections.
pub fn relay_client_config(files: &Files) -> Result<Arc<ClientConfig>, TlsError> {
    client_config_with(files, rustls::client::Resumption::in_memory_sessions(8192))
}

fn client_config_with(
    files: &Files,
    resumption: rustls::client::Resumption,
) -> Result<Arc<ClientConfig>, TlsError> {
    let inner =
        WebPkiServerVerifier::builder_with_provider(roots(&files.ca)?, provider()).build()?;
    let verifier = Arc::new(HerdServerVerifier {
        inner,
        known: Known::default(),
    });
    let (certs, key) = identity(files)?;
    let mut cfg = ClientConfig::builder_with_provider(provider())
        .with_protocol_versions(&[&rustls::version::TLS13])?
        .dangerous()
        .with_custom_certificate_verifier(verifier)
        .with_client_auth_cert(certs, key)
        .map_err(|error| TlsError::Identity {
            path: files.cert.clone(),
            error,
        })?;
    cfg.resumption = resumption;
    Ok(Arc::new(cfg))
}

/// Certificates whose chain to the CA was verified lately: a node answers run after run from
/// the same admin and relays, so each is verified once per [`KNOWN_FOR`] (or until it
/// expires) rather than at every connection. Keyed by the whole certificate; revocation is
/// still checked at every use, and every handshake still proves the key (its signature).
#[derive(Debug, Default)]
struct Known(Mutex<HashMap<(Vec<u8>, String), Instant>>);

/// How long a verified chain is remembered.
pub const KNOWN_FOR: Duration = Duration::from_secs(600);
const KNOWN_MAX: usize = 4096;

impl Known {
    fn check(&self, der: &[u8], context: &str) -> bool {
        let map = self.0.lock().unwrap_or_else(|p| p.into_inner());
        map.get(&(der.to_vec(), context.to_string()))
            .is_some_and(|until| Instant::now() < *until)
    }

    fn remember(&self, der: &[u8], context: &str) {
        // Until KNOWN_FOR from now, or the certificate's own end, whichever comes first.
        let left = crate::x509::not_after(der)
            .and_then(|end| u64::try_from(end).ok())
            .map(|end| end.saturating_sub(unix_now()))
            .unwrap_or(0);
        let keep = KNOWN_FOR.min(Duration::from_secs(left));
        if keep.is_zero() {
            return;
        }
        let mut map = self.0.lock().unwrap_or_else(|p| p.into_inner());
        if map.len() >= KNOWN_MAX {
            map.clear();
        }
        map.insert((der.to_vec(), context.to_string()), Instant::now() + keep);
    }
}

fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// After a handshake (full or resumed): the peer's identity, if not revoked or expired.
pub fn check_identity(der: &[u8], revoked: &Revoked) -> Result<Identity, TlsError> {
    let id = Identity::from_der(der)?;
    if revoked
        .read()
        .unwrap_or_else(|p| p.into_inner())
        .contains(&id.serial)
    {
        return Err(TlsError::Revoked(id.name));
    }
    if u64::try_from(id.not_after).is_ok_and(|end| end > unix_now()) {
        Ok(id)
    } else {
        Err(TlsError::Expired(id.name))
    }
}

/// WebPKI's server verification (chain to the CA, the node's name), remembered.
#[derive(Debug)]
struct HerdServerVerifier {
    inner: Arc<WebPkiServerVerifier>,
    known: Known,
}

impl ServerCertVerifier for HerdServerVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, Error> {
        let name = server_name.to_str();
        if !intermediates.is_empty() || !self.known.check(end_entity, &name) {
            self.inner
                .verify_server_cert(end_entity, intermediates, server_name, ocsp, now)?;
            if intermediates.is_empty() {
                self.known.remember(end_entity, &name);
            }
        }
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, Error> {
        self.inner.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, Error> {
        self.inner.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.inner.supported_verify_schemes()
    }
}

/// WebPKI's client verification (remembered), then herd's: a name, one role, not revoked.
#[derive(Debug)]
struct HerdClientVerifier {
    inner: Arc<dyn ClientCertVerifier>,
    revoked: Revoked,
    known: Known,
}

impl ClientCertVerifier for HerdClientVerifier {
    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        self.inner.root_hint_subjects()
    }

    fn verify_client_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        now: UnixTime,
    ) -> Result<ClientCertVerified, Error> {
        if !intermediates.is_empty() || !self.known.check(end_entity, "") {
            self.inner
                .verify_client_cert(end_entity, intermediates, now)?;
            if intermediates.is_empty() {
                self.known.remember(end_entity, "");
            }
        }
        let id = Identity::from_der(end_entity).map_err(|e| {
            Error::InvalidCertificate(CertificateError::Other(rustls::OtherError(Arc::new(
                std::io::Error::other(e),
            ))))
        })?;
        if self
            .revoked
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .contains(&id.serial)
        {
            return Err(Error::InvalidCertificate(CertificateError::Revoked));
        }
        Ok(ClientCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, Error> {
        self.inner.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, Error> {
        self.inner.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.inner.supported_verify_schemes()
    }
}
