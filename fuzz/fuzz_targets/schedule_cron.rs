//! `koan::Schedule::cron` on any text: a schedule or a `Config` error, never a panic;
//! a valid schedule computes its next instants without panicking.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    match koan::Schedule::cron(text) {
        Ok(koan::Schedule::Cron(c)) => {
            let start = chrono::DateTime::from_timestamp(1_700_000_000, 0).unwrap_or_default();
            let mut at = start;
            for _ in 0..3 {
                match c.next_after(at) {
                    Some(next) => {
                        assert!(next > at, "next {next} is not after {at}");
                        at = next;
                    }
                    None => break,
                }
            }
        }
        Ok(other) => panic!("cron gave {other:?}"),
        Err(e) => assert_eq!(e.kind(), koan::ErrorKind::Config, "{e}"),
    }
});
