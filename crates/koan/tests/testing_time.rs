//! The paused clock as a team's own tests use it (found by a probe of such tests):
//! `testing::pass` lets time pass run by run, where `testing::advance` jumps once
//! (an hour of a 5-minute schedule was one run, and the guide's test passed only
//! because its wait moved the clock on); `testing::host_at` starts the wall clock
//! at a chosen time, so a 02:00 cron runs when the test says; and the wait helpers'
//! limit leaves room for a daily schedule.

use std::time::Duration;

use chrono::{Datelike, TimeZone, Timelike, Utc};
use koan::{BoxError, PeriodicService, ServiceContext};

#[koan::service(every = "5m", discover = false)]
#[derive(Default)]
struct Report;

impl PeriodicService for Report {
    async fn tick(&self, _cx: ServiceContext) -> Result<(), BoxError> {
        Ok(())
    }
}

#[koan::service(cron = "0 2 * * *", discover = false)]
#[derive(Default)]
struct Nightly;

impl PeriodicService for Nightly {
    async fn tick(&self, _cx: ServiceContext) -> Result<(), BoxError> {
        Ok(())
    }
}

#[tokio::test(start_paused = true)]
async fn an_hour_passed_is_every_run_and_an_hour_advanced_is_one() -> anyhow::Result<()> {
    let host = koan::testing::host().service::<Report>().build()?.start();
    host.started().await?;
    koan::testing::pass(Duration::from_secs(3605)).await;
    assert_eq!(host.status("Report")?.runs, 12, "one every 5 minutes");
    koan::testing::advance(Duration::from_secs(3600)).await;
    assert_eq!(host.status("Report")?.runs, 13, "one for the whole jump");
    koan::testing::stop(&host).await?;
    Ok(())
}

#[tokio::test(start_paused = true)]
async fn a_cron_runs_at_its_hour_from_a_chosen_start() -> anyhow::Result<()> {
    let start = Utc.with_ymd_and_hms(2026, 3, 14, 1, 59, 0).single();
    let start = start.ok_or_else(|| anyhow::anyhow!("a time"))?;
    let host = koan::testing::host_at(start)
        .service::<Nightly>()
        .build()?
        .start();
    host.started().await?;
    koan::testing::pass(Duration::from_secs(59)).await;
    assert_eq!(host.status("Nightly")?.runs, 0, "not before 02:00");
    koan::testing::pass(Duration::from_secs(2)).await;
    let status = host.status("Nightly")?;
    assert_eq!(status.runs, 1);
    let ran = status.last_run.map(|r| r.started_at);
    assert_eq!(ran.map(|t| (t.hour(), t.minute())), Some((2, 0)), "{ran:?}");
    // The next night's run, within the wait helpers' limit.
    let status = koan::testing::wait_runs(&host, "Nightly", 2).await;
    assert_eq!(status.last_run.map(|r| r.started_at.day()), Some(15));
    koan::testing::stop(&host).await?;
    Ok(())
}
