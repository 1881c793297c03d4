//! Enqueue options on a service in another process. An idempotency key past
//! JetStream's duplicate window: the repeat is stored as a new message (the window
//! only de-duplicates publishes close together), but the job it names has its
//! outcome recorded, so it is not run again. A delay, which the durable queue
//! cannot keep, is refused instead of run at once.

use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use async_nats::jetstream::stream;
use koan::{
    ActionContext, Actions, Background, BackgroundService, BoxError, Service, ServiceContext,
    ServiceOptions, error::ErrorKind,
};
use koan_test_support::nats::{Member, NatsServer, test_options};
use koan_test_support::{eventually, within};

struct Mailer {
    sent: Arc<AtomicU32>,
}

impl Service for Mailer {
    type Kind = Background;

    fn options() -> ServiceOptions {
        ServiceOptions::named("Mailer")
    }

    fn actions(a: &mut Actions<Self>) {
        a.action(
            "send",
            |svc: Arc<Self>, order: u32, _cx: ActionContext| async move {
                svc.sent.fetch_add(1, Ordering::SeqCst);
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
async fn mailer_and_client(
    server: &NatsServer,
) -> anyhow::Result<(Member, Member, Arc<AtomicU32>)> {
    let sent = Arc::new(AtomicU32::new(0));
    let worker = Mailer {
        sent: Arc::clone(&sent),
    };
    let opts = test_options(&server.url());
    let (w, client) = Member::worker_and_client(opts, "Mailer", |b| b.instance(worker)).await?;
    Ok((w, client, sent))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_key_repeated_after_the_duplicate_window_does_not_run_the_job_again() -> anyhow::Result<()>
{
    let server = NatsServer::start()?;
    // The work stream as the hosts make it, but with the shortest duplicate window
    // (the hosts' 120 s would make the test wait for it).
    let js = async_nats::jetstream::new(async_nats::connect(server.url()).await?);
    js.create_stream(stream::Config {
        name: "KOAN_WORK".into(),
        subjects: vec!["koan.work.>".into()],
        retention: stream::RetentionPolicy::WorkQueue,
        storage: stream::StorageType::Memory,
        duplicate_window: Duration::from_millis(100),
        ..Default::default()
    })
    .await?;
    let (_w, member, sent) = mailer_and_client(&server).await?;
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

    // Past the window: JetStream stores the repeat as a new message.
    // Repeats within the window are the first message; one past it is stored.
    let repeat = within("a repeat past the window", async {
        loop {
            let t = send().await?;
            if t.created() {
                return anyhow::Ok(t);
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await??;
    assert_eq!(repeat.id(), id);
    assert_eq!(
        within("the repeat's answer", repeat.outcome())
            .await??
            .value::<u32>()?,
        17
    );
    eventually("the repeat's message to be consumed", || async {
        js.get_stream("KOAN_WORK")
            .await
            .is_ok_and(|s| s.cached_info().state.messages == 0)
    })
    .await?;
    assert_eq!(
        sent.load(Ordering::SeqCst),
        1,
        "the job the key names ran already: its repeat must not run it again"
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_delay_for_a_service_in_another_process_is_refused_not_run_at_once() -> anyhow::Result<()>
{
    let server = NatsServer::start()?;
    let (_w, member, _sent) = mailer_and_client(&server).await?;
    let client = &member.host;

    let later = client
        .service("Mailer")
        .action("send", 18u32)
        .delay(Duration::from_secs(3600))
        .enqueue();
    let e = within("enqueue", later)
        .await?
        .expect_err("the durable queue cannot hold a job for an hour");
    assert_eq!(e.kind(), ErrorKind::InvalidParameters, "{e}");
    assert!(e.message().contains("another process"), "{e}");
    let at = client
        .service("Mailer")
        .action("send", 19u32)
        .at(chrono::Utc::now() + chrono::Duration::hours(1))
        .enqueue();
    let e = within("enqueue", at).await?.expect_err("nor one for later");
    assert_eq!(e.kind(), ErrorKind::InvalidParameters, "{e}");
    Ok(())
}
