//! A mailbox worker at the end of its drain: it looks once more for work after
//! letting the tasks it just answered run, so a call made right then is taken by
//! the worker, which still holds its slot, instead of waking it from its sleep.

mod common;

use std::sync::Arc;

use koan::testing::within;
use koan::{
    ActionContext, Actions, Background, BackgroundService, BoxError, Service, ServiceContext,
    ServiceOptions, Services,
};
use tokio::sync::{Notify, Semaphore};

/// One action at a time: `hold` waits for the gate, `task` names the task that ran it.
#[derive(Debug)]
struct Where {
    gate: Arc<Semaphore>,
    held: Arc<Notify>,
}

impl Where {
    fn new() -> Self {
        Where {
            gate: Arc::new(Semaphore::new(0)),
            held: Arc::new(Notify::new()),
        }
    }
}

impl Service for Where {
    type Kind = Background;

    fn options() -> ServiceOptions {
        ServiceOptions::named("Where").max_concurrency(1)
    }

    fn actions(a: &mut Actions<Self>) {
        a.action(
            "hold",
            |svc: Arc<Self>, (): (), _cx: ActionContext| async move {
                svc.held.notify_one();
                let permit = svc.gate.acquire().await?;
                permit.forget();
                Ok::<(), BoxError>(())
            },
        );
        a.action(
            "task",
            |_svc: Arc<Self>, (): (), _cx: ActionContext| async move {
                Ok::<String, BoxError>(task_name())
            },
        );
    }
}

impl BackgroundService for Where {
    async fn run(&self, cx: ServiceContext) -> Result<(), BoxError> {
        cx.cancelled().await;
        Ok(())
    }
}

/// The id of the task running now, as text.
fn task_name() -> String {
    tokio::task::try_id().map_or_else(|| "no task".to_owned(), |id| id.to_string())
}

/// The task a call of `task` ran on, and the task that made the call.
async fn call_task(w: &Services<Where>) -> koan::Result<(String, String)> {
    let ran_on = w.action("task", ()).execute().await?.value::<String>()?;
    Ok((ran_on, task_name()))
}

#[tokio::test]
async fn a_call_made_as_the_worker_ends_its_drain_is_run_by_that_worker() -> anyhow::Result<()> {
    let svc = Where::new();
    let (gate, held) = (Arc::clone(&svc.gate), Arc::clone(&svc.held));
    let host = common::started(svc).await?;
    let w = host.services::<Where>();

    // The only slot is taken by a caller running `hold` itself (the service was
    // idle); a `task` call made meanwhile waits in the mailbox.
    let hold = tokio::spawn({
        let w = w.clone();
        async move { w.action("hold", ()).execute().await }
    });
    within("`hold` to start", held.notified()).await;
    // A caller that calls again as soon as it is answered: its first call waits in
    // the mailbox, its second comes while the worker that answered the first looks
    // for more work.
    let caller = tokio::spawn({
        let w = w.clone();
        async move { Ok::<_, koan::Error>((call_task(&w).await?, call_task(&w).await?)) }
    });
    for _ in 0..3 {
        tokio::task::yield_now().await;
    }
    gate.add_permits(1);
    within("the `hold` call", hold).await??;
    let ((worker, caller_task), (ran_on, _)) = within("both `task` calls", caller).await??;

    assert_ne!(worker, caller_task, "the first call waited for the worker");
    assert_eq!(
        ran_on, worker,
        "the call made as the worker ended its drain was taken by that worker (the caller, task {caller_task}, did not run it itself)"
    );
    koan::testing::stop(&host).await?;
    Ok(())
}
