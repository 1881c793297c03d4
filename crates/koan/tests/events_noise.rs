//! Mistakes with events that used to pass in silence now make noise: a detached
//! subscription keeps delivering, an undeclared event is refused or warned about, a
//! payload type that never fits is warned about and counted, and a dropped event is
//! logged and counted. Logs are captured per test (current-thread runtime) and
//! counters read from a recorder installed for the test's thread.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use koan::{
    ActionContext, Actions, Background, BackgroundService, BoxError, HostHandle, Service,
    ServiceContext, ServiceOptions, error::ErrorKind,
};
use tokio::sync::mpsc;

#[derive(Default)]
struct Emitter;

impl Service for Emitter {
    type Kind = Background;

    fn options() -> ServiceOptions {
        ServiceOptions::named("Emitter")
    }

    fn actions(a: &mut Actions<Self>) {
        a.action(
            "emit",
            |_svc: Arc<Self>, name: String, cx: ActionContext| async move {
                cx.emit(&name, 7u32).await;
                Ok::<_, BoxError>(())
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

async fn start() -> anyhow::Result<HostHandle> {
    let host = koan::testing::host().service::<Emitter>().build()?.start();
    host.started().await?;
    Ok(host)
}

/// The next value, failing (on the paused clock, after a virtual minute) instead of
/// hanging when none comes.
async fn next<T>(rx: &mut mpsc::UnboundedReceiver<T>) -> T {
    koan::testing::within("the next delivery", rx.recv())
        .await
        .expect("channel closed")
}

/// Counters by `name{label=value,…}`, for the thread that installs it.
#[derive(Default)]
struct Counters(Mutex<HashMap<String, Arc<AtomicU64>>>);

impl Counters {
    fn get(&self, name: &str, labels: &[(&str, &str)]) -> u64 {
        let key = key_text(name, labels.iter().map(|(k, v)| (*k, *v)));
        let map = self.0.lock().expect("counters");
        map.get(&key).map_or(0, |c| c.load(Ordering::Relaxed))
    }
}

fn key_text<'a>(name: &str, labels: impl Iterator<Item = (&'a str, &'a str)>) -> String {
    let mut labels: Vec<_> = labels.map(|(k, v)| format!("{k}={v}")).collect();
    labels.sort();
    format!("{name}{{{}}}", labels.join(","))
}

impl metrics::Recorder for Counters {
    fn describe_counter(
        &self,
        _: metrics::KeyName,
        _: Option<metrics::Unit>,
        _: metrics::SharedString,
    ) {
    }
    fn describe_gauge(
        &self,
        _: metrics::KeyName,
        _: Option<metrics::Unit>,
        _: metrics::SharedString,
    ) {
    }
    fn describe_histogram(
        &self,
        _: metrics::KeyName,
        _: Option<metrics::Unit>,
        _: metrics::SharedString,
    ) {
    }
    fn register_counter(&self, key: &metrics::Key, _: &metrics::Metadata<'_>) -> metrics::Counter {
        let text = key_text(key.name(), key.labels().map(|l| (l.key(), l.value())));
        let mut map = self.0.lock().expect("counters");
        metrics::Counter::from_arc(Arc::clone(map.entry(text).or_default()))
    }
    fn register_gauge(&self, _: &metrics::Key, _: &metrics::Metadata<'_>) -> metrics::Gauge {
        metrics::Gauge::noop()
    }
    fn register_histogram(
        &self,
        _: &metrics::Key,
        _: &metrics::Metadata<'_>,
    ) -> metrics::Histogram {
        metrics::Histogram::noop()
    }
}

/// Log lines written while it is installed on this thread.
#[derive(Clone, Default)]
struct Logs(Arc<Mutex<Vec<u8>>>);

impl std::io::Write for Logs {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().expect("logs").extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl Logs {
    fn capture(&self) -> tracing::subscriber::DefaultGuard {
        let writer = self.clone();
        let subscriber = tracing_subscriber::fmt()
            .with_ansi(false)
            .with_writer(move || writer.clone())
            .finish();
        tracing::subscriber::set_default(subscriber)
    }

    fn lines_with(&self, needle: &str) -> Vec<String> {
        let text = String::from_utf8_lossy(&self.0.lock().expect("logs")).into_owned();
        text.lines()
            .filter(|l| l.contains(needle))
            .map(str::to_owned)
            .collect()
    }
}

#[tokio::test(start_paused = true)]
async fn a_detached_subscription_keeps_delivering() -> anyhow::Result<()> {
    let host = start().await?;
    let (tx, mut rx) = mpsc::unbounded_channel::<u32>();
    host.service("Emitter")
        .on("Tick")
        .handle(move |n: u32| {
            let _ = tx.send(n);
            async {}
        })
        .subscribe()
        .await?
        .detach();

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
    koan::testing::stop(&host).await?;
    Ok(())
}

#[tokio::test(start_paused = true)]
async fn emitting_an_undeclared_event_inside_a_service_is_warned_once_and_counted()
-> anyhow::Result<()> {
    let (logs, counters) = (Logs::default(), Counters::default());
    let _logs = logs.capture();
    let _counters = metrics::set_default_local_recorder(&counters);
    let host = start().await?;
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
        emitter.clone().action("emit", "Tock").execute().await?;
        assert_eq!(next(&mut rx).await, "Tock");
    }
    emitter.action("emit", "Tick").execute().await?;
    assert_eq!(next(&mut rx).await, "Tick");

    let warned = logs.lines_with("declares no event `Tock`");
    assert_eq!(warned.len(), 1, "warned once: {warned:?}");
    assert!(warned[0].contains("WARN"), "{}", warned[0]);
    assert!(logs.lines_with("declares no event `Tick`").is_empty());
    let labels = [("service", "Emitter"), ("event", "Tock")];
    assert_eq!(counters.get("koan_events_undeclared_total", &labels), 3);
    koan::testing::stop(&host).await?;
    Ok(())
}

#[tokio::test(start_paused = true)]
async fn a_payload_type_that_never_fits_is_warned_once_per_subscription_and_counted()
-> anyhow::Result<()> {
    let (logs, counters) = (Logs::default(), Counters::default());
    let _logs = logs.capture();
    let _counters = metrics::set_default_local_recorder(&counters);
    let host = start().await?;
    let (tx, mut rx) = mpsc::unbounded_channel::<u32>();
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
    let _witness = host
        .service("Emitter")
        .on("Tick")
        .handle(move |n: u32| {
            let _ = tx.send(n);
            async {}
        })
        .subscribe()
        .await?;

    for n in 0..3u32 {
        host.emit("Emitter", "Tick", n).await?;
        assert_eq!(next(&mut rx).await, n);
    }
    koan::testing::settle().await;

    let filter = logs.lines_with("an event filter takes `alloc::string::String`");
    assert_eq!(filter.len(), 1, "warned once: {filter:?}");
    assert!(
        filter[0].contains("event `Tick` of `Emitter`"),
        "{}",
        filter[0]
    );
    let handler = logs.lines_with("an event handler takes `alloc::string::String`");
    assert_eq!(handler.len(), 1, "warned once: {handler:?}");
    assert!(handler[0].contains("WARN"), "{}", handler[0]);
    // Not said again as a handler failure on every event.
    assert!(logs.lines_with("event handler failed").is_empty());
    let labels = [("service", "Emitter"), ("event", "Tick")];
    assert_eq!(
        counters.get("koan_event_payload_mismatches_total", &labels),
        6
    );
    koan::testing::stop(&host).await?;
    Ok(())
}

#[tokio::test(start_paused = true)]
async fn every_event_dropped_for_a_full_subscriber_is_logged_and_counted() -> anyhow::Result<()> {
    let (logs, counters) = (Logs::default(), Counters::default());
    let _logs = logs.capture();
    let _counters = metrics::set_default_local_recorder(&counters);
    let host = start().await?;
    let gate = Arc::new(tokio::sync::Semaphore::new(0));
    let (tx, mut rx) = mpsc::unbounded_channel::<u32>();
    // The default policy, a buffer of one, and a handler stuck on its first event.
    let _stuck = host
        .service("Emitter")
        .on("Tick")
        .handle({
            let gate = Arc::clone(&gate);
            move |n: u32| {
                let (tx, gate) = (tx.clone(), Arc::clone(&gate));
                async move {
                    let _ = tx.send(n);
                    gate.acquire().await?.forget();
                    Ok::<(), BoxError>(())
                }
            }
        })
        .buffer(1)
        .subscribe()
        .await?;

    host.emit("Emitter", "Tick", 0u32).await?;
    assert_eq!(next(&mut rx).await, 0, "the handler is now stuck");
    // One more fits in the buffer; the next three do not.
    for n in 1..=4u32 {
        host.emit("Emitter", "Tick", n).await?;
    }
    let labels = [("service", "Emitter"), ("event", "Tick")];
    assert_eq!(counters.get("koan_events_dropped_total", &labels), 3);
    let dropped = logs.lines_with("subscriber buffer full; event dropped");
    assert_eq!(dropped.len(), 3, "one line per dropped event: {dropped:?}");
    assert!(
        dropped[0].contains("Overflow::Wait"),
        "says how to keep them: {}",
        dropped[0]
    );

    gate.add_permits(2);
    assert_eq!(next(&mut rx).await, 1, "the buffered event still comes");
    koan::testing::stop(&host).await?;
    Ok(())
}
