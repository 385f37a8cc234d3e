//! Microsoft's catalog sources — the Intune endpoints page ([`page`], Microsoft's recommended
//! one), the Microsoft 365 endpoint web service ([`feed`], `ServiceAreas=MEM,Common`) and the
//! Windows Autopilot requirements page ([`autopilot`]) — read into one [`Source`], compared with
//! the loaded catalog ([`diff`]) and turned into an overlay zone file ([`overlay`]) the same way,
//! whichever it came from.
//!
//! A source is read, never trusted: every name passes the zone files' validation (one wildcard,
//! the public-suffix rule), every network parses, every port is a number; an entry that fails is
//! reported and left out, the rest applies. A source whose shape changed (an unknown JSON field,
//! a page without its endpoint tables or consolidated list) is refused whole.

pub mod autopilot;
pub mod feed;
pub mod fetch;
pub mod follow;
pub mod page;
pub mod read;

use std::collections::BTreeSet;
use std::fmt::Write as _;

use ipnet::IpNet;
use serde::Serialize;

use crate::base::fileerror::excerpt;
use crate::base::matcher::Pattern;
use crate::catalog::zones::{Catalog, Category, EndpointSet, PortSpec, Proto};
use crate::config::TenantRegion;

/// Which source a [`Source`] was read from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum SourceKind {
    /// The endpoint web service's JSON.
    Feed,
    /// The Intune endpoints page's Markdown.
    Page,
    /// The Windows Autopilot requirements page's Markdown.
    AutopilotPage,
}

impl SourceKind {
    /// `feed`, `page` or `autopilot-page`: the metric label, the `/v1/catalog` source and the
    /// text of `catalog diff`.
    pub fn as_str(self) -> &'static str {
        match self {
            SourceKind::Feed => "feed",
            SourceKind::Page => "page",
            SourceKind::AutopilotPage => "autopilot-page",
        }
    }
}

/// One endpoint set as a source states it (a feed entry, a row of the page's tables), validated.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SourceSet {
    /// The id, as the catalog writes it (`"163"`).
    pub id: String,
    /// The description (the feed: `notes`, else the service area's display name).
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
    /// The profile the set joins when the catalog lacks its id: the page's section's (a new row
    /// of the Autopilot table is Autopilot's), else the source's own (`feed`, `page`), which a
    /// view must list.
    pub profile: String,
    /// The web service's service area (`MEM`, `Common`); `None` for the page. Of the Common
    /// area dnsfence follows only the ids the catalog holds (sign-in, certificate revocation,
    /// activation, and the Microsoft 365 apps' sets): another Common id is listed by `catalog
    /// diff` as not followed, never added.
    pub area: Option<String>,
}

/// The web service's area whose sets dnsfence follows only for the ids the catalog holds.
pub const COMMON_AREA: &str = "Common";

/// Names and networks a source lists outside its numbered sets: the page's consolidated list,
/// and its lists per tenant location (MAA tabs, the Win32 and macOS CDN tables).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SourceList {
    /// What it is, as `catalog diff` names it (`consolidated list`, `<section> (eu)`).
    pub name: String,
    /// A short id for the overlay's set of what no catalog set covers (`consolidated`,
    /// `win32-apps-eu`).
    pub slug: String,
    /// The profile that set joins.
    pub profile: String,
    /// The tenant location it is for; `None`: every location.
    pub region: Option<TenantRegion>,
    /// Name patterns.
    pub names: BTreeSet<String>,
    /// Networks.
    pub networks: BTreeSet<IpNet>,
    /// Ports, when the source gives them; else the overlay uses tcp/80 and tcp/443.
    pub ports: BTreeSet<PortSpec>,
}

/// An entry left out, and why.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Rejected {
    /// Where it was: `endpoint set 163`, `consolidated list`, ….
    pub at: String,
    /// The entry as the source wrote it.
    pub entry: String,
    /// Why it was left out.
    pub reason: String,
}

/// A source, validated: what dnsfence may use of it.
#[derive(Debug, Clone)]
pub struct Source {
    /// Where it was read from.
    pub kind: SourceKind,
    /// Its version when the text says (the page's `ms.date`, as `YYYY-MM-DD`).
    pub version: Option<String>,
    /// Endpoint sets, in the source's order.
    pub sets: Vec<SourceSet>,
    /// Lists outside the sets.
    pub lists: Vec<SourceList>,
    /// Entries left out.
    pub rejected: Vec<Rejected>,
}

impl Source {
    /// An empty source of `kind`.
    pub fn new(kind: SourceKind) -> Source {
        Source {
            kind,
            version: None,
            sets: Vec::new(),
            lists: Vec::new(),
            rejected: Vec::new(),
        }
    }

    /// Leaves `entry` out, saying why.
    pub(crate) fn reject(&mut self, at: &str, entry: &str, reason: impl Into<String>) {
        self.rejected.push(Rejected {
            at: at.to_string(),
            entry: entry.to_string(),
            reason: reason.into(),
        });
    }
}

/// Ports as the sources write the numbers: `"80,443"`, `"80, 443"`, ranges `"5228-5230"` (at most
/// 64 ports).
pub fn parse_ports(text: &str, proto: Proto) -> Result<Vec<PortSpec>, String> {
    let proto_name = match proto {
        Proto::Tcp => "tcp",
        Proto::Udp => "udp",
    };
    let mut out = Vec::new();
    for part in text.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        // The zone files' one rule for ports and ranges.
        let written = format!("{proto_name}/{}", part.replace(' ', ""));
        let ports = crate::catalog::zones::parse_port_range(&written)
            .map_err(|why| format!("'{}': {why}", excerpt(part)))?;
        out.extend(ports);
    }
    Ok(out)
}

/// A name as a zone file would accept it, lower case: `Pattern` rules and the public-suffix rule
/// (a wildcard directly under a public suffix is refused; one under a multi-tenant suffix too,
/// since a source cannot say `multi_tenant = true`).
pub fn validate_name(text: &str) -> Result<String, String> {
    let pattern = Pattern::parse(text).map_err(|e| e.reason.to_string())?;
    if let Some((kind, suffix)) = crate::catalog::zones::wildcard_scope(&pattern) {
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

/// A network as a zone file would accept it: CIDR form without host bits.
pub fn validate_network(text: &str) -> Result<IpNet, String> {
    match text.trim().parse::<IpNet>() {
        Ok(net) if net.trunc() == net => Ok(net),
        Ok(net) => Err(format!("host bits set; the network is {}", net.trunc())),
        Err(_) => Err("not a network in CIDR form".into()),
    }
}

/// Whether the name pattern `p` allows every name `q` allows.
fn covers(p: &Pattern, q: &Pattern) -> bool {
    let below = |name: &str, parent: &str| {
        name.len() > parent.len()
            && name.ends_with(parent)
            && name.as_bytes()[name.len() - parent.len() - 1] == b'.'
    };
    match (p, q) {
        _ if p == q => true,
        (Pattern::Subdomains(x), Pattern::Exact(n)) => below(n, x),
        (Pattern::Subdomains(x), Pattern::Subdomains(y) | Pattern::LabelGlob { parent: y, .. }) => {
            y == x || below(y, x)
        }
        (Pattern::LabelGlob { label, parent }, Pattern::Exact(n)) => n
            .split_once('.')
            .is_some_and(|(first, rest)| rest == parent && glob_label(label, first)),
        _ => false,
    }
}

/// `*` in `glob` matches any run of characters of one label.
fn glob_label(glob: &str, label: &str) -> bool {
    match glob.split_once('*') {
        None => glob == label,
        Some((head, tail)) => {
            label.starts_with(head)
                && (head.len()..=label.len()).any(|i| glob_label(tail, &label[i..]))
        }
    }
}

/// Whether some pattern of `patterns` covers the pattern written `q`.
fn covered<'a>(patterns: impl IntoIterator<Item = &'a Pattern>, q: &str) -> bool {
    let Ok(q) = Pattern::parse(q) else {
        return false;
    };
    patterns.into_iter().any(|p| covers(p, &q))
}

/// What one endpoint set has on one side and not on the other.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct SetDiff {
    /// The id.
    pub id: String,
    /// Names the source has that no name of the catalog's set covers.
    pub names_added: Vec<String>,
    /// Names the catalog's set has that no name of the source's covers.
    pub names_missing: Vec<String>,
    /// Networks the source has and the catalog lacks.
    pub networks_added: Vec<String>,
    /// Networks the catalog has and the source lacks.
    pub networks_missing: Vec<String>,
    /// Ports the source has and the catalog lacks.
    pub ports_added: Vec<String>,
    /// Ports the catalog has and the source lacks.
    pub ports_missing: Vec<String>,
}

impl SetDiff {
    /// Whether the source adds anything to this set.
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

/// An endpoint set only the source has: everything it would allow, for review.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct NewSet {
    /// The id.
    pub id: String,
    /// The description.
    pub description: String,
    /// The profile it would join.
    pub profile: String,
    /// Its names.
    pub names: Vec<String>,
    /// Its networks.
    pub networks: Vec<String>,
    /// Its ports.
    pub ports: Vec<String>,
}

/// What a list of the source has that no endpoint set of the catalog covers.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Uncovered {
    /// The list (`consolidated list`, …).
    pub list: String,
    /// The profile the overlay's set for them joins.
    pub profile: String,
    /// The tenant location, if the list is for one.
    pub region: Option<&'static str>,
    /// Names no set covers.
    pub names: Vec<String>,
    /// Networks no set's networks contain.
    pub networks: Vec<String>,
}

/// How a source differs from a catalog.
#[derive(Debug, Clone, Serialize)]
pub struct Diff {
    /// `feed` or `page`.
    pub source: &'static str,
    /// Ids on both sides that differ.
    pub changed: Vec<SetDiff>,
    /// Ids only the source has, with what they would allow.
    pub new: Vec<NewSet>,
    /// Numeric ids only the catalog has (dnsfence's own ids are not the source's business).
    pub catalog_only: Vec<String>,
    /// Ids of the web service's Common area the catalog does not hold: not followed, never
    /// added (the rest of Common is Exchange's, SharePoint's and Teams' clients' business).
    pub unfollowed: Vec<String>,
    /// What the source's lists have that no set covers.
    pub uncovered: Vec<Uncovered>,
    /// Entries left out.
    pub rejected: Vec<Rejected>,
}

impl Diff {
    /// Whether the source has anything the catalog lacks (`catalog diff` exits 1).
    pub fn adds(&self) -> bool {
        !self.new.is_empty() || !self.uncovered.is_empty() || self.changed.iter().any(SetDiff::adds)
    }

    /// The human form: one line per difference, grouped by id.
    pub fn text(&self) -> String {
        let mut out = String::new();
        for d in &self.changed {
            let _ = writeln!(out, "endpoint set {}:", d.id);
            entries(&mut out, '+', "name", &d.names_added);
            entries(&mut out, '-', "name", &d.names_missing);
            entries(&mut out, '+', "network", &d.networks_added);
            entries(&mut out, '-', "network", &d.networks_missing);
            entries(&mut out, '+', "port", &d.ports_added);
            entries(&mut out, '-', "port", &d.ports_missing);
        }
        for n in &self.new {
            let _ = writeln!(
                out,
                "endpoint set {}: only in the {} (new, profile \"{}\"): {}",
                n.id,
                self.source,
                n.profile,
                excerpt(&n.description)
            );
            entries(&mut out, '+', "name", &n.names);
            entries(&mut out, '+', "network", &n.networks);
            entries(&mut out, '+', "port", &n.ports);
        }
        for id in &self.catalog_only {
            let _ = writeln!(out, "endpoint set {id}: only in the catalog");
        }
        if !self.unfollowed.is_empty() {
            let _ = writeln!(
                out,
                "Common area, not followed (no endpoint set of the catalog has these ids): {}",
                self.unfollowed.join(", ")
            );
        }
        for u in &self.uncovered {
            let region = u
                .region
                .map_or(String::new(), |r| format!(" of tenant region {r}"));
            let _ = writeln!(
                out,
                "{}: not covered by any endpoint set{region} (profile \"{}\")",
                u.list, u.profile
            );
            entries(&mut out, '+', "name", &u.names);
            entries(&mut out, '+', "network", &u.networks);
        }
        for r in &self.rejected {
            let _ = writeln!(
                out,
                "{}: rejected '{}': {}",
                excerpt(&r.at),
                excerpt(&r.entry),
                r.reason
            );
        }
        if out.is_empty() {
            out.push_str("no differences\n");
        }
        out
    }
}

/// One `  + name x` line per item.
fn entries(out: &mut String, sign: char, what: &str, items: &[String]) {
    for item in items {
        let _ = writeln!(out, "  {sign} {what} {item}");
    }
}

fn strings<T: ToString>(items: impl IntoIterator<Item = T>) -> Vec<String> {
    items.into_iter().map(|i| i.to_string()).collect()
}

/// The parts of one catalog set and one source set that differ.
fn set_diff(c: &EndpointSet, s: &SourceSet, rejected: &BTreeSet<String>) -> SetDiff {
    let source_patterns: Vec<Pattern> = s
        .names
        .iter()
        .chain(rejected)
        .filter_map(|n| Pattern::parse(n).ok())
        .collect();
    let networks: BTreeSet<IpNet> = c.networks.iter().copied().collect();
    let ports: BTreeSet<PortSpec> = c.ports.iter().copied().collect();
    SetDiff {
        id: s.id.clone(),
        names_added: s
            .names
            .iter()
            .filter(|n| !covered(&c.names, n))
            .cloned()
            .collect(),
        // A name the source has but that was rejected is reported as such, not as missing.
        names_missing: c
            .names
            .iter()
            .map(|p| p.to_string())
            .filter(|n| !covered(&source_patterns, n))
            .collect(),
        networks_added: strings(s.networks.difference(&networks)),
        networks_missing: strings(networks.difference(&s.networks)),
        ports_added: strings(s.ports.difference(&ports)),
        ports_missing: strings(ports.difference(&s.ports)),
    }
}

/// What a list has that no set of `catalog` covers: for a list of one tenant location, no set of
/// that location or of every location; for a list of every location (the consolidated list), no
/// set at all.
fn uncovered(catalog: &Catalog, list: &SourceList) -> Option<Uncovered> {
    let sets = || {
        catalog.sets.iter().filter(|s| {
            list.region.is_none() || s.tenant_region.is_none() || s.tenant_region == list.region
        })
    };
    let names: Vec<String> = list
        .names
        .iter()
        .filter(|n| !covered(sets().flat_map(|s| &s.names), n))
        .cloned()
        .collect();
    let networks: Vec<String> = list
        .networks
        .iter()
        .filter(|n| !sets().flat_map(|s| &s.networks).any(|c| c.contains(*n)))
        .map(|n| n.to_string())
        .collect();
    (!names.is_empty() || !networks.is_empty()).then(|| Uncovered {
        list: list.name.clone(),
        profile: list.profile.clone(),
        region: list.region.map(TenantRegion::as_str),
        names,
        networks,
    })
}

/// Whether the catalog's set is this source's to compare whole: yes unless its zone file's
/// `[source] follows` names another source (Apple's table, the Autopilot page…); a set that
/// follows the web service's Common area (`common-feed`) is compared with a feed that has that
/// area.
fn compared_with(set: &EndpointSet, source: &Source) -> bool {
    match set.document.as_ref().and_then(|d| d.follows.as_deref()) {
        None => true,
        Some("common-feed") => {
            source.kind == SourceKind::Feed
                && source
                    .sets
                    .iter()
                    .any(|s| s.area.as_deref() == Some(COMMON_AREA))
        }
        Some(follows) => follows == source.kind.as_str(),
    }
}

/// How `source` differs from `catalog`.
pub fn diff(catalog: &Catalog, source: &Source) -> Diff {
    let mut d = Diff {
        source: source.kind.as_str(),
        changed: Vec::new(),
        new: Vec::new(),
        catalog_only: Vec::new(),
        unfollowed: Vec::new(),
        uncovered: Vec::new(),
        rejected: source.rejected.clone(),
    };
    for s in &source.sets {
        let Some(c) = catalog.set(&s.id) else {
            if s.area.as_deref() == Some(COMMON_AREA) {
                d.unfollowed.push(s.id.clone());
                continue;
            }
            d.new.push(NewSet {
                id: s.id.clone(),
                description: s.description.clone(),
                profile: s.profile.clone(),
                names: strings(&s.names),
                networks: strings(&s.networks),
                ports: strings(&s.ports),
            });
            continue;
        };
        let at = format!("endpoint set {}", s.id);
        let rejected: BTreeSet<String> = source
            .rejected
            .iter()
            .filter(|r| r.at == at)
            .map(|r| r.entry.to_ascii_lowercase())
            .collect();
        let mut sd = set_diff(c, s, &rejected);
        if !compared_with(c, source) {
            // Another document keeps this set current (the web service's full id 56 against the
            // page's two names): what the source lacks of it is not the source's to remove.
            sd.names_missing.clear();
            sd.networks_missing.clear();
            sd.ports_missing.clear();
        }
        if !sd.is_empty() {
            d.changed.push(sd);
        }
    }
    d.catalog_only = catalog
        .sets
        .iter()
        .filter(|c| {
            // The Autopilot page has no ids: it says nothing of the catalog's.
            source.kind != SourceKind::AutopilotPage
                && c.id.bytes().all(|b| b.is_ascii_digit())
                && compared_with(c, source)
                && !source.sets.iter().any(|s| s.id == c.id)
        })
        .map(|c| c.id.clone())
        .collect();
    d.uncovered = source
        .lists
        .iter()
        .filter_map(|l| uncovered(catalog, l))
        .collect();
    d
}

/// Where an overlay came from, for its header.
#[derive(Debug, Clone)]
pub struct Provenance {
    /// The file or URL read.
    pub source: String,
    /// The service instance (`Worldwide`), for the feed.
    pub instance: Option<String>,
    /// The source's version, when known (the feed's `/version`; the page's `ms.date`).
    pub version: Option<String>,
}

/// The ports an overlay set of a list gets when the source gives none: the page's consolidated
/// list names no ports, and the core service's are tcp/80 and tcp/443.
const LIST_PORTS: [PortSpec; 2] = [
    PortSpec {
        proto: Proto::Tcp,
        port: 80,
    },
    PortSpec {
        proto: Proto::Tcp,
        port: 443,
    },
];

/// The line of an overlay's header that changes at every write; the rest is compared to tell an
/// unchanged source.
pub const WRITTEN: &str = "# written: ";

/// The overlay zone file for `source` over `catalog` (which must not include a previous overlay):
/// `[[extend]]` for what it adds to an id the catalog has, `[[endpoint_set]]` for ids it lacks
/// (in their [`SourceSet::profile`]) and for what its lists have that no set covers
/// (`<kind>-<slug>`). Nothing is ever removed: the shipped catalog is the floor. Rejected entries
/// are listed in comments.
pub fn overlay(catalog: &Catalog, source: &Source, from: &Provenance) -> String {
    let kind = source.kind.as_str();
    let mut out = String::new();
    let _ = writeln!(
        out,
        "# Generated by `dnsfence catalog pull` from the {kind}: replaced on the next pull, do not \
         edit.\n# source: {}",
        from.source
    );
    if let Some(instance) = &from.instance {
        let _ = writeln!(out, "# instance: {instance}");
    }
    let _ = writeln!(
        out,
        "# version: {}\n{WRITTEN}{}\n\
         # What the {kind} adds to the catalog. New ids join the profile named in them; \"{kind}\"\n\
         # is one a view must list to use them.",
        from.version.as_deref().unwrap_or("unknown"),
        crate::base::clock::rfc3339(std::time::SystemTime::now())
    );
    for r in &source.rejected {
        // Excerpts: a comment is one line of printable text, whatever the source wrote (the
        // reasons quote the source only through excerpts too).
        let _ = writeln!(
            out,
            "# rejected ({}): '{}': {}",
            excerpt(&r.at),
            excerpt(&r.entry),
            r.reason
        );
    }
    let d = diff(catalog, source);
    for sd in d.changed.iter().filter(|sd| sd.adds()) {
        let _ = writeln!(out, "\n[[extend]]\nid = {}", q(&sd.id));
        for (key, items) in [
            ("names", &sd.names_added),
            ("networks", &sd.networks_added),
            ("ports", &sd.ports_added),
        ] {
            if !items.is_empty() {
                let _ = writeln!(out, "{key} = {}", list(items));
            }
        }
    }
    for n in &d.new {
        let s = source.sets.iter().find(|s| s.id == n.id);
        OverlaySet {
            id: n.id.clone(),
            description: n.description.clone(),
            flags: s.map_or(("default", true, false), |s| {
                (s.category.as_str(), s.required, s.express_route)
            }),
            region: None,
            profile: &n.profile,
            names: &n.names,
            networks: &n.networks,
            ports: n.ports.clone(),
        }
        .write(&mut out, kind);
    }
    for u in &d.uncovered {
        let Some(l) = source.lists.iter().find(|l| l.name == u.list) else {
            continue;
        };
        OverlaySet {
            id: format!("{kind}-{}", l.slug),
            description: format!("What the {kind}'s {} lists beyond the catalog", l.name),
            flags: ("default", true, false),
            region: u.region,
            profile: &u.profile,
            names: &u.names,
            networks: &u.networks,
            ports: if l.ports.is_empty() {
                strings(LIST_PORTS)
            } else {
                strings(&l.ports)
            },
        }
        .write(&mut out, kind);
    }
    out
}

/// A description as a zone file may hold it: a longer one (a page heading can be any length) is
/// cut at [`crate::catalog::zones::MAX_DESCRIPTION`] characters, the last one an ellipsis, so that the
/// overlay still loads.
fn bounded_description(d: &str) -> std::borrow::Cow<'_, str> {
    let max = crate::catalog::zones::MAX_DESCRIPTION;
    if d.chars().count() <= max {
        return d.into();
    }
    let mut cut: String = d.chars().take(max - 1).collect();
    cut.push('…');
    cut.into()
}

/// A TOML string.
fn q(s: &str) -> String {
    toml::Value::String(s.to_string()).to_string()
}

/// A TOML array of strings, one a line.
fn list(items: &[String]) -> String {
    let items: Vec<String> = items.iter().map(|i| format!("  {},", q(i))).collect();
    format!("[\n{}\n]", items.join("\n"))
}

/// An `[[endpoint_set]]` of an overlay.
struct OverlaySet<'a> {
    id: String,
    description: String,
    /// Category, required, ExpressRoute.
    flags: (&'static str, bool, bool),
    region: Option<&'static str>,
    profile: &'a str,
    names: &'a [String],
    networks: &'a [String],
    ports: Vec<String>,
}

impl OverlaySet<'_> {
    fn write(&self, out: &mut String, kind: &str) {
        if self.ports.is_empty() || (self.names.is_empty() && self.networks.is_empty()) {
            let _ = writeln!(
                out,
                "\n# id {} left out: the {kind} gives it no ports, or no names and no networks",
                self.id
            );
            return;
        }
        let (category, required, express_route) = self.flags;
        let _ = writeln!(
            out,
            "\n[[endpoint_set]]\nid = {}\ndescription = {}\ncategory = \"{category}\"\n\
             required = {required}\nexpress_route = {express_route}\nprofile = {}\nports = {}",
            q(&self.id),
            q(&bounded_description(&self.description)),
            q(self.profile),
            list(&self.ports)
        );
        if let Some(r) = self.region {
            let _ = writeln!(out, "tenant_region = \"{r}\"");
        }
        if !self.names.is_empty() {
            let _ = writeln!(out, "names = {}", list(self.names));
        }
        if !self.networks.is_empty() {
            let _ = writeln!(out, "networks = {}", list(self.networks));
        }
    }
}

/// Whether two overlay texts say the same, the time they were written aside.
pub fn same_overlay(a: &str, b: &str) -> bool {
    fn body(t: &str) -> impl Iterator<Item = &str> {
        t.lines().filter(|l| !l.starts_with(WRITTEN))
    }
    body(a).eq(body(b))
}

/// Writes `text` to `path` atomically (a temporary file beside it, then rename).
pub fn write_atomically(path: &std::path::Path, text: &str) -> std::io::Result<()> {
    let tmp = temporary_beside(path);
    std::fs::write(&tmp, text)?;
    std::fs::rename(&tmp, path)
}

/// The temporary file [`write_atomically`] writes first.
pub fn temporary_beside(path: &std::path::Path) -> std::path::PathBuf {
    let dir = path.parent().unwrap_or(std::path::Path::new("."));
    let name = path.file_name().unwrap_or_default().to_string_lossy();
    dir.join(format!(".{name}.tmp"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(s: &str) -> Pattern {
        Pattern::parse(s).unwrap()
    }

    #[test]
    fn coverage_is_what_a_pattern_allows() {
        for (catalog, source, want) in [
            ("*.windowsupdate.com", "au.download.windowsupdate.com", true),
            ("*.windowsupdate.com", "*.download.windowsupdate.com", true),
            ("*.windowsupdate.com", "*.windowsupdate.com", true),
            ("*.windowsupdate.com", "windowsupdate.com", false),
            (
                "*.delivery.mp.microsoft.com",
                "dl.delivery.mp.microsoft.com",
                true,
            ),
            ("manage.microsoft.com", "*.manage.microsoft.com", false),
            ("x.manage.microsoft.com", "manage.microsoft.com", false),
            ("*.manage.microsoft.com", "evilmanage.microsoft.com", false),
            (
                "*.manage.microsoft.com",
                "swd*-mscdn.manage.microsoft.com",
                true,
            ),
            (
                "swd*-mscdn.azureedge.net",
                "swda01-mscdn.azureedge.net",
                true,
            ),
            ("swd*-mscdn.azureedge.net", "swd-mscdn.azureedge.net", true),
            (
                "swd*-mscdn.azureedge.net",
                "xswda01-mscdn.azureedge.net",
                false,
            ),
            (
                "swd*-mscdn.azureedge.net",
                "a.swda01-mscdn.azureedge.net",
                false,
            ),
            ("swd*-mscdn.azureedge.net", "*.azureedge.net", false),
        ] {
            assert_eq!(
                covered(&[p(catalog)], source),
                want,
                "{catalog} covers {source}"
            );
        }
    }

    #[test]
    fn ports_lists_and_ranges() {
        assert_eq!(parse_ports("80, 443", Proto::Tcp).unwrap().len(), 2);
        assert_eq!(parse_ports("5228-5230", Proto::Tcp).unwrap().len(), 3);
        assert!(parse_ports("0", Proto::Udp).is_err());
        assert!(parse_ports("1-100", Proto::Udp).is_err());
        assert!(parse_ports("http", Proto::Tcp).is_err());
    }

    #[test]
    fn an_overlay_is_the_same_whenever_it_was_written() {
        let a = "# source: x\n# written: 2026-01-01T00:00:00Z\n\n[[extend]]\nid = \"1\"\n";
        let b = a.replace("2026-01-01", "2026-02-02");
        assert!(same_overlay(a, &b));
        assert!(!same_overlay(a, &b.replace("\"1\"", "\"2\"")));
    }
}
