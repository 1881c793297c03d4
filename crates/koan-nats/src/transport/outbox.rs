//! Events on their way to the broker: a queue bounded by count and by bytes, and
//! the one task that publishes them, in emission order.
//!
//! Bounded by count alone, a stalled broker (a stopped process, a full link) let a
//! host's 900 KB events pile up in the queue and in the client's own buffer behind
//! it (also bounded by count): 30 MB to 1.95 GB in 40 s, then an aborted process
//! (found by a tester). Now the bytes of events taken and not yet written out to the
//! connection are bounded too, by [`QUEUE_BYTES`]: the task hands the client at
//! most [`FLUSH_BYTES`] before it waits for them to be written out. Delivery to
//! other processes is at most once (docs/guide.md, "Events"): what does not fit is
//! dropped, counted and said, as is an event larger than the broker takes.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use async_nats::{Client, HeaderMap, PublishErrorKind};
use koan::event::EventEnvelope;
use koan::transport::Sparse;
use tokio::sync::mpsc::error::TrySendError;
use tokio::sync::{Notify, mpsc};

use crate::subjects;
use crate::wire::{self, WireEvent};

/// The most events waiting for the broker.
pub(crate) const QUEUE_EVENTS: usize = 10_000;
/// The most bytes of events (subjects and bodies) waiting for the broker: queued
/// here, or handed to the client and not yet written out to the connection. As
/// the receiving side's backlog (`remote_events.rs`); one event is always taken
/// when none waits, however large.
pub(crate) const QUEUE_BYTES: usize = 16 * 1024 * 1024;
/// Bytes handed to the client between two waits for them to be written out.
const FLUSH_BYTES: usize = 1024 * 1024;

/// One event to publish; its names for the count and the log if it fails.
struct Outgoing {
    subject: String,
    body: bytes::Bytes,
    service: String,
    event: String,
}

impl Outgoing {
    /// What it weighs against [`QUEUE_BYTES`].
    fn weight(&self) -> usize {
        self.subject.len() + self.body.len()
    }
}

/// Why an event was not published: the `reason` of `koan_events_unpublished_total`.
#[derive(Clone, Copy)]
enum Unpublished {
    /// The queue held [`QUEUE_EVENTS`] events or [`QUEUE_BYTES`] bytes.
    QueueFull,
    /// Larger than the broker's `max_payload`.
    TooLarge,
    /// The client refused it otherwise.
    Failed,
}

impl Unpublished {
    fn label(self) -> &'static str {
        match self {
            Unpublished::QueueFull => "queue_full",
            Unpublished::TooLarge => "too_large",
            Unpublished::Failed => "failed",
        }
    }
}

/// How often each reason came: each said at its 1st, 2nd, 4th, … time (a warning
/// each wrote a line per event: 300 of them for 300 events too large), one count
/// a reason so that a flood of one does not hide another.
#[derive(Default)]
struct Said {
    queue_full: Sparse,
    too_large: Sparse,
    failed: Sparse,
}

impl Said {
    /// Counts an event of `service` not published for `why`: `Some(n)` when this,
    /// the `n`-th for that reason, is one to log.
    fn count(&self, why: Unpublished, service: &str) -> Option<u64> {
        metrics::counter!("koan_events_unpublished_total", "service" => service.to_owned(), "reason" => why.label())
            .increment(1);
        match why {
            Unpublished::QueueFull => &self.queue_full,
            Unpublished::TooLarge => &self.too_large,
            Unpublished::Failed => &self.failed,
        }
        .hit()
    }
}

/// The sending side: what `Transport::publish` hands its events to.
pub(crate) struct Outbox {
    tx: mpsc::Sender<Outgoing>,
    /// Bytes of events taken and not yet written out (the task takes them off).
    waiting: Arc<AtomicUsize>,
    /// Its `max_payload`, which follows the server it is connected to.
    client: Client,
    /// The length on the wire of the headers each event carries (the broker's
    /// limit is on headers and body together).
    headers_len: usize,
    said: Arc<Said>,
}

impl Outbox {
    /// Starts the publishing task for `client`, its events from `origin`; it
    /// waits (up to 5 s) for `announced` first.
    pub(crate) fn start(client: Client, origin: &str, announced: Arc<Notify>) -> Self {
        let (tx, rx) = mpsc::channel(QUEUE_EVENTS);
        let mut headers = HeaderMap::new();
        headers.insert(wire::H_WIRE, wire::VERSION);
        headers.insert(wire::H_ORIGIN, origin);
        // As the client counts them: "NATS/1.0\r\n", "name: value\r\n" each, "\r\n".
        let headers_len = [
            (wire::H_WIRE.to_string(), wire::VERSION),
            (wire::H_ORIGIN.to_string(), origin),
        ]
        .iter()
        .map(|(k, v)| k.len() + v.len() + 4)
        .sum::<usize>()
            + 12;
        let outbox = Outbox {
            tx,
            waiting: Arc::default(),
            client: client.clone(),
            headers_len,
            said: Arc::default(),
        };
        let task = Publisher {
            client,
            headers,
            waiting: Arc::clone(&outbox.waiting),
            said: Arc::clone(&outbox.said),
        };
        tokio::spawn(task.run(rx, announced));
        outbox
    }

    /// Queues `event` for the broker, or drops it, counted and said: too large
    /// for the broker, or no room left.
    ///
    /// On the emitter's path, per event: a load of the client's `max_payload`
    /// and one atomic add.
    pub(crate) fn publish(&self, event: &EventEnvelope) {
        let wire = WireEvent::of(event);
        let subject = subjects::event(&wire.service, &wire.event);
        let body = serde_json::to_vec(&wire).unwrap_or_default().into();
        let out = Outgoing {
            subject,
            body,
            service: wire.service,
            event: wire.event,
        };
        let (size, max) = (out.body.len() + self.headers_len, self.client.max_payload());
        if size > max {
            if let Some(n) = self.said.count(Unpublished::TooLarge, &out.service) {
                too_large(&out.service, &out.event, size, max, n);
            }
            return;
        }
        let weight = out.weight();
        let before = self.waiting.fetch_add(weight, Ordering::Relaxed);
        let refused = if before > 0 && before + weight > QUEUE_BYTES {
            Some((out, Unpublished::QueueFull, "16 MiB of events wait"))
        } else {
            match self.tx.try_send(out) {
                Ok(()) => None,
                Err(TrySendError::Full(out)) => {
                    Some((out, Unpublished::QueueFull, "10,000 events wait"))
                }
                Err(TrySendError::Closed(out)) => {
                    Some((out, Unpublished::Failed, "its publishing task has ended"))
                }
            }
        };
        let Some((out, why, bound)) = refused else {
            return;
        };
        self.waiting.fetch_sub(weight, Ordering::Relaxed);
        if let Some(n) = self.said.count(why, &out.service) {
            tracing::warn!(service = %out.service, event = %out.event, unpublished = n, "NATS event queue full ({bound} for the broker): event `{}` of `{}` not published to other processes (said at the 1st, 2nd, 4th, … one; counted in `koan_events_unpublished_total{{reason=\"{}\"}}`)", out.event, out.service, why.label());
        }
    }
}

/// The log line of an event of `size` bytes, past the broker's `max`.
fn too_large(service: &str, event: &str, size: usize, max: usize, n: u64) {
    tracing::warn!(
        service,
        event,
        size,
        max_payload = max,
        unpublished = n,
        "event `{event}` of `{service}` not published to other processes: {size} bytes, and the broker takes {max} at most (its `max_payload`; said at the 1st, 2nd, 4th, … one; counted in `koan_events_unpublished_total{{reason=\"too_large\"}}`)",
    );
}

/// The task that publishes the queued events, in order.
struct Publisher {
    client: Client,
    headers: HeaderMap,
    waiting: Arc<AtomicUsize>,
    said: Arc<Said>,
}

impl Publisher {
    async fn run(self, mut rx: mpsc::Receiver<Outgoing>, announced: Arc<Notify>) {
        let _ = tokio::time::timeout(Duration::from_secs(5), announced.notified()).await;
        // Handed to the client, and not yet known to be written out.
        let mut handed = 0;
        while let Some(out) = rx.recv().await {
            handed += out.weight();
            let Outgoing {
                subject,
                body,
                service,
                event,
            } = out;
            let size = body.len();
            let headers = self.headers.clone();
            if let Err(e) = self
                .client
                .publish_with_headers(subject, headers, body)
                .await
            {
                self.failed(&service, &event, size, &e);
            }
            // The client's buffer is bounded by count only: it is given no more
            // until what it has is written out (a stalled broker holds this
            // here, and the queue fills to its bound instead).
            // Also once nothing more waits: what was handed is not counted as
            // waiting while the queue is idle (a large event was refused as
            // "16 MiB wait" when nothing did; a review).
            if handed >= FLUSH_BYTES || (handed > 0 && rx.is_empty()) {
                let _ = self.client.flush().await;
                self.waiting.fetch_sub(handed, Ordering::Relaxed);
                handed = 0;
            }
        }
    }

    #[cold]
    fn failed(&self, service: &str, event: &str, size: usize, e: &async_nats::PublishError) {
        if e.kind() == PublishErrorKind::MaxPayloadExceeded {
            // Past the check made when it was queued: the connection's limit
            // changed meanwhile (another server).
            if let Some(n) = self.said.count(Unpublished::TooLarge, service) {
                too_large(service, event, size, self.client.max_payload(), n);
            }
        } else if let Some(n) = self.said.count(Unpublished::Failed, service) {
            tracing::warn!(service, event, error = %e, unpublished = n, "event `{event}` of `{service}` not published to other processes (said at the 1st, 2nd, 4th, … one; counted in `koan_events_unpublished_total{{reason=\"failed\"}}`)");
        }
    }
}
