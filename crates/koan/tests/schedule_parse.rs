//! Reading schedules from text: durations, intervals and cron expressions, and the
//! errors that say what was expected.

use std::time::Duration;

use chrono::{Datelike, TimeZone, Timelike, Utc};
use koan::{error::ErrorKind, schedule::Schedule, schedule::parse_duration};

#[test]
fn parse_duration_reads_units_and_bare_seconds() -> koan::Result<()> {
    let cases = [
        ("30s", Duration::from_secs(30)),
        ("5m", Duration::from_secs(300)),
        ("1h 30m", Duration::from_secs(5400)),
        ("250ms", Duration::from_millis(250)),
        ("42", Duration::from_secs(42)),
        (" 7 ", Duration::from_secs(7)),
        ("0", Duration::ZERO),
        ("2d", Duration::from_secs(2 * 86_400)),
    ];
    for (text, expected) in cases {
        assert_eq!(parse_duration(text)?, expected, "parsing {text:?}");
    }
    Ok(())
}

#[test]
fn parse_duration_refuses_text_that_is_no_duration() {
    for text in ["", "soon", "5 parsecs", "-3s", "1.5.2h"] {
        let err = parse_duration(text).expect_err(text);
        assert_eq!(err.kind(), ErrorKind::Config, "{text:?}");
        assert!(
            err.message()
                .contains(&format!("invalid duration `{text}`"))
                && err.message().contains("30s"),
            "{}",
            err.message()
        );
    }
}

#[test]
fn an_interval_must_be_longer_than_zero() -> koan::Result<()> {
    let every = Schedule::parse_every("1h 30m")?;
    assert!(
        matches!(every, Schedule::Every(d) if d == Duration::from_secs(5400)),
        "{every:?}"
    );
    assert_eq!(every.describe(), "every 1h30m");

    for err in [
        Schedule::every(Duration::ZERO).expect_err("zero"),
        Schedule::parse_every("0s").expect_err("zero"),
    ] {
        assert_eq!(err.kind(), ErrorKind::Config);
        assert!(
            err.message().contains("longer than zero"),
            "{}",
            err.message()
        );
    }
    let err = Schedule::parse_every("often").expect_err("no duration");
    assert_eq!(err.kind(), ErrorKind::Config);
    Ok(())
}

#[test]
fn a_five_field_cron_fires_on_the_minute() -> koan::Result<()> {
    let schedule = Schedule::cron("*/5 * * * *")?;
    assert_eq!(schedule.describe(), "cron */5 * * * *");
    let Schedule::Cron(cron) = schedule else {
        panic!("a cron schedule");
    };
    assert_eq!(cron.expression(), "*/5 * * * *");
    let at = Utc.with_ymd_and_hms(2026, 3, 1, 12, 3, 17).unwrap();
    let next = cron.next_after(at).expect("a next fire time");
    assert_eq!(next, Utc.with_ymd_and_hms(2026, 3, 1, 12, 5, 0).unwrap());
    // Strictly after: a fire time is not its own successor.
    let after_next = cron.next_after(next).expect("a next fire time");
    assert_eq!(
        after_next,
        Utc.with_ymd_and_hms(2026, 3, 1, 12, 10, 0).unwrap()
    );
    Ok(())
}

#[test]
fn six_and_seven_field_crons_keep_their_seconds_and_year() -> koan::Result<()> {
    let Schedule::Cron(six) = Schedule::cron("15 */5 * * * *")? else {
        panic!("a cron schedule");
    };
    let at = Utc.with_ymd_and_hms(2026, 3, 1, 12, 3, 17).unwrap();
    let next = six.next_after(at).expect("a next fire time");
    assert_eq!((next.minute(), next.second()), (5, 15));

    let Schedule::Cron(past) = Schedule::cron("0 0 0 1 1 * 2000")? else {
        panic!("a cron schedule");
    };
    assert_eq!(past.next_after(at), None, "a past year never fires again");
    Ok(())
}

#[test]
fn an_invalid_cron_names_the_expression_and_the_expected_forms() {
    for text in ["every day", "* * *"] {
        let err = Schedule::cron(text).expect_err(text);
        assert_eq!(err.kind(), ErrorKind::Config, "{text:?}");
        assert!(
            err.message()
                .contains(&format!("invalid cron expression `{text}`"))
                && err.message().contains("5 fields"),
            "{}",
            err.message()
        );
    }
    // The right number of fields, a value out of range: what is wrong, on one line,
    // without the advice about fields (which was beside the point).
    for (text, why) in [
        ("61 * * * *", "61"),
        ("0 0 32 * *", "32"),
        ("0 0 * 13 *", "13"),
    ] {
        let err = Schedule::cron(text).expect_err(text);
        let message = err.message();
        assert!(
            message.starts_with(&format!("invalid cron expression `{text}`: "))
                && message.contains(why)
                && message.contains("day of month 1-31")
                && !message.contains('\n')
                && !message.contains("5 fields"),
            "{message}"
        );
    }
}

/// The classic five fields read the weekday as Unix cron does (0 and 7 are Sunday,
/// 1 is Monday). Before, the `cron` crate's count (1 is Sunday) applied: `* * 6`
/// ran on Fridays, `1-5` from Sunday to Thursday, and `0` was refused.
#[test]
fn a_five_field_cron_reads_the_weekday_as_unix_cron_does() -> koan::Result<()> {
    // Sunday, 1 March 2026, noon.
    let sunday = Utc.with_ymd_and_hms(2026, 3, 1, 12, 0, 0).unwrap();
    for (text, day) in [
        ("0 9 * * 6", 7),
        ("0 9 * * 0", 8),
        ("0 9 * * 7", 8),
        ("0 9 * * 1", 2),
        ("0 9 * * 5-7", 6),
        ("0 9 * * */2", 3),
        ("0 9 * * TUE-thu", 3),
    ] {
        let Schedule::Cron(c) = Schedule::cron(text)? else {
            panic!("a cron schedule");
        };
        assert_eq!(c.expression(), text);
        let next = c.next_after(sunday).expect("a next fire time");
        assert_eq!((next.day(), next.hour()), (day, 9), "{text}: {next}");
    }
    // Mondays to Fridays: five runs in a week, none on Saturday or Sunday.
    let Schedule::Cron(c) = Schedule::cron("0 9 * * 1-5")? else {
        panic!("a cron schedule");
    };
    let mut at = sunday;
    let mut days = Vec::new();
    for _ in 0..5 {
        at = c.next_after(at).expect("a next fire time");
        days.push(at.weekday().num_days_from_monday());
    }
    assert_eq!(days, [0, 1, 2, 3, 4]);
    // Six fields keep the Quartz count: 1 is Sunday.
    let Schedule::Cron(c) = Schedule::cron("0 0 9 * * 1")? else {
        panic!("a cron schedule");
    };
    assert_eq!(c.next_after(sunday).map(|n| n.day()), Some(8));
    let err = Schedule::cron("0 9 * * 8").expect_err("no such weekday");
    assert!(
        err.message().contains("weekday `8` is not 0-7"),
        "{}",
        err.message()
    );
    Ok(())
}

#[test]
fn a_cron_that_never_fires_is_refused_where_the_host_is_built() -> anyhow::Result<()> {
    let now = Utc.with_ymd_and_hms(2026, 3, 1, 12, 0, 0).unwrap();
    for text in ["0 0 30 2 *", "0 0 31 4 *", "0 0 0 1 1 * 2000"] {
        let err = Schedule::cron(text)?.check_fires(now).expect_err(text);
        assert_eq!(err.kind(), ErrorKind::Config);
        assert!(err.message().contains("never fires"), "{}", err.message());
    }
    // February 29th fires within four years; a plain schedule always.
    Schedule::cron("0 0 29 2 *")?.check_fires(now)?;
    Schedule::cron("*/5 * * * *")?.check_fires(now)?;

    let e = koan::Host::builder()
        .service::<Feb30>()
        .build()
        .expect_err("never fires");
    assert!(
        e.message().contains("Feb30") && e.message().contains("never fires"),
        "{e}"
    );
    Ok(())
}

#[koan::service(cron = "0 0 30 2 *", discover = false)]
#[derive(Default)]
struct Feb30;

impl koan::PeriodicService for Feb30 {
    async fn tick(&self, _cx: koan::ServiceContext) -> Result<(), koan::BoxError> {
        Ok(())
    }
}

#[test]
fn an_interval_longer_than_ten_years_is_refused() -> koan::Result<()> {
    Schedule::every(koan::schedule::MAX_PERIOD)?;
    for err in [
        Schedule::every(koan::schedule::MAX_PERIOD + Duration::from_secs(1)).expect_err("long"),
        Schedule::parse_every("100000000000d").expect_err("long"),
    ] {
        assert_eq!(err.kind(), ErrorKind::Config);
        assert!(
            err.message().contains("at most 10 years") && err.message().contains("cron"),
            "{}",
            err.message()
        );
    }
    Ok(())
}

/// The longest interval, first run after a delay of thousands of years: its status
/// says when (the calendar's end), where a status query panicked before (a wall time
/// past chrono's range, seen in a probe with `every = "100000000000d"`).
#[koan::service(every = "3650d", initial_delay = "100000000d", discover = false)]
#[derive(Default)]
struct Rare;

impl koan::PeriodicService for Rare {
    async fn tick(&self, _cx: koan::ServiceContext) -> Result<(), koan::BoxError> {
        Ok(())
    }
}

#[tokio::test]
async fn a_run_far_off_has_a_status_that_says_when() -> anyhow::Result<()> {
    let host = koan::Host::builder().service::<Rare>().build()?.start();
    host.started().await?;
    let status = host.services::<Rare>().status().await?;
    assert!(
        status.next_run.is_some_and(|at| at.year() > 100_000),
        "{status:?}"
    );
    assert_eq!(host.statuses().len(), 1);
    host.shutdown();
    host.wait().await.into_result()?;
    Ok(())
}
