//! Properties of the schedule math. Cron: the next fire time is strictly after the
//! instant asked about, matches the expression, is the `cron` crate's own next
//! occurrence, skips no matching second, and never goes back when the instant moves
//! on; the five-field form is the six-field one at second 0. Intervals, on a paused
//! clock with runs of random length: after each run the next scheduled run is
//! strictly after the run's end and at most one period later, on the service's grid
//! (`Skip`), exactly one period after the end (`Delay`), or at once when a tick was
//! missed (`CatchUpOnce`). Durations: `parse_duration` reads what it documents, and a
//! schedule's description reads back as the same schedule.

use std::collections::BTreeSet;
use std::str::FromStr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use chrono::{DateTime, TimeZone, Timelike, Utc};
use koan::schedule::{CronSchedule, MissedTickPolicy, Schedule, parse_duration};
use koan::{
    BoxError, Periodic, PeriodicService, Service, ServiceContext, ServiceOptions, config::Config,
    service::RunReason, testing,
};
use proptest::prelude::*;
use tokio::time::Instant;

/// Few cases: each interval case runs a host, each cron case scans up to a day.
const CASES: u32 = 48;

// ---- cron -----------------------------------------------------------------

/// A cron expression built from sets of seconds, minutes and hours (every day), with
/// the same rule written as a plain predicate to check the library against.
#[derive(Debug, Clone)]
struct Rule {
    seconds: BTreeSet<u32>,
    minutes: BTreeSet<u32>,
    /// `None` for `*`.
    hours: Option<BTreeSet<u32>>,
}

fn list(values: &BTreeSet<u32>) -> String {
    values
        .iter()
        .map(u32::to_string)
        .collect::<Vec<_>>()
        .join(",")
}

impl Rule {
    fn hours_field(&self) -> String {
        self.hours.as_ref().map_or_else(|| "*".to_owned(), list)
    }

    /// Six fields, seconds first.
    fn six_fields(&self) -> String {
        format!(
            "{} {} {} * * *",
            list(&self.seconds),
            list(&self.minutes),
            self.hours_field()
        )
    }

    fn matches(&self, t: DateTime<Utc>) -> bool {
        self.seconds.contains(&t.second())
            && self.minutes.contains(&t.minute())
            && self.hours.as_ref().is_none_or(|h| h.contains(&t.hour()))
    }
}

fn rule() -> impl Strategy<Value = Rule> {
    (
        prop::collection::btree_set(0u32..60, 1..4),
        prop::collection::btree_set(0u32..60, 1..4),
        prop::option::of(prop::collection::btree_set(0u32..24, 1..3)),
    )
        .prop_map(|(seconds, minutes, hours)| Rule {
            seconds,
            minutes,
            hours,
        })
}

/// An instant between 2001 and 2096, to the nanosecond.
fn instant() -> impl Strategy<Value = DateTime<Utc>> {
    (978_307_200i64..4_000_000_000, 0u32..1_000_000_000).prop_map(|(secs, nanos)| {
        Utc.timestamp_opt(secs, nanos)
            .single()
            .unwrap_or(DateTime::UNIX_EPOCH)
    })
}

fn cron_of(expression: &str) -> Result<CronSchedule, TestCaseError> {
    match Schedule::cron(expression) {
        Ok(Schedule::Cron(c)) => Ok(c),
        Ok(other) => Err(TestCaseError::fail(format!(
            "`{expression}` gave {other:?}"
        ))),
        Err(e) => Err(TestCaseError::fail(format!("`{expression}`: {e}"))),
    }
}

fn next(c: &CronSchedule, t: DateTime<Utc>) -> Result<DateTime<Utc>, TestCaseError> {
    c.next_after(t)
        .ok_or_else(|| TestCaseError::fail(format!("`{}` never fires after {t}", c.expression())))
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(CASES))]

    #[test]
    fn cron_next_is_the_first_matching_second_after_now(r in rule(), t in instant()) {
        let c = cron_of(&r.six_fields())?;
        let n = next(&c, t)?;
        prop_assert!(n > t, "{n} is not after {t} for `{}`", c.expression());
        prop_assert!(r.matches(n), "{n} does not match `{}`", c.expression());
        prop_assert_eq!(n.nanosecond(), 0);
        // No second in between matches: the schedule skips no fire time.
        let mut s = t.with_nanosecond(0).unwrap_or(t) + chrono::Duration::seconds(1);
        while s < n {
            prop_assert!(!r.matches(s), "{s} matches `{}` but {n} came first", c.expression());
            s += chrono::Duration::seconds(1);
        }
    }

    #[test]
    fn cron_next_is_the_cron_crates_own_next_occurrence(r in rule(), t in instant()) {
        let expression = r.six_fields();
        let own = cron::Schedule::from_str(&expression)
            .map_err(|e| TestCaseError::fail(format!("`{expression}`: {e}")))?;
        prop_assert_eq!(Some(next(&cron_of(&expression)?, t)?), own.after(&t).next());
    }

    #[test]
    fn cron_next_never_goes_back_as_now_moves_on(
        r in rule(),
        t in instant(),
        later in 0i64..3 * 86_400_000,
    ) {
        let c = cron_of(&r.six_fields())?;
        let t2 = t + chrono::Duration::milliseconds(later);
        prop_assert!(next(&c, t)? <= next(&c, t2)?);
    }

    #[test]
    fn five_cron_fields_are_six_at_second_zero(r in rule(), t in instant()) {
        let five = format!("{} {} * * *", list(&r.minutes), r.hours_field());
        let six = format!("0 {five}");
        prop_assert_eq!(next(&cron_of(&five)?, t)?, next(&cron_of(&six)?, t)?);
    }
}

// ---- durations ------------------------------------------------------------

proptest! {
    #![proptest_config(ProptestConfig::with_cases(CASES))]

    #[test]
    fn durations_read_as_written(h in 0u64..100, m in 0u64..60, s in 0u64..60, ms in 1u64..1000) {
        let whole = Duration::from_secs(h * 3600 + m * 60 + s);
        prop_assert_eq!(parse_duration(&format!("{h}h {m}m {s}s")).ok(), Some(whole));
        prop_assert_eq!(parse_duration(&whole.as_secs().to_string()).ok(), Some(whole));
        prop_assert_eq!(parse_duration(&format!(" {ms}ms ")).ok(), Some(Duration::from_millis(ms)));
    }

    #[test]
    fn a_description_reads_back_as_the_same_interval(ms in 1u64..400_000_000) {
        let period = Duration::from_millis(ms);
        let described = Schedule::every(period)
            .map_err(|e| TestCaseError::fail(e.to_string()))?
            .describe();
        let text = described.strip_prefix("every ").unwrap_or(&described);
        match Schedule::parse_every(text) {
            Ok(Schedule::Every(back)) => prop_assert_eq!(back, period, "`{}`", described),
            other => {
                return Err(TestCaseError::fail(format!("`{described}` read back as {other:?}")));
            }
        }
    }
}

// ---- intervals --------------------------------------------------------------

/// One run of [`Drift`]: when it started and ended, and why it ran.
#[derive(Debug, Clone, Copy)]
struct Run {
    start: Instant,
    end: Instant,
    reason: RunReason,
}

/// How long each run takes, and what the runs were.
#[derive(Debug, Default)]
struct Plan {
    lengths: Vec<Duration>,
    started: AtomicUsize,
    runs: Mutex<Vec<Run>>,
}

/// A periodic service (its period set by configuration) whose `i`th run takes
/// `lengths[i]`; `POLICY` picks the missed-tick policy.
struct Drift<const POLICY: u8> {
    plan: Arc<Plan>,
}

const fn policy(n: u8) -> MissedTickPolicy {
    match n {
        0 => MissedTickPolicy::Skip,
        1 => MissedTickPolicy::CatchUpOnce,
        _ => MissedTickPolicy::Delay,
    }
}

impl<const POLICY: u8> Service for Drift<POLICY> {
    type Kind = Periodic;
    fn options() -> ServiceOptions {
        ServiceOptions::named("drift")
            .every(Duration::from_secs(3600))
            .missed_ticks(policy(POLICY))
    }
}

impl<const POLICY: u8> PeriodicService for Drift<POLICY> {
    async fn tick(&self, cx: ServiceContext) -> Result<(), BoxError> {
        let start = Instant::now();
        let i = self.plan.started.fetch_add(1, Ordering::SeqCst);
        let length = self.plan.lengths.get(i).copied().unwrap_or_default();
        tokio::time::sleep(length).await;
        self.plan.runs.lock().map_err(|_| "poisoned")?.push(Run {
            start,
            end: Instant::now(),
            reason: cx.reason(),
        });
        Ok(())
    }
}

/// Runs `Drift<POLICY>` every `period` on a paused clock until every length in
/// `lengths` was used once, and returns its runs.
fn runs<const POLICY: u8>(period: Duration, lengths: Vec<Duration>) -> anyhow::Result<Vec<Run>> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .start_paused(true)
        .build()?;
    rt.block_on(async {
        let config = Config::builder()
            .toml(
                "schedule_property",
                &format!(
                    "[background_services.services.drift]\ninterval_seconds = {}",
                    period.as_secs()
                ),
            )?
            .build();
        let wanted = lengths.len() as u64 + 1;
        let plan = Arc::new(Plan {
            lengths,
            ..Plan::default()
        });
        let host = testing::host()
            .config(config)
            .instance(Drift::<POLICY> {
                plan: Arc::clone(&plan),
            })
            .build()?
            .start();
        testing::wait_runs(&host, "drift", wanted).await;
        testing::stop(&host).await?;
        let runs = plan.runs.lock().map_err(|_| anyhow::anyhow!("poisoned"))?;
        Ok(runs.clone())
    })
}

/// A period of 1 s to 2 min and up to five run lengths of up to three periods, none
/// a whole number of periods (a run that ends exactly on a tick is a tie the
/// properties below do not decide). A case stays well within the hour of tokio's
/// clock that `testing::wait_runs` waits.
fn period_and_lengths() -> impl Strategy<Value = (Duration, Vec<Duration>)> {
    (1u64..=120).prop_flat_map(|secs| {
        let period_ms = secs * 1000;
        (
            Just(Duration::from_secs(secs)),
            prop::collection::vec(
                (0..3 * period_ms).prop_map(move |ms| {
                    Duration::from_millis(if ms % period_ms == 0 { ms + 1 } else { ms })
                }),
                1..6,
            ),
        )
    })
}

/// `a` and `b` within the millisecond the timer wheel rounds to.
fn close(a: Instant, b: Instant) -> bool {
    let gap = if a > b { a - b } else { b - a };
    gap <= Duration::from_millis(1)
}

/// The scheduled runs, checked to be all the runs there were.
fn scheduled(runs: &[Run]) -> Result<&[Run], TestCaseError> {
    prop_assert!(
        runs.iter().all(|r| r.reason == RunReason::Scheduled),
        "{runs:?}"
    );
    prop_assert!(runs.len() >= 2, "{runs:?}");
    Ok(runs)
}

fn failed(e: anyhow::Error) -> TestCaseError {
    TestCaseError::fail(format!("{e:#}"))
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(CASES))]

    #[test]
    fn skip_runs_next_on_the_grid_after_the_end(
        (period, lengths) in period_and_lengths()
    ) {
        let all = runs::<0>(period, lengths).map_err(failed)?;
        let runs = scheduled(&all)?;
        // The first run is one period after the start: the grid's origin.
        let anchor = runs[0].start - period;
        for w in runs.windows(2) {
            let (a, b) = (w[0], w[1]);
            prop_assert!(b.start > a.end, "{b:?} is not after {a:?}");
            prop_assert!(
                b.start <= a.end + period + Duration::from_millis(1),
                "{b:?} is more than {period:?} after {a:?}"
            );
            let k = ((b.start - anchor).as_secs_f64() / period.as_secs_f64()).round() as u32;
            prop_assert!(
                close(b.start, anchor + period * k),
                "{b:?} is off the grid of {period:?} from {anchor:?}"
            );
        }
    }

    #[test]
    fn delay_runs_next_one_period_after_the_end(
        (period, lengths) in period_and_lengths()
    ) {
        let all = runs::<2>(period, lengths).map_err(failed)?;
        for w in scheduled(&all)?.windows(2) {
            let (a, b) = (w[0], w[1]);
            prop_assert!(close(b.start, a.end + period), "{b:?} is not {period:?} after {a:?}");
        }
    }

    #[test]
    fn catch_up_once_runs_a_missed_tick_at_once_then_keeps_the_grid(
        (period, lengths) in period_and_lengths()
    ) {
        let all = runs::<1>(period, lengths).map_err(failed)?;
        let anchor = all[0].start - period;
        for w in all.windows(2) {
            let (a, b) = (w[0], w[1]);
            // The first grid point after the run's start.
            let k = ((a.start - anchor).as_secs_f64() / period.as_secs_f64()).floor() as u32 + 1;
            let due = anchor + period * k;
            let expected = if due > a.end { due } else { a.end };
            prop_assert!(close(b.start, expected), "after {a:?}, {b:?} instead of {expected:?}");
            prop_assert!(b.start <= a.end + period + Duration::from_millis(1));
        }
    }
}
