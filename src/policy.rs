//! The compiled policy: views (client networks) and, per view, the matcher of allowed names.
//!
//! A [`Policy`] is built once from the config and the catalog, off the query path, and is then
//! immutable: decisions are pure lookups with no locks and no allocation. A reload builds a new
//! policy and swaps it whole.

use std::net::IpAddr;
use std::path::PathBuf;
use std::sync::Arc;

use hickory_proto::rr::Name;
use ipnet::IpNet;

use crate::config::{CnameTargets, Config, DenyRcode, Located, ViewMode};
use crate::matcher::{Entry, MatcherBuilder, PatternError};
use crate::zones::{Catalog, EndpointSet, PortSpec};

/// A config entry that does not fit the catalog.
#[derive(Debug, thiserror::Error)]
pub enum PolicyError {
    /// A view names a profile or set id the catalog does not have, or selects nothing.
    #[error("{path}:{line}: '{entry}': {reason}")]
    Entry {
        /// The config file.
        path: PathBuf,
        /// 1-based line.
        line: usize,
        /// The offending entry.
        entry: String,
        /// Why, with what would have been accepted.
        reason: String,
    },
    /// A pattern could not be compiled (validation makes this unreachable for zone files).
    #[error("{0}")]
    Pattern(#[from] PatternError),
}

/// Why a name was denied. A bounded set: it becomes a metric label.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DenyReason {
    /// No endpoint set of the view's profiles matches the name.
    NotAllowlisted,
    /// The client's address is in no view.
    NoView,
}

impl DenyReason {
    /// The label used in logs and metrics.
    pub fn as_str(self) -> &'static str {
        match self {
            DenyReason::NotAllowlisted => "not_allowlisted",
            DenyReason::NoView => "no_view",
        }
    }
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
    /// Catalog indices of the endpoint sets this view allows, sorted.
    pub sets: Vec<u32>,
    /// Names of those sets, compiled; values are catalog indices.
    matcher: crate::matcher::Matcher,
}

impl View {
    /// The entry allowing `name` (any case, trailing dot optional), or `None` when denied.
    pub fn lookup(&self, name: &str) -> Option<&Entry> {
        self.matcher.lookup(name)
    }

    /// The entry allowing a wire name. Labels holding a `.` or non-ASCII bytes never match: no
    /// allowlisted name has them, and treating them as text could make two names look alike.
    pub fn lookup_name(&self, name: &Name) -> Option<&Entry> {
        let mut buf = [0u8; 256];
        let mut len = 0;
        let mut labels = 0usize;
        for label in name.iter() {
            if labels > 0 {
                buf[len] = b'.';
                len += 1;
            }
            let end = len + label.len();
            if end > buf.len() {
                return None;
            }
            buf[len..end].copy_from_slice(label);
            len = end;
            labels += 1;
        }
        let text = &mut buf[..len];
        // A `.` inside a label would read as a label boundary; anything but printable ASCII
        // cannot be in an allowlisted name. Either way the name is not allowed.
        if text.iter().filter(|&&b| b == b'.').count() != labels.saturating_sub(1)
            || !text.iter().all(u8::is_ascii_graphic)
        {
            return None;
        }
        text.make_ascii_lowercase();
        // Every byte was checked to be ASCII above, so this cannot fail.
        self.lookup_normalized(std::str::from_utf8(text).ok()?)
    }

    /// The entry allowing a name in wire form (length-prefixed labels, as in the question section),
    /// or `None` when denied. This is the query path: one pass over the bytes, no allocation.
    /// Compressed or malformed names are not allowed (a question's name is never compressed).
    pub fn lookup_wire(&self, wire: &[u8]) -> Option<&Entry> {
        let mut buf = [0u8; 256];
        self.lookup_normalized(wire_name_text(wire, &mut buf)?)
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

/// Writes a wire-format name as lower-case dotted text (no trailing dot) into `buf`. `None` for a
/// compression pointer, a truncated name, a `.` inside a label or bytes that are not printable
/// ASCII: no allowlisted name can be any of those.
pub fn wire_name_text<'b>(wire: &[u8], buf: &'b mut [u8; 256]) -> Option<&'b str> {
    let mut i = 0;
    let mut len = 0;
    let mut bad = false;
    loop {
        let n = *wire.get(i)? as usize;
        if n == 0 {
            break;
        }
        let label = wire.get(i + 1..i + 1 + n)?;
        if n > 63 || len + n + 1 > buf.len() {
            return None;
        }
        if len > 0 {
            buf[len] = b'.';
            len += 1;
        }
        for (d, &b) in buf[len..len + n].iter_mut().zip(label) {
            let m = NAME_BYTE[b as usize];
            bad |= m == 0;
            *d = m;
        }
        len += n;
        i += 1 + n;
    }
    if bad {
        return None;
    }
    // Only printable ASCII was written, so this cannot fail.
    std::str::from_utf8(&buf[..len]).ok()
}

/// Byte → lower-case byte for printable ASCII other than `.`; 0 for anything that cannot be in an
/// allowlisted name.
static NAME_BYTE: [u8; 256] = {
    let mut t = [0u8; 256];
    let mut b = 0x21;
    while b < 0x7f {
        t[b] = (b as u8).to_ascii_lowercase();
        b += 1;
    }
    t[b'.' as usize] = 0;
    t
};

/// Every view, and the catalog they were compiled from.
#[derive(Debug)]
pub struct Policy {
    /// The catalog; views refer to its sets by index.
    pub catalog: Arc<Catalog>,
    /// Views in config order.
    pub views: Vec<View>,
    /// (network, view index), longest prefix first, for client lookup.
    by_prefix: Vec<(IpNet, usize)>,
}

impl Policy {
    /// Compiles the views of `config` against `catalog`.
    pub fn compile(config: &Config, catalog: Arc<Catalog>) -> Result<Policy, PolicyError> {
        let err = |l: &Located<String>, reason: String| PolicyError::Entry {
            path: config.path.clone(),
            line: l.line,
            entry: l.value.clone(),
            reason,
        };
        let regions = &config.zones.tenant_regions;
        let in_region = |s: &EndpointSet| s.tenant_region.is_none_or(|r| regions.contains(&r));
        let mut views = Vec::with_capacity(config.views.len());
        let mut by_prefix = Vec::new();
        for vc in &config.views {
            let mut chosen = vec![false; catalog.sets.len()];
            for p in &vc.profiles {
                let mut found = false;
                for (i, s) in catalog.sets.iter().enumerate() {
                    if s.profile == p.value {
                        found = true;
                        chosen[i] |= in_region(s);
                    }
                }
                if !found {
                    let known: Vec<&str> = catalog.profiles().into_iter().collect();
                    return Err(err(
                        p,
                        format!("no such profile in the zones (known: {})", known.join(", ")),
                    ));
                }
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
                return Err(PolicyError::Entry {
                    path: config.path.clone(),
                    line: vc.line,
                    entry: vc.name.clone(),
                    reason: "the view allows no name (check profiles, sets and tenant_regions)"
                        .into(),
                });
            }
            for net in &vc.networks {
                by_prefix.push((*net, views.len()));
            }
            views.push(View {
                index: views.len(),
                name: vc.name.clone(),
                networks: vc.networks.clone(),
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
        let p = policy(
            "[[view]]\nname = \"a\"\nnetworks = [\"10.0.0.0/8\"]\nprofiles = [\"intune-core\"]\n",
        )
        .unwrap();
        let v = p.view("a").unwrap();
        let n = |s: &str| Name::from_ascii(s).unwrap();
        assert!(
            v.lookup_name(&n("Fef.MSUA06.Manage.Microsoft.com."))
                .is_some()
        );
        assert!(v.lookup_name(&n("manage.microsoft.com")).is_some());
        assert!(v.lookup_name(&n("evilmanage.microsoft.com.")).is_none());
        assert!(v.lookup_name(&Name::root()).is_none());
        let dotted = Name::from_labels(vec![
            b"a.b".to_vec(),
            b"manage".to_vec(),
            b"microsoft".to_vec(),
            b"com".to_vec(),
        ])
        .unwrap();
        assert!(v.lookup_name(&dotted).is_none());
        // The wire form gives the same answers.
        let wire = |s: &str| {
            let mut out = Vec::new();
            for l in s.trim_end_matches('.').split('.').filter(|l| !l.is_empty()) {
                out.push(l.len() as u8);
                out.extend_from_slice(l.as_bytes());
            }
            out.push(0);
            out
        };
        assert!(
            v.lookup_wire(&wire("Fef.MSUA06.Manage.Microsoft.com."))
                .is_some()
        );
        assert!(v.lookup_wire(&wire("evilmanage.microsoft.com.")).is_none());
        assert!(v.lookup_wire(&[0]).is_none());
        assert!(v.lookup_wire(&[]).is_none());
        assert!(v.lookup_wire(&[6, b'm', b'a']).is_none(), "truncated");
        assert!(
            v.lookup_wire(&[0xc0, 0x0c]).is_none(),
            "compression pointer"
        );
        let mut dotted = vec![3, b'a', b'.', b'b'];
        dotted.extend(wire("manage.microsoft.com"));
        assert!(v.lookup_wire(&dotted).is_none());
    }
}
