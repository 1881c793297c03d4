//! Live events as Server-Sent Events over real HTTP: every service's stream, one
//! service's stream, the `event` and `service` filters, the errors of a stream, and
//! a reconnect with `Last-Event-ID`, sent the events it missed.

use koan::{ActionContext, BackgroundService, BoxError, ServiceContext};
use koan_test_support::http::{Api, SseReader, call, error_message, header};
use koan_test_support::within;
use reqwest::StatusCode;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
struct Shout {
    event: String,
    text: String,
}

/// A service named `$ty` whose `shout` action emits `event` with `text` as its payload.
macro_rules! shouter {
    ($ty:ident) => {
        #[koan::service]
        #[derive(Default)]
        struct $ty;

        #[koan::actions]
        impl $ty {
            /// Emits `event` with `text` as its payload.
            #[action("shout")]
            async fn shout(&self, p: Shout, cx: &ActionContext) -> Result<(), BoxError> {
                cx.emit(&p.event, json!({ "text": p.text })).await;
                Ok(())
            }
        }

        impl BackgroundService for $ty {
            async fn run(&self, cx: ServiceContext) -> Result<(), BoxError> {
                cx.cancelled().await;
                Ok(())
            }
        }
    };
}

shouter!(Notifier);
shouter!(Other);

async fn start() -> anyhow::Result<Api> {
    let host = koan::testing::host()
        .service::<Notifier>()
        .service::<Other>()
        .build()?
        .start();
    Api::open(host).await
}

/// GETs `path`, asserts the HTTP status and the error kind of the answer, and returns
/// its message.
async fn refused(api: &Api, path: &str, status: StatusCode, kind: &str) -> anyhow::Result<String> {
    let (got, body) = call(api.get(path)).await?;
    assert_eq!(got, status, "{path}: {body}");
    error_message(&body, kind)
}

async fn open(api: &Api, path: &str) -> anyhow::Result<SseReader> {
    let resp = within(path, api.get(path).send()).await??;
    SseReader::new(resp)
}

async fn shout(api: &Api, service: &str, event: &str, text: &str) -> anyhow::Result<()> {
    let (status, body) = call(
        api.post(&format!("/api/services/{service}/actions/shout"))
            .header("X-Correlation-Id", format!("corr-{text}"))
            .json(&json!({ "event": event, "text": text })),
    )
    .await?;
    anyhow::ensure!(status == StatusCode::OK, "shout answered {status}: {body}");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn all_events_stream() -> anyhow::Result<()> {
    let api = start().await?;
    let mut events = open(&api, "/api/events").await?;
    shout(&api, "notifier", "FileTranslated", "one").await?;
    shout(&api, "other", "Elsewhere", "two").await?;

    let first = events.next_data().await?;
    assert_eq!(first["event"], "FileTranslated");
    assert_eq!(first["service"], "Notifier");
    assert_eq!(first["payload"], json!({ "text": "one" }));
    assert_eq!(first["correlation_id"], "corr-one");
    assert!(
        first["time"].is_string() && first["seq"].is_u64(),
        "{first}"
    );
    let second = events.next_data().await?;
    assert_eq!(second["event"], "Elsewhere");
    assert_eq!(second["service"], "Other");
    assert!(second["seq"].as_u64() > first["seq"].as_u64());
    api.stop().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sse_frames_are_unnamed_with_id_and_json_data() -> anyhow::Result<()> {
    let api = start().await?;
    let resp = within("the stream", api.get("/api/events").send()).await??;
    assert_eq!(resp.status(), StatusCode::OK);
    assert!(
        header(resp.headers(), "content-type")
            .unwrap_or_default()
            .starts_with("text/event-stream")
    );
    shout(&api, "notifier", "Framed", "x").await?;

    // Read the raw text until the frame's data line arrives.
    let mut stream = Box::pin(resp.bytes_stream());
    let mut text = String::new();
    within("the frame", async {
        use futures_util::StreamExt;
        while !text
            .lines()
            .any(|l| l.starts_with("data:") && l.contains("Framed"))
        {
            match stream.next().await {
                Some(chunk) => text.push_str(&String::from_utf8_lossy(&chunk?)),
                None => anyhow::bail!("the stream ended: {text}"),
            }
        }
        anyhow::Ok(())
    })
    .await??;
    let data: serde_json::Value = text
        .lines()
        .find_map(|l| l.strip_prefix("data:"))
        .map(|d| serde_json::from_str(d.trim()))
        .transpose()?
        .unwrap_or_default();
    assert_eq!(data["event"], "Framed", "{text}");
    // The frame's id is this process's boot and its number for the event (unique
    // on the host, where the emitting host's `seq` is not in a cluster).
    let arrival = data["arrival"].as_u64().unwrap_or_default();
    assert!(arrival > 0, "{data}");
    assert!(
        text.lines()
            .any(|l| l.starts_with("id: ") && l.ends_with(&format!(".{arrival}"))),
        "{text}"
    );
    // Unnamed frames, so a browser's `EventSource.onmessage` sees every event.
    assert!(!text.lines().any(|l| l.starts_with("event:")), "{text}");
    api.stop().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_service_stream_and_event_filter() -> anyhow::Result<()> {
    let api = start().await?;
    let mut service_only = open(&api, "/api/services/NOTIFIER/events").await?;
    let mut wanted_only = open(&api, "/api/services/notifier/events?event=wanted").await?;
    let mut by_query = open(&api, "/api/events?service=notifier&event=Wanted").await?;

    shout(&api, "other", "Wanted", "not this service").await?;
    shout(&api, "notifier", "Unwanted", "skip").await?;
    shout(&api, "notifier", "Wanted", "this one").await?;

    // The service's stream sees both of its events, in order, and nothing else.
    let a = service_only.next_data().await?;
    assert_eq!(
        (a["service"].as_str(), a["event"].as_str()),
        (Some("Notifier"), Some("Unwanted"))
    );
    let b = service_only.next_data().await?;
    assert_eq!(
        (b["service"].as_str(), b["event"].as_str()),
        (Some("Notifier"), Some("Wanted"))
    );

    // The filtered streams see only the wanted event of that service (the name
    // matched case-insensitively).
    for reader in [&mut wanted_only, &mut by_query] {
        let first = reader.next_data().await?;
        assert_eq!(first["event"], "Wanted");
        assert_eq!(first["service"], "Notifier");
        assert_eq!(first["payload"]["text"], "this one");
    }
    api.stop().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stream_errors() -> anyhow::Result<()> {
    let api = start().await?;
    let path = "/api/services/nobody/events";
    let message = refused(&api, path, StatusCode::NOT_FOUND, "unknown_service").await?;
    assert!(message.contains("Notifier"), "{message}");

    let path = "/api/events?colour=red";
    let message = refused(&api, path, StatusCode::BAD_REQUEST, "invalid_parameters").await?;
    assert!(message.contains("colour"), "{message}");

    // An event no service declares: refused, as a subscription by name is (it
    // answered 200 and then nothing, for ever; found by a probe). A service that
    // declares none takes any name.
    api.stop().await?;
    let api = start_with_herald().await?;
    let path = "/api/services/herald/events?event=Gone";
    let message = refused(&api, path, StatusCode::NOT_FOUND, "unknown_event").await?;
    assert!(
        message.contains("`Gone`") && message.contains("Ready"),
        "{message}"
    );
    drop(open(&api, "/api/services/herald/events?event=ready").await?);
    drop(open(&api, "/api/services/notifier/events?event=Anything").await?);
    // Every service's stream takes only a name some service declares, though
    // Notifier declares none: a misspelt name was followed for ever (a probe).
    let message = refused(
        &api,
        "/api/events?event=Redy",
        StatusCode::NOT_FOUND,
        "unknown_event",
    )
    .await?;
    assert!(
        message.contains("`Redy`") && message.contains("Ready") && message.contains("service="),
        "{message}"
    );
    drop(open(&api, "/api/events?event=READY").await?);
    api.stop().await
}

/// A service that declares its one event, `Ready`.
#[koan::service(event(name = "Ready", payload = Shout))]
#[derive(Default)]
struct Herald;

impl BackgroundService for Herald {
    async fn run(&self, cx: ServiceContext) -> Result<(), BoxError> {
        cx.cancelled().await;
        Ok(())
    }
}

async fn start_with_herald() -> anyhow::Result<Api> {
    let host = koan::testing::host()
        .service::<Notifier>()
        .service::<Herald>()
        .build()?
        .start();
    Api::open(host).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn streams_are_capped() -> anyhow::Result<()> {
    let host = koan::testing::host().service::<Notifier>().build()?.start();
    let options = koan_http::HttpOptions {
        max_sse_connections: 1,
        ..koan_test_support::http::loopback()
    };
    let api = Api::serve(host, options).await?;
    let mut first = open(&api, "/api/events").await?;
    let path = "/api/events";
    refused(
        &api,
        path,
        StatusCode::SERVICE_UNAVAILABLE,
        "too_many_streams",
    )
    .await?;

    // The open stream still works.
    shout(&api, "notifier", "StillHere", "y").await?;
    let seen = first.until_event("StillHere").await?;
    assert_eq!(seen.len(), 1);
    api.stop().await
}

/// Opens the stream of every event raw, shouts `text` as `event` of `Notifier`, and
/// returns the id of that event's frame.
async fn id_of_next(api: &Api, event: &str, text: &str) -> anyhow::Result<String> {
    use futures_util::StreamExt;
    let resp = within("the stream", api.get("/api/events").send()).await??;
    let mut stream = Box::pin(resp.bytes_stream());
    shout(api, "notifier", event, text).await?;
    let mut raw = String::new();
    within("the frame", async {
        loop {
            let mut id = None;
            for l in raw.lines() {
                if let Some(i) = l.strip_prefix("id: ") {
                    id = Some(i.to_owned());
                }
                if l.starts_with("data:") && l.contains(&format!("\"text\":\"{text}\"")) {
                    return id.ok_or_else(|| anyhow::anyhow!("no id: {raw}"));
                }
            }
            match stream.next().await {
                Some(chunk) => raw.push_str(&String::from_utf8_lossy(&chunk?)),
                None => anyhow::bail!("the stream ended: {raw}"),
            }
        }
    })
    .await?
}

async fn open_after(api: &Api, path: &str, last: &str) -> anyhow::Result<SseReader> {
    let resp = within(path, api.get(path).header("Last-Event-ID", last).send()).await??;
    SseReader::new(resp)
}

/// A client that reconnects with `Last-Event-ID` (as a browser's `EventSource`
/// does) is sent the kept events it missed, of its filter, then the live ones, none
/// twice. Before, the stream started from now: every event of the gap was lost.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reconnect_with_last_event_id_is_sent_what_it_missed() -> anyhow::Result<()> {
    let api = start().await?;
    let last = id_of_next(&api, "Seen", "a").await?;

    shout(&api, "notifier", "Missed", "b").await?;
    shout(&api, "other", "Missed", "c").await?;
    let mut again = open_after(&api, "/api/events", &last).await?;
    let mut only_other = open_after(&api, "/api/services/other/events", &last).await?;
    shout(&api, "notifier", "Live", "d").await?;
    let texts: Vec<Value> = again
        .until_event("Live")
        .await?
        .iter()
        .map(|e| e["payload"]["text"].clone())
        .collect();
    assert_eq!(texts, [json!("b"), json!("c"), json!("d")]);
    let other = only_other.next_data().await?;
    assert_eq!(
        (&other["service"], &other["payload"]["text"]),
        (&json!("Other"), &json!("c"))
    );

    // An id that is no id is refused, saying what would do.
    let resp = within(
        "a stream",
        api.get("/api/events").header("Last-Event-ID", "abc").send(),
    )
    .await??;
    assert_eq!(resp.status(), StatusCode::BAD_REQUEST);
    let body = resp.text().await?;
    assert!(
        body.contains("Last-Event-ID: abc") && body.contains("<boot>.<number>"),
        "{body}"
    );
    // One from another boot (or host) is sent every kept event, after `missed`.
    let mut foreign = open_after(&api, "/api/events", "0badf00d.2").await?;
    let first = foreign.next_data().await?;
    assert!(
        first["message"]
            .as_str()
            .is_some_and(|m| m.contains("some were missed")),
        "{first}"
    );
    assert_eq!(foreign.next_data().await?["payload"]["text"], "a");
    api.stop().await
}

/// A reconnect after more events than the host keeps is told some were missed (a
/// named `missed` event, which a browser's `onmessage` does not take), then sent the
/// kept ones.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reconnect_past_the_kept_events_is_told_some_were_missed() -> anyhow::Result<()> {
    let api = start().await?;
    let last = id_of_next(&api, "Burst", "first").await?;
    for i in 0..(koan::event::RECENT_EVENTS + 5) {
        shout(&api, "notifier", "Burst", &i.to_string()).await?;
    }
    let mut late = open_after(&api, "/api/events", &last).await?;
    let first = late.next_data().await?;
    assert_eq!(first["after"], 1, "{first}");
    assert!(
        first["message"]
            .as_str()
            .is_some_and(|m| m.contains("some were missed")),
        "{first}"
    );
    let next = late.next_data().await?;
    assert_eq!(next["event"], "Burst", "{next}");
    api.stop().await
}

/// Events of several emitters reach a stream in their ids' order, so that an id
/// received means every event before it was sent. Here an emitter waits on a
/// slow subscriber (`Overflow::Wait`) with its third event numbered and kept while
/// another's later one goes on: the stream sent the later one first, and a
/// reconnect after it missed the third (found by a review).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn events_of_several_emitters_are_sent_in_their_ids_order() -> anyhow::Result<()> {
    use koan::event::{EventEnvelope, Overflow};
    use std::sync::Arc;
    let api = start().await?;
    let host = api.host.clone();
    let gate = Arc::new(tokio::sync::Semaphore::new(0));
    let _slow = host
        .events()
        .on("First")
        .buffer(1)
        .overflow(Overflow::Wait)
        .handle_envelope({
            let gate = Arc::clone(&gate);
            move |_: EventEnvelope| {
                let gate = Arc::clone(&gate);
                async move {
                    if let Ok(permit) = gate.acquire().await {
                        permit.forget();
                    }
                }
            }
        })
        .subscribe()
        .await?;
    let mut stream = open(&api, "/api/events").await?;
    // The first is held by the slow subscriber, the second waits in its buffer,
    // the third's emitter waits for room: kept, not yet sent to the stream.
    let emitter = tokio::spawn({
        let host = host.clone();
        async move {
            for i in 0..3 {
                host.emit("Notifier", "First", json!({ "text": i.to_string() }))
                    .await?;
            }
            Ok::<(), koan::Error>(())
        }
    });
    within("the third to be kept", async {
        while host
            .recent_events()
            .iter()
            .filter(|e| e.name() == "First")
            .count()
            < 3
        {
            tokio::time::sleep(std::time::Duration::from_millis(1)).await;
        }
    })
    .await?;
    host.emit("Notifier", "Second", json!({ "text": "s" }))
        .await?;
    gate.add_permits(8);
    within("the emitter", emitter).await???;
    let mut texts = Vec::new();
    while texts.len() < 4 {
        texts.push(stream.next_data().await?["payload"]["text"].clone());
    }
    assert_eq!(texts, [json!("0"), json!("1"), json!("2"), json!("s")]);
    api.stop().await
}

/// A filtered stream is not told it missed events when only events of other
/// names went by, more than the host keeps: it was, at each event after them
/// (found by a review).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_filtered_stream_is_not_told_of_misses_it_had_none_of() -> anyhow::Result<()> {
    let api = start().await?;
    let host = api.host.clone();
    // Notifier emits `Rare` without declaring it: followed on its stream.
    let mut rare = open(&api, "/api/events?service=notifier&event=Rare").await?;
    host.emit("Notifier", "Rare", json!({ "text": "1" }))
        .await?;
    for i in 0..(koan::event::RECENT_EVENTS + 50) {
        host.emit("Notifier", "Noise", json!({ "text": i.to_string() }))
            .await?;
    }
    host.emit("Notifier", "Rare", json!({ "text": "2" }))
        .await?;
    let first = rare.next_data().await?;
    let second = rare.next_data().await?;
    assert_eq!(
        (&first["payload"]["text"], &second["payload"]["text"]),
        (&json!("1"), &json!("2")),
        "{first} {second}"
    );
    api.stop().await
}

/// An id of this boot numbered past the last event (forged, or a client's
/// mistake) is an unknown id, as one from another boot is: every kept event after
/// `missed`, then the live ones. The stream went silent: its live events were
/// skipped as seen, up to the number it gave.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reconnect_with_an_id_past_the_last_still_gets_live_events() -> anyhow::Result<()> {
    let api = start().await?;
    let last = id_of_next(&api, "Seen", "a").await?;
    let (boot, n) = last.split_once('.').unwrap_or_default();
    let forged = format!("{boot}.{}", n.parse::<u64>()? + 1000);
    let mut stream = open_after(&api, "/api/events", &forged).await?;
    shout(&api, "notifier", "Live", "b").await?;
    let seen = stream.until_event("Live").await?;
    assert!(
        seen[0]["message"]
            .as_str()
            .is_some_and(|m| m.contains("some were missed")),
        "{seen:?}"
    );
    let texts: Vec<&Value> = seen[1..].iter().map(|e| &e["payload"]["text"]).collect();
    assert_eq!(texts, [&json!("a"), &json!("b")]);
    api.stop().await
}
