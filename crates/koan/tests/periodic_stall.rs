//! A periodic run that never ends makes its service's health `degraded`, naming the
//! run, once it has gone on past its stall limit (ten periods, at least a minute, by
//! default; `stall_after` in code, the macro or the configuration). Before, a tick
//! stuck for ever left the service `running`, healthy and ready (found by a probe).
//! A tick ended by the host's stop is cut short, not failed.

use std::sync::Arc;
use std::time::Duration;

use koan::config::Config;
use koan::health::HealthStatus;
use koan::status::ServiceState;
use koan::testing::{self, within};
use koan::{BoxError, HostHandle, ServiceContext, ServiceOptions};
use tokio::sync::Semaphore;

/// Every 2 s; each tick waits for a permit the test hands out.
struct Stuck {
    gate: Arc<Semaphore>,
}

impl koan::Service for Stuck {
    type Kind = koan::Periodic;
    fn options() -> ServiceOptions {
        ServiceOptions::named("stuck").every(Duration::from_secs(2))
    }
}

impl koan::PeriodicService for Stuck {
    async fn tick(&self, _cx: ServiceContext) -> Result<(), BoxError> {
        self.gate.acquire().await?.forget();
        Ok(())
    }
}

/// The same, with its limit in the macro.
#[koan::service(every = "2s", stall_after = "5s", discover = false)]
struct Quick {
    gate: Arc<Semaphore>,
}

impl koan::PeriodicService for Quick {
    async fn tick(&self, _cx: ServiceContext) -> Result<(), BoxError> {
        self.gate.acquire().await?.forget();
        Ok(())
    }
}

async fn health_of(host: &HostHandle, name: &str) -> koan::health::ServiceHealth {
    let all = within("health", host.health()).await;
    all.services
        .into_iter()
        .find(|s| s.service == name)
        .expect("the service's report")
}

#[tokio::test(start_paused = true)]
async fn a_run_past_its_stall_limit_degrades_health_until_it_ends() -> anyhow::Result<()> {
    let gate = Arc::new(Semaphore::new(0));
    let host = testing::host()
        .instance(Stuck {
            gate: Arc::clone(&gate),
        })
        .build()?
        .start();
    within("startup", host.started()).await?;
    testing::wait_state(&host, "stuck", ServiceState::Running).await;

    // Ten periods are 20 s: the default's floor, a minute, holds.
    testing::advance(Duration::from_secs(59)).await;
    let h = health_of(&host, "stuck").await;
    assert_eq!(h.report.status, HealthStatus::Healthy, "{h:?}");

    testing::advance(Duration::from_secs(3)).await;
    let h = health_of(&host, "stuck").await;
    assert_eq!(h.report.status, HealthStatus::Degraded, "{h:?}");
    let said = h.report.description.clone().unwrap_or_default();
    assert!(said.contains("a run has not ended"), "{said}");
    assert!(said.contains("every 2s"), "{said}");
    assert!(said.contains("stall limit of 1m"), "{said}");
    let all = within("health", host.health()).await;
    assert_eq!(
        all.status,
        HealthStatus::Degraded,
        "the host's health says it"
    );

    // The run ends: healthy again at once.
    gate.add_permits(1);
    testing::wait_runs(&host, "stuck", 1).await;
    let h = health_of(&host, "stuck").await;
    assert_eq!(h.report.status, HealthStatus::Healthy, "{h:?}");
    gate.add_permits(100);
    testing::stop(&host).await?;
    Ok(())
}

#[tokio::test(start_paused = true)]
async fn the_limit_is_set_by_the_macro_and_by_the_configuration() -> anyhow::Result<()> {
    let gate = Arc::new(Semaphore::new(0));
    let config = Config::builder()
        .toml(
            "test",
            "[background_services.services.stuck]\nstall_after_seconds = 30\n",
        )?
        .build();
    let host = testing::host()
        .config(config)
        .instance(Stuck {
            gate: Arc::clone(&gate),
        })
        .instance(Quick {
            gate: Arc::clone(&gate),
        })
        .build()?
        .start();
    within("startup", host.started()).await?;
    testing::wait_state(&host, "stuck", ServiceState::Running).await;
    testing::wait_state(&host, "Quick", ServiceState::Running).await;

    testing::advance(Duration::from_secs(4)).await;
    assert_eq!(
        health_of(&host, "Quick").await.report.status,
        HealthStatus::Healthy
    );
    testing::advance(Duration::from_secs(2)).await;
    let h = health_of(&host, "Quick").await;
    assert_eq!(h.report.status, HealthStatus::Degraded, "{h:?}");
    assert!(
        h.report
            .description
            .as_deref()
            .is_some_and(|d| d.contains("stall limit of 5s")),
        "{h:?}"
    );
    assert_eq!(
        health_of(&host, "stuck").await.report.status,
        HealthStatus::Healthy
    );
    testing::advance(Duration::from_secs(25)).await;
    let h = health_of(&host, "stuck").await;
    assert_eq!(h.report.status, HealthStatus::Degraded, "{h:?}");
    assert!(
        h.report
            .description
            .as_deref()
            .is_some_and(|d| d.contains("stall limit of 30s")),
        "{h:?}"
    );
    gate.add_permits(1000);
    testing::stop(&host).await?;
    Ok(())
}

/// Every 5 s, a stall limit of 10 s; each tick takes 3 s.
#[koan::service(every = "5s", stall_after = "10s", discover = false)]
#[derive(Default)]
struct Every5;

impl koan::PeriodicService for Every5 {
    async fn tick(&self, _cx: ServiceContext) -> Result<(), BoxError> {
        tokio::time::sleep(Duration::from_secs(3)).await;
        Ok(())
    }
}

/// A process stopped for 30 s while idle: on the paused clock, time jumps while the
/// driver cannot run, and the run due at 10 s starts at 38 s. For its 3 s, health
/// said it had gone on for 28 s, past its limit: the run was measured from its due
/// time, not its start, so any pause longer than the limit made every periodic
/// service running then say it had stalled (found by a tester).
#[tokio::test(start_paused = true)]
async fn a_run_started_late_by_a_pause_has_not_stalled() -> anyhow::Result<()> {
    let host = testing::host().service::<Every5>().build()?.start();
    within("startup", host.started()).await?;
    testing::wait_until(&host, "Every5", |s| {
        s.runs == 1 && s.state == ServiceState::Idle
    })
    .await;

    tokio::time::advance(Duration::from_secs(30)).await;
    testing::settle().await;
    assert_eq!(host.status("Every5")?.state, ServiceState::Running);
    let h = health_of(&host, "Every5").await;
    assert_eq!(h.report.status, HealthStatus::Healthy, "{h:?}");
    testing::advance(Duration::from_secs(2)).await;
    assert_eq!(host.status("Every5")?.state, ServiceState::Running);
    let h = health_of(&host, "Every5").await;
    assert_eq!(h.report.status, HealthStatus::Healthy, "{h:?}");
    testing::wait_runs(&host, "Every5", 2).await;
    testing::stop(&host).await?;
    Ok(())
}

/// A run that starts late and then never ends stalls its limit after its start.
#[tokio::test(start_paused = true)]
async fn a_run_started_late_stalls_its_limit_after_it_started() -> anyhow::Result<()> {
    let gate = Arc::new(Semaphore::new(0));
    let host = testing::host()
        .instance(Quick {
            gate: Arc::clone(&gate),
        })
        .build()?
        .start();
    within("startup", host.started()).await?;
    testing::wait_state(&host, "Quick", ServiceState::Idle).await;

    // Due at 2 s, the first run starts at 30 s.
    tokio::time::advance(Duration::from_secs(30)).await;
    testing::settle().await;
    assert_eq!(host.status("Quick")?.state, ServiceState::Running);
    testing::pass(Duration::from_secs(5)).await;
    let h = health_of(&host, "Quick").await;
    assert_eq!(h.report.status, HealthStatus::Healthy, "{h:?}");
    testing::pass(Duration::from_secs(1)).await;
    let h = health_of(&host, "Quick").await;
    assert_eq!(h.report.status, HealthStatus::Degraded, "{h:?}");
    let said = h.report.description.clone().unwrap_or_default();
    assert!(said.contains("has gone on for at least 6s,"), "{said}");
    gate.add_permits(1000);
    testing::stop(&host).await?;
    Ok(())
}

/// A caller's run that began before the tick fell due holds the tick back: the run
/// has gone on past its due time from when the tick fell due, not from its start.
#[tokio::test(start_paused = true)]
async fn a_callers_run_holding_a_tick_back_is_late_from_the_tick() -> anyhow::Result<()> {
    let gate = Arc::new(Semaphore::new(0));
    let host = testing::host()
        .instance(Quick {
            gate: Arc::clone(&gate),
        })
        .build()?
        .start();
    within("startup", host.started()).await?;
    testing::wait_state(&host, "Quick", ServiceState::Idle).await;
    let due = host.status("Quick")?.next_run.expect("its first tick");

    // Begun at once, two seconds before the tick.
    let trigger = {
        let host = host.clone();
        tokio::spawn(async move { host.services::<Quick>().trigger().await })
    };
    testing::settle().await;
    assert_eq!(host.status("Quick")?.state, ServiceState::Running);
    testing::pass(Duration::from_secs(7)).await;
    let h = health_of(&host, "Quick").await;
    assert_eq!(h.report.status, HealthStatus::Healthy, "{h:?}");
    testing::pass(Duration::from_secs(1)).await;
    let h = health_of(&host, "Quick").await;
    assert_eq!(h.report.status, HealthStatus::Degraded, "{h:?}");
    let said = h.report.description.clone().unwrap_or_default();
    let at = due.to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
    assert!(said.contains(&format!("the run due at {at} ")), "{said}");
    assert!(said.contains("has gone on for at least 6s,"), "{said}");
    gate.add_permits(1000);
    within("the trigger", trigger).await??;
    testing::stop(&host).await?;
    Ok(())
}

#[test]
fn a_stall_limit_past_ten_years_is_refused() {
    let config = Config::builder()
        .toml(
            "test",
            "[background_services.services.stuck]\nstall_after_seconds = 99999999999\n",
        )
        .expect("toml")
        .build();
    let e = testing::host()
        .config(config)
        .instance(Stuck {
            gate: Arc::new(Semaphore::new(0)),
        })
        .build()
        .expect_err("out of bounds");
    assert!(e.message().contains("stall_after_seconds"), "{e}");
    assert!(e.message().contains("at most"), "{e}");
}

/// Every 2 s; each tick waits for its token and ends with an error, as code that
/// was interrupted does.
#[koan::service(every = "2s", discover = false)]
#[derive(Default)]
struct Interrupted;

impl koan::PeriodicService for Interrupted {
    async fn tick(&self, cx: ServiceContext) -> Result<(), BoxError> {
        cx.cancelled().await;
        Err("interrupted".into())
    }
}

/// A tick that ends with an error because the host stops is cut short, not a
/// failure: it counted as one, was warned, and left health degraded during the
/// shutdown (found by a probe).
#[tokio::test(start_paused = true)]
async fn a_tick_ended_by_the_hosts_stop_is_not_a_failure() -> anyhow::Result<()> {
    let host = testing::host().service::<Interrupted>().build()?.start();
    within("startup", host.started()).await?;
    testing::wait_state(&host, "Interrupted", ServiceState::Running).await;
    host.shutdown();
    within("stop", host.wait()).await.into_result()?;
    let status = host.status("Interrupted")?;
    assert_eq!((status.failures, status.runs), (0, 1), "{status:?}");
    assert_eq!(
        status.last_run.map(|r| r.outcome),
        Some(koan::status::RunOutcome::Cancelled)
    );
    Ok(())
}
