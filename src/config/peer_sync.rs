//! `[sync]` and `[[sync.peer]]`: the gateways this one shares its admissions with, over mutual
//! TLS.

use std::net::SocketAddr;
use std::path::PathBuf;

use serde::Deserialize;
use toml::Spanned;

use super::ConfigError;
use super::section::{Ctx, Reload, ReloadPlan, default};

/// `[sync]` as written.
#[derive(Deserialize)]
#[serde(deny_unknown_fields, default)]
pub(super) struct RawSync {
    listen: Option<Spanned<String>>,
    ca_file: Option<PathBuf>,
    cert_file: Option<PathBuf>,
    key_file: Option<PathBuf>,
    queue: Spanned<u64>,
    peer: Vec<Spanned<RawPeer>>,
}

impl Default for RawSync {
    fn default() -> Self {
        RawSync {
            listen: None,
            ca_file: None,
            cert_file: None,
            key_file: None,
            queue: default(65_536),
            peer: Vec::new(),
        }
    }
}

/// `[[sync.peer]]` as written.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawPeer {
    name: Spanned<String>,
    address: Spanned<String>,
}

/// One peer gateway.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PeerConfig {
    /// The name its certificate must carry (and this one's certificate says to it).
    pub name: String,
    /// Where its `[sync] listen` is.
    pub address: SocketAddr,
}

/// The certificates of the sync links: every peer's is signed by `ca_file`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SyncTls {
    /// The CA that signs every peer's certificate (and only those are accepted).
    pub ca_file: PathBuf,
    /// This gateway's certificate (chain), for both ends of a link.
    pub cert_file: PathBuf,
    /// Its private key.
    pub key_file: PathBuf,
}

/// `[sync]`: off unless it listens or names a peer.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct SyncConfig {
    /// Where peers connect to send their admissions.
    pub listen: Option<SocketAddr>,
    /// The certificates; present whenever sync is on.
    pub tls: Option<SyncTls>,
    /// Elements waiting for one peer at most; past it the oldest are dropped (counted) and the
    /// peer gets a full snapshot instead.
    pub queue: usize,
    /// The peers this gateway sends its admissions to.
    pub peers: Vec<PeerConfig>,
}

impl SyncConfig {
    /// Whether this gateway syncs at all.
    pub fn enabled(&self) -> bool {
        self.listen.is_some() || !self.peers.is_empty()
    }
}

/// A name a certificate can carry: labels of letters, digits and hyphens, 63 octets at most
/// each, 253 in all.
fn is_host_name(name: &str) -> bool {
    let name = name.strip_suffix('.').unwrap_or(name);
    !name.is_empty()
        && name.len() <= 253
        && name.split('.').all(|l| {
            !l.is_empty()
                && l.len() <= 63
                && !l.starts_with('-')
                && !l.ends_with('-')
                && l.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
        })
}

fn address(ctx: &Ctx, s: &Spanned<String>) -> Result<SocketAddr, ConfigError> {
    s.get_ref()
        .trim()
        .parse()
        .map_err(|_| ctx.entry(s, "not an ip:port address (e.g. 10.0.0.2:8853)"))
}

impl RawSync {
    pub(super) fn validate(&self, ctx: &Ctx) -> Result<SyncConfig, ConfigError> {
        // A missing key is reported at the section's header.
        let line = ctx
            .text
            .lines()
            .position(|l| l.trim() == "[sync]")
            .map_or(1, |i| i + 1);
        let listen = self.listen.as_ref().map(|l| address(ctx, l)).transpose()?;
        let mut peers: Vec<PeerConfig> = Vec::new();
        for p in &self.peer {
            let raw = p.get_ref();
            let name = raw
                .name
                .get_ref()
                .trim()
                .trim_end_matches('.')
                .to_ascii_lowercase();
            if !is_host_name(&name) {
                return Err(ctx.entry(
                    &raw.name,
                    "a peer's name is the DNS name its certificate carries (e.g. gw-b.example.net)",
                ));
            }
            if peers.iter().any(|o| o.name == name) {
                return Err(ctx.entry(&raw.name, "two [[sync.peer]] have this name"));
            }
            let addr = address(ctx, &raw.address)?;
            if Some(addr) == listen {
                return Err(ctx.entry(
                    &raw.address,
                    "this is [sync] listen: a gateway does not sync with itself",
                ));
            }
            peers.push(PeerConfig {
                name,
                address: addr,
            });
        }
        let on = listen.is_some() || !peers.is_empty();
        let tls = match (&self.ca_file, &self.cert_file, &self.key_file) {
            (Some(ca), Some(cert), Some(key)) => Some(SyncTls {
                ca_file: ctx.path(ca),
                cert_file: ctx.path(cert),
                key_file: ctx.path(key),
            }),
            _ if on => {
                return Err(ctx.at(
                    line,
                    "sync",
                    "sync needs ca_file, cert_file and key_file: peers authenticate each other with certificates of one CA",
                ));
            }
            _ => None,
        };
        Ok(SyncConfig {
            listen,
            tls,
            queue: ctx.bounded(&self.queue, "sync", "queue", 1, 10_000_000)? as usize,
            peers,
        })
    }
}

impl Reload for SyncConfig {
    fn reload(&self, new: &Self, plan: &mut ReloadPlan) {
        let SyncConfig {
            listen,
            tls,
            queue,
            peers,
        } = self;
        // The listener, the links and their certificates are set up at start.
        plan.check("sync.listen", *listen != new.listen, false);
        plan.check("sync.ca_file", *tls != new.tls, false);
        plan.check("sync.queue", *queue != new.queue, false);
        plan.check("sync.peer", *peers != new.peers, false);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn host_names() {
        for ok in ["gw-b.example.net", "gw1", "GW.example."] {
            assert!(is_host_name(&ok.to_ascii_lowercase()), "{ok}");
        }
        for bad in ["", "-a.example", "a..b", "a_b.example", &"a".repeat(64)] {
            assert!(!is_host_name(bad), "{bad}");
        }
    }
}
