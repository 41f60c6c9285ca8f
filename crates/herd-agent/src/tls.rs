//! TLS 1.3 with certificates on both sides, all from the cluster CA.
//!
//! The agent's verifier accepts a client certificate only if it chains to the CA, names a
//! holder and one role, and its serial is not revoked; whether the role may make a given
//! request is decided per request (`proto::Request::allowed`). The client checks that the
//! agent's certificate chains to the CA and names the node it meant to reach.

use std::collections::HashSet;
use std::path::Path;
use std::sync::{Arc, RwLock};

use rustls::client::danger::HandshakeSignatureValid;
use rustls::client::WebPkiServerVerifier;
use rustls::crypto::{ring, CryptoProvider};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, UnixTime};
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use rustls::server::WebPkiClientVerifier;
use rustls::{
    CertificateError, ClientConfig, DigitallySignedStruct, DistinguishedName, Error, RootCertStore,
    ServerConfig, SignatureScheme,
};

use crate::pki::{self, Identity};

/// Serials (lower-case hex) of revoked certificates; shared so that a reload applies at once.
pub type Revoked = Arc<RwLock<HashSet<String>>>;

/// Paths of the CA certificate, and of this side's certificate and key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Files {
    pub ca: std::path::PathBuf,
    pub cert: std::path::PathBuf,
    pub key: std::path::PathBuf,
}

fn provider() -> Arc<CryptoProvider> {
    Arc::new(ring::default_provider())
}

fn roots(ca: &Path) -> Result<Arc<RootCertStore>, String> {
    let mut roots = RootCertStore::empty();
    for c in pki::load_certs(ca)? {
        roots
            .add(c)
            .map_err(|e| format!("{}: not a usable CA certificate: {e}", ca.display()))?;
    }
    Ok(Arc::new(roots))
}

fn identity(
    files: &Files,
) -> Result<(Vec<CertificateDer<'static>>, PrivateKeyDer<'static>), String> {
    Ok((pki::load_certs(&files.cert)?, pki::load_key(&files.key)?))
}

/// The agent's side.
pub fn server_config(files: &Files, revoked: Revoked) -> Result<Arc<ServerConfig>, String> {
    server_parts(files, revoked).map(|(c, _)| c)
}

/// The agent's side, and its client-certificate verifier (which also checks grants' signers).
pub fn server_parts(
    files: &Files,
    revoked: Revoked,
) -> Result<(Arc<ServerConfig>, Arc<dyn ClientCertVerifier>), String> {
    let inner = WebPkiClientVerifier::builder_with_provider(roots(&files.ca)?, provider())
        .build()
        .map_err(|e| e.to_string())?;
    let verifier: Arc<dyn ClientCertVerifier> = Arc::new(HerdClientVerifier { inner, revoked });
    let (certs, key) = identity(files)?;
    let cfg = ServerConfig::builder_with_provider(provider())
        .with_protocol_versions(&[&rustls::version::TLS13])
        .map_err(|e| e.to_string())?
        .with_client_cert_verifier(verifier.clone())
        .with_single_cert(certs, key)
        .map_err(|e| format!("{}: {e}", files.cert.display()))?;
    Ok((Arc::new(cfg), verifier))
}

/// A private key for signing grants.
pub fn signing_key(path: &Path) -> Result<Arc<dyn rustls::sign::SigningKey>, String> {
    provider()
        .key_provider
        .load_private_key(pki::load_key(path)?)
        .map_err(|e| format!("{}: {e}", path.display()))
}

/// The client's side (`herd exec`, and an agent relaying to its subtree).
pub fn client_config(files: &Files) -> Result<Arc<ClientConfig>, String> {
    let verifier = WebPkiServerVerifier::builder_with_provider(roots(&files.ca)?, provider())
        .build()
        .map_err(|e| e.to_string())?;
    let (certs, key) = identity(files)?;
    let cfg = ClientConfig::builder_with_provider(provider())
        .with_protocol_versions(&[&rustls::version::TLS13])
        .map_err(|e| e.to_string())?
        .with_webpki_verifier(verifier)
        .with_client_auth_cert(certs, key)
        .map_err(|e| format!("{}: {e}", files.cert.display()))?;
    Ok(Arc::new(cfg))
}

/// WebPKI's client verification, then herd's: a name, one role, not revoked.
#[derive(Debug)]
struct HerdClientVerifier {
    inner: Arc<dyn ClientCertVerifier>,
    revoked: Revoked,
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
        self.inner
            .verify_client_cert(end_entity, intermediates, now)?;
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
