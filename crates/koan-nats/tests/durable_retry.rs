//! Retries of the cluster's durable jobs: a failed run is retried as its action's
//! retry policy declares (as the host's own store does), and a dead job is run
//! again by hand from any instance (`jobs().retry`, `retry_all_dead`) — once.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::time::Duration;

use koan::{
    ActionContext, Actions, Background, BackgroundService, BoxError, Service, ServiceContext,
    ServiceOptions, error::ErrorKind, job::JobQuery, job::JobRecord, job::JobState, job::RetryFrom,
};
use koan_test_support::nats::{Member, NatsServer, test_options};
use koan_test_support::{eventually, wait_for, within};

/// Runs of each action; `mended` makes `until_mended` succeed.
#[derive(Default)]
struct Flaky {
    once: AtomicU32,
    twice: AtomicU32,
    until_mended: AtomicU32,
    mended: AtomicBool,
}

impl Service for Flaky {
    type Kind = Background;

    fn options() -> ServiceOptions {
        ServiceOptions::named("Flaky").max_concurrency(4)
    }

    fn actions(a: &mut Actions<Self>) {
        a.action(
            "once",
            |svc: Arc<Self>, (): (), _cx: ActionContext| async move {
                svc.once.fetch_add(1, Ordering::SeqCst);
                Err::<(), BoxError>("broken".into())
            },
        )
        .max_attempts(1);
        a.action(
            "twice",
            |svc: Arc<Self>, (): (), _cx: ActionContext| async move {
                svc.twice.fetch_add(1, Ordering::SeqCst);
                Err::<(), BoxError>("broken".into())
            },
        )
        .max_attempts(2)
        .backoff(Duration::from_millis(50));
        a.action(
            "until_mended",
            |svc: Arc<Self>, n: u32, cx: ActionContext| async move {
                svc.until_mended.fetch_add(1, Ordering::SeqCst);
                if !svc.mended.load(Ordering::SeqCst) {
                    return Err::<u32, BoxError>(format!("job {n} is not mended yet").into());
                }
                Ok(cx.job().map_or(0, |j| j.attempt))
            },
        )
        .max_attempts(1);
        a.action(
            "big",
            |_: Arc<Self>, (): (), _cx: ActionContext| async move {
                Ok::<String, BoxError>("x".repeat(20_000))
            },
        );
    }
}

impl BackgroundService for Flaky {
    async fn run(&self, cx: ServiceContext) -> Result<(), BoxError> {
        cx.cancelled().await;
        Ok(())
    }
}

/// A worker hosting `Flaky` and a member without it, once the worker is announced.
async fn cluster(server: &NatsServer) -> anyhow::Result<(Member, Member)> {
    let opts = test_options(&server.url());
    Member::worker_and_client(opts, "Flaky", |b| b.service::<Flaky>()).await
}

/// The record of `id` once it is in `state`.
async fn record_in(m: &Member, id: &str, state: JobState) -> anyhow::Result<JobRecord> {
    let r = wait_for(&format!("job {id} to be {state}"), async || {
        let r = m.host.jobs().get(id).await?;
        Ok((r.state == state).then_some(r))
    })
    .await;
    if r.is_err() {
        eprintln!("job {id} as it stands: {:#?}", m.host.jobs().get(id).await);
    }
    r
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_cluster_job_is_retried_as_its_action_declares() -> anyhow::Result<()> {
    let server = NatsServer::start()?;
    let (worker, client) = cluster(&server).await?;
    let flaky = worker.host.services::<Flaky>().instance()?;

    for (action, runs) in [("once", 1), ("twice", 2)] {
        let ticket = within(
            "enqueue",
            client.host.service("Flaky").action(action, ()).enqueue(),
        )
        .await??;
        let id = ticket.id().to_owned();
        let e = within("the outcome", ticket.outcome())
            .await?
            .expect_err("it never succeeds");
        assert_eq!(e.kind(), ErrorKind::Handler, "{e}");
        let dead = record_in(&client, &id, JobState::Dead).await?;
        assert_eq!(dead.attempts, runs, "{action}: {dead:?}");
        assert_eq!(dead.max_attempts, runs, "{action}: {dead:?}");
        assert_eq!(dead.history.len(), runs as usize, "{action}: {dead:?}");
    }
    // Not the transport's `max_deliver` (5): the action's own policy.
    assert_eq!(flaky.once.load(Ordering::SeqCst), 1);
    assert_eq!(flaky.twice.load(Ordering::SeqCst), 2);
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dead_cluster_job_is_retried_by_hand_from_another_host() -> anyhow::Result<()> {
    let server = NatsServer::start()?;
    let (worker, client) = cluster(&server).await?;
    let flaky = worker.host.services::<Flaky>().instance()?;
    let jobs = client.host.jobs();

    let ticket = within(
        "enqueue",
        client
            .host
            .service("Flaky")
            .action("until_mended", 7u32)
            .enqueue(),
    )
    .await??;
    let id = ticket.id().to_owned();
    let e = within("the outcome", ticket.outcome())
        .await?
        .expect_err("not mended yet");
    assert!(e.message().contains("job 7 is not mended yet"), "{e}");
    record_in(&client, &id, JobState::Dead).await?;

    flaky.mended.store(true, Ordering::SeqCst);
    let queued = within("retry", jobs.retry(&id)).await??;
    assert_eq!(queued.state, JobState::Queued, "{queued:?}");
    assert_eq!(queued.max_attempts, 2, "one run more: {queued:?}");

    let done = record_in(&client, &id, JobState::Succeeded).await?;
    assert_eq!(
        done.attempts, 2,
        "attempts go on from the first run: {done:?}"
    );
    assert_eq!(done.history.len(), 2, "{done:?}");
    assert_eq!(
        done.result,
        Some(serde_json::json!(2)),
        "the handler saw attempt 2"
    );
    // The outcome is the new run's, for whoever reads it.
    let t = client.nats.clone().into_transport();
    let outcome = within("the outcome", t.outcome(&id)).await??;
    assert_eq!(outcome, serde_json::json!(2));
    // `retry_all_dead`'s retry takes a dead job only: this one, retried and
    // succeeded since it was dead, is refused, and not run a third time.
    let refused = within("a retry of a dead job", t.retry_job(&id, RetryFrom::Dead)).await?;
    let e = refused.expect_err("it succeeded");
    assert_eq!(e.kind(), ErrorKind::JobState, "{e}");
    assert!(e.message().contains("only a job that is dead"), "{e}");
    record_in(&client, &id, JobState::Succeeded).await?;
    eventually("the retried run to be the only one more", || async {
        flaky.until_mended.load(Ordering::SeqCst) == 2
    })
    .await?;

    // A job no instance knows is unknown to every one.
    let unknown = within("retry unknown", jobs.retry("no-such-job")).await?;
    assert_eq!(
        unknown.map_err(|e| e.kind()).err(),
        Some(ErrorKind::UnknownJob)
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retry_all_dead_takes_in_the_cluster_s_dead_jobs() -> anyhow::Result<()> {
    retry_all_dead_of_a_cluster(None).await
}

/// A host whose view holds one record of the cluster's three dead jobs retries
/// all three: the others are read from the records themselves.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retry_all_dead_takes_in_dead_jobs_past_the_view_s_cap() -> anyhow::Result<()> {
    retry_all_dead_of_a_cluster(Some(1)).await
}

/// Three jobs die on the worker; `retry_all_dead` on the other host runs each once
/// more. `view_max_records`: the other host's cap on its view of the records.
async fn retry_all_dead_of_a_cluster(view_max_records: Option<usize>) -> anyhow::Result<()> {
    let server = NatsServer::start()?;
    let mut opts = test_options(&server.url());
    if let Some(cap) = view_max_records {
        opts.view_max_records = cap;
    }
    let (worker, client) =
        Member::worker_and_client(opts, "Flaky", |b| b.service::<Flaky>()).await?;
    let flaky = worker.host.services::<Flaky>().instance()?;
    let jobs = client.host.jobs();

    let mut ids = Vec::new();
    for n in 0..3u32 {
        let ticket = within(
            "enqueue",
            client
                .host
                .service("Flaky")
                .action("until_mended", n)
                .enqueue(),
        )
        .await??;
        ids.push(ticket.id().to_owned());
        let _ = within("the outcome", ticket.outcome()).await?;
    }
    for id in &ids {
        record_in(&client, id, JobState::Dead).await?;
    }
    // The listing (this host's view of the records) shows them dead: all three, or
    // as many as its cap holds, and says so.
    let dead = JobQuery {
        state: Some(JobState::Dead),
        service: Some("Flaky".into()),
        ..JobQuery::default()
    };
    let listed = view_max_records.unwrap_or(3).min(3);
    eventually("the dead jobs listed", || async {
        jobs.list(dead.clone())
            .await
            .is_ok_and(|p| p.jobs.len() == listed && p.partial == view_max_records.is_some())
    })
    .await?;

    flaky.mended.store(true, Ordering::SeqCst);
    let n = within("retry all dead", jobs.retry_all_dead(Some("Flaky"))).await??;
    assert_eq!(n, 3);
    for id in &ids {
        record_in(&client, id, JobState::Succeeded).await?;
    }
    eventually("each job run once more", || async {
        flaky.until_mended.load(Ordering::SeqCst) == 6
    })
    .await?;
    Ok(())
}

/// A deleted job's outcome is cut to a few bytes saying so: kept whole, its result
/// held its bytes of the outcomes' share, and deleting old jobs of a full cluster
/// freed no room for new ones (found by a probe). It stays under its key: a copy
/// of the job's message still in the queue (a lost ack's redelivery, a hand-back's
/// second message) finds it there and does not run (a review).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_deleted_jobs_outcome_is_cut_to_a_mark() -> anyhow::Result<()> {
    let server = NatsServer::start()?;
    let (_worker, client) = cluster(&server).await?;
    let job = client.host.service("Flaky").action("big", ()).enqueue();
    let ticket = within("enqueue", job).await??;
    let id = ticket.id().to_owned();
    within("the outcome", ticket.outcome()).await??;
    record_in(&client, &id, JobState::Succeeded).await?;
    let js = async_nats::jetstream::new(client.nats.client().clone());
    let outcomes = js
        .get_key_value("koan_outcomes")
        .await
        .map_err(|e| anyhow::anyhow!("the koan_outcomes bucket: {e}"))?;
    let whole = outcomes.get(&id).await?.map_or(0, |b| b.len());
    assert!(
        whole > 20_000,
        "the outcome holds the result: {whole} bytes"
    );
    within("delete", client.host.jobs().delete(&id)).await??;
    let mark = outcomes
        .get(&id)
        .await?
        .ok_or_else(|| anyhow::anyhow!("the outcome's key is kept"))?;
    assert!(mark.len() < 400, "{} bytes left", mark.len());
    let said = String::from_utf8_lossy(&mark);
    assert!(said.contains("was deleted since"), "{said}");
    let bytes = js
        .get_stream("KV_koan_outcomes")
        .await?
        .info()
        .await?
        .state
        .bytes;
    assert!(bytes < 2_000, "{bytes} bytes left in the outcomes' bucket");
    Ok(())
}

/// A retry and a delete of the same dead job at once, from two hosts: one wins.
/// Either the job runs again and keeps its record, or it is forgotten and does
/// not run; never both answered yes, the deleted job then run and its record
/// back with its history cut. (Before, both won for a few of a hundred.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_retry_and_a_delete_at_once_do_not_both_win() -> anyhow::Result<()> {
    const JOBS: u32 = 100;
    let server = NatsServer::start()?;
    let (worker, client) = cluster(&server).await?;
    let flaky = worker.host.services::<Flaky>().instance()?;
    let mut ids = Vec::new();
    for _ in 0..JOBS {
        let job = client.host.service("Flaky").action("once", ()).enqueue();
        let ticket = within("enqueue", job).await??;
        ids.push(ticket.id().to_owned());
        let _ = within("the outcome", ticket.outcome()).await?;
    }
    let mut retried = 0u32;
    for id in &ids {
        record_in(&client, id, JobState::Dead).await?;
        let (here, there) = (client.host.jobs(), worker.host.jobs());
        let (retry, delete) = tokio::join!(here.retry(id), there.delete(id));
        assert!(
            retry.is_err() || delete.is_err(),
            "{id}: both won: {retry:?}"
        );
        if retry.is_ok() {
            retried += 1;
            let dead = record_in(&client, id, JobState::Dead).await?;
            assert_eq!(dead.attempts, 2, "{dead:?}");
            assert_eq!(dead.history.len(), 2, "its history kept: {dead:?}");
        } else {
            let e = within("get", client.host.jobs().get(id))
                .await?
                .expect_err("deleted");
            assert_eq!(e.kind(), ErrorKind::UnknownJob, "{id}: {e}");
        }
    }
    eventually("the retried jobs to have run", || async {
        flaky.once.load(Ordering::SeqCst) == JOBS + retried
    })
    .await?;
    Ok(())
}
