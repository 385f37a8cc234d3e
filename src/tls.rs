//! TLS for DNS-over-TLS and DNS-over-HTTPS upstreams (rustls, no OpenSSL): the system's trust
//! store, or the CA certificates of `[upstream] tls_ca_file` for a private resolver.

use std::path::Path;
use std::sync::Arc;

use hickory_resolver::TlsConfig;
use rustls::pki_types::CertificateDer;
use rustls::pki_types::pem::PemObject;

/// The client configuration: `ca_file`'s certificates as the only roots, or the system's trust
/// store (rustls-platform-verifier) without one.
pub fn client_config(ca_file: Option<&Path>) -> Result<TlsConfig, String> {
    let Some(path) = ca_file else {
        return TlsConfig::new().map_err(|e| format!("the system trust store: {e}"));
    };
    let mut roots = rustls::RootCertStore::empty();
    let certs =
        CertificateDer::pem_file_iter(path).map_err(|e| format!("{}: {e}", path.display()))?;
    for cert in certs {
        let cert = cert.map_err(|e| format!("{}: {e}", path.display()))?;
        roots
            .add(cert)
            .map_err(|e| format!("{}: {e}", path.display()))?;
    }
    if roots.is_empty() {
        return Err(format!("{}: no certificate in it", path.display()));
    }
    let config = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .map_err(|e| e.to_string())?
    .with_root_certificates(roots)
    .with_no_client_auth();
    Ok(TlsConfig { config })
}
