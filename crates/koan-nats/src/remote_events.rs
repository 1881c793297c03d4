//! Events from other processes: one subscription to every event subject, its
//! messages moved at once into a backlog bounded by bytes, and a task that reads,
//! checks and delivers them in order. The reading is the slow part (a peer's 1 MB
//! event of nested arrays took tens of ms): read on the subscription's own task,
//! the messages waited in the client's buffer (65,536 of them, 1 MB each at
//! most), and a peer's flood grew a host to its 4 GB limit (found by a probe).
//! Past [`BACKLOG_BYTES`] waiting, an event is dropped unread and counted
//! (`koan_nats_events_refused_total{reason="backlog"}`), as a slow subscriber's
//! are.

use std::collections::VecDeque;
use std::sync::Mutex;

use async_nats::{Message, Subscriber};
use futures_util::StreamExt;
use koan::HostHandle;
use koan::transport::HostLink as _;
use tokio::sync::Notify;
use tokio::task::JoinHandle;

use crate::subjects;
use crate::transport::NatsTransport;
use crate::wire::{self, WireEvent};

/// The most bytes of events (their subjects and bodies) waiting to be read.
const BACKLOG_BYTES: usize = 16 * 1024 * 1024;

/// The events waiting to be read, and their bytes.
#[derive(Default)]
struct Backlog {
    waiting: Mutex<(VecDeque<Message>, usize)>,
    ready: Notify,
}

impl Backlog {
    /// Keeps `msg` to be read, unless [`BACKLOG_BYTES`] wait already (one is
    /// always kept when none waits); whether it was kept.
    fn push(&self, msg: &Message) -> bool {
        let n = size(msg);
        let kept = self.waiting.lock().is_ok_and(|mut w| {
            if w.1 + n > BACKLOG_BYTES && !w.0.is_empty() {
                return false;
            }
            w.1 += n;
            w.0.push_back(msg.clone());
            true
        });
        if kept {
            self.ready.notify_one();
        }
        kept
    }

    /// The next message to read, if one waits.
    fn pop(&self) -> Option<Message> {
        let mut w = self.waiting.lock().ok()?;
        let msg = w.0.pop_front()?;
        w.1 -= size(&msg);
        Some(msg)
    }
}

/// The size a message is counted at in the backlog: its length as received
/// (body and headers: a header counted by name alone let a peer's 1 MB header
/// values past the bound; a review), its subject and reply.
fn size(msg: &Message) -> usize {
    msg.length.max(msg.payload.len())
        + msg.subject.len()
        + msg.reply.as_ref().map_or(0, |r| r.len())
}

/// Starts taking `events` (this host's own left out) and delivering them to
/// `host`: the two tasks.
pub(crate) fn follow(
    mut events: Subscriber,
    host: HostHandle,
    t: NatsTransport,
) -> [JoinHandle<()>; 2] {
    let backlog = std::sync::Arc::new(Backlog::default());
    let me = t.inner.host_id.clone();
    let taking = {
        let backlog = std::sync::Arc::clone(&backlog);
        tokio::spawn(async move {
            let full = koan::transport::Sparse::new();
            while let Some(msg) = events.next().await {
                if wire::header_str(msg.headers.as_ref(), wire::H_ORIGIN) == Some(me.as_str()) {
                    continue;
                }
                if !backlog.push(&msg) {
                    events_refused("backlog");
                    if let Some(n) = full.hit() {
                        tracing::warn!(
                            subject = logged(&msg.subject),
                            refused = n,
                            "event from NATS dropped unread: {BACKLOG_BYTES} bytes of events wait to be read here (a peer sends faster than this host reads)"
                        );
                    }
                }
            }
        })
    };
    // Ends only when aborted: the node's detach (or drop) aborts both tasks.
    let reading = tokio::spawn(async move {
        let mut reader = Reader::default();
        loop {
            match backlog.pop() {
                Some(msg) => reader.deliver(&t, &host, &msg).await,
                None => backlog.ready.notified().await,
            }
        }
    });
    [taking, reading]
}

/// What the reading task keeps between events: one count of each cause of a
/// refusal (a flood of one does not hide another: all shared one, and a peer of
/// a newer wire version went unsaid after a burst of junk; found by a probe),
/// and the names delivered of services that declare none.
#[derive(Default)]
struct Reader {
    refused: koan::transport::Sparse,
    unreadable: koan::transport::Sparse,
    other_version: koan::transport::Sparse,
    names: UndeclaredNames,
}

impl Reader {
    /// Reads `msg`, and delivers its event to `host` unless it is refused. Each
    /// refusal is said in the log at the 1st, 2nd, 4th, … one, its subject cut,
    /// so that a flood does not flood the log too (20,000 unreadable events on a
    /// long subject wrote 80 MB to each host's log; found by a probe).
    async fn deliver(&mut self, t: &NatsTransport, host: &HostHandle, msg: &Message) {
        let subject = logged(&msg.subject);
        // An event has no one to answer: one in another version is logged and
        // skipped, never guessed at.
        if let Some(refusal) = wire::refuse_version(msg.headers.as_ref()) {
            events_refused("other_version");
            if let Some(n) = self.other_version.hit() {
                tracing::warn!(subject, refused = n, reason = ?refusal.message, "event in another wire version skipped");
            }
            return;
        }
        match serde_json::from_slice::<WireEvent>(&msg.payload) {
            Ok(ev) => match refusal(t, &msg.subject, &ev, &mut self.names) {
                None => host.deliver_remote_event(&ev.into_envelope()).await,
                Some(why) => {
                    events_refused("refused");
                    if let Some(n) = self.refused.hit() {
                        tracing::warn!(subject, refused = n, "event from NATS refused: {why}");
                    }
                }
            },
            Err(e) => {
                events_refused("unreadable");
                if let Some(n) = self.unreadable.hit() {
                    tracing::warn!(error = %e, subject, refused = n, "unreadable event from NATS");
                }
            }
        }
    }
}

/// Why an event that came on `subject` is not delivered here, if it is not: its
/// body must name the service and event its subject does (the names a subscriber
/// and the metrics key it by), and a service the cluster announced. Before, a
/// publisher's made-up names were delivered and counted as given: 3,000 events
/// with random names made 15,000 metric series on every host (a probe).
fn refusal(
    t: &NatsTransport,
    subject: &str,
    ev: &WireEvent,
    names: &mut UndeclaredNames,
) -> Option<String> {
    if subjects::event(&ev.service, &ev.event) != subject {
        return Some(format!(
            "its body names event `{}` of `{}`, which is not the one its subject names",
            ev.event.escape_debug(),
            ev.service.escape_debug()
        ));
    }
    if t.view().knows(&ev.service) == Some(false) {
        return Some(format!(
            "no instance of the cluster announced service `{}`",
            ev.service.escape_debug()
        ));
    }
    // Its correlation id follows the rule a call's does: a 60 KB one with
    // terminal escapes went into every stream and page that shows events (found
    // by a probe).
    if let Some(id) = &ev.correlation_id
        && let Err(why) = koan::action::check_correlation_id(id)
    {
        return Some(format!("its correlation id {why}"));
    }
    // Nor an event its service's instances do not declare: a publisher's made-up
    // names of a known service still made metric series and kept memory on every
    // host, each slowing the next (50,000 names: 22 MB of metrics, 280 MB kept,
    // and real events waited 11 minutes behind them; found by a probe).
    match t.view().declares_event(&ev.service, &ev.event) {
        Some(false) => Some(format!(
            "no instance of service `{}` declares an event `{}` (declare it with `#[service(event(…))]` to have it delivered to other processes)",
            ev.service.escape_debug(),
            ev.event.escape_debug()
        )),
        Some(true) => None,
        // A service that declares none takes any name: at most so many of them.
        None => names.take(&ev.service, &ev.event),
    }
}

/// The names of the events delivered here of services that declare none (or
/// whose instances do not say), at most [`UndeclaredNames::MAX`] a service: a
/// publisher's made-up names made a metric key each on every host.
#[derive(Default)]
struct UndeclaredNames(std::collections::HashMap<String, std::collections::HashSet<String>>);

impl UndeclaredNames {
    const MAX: usize = 256;

    /// Why event `event` of `service` is refused, if it is: a new name past the
    /// service's [`MAX`](Self::MAX).
    fn take(&mut self, service: &str, event: &str) -> Option<String> {
        let seen = self.0.entry(service.to_ascii_lowercase()).or_default();
        if seen.contains(event) {
            return None;
        }
        if seen.len() >= Self::MAX {
            return Some(format!(
                "service `{}` declares no events, and {} names of its events were delivered here already: a new one (`{}`) is refused (declare the service's events)",
                service.escape_debug(),
                Self::MAX,
                event.escape_debug()
            ));
        }
        seen.insert(event.to_owned());
        None
    }
}

/// Counts an event from NATS not delivered, by why: `koan_nats_events_refused_total`.
fn events_refused(why: &'static str) {
    metrics::counter!("koan_nats_events_refused_total", "reason" => why).increment(1);
}

/// A subject as a log line shows it: its first 200 characters (a hostile one
/// may be near the broker's `max_payload`).
fn logged(subject: &str) -> &str {
    subject
        .char_indices()
        .nth(200)
        .map_or(subject, |(end, _)| &subject[..end])
}

#[cfg(test)]
mod tests {
    use super::UndeclaredNames;

    fn event_of(bytes: usize) -> async_nats::Message {
        async_nats::Message {
            subject: "koan.evt.s.e".into(),
            reply: None,
            payload: vec![b'x'; bytes].into(),
            headers: None,
            status: None,
            description: None,
            length: bytes,
        }
    }

    #[test]
    fn the_events_waiting_to_be_read_are_bounded_by_bytes() {
        let backlog = super::Backlog::default();
        // A peer's 1 MB events: 16 wait, the next are dropped unread.
        let kept = (0..40)
            .filter(|_| backlog.push(&event_of(1024 * 1024 - 100)))
            .count();
        assert_eq!(kept, 16);
        // Read one: room for one more.
        assert!(backlog.pop().is_some());
        assert!(backlog.push(&event_of(1024 * 1024 - 100)));
        assert!(!backlog.push(&event_of(1024 * 1024 - 100)));
        // Emptied, one larger than the whole budget is still taken.
        while backlog.pop().is_some() {}
        assert!(backlog.push(&event_of(super::BACKLOG_BYTES + 1)));
        assert!(backlog.pop().is_some() && backlog.pop().is_none());
    }

    #[test]
    fn a_logged_subject_is_cut_at_200_characters() {
        let long = "é".repeat(5_000);
        assert_eq!(super::logged(&long).chars().count(), 200);
        assert_eq!(super::logged("koan.evt.s.e"), "koan.evt.s.e");
    }

    #[test]
    fn a_service_that_declares_no_events_is_delivered_so_many_names() {
        let mut names = UndeclaredNames::default();
        for n in 0..UndeclaredNames::MAX {
            assert_eq!(names.take("Plain", &format!("e{n}")), None);
        }
        assert_eq!(names.take("PLAIN", "e0"), None, "a name seen before");
        let refused = names.take("Plain", "new").unwrap_or_default();
        assert!(
            refused.contains("a new one (`new`) is refused"),
            "{refused}"
        );
        assert_eq!(names.take("Other", "new"), None, "another service's");
    }
}
