//! Chains of actions as one cluster job: `.action(a).action(b).enqueue()` goes to
//! JetStream whole (the actions after the first in `Koan-Then`), runs in order on
//! one instance, answers with the last action's result, and — accepted by an
//! instance that then goes away before it is due — runs on one that remains.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use koan::{
    ActionContext, Actions, Background, BackgroundService, BoxError, Service, ServiceContext,
    ServiceOptions, job::JobRecord, job::JobState,
};
use koan_test_support::nats::{Member, NatsServer, announced, test_options};
use koan_test_support::{wait_for, within};

/// What `note` was given, in order, on every instance of the test.
type Notes = Arc<Mutex<Vec<String>>>;

struct Notebook {
    notes: Notes,
}

impl Service for Notebook {
    type Kind = Background;

    fn options() -> ServiceOptions {
        ServiceOptions::named("Notebook").max_concurrency(4)
    }

    fn actions(a: &mut Actions<Self>) {
        a.action(
            "note",
            |svc: Arc<Self>, text: String, _cx: ActionContext| async move {
                let mut notes = svc.notes.lock().map_err(|_| "poisoned")?;
                notes.push(text.clone());
                Ok::<_, BoxError>(format!("{text} #{}", notes.len()))
            },
        );
    }
}

impl BackgroundService for Notebook {
    async fn run(&self, cx: ServiceContext) -> Result<(), BoxError> {
        cx.cancelled().await;
        Ok(())
    }
}

fn notes_of(notes: &Notes) -> Vec<String> {
    notes.lock().map(|n| n.clone()).unwrap_or_default()
}

async fn record_in(m: &Member, id: &str, state: JobState) -> anyhow::Result<JobRecord> {
    wait_for(&format!("job {id} to be {state}"), async || {
        let r = m.host.jobs().get(id).await?;
        Ok((r.state == state).then_some(r))
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_chain_for_a_service_elsewhere_runs_in_order_as_one_job() -> anyhow::Result<()> {
    let server = NatsServer::start()?;
    let notes = Notes::default();
    let book = Notebook {
        notes: Arc::clone(&notes),
    };
    let opts = test_options(&server.url());
    let (_w, client) = Member::worker_and_client(opts, "Notebook", |b| b.instance(book)).await?;

    let ticket = within(
        "enqueue",
        client
            .host
            .service("Notebook")
            .action("note", "first")
            .action("note", "second")
            .action("note", "third")
            .enqueue(),
    )
    .await??;
    let id = ticket.id().to_owned();
    let last = within("the outcome", ticket.outcome()).await??;
    assert_eq!(
        last.value::<String>()?,
        "third #3",
        "the last action's result"
    );
    assert_eq!(notes_of(&notes), ["first", "second", "third"]);
    let done = record_in(&client, &id, JobState::Succeeded).await?;
    assert_eq!(done.steps().len(), 3, "{done:?}");
    assert_eq!(done.attempts, 1, "{done:?}");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_delayed_chain_outlives_the_host_that_accepted_it() -> anyhow::Result<()> {
    let server = NatsServer::start()?;
    let notes = Notes::default();
    let book = |notes: &Notes| Notebook {
        notes: Arc::clone(notes),
    };
    let opts = test_options(&server.url());
    let a = Member::join(opts.clone(), |b| b.instance(book(&notes))).await?;
    let b = Member::join(opts, |b| b.instance(book(&notes))).await?;
    announced(&b.host, "Notebook", 2).await?;

    // Accepted by A, which runs the service itself: the cluster keeps it.
    let ticket = within(
        "enqueue",
        a.host
            .services::<Notebook>()
            .action("note", "one")
            .action("note", "two")
            .delay(Duration::from_secs(1))
            .enqueue(),
    )
    .await??;
    let id = ticket.id().to_owned();
    let scheduled = record_in(&b, &id, JobState::Scheduled).await?;
    assert_eq!(scheduled.steps().len(), 2, "{scheduled:?}");

    a.stop().await?;
    let done = record_in(&b, &id, JobState::Succeeded).await?;
    assert_eq!(done.result, Some(serde_json::json!("two #2")), "{done:?}");
    assert_eq!(notes_of(&notes), ["one", "two"], "run once, in order");
    Ok(())
}
