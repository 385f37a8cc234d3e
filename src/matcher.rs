//! The compiled name matcher: decides whether a query name is covered by an allowlist pattern.
//!
//! Three kinds of pattern, with the semantics pinned in DESIGN.md ("Name matching"):
//! - `manage.microsoft.com` matches only itself;
//! - `*.manage.microsoft.com` matches any name one or more labels below it, never the parent itself;
//! - `swd*-mscdn.azureedge.net` (a `*` inside the leftmost label) matches within that one label.
//!
//! Names are compared label by label after lower-casing and dropping the trailing dot. Exact and
//! `*.` patterns live in hash maps keyed by the name or the parent, so a lookup costs one hash probe
//! per label of the query name whatever the number of patterns. In-label globs are grouped by their
//! literal parent and matched with globset against the first label only (globset's `*` would cross
//! dots if it ever saw them, so it never does).
//!
//! The matcher is built once with [`MatcherBuilder`] and is immutable afterwards.

use std::collections::HashMap;
use std::fmt;

use globset::{GlobBuilder, GlobSet, GlobSetBuilder};

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

impl Pattern {
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

    /// Compiles the patterns. Fails only if globset refuses a label glob, which validation makes
    /// unreachable for patterns from [`Pattern::parse`]; the error names the pattern anyway.
    pub fn build(self) -> Result<Matcher, PatternError> {
        let mut entries = Vec::with_capacity(self.order.len());
        let mut exact = HashMap::new();
        let mut subdomains = HashMap::new();
        let mut glob_parts: HashMap<String, Vec<(String, u32)>> = HashMap::new();
        for pattern in self.order {
            let mut values = self.patterns[&pattern].clone();
            values.sort_unstable();
            let idx = entries.len() as u32;
            match &pattern {
                Pattern::Exact(name) => {
                    exact.insert(name.clone().into_boxed_str(), idx);
                }
                Pattern::Subdomains(parent) => {
                    subdomains.insert(parent.clone().into_boxed_str(), idx);
                }
                Pattern::LabelGlob { label, parent } => glob_parts
                    .entry(parent.clone())
                    .or_default()
                    .push((label.clone(), idx)),
            }
            entries.push(Entry { pattern, values });
        }
        let mut globs = HashMap::with_capacity(glob_parts.len());
        for (parent, labels) in glob_parts {
            let mut set = GlobSetBuilder::new();
            let mut idxs = Vec::with_capacity(labels.len());
            for (label, idx) in labels {
                let glob = GlobBuilder::new(&label)
                    .literal_separator(false)
                    .backslash_escape(false)
                    .build()
                    .map_err(|_| PatternError {
                        pattern: format!("{label}.{parent}"),
                        reason: "not a valid in-label wildcard",
                    })?;
                set.add(glob);
                idxs.push(idx);
            }
            let set = set.build().map_err(|_| PatternError {
                pattern: format!("*.{parent}"),
                reason: "in-label wildcards could not be compiled",
            })?;
            globs.insert(parent.into_boxed_str(), GlobGroup { set, idxs });
        }
        let mut matcher = Matcher {
            entries,
            exact,
            subdomains,
            globs,
        };
        matcher.merge_covering_values();
        Ok(matcher)
    }
}

/// Label globs sharing one literal parent.
#[derive(Debug)]
struct GlobGroup {
    /// The compiled globs, matched against the first label only.
    set: GlobSet,
    /// Entry index of each glob, in the order of `set`.
    idxs: Vec<u32>,
}

/// An immutable compiled set of patterns.
#[derive(Debug)]
pub struct Matcher {
    /// Every distinct pattern with its merged values; lookups return references into it.
    entries: Vec<Entry>,
    /// Exact names.
    exact: HashMap<Box<str>, u32>,
    /// `*.parent` patterns, keyed by parent.
    subdomains: HashMap<Box<str>, u32>,
    /// In-label globs, keyed by their literal parent.
    globs: HashMap<Box<str>, GlobGroup>,
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
        if let Some(&idx) = self.exact.get(name) {
            return Some(idx);
        }
        let mut rest = name;
        let mut first = true;
        while let Some(dot) = rest.find('.') {
            let (label, parent) = (&rest[..dot], &rest[dot + 1..]);
            if label.is_empty() {
                // "a..b" is not a name we allow anything for.
                return None;
            }
            if first {
                if let Some(group) = self.globs.get(parent)
                    && let Some(i) = group.set.matches(label).into_iter().min()
                {
                    return Some(group.idxs[i]);
                }
                first = false;
            }
            if let Some(&idx) = self.subdomains.get(parent) {
                return Some(idx);
            }
            rest = parent;
        }
        None
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
                && let Some(group) = self.globs.get(p)
            {
                for m in group.set.matches(label) {
                    values.extend(&self.entries[group.idxs[m] as usize].values);
                }
            }
            // Every `*.` pattern on an ancestor covers it too; for `*.a.b` the walk starts at `b`.
            while let Some(p) = parent {
                if let Some(&idx) = self.subdomains.get(p) {
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
        numeric_label,
        ["2.dl.delivery.mp.microsoft.com"],
        "2.dl.delivery.mp.microsoft.com",
        "2.dl.delivery.mp.microsoft.com"
    );

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
