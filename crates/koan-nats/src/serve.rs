//! Serving a service's calls: each call's message read (its action, its id, its
//! parameters), its action run on this host, and its reply sent (docs/wire.md,
//! "Calls").

use std::borrow::Cow;
use std::sync::Arc;
use std::time::Duration;

use futures_util::StreamExt;
use koan::Error;
use koan::action::JsonText;

use crate::subjects;
use crate::wire::{self, Reply};

/// How a call came, which decides how its id is read and its reply sent
/// (docs/wire.md, "Calls").
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Form {
    /// Through the queue group or the instance's `act` subject: the reply has the
    /// headers `Koan-Wire` and `Koan-Correlation-Id`.
    Full,
    /// On the instance's `bare` subject: the reply is the body alone when the call
    /// gave its correlation id (in its header, or as the subject's last token from
    /// an earlier koan's client): its caller knows both headers' values already.
    /// Built, written, parsed and dropped, they were a third of the instructions
    /// B8's round trip adds to a plain request/reply (≈ 12,000 of 38,600).
    Bare,
    /// On the instance's `lead` subject: the id on the body's first line
    /// ([`wire::lead`]), the reply the body alone.
    Lead,
}

/// Who serves a service's calls.
pub(crate) struct Serving {
    /// Named once, for all its calls (its name found in the host's registry once).
    pub(crate) service: koan::service::ServiceRef,
    /// The connection its replies go out on.
    pub(crate) client: async_nats::Client,
    /// The length of the start its `bare` subjects share
    /// ([`subjects::host_direct_prefix`]), and its `lead` subjects'.
    pub(crate) bare_prefix: usize,
    pub(crate) lead_prefix: usize,
}

/// Serves the calls that come on `sub`, in `form`.
pub(crate) async fn serve_calls(
    serving: Arc<Serving>,
    mut sub: async_nats::Subscriber,
    form: Form,
) {
    while let Some(msg) = sub.next().await {
        let mut serve = Box::pin(serve_action(Arc::clone(&serving), msg, form));
        // Started here: an action that ends at once (an idle service runs it on
        // this task) is answered without a hop to a task of its own; one that has
        // to wait goes on in its own task.
        let done =
            std::future::poll_fn(|cx| std::task::Poll::Ready(serve.as_mut().poll(cx).is_ready()))
                .await;
        if !done {
            tokio::spawn(serve);
        }
    }
}

/// Serves one call: its reply, then that reply sent.
///
/// Not an `async fn`, and the call is answered in a future of its own ([`answer`]):
/// an `async fn` keeps its arguments twice in its state (as given, then moved into
/// its body), and the call's message, its headers and its reply would be kept
/// while the reply is sent. The future, boxed once per call, was 1,480 bytes; it is
/// 928 now (release layout, nightly's `-Zprint-type-sizes`), under the 1,032 that
/// glibc's per-thread cache serves. Above that, each call's box took glibc's path
/// for large chunks, which first merges every free small chunk
/// (`malloc_consolidate`, 0.4 % of B8's samples on this side; the round trip is
/// about 930 instructions shorter without it, by callgrind).
#[allow(clippy::manual_async_fn)] // an `async fn` is what this avoids
fn serve_action(
    serving: Arc<Serving>,
    msg: async_nats::Message,
    form: Form,
) -> impl Future<Output = ()> + Send {
    async move {
        let Some(Outgoing { to, body, headers }) = answer(&serving, msg, form).await else {
            return;
        };
        let client = &serving.client;
        let _ = match headers {
            None => client.publish(to, body).await,
            Some(headers) => client.publish_with_headers(to, headers, body).await,
        };
    }
}

/// A call's reply, ready to send.
struct Outgoing {
    to: async_nats::Subject,
    body: bytes::Bytes,
    /// `None` when the reply is bare (see [`Form`]).
    headers: Option<async_nats::HeaderMap>,
}

/// The reply to a call; `None` for a call that asks for none. Its own future, so
/// that what it keeps is let go before the reply is sent (see [`serve_action`]).
#[allow(clippy::manual_async_fn)] // an `async fn` would keep `msg` twice
fn answer(
    serving: &Serving,
    mut msg: async_nats::Message,
    form: Form,
) -> impl Future<Output = Option<Outgoing>> + Send + '_ {
    async move {
        let reply_to = msg.reply.take()?;
        let headers = CallHeaders::of(msg.headers.as_ref());
        // The action's token, the id the call gave outside its headers, and its
        // parameters (or why its body cannot be read).
        let (action, id_given, params) = match form {
            Form::Full => {
                let action = msg.subject.rsplit('.').next().unwrap_or_default();
                (action, None, Ok(&msg.payload[..]))
            }
            Form::Bare => {
                let (action, id) = subjects::direct_parts(&msg.subject, serving.bare_prefix);
                (action, id, Ok(&msg.payload[..]))
            }
            Form::Lead => {
                let (action, _) = subjects::direct_parts(&msg.subject, serving.lead_prefix);
                match wire::lead::split(&msg.payload) {
                    Ok((id, params)) => (action, Some(id), Ok(params)),
                    Err(e) => (action, None, Err(e)),
                }
            }
        };
        let action = headers.action.unwrap_or(action);
        // Every reply names a correlation id: the caller's, or one made here for it
        // (and then sent back in full, whatever the subject).
        let (correlation, form) = match headers.correlation.or(id_given) {
            Some(given) => (Cow::Borrowed(given), form),
            None => (
                Cow::Owned(format!("nats-{:016x}", fastrand::u64(..))),
                Form::Full,
            ),
        };
        let reply = match (wire::refuse(headers.wire), params) {
            (Some(refusal), _) => refusal,
            (None, Err(unreadable)) => Reply::of(Err(unreadable)),
            (None, Ok(params)) => {
                let service = &serving.service;
                Reply::of(run_action(service, action, params, &headers, &correlation).await)
            }
        };
        let headers = match form {
            Form::Bare | Form::Lead => None,
            Form::Full => Some(wire::reply_headers_owned(correlation.into_owned())),
        };
        Some(Outgoing {
            to: reply_to,
            body: reply.bytes(),
            headers,
        })
    }
}

/// The `Koan-*` headers serving a call reads, found in one pass over the map: each
/// `HeaderMap::get` hashes its name with SipHash (five look-ups a call, ≈ 2,200
/// instructions, B8's profile). A name's first value, as `get` gives it.
#[derive(Debug, Default)]
struct CallHeaders<'a> {
    wire: Option<&'a str>,
    correlation: Option<&'a str>,
    action: Option<&'a str>,
    priority: Option<&'a str>,
    timeout_ms: Option<&'a str>,
}

impl<'a> CallHeaders<'a> {
    fn of(headers: Option<&'a async_nats::HeaderMap>) -> Self {
        let mut found = CallHeaders::default();
        for (name, values) in headers.into_iter().flat_map(async_nats::HeaderMap::iter) {
            let slot = if *name == wire::H_WIRE {
                &mut found.wire
            } else if *name == wire::H_CORRELATION {
                &mut found.correlation
            } else if *name == wire::H_ACTION {
                &mut found.action
            } else if *name == wire::H_PRIORITY {
                &mut found.priority
            } else if *name == wire::H_TIMEOUT_MS {
                &mut found.timeout_ms
            } else {
                continue;
            };
            *slot = values.first().map(async_nats::HeaderValue::as_str);
        }
        found
    }
}

/// A header holding a number, or a clear error naming it.
fn number<T: std::str::FromStr>(
    value: Option<&str>,
    name: async_nats::header::HeaderName,
    what: &str,
) -> Result<Option<T>, Error> {
    match value {
        None => Ok(None),
        Some(v) => v.trim().parse().map(Some).map_err(|_| {
            Error::new(
                koan::error::ErrorKind::InvalidParameters,
                format!("header `{name}` must be {what}, got `{v}`"),
            )
        }),
    }
}

async fn run_action(
    service: &koan::service::ServiceRef,
    action: &str,
    payload: &[u8],
    headers: &CallHeaders<'_>,
    correlation: &str,
) -> Result<serde_json::Value, Error> {
    let priority: Option<i32> = number(
        headers.priority,
        wire::H_PRIORITY,
        "an integer (higher runs first)",
    )?;
    let timeout: Option<u64> = number(
        headers.timeout_ms,
        wire::H_TIMEOUT_MS,
        "a whole number of milliseconds",
    )?;
    // Read once, by the action, straight into its own type (which refuses text
    // that is not JSON, naming the action): no `Value` built and dropped on the way
    // (B8's round trip: about 480 instructions and 2 allocations fewer, by
    // callgrind), nor a read to check it first (about 540 more, and an
    // allocation).
    let params = JsonText::from(payload);
    let mut req = service.action(action, params).correlation_id(correlation);
    if let Some(p) = priority {
        req = req.priority(p);
    }
    if let Some(ms) = timeout {
        req = req.timeout(Duration::from_millis(ms));
    }
    req.execute().await?.json()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn call_headers_read_in_one_pass_are_what_get_reads() {
        let mut h = async_nats::HeaderMap::new();
        h.insert(wire::H_WIRE, "1");
        h.insert(wire::H_CORRELATION, "c-1");
        h.insert(wire::H_PRIORITY, "7");
        h.insert("Other", "x");
        let found = CallHeaders::of(Some(&h));
        assert_eq!(found.wire, wire::header_str(Some(&h), wire::H_WIRE));
        assert_eq!(found.correlation, Some("c-1"));
        assert_eq!(found.priority, Some("7"));
        assert_eq!((found.action, found.timeout_ms), (None, None));
        let none = CallHeaders::of(None);
        assert_eq!((none.wire, none.correlation), (None, None));
    }
}
