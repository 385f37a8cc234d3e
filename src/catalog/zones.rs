//! The endpoint-set catalog: parsing `zones/*.toml` into [`Catalog`].
//!
//! Each zone file lists endpoint sets taken from one vendor document — Microsoft's Intune
//! network-endpoints page, the Microsoft 365 endpoint web service, the Windows Autopilot
//! requirements, Apple's and Google's network requirements — named once in the file's `[source]`
//! (document and version); each set keeps the document's id or dnsfence's, section, description,
//! category, required flag, ExpressRoute flag, ports, names, networks, profile, the stage of a
//! device's life it serves and, for tenant-specific rows, the tenant region. Zone files also
//! define the device families (`[[family]]`: named groups of profiles a view selects in one
//! line). Everything is validated here, right after parsing, so that a bad entry fails start-up
//! with `file:line: 'entry': reason` rather than at query time.

use std::collections::{BTreeSet, HashMap};
use std::fmt;
use std::fs;
use std::path::{Path, PathBuf};
use std::str::FromStr;

use ipnet::IpNet;
use serde::Deserialize;
use toml::Spanned;

use crate::base::fileerror::{FileError, line_of};
use crate::base::matcher::Pattern;
use crate::config::TenantRegion;

/// An error in a zone file or the zone directory, naming the file, the line and the entry.
#[derive(Debug, thiserror::Error)]
pub enum ZoneError {
    /// A file or the directory could not be read, or an entry is refused.
    #[error(transparent)]
    File(#[from] FileError),
    /// The directory holds no zone file.
    #[error("{0}: no zone files (*.toml) found")]
    Empty(PathBuf),
}

/// Something in a zone file that is allowed but worth an admin's eye, named like an error.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ZoneWarning {
    /// The zone file.
    pub path: PathBuf,
    /// 1-based line of the entry.
    pub line: usize,
    /// The entry as written.
    pub entry: String,
    /// What is worth checking.
    pub reason: String,
}

impl fmt::Display for ZoneWarning {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}:{}: '{}': {}",
            self.path.display(),
            self.line,
            self.entry,
            self.reason
        )
    }
}

/// How Microsoft categorises an endpoint set (Optimize / Allow / Default).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Category {
    /// Latency-sensitive, should bypass proxies.
    Optimize,
    /// Should bypass proxies when possible.
    Allow,
    /// Internet access is enough.
    Default,
}

impl Category {
    /// The lower-case name, as written in zone files.
    pub fn as_str(self) -> &'static str {
        match self {
            Category::Optimize => "optimize",
            Category::Allow => "allow",
            Category::Default => "default",
        }
    }
}

/// Transport protocol of a port.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Proto {
    /// TCP.
    Tcp,
    /// UDP.
    Udp,
}

/// A `tcp/443`-style port.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct PortSpec {
    /// Protocol.
    pub proto: Proto,
    /// Port number (never 0).
    pub port: u16,
}

impl FromStr for PortSpec {
    type Err = &'static str;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let (proto, port) = s
            .split_once('/')
            .ok_or("a port is written proto/number, e.g. tcp/443")?;
        let proto = match proto.to_ascii_lowercase().as_str() {
            "tcp" => Proto::Tcp,
            "udp" => Proto::Udp,
            _ => return Err("protocol must be tcp or udp"),
        };
        match port.parse::<u16>() {
            Ok(0) | Err(_) => Err("port must be a number from 1 to 65535"),
            Ok(port) => Ok(PortSpec { proto, port }),
        }
    }
}

impl fmt::Display for PortSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let proto = match self.proto {
            Proto::Tcp => "tcp",
            Proto::Udp => "udp",
        };
        write!(f, "{proto}/{}", self.port)
    }
}

/// The most ports one range of a zone file may hold: a firewall element is made per port.
pub const MAX_PORT_RANGE: u16 = 64;

/// A port (`tcp/443`) or a range of ports (`tcp/5228-5230`, as Google writes FCM's), at most
/// [`MAX_PORT_RANGE`] ports.
pub fn parse_port_range(s: &str) -> Result<Vec<PortSpec>, &'static str> {
    let Some((proto, ports)) = s.split_once('/') else {
        return Err("a port is written proto/number, e.g. tcp/443");
    };
    let Some((lo, hi)) = ports.split_once('-') else {
        return Ok(vec![s.parse()?]);
    };
    let lo: PortSpec = format!("{proto}/{lo}").parse()?;
    let hi: PortSpec = format!("{proto}/{hi}").parse()?;
    if hi.port < lo.port {
        return Err("a port range goes from the lower port to the higher (tcp/5228-5230)");
    }
    if hi.port - lo.port >= MAX_PORT_RANGE {
        return Err("a port range holds at most 64 ports");
    }
    Ok((lo.port..=hi.port)
        .map(|port| PortSpec {
            proto: lo.proto,
            port,
        })
        .collect())
}

/// The stage of a device's life an endpoint set serves: what readiness is reported by.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Stage {
    /// First boot: activation, time, connectivity checks, TPM attestation.
    Setup,
    /// Joining the tenant and the MDM: sign-in, device registration, enrolment profiles.
    Enrollment,
    /// Talking to the MDM afterwards: policies, compliance, attestation.
    CheckIn,
    /// Push channels that wake a device for an MDM action (WNS, APNs, FCM).
    Push,
    /// App stores, app content, scripts.
    Apps,
    /// OS and component updates.
    Updates,
    /// Certificate revocation and validation (CRL, OCSP).
    Certificates,
    /// Diagnostics and logs uploads.
    Diagnostics,
    /// Remote Help sessions.
    RemoteHelp,
}

impl Stage {
    /// Every stage, in a device's order.
    pub const ALL: [Stage; 9] = [
        Stage::Setup,
        Stage::Enrollment,
        Stage::CheckIn,
        Stage::Push,
        Stage::Apps,
        Stage::Updates,
        Stage::Certificates,
        Stage::Diagnostics,
        Stage::RemoteHelp,
    ];

    /// The name, as written in zone files and metric labels.
    pub fn as_str(self) -> &'static str {
        match self {
            Stage::Setup => "setup",
            Stage::Enrollment => "enrollment",
            Stage::CheckIn => "check-in",
            Stage::Push => "push",
            Stage::Apps => "apps",
            Stage::Updates => "updates",
            Stage::Certificates => "certificates",
            Stage::Diagnostics => "diagnostics",
            Stage::RemoteHelp => "remote-help",
        }
    }
}

/// The vendor document a zone file's sets come from (its `[source]` table).
#[derive(Debug, Clone, PartialEq, Eq, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Document {
    /// The document's title, and where it is published.
    pub name: String,
    /// The version or date followed (a commit, an ms.date, a feed snapshot's date).
    pub version: String,
    /// What keeps the file current when it is not the Intune page: `common-feed` (the web
    /// service's Common area, read with `--feed`), `autopilot-page`, `pasted-list` (Apple's,
    /// Google's HTML pages, compared with `catalog diff --names`), or `page` / `feed`. `catalog
    /// diff` reports what a source lacks of a set only for the sets it follows (absent: the
    /// Intune page and the MEM feed both).
    #[serde(default)]
    pub follows: Option<String>,
}

/// A device family: the profiles every device of one platform needs, and the profiles of
/// features a view may add to it.
#[derive(Debug, Clone)]
pub struct Family {
    /// `windows`, `apple-mobile`, …: what a view's `families` names.
    pub name: String,
    /// What devices it stands for.
    pub description: String,
    /// The profiles a view selecting the family gets; their required sets are what readiness
    /// checks.
    pub profiles: Vec<String>,
    /// Profiles of features (Remote Help, iCloud…) the family's devices may use: a view adds
    /// them by listing them in `profiles`, and readiness then checks their required sets too.
    pub optional_profiles: Vec<String>,
    /// The zone file, and the line of its `[[family]]`.
    pub source: PathBuf,
    /// 1-based line of the `[[family]]` header.
    pub line: usize,
}

/// One endpoint set, validated.
#[derive(Debug, Clone)]
pub struct EndpointSet {
    /// The document's ID (`"163"`) or dnsfence's for rows without one (`"win32-na"`).
    pub id: String,
    /// English description.
    pub description: String,
    /// Microsoft's category.
    pub category: Category,
    /// Whether the document marks it required for connectivity.
    pub required: bool,
    /// Whether ExpressRoute carries it.
    pub express_route: bool,
    /// Ports the names and networks are reached on.
    pub ports: Vec<PortSpec>,
    /// The profile (group of sets) a view selects it by.
    pub profile: String,
    /// Set only for tenant-specific rows.
    pub tenant_region: Option<TenantRegion>,
    /// The stage of a device's life it serves (every shipped set has one; an admin's may not).
    pub stage: Option<Stage>,
    /// The document's section (table or heading) the set comes from.
    pub section: Option<String>,
    /// The vendor document, from the file's `[source]`.
    pub document: Option<Document>,
    /// Name patterns, validated.
    pub names: Vec<Pattern>,
    /// Static address ranges.
    pub networks: Vec<IpNet>,
    /// Declared to open names under a multi-tenant suffix on purpose (see [`wildcard_scope`]).
    pub multi_tenant: bool,
    /// The file it came from.
    pub source: PathBuf,
    /// Files whose `[[extend]]` added to it (the feed overlay), in load order.
    pub extended_by: Vec<PathBuf>,
}

impl EndpointSet {
    /// Adds what `ext` has and the set lacks; records the file when it added anything.
    fn extend(&mut self, ext: Extension) {
        let mut added = false;
        for n in ext.names {
            if !self.names.contains(&n) {
                self.names.push(n);
                added = true;
            }
        }
        for n in ext.networks {
            if !self.networks.contains(&n) {
                self.networks.push(n);
                added = true;
            }
        }
        for p in ext.ports {
            if !self.ports.contains(&p) {
                self.ports.push(p);
                added = true;
            }
        }
        if added && !self.extended_by.contains(&ext.source) {
            self.extended_by.push(ext.source);
        }
    }
}

/// Every endpoint set of the zone directory.
#[derive(Debug, Clone, Default)]
pub struct Catalog {
    /// Endpoint sets in file-name order, then file order.
    pub sets: Vec<EndpointSet>,
    /// Device families, in file-name order, then file order.
    pub families: Vec<Family>,
    /// What `check` reports and start-up logs without refusing.
    pub warnings: Vec<ZoneWarning>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ZoneFile {
    #[serde(default)]
    source: Option<Document>,
    #[serde(default)]
    family: Vec<Spanned<RawFamily>>,
    #[serde(default)]
    endpoint_set: Vec<Spanned<RawSet>>,
    #[serde(default)]
    extend: Vec<Spanned<RawExtend>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawExtend {
    id: Spanned<String>,
    #[serde(default)]
    names: Vec<Spanned<String>>,
    #[serde(default)]
    networks: Vec<Spanned<String>>,
    #[serde(default)]
    ports: Vec<Spanned<String>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawFamily {
    name: Spanned<String>,
    description: Spanned<String>,
    profiles: Vec<Spanned<String>>,
    #[serde(default)]
    optional_profiles: Vec<Spanned<String>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawSet {
    id: Spanned<String>,
    description: Spanned<String>,
    category: Category,
    required: bool,
    express_route: bool,
    ports: Vec<Spanned<String>>,
    profile: Spanned<String>,
    #[serde(default)]
    tenant_region: Option<TenantRegion>,
    #[serde(default)]
    stage: Option<Stage>,
    #[serde(default)]
    section: Option<Spanned<String>>,
    #[serde(default)]
    names: Vec<Spanned<String>>,
    #[serde(default)]
    networks: Vec<Spanned<String>>,
    #[serde(default)]
    multi_tenant: bool,
}

/// Longest endpoint-set id or profile name: they label metrics and log lines.
pub const MAX_ID: usize = 64;
/// Longest description of an endpoint set.
pub const MAX_DESCRIPTION: usize = 256;

/// Suffixes under which any cloud customer names its own resources, that the public-suffix list
/// does not (yet) list: treated like its private section.
const MULTI_TENANT_UNLISTED: &[&str] = &[
    // Azure Web PubSub, SignalR, Service Bus, IoT Hub, Key Vault: <resource>.<suffix>.
    "webpubsub.azure.com",
    "service.signalr.net",
    "servicebus.windows.net",
    "azure-devices.net",
    "vault.azure.net",
];

/// Where a wildcard pattern sits against the public-suffix list: `Some((type, suffix))` when
/// the literal part it is under (`azureedge.net` of `*.azureedge.net` or `swd*-mscdn.azureedge.net`)
/// is itself a public suffix. Under an ICANN suffix (`*.com`, `*.co.uk`) the pattern would allow
/// every domain registered there; under a private one (`*.azureedge.net`,
/// `*.blob.core.windows.net`) every tenant of a hosting provider, not only Microsoft.
pub fn wildcard_scope(pattern: &Pattern) -> Option<(psl::Type, &str)> {
    let parent = match pattern {
        Pattern::Exact(_) => return None,
        Pattern::Subdomains(p) | Pattern::LabelGlob { parent: p, .. } => p.as_str(),
    };
    if MULTI_TENANT_UNLISTED.contains(&parent) {
        return Some((psl::Type::Private, parent));
    }
    let suffix = psl::suffix(parent.as_bytes())?;
    if suffix.trim().as_bytes() != parent.as_bytes() {
        return None;
    }
    Some((suffix.typ()?, parent))
}

/// The `*.toml` files of a directory, in file-name order (`README.md` and others ignored).
fn zone_files(dir: &Path) -> Result<Vec<PathBuf>, ZoneError> {
    let mut files: Vec<PathBuf> = fs::read_dir(dir)
        .map_err(|source| FileError::io(dir, source))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|e| e == "toml"))
        .collect();
    files.sort();
    Ok(files)
}

impl Catalog {
    /// Loads every `*.toml` file of `dir`, in file-name order.
    pub fn load_dir(dir: &Path) -> Result<Catalog, ZoneError> {
        Catalog::load_dirs(&[dir.to_path_buf()])
    }

    /// Loads the shipped catalog (`dirs[0]`, which must hold zone files), then each local
    /// directory in order (missing or empty ones are fine: an admin has not added anything
    /// yet). An endpoint-set id defined twice is an error naming both files.
    pub fn load_dirs(dirs: &[PathBuf]) -> Result<Catalog, ZoneError> {
        Catalog::load(dirs, &[])
    }

    /// The same, leaving out one file (the overlay `catalog pull` is about to replace).
    pub fn load_dirs_except(dirs: &[PathBuf], skip: &Path) -> Result<Catalog, ZoneError> {
        Catalog::load_files(dirs, Some(skip), &[])
    }

    /// The zone directories, then the overlays of the followed sources (`[catalog] page`,
    /// `feed`) that exist. An overlay only adds: an endpoint set it defines under an id already
    /// loaded extends that set, and an extension of an id no file defines is left out with a
    /// warning — a generated file never fails the catalog that an admin's files make.
    pub fn load(dirs: &[PathBuf], overlays: &[PathBuf]) -> Result<Catalog, ZoneError> {
        let overlays: Vec<&Path> = overlays
            .iter()
            .map(PathBuf::as_path)
            .filter(|o| o.exists())
            .collect();
        Catalog::load_files(dirs, None, &overlays)
    }

    fn load_files(
        dirs: &[PathBuf],
        skip: Option<&Path>,
        overlays: &[&Path],
    ) -> Result<Catalog, ZoneError> {
        let mut files = Vec::new();
        for (i, dir) in dirs.iter().enumerate() {
            if i > 0 && !dir.exists() {
                continue;
            }
            let found = zone_files(dir)?;
            if i == 0 && found.is_empty() {
                return Err(ZoneError::Empty(dir.to_path_buf()));
            }
            files.extend(found);
        }
        let canonical = |p: &Path| p.canonicalize().unwrap_or_else(|_| p.to_path_buf());
        let leave_out: Vec<PathBuf> = skip
            .into_iter()
            .chain(overlays.iter().copied())
            .map(canonical)
            .collect();
        files.retain(|f| !leave_out.contains(&canonical(f)));
        let mut catalog = Catalog::default();
        let mut seen: HashMap<String, (PathBuf, usize)> = HashMap::new();
        let mut extensions: Vec<(Extension, usize)> = Vec::new();
        for path in files {
            let text = fs::read_to_string(&path).map_err(|source| FileError::io(&path, source))?;
            let contents = parse_zone(&path, &text, &mut catalog.warnings)?;
            extensions.extend(contents.extensions);
            catalog.families.extend(contents.families);
            for (set, line) in contents.sets {
                if let Some((first, first_line)) = seen.get(&set.id) {
                    return Err(FileError::Entry {
                        path,
                        line,
                        entry: set.id.clone(),
                        reason: format!(
                            "duplicate endpoint set id (first defined at {}:{first_line})",
                            first.display()
                        ),
                    }
                    .into());
                }
                seen.insert(set.id.clone(), (path.clone(), line));
                catalog.sets.push(set);
            }
        }
        // Extensions apply once every set is known, whatever the file order.
        for (ext, line) in extensions {
            let Some(set) = catalog.sets.iter_mut().find(|s| s.id == ext.id) else {
                return Err(FileError::Entry {
                    path: ext.source,
                    line,
                    entry: ext.id,
                    reason: "extends an endpoint set that no zone file defines".into(),
                }
                .into());
            };
            set.extend(ext);
        }
        for overlay in overlays {
            catalog.add_overlay(overlay)?;
        }
        catalog.check_families()?;
        Ok(catalog)
    }

    /// Every family's name is unique and its profiles exist; an optional profile no set has is
    /// a warning (a feature an admin's catalog left out), a family's own one an error (its
    /// readiness would be computed without it).
    fn check_families(&mut self) -> Result<(), ZoneError> {
        let profiles = self.profiles();
        let mut warnings = Vec::new();
        for (i, family) in self.families.iter().enumerate() {
            let at = |entry: &str, reason: String| FileError::Entry {
                path: family.source.clone(),
                line: family.line,
                entry: entry.to_string(),
                reason,
            };
            if let Some(first) = self.families[..i].iter().find(|f| f.name == family.name) {
                return Err(at(
                    &family.name,
                    format!(
                        "duplicate family name (first defined at {}:{})",
                        first.source.display(),
                        first.line
                    ),
                )
                .into());
            }
            for p in &family.profiles {
                if !profiles.contains(p.as_str()) {
                    return Err(at(
                        p,
                        format!(
                            "family '{}' names a profile no endpoint set has",
                            family.name
                        ),
                    )
                    .into());
                }
            }
            for p in &family.optional_profiles {
                if !profiles.contains(p.as_str()) {
                    warnings.push(ZoneWarning {
                        path: family.source.clone(),
                        line: family.line,
                        entry: p.clone(),
                        reason: format!(
                            "optional profile of family '{}' that no endpoint set has",
                            family.name
                        ),
                    });
                }
            }
        }
        self.warnings.extend(warnings);
        Ok(())
    }

    /// The family of this name.
    pub fn family(&self, name: &str) -> Option<&Family> {
        self.families.iter().find(|f| f.name == name)
    }

    /// Adds a generated overlay: its sets are new or extend the set of their id; its extensions
    /// of unknown ids are warnings.
    fn add_overlay(&mut self, path: &Path) -> Result<(), ZoneError> {
        let text = fs::read_to_string(path).map_err(|source| FileError::io(path, source))?;
        let contents = parse_zone(path, &text, &mut self.warnings)?;
        let mut extensions: Vec<(Extension, usize)> = contents.extensions;
        for (set, line) in contents.sets {
            if self.set(&set.id).is_some() {
                extensions.push((
                    Extension {
                        id: set.id,
                        names: set.names,
                        networks: set.networks,
                        ports: set.ports,
                        source: set.source,
                    },
                    line,
                ));
            } else {
                self.sets.push(set);
            }
        }
        for (ext, line) in extensions {
            match self.sets.iter_mut().find(|s| s.id == ext.id) {
                Some(set) => set.extend(ext),
                None => self.warnings.push(ZoneWarning {
                    path: path.to_path_buf(),
                    line,
                    entry: ext.id,
                    reason: "extends an endpoint set that no zone file defines: left out".into(),
                }),
            }
        }
        Ok(())
    }

    /// Every profile name, sorted.
    pub fn profiles(&self) -> BTreeSet<&str> {
        self.sets.iter().map(|s| s.profile.as_str()).collect()
    }

    /// The endpoint set with this id.
    pub fn set(&self, id: &str) -> Option<&EndpointSet> {
        self.sets.iter().find(|s| s.id == id)
    }

    /// Total number of name patterns.
    pub fn name_count(&self) -> usize {
        self.sets.iter().map(|s| s.names.len()).sum()
    }

    /// Total number of static networks.
    pub fn network_count(&self) -> usize {
        self.sets.iter().map(|s| s.networks.len()).sum()
    }
}

/// An `[[extend]]` of a zone file: names, networks and ports added to an endpoint set defined
/// elsewhere (the feed overlay uses it: the shipped catalog is the floor, the feed adds).
#[derive(Debug, Clone)]
pub struct Extension {
    /// The endpoint set it extends.
    pub id: String,
    /// Name patterns to add.
    pub names: Vec<Pattern>,
    /// Networks to add.
    pub networks: Vec<IpNet>,
    /// Ports to add.
    pub ports: Vec<PortSpec>,
    /// The file it came from.
    pub source: PathBuf,
}

/// What one zone file holds.
#[derive(Debug, Default)]
pub struct ZoneContents {
    /// Endpoint sets, with the line each starts on.
    pub sets: Vec<(EndpointSet, usize)>,
    /// Extensions of sets defined elsewhere, with their lines.
    pub extensions: Vec<(Extension, usize)>,
    /// Device families.
    pub families: Vec<Family>,
}

/// Parses one zone file's text; `path` is only used in errors and warnings, which are added to
/// `warnings`. Its endpoint sets only (see [`parse_zone`] for its extensions too).
pub fn parse_file(
    path: &Path,
    text: &str,
    warnings: &mut Vec<ZoneWarning>,
) -> Result<Vec<(EndpointSet, usize)>, ZoneError> {
    parse_zone(path, text, warnings).map(|z| z.sets)
}

/// The checks every name, network and port of a zone file passes, wherever it is written.
struct Fields<'a> {
    path: &'a Path,
    text: &'a str,
}

impl Fields<'_> {
    fn err(&self, s: &Spanned<String>, reason: String) -> ZoneError {
        FileError::entry(self.path, self.text, s, reason).into()
    }

    /// Ports, and ranges (`tcp/5228-5230`) as the ports they hold.
    fn ports(&self, raw: &[Spanned<String>]) -> Result<Vec<PortSpec>, ZoneError> {
        let mut ports = Vec::with_capacity(raw.len());
        for p in raw {
            for spec in parse_port_range(p.get_ref()).map_err(|r| self.err(p, r.into()))? {
                if !ports.contains(&spec) {
                    ports.push(spec);
                }
            }
        }
        Ok(ports)
    }

    /// Names of set `id`; a wildcard directly under a multi-tenant suffix warns unless the set
    /// says `multi_tenant`.
    fn names(
        &self,
        raw: &[Spanned<String>],
        id: &str,
        multi_tenant: bool,
        warnings: &mut Vec<ZoneWarning>,
    ) -> Result<Vec<Pattern>, ZoneError> {
        let mut names = Vec::with_capacity(raw.len());
        for n in raw {
            let pattern = Pattern::parse(n.get_ref()).map_err(|e| self.err(n, e.reason.into()))?;
            let warn = |reason: String| ZoneWarning {
                path: self.path.to_path_buf(),
                line: line_of(self.text, n.span().start),
                entry: n.get_ref().clone(),
                reason,
            };
            match wildcard_scope(&pattern) {
                Some((psl::Type::Icann, suffix)) => {
                    return Err(self.err(
                        n,
                        format!(
                            "a wildcard directly under the public suffix '{suffix}' would allow \
                             every domain registered there; list the names instead"
                        ),
                    ));
                }
                Some((psl::Type::Private, suffix)) if !multi_tenant => warnings.push(warn(
                    format!(
                        "a wildcard directly under '{suffix}', a multi-tenant suffix (public-suffix \
                         list, private section): any of its tenants can create such names. Narrow \
                         it, or set multi_tenant = true on the set with the reason in a comment"
                    ),
                )),
                _ => {}
            }
            if names.contains(&pattern) {
                warnings.push(warn(format!("listed twice in endpoint set '{id}'")));
            } else {
                names.push(pattern);
            }
        }
        Ok(names)
    }

    fn networks(&self, raw: &[Spanned<String>]) -> Result<Vec<IpNet>, ZoneError> {
        let mut networks = Vec::with_capacity(raw.len());
        for n in raw {
            let net: IpNet = n.get_ref().trim().parse().map_err(|_| {
                self.err(
                    n,
                    "not a network in CIDR form (e.g. 13.67.13.176/28)".into(),
                )
            })?;
            if net.trunc() != net {
                return Err(self.err(n, format!("host bits set; the network is {}", net.trunc())));
            }
            networks.push(net);
        }
        Ok(networks)
    }

    /// A profile or family name: lower-case letters, digits and '-'.
    fn profile_name(&self, raw: &Spanned<String>, what: &str) -> Result<String, ZoneError> {
        let name = raw.get_ref();
        if name.is_empty()
            || name.len() > MAX_ID
            || !name
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        {
            return Err(self.err(
                raw,
                format!(
                    "a {what} name is lower-case letters, digits and '-', at most {MAX_ID} \
                     characters"
                ),
            ));
        }
        Ok(name.clone())
    }

    fn family(&self, raw: Spanned<RawFamily>) -> Result<Family, ZoneError> {
        let line = line_of(self.text, raw.span().start);
        let raw = raw.into_inner();
        let name = self.profile_name(&raw.name, "family")?;
        if raw.description.get_ref().chars().count() > MAX_DESCRIPTION {
            return Err(self.err(
                &raw.description,
                format!("a description is at most {MAX_DESCRIPTION} characters"),
            ));
        }
        let mut profiles = Vec::new();
        let mut optional = Vec::new();
        for (list, out) in [
            (&raw.profiles, &mut profiles),
            (&raw.optional_profiles, &mut optional),
        ] {
            for p in list {
                out.push(self.profile_name(p, "profile")?);
            }
        }
        if profiles.is_empty() {
            return Err(self.err(&raw.name, "a family needs at least one profile".into()));
        }
        Ok(Family {
            name,
            description: raw.description.into_inner(),
            profiles,
            optional_profiles: optional,
            source: self.path.to_path_buf(),
            line,
        })
    }

    fn id<'s>(&self, raw: &'s Spanned<String>) -> Result<&'s str, ZoneError> {
        let id = raw.get_ref().trim();
        if id.is_empty()
            || id.len() > MAX_ID
            || !id
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        {
            return Err(self.err(
                raw,
                format!("an id is letters, digits, '-' and '_', at most {MAX_ID} characters"),
            ));
        }
        Ok(id)
    }
}

/// Parses one zone file: its endpoint sets and its extensions of sets defined elsewhere.
pub fn parse_zone(
    path: &Path,
    text: &str,
    warnings: &mut Vec<ZoneWarning>,
) -> Result<ZoneContents, ZoneError> {
    let file: ZoneFile = toml::from_str(text).map_err(|e| FileError::syntax(path, text, &e))?;
    crate::base::fileerror::bounded_strings(path, text)?;
    let f = Fields { path, text };
    let mut out = ZoneContents::default();
    for raw in file.family {
        out.families.push(f.family(raw)?);
    }
    for raw in file.endpoint_set {
        let line = line_of(text, raw.span().start);
        let raw = raw.into_inner();
        let id = f.id(&raw.id)?;
        let profile = f.profile_name(&raw.profile, "profile")?;
        if raw.description.get_ref().chars().count() > MAX_DESCRIPTION {
            return Err(f.err(
                &raw.description,
                format!("a description is at most {MAX_DESCRIPTION} characters"),
            ));
        }
        let ports = f.ports(&raw.ports)?;
        if ports.is_empty() {
            return Err(f.err(&raw.id, "an endpoint set needs at least one port".into()));
        }
        let names = f.names(&raw.names, id, raw.multi_tenant, warnings)?;
        let networks = f.networks(&raw.networks)?;
        if names.is_empty() && networks.is_empty() {
            return Err(f.err(&raw.id, "an endpoint set needs names or networks".into()));
        }
        if let Some(section) = &raw.section
            && section.get_ref().chars().count() > MAX_DESCRIPTION
        {
            return Err(f.err(
                section,
                format!("a section is at most {MAX_DESCRIPTION} characters"),
            ));
        }
        out.sets.push((
            EndpointSet {
                id: id.to_string(),
                description: raw.description.into_inner(),
                category: raw.category,
                required: raw.required,
                express_route: raw.express_route,
                ports,
                profile,
                tenant_region: raw.tenant_region,
                stage: raw.stage,
                section: raw.section.map(Spanned::into_inner),
                document: file.source.clone(),
                names,
                networks,
                multi_tenant: raw.multi_tenant,
                source: path.to_path_buf(),
                extended_by: Vec::new(),
            },
            line,
        ));
    }
    for raw in file.extend {
        let line = line_of(text, raw.span().start);
        let raw = raw.into_inner();
        let id = f.id(&raw.id)?;
        let extension = Extension {
            id: id.to_string(),
            // An extension cannot vouch for a multi-tenant wildcard: it always warns.
            names: f.names(&raw.names, id, false, warnings)?,
            networks: f.networks(&raw.networks)?,
            ports: f.ports(&raw.ports)?,
            source: path.to_path_buf(),
        };
        out.extensions.push((extension, line));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    const GOOD: &str = r#"
[[endpoint_set]]
id = "178"
description = "Apple"
category = "default"
required = true
express_route = false
ports = ["tcp/443", "TCP/5223"]
profile = "apple"
names = ["*.itunes.apple.com", "ITunes.apple.com."]
networks = ["17.0.0.0/8"]
"#;

    #[test]
    fn parses_a_set() {
        let sets = parse_file(Path::new("zones/apple.toml"), GOOD, &mut Vec::new()).unwrap();
        assert_eq!(sets.len(), 1);
        let (set, line) = &sets[0];
        assert_eq!(*line, 2);
        assert_eq!(set.id, "178");
        assert_eq!(set.ports[1].to_string(), "tcp/5223");
        assert_eq!(set.names[1].to_string(), "itunes.apple.com");
        assert_eq!(set.networks[0].to_string(), "17.0.0.0/8");
    }

    fn err(text: &str) -> String {
        parse_file(Path::new("zones/apple.toml"), text, &mut Vec::new())
            .unwrap_err()
            .to_string()
    }

    #[test]
    fn bad_name_names_file_line_and_entry() {
        let text = GOOD.replace("\"*.itunes.apple.com\"", "\n  \"*.*.apple.com\"");
        assert_eq!(
            err(&text),
            "zones/apple.toml:11: '*.*.apple.com': more than one wildcard label"
        );
    }

    #[test]
    fn bad_port_and_network() {
        let text = GOOD.replace("TCP/5223", "icmp/1");
        assert_eq!(
            err(&text),
            "zones/apple.toml:8: 'icmp/1': protocol must be tcp or udp"
        );
        let text = GOOD.replace("17.0.0.0/8", "17.0.0.1/8");
        assert_eq!(
            err(&text),
            "zones/apple.toml:11: '17.0.0.1/8': host bits set; the network is 17.0.0.0/8"
        );
        let text = GOOD.replace("17.0.0.0/8", "17.0.0/8");
        assert!(err(&text).starts_with("zones/apple.toml:11: '17.0.0/8': not a network"));
    }

    #[test]
    fn no_wildcard_at_or_under_a_public_suffix() {
        for (pattern, suffix) in [("*.com", "com"), ("*.co.uk", "co.uk"), ("x*.net", "net")] {
            let text = GOOD.replace("\"*.itunes.apple.com\"", &format!("\"{pattern}\""));
            let e = err(&text);
            assert!(
                e.starts_with(&format!("zones/apple.toml:10: '{pattern}': a wildcard directly under the public suffix '{suffix}'")),
                "{e}"
            );
        }
        let parse = |text: &str| {
            let mut w = Vec::new();
            parse_file(Path::new("z.toml"), text, &mut w).unwrap();
            w
        };
        // Multi-tenant hosting (the list's private section, and Azure names it lacks): a warning,
        // unless the set says so.
        for pattern in [
            "*.azureedge.net",
            "swd*-mscdn.azureedge.net",
            "*.blob.core.windows.net",
            "*.webpubsub.azure.com",
        ] {
            let text = GOOD.replace("\"*.itunes.apple.com\"", &format!("\"{pattern}\""));
            let w = parse(&text);
            assert_eq!(w.len(), 1, "{pattern}: {w:?}");
            assert_eq!((w[0].line, w[0].entry.as_str()), (10, pattern));
            assert!(w[0].reason.contains("multi-tenant"), "{}", w[0]);
            let declared = text.replace(
                "profile = \"apple\"",
                "profile = \"apple\"\nmulti_tenant = true",
            );
            assert!(
                parse(&declared).is_empty(),
                "{pattern} declared multi-tenant"
            );
        }
        assert!(
            parse(GOOD).is_empty(),
            "*.itunes.apple.com is under a registrable domain"
        );
        let twice = GOOD.replace(
            "\"ITunes.apple.com.\"",
            "\"ITunes.apple.com.\", \"itunes.apple.com\"",
        );
        let w = parse(&twice);
        assert_eq!(w.len(), 1);
        assert_eq!(
            w[0].to_string(),
            "z.toml:10: 'itunes.apple.com': listed twice in endpoint set '178'"
        );
    }

    #[test]
    fn overlays_only_add_and_never_fail_the_catalog() {
        let dir = tempfile::tempdir().unwrap();
        let zones = dir.path().join("zones");
        std::fs::create_dir(&zones).unwrap();
        std::fs::write(zones.join("apple.toml"), GOOD).unwrap();
        let new_set = |name: &str| {
            format!(
                "[[endpoint_set]]\nid = \"193\"\ndescription = \"New\"\ncategory = \"default\"\n\
                 required = true\nexpress_route = false\nports = [\"tcp/443\"]\nprofile = \"autopilot\"\n\
                 names = [\"{name}\"]\n"
            )
        };
        // The page and the feed both bring id 193; the feed also extends an id nobody defines.
        let page = dir.path().join("page.toml");
        std::fs::write(&page, new_set("a.microsoft.com")).unwrap();
        let feed = dir.path().join("feed.toml");
        std::fs::write(
            &feed,
            format!(
                "{}\n[[extend]]\nid = \"404\"\nnames = [\"b.microsoft.com\"]\n",
                new_set("c.microsoft.com")
            ),
        )
        .unwrap();
        let missing = dir.path().join("not-yet.toml");
        let c = Catalog::load(
            std::slice::from_ref(&zones),
            &[page.clone(), feed.clone(), missing],
        )
        .unwrap();
        let s = c.set("193").unwrap();
        assert_eq!(s.source, page);
        assert_eq!(s.extended_by, std::slice::from_ref(&feed));
        assert_eq!(
            s.names.iter().map(|n| n.to_string()).collect::<Vec<_>>(),
            ["a.microsoft.com", "c.microsoft.com"]
        );
        assert_eq!(c.warnings.len(), 1);
        assert_eq!(
            c.warnings[0].to_string(),
            format!(
                "{}:11: '404': extends an endpoint set that no zone file defines: left out",
                feed.display()
            )
        );
        // In a zone directory the same file is an admin's: strict.
        std::fs::copy(&feed, zones.join("feed.toml")).unwrap();
        let e = Catalog::load_dirs(&[zones]).unwrap_err().to_string();
        assert!(
            e.contains("extends an endpoint set that no zone file defines"),
            "{e}"
        );
    }

    #[test]
    fn port_ranges_stages_and_sources() {
        let text = format!(
            "[source]\nname = \"Google\"\nversion = \"2026-03\"\n{}",
            GOOD.replace("\"TCP/5223\"", "\"tcp/5228-5230\"").replace(
                "profile = \"apple\"",
                "profile = \"apple\"\nstage = \"push\"\nsection = \"FCM\""
            )
        );
        let sets = parse_file(Path::new("z.toml"), &text, &mut Vec::new()).unwrap();
        let set = &sets[0].0;
        assert_eq!(
            set.ports.iter().map(|p| p.to_string()).collect::<Vec<_>>(),
            ["tcp/443", "tcp/5228", "tcp/5229", "tcp/5230"]
        );
        assert_eq!(set.stage, Some(Stage::Push));
        assert_eq!(set.section.as_deref(), Some("FCM"));
        assert_eq!(set.document.as_ref().unwrap().version, "2026-03");
        for (range, why) in [
            ("tcp/5230-5228", "from the lower port"),
            ("tcp/1-100", "at most 64 ports"),
            ("tcp/0-3", "from 1 to 65535"),
            ("tcp/5-x", "from 1 to 65535"),
        ] {
            let e = err(&GOOD.replace("TCP/5223", range));
            assert!(
                e.starts_with(&format!("zones/apple.toml:8: '{range}'")),
                "{e}"
            );
            assert!(e.contains(why), "{range}: {e}");
        }
        let e = err(&GOOD.replace(
            "profile = \"apple\"",
            "profile = \"apple\"\nstage = \"boot\"",
        ));
        assert!(e.contains("unknown variant `boot`"), "{e}");
    }

    #[test]
    fn families_name_profiles_that_exist() {
        let dir = tempfile::tempdir().unwrap();
        let zones = dir.path().join("zones");
        std::fs::create_dir(&zones).unwrap();
        std::fs::write(zones.join("apple.toml"), GOOD).unwrap();
        let family = |profiles: &str, optional: &str| {
            format!(
                "[[family]]\nname = \"apple-mobile\"\ndescription = \"iPad\"\nprofiles = [{profiles}]\n\
                 optional_profiles = [{optional}]\n"
            )
        };
        std::fs::write(
            zones.join("families.toml"),
            family("\"apple\"", "\"icloud\""),
        )
        .unwrap();
        let c = Catalog::load_dir(&zones).unwrap();
        assert_eq!(c.family("apple-mobile").unwrap().profiles, ["apple"]);
        assert_eq!(c.warnings.len(), 1);
        assert!(
            c.warnings[0]
                .to_string()
                .ends_with("families.toml:1: 'icloud': optional profile of family 'apple-mobile' that no endpoint set has"),
            "{}",
            c.warnings[0]
        );
        std::fs::write(zones.join("families.toml"), family("\"aple\"", "")).unwrap();
        let e = Catalog::load_dir(&zones).unwrap_err().to_string();
        assert!(
            e.ends_with(
                "families.toml:1: 'aple': family 'apple-mobile' names a profile no endpoint set has"
            ),
            "{e}"
        );
        std::fs::write(
            zones.join("families.toml"),
            format!("{}\n{}", family("\"apple\"", ""), family("\"apple\"", "")),
        )
        .unwrap();
        let e = Catalog::load_dir(&zones).unwrap_err().to_string();
        assert!(
            e.contains("families.toml:7: 'apple-mobile': duplicate family name (first defined at"),
            "{e}"
        );
        std::fs::write(zones.join("families.toml"), family("", "")).unwrap();
        let e = Catalog::load_dir(&zones).unwrap_err().to_string();
        assert!(e.contains("a family needs at least one profile"), "{e}");
    }

    #[test]
    fn unknown_field_and_syntax() {
        let text = GOOD.replace("required = true", "requird = true");
        let e = err(&text);
        assert!(e.starts_with("zones/apple.toml:"), "{e}");
        assert!(e.contains("requird"), "{e}");
        let e = err("[[endpoint_set]\n");
        assert!(e.starts_with("zones/apple.toml:1:"), "{e}");
    }
}
