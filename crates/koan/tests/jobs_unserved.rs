//! Jobs of a service no instance here runs — an upgrade renamed it — waited for ever
//! with no word anywhere (found by a probe of an upgrade): the host that shares their
//! store now says so in its log, once a job has been due a minute, naming the
//! service and what to do. (Each host's clock starts at the real time: the jobs are
//! put in the store as an earlier version left them.)

mod common;

use std::sync::Arc;
use std::time::Duration;

use common::logs::Logs;
use koan::job::{JobState, JobStep, JobStore, MemoryJobStore, NewJob};
use koan::{ActionContext, Actions, Background, BackgroundService, BoxError, Service};

/// Version 1's service; version 2 names it `Notifier`.
struct Mailer;

impl Service for Mailer {
    type Kind = Background;
    fn options() -> koan::ServiceOptions {
        koan::ServiceOptions::default()
    }
    fn actions(a: &mut Actions<Self>) {
        a.action("send", |_: Arc<Self>, (): (), _: ActionContext| async {
            Ok::<_, BoxError>(())
        });
    }
}

impl BackgroundService for Mailer {
    async fn run(&self, cx: koan::ServiceContext) -> Result<(), BoxError> {
        cx.cancelled().await;
        Ok(())
    }
}

async fn host_of(
    store: &Arc<MemoryJobStore>,
    name: &'static str,
) -> anyhow::Result<koan::HostHandle> {
    let host = koan::testing::host()
        .job_store(Arc::clone(store) as Arc<dyn JobStore>)
        .instance_named(name, Mailer)
        .build()?
        .start();
    host.started().await?;
    Ok(host)
}

/// A job of `service`, due `ago` before now, as version 1 left it in the store.
async fn left(store: &MemoryJobStore, service: &str, ago: i64) -> anyhow::Result<String> {
    let now = chrono::Utc::now();
    let id = koan::job::new_job_id();
    store
        .push(NewJob {
            id: id.clone(),
            service: service.to_owned(),
            steps: vec![JobStep {
                action: "send".into(),
                params: serde_json::Value::Null,
                timeout_ms: None,
            }],
            priority: 0,
            correlation_id: id.clone(),
            idempotency_key: None,
            created_at: now - chrono::Duration::seconds(ago + 60),
            run_at: now - chrono::Duration::seconds(ago),
            max_attempts: 3,
        })
        .await?;
    Ok(id)
}

#[tokio::test(start_paused = true)]
async fn jobs_of_a_service_no_one_here_runs_are_said_once_due_a_minute() -> anyhow::Result<()> {
    let logs = Logs::default();
    let _logs = logs.capture();
    let store = Arc::new(MemoryJobStore::new());
    // Due for 2 minutes: said; due for 20 s: not yet; of a service it runs: run.
    let old = left(&store, "Mailer", 120).await?;
    left(&store, "Legacy", 20).await?;
    let own = left(&store, "Notifier", 120).await?;
    let v2 = host_of(&store, "Notifier").await?;
    tokio::time::sleep(Duration::from_millis(50)).await;
    logs.assert_lines(
        "jobs of this service are waiting",
        1,
        "no service of that name runs here",
    );
    let said = logs.lines_with("jobs of this service are waiting");
    assert!(said[0].contains("service=Mailer"), "{said:?}");
    assert!(said[0].contains("cancel and delete its jobs"), "{said:?}");
    // Said, and left as they are: another process sharing the store may run them.
    let job = v2.jobs().get(&old).await?;
    assert_eq!((job.state, job.attempts), (JobState::Scheduled, 0));
    let ran = v2.jobs().get(&own).await?;
    assert_eq!(ran.state, JobState::Succeeded);
    koan::testing::stop(&v2).await?;
    Ok(())
}

/// Takes no jobs: a host of it alone has no worker.
#[derive(Default)]
struct Idle;

impl Service for Idle {
    type Kind = Background;
}

impl BackgroundService for Idle {
    async fn run(&self, cx: koan::ServiceContext) -> Result<(), BoxError> {
        cx.cancelled().await;
        Ok(())
    }
}

/// A host where no service takes jobs says so too (an upgrade that left it none was
/// silent; a review).
#[tokio::test(start_paused = true)]
async fn a_host_whose_services_take_no_jobs_says_so_too() -> anyhow::Result<()> {
    let logs = Logs::default();
    let _logs = logs.capture();
    let store = Arc::new(MemoryJobStore::new());
    left(&store, "Mailer", 120).await?;
    let host = koan::testing::host()
        .job_store(Arc::clone(&store) as Arc<dyn JobStore>)
        .service::<Idle>()
        .build()?
        .start();
    host.started().await?;
    tokio::time::sleep(Duration::from_millis(50)).await;
    logs.assert_lines(
        "jobs of this service are waiting",
        1,
        "no service of that name runs here",
    );
    koan::testing::stop(&host).await?;
    Ok(())
}
