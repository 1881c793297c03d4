//! Live events as Server-Sent Events: `GET /api/events?service=&event=` and
//! `GET /api/services/{name}/events?event=`. Streams are capped
//! (`max_sse_connections`) and, when a token is configured, need it (as a header or,
//! for browsers' `EventSource`, as `?token=`).

use koan::transport::HostLink as _;
use std::convert::Infallible;
use std::time::Duration;

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use koan::event::EventEnvelope;
use tokio::sync::mpsc;

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
    Params(q): Params<StreamParams>,
) -> Result<Response, ApiError> {
    let service = q.service.clone();
    stream(state, q, service).await
}

pub(crate) async fn service_stream(
    State(state): State<AppState>,
    Path(name): Path<String>,
    Params(q): Params<StreamParams>,
) -> Result<Response, ApiError> {
    stream(state, q, Some(name)).await
}

async fn stream(
    state: AppState,
    q: StreamParams,
    service: Option<String>,
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
    let (tx, rx) = mpsc::channel::<EventEnvelope>(256);
    let subscription = builder
        .handle_envelope(move |env: EventEnvelope| {
            let tx = tx.clone();
            let wanted = wanted.clone();
            async move {
                if wanted
                    .as_deref()
                    .is_none_or(|w| w.eq_ignore_ascii_case(env.name()))
                {
                    // A client that cannot keep up loses events rather than slowing
                    // the services (the subscription's drop-newest policy); each
                    // loss is counted in `koan_sse_dropped_total`.
                    if let Err(mpsc::error::TrySendError::Full(_)) = tx.try_send(env) {
                        crate::metrics::sse_dropped();
                    }
                }
            }
        })
        .buffer(1024)
        .subscribe()
        .await?;
    let stream = futures_util::stream::unfold(
        (rx, subscription, permit),
        |(mut rx, sub, permit)| async move {
            let env = rx.recv().await?;
            let data = serde_json::to_string(&env).unwrap_or_default();
            // Unnamed SSE events, so a browser's `onmessage` sees them all; the JSON
            // carries the event's name.
            let event = Event::default().id(env.seq().to_string()).data(data);
            Some((Ok::<_, Infallible>(event), (rx, sub, permit)))
        },
    );
    Ok(Sse::new(stream)
        .keep_alive(KeepAlive::new().interval(Duration::from_secs(15)))
        .into_response())
}

/// Refuses an `event` filter that no service here declares (of `service`, when the
/// stream is one service's), as a subscription by name is refused: such a stream
/// answered 200 and then nothing, for ever (seen in a probe; `koanctl events`
/// later said the host was gone). A service that declares no events takes any
/// name; so does a stream that may carry other processes' events (a cluster).
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
        if info.events.is_empty()
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
            "{whose} declares no event `{}`; declared: {}",
            event.escape_debug(),
            declared.join(", ")
        ),
    ))
}
