//! What a remote call sends: its headers, and its name for error messages; and
//! what its answer means.

use std::time::Duration;

use async_nats::HeaderMap;
use async_nats::client::RequestErrorKind;
use koan::Error;
use koan::error::ErrorKind;
use koan::transport::RemoteCall;
use serde_json::Value;

use crate::transport::unavailable;
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
            RequestErrorKind::TimedOut => Error::new(
                ErrorKind::Timeout,
                format!("{what}: no answer over NATS within {timeout:?}"),
            ),
            _ => unavailable(format!("{what}: NATS request failed: {e}")),
        }),
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
        // The id in the call's subject instead: no header is left.
        let h = call_headers(&call, None, false);
        assert!(h.is_empty(), "{h:?}");
    }
}
