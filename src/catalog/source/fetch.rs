//! Fetching a source over HTTPS: the page (one `GET` of its Markdown), or the feed
//! (`GET <base>/version/<instance>` to poll, `GET <base>/endpoints/<instance>?ServiceAreas=MEM,Common`
//! when the version moved, each with a fresh `clientrequestid`). Every error names the URL
//! requested.
//!
//! The HTTP client is ureq 3 (blocking; rustls with ring and the platform verifier): a small,
//! maintained crate whose TLS stack is the rustls dnsfence already carries for DoT/DoH (reqwest
//! would add hyper and its own connection pool for two GETs a day). It runs on a blocking thread.
//! The feed host is resolved through dnsfence's own upstream pool, never through the system
//! resolver (which on a gateway may be dnsfence itself, and would then filter it) and never
//! through the policy: fetching the feed is not a client query.

use std::fmt;
use std::io::Read as _;
use std::net::{IpAddr, SocketAddr};
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwap;
use hickory_proto::rr::{Name, RecordType};
use ureq::unversioned::resolver::{ResolvedSocketAddrs, Resolver};
use ureq::unversioned::transport::NextTimeout;

use crate::resolve::answer::AnswerAddr;
use crate::resolve::upstream::Upstream;

/// The largest body read (the MEM feed and the page are tens of KiB).
const MAX_BODY: u64 = 8 << 20;

/// Why a fetch failed. `kind()` is the metric label.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FetchError {
    /// The server answered with an error status.
    #[error("{0}: HTTP {1}")]
    Status(String, u16),
    /// Resolving, connecting, TLS (a bad certificate lands here) or reading failed.
    #[error("{0}")]
    Transport(String),
    /// The body is not what the service returns.
    #[error("{0}")]
    Invalid(String),
}

impl FetchError {
    /// A bounded label.
    pub fn kind(&self) -> &'static str {
        match self {
            FetchError::Status(..) => "http_error",
            FetchError::Transport(_) => "transport",
            FetchError::Invalid(_) => "invalid",
        }
    }
}

/// Resolves a source's host with dnsfence's upstream pool (A, then AAAA), from a blocking thread.
pub struct ViaUpstream {
    /// The runtime the pool lives on.
    pub runtime: tokio::runtime::Handle,
    /// The pool (swapped by reloads).
    pub upstream: Arc<ArcSwap<Upstream>>,
}

impl fmt::Debug for ViaUpstream {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("ViaUpstream")
    }
}

impl Resolver for ViaUpstream {
    fn resolve(
        &self,
        uri: &ureq::http::Uri,
        _config: &ureq::config::Config,
        _timeout: NextTimeout,
    ) -> Result<ResolvedSocketAddrs, ureq::Error> {
        let host = uri.host().ok_or(ureq::Error::HostNotFound)?;
        let port = uri.port_u16().unwrap_or(443);
        let mut out = self.empty();
        let host = host.trim_start_matches('[').trim_end_matches(']');
        if let Ok(ip) = host.parse::<IpAddr>() {
            out.push(SocketAddr::new(ip, port));
            return Ok(out);
        }
        let name = Name::from_ascii(format!("{}.", host.to_ascii_lowercase()))
            .map_err(|_| ureq::Error::HostNotFound)?;
        let upstream = self.upstream.load_full();
        for qtype in [RecordType::A, RecordType::AAAA] {
            let resolved = self.runtime.block_on(upstream.resolve(&name, qtype));
            if let Ok(res) = resolved.result {
                for a in crate::resolve::answer::addresses(&res.resolution.answers) {
                    let AnswerAddr { ip, .. } = a;
                    out.push(SocketAddr::new(ip, port));
                }
            }
            if !out.is_empty() {
                return Ok(out);
            }
        }
        Err(ureq::Error::HostNotFound)
    }
}

/// An HTTPS client for the catalog sources.
pub struct Fetcher {
    agent: ureq::Agent,
}

/// A random `clientrequestid` (the service asks for a GUID per request).
fn request_id() -> String {
    let mut b = [0u8; 16];
    if let Ok(mut f) = std::fs::File::open("/dev/urandom") {
        let _ = f.read_exact(&mut b);
    }
    b[6] = (b[6] & 0x0f) | 0x40;
    b[8] = (b[8] & 0x3f) | 0x80;
    let h: String = b.iter().map(|x| format!("{x:02x}")).collect();
    format!(
        "{}-{}-{}-{}-{}",
        &h[0..8],
        &h[8..12],
        &h[12..16],
        &h[16..20],
        &h[20..32]
    )
}

impl Fetcher {
    /// A client trusting `ca_file` (PEM) or the system trust store, resolving names with
    /// `resolver` (or the system, for the command line without a config), each request bounded
    /// by `timeout`.
    pub fn new(
        ca_file: Option<&Path>,
        resolver: Option<ViaUpstream>,
        timeout: Duration,
    ) -> Result<Fetcher, String> {
        use ureq::tls::{Certificate, RootCerts, TlsConfig};
        let roots = match ca_file {
            None => RootCerts::PlatformVerifier,
            Some(path) => {
                let pem = std::fs::read(path).map_err(|e| format!("{}: {e}", path.display()))?;
                let certs: Vec<Certificate<'static>> = ureq::tls::parse_pem(&pem)
                    .filter_map(|item| match item {
                        Ok(ureq::tls::PemItem::Certificate(c)) => Some(c),
                        _ => None,
                    })
                    .collect();
                if certs.is_empty() {
                    return Err(format!("{}: no certificate in it", path.display()));
                }
                RootCerts::Specific(Arc::new(certs))
            }
        };
        let config = ureq::Agent::config_builder()
            .tls_config(TlsConfig::builder().root_certs(roots).build())
            .timeout_global(Some(timeout))
            .http_status_as_error(false)
            .user_agent(concat!("dnsfence/", env!("CARGO_PKG_VERSION")))
            .build();
        let agent = match resolver {
            Some(r) => ureq::Agent::with_parts(
                config,
                ureq::unversioned::transport::DefaultConnector::new(),
                r,
            ),
            None => ureq::Agent::new_with_config(config),
        };
        Ok(Fetcher { agent })
    }

    /// `GET url`: the body of a 200 answer. Errors name the URL.
    pub fn get(&self, url: &str) -> Result<String, FetchError> {
        let named = |e: String| format!("{url}: {e}");
        let mut response = self
            .agent
            .get(url)
            .call()
            .map_err(|e| FetchError::Transport(named(e.to_string())))?;
        let status = response.status().as_u16();
        if status != 200 {
            return Err(FetchError::Status(url.to_string(), status));
        }
        response
            .body_mut()
            .with_config()
            .limit(MAX_BODY)
            .read_to_string()
            .map_err(|e| FetchError::Transport(named(e.to_string())))
    }
}

/// One instance of the endpoint web service.
pub struct FeedService {
    /// The client.
    pub fetcher: Fetcher,
    /// `https://endpoints.office.com`, or a mirror.
    pub base: String,
    /// `Worldwide`, …
    pub instance: String,
}

impl FeedService {
    /// The instance's current version (`latest`).
    pub fn version(&self) -> Result<String, FetchError> {
        #[derive(serde::Deserialize)]
        struct Version {
            latest: String,
        }
        let url = format!(
            "{}/version/{}?clientrequestid={}",
            self.base.trim_end_matches('/'),
            self.instance,
            request_id()
        );
        let body = self.fetcher.get(&url)?;
        let v: Version = serde_json::from_str(&body)
            .map_err(|e| FetchError::Invalid(format!("{url}: version: {e}")))?;
        Ok(v.latest)
    }

    /// The instance's MEM and Common endpoint sets, as JSON text.
    pub fn endpoints(&self) -> Result<String, FetchError> {
        self.fetcher.get(&format!(
            "{}&clientrequestid={}",
            self.source(),
            request_id()
        ))
    }

    /// The endpoints URL without its request id, for logs and headers.
    pub fn source(&self) -> String {
        format!(
            "{}/endpoints/{}?ServiceAreas=MEM,Common",
            self.base.trim_end_matches('/'),
            self.instance
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn request_ids_are_version_4_guids() {
        let a = request_id();
        assert_eq!(a.len(), 36);
        assert_eq!(&a[14..15], "4");
        assert_ne!(a, request_id());
    }
}
