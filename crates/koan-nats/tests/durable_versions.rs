//! A rolling deploy: two builds of one service, the newer with an action the older
//! lacks. Jobs and calls of that action go to the instances that announced it;
//! before, the older build took them and answered `unknown_action`, burying 39 of
//! 40 jobs and failing 17 of 20 calls (found by a probe).

use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};

use koan::job::JobState;
use koan::{ActionContext, Actions, Background, BackgroundService, BoxError, Service};
use koan::{ServiceContext, ServiceOptions};
use koan_test_support::nats::{Member, NatsServer, announced, test_options};
use koan_test_support::within;

mod common;

use common::job_reaches;

/// The older build of `Counter`: `add` only.
#[derive(Default)]
struct Older;

impl Service for Older {
    type Kind = Background;
    fn options() -> ServiceOptions {
        ServiceOptions::named("Counter")
    }
    fn actions(a: &mut Actions<Self>) {
        a.action(
            "add",
            |_s: Arc<Self>, n: u32, _cx: ActionContext| async move { Ok::<_, BoxError>(n + 1) },
        );
    }
}

impl BackgroundService for Older {
    async fn run(&self, cx: ServiceContext) -> Result<(), BoxError> {
        cx.cancelled().await;
        Ok(())
    }
}

/// The newer build: `add` and `sub`, counting its `sub` runs.
#[derive(Default)]
struct Newer {
    subs: Arc<AtomicU32>,
}

impl Service for Newer {
    type Kind = Background;
    fn options() -> ServiceOptions {
        ServiceOptions::named("Counter")
    }
    fn actions(a: &mut Actions<Self>) {
        a.action(
            "add",
            |_s: Arc<Self>, n: u32, _cx: ActionContext| async move { Ok::<_, BoxError>(n + 1) },
        );
        a.action(
            "sub",
            |s: Arc<Self>, n: u32, _cx: ActionContext| async move {
                s.subs.fetch_add(1, Ordering::SeqCst);
                Ok::<_, BoxError>(n - 1)
            },
        );
    }
}

impl BackgroundService for Newer {
    async fn run(&self, cx: ServiceContext) -> Result<(), BoxError> {
        cx.cancelled().await;
        Ok(())
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_action_only_the_newer_build_has_runs_there() -> anyhow::Result<()> {
    let server = NatsServer::start()?;
    let opts = test_options(&server.url());
    let older = Member::join(opts.clone(), |b| b.instance(Older)).await?;
    let newer_build = Newer::default();
    let subs = Arc::clone(&newer_build.subs);
    let newer = Member::join(opts.clone(), |b| b.instance(newer_build)).await?;
    let client = Member::join(opts, |b| b).await?;
    // Each sees both builds (the older one hands over what the newer announced).
    for m in [&client, &older, &newer] {
        announced(&m.host, "Counter", 2).await?;
    }

    let mut tickets = Vec::new();
    for n in 1..=12u32 {
        let t = within(
            "an enqueue",
            client.host.service("Counter").action("sub", n).enqueue(),
        )
        .await??;
        tickets.push((n, t));
    }
    for (n, t) in tickets {
        let id = t.id().to_owned();
        let out = within("a job's outcome", t.outcome()).await??;
        assert_eq!(out.value::<u32>()?, n - 1, "job {n}");
        let done = job_reaches(&client.host, &id, JobState::Succeeded).await?;
        assert_eq!(done.attempts, 1, "a hand-over is not an attempt: {done:?}");
    }
    // Calls too: each goes to the instance that has the action.
    for n in 1..=12u32 {
        let out = within(
            "a call",
            client.host.service("Counter").action("sub", n).execute(),
        )
        .await??;
        assert_eq!(out.value::<u32>()?, n - 1);
    }
    assert_eq!(subs.load(Ordering::SeqCst), 24);
    client.stop().await?;
    newer.stop().await?;
    older.stop().await
}
