//! The Microsoft 365 endpoint web service's JSON (`/endpoints/<instance>?ServiceAreas=MEM,Common`)
//! read into a [`Source`]. Microsoft's Intune page now says this service no longer returns
//! accurate data for Intune; it is kept for the ids it still serves (README, "Keeping the catalog
//! current") and for the Common area's sets the catalog holds (Entra sign-in 56 and 59,
//! certificate revocation 84 and 125, activation 83, the Microsoft 365 apps' sets), which
//! devices depend on and which nothing else publishes. An unknown field rejects the whole feed: the service changed shape and nobody has
//! looked at it yet.

use std::collections::BTreeSet;

use serde::Deserialize;

use super::{Source, SourceKind, SourceSet, parse_ports, validate_name, validate_network};
use crate::catalog::zones::{Category, Proto};

/// One endpoint set as the service returns it.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct RawFeedSet {
    /// The same ids as the page's tables.
    id: u32,
    /// `MEM`, `Common`, …
    service_area: String,
    /// Display name of the service area.
    #[serde(default)]
    service_area_display_name: Option<String>,
    /// Names and `*.` wildcards.
    #[serde(default)]
    urls: Vec<String>,
    /// IPv4/IPv6 CIDRs.
    #[serde(default)]
    ips: Vec<String>,
    /// `"80,443"`.
    #[serde(default)]
    tcp_ports: Option<String>,
    /// `"123"`.
    #[serde(default)]
    udp_ports: Option<String>,
    /// ExpressRoute.
    express_route: bool,
    /// `Optimize`, `Allow`, `Default`.
    category: String,
    /// Required for connectivity.
    required: bool,
    /// Why it is optional, for optional sets.
    #[serde(default)]
    notes: Option<String>,
}

/// The feed could not be used at all.
#[derive(Debug, thiserror::Error)]
pub enum FeedError {
    /// Not the JSON the service returns (truncated, an unknown field, a wrong type).
    #[error("feed: line {line}, column {column}: {message}")]
    Json {
        /// Where.
        line: usize,
        /// Where.
        column: usize,
        /// What serde_json said.
        message: String,
    },
    /// The same id twice.
    #[error("feed: endpoint set id {0} appears twice")]
    DuplicateId(u32),
}

/// Parses the service's JSON and validates every entry. New ids join profile `feed`.
pub fn parse(text: &str) -> Result<Source, FeedError> {
    let raw: Vec<RawFeedSet> = serde_json::from_str(text).map_err(|e| FeedError::Json {
        line: e.line(),
        column: e.column(),
        message: e.to_string(),
    })?;
    let mut feed = Source::new(SourceKind::Feed);
    let mut ids = BTreeSet::new();
    for r in raw {
        if !ids.insert(r.id) {
            return Err(FeedError::DuplicateId(r.id));
        }
        let id = r.id.to_string();
        let at = format!("endpoint set {id}");
        let category = match r.category.as_str() {
            "Optimize" => Category::Optimize,
            "Allow" => Category::Allow,
            "Default" => Category::Default,
            other => {
                feed.reject(&at, other, "category is Optimize, Allow or Default");
                continue;
            }
        };
        let mut set = SourceSet {
            id,
            // Bounded as a zone file's description is, so that the overlay loads.
            description: crate::base::fileerror::excerpt_to(
                r.notes
                    .as_deref()
                    .or(r.service_area_display_name.as_deref())
                    .unwrap_or(&r.service_area),
                200,
            ),
            category,
            required: r.required,
            express_route: r.express_route,
            names: BTreeSet::new(),
            networks: BTreeSet::new(),
            ports: BTreeSet::new(),
            profile: SourceKind::Feed.as_str().to_string(),
            area: Some(r.service_area.clone()),
        };
        for url in &r.urls {
            match validate_name(url) {
                Ok(name) => {
                    set.names.insert(name);
                }
                Err(reason) => feed.reject(&at, url, reason),
            }
        }
        for ip in &r.ips {
            match validate_network(ip) {
                Ok(net) => {
                    set.networks.insert(net);
                }
                Err(reason) => feed.reject(&at, ip, reason),
            }
        }
        for (text, proto) in [(&r.tcp_ports, Proto::Tcp), (&r.udp_ports, Proto::Udp)] {
            if let Some(text) = text {
                match parse_ports(text, proto) {
                    Ok(p) => set.ports.extend(p),
                    Err(reason) => feed.reject(&at, text, reason),
                }
            }
        }
        feed.sets.push(set);
    }
    Ok(feed)
}
