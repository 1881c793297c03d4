//! A record's times written as chrono's serde writes them (RFC 3339 in UTC, `Z`,
//! as many fraction digits as the time has), made into one string first. chrono's
//! own `Serialize` hands the string to `serde_json` through `collect_str`, whose
//! escaping writer then takes it one character at a time: a third of a job
//! record's encoding (`perf` of B8 durable, `docs/benchmarks/round-39.md`).
//! Reading them back is chrono's own `Deserialize`.

use chrono::{DateTime, SecondsFormat, Utc};
use serde::Serializer;

/// `DateTime<Utc>`, as chrono's serde writes it.
pub(super) fn serialize<S: Serializer>(at: &DateTime<Utc>, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(&at.to_rfc3339_opts(SecondsFormat::AutoSi, true))
}

/// `Option<DateTime<Utc>>`, as chrono's serde writes it (`null` for none).
pub(super) fn option<S: Serializer>(at: &Option<DateTime<Utc>>, s: S) -> Result<S::Ok, S::Error> {
    match at {
        Some(at) => serialize(at, s),
        None => s.serialize_none(),
    }
}

#[cfg(test)]
mod tests {
    use chrono::{DateTime, TimeZone, Utc};

    #[derive(serde::Serialize)]
    struct Ours {
        #[serde(serialize_with = "super::serialize")]
        at: DateTime<Utc>,
        #[serde(serialize_with = "super::option")]
        maybe: Option<DateTime<Utc>>,
    }

    #[derive(serde::Serialize)]
    struct Chronos {
        at: DateTime<Utc>,
        maybe: Option<DateTime<Utc>>,
    }

    #[test]
    fn written_as_chrono_writes_them() -> Result<(), serde_json::Error> {
        let base = Utc.with_ymd_and_hms(2026, 12, 6, 10, 31, 32).single();
        let base = base.unwrap_or_default();
        // No fraction, and fractions that need 3, 6 and 9 digits.
        for nanos in [0, 120_000_000, 123_456_000, 123_456_789, 1] {
            let at = base + chrono::Duration::nanoseconds(nanos);
            for maybe in [None, Some(at)] {
                let ours = serde_json::to_string(&Ours { at, maybe })?;
                let chronos = serde_json::to_string(&Chronos { at, maybe })?;
                assert_eq!(ours, chronos);
            }
        }
        Ok(())
    }
}
