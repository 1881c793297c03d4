//! A periodic service that notes each run (`Ticker`, its schedule picked by a const
//! parameter), what it saw, and the guard that stalls a runaway schedule: shared by
//! the periodic tests.

// Each test file uses its own part of this module.
#![allow(dead_code)]

use std::sync::{Arc, Mutex};
use std::time::Duration;

use koan::testing;
use koan::{
    BoxError, Periodic, PeriodicService, Service, ServiceContext, ServiceOptions,
    service::RunReason,
};
use tokio::time::Instant;

/// More runs than any test here expects: a runaway schedule (a run at every instant).
pub(crate) const RUNAWAY: usize = 100;

/// Stalls the run that is the `runs`-th of its service when that is a runaway count.
///
/// A schedule that never moves on (a broken `next_due`) runs the service again at the
/// same instant forever: without this stall, the driver would spin without ever
/// awaiting, a paused clock would never move, and the test (with the rest of its
/// binary) would hang instead of failing. Stalled, the runtime idles, the clock jumps,
/// and the test's bounded wait or its assertion on the runs fails.
pub(crate) async fn stall_if_runaway(runs: usize) {
    if runs > RUNAWAY {
        std::future::pending::<()>().await;
    }
}

/// What a periodic service saw, shared with the test.
#[derive(Default)]
pub(crate) struct Seen {
    pub(crate) ticks: Mutex<Vec<(Instant, RunReason)>>,
}

impl Seen {
    /// Notes a run; stalls it when it is a runaway one ([`stall_if_runaway`]).
    pub(crate) async fn note(&self, cx: &ServiceContext) {
        let runs = {
            let mut ticks = self.ticks.lock().expect("ticks lock");
            ticks.push((Instant::now(), cx.reason()));
            ticks.len()
        };
        stall_if_runaway(runs).await;
    }

    /// Offsets of the ticks from `t0`.
    pub(crate) fn offsets(&self, t0: Instant) -> Vec<Duration> {
        self.ticks
            .lock()
            .expect("ticks lock")
            .iter()
            .map(|(at, _)| *at - t0)
            .collect()
    }

    pub(crate) fn reasons(&self) -> Vec<RunReason> {
        self.ticks
            .lock()
            .expect("ticks lock")
            .iter()
            .map(|(_, r)| *r)
            .collect()
    }
}

pub(crate) fn secs(values: &[u64]) -> Vec<Duration> {
    values.iter().map(|s| Duration::from_secs(*s)).collect()
}

/// Asserts that each offset matches the expected one to the millisecond the timer
/// wheel rounds to.
pub(crate) fn assert_offsets(actual: &[Duration], expected: &[Duration]) {
    assert_eq!(
        actual.len(),
        expected.len(),
        "runs at {actual:?}, expected {expected:?}"
    );
    for (a, e) in actual.iter().zip(expected) {
        assert!(
            *a >= *e && *a <= *e + Duration::from_millis(5),
            "runs at {actual:?}, expected {expected:?}"
        );
    }
}

/// A periodic service that notes each tick. `OPTS` picks its schedule.
pub(crate) struct Ticker<const OPTS: u8> {
    pub(crate) seen: Arc<Seen>,
}

impl<const OPTS: u8> Service for Ticker<OPTS> {
    type Kind = Periodic;
    fn options() -> ServiceOptions {
        let base = ServiceOptions::named("ticker");
        match OPTS {
            // Every 10 s, first run after a 5 s delay plus one period.
            0 => base
                .every(Duration::from_secs(10))
                .initial_delay(Duration::from_secs(5)),
            // Every 10 s, first run right after the 5 s delay.
            1 => base
                .every(Duration::from_secs(10))
                .initial_delay(Duration::from_secs(5))
                .run_on_startup(true),
            // Every hour, first run at start.
            2 => base.every(Duration::from_secs(3600)).run_on_startup(true),
            // Every 10 s.
            3 => base.every(Duration::from_secs(10)),
            // Every 10 s on the wall clock's seconds.
            4 => base.cron("*/10 * * * * *"),
            // Every hour.
            _ => base.every(Duration::from_secs(3600)),
        }
    }
}

/// A host running `Ticker::<OPTS>`, started now: the host, the ticker's runs, and
/// the moment it started (the origin of the runs' offsets).
pub(crate) fn start_ticker<const OPTS: u8>()
-> anyhow::Result<(koan::HostHandle, Arc<Seen>, Instant)> {
    let seen = Arc::new(Seen::default());
    let t0 = Instant::now();
    let ticker = Ticker::<OPTS> {
        seen: Arc::clone(&seen),
    };
    let host = testing::host().instance(ticker).build()?.start();
    Ok((host, seen, t0))
}

impl<const OPTS: u8> PeriodicService for Ticker<OPTS> {
    async fn tick(&self, cx: ServiceContext) -> Result<(), BoxError> {
        self.seen.note(&cx).await;
        Ok(())
    }
}

/// The offsets of the first `n` runs of `Ticker::<OPTS>` from its start, and their
/// reasons.
pub(crate) async fn first_runs<const OPTS: u8>(
    n: u64,
) -> anyhow::Result<(Vec<Duration>, Vec<RunReason>)> {
    let (host, seen, t0) = start_ticker::<OPTS>()?;
    let status = testing::wait_runs(&host, "ticker", n).await;
    assert_eq!(status.runs, n);
    let runs = (seen.offsets(t0), seen.reasons());
    testing::stop(&host).await?;
    Ok(runs)
}
