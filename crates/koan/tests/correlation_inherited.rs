//! The work an action causes is found under the action's correlation id: a call,
//! a spawned call or a job its handler makes without an id of its own takes the
//! handler's (a job enqueued by a handler called with `X-Correlation-Id:
//! http-chain-1` got an id of its own, and `GET /api/jobs?correlation_id=` found
//! nothing; found by a probe). An id given is kept.

use std::sync::{Arc, Mutex};

use koan::job::JobQuery;
use koan::{ActionContext, Actions, Background, BackgroundService, BoxError, Host, Service};
use koan::{HostHandle, ServiceContext, ServiceOptions};

/// `outer` calls `Inner.seen` (given `own` as its id when set), spawns it, and
/// enqueues it; `Inner.seen` keeps the ids it ran under.
struct Outer;

#[derive(Default)]
struct Inner {
    seen: Arc<Mutex<Vec<String>>>,
}

impl Service for Outer {
    type Kind = Background;

    fn options() -> ServiceOptions {
        ServiceOptions::named("Outer")
    }

    fn actions(a: &mut Actions<Self>) {
        a.action(
            "outer",
            |_svc: Arc<Self>, own: Option<String>, cx: ActionContext| async move {
                let host = cx.host().ok_or("no host")?;
                let mut call = host.service("Inner").action("seen", ());
                if let Some(own) = own {
                    call = call.correlation_id(own);
                }
                call.execute().await?;
                let spawned = host.service("Inner").action("seen", ()).spawn()?;
                spawned.outcome().await?;
                let job = host.service("Inner").action("seen", ()).enqueue().await?;
                Ok::<_, BoxError>(job.id().to_owned())
            },
        );
    }
}

impl BackgroundService for Outer {
    async fn run(&self, cx: ServiceContext) -> Result<(), BoxError> {
        cx.cancelled().await;
        Ok(())
    }
}

impl Service for Inner {
    type Kind = Background;

    fn options() -> ServiceOptions {
        ServiceOptions::named("Inner")
    }

    fn actions(a: &mut Actions<Self>) {
        a.action(
            "seen",
            |svc: Arc<Self>, (): (), cx: ActionContext| async move {
                let mut seen = svc.seen.lock().map_err(|e| e.to_string())?;
                seen.push(cx.correlation_id().to_owned());
                Ok::<_, BoxError>(())
            },
        );
    }
}

impl BackgroundService for Inner {
    async fn run(&self, cx: ServiceContext) -> Result<(), BoxError> {
        cx.cancelled().await;
        Ok(())
    }
}

/// A host of `Outer` and `Inner`, and what `Inner` saw.
async fn host() -> anyhow::Result<(HostHandle, Arc<Mutex<Vec<String>>>)> {
    let inner = Inner::default();
    let seen = Arc::clone(&inner.seen);
    let host = Host::builder()
        .instance(Outer)
        .instance(inner)
        .build()?
        .start();
    host.started().await?;
    Ok((host, seen))
}

#[tokio::test]
async fn calls_and_jobs_made_by_a_handler_take_its_correlation_id() -> anyhow::Result<()> {
    let (host, seen) = host().await?;
    let out = host
        .service("Outer")
        .action("outer", None::<String>)
        .correlation_id("http-chain-1")
        .execute()
        .await?;
    let job_id: String = out.value()?;
    koan::testing::wait_for_job(&host, &job_id, koan::job::JobState::Succeeded).await;

    let seen = seen.lock().map_err(|e| anyhow::anyhow!("{e}"))?.clone();
    assert_eq!(
        seen, ["http-chain-1"; 3],
        "the call, the spawned call, the job"
    );
    let query = JobQuery {
        correlation_id: Some("http-chain-1".into()),
        ..JobQuery::default()
    };
    let listed = host.jobs().list(query).await?;
    let ids: Vec<&str> = listed.jobs.iter().map(|j| j.id.as_str()).collect();
    assert_eq!(ids, [job_id.as_str()]);
    Ok(())
}

#[tokio::test]
async fn an_id_given_to_a_call_in_a_handler_is_kept() -> anyhow::Result<()> {
    let (host, seen) = host().await?;
    host.service("Outer")
        .action("outer", Some("its-own"))
        .correlation_id("outer-1")
        .execute()
        .await?;
    let seen = seen.lock().map_err(|e| anyhow::anyhow!("{e}"))?.clone();
    assert_eq!(seen.first().map(String::as_str), Some("its-own"));
    Ok(())
}

#[tokio::test]
async fn a_call_made_outside_any_handler_gets_an_id_of_its_own() -> anyhow::Result<()> {
    let (host, seen) = host().await?;
    let a = host.service("Inner").action("seen", ()).execute().await?;
    let b = host.service("Inner").action("seen", ()).execute().await?;
    assert_ne!(a.correlation_id(), b.correlation_id());
    let seen = seen.lock().map_err(|e| anyhow::anyhow!("{e}"))?.clone();
    assert_eq!(seen, [a.correlation_id(), b.correlation_id()]);
    Ok(())
}
