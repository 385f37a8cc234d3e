//! The compiled policy: views (client networks) and, per view, the matcher of allowed names.
//!
//! A [`Policy`] is built once from the config and the catalog, off the query path, and is then
//! immutable: decisions are pure lookups with no locks and no allocation. A reload builds a new
//! policy and swaps it whole.

use std::net::IpAddr;
use std::sync::Arc;

use ipnet::IpNet;

use crate::base::fileerror::FileError;
use crate::base::matcher::{Entry, MatcherBuilder, PatternError};
use crate::catalog::zones::{Catalog, EndpointSet, PortSpec};
use crate::config::TenantRegion;
use crate::config::{CnameTargets, Config, DenyRcode, Located, ViewMode};

/// A config entry that does not fit the catalog.
#[derive(Debug, thiserror::Error)]
pub enum PolicyError {
    /// A view names a profile or set id the catalog does not have, or selects nothing: the
    /// config file's error shape, `file:line: 'entry': reason`.
    #[error(transparent)]
    Entry(#[from] FileError),
    /// A pattern could not be compiled (validation makes this unreachable for zone files).
    #[error("{0}")]
    Pattern(#[from] PatternError),
}

/// One client network group with the names it may resolve.
#[derive(Debug)]
pub struct View {
    /// Its position in the config (and in the fence's plans).
    pub index: usize,
    /// The view's name.
    pub name: String,
    /// Client networks.
    pub networks: Vec<IpNet>,
    /// Enforce or report.
    pub mode: ViewMode,
    /// The answer for denied names.
    pub deny_rcode: DenyRcode,
    /// TTL and MINIMUM of the SOA of NXDOMAIN denials.
    pub deny_ttl: u32,
    /// What to do with CNAME chains that leave the allowlist.
    pub cname_targets: CnameTargets,
    /// Device families the view selects (names of the catalog's families), in config order.
    pub families: Vec<String>,
    /// Profiles whose sets the view selects: its families', its own, less those it excludes.
    pub profiles: Vec<String>,
    /// Catalog indices of the endpoint sets this view allows, sorted.
    pub sets: Vec<u32>,
    /// Names of those sets, compiled; values are catalog indices.
    matcher: crate::base::matcher::Matcher,
}

impl View {
    /// The entry allowing `name` (any case, trailing dot optional), or `None` when denied.
    pub fn lookup(&self, name: &str) -> Option<&Entry> {
        self.matcher.lookup(name)
    }

    /// The entry allowing a name already in lower case without the trailing dot.
    pub fn lookup_normalized(&self, name: &str) -> Option<&Entry> {
        self.matcher.lookup_normalized(name)
    }

    /// Number of distinct name patterns the view allows.
    pub fn pattern_count(&self) -> usize {
        self.matcher.len()
    }
}

/// Every view, and the catalog they were compiled from.
#[derive(Debug)]
pub struct Policy {
    /// The catalog; views refer to its sets by index.
    pub catalog: Arc<Catalog>,
    /// Views in config order.
    pub views: Vec<View>,
    /// The tenant locations whose per-location sets apply (`[zones] tenant_regions`).
    pub tenant_regions: Vec<TenantRegion>,
    /// (network, view index), longest prefix first, for client lookup.
    by_prefix: Vec<(IpNet, usize)>,
}

impl Policy {
    /// Compiles the views of `config` against `catalog`.
    pub fn compile(config: &Config, catalog: Arc<Catalog>) -> Result<Policy, PolicyError> {
        let err = |l: &Located<String>, reason: String| {
            PolicyError::Entry(FileError::Entry {
                path: config.path.clone(),
                line: l.line,
                entry: l.value.clone(),
                reason,
            })
        };
        let regions = &config.zones.tenant_regions;
        let in_region = |s: &EndpointSet| s.tenant_region.is_none_or(|r| regions.contains(&r));
        let mut views = Vec::with_capacity(config.views.len());
        let mut by_prefix = Vec::new();
        let known_profiles = catalog.profiles();
        let unknown_profile = |p: &Located<String>| {
            let known: Vec<&str> = known_profiles.iter().copied().collect();
            err(
                p,
                format!("no such profile in the zones (known: {})", known.join(", ")),
            )
        };
        for vc in &config.views {
            let mut profiles: Vec<String> = Vec::new();
            let mut families = Vec::new();
            for f in &vc.families {
                let Some(family) = catalog.family(&f.value) else {
                    let known: Vec<&str> =
                        catalog.families.iter().map(|f| f.name.as_str()).collect();
                    return Err(err(
                        f,
                        format!("no such family in the zones (known: {})", known.join(", ")),
                    ));
                };
                families.push(family.name.clone());
                profiles.extend(family.profiles.iter().cloned());
            }
            for p in &vc.profiles {
                if !known_profiles.contains(p.value.as_str()) {
                    return Err(unknown_profile(p));
                }
                profiles.push(p.value.clone());
            }
            for p in &vc.exclude_profiles {
                if !known_profiles.contains(p.value.as_str()) {
                    return Err(unknown_profile(p));
                }
                profiles.retain(|q| *q != p.value);
            }
            let mut seen = std::collections::HashSet::new();
            profiles.retain(|p| seen.insert(p.clone()));
            let mut chosen = vec![false; catalog.sets.len()];
            for (i, s) in catalog.sets.iter().enumerate() {
                chosen[i] = profiles.contains(&s.profile) && in_region(s);
            }
            for (list, on) in [(&vc.sets, true), (&vc.exclude_sets, false)] {
                for id in list {
                    match catalog.sets.iter().position(|s| s.id == id.value) {
                        Some(i) => chosen[i] = on,
                        None => {
                            return Err(err(
                                id,
                                "no endpoint set with this id in the zones".into(),
                            ));
                        }
                    }
                }
            }
            let sets: Vec<u32> = (0..catalog.sets.len() as u32)
                .filter(|&i| chosen[i as usize])
                .collect();
            let mut builder = MatcherBuilder::new();
            for &i in &sets {
                for name in &catalog.sets[i as usize].names {
                    builder.add(name.clone(), i);
                }
            }
            let matcher = builder.build()?;
            if matcher.is_empty() {
                return Err(PolicyError::Entry(FileError::Entry {
                    path: config.path.clone(),
                    line: vc.line,
                    entry: vc.name.clone(),
                    reason: "the view allows no name (check profiles, sets and tenant_regions)"
                        .into(),
                }));
            }
            for net in &vc.networks {
                by_prefix.push((*net, views.len()));
            }
            views.push(View {
                index: views.len(),
                name: vc.name.clone(),
                networks: vc.networks.clone(),
                families,
                profiles,
                mode: vc.mode,
                deny_rcode: vc.deny_rcode,
                deny_ttl: vc.deny_ttl,
                cname_targets: vc.cname_targets,
                sets,
                matcher,
            });
        }
        by_prefix.sort_by_key(|(net, _)| std::cmp::Reverse(net.prefix_len()));
        Ok(Policy {
            catalog,
            views,
            tenant_regions: regions.clone(),
            by_prefix,
        })
    }

    /// The view of a client address: the view whose network is the longest prefix containing it.
    /// IPv4-mapped IPv6 addresses (`::ffff:10.1.2.3`, from dual-stack sockets) count as IPv4.
    pub fn view_for(&self, client: IpAddr) -> Option<&View> {
        let client = match client {
            IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(client, IpAddr::V4),
            v4 => v4,
        };
        self.by_prefix
            .iter()
            .find(|(net, _)| net.contains(&client))
            .map(|&(_, i)| &self.views[i])
    }

    /// Whether a set applies under the configured tenant locations (sets of no location always
    /// do).
    pub fn in_region(&self, set: &EndpointSet) -> bool {
        set.tenant_region
            .is_none_or(|r| self.tenant_regions.contains(&r))
    }

    /// A view by name.
    pub fn view(&self, name: &str) -> Option<&View> {
        self.views.iter().find(|v| v.name == name)
    }

    /// The ports of the endpoint sets (catalog indices) that allowed a name, sorted, once each:
    /// what an `addr_port` firewall set keys elements by.
    pub fn ports_of(&self, endpoint_sets: &[u32]) -> Vec<PortSpec> {
        let mut ports: Vec<PortSpec> = endpoint_sets
            .iter()
            .flat_map(|&i| self.catalog.sets[i as usize].ports.iter().copied())
            .collect();
        ports.sort_unstable();
        ports.dedup();
        ports
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;

    fn policy(views: &str) -> Result<Policy, PolicyError> {
        let text = format!("[upstream]\nservers = [\"127.0.0.1:5300\"]\n{views}");
        let config = Config::parse(Path::new("c.toml"), &text, Path::new("/nonexistent")).unwrap();
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("zones");
        let catalog = Arc::new(Catalog::load_dir(&dir).unwrap());
        Policy::compile(&config, catalog)
    }

    #[test]
    fn longest_prefix_wins() {
        let p = policy(
            r#"
[[view]]
name = "wide"
networks = ["10.0.0.0/8"]
profiles = ["apple"]
[[view]]
name = "narrow"
networks = ["10.1.0.0/16", "::ffff:0:0/96"]
profiles = ["wns"]
"#,
        )
        .unwrap();
        let name = |ip: &str| p.view_for(ip.parse().unwrap()).map(|v| v.name.as_str());
        assert_eq!(name("10.2.3.4"), Some("wide"));
        assert_eq!(name("10.1.3.4"), Some("narrow"));
        assert_eq!(name("::ffff:10.2.3.4"), Some("wide"));
        assert_eq!(name("192.0.2.1"), None);
        assert!(p.view("wide").unwrap().lookup("itunes.apple.com").is_some());
        assert!(
            p.view("wide")
                .unwrap()
                .lookup("x.wns.windows.com")
                .is_none()
        );
    }

    #[test]
    fn unknown_profile_and_set_name_the_line() {
        let e =
            policy("[[view]]\nname = \"a\"\nnetworks = [\"10.0.0.0/8\"]\nprofiles = [\"aple\"]\n")
                .unwrap_err()
                .to_string();
        assert!(e.starts_with("c.toml:6: 'aple': no such profile"), "{e}");
        assert!(e.contains("apple"), "{e}");
        let e = policy(
            "[[view]]\nname = \"a\"\nnetworks = [\"10.0.0.0/8\"]\nprofiles = [\"apple\"]\nexclude_sets = [\"999\"]\n",
        )
        .unwrap_err()
        .to_string();
        assert!(e.starts_with("c.toml:7: '999': no endpoint set"), "{e}");
    }

    #[test]
    fn tenant_region_selects_rows() {
        let p = policy(
            "[zones]\ntenant_regions = [\"eu\"]\n[[view]]\nname = \"a\"\nnetworks = [\"10.0.0.0/8\"]\nprofiles = [\"win32-apps\"]\n",
        );
        // The config parser puts [zones] after [upstream]; tenant_regions = eu only.
        let p = p.unwrap();
        let v = p.view("a").unwrap();
        assert!(v.lookup("euprodimedatapri.azureedge.net").is_some());
        assert!(v.lookup("naprodimedatapri.azureedge.net").is_none());
        assert!(v.lookup("approdimedatahotfix.azureedge.net").is_none());
    }

    #[test]
    fn wire_names_match_like_text() {
        // The query path's call: the question's wire name as text, then the matcher.
        let p = policy(
            "[[view]]\nname = \"a\"\nnetworks = [\"10.0.0.0/8\"]\nprofiles = [\"intune-core\"]\n",
        )
        .unwrap();
        let v = p.view("a").unwrap();
        let lookup = |wire: &[u8]| {
            let mut buf = [0u8; 256];
            crate::base::wire::name_text(wire, &mut buf)
                .and_then(|t| v.lookup_normalized(t).map(|_| ()))
        };
        let wire = |s: &str| {
            let mut out = Vec::new();
            for l in s.trim_end_matches('.').split('.').filter(|l| !l.is_empty()) {
                out.push(l.len() as u8);
                out.extend_from_slice(l.as_bytes());
            }
            out.push(0);
            out
        };
        assert!(lookup(&wire("Fef.MSUA06.Manage.Microsoft.com.")).is_some());
        assert!(lookup(&wire("manage.microsoft.com")).is_some());
        assert!(lookup(&wire("evilmanage.microsoft.com.")).is_none());
        assert!(lookup(&[0]).is_none());
        assert!(lookup(&[]).is_none());
        assert!(lookup(&[6, b'm', b'a']).is_none(), "truncated");
        assert!(lookup(&[0xc0, 0x0c]).is_none(), "compression pointer");
        let mut dotted = vec![3, b'a', b'.', b'b'];
        dotted.extend(wire("manage.microsoft.com"));
        assert!(lookup(&dotted).is_none(), "a dot inside a label");
    }
}
