//! A cluster job delivered while callers keep its service's mailbox full waits
//! there for its turn: its work was accepted (202), and a full mailbox means its
//! handler did not start, which is no attempt. Refused `busy` instead, each
//! delivery used one up, and the job went dead in three seconds without ever
//! running (found by a probe). Its timeout counts from its run's start, not from
//! its enqueue: waiting there past it, it went dead unrun (a re-probe).

use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use koan::job::JobState;
use koan::{
    ActionContext, Actions, Background, BackgroundService, BoxError, Service, ServiceContext,
    ServiceOptions,
};
use koan_test_support::nats::{Member, NatsServer, test_options};
use koan_test_support::{wait_for, within};
use tokio::sync::Semaphore;

/// `Narrow`: one run at a time, one call queued at most. `gate` waits until the
/// test lets it through; `job` counts its runs.
struct Narrow {
    gate: Arc<Semaphore>,
    jobs: Arc<AtomicU32>,
}

impl Service for Narrow {
    type Kind = Background;

    fn options() -> ServiceOptions {
        ServiceOptions::named("Narrow")
            .max_concurrency(1)
            .mailbox_capacity(1)
    }

    fn actions(a: &mut Actions<Self>) {
        a.action(
            "gate",
            |svc: Arc<Self>, (): (), _cx: ActionContext| async move {
                let _pass = svc.gate.acquire().await?;
                Ok::<_, BoxError>(())
            },
        );
        a.action(
            "job",
            |svc: Arc<Self>, (): (), _cx: ActionContext| async move {
                svc.jobs.fetch_add(1, Ordering::SeqCst);
                Ok::<_, BoxError>(())
            },
        );
    }
}

impl BackgroundService for Narrow {
    async fn run(&self, cx: ServiceContext) -> Result<(), BoxError> {
        cx.cancelled().await;
        Ok(())
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_job_delivered_to_a_full_mailbox_waits_there_and_runs_once() -> anyhow::Result<()> {
    let server = NatsServer::start()?;
    let gate = Arc::new(Semaphore::new(0));
    let jobs = Arc::new(AtomicU32::new(0));
    let narrow = Narrow {
        gate: Arc::clone(&gate),
        jobs: Arc::clone(&jobs),
    };
    let (worker, client) = Member::worker_and_client(test_options(&server.url()), "Narrow", |b| {
        b.instance(narrow)
    })
    .await?;

    // One call running, one queued: the mailbox is full, and a third call is busy.
    let mut calls = Vec::new();
    for _ in 0..2 {
        let call = worker.host.service("Narrow").action("gate", ()).execute();
        calls.push(tokio::spawn(call));
        wait_for("the call to be in", async || {
            let s = worker.host.status("Narrow")?;
            Ok((s.in_flight + s.queue_depth == calls.len()).then_some(()))
        })
        .await?;
    }
    let third = worker.host.service("Narrow").action("gate", ()).execute();
    let e = within("the third call", third)
        .await?
        .expect_err("a full mailbox");
    assert_eq!(e.kind(), koan::error::ErrorKind::Busy, "{e}");

    // Two jobs, from the other host, with a timeout: the first waits behind the
    // queued call, the second in the stream (the worker holds no more jobs than
    // its slot), each longer than its timeout, which counts from its run's start.
    let mut tickets = Vec::new();
    for _ in 0..2 {
        let job = client
            .host
            .service("Narrow")
            .action("job", ())
            .timeout(Duration::from_millis(300))
            .enqueue();
        tickets.push(within("enqueue", job).await??);
    }
    wait_for("the first job to wait in the mailbox", async || {
        Ok((worker.host.status("Narrow")?.queue_depth == 2).then_some(()))
    })
    .await?;
    // Time passing, past the timeout, while they wait: not a condition awaited.
    tokio::time::sleep(Duration::from_millis(600)).await;
    assert_eq!(jobs.load(Ordering::SeqCst), 0);

    gate.add_permits(2);
    for call in calls {
        within("a gated call", call)
            .await??
            .map_err(anyhow::Error::from)?;
    }
    for ticket in tickets {
        let id = ticket.id().to_owned();
        within("a job's outcome", ticket.outcome()).await??;
        // The record follows the outcome a moment later (its run's end write).
        let record = wait_for("the record to say it succeeded", async || {
            let r = client.host.jobs().get(&id).await?;
            Ok((r.state == JobState::Succeeded).then_some(r))
        })
        .await?;
        assert_eq!(record.attempts, 1, "no attempt used up by the wait");
    }
    assert_eq!(jobs.load(Ordering::SeqCst), 2);
    Ok(())
}
