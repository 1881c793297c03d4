//! The startup phase: order, one at a time, timeouts, failure handling and readiness.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use koan::host::{HostBuilder, HostExit};
use koan::testing;
use koan::{
    Background, BackgroundService, BoxError, HostHandle, Service, ServiceContext, ServiceOptions,
    Startup, StartupService, error::ErrorKind, status::RunOutcome, status::ServiceState,
};
use tokio::sync::Notify;
use tokio::time::Instant;

/// A shared, ordered record of what the services did.
#[derive(Clone, Default)]
struct Log(Arc<Mutex<Vec<String>>>);

impl Log {
    fn push(&self, entry: impl Into<String>) {
        self.0.lock().expect("log lock").push(entry.into());
    }

    fn entries(&self) -> Vec<String> {
        self.0.lock().expect("log lock").clone()
    }
}

/// A startup service that takes one second, logging when it begins and ends.
struct Step<const ORDER: i32> {
    log: Log,
}

impl<const ORDER: i32> Service for Step<ORDER> {
    type Kind = Startup;
    fn options() -> ServiceOptions {
        ServiceOptions::named(format!("step-{ORDER}")).order(ORDER)
    }
}

impl<const ORDER: i32> StartupService for Step<ORDER> {
    async fn run(&self, _cx: ServiceContext) -> Result<(), BoxError> {
        self.log.push(format!("begin:step-{ORDER}"));
        tokio::time::sleep(Duration::from_secs(1)).await;
        self.log.push(format!("end:step-{ORDER}"));
        Ok(())
    }
}

/// A background service that logs when it starts and then runs until stopped.
struct Worker {
    log: Log,
}

impl Service for Worker {
    type Kind = Background;
    fn options() -> ServiceOptions {
        ServiceOptions::named("worker")
    }
}

impl BackgroundService for Worker {
    async fn run(&self, cx: ServiceContext) -> Result<(), BoxError> {
        self.log.push("worker");
        cx.cancelled().await;
        Ok(())
    }
}

/// A startup service (order 1) that fails; `CONTINUE` is its `continue_on_failure`.
#[derive(Default)]
struct Broken<const CONTINUE: bool>;

impl<const CONTINUE: bool> Service for Broken<CONTINUE> {
    type Kind = Startup;
    fn options() -> ServiceOptions {
        ServiceOptions::named("broken")
            .order(1)
            .continue_on_failure(CONTINUE)
    }
}

impl<const CONTINUE: bool> StartupService for Broken<CONTINUE> {
    async fn run(&self, _cx: ServiceContext) -> Result<(), BoxError> {
        Err("database unreachable".into())
    }
}

/// A startup service that never finishes, with a 2 s timeout.
#[derive(Default)]
struct Hangs;

impl Service for Hangs {
    type Kind = Startup;
    fn options() -> ServiceOptions {
        ServiceOptions::named("hangs").timeout(Duration::from_secs(2))
    }
}

impl StartupService for Hangs {
    async fn run(&self, _cx: ServiceContext) -> Result<(), BoxError> {
        std::future::pending::<()>().await;
        Ok(())
    }
}

/// `builder` with the failing startup service (`continue_on_failure = CONTINUE`), a
/// later startup step and a background worker, the last two logging to `log`.
fn broken_first<const CONTINUE: bool>(builder: HostBuilder, log: &Log) -> HostBuilder {
    builder
        .service::<Broken<CONTINUE>>()
        .instance(Step::<20> { log: log.clone() })
        .instance(Worker { log: log.clone() })
}

/// Waits for the host to exit, asserts that its startup failed with `kind` and a
/// message naming each of `names`, and returns how it exited.
async fn startup_failed(host: &HostHandle, kind: ErrorKind, names: &[&str]) -> HostExit {
    let exit = testing::within("the host to exit", host.wait()).await;
    let HostExit::StartupFailed(e) = &exit else {
        panic!("expected StartupFailed, got {exit:?}");
    };
    assert_eq!(e.kind(), kind);
    assert!(
        names.iter().all(|n| e.message().contains(n)),
        "the message should name {names:?}: {}",
        e.message()
    );
    exit
}

fn assert_within(actual: Duration, expected: Duration) {
    assert!(
        actual >= expected && actual <= expected + Duration::from_millis(50),
        "expected about {expected:?}, got {actual:?}"
    );
}

#[tokio::test(start_paused = true)]
async fn startup_services_run_one_at_a_time_in_order_before_the_others() -> anyhow::Result<()> {
    let log = Log::default();
    let t0 = Instant::now();
    // Registered out of order on purpose.
    let host = testing::host()
        .instance(Step::<30> { log: log.clone() })
        .instance(Worker { log: log.clone() })
        .instance(Step::<10> { log: log.clone() })
        .instance(Step::<20> { log: log.clone() })
        .build()?
        .start();

    host.started().await?;
    testing::wait_state(&host, "worker", ServiceState::Running).await;
    assert!(
        t0.elapsed() >= Duration::from_secs(3),
        "three 1 s steps ran one after the other"
    );

    assert_eq!(
        log.entries(),
        [
            "begin:step-10",
            "end:step-10",
            "begin:step-20",
            "end:step-20",
            "begin:step-30",
            "end:step-30",
            "worker",
        ]
    );
    for name in ["step-10", "step-20", "step-30"] {
        let status = host.status(name)?;
        assert_eq!(status.state, ServiceState::Stopped, "{name}");
        assert_eq!(status.runs, 1, "{name}");
        let last = status.last_run.expect("a finished run");
        assert_eq!(last.outcome, RunOutcome::Success, "{name}");
        assert_eq!(last.duration_ms, 1000, "{name}");
    }

    testing::stop(&host).await?;
    Ok(())
}

/// A service with an action that logs its runs.
struct Called {
    log: Log,
}

impl Service for Called {
    type Kind = Background;
    fn options() -> ServiceOptions {
        ServiceOptions::named("called")
    }
    fn actions(a: &mut koan::Actions<Self>) {
        a.action(
            "mark",
            |svc: Arc<Self>, _: (), _cx: koan::ActionContext| async move {
                svc.log.push("mark");
                Ok::<_, BoxError>(())
            },
        );
    }
}

impl BackgroundService for Called {
    async fn run(&self, cx: ServiceContext) -> Result<(), BoxError> {
        cx.cancelled().await;
        Ok(())
    }
}

/// A call made while a startup service runs waits until the startup phase is
/// over, as the service's own start does: the caller ran it at once on an idle
/// service, before the migration it relied on had finished (found by a probe).
#[tokio::test(start_paused = true)]
async fn a_call_made_while_a_startup_service_runs_waits_for_it() -> anyhow::Result<()> {
    let log = Log::default();
    let host = testing::host()
        .instance(Step::<10> { log: log.clone() })
        .instance(Called { log: log.clone() })
        .build()?
        .start();
    while log.entries().is_empty() {
        tokio::task::yield_now().await;
    }
    assert_eq!(log.entries(), ["begin:step-10"]);
    testing::within(
        "the call",
        host.service("called").action("mark", ()).execute(),
    )
    .await?;
    assert_eq!(log.entries(), ["begin:step-10", "end:step-10", "mark"]);
    // Once started, a call runs at once on the caller's task, as before.
    testing::within(
        "a call",
        host.service("called").action("mark", ()).execute(),
    )
    .await?;
    testing::stop(&host).await?;
    Ok(())
}

/// A startup service that calls `called`'s `mark` (a cache warmed before the
/// host takes traffic).
struct Warms {
    log: Log,
}

impl Service for Warms {
    type Kind = Startup;
    fn options() -> ServiceOptions {
        ServiceOptions::named("warms").order(1)
    }
}

impl StartupService for Warms {
    async fn run(&self, cx: ServiceContext) -> Result<(), BoxError> {
        self.log.push("begin:warms");
        let host = cx.host().ok_or("no host")?;
        host.service("called").action("mark", ()).execute().await?;
        self.log.push("end:warms");
        Ok(())
    }
}

/// A startup service's own calls run though the services they reach have not
/// started: held until the phase ended, as outside calls are, they waited for
/// workers that start after it, until the startup timeout (found by a review).
#[tokio::test(start_paused = true)]
async fn a_startup_services_own_calls_run_during_the_phase() -> anyhow::Result<()> {
    let log = Log::default();
    let host = testing::host()
        .instance(Warms { log: log.clone() })
        .instance(Called { log: log.clone() })
        .build()?
        .start();
    host.started().await?;
    assert_eq!(log.entries(), ["begin:warms", "mark", "end:warms"]);
    testing::stop(&host).await?;
    Ok(())
}

#[tokio::test(start_paused = true)]
async fn a_hanging_startup_service_times_out_and_stops_the_host() -> anyhow::Result<()> {
    let log = Log::default();
    let t0 = Instant::now();
    let host = testing::host()
        .service::<Hangs>()
        .instance(Worker { log: log.clone() })
        .build()?
        .start();

    let err = host.started().await.expect_err("startup must fail");
    assert_eq!(err.kind(), ErrorKind::Startup);

    let exit = startup_failed(&host, ErrorKind::Timeout, &["`hangs`", "timeout of 2s"]).await;
    // Its timeout, then the action grace (1 s) it ignores its token through.
    assert_within(t0.elapsed(), Duration::from_secs(3));
    assert_eq!(exit.exit_code(), 1);
    assert!(!exit.is_success());

    let hangs = host.status("hangs")?;
    assert_eq!(hangs.state, ServiceState::Failed);
    assert_eq!(
        hangs.last_run.expect("the timed-out run").outcome,
        RunOutcome::TimedOut
    );
    // The background service never started.
    assert_eq!(host.status("worker")?.state, ServiceState::Pending);
    assert!(log.entries().is_empty());
    Ok(())
}

#[tokio::test(start_paused = true)]
async fn the_startup_phase_limit_bounds_all_startup_services() -> anyhow::Result<()> {
    let log = Log::default();
    // Each step takes 1 s and has the default 30 s timeout, but the phase may last 1.5 s.
    let host = testing::host()
        .startup_timeout(Duration::from_millis(1500))
        .instance(Step::<10> { log: log.clone() })
        .instance(Step::<20> { log: log.clone() })
        .build()?
        .start();

    let names = ["`step-20`", "startup phase limit"];
    startup_failed(&host, ErrorKind::Timeout, &names).await;
    // Cut short at 1.5 s, `step-20` ends within its action grace; startup fails.
    assert_eq!(
        log.entries(),
        [
            "begin:step-10",
            "end:step-10",
            "begin:step-20",
            "end:step-20"
        ]
    );
    Ok(())
}

#[tokio::test(start_paused = true)]
async fn continue_on_failure_lets_the_host_go_on() -> anyhow::Result<()> {
    let log = Log::default();
    let host = broken_first::<true>(testing::host(), &log).build()?.start();

    host.started().await?;
    testing::wait_state(&host, "worker", ServiceState::Running).await;

    let broken = host.status("broken")?;
    assert_eq!(broken.state, ServiceState::Failed);
    assert_eq!(broken.failures, 1);
    assert!(
        broken
            .last_error
            .as_deref()
            .is_some_and(|e| e.contains("database unreachable")),
        "{broken:?}"
    );
    assert_eq!(log.entries(), ["begin:step-20", "end:step-20", "worker"]);

    testing::stop(&host).await?;
    Ok(())
}

#[tokio::test(start_paused = true)]
async fn fail_fast_stops_the_host_before_later_services_run() -> anyhow::Result<()> {
    let log = Log::default();
    let host = broken_first::<false>(testing::host(), &log)
        .build()?
        .start();

    let names = ["`broken`", "database unreachable"];
    let exit = startup_failed(&host, ErrorKind::Startup, &names).await;
    assert_eq!(exit.exit_code(), 1);
    let err = exit
        .clone()
        .into_result()
        .expect_err("a failed startup is an error");
    assert_eq!(err.kind(), ErrorKind::Startup);

    assert_eq!(host.status("broken")?.state, ServiceState::Failed);
    let later = host.status("step-20")?;
    assert_eq!(later.state, ServiceState::Pending);
    assert_eq!(later.runs, 0);
    assert_eq!(host.status("worker")?.state, ServiceState::Pending);
    assert!(
        log.entries().is_empty(),
        "nothing else ran: {:?}",
        log.entries()
    );
    assert!(!host.is_started());
    Ok(())
}

#[tokio::test(start_paused = true)]
async fn without_global_fail_fast_a_failed_startup_service_is_skipped() -> anyhow::Result<()> {
    let log = Log::default();
    let builder = testing::host().fail_fast_on_startup_failure(false);
    let host = broken_first::<false>(builder, &log).build()?.start();

    host.started().await?;
    testing::wait_state(&host, "worker", ServiceState::Running).await;
    assert_eq!(host.status("broken")?.state, ServiceState::Failed);
    assert_eq!(log.entries(), ["begin:step-20", "end:step-20", "worker"]);
    assert!(host.exit().is_none());

    testing::stop(&host).await?;
    Ok(())
}

/// A startup service that waits until the test opens its gate.
struct Gate {
    open: Arc<Notify>,
}

impl Service for Gate {
    type Kind = Startup;
    fn options() -> ServiceOptions {
        ServiceOptions::named("gate")
    }
}

impl StartupService for Gate {
    async fn run(&self, _cx: ServiceContext) -> Result<(), BoxError> {
        self.open.notified().await;
        Ok(())
    }
}

/// A background service whose readiness the test controls.
struct Warmup {
    ready: Arc<AtomicBool>,
}

impl Service for Warmup {
    type Kind = Background;
    fn options() -> ServiceOptions {
        ServiceOptions::named("warmup")
    }
    async fn is_ready(&self) -> bool {
        self.ready.load(Ordering::SeqCst)
    }
}

impl BackgroundService for Warmup {
    async fn run(&self, cx: ServiceContext) -> Result<(), BoxError> {
        cx.cancelled().await;
        Ok(())
    }
}

#[tokio::test(start_paused = true)]
async fn readiness_waits_for_startup_and_every_is_ready() -> anyhow::Result<()> {
    let open = Arc::new(Notify::new());
    let ready = Arc::new(AtomicBool::new(false));
    let host = testing::host()
        .instance(Gate {
            open: Arc::clone(&open),
        })
        .instance(Warmup {
            ready: Arc::clone(&ready),
        })
        .build()?
        .start();

    testing::wait_state(&host, "gate", ServiceState::Running).await;
    let r = host.ready().await;
    assert!(!r.ready);
    assert!(
        r.reasons.iter().any(|x| x.contains("startup is not done")),
        "{r:?}"
    );
    assert!(!host.is_started());

    open.notify_one();
    host.started().await?;
    testing::wait_state(&host, "warmup", ServiceState::Running).await;
    let r = host.ready().await;
    assert!(!r.ready);
    assert_eq!(r.reasons, ["service `warmup` is not ready"]);

    ready.store(true, Ordering::SeqCst);
    let r = host.ready().await;
    assert!(r.ready, "{r:?}");
    assert!(r.reasons.is_empty());
    assert!(host.live().await);

    host.shutdown();
    let r = host.ready().await;
    assert!(!r.ready);
    assert!(
        r.reasons.iter().any(|x| x.contains("shutting down")),
        "{r:?}"
    );
    assert!(
        koan::testing::within("the host to exit", host.wait())
            .await
            .is_success()
    );
    Ok(())
}
