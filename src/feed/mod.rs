//! Microsoft's endpoint web service (`/endpoints/<instance>?ServiceAreas=MEM`): its JSON, checked
//! as strictly as a zone file, and how it differs from the loaded catalog.
//!
//! The feed is read, never trusted: every name passes the zone files' validation (one wildcard,
//! the public-suffix rule), every network parses, every port is a number; an entry that fails is
//! reported and left out, the rest applies. An unknown field rejects the whole feed: the service
//! changed shape and nobody has looked at it yet.

pub mod fetch;
pub mod follow;

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;

use ipnet::IpNet;
use serde::{Deserialize, Serialize};

use crate::matcher::Pattern;
use crate::zones::{Catalog, Category, PortSpec, Proto};

/// One endpoint set as the service returns it.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct RawFeedSet {
    /// The same ids as the document's tables.
    pub id: u32,
    /// `MEM`, `Common`, …
    pub service_area: String,
    /// Display name of the service area.
    #[serde(default)]
    pub service_area_display_name: Option<String>,
    /// Names and `*.` wildcards.
    #[serde(default)]
    pub urls: Vec<String>,
    /// IPv4/IPv6 CIDRs.
    #[serde(default)]
    pub ips: Vec<String>,
    /// `"80,443"`.
    #[serde(default)]
    pub tcp_ports: Option<String>,
    /// `"123"`.
    #[serde(default)]
    pub udp_ports: Option<String>,
    /// ExpressRoute.
    pub express_route: bool,
    /// `Optimize`, `Allow`, `Default`.
    pub category: String,
    /// Required for connectivity.
    pub required: bool,
    /// Why it is optional, for optional sets.
    #[serde(default)]
    pub notes: Option<String>,
}

/// One endpoint set of the feed, validated: what dnsfence may use of it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FeedSet {
    /// The id, as the catalog writes it (`"163"`).
    pub id: String,
    /// The service area.
    pub service_area: String,
    /// `notes`, else the service area's display name.
    pub description: String,
    /// The category.
    pub category: Category,
    /// Required.
    pub required: bool,
    /// ExpressRoute.
    pub express_route: bool,
    /// Name patterns, lower case, validated.
    pub names: BTreeSet<String>,
    /// Networks.
    pub networks: BTreeSet<IpNet>,
    /// Ports.
    pub ports: BTreeSet<PortSpec>,
}

/// A feed entry left out, and why.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Rejected {
    /// The endpoint set's id.
    pub id: String,
    /// The entry as the feed wrote it.
    pub entry: String,
    /// Why it was left out.
    pub reason: String,
}

/// A validated feed.
#[derive(Debug, Clone, Default)]
pub struct Feed {
    /// Endpoint sets by id order.
    pub sets: Vec<FeedSet>,
    /// Entries left out.
    pub rejected: Vec<Rejected>,
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

/// Ports as the service writes them: `"80,443"`, ranges `"5228-5230"` (at most 64 ports).
fn parse_ports(text: &str, proto: Proto) -> Result<Vec<PortSpec>, String> {
    let mut out = Vec::new();
    for part in text.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        let (lo, hi) = match part.split_once('-') {
            Some((a, b)) => (a.trim(), b.trim()),
            None => (part, part),
        };
        let (Ok(lo), Ok(hi)) = (lo.parse::<u16>(), hi.parse::<u16>()) else {
            return Err(format!("'{part}' is not a port or a range of ports"));
        };
        if lo == 0 || hi < lo || hi - lo >= 64 {
            return Err(format!(
                "'{part}': ports are 1 to 65535, ranges at most 64 wide"
            ));
        }
        out.extend((lo..=hi).map(|port| PortSpec { proto, port }));
    }
    Ok(out)
}

impl Feed {
    /// Parses the service's JSON and validates every entry.
    pub fn parse(text: &str) -> Result<Feed, FeedError> {
        let raw: Vec<RawFeedSet> = serde_json::from_str(text).map_err(|e| FeedError::Json {
            line: e.line(),
            column: e.column(),
            message: e.to_string(),
        })?;
        let mut feed = Feed::default();
        let mut ids = BTreeSet::new();
        for r in raw {
            if !ids.insert(r.id) {
                return Err(FeedError::DuplicateId(r.id));
            }
            let id = r.id.to_string();
            let mut reject = |entry: &str, reason: String| {
                feed.rejected.push(Rejected {
                    id: id.clone(),
                    entry: entry.to_string(),
                    reason,
                })
            };
            let category = match r.category.as_str() {
                "Optimize" => Category::Optimize,
                "Allow" => Category::Allow,
                "Default" => Category::Default,
                other => {
                    reject(other, "category is Optimize, Allow or Default".into());
                    continue;
                }
            };
            let mut names = BTreeSet::new();
            for url in &r.urls {
                match validate_name(url) {
                    Ok(name) => {
                        names.insert(name);
                    }
                    Err(reason) => reject(url, reason),
                }
            }
            let mut networks = BTreeSet::new();
            for ip in &r.ips {
                match ip.trim().parse::<IpNet>() {
                    Ok(net) if net.trunc() == net => {
                        networks.insert(net);
                    }
                    Ok(net) => reject(ip, format!("host bits set; the network is {}", net.trunc())),
                    Err(_) => reject(ip, "not a network in CIDR form".into()),
                }
            }
            let mut ports = BTreeSet::new();
            for (text, proto) in [(&r.tcp_ports, Proto::Tcp), (&r.udp_ports, Proto::Udp)] {
                if let Some(text) = text {
                    match parse_ports(text, proto) {
                        Ok(p) => ports.extend(p),
                        Err(reason) => reject(text, reason),
                    }
                }
            }
            let description = r
                .notes
                .clone()
                .or_else(|| r.service_area_display_name.clone())
                .unwrap_or_else(|| r.service_area.clone());
            feed.sets.push(FeedSet {
                id,
                service_area: r.service_area,
                description,
                category,
                required: r.required,
                express_route: r.express_route,
                names,
                networks,
                ports,
            });
        }
        Ok(feed)
    }
}

/// What one endpoint set has on one side and not on the other.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct SetDiff {
    /// The id.
    pub id: String,
    /// Names the feed has and the catalog lacks.
    pub names_added: Vec<String>,
    /// Names the catalog has and the feed lacks.
    pub names_missing: Vec<String>,
    /// Networks the feed has and the catalog lacks.
    pub networks_added: Vec<String>,
    /// Networks the catalog has and the feed lacks.
    pub networks_missing: Vec<String>,
    /// Ports the feed has and the catalog lacks.
    pub ports_added: Vec<String>,
    /// Ports the catalog has and the feed lacks.
    pub ports_missing: Vec<String>,
}

impl SetDiff {
    /// Whether the feed adds anything to this set.
    pub fn adds(&self) -> bool {
        !(self.names_added.is_empty()
            && self.networks_added.is_empty()
            && self.ports_added.is_empty())
    }

    fn is_empty(&self) -> bool {
        !self.adds()
            && self.names_missing.is_empty()
            && self.networks_missing.is_empty()
            && self.ports_missing.is_empty()
    }
}

/// How a feed differs from a catalog.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Diff {
    /// Ids on both sides that differ.
    pub changed: Vec<SetDiff>,
    /// Ids only the feed has.
    pub feed_only: Vec<String>,
    /// Numeric ids only the catalog has (dnsfence's own ids are not the service's business).
    pub catalog_only: Vec<String>,
    /// Feed entries left out.
    pub rejected: Vec<Rejected>,
}

impl Diff {
    /// Whether the feed has anything the catalog lacks (`catalog diff` exits 1).
    pub fn adds(&self) -> bool {
        !self.feed_only.is_empty() || self.changed.iter().any(SetDiff::adds)
    }

    /// The human form: one line per difference, grouped by id.
    pub fn text(&self) -> String {
        let mut out = String::new();
        for d in &self.changed {
            let _ = writeln!(out, "endpoint set {}:", d.id);
            for (sign, what, items) in [
                ('+', "name", &d.names_added),
                ('-', "name", &d.names_missing),
                ('+', "network", &d.networks_added),
                ('-', "network", &d.networks_missing),
                ('+', "port", &d.ports_added),
                ('-', "port", &d.ports_missing),
            ] {
                for item in items {
                    let _ = writeln!(out, "  {sign} {what} {item}");
                }
            }
        }
        for id in &self.feed_only {
            let _ = writeln!(out, "endpoint set {id}: only in the feed (new)");
        }
        for id in &self.catalog_only {
            let _ = writeln!(out, "endpoint set {id}: only in the catalog");
        }
        for r in &self.rejected {
            let _ = writeln!(
                out,
                "endpoint set {}: rejected '{}': {}",
                r.id, r.entry, r.reason
            );
        }
        if out.is_empty() {
            out.push_str("no differences\n");
        }
        out
    }
}

/// How `feed` differs from `catalog`.
pub fn diff(catalog: &Catalog, feed: &Feed) -> Diff {
    let mut d = Diff {
        rejected: feed.rejected.clone(),
        ..Diff::default()
    };
    let fmt = |items: &mut dyn Iterator<Item = String>| items.collect::<Vec<_>>();
    for f in &feed.sets {
        let Some(c) = catalog.set(&f.id) else {
            d.feed_only.push(f.id.clone());
            continue;
        };
        let names: BTreeSet<String> = c.names.iter().map(|p| p.to_string()).collect();
        // A name the feed has but that was rejected is reported as such, not as missing.
        let rejected: BTreeSet<String> = feed
            .rejected
            .iter()
            .filter(|r| r.id == f.id)
            .map(|r| r.entry.to_ascii_lowercase())
            .collect();
        let kept: BTreeSet<String> = f.names.union(&rejected).cloned().collect();
        let networks: BTreeSet<IpNet> = c.networks.iter().copied().collect();
        let ports: BTreeSet<PortSpec> = c.ports.iter().copied().collect();
        let sd = SetDiff {
            id: f.id.clone(),
            names_added: fmt(&mut f.names.difference(&names).cloned()),
            names_missing: fmt(&mut names.difference(&kept).cloned()),
            networks_added: fmt(&mut f.networks.difference(&networks).map(|n| n.to_string())),
            networks_missing: fmt(&mut networks.difference(&f.networks).map(|n| n.to_string())),
            ports_added: fmt(&mut f.ports.difference(&ports).map(|p| p.to_string())),
            ports_missing: fmt(&mut ports.difference(&f.ports).map(|p| p.to_string())),
        };
        if !sd.is_empty() {
            d.changed.push(sd);
        }
    }
    let feed_ids: BTreeMap<&str, ()> = feed.sets.iter().map(|s| (s.id.as_str(), ())).collect();
    d.catalog_only = catalog
        .sets
        .iter()
        .filter(|s| {
            s.id.bytes().all(|b| b.is_ascii_digit()) && !feed_ids.contains_key(s.id.as_str())
        })
        .map(|s| s.id.clone())
        .collect();
    d
}

/// A name as a zone file would accept it, lower case: `Pattern` rules and the public-suffix rule
/// (a wildcard directly under a public suffix is refused; one under a multi-tenant suffix too,
/// since a feed cannot say `multi_tenant = true`).
pub fn validate_name(text: &str) -> Result<String, String> {
    let pattern = Pattern::parse(text).map_err(|e| e.reason.to_string())?;
    if let Some((kind, suffix)) = crate::zones::wildcard_scope(&pattern) {
        return Err(match kind {
            psl::Type::Icann => format!(
                "a wildcard directly under the public suffix '{suffix}' would allow whole \
                 top-level domains"
            ),
            psl::Type::Private => format!(
                "a wildcard directly under '{suffix}', a multi-tenant suffix: any of its tenants \
                 can create such names"
            ),
        });
    }
    Ok(pattern.to_string())
}

/// Where an overlay came from, for its header.
#[derive(Debug, Clone)]
pub struct Provenance {
    /// The file or URL read.
    pub source: String,
    /// The service instance (`Worldwide`).
    pub instance: String,
    /// The service's version, when known (`/version` answers it; a saved file does not).
    pub version: Option<String>,
}

/// The overlay zone file for `feed` over `catalog` (which must not include a previous overlay):
/// `[[extend]]` for what the feed adds to an id the catalog has, `[[endpoint_set]]` in profile
/// `feed` for ids it lacks. Nothing is ever removed: the shipped catalog is the floor. Rejected
/// entries are listed in comments.
pub fn overlay(catalog: &Catalog, feed: &Feed, from: &Provenance) -> String {
    let q = |s: &str| toml::Value::String(s.to_string()).to_string();
    let list = |items: &mut dyn Iterator<Item = String>| {
        let items: Vec<String> = items.map(|i| format!("  {},", q(&i))).collect();
        format!("[\n{}\n]", items.join("\n"))
    };
    let mut out = String::new();
    let _ = writeln!(
        out,
        "# Generated by `dnsfence catalog pull`: replaced on the next pull, do not edit.\n\
         # source: {}\n# instance: {}\n# version: {}\n# written: {}\n\
         # What the feed adds to the catalog; new ids are in profile \"feed\", which a view must\n\
         # list to use them.",
        from.source,
        from.instance,
        from.version.as_deref().unwrap_or("unknown (a saved file)"),
        crate::querylog::rfc3339(std::time::SystemTime::now())
    );
    for r in &feed.rejected {
        let _ = writeln!(out, "# rejected (id {}): '{}': {}", r.id, r.entry, r.reason);
    }
    let d = diff(catalog, feed);
    for sd in d.changed.iter().filter(|sd| sd.adds()) {
        let _ = writeln!(out, "\n[[extend]]\nid = {}", q(&sd.id));
        for (key, items) in [
            ("names", &sd.names_added),
            ("networks", &sd.networks_added),
            ("ports", &sd.ports_added),
        ] {
            if !items.is_empty() {
                let _ = writeln!(out, "{key} = {}", list(&mut items.iter().cloned()));
            }
        }
    }
    for f in feed.sets.iter().filter(|f| d.feed_only.contains(&f.id)) {
        if f.ports.is_empty() || (f.names.is_empty() && f.networks.is_empty()) {
            let _ = writeln!(
                out,
                "\n# id {} left out: the feed gives it no ports, or no names and no networks",
                f.id
            );
            continue;
        }
        let category = match f.category {
            Category::Optimize => "optimize",
            Category::Allow => "allow",
            Category::Default => "default",
        };
        let _ = writeln!(
            out,
            "\n[[endpoint_set]]\nid = {}\ndescription = {}\ncategory = \"{category}\"\n\
             required = {}\nexpress_route = {}\nprofile = \"feed\"\nports = {}",
            q(&f.id),
            q(&f.description),
            f.required,
            f.express_route,
            list(&mut f.ports.iter().map(|p| p.to_string()))
        );
        if !f.names.is_empty() {
            let _ = writeln!(out, "names = {}", list(&mut f.names.iter().cloned()));
        }
        if !f.networks.is_empty() {
            let _ = writeln!(
                out,
                "networks = {}",
                list(&mut f.networks.iter().map(|n| n.to_string()))
            );
        }
    }
    out
}

/// Writes `text` to `path` atomically (a temporary file beside it, then rename).
pub fn write_atomically(path: &std::path::Path, text: &str) -> std::io::Result<()> {
    let dir = path.parent().unwrap_or(std::path::Path::new("."));
    let name = path.file_name().unwrap_or_default().to_string_lossy();
    let tmp = dir.join(format!(".{name}.tmp"));
    std::fs::write(&tmp, text)?;
    std::fs::rename(&tmp, path)
}
