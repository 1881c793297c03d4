//! The host keeps its last events (bounded) for pages opened after they happened;
//! a background service's actions count in its history.

use std::sync::Arc;

use koan::{
    ActionContext, Actions, Background, BackgroundService, BoxError, Service, ServiceContext,
    ServiceOptions, testing,
};

#[derive(Default)]
struct Emitter;

impl Service for Emitter {
    type Kind = Background;

    fn options() -> ServiceOptions {
        ServiceOptions::named("Emitter")
    }

    fn actions(a: &mut Actions<Self>) {
        a.action(
            "emit_many",
            |_svc: Arc<Self>, count: u32, cx: ActionContext| async move {
                for n in 0..count {
                    cx.emit("Tick", n).await;
                }
                Ok::<_, BoxError>(count)
            },
        );
        a.action(
            "fail",
            |_svc: Arc<Self>, (): (), _cx: ActionContext| async move {
                Err::<(), BoxError>("no".into())
            },
        );
        a.event::<u32>("Tick");
    }
}

impl BackgroundService for Emitter {
    async fn run(&self, cx: ServiceContext) -> Result<(), BoxError> {
        cx.cancelled().await;
        Ok(())
    }
}

#[tokio::test(start_paused = true)]
async fn the_last_events_are_kept_newest_first() -> anyhow::Result<()> {
    let host = testing::host().instance(Emitter).build()?.start();
    assert!(host.recent_events().is_empty());
    let total = koan::event::RECENT_EVENTS as u32 + 10;
    host.service("Emitter")
        .action("emit_many", total)
        .correlation_id("batch-1")
        .execute()
        .await?;
    let recent = host.recent_events();
    assert_eq!(recent.len(), koan::event::RECENT_EVENTS);
    let first: u32 = recent[0].payload()?;
    let last: u32 = recent[recent.len() - 1].payload()?;
    assert_eq!((first, last), (total - 1, 10));
    assert!(recent.iter().all(|e| e.correlation_id() == Some("batch-1")));

    // A background service's run never ends, but its actions count.
    let _ = host.service("Emitter").action("fail", ()).execute().await;
    let h = host.history("Emitter")?;
    assert!(h.runs.is_empty());
    assert_eq!((h.actions_succeeded, h.actions_failed), (1, 1));
    testing::stop(&host).await?;
    Ok(())
}
