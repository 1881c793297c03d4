//! This host's events on their way to other processes: what waits for the broker
//! is bounded by bytes as well as by count, and an event larger than the broker
//! takes is dropped at once; each counted in
//! `koan_events_unpublished_total{service, reason}` and said at the 1st, 2nd, 4th,
//! … one. Before, a stalled broker let 900 KB events grow a host from 30 MB to
//! 1.95 GB and an abort, and 300 events over the broker's `max_payload` wrote 300
//! warnings naming neither service nor event, counted nowhere (found by a tester).
//! The recorder is the process's: each test counts under a service of its own.

use koan_test_support::logs::Logs;
use std::sync::{Arc, OnceLock};

use futures_util::StreamExt;
use koan::event::EventEnvelope;
use koan::testing::Counters;
use koan::transport::Transport as _;
use koan_nats::NatsTransport;
use koan_test_support::nats::{NatsServer, test_options};
use koan_test_support::within;

/// The process's recorder, installed by the first test to call it (before it counts).
fn counters() -> &'static Counters {
    static COUNTERS: OnceLock<Arc<Counters>> = OnceLock::new();
    COUNTERS.get_or_init(|| {
        let counters = Arc::new(Counters::default());
        let _ = metrics::set_global_recorder(Arc::clone(&counters));
        counters
    })
}

fn unpublished(service: &str, reason: &str) -> u64 {
    counters().get(
        "koan_events_unpublished_total",
        &[("service", service), ("reason", reason)],
    )
}

/// An event `Blob` of `service` whose payload is a string of `bytes` bytes.
fn blob(service: &str, bytes: usize) -> EventEnvelope {
    let payload = serde_json::Value::String("x".repeat(bytes));
    EventEnvelope::remote(
        service,
        "Blob",
        None,
        chrono::DateTime::UNIX_EPOCH,
        1,
        payload,
    )
}

/// A plain client's subscription to the events of `service`, in place.
async fn watch(server: &NatsServer, service: &str) -> anyhow::Result<async_nats::Subscriber> {
    let client = async_nats::connect(server.url()).await?;
    let events = client
        .subscribe(format!("koan.evt.{}.>", service.to_lowercase()))
        .await?;
    client.flush().await?;
    Ok(events)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stalled_broker_holds_at_most_16_mib_of_events_here() -> anyhow::Result<()> {
    const EVENTS: u64 = 100;
    const SIZE: usize = 900_000;
    counters();
    let server = NatsServer::start()?;
    let nats = NatsTransport::connect(test_options(&server.url())).await?;
    let mut seen = watch(&server, "Stalled").await?;
    // The publishing task is at work (it waits up to 5 s for the host's first
    // announcement, which a bare transport never makes).
    nats.publish(&blob("Stalled", 10));
    within("the first event at the broker", seen.next()).await?;
    server.pause()?;
    for _ in 0..EVENTS {
        nats.publish(&blob("Stalled", SIZE));
        tokio::task::yield_now().await;
    }
    let taken = EVENTS - unpublished("Stalled", "queue_full");
    // 16 MiB wait here at most, in the queue or the client's buffer; the
    // connection's socket buffers hold some MiB more. By count alone (10,000
    // events, and the client's buffer behind them) every one was taken: 90 MB.
    assert!(
        (1..=32 * 1024 * 1024 / SIZE as u64).contains(&taken),
        "{taken} events of {SIZE} bytes taken for a stalled broker"
    );

    // Once the broker reads again, what was taken reaches it, and the bound is
    // free again for the next: a 900 KB event is taken and goes.
    server.resume()?;
    for n in 0..taken {
        within(&format!("taken event {n} at the broker"), seen.next()).await?;
    }
    nats.publish(&blob("Stalled", SIZE));
    within("one more event at the broker", seen.next()).await?;
    assert_eq!(EVENTS - unpublished("Stalled", "queue_full"), taken);
    Ok(())
}

#[tokio::test]
async fn an_event_larger_than_the_broker_takes_is_counted_and_said_sparsely() -> anyhow::Result<()>
{
    let logs = Logs::default();
    let _logs = logs.capture();
    counters();
    let server = NatsServer::start()?;
    let nats = NatsTransport::connect(test_options(&server.url())).await?;
    let mut seen = watch(&server, "Oversized").await?;
    // The server's default `max_payload` is 1 MiB.
    for _ in 0..5 {
        nats.publish(&blob("Oversized", 1_100_000));
    }
    assert_eq!(unpublished("Oversized", "too_large"), 5);
    // At the 1st, 2nd and 4th, naming the service, the event, its size and the
    // limit.
    let lines = logs.lines_with("not published");
    assert_eq!(lines.len(), 3, "{lines:?}");
    for said in ["`Blob` of `Oversized`", "1100", "1048576 at most"] {
        assert!(lines[0].contains(said), "{said:?} in {}", lines[0]);
    }

    // A smaller one goes, and it is the first to reach the broker.
    nats.publish(&blob("Oversized", 1_000));
    let msg = within("the smaller event at the broker", seen.next()).await?;
    let len = msg.map(|m| m.payload.len()).unwrap_or_default();
    assert!(len < 2_000, "{len} bytes");
    assert!(logs.lines_with("could not publish").is_empty());
    Ok(())
}
