//! The call flags checked as the host would check them, before anything is sent:
//! a bad one is a usage error (exit 2) naming the flag as typed. They went to the
//! host unchecked, and came back as an API error (exit 3) naming a query
//! parameter or a header the operator never typed (a probe).

use crate::deadline;

/// The most characters of a correlation id or an idempotency key, and bytes of a job
/// id or a `jobs` filter (the host's).
const MAX_ID: usize = 200;

/// The most a job's `--delay` may be: the host's 365 days.
const MAX_DELAY_SECS: u64 = 365 * 86_400;

/// `--timeout`: a duration above zero (`30s`, `2m`, `500ms`).
pub(crate) fn timeout(text: &str) -> Result<String, String> {
    deadline::parse_limit(text).map(|_| text.trim().to_owned())
}

/// `--delay`: a duration of at most 365 days.
pub(crate) fn delay(text: &str) -> Result<String, String> {
    let d = deadline::parse(text)?;
    if d.as_secs() > MAX_DELAY_SECS {
        return Err(format!(
            "`{text}` is longer than the 365 days a job may be delayed"
        ));
    }
    Ok(text.trim().to_owned())
}

/// `--at`: an RFC 3339 time, read as the host reads it (chrono's RFC 3339 parser):
/// `2026-12-24T18:00:00Z`, `2026-12-24T19:00:00+01:00`, `2026-12-24t18:00:00z`.
/// humantime's reader took UTC alone, and refused a time with an offset the host
/// takes (found by a probe). Sent as typed: the query is percent-encoded, a `+` as
/// `%2B`.
pub(crate) fn at(text: &str) -> Result<String, String> {
    let t = text.trim();
    chrono::DateTime::parse_from_rfc3339(t)
        .map(|_| t.to_owned())
        .map_err(|e| {
            format!(
                "`{text}` is not an RFC 3339 time ({e}); write e.g. `2026-12-24T18:00:00Z` \
                 or `2026-12-24T19:00:00+01:00`"
            )
        })
}

/// `--idempotency-key`: 1 to 200 visible ASCII characters (the host's rule for
/// `Idempotency-Key`).
pub(crate) fn id(text: &str) -> Result<String, String> {
    let n = text.chars().count();
    if n == 0 || n > MAX_ID || !text.chars().all(|c| c.is_ascii_graphic()) {
        return Err(format!(
            "it must have 1 to {MAX_ID} visible ASCII characters (no spaces), not {n} characters{}",
            if text.chars().all(|c| c.is_ascii_graphic()) {
                ""
            } else {
                " with some that are not"
            }
        ));
    }
    Ok(text.to_owned())
}

/// `--correlation-id`: the host's one rule for a correlation id given from outside
/// (`koan::action::check_correlation_id`, which koanctl, depending on no koan
/// crate, mirrors; a test pins that both agree): 1 to 200 printable ASCII
/// characters, spaces included. `order 42` was refused here, with the rule for an
/// idempotency key, where the host takes it (found by a probe).
///
/// A space at either end is refused besides: an HTTP header's value loses it on
/// the way, so the host would record another id than the one typed.
pub(crate) fn correlation_id(text: &str) -> Result<String, String> {
    if !text.bytes().all(|b| (0x20..=0x7e).contains(&b)) {
        return Err(
            "a correlation id must be printable ASCII (spaces are, tabs, other control characters and non-ASCII letters are not)"
                .to_owned(),
        );
    }
    if text.is_empty() || text.len() > MAX_ID {
        return Err(format!(
            "a correlation id must have 1 to {MAX_ID} printable ASCII characters, not {}",
            text.len()
        ));
    }
    if text.starts_with(' ') || text.ends_with(' ') {
        return Err(
            "a correlation id that starts or ends with a space would reach the host without it (an HTTP header's value loses it): drop the space"
                .to_owned(),
        );
    }
    Ok(text.to_owned())
}

/// A job's id, and `jobs`' filters (`--service`, `--action`, `--correlation-id`,
/// `--cursor`): 1 to 200 bytes, the host's bound. Empty, `jobs show ""` came back
/// as "no route `/api/jobs/`" and `jobs list --service ""` as a query parameter's
/// error, exit 3: words the operator never typed (a probe).
pub(crate) fn name(text: &str) -> Result<String, String> {
    if text.is_empty() || text.len() > MAX_ID {
        return Err(format!(
            "it must have 1 to {MAX_ID} bytes, not {}",
            text.len()
        ));
    }
    Ok(text.to_owned())
}

/// `--token` (or `KOAN_TOKEN`, which clap reads as its value): not empty. An empty
/// one fell back to the host's `KOAN_HTTP_TOKEN` without a word, or sent none:
/// `--token "$TOKEN"` with the variable unset ran as another caller (a probe). The
/// host refuses an empty token of its own too.
pub(crate) fn token(text: &str) -> Result<String, String> {
    if text.is_empty() {
        return Err(
            "the token is empty (an empty `--token`, or KOAN_TOKEN set to nothing): give the token, or `@file` to read it from a file; to send none, leave `--token` out and unset KOAN_TOKEN (for a loopback `--url` the host's KOAN_HTTP_TOKEN is then sent, when set)"
                .to_owned(),
        );
    }
    Ok(text.to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_correlation_id_is_taken_as_the_host_takes_it() {
        let long = "x".repeat(MAX_ID);
        let longer = "x".repeat(MAX_ID + 1);
        let table = [
            "order-42",
            "order 42",
            "a\"b'c\\d",
            "~!@#$%^&*()_+{}|:<>?`-=[];,./",
            "x",
            &long,
            &longer,
            "",
            "tab\there",
            "line\nbreak",
            "del\u{7f}",
            "é",
            "\u{1b}[2J",
        ];
        for t in table {
            assert_eq!(
                correlation_id(t).is_ok(),
                koan::action::check_correlation_id(t).is_ok(),
                "{t:?}"
            );
        }
        // Besides the host's rule: a space at either end, which a header loses.
        for t in [" x", "x ", " "] {
            assert!(koan::action::check_correlation_id(t).is_ok(), "{t:?}");
            assert!(
                correlation_id(t).is_err_and(|e| e.contains("space")),
                "{t:?}"
            );
        }
    }

    #[test]
    fn flags_are_checked_as_the_host_checks_them() {
        assert!(timeout("30s").is_ok() && timeout("0s").is_err() && timeout("soon").is_err());
        assert!(delay("2h").is_ok() && delay("400d").is_err() && delay("later").is_err());
        for good in [
            "2026-12-24T18:00:00Z",
            "2026-12-24T19:00:00+01:00",
            "2026-12-24T13:30:00.5-04:30",
            "2026-12-24t18:00:00z",
        ] {
            assert_eq!(at(good).as_deref(), Ok(good));
        }
        for bad in [
            "tomorrow",
            "2026-12-24",
            "2026-12-24T18:00:00",
            "2026-13-01T00:00:00Z",
        ] {
            assert!(at(bad).is_err(), "{bad}");
        }
        assert!(id("order-42").is_ok() && id("order 42").is_err());
        assert!(token("s3cret").is_ok() && token("").is_err());
        for bad in ["", "a b", &"x".repeat(201), "é"] {
            assert!(id(bad).is_err(), "{bad:?}");
        }
    }
}
