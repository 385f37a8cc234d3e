//! The Intune endpoints page's and the Autopilot requirements page's Markdown, read as catalog
//! sources, and the overlay made of each against the shipped catalog: any text in, no panic.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    // The Intune page's parser, and the Autopilot requirements page's on the same text.
    let pages = [
        dnsfence::catalog::source::page::parse(text).ok(),
        dnsfence::catalog::source::autopilot::parse(text).ok(),
    ];
    for page in pages.into_iter().flatten() {
        check(&page);
    }
});

fn check(page: &dnsfence::catalog::source::Source) {
    static CATALOG: std::sync::OnceLock<dnsfence::catalog::zones::Catalog> = std::sync::OnceLock::new();
    let catalog = CATALOG.get_or_init(|| {
        let zones = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../zones");
        dnsfence::catalog::zones::Catalog::load_dir(&zones).expect("the shipped catalog loads")
    });
    let from = dnsfence::catalog::source::Provenance {
        source: "fuzz".into(),
        instance: None,
        version: page.version.clone(),
    };
    let overlay = dnsfence::catalog::source::overlay(catalog, page, &from);
    // What the parser accepted must make an overlay that loads as a zone file.
    dnsfence::catalog::zones::parse_zone(std::path::Path::new("overlay.toml"), &overlay, &mut Vec::new())
        .expect("an overlay of an accepted page parses");
}
