//! The values of an action call's query that take more than a parse: `wait` and
//! `at`, each refused with what it takes.

use crate::error::ApiError;

use super::services::MAX_DELAY;

/// The value of `wait`: `true` or `false`, as its refusal says (`1`, `0`, `yes`,
/// `no` and an empty value were taken too, while it said "true or false").
pub(super) fn wait_value(v: &str) -> Result<bool, ApiError> {
    match v {
        "true" => Ok(true),
        "false" => Ok(false),
        _ => Err(ApiError::bad_request(
            "invalid_parameters",
            format!(
                "query parameter `wait` must be `true` or `false`, not `{}`",
                v.escape_debug()
            ),
        )),
    }
}

/// How far in the past an `at` may be: a client's clock a little behind the
/// server's. Further back is most often a mistake (`1970-01-01` ran at once,
/// without a word; found by a probe).
const AT_PAST: chrono::TimeDelta = chrono::TimeDelta::minutes(1);

/// The value of `at`: an RFC 3339 time, no more than [`AT_PAST`] ago and no
/// further ahead than [`MAX_DELAY`], from `now`: the host's clock's, on which its
/// jobs are scheduled (it read the wall clock; a review).
pub(super) fn at_value(
    v: &str,
    now: chrono::DateTime<chrono::Utc>,
) -> Result<chrono::DateTime<chrono::Utc>, ApiError> {
    let t = chrono::DateTime::parse_from_rfc3339(v).map_err(|e| {
        // A query's `+` is a space: an offset written `+01:00` arrives as ` 01:00`.
        let plus = if v.contains(' ') {
            "; a `+` in a query is read as a space: write it `%2B` (`…T10:00:00%2B01:00`)"
        } else {
            ""
        };
        ApiError::bad_request(
            "invalid_parameters",
            format!(
                "query parameter `at` must be an RFC 3339 time such as `2026-12-01T10:00:00Z`, not `{}` ({e}){plus}",
                v.escape_debug()
            ),
        )
    })?;
    let t = t.with_timezone(&chrono::Utc);
    if t < now - AT_PAST {
        return Err(ApiError::bad_request(
            "invalid_parameters",
            format!(
                "query parameter `at` = `{}` is more than a minute before the server's now ({}); give a time to come, or no `at` for a job due now",
                v.escape_debug(),
                now.to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
            ),
        ));
    }
    // The bound `delay` has (a time that far ahead is most often a mistake).
    if chrono::TimeDelta::from_std(MAX_DELAY).is_ok_and(|max| t > now + max) {
        return Err(ApiError::bad_request(
            "invalid_parameters",
            format!(
                "query parameter `at` = `{}` is further ahead than the 365 days allowed",
                v.escape_debug()
            ),
        ));
    }
    Ok(t)
}
