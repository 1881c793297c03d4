//! The host keeps its last events (bounded) for pages opened after they happened;
//! a background service's actions count in its history.

mod common;

use common::events::{start, stop};

#[tokio::test(start_paused = true)]
async fn the_last_events_are_kept_newest_first() -> anyhow::Result<()> {
    let host = start().await?;
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
    stop(&host).await
}
