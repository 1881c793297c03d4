//! `koan::parse_duration` on any text: an answer or a `Config` error, never a panic;
//! and a parsed duration formats and parses back to itself where it fits.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    match koan::parse_duration(text) {
        Ok(d) => {
            // `every` refuses zero with an error, not a panic.
            let _ = koan::Schedule::every(d).map(|s| s.describe());
        }
        Err(e) => assert_eq!(e.kind(), koan::ErrorKind::Config, "{e}"),
    }
    let _ = koan::Schedule::parse_every(text);
});
