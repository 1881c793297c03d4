//! A durable job on the wire: a message on `koan.work.<service>.<action>` in the
//! `KOAN_WORK` stream whose body is the action's parameters and whose headers carry
//! the rest. The Rust client writes exactly what a client in another language writes
//! by hand (`docs/wire.md`, "Durable jobs").

use async_nats::HeaderMap;
use async_nats::header::HeaderName;
use bytes::Bytes;
use koan::job::JobStep;
use koan::{Error, error::ErrorKind};
use serde_json::Value;

use super::{
    H_ACTION, H_ACTION_ID, H_CORRELATION, H_DEADLINE, H_IDEMPOTENCY_KEY, H_MSG_ID, H_PRIORITY,
    H_RUN_AT, H_RUNS_BEFORE, H_SERVICE, H_THEN, H_TIMEOUT_MS, H_WIRE, Reply, VERSION, header,
    header_str, header_value, refuse_version,
};
use crate::subjects;

/// A durable job, read from or written to the work stream.
#[derive(Debug, Clone)]
pub(crate) struct Job {
    /// The job's id: its `Nats-Msg-Id`, which JetStream de-duplicates on, unless
    /// the message is a retry by hand (then `Koan-Action-Id`, see `retry`).
    pub(crate) id: String,
    pub(crate) service: String,
    pub(crate) action: String,
    pub(crate) params: Value,
    pub(crate) priority: i32,
    pub(crate) timeout_ms: Option<u64>,
    /// When the job's time is up (Unix milliseconds): time waiting in the stream
    /// counts, as it does in a local mailbox.
    pub(crate) deadline_unix_ms: Option<u64>,
    /// Not to run before this time (Unix milliseconds): such a job waits in the
    /// `KOAN_DELAYED` stream until it is due.
    pub(crate) run_at_unix_ms: Option<u64>,
    pub(crate) correlation_id: String,
    /// The caller's idempotency key, when the id was made from one: shown on the
    /// record and to the handler.
    pub(crate) idempotency_key: Option<String>,
    /// The actions to run after this one, in order, as one job (a chain): its
    /// outcome is the last one's, and a failure retries the whole chain.
    pub(crate) then: Vec<JobStep>,
    /// Set on a job published again by a retry by hand: runs the job had before
    /// (its attempts go on from there), and the message's own de-duplication id,
    /// told apart from the job's id so that JetStream does not drop it as a repeat.
    pub(crate) retry: Option<Retry>,
}

/// What a retry by hand adds to a job's message.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Retry {
    /// Runs before this message (`Koan-Runs-Before`).
    pub(crate) runs_before: u32,
    /// The message's `Nats-Msg-Id`.
    pub(crate) msg_id: String,
}

/// A work message that cannot be run as a job, and why.
#[derive(Debug)]
pub(crate) struct Unreadable {
    /// The job's id, when the message had one (then its outcome records the refusal).
    pub(crate) id: Option<String>,
    pub(crate) service: String,
    pub(crate) action: String,
    /// The refusal: an error code and a message naming what was wrong.
    pub(crate) reply: Reply,
}

impl Job {
    /// The subject, headers and body to publish.
    pub(crate) fn message(&self) -> (String, HeaderMap, Bytes) {
        let mut h = HeaderMap::new();
        match &self.retry {
            None => h.insert(H_MSG_ID, header_value(&self.id)),
            Some(r) => {
                h.insert(H_MSG_ID, header_value(&r.msg_id));
                h.insert(H_ACTION_ID, header_value(&self.id));
                h.insert(H_RUNS_BEFORE, r.runs_before.to_string().as_str());
            }
        }
        h.insert(H_WIRE, VERSION);
        h.insert(H_SERVICE, header_value(&self.service));
        h.insert(H_ACTION, header_value(&self.action));
        h.insert(H_CORRELATION, header_value(&self.correlation_id));
        if self.priority != 0 {
            h.insert(H_PRIORITY, self.priority.to_string().as_str());
        }
        if let Some(ms) = self.timeout_ms {
            h.insert(H_TIMEOUT_MS, ms.to_string().as_str());
        }
        if let Some(at) = self.deadline_unix_ms {
            h.insert(H_DEADLINE, at.to_string().as_str());
        }
        if let Some(at) = self.run_at_unix_ms {
            h.insert(H_RUN_AT, at.to_string().as_str());
        }
        if let Some(key) = &self.idempotency_key {
            h.insert(H_IDEMPOTENCY_KEY, header_value(key));
        }
        if !self.then.is_empty() {
            // JSON has no line breaks unless pretty-printed: a valid header value.
            let then = serde_json::to_string(&self.then).unwrap_or_default();
            h.insert(H_THEN, then.as_str());
        }
        let body = serde_json::to_vec(&self.params).unwrap_or_default().into();
        let subject = if self.run_at_unix_ms.is_some_and(|at| at > super::unix_ms()) {
            subjects::delayed(&self.service, &self.action, &self.id)
        } else {
            subjects::work(&self.service, &self.action)
        };
        (subject, h, body)
    }

    /// Reads a message of the work stream of `service` (the name of the consumer's
    /// service). The `Koan-Service` / `Koan-Action` headers name service and action
    /// as written; without them, `service` and the subject's action token stand.
    pub(crate) fn read(
        service: &str,
        subject: &str,
        headers: Option<&HeaderMap>,
        body: &[u8],
    ) -> Result<Job, Box<Unreadable>> {
        // `koan.work.<service>.<action>`, or a delayed one's
        // `koan.delayed.<service>.<action>[.<id>]` (a foreign client's delayed job
        // without `Koan-Action`, as wire.md allows, died `unknown_action` "unknown";
        // found by a probe).
        let token = match subject.strip_prefix("koan.work.") {
            // All after the service (a subject of more tokens names no action).
            Some(rest) => rest.split_once('.').map(|(_, action)| action),
            None => subject
                .strip_prefix("koan.delayed.")
                .and_then(|rest| rest.split('.').nth(1)),
        }
        .unwrap_or("unknown");
        let service = header(headers, H_SERVICE).unwrap_or_else(|| service.to_owned());
        let action = header(headers, H_ACTION).unwrap_or_else(|| token.to_owned());
        let id = header(headers, H_MSG_ID).filter(|id| !id.trim().is_empty());
        let refuse = |id: Option<String>, reply: Reply| {
            Box::new(Unreadable {
                id,
                service: service.clone(),
                action: action.clone(),
                reply,
            })
        };
        let invalid = |id: &str, what: String| {
            refuse(
                Some(id.to_owned()),
                Reply::of(Err(Error::new(ErrorKind::InvalidParameters, what))),
            )
        };
        let Some(id) = id else {
            return Err(refuse(
                None,
                Reply::of(Err(Error::new(
                    ErrorKind::InvalidParameters,
                    format!(
                        "a durable job on `{subject}` has no `{H_MSG_ID}` header: it is the job's id (and its idempotency key), and the only way to read the job's outcome"
                    ),
                ))),
            ));
        };
        if let Some(job) = super::legacy::read(headers, body) {
            return Ok(job);
        }
        if let Some(reply) = refuse_version(headers) {
            return Err(refuse(Some(id), reply));
        }
        // An id no bucket can key (an empty token: `x.`, `.x`, `a..b`): its
        // outcome and record could never be stored (one held its host's workers
        // for good; found by a review).
        if !crate::subjects::is_held_key(&crate::subjects::key(&id)) {
            let why = format!(
                "header `{H_MSG_ID}` (the job's id) `{}` cannot key its outcome and record: no empty dot-separated part (no `.` at either end or two together)",
                id.escape_debug()
            );
            return Err(invalid(&id, why));
        }
        let number = |name: HeaderName| -> Result<Option<u64>, Box<Unreadable>> {
            match header_str(headers, name.clone()) {
                None => Ok(None),
                Some(v) => v.trim().parse().map(Some).map_err(|_| {
                    invalid(
                        &id,
                        format!(
                            "header `{name}` must be a whole number of milliseconds, got `{v}`"
                        ),
                    )
                }),
            }
        };
        let timeout_ms = number(H_TIMEOUT_MS)?;
        let deadline_unix_ms = number(H_DEADLINE)?;
        let run_at_unix_ms = number(H_RUN_AT)?;
        let priority = match header(headers, H_PRIORITY) {
            None => 0,
            Some(v) => v.trim().parse().map_err(|_| {
                invalid(
                    &id,
                    format!(
                        "header `{H_PRIORITY}` must be an integer from -2147483648 to 2147483647 (higher runs first), got `{v}`"
                    ),
                )
            })?,
        };
        let params = if body.iter().all(u8::is_ascii_whitespace) {
            Value::Null
        } else {
            serde_json::from_slice(body).map_err(|e| {
                invalid(
                    &id,
                    format!("the body of a durable job is the action's parameters as JSON, and this is not JSON: {e}"),
                )
            })?
        };
        let retry = match header(headers, H_RUNS_BEFORE) {
            None => None,
            Some(v) => Some(Retry {
                runs_before: v.trim().parse().map_err(|_| {
                    invalid(
                        &id,
                        format!(
                            "header `{H_RUNS_BEFORE}` must be a whole number of runs, got `{v}`"
                        ),
                    )
                })?,
                msg_id: id.clone(),
            }),
        };
        // A retry names the job in `Koan-Action-Id`; its `Nats-Msg-Id` is its own.
        let id = match (&retry, header(headers, H_ACTION_ID)) {
            (Some(_), Some(job)) if !job.trim().is_empty() => job,
            _ => id,
        };
        let then = match header(headers, H_THEN) {
            None => Vec::new(),
            Some(v) => serde_json::from_str(&v).map_err(|e| {
                invalid(
                    &id,
                    format!(
                        "header `{H_THEN}` must be a JSON array of the actions to run after this one, each {{\"action\": …, \"params\": …, \"timeout_ms\": …}}: {e}"
                    ),
                )
            })?,
        };
        // The rule a call's id follows; a job's own id stands in for a missing
        // one when it could be one (a run was refused its id otherwise, and dead).
        let correlation_id = match header(headers, H_CORRELATION) {
            Some(c) => {
                koan::action::check_correlation_id(&c)
                    .map_err(|why| invalid(&id, format!("header `{H_CORRELATION}` {why}")))?;
                c
            }
            None if koan::action::check_correlation_id(&id).is_ok() => id.clone(),
            None => koan::action::new_correlation_id(),
        };
        Ok(Job {
            id,
            service,
            action,
            params,
            priority,
            timeout_ms,
            deadline_unix_ms,
            run_at_unix_ms,
            correlation_id,
            idempotency_key: header(headers, H_IDEMPOTENCY_KEY),
            then,
            retry,
        })
    }

    /// Runs of the job before this message's deliveries.
    pub(crate) fn runs_before(&self) -> u32 {
        self.retry.as_ref().map_or(0, |r| r.runs_before)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn job() -> Job {
        Job {
            id: "0193-a".to_owned(),
            service: "Worker".to_owned(),
            action: "work".to_owned(),
            params: serde_json::json!({ "n": 7 }),
            priority: 3,
            timeout_ms: Some(500),
            deadline_unix_ms: Some(1_700_000_000_000),
            run_at_unix_ms: None,
            correlation_id: "c-1".to_owned(),
            idempotency_key: Some("order-7".to_owned()),
            then: vec![JobStep {
                action: "notify".to_owned(),
                params: serde_json::json!({ "to": "ops" }),
                timeout_ms: Some(250),
            }],
            retry: None,
        }
    }

    #[test]
    fn what_is_written_reads_back() {
        let (subject, h, body) = job().message();
        assert_eq!(subject, "koan.work.worker.work");
        let back = Job::read("Other", &subject, Some(&h), &body).expect("readable");
        assert_eq!(back.id, "0193-a");
        assert_eq!(
            (back.service.as_str(), back.action.as_str()),
            ("Worker", "work")
        );
        assert_eq!(back.params, serde_json::json!({ "n": 7 }));
        assert_eq!(back.priority, 3);
        assert_eq!(back.timeout_ms, Some(500));
        assert_eq!(back.deadline_unix_ms, Some(1_700_000_000_000));
        assert_eq!(back.correlation_id, "c-1");
        assert_eq!(back.idempotency_key.as_deref(), Some("order-7"));
        assert_eq!(back.then, job().then, "the chain's next actions");
    }

    #[test]
    fn a_retry_keeps_the_job_s_id_under_a_message_id_of_its_own() {
        let mut retry = job();
        retry.retry = Some(Retry {
            runs_before: 3,
            msg_id: "0193-a.retry.9".to_owned(),
        });
        let (subject, h, body) = retry.message();
        assert_eq!(
            h.get(H_MSG_ID).map(|v| v.as_str()),
            Some("0193-a.retry.9"),
            "not dropped as a repeat of the first message"
        );
        let back = Job::read("Worker", &subject, Some(&h), &body).expect("readable");
        assert_eq!(back.id, "0193-a", "the job's own id");
        assert_eq!(back.runs_before(), 3);
        assert_eq!(back.retry, retry.retry);
        let mut bad = h.clone();
        bad.insert(H_RUNS_BEFORE, "three");
        let refused = Job::read("Worker", &subject, Some(&bad), &body).expect_err("refused");
        assert!(
            refused
                .reply
                .reason()
                .1
                .contains(H_RUNS_BEFORE.as_ref() as &str),
            "{refused:?}"
        );
    }

    #[test]
    fn a_foreign_job_needs_only_its_id() {
        let mut h = HeaderMap::new();
        h.insert(H_MSG_ID, "j-1");
        let job = Job::read(
            "TranslationService",
            "koan.work.translationservice.translate",
            Some(&h),
            b"{\"a\":1}",
        )
        .expect("readable");
        assert_eq!(job.service, "TranslationService");
        assert_eq!(job.action, "translate");
        assert_eq!(
            job.correlation_id, "j-1",
            "the id stands in for a correlation id"
        );
        assert_eq!(job.priority, 0);
        // On the work queue, all after the service names it (a subject of more
        // tokens names no action: refused as unknown, not taken for another).
        let job = Job::read("S", "koan.work.s.a.b", Some(&h), b"{}").expect("readable");
        assert_eq!(job.action, "a.b");
        // A delayed one, on its id's subject or its action's, names its action so.
        for subject in [
            "koan.delayed.translationservice.translate.j-1",
            "koan.delayed.translationservice.translate",
        ] {
            let job = Job::read("TranslationService", subject, Some(&h), b"{}").expect(subject);
            assert_eq!(job.action, "translate", "{subject}");
        }
        let empty = Job::read("S", "koan.work.s.a", Some(&h), b"").expect("readable");
        // An id that cannot key a bucket is refused, saying why.
        for bad in ["x.", ".x", "a..b"] {
            let mut h = HeaderMap::new();
            h.insert(H_MSG_ID, bad);
            let e = Job::read("S", "koan.work.s.a", Some(&h), b"{}").expect_err(bad);
            assert!(format!("{:?}", e.reply).contains("cannot key"), "{bad}");
        }
        assert_eq!(empty.params, Value::Null);
    }

    #[test]
    fn refusals_name_what_was_wrong() {
        let no_id = Job::read("S", "koan.work.s.a", None, b"{}").expect_err("no id");
        assert!(no_id.id.is_none());
        assert!(
            no_id
                .reply
                .message
                .as_deref()
                .unwrap_or("")
                .contains("Nats-Msg-Id")
        );

        let mut h = HeaderMap::new();
        h.insert(H_MSG_ID, "j-2");
        h.insert(H_WIRE, "2");
        let newer = Job::read("S", "koan.work.s.a", Some(&h), b"{}").expect_err("version 2");
        assert_eq!(newer.id.as_deref(), Some("j-2"));
        assert_eq!(
            newer.reply.error.as_deref(),
            Some("unsupported_wire_version")
        );

        let mut h = HeaderMap::new();
        h.insert(H_MSG_ID, "j-3");
        h.insert(H_PRIORITY, "high");
        let bad = Job::read("S", "koan.work.s.a", Some(&h), b"{}").expect_err("bad priority");
        assert_eq!(bad.reply.error.as_deref(), Some("invalid_parameters"));
        assert!(
            bad.reply
                .message
                .as_deref()
                .unwrap_or("")
                .contains("Koan-Priority")
        );

        for (name, value) in [(H_THEN, "[{\"params\": 1}]"), (H_RUN_AT, "tomorrow")] {
            let mut h = HeaderMap::new();
            h.insert(H_MSG_ID, "j-5");
            let name: &str = name.as_ref();
            h.insert(name, value);
            let bad = Job::read("S", "koan.work.s.a", Some(&h), b"{}").expect_err(name);
            assert_eq!(bad.reply.error.as_deref(), Some("invalid_parameters"));
            let message = bad.reply.message.unwrap_or_default();
            assert!(message.contains(name), "{message}");
        }

        let mut h = HeaderMap::new();
        h.insert(H_MSG_ID, "j-4");
        let not_json = Job::read("S", "koan.work.s.a", Some(&h), b"{oops").expect_err("not JSON");
        assert!(
            not_json
                .reply
                .message
                .as_deref()
                .unwrap_or("")
                .contains("not JSON")
        );
    }
}
