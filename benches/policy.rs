//! One policy decision: the shipped catalog (and, in one run, the Intune pages' sets alone against
//! every document's), then synthetic catalogs of 10k, 100k and 1M patterns.
//! Target (issue "resolver core"): ≤ 100 ns per decision, flat as the pattern count grows.
//!
//! The decision measured is the server's call (query/mod.rs): the question's wire name written as
//! lower-case text into a stack buffer (`wire::name_text`), then `View::lookup_normalized`, which
//! probes the hash maps once per label.

use std::hint::black_box;
use std::path::Path;
use std::sync::Arc;

use criterion::{Criterion, criterion_group, criterion_main};
use dnsfence::base::matcher::{MatcherBuilder, Pattern};
use dnsfence::catalog::policy::Policy;
use dnsfence::catalog::zones::Catalog;
use dnsfence::config::Config;
use hickory_proto::rr::Name;

fn shipped_policy() -> Policy {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let path = root.join("config/examples/kiosk.toml");
    let text = std::fs::read_to_string(&path).unwrap();
    let config = Config::parse(&path, &text, Path::new("/nonexistent")).unwrap();
    let catalog = Catalog::load_dirs(&config.zones.dirs).unwrap();
    Policy::compile(&config, Arc::new(catalog)).unwrap()
}

fn names() -> Vec<(&'static str, Name)> {
    [
        ("exact", "EnterpriseEnrollment.manage.microsoft.com."),
        ("wildcard_deep", "fef.msua06.manage.microsoft.com."),
        // The catalog has no in-label glob since it follows the 2026-03-24 page (the seed's
        // sparkcdn*.azureedge.net is gone); the synthetic catalogs below measure globs.
        ("wildcard_short", "www.powershellgallery.com."),
        ("denied_trap", "evilmanage.microsoft.com."),
        ("denied_long", "a.b.c.d.e.f.tracker.ads.example.net."),
    ]
    .into_iter()
    .map(|(k, n)| (k, Name::from_ascii(n).unwrap()))
    .collect()
}

fn bench_shipped(c: &mut Criterion) {
    let policy = shipped_policy();
    let view = policy.view("windows-kiosk").unwrap();
    let mut group = c.benchmark_group("decision/shipped");
    for (kind, name) in names() {
        let mut wire = Vec::new();
        {
            use hickory_proto::serialize::binary::{BinEncodable, BinEncoder};
            let mut enc = BinEncoder::new(&mut wire);
            name.emit(&mut enc).unwrap();
        }
        group.bench_function(kind, |b| {
            b.iter(|| {
                let mut buf = [0u8; 256];
                dnsfence::base::wire::name_text(black_box(&wire), &mut buf)
                    .and_then(|t| view.lookup_normalized(t))
                    .is_some()
            })
        });
        group.bench_function(format!("wire_to_text_only_{kind}"), |b| {
            b.iter(|| {
                let mut buf = [0u8; 256];
                dnsfence::base::wire::name_text(black_box(&wire), &mut buf).map(|t| t.len())
            })
        });
    }
    let client = "10.20.1.9".parse().unwrap();
    group.bench_function("view_for_client", |b| {
        b.iter(|| policy.view_for(black_box(client)).is_some())
    });
    group.finish();
}

/// `n` synthetic patterns: 60 % exact names, 39.9 % `*.` wildcards, 0.1 % in-label globs, spread
/// over many parents, plus the shipped catalog's names so the measured names behave as in
/// production.
fn synthetic(n: usize) -> dnsfence::base::matcher::Matcher {
    let mut b = MatcherBuilder::new();
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("zones");
    let catalog = Catalog::load_dir(&root).unwrap();
    for (i, set) in catalog.sets.iter().enumerate() {
        for p in &set.names {
            b.add(p.clone(), i as u32);
        }
    }
    for i in 0..n {
        let tld = ["com", "net", "org", "io", "example"][i % 5];
        let text = match i % 1000 {
            0 => format!("cdn{}*.edge{}.{tld}", i % 97, i % 100),
            k if k < 600 => format!("host{i}.svc{}.zone{}.{tld}", i % 331, i % 17),
            _ => format!("*.tenant{i}.zone{}.{tld}", i % 17),
        };
        // Generated text is valid by construction.
        b.add(Pattern::parse(&text).unwrap(), (i % 4096) as u32);
    }
    b.build().unwrap()
}

/// The matcher of every name of the catalog's sets that `keep` picks.
fn catalog_matcher(
    catalog: &Catalog,
    keep: impl Fn(&dnsfence::catalog::zones::EndpointSet) -> bool,
) -> (dnsfence::base::matcher::Matcher, usize) {
    let mut b = MatcherBuilder::new();
    for (i, set) in catalog.sets.iter().enumerate().filter(|(_, s)| keep(s)) {
        for p in &set.names {
            b.add(p.clone(), i as u32);
        }
    }
    let m = b.build().unwrap();
    let n = m.len();
    (m, n)
}

/// Before and after the vendors' documents joined the catalog, in one run: the Intune pages' sets
/// alone (what the catalog held before), then every set (the Microsoft 365 Common area, the
/// Autopilot page, Apple's and Google's tables). The cost must not grow with the catalog.
fn bench_catalog(c: &mut Criterion) {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("zones");
    let catalog = Catalog::load_dir(&root).unwrap();
    let intune_only = |s: &dnsfence::catalog::zones::EndpointSet| {
        s.document.as_ref().is_none_or(|d| d.follows.is_none())
    };
    let mut group = c.benchmark_group("decision/catalog");
    for (label, (m, patterns)) in [
        ("intune_pages", catalog_matcher(&catalog, intune_only)),
        ("all_documents", catalog_matcher(&catalog, |_| true)),
    ] {
        eprintln!("decision/catalog/{label}: {patterns} patterns");
        for (kind, name) in [
            ("exact", "enterpriseenrollment.manage.microsoft.com"),
            ("wildcard_deep", "fef.msua06.manage.microsoft.com"),
            ("apns_wildcard", "17-courier.push.apple.com"),
            ("fcm_exact", "mtalk.google.com"),
            ("denied_trap", "evilmanage.microsoft.com"),
            ("denied_long", "a.b.c.d.e.f.tracker.ads.example.net"),
        ] {
            group.bench_function(format!("{label}/{kind}"), |b| {
                b.iter(|| m.lookup_normalized(black_box(name)).is_some())
            });
        }
    }
    group.finish();
}

fn bench_scaling(c: &mut Criterion) {
    let mut group = c.benchmark_group("decision/synthetic");
    for n in [10_000usize, 100_000, 1_000_000] {
        let m = synthetic(n);
        let probes: Vec<(&str, String)> = vec![
            ("exact", "enterpriseenrollment.manage.microsoft.com".into()),
            ("wildcard_deep", "fef.msua06.manage.microsoft.com".into()),
            (
                "synthetic_exact",
                format!("host{}.svc{}.zone{}.com", 1000 + 5, 1005 % 331, 1005 % 17),
            ),
            ("synthetic_wildcard", "a.b.tenant700.zone3.com".into()),
            ("synthetic_glob", "cdn0abc.edge0.com".into()),
            ("denied_trap", "evilmanage.microsoft.com".into()),
            ("denied_long", "a.b.c.d.e.f.tracker.ads.example.net".into()),
        ];
        for (kind, name) in &probes {
            group.bench_function(format!("{n}/{kind}"), |b| {
                b.iter(|| m.lookup_normalized(black_box(name)).is_some())
            });
        }
        drop(m);
    }
    group.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default()
        .sample_size(50)
        .warm_up_time(std::time::Duration::from_millis(500))
        .measurement_time(std::time::Duration::from_secs(2));
    targets = bench_shipped, bench_catalog, bench_scaling
}
criterion_main!(benches);
