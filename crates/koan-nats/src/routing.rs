//! Where a call goes: to one chosen instance rather than the service's queue group,
//! so that it can prefer the less loaded instance and notice when that instance
//! leaves the cluster while the call is in flight.
//!
//! The load of an instance is what this host has in flight to it plus the running
//! and queued actions of the service in its last heartbeat. Without a view of the
//! cluster yet, calls go to the queue group (any instance).

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

use async_nats::client::RequestErrorKind;
use koan::{Error, status::ServiceState, transport::Instance, transport::RemoteCall};
use serde_json::Value;

use crate::subjects;
use crate::transport::{NatsTransport, call_headers, unavailable};

/// Calls this host has in flight, per instance.
#[derive(Debug, Default)]
pub(crate) struct Outstanding(Mutex<HashMap<String, usize>>);

/// One call in flight to `host`; counted down when dropped.
pub(crate) struct InFlight<'a> {
    table: &'a Outstanding,
    host: String,
}

impl InFlight<'_> {
    /// The instance the call went to.
    pub(crate) fn host(&self) -> &str {
        &self.host
    }
}

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        if let Ok(mut m) = self.table.0.lock()
            && let Some(n) = m.get_mut(&self.host)
        {
            *n = n.saturating_sub(1);
            if *n == 0 {
                m.remove(&self.host);
            }
        }
    }
}

impl Outstanding {
    fn get(&self, host: &str) -> usize {
        self.0
            .lock()
            .map_or(0, |m| m.get(host).copied().unwrap_or(0))
    }

    fn start(&self, host: &str) -> InFlight<'_> {
        if let Ok(mut m) = self.0.lock() {
            *m.entry(host.to_owned()).or_default() += 1;
        }
        InFlight {
            table: self,
            host: host.to_owned(),
        }
    }
}

/// The instance to send a call for `service` to, and its subject; `None` to use the
/// queue group.
pub(crate) fn pick<'a>(
    t: &'a NatsTransport,
    service: &str,
    action: &str,
) -> Option<(InFlight<'a>, String)> {
    let load = |i: &Instance| -> Option<usize> {
        let s = i
            .services
            .iter()
            .find(|s| s.name.eq_ignore_ascii_case(service))?;
        // A service that is stopping (its host shutting down) takes no new calls.
        let serving = s.enabled
            && !matches!(
                s.state,
                ServiceState::Failed
                    | ServiceState::Disabled
                    | ServiceState::Stopping
                    | ServiceState::Stopped
            );
        serving.then(|| s.in_flight + s.queue_depth + t.outstanding().get(&i.host_id))
    };
    // The view is read in place: only the chosen id is copied.
    let mut best: Option<(String, usize)> = None;
    let mut ties = 0u32;
    t.each_live_instance(|i| {
        let Some(l) = load(i) else { return };
        match &best {
            Some((_, b)) if l > *b => {}
            Some((_, b)) if l == *b => {
                // Among equals, each is taken with equal chance.
                ties += 1;
                if fastrand::u32(..=ties) == 0 {
                    best = Some((i.host_id.clone(), l));
                }
            }
            _ => {
                best = Some((i.host_id.clone(), l));
                ties = 0;
            }
        }
    });
    let (chosen, _) = best?;
    Some((
        t.outstanding().start(&chosen),
        subjects::host_action(&chosen, service, action),
    ))
}

/// Resolves once `host` has left the cluster: no heartbeat for three periods (a
/// crash) or withdrawn (a shutdown). Checked every heartbeat.
pub(crate) async fn gone(t: &NatsTransport, host: &str, heartbeat: Duration) {
    loop {
        tokio::time::sleep(heartbeat).await;
        let mut live = false;
        t.each_live_instance(|i| live |= i.host_id == host);
        if !live {
            return;
        }
    }
}

/// Sends `call` to the instance [`pick`] chooses and watches that instance while
/// the call is in flight. `None` when the call is the queue group's to send: no
/// instance to choose, or the chosen one does not listen on its own subject (it
/// was killed a moment ago and its registry entry has not aged out yet, say) — "no
/// responders" means nobody received the call, so sending it again is safe.
///
/// When the chosen instance leaves the cluster mid-call, the outcome is unknown:
/// the call fails saying so, unless the action is declared idempotent (asked of
/// the instances that remain), and then it is sent again to one of them, with the
/// time left of its deadline.
pub(crate) async fn call_chosen(
    t: &NatsTransport,
    call: &RemoteCall,
    body: &bytes::Bytes,
    timeout: Duration,
    what: &(dyn std::fmt::Display + Sync),
) -> Option<Result<Value, Error>> {
    let deadline = tokio::time::Instant::now() + timeout;
    // The caller's own timeout, less what earlier attempts used.
    let mut call_timeout = call.timeout;
    loop {
        let (in_flight, subject) = pick(t, &call.service, &call.action)?;
        let host = in_flight.host();
        let left = deadline.saturating_duration_since(tokio::time::Instant::now());
        let sent = tokio::select! {
            r = t.send(subject.clone(), call_headers(call, call_timeout), body.clone(), left) => r,
            () = gone(t, host, t.inner.opts.heartbeat) => {
                let left = deadline.saturating_duration_since(tokio::time::Instant::now());
                if !left.is_zero() && idempotent(t, call, left).await {
                    tracing::info!(host = %host, "{what}: instance left the cluster mid-call; the action is idempotent, sending it again");
                    if call.timeout.is_some() {
                        call_timeout = Some(left);
                    }
                    continue;
                }
                return Some(Err(unavailable(format!(
                    "{what}: instance {host} left the cluster while running the call (no heartbeat for three periods); the outcome is unknown — the action may have run (declare it idempotent to have such calls sent again). Calls made now go to the instances that remain"
                ))));
            }
        };
        if let Err(e) = &sent
            && e.kind() == RequestErrorKind::NoResponders
        {
            tracing::debug!(host = %host, subject = %subject, "chosen instance does not listen; the call goes to the queue group");
            return None;
        }
        return Some(NatsTransport::answer(sent, &subject, left, what));
    }
}

/// Whether the remaining instances of the call's service declare its action
/// idempotent (asked through the service's `info`, within `left`).
async fn idempotent(t: &NatsTransport, call: &RemoteCall, left: Duration) -> bool {
    use koan::transport::{RemoteQuery, Transport as _};
    let info = tokio::time::timeout(left, t.query(&call.service, RemoteQuery::Info)).await;
    let Ok(Ok(info)) = info else {
        return false;
    };
    serde_json::from_value::<koan::service::ServiceInfo>(info)
        .ok()
        .and_then(|i| i.action(&call.action).map(|a| a.idempotent))
        .unwrap_or(false)
}
