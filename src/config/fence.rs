//! `[fence]` and a view's `[view.fence]`: the firewall sets dnsfence fills (nftables, ipset, or
//! a pull list), their timeouts, the admit deadline, resync.

use std::path::PathBuf;
use std::time::Duration;

use serde::Deserialize;
use toml::Spanned;

use super::ConfigError;
use super::section::{Ctx, Reload, ReloadPlan, default};

const YEAR_SECS: u64 = 365 * 86_400;
const DAY_MS: u64 = 86_400_000;
/// Longest firewall table or set name configured by hand (nftables allows 255; metric labels
/// carry them).
const MAX_SET_NAME: usize = 64;

/// `[fence]` as written.
#[derive(Deserialize)]
#[serde(deny_unknown_fields, default)]
pub(super) struct RawFence {
    enabled: bool,
    pub(super) backend: FenceBackend,
    netns: Option<Spanned<String>>,
    nft: PathBuf,
    min_ttl_secs: Spanned<u64>,
    max_ttl_secs: Spanned<u64>,
    grace_secs: Spanned<u64>,
    admit_deadline_ms: Spanned<u64>,
    on_admit_failure: AdmitFailure,
    resync_interval_ms: Spanned<u64>,
    recheck_ms: Spanned<u64>,
}

impl Default for RawFence {
    fn default() -> Self {
        RawFence {
            enabled: false,
            backend: FenceBackend::Nftables,
            netns: None,
            nft: PathBuf::from("nft"),
            min_ttl_secs: default(300),
            max_ttl_secs: default(86_400),
            grace_secs: default(60),
            admit_deadline_ms: default(50),
            on_admit_failure: AdmitFailure::Answer,
            resync_interval_ms: default(5_000),
            recheck_ms: default(5_000),
        }
    }
}

/// A view's `[view.fence]` as written.
#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields, default)]
pub(super) struct RawViewFence {
    table: Option<Spanned<String>>,
    set_v4: Option<Spanned<String>>,
    set_v6: Option<Spanned<String>>,
    net_v4: Option<Spanned<String>>,
    net_v6: Option<Spanned<String>>,
    mode: Option<FenceMode>,
}

/// What to answer when the firewall could not be updated in time.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum AdmitFailure {
    /// Answer anyway: the firewall still enforces, the client's first connection may be dropped.
    Answer,
    /// SERVFAIL: the client retries, and no answer ever points at an address not in the set.
    Servfail,
}

/// Where the fence's elements go.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum FenceBackend {
    /// Kernel nftables sets, over netlink.
    Nftables,
    /// Kernel ip_set sets (for iptables gateways), over netlink.
    Ipset,
    /// Only the in-memory ledger, served as pull lists over HTTP for external firewalls.
    List,
}

/// `[fence]`: the nftables sets fed with every answered address.
#[derive(Debug, Clone)]
pub struct FenceConfig {
    /// Whether dnsfence keeps firewall sets at all (nftables needs CAP_NET_ADMIN).
    pub enabled: bool,
    /// Kernel sets, or pull lists only.
    pub backend: FenceBackend,
    /// Work in this named network namespace (`ip netns`), not dnsfence's own.
    pub netns: Option<String>,
    /// The `nft` binary, run once at start-up and on resync to create the table and sets.
    pub nft: PathBuf,
    /// Element timeout = clamp(TTL, min_ttl, max_ttl) + grace.
    pub min_ttl: Duration,
    /// See `min_ttl`.
    pub max_ttl: Duration,
    /// See `min_ttl`.
    pub grace: Duration,
    /// How long an answer waits for the kernel to confirm its addresses.
    pub admit_deadline: Duration,
    /// What to answer when that fails or times out.
    pub on_admit_failure: AdmitFailure,
    /// How often the table and sets are checked (and restored with every live element).
    pub resync_interval: Duration,
    /// On a cache hit, an element confirmed this recently is trusted without a kernel round trip;
    /// older ones are written again (which also repairs a deletion by hand).
    pub recheck: Duration,
}

/// How a view's dynamic sets are keyed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FenceMode {
    /// `ipv4_addr` / `ipv6_addr`.
    Addr,
    /// `ipv4_addr . inet_proto . inet_service`: only the matched endpoint set's ports.
    AddrPort,
}

/// An nftables table: family and name.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct TableRef {
    /// Always `inet`: a view's sets hold both IPv4 and IPv6.
    pub family: String,
    /// The table's name.
    pub name: String,
}

impl std::fmt::Display for TableRef {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} {}", self.family, self.name)
    }
}

/// A view's firewall sets.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ViewFence {
    /// The table holding them.
    pub table: TableRef,
    /// Dynamic IPv4 set (answered addresses, with timeouts).
    pub set_v4: String,
    /// Dynamic IPv6 set.
    pub set_v6: String,
    /// Static IPv4 ranges of the view's endpoint sets (interval set, no timeout).
    pub net_v4: String,
    /// Static IPv6 ranges.
    pub net_v6: String,
    /// Address or address-and-port elements.
    pub mode: FenceMode,
}

impl RawFence {
    pub(super) fn validate(&self, ctx: &Ctx) -> Result<FenceConfig, ConfigError> {
        let b =
            |v: &Spanned<u64>, key: &str, lo: u64, hi: u64| ctx.bounded(v, "fence", key, lo, hi);
        let min_ttl = b(&self.min_ttl_secs, "min_ttl_secs", 0, YEAR_SECS)?;
        let max_ttl = b(&self.max_ttl_secs, "max_ttl_secs", 1, YEAR_SECS)?;
        if min_ttl > max_ttl {
            return Err(ctx.at(
                ctx.line(&self.min_ttl_secs),
                format!("min_ttl_secs = {min_ttl}"),
                "fence.min_ttl_secs is greater than fence.max_ttl_secs",
            ));
        }
        if let Some(ns) = &self.netns {
            let name = ns.get_ref();
            let ok = !name.is_empty()
                && !name.starts_with('.')
                && name
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_' || b == b'.');
            if !ok {
                return Err(ctx.entry(ns, "not a network namespace name"));
            }
        }
        Ok(FenceConfig {
            enabled: self.enabled,
            backend: self.backend,
            netns: self.netns.as_ref().map(|n| n.get_ref().clone()),
            nft: self.nft.clone(),
            min_ttl: Duration::from_secs(min_ttl),
            max_ttl: Duration::from_secs(max_ttl),
            grace: Duration::from_secs(b(&self.grace_secs, "grace_secs", 0, 30 * 86_400)?),
            admit_deadline: Duration::from_millis(b(
                &self.admit_deadline_ms,
                "admit_deadline_ms",
                1,
                60_000,
            )?),
            on_admit_failure: self.on_admit_failure,
            resync_interval: Duration::from_millis(b(
                &self.resync_interval_ms,
                "resync_interval_ms",
                100,
                DAY_MS,
            )?),
            recheck: Duration::from_millis(b(&self.recheck_ms, "recheck_ms", 0, DAY_MS)?),
        })
    }
}

impl Reload for FenceConfig {
    fn reload(&self, new: &Self, plan: &mut ReloadPlan) {
        let FenceConfig {
            enabled,
            backend,
            netns,
            nft,
            min_ttl,
            max_ttl,
            grace,
            admit_deadline,
            on_admit_failure,
            resync_interval,
            recheck,
        } = self;
        let f = new;
        // The fence thread holds its configuration; the answer to a failed admit is the query
        // path's.
        plan.check("fence.enabled", *enabled != f.enabled, false);
        plan.check("fence.backend", *backend != f.backend, false);
        plan.check("fence.netns", *netns != f.netns, false);
        plan.check("fence.nft", *nft != f.nft, false);
        plan.check("fence.min_ttl_secs", *min_ttl != f.min_ttl, false);
        plan.check("fence.max_ttl_secs", *max_ttl != f.max_ttl, false);
        plan.check("fence.grace_secs", *grace != f.grace, false);
        plan.check(
            "fence.admit_deadline_ms",
            *admit_deadline != f.admit_deadline,
            false,
        );
        plan.check(
            "fence.on_admit_failure",
            *on_admit_failure != f.on_admit_failure,
            true,
        );
        plan.check(
            "fence.resync_interval_ms",
            *resync_interval != f.resync_interval,
            false,
        );
        plan.check("fence.recheck_ms", *recheck != f.recheck, false);
    }
}

/// A view's firewall sets, with names derived from the view's name unless configured. ipset
/// names share one namespace with every other set of the host and have at most 31 characters:
/// derived ones start with `dnsfence_`.
pub(super) fn view_fence(
    view_name: &Spanned<String>,
    raw: &RawViewFence,
    backend: FenceBackend,
    ctx: &Ctx,
) -> Result<ViewFence, ConfigError> {
    let entry = |s: &Spanned<String>, reason: String| ctx.entry(s, reason);
    let mut base: String = view_name
        .get_ref()
        .trim()
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '_' })
        .collect();
    if backend == FenceBackend::Ipset {
        base.insert_str(0, "dnsfence_");
    }
    let table = match &raw.table {
        None => TableRef {
            family: "inet".into(),
            name: "dnsfence".into(),
        },
        Some(t) => {
            let mut parts = t.get_ref().split_whitespace();
            match (parts.next(), parts.next(), parts.next()) {
                // A view's sets hold both IPv4 and IPv6, so only an inet table will do.
                (Some("inet"), Some(name), None) if nft_identifier(name) => TableRef {
                    family: "inet".into(),
                    name: name.into(),
                },
                _ => {
                    return Err(entry(
                        t,
                        "a table is written 'inet NAME' (e.g. 'inet dnsfence')".into(),
                    ));
                }
            }
        }
    };
    let name = |given: &Option<Spanned<String>>, suffix: &str| -> Result<String, ConfigError> {
        let name = match given {
            None => format!("{base}_{suffix}"),
            Some(s) if nft_identifier(s.get_ref()) => s.get_ref().clone(),
            Some(s) => {
                return Err(entry(
                    s,
                    format!(
                        "a set name is letters, digits and '_', starting with a letter or '_', \
                         at most {MAX_SET_NAME} characters"
                    ),
                ));
            }
        };
        if backend == FenceBackend::Ipset && name.len() > IPSET_MAX_NAME {
            let why = format!(
                "the ipset set name '{name}' is longer than {IPSET_MAX_NAME} characters: \
                 name it in [view.fence] (set_v4, set_v6, net_v4, net_v6)"
            );
            return Err(entry(given.as_ref().unwrap_or(view_name), why));
        }
        Ok(name)
    };
    let fence = ViewFence {
        set_v4: name(&raw.set_v4, "v4")?,
        set_v6: name(&raw.set_v6, "v6")?,
        net_v4: name(&raw.net_v4, "net_v4")?,
        net_v6: name(&raw.net_v6, "net_v6")?,
        mode: raw.mode.unwrap_or(FenceMode::Addr),
        table,
    };
    Ok(fence)
}

/// ipset's longest set name (IPSET_MAXNAMELEN, 32 with the terminating zero).
const IPSET_MAX_NAME: usize = 31;

/// nft's unquoted identifier: `[a-zA-Z_][a-zA-Z0-9_]*` (hyphens would need quoting), at most
/// [`MAX_SET_NAME`] characters.
fn nft_identifier(s: &str) -> bool {
    let mut b = s.bytes();
    matches!(b.next(), Some(c) if c.is_ascii_alphabetic() || c == b'_')
        && b.all(|c| c.is_ascii_alphanumeric() || c == b'_')
        && s.len() <= MAX_SET_NAME
}
