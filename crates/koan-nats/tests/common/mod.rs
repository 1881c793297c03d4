//! The job holder shared by the durable-job tests: its runs wait for their token,
//! and it counts how many started and whether one was stopped by its token. The
//! routing tests' worker is in `routing`.

// Each test file uses its own part of this module.
#![allow(dead_code)]

pub(crate) mod routing;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::time::Duration;

use koan::HostHandle;
use koan::job::JobTicket;
use koan::{
    ActionContext, Actions, Background, BackgroundService, BoxError, Service, ServiceContext,
    ServiceOptions,
};
use koan_test_support::nats::{Member, NatsServer, test_options};
use koan_test_support::within;

/// What a `hold` run stopped by its token answers.
#[derive(Clone, Copy, Debug)]
pub(crate) enum Stopped {
    /// An error: the run did not finish its work.
    Fails,
    /// Success: the run wound down cleanly.
    Succeeds,
}

/// What the runs of one or more holders did, shared with the test.
#[derive(Clone, Default)]
pub(crate) struct Runs {
    started: Arc<AtomicU32>,
    stopped: Arc<AtomicBool>,
}

impl Runs {
    /// How many runs started.
    pub(crate) fn started(&self) -> u32 {
        self.started.load(Ordering::SeqCst)
    }

    /// Whether a run was stopped by its token.
    pub(crate) fn stopped(&self) -> bool {
        self.stopped.load(Ordering::SeqCst)
    }

    /// The same start count, with a stop flag of its own.
    pub(crate) fn own_stop(&self) -> Runs {
        Runs {
            started: Arc::clone(&self.started),
            stopped: Arc::default(),
        }
    }
}

/// `Holder` (one run at a time): `hold` waits for its token and answers as
/// [`Stopped`] says, or, when it does not hold, returns at once; `busy` works for the
/// given milliseconds unless its token fires first (then it fails).
pub(crate) struct Holder {
    pub(crate) holds: bool,
    pub(crate) on_stop: Stopped,
    pub(crate) runs: Runs,
}

impl Holder {
    /// A holder whose `hold` waits for its token, and what its runs do.
    pub(crate) fn new(on_stop: Stopped) -> (Holder, Runs) {
        let runs = Runs::default();
        let holder = Holder {
            holds: true,
            on_stop,
            runs: runs.clone(),
        };
        (holder, runs)
    }

    fn stop(&self) {
        self.runs.stopped.store(true, Ordering::SeqCst);
    }
}

impl Service for Holder {
    type Kind = Background;

    fn options() -> ServiceOptions {
        ServiceOptions::named("Holder").max_concurrency(1)
    }

    fn actions(a: &mut Actions<Self>) {
        a.action(
            "hold",
            |svc: Arc<Self>, (): (), cx: ActionContext| async move {
                svc.runs.started.fetch_add(1, Ordering::SeqCst);
                if !svc.holds {
                    return Ok(());
                }
                cx.cancelled().await;
                svc.stop();
                match svc.on_stop {
                    Stopped::Fails => Err::<(), BoxError>("stopped".into()),
                    Stopped::Succeeds => Ok(()),
                }
            },
        );
        a.action(
            "busy",
            |svc: Arc<Self>, ms: u64, cx: ActionContext| async move {
                svc.runs.started.fetch_add(1, Ordering::SeqCst);
                tokio::select! {
                    () = tokio::time::sleep(Duration::from_millis(ms)) => Ok::<_, BoxError>(()),
                    () = cx.cancelled() => {
                        svc.stop();
                        Err("cancelled".into())
                    }
                }
            },
        );
    }
}

impl BackgroundService for Holder {
    async fn run(&self, cx: ServiceContext) -> Result<(), BoxError> {
        cx.cancelled().await;
        Ok(())
    }
}

/// A worker running a new `Holder` whose stopped runs answer as `on_stop` says, and a
/// client that sees it, both on `server` with an `ack_wait` of one second; and what
/// the holder's runs do.
pub(crate) async fn holder_and_client(
    server: &NatsServer,
    on_stop: Stopped,
) -> anyhow::Result<(Member, Member, Runs)> {
    let mut opts = test_options(&server.url());
    opts.ack_wait = Duration::from_secs(1);
    let (worker, runs) = Holder::new(on_stop);
    let (w, client) = Member::worker_and_client(opts, "Holder", |b| b.instance(worker)).await?;
    Ok((w, client, runs))
}

/// Enqueues `Holder`'s `action` with `params` from `client`, as a durable job.
pub(crate) async fn enqueue(
    client: &HostHandle,
    action: &str,
    params: impl serde::Serialize + Send + 'static,
) -> anyhow::Result<JobTicket> {
    let job = client.service("Holder").action(action, params).enqueue();
    Ok(within("enqueue", job).await??)
}

/// Waits (bounded) until the record of job `id`, as `host` reads it, is in `state`;
/// the record as it is then.
pub(crate) async fn job_reaches(
    host: &HostHandle,
    id: &str,
    state: koan::job::JobState,
) -> anyhow::Result<koan::job::JobRecord> {
    koan_test_support::wait_for(&format!("job {id} to be {state}"), async || {
        let r = host.jobs().get(id).await?;
        Ok((r.state == state).then_some(r))
    })
    .await
}

/// Waits (bounded) until the record of job `id` in the cluster's bucket itself
/// (not a read of the job, which answers a record behind its outcome as the
/// outcome says) is in `state`.
pub(crate) async fn record_stored(
    member: &Member,
    id: &str,
    state: koan::job::JobState,
) -> anyhow::Result<()> {
    let js = async_nats::jetstream::new(member.nats.client().clone());
    let bucket = js
        .get_key_value("koan_jobs")
        .await
        .map_err(|e| anyhow::anyhow!("the koan_jobs bucket: {e}"))?;
    koan_test_support::wait_for(&format!("the record of {id} to be {state}"), async || {
        let Some(bytes) = bucket.get(id).await? else {
            return Ok(None);
        };
        let r: koan::job::JobRecord = serde_json::from_slice(&bytes)?;
        Ok((r.state == state).then_some(()))
    })
    .await
}

/// Waits (bounded) until JetStream stream `name` holds `n` messages, as `member`
/// reads it: acks, deletes and dead letters land a moment after an outcome.
pub(crate) async fn stream_holds(member: &Member, name: &str, n: u64) -> anyhow::Result<()> {
    let js = async_nats::jetstream::new(member.nats.client().clone());
    koan_test_support::wait_for(&format!("{name} to hold {n} messages"), async || {
        let held = js.get_stream(name).await?.info().await?.state.messages;
        Ok((held == n).then_some(()))
    })
    .await
}

/// A service whose action `echo` answers the number it was given, four runs at
/// once (the tests of what a host watches, and of what it leaves behind).
#[derive(Default)]
pub(crate) struct Echo;

impl Service for Echo {
    type Kind = Background;

    fn options() -> ServiceOptions {
        ServiceOptions::named("Echo").max_concurrency(4)
    }

    fn actions(a: &mut Actions<Self>) {
        a.action(
            "echo",
            |_svc: Arc<Self>, n: u32, _cx: ActionContext| async move { Ok::<u32, BoxError>(n) },
        );
    }
}

impl BackgroundService for Echo {
    async fn run(&self, cx: ServiceContext) -> Result<(), BoxError> {
        cx.cancelled().await;
        Ok(())
    }
}
