//! `dnsfence explain`: what the policy does with a name — the view, the verdict, the endpoint set
//! that allows it or why it is denied — for one name, or for a list of them (`--names`): what an
//! admin runs on a vendor's list before a rollout. The verdict is the query path's own
//! ([`View::lookup`]); a wildcard entry `*.x` is tried one label below `x`.
//!
//! `main` prints what this module returns.

use std::fmt::Write as _;

use crate::base::matcher::{MAX_NAME_LEN, PROBE_LABEL, Pattern};
use crate::catalog::policy::{Policy, View};
use crate::catalog::zones::EndpointSet;
use crate::config::ViewMode;

/// A name as an admin wrote it, and the name asked for it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Asked {
    /// The entry as written (trimmed).
    pub entry: String,
    /// The name looked up: the entry, or one label below a `*.` entry.
    pub name: String,
    /// The entry as a pattern (`*.x` a wildcard, anything else exact).
    pub pattern: Pattern,
}

/// Reads one entry of a list: a name, `*.name`, or a URL (its host); quotes and backticks around
/// it are ignored. Refuses what is not a valid DNS name, with the reason.
pub fn asked(entry: &str) -> Result<Asked, String> {
    let entry = entry.trim();
    let bare = entry.trim_matches(|c| c == '\'' || c == '"' || c == '`');
    let host = bare
        .strip_prefix("https://")
        .or_else(|| bare.strip_prefix("http://"))
        .map_or(bare, |rest| rest.split(['/', ':']).next().unwrap_or(rest));
    let name = match host.strip_prefix("*.") {
        Some(parent) => format!("{PROBE_LABEL}.{parent}"),
        None => host.to_string(),
    };
    let trimmed = name.strip_suffix('.').unwrap_or(&name);
    if trimmed.contains('*') {
        return Err("a '*' is only allowed as the whole first label ('*.example.com')".into());
    }
    // The zone files' rules for a name: labels of 1 to 63 letters, digits, '-' or '_', at most
    // 253 characters.
    if trimmed.len() > MAX_NAME_LEN {
        return Err(format!(
            "longer than {MAX_NAME_LEN} characters ({})",
            trimmed.len()
        ));
    }
    Pattern::parse(trimmed).map_err(|e| e.reason.to_string())?;
    let pattern = match host.strip_prefix("*.") {
        Some(parent) => Pattern::Subdomains(parent.trim_end_matches('.').to_ascii_lowercase()),
        None => Pattern::Exact(trimmed.to_ascii_lowercase()),
    };
    Ok(Asked {
        entry: entry.to_string(),
        name: trimmed.to_ascii_lowercase(),
        pattern,
    })
}

/// What the policy does with one name in one view.
#[derive(Debug)]
pub enum Verdict<'p> {
    /// Answered: the most specific pattern and every set it stands for.
    Allowed {
        /// The pattern that matched.
        pattern: String,
        /// The endpoint sets.
        sets: Vec<&'p EndpointSet>,
    },
    /// Denied (or, in report mode, answered and logged as would_deny); the sets of the catalog
    /// that would allow it, were the view to select them.
    Denied {
        /// Ids of sets outside the view that match.
        elsewhere: Vec<&'p str>,
    },
}

/// The verdict of `view` on `name` (lower case, no trailing dot).
pub fn verdict<'p>(policy: &'p Policy, view: &View, name: &str) -> Verdict<'p> {
    match view.lookup(name) {
        Some(entry) => Verdict::Allowed {
            pattern: entry.pattern.to_string(),
            sets: entry
                .values
                .iter()
                .filter_map(|&i| policy.catalog.sets.get(i as usize))
                .collect(),
        },
        None => Verdict::Denied {
            elsewhere: policy
                .catalog
                .sets
                .iter()
                .filter(|s| {
                    let mut b = crate::base::matcher::MatcherBuilder::new();
                    for n in &s.names {
                        b.add(n.clone(), 0);
                    }
                    b.build().is_ok_and(|m| m.lookup(name).is_some())
                })
                .map(|s| s.id.as_str())
                .collect(),
        },
    }
}

/// The long form of `explain NAME` for one view.
pub fn describe(policy: &Policy, view: &View, asked: &Asked) -> String {
    let mut out = String::new();
    let shown = shown(asked);
    match verdict(policy, view, &asked.name) {
        Verdict::Allowed { pattern, sets } => {
            let _ = writeln!(
                out,
                "view {}: {shown}: allowed by pattern '{pattern}'",
                view.name
            );
            for set in sets {
                let ports: Vec<String> = set.ports.iter().map(|p| p.to_string()).collect();
                let extended: Vec<String> = set
                    .extended_by
                    .iter()
                    .map(|p| p.display().to_string())
                    .collect();
                let _ = writeln!(
                    out,
                    "  endpoint set {} ({}, {}{}): {} [ports {}] from {}{}",
                    set.id,
                    set.profile,
                    set.category.as_str(),
                    if set.required { ", required" } else { "" },
                    set.description,
                    ports.join(" "),
                    set.source.display(),
                    if extended.is_empty() {
                        String::new()
                    } else {
                        format!(", extended by {}", extended.join(", "))
                    }
                );
            }
        }
        Verdict::Denied { elsewhere } => {
            let answer = view.deny_rcode.as_str();
            let _ = match view.mode {
                ViewMode::Enforce => writeln!(
                    out,
                    "view {}: {shown}: denied (not_allowlisted): no endpoint set of this view \
                     matches; answered {answer} with EDE 15 (Blocked), never forwarded",
                    view.name
                ),
                ViewMode::Report => writeln!(
                    out,
                    "view {}: {shown}: would be denied (not_allowlisted); the view is in report \
                     mode, so it is answered and logged as would_deny",
                    view.name
                ),
            };
            if !elsewhere.is_empty() {
                let _ = writeln!(
                    out,
                    "  note: endpoint sets not selected by this view match it: {}",
                    elsewhere.join(", ")
                );
            }
        }
    }
    out
}

/// The entry as shown: with the name tried, for a wildcard.
fn shown(asked: &Asked) -> String {
    if asked
        .entry
        .trim_matches(|c| c == '\'' || c == '"' || c == '`')
        == asked.name
        || !asked.entry.contains('*')
    {
        asked.entry.clone()
    } else {
        format!("{} (tried {})", asked.entry, asked.name)
    }
}

/// `explain --names`: one line per entry and view, and the counts.
#[derive(Debug, Default)]
pub struct ListReport {
    /// The lines, in the list's order.
    pub text: String,
    /// Entries (per view) answered.
    pub allowed: usize,
    /// Entries (per view) denied or, in report mode, that would be.
    pub denied: usize,
    /// Entries that are not valid names.
    pub invalid: usize,
}

impl ListReport {
    /// The summary line.
    pub fn summary(&self) -> String {
        let mut s = format!("{} allowed, {} denied", self.allowed, self.denied);
        if self.invalid > 0 {
            let _ = write!(s, ", {} invalid", self.invalid);
        }
        s
    }

    /// Whether every entry is allowed (`explain --names` exits 0).
    pub fn all_allowed(&self) -> bool {
        self.denied == 0 && self.invalid == 0
    }
}

/// Explains every entry of `list` (one a line; blank lines and `#` comments skipped) in `views`.
pub fn list(policy: &Policy, views: &[&View], list: &str) -> ListReport {
    let mut r = ListReport::default();
    let prefix = |view: &View| {
        if views.len() > 1 {
            format!("view {}: ", view.name)
        } else {
            String::new()
        }
    };
    for line in list.lines() {
        let entry = line.trim();
        if entry.is_empty() || entry.starts_with('#') {
            continue;
        }
        let asked = match asked(entry) {
            Ok(a) => a,
            Err(reason) => {
                r.invalid += 1;
                let _ = writeln!(r.text, "{entry}: invalid name: {reason}");
                continue;
            }
        };
        for view in views {
            let shown = shown(&asked);
            let _ = match verdict(policy, view, &asked.name) {
                Verdict::Allowed { sets, .. } => {
                    r.allowed += 1;
                    let ids: Vec<&str> = sets.iter().map(|s| s.id.as_str()).collect();
                    writeln!(
                        r.text,
                        "{}{shown}: allowed by endpoint set {}",
                        prefix(view),
                        ids.join(", ")
                    )
                }
                Verdict::Denied { elsewhere } => {
                    r.denied += 1;
                    let what = match view.mode {
                        ViewMode::Enforce => "denied",
                        ViewMode::Report => "would be denied (report mode)",
                    };
                    let note = if elsewhere.is_empty() {
                        String::new()
                    } else {
                        format!(
                            "; endpoint sets outside this view match: {}",
                            elsewhere.join(", ")
                        )
                    };
                    writeln!(
                        r.text,
                        "{}{shown}: {what} (not_allowlisted){note}",
                        prefix(view)
                    )
                }
            };
        }
    }
    r
}

/// `catalog diff --names FILE --profile P`: a vendor's list without a machine-readable form
/// (Apple's and Google's pages, pasted as one host per line) against a profile of the catalog.
#[derive(Debug, Default, serde::Serialize)]
pub struct NamesDiff {
    /// The profile compared.
    pub profile: String,
    /// Its endpoint sets.
    pub sets: Vec<String>,
    /// Entries of the list the profile does not allow.
    pub adds: Vec<String>,
    /// Patterns of the profile no entry of the list covers.
    pub lacks: Vec<String>,
    /// Entries of the list allowed by the profile.
    pub common: usize,
    /// Lines that are not a name, with why.
    pub invalid: Vec<(String, String)>,
}

/// Compares the list `text` (one entry a line: the first word of each, so a pasted table's host
/// column is enough; `#` comments and blank lines skipped; `*.x` a wildcard; a URL its host) with
/// the sets of `profile`. A wildcard of either side covers the names below it on the other; the
/// matching is the query path's ([`crate::base::matcher`]).
pub fn names_diff(
    catalog: &crate::catalog::zones::Catalog,
    profile: &str,
    text: &str,
) -> Result<NamesDiff, String> {
    use crate::base::matcher::MatcherBuilder;
    let sets: Vec<&EndpointSet> = catalog
        .sets
        .iter()
        .filter(|s| s.profile == profile)
        .collect();
    if sets.is_empty() {
        let known: Vec<&str> = catalog.profiles().into_iter().collect();
        return Err(format!(
            "no such profile '{profile}' in the zones (known: {})",
            known.join(", ")
        ));
    }
    let mut diff = NamesDiff {
        profile: profile.to_string(),
        sets: sets.iter().map(|s| s.id.clone()).collect(),
        ..NamesDiff::default()
    };
    let mut of_profile = MatcherBuilder::new();
    for set in &sets {
        for n in &set.names {
            of_profile.add(n.clone(), 0);
        }
    }
    let of_profile = of_profile.build().map_err(|e| e.to_string())?;
    let mut of_list = MatcherBuilder::new();
    for line in text.lines() {
        let Some(word) = line.split_whitespace().next() else {
            continue;
        };
        if word.starts_with('#') {
            continue;
        }
        match asked(word) {
            Ok(a) => {
                if of_profile.lookup_normalized(&a.name).is_some() {
                    diff.common += 1;
                } else if !diff.adds.contains(&a.pattern.to_string()) {
                    diff.adds.push(a.pattern.to_string());
                }
                of_list.add(a.pattern, 0);
            }
            Err(why) => diff.invalid.push((word.to_string(), why)),
        }
    }
    let of_list = of_list.build().map_err(|e| e.to_string())?;
    for set in &sets {
        for n in &set.names {
            let shown = n.to_string();
            if of_list.lookup_normalized(&n.example()).is_none() && !diff.lacks.contains(&shown) {
                diff.lacks.push(shown);
            }
        }
    }
    Ok(diff)
}

impl NamesDiff {
    /// Whether the list and the profile differ (the command's exit 1).
    pub fn differs(&self) -> bool {
        !self.adds.is_empty() || !self.lacks.is_empty() || !self.invalid.is_empty()
    }

    /// One line per difference, then a summary.
    pub fn text(&self, list: &str) -> String {
        let mut out = format!(
            "profile {} (endpoint sets {}) against {list}:\n",
            self.profile,
            self.sets.join(", ")
        );
        for a in &self.adds {
            let _ = writeln!(out, "+ {a}: in the list, not allowed by the profile");
        }
        for l in &self.lacks {
            let _ = writeln!(out, "- {l}: in the profile, not in the list");
        }
        for (entry, why) in &self.invalid {
            let _ = writeln!(out, "! {entry}: invalid name: {why}");
        }
        let _ = writeln!(
            out,
            "{} of the list allowed by the profile, {} added by the list, {} only in the profile",
            self.common,
            self.adds.len(),
            self.lacks.len()
        );
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entries_are_names_wildcards_or_urls() {
        assert_eq!(
            asked("Manage.Microsoft.com.").unwrap().name,
            "manage.microsoft.com"
        );
        assert_eq!(
            asked("*.powershellgallery.com").unwrap().name,
            "dnsfence-probe.powershellgallery.com"
        );
        assert_eq!(
            asked("'https://intunemaape1.eus.attest.azure.net'")
                .unwrap()
                .name,
            "intunemaape1.eus.attest.azure.net"
        );
        assert_eq!(
            asked("https://portal.manage.microsoft.us/x/y")
                .unwrap()
                .name,
            "portal.manage.microsoft.us"
        );
        for (bad, why) in [
            ("a..b", "empty label"),
            ("a b.com", "only letters"),
            ("swd*-mscdn.azureedge.net", "'*' is only allowed"),
            (&format!("{}.com", "a".repeat(64)), "label longer than 63"),
            (&"a.".repeat(130), "longer than 253"),
            ("", "empty name"),
        ] {
            let e = asked(bad).unwrap_err();
            assert!(e.contains(why), "{bad}: {e}");
        }
    }
}
