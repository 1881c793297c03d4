//! The weekday field of a classic five-field cron expression, read as Unix cron
//! reads it: `0`–`7`, where `0` and `7` are Sunday and `1` is Monday. The `cron`
//! crate counts as Quartz does (`1`–`7`, `1` is Sunday), so `0 9 * * 1-5`, Monday
//! to Friday everywhere else, ran Sunday to Thursday, and `0 9 * * 0` was refused.
//! The field is handed to the crate as the days' names.

const NAMES: [&str; 7] = ["SUN", "MON", "TUE", "WED", "THU", "FRI", "SAT"];

/// The five-field form's weekday `field` as the days' names (`*` stays `*`), or
/// what is wrong with it.
pub(super) fn unix_to_names(field: &str) -> Result<String, String> {
    if field == "*" || field == "?" {
        return Ok(field.to_owned());
    }
    let mut days = [false; 7];
    for part in field.split(',') {
        let (range, step) = match part.split_once('/') {
            Some((r, s)) => {
                let step: usize =
                    s.parse().ok().filter(|s| *s > 0).ok_or_else(|| {
                        format!("weekday step `{s}` is not a whole number above 0")
                    })?;
                (r, step)
            }
            None => (part, 1),
        };
        let (first, last) = match range.split_once('-') {
            _ if range == "*" => (0, 6),
            Some((a, b)) => (day(a)?, day(b)?),
            // `a/step`: from `a` to the end of the week.
            None if step > 1 => (day(range)?, 6),
            None => {
                let d = day(range)?;
                (d, d)
            }
        };
        // `7` closes a range as Sunday does: `5-7` is Friday to Sunday.
        let (first, last) = (first, if last == 0 && first > 0 { 7 } else { last });
        if first > last {
            return Err(format!("weekday range `{range}` runs backwards"));
        }
        for d in (first..=last).step_by(step) {
            days[d % 7] = true;
        }
    }
    let names: Vec<&str> = (0..7).filter(|d| days[*d]).map(|d| NAMES[d]).collect();
    Ok(names.join(","))
}

/// A day, `0`–`7` or its name (`SUN`…`SAT`, any case), as `0`–`7`.
fn day(text: &str) -> Result<usize, String> {
    if let Ok(n) = text.parse::<usize>() {
        return if n <= 7 {
            Ok(n)
        } else {
            Err(format!("weekday `{text}` is not 0-7 (0 and 7 are Sunday)"))
        };
    }
    NAMES
        .iter()
        .position(|n| n.eq_ignore_ascii_case(text))
        .ok_or_else(|| format!("weekday `{text}` is not 0-7 or SUN-SAT"))
}

#[cfg(test)]
mod tests {
    use super::unix_to_names;

    #[test]
    fn weekdays_are_read_as_unix_cron_reads_them() {
        for (field, names) in [
            ("*", "*"),
            ("0", "SUN"),
            ("7", "SUN"),
            ("1-5", "MON,TUE,WED,THU,FRI"),
            ("5-7", "SUN,FRI,SAT"),
            ("*/2", "SUN,TUE,THU,SAT"),
            ("1-5/2", "MON,WED,FRI"),
            ("mon,Wed", "MON,WED"),
            ("MON-FRI", "MON,TUE,WED,THU,FRI"),
            ("SAT-7", "SUN,SAT"),
            ("3/2", "WED,FRI"),
        ] {
            assert_eq!(unix_to_names(field).as_deref(), Ok(names), "{field}");
        }
        for field in ["8", "5-2", "x", "1/0", "1-"] {
            assert!(unix_to_names(field).is_err(), "{field}");
        }
    }
}
