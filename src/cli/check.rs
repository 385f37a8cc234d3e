//! `dnsfence check`: what a config and its zones hold, as the report the command prints — the
//! catalog's counts, where each endpoint set comes from (the shipped catalog, each local file,
//! the followed sources' overlays), the warnings, the upstream servers and each view. `main`
//! prints it; refusing what `run` would refuse is [`crate::daemon::preflight`]'s.

use std::fmt::Write as _;

use crate::catalog::policy::{Policy, View};
use crate::config::Config;

/// The report of a config that loaded.
pub fn report(config: &Config, policy: &Policy) -> String {
    let mut out = String::new();
    let catalog = &policy.catalog;
    let _ = writeln!(out, "{}: ok", config.path.display());
    let _ = writeln!(
        out,
        "zones: {} endpoint sets, {} name patterns, {} networks, {} profiles, {} device families",
        catalog.sets.len(),
        catalog.name_count(),
        catalog.network_count(),
        catalog.profiles().len(),
        catalog.families.len()
    );
    // Where each set comes from: the shipped catalog, then each local directory file by file.
    for (i, dir) in config.zones.dirs.iter().enumerate() {
        let sets: Vec<_> = catalog
            .sets
            .iter()
            .filter(|s| s.source.parent() == Some(dir.as_path()))
            .collect();
        let note = if dir.exists() {
            ""
        } else {
            " (missing: nothing added)"
        };
        let _ = writeln!(
            out,
            "  {}: {} endpoint sets{note}",
            dir.display(),
            sets.len()
        );
        if i == 0 {
            continue;
        }
        let mut files: Vec<&std::path::Path> = sets.iter().map(|s| s.source.as_path()).collect();
        files.dedup();
        for file in files {
            let ids: Vec<&str> = sets
                .iter()
                .filter(|s| s.source == file)
                .map(|s| s.id.as_str())
                .collect();
            let name = file.file_name().unwrap_or_default().to_string_lossy();
            let _ = writeln!(out, "    {name}: {}", ids.join(", "));
        }
    }
    for (what, overlay) in [
        ("catalog page", config.catalog.page_overlay()),
        (
            "catalog Autopilot page",
            config.catalog.autopilot_page_overlay(),
        ),
        ("catalog feed", config.catalog.feed_overlay()),
    ] {
        let Some(overlay) = overlay else { continue };
        let new = catalog.sets.iter().filter(|s| s.source == overlay).count();
        let extended = catalog
            .sets
            .iter()
            .filter(|s| s.extended_by.contains(&overlay))
            .count();
        if overlay.exists() {
            let _ = writeln!(
                out,
                "  {} ({what}): {new} new endpoint sets, {extended} extended",
                overlay.display()
            );
        } else {
            let _ = writeln!(out, "  {} ({what}): not fetched yet", overlay.display());
        }
    }
    for w in &config.warnings {
        let _ = writeln!(out, "warning: {w}");
    }
    for w in &catalog.warnings {
        let _ = writeln!(out, "warning: {w}");
    }
    let upstream_source = if config.upstream.from_resolv_conf {
        " (from /etc/resolv.conf)"
    } else {
        ""
    };
    let _ = writeln!(
        out,
        "upstream: {}{upstream_source}",
        config
            .upstream
            .servers
            .iter()
            .map(|s| s.label.clone())
            .collect::<Vec<_>>()
            .join(", ")
    );
    let sync = &config.sync;
    if sync.enabled() {
        let _ = writeln!(
            out,
            "sync: listen {}; peers {}",
            sync.listen
                .map_or("(none: sends only)".to_string(), |a| a.to_string()),
            sync.peers
                .iter()
                .map(|p| format!("{} ({})", p.name, p.address))
                .collect::<Vec<_>>()
                .join(", ")
        );
    }
    let readiness = crate::catalog::readiness::report(policy, None);
    for (view, ready) in policy.views.iter().zip(&readiness.views) {
        let _ = writeln!(out, "{}", view_line(view, ready));
    }
    out
}

/// One view's line: its networks, families (and how many are not ready), sets, mode, denial.
fn view_line(view: &View, ready: &crate::catalog::readiness::ViewReport) -> String {
    let families = if view.families.is_empty() {
        String::new()
    } else {
        let not_ready = ready.families.iter().filter(|f| !f.ready).count();
        format!(
            "; families {}{}",
            view.families.join(", "),
            if not_ready == 0 {
                String::new()
            } else {
                format!(" ({not_ready} not ready: dnsfence readiness says why)")
            }
        )
    };
    format!(
        "view {}: networks {}{families}; {} endpoint sets, {} name patterns; mode {}; denied names get {}",
        view.name,
        view.networks
            .iter()
            .map(|n| n.to_string())
            .collect::<Vec<_>>()
            .join(", "),
        view.sets.len(),
        view.pattern_count(),
        view.mode.as_str(),
        view.deny_rcode.as_str(),
    )
}
