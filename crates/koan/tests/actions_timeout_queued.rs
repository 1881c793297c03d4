//! A call whose deadline passes while it still waits in its service's mailbox is
//! answered that it never started and never will (`Error::not_started`), and its
//! place is freed at once. Before, its caller heard the outcome was unknown ("may
//! never have started") though the host knew, and the dead call kept its place until
//! a worker reached it: other callers were refused `busy` by calls nobody waited for.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use koan::error::ErrorKind;
use koan::testing::within;
use koan::{ActionContext, Actions, Background, BackgroundService, BoxError, Service};
use koan::{ServiceContext, ServiceOptions};
use tokio::sync::{Notify, Semaphore};

/// One slot, two queued calls at most; `hold` waits for a permit.
struct Narrow {
    gate: Arc<Semaphore>,
    started: Arc<Notify>,
    quick_runs: Arc<AtomicUsize>,
}

impl Service for Narrow {
    type Kind = Background;

    fn options() -> ServiceOptions {
        ServiceOptions::named("Narrow")
            .max_concurrency(1)
            .mailbox_capacity(2)
    }

    fn actions(a: &mut Actions<Self>) {
        a.action(
            "hold",
            |svc: Arc<Self>, (): (), _cx: ActionContext| async move {
                svc.started.notify_one();
                // Each permit lets one call through.
                svc.gate.acquire().await?.forget();
                Ok::<_, BoxError>(())
            },
        );
        a.action(
            "quick",
            |svc: Arc<Self>, (): (), _cx: ActionContext| async move {
                svc.quick_runs.fetch_add(1, Ordering::SeqCst);
                Ok::<_, BoxError>("quick")
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

struct Probe {
    host: koan::HostHandle,
    gate: Arc<Semaphore>,
    quick_runs: Arc<AtomicUsize>,
}

/// A started host whose one worker is held by a `hold` call.
async fn held() -> anyhow::Result<Probe> {
    let gate = Arc::new(Semaphore::new(0));
    let started = Arc::new(Notify::new());
    let quick_runs = Arc::new(AtomicUsize::new(0));
    let narrow = Narrow {
        gate: Arc::clone(&gate),
        started: Arc::clone(&started),
        quick_runs: Arc::clone(&quick_runs),
    };
    let host = koan::testing::host().instance(narrow).build()?.start();
    host.started().await?;
    let _running = host.service("Narrow").action("hold", ()).spawn()?;
    within("the held call to run", started.notified()).await;
    Ok(Probe {
        host,
        gate,
        quick_runs,
    })
}

impl Probe {
    fn quick(&self, timeout: Option<Duration>) -> koan::Result<koan::action::ActionTicket> {
        let call = self.host.service("Narrow").action("quick", ());
        match timeout {
            Some(t) => call.timeout(t).spawn(),
            None => call.spawn(),
        }
    }
}

#[tokio::test(start_paused = true)]
async fn a_call_given_up_in_the_queue_is_said_not_started_and_frees_its_place() -> anyhow::Result<()>
{
    let probe = held().await?;
    let timed = probe.quick(Some(Duration::from_secs(1)))?;
    let e = within("the queued call's deadline", timed.outcome())
        .await
        .expect_err("its deadline passed in the queue");
    assert_eq!(e.kind(), ErrorKind::Timeout, "{e}");
    assert!(e.not_started(), "{e}");
    assert!(
        e.message()
            .contains("did not start within its timeout of 1s")
            && e.message().contains("it was not run and will not be"),
        "{e}"
    );

    // Its place is free: two more calls fill the mailbox of two, a third is refused.
    let a = probe.quick(None)?;
    let b = probe.quick(None)?;
    let refused = probe.quick(None).expect_err("the mailbox holds two");
    assert_eq!(refused.kind(), ErrorKind::Busy, "{refused}");

    probe.gate.add_permits(1);
    within("the first queued call", a.outcome()).await?;
    within("the second queued call", b.outcome()).await?;
    assert_eq!(
        probe.quick_runs.load(Ordering::SeqCst),
        2,
        "the call given up on ran"
    );
    let status = probe.host.status("Narrow")?;
    assert_eq!(status.queue_depth, 0, "{status:?}");
    // Never run, so no failure of the service: it was counted one, as a call that
    // ran and timed out (a re-probe).
    let history = probe.host.history("Narrow")?;
    assert_eq!(
        (history.actions_succeeded, history.actions_failed),
        (3, 0),
        "the held call and the two queued ones succeeded; the one given up is no failure"
    );
    Ok(koan::testing::stop(&probe.host).await?)
}

#[tokio::test(start_paused = true)]
async fn freed_places_are_at_most_the_capacity() -> anyhow::Result<()> {
    let probe = held().await?;
    // Two calls given up on free their places (the capacity), a third keeps its.
    for n in 0..3 {
        let t = probe.quick(Some(Duration::from_secs(1)))?;
        let e = within("a queued call's deadline", t.outcome())
            .await
            .expect_err("its deadline passed in the queue");
        assert!(e.not_started(), "call {n}: {e}");
    }
    let one = probe.quick(None)?;
    let refused = probe
        .quick(None)
        .expect_err("one place held by the third call given up on");
    assert_eq!(refused.kind(), ErrorKind::Busy, "{refused}");

    probe.gate.add_permits(1);
    within("the one call", one.outcome()).await?;
    assert_eq!(probe.quick_runs.load(Ordering::SeqCst), 1);
    // Every place counted back out as the workers passed the calls.
    let status = probe.host.status("Narrow")?;
    assert_eq!(status.queue_depth, 0, "{status:?}");
    Ok(koan::testing::stop(&probe.host).await?)
}

#[tokio::test(start_paused = true)]
async fn a_call_timed_out_while_it_ran_is_not_said_unstarted() -> anyhow::Result<()> {
    let probe = held().await?;
    let call = probe
        .host
        .service("Narrow")
        .action("hold", ())
        .timeout(Duration::from_secs(1));
    // Queued behind the held call: released after its deadline would free it, so
    // wait for the held call to end first (one permit each).
    probe.gate.add_permits(1);
    let e = within("the running call's deadline", call.execute())
        .await
        .expect_err("it holds past its deadline");
    assert_eq!(e.kind(), ErrorKind::Timeout, "{e}");
    assert!(!e.not_started(), "{e}");
    assert!(e.message().contains("did not finish"), "{e}");
    Ok(koan::testing::stop(&probe.host).await?)
}

/// A zero timeout is refused, as HTTP refuses `timeout=0`: it was answered that
/// the call had waited behind other work in an empty mailbox (a probe).
#[tokio::test(start_paused = true)]
async fn a_zero_timeout_is_refused() -> anyhow::Result<()> {
    let probe = held().await?;
    let svc = probe.host.service("Narrow");
    let refusals = [
        svc.action("quick", ())
            .timeout(Duration::ZERO)
            .execute()
            .await
            .expect_err("refused"),
        svc.action("quick", ())
            .timeout(Duration::ZERO)
            .spawn()
            .expect_err("refused"),
        svc.action("quick", ())
            .action("quick", ())
            .timeout(Duration::ZERO)
            .enqueue()
            .await
            .expect_err("refused"),
    ];
    for e in refusals {
        assert_eq!(e.kind(), ErrorKind::InvalidParameters, "{e}");
        assert!(e.message().contains("timeout of zero"), "{e}");
    }
    assert_eq!(probe.quick_runs.load(Ordering::SeqCst), 0);
    Ok(koan::testing::stop(&probe.host).await?)
}
