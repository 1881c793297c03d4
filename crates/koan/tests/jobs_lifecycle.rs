//! Jobs through the public API on the in-memory store and a paused clock: ids,
//! what handlers see, idempotency keys, retries and dead jobs, delays, cancel,
//! result caps, truthful timeouts, draining at shutdown, and fencing.

use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use koan::testing::within;
use koan::{
    ActionContext, Actions, Background, BackgroundService, BoxError, HostHandle, Service,
    ServiceContext, config::Config, error::ErrorKind, job::JobQuery, job::JobState, job::JobTicket,
};
use serde::Serialize;
use serde_json::json;
use tokio::time::Instant;

/// What `echo` ran: (job id, attempt, parameter).
type Runs = Arc<Mutex<Vec<(String, u32, u32)>>>;

#[derive(Default)]
struct Work {
    runs: Runs,
    flaky_calls: Arc<AtomicU32>,
    /// How many `wait` runs saw their token.
    stopped: Arc<AtomicU32>,
}

impl Service for Work {
    type Kind = Background;
    fn actions(a: &mut Actions<Self>) {
        a.action(
            "echo",
            |svc: Arc<Self>, n: u32, cx: ActionContext| async move {
                let job = cx.job().map(|j| j.id.clone()).unwrap_or_default();
                svc.runs.lock().expect("runs").push((job, cx.attempt(), n));
                Ok::<_, BoxError>(json!({
                    "n": n,
                    "job": cx.id(),
                    "attempt": cx.attempt(),
                    "key": cx.job().and_then(|j| j.idempotency_key.clone()),
                }))
            },
        );
        // Fails until its third call.
        a.action(
            "flaky",
            |svc: Arc<Self>, (): (), _cx: ActionContext| async move {
                let n = svc.flaky_calls.fetch_add(1, Ordering::SeqCst) + 1;
                if n < 3 {
                    return Err(BoxError::from(format!("call {n} fails")));
                }
                Ok(n)
            },
        )
        .max_attempts(2)
        .backoff(Duration::from_secs(10));
        a.action(
            "big",
            |_svc: Arc<Self>, n: usize, _cx: ActionContext| async move {
                Ok::<_, BoxError>("x".repeat(n))
            },
        );
        // Waits for its token, then says so.
        a.action(
            "wait",
            |svc: Arc<Self>, (): (), cx: ActionContext| async move {
                cx.cancelled().await;
                svc.stopped.fetch_add(1, Ordering::SeqCst);
                Ok::<_, BoxError>("stopped")
            },
        );
        // Waits for its token, then fails: its work not done.
        a.action(
            "hold",
            |_svc: Arc<Self>, (): (), cx: ActionContext| async move {
                cx.cancelled().await;
                Err::<(), BoxError>("stopped before its work was done".into())
            },
        );
        // Ignores its token, but finishes half a second after its deadline.
        a.action(
            "late",
            |_svc: Arc<Self>, ms: u64, _cx: ActionContext| async move {
                tokio::time::sleep(Duration::from_millis(ms)).await;
                Ok::<_, BoxError>("finished late")
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

async fn start_with(work: Work, config: &str) -> anyhow::Result<HostHandle> {
    let config = Config::builder().toml("test.toml", config)?.build();
    let host = koan::testing::host()
        .config(config)
        .instance(work)
        .build()?
        .start();
    host.started().await?;
    Ok(host)
}

async fn start(work: Work) -> anyhow::Result<HostHandle> {
    start_with(work, "").await
}

/// Starts `Work`, and returns what its `echo` runs too.
async fn start_echoing() -> anyhow::Result<(HostHandle, Runs)> {
    let work = Work::default();
    let runs = Arc::clone(&work.runs);
    Ok((start(work).await?, runs))
}

/// Enqueues `Work`'s `action` with `params` as a job.
async fn enqueue<P: Serialize + Send + 'static>(
    host: &HostHandle,
    action: &str,
    params: P,
) -> koan::Result<JobTicket> {
    host.service("Work").action(action, params).enqueue().await
}

/// Enqueues `Work`'s `late`, which takes `ms`, with a deadline of one second.
async fn late_by(host: &HostHandle, ms: u64) -> koan::Result<JobTicket> {
    let late = host.service("Work").action("late", ms);
    late.timeout(Duration::from_secs(1)).enqueue().await
}

/// Stops the host, as the last step of a test.
async fn stop(host: &HostHandle) -> anyhow::Result<()> {
    Ok(koan::testing::stop(host).await?)
}

#[tokio::test(start_paused = true)]
async fn a_job_has_a_uuid_v7_id_and_its_handler_sees_id_attempt_and_key() -> anyhow::Result<()> {
    let host = start(Work::default()).await?;
    let ticket = host
        .service("Work")
        .action("echo", 7u32)
        .idempotency_key("order-7")
        .enqueue()
        .await?;
    let id = ticket.id().to_owned();
    assert!(ticket.created());
    // 8-4-4-4-12 hex digits, version 7.
    let parts: Vec<&str> = id.split('-').collect();
    assert_eq!(
        parts.iter().map(|p| p.len()).collect::<Vec<_>>(),
        [8, 4, 4, 4, 12]
    );
    assert!(parts[2].starts_with('7'), "version 7: {id}");
    let out = within("the outcome of `ticket`", ticket.outcome())
        .await?
        .json()?;
    assert_eq!(
        out,
        json!({"n": 7, "job": id, "attempt": 1, "key": "order-7"})
    );
    let record = host.jobs().get(&id).await?;
    assert_eq!(record.state, JobState::Succeeded);
    assert_eq!(record.params, json!(7));
    assert_eq!(record.idempotency_key.as_deref(), Some("order-7"));
    assert_eq!(record.history.len(), 1);
    assert!(record.history[0].finished_at.is_some());

    // Ids of two jobs share nothing guessable beyond their time prefix.
    let other = enqueue(&host, "echo", 8u32).await?;
    assert_ne!(other.id()[19..], id[19..]);
    stop(&host).await
}

#[tokio::test(start_paused = true)]
async fn the_same_idempotency_key_returns_the_first_job_and_runs_once() -> anyhow::Result<()> {
    let (host, runs) = start_echoing().await?;
    let w = host.service("Work");
    let under_k = |n: u32| w.action("echo", n).idempotency_key("k").enqueue();
    let first = under_k(1).await?;
    let again = under_k(1).await?;
    assert_eq!(first.id(), again.id());
    assert!(!again.created(), "nothing new was stored");
    assert_eq!(
        within("the outcome of `again`", again.outcome())
            .await?
            .json()?["n"],
        json!(1)
    );
    // Asked again after it ran: still the first job, still one run.
    let late = under_k(1).await?;
    assert_eq!(late.id(), first.id());
    // Another call under the same key is refused, not answered with the first job.
    let other = under_k(2)
        .await
        .expect_err("other parameters under a used key");
    assert_eq!(other.kind(), ErrorKind::JobState);
    assert!(other.message().contains(first.id()), "{other}");
    assert!(
        other.message().contains("differs: other parameters"),
        "{other}"
    );
    // One differing only in its timeout is told so (it was "other parameters").
    let timed = w
        .action("echo", 1u32)
        .timeout(std::time::Duration::from_secs(9))
        .idempotency_key("k")
        .enqueue()
        .await
        .expect_err("another timeout under a used key");
    assert!(
        timed
            .message()
            .contains("another timeout (9000 ms; the first had none)"),
        "{timed}"
    );
    koan::testing::settle().await;
    assert_eq!(runs.lock().expect("runs").len(), 1);
    stop(&host).await
}

#[tokio::test(start_paused = true)]
async fn a_failing_job_is_retried_then_dead_then_retried_by_hand() -> anyhow::Result<()> {
    let host = start(Work::default()).await?;
    let t0 = Instant::now();
    let ticket = enqueue(&host, "flaky", ()).await?;
    let id = ticket.id().to_owned();
    let e = within("the outcome of `ticket`", ticket.outcome())
        .await
        .expect_err("dead after 2 runs");
    assert_eq!(e.kind(), ErrorKind::Handler);
    assert!(e.message().contains("call 2 fails"), "{e}");
    // The second run waited for the declared backoff (10 s ± 20 %).
    let waited = t0.elapsed();
    assert!(
        waited >= Duration::from_secs(8) && waited <= Duration::from_secs(13),
        "{waited:?}"
    );
    let dead = host.jobs().get(&id).await?;
    assert_eq!(dead.state, JobState::Dead);
    assert_eq!((dead.attempts, dead.max_attempts), (2, 2));
    let listed = host
        .jobs()
        .list(JobQuery {
            state: Some(JobState::Dead),
            ..JobQuery::default()
        })
        .await?;
    assert_eq!(listed.jobs.len(), 1);

    // A retry by hand runs it once more, and this time it succeeds.
    let retried = host.jobs().retry(&id).await?;
    assert_eq!(retried.state, JobState::Queued);
    let again = koan::testing::wait_for_job(&host, &id, JobState::Succeeded).await;
    assert_eq!(again.attempts, 3);
    assert_eq!(again.result, Some(json!(3)));
    assert_eq!(again.history.len(), 3);

    // Cancelling a job that is over is refused.
    let e = host
        .jobs()
        .cancel(&id)
        .await
        .expect_err("a succeeded job cannot be cancelled");
    assert_eq!(e.kind(), ErrorKind::JobState);
    stop(&host).await
}

#[tokio::test(start_paused = true)]
async fn bad_parameters_and_unknown_actions_are_refused_before_anything_is_stored()
-> anyhow::Result<()> {
    let host = start(Work::default()).await?;
    let e = enqueue(&host, "echo", "seven")
        .await
        .expect_err("u32 expected");
    assert_eq!(e.kind(), ErrorKind::InvalidParameters);
    let e = enqueue(&host, "ecko", 1u32)
        .await
        .expect_err("no such action");
    assert_eq!(e.kind(), ErrorKind::UnknownAction);
    assert!(e.message().contains("echo"), "says what exists: {e}");
    assert!(host.jobs().list(JobQuery::default()).await?.jobs.is_empty());
    stop(&host).await
}

#[tokio::test(start_paused = true)]
async fn a_delayed_job_waits_for_its_time_and_a_cancelled_one_never_runs() -> anyhow::Result<()> {
    let (host, runs) = start_echoing().await?;
    let t0 = Instant::now();
    let delayed = |n: u32, secs: u64| {
        let echo = host.service("Work").action("echo", n);
        echo.delay(Duration::from_secs(secs)).enqueue()
    };
    let later = delayed(1, 30).await?;
    let never = delayed(2, 20).await?;
    assert_eq!(
        host.jobs().get(later.id()).await?.state,
        JobState::Scheduled
    );
    // A live job is not deleted (its waiters would never hear): cancelled first.
    let e = host.jobs().delete(never.id()).await.expect_err("live");
    assert_eq!(e.kind(), ErrorKind::JobState);
    let cancelled = host.jobs().cancel(never.id()).await?;
    assert_eq!(cancelled.state, JobState::Cancelled);
    koan::testing::advance(Duration::from_secs(29)).await;
    assert!(runs.lock().expect("runs").is_empty(), "not before its time");
    within("the outcome of `later`", later.outcome()).await?;
    assert!(t0.elapsed() >= Duration::from_secs(30));
    assert_eq!(
        runs.lock()
            .expect("runs")
            .iter()
            .map(|r| r.2)
            .collect::<Vec<_>>(),
        [1]
    );
    let never_id = never.id().to_owned();
    let e = within("the outcome of `never`", never.outcome())
        .await
        .expect_err("cancelled");
    assert_eq!(e.kind(), ErrorKind::JobState);
    // Deleting forgets it.
    host.jobs().delete(&never_id).await?;
    let e = host.jobs().get(&never_id).await.expect_err("deleted");
    assert_eq!(e.kind(), ErrorKind::UnknownJob);
    stop(&host).await
}

#[tokio::test(start_paused = true)]
async fn cancelling_a_running_job_stops_its_handler_and_its_outcome_is_not_recorded()
-> anyhow::Result<()> {
    let work = Work::default();
    let stopped = Arc::clone(&work.stopped);
    let host = start(work).await?;
    let t = enqueue(&host, "wait", ()).await?;
    let id = t.id().to_owned();
    koan::testing::wait_for_job(&host, &id, JobState::Running).await;
    host.jobs().cancel(&id).await?;
    // At once, not at the runner's next heartbeat (a third of the 30 s lease):
    // a run shorter than that would have done its work, though cancelled.
    koan::testing::settle().await;
    assert_eq!(
        stopped.load(Ordering::SeqCst),
        1,
        "its handler saw its token"
    );
    let record = host.jobs().get(&id).await?;
    assert_eq!(record.state, JobState::Cancelled);
    assert_eq!(record.result, None, "the late \"stopped\" is not recorded");
    stop(&host).await
}

#[tokio::test(start_paused = true)]
async fn results_over_the_cap_are_cut_and_flagged() -> anyhow::Result<()> {
    let host = start_with(
        Work::default(),
        "[koan.background_services.jobs]\nresult_max_bytes = 100\n",
    )
    .await?;
    let small = enqueue(&host, "big", 10usize).await?;
    let large = enqueue(&host, "big", 1000usize).await?;
    let (small_id, large_id) = (small.id().to_owned(), large.id().to_owned());
    within("the outcome of `small`", small.outcome()).await?;
    within("the outcome of `large`", large.outcome()).await?;
    let s = host.jobs().get(&small_id).await?;
    assert!(!s.result_truncated);
    assert_eq!(s.result, Some(json!("x".repeat(10))));
    let l = host.jobs().get(&large_id).await?;
    assert!(l.result_truncated);
    let kept = l.result.and_then(|v| v.as_str().map(str::len));
    assert_eq!(kept, Some(100));
    stop(&host).await
}

#[tokio::test(start_paused = true)]
async fn a_job_that_finishes_within_the_grace_after_its_deadline_is_recorded_as_it_ended()
-> anyhow::Result<()> {
    let host = start(Work::default()).await?;
    // Deadline 1 s; the handler ignores its token and ends at 1.5 s, inside the
    // 1 s grace: what really happened is a success.
    let t = late_by(&host, 1500).await?;
    let id = t.id().to_owned();
    assert_eq!(
        within("the outcome of `t`", t.outcome())
            .await?
            .value::<String>()?,
        "finished late"
    );
    let r = host.jobs().get(&id).await?;
    assert_eq!(r.state, JobState::Succeeded);
    assert_eq!(r.timeout_ms, Some(1000));

    // One that runs past the grace is dropped, and then it is a timeout (retried).
    let t = late_by(&host, 5000).await?;
    let id = t.id().to_owned();
    let r = koan::testing::wait_for_job(&host, &id, JobState::Retrying).await;
    assert_eq!(r.error.map(|e| e.error).as_deref(), Some("timeout"));
    stop(&host).await
}

#[tokio::test(start_paused = true)]
async fn without_a_durable_store_queued_jobs_run_within_the_shutdown_grace() -> anyhow::Result<()> {
    let (host, runs) = start_echoing().await?;
    assert!(!host.jobs().is_durable());
    let mut ids = Vec::new();
    for n in 0..20u32 {
        ids.push(enqueue(&host, "echo", n).await?.id().to_owned());
    }
    host.shutdown();
    koan::testing::within("the host to exit", host.wait())
        .await
        .into_result()?;
    assert_eq!(runs.lock().expect("runs").len(), 20, "every queued job ran");
    for id in ids {
        assert_eq!(host.jobs().get(&id).await?.state, JobState::Succeeded);
    }
    let e = enqueue(&host, "echo", 99u32).await.expect_err("stopped");
    assert_eq!(e.kind(), ErrorKind::ShuttingDown);
    Ok(())
}

#[tokio::test(start_paused = true)]
async fn configuration_sets_an_actions_retry_policy_and_names_unknown_actions() -> anyhow::Result<()>
{
    let host = start_with(
        Work::default(),
        "[koan.background_services.services.Work.actions.flaky]\nmax_attempts = 1\n",
    )
    .await?;
    let t = enqueue(&host, "flaky", ()).await?;
    let id = t.id().to_owned();
    within("the outcome of `t`", t.outcome())
        .await
        .expect_err("dead at once");
    let r = host.jobs().get(&id).await?;
    assert_eq!(
        (r.state, r.attempts, r.max_attempts),
        (JobState::Dead, 1, 1)
    );
    koan::testing::stop(&host).await?;

    let config = Config::builder()
        .toml(
            "test.toml",
            "[koan.background_services.services.Work.actions.flakey]\nmax_attempts = 1\n",
        )?
        .build();
    let e = koan::testing::host()
        .config(config)
        .instance(Work::default())
        .build()
        .expect_err("no action `flakey`");
    assert_eq!(e.kind(), ErrorKind::Config);
    assert!(
        e.message().contains("flakey") && e.message().contains("flaky"),
        "names what was asked and what exists: {e}"
    );
    Ok(())
}

/// A job whose run its host's stop cut short goes back to the queue where it was,
/// not behind the jobs accepted after it: its place is kept for the next start.
#[tokio::test(start_paused = true)]
async fn a_job_cut_short_by_its_hosts_stop_keeps_its_place_in_the_queue() -> anyhow::Result<()> {
    let host = start(Work::default()).await?;
    let first = enqueue(&host, "hold", ()).await?;
    koan::testing::wait_for_job(&host, first.id(), JobState::Running).await;
    koan::testing::advance(Duration::from_secs(1)).await;
    // Behind it (one run at a time).
    let second = enqueue(&host, "echo", 2u32).await?;
    let (first, second) = (first.id().to_owned(), second.id().to_owned());
    koan::testing::advance(Duration::from_secs(1)).await;
    stop(&host).await?;
    let (a, b) = (
        host.jobs().get(&first).await?,
        host.jobs().get(&second).await?,
    );
    assert_eq!(a.state, JobState::Queued, "{a:?}");
    assert_eq!(a.attempts, 0, "a stop is not an attempt: {a:?}");
    assert!(
        a.run_at < b.run_at,
        "still first: {} against {}",
        a.run_at,
        b.run_at
    );
    Ok(())
}
