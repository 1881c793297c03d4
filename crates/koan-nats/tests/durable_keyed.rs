//! Enqueue options on a service in another process. An idempotency key repeated
//! past JetStream's duplicate window (which only de-duplicates publishes close
//! together): the job it names is in the cluster's records, so the repeat stores
//! nothing and answers with it, whether it ended or still runs. A delay is kept
//! by the cluster (`KOAN_DELAYED`), not run at once.

use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_nats::jetstream::{self, stream};
use koan::{
    ActionContext, Actions, Background, BackgroundService, BoxError, Service, ServiceContext,
    ServiceOptions, error::ErrorKind, job::JobState,
};
use koan_test_support::nats::{Member, NatsServer, test_options, work_messages};
use koan_test_support::{eventually, within};

struct Mailer {
    sent: Arc<AtomicU32>,
    /// The idempotency keys its handler saw.
    keys: Arc<Mutex<Vec<String>>>,
}

impl Service for Mailer {
    type Kind = Background;

    fn options() -> ServiceOptions {
        // Four runs at once: a repeat stored beside a running job would run at once.
        ServiceOptions::named("Mailer").max_concurrency(4)
    }

    fn actions(a: &mut Actions<Self>) {
        a.action(
            "send",
            |svc: Arc<Self>, order: u32, cx: ActionContext| async move {
                svc.sent.fetch_add(1, Ordering::SeqCst);
                if let (Some(key), Ok(mut keys)) = (
                    cx.job().and_then(|j| j.idempotency_key.clone()),
                    svc.keys.lock(),
                ) {
                    keys.push(key);
                }
                Ok::<_, BoxError>(order)
            },
        );
        // Sends, then waits for its token: a run still going.
        a.action(
            "send_slowly",
            |svc: Arc<Self>, order: u32, cx: ActionContext| async move {
                svc.sent.fetch_add(1, Ordering::SeqCst);
                cx.cancelled().await;
                Ok::<_, BoxError>(order)
            },
        );
    }
}

impl BackgroundService for Mailer {
    async fn run(&self, cx: ServiceContext) -> Result<(), BoxError> {
        cx.cancelled().await;
        Ok(())
    }
}

/// A worker running `Mailer` and a client that sees it, on `server`; and the count
/// of mails sent.
/// What the mailer sent, and the idempotency keys its handler saw.
type Seen = (Arc<AtomicU32>, Arc<Mutex<Vec<String>>>);

async fn mailer_and_client(server: &NatsServer) -> anyhow::Result<(Member, Member, Seen)> {
    let (sent, keys): Seen = Default::default();
    let worker = Mailer {
        sent: Arc::clone(&sent),
        keys: Arc::clone(&keys),
    };
    let opts = test_options(&server.url());
    let (w, client) = Member::worker_and_client(opts, "Mailer", |b| b.instance(worker)).await?;
    Ok((w, client, (sent, keys)))
}

/// The work stream as the hosts make it, but with the shortest duplicate window
/// (the hosts' 120 s would make the tests wait for it).
async fn short_window(server: &NatsServer) -> anyhow::Result<jetstream::Context> {
    let js = jetstream::new(async_nats::connect(server.url()).await?);
    js.create_stream(stream::Config {
        name: "KOAN_WORK".into(),
        subjects: vec!["koan.work.>".into()],
        retention: stream::RetentionPolicy::WorkQueue,
        storage: stream::StorageType::Memory,
        duplicate_window: Duration::from_millis(100),
        ..Default::default()
    })
    .await?;
    Ok(js)
}

/// Returns once the duplicate window of every message published before has
/// passed: a probe published now, then again with its id until the stream stores
/// the repeat (the probes are removed after).
async fn past_the_window(js: &jetstream::Context) -> anyhow::Result<()> {
    let probe = || async {
        let mut h = async_nats::HeaderMap::new();
        h.insert("Nats-Msg-Id", "window-probe");
        let ack = js
            .publish_with_headers("koan.work.probe.window", h, "{}".into())
            .await?
            .await?;
        anyhow::Ok(ack.duplicate)
    };
    probe().await?;
    within("the duplicate window to pass", async {
        while probe().await? {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        anyhow::Ok(())
    })
    .await??;
    let stream = js.get_stream("KOAN_WORK").await?;
    stream.purge().filter("koan.work.probe.>").await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_key_repeated_after_the_duplicate_window_does_not_run_the_job_again() -> anyhow::Result<()>
{
    let server = NatsServer::start()?;
    let js = short_window(&server).await?;
    let (_w, member, (sent, keys)) = mailer_and_client(&server).await?;
    let client = &member.host;
    let send = || {
        client
            .service("Mailer")
            .action("send", 17u32)
            .idempotency_key("order-17".to_owned())
            .enqueue()
    };

    let first = within("enqueue", send()).await??;
    let id = first.id().to_owned();
    within("the job", first.outcome()).await??;
    assert_eq!(sent.load(Ordering::SeqCst), 1);
    // The key travels with the job: its record and its handler see it.
    let record = within("the record", client.jobs().get(&id)).await??;
    assert_eq!(
        record.idempotency_key.as_deref(),
        Some("order-17"),
        "{record:?}"
    );
    assert_eq!(
        keys.lock().map(|k| k.clone()).unwrap_or_default(),
        ["order-17"],
        "the handler's cx.job()"
    );

    // Past the window, the repeat is the first job: nothing is stored.
    past_the_window(&js).await?;
    let repeat = within("a repeat past the window", send()).await??;
    assert!(!repeat.created(), "a repeat stores nothing");
    assert_eq!(repeat.id(), id);
    assert_eq!(
        within("the repeat's answer", repeat.outcome())
            .await??
            .value::<u32>()?,
        17
    );
    assert_eq!(work_messages(&js).await?, 0, "nothing was stored");
    assert_eq!(sent.load(Ordering::SeqCst), 1, "the job ran once");

    // Another call under the same key is refused, not answered with this job.
    let other = client
        .service("Mailer")
        .action("send", 99u32)
        .idempotency_key("order-17".to_owned())
        .enqueue();
    let e = within("another call under the key", other)
        .await?
        .expect_err("refused");
    assert_eq!(e.kind(), ErrorKind::JobState, "{e}");
    assert!(e.message().contains("must be the same call"), "{e}");
    assert_eq!(work_messages(&js).await?, 0, "nothing was stored");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_key_repeated_past_the_window_while_its_job_runs_does_not_run_it_beside()
-> anyhow::Result<()> {
    let server = NatsServer::start()?;
    let js = short_window(&server).await?;
    let (_w, member, (sent, _)) = mailer_and_client(&server).await?;
    let client = &member.host;
    let send = || {
        client
            .service("Mailer")
            .action("send_slowly", 18u32)
            .idempotency_key("order-18".to_owned())
            .enqueue()
    };
    let first = within("enqueue", send()).await??;
    eventually("the job to run", || async {
        sent.load(Ordering::SeqCst) == 1
    })
    .await?;

    // A client whose answer was lost repeats the call, past the window: the job
    // still runs, and the repeat is it.
    past_the_window(&js).await?;
    let repeat = within("a repeat past the window", send()).await??;
    assert!(!repeat.created(), "a repeat stores nothing");
    assert_eq!(repeat.id(), first.id());
    assert_eq!(
        work_messages(&js).await?,
        1,
        "only the running job's message: a second would run beside it"
    );
    let r = within("cancel", client.jobs().cancel(first.id())).await??;
    assert_eq!(r.state, JobState::Cancelled, "{r:?}");
    assert_eq!(sent.load(Ordering::SeqCst), 1);
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_delay_for_a_service_in_another_process_is_kept_not_run_at_once() -> anyhow::Result<()> {
    let server = NatsServer::start()?;
    let (_w, member, (sent, _)) = mailer_and_client(&server).await?;
    let client = &member.host;

    // Kept by the cluster for an hour (or until a time), not run at once.
    let later = client
        .service("Mailer")
        .action("send", 18u32)
        .delay(Duration::from_secs(3600))
        .enqueue();
    let later = within("enqueue", later).await??;
    let at = chrono::Utc::now() + chrono::Duration::hours(1);
    let at = client
        .service("Mailer")
        .action("send", 19u32)
        .at(at)
        .enqueue();
    let at = within("enqueue", at).await??;
    for id in [later.id(), at.id()] {
        let r = within("the record", client.jobs().get(id)).await??;
        assert_eq!(r.state, JobState::Scheduled, "{r:?}");
        assert!(
            r.run_at > chrono::Utc::now() + chrono::Duration::minutes(59),
            "{r:?}"
        );
    }
    // A job enqueued after them without a delay runs, and only it.
    let now = client.service("Mailer").action("send", 20u32).enqueue();
    let now = within("enqueue", now).await??;
    within("its outcome", now.outcome()).await??;
    assert_eq!(sent.load(Ordering::SeqCst), 1, "the delayed ones wait");
    Ok(())
}
