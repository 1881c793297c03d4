//! A cancel racing a run's end, on the host's own store and a paused clock.
//!
//! A cancel that reached the store after the handler had returned but before its
//! outcome was written answered "cancelled", and the job's result was lost though
//! its work was done (a probe: 9 of 60 cancels sent as runs ended). It now waits for
//! that outcome and says the job already ended. And a cancelled run whose handler
//! takes a while to stop, retried at once, ran beside its own retry (the runner let
//! go of it at the cancel, the handler still running). A handler ended at its
//! token by a cancel is counted `cancelled`, not a handler's failure.

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use chrono::{DateTime, Utc};
use common::store::{Twist, Twisted};
use koan::error::ErrorKind;
use koan::job::{Claim, Finish, JobState, JobStore, MemoryJobStore};
use koan::testing::{settle, wait_for_job, within};
use koan::transport::BoxFuture;
use koan::{ActionContext, Actions, Background, BackgroundService, BoxError, Service};
use koan::{HostHandle, ServiceContext};
use tokio::sync::Notify;

/// What the in-memory store changes here: its `finish` can be held (it says it
/// was reached, then waits to be let through), and it may say it is durable (the
/// host then halts its runs at a stop, before its services stop, and keeps its
/// queued jobs for the next start).
#[derive(Default)]
struct Held {
    hold: std::sync::atomic::AtomicBool,
    reached: Notify,
    through: Notify,
    durable: bool,
}

impl Twist for Held {
    fn durable(&self) -> bool {
        self.durable
    }
    fn finish<'a>(
        &'a self,
        inner: &'a MemoryJobStore,
        claim: &Claim,
        how: Finish,
        now: DateTime<Utc>,
    ) -> BoxFuture<'a, koan::Result<bool>> {
        let claim = claim.clone();
        Box::pin(async move {
            if self.hold.swap(false, Ordering::SeqCst) {
                self.reached.notify_one();
                self.through.notified().await;
            }
            inner.finish(&claim, how, now).await
        })
    }
}

/// The in-memory store with [`Held`].
type HeldFinish = Twisted<Held>;

/// A new such store.
fn held() -> Arc<HeldFinish> {
    Twisted::new(Held::default())
}

/// `quick` answers 7 at once; `slow` runs ten seconds whatever its token says,
/// counting the runs under way and the most at once.
#[derive(Default)]
struct Work {
    now: AtomicU32,
    most: Arc<AtomicU32>,
}

impl Service for Work {
    type Kind = Background;
    fn options() -> koan::ServiceOptions {
        koan::ServiceOptions::named("Work").max_concurrency(2)
    }
    fn actions(a: &mut Actions<Self>) {
        a.action("quick", |_: Arc<Self>, (): (), _: ActionContext| async {
            Ok::<u32, BoxError>(7)
        });
        // Ignores its token: ends only after a day.
        a.action(
            "stubborn",
            |svc: Arc<Self>, (): (), _: ActionContext| async move {
                let now = svc.now.fetch_add(1, Ordering::SeqCst) + 1;
                svc.most.fetch_max(now, Ordering::SeqCst);
                tokio::time::sleep(Duration::from_secs(86_400)).await;
                Ok::<(), BoxError>(())
            },
        );
        a.action(
            "stops",
            |_: Arc<Self>, (): (), cx: ActionContext| async move {
                cx.cancelled().await;
                Err::<(), BoxError>("stopped before it was stored".into())
            },
        );
        a.action(
            "slow",
            |svc: Arc<Self>, (): (), _: ActionContext| async move {
                let now = svc.now.fetch_add(1, Ordering::SeqCst) + 1;
                svc.most.fetch_max(now, Ordering::SeqCst);
                tokio::time::sleep(Duration::from_secs(10)).await;
                svc.now.fetch_sub(1, Ordering::SeqCst);
                Ok::<u32, BoxError>(now)
            },
        );
    }
}

impl BackgroundService for Work {
    async fn run(&self, cx: ServiceContext) -> Result<(), BoxError> {
        cx.cancelled().await;
        Ok(())
    }
}

/// One action at a time: `hold` waits until let go; `count` counts its runs.
#[derive(Default)]
struct One {
    go: Arc<Notify>,
    counted: Arc<AtomicU32>,
}

impl Service for One {
    type Kind = Background;
    fn options() -> koan::ServiceOptions {
        koan::ServiceOptions::named("One")
    }
    fn actions(a: &mut Actions<Self>) {
        a.action(
            "hold",
            |svc: Arc<Self>, (): (), _: ActionContext| async move {
                svc.go.notified().await;
                Ok::<(), BoxError>(())
            },
        );
        a.action(
            "count",
            |svc: Arc<Self>, (): (), _: ActionContext| async move {
                Ok::<u32, BoxError>(svc.counted.fetch_add(1, Ordering::SeqCst) + 1)
            },
        );
    }
}

impl BackgroundService for One {
    async fn run(&self, cx: ServiceContext) -> Result<(), BoxError> {
        cx.cancelled().await;
        Ok(())
    }
}

async fn start(store: Arc<HeldFinish>, work: Work) -> anyhow::Result<HostHandle> {
    let host = koan::testing::host()
        .job_store(store)
        .instance(work)
        .instance(One::default())
        .build()?
        .start();
    host.started().await?;
    Ok(host)
}

#[tokio::test(start_paused = true)]
async fn a_cancel_reaching_a_run_whose_handler_returned_leaves_its_success() -> anyhow::Result<()> {
    let store = held();
    store.twist.hold.store(true, Ordering::SeqCst);
    let host = start(Arc::clone(&store), Work::default()).await?;
    let ticket = host.service("Work").action("quick", ()).enqueue().await?;
    let id = ticket.id().to_owned();
    // The handler returned 7; its outcome is on its way to the store.
    within(
        "the run's outcome to reach the store",
        store.twist.reached.notified(),
    )
    .await;
    let cancelling = tokio::spawn({
        let host = host.clone();
        let id = id.clone();
        async move { host.jobs().cancel(&id).await }
    });
    settle().await;
    store.twist.through.notify_one();
    let e = within("the cancel's answer", cancelling)
        .await?
        .expect_err("the job ended before the cancel");
    assert_eq!(e.kind(), ErrorKind::JobState, "{e}");
    assert!(e.to_string().contains("succeeded"), "{e}");
    let record = host.jobs().get(&id).await?;
    assert_eq!(record.state, JobState::Succeeded);
    assert_eq!(record.result, Some(serde_json::json!(7)));
    let outcome = within("the ticket's outcome", ticket.outcome()).await?;
    assert_eq!(outcome.value::<u32>()?, 7);
    Ok(koan::testing::stop(&host).await?)
}

#[tokio::test(start_paused = true)]
async fn a_cancelled_run_still_stopping_does_not_run_beside_its_retry() -> anyhow::Result<()> {
    let store = held();
    let work = Work::default();
    let most = Arc::clone(&work.most);
    let host = start(store, work).await?;
    let ticket = host.service("Work").action("slow", ()).enqueue().await?;
    let id = ticket.id().to_owned();
    wait_for_job(&host, &id, JobState::Running).await;
    host.jobs().cancel(&id).await?;
    host.jobs().retry(&id).await?;
    let record = wait_for_job(&host, &id, JobState::Succeeded).await;
    assert_eq!(most.load(Ordering::SeqCst), 1, "one run at a time");
    assert_eq!(record.attempts, 2);
    Ok(koan::testing::stop(&host).await?)
}

#[tokio::test(start_paused = true)]
async fn a_job_cancelled_while_its_call_waits_in_the_mailbox_never_starts() -> anyhow::Result<()> {
    let (host, go, counted, holding, id) = count_behind_hold(held()).await?;
    wait_for_job(&host, &id, JobState::Running).await;
    host.jobs().cancel(&id).await?;
    go.notify_one();
    within("`hold`", holding).await??;
    settle().await;
    assert_eq!(
        counted.load(Ordering::SeqCst),
        0,
        "a cancelled job never started"
    );
    assert_eq!(host.jobs().get(&id).await?.state, JobState::Cancelled);
    Ok(koan::testing::stop(&host).await?)
}

#[tokio::test(start_paused = true)]
async fn a_handler_ended_by_a_cancel_is_counted_cancelled_not_failed() -> anyhow::Result<()> {
    let counters = koan::testing::Counters::default();
    let _recorder = metrics::set_default_local_recorder(&counters);
    let host = start(held(), Work::default()).await?;
    let ticket = host.service("Work").action("stops", ()).enqueue().await?;
    let id = ticket.id().to_owned();
    wait_for_job(&host, &id, JobState::Running).await;
    host.jobs().cancel(&id).await?;
    settle().await;
    let count = |outcome| {
        counters.get(
            "koan_actions_total",
            &[
                ("action", "stops"),
                ("outcome", outcome),
                ("service", "Work"),
            ],
        )
    };
    assert_eq!((count("cancelled"), count("handler_error")), (1, 0));
    assert_eq!(host.jobs().get(&id).await?.state, JobState::Cancelled);
    Ok(koan::testing::stop(&host).await?)
}

/// A cancelled run whose handler ignores its token is waited for up to a lease,
/// not for ever; its retry, cancelled while it waits for that run, never starts.
/// (Waited for without a bound, it held its runner slot for good, and its retry
/// sat `running` with nothing to run it; found by a review.)
#[tokio::test(start_paused = true)]
async fn a_cancelled_run_that_never_stops_holds_nothing_for_good() -> anyhow::Result<()> {
    let work = Work::default();
    let most = Arc::clone(&work.most);
    let host = start(held(), work).await?;
    let ticket = host
        .service("Work")
        .action("stubborn", ())
        .enqueue()
        .await?;
    let id = ticket.id().to_owned();
    wait_for_job(&host, &id, JobState::Running).await;
    host.jobs().cancel(&id).await?;
    host.jobs().retry(&id).await?;
    wait_for_job(&host, &id, JobState::Running).await;
    // The retry's run waits for the first; cancelled, it never starts.
    let record = host.jobs().cancel(&id).await?;
    assert_eq!(record.state, JobState::Cancelled);
    settle().await;
    assert_eq!(most.load(Ordering::SeqCst), 1, "the retry never started");
    // The retry's slot is free at once (of two: the first holds the other until
    // a lease has passed since its cancel, 30 s), so another job runs now, not
    // when the first is let go.
    let cancelled_at = tokio::time::Instant::now();
    let quick = host.service("Work").action("quick", ()).enqueue().await?;
    let out = within("a job after them", quick.outcome()).await?;
    assert_eq!(out.value::<u32>()?, 7);
    assert!(
        cancelled_at.elapsed() < Duration::from_secs(1),
        "{:?}",
        cancelled_at.elapsed()
    );
    assert_eq!(most.load(Ordering::SeqCst), 1);
    // And once a lease has passed since its cancel, the runner lets the first
    // go: its runner slot takes a job again (a second stubborn one holding the
    // other; the first's handler, which ignores its token, may still hold a
    // worker of the service, so the job may wait there, claimed).
    let second = host
        .service("Work")
        .action("stubborn", ())
        .enqueue()
        .await?;
    wait_for_job(&host, second.id(), JobState::Running).await;
    let late = host.service("Work").action("quick", ()).enqueue().await?;
    let late = late.id().to_owned();
    within("a job claimed once the first is let go", async {
        while host.jobs().get(&late).await?.state == JobState::Queued {
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        anyhow::Ok(())
    })
    .await?;
    Ok(koan::testing::stop(&host).await?)
}

/// With a durable store, a job whose call waits in the mailbox when the host
/// stops is put back (not an attempt): its run was refused as "cancelled" and
/// counted an attempt (found by a review).
#[tokio::test(start_paused = true)]
async fn a_job_waiting_in_the_mailbox_at_a_durable_stop_is_put_back() -> anyhow::Result<()> {
    let store = Twisted::new(Held {
        durable: true,
        ..Held::default()
    });
    let (host, go, counted, holding, id) = count_behind_hold(Arc::clone(&store)).await?;
    wait_for_job(&host, &id, JobState::Running).await;
    host.shutdown();
    settle().await;
    go.notify_one();
    let _ = within("`hold`", holding).await;
    within("the host to stop", host.wait())
        .await
        .into_result()?;
    assert_eq!(counted.load(Ordering::SeqCst), 0, "not started");
    let record = store.get(&id).await?.expect("kept");
    assert_eq!(record.state, JobState::Queued, "{record:?}");
    assert_eq!(record.attempts, 0, "not an attempt: {record:?}");
    Ok(())
}

/// A started host on `store` whose service `One` has its one worker taken by a
/// `hold` call (its task returned) while a `count` job waits behind it: the host,
/// what lets `hold` go, `count`'s runs, the `hold` task and the job's id.
async fn count_behind_hold(
    store: Arc<HeldFinish>,
) -> anyhow::Result<(
    HostHandle,
    Arc<Notify>,
    Arc<AtomicU32>,
    tokio::task::JoinHandle<koan::Result<koan::action::ActionOutput>>,
    String,
)> {
    let one = One::default();
    let (go, counted) = (Arc::clone(&one.go), Arc::clone(&one.counted));
    let host = koan::testing::host()
        .job_store(store)
        .instance(Work::default())
        .instance(one)
        .build()?
        .start();
    host.started().await?;
    // `hold` takes the service's one worker; the job's run waits behind it.
    let holding = tokio::spawn({
        let host = host.clone();
        async move { host.service("One").action("hold", ()).execute().await }
    });
    settle().await;
    let ticket = host.service("One").action("count", ()).enqueue().await?;
    let id = ticket.id().to_owned();
    Ok((host, go, counted, holding, id))
}
