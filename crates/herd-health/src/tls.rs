//! TLS for `https` checks: client configs (cached per trust setting) and the leaf
//! certificate's expiry.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::SystemTime;

use herd_rules::spec::Tls;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{ClientConfig, DigitallySignedStruct, RootCertStore, SignatureScheme};

/// The system's CA bundle on Debian and its relatives.
const SYSTEM_BUNDLE: &str = "/etc/ssl/certs/ca-certificates.crt";

/// Client configs by (verify, CA file, the file's modification time).
type Configs = HashMap<(bool, Option<PathBuf>, Option<SystemTime>), Arc<ClientConfig>>;

/// Why no client config can be built.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error(transparent)]
    Rustls(#[from] rustls::Error),
    /// The CA file cannot be read as PEM.
    #[error("{}: {source}", path.display())]
    Pem {
        path: PathBuf,
        source: rustls::pki_types::pem::Error,
    },
    #[error("{}: no usable CA certificates", .0.display())]
    NoRoots(PathBuf),
}

/// A client config for these settings; built once per (verify, CA file) and shared, and
/// built again when the CA file changes.
pub fn client_config(t: &Tls) -> Result<Arc<ClientConfig>, TlsError> {
    static CACHE: OnceLock<Mutex<Configs>> = OnceLock::new();
    let modified =
        t.ca.as_ref()
            .and_then(|p| std::fs::metadata(p).and_then(|m| m.modified()).ok());
    let key = (t.verify, t.ca.clone(), modified);
    let cache = CACHE.get_or_init(|| Mutex::new(HashMap::new()));
    if let Some(c) = cache.lock().unwrap_or_else(|p| p.into_inner()).get(&key) {
        return Ok(c.clone());
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()?;
    let config = if t.verify {
        builder
            .with_root_certificates(roots(t.ca.as_deref())?)
            .with_no_client_auth()
    } else {
        builder
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(AcceptAny(provider)))
            .with_no_client_auth()
    };
    let config = Arc::new(config);
    cache
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .insert(key, config.clone());
    Ok(config)
}

/// Trusted roots: the given PEM bundle, else the system's, else Mozilla's (built in).
fn roots(ca: Option<&Path>) -> Result<RootCertStore, TlsError> {
    let mut store = RootCertStore::empty();
    let file = ca.or_else(|| Some(Path::new(SYSTEM_BUNDLE)).filter(|p| p.exists()));
    match file {
        Some(path) => {
            let pem = |source| TlsError::Pem {
                path: path.to_path_buf(),
                source,
            };
            for c in CertificateDer::pem_file_iter(path).map_err(pem)? {
                let c = c.map_err(pem)?;
                // A bundle may hold certificates rustls cannot use as roots; skip those.
                let _ = store.add(c);
            }
            if store.is_empty() {
                return Err(TlsError::NoRoots(path.to_path_buf()));
            }
        }
        None => store.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned()),
    }
    Ok(store)
}

/// `tls-verify = false`: any certificate is taken (the expiry is still checked by the probe),
/// but the handshake's signatures are verified as usual.
#[derive(Debug)]
struct AcceptAny(Arc<rustls::crypto::CryptoProvider>);

impl ServerCertVerifier for AcceptAny {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

/// The `notAfter` of an X.509 certificate, in Unix seconds.
pub use herd_core::x509::not_after;
