//! Delayed jobs in a cluster: `.delay()` / `.at()` keep the job in JetStream (the
//! `KOAN_DELAYED` stream) until it is due — not in the accepting host's store — so
//! it runs once, not before its time, on any instance that remains.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use chrono::{DateTime, Utc};
use koan::action::ActionRequest;
use koan::job::JobTicket;
use koan::{
    ActionContext, Actions, Background, BackgroundService, BoxError, Service, ServiceContext,
    ServiceOptions, error::ErrorKind, job::JobRecord, job::JobState,
};
use koan_test_support::nats::{Member, NatsServer, announced, test_options};
use koan_test_support::{wait_for, within};

/// When each job ran, by job id, shared by every instance in the test.
type Runs = Arc<Mutex<BTreeMap<String, Vec<DateTime<Utc>>>>>;

struct Clock {
    runs: Runs,
}

impl Service for Clock {
    type Kind = Background;

    fn options() -> ServiceOptions {
        ServiceOptions::named("Clock").max_concurrency(4)
    }

    fn actions(a: &mut Actions<Self>) {
        a.action(
            "stamp",
            |svc: Arc<Self>, (): (), cx: ActionContext| async move {
                let id = cx.job().map(|j| j.id.clone()).unwrap_or_default();
                if let Ok(mut m) = svc.runs.lock() {
                    m.entry(id).or_default().push(Utc::now());
                }
                Ok::<_, BoxError>(())
            },
        );
    }
}

impl BackgroundService for Clock {
    async fn run(&self, cx: ServiceContext) -> Result<(), BoxError> {
        cx.cancelled().await;
        Ok(())
    }
}

fn runs_of(runs: &Runs, id: &str) -> Vec<DateTime<Utc>> {
    runs.lock()
        .map(|m| m.get(id).cloned().unwrap_or_default())
        .unwrap_or_default()
}

async fn record_in(m: &Member, id: &str, state: JobState) -> anyhow::Result<JobRecord> {
    wait_for(&format!("job {id} to be {state}"), async || {
        let r = m.host.jobs().get(id).await?;
        Ok((r.state == state).then_some(r))
    })
    .await
}

/// A worker running `Clock` and a client, and the clock's runs.
async fn clock_and_client(server: &NatsServer) -> anyhow::Result<(Member, Member, Runs)> {
    let runs = Runs::default();
    let clock = Clock {
        runs: Arc::clone(&runs),
    };
    let opts = test_options(&server.url());
    let (worker, client) = Member::worker_and_client(opts, "Clock", |b| b.instance(clock)).await?;
    Ok((worker, client, runs))
}

/// Enqueues `stamp` for `Clock` from `m`, to run as `when` says.
async fn stamp(
    m: &Member,
    when: impl FnOnce(ActionRequest) -> ActionRequest,
) -> anyhow::Result<JobTicket> {
    let request = when(m.host.service("Clock").action("stamp", ()));
    Ok(within("enqueue", request.enqueue()).await??)
}

/// Cancels the job of `ticket` from `m`, whose waiter is then told so; its id.
async fn cancel_and_hear(m: &Member, ticket: JobTicket) -> anyhow::Result<String> {
    let id = ticket.id().to_owned();
    let cancelled = within("cancel", m.host.jobs().cancel(&id)).await??;
    assert_eq!(cancelled.state, JobState::Cancelled);
    let e = within("the outcome", ticket.outcome())
        .await?
        .expect_err("cancelled");
    assert!(koan::job::is_cancelled(&e), "{e}");
    Ok(id)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_delayed_job_outlives_the_host_that_accepted_it() -> anyhow::Result<()> {
    let server = NatsServer::start()?;
    let opts = test_options(&server.url());
    let runs = Runs::default();
    let clock = |runs: &Runs| Clock {
        runs: Arc::clone(runs),
    };
    let a = Member::join(opts.clone(), |b| b.instance(clock(&runs))).await?;
    let b = Member::join(opts, |b| b.instance(clock(&runs))).await?;
    announced(&b.host, "Clock", 2).await?;

    // Accepted by A, which runs the service itself.
    let ticket = stamp(&a, |r| r.delay(Duration::from_secs(2))).await?;
    let id = ticket.id().to_owned();
    // B sees it scheduled: the cluster keeps it, not A.
    let scheduled = record_in(&b, &id, JobState::Scheduled).await?;
    let due = scheduled.run_at;
    assert!(due > scheduled.created_at, "{scheduled:?}");

    // A goes away before it is due; B runs it at its time.
    a.stop().await?;
    let done = record_in(&b, &id, JobState::Succeeded).await?;
    assert_eq!(done.attempts, 1, "{done:?}");
    // Its record still says when it was due, not that it was due at once.
    assert_eq!(done.run_at, due, "{done:?}");
    let ran = runs_of(&runs, &id);
    assert_eq!(ran.len(), 1, "run once: {ran:?}");
    assert!(
        ran[0] >= due,
        "not before its time: ran {} < due {due}",
        ran[0]
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_delayed_job_for_a_service_elsewhere_runs_when_due_or_is_cancelled() -> anyhow::Result<()>
{
    let server = NatsServer::start()?;
    let (_worker, client, runs) = clock_and_client(&server).await?;

    // A job due at once first: the worker follows the cluster's cancels from then on.
    within("a job due at once", stamp(&client, |r| r).await?.outcome()).await??;
    // At a time, for a service this host does not run.
    let at = Utc::now() + chrono::Duration::milliseconds(1500);
    let ticket = stamp(&client, |r| r.at(at)).await?;
    let id = ticket.id().to_owned();
    within("the outcome", ticket.outcome()).await??;
    let ran = runs_of(&runs, &id);
    assert_eq!(ran.len(), 1, "{ran:?}");
    assert!(ran[0] >= at, "not before its time: ran {} < {at}", ran[0]);
    let done = record_in(&client, &id, JobState::Succeeded).await?;
    // Its record still says when it was due, not that it was due at once.
    assert_eq!(
        done.run_at.timestamp_millis(),
        at.timestamp_millis(),
        "{done:?}"
    );

    // Cancelled while it waits: it never runs, its waiter is told.
    let ticket = stamp(&client, |r| r.delay(Duration::from_secs(1))).await?;
    let id = cancel_and_hear(&client, ticket).await?;
    assert!(runs_of(&runs, &id).is_empty(), "never ran");
    Ok(())
}

/// Many delayed jobs due together, some cancelled while they wait (the mover
/// handles a batch's jobs several at once): each other one runs once, not before
/// its time, and no cancelled one runs.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn delayed_jobs_due_together_run_once_each_and_cancelled_ones_never() -> anyhow::Result<()> {
    let server = NatsServer::start()?;
    let (_worker, client, runs) = clock_and_client(&server).await?;
    // Far enough ahead for the enqueues and cancels on a loaded machine.
    let at = Utc::now() + chrono::Duration::milliseconds(3000);
    let mut tickets = Vec::new();
    for _ in 0..60 {
        tickets.push(stamp(&client, |r| r.at(at)).await?);
    }
    let (cancelled, kept): (Vec<_>, Vec<_>) = tickets
        .into_iter()
        .enumerate()
        .partition(|(n, _)| n % 5 == 0);
    for (_, ticket) in &cancelled {
        within("cancel", client.host.jobs().cancel(ticket.id())).await??;
    }
    for (_, ticket) in kept {
        let id = ticket.id().to_owned();
        within("the outcome", ticket.outcome()).await??;
        let ran = runs_of(&runs, &id);
        assert_eq!(ran.len(), 1, "{id}: {ran:?}");
        assert!(ran[0] >= at, "not before its time: ran {} < {at}", ran[0]);
    }
    for (_, ticket) in cancelled {
        let id = ticket.id().to_owned();
        let e = within("the outcome", ticket.outcome())
            .await?
            .expect_err("cancelled");
        assert_eq!(e.kind(), ErrorKind::JobState, "{e}");
        assert!(runs_of(&runs, &id).is_empty(), "{id} never ran");
    }
    Ok(())
}

/// A delayed job cancelled while it waits leaves `KOAN_DELAYED` at once, and
/// whoever awaits it is told then, not when it would have been due: nothing of it
/// is left for a mover to run, whatever becomes of its record and cancel's marker
/// (forgotten, say, while no instance of the cluster runs for longer than
/// `outcome_ttl`).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_delayed_job_cancelled_while_it_waits_leaves_the_stream_and_its_waiter_is_told_at_once()
-> anyhow::Result<()> {
    let server = NatsServer::start()?;
    let (_worker, client, runs) = clock_and_client(&server).await?;
    // Due after the cancel's margin for jobs perhaps in a mover's hands (5 s).
    let kept = stamp(&client, |r| r.delay(Duration::from_secs(12))).await?;
    let ticket = stamp(&client, |r| r.delay(Duration::from_secs(3600))).await?;
    let id = ticket.id().to_owned();
    let js = async_nats::jetstream::new(async_nats::connect(server.url()).await?);
    let mut delayed = js.get_stream("KOAN_DELAYED").await?;
    assert_eq!(delayed.info().await?.state.messages, 2);

    cancel_and_hear(&client, ticket).await?;
    // Only the job still to run waits.
    assert_eq!(delayed.info().await?.state.messages, 1);
    assert!(runs_of(&runs, &id).is_empty(), "never ran");

    // Nothing of it waits: it may be retried (it runs now) or deleted at once,
    // not only once it would have been due.
    let retried = within("retry", client.host.jobs().retry(&id)).await??;
    assert_eq!(retried.state, JobState::Queued, "{retried:?}");
    let done = record_in(&client, &id, JobState::Succeeded).await?;
    assert_eq!(done.attempts, 1, "{done:?}");
    assert_eq!(runs_of(&runs, &id).len(), 1, "ran once, retried");
    let dropped = stamp(&client, |r| r.delay(Duration::from_secs(3600))).await?;
    within("cancel", client.host.jobs().cancel(dropped.id())).await??;
    within("delete", client.host.jobs().delete(dropped.id())).await??;
    assert_eq!(delayed.info().await?.state.messages, 1);
    let e = within("get", client.host.jobs().get(dropped.id()))
        .await?
        .expect_err("deleted");
    assert_eq!(e.kind(), ErrorKind::UnknownJob, "{e}");
    // The job left waiting runs at its time: the others' removals did not skip it.
    let kept_id = kept.id().to_owned();
    within("the kept job's outcome", kept.outcome()).await??;
    assert_eq!(runs_of(&runs, &kept_id).len(), 1);
    // (Its mover acknowledges it once moved, perhaps after it ran.)
    wait_for("the delayed stream to be empty", async || {
        Ok((delayed.info().await?.state.messages == 0).then_some(()))
    })
    .await?;
    Ok(())
}
