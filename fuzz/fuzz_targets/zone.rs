//! Zone-file parsing and validation: any text in, no panic.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(text) = std::str::from_utf8(data) {
        let mut warnings = Vec::new();
        let _ = dnsfence::catalog::zones::parse_file(std::path::Path::new("fuzz.toml"), text, &mut warnings);
    }
});
