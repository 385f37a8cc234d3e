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

/// A configuration that trusts nothing, for pools that only speak plain DNS (hickory's pool
/// context wants one).
pub fn unused_config() -> TlsConfig {
    let config = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .expect("ring supports the default protocol versions")
    .with_root_certificates(rustls::RootCertStore::empty())
    .with_no_client_auth();
    TlsConfig { config }
}

/// Where a DoT or DoH server is and what its certificate must say.
#[derive(Clone)]
pub struct Endpoint {
    /// Address and port.
    pub addr: std::net::SocketAddr,
    /// The name its certificate must carry.
    pub server_name: String,
    /// The client configuration dnsfence uses for it.
    pub config: Arc<rustls::ClientConfig>,
}

/// A TLS handshake with `endpoint`, blocking, bounded by a few seconds: what went wrong, or that
/// nothing did. Only run when a failure is being logged.
pub fn diagnose(endpoint: &Endpoint) -> String {
    use std::time::Duration;
    let name = match rustls::pki_types::ServerName::try_from(endpoint.server_name.clone()) {
        Ok(n) => n,
        Err(e) => return format!("'{}' is not a server name: {e}", endpoint.server_name),
    };
    let mut conn = match rustls::ClientConnection::new(endpoint.config.clone(), name) {
        Ok(c) => c,
        Err(e) => return e.to_string(),
    };
    let mut sock =
        match std::net::TcpStream::connect_timeout(&endpoint.addr, Duration::from_secs(3)) {
            Ok(s) => s,
            Err(e) => return format!("cannot connect to {}: {e}", endpoint.addr),
        };
    let _ = sock.set_read_timeout(Some(Duration::from_secs(3)));
    let _ = sock.set_write_timeout(Some(Duration::from_secs(3)));
    while conn.is_handshaking() {
        if let Err(e) = conn.complete_io(&mut sock) {
            return e.to_string();
        }
    }
    "the TLS handshake succeeds; the failure is past it".into()
}
