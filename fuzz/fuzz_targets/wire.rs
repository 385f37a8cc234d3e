//! The wire parser: any bytes in, no panic, and what it accepts is consistent.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Some(q) = dnsfence::query::parse::parse(data) {
        assert!(q.question_end <= data.len());
        assert!(q.question_end == 12 || q.question_end >= 17);
        let _ = q.name(data);
    }
});
