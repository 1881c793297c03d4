//! Live events as Server-Sent Events: `GET /api/events?service=&event=` and
//! `GET /api/services/{name}/events?event=`. Streams are capped
//! (`max_sse_connections`) and, when a token is configured, need it (as a header or,
//! for browsers' `EventSource`, as `?token=`).

use koan::transport::HostLink as _;
use std::collections::VecDeque;
use std::convert::Infallible;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::Duration;

use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use koan::event::EventEnvelope;
use tokio::sync::{Notify, mpsc};

use crate::AppState;
use crate::error::ApiError;
use crate::query::Params;

/// The query of an event stream (the token is read by the auth layer).
#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct StreamParams {
    service: Option<String>,
    event: Option<String>,
    #[serde(rename = "token")]
    _token: Option<serde::de::IgnoredAny>,
}

pub(crate) async fn all_stream(
    State(state): State<AppState>,
    headers: HeaderMap,
    Params(q): Params<StreamParams>,
) -> Result<Response, ApiError> {
    let service = q.service.clone();
    stream(state, q, service, last_event_id(&headers)?).await
}

pub(crate) async fn service_stream(
    State(state): State<AppState>,
    Path(name): Path<String>,
    headers: HeaderMap,
    Params(q): Params<StreamParams>,
) -> Result<Response, ApiError> {
    stream(state, q, Some(name), last_event_id(&headers)?).await
}

/// The `Last-Event-ID` a reconnecting client sends: the id (this host's arrival
/// number) of the last event it got.
///
/// An id is `<boot>.<arrival>`: `boot` this process's, so that an id from before a
/// restart, or from another host behind the same address, is not taken for one of
/// this process's numbers (every kept event is replayed for it, after `missed`;
/// found by a review): `(0, true)` for such an id.
fn last_event_id(headers: &HeaderMap) -> Result<Option<(u64, bool)>, ApiError> {
    let Some(v) = headers.get("last-event-id") else {
        return Ok(None);
    };
    let text = String::from_utf8_lossy(v.as_bytes());
    let text = text.trim();
    if text.is_empty() {
        return Ok(None);
    }
    let (boot, n) = text.split_once('.').unwrap_or(("", text));
    match n.parse::<u64>() {
        Ok(n) if boot == this_boot() => Ok(Some((n, false))),
        Ok(_) => Ok(Some((0, true))),
        Err(_) => Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            "invalid_parameters",
            format!(
                "`Last-Event-ID: {}` is not an id of this host's event streams (`<boot>.<number>`, as each frame's `id:`); reconnect without it to start from now",
                text.chars().take(64).collect::<String>().escape_debug()
            ),
        )),
    }
}

/// This process's part of its event ids: random, made once.
fn this_boot() -> &'static str {
    static BOOT: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    BOOT.get_or_init(|| {
        use std::hash::{BuildHasher, Hasher};
        let mut h = std::collections::hash_map::RandomState::new().build_hasher();
        h.write_u32(std::process::id());
        format!("{:08x}", h.finish() as u32)
    })
}

async fn stream(
    state: AppState,
    q: StreamParams,
    service: Option<String>,
    last_seen: Option<(u64, bool)>,
) -> Result<Response, ApiError> {
    let permit = state.sse_slots.clone().try_acquire_owned().map_err(|_| {
        ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "too_many_streams",
            format!(
                "{} event streams are open (`koan.http.max_sse_connections`); close one and retry",
                state.options.max_sse_connections
            ),
        )
    })?;
    let builder = match &service {
        Some(name) => {
            // Resolve the name now so an unknown service is a 404, not an empty stream
            // (a service of another host of the cluster is known through it).
            if !state.host.hosts(name) && state.host.host_id().is_none() {
                state.host.status(name)?;
            }
            state.host.service(name).on("*")
        }
        None => state.host.events().on("*"),
    };
    if let Some(event) = &q.event {
        check_event(&state, service.as_deref(), event).await?;
    }
    let wanted = q.event;
    let takes = {
        let (service, wanted) = (service.clone(), wanted.clone());
        move |env: &EventEnvelope| {
            wanted
                .as_deref()
                .is_none_or(|w| w.eq_ignore_ascii_case(env.name()))
                && service
                    .as_deref()
                    .is_none_or(|s| s.eq_ignore_ascii_case(env.service()))
        }
    };
    let (tx, rx) = mpsc::channel::<EventEnvelope>(256);
    let live_takes = takes.clone();
    // Events dropped for this client (it read too slowly): a gap then is a miss.
    let dropped = Arc::new(AtomicU64::new(0));
    let drops = Arc::clone(&dropped);
    // The bytes of the live events it holds: at most `STREAM_BYTES`, past which
    // they are dropped as when its 256 places are taken (each held payloads the
    // kept events had let go: 64 stuck clients of 1 MB events, 1.16 GB; a
    // re-probe).
    let held = Arc::new(AtomicUsize::new(0));
    let holds = Arc::clone(&held);
    // Told of each drop: the stream says it once its client has read what it
    // holds, not at the next live event, which may never come.
    let lagged = Arc::new(Notify::new());
    let lags = Arc::clone(&lagged);
    // A new stream starts after the last event kept before it subscribed (none is
    // replayed; one kept while it subscribes is found by the gap it leaves).
    let fresh_from = state.host.recent_events_since(0, &|_| false).last;
    let subscription = builder
        .handle_envelope(move |env: EventEnvelope| {
            let tx = tx.clone();
            let takes = live_takes.clone();
            let drops = Arc::clone(&drops);
            let holds = Arc::clone(&holds);
            let lag = Arc::clone(&lags);
            async move {
                if takes(&env) {
                    // A client that cannot keep up loses events rather than slowing
                    // the services (the subscription's drop-newest policy); each
                    // loss is counted in `koan_sse_dropped_total`. One event is
                    // taken whatever its weight while it holds none.
                    let w = env.weight();
                    let now = holds.load(Ordering::Acquire);
                    let room = now == 0 || now.saturating_add(w) <= STREAM_BYTES;
                    if room {
                        holds.fetch_add(w, Ordering::AcqRel);
                    }
                    let refused = !room
                        || match tx.try_send(env) {
                            Ok(()) => false,
                            Err(mpsc::error::TrySendError::Full(_)) => {
                                holds.fetch_sub(w, Ordering::AcqRel);
                                true
                            }
                            Err(mpsc::error::TrySendError::Closed(_)) => false,
                        };
                    if refused {
                        drops.fetch_add(1, Ordering::Relaxed);
                        crate::metrics::sse_dropped();
                        lag.notify_one();
                    }
                }
            }
        })
        .buffer(1024)
        .subscribe()
        .await?;
    // A reconnect: the kept events it missed first, read after subscribing, so
    // that none falls between; a live one numbered up to the last kept then is
    // among them, or was seen before.
    let (ready, seen_up_to) = match last_seen {
        None => (VecDeque::new(), fresh_from),
        Some((after, foreign)) => {
            let since = state.host.recent_events_since(after, &takes);
            // A number past the last one given is no number of this boot's:
            // `since` read it as 0, and so does the stream (it skipped its live
            // events up to that number, and went silent; found by a tester).
            let (after, unknown) = if after > since.last {
                (0, true)
            } else {
                (after, foreign)
            };
            let mut ready = VecDeque::with_capacity(since.events.len() + 1);
            if since.missed || unknown {
                ready.push_back(Next::Missed(after, RECONNECT_MISSED));
            }
            ready.extend(since.events.iter().map(|e| Next::Kept(e.arrival())));
            (ready, since.last)
        }
    };
    let live = Live {
        rx,
        _held: (subscription, permit),
        ready,
        done: seen_up_to,
        host: state.host.clone(),
        takes,
        dropped,
        dropped_seen: 0,
        lagged,
        held,
    };
    let stream = futures_util::stream::unfold(live, |mut live| async move {
        live.next()
            .await
            .map(|event| (Ok::<_, Infallible>(event), live))
    });
    Ok(Sse::new(stream)
        .keep_alive(KeepAlive::new().interval(Duration::from_secs(15)))
        .into_response())
}

/// What a stream sends before its next live event.
enum Next {
    /// The named event that says events after this number were missed, and why.
    Missed(u64, &'static str),
    /// The kept event of this number, read from the kept ones when its turn comes:
    /// a stream holds numbers, and makes one frame at a time as its client takes
    /// them (a reconnect made a frame of every kept event before it sent one: 16
    /// clients resuming after 256 events of 1 MB, reading nothing, held 250 MB
    /// each, and the host died; found by a tester).
    Kept(u64),
}

/// A stream: the kept events it is owed, then the events its subscription
/// forwards, sent in their numbers' order.
struct Live<F> {
    rx: mpsc::Receiver<EventEnvelope>,
    /// Kept while the stream is open: its subscription and its place among the
    /// streams.
    _held: (koan::event::Subscription, tokio::sync::OwnedSemaphorePermit),
    /// What to send from the kept events before the next live one.
    ready: VecDeque<Next>,
    /// The number of the last event sent, owed in `ready` (or known not to be
    /// this stream's).
    done: u64,
    host: koan::HostHandle,
    takes: F,
    dropped: Arc<AtomicU64>,
    dropped_seen: u64,
    /// Notified when an event is dropped for this client.
    lagged: Arc<Notify>,
    /// The bytes of the live events it holds (see `STREAM_BYTES`).
    held: Arc<AtomicUsize>,
}

impl<F: Fn(&EventEnvelope) -> bool> Live<F> {
    /// The next event to send; `None` once the subscription ended.
    async fn next(&mut self) -> Option<Event> {
        loop {
            if let Some(next) = self.ready.pop_front() {
                return Some(self.made(next));
            }
            // Events dropped for a slow client, and none it holds left to send:
            // what followed the last one sent is owed now, from the kept ones,
            // with a miss said if some are gone. It was said only at the next
            // live event, so that after a burst and silence the client never
            // learnt of its loss (a probe).
            let env = tokio::select! {
                biased;
                env = self.rx.recv() => env?,
                () = self.lagged.notified() => {
                    self.owe_since_done(self.done);
                    continue;
                }
            };
            self.held.fetch_sub(env.weight(), Ordering::AcqRel);
            let n = env.arrival();
            if n <= self.done {
                continue;
            }
            if n == self.done + 1 {
                self.done = n;
                return Some(sse_event(&env));
            }
            // A gap before it: events this stream does not take, events dropped
            // while the client was slow, or events another task emitted first
            // that are still on their way. Sent from the kept ones, in their
            // numbers' order, so that an id received means every event before it
            // was sent (events of several emitters reached a stream out of order,
            // and a reconnect then missed one; found by a review).
            self.owe_since_done(n);
        }
    }

    /// Owes the kept events after the last one sent (of this stream's filter),
    /// up to at least `n`. A miss is said only when some were dropped for this
    /// client and are no longer kept (events of other filters gone from the ring
    /// are no miss).
    fn owe_since_done(&mut self, n: u64) {
        let since = self.host.recent_events_since(self.done, &self.takes);
        let dropped = self.dropped.load(Ordering::Relaxed);
        if since.missed && dropped != self.dropped_seen {
            self.ready.push_back(Next::Missed(self.done, LIVE_MISSED));
        }
        self.dropped_seen = dropped;
        self.ready
            .extend(since.events.iter().map(|e| Next::Kept(e.arrival())));
        self.done = since.last.max(n);
    }

    /// The frame of `next`. A kept event owed that is no longer kept (the client
    /// read too slowly for the kept ones) is a miss: said once for the owed ones
    /// gone with it.
    fn made(&mut self, next: Next) -> Event {
        let n = match next {
            Next::Missed(after, why) => return missed_event(after, why),
            Next::Kept(n) => n,
        };
        if let Some(env) = self.host.recent_event(n) {
            return sse_event(&env);
        }
        while let Some(Next::Kept(m)) = self.ready.front()
            && self.host.recent_event(*m).is_none()
        {
            self.ready.pop_front();
        }
        missed_event(n - 1, LIVE_MISSED)
    }
}

/// The most bytes of live events a stream holds for its client (about, as the
/// host weighs them): as many as the host keeps of its events.
const STREAM_BYTES: usize = koan::event::RECENT_BYTES;

// The messages below say how many events the host keeps.
const _: () = assert!(koan::event::RECENT_EVENTS == 256);

/// Why a reconnect missed events.
const RECONNECT_MISSED: &str = "events after the one last received are no longer kept (this host keeps its last 256, and its id may be from before a restart or another host): some were missed";

/// Why a stream missed events while it was open.
const LIVE_MISSED: &str = "events after the one last sent were no longer kept when this stream could send them (this host keeps its last 256: the client read too slowly, or more came at once): some were missed";

/// The named event that says events after `after` were missed, and why (a
/// browser's `onmessage` does not take it for an event).
fn missed_event(after: u64, why: &str) -> Event {
    let data = serde_json::json!({ "after": after, "message": why });
    Event::default().event("missed").data(data.to_string())
}

/// One event as the stream sends it: unnamed, so a browser's `onmessage` sees
/// them all (the JSON carries the event's name), its id this host's number for it.
fn sse_event(env: &EventEnvelope) -> Event {
    let data = serde_json::to_string(env).unwrap_or_default();
    Event::default()
        .id(format!("{}.{}", this_boot(), env.arrival()))
        .data(data)
}

/// Refuses an `event` filter that no service here declares (of `service`, when the
/// stream is one service's), as a subscription by name is refused: such a stream
/// answered 200 and then nothing, for ever (seen in a probe; `koanctl events`
/// later said the host was gone). A service named that declares no events takes
/// any name (it may emit one undeclared, which is warned of); so does a stream
/// that may carry other processes' events (a cluster). A stream of every service
/// takes only a name some service declares: one service declaring none let any
/// misspelt name through, followed for ever (the demo's migration service; a
/// probe).
async fn check_event(state: &AppState, service: Option<&str>, event: &str) -> Result<(), ApiError> {
    let names: Vec<String> = match service {
        Some(name) if state.host.hosts(name) => vec![name.to_owned()],
        Some(_) => return Ok(()),
        None if state.host.host_id().is_some() => return Ok(()),
        None => state.host.service_names(),
    };
    let mut declared = Vec::new();
    for name in &names {
        let info = state.host.service(name).info().await?;
        if (service.is_some() && info.events.is_empty())
            || info
                .events
                .iter()
                .any(|e| e.name.eq_ignore_ascii_case(event))
        {
            return Ok(());
        }
        declared.extend(info.events.into_iter().map(|e| e.name));
    }
    declared.sort();
    declared.dedup();
    let whose = service.map_or_else(
        || "no service of this host".to_owned(),
        |s| format!("service `{s}`"),
    );
    Err(ApiError::new(
        StatusCode::NOT_FOUND,
        "unknown_event",
        format!(
            "{whose} declares no event `{}`; declared: {}{}",
            event.escape_debug(),
            declared.join(", "),
            if service.is_none() {
                " (an event a service emits without declaring it is followed on that service's stream: add `service=`)"
            } else {
                ""
            }
        ),
    ))
}
