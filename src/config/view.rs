//! `[[view]]`: a client network group, what it may resolve (profiles and sets of the catalog,
//! checked against it when the policy is compiled) and how it is denied.

use ipnet::IpNet;
use serde::Deserialize;
use toml::Spanned;

use super::fence::{FenceBackend, RawViewFence, ViewFence, view_fence};
use super::section::{Ctx, default};
use super::{ConfigError, Located};

/// Longest view name: it is part of every firewall set's name and a label of every metric of the
/// view.
pub const MAX_VIEW_NAME: usize = 32;
/// The longest a denial may be cached by clients.
const MAX_DENY_TTL_SECS: u64 = 86_400;

/// One `[[view]]` as written.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawView {
    name: Spanned<String>,
    networks: Vec<Spanned<String>>,
    #[serde(default)]
    families: Vec<Spanned<String>>,
    #[serde(default)]
    profiles: Vec<Spanned<String>>,
    #[serde(default)]
    exclude_profiles: Vec<Spanned<String>>,
    #[serde(default)]
    sets: Vec<Spanned<String>>,
    #[serde(default)]
    exclude_sets: Vec<Spanned<String>>,
    #[serde(default = "nxdomain")]
    deny_rcode: DenyRcode,
    #[serde(default = "sixty")]
    deny_ttl_secs: Spanned<u64>,
    #[serde(default = "follow")]
    cname_targets: CnameTargets,
    #[serde(default = "enforce")]
    mode: ViewMode,
    #[serde(default)]
    fence: RawViewFence,
}

// A view has required keys, so its defaults are serde's per-field functions.
fn nxdomain() -> DenyRcode {
    DenyRcode::Nxdomain
}
fn sixty() -> Spanned<u64> {
    default(60)
}
fn follow() -> CnameTargets {
    CnameTargets::Follow
}
fn enforce() -> ViewMode {
    ViewMode::Enforce
}

/// What a denied query is answered with.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum DenyRcode {
    /// REFUSED: the default; the resolver will not answer this name.
    Refused,
    /// NXDOMAIN: suits stub resolvers (musl) that stop walking the search list on REFUSED.
    Nxdomain,
}

impl DenyRcode {
    /// The response code's name, as `dig` prints it.
    pub fn as_str(self) -> &'static str {
        match self {
            DenyRcode::Refused => "REFUSED",
            DenyRcode::Nxdomain => "NXDOMAIN",
        }
    }
}

/// Whether a view enforces its allowlist or only reports what it would deny.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ViewMode {
    /// Denied names get the deny answer.
    Enforce,
    /// Denied names are answered normally, logged and counted as would-be denials.
    Report,
}

impl ViewMode {
    /// The mode's name, as written in the config.
    pub fn as_str(self) -> &'static str {
        match self {
            ViewMode::Enforce => "enforce",
            ViewMode::Report => "report",
        }
    }
}

/// What a view does with a CNAME chain that leaves its allowlist.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum CnameTargets {
    /// Follow it: the targets' addresses are admitted (Microsoft names alias onto CDNs), and the
    /// chain is recorded with every element it admits.
    Follow,
    /// Every CNAME target must be on the view's allowlist too; otherwise the answer is denied
    /// (EDE 15, reason `cname_target`).
    Allowlisted,
}

/// One `[[view]]`.
#[derive(Debug, Clone)]
pub struct ViewConfig {
    /// Name used in logs and metrics.
    pub name: String,
    /// Client networks of this view.
    pub networks: Vec<IpNet>,
    /// Device families (named groups of profiles in the zones) whose profiles are allowed, and
    /// whose readiness is reported.
    pub families: Vec<Located<String>>,
    /// Profiles whose endpoint sets are allowed, beyond the families'.
    pub profiles: Vec<Located<String>>,
    /// Profiles removed from the families' and the list above.
    pub exclude_profiles: Vec<Located<String>>,
    /// Extra endpoint set ids allowed beyond the profiles.
    pub sets: Vec<Located<String>>,
    /// Endpoint set ids removed from the profiles.
    pub exclude_sets: Vec<Located<String>>,
    /// Its firewall sets (used when `[fence]` is enabled).
    pub fence: ViewFence,
    /// Answer for denied names.
    pub deny_rcode: DenyRcode,
    /// TTL and MINIMUM of the SOA in NXDOMAIN denials: how long stub caches keep the denial.
    pub deny_ttl: u32,
    /// What to do with CNAME chains that leave the allowlist.
    pub cname_targets: CnameTargets,
    /// Enforce or report.
    pub mode: ViewMode,
    /// Line of the `[[view]]` header.
    pub line: usize,
}

impl RawView {
    /// The view, checked against the views before it (`earlier`): names and networks are unique.
    pub(super) fn validate(
        &self,
        ctx: &Ctx,
        line: usize,
        earlier: &[ViewConfig],
        backend: FenceBackend,
    ) -> Result<ViewConfig, ConfigError> {
        let name = self.name.get_ref().trim();
        if name.is_empty()
            || !name
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        {
            return Err(ctx.entry(&self.name, "a view name is letters, digits, '-' and '_'"));
        }
        if name.len() > MAX_VIEW_NAME {
            return Err(ctx.entry(
                &self.name,
                format!(
                    "{} characters: a view name is at most {MAX_VIEW_NAME} (it names firewall \
                     sets and labels every metric of the view)",
                    name.len()
                ),
            ));
        }
        if earlier.iter().any(|o| o.name == name) {
            return Err(ctx.entry(&self.name, "duplicate view name"));
        }
        let mut networks = Vec::new();
        for n in &self.networks {
            let net = parse_network(n).map_err(|why| ctx.entry(n, why))?;
            if let Some(other) = earlier.iter().find(|o| o.networks.contains(&net)) {
                return Err(ctx.entry(n, format!("already the network of view '{}'", other.name)));
            }
            networks.push(net);
        }
        if networks.is_empty() {
            return Err(ctx.entry(&self.name, "a view needs at least one network"));
        }
        if self.families.is_empty() && self.profiles.is_empty() && self.sets.is_empty() {
            return Err(ctx.entry(
                &self.name,
                "a view needs families, profiles or sets: it would deny everything",
            ));
        }
        let deny_ttl = *self.deny_ttl_secs.get_ref();
        if deny_ttl > MAX_DENY_TTL_SECS {
            return Err(ctx.at(
                ctx.line(&self.deny_ttl_secs).max(line),
                deny_ttl.to_string(),
                "deny_ttl_secs must be at most 86400 (one day)",
            ));
        }
        Ok(ViewConfig {
            name: name.to_string(),
            networks,
            families: self.families.iter().map(|s| ctx.located(s)).collect(),
            profiles: self.profiles.iter().map(|s| ctx.located(s)).collect(),
            exclude_profiles: self
                .exclude_profiles
                .iter()
                .map(|s| ctx.located(s))
                .collect(),
            sets: self.sets.iter().map(|s| ctx.located(s)).collect(),
            exclude_sets: self.exclude_sets.iter().map(|s| ctx.located(s)).collect(),
            fence: view_fence(&self.name, &self.fence, backend, ctx)?,
            deny_rcode: self.deny_rcode,
            deny_ttl: deny_ttl as u32,
            cname_targets: self.cname_targets,
            mode: self.mode,
            line,
        })
    }
}

impl ViewConfig {
    /// What of the view the policy compiles (everything but its firewall sets and its line): a
    /// change of it is applied in place on reload.
    pub(super) fn policy_part(&self) -> impl PartialEq + '_ {
        let ViewConfig {
            name,
            networks,
            families,
            profiles,
            exclude_profiles,
            sets,
            exclude_sets,
            fence: _,
            deny_rcode,
            deny_ttl,
            cname_targets,
            mode,
            line: _,
        } = self;
        let values = |l: &[Located<String>]| l.iter().map(|x| x.value.clone()).collect::<Vec<_>>();
        (
            name,
            networks,
            (values(families), values(profiles), values(exclude_profiles)),
            values(sets),
            values(exclude_sets),
            (*deny_rcode, *deny_ttl, *cname_targets, *mode),
        )
    }
}

/// A network as written in the config: CIDR, or one address; no host bits set.
pub(super) fn parse_network(n: &Spanned<String>) -> Result<IpNet, String> {
    let text = n.get_ref().trim();
    let net: IpNet = text
        .parse()
        .or_else(|_| text.parse::<std::net::IpAddr>().map(IpNet::from))
        .map_err(|_| "not a network in CIDR form".to_string())?;
    if net.trunc() != net {
        return Err(format!("host bits set; the network is {}", net.trunc()));
    }
    Ok(net)
}
