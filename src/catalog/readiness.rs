//! Readiness: for each view and each device family it selects, whether each stage of a device's
//! life (setup, enrolment, check-in, push, apps, updates, certificates, diagnostics, remote help)
//! gets through — and if not, which names and networks are denied, from which endpoint sets and
//! documents. It answers an admin's question before a rollout: which device families will this
//! VLAN break?
//!
//! Computed from the compiled policy, never from traffic: a stage is ready when every name of
//! every required endpoint set of the family's profiles (and of the family's optional profiles the
//! view adds) is allowed by the view — asked through the view's own matcher, a wildcard one label
//! below its parent — and every static network of those sets is in a set the view selects. Sets
//! of a tenant location the config does not select do not count. `dnsfence readiness`,
//! `/v1/readiness` and `dnsfence_family_ready` all print this one report.

use serde::Serialize;

use crate::catalog::policy::{Policy, View};
use crate::catalog::zones::{EndpointSet, Family, Stage};

/// Readiness of every view (or of one).
#[derive(Debug, Serialize)]
pub struct Report {
    /// Views in config order.
    pub views: Vec<ViewReport>,
}

/// One view's families.
#[derive(Debug, Serialize)]
pub struct ViewReport {
    /// The view's name.
    pub view: String,
    /// `enforce` or `report` (a report-mode view answers denied names anyway).
    pub mode: &'static str,
    /// Whether every stage of every family it selects is ready.
    pub ready: bool,
    /// The families it selects, in config order.
    pub families: Vec<FamilyReport>,
}

/// One family in one view.
#[derive(Debug, Serialize)]
pub struct FamilyReport {
    /// The family's name.
    pub family: String,
    /// Every stage ready.
    pub ready: bool,
    /// The profiles whose required sets were checked.
    pub profiles: Vec<String>,
    /// The stages its required sets serve, in a device's order.
    pub stages: Vec<StageReport>,
}

/// One stage of one family in one view.
#[derive(Debug, Serialize)]
pub struct StageReport {
    /// The stage.
    pub stage: &'static str,
    /// Nothing of it denied.
    pub ready: bool,
    /// Ids of the required sets of this stage.
    pub sets: Vec<String>,
    /// What the view denies of them.
    pub denied: Vec<Denied>,
}

/// A name or network a stage needs and the view denies.
#[derive(Debug, Serialize)]
pub struct Denied {
    /// The name pattern or network as the zone file has it.
    pub entry: String,
    /// The endpoint set it belongs to.
    pub set: String,
    /// That set's profile.
    pub profile: String,
    /// The document the set comes from (or, without one, its zone file).
    pub source: String,
    /// The document's section, when the set names one.
    pub section: Option<String>,
}

/// The report for every view of `policy`, or only the view named `only`.
pub fn report(policy: &Policy, only: Option<&str>) -> Report {
    let views = policy
        .views
        .iter()
        .filter(|v| only.is_none_or(|name| v.name == name))
        .map(|view| {
            let families: Vec<FamilyReport> = view
                .families
                .iter()
                .filter_map(|name| policy.catalog.family(name))
                .map(|family| family_report(policy, view, family))
                .collect();
            ViewReport {
                view: view.name.clone(),
                mode: view.mode.as_str(),
                ready: families.iter().all(|f| f.ready),
                families,
            }
        })
        .collect();
    Report { views }
}

fn family_report(policy: &Policy, view: &View, family: &Family) -> FamilyReport {
    let profiles: Vec<String> = family
        .profiles
        .iter()
        .chain(
            family
                .optional_profiles
                .iter()
                .filter(|p| view.profiles.contains(p)),
        )
        .cloned()
        .collect();
    let mut stages: Vec<StageReport> = Vec::new();
    for stage in Stage::ALL {
        let sets: Vec<(usize, &EndpointSet)> = policy
            .catalog
            .sets
            .iter()
            .enumerate()
            .filter(|(_, s)| {
                s.required
                    && s.stage == Some(stage)
                    && profiles.contains(&s.profile)
                    && policy.in_region(s)
            })
            .collect();
        if sets.is_empty() {
            continue;
        }
        let mut denied = Vec::new();
        for &(index, set) in &sets {
            denied.extend(denied_of(view, index, set));
        }
        stages.push(StageReport {
            stage: stage.as_str(),
            ready: denied.is_empty(),
            sets: sets.iter().map(|(_, s)| s.id.clone()).collect(),
            denied,
        });
    }
    FamilyReport {
        family: family.name.clone(),
        ready: stages.iter().all(|s| s.ready),
        profiles,
        stages,
    }
}

/// What of one required set the view denies: names its matcher does not allow, and the set's
/// networks when the view does not select the set (static ranges are loaded per selected set).
fn denied_of(view: &View, index: usize, set: &EndpointSet) -> Vec<Denied> {
    let denied = |entry: String| Denied {
        entry,
        set: set.id.clone(),
        profile: set.profile.clone(),
        source: set.document.as_ref().map_or_else(
            || set.source.display().to_string(),
            |d| format!("{} ({})", d.name, d.version),
        ),
        section: set.section.clone(),
    };
    let selected = view.sets.binary_search(&(index as u32)).is_ok();
    let mut out: Vec<Denied> = set
        .names
        .iter()
        .filter(|n| view.lookup_normalized(&n.example()).is_none())
        .map(|n| denied(n.to_string()))
        .collect();
    if !selected {
        out.extend(set.networks.iter().map(|n| denied(n.to_string())));
    }
    out
}

impl Report {
    /// Whether every family of every view reported is ready.
    pub fn ready(&self) -> bool {
        self.views.iter().all(|v| v.ready)
    }

    /// The text `dnsfence readiness` prints: per view and family, one line per stage, the denied
    /// entries below a stage that is not ready.
    pub fn text(&self) -> String {
        use std::fmt::Write as _;
        let mut out = String::new();
        for v in &self.views {
            if v.families.is_empty() {
                let _ = writeln!(
                    out,
                    "view {}: selects no device family (add families = [...] to report readiness)",
                    v.view
                );
                continue;
            }
            for f in &v.families {
                let _ = writeln!(
                    out,
                    "view {}: family {}: {}{}",
                    v.view,
                    f.family,
                    if f.ready { "ready" } else { "NOT READY" },
                    if v.mode == "report" {
                        " (mode report: denied names are still answered)"
                    } else {
                        ""
                    }
                );
                for s in &f.stages {
                    let _ = writeln!(
                        out,
                        "  {:<13} {} ({})",
                        s.stage,
                        if s.ready { "ready" } else { "NOT READY" },
                        s.sets.join(", ")
                    );
                    // One line per set: its source once, then what it lost.
                    let mut rest: &[Denied] = &s.denied;
                    while let Some(first) = rest.first() {
                        let n = rest.iter().take_while(|d| d.set == first.set).count();
                        let entries: Vec<&str> =
                            rest[..n].iter().map(|d| d.entry.as_str()).collect();
                        let _ = writeln!(
                            out,
                            "    denied: {} (endpoint set {}, profile {}; from {}{})",
                            entries.join(", "),
                            first.set,
                            first.profile,
                            first.source,
                            first
                                .section
                                .as_ref()
                                .map_or(String::new(), |s| format!(", section \"{s}\""))
                        );
                        rest = &rest[n..];
                    }
                }
            }
        }
        out
    }
}
