//! Edges of the durable queue that the wider suites leave open (found by mutation
//! testing, issue 22): the work consumer keeps the configured delivery limits, a
//! job that no attempt can fix is dead-lettered at its first attempt, and a job
//! redelivered after its outcome was recorded is not run again, and a job's
//! deadline travels with it.

use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use async_nats::HeaderMap;
use async_nats::jetstream::AckKind;
use async_nats::jetstream::consumer::{AckPolicy, pull};
use futures_util::StreamExt;
use koan::{
    ActionContext, Actions, Background, BackgroundService, BoxError, Service, ServiceContext,
    ServiceOptions, error::ErrorKind, job::JobState, transport::Transport,
};
use koan_test_support::nats::{Member, NatsServer, test_options};
use koan_test_support::{eventually, wait_for, within};

/// Counts the runs of `add`.
#[derive(Default)]
struct Counter {
    runs: Arc<AtomicU32>,
}

impl Service for Counter {
    type Kind = Background;

    fn options() -> ServiceOptions {
        ServiceOptions::named("Counter")
    }

    fn actions(a: &mut Actions<Self>) {
        a.action(
            "add",
            |svc: Arc<Self>, n: u32, _cx: ActionContext| async move {
                svc.runs.fetch_add(1, Ordering::SeqCst);
                Ok::<_, BoxError>(n + 1)
            },
        );
    }
}

impl BackgroundService for Counter {
    async fn run(&self, cx: ServiceContext) -> Result<(), BoxError> {
        cx.cancelled().await;
        Ok(())
    }
}

/// A server, a worker running `Counter` (its runs counted) and a client beside it.
async fn counting_cluster() -> anyhow::Result<(NatsServer, Arc<AtomicU32>, Member, Member)> {
    let server = NatsServer::start()?;
    let opts = test_options(&server.url());
    let runs = Arc::new(AtomicU32::new(0));
    let counter = Counter {
        runs: Arc::clone(&runs),
    };
    let (worker, member) =
        Member::worker_and_client(opts, "Counter", |b| b.instance(counter)).await?;
    Ok((server, runs, worker, member))
}

/// The consumer of a service's durable work is made with the options' `max_deliver`
/// and `ack_wait` (not the server's defaults: unlimited deliveries, 30 s), explicit
/// acks, and a filter on that service's subjects.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_work_consumer_keeps_the_configured_delivery_limits() -> anyhow::Result<()> {
    let server = NatsServer::start()?;
    let mut opts = test_options(&server.url());
    opts.max_deliver = 4;
    opts.ack_wait = Duration::from_secs(7);
    let worker = Member::join(opts, |b| b.instance(Counter::default())).await?;

    let js = async_nats::jetstream::new(worker.nats.client().clone());
    let stream = within("the work stream", js.get_stream("KOAN_WORK")).await??;
    let config = wait_for("the work consumer of `Counter`", async || {
        Ok(
            match stream
                .get_consumer::<pull::Config>("koan-work-counter")
                .await
            {
                Ok(mut c) => Some(c.info().await?.config.clone()),
                Err(_) => None,
            },
        )
    })
    .await?;
    assert_eq!(config.max_deliver, 4, "{config:?}");
    assert_eq!(config.ack_wait, Duration::from_secs(7), "{config:?}");
    assert_eq!(config.ack_policy, AckPolicy::Explicit, "{config:?}");
    // Its service's jobs only: the work stream holds every service's.
    assert_eq!(config.filter_subject, "koan.work.counter.>", "{config:?}");

    worker.stop().await?;
    Ok(())
}

/// Parameters the handler cannot take fail every attempt the same way: the job is
/// dead-lettered at its first attempt, not retried up to `max_deliver`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_job_no_attempt_can_fix_is_dead_lettered_at_once() -> anyhow::Result<()> {
    let server = NatsServer::start()?;
    let opts = test_options(&server.url());
    assert_eq!(opts.max_deliver, 3);
    let (worker, member) =
        Member::worker_and_client(opts, "Counter", |b| b.instance(Counter::default())).await?;
    let client = &member.host;

    let ticket = within(
        "enqueue",
        client
            .service("Counter")
            .action("add", "not a number")
            .enqueue(),
    )
    .await??;
    let id = ticket.id().to_owned();
    let e = within("the outcome", ticket.outcome())
        .await?
        .expect_err("u32 expected");
    assert_eq!(e.kind(), ErrorKind::InvalidParameters, "{e}");
    let record = wait_for("the record to be final", async || {
        let r = client.jobs().get(&id).await?;
        Ok(r.state.is_final().then_some(r))
    })
    .await?;
    assert_eq!(record.state, JobState::Dead, "{record:?}");
    assert_eq!(record.attempts, 1, "one attempt: {record:?}");

    member.stop().await?;
    worker.stop().await?;
    Ok(())
}

/// A job delivered again after a worker recorded its outcome (and died before its
/// ack, say) is only acknowledged: its handler does not run a second time, even for
/// an id a host made up (whose first delivery skips that look-up).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_redelivered_job_with_an_outcome_is_not_run_again() -> anyhow::Result<()> {
    let server = NatsServer::start()?;
    let opts = test_options(&server.url());
    // A member without services: it makes the streams and buckets.
    let member = Member::join(opts.clone(), |b| b).await?;
    let js = async_nats::jetstream::new(member.nats.client().clone());
    let stream = within("the work stream", js.get_stream("KOAN_WORK")).await??;
    // The work consumer, as a worker makes it.
    let consumer = within(
        "the work consumer",
        stream.get_or_create_consumer(
            "koan-work-counter",
            pull::Config {
                durable_name: Some("koan-work-counter".to_owned()),
                filter_subject: "koan.work.counter.>".to_owned(),
                ack_policy: AckPolicy::Explicit,
                max_deliver: opts.max_deliver,
                ack_wait: opts.ack_wait,
                ..Default::default()
            },
        ),
    )
    .await??;

    // The job, under an id a host made up.
    let id = koan::job::new_job_id();
    let mut h = HeaderMap::new();
    h.insert("Nats-Msg-Id", id.as_str());
    let ack = within(
        "the publish",
        js.publish_with_headers("koan.work.counter.add", h, "1".into()),
    )
    .await??;
    within("the PubAck", ack.into_future()).await??;
    // Its first delivery: the outcome recorded, the ack lost (a nak stands in).
    let mut batch = within("the pull", consumer.fetch().max_messages(1).messages()).await??;
    let first = within("the first delivery", batch.next())
        .await?
        .ok_or_else(|| anyhow::anyhow!("no delivery"))?
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    let outcomes = within("the outcomes bucket", js.get_key_value("koan_outcomes")).await??;
    let recorded = serde_json::json!({"id": id, "host": "gone", "attempts": 1, "ok": 2});
    within(
        "the outcome",
        outcomes.create(&id, serde_json::to_vec(&recorded)?.into()),
    )
    .await??;
    within("the nak", first.ack_with(AckKind::Nak(None)))
        .await?
        .map_err(|e| anyhow::anyhow!("{e}"))?;

    // A worker takes the second delivery.
    let runs = Arc::new(AtomicU32::new(0));
    let worker = Member::join(opts, |b| {
        b.instance(Counter {
            runs: Arc::clone(&runs),
        })
    })
    .await?;
    eventually("the job to be acknowledged", || {
        let js = js.clone();
        async move {
            js.get_stream("KOAN_WORK")
                .await
                .is_ok_and(|s| s.cached_info().state.messages == 0)
        }
    })
    .await?;
    assert_eq!(
        runs.load(Ordering::SeqCst),
        0,
        "the handler did not run again"
    );
    let t: &dyn Transport = &member.nats;
    let out = within("the outcome", t.outcome(&id)).await??;
    assert_eq!(out, serde_json::json!(2), "the recorded outcome stands");

    worker.stop().await?;
    member.stop().await?;
    Ok(())
}

/// A job enqueued with a timeout runs when it is taken within it (its deadline
/// travels with it); one whose deadline passed while it waited in the stream is not
/// run, and its outcome says it timed out.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_job_runs_within_its_timeout_and_not_after_its_deadline() -> anyhow::Result<()> {
    let (_server, runs, worker, member) = counting_cluster().await?;
    let client = &member.host;

    let ticket = within(
        "enqueue",
        client
            .service("Counter")
            .action("add", 1u32)
            .timeout(Duration::from_secs(60))
            .enqueue(),
    )
    .await??;
    let out = within("the outcome", ticket.outcome()).await??;
    assert_eq!(out.value::<u32>()?, 2);
    assert_eq!(runs.load(Ordering::SeqCst), 1);

    // A deadline long past (1 ms after the epoch).
    let js = async_nats::jetstream::new(member.nats.client().clone());
    let id = "late-job-1";
    let mut h = HeaderMap::new();
    h.insert("Nats-Msg-Id", id);
    h.insert("Koan-Deadline-Unix-Ms", "1");
    let t: &dyn Transport = &member.nats;
    let outcome = t.outcome(id);
    let ack = within(
        "the publish",
        js.publish_with_headers("koan.work.counter.add", h, "5".into()),
    )
    .await??;
    within("the PubAck", ack.into_future()).await??;
    let e = within("the late job's outcome", outcome)
        .await?
        .expect_err("its deadline passed");
    assert_eq!(e.kind(), ErrorKind::Timeout, "{e}");
    assert_eq!(runs.load(Ordering::SeqCst), 1, "the late job did not run");

    member.stop().await?;
    worker.stop().await?;
    Ok(())
}

/// A job for an action that the service's instances did not announce is refused
/// at its enqueue, on a host that does not run the service, with the actions they
/// did announce: it was answered with a job that was dead at its first run (a
/// front's 202; seen in a probe). An announced action, and a built-in poke by any
/// of its names, is still enqueued.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_job_for_an_action_no_instance_announced_is_refused_at_once() -> anyhow::Result<()> {
    let (_server, runs, worker, member) = counting_cluster().await?;
    let client = &member.host;

    let e = within(
        "the enqueue",
        client.service("Counter").action("ad", 1u32).enqueue(),
    )
    .await?
    .expect_err("`ad` is no action of `Counter`");
    assert_eq!(e.kind(), ErrorKind::UnknownAction, "{e}");
    assert!(
        e.message()
            .contains("service `Counter` (in another process) has no action `ad`")
            && e.message().ends_with("announced: add"),
        "{e}"
    );
    // Nor as a later step of a chain.
    let e = within(
        "the chain's enqueue",
        client
            .service("Counter")
            .action("add", 1u32)
            .action("nope", 2u32)
            .enqueue(),
    )
    .await?
    .expect_err("`nope` is no action of `Counter`");
    assert_eq!(e.kind(), ErrorKind::UnknownAction, "{e}");
    assert_eq!(runs.load(Ordering::SeqCst), 0, "nothing ran");

    // The action in another spelling is the same action.
    let ticket = within(
        "the enqueue",
        client.service("Counter").action("ADD", 1u32).enqueue(),
    )
    .await??;
    assert_eq!(
        within("the outcome", ticket.outcome())
            .await??
            .value::<u32>()?,
        2
    );

    member.stop().await?;
    worker.stop().await?;
    Ok(())
}
