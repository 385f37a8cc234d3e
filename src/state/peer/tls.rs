//! The sync links' mutual TLS (rustls, no OpenSSL): one CA signs every gateway's certificate;
//! each end presents its own and accepts only the CA's. The listener also checks that the
//! client's certificate is valid for the name of a configured peer, so that a certificate of
//! the same CA for something else cannot feed the sets.

use std::path::Path;
use std::sync::Arc;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};

use crate::config::SyncTls;

/// Both ends' configurations.
#[derive(Clone)]
pub struct Configs {
    /// The listener's: client certificates of the CA required.
    pub server: Arc<rustls::ServerConfig>,
    /// The links': the CA as the only root, this gateway's certificate presented.
    pub client: Arc<rustls::ClientConfig>,
}

fn certs(path: &Path) -> Result<Vec<CertificateDer<'static>>, String> {
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(path)
        .map_err(|e| format!("{}: {e}", path.display()))?
        .collect::<Result<_, _>>()
        .map_err(|e| format!("{}: {e}", path.display()))?;
    if certs.is_empty() {
        return Err(format!("{}: no certificate in it", path.display()));
    }
    Ok(certs)
}

/// Reads the CA, the certificate and the key and builds both configurations; the error names
/// the file.
pub fn configs(tls: &SyncTls) -> Result<Configs, String> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut roots = rustls::RootCertStore::empty();
    for c in certs(&tls.ca_file)? {
        roots
            .add(c)
            .map_err(|e| format!("{}: {e}", tls.ca_file.display()))?;
    }
    let roots = Arc::new(roots);
    let chain = certs(&tls.cert_file)?;
    let key = || {
        PrivateKeyDer::from_pem_file(&tls.key_file)
            .map_err(|e| format!("{}: {e}", tls.key_file.display()))
    };
    let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(
        roots.clone(),
        provider.clone(),
    )
    .build()
    .map_err(|e| format!("{}: {e}", tls.ca_file.display()))?;
    let server = rustls::ServerConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?
        .with_client_cert_verifier(verifier)
        .with_single_cert(chain.clone(), key()?)
        .map_err(|e| format!("{}: {e}", tls.cert_file.display()))?;
    let client = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?
        .with_root_certificates(roots)
        .with_client_auth_cert(chain, key()?)
        .map_err(|e| format!("{}: {e}", tls.cert_file.display()))?;
    Ok(Configs {
        server: Arc::new(server),
        client: Arc::new(client),
    })
}

/// Which of `names` the client certificate `cert` is valid for (its chain was verified in the
/// handshake).
pub fn identify<'n>(cert: &CertificateDer<'_>, names: &'n [String]) -> Option<&'n str> {
    let parsed = rustls::server::ParsedCertificate::try_from(cert).ok()?;
    names.iter().map(String::as_str).find(|name| {
        ServerName::try_from(*name)
            .is_ok_and(|n| rustls::client::verify_server_name(&parsed, &n).is_ok())
    })
}
