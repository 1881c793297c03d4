//! A remote call: how it is sent (to a chosen instance, or its service's queue
//! group; never while the connection is down), its headers, its name for error
//! messages, and what its answer means.

use std::time::Duration;

use async_nats::HeaderMap;
use async_nats::client::RequestErrorKind;
use koan::Error;
use koan::error::ErrorKind;
use koan::transport::{RemoteCall, RemoteQuery};
use serde_json::Value;

use crate::transport::{NatsTransport, unavailable};
use crate::wire::Reply;
use crate::{subjects, wire};

/// What a call is, for its error messages: written out only when one is (a
/// `format!` per call was ≈ 400 instructions of B8's round trip).
pub(crate) struct CallName<'a>(pub(crate) &'a RemoteCall);

impl std::fmt::Display for CallName<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "action `{}` of `{}`", self.0.action, self.0.service)
    }
}

/// The headers of a remote call; `timeout` is what is left of the caller's own, if
/// it gave one, and `correlation` whether the call's id goes in a header (not when
/// its body's first line carries it, see `wire::lead`). Built for each attempt rather than cloned (B8's
/// profile: a clone of async-nats's header map is a hash map and five strings).
///
/// No `Koan-Wire` header: a request without one is version 1 (docs/wire.md), and
/// writing it cost ≈ 4,500 instructions of B8's round trip between the two sides
/// (insert, write, parse, the look-up's hash). A later version's calls carry theirs.
pub(crate) fn call_headers(
    call: &RemoteCall,
    timeout: Option<Duration>,
    correlation: bool,
) -> HeaderMap {
    let mut h = HeaderMap::new();
    // The names as written, only where the subject's tokens lose more than their
    // case (docs/wire.md: optional, default from the subject). Each header costs
    // async-nats ≈ 900 instructions to insert and as much to parse (B8's profile).
    if !subjects::is_its_token(&call.service) {
        h.insert(wire::H_SERVICE, wire::header_value(&call.service));
    }
    if !subjects::is_its_token(&call.action) {
        h.insert(wire::H_ACTION, wire::header_value(&call.action));
    }
    // Optional on the wire, 0 when absent.
    if call.priority != 0 {
        h.insert(wire::H_PRIORITY, call.priority.to_string().as_str());
    }
    if correlation {
        h.insert(
            wire::H_CORRELATION,
            wire::header_value(&call.correlation_id),
        );
    }
    if let Some(t) = timeout {
        h.insert(wire::H_TIMEOUT_MS, t.as_millis().to_string().as_str());
        // And when it is up, by the clock: an instance that reads the call late
        // (it was frozen, or its queue was long) runs it only in the time left, or
        // not at all. Relative alone, a frozen instance ran the whole call on its
        // resume, 16 s after its caller was told it timed out (found by a probe).
        let millis = u64::try_from(t.as_millis()).unwrap_or(u64::MAX);
        let at = wire::unix_ms().saturating_add(millis);
        h.insert(wire::H_DEADLINE, at.to_string().as_str());
    }
    h
}

/// The result a request's answer carries, or what its failure means.
pub(crate) fn answer(
    sent: Result<async_nats::Message, async_nats::RequestError>,
    subject: &str,
    timeout: Duration,
    what: &(dyn std::fmt::Display + Sync),
) -> Result<Value, Error> {
    match sent {
        Ok(msg) => Reply::read(&msg.payload).map_err(|e| {
            unavailable(format!(
                "{what}: unreadable reply from a remote instance: {e}"
            ))
        })?,
        Err(e) => Err(match e.kind() {
            RequestErrorKind::NoResponders => unavailable(format!(
                "{what}: no instance is reachable over NATS (nothing answers on `{subject}`)"
            )),
            // The caller's timeout, as it gave it: what is left of it when the
            // request is sent, rounded up to the millisecond (`499.958077ms` said
            // less than the caller had set; a probe).
            RequestErrorKind::TimedOut => Error::new(
                ErrorKind::Timeout,
                format!(
                    "{what}: did not finish within its timeout of {:?} (no answer over NATS by then; it may have run, or may still run, on its instance)",
                    Duration::from_millis(
                        u64::try_from(timeout.as_micros().div_ceil(1000)).unwrap_or(u64::MAX)
                    )
                ),
            ),
            _ => unavailable(format!("{what}: NATS request failed: {e}")),
        }),
    }
}

impl NatsTransport {
    /// A query (status, health, info) of `service`.
    pub(crate) async fn query_now(
        &self,
        service: &str,
        query: RemoteQuery,
    ) -> Result<Value, Error> {
        let what = format!("{} of `{service}`", query.as_str());
        if !self.connected() {
            return Err(self.not_sent(&what));
        }
        // To an instance the registry says is live: the queue group may hand it
        // to a member that is frozen (a probe saw half of the queries of a
        // service with one of two instances frozen fail after 5 s, for as long
        // as it stayed so). The queue group when none is known, or when the one
        // chosen does not listen there (an older koan).
        let timeout = Duration::from_secs(5);
        if let Some(host) = self.live_host_of(service) {
            let subject = subjects::host_query(&host, service, query.as_str());
            let sent = self
                .send(
                    subject.clone().into(),
                    HeaderMap::new(),
                    bytes::Bytes::new(),
                    Some(timeout),
                )
                .await;
            let no_one = matches!(&sent, Err(e) if e.kind() == async_nats::client::RequestErrorKind::NoResponders);
            if !no_one {
                return answer(sent, &subject, timeout, &what);
            }
        } else if let Some(e) = self.no_live_instance(service, &what) {
            // As a call: not sent to a queue group only frozen members hold.
            return Err(e);
        }
        // Version 1 without a `Koan-Wire` header, as a call's (`call_headers`).
        self.request(
            subjects::query(service, query.as_str()),
            HeaderMap::new(),
            bytes::Bytes::new(),
            timeout,
            &what,
        )
        .await
    }

    /// A live instance that runs `service` (in whatever state), the most recently
    /// heard first.
    fn live_host_of(&self, service: &str) -> Option<String> {
        let mut best: Option<(chrono::DateTime<chrono::Utc>, String)> = None;
        self.each_live_instance(|i| {
            let runs = i
                .services
                .iter()
                .any(|s| s.name.eq_ignore_ascii_case(service));
            if runs && best.as_ref().is_none_or(|(at, _)| i.seen_at > *at) {
                best = Some((i.seen_at, i.host_id.clone()));
            }
        });
        best.map(|(_, host)| host)
    }

    /// A call or a query made while the connection is down: refused at once, not
    /// held by the client to be sent once it is back — after the caller's timeout
    /// had told it "no answer", so that it ran unawaited (seen in a probe).
    /// The answer to a call when the registry, in view and current, names no live
    /// instance of its service: `UnknownService` for one never announced, or
    /// not sent (`ServiceUnavailable`, nothing ran) for one whose instances all
    /// went silent. Sent to the queue group, it waited out its whole timeout for
    /// a member frozen there (SIGSTOP), which then ran it when resumed (found by a
    /// probe). `None` when the call goes to the queue group: an instance is live
    /// (its own subject answered "no responders"), or the view cannot tell.
    fn no_live_instance(&self, service: &str, what: &dyn std::fmt::Display) -> Option<Error> {
        if self.live_host_of(service).is_some() || self.view_behind() {
            return None;
        }
        match koan::transport::Transport::knows(self, service)? {
            false => Some(Error::new(
                ErrorKind::UnknownService,
                format!(
                    "{what}: no instance of the cluster has announced a service `{service}` since this host joined (names are matched regardless of case); nothing was sent"
                ),
            )),
            true => Some(unavailable(format!(
                "{what}: not sent, no instance of `{service}` was heard from within the last three heartbeats ({:?}); nothing ran — try again once one is back (GET /api/instances)",
                self.stale_after()
            ))),
        }
    }

    pub(crate) fn not_sent(&self, what: &dyn std::fmt::Display) -> Error {
        unavailable(format!(
            "{what}: not sent, this host is not connected to NATS at {} (reconnecting); nothing ran — try again once it is back (its /health says so)",
            self.inner.opts.url
        ))
    }

    /// `Err` when this host is not connected to NATS: a job's enqueue, read or
    /// change is refused at once, nothing sent (each waited 10 to 15 s before; an
    /// enqueue's publish was then sent once the connection came back, and ran).
    pub(crate) fn offline(&self, what: &dyn std::fmt::Display) -> Result<(), Error> {
        if self.connected() {
            return Ok(());
        }
        Err(unavailable(format!(
            "{what}: this host is not connected to NATS at {} (reconnecting); nothing was sent — try again once it is back (its /health says so)",
            self.inner.opts.url
        )))
    }

    pub(crate) async fn request(
        &self,
        subject: String,
        headers: HeaderMap,
        body: bytes::Bytes,
        timeout: Duration,
        what: &(dyn std::fmt::Display + Sync),
    ) -> Result<Value, Error> {
        // A `Subject` shares its bytes: kept for the error message without a copy.
        let subject = async_nats::Subject::from(subject);
        let sent = self
            .send(subject.clone(), headers, body, Some(timeout))
            .await;
        crate::call::answer(sent, &subject, timeout, what)
    }

    /// One request, as the client answers it; without a `timeout`, it waits for its
    /// answer as long as it is awaited.
    pub(crate) async fn send(
        &self,
        subject: async_nats::Subject,
        headers: HeaderMap,
        body: bytes::Bytes,
        timeout: Option<Duration>,
    ) -> Result<async_nats::Message, async_nats::RequestError> {
        let mut req = async_nats::Request::new().payload(body).timeout(timeout);
        // None at all rather than an empty block, which would still be written,
        // read and parsed.
        if !headers.is_empty() {
            req = req.headers(headers);
        }
        self.inner.client.send_request(subject, req).await
    }

    /// A remote call: to the less loaded instance when one can be chosen (for a
    /// poke of a cluster singleton, the holder of its lease), to the service's
    /// queue group otherwise.
    pub(crate) async fn call_now(&self, call: RemoteCall) -> Result<Value, Error> {
        if !self.connected() {
            return Err(self.not_sent(&CallName(&call)));
        }
        let timeout = call
            .timeout
            .unwrap_or(self.inner.opts.default_request_timeout);
        // The call's id leads its body when it is plain (see `wire::lead`).
        let plain = subjects::is_plain_id(&call.correlation_id);
        let id = plain.then_some(call.correlation_id.as_str());
        let (body, params) = crate::wire::lead::body(id, &call.params);
        let what = CallName(&call);
        // A poke of a cluster singleton goes to the holder of its lease, which runs
        // its ticks (a service without a lease has no holder).
        let holder = match koan::well_known::actions::poke(&call.action) {
            Some(_) => crate::lease::holder(self, &call.service).await,
            None => None,
        };
        // The less loaded instance, watched while the call is in flight.
        if let Some(r) = crate::routing::call_chosen(
            self,
            &call,
            (&body, params),
            timeout,
            &what,
            holder.as_deref(),
        )
        .await
        {
            return r;
        }
        if holder.is_none()
            && let Some(e) = self.no_live_instance(&call.service, &what)
        {
            return Err(e);
        }
        let subject = async_nats::Subject::from(subjects::action(&call.service, &call.action));
        let h = call_headers(&call, call.timeout, true);
        // Said with the call's timeout; its answer waited for a margin longer.
        let wait = timeout
            + call
                .timeout
                .map_or(Duration::ZERO, koan::transport::reply_margin);
        let sent = self
            .send(subject.clone(), h, body.slice(params..), Some(wait))
            .await;
        answer(sent, &subject, timeout, &what)
    }
}

#[cfg(test)]
mod tests {
    use serde_json::Value;

    use super::*;

    #[test]
    fn a_call_is_version_1_by_leaving_the_header_off() {
        let call = RemoteCall {
            service: "svc".into(),
            action: "act".to_owned(),
            params: Value::Null,
            priority: 0,
            timeout: None,
            correlation_id: "c-1".to_owned(),
        };
        let h = call_headers(&call, Some(Duration::from_millis(1500)), true);
        assert_eq!(wire::header_str(Some(&h), wire::H_WIRE), None);
        assert!(
            wire::refuse_version(Some(&h)).is_none(),
            "read as version 1"
        );
        assert_eq!(wire::header_str(Some(&h), wire::H_CORRELATION), Some("c-1"));
        assert_eq!(wire::header_str(Some(&h), wire::H_TIMEOUT_MS), Some("1500"));
        let at: u64 = wire::header_str(Some(&h), wire::H_DEADLINE)
            .and_then(|v| v.parse().ok())
            .unwrap_or_default();
        assert!(at > wire::unix_ms() && at <= wire::unix_ms() + 1500, "{at}");
        // The id in the call's subject instead: no header is left.
        let h = call_headers(&call, None, false);
        assert!(h.is_empty(), "{h:?}");
    }
}
