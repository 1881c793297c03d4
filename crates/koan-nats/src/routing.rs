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

use async_nats::HeaderMap;
use async_nats::client::RequestErrorKind;
use koan::{Error, status::ServiceState, transport::Instance, transport::RemoteCall};
use serde_json::Value;

use crate::subjects;
use crate::transport::{NatsTransport, unavailable};

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
    let live = t.live_instances();
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
    let mut best: Option<(&Instance, usize)> = None;
    let mut ties = 0u32;
    for i in &live {
        let Some(l) = load(i) else { continue };
        match best {
            Some((_, b)) if l > b => {}
            Some((_, b)) if l == b => {
                // Among equals, each is taken with equal chance.
                ties += 1;
                if fastrand::u32(..=ties) == 0 {
                    best = Some((i, l));
                }
            }
            _ => {
                best = Some((i, l));
                ties = 0;
            }
        }
    }
    let (chosen, _) = best?;
    Some((
        t.outstanding().start(&chosen.host_id),
        subjects::host_action(&chosen.host_id, service, action),
    ))
}

/// Resolves once `host` has left the cluster: no heartbeat for three periods (a
/// crash) or withdrawn (a shutdown). Checked every heartbeat.
pub(crate) async fn gone(t: &NatsTransport, host: &str, heartbeat: Duration) {
    loop {
        tokio::time::sleep(heartbeat).await;
        if !t.live_instances().iter().any(|i| i.host_id == host) {
            return;
        }
    }
}

/// Sends `call` to the instance [`pick`] chooses and watches that instance while
/// the call is in flight. `None` when the call is the queue group's to send: no
/// instance to choose, or the chosen one does not listen on its own subject (it
/// was killed a moment ago and its registry entry has not aged out yet, say) — "no
/// responders" means nobody received the call, so sending it again is safe.
pub(crate) async fn call_chosen(
    t: &NatsTransport,
    call: &RemoteCall,
    headers: &HeaderMap,
    body: &bytes::Bytes,
    timeout: Duration,
    what: &str,
) -> Option<Result<Value, Error>> {
    let (in_flight, subject) = pick(t, &call.service, &call.action)?;
    let host = in_flight.host();
    let sent = tokio::select! {
        r = t.send(subject.clone(), headers.clone(), body.clone(), timeout) => r,
        () = gone(t, host, t.inner.opts.heartbeat) => return Some(Err(unavailable(format!(
            "{what}: instance {host} left the cluster while running the call (no heartbeat for three periods); the outcome is unknown — the action may have run. Calls made now go to the instances that remain"
        )))),
    };
    if let Err(e) = &sent
        && e.kind() == RequestErrorKind::NoResponders
    {
        tracing::debug!(host = %host, subject = %subject, "chosen instance does not listen; the call goes to the queue group");
        return None;
    }
    Some(NatsTransport::answer(sent, &subject, timeout, what))
}
