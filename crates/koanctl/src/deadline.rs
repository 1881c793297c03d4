//! How long koanctl waits: durations as the command line writes them, and shown back.

use std::time::Duration;

/// Parses a duration the way the control plane parses `timeout`: whole seconds
/// (`30`), or humantime's words, e.g. `500ms`, `30s`, `2m`, `1h 30m`.
pub(crate) fn parse(text: &str) -> Result<Duration, String> {
    let t = text.trim();
    if let Ok(secs) = t.parse::<u64>() {
        return Ok(Duration::from_secs(secs));
    }
    humantime::parse_duration(t)
        .map_err(|_| format!("`{text}` is not a duration; write e.g. `30s`, `2m` or `500ms`"))
}

/// [`parse`] for a limit of koanctl's own: longer than zero.
pub(crate) fn parse_limit(text: &str) -> Result<Duration, String> {
    match parse(text)? {
        d if d.is_zero() => Err(format!(
            "`{text}` is no time at all; give a limit above zero"
        )),
        d => Ok(d),
    }
}

/// `d` as people write it: `30s`, `1500ms`, `2m 30s`.
pub(crate) fn show(d: Duration) -> String {
    if d.subsec_nanos() != 0 {
        return match d.as_millis() {
            ms if Duration::from_millis(u64::try_from(ms).unwrap_or(u64::MAX)) == d => {
                format!("{ms}ms")
            }
            _ => format!("{d:?}"),
        };
    }
    let secs = d.as_secs();
    match (secs / 60, secs % 60) {
        (0, s) => format!("{s}s"),
        (m, 0) => format!("{m}m"),
        (m, s) => format!("{m}m {s}s"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_read_as_the_control_plane_reads_them() -> Result<(), String> {
        assert_eq!(parse("30")?, Duration::from_secs(30));
        assert_eq!(parse("250ms")?, Duration::from_millis(250));
        assert_eq!(parse(" 2m ")?, Duration::from_secs(120));
        assert_eq!(parse("1h 30m")?, Duration::from_secs(5400));
        assert_eq!(parse("1h30m")?, Duration::from_secs(5400));
        assert_eq!(parse("7days")?, Duration::from_secs(7 * 86_400));
        for bad in ["", "s", "1x", "-1s", "99999999999999999999999s"] {
            assert!(parse(bad).is_err(), "{bad:?}");
        }
        assert!(parse_limit("0s").is_err());
        Ok(())
    }

    #[test]
    fn durations_show_as_written() {
        assert_eq!(show(Duration::from_secs(30)), "30s");
        assert_eq!(show(Duration::from_secs(150)), "2m 30s");
        assert_eq!(show(Duration::from_secs(120)), "2m");
        assert_eq!(show(Duration::from_millis(1500)), "1500ms");
    }
}
