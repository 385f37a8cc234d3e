//! Config parsing and validation: any text in, no panic (a bad file is an error with its line).
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(text) = std::str::from_utf8(data) {
        let _ = dnsfence::config::Config::parse(
            std::path::Path::new("fuzz.toml"),
            text,
            std::path::Path::new("/nonexistent"),
        );
    }
});
