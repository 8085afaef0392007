//! TLS termination: the server configuration of an https listener, with the certificate
//! chosen by SNI among the listener's certificates and ALPN offering h2 and http/1.1.

use std::collections::HashMap;
use std::io::BufReader;
use std::path::Path;
use std::sync::Arc;

use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use switchyard_config::Certificate;

use crate::RouterError;

/// Picks a listener's certificate by SNI: exact names first, then `*.` wildcards (one
/// label), else the listener's first certificate (clients without SNI, unknown names).
#[derive(Debug)]
pub(crate) struct SniResolver {
    exact: HashMap<String, Arc<CertifiedKey>>,
    wildcard: HashMap<String, Arc<CertifiedKey>>,
    fallback: Arc<CertifiedKey>,
}

impl ResolvesServerCert for SniResolver {
    fn resolve(&self, hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        let Some(name) = hello.server_name() else {
            return Some(self.fallback.clone());
        };
        let name = name.to_ascii_lowercase();
        if let Some(key) = self.exact.get(&name) {
            return Some(key.clone());
        }
        if let Some((_, parent)) = name.split_once('.')
            && let Some(key) = self.wildcard.get(parent)
        {
            return Some(key.clone());
        }
        Some(self.fallback.clone())
    }
}

/// The rustls server configuration for `certificates` (in the listener's order).
pub(crate) fn server_config(
    certificates: &[&Certificate],
) -> Result<Arc<rustls::ServerConfig>, RouterError> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut exact = HashMap::new();
    let mut wildcard = HashMap::new();
    let mut fallback = None;
    for cert in certificates {
        let key = Arc::new(load(cert, &provider)?);
        for name in &cert.server_names {
            let name = name.to_ascii_lowercase();
            match name.strip_prefix("*.") {
                Some(parent) => wildcard.insert(parent.to_owned(), key.clone()),
                None => exact.insert(name, key.clone()),
            };
        }
        fallback.get_or_insert(key);
    }
    let fallback = fallback
        .ok_or_else(|| RouterError::Tls("https listener without certificates".to_owned()))?;
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| RouterError::Tls(e.to_string()))?
        .with_no_client_auth()
        .with_cert_resolver(Arc::new(SniResolver {
            exact,
            wildcard,
            fallback,
        }));
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}

fn load(
    cert: &Certificate,
    provider: &rustls::crypto::CryptoProvider,
) -> Result<CertifiedKey, RouterError> {
    let chain = rustls_pemfile::certs(&mut BufReader::new(open(&cert.cert_file)?.as_slice()))
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| RouterError::Tls(format!("{}: {e}", cert.cert_file.display())))?;
    if chain.is_empty() {
        return Err(RouterError::Tls(format!(
            "{}: no certificate",
            cert.cert_file.display()
        )));
    }
    let key = rustls_pemfile::private_key(&mut BufReader::new(open(&cert.key_file)?.as_slice()))
        .map_err(|e| RouterError::Tls(format!("{}: {e}", cert.key_file.display())))?
        .ok_or_else(|| RouterError::Tls(format!("{}: no private key", cert.key_file.display())))?;
    let signing = provider
        .key_provider
        .load_private_key(key)
        .map_err(|e| RouterError::Tls(format!("{}: {e}", cert.key_file.display())))?;
    Ok(CertifiedKey::new(chain, signing))
}

fn open(path: &Path) -> Result<Vec<u8>, RouterError> {
    std::fs::read(path).map_err(|e| RouterError::Tls(format!("{}: {e}", path.display())))
}
