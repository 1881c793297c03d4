//! Version 0: the envelope the Rust client wrote before the wire was a contract (the
//! whole job as a JSON body, its id also in `Koan-Action-Id`). It is read, never
//! written, so that jobs queued before an upgrade still run after it.

use async_nats::HeaderMap;
use serde::Deserialize;
use serde_json::Value;

use super::{H_ACTION_ID, H_MSG_ID, H_WIRE, Job, header};

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Envelope {
    id: String,
    service: String,
    action: String,
    params: Value,
    priority: i32,
    timeout_ms: Option<u64>,
    #[serde(default)]
    deadline_unix_ms: Option<u64>,
    correlation_id: String,
}

/// The job, when the message is a version-0 envelope: no `Koan-Wire` header, the
/// same id in `Nats-Msg-Id` and `Koan-Action-Id`, and a body that is exactly the old
/// envelope with that id.
pub(super) fn read(headers: Option<&HeaderMap>, body: &[u8]) -> Option<Job> {
    if header(headers, H_WIRE).is_some() {
        return None;
    }
    let id = header(headers, H_ACTION_ID)?;
    if header(headers, H_MSG_ID).as_deref() != Some(id.as_str()) {
        return None;
    }
    let e: Envelope = serde_json::from_slice(body).ok()?;
    (e.id == id).then_some(Job {
        id: e.id,
        service: e.service,
        action: e.action,
        params: e.params,
        priority: e.priority,
        timeout_ms: e.timeout_ms,
        deadline_unix_ms: e.deadline_unix_ms,
        run_at_unix_ms: None,
        correlation_id: e.correlation_id,
        idempotency_key: None,
        then: Vec::new(),
        retry: None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn old(id: &str) -> (HeaderMap, Vec<u8>) {
        let mut h = HeaderMap::new();
        h.insert(H_MSG_ID, id);
        h.insert(H_ACTION_ID, id);
        let body = serde_json::json!({
            "id": id, "service": "Worker", "action": "work", "params": 7,
            "priority": 2, "timeout_ms": null, "correlation_id": "c-0"
        });
        (h, serde_json::to_vec(&body).unwrap_or_default())
    }

    #[test]
    fn a_job_queued_before_the_contract_still_reads() {
        let (h, body) = old("j-0");
        let job = Job::read("Worker", "koan.work.worker.work", Some(&h), &body).expect("read");
        assert_eq!(job.params, serde_json::json!(7));
        assert_eq!((job.priority, job.correlation_id.as_str()), (2, "c-0"));
    }

    #[test]
    fn anything_else_is_parameters() {
        // A version-1 job whose parameters look like an envelope stays parameters.
        let (mut h, body) = old("j-1");
        h.insert(H_WIRE, "1");
        assert!(read(Some(&h), &body).is_none());
        // Without the matching Koan-Action-Id it is not version 0 either.
        let (_, body) = old("j-2");
        let mut h = HeaderMap::new();
        h.insert(H_MSG_ID, "j-2");
        assert!(read(Some(&h), &body).is_none());
    }
}
