//! Certificate material: reading a PEM certificate chain and private key,
//! checking that they belong together, and describing the certificate for
//! the operator (subject, names, issuer, expiry, SHA-256 fingerprint).
//!
//! Every failure names the file and what was wrong with it, so a bad
//! `--cert`/`--key` stops the server before anything listens (exit 2).

use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls::crypto::ring::sign::any_supported_type;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::sign::CertifiedKey;
use sha2::{Digest, Sha256};
use x509_parser::extensions::GeneralName;
use x509_parser::prelude::{FromDer, X509Certificate};

/// Why certificate material could not be used.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("{what} file '{path}' does not exist")]
    Missing { what: &'static str, path: PathBuf },
    #[error("cannot read {what} file '{path}': {source}")]
    Unreadable {
        what: &'static str,
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("'{0}' is not a PEM file: expected a '-----BEGIN ...-----' block")]
    NotPem(PathBuf),
    #[error("'{0}' contains no certificate: expected a '-----BEGIN CERTIFICATE-----' block")]
    NoCertificate(PathBuf),
    #[error(
        "'{0}' contains no private key: expected a '-----BEGIN PRIVATE KEY-----', \
         'RSA PRIVATE KEY' or 'EC PRIVATE KEY' block"
    )]
    NoKey(PathBuf),
    #[error("'{path}': the private key cannot be used: {message} (RSA, ECDSA P-256/P-384 and Ed25519 are supported)")]
    BadKey { path: PathBuf, message: String },
    #[error("'{path}': the certificate cannot be parsed: {message}")]
    BadCertificate { path: PathBuf, message: String },
    #[error("the private key in '{key}' does not match the certificate in '{cert}'")]
    Mismatch { cert: PathBuf, key: PathBuf },
    #[error("{0}")]
    Generate(String),
    #[error("state directory '{path}': {message}")]
    StateDir { path: PathBuf, message: String },
}

/// A usable certificate and what an operator needs to know about it.
#[derive(Clone)]
pub struct Material {
    pub key: Arc<CertifiedKey>,
    pub info: CertInfo,
}

/// A human summary of a certificate.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CertInfo {
    pub subject: String,
    pub issuer: String,
    /// DNS names and IP addresses it is valid for.
    pub names: Vec<String>,
    pub not_after: i64,
    pub fingerprint: String,
}

impl CertInfo {
    /// Whether it is still valid `margin_secs` from now.
    pub fn valid_for(&self, margin_secs: i64) -> bool {
        now_unix() + margin_secs < self.not_after
    }

    pub fn covers(&self, name: &str) -> bool {
        self.names.iter().any(|n| n.eq_ignore_ascii_case(name))
    }

    pub fn expiry(&self) -> String {
        time::OffsetDateTime::from_unix_timestamp(self.not_after)
            .map(|t| format!("{:04}-{:02}-{:02}", t.year(), u8::from(t.month()), t.day()))
            .unwrap_or_else(|_| "unknown".into())
    }
}

impl fmt::Display for CertInfo {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let days = (self.not_after - now_unix()) / 86_400;
        writeln!(f, "  subject: {}", self.subject)?;
        writeln!(f, "  names:   {}", self.names.join(", "))?;
        writeln!(f, "  issuer:  {}", self.issuer)?;
        writeln!(f, "  expires: {} ({days} days)", self.expiry())?;
        write!(f, "  sha256:  {}", self.fingerprint)
    }
}

pub fn now_unix() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64)
}

fn read(what: &'static str, path: &Path) -> Result<Vec<u8>, TlsError> {
    std::fs::read(path).map_err(|source| match source.kind() {
        std::io::ErrorKind::NotFound => TlsError::Missing {
            what,
            path: path.to_path_buf(),
        },
        _ => TlsError::Unreadable {
            what,
            path: path.to_path_buf(),
            source,
        },
    })
}

/// Loads a PEM certificate chain and its private key, and checks they match.
pub fn load(cert_path: &Path, key_path: &Path) -> Result<Material, TlsError> {
    let cert_pem = read("certificate", cert_path)?;
    let key_pem = read("key", key_path)?;
    let chain = parse_chain(cert_path, &cert_pem)?;
    let key = parse_key(key_path, &key_pem)?;
    certify(chain, key, cert_path, key_path)
}

fn parse_chain(path: &Path, pem: &[u8]) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    if !contains(pem, b"-----BEGIN ") {
        return Err(TlsError::NotPem(path.to_path_buf()));
    }
    let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(pem)
        .collect::<Result<_, _>>()
        .map_err(|e| TlsError::BadCertificate {
            path: path.to_path_buf(),
            message: e.to_string(),
        })?;
    if chain.is_empty() {
        return Err(TlsError::NoCertificate(path.to_path_buf()));
    }
    Ok(chain)
}

fn parse_key(path: &Path, pem: &[u8]) -> Result<PrivateKeyDer<'static>, TlsError> {
    if !contains(pem, b"-----BEGIN ") {
        return Err(TlsError::NotPem(path.to_path_buf()));
    }
    PrivateKeyDer::from_pem_slice(pem).map_err(|e| match e {
        rustls::pki_types::pem::Error::NoItemsFound => TlsError::NoKey(path.to_path_buf()),
        other => TlsError::BadKey {
            path: path.to_path_buf(),
            message: other.to_string(),
        },
    })
}

/// Pairs a chain with its key; refuses a key that belongs to another certificate.
pub fn certify(
    chain: Vec<CertificateDer<'static>>,
    key: PrivateKeyDer<'static>,
    cert_path: &Path,
    key_path: &Path,
) -> Result<Material, TlsError> {
    let info = describe(cert_path, &chain[0])?;
    let signing_key = any_supported_type(&key).map_err(|e| TlsError::BadKey {
        path: key_path.to_path_buf(),
        message: e.to_string(),
    })?;
    let certified = CertifiedKey::new(chain, signing_key);
    match certified.keys_match() {
        Ok(()) | Err(rustls::Error::InconsistentKeys(rustls::InconsistentKeys::Unknown)) => {}
        Err(_) => {
            return Err(TlsError::Mismatch {
                cert: cert_path.to_path_buf(),
                key: key_path.to_path_buf(),
            })
        }
    }
    Ok(Material {
        key: Arc::new(certified),
        info,
    })
}

/// Reads the subject, issuer, names and expiry of a DER certificate.
pub fn describe(path: &Path, der: &CertificateDer<'_>) -> Result<CertInfo, TlsError> {
    let bad = |message: String| TlsError::BadCertificate {
        path: path.to_path_buf(),
        message,
    };
    let (_, cert) = X509Certificate::from_der(der.as_ref()).map_err(|e| bad(e.to_string()))?;
    let mut names = Vec::new();
    if let Ok(Some(san)) = cert.subject_alternative_name() {
        for name in &san.value.general_names {
            match name {
                GeneralName::DNSName(dns) => names.push(dns.to_string()),
                GeneralName::IPAddress(bytes) => {
                    if let Some(ip) = ip_from_bytes(bytes) {
                        names.push(ip.to_string());
                    }
                }
                _ => {}
            }
        }
    }
    let fingerprint = Sha256::digest(der.as_ref())
        .iter()
        .map(|b| format!("{b:02X}"))
        .collect::<Vec<_>>()
        .join(":");
    Ok(CertInfo {
        subject: cert.subject().to_string(),
        issuer: cert.issuer().to_string(),
        names,
        not_after: cert.validity().not_after.timestamp(),
        fingerprint,
    })
}

fn ip_from_bytes(bytes: &[u8]) -> Option<std::net::IpAddr> {
    match bytes.len() {
        4 => <[u8; 4]>::try_from(bytes).ok().map(std::net::IpAddr::from),
        16 => <[u8; 16]>::try_from(bytes).ok().map(std::net::IpAddr::from),
        _ => None,
    }
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}
