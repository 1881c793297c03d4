//! Mistakes with events that used to pass in silence now make noise: a detached
//! subscription keeps delivering, an undeclared event is refused or warned about, a
//! payload type that never fits is warned about and counted, and a dropped event is
//! logged and counted. Logs are captured per test (current-thread runtime) and
//! counters read from a recorder installed for the test's thread.

mod common;

use common::events::{Emitter, forwarded, next, start, stop, stuck_subscriber};
use common::logs::Logs;
use koan::testing::Counters;
use koan::transport::HostLink as _;
use koan::{
    BoxError,
    error::ErrorKind,
    event::{EventEnvelope, Overflow, Subscription},
};
use tokio::sync::mpsc;

/// Binds `$logs` and `$counters` to the log lines and counters of this thread from
/// here to the end of the enclosing block, then `$host` to a started host.
macro_rules! start_observed {
    ($host:ident, $logs:ident, $counters:ident) => {
        let ($logs, $counters) = (Logs::default(), Counters::default());
        let _logs = $logs.capture();
        let _counters = metrics::set_default_local_recorder(&$counters);
        let $host = start().await?;
    };
}

#[tokio::test(start_paused = true)]
async fn a_detached_subscription_keeps_delivering() -> anyhow::Result<()> {
    let host = start().await?;
    let (sub, mut rx) = forwarded::<u32>(&host, "Tick", Overflow::DropNewest).await?;
    sub.detach();

    host.emit("Emitter", "Tick", 1u32).await?;
    host.emit("Emitter", "Tick", 2u32).await?;
    assert_eq!(next(&mut rx).await, 1);
    assert_eq!(next(&mut rx).await, 2);

    // Shutdown ends it: the handler (and its sender) goes away with the host.
    koan::testing::stop(&host).await?;
    assert_eq!(
        koan::testing::within("the detached handler to go", rx.recv()).await,
        None
    );
    Ok(())
}

#[tokio::test(start_paused = true)]
async fn emitting_an_undeclared_event_from_outside_is_refused() -> anyhow::Result<()> {
    let host = start().await?;
    let e = host
        .emit("Emitter", "Tock", 1u32)
        .await
        .expect_err("Emitter declares no Tock");
    assert_eq!(e.kind(), ErrorKind::UnknownEvent);
    assert!(e.message().contains("`Tock`"), "names the event: {e}");
    assert!(
        e.message().contains("Tick"),
        "lists the declared events: {e}"
    );
    // Names match without regard to case, as for subscribing.
    host.emit("Emitter", "tick", 1u32).await?;
    stop(&host).await
}

#[tokio::test(start_paused = true)]
async fn emitting_an_undeclared_event_inside_a_service_is_warned_once_and_counted()
-> anyhow::Result<()> {
    start_observed!(host, logs, counters);
    let (tx, mut rx) = mpsc::unbounded_channel::<String>();
    // Host-wide subscribers take any name: the event is still delivered.
    let _all = host
        .events()
        .on("*")
        .handle_envelope(move |e| {
            let _ = tx.send(e.name().to_owned());
            async {}
        })
        .subscribe()
        .await?;

    let emitter = host.services::<Emitter>();
    for _ in 0..3 {
        emitter
            .clone()
            .action("emit_named", "Tock")
            .execute()
            .await?;
        assert_eq!(next(&mut rx).await, "Tock");
    }
    emitter.action("emit_named", "Tick").execute().await?;
    assert_eq!(next(&mut rx).await, "Tick");

    // Warned once.
    logs.assert_lines("declares no event `Tock`", 1, "WARN");
    assert!(logs.lines_with("declares no event `Tick`").is_empty());
    let labels = [("service", "Emitter"), ("event", "Tock")];
    assert_eq!(counters.get("koan_events_undeclared_total", &labels), 3);
    stop(&host).await
}

#[tokio::test(start_paused = true)]
async fn a_payload_type_that_never_fits_is_warned_once_per_subscription_and_counted()
-> anyhow::Result<()> {
    start_observed!(host, logs, counters);
    // `Tick` carries a number: a filter on text and a handler of text never fit.
    let _filtered = host
        .service("Emitter")
        .on("Tick")
        .filter(|s: &String| !s.is_empty())
        .handle(|_: u32| async {})
        .subscribe()
        .await?;
    let _handled = host
        .service("Emitter")
        .on("Tick")
        .handle(|_: String| async {})
        .subscribe()
        .await?;
    // A subscriber that fits shows when each event has been through the others.
    let (_witness, mut rx) = forwarded::<u32>(&host, "Tick", Overflow::DropNewest).await?;

    for n in 0..3u32 {
        host.emit("Emitter", "Tick", n).await?;
        assert_eq!(next(&mut rx).await, n);
    }
    koan::testing::settle().await;

    // Each warned once.
    let (filter, handler) = ("an event filter takes", "an event handler takes");
    let taken = "`alloc::string::String`";
    logs.assert_lines(&format!("{filter} {taken}"), 1, "event `Tick` of `Emitter`");
    logs.assert_lines(&format!("{handler} {taken}"), 1, "WARN");
    // Not said again as a handler failure on every event.
    assert!(logs.lines_with("event handler failed").is_empty());
    let labels = [("service", "Emitter"), ("event", "Tick")];
    assert_eq!(
        counters.get("koan_event_payload_mismatches_total", &labels),
        6
    );
    stop(&host).await
}

#[tokio::test(start_paused = true)]
async fn every_event_dropped_for_a_full_subscriber_is_logged_and_counted() -> anyhow::Result<()> {
    start_observed!(host, logs, counters);
    // The default policy, a buffer of one, and a handler stuck on its first event.
    let (_stuck, gate, mut rx) = stuck_subscriber(&host, 1, Overflow::DropNewest).await?;
    // One fits in the buffer; the next ten do not. (Bounded: a subscriber
    // that wrongly waited for room would hold these for ever.)
    for n in 1..=11u32 {
        koan::testing::within("an emit", host.emit("Emitter", "Tick", n)).await?;
    }
    let labels = [("service", "Emitter"), ("event", "Tick")];
    assert_eq!(counters.get("koan_events_dropped_total", &labels), 10);
    // Each counted; logged at the 1st, 2nd, 4th and 8th, saying how to keep them
    // (a line per drop wrote 66 MB and slowed the emitter tenfold; found by a probe).
    logs.assert_lines("subscriber buffer full; event dropped", 4, "Overflow::Wait");

    gate.add_permits(1);
    assert_eq!(next(&mut rx).await, 1, "the buffered event still comes");
    stop(&host).await
}

/// A waiting subscriber (the event's ring) and a dropping one (a channel) to
/// `Emitter`'s `Tick`, each with the handler `make` builds around the sender of its
/// own channel (where it reports the payloads it saw).
async fn on_ring_and_channel<H, Fut>(
    host: &koan::HostHandle,
    make: impl Fn(mpsc::UnboundedSender<u32>) -> H,
) -> anyhow::Result<(Vec<Subscription>, Vec<mpsc::UnboundedReceiver<u32>>)>
where
    H: Fn(u32) -> Fut + Send + Sync + 'static,
    Fut: std::future::Future<Output = Result<(), BoxError>> + Send + 'static,
{
    let (mut subs, mut receivers) = (Vec::new(), Vec::new());
    for overflow in [Overflow::Wait, Overflow::DropNewest] {
        let (tx, rx) = mpsc::unbounded_channel::<u32>();
        let sub = host
            .service("Emitter")
            .on("Tick")
            .handle(make(tx))
            .overflow(overflow)
            .subscribe()
            .await?;
        subs.push(sub);
        receivers.push(rx);
    }
    Ok((subs, receivers))
}

#[tokio::test(start_paused = true)]
async fn each_handler_run_is_counted_as_delivered_or_failed_and_failures_are_logged()
-> anyhow::Result<()> {
    start_observed!(host, logs, counters);
    // Each failing on odd payloads.
    let (subs, mut receivers) = on_ring_and_channel(&host, |tx| {
        move |n: u32| {
            let _ = tx.send(n);
            let outcome: Result<(), BoxError> = match n % 2 {
                0 => Ok(()),
                _ => Err(format!("{n} is odd").into()),
            };
            std::future::ready(outcome)
        }
    })
    .await?;
    // Bounded: one subscriber waits for room.
    for n in 0..4u32 {
        koan::testing::within("an emit", host.emit("Emitter", "Tick", n)).await?;
    }
    // Two more from another process: their envelopes carry no interned key.
    for n in 4..6u32 {
        let env = EventEnvelope::remote(
            "Emitter",
            "Tick",
            None,
            chrono::DateTime::UNIX_EPOCH,
            100,
            n.into(),
        );
        koan::testing::within("a remote event's delivery", host.deliver_remote_event(&env)).await;
    }
    for rx in &mut receivers {
        for n in 0..6u32 {
            assert_eq!(next(rx).await, n);
        }
    }
    koan::testing::settle().await;

    let labels = [("service", "Emitter"), ("event", "Tick")];
    assert_eq!(counters.get("koan_events_delivered_total", &labels), 6);
    assert_eq!(
        counters.get("koan_event_handler_failures_total", &labels),
        6
    );
    logs.assert_lines("event handler failed", 6, "is odd");
    drop(subs);
    stop(&host).await
}

#[tokio::test(start_paused = true)]
async fn handlers_still_running_after_their_first_poll_are_delivered_in_order_and_counted()
-> anyhow::Result<()> {
    start_observed!(host, logs, counters);
    // Each handler suspends before it ends: fine on even payloads, failing on 1,
    // panicking on 3 (after its first poll), and done at once on 5.
    let (subs, mut receivers) = on_ring_and_channel(&host, |tx| {
        move |n: u32| {
            let tx = tx.clone();
            async move {
                if n != 5 {
                    tokio::task::yield_now().await;
                }
                let _ = tx.send(n);
                match n {
                    1 => Err::<(), BoxError>("1 fails".into()),
                    3 => panic!("3 panics after a suspension"),
                    _ => Ok(()),
                }
            }
        }
    })
    .await?;
    // Bounded: one subscriber waits for room.
    for n in 0..8u32 {
        koan::testing::within("an emit", host.emit("Emitter", "Tick", n)).await?;
    }
    for rx in &mut receivers {
        for n in 0..8u32 {
            assert_eq!(next(rx).await, n, "delivered in order");
        }
    }
    koan::testing::settle().await;

    let labels = [("service", "Emitter"), ("event", "Tick")];
    assert_eq!(counters.get("koan_events_delivered_total", &labels), 12);
    assert_eq!(
        counters.get("koan_event_handler_failures_total", &labels),
        4
    );
    logs.assert_lines("event handler failed", 2, "1 fails");
    logs.assert_lines("event handler panicked", 2, "3 panics");
    drop(subs);
    stop(&host).await
}

/// An event name that is no name is refused, whatever the service declares: one
/// that declares none took any, an empty name (sent on a subject no one reads) or
/// 5,000 bytes (which cut the host's NATS connection; found by a probe).
#[tokio::test(start_paused = true)]
async fn an_event_name_that_is_no_name_is_refused() -> anyhow::Result<()> {
    let host = start().await?;
    let long = "e".repeat(5_000);
    for name in ["", "tick\n", long.as_str()] {
        let e = host.emit("Emitter", name, 1u32).await.expect_err("no name");
        assert_eq!(e.kind(), ErrorKind::InvalidParameters, "{e}");
        assert!(e.message().contains("the event name"), "{e}");
    }
    stop(&host).await
}

/// Declares no events: it takes any name.
#[koan::service(discover = false)]
#[derive(Default)]
struct Quiet;

impl koan::BackgroundService for Quiet {
    async fn run(&self, cx: koan::ServiceContext) -> Result<(), koan::BoxError> {
        cx.cancelled().await;
        Ok(())
    }
}

/// A subscription under a service that declares no events, to an event another
/// service declares, is accepted (it takes any name) but warned about, naming the
/// service that declares it: it heard nothing, without a word (found by a probe).
#[tokio::test(start_paused = true)]
async fn a_subscription_to_anothers_event_under_a_service_declaring_none_is_warned()
-> anyhow::Result<()> {
    let logs = Logs::default();
    let _logs = logs.capture();
    let host = koan::testing::host()
        .service::<Emitter>()
        .service::<Quiet>()
        .build()?
        .start();
    host.started().await?;
    let (tx, _rx) = mpsc::unbounded_channel::<u32>();
    let _sub = host
        .service("Quiet")
        .on("Tick")
        .handle(common::events::forward(&tx))
        .subscribe()
        .await?;
    logs.assert_lines("which declares no events", 1, "declared_by=Emitter");
    // Its own name, or any other, says nothing.
    let _own = host
        .service("Quiet")
        .on("Hush")
        .handle(common::events::forward(&tx))
        .subscribe()
        .await?;
    logs.assert_lines("which declares no events", 1, "Tick");
    stop(&host).await
}

/// A subscription to a service disabled on this host is taken (another host may
/// run it) but warned about: it was taken without a word, and nothing came (a
/// probe).
#[tokio::test(start_paused = true)]
async fn a_subscription_to_a_service_disabled_here_is_warned() -> anyhow::Result<()> {
    let logs = Logs::default();
    let _logs = logs.capture();
    let config = koan::config::Config::builder()
        .toml(
            "t",
            "[background_services.services.Emitter]\nenabled = false\n",
        )?
        .build();
    let host = koan::testing::host()
        .config(config)
        .service::<Emitter>()
        .build()?
        .start();
    host.started().await?;
    let _sub = host
        .service("Emitter")
        .on("Tick")
        .handle(|_: u32| async {})
        .subscribe()
        .await?;
    logs.assert_lines(
        "which is disabled on this host",
        1,
        "disabled by configuration",
    );
    stop(&host).await
}
