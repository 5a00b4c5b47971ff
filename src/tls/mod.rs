//! TLS termination with rustls (DESIGN §7).
//!
//! [`Tls`] owns the certificates and the rustls server configuration: TLS 1.2
//! and 1.3, ALPN `h2` then `http/1.1`. Certificates come from `--cert/--key`
//! pairs or, without them, from [`auto`] (mkcert, else self-signed, cached).
//! The certificate for a handshake is chosen by SNI among every loaded
//! certificate's names (exact, then wildcard); an unknown or absent SNI gets
//! the first (default) certificate, so per-host certificates plug in by
//! adding pairs.
//!
//! [`Tls::reload`] re-reads the files (SIGHUP, `rip-server reload`) and swaps
//! the set atomically; a bad new certificate keeps the old ones serving.

pub mod auto;
pub mod material;

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, RwLock};

use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use rustls::ServerConfig;
use tokio_rustls::TlsAcceptor;

pub use material::{CertInfo, Material, TlsError};

/// A certificate file and its key file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CertPair {
    pub cert: PathBuf,
    pub key: PathBuf,
}

/// Where certificates come from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TlsSource {
    /// `--cert/--key` pairs; the first is the default.
    Files(Vec<CertPair>),
    /// mkcert or self-signed, cached in the state directory.
    Auto,
}

/// One loaded certificate and how it was obtained, for the startup summary.
pub struct Loaded {
    pub material: Material,
    pub origin: String,
    pub trust_hint: Option<String>,
    /// Registered host names it is for, besides the names it holds (a host
    /// entry's own certificate is used for that host whatever it names).
    pub hosts: Vec<String>,
}

/// A registered host's own certificate (from its registry entry).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostCert {
    /// `example.com`, or `*.example.com` for a wildcard entry.
    pub host: String,
    pub pair: CertPair,
}

/// The certificates in use, looked up by SNI.
#[derive(Debug)]
struct CertStore {
    default: Arc<CertifiedKey>,
    exact: HashMap<String, Arc<CertifiedKey>>,
    wildcard: HashMap<String, Arc<CertifiedKey>>,
}

impl CertStore {
    fn new(loaded: &[Loaded]) -> Option<Self> {
        let default = loaded.first()?.material.key.clone();
        let mut exact = HashMap::new();
        let mut wildcard = HashMap::new();
        // A host entry's own certificate wins for its host, so its names are
        // indexed first; then every certificate's own names, first come first.
        let explicit = loaded
            .iter()
            .flat_map(|item| item.hosts.iter().map(move |name| (name, item)));
        let named = loaded.iter().flat_map(|item| {
            item.material
                .info
                .names
                .iter()
                .map(move |name| (name, item))
        });
        for (name, item) in explicit.chain(named) {
            let name = name.to_ascii_lowercase();
            match name.strip_prefix("*.") {
                Some(parent) => wildcard.entry(parent.to_string()),
                None => exact.entry(name),
            }
            .or_insert_with(|| item.material.key.clone());
        }
        Some(CertStore {
            default,
            exact,
            wildcard,
        })
    }

    fn lookup(&self, server_name: Option<&str>) -> Arc<CertifiedKey> {
        let Some(name) = server_name.map(|n| n.to_ascii_lowercase()) else {
            return self.default.clone();
        };
        if let Some(key) = self.exact.get(&name) {
            return key.clone();
        }
        name.split_once('.')
            .and_then(|(_, parent)| self.wildcard.get(parent))
            .unwrap_or(&self.default)
            .clone()
    }
}

#[derive(Debug)]
struct Resolver {
    store: RwLock<Arc<CertStore>>,
}

impl ResolvesServerCert for Resolver {
    fn resolve(&self, hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        let store = self.store.read().unwrap_or_else(|p| p.into_inner()).clone();
        Some(store.lookup(hello.server_name()))
    }
}

/// TLS for the HTTPS listener.
pub struct Tls {
    resolver: Arc<Resolver>,
    acceptor: TlsAcceptor,
    source: RwLock<TlsSource>,
    state_dir: PathBuf,
    /// What the certificates must cover: the names an automatic certificate
    /// holds, and the registered hosts' own certificates.
    hosts: RwLock<Hosts>,
}

#[derive(Debug, Clone, Default)]
struct Hosts {
    names: Vec<String>,
    certs: Vec<HostCert>,
}

impl Tls {
    /// Loads every certificate; fails with the file and the problem.
    /// `names` are the host names an automatic certificate must cover.
    pub fn load(
        source: TlsSource,
        state_dir: PathBuf,
        names: Vec<String>,
        certs: Vec<HostCert>,
    ) -> Result<(Tls, Vec<Loaded>), TlsError> {
        let hosts = Hosts { names, certs };
        let loaded = load_all(&source, &state_dir, &hosts)?;
        let store =
            CertStore::new(&loaded).ok_or_else(|| TlsError::Generate("no certificate".into()))?;
        let resolver = Arc::new(Resolver {
            store: RwLock::new(Arc::new(store)),
        });
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let mut config = ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(|e| TlsError::Generate(format!("TLS configuration: {e}")))?
            .with_no_client_auth()
            .with_cert_resolver(resolver.clone());
        config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
        let tls = Tls {
            resolver,
            acceptor: TlsAcceptor::from(Arc::new(config)),
            source: RwLock::new(source),
            state_dir,
            hosts: RwLock::new(hosts),
        };
        Ok((tls, loaded))
    }

    pub fn acceptor(&self) -> TlsAcceptor {
        self.acceptor.clone()
    }

    /// Re-reads the certificates (from `source` if given, else the current
    /// source) and swaps them in; on error the current ones keep serving.
    pub fn reload(&self, source: Option<TlsSource>) -> Result<Vec<Loaded>, TlsError> {
        let source = match source {
            Some(source) => source,
            None => self
                .source
                .read()
                .unwrap_or_else(|p| p.into_inner())
                .clone(),
        };
        let hosts = self.hosts.read().unwrap_or_else(|p| p.into_inner()).clone();
        let loaded = self.swap_in(&source, &hosts)?;
        *self.source.write().unwrap_or_else(|p| p.into_inner()) = source;
        Ok(loaded)
    }

    /// The registered hosts changed: an automatic certificate must cover
    /// `names` (made anew if the cached one does not), and `certs` are the
    /// hosts' own. On error the current certificates keep serving.
    pub fn set_hosts(
        &self,
        names: Vec<String>,
        certs: Vec<HostCert>,
    ) -> Result<Vec<Loaded>, TlsError> {
        let hosts = Hosts { names, certs };
        let source = self
            .source
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone();
        let loaded = self.swap_in(&source, &hosts)?;
        *self.hosts.write().unwrap_or_else(|p| p.into_inner()) = hosts;
        Ok(loaded)
    }

    fn swap_in(&self, source: &TlsSource, hosts: &Hosts) -> Result<Vec<Loaded>, TlsError> {
        let loaded = load_all(source, &self.state_dir, hosts)?;
        let store =
            CertStore::new(&loaded).ok_or_else(|| TlsError::Generate("no certificate".into()))?;
        *self
            .resolver
            .store
            .write()
            .unwrap_or_else(|p| p.into_inner()) = Arc::new(store);
        Ok(loaded)
    }
}

/// The base certificates, then each host's own.
fn load_all(
    source: &TlsSource,
    state_dir: &std::path::Path,
    hosts: &Hosts,
) -> Result<Vec<Loaded>, TlsError> {
    let mut loaded = load_source(source, state_dir, &hosts.names)?;
    for cert in &hosts.certs {
        let material = material::load(&cert.pair.cert, &cert.pair.key)?;
        loaded.push(Loaded {
            material,
            origin: format!("for {} from {}", cert.host, cert.pair.cert.display()),
            trust_hint: None,
            hosts: vec![cert.host.clone()],
        });
    }
    Ok(loaded)
}

fn load_source(
    source: &TlsSource,
    state_dir: &std::path::Path,
    names: &[String],
) -> Result<Vec<Loaded>, TlsError> {
    match source {
        TlsSource::Files(pairs) => pairs
            .iter()
            .map(|pair| {
                let material = material::load(&pair.cert, &pair.key)?;
                if !material.info.valid_for(0) {
                    tracing::warn!(
                        cert = %pair.cert.display(),
                        expired = %material.info.expiry(),
                        "the certificate has EXPIRED; clients will refuse it. Renew it and run 'rip-server reload'"
                    );
                }
                Ok(Loaded { material, origin: format!("from {}", pair.cert.display()), trust_hint: None, hosts: Vec::new() })
            })
            .collect(),
        TlsSource::Auto => {
            let cert = auto::ensure(state_dir, names)?;
            let (origin, hint) = match cert.issuer {
                auto::Issuer::Mkcert => (
                    format!("from mkcert, cached at {}", cert.cert_path.display()),
                    "trusted by this machine's browsers through mkcert's local CA (mkcert -install)".to_string(),
                ),
                auto::Issuer::SelfSigned => (
                    format!(
                        "self-signed, {} at {}",
                        if cert.fresh { "created and cached" } else { "reused from" },
                        cert.cert_path.display()
                    ),
                    format!(
                        "trust it with: curl --cacert {} ... (or install mkcert, delete the cached certificate and restart)",
                        cert.cert_path.display()
                    ),
                ),
            };
            Ok(vec![Loaded { material: cert.material, origin, trust_hint: Some(hint), hosts: Vec::new() }])
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn generated(names: &[&str]) -> Loaded {
        let cert = rcgen::generate_simple_self_signed(
            names.iter().map(|n| n.to_string()).collect::<Vec<_>>(),
        )
        .unwrap();
        let der = rustls::pki_types::CertificateDer::from(cert.cert.der().to_vec());
        let key =
            rustls::pki_types::PrivateKeyDer::try_from(cert.key_pair.serialize_der()).unwrap();
        let material =
            material::certify(vec![der], key, "a.pem".as_ref(), "a.key".as_ref()).unwrap();
        Loaded {
            material,
            origin: String::new(),
            trust_hint: None,
            hosts: Vec::new(),
        }
    }

    #[test]
    fn sni_picks_exact_then_wildcard_then_default() {
        let a = generated(&["a.example"]);
        let b = generated(&["b.example", "*.apps.example"]);
        let (ka, kb) = (a.material.key.clone(), b.material.key.clone());
        let store = CertStore::new(&[a, b]).unwrap();
        assert!(Arc::ptr_eq(&store.lookup(Some("a.example")), &ka));
        assert!(Arc::ptr_eq(&store.lookup(Some("B.Example")), &kb));
        assert!(Arc::ptr_eq(&store.lookup(Some("shop.apps.example")), &kb));
        assert!(Arc::ptr_eq(&store.lookup(Some("unknown.example")), &ka));
        assert!(Arc::ptr_eq(&store.lookup(None), &ka));
    }
}
