//! Parameters and results of any type, small or large, reach the handler and come
//! back whole, and each value is dropped exactly once, whether its call runs, is
//! passed over (its caller gone) or is answered `ShuttingDown` — small values
//! travel in place inside the job, larger or over-aligned ones in a box.

use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::task::Poll;

use koan::testing::within;
use koan::{
    ActionContext, Actions, Background, BackgroundService, BoxError, Service, ServiceContext,
    ServiceOptions, error::ErrorKind,
};
use serde::{Deserialize, Serialize};
use serde_json::json;
use tokio::sync::Notify;

/// Values made and dropped, counted by a test of its own (each test its own static).
#[derive(Debug, Default)]
struct Tally {
    made: AtomicU32,
    dropped: AtomicU32,
}

static SMALL: Tally = Tally::new();
static LARGE: Tally = Tally::new();
static GONE: Tally = Tally::new();

impl Tally {
    const fn new() -> Self {
        Tally {
            made: AtomicU32::new(0),
            dropped: AtomicU32::new(0),
        }
    }
}

/// Counts its own drop on the tally named by `which` (0 small, 1 large, 2 gone).
#[derive(Debug, Default, Serialize, Deserialize, schemars::JsonSchema)]
struct Guard {
    which: u8,
}

impl Guard {
    fn new(which: u8) -> Self {
        tally(which).made.fetch_add(1, Ordering::SeqCst);
        Guard { which }
    }
}

fn tally(which: u8) -> &'static Tally {
    match which {
        0 => &SMALL,
        1 => &LARGE,
        _ => &GONE,
    }
}

impl Drop for Guard {
    fn drop(&mut self) {
        tally(self.which).dropped.fetch_add(1, Ordering::SeqCst);
    }
}

/// 16 bytes: kept in place.
#[derive(Debug, Serialize, Deserialize, schemars::JsonSchema)]
struct Small {
    n: u64,
    guard: Guard,
}

/// 40 bytes, and a `u128`'s alignment: boxed.
#[derive(Debug, Serialize, Deserialize, schemars::JsonSchema)]
struct Large {
    wide: u128,
    more: [u64; 2],
    guard: Guard,
}

#[derive(Debug, PartialEq, Serialize, Deserialize)]
struct Pair {
    a: u64,
    b: u64,
}

/// One action at a time: `hold` keeps the slot until `open`.
#[derive(Default, Clone)]
struct Keep {
    started: Arc<Notify>,
    open: Arc<Notify>,
}

impl Service for Keep {
    type Kind = Background;

    fn options() -> ServiceOptions {
        ServiceOptions::named("Keep").max_concurrency(1)
    }

    fn actions(a: &mut Actions<Self>) {
        a.action(
            "hold",
            |svc: Arc<Self>, (): (), _cx: ActionContext| async move {
                svc.started.notify_one();
                svc.open.notified().await;
                Ok::<_, BoxError>(())
            },
        );
        a.action(
            "small",
            |_: Arc<Self>, p: Small, _: ActionContext| async move {
                Ok::<_, BoxError>(Pair { a: p.n, b: p.n * 2 })
            },
        );
        a.action(
            "large",
            |_: Arc<Self>, p: Large, _: ActionContext| async move {
                let total = u64::try_from(p.wide).unwrap_or(u64::MAX) + p.more[0] + p.more[1];
                Ok::<_, BoxError>(total)
            },
        );
    }
}

impl BackgroundService for Keep {
    async fn run(&self, cx: ServiceContext) -> Result<(), BoxError> {
        cx.cancelled().await;
        Ok(())
    }
}

async fn host(keep: &Keep) -> anyhow::Result<koan::HostHandle> {
    let host = koan::testing::host()
        .instance(keep.clone())
        .build()?
        .start();
    within("the host to start", host.started()).await?;
    Ok(host)
}

#[tokio::test(start_paused = true)]
async fn small_parameters_and_results_arrive_whole_by_type_and_by_json() -> anyhow::Result<()> {
    let keep = Keep::default();
    let host = host(&keep).await?;
    let svc = host.service("Keep");

    let typed = svc
        .action(
            "small",
            Small {
                n: 21,
                guard: Guard::new(0),
            },
        )
        .execute()
        .await?;
    assert_eq!(typed.value::<Pair>()?, Pair { a: 21, b: 42 });
    let by_json = svc
        .action("small", json!({"n": 4, "guard": {"which": 0}}))
        .execute()
        .await?;
    assert_eq!(by_json.json()?, json!({"a": 4, "b": 8}));
    // A result of another type is refused through JSON, naming what was wrong.
    let out = svc
        .action(
            "small",
            Small {
                n: 1,
                guard: Guard::new(0),
            },
        )
        .execute()
        .await?;
    let err = out.value::<String>().err().map(|e| e.kind());
    assert_eq!(err, Some(ErrorKind::InvalidResult));

    koan::testing::stop(&host).await?;
    // The two made here and the one decoded from JSON (made by serde, not counted
    // as made) are each dropped once.
    assert_eq!(SMALL.made.load(Ordering::SeqCst), 2);
    assert_eq!(SMALL.dropped.load(Ordering::SeqCst), 3);
    Ok(())
}

#[tokio::test(start_paused = true)]
async fn large_or_over_aligned_parameters_are_boxed_and_dropped_once() -> anyhow::Result<()> {
    let keep = Keep::default();
    let host = host(&keep).await?;
    let p = Large {
        wide: 1,
        more: [2, 3],
        guard: Guard::new(1),
    };
    let out = host.service("Keep").action("large", p).execute().await?;
    assert_eq!(out.value::<u64>()?, 6);
    koan::testing::stop(&host).await?;
    assert_eq!(LARGE.made.load(Ordering::SeqCst), 1);
    assert_eq!(LARGE.dropped.load(Ordering::SeqCst), 1);
    Ok(())
}

#[tokio::test(start_paused = true)]
async fn parameters_of_calls_never_run_are_dropped_once() -> anyhow::Result<()> {
    let keep = Keep::default();
    let host = host(&keep).await?;
    let h = host.clone();
    let holding = tokio::spawn(async move {
        let _ = h.service("Keep").action("hold", ()).execute().await;
    });
    within("the hold to start", keep.started.notified()).await;

    // Queued behind the hold, then given up: passed over, not run.
    let small = Small {
        n: 1,
        guard: Guard::new(2),
    };
    let mut gone = Box::pin(host.service("Keep").action("small", small).execute());
    let queued = std::future::poll_fn(|cx| Poll::Ready(gone.as_mut().poll(cx).is_pending())).await;
    assert!(queued, "the call waits behind the hold");
    drop(gone);
    // Queued behind the hold with a ticket, answered `ShuttingDown` at the stop.
    let large = Large {
        wide: 1,
        more: [0, 0],
        guard: Guard::new(2),
    };
    let ticket = host.service("Keep").action("large", large).spawn()?;
    let small = Small {
        n: 2,
        guard: Guard::new(2),
    };
    let ticket2 = host.service("Keep").action("small", small).spawn()?;

    koan::testing::stop(&host).await?;
    holding.abort();
    for t in [ticket.outcome().await.err(), ticket2.outcome().await.err()] {
        assert_eq!(t.map(|e| e.kind()), Some(ErrorKind::ShuttingDown));
    }
    assert_eq!(GONE.made.load(Ordering::SeqCst), 3);
    assert_eq!(GONE.dropped.load(Ordering::SeqCst), 3, "each dropped once");
    Ok(())
}
