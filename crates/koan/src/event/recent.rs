//! The events a host keeps for pages opened after they happened, and the one
//! owner of each event's arrival number: this host's count of the events it saw
//! (its own and other hosts'), given as each is kept, so the kept events are in
//! that order. An event stream's ids are these numbers, so a client that
//! reconnects with `Last-Event-ID` is sent the kept events it missed.
//!
//! (The ids were the emitting host's `seq`: in a cluster two hosts' events had
//! the same id, and a reconnect lost every event of its gap; found by a probe.)

use std::collections::VecDeque;
use std::sync::Arc;

use super::bus::Shared;
use super::envelope::EventEnvelope;
use crate::sync::Mutex;

/// How many events the host keeps for [`crate::HostHandle::recent_events`].
pub const RECENT_EVENTS: usize = 256;

/// How many bytes of event payloads (their memory or JSON, about) the kept events
/// hold at most; past it the oldest payloads are let go (`{"payload_dropped": …}`
/// in their place), the events kept, the newest whole however large. A peer's 256
/// events of 900 KB each were kept whole: 230 MB held, and 225 MB sent to each page
/// that opened (found by a probe); and a host's own 256 events of 1 MB, 256 MB,
/// replayed to every stream that reconnected (found by a tester).
pub const RECENT_BYTES: usize = 8 * 1024 * 1024;

/// The budget of the kept events' payloads, when only other hosts' counted.
#[deprecated(note = "every kept event's payload counts now: use `RECENT_BYTES`")]
pub const RECENT_REMOTE_BYTES: usize = RECENT_BYTES;

struct Kept {
    /// The arrival number of the last event kept.
    last: u64,
    /// Each kept event with its weight (see [`weight`]).
    events: VecDeque<(Shared, usize)>,
    /// The sum of the kept events' weights.
    bytes: usize,
}

/// `env` without its payload: a note saying it was let go, for a page or a
/// reconnecting stream that reads the kept events after.
fn let_go(env: &EventEnvelope) -> EventEnvelope {
    let mut kept = env.clone();
    kept.payload = Arc::new(serde_json::json!({
        "payload_dropped": "this host keeps at most 8 MiB of event payloads: this one was let go"
    }));
    kept
}

/// About the bytes an event's payload holds, or takes as JSON, whichever is more:
/// for a JSON value, each value 32 bytes (`[[],[],…]` held 16 times its JSON: a
/// probe), each string its bytes, and a character JSON escapes six (`\u0001`: an
/// answer 6 times the budget); for a service's own type, its JSON's length (what a
/// page or a stream is sent of it).
fn weight(env: &EventEnvelope) -> usize {
    fn size(v: &serde_json::Value) -> usize {
        use serde_json::Value;
        const VALUE: usize = std::mem::size_of::<Value>();
        let text = |s: &str| {
            let escaped = s
                .bytes()
                .filter(|b| *b < 0x20 || *b == b'"' || *b == b'\\')
                .count();
            s.len() + 5 * escaped
        };
        VALUE
            + match v {
                Value::Null | Value::Bool(_) | Value::Number(_) => 0,
                Value::String(s) => text(s),
                Value::Array(a) => a.iter().map(size).sum::<usize>(),
                Value::Object(m) => m.iter().map(|(k, v)| text(k) + size(v)).sum::<usize>(),
            }
    }
    let any: &(dyn std::any::Any + Send + Sync) = &*env.payload;
    any.downcast_ref::<serde_json::Value>()
        .map_or_else(|| env.payload.json_len(), size)
}

pub(super) struct Recent(Mutex<Kept>);

/// The kept events after an arrival number, oldest first, and whether some after
/// it are no longer kept (a gap: more than [`RECENT_EVENTS`] came since).
#[derive(Debug, Default)]
pub struct EventsSince {
    /// The events kept after the number asked for, oldest first.
    pub events: Vec<EventEnvelope>,
    /// Events came after the number asked for that are no longer kept.
    pub missed: bool,
    /// The number of the last event kept when asked: an event numbered up to it
    /// is among `events` or was seen before.
    pub last: u64,
}

impl Recent {
    pub(super) fn new() -> Self {
        Recent(Mutex::new(Kept {
            last: 0,
            events: VecDeque::with_capacity(RECENT_EVENTS),
            bytes: 0,
        }))
    }

    /// Numbers `env`, keeps it, and returns it shared (the number is given and the
    /// event kept under one lock, so the kept events are in their numbers' order).
    pub(super) fn keep(&self, mut env: EventEnvelope) -> Shared {
        let w = weight(&env);
        let mut kept = self.0.lock().unwrap_or_else(|p| p.into_inner());
        kept.last += 1;
        env.arrival = kept.last;
        env.weight = w;
        let shared = Arc::new(env);
        if kept.events.len() >= RECENT_EVENTS
            && let Some((_, gone)) = kept.events.pop_front()
        {
            kept.bytes -= gone;
        }
        // Past the budget, the oldest payloads are let go, their events
        // kept (numbered, named, dated): popping whole events let one large remote
        // event push out every small local one before it (a review).
        let mut i = 0;
        while kept.bytes + w > RECENT_BYTES && i < kept.events.len() {
            let (env, weight) = &mut kept.events[i];
            if *weight > 0 {
                let dropped = *weight;
                *env = Arc::new(let_go(env));
                *weight = 0;
                kept.bytes -= dropped;
            }
            i += 1;
        }
        kept.bytes += w;
        kept.events.push_back((Arc::clone(&shared), w));
        shared
    }

    /// The kept events, newest first.
    pub(super) fn newest_first(&self) -> Vec<EventEnvelope> {
        let kept = self.0.lock().unwrap_or_else(|p| p.into_inner());
        kept.events
            .iter()
            .rev()
            .map(|(e, _)| (**e).clone())
            .collect()
    }

    /// The kept event numbered `arrival`, if it still is.
    pub(super) fn get(&self, arrival: u64) -> Option<EventEnvelope> {
        let kept = self.0.lock().unwrap_or_else(|p| p.into_inner());
        let first = kept.events.front()?.0.arrival;
        let at = usize::try_from(arrival.checked_sub(first)?).ok()?;
        kept.events.get(at).map(|(e, _)| (**e).clone())
    }

    /// The kept events numbered after `arrival` that `wanted` takes, oldest
    /// first. A number past the last one given (a client of this host before it
    /// restarted) is treated as 0: every kept event is newer than what it saw.
    pub(super) fn since(
        &self,
        arrival: u64,
        wanted: &dyn Fn(&EventEnvelope) -> bool,
    ) -> EventsSince {
        let kept = self.0.lock().unwrap_or_else(|p| p.into_inner());
        let after = if arrival > kept.last { 0 } else { arrival };
        let first = kept
            .events
            .front()
            .map_or(kept.last + 1, |(e, _)| e.arrival);
        // The kept events' numbers follow one another: the first one wanted is
        // found by its place, not by reading those before it.
        let skip = usize::try_from((after + 1).saturating_sub(first)).unwrap_or(usize::MAX);
        EventsSince {
            events: kept
                .events
                .iter()
                .skip(skip)
                .map(|(e, _)| e)
                .filter(|e| wanted(e))
                .map(|e| (**e).clone())
                .collect(),
            missed: first > after + 1,
            last: kept.last,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event(n: u64) -> EventEnvelope {
        EventEnvelope::remote("S", "E", None, chrono::Utc::now(), n, serde_json::json!(n))
    }

    #[test]
    fn events_since_a_number_are_the_kept_ones_after_it_and_a_gap_is_said() {
        let recent = Recent::new();
        for n in 1..=10 {
            assert_eq!(recent.keep(event(n)).arrival, n);
        }
        let since = recent.since(7, &|_| true);
        let got: Vec<u64> = since.events.iter().map(EventEnvelope::arrival).collect();
        assert_eq!((got, since.missed, since.last), (vec![8, 9, 10], false, 10));
        assert!(recent.since(10, &|_| true).events.is_empty());
        // A number from before this host restarted: every kept event.
        assert_eq!(recent.since(99, &|_| true).events.len(), 10);
        let odd = recent.since(4, &|e| e.arrival % 2 == 1);
        let got: Vec<u64> = odd.events.iter().map(EventEnvelope::arrival).collect();
        assert_eq!(got, vec![5, 7, 9]);

        for n in 11..=(RECENT_EVENTS as u64 + 20) {
            recent.keep(event(n));
        }
        let since = recent.since(5, &|_| true);
        assert!(since.missed, "events 6 to 20 are no longer kept");
        assert_eq!(since.events.len(), RECENT_EVENTS);
        assert_eq!(since.events[0].arrival, 21);
        assert!(!recent.since(20, &|_| true).missed);
        assert_eq!(recent.newest_first()[0].arrival, RECENT_EVENTS as u64 + 20);
    }

    #[test]
    fn other_hosts_large_events_are_kept_within_a_byte_budget() {
        let recent = Recent::new();
        let large = |n: u64| {
            let payload = serde_json::json!({ "n": n, "text": "x".repeat(900_000) });
            EventEnvelope::remote("S", "E", None, chrono::Utc::now(), n, payload)
        };
        for n in 1..=40 {
            recent.keep(large(n));
        }
        let kept = recent.newest_first();
        // Every event kept, numbered; 8 MiB of 900 KB payloads: the last nine.
        let numbers: Vec<u64> = kept.iter().map(EventEnvelope::arrival).collect();
        assert_eq!(numbers, (1..=40).rev().collect::<Vec<_>>());
        let whole = |e: &&EventEnvelope| e.payload_json().get("payload_dropped").is_none();
        let with_payload: Vec<u64> = kept
            .iter()
            .filter(whole)
            .map(EventEnvelope::arrival)
            .collect();
        assert_eq!(with_payload, (32..=40).rev().collect::<Vec<_>>());
        let since = recent.since(20, &|_| true);
        assert!(!since.missed && since.events.len() == 20);
        // A local event before a large remote one stays whole.
        let local = Recent::new();
        let mut small = event(1);
        small.key = Some(Arc::new(super::super::bus::EventKey::new("S", "E")));
        local.keep(small);
        local.keep(large(2));
        local.keep(large(3));
        let kept = local.newest_first();
        assert_eq!(kept.len(), 3);
        assert_eq!(kept[2].payload_json(), serde_json::json!(1));
        // Small ones then push the large ones out by count, and one event larger
        // than the whole budget is still kept, alone.
        for n in 41..=(40 + RECENT_EVENTS as u64) {
            recent.keep(event(n));
        }
        assert_eq!(recent.newest_first().len(), RECENT_EVENTS);
        let value = std::mem::size_of::<serde_json::Value>();
        assert_eq!(
            recent.0.lock().map(|k| k.bytes).unwrap_or(usize::MAX),
            RECENT_EVENTS * value
        );
        // Values count their memory, escaped characters their JSON.
        let nested = serde_json::json!(vec![serde_json::json!([]); 1000]);
        let escaped = serde_json::json!("\u{1}".repeat(1000));
        let weigh = |v| {
            weight(&EventEnvelope::remote(
                "S",
                "E",
                None,
                chrono::Utc::now(),
                1,
                v,
            ))
        };
        assert_eq!(weigh(nested), value * 1001);
        assert_eq!(weigh(escaped), value + 6000);
        let huge = serde_json::json!("y".repeat(RECENT_BYTES + 1));
        recent.keep(EventEnvelope::remote(
            "S",
            "E",
            None,
            chrono::Utc::now(),
            1,
            huge,
        ));
        let kept = recent.newest_first();
        assert_eq!(kept.len(), RECENT_EVENTS);
        assert!(
            kept[0].payload_json().as_str().is_some(),
            "the newest kept whole"
        );
    }

    #[test]
    fn this_hosts_own_large_events_are_weighed_too() {
        let recent = Recent::new();
        let own = |n: u64| {
            let mut env = event(n);
            env.payload = Arc::new("z".repeat(1024 * 1024));
            env.key = Some(Arc::new(super::super::bus::EventKey::new("S", "E")));
            env
        };
        for n in 1..=20 {
            recent.keep(own(n));
        }
        // Their JSON's length each (the string and its quotes), 2 bytes past a
        // MiB: the last seven kept whole, the others let go; each still found by
        // its number.
        let whole: Vec<u64> = recent
            .newest_first()
            .iter()
            .filter(|e| e.payload_json().get("payload_dropped").is_none())
            .map(EventEnvelope::arrival)
            .collect();
        assert_eq!(whole, (14..=20).rev().collect::<Vec<_>>());
        let held = recent.0.lock().map(|k| k.bytes).unwrap_or(usize::MAX);
        assert_eq!(held, 7 * (1024 * 1024 + 2));
        assert_eq!(recent.get(20).map(|e| e.arrival), Some(20));
        assert!(
            recent
                .get(1)
                .is_some_and(|e| e.payload_json().get("payload_dropped").is_some())
        );
        assert!(recent.get(0).is_none() && recent.get(21).is_none());
    }
}
