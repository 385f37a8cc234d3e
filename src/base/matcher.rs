//! The compiled name matcher: decides whether a query name is covered by an allowlist pattern.
//!
//! Three kinds of pattern, with the semantics pinned in DESIGN.md ("Name matching"):
//! - `manage.microsoft.com` matches only itself;
//! - `*.manage.microsoft.com` matches any name one or more labels below it, never the parent itself;
//! - `swd*-mscdn.azureedge.net` (a `*` inside the leftmost label) matches within that one label.
//!
//! Names are compared label by label after lower-casing and dropping the trailing dot. Exact and
//! `*.` patterns live in hash maps keyed by the name or the parent, so a lookup costs at most one
//! probe per label of the query name whatever the number of patterns. In-label globs are grouped by their
//! literal parent and matched with globset against the first label only (globset's `*` would cross
//! dots if it ever saw them, so it never does).
//!
//! The matcher is built once with [`MatcherBuilder`] and is immutable afterwards.
//!
//! Speed: one right-to-left pass over the name computes the hash of every suffix, so each probe
//! is an integer lookup (FxHash maps: keys come from the zone files, never from clients), verified
//! against the pattern's text on a hit. A bitmask per kind of pattern records which label counts
//! occur, so a name is only probed at depths where a pattern could be. A glob's literal prefix is
//! checked before globset runs.

use std::collections::HashMap;
use std::fmt;

use globset::{GlobBuilder, GlobMatcher};
use rustc_hash::FxHashMap;

use crate::base::wire::same;

/// Longest name we accept, in presentation form without the trailing dot (RFC 1035: 255 octets on
/// the wire, which is 253 characters written out).
pub const MAX_NAME_LEN: usize = 253;

/// A pattern that failed validation, with the reason.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("'{pattern}': {reason}")]
pub struct PatternError {
    /// The pattern as written.
    pub pattern: String,
    /// Why it was refused.
    pub reason: &'static str,
}

/// One validated allowlist pattern, normalised (lower case, no trailing dot).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Pattern {
    /// Matches exactly this name.
    Exact(String),
    /// `*.parent`: any name strictly below `parent`.
    Subdomains(String),
    /// A glob inside the leftmost label, under a literal parent.
    LabelGlob {
        /// The leftmost label, with at least one `*`.
        label: String,
        /// The literal rest of the name.
        parent: String,
    },
}

/// The label a wildcard is tried with where a name it matches is needed (`explain`, readiness):
/// `*.x` is asked as `dnsfence-probe.x`.
pub const PROBE_LABEL: &str = "dnsfence-probe";

impl Pattern {
    /// A name the pattern matches: the name itself, `dnsfence-probe.parent` for `*.parent`, and
    /// the label with `x` for its `*` for an in-label glob.
    pub fn example(&self) -> String {
        match self {
            Pattern::Exact(name) => name.clone(),
            Pattern::Subdomains(parent) => format!("{PROBE_LABEL}.{parent}"),
            Pattern::LabelGlob { label, parent } => format!("{}.{parent}", label.replace('*', "x")),
        }
    }

    /// Validates and normalises a pattern as written in a zone file.
    pub fn parse(text: &str) -> Result<Pattern, PatternError> {
        let err = |reason| PatternError {
            pattern: text.to_string(),
            reason,
        };
        let lower = text.trim_end_matches('.').to_ascii_lowercase();
        if lower.is_empty() {
            return Err(err("empty name"));
        }
        if lower.len() > MAX_NAME_LEN {
            return Err(err("name longer than 253 characters"));
        }
        let labels: Vec<&str> = lower.split('.').collect();
        for label in &labels {
            if label.is_empty() {
                return Err(err("empty label"));
            }
            if label.len() > 63 {
                return Err(err("label longer than 63 characters"));
            }
            if !label
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_' || b == b'*')
            {
                return Err(err(
                    "only letters, digits, '-', '_' and '*' may appear in a name",
                ));
            }
        }
        if labels.len() > MAX_PATTERN_LABELS {
            return Err(err("more than 31 labels"));
        }
        let wild: Vec<usize> = (0..labels.len())
            .filter(|&i| labels[i].contains('*'))
            .collect();
        match wild.as_slice() {
            [] => Ok(Pattern::Exact(lower)),
            [_, _, ..] => Err(err("more than one wildcard label")),
            [i] if *i != 0 => Err(err("a wildcard is only allowed in the leftmost label")),
            [_] if labels.len() < 2 => Err(err("a wildcard needs a parent name")),
            [_] => {
                let parent = labels[1..].join(".");
                if labels[0] == "*" {
                    Ok(Pattern::Subdomains(parent))
                } else {
                    Ok(Pattern::LabelGlob {
                        label: labels[0].to_string(),
                        parent,
                    })
                }
            }
        }
    }
}

impl fmt::Display for Pattern {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Pattern::Exact(name) => f.write_str(name),
            Pattern::Subdomains(parent) => write!(f, "*.{parent}"),
            Pattern::LabelGlob { label, parent } => write!(f, "{label}.{parent}"),
        }
    }
}

/// What a pattern allows: the pattern itself and every value (endpoint set index) it stands for,
/// merged with the values of every broader pattern that also covers its names, so that a single
/// lookup yields the complete list.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    /// The most specific pattern that matched.
    pub pattern: Pattern,
    /// Values of every pattern covering the names this entry matches, sorted, no duplicates.
    pub values: Vec<u32>,
}

/// Collects patterns, then compiles them into a [`Matcher`].
#[derive(Debug, Default)]
pub struct MatcherBuilder {
    patterns: HashMap<Pattern, Vec<u32>>,
    order: Vec<Pattern>,
}

impl MatcherBuilder {
    /// A builder with no patterns.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds a pattern standing for `value`. The same pattern may be added with several values.
    pub fn add(&mut self, pattern: Pattern, value: u32) -> &mut Self {
        let values = self.patterns.entry(pattern.clone()).or_insert_with(|| {
            self.order.push(pattern);
            Vec::new()
        });
        if !values.contains(&value) {
            values.push(value);
        }
        self
    }

    /// Compiles the patterns. Fails if globset refuses a label glob (validation makes that
    /// unreachable for patterns from [`Pattern::parse`]) or, with odds of about one in 10^7 for a
    /// million patterns, if two patterns' 64-bit name hashes collide; the error names the pattern.
    pub fn build(self) -> Result<Matcher, PatternError> {
        let mut m = Matcher {
            entries: Vec::with_capacity(self.order.len()),
            exact: FxHashMap::default(),
            subdomains: FxHashMap::default(),
            globs: FxHashMap::default(),
            exact_depths: 0,
            subdomain_depths: 0,
            glob_depths: 0,
            max_depth: 0,
        };
        let collision = |p: &Pattern| PatternError {
            pattern: p.to_string(),
            reason: "name hash collides with another pattern; rename or report this",
        };
        for pattern in self.order {
            let mut values = self.patterns[&pattern].clone();
            values.sort_unstable();
            let idx = m.entries.len() as u32;
            match &pattern {
                Pattern::Exact(name) => {
                    m.exact_depths |= depth_bit(name);
                    if m.exact.insert(name_hash(name), idx).is_some() {
                        return Err(collision(&pattern));
                    }
                }
                Pattern::Subdomains(parent) => {
                    m.subdomain_depths |= depth_bit(parent);
                    if m.subdomains.insert(name_hash(parent), idx).is_some() {
                        return Err(collision(&pattern));
                    }
                }
                Pattern::LabelGlob { label, parent } => {
                    m.glob_depths |= depth_bit(parent);
                    let glob = LabelGlob::new(label, idx).map_err(|_| PatternError {
                        pattern: pattern.to_string(),
                        reason: "not a valid in-label wildcard",
                    })?;
                    let group = m
                        .globs
                        .entry(name_hash(parent))
                        .or_insert_with(|| GlobGroup {
                            parent: parent.clone().into_boxed_str(),
                            globs: Vec::new(),
                        });
                    if *group.parent != **parent {
                        return Err(collision(&pattern));
                    }
                    group.globs.push(glob);
                }
            }
            m.entries.push(Entry { pattern, values });
        }
        let deepest = |mask: u128| 128 - mask.leading_zeros() as usize;
        m.max_depth = deepest(m.exact_depths)
            .max(deepest(m.subdomain_depths))
            .max(deepest(m.glob_depths));
        m.merge_covering_values();
        Ok(m)
    }
}

/// One in-label glob under a literal parent.
#[derive(Debug)]
struct LabelGlob {
    /// The literal text before the first `*`.
    prefix: Box<str>,
    /// The literal text after the last `*`.
    suffix: Box<str>,
    /// The compiled glob, for labels with more than one `*`. With a single `*` the prefix and
    /// suffix tests are the whole semantics, and a regex would only add cost.
    matcher: Option<GlobMatcher>,
    /// Its entry.
    idx: u32,
}

impl LabelGlob {
    fn new(label: &str, idx: u32) -> Result<LabelGlob, globset::Error> {
        let prefix = label.split('*').next().unwrap_or("");
        let suffix = label.rsplit('*').next().unwrap_or("");
        let matcher = if label.matches('*').count() > 1 {
            let glob = GlobBuilder::new(label)
                .literal_separator(false)
                .backslash_escape(false)
                .build()?;
            Some(glob.compile_matcher())
        } else {
            None
        };
        Ok(LabelGlob {
            prefix: prefix.into(),
            suffix: suffix.into(),
            matcher,
            idx,
        })
    }

    fn is_match(&self, label: &str) -> bool {
        let (l, p, s) = (
            label.as_bytes(),
            self.prefix.as_bytes(),
            self.suffix.as_bytes(),
        );
        l.len() >= p.len() + s.len()
            && same(&l[..p.len()], p)
            && same(&l[l.len() - s.len()..], s)
            && self.matcher.as_ref().is_none_or(|m| m.is_match(label))
    }
}

/// The in-label globs sharing one literal parent.
#[derive(Debug)]
struct GlobGroup {
    /// The parent, to verify a hash hit.
    parent: Box<str>,
    /// Globs in pattern order; the first that matches wins.
    globs: Vec<LabelGlob>,
}

/// The bit for a name's label count in a depth mask (patterns have at most 31 labels).
fn depth_bit(name: &str) -> u128 {
    1u128 << label_count(name).min(127)
}

fn label_count(name: &str) -> usize {
    name.bytes().filter(|&b| b == b'.').count() + 1
}

/// Most labels a pattern may have; deeper ones are refused when parsed. Lookups then never look
/// further than that many labels from the right, whatever the query's depth.
pub const MAX_PATTERN_LABELS: usize = 31;

/// Chains a label into the hash of the suffix to its right. Walking a name right to left gives
/// the hash of every suffix in one pass, so each map probe is an integer lookup.
#[inline]
fn chain(suffix: u64, label: &[u8]) -> u64 {
    let mut h = rustc_hash::FxHasher::default();
    std::hash::Hasher::write(&mut h, label);
    let label = std::hash::Hasher::finish(&h);
    (suffix.rotate_left(29) ^ label).wrapping_mul(0x9e37_79b9_7f4a_7c15) ^ 0x5bd1_e995
}

/// The suffix-chained hash of a whole normalised name.
fn name_hash(name: &str) -> u64 {
    name.rsplit('.')
        .fold(0, |h, label| chain(h, label.as_bytes()))
}

/// An immutable compiled set of patterns.
#[derive(Debug)]
pub struct Matcher {
    /// Every distinct pattern with its merged values; lookups return references into it.
    entries: Vec<Entry>,
    /// Exact names, by name hash; a hit is verified against the entry's text.
    exact: FxHashMap<u64, u32>,
    /// `*.parent` patterns, by parent hash; verified likewise.
    subdomains: FxHashMap<u64, u32>,
    /// In-label globs, by parent hash.
    globs: FxHashMap<u64, GlobGroup>,
    /// Bit n set: some exact pattern has n labels.
    exact_depths: u128,
    /// Bit n set: some `*.parent` has a parent of n labels.
    subdomain_depths: u128,
    /// Bit n set: some glob has a parent of n labels.
    glob_depths: u128,
    /// Labels of the deepest pattern (for a glob or `*.`, its parent plus one).
    max_depth: usize,
}

impl Matcher {
    /// Number of distinct patterns.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// True when there are no patterns at all.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Looks up a name that is already normalised: lower case, no trailing dot. The most specific
    /// pattern wins: exact, then an in-label glob under the immediate parent, then the `*.` pattern
    /// with the longest parent.
    pub fn lookup_normalized(&self, name: &str) -> Option<&Entry> {
        self.lookup_idx(name).map(|i| &self.entries[i as usize])
    }

    /// Looks up a name as a client may write it: any case, with or without the trailing dot.
    pub fn lookup(&self, name: &str) -> Option<&Entry> {
        let trimmed = name.strip_suffix('.').unwrap_or(name);
        if trimmed.bytes().any(|b| b.is_ascii_uppercase()) {
            self.lookup_normalized(&trimmed.to_ascii_lowercase())
        } else {
            self.lookup_normalized(trimmed)
        }
    }

    fn lookup_idx(&self, name: &str) -> Option<u32> {
        let bytes = name.as_bytes();
        if bytes.is_empty() || bytes.len() > MAX_NAME_LEN || self.max_depth == 0 {
            return None;
        }
        // Label start offsets and suffix hashes, right to left in one pass, for at most as many
        // labels as the deepest pattern has: deeper suffixes cannot match anything.
        let mut starts = [0u8; MAX_PATTERN_LABELS + 1];
        let mut hashes = [0u64; MAX_PATTERN_LABELS + 1];
        let mut n = 0;
        let mut end = bytes.len();
        let mut h = 0;
        let whole = loop {
            let start = bytes[..end]
                .iter()
                .rposition(|&b| b == b'.')
                .map_or(0, |i| i + 1);
            if start == end {
                // An empty label ("a..b", ".x", "x."): nothing matches.
                return None;
            }
            if n == self.max_depth {
                // Longer than any pattern: only `*.` patterns on its suffixes can match. The
                // rest of the name must still be well formed.
                let rest = &bytes[..end];
                if rest.first() == Some(&b'.') || rest.windows(2).any(|w| w == b"..") {
                    return None;
                }
                break false;
            }
            h = chain(h, &bytes[start..end]);
            starts[n] = start as u8;
            hashes[n] = h;
            n += 1;
            if start == 0 {
                break true;
            }
            end = start - 1;
        };
        // Index k is the suffix of k+1 labels; with `whole`, index n-1 is the whole name.
        let bit = |mask: u128, labels: usize| mask & (1u128 << labels) != 0;
        let suffix = |k: usize| &name[starts[k] as usize..];
        if whole {
            if bit(self.exact_depths, n)
                && let Some(&idx) = self.exact.get(&hashes[n - 1])
                && same(self.entry_text(idx).as_bytes(), bytes)
            {
                return Some(idx);
            }
            if n < 2 {
                return None;
            }
            if bit(self.glob_depths, n - 1)
                && let Some(group) = self.globs.get(&hashes[n - 2])
                && same(group.parent.as_bytes(), suffix(n - 2).as_bytes())
            {
                let label = &name[..starts[n - 2] as usize - 1];
                if let Some(g) = group.globs.iter().find(|g| g.is_match(label)) {
                    return Some(g.idx);
                }
            }
        }
        let strict = if whole { n - 1 } else { n };
        for k in (0..strict).rev() {
            if bit(self.subdomain_depths, k + 1)
                && let Some(&idx) = self.subdomains.get(&hashes[k])
                && same(self.entry_text(idx).as_bytes(), suffix(k).as_bytes())
            {
                return Some(idx);
            }
        }
        None
    }

    /// The literal text a hash hit is verified against: the name of an exact pattern, the
    /// parent of a `*.` pattern.
    fn entry_text(&self, idx: u32) -> &str {
        match &self.entries[idx as usize].pattern {
            Pattern::Exact(name) => name,
            Pattern::Subdomains(parent) => parent,
            Pattern::LabelGlob { parent, .. } => parent,
        }
    }

    /// The `*.parent` entry for exactly this parent.
    fn subdomain_entry(&self, parent: &str) -> Option<u32> {
        let idx = *self.subdomains.get(&name_hash(parent))?;
        (self.entry_text(idx) == parent).then_some(idx)
    }

    /// Gives every entry the values of all broader patterns that cover the names it matches
    /// (`x.dl.delivery.mp.microsoft.com` is covered by both `*.dl.delivery…` and `*.delivery…`).
    fn merge_covering_values(&mut self) {
        let mut extra: Vec<(usize, Vec<u32>)> = Vec::new();
        for (i, entry) in self.entries.iter().enumerate() {
            let mut values = Vec::new();
            let (first_label, mut parent) = match &entry.pattern {
                Pattern::Exact(name) => match name.split_once('.') {
                    Some((label, parent)) => (Some(label), Some(parent)),
                    None => (None, None),
                },
                Pattern::LabelGlob { parent, .. } => (None, Some(parent.as_str())),
                Pattern::Subdomains(parent) => (None, parent.split_once('.').map(|(_, p)| p)),
            };
            if let (Some(label), Some(p)) = (first_label, parent)
                && let Some(group) = self.globs.get(&name_hash(p))
                && *group.parent == *p
            {
                for g in group.globs.iter().filter(|g| g.is_match(label)) {
                    values.extend(&self.entries[g.idx as usize].values);
                }
            }
            // Every `*.` pattern on an ancestor covers it too; for `*.a.b` the walk starts at `b`.
            while let Some(p) = parent {
                if let Some(idx) = self.subdomain_entry(p) {
                    values.extend(&self.entries[idx as usize].values);
                }
                parent = p.split_once('.').map(|(_, rest)| rest);
            }
            if !values.is_empty() {
                extra.push((i, values));
            }
        }
        for (i, values) in extra {
            let merged = &mut self.entries[i].values;
            merged.extend(values);
            merged.sort_unstable();
            merged.dedup();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn matcher(patterns: &[&str]) -> Matcher {
        let mut b = MatcherBuilder::new();
        for (i, p) in patterns.iter().enumerate() {
            b.add(Pattern::parse(p).unwrap(), i as u32);
        }
        b.build().unwrap()
    }

    /// `matches!(patterns; name => pattern-that-wins)`, `nmatches!(patterns; name)`.
    macro_rules! matches {
        ($name:ident, $patterns:expr, $query:expr, $winner:expr) => {
            #[test]
            fn $name() {
                let m = matcher(&$patterns[..]);
                let got = m.lookup($query).map(|e| e.pattern.to_string());
                assert_eq!(got.as_deref(), Some($winner), "query {}", $query);
            }
        };
    }
    macro_rules! nmatches {
        ($name:ident, $patterns:expr, $query:expr) => {
            #[test]
            fn $name() {
                let m = matcher(&$patterns[..]);
                let got = m.lookup($query).map(|e| e.pattern.to_string());
                assert_eq!(got, None, "query {} should not match", $query);
            }
        };
    }
    macro_rules! syntaxerr {
        ($name:ident, $p:expr, $reason:expr) => {
            #[test]
            fn $name() {
                let e = Pattern::parse($p).unwrap_err();
                assert_eq!(e.reason, $reason);
                assert_eq!(e.to_string(), format!("'{}': {}", $p, $reason));
            }
        };
    }

    const MANAGE: [&str; 2] = ["manage.microsoft.com", "*.manage.microsoft.com"];

    matches!(
        exact,
        ["manage.microsoft.com"],
        "manage.microsoft.com",
        "manage.microsoft.com"
    );
    matches!(
        exact_upper,
        ["manage.microsoft.com"],
        "MANAGE.Microsoft.COM",
        "manage.microsoft.com"
    );
    matches!(
        exact_trailing_dot,
        ["manage.microsoft.com"],
        "manage.microsoft.com.",
        "manage.microsoft.com"
    );
    matches!(
        pattern_upper,
        ["EnterpriseEnrollment.manage.microsoft.com"],
        "enterpriseenrollment.manage.microsoft.com",
        "enterpriseenrollment.manage.microsoft.com"
    );
    nmatches!(
        exact_not_sub,
        ["manage.microsoft.com"],
        "a.manage.microsoft.com"
    );
    nmatches!(exact_not_parent, ["manage.microsoft.com"], "microsoft.com");
    matches!(
        wild_one,
        ["*.manage.microsoft.com"],
        "a.manage.microsoft.com",
        "*.manage.microsoft.com"
    );
    matches!(
        wild_deep,
        ["*.manage.microsoft.com"],
        "x.y.z.manage.microsoft.com",
        "*.manage.microsoft.com"
    );
    matches!(
        wild_mixed_case_dot,
        ["*.manage.microsoft.com"],
        "Fef.MSUA06.Manage.Microsoft.Com.",
        "*.manage.microsoft.com"
    );
    nmatches!(
        wild_not_parent,
        ["*.manage.microsoft.com"],
        "manage.microsoft.com"
    );
    nmatches!(trap_prefix, MANAGE, "evilmanage.microsoft.com");
    nmatches!(trap_suffix, MANAGE, "manage.microsoft.com.evil.example");
    nmatches!(trap_dash, MANAGE, "manage-microsoft.com");
    nmatches!(
        trap_sub_of_suffix,
        MANAGE,
        "a.manage.microsoft.com.evil.example"
    );
    nmatches!(
        trap_label_join,
        ["*.manage.microsoft.com"],
        "amanage.microsoft.com"
    );
    nmatches!(
        trap_empty_label,
        ["*.manage.microsoft.com"],
        "a..manage.microsoft.com"
    );
    nmatches!(trap_root, MANAGE, ".");
    nmatches!(trap_tld, MANAGE, "com");
    matches!(
        both_parent,
        MANAGE,
        "manage.microsoft.com",
        "manage.microsoft.com"
    );
    matches!(
        both_child,
        MANAGE,
        "portal.manage.microsoft.com",
        "*.manage.microsoft.com"
    );
    matches!(
        glob_label,
        ["swd*-mscdn.azureedge.net"],
        "swda01-mscdn.azureedge.net",
        "swd*-mscdn.azureedge.net"
    );
    matches!(
        glob_label_empty_star,
        ["swd*-mscdn.azureedge.net"],
        "swd-mscdn.azureedge.net",
        "swd*-mscdn.azureedge.net"
    );
    matches!(
        glob_suffix_star,
        ["sparkcdn*.azureedge.net"],
        "SparkCdnEus2.azureedge.net",
        "sparkcdn*.azureedge.net"
    );
    nmatches!(
        glob_not_across_dots,
        ["sparkcdn*.azureedge.net"],
        "sparkcdn.evil.azureedge.net"
    );
    nmatches!(
        glob_not_deeper,
        ["sparkcdn*.azureedge.net"],
        "a.sparkcdneus2.azureedge.net"
    );
    nmatches!(
        glob_not_other_parent,
        ["sparkcdn*.azureedge.net"],
        "sparkcdneus2.azureedge.net.evil"
    );
    nmatches!(
        glob_prefix_required,
        ["swd*-mscdn.azureedge.net"],
        "xswda01-mscdn.azureedge.net"
    );
    nmatches!(
        glob_suffix_required,
        ["swd*-mscdn.azureedge.net"],
        "swda01-mscdnx.azureedge.net"
    );
    nmatches!(
        glob_not_parent_itself,
        ["sparkcdn*.azureedge.net"],
        "azureedge.net"
    );
    matches!(
        longest_wildcard_wins,
        ["*.microsoft.com", "*.manage.microsoft.com"],
        "a.manage.microsoft.com",
        "*.manage.microsoft.com"
    );
    matches!(
        glob_beats_wildcard,
        ["*.azureedge.net", "sparkcdn*.azureedge.net"],
        "sparkcdnwus2.azureedge.net",
        "sparkcdn*.azureedge.net"
    );
    matches!(
        exact_beats_glob,
        ["sparkcdn*.azureedge.net", "sparkcdnx.azureedge.net"],
        "sparkcdnx.azureedge.net",
        "sparkcdnx.azureedge.net"
    );
    matches!(
        glob_two_stars,
        ["a*b*c.example.net"],
        "axxbyyc.example.net",
        "a*b*c.example.net"
    );
    matches!(
        glob_two_stars_tight,
        ["a*b*c.example.net"],
        "abc.example.net",
        "a*b*c.example.net"
    );
    nmatches!(
        glob_two_stars_order,
        ["a*b*c.example.net"],
        "acb.example.net"
    );
    nmatches!(glob_overlap, ["ab*ba.example.net"], "aba.example.net");
    matches!(
        glob_only_star_inside,
        ["x*.example.net"],
        "x.example.net",
        "x*.example.net"
    );
    matches!(
        numeric_label,
        ["2.dl.delivery.mp.microsoft.com"],
        "2.dl.delivery.mp.microsoft.com",
        "2.dl.delivery.mp.microsoft.com"
    );

    #[test]
    fn names_deeper_than_every_pattern() {
        let m = matcher(&["*.manage.microsoft.com", "x.y.example"]);
        let deep = format!("{}manage.microsoft.com", "a.".repeat(40));
        assert_eq!(
            m.lookup(&deep).map(|e| e.pattern.to_string()).as_deref(),
            Some("*.manage.microsoft.com")
        );
        let broken = format!("a..{}manage.microsoft.com", "b.".repeat(10));
        assert!(
            m.lookup(&broken).is_none(),
            "an empty label far left still refuses"
        );
        let broken = format!(".{}manage.microsoft.com", "b.".repeat(10));
        assert!(m.lookup(&broken).is_none());
        assert!(m.lookup("q.x.y.example").is_none());
        let too_deep = format!("{}example", "a.".repeat(31));
        assert_eq!(
            Pattern::parse(&too_deep).unwrap_err().reason,
            "more than 31 labels"
        );
    }

    syntaxerr!(
        two_wildcards,
        "*.*.apple.com",
        "more than one wildcard label"
    );
    syntaxerr!(
        inner_wildcard,
        "a.*.apple.com",
        "a wildcard is only allowed in the leftmost label"
    );
    syntaxerr!(bare_star, "*", "a wildcard needs a parent name");
    syntaxerr!(empty, "", "empty name");
    syntaxerr!(double_dot, "a..b", "empty label");
    syntaxerr!(
        space,
        "a b.com",
        "only letters, digits, '-', '_' and '*' may appear in a name"
    );
    syntaxerr!(
        url,
        "https://x.com",
        "only letters, digits, '-', '_' and '*' may appear in a name"
    );

    #[test]
    fn values_merge_with_covering_patterns() {
        let mut b = MatcherBuilder::new();
        b.add(Pattern::parse("*.delivery.mp.microsoft.com").unwrap(), 164);
        b.add(
            Pattern::parse("*.dl.delivery.mp.microsoft.com").unwrap(),
            172,
        );
        b.add(
            Pattern::parse("*.dl.delivery.mp.microsoft.com").unwrap(),
            164,
        );
        b.add(Pattern::parse("2.dl.delivery.mp.microsoft.com").unwrap(), 7);
        b.add(Pattern::parse("*.azureedge.net").unwrap(), 1);
        b.add(Pattern::parse("sparkcdn*.azureedge.net").unwrap(), 2);
        b.add(Pattern::parse("sparkcdnx.azureedge.net").unwrap(), 3);
        let m = b.build().unwrap();
        assert_eq!(
            m.lookup("x.dl.delivery.mp.microsoft.com").unwrap().values,
            [164, 172]
        );
        assert_eq!(
            m.lookup("2.dl.delivery.mp.microsoft.com").unwrap().values,
            [7, 164, 172]
        );
        assert_eq!(m.lookup("sparkcdneu.azureedge.net").unwrap().values, [1, 2]);
        assert_eq!(
            m.lookup("sparkcdnx.azureedge.net").unwrap().values,
            [1, 2, 3]
        );
        assert_eq!(m.len(), 7 - 1);
    }
}
