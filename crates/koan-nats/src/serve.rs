//! Serving a service's calls: each call's message read (its action, its id, its
//! parameters), its action run on this host, and its reply sent (docs/wire.md,
//! "Calls").

use std::borrow::Cow;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::Poll;
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
///
/// Each call's action is started and polled here, in the loop: one that ends at
/// once (an idle service runs it on this task) is answered here too, without a
/// future or a task of its own; one that has to wait goes on in a task of its own,
/// which answers it. The raw responder B8 compares with does the same work in the
/// same place, and a call boxed in a future of its own was 928 bytes written,
/// moved twice and freed each call (about 400 instructions of B8's round trip, by
/// callgrind).
pub(crate) async fn serve_calls(
    serving: Arc<Serving>,
    mut sub: async_nats::Subscriber,
    form: Form,
) {
    while let Some(mut msg) = sub.next().await {
        let Some(to) = msg.reply.take() else {
            continue;
        };
        let (call, started) = start(&serving, &msg, form);
        let reply = match started {
            Started::Answered(reply) => reply,
            Started::Running(mut run) => {
                let polled = std::future::poll_fn(|cx| Poll::Ready(Pin::new(&mut run).poll(cx)));
                match polled.await {
                    Poll::Ready(output) => reply_of(output),
                    Poll::Pending => {
                        let (serving, call) = (Arc::clone(&serving), call.into_owned());
                        tokio::spawn(async move {
                            let reply = reply_of(run.await);
                            send(&serving.client, to, call, reply).await;
                        });
                        continue;
                    }
                }
            }
        };
        send(&serving.client, to, call, reply).await;
    }
}

/// How a call's reply is sent: the correlation id it names, and the form, which
/// says whether the id goes in headers (see [`Form`]).
struct Call<'m> {
    correlation: Cow<'m, str>,
    form: Form,
}

impl Call<'_> {
    /// The same, kept past the call's message (a call whose action waits).
    fn into_owned(self) -> Call<'static> {
        Call {
            correlation: Cow::Owned(self.correlation.into_owned()),
            form: self.form,
        }
    }
}

/// A call's action: answered already (refused, or its request unreadable), or
/// running.
enum Started {
    Answered(Reply),
    Running(koan::action::Serve),
}

/// Reads a call's message and starts its action (not yet polled).
fn start<'m>(serving: &Serving, msg: &'m async_nats::Message, form: Form) -> (Call<'m>, Started) {
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
    // The id follows the rule HTTP's does, in a header or the subject: an empty
    // or 60 KB one was taken as it came, into every event, record and log line of
    // the call (a `bare` subject's id, everything after its action token, was not
    // checked; found by a probe).
    let given = headers.correlation.or(id_given);
    let bad_id = given.and_then(|id| koan::action::check_correlation_id(id).err());
    // Every reply names a correlation id: the caller's, or one made here for it
    // (and then sent back in full, whatever the subject).
    let call = match given.filter(|_| bad_id.is_none()) {
        Some(given) => Call {
            correlation: Cow::Borrowed(given),
            form,
        },
        None => Call {
            correlation: Cow::Owned(format!("nats-{:016x}", fastrand::u64(..))),
            form: Form::Full,
        },
    };
    let started = match (wire::refuse(headers.wire), params) {
        (Some(refusal), _) => Started::Answered(refusal),
        (None, _) if bad_id.is_some() => Started::Answered(Reply::of(Err(Error::new(
            koan::error::ErrorKind::InvalidParameters,
            match headers.correlation {
                Some(_) => format!(
                    "header `{}` {}",
                    wire::H_CORRELATION,
                    bad_id.unwrap_or_default()
                ),
                None => format!(
                    "the correlation id after the action in the subject {}",
                    bad_id.unwrap_or_default()
                ),
            },
        )))),
        (None, Err(unreadable)) => Started::Answered(Reply::of(Err(unreadable))),
        (None, Ok(params)) => {
            match start_action(
                &serving.service,
                action,
                params,
                &headers,
                &call.correlation,
            ) {
                Ok(run) => Started::Running(run),
                Err(e) => Started::Answered(Reply::of(Err(e))),
            }
        }
    };
    (call, started)
}

/// The reply to an action's outcome.
fn reply_of(output: Result<koan::action::ActionOutput, Error>) -> Reply {
    Reply::of(output.and_then(koan::action::ActionOutput::into_json))
}

/// The bytes of a full reply's headers besides its correlation id (`NATS/1.0`,
/// `Koan-Wire`, `Koan-Correlation-Id:` and line ends), rounded up.
const REPLY_HEADERS: usize = 96;

/// A reply that fits the broker for one of `len` bytes that does not: a result
/// becomes an error saying the action ran and what became of its result; an
/// error keeps its code, its message cut (a refusal echoing a 1 MB action name
/// was said to have run; found by a probe).
fn shorter(reply: &Reply, len: usize, max: usize) -> Reply {
    match &reply.error {
        None => Reply::refused(
            "handler_error",
            format!(
                "the action ran, but its result ({len} bytes) is larger than the broker takes (max_payload {max} bytes, headers included): it could not be sent; return less, or store it and return where"
            ),
        ),
        Some(code) => {
            let message = reply.message.as_deref().unwrap_or_default();
            let cut: String = message.chars().take(2_000).collect();
            Reply::refused(
                code,
                format!(
                    "{cut} … (cut: the whole answer, {len} bytes, is larger than the broker takes)"
                ),
            )
        }
    }
}

/// Replies up to this size are sent without asking the broker's `max_payload`
/// (no broker takes less than this in practice; its default is 1 MiB).
const LARGE_REPLY: usize = 32 * 1024;

/// Sends a call's reply.
async fn send(client: &async_nats::Client, to: async_nats::Subject, call: Call<'_>, reply: Reply) {
    let mut body = reply.bytes();
    // A reply the broker would refuse is answered with an error saying so: it was
    // dropped unsaid, the action having run, and its caller waited out its whole
    // timeout (found by a probe). (Only a large reply asks: `server_info` clones
    // the server's whole description, too dear for every reply.) Its headers
    // count: the full form's (its wire version and correlation id), no others.
    let headers = match call.form {
        Form::Full => REPLY_HEADERS + call.correlation.len(),
        Form::Bare | Form::Lead => 0,
    };
    if body.len() > LARGE_REPLY {
        let max = client.server_info().max_payload;
        if body.len() + headers > max {
            tracing::warn!(correlation_id = %call.correlation, bytes = body.len(), max_payload = max, "a reply is larger than the broker takes: a shorter one is sent instead");
            body = shorter(&reply, body.len(), max).bytes();
        }
    }
    let _ = match call.form {
        Form::Bare | Form::Lead => client.publish(to, body).await,
        Form::Full => {
            let headers = wire::reply_headers_owned(call.correlation.into_owned());
            client.publish_with_headers(to, headers, body).await
        }
    };
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
    deadline: Option<&'a str>,
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
            } else if *name == wire::H_DEADLINE {
                &mut found.deadline
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

/// A call's action, started with its priority and timeout when the call gave them
/// (a clear error when either header is not a number).
fn start_action(
    service: &koan::service::ServiceRef,
    action: &str,
    payload: &[u8],
    headers: &CallHeaders<'_>,
    correlation: &str,
) -> Result<koan::action::Serve, Error> {
    let priority: Option<i32> = number(
        headers.priority,
        wire::H_PRIORITY,
        "an integer from -2147483648 to 2147483647 (higher runs first)",
    )?;
    let timeout: Option<u64> = number(
        headers.timeout_ms,
        wire::H_TIMEOUT_MS,
        "a whole number of milliseconds",
    )?;
    if timeout == Some(0) {
        // As HTTP's `timeout`: a deadline already past would fail every call.
        return Err(Error::new(
            koan::error::ErrorKind::InvalidParameters,
            format!(
                "header `{}` must be a whole number of milliseconds above 0, got `0`",
                wire::H_TIMEOUT_MS
            ),
        ));
    }
    let deadline: Option<u64> = number(
        headers.deadline,
        wire::H_DEADLINE,
        "a time in Unix milliseconds",
    )?;
    // The time left by the clock, when the call says when its time is up: a call
    // read after it is not run (its caller has been told it timed out). A second
    // of the two hosts' clocks disagreeing is allowed for: past it, every call
    // would be refused (found by a review).
    const SKEW_MS: u64 = 1_000;
    let timeout = match deadline {
        None => timeout,
        Some(at) => {
            let left = at.saturating_add(SKEW_MS).saturating_sub(wire::unix_ms());
            if left == 0 {
                return Err(Error::new(
                    koan::error::ErrorKind::Timeout,
                    format!(
                        "action `{action}`: the call's deadline (`{}`) passed before this instance read it; it was not run",
                        wire::H_DEADLINE
                    ),
                ));
            }
            Some(timeout.map_or(left, |t| t.min(left)))
        }
    };
    // Read once, by the action, straight into its own type (which refuses text
    // that is not JSON, naming the action): no `Value` built and dropped on the way
    // (B8's round trip: about 480 instructions and 2 allocations fewer, by
    // callgrind), nor a read to check it first (about 540 more, and an
    // allocation). Served from the call's parts, without a request built for it
    // (`ServiceRef::serve`).
    Ok(service.serve(
        action,
        JsonText::from(payload),
        correlation,
        priority.unwrap_or(0),
        timeout.map(Duration::from_millis),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_reply_too_large_keeps_what_it_said_but_its_size() {
        let ok = Reply::of(Ok(serde_json::json!("x")));
        let said = shorter(&ok, 2_000_000, 1_048_576);
        assert_eq!(said.error.as_deref(), Some("handler_error"));
        assert!(said.message.is_some_and(|m| m.contains("the action ran")));
        let refused = Reply::refused(
            "unknown_action",
            "no action `".to_owned() + &"y".repeat(100_000),
        );
        let said = shorter(&refused, 100_020, 65_536);
        assert_eq!(said.error.as_deref(), Some("unknown_action"));
        let message = said.message.unwrap_or_default();
        assert!(
            !message.contains("the action ran") && message.len() < 2_200,
            "{message}"
        );
    }

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
