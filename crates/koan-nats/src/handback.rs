//! Jobs handed back to the work queue for another instance, not run here and not
//! counted as an attempt: a run a stopping host cut short, and a job of an action
//! this instance's build lacks while another live instance announced it (a
//! rolling deploy). Each is published anew with the runs that counted before it,
//! and its old message ended.

use std::time::Duration;

use async_nats::jetstream::{AckKind, Message};
use koan::HostHandle;
use koan::error::ErrorKind;

use crate::transport::NatsTransport;
use crate::wire::{self, Job};

/// How long a job of an action this instance lacks is held before it is handed over.
pub(crate) const HAND_OVER_AFTER: Duration = Duration::from_secs(1);

/// The first action of `job` (its chain's included) this host's service does not
/// declare, but a built-in one (`trigger`, …).
pub(crate) fn lacked_action<'j>(host: &HostHandle, job: &'j Job) -> Option<&'j str> {
    let service = host.service(&job.service);
    std::iter::once(job.action.as_str())
        .chain(job.then.iter().map(|s| s.action.as_str()))
        .find(|a| {
            koan::well_known::actions::poke(a).is_none()
                && service
                    .retry_policy(a)
                    .is_err_and(|e| e.kind() == ErrorKind::UnknownAction)
        })
}

/// Whether another live instance of the job's service may serve every action of
/// `job` (it announced them all): a chain of two actions, each lacking on one of
/// two hosts, is not handed to and fro for ever (found by a review).
pub(crate) fn served_elsewhere(t: &NatsTransport, job: &Job) -> bool {
    let me = t.host_id();
    let mut elsewhere = false;
    t.each_route(&job.service, |r| {
        elsewhere |= *r.host != *me
            && std::iter::once(job.action.as_str())
                .chain(job.then.iter().map(|s| s.action.as_str()))
                .all(|a| r.may_serve(a));
    });
    elsewhere
}

/// Hands back a job whose run this stopping host cut short, for another instance:
/// published anew, and the old message ended. A stop is not a run: a Nak, which
/// JetStream counts as a delivery, made each stop an attempt (a job stopped three
/// times ran as attempt 4 of 3, a failing one died after one real run; found by a
/// probe) and at the last of `max_deliver` would never deliver it again. The new
/// message carries the runs that counted (`Koan-Runs-Before`: those before this
/// delivery), so its first delivery is this run's attempt again; it waits behind
/// the jobs already queued. Published first: should this host die between the
/// two, both messages stay, and the second finds the first's outcome before
/// running (`Koan-Runs-Before` makes every delivery of it look).
/// `by` says who let it go, for the log ("this stopping host", "this instance, which
/// lacks its action": one wording for both misled a probe).
pub(crate) async fn release(
    t: &NatsTransport,
    msg: &Message,
    job: &Job,
    delivered: i64,
    by: &'static str,
) {
    let nak = || msg.ack_with(AckKind::Nak(Some(Duration::from_secs(1))));
    let seq = msg.info().map(|i| i.stream_sequence).unwrap_or_default();
    if seq == 0 {
        let _ = nak().await;
        return;
    }
    let counted = u32::try_from(delivered.saturating_sub(1)).unwrap_or(u32::MAX);
    let mut again = job.clone();
    again.run_at_unix_ms = None;
    again.retry = Some(wire::Retry {
        runs_before: job.runs_before().saturating_add(counted),
        // One new message per released message.
        msg_id: format!("{}.release.{seq}", job.id),
    });
    match crate::enqueue::publish(t, &again).await {
        Ok(_) => {
            tracing::info!(id = %job.id, delivered, "durable job released by {by}: published again for another instance");
            let _ = msg.ack_with(AckKind::Term).await;
        }
        Err(e) => {
            // Not published (or not known to be): JetStream's advisory will make it
            // dead (`stranded.rs`) rather than leave it.
            tracing::warn!(id = %job.id, error = %e, "durable job released by {by} could not be published again; handed back (a delivery counted)");
            let _ = nak().await;
        }
    }
}
