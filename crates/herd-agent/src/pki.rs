//! The cluster's PKI: a CA, and certificates that name a node or a person and carry a role.
//!
//! - The CA is self-signed (ECDSA P-256) and signs every certificate of the cluster; agents
//!   and clients trust nothing else.
//! - A certificate names its holder in the subject CN, and its role in a subject-alternative
//!   URI `urn:herd:role:<role>`. Node certificates also carry the node name as a DNS name (the
//!   client checks it against the node it meant to reach) and may serve and connect; admin and
//!   read-only certificates may only connect.
//! - Revocation is by serial number, listed in the config (`[agent] revoked`).

use std::fmt;
use std::path::Path;
use std::time::Duration;

use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    Issuer, KeyPair, KeyUsagePurpose, SanType, SerialNumber,
};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use serde::{Deserialize, Serialize};

use crate::x509;

/// What a certificate lets its holder do.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Role {
    /// An agent: serves, and relays requests an admin signed.
    Node,
    /// Runs commands.
    Admin,
    /// Asks agents who and how they are, nothing more.
    ReadOnly,
}

const ROLE_URI: &str = "urn:herd:role:";

impl Role {
    pub const ALL: [Role; 3] = [Role::Node, Role::Admin, Role::ReadOnly];

    pub fn as_str(self) -> &'static str {
        match self {
            Role::Node => "node",
            Role::Admin => "admin",
            Role::ReadOnly => "read-only",
        }
    }

    pub fn parse(s: &str) -> Option<Role> {
        Role::ALL.into_iter().find(|r| r.as_str() == s)
    }
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Why a certificate could not be read, made or loaded.
#[derive(Debug, thiserror::Error)]
pub enum PkiError {
    #[error("not a readable X.509 certificate")]
    Unreadable,
    #[error("unknown role {0:?}")]
    UnknownRole(String),
    #[error("a herd certificate carries exactly one role ({ROLE_URI}…), this one {0}")]
    Roles(usize),
    #[error("the certificate names nobody (no CN)")]
    NoName,
    #[error("no randomness")]
    NoRandomness,
    #[error("{0}")]
    Rcgen(#[from] rcgen::Error),
    #[error(
        "{0:?} cannot be a node name in a certificate: use letters, digits, '-' and '.' \
         (a DNS name)"
    )]
    NodeName(String),
    #[error("{0:?}: a certificate name is 1 to 64 printable characters")]
    Name(String),
    #[error("the CA certificate: {0}")]
    CaCertificate(rustls::pki_types::pem::Error),
    #[error("the CA certificate names no CA (no CN)")]
    CaName,
    #[error("the CA key: {0}")]
    CaKey(rcgen::Error),
    /// A PEM file that cannot be read.
    #[error("{}: {error}", path.display())]
    File {
        path: std::path::PathBuf,
        error: rustls::pki_types::pem::Error,
    },
    #[error("{}: no certificate in it", .0.display())]
    NoCertificate(std::path::PathBuf),
}

/// Who a certificate names.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Identity {
    pub name: String,
    pub role: Role,
    pub serial: String,
    /// Unix seconds.
    pub not_after: i64,
}

impl Identity {
    /// Reads a herd certificate; an error if it carries no name or no (single) role.
    pub fn from_der(der: &[u8]) -> Result<Identity, PkiError> {
        let info = x509::parse(der).ok_or(PkiError::Unreadable)?;
        let roles: Vec<Role> = info
            .uris
            .iter()
            .filter_map(|u| u.strip_prefix(ROLE_URI))
            .map(|r| Role::parse(r).ok_or_else(|| PkiError::UnknownRole(r.to_string())))
            .collect::<Result<_, _>>()?;
        let [role] = roles[..] else {
            return Err(PkiError::Roles(roles.len()));
        };
        let name = info.common_name.ok_or(PkiError::NoName)?;
        Ok(Identity {
            name,
            role,
            serial: info.serial,
            not_after: info.not_after,
        })
    }
}

/// A key and the certificate for it, in PEM.
#[derive(Debug, Clone)]
pub struct Issued {
    pub cert_pem: String,
    pub key_pem: String,
    pub serial: String,
}

/// How long certificates last unless told otherwise: 10 years for the CA, 2 for the rest.
pub const CA_DAYS: u32 = 3650;
pub const CERT_DAYS: u32 = 730;

fn dn(common_name: &str) -> DistinguishedName {
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CommonName, common_name);
    dn
}

fn serial() -> Result<SerialNumber, PkiError> {
    let mut bytes = [0u8; 16];
    rustls::crypto::ring::default_provider()
        .secure_random
        .fill(&mut bytes)
        .map_err(|_| PkiError::NoRandomness)?;
    bytes[0] &= 0x7f; // positive
    bytes[0] |= 0x40; // and 16 bytes long, without a leading zero
    Ok(SerialNumber::from_slice(&bytes))
}

fn validity(params: &mut CertificateParams, days: u32) {
    let now = time::OffsetDateTime::now_utc();
    // An hour back, for clocks a little behind.
    params.not_before = now - Duration::from_secs(3600);
    params.not_after = now + Duration::from_secs(u64::from(days) * 86_400);
}

fn ca_params(common_name: &str) -> CertificateParams {
    let mut p = CertificateParams::default();
    p.distinguished_name = dn(common_name);
    p.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    p.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    p
}

/// A new cluster CA named `common_name`.
pub fn new_ca(common_name: &str, days: u32) -> Result<Issued, PkiError> {
    let key = KeyPair::generate()?;
    let mut p = ca_params(common_name);
    p.serial_number = Some(serial()?);
    validity(&mut p, days);
    let serial = p
        .serial_number
        .as_ref()
        .map(|s| x509::serial_hex(&s.to_bytes()));
    let cert = p.self_signed(&key)?;
    Ok(Issued {
        cert_pem: cert.pem(),
        key_pem: key.serialize_pem(),
        serial: serial.unwrap_or_default(),
    })
}

/// Whether `name` can be a node's name in its certificate (a DNS name: the client checks it).
pub fn check_node_name(name: &str) -> Result<(), PkiError> {
    let ok = !name.is_empty()
        && name.len() <= 253
        && name.split('.').all(|l| {
            !l.is_empty()
                && l.len() <= 63
                && !l.starts_with('-')
                && !l.ends_with('-')
                && l.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
        });
    if ok {
        Ok(())
    } else {
        Err(PkiError::NodeName(name.to_string()))
    }
}

/// A key and certificate for `name` with `role`, signed by the CA.
pub fn issue(
    ca_cert_pem: &str,
    ca_key_pem: &str,
    name: &str,
    role: Role,
    days: u32,
) -> Result<Issued, PkiError> {
    if name.is_empty() || name.len() > 64 || name.chars().any(char::is_control) {
        return Err(PkiError::Name(name.to_string()));
    }
    if role == Role::Node {
        check_node_name(name)?;
    }
    let ca_der =
        CertificateDer::from_pem_slice(ca_cert_pem.as_bytes()).map_err(PkiError::CaCertificate)?;
    let ca_name = x509::parse(&ca_der)
        .and_then(|i| i.common_name)
        .ok_or(PkiError::CaName)?;
    let ca_key = KeyPair::from_pem(ca_key_pem).map_err(PkiError::CaKey)?;
    let issuer = Issuer::new(ca_params(&ca_name), ca_key);

    let key = KeyPair::generate()?;
    let mut p = CertificateParams::default();
    p.distinguished_name = dn(name);
    p.serial_number = Some(serial()?);
    validity(&mut p, days);
    p.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    let uri = format!("{ROLE_URI}{role}");
    p.subject_alt_names = vec![SanType::URI(uri.try_into()?)];
    p.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
    if role == Role::Node {
        p.subject_alt_names.push(SanType::DnsName(name.try_into()?));
        p.extended_key_usages
            .push(ExtendedKeyUsagePurpose::ServerAuth);
    }
    let serial = p
        .serial_number
        .as_ref()
        .map(|s| x509::serial_hex(&s.to_bytes()));
    let cert = p.signed_by(&key, &issuer)?;
    Ok(Issued {
        cert_pem: cert.pem(),
        key_pem: key.serialize_pem(),
        serial: serial.unwrap_or_default(),
    })
}

/// The certificates in a PEM file (a chain or one certificate).
pub fn load_certs(path: &Path) -> Result<Vec<CertificateDer<'static>>, PkiError> {
    let certs: Vec<_> = CertificateDer::pem_file_iter(path)
        .and_then(|i| i.collect::<Result<Vec<_>, _>>())
        .map_err(|error| PkiError::File {
            path: path.to_path_buf(),
            error,
        })?;
    if certs.is_empty() {
        return Err(PkiError::NoCertificate(path.to_path_buf()));
    }
    Ok(certs)
}

/// The private key in a PEM file.
pub fn load_key(path: &Path) -> Result<PrivateKeyDer<'static>, PkiError> {
    PrivateKeyDer::from_pem_file(path).map_err(|error| PkiError::File {
        path: path.to_path_buf(),
        error,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn issued_certificates_carry_name_role_and_serial() {
        let ca = new_ca("herd test CA", 10).unwrap();
        for role in Role::ALL {
            let c = issue(&ca.cert_pem, &ca.key_pem, "node07", role, 5).unwrap();
            let der = CertificateDer::from_pem_slice(c.cert_pem.as_bytes()).unwrap();
            let id = Identity::from_der(&der).unwrap();
            assert_eq!((id.name.as_str(), id.role), ("node07", role));
            assert_eq!(id.serial, c.serial);
            assert_eq!(id.serial.len(), 32);
            let info = x509::parse(&der).unwrap();
            assert_eq!(info.dns_names.is_empty(), role != Role::Node);
        }
        let ca_id =
            x509::parse(&CertificateDer::from_pem_slice(ca.cert_pem.as_bytes()).unwrap()).unwrap();
        assert_eq!(ca_id.common_name.as_deref(), Some("herd test CA"));
        assert!(Identity::from_der(
            &CertificateDer::from_pem_slice(ca.cert_pem.as_bytes()).unwrap()
        )
        .is_err());
    }

    #[test]
    fn node_names_must_be_dns_names() {
        let ca = new_ca("c", 1).unwrap();
        assert!(issue(&ca.cert_pem, &ca.key_pem, "web_1", Role::Node, 1).is_err());
        assert!(issue(&ca.cert_pem, &ca.key_pem, "-x", Role::Node, 1).is_err());
        assert!(issue(&ca.cert_pem, &ca.key_pem, "rack1-node04.dc", Role::Node, 1).is_ok());
        assert!(issue(&ca.cert_pem, &ca.key_pem, "alice smith", Role::Admin, 1).is_ok());
    }
}
