//! dnsfence's own binary formats read from untrusted bytes: the warm-restart state file (a
//! damaged or foreign file) and a peer-sync frame (a peer, or anything that got a certificate).
//! The first byte picks which; any bytes in, no panic.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Some((&which, rest)) = data.split_first() else {
        return;
    };
    if which % 2 == 0 {
        let _ = dnsfence::state::peer::frame::decode(rest);
        if let Ok(hello) = <&[u8; dnsfence::state::peer::frame::HELLO_LEN]>::try_from(rest) {
            let _ = dnsfence::state::peer::frame::parse_hello(hello);
        }
        return;
    }
    static CATALOG: std::sync::OnceLock<dnsfence::catalog::zones::Catalog> = std::sync::OnceLock::new();
    let catalog = CATALOG.get_or_init(|| {
        let zones = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../zones");
        dnsfence::catalog::zones::Catalog::load_dir(&zones).expect("the shipped catalog loads")
    });
    if let Ok(mut loaded) = dnsfence::state::warm::parse(rest, catalog, std::time::SystemTime::now()) {
        // What a start does with it: the answers into a cache (their chains proven again).
        let cache = dnsfence::resolve::cache::AnswerCache::new(
            64,
            dnsfence::resolve::cache::TtlBounds::default(),
            std::time::Duration::ZERO,
        );
        loaded.restore_answers(&cache, std::time::Instant::now());
    }
});
