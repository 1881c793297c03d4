//! `koanctl events`: following the live event stream until Ctrl-C.

use std::borrow::Cow;
use std::time::Duration;

use serde_json::Value;

use crate::client::{Client, Failure};
use crate::commands::{emit, emit_raw};
use crate::deadline;
use crate::output::{self, field};
use crate::sse::{MAX_EVENT, SseParser, TooLarge};

/// How often a koan host sends a keep-alive on the stream.
const KEEP_ALIVE: &str = "15s";

/// Follows `/api/events` (filtered by `service` and `event`), printing each event, until
/// the process is stopped. It ends in an error when the stream ends anyway: the server
/// closed it, sent nothing for `idle`, or sent what is not an event stream.
pub(crate) async fn follow(
    client: &Client,
    service: Option<&str>,
    event: Option<&str>,
    idle: Duration,
    json: bool,
) -> anyhow::Result<()> {
    let mut url = client.url(&["api", "events"]);
    {
        let mut q = url.query_pairs_mut();
        if let Some(s) = service {
            q.append_pair("service", s);
        }
        if let Some(e) = event {
            q.append_pair("event", e);
        }
    }
    if url.query() == Some("") {
        url.set_query(None);
    }
    let mut resp = client.stream(&url).await?;
    eprintln!("following events from {url} (Ctrl-C to stop)");
    let mut parser = SseParser::default();
    loop {
        let chunk = tokio::time::timeout(idle, resp.chunk())
            .await
            .map_err(|_| {
                Failure::Stalled(format!(
                    "{url} sent nothing for {}, though a koan host sends a keep-alive \
                     every {KEEP_ALIVE}: the host is gone or the network dropped\n\
                     hint: allow longer with --idle-timeout or KOAN_EVENTS_IDLE_TIMEOUT",
                    deadline::show(idle)
                ))
            })?
            .map_err(|e| client.broken(&url, &e))?;
        let Some(chunk) = chunk else {
            return Err(Failure::Stalled(format!(
                "{url} closed the event stream (did the host stop?)"
            ))
            .into());
        };
        let events = parser.feed(&chunk).map_err(|TooLarge| {
            Failure::Other(format!(
                "{url} sent an event, or a line of one, larger than {} MiB, the most \
                 koanctl reads: is it a koan event stream?",
                MAX_EVENT >> 20
            ))
        })?;
        for ev in events {
            if ev.event == "missed" {
                eprintln!("{}", missed_line(&ev.data));
                continue;
            }
            if json {
                emit_raw(&json_line(&ev.data))?;
            } else {
                emit(&event_line(&ev.data))?;
            }
        }
    }
}

/// The host's notice that events were missed, as a line for stderr: it printed
/// as an event of no service (`-  -  -  -  null`), and `--json` printed it as a
/// document like an event's (a probe).
fn missed_line(data: &str) -> String {
    let env = serde_json::from_str::<Value>(data).unwrap_or(Value::Null);
    let why = env
        .get("message")
        .and_then(Value::as_str)
        .unwrap_or("some events were missed");
    let after = env.get("after").and_then(Value::as_u64).unwrap_or(0);
    format!("warning: {} (after event {after})", output::printable(why))
}

/// An event's data for `--json`: as sent when it is JSON (a koan host's always is),
/// otherwise as a JSON string, so each line stays a JSON document and holds no raw
/// control characters.
fn json_line(data: &str) -> Cow<'_, str> {
    if serde_json::from_str::<Value>(data).is_ok() {
        Cow::Borrowed(data)
    } else {
        Cow::Owned(Value::from(data).to_string())
    }
}

/// One event as a line: time, service, event, correlation id, payload.
fn event_line(data: &str) -> String {
    match serde_json::from_str::<Value>(data) {
        Ok(env) => format!(
            "{}  {}  {}  {}  {}",
            output::time(env.get("time").unwrap_or(&Value::Null), 3),
            field(&env, "service"),
            field(&env, "event"),
            field(&env, "correlation_id"),
            output::printable(&env.get("payload").unwrap_or(&Value::Null).to_string()),
        ),
        Err(_) => output::printable(data).into_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_missed_notice_is_a_warning_naming_why() {
        let data = r#"{"after":41,"message":"some were missed"}"#;
        assert_eq!(
            missed_line(data),
            "warning: some were missed (after event 41)"
        );
    }

    #[test]
    fn events_print_as_one_line() {
        let data = r#"{"service":"S","event":"E","correlation_id":null,"time":"2025-01-02T03:04:05.123456Z","seq":1,"payload":{"x":1}}"#;
        assert_eq!(
            event_line(data),
            r#"2025-01-02T03:04:05.123Z  S  E  -  {"x":1}"#
        );
    }
}
