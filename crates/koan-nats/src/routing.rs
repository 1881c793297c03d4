//! Where a call goes: to one chosen instance rather than the service's queue group,
//! so that it can prefer the less loaded instance and notice when that instance
//! leaves the cluster while the call is in flight.
//!
//! The load of an instance is what this host has in flight to it plus the running
//! and queued actions of the service in its last heartbeat. Without a view of the
//! cluster yet, calls go to the queue group (any instance).

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_nats::client::RequestErrorKind;
use koan::{Error, transport::RemoteCall};
use serde_json::Value;

use crate::call::call_headers;
use crate::subjects::{self, Direct};
use crate::transport::{NatsTransport, unavailable};

/// Calls this host has in flight, per instance. An instance's count stays when it
/// falls to zero (its next call counts without allocating a key; every call used to
/// insert and remove one), until more than [`KEPT`] instances are listed: then those
/// at zero go. A call in flight holds the id of the route it was given
/// ([`crate::routes`]), shared: the chosen id is not copied (B8's round trip: one
/// allocation fewer, by callgrind).
#[derive(Debug, Default)]
pub(crate) struct Outstanding(Mutex<BTreeMap<Arc<str>, Calls>>);

/// An instance's calls in flight from this host, and the subject the last went to.
#[derive(Debug, Default)]
struct Calls {
    n: usize,
    /// Kept for the next call of the same action: built per call, a subject was
    /// two allocations (the string, and its bytes made shared by the copy kept
    /// for the error message) and about 1,100 instructions (B8, by callgrind).
    last: Option<Sent>,
}

#[derive(Debug)]
struct Sent {
    service: Box<str>,
    action: Box<str>,
    form: Direct,
    subject: async_nats::Subject,
}

impl Calls {
    /// The subject of `action` of `service` on `host` (this entry's), in `form`.
    fn subject(
        &mut self,
        host: &str,
        service: &str,
        action: &str,
        form: Direct,
    ) -> async_nats::Subject {
        if let Some(s) = &self.last
            && s.form == form
            && *s.service == *service
            && *s.action == *action
        {
            return s.subject.clone();
        }
        let subject: async_nats::Subject =
            subjects::host_direct_action(host, service, form, action).into();
        self.last = Some(Sent {
            service: service.into(),
            action: action.into(),
            form,
            subject: subject.clone(),
        });
        subject
    }
}

/// Instances listed before those without calls in flight are forgotten.
const KEPT: usize = 64;

/// One call in flight to `host`; counted down when dropped.
pub(crate) struct InFlight<'a> {
    table: &'a Outstanding,
    host: Arc<str>,
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
            && let Some(c) = m.get_mut(&*self.host)
        {
            c.n = c.n.saturating_sub(1);
        }
    }
}

impl Outstanding {
    /// Counts a call to `host`, in the table already locked; with `host`'s entry.
    fn start<'a, 'm>(
        &'a self,
        m: &'m mut BTreeMap<Arc<str>, Calls>,
        host: Arc<str>,
    ) -> (InFlight<'a>, &'m mut Calls) {
        if !m.contains_key(&*host) && m.len() >= KEPT {
            m.retain(|_, c| c.n > 0);
        }
        let calls = m.entry(Arc::clone(&host)).or_default();
        calls.n += 1;
        (InFlight { table: self, host }, calls)
    }
}

/// The instance to send a call for `service` to, and its subject in `form` (kept
/// for the error message, shared rather than copied); `None` to use the queue
/// group. With `only`, that instance or none.
pub(crate) fn pick<'a>(
    t: &'a NatsTransport,
    service: &str,
    action: &str,
    form: Direct,
    only: Option<&str>,
) -> Option<(InFlight<'a>, async_nats::Subject)> {
    // Locked once for the choice and its count (the view's routes are locked inside;
    // the two are never taken the other way round).
    let mut outstanding = t
        .outstanding()
        .0
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    // Only the instances of the call's service, as the view keeps them; the chosen
    // id is the route's own, shared.
    // The least loaded among those that announced the action, else among all (an
    // action none announced: a built-in such as `trigger`).
    let mut best: [Option<(Arc<str>, usize)>; 2] = [None, None];
    let mut ties = [0u32; 2];
    t.each_route(service, |r| {
        if only.is_some_and(|h| *r.host != *h) {
            return;
        }
        let l = r.load + outstanding.get(&*r.host).map_or(0, |c| c.n);
        for k in 0..2 {
            if k == 0 && !r.may_serve(action) {
                continue;
            }
            let take = match &best[k] {
                Some((_, b)) if l > *b => false,
                Some((_, b)) if l == *b => {
                    // Among equals, each is taken with equal chance.
                    ties[k] += 1;
                    fastrand::u32(..=ties[k]) == 0
                }
                _ => {
                    ties[k] = 0;
                    true
                }
            };
            if take {
                best[k] = Some((Arc::clone(&r.host), l));
            }
        }
    });
    let [serves, any] = best;
    let (chosen, _) = serves.or(any)?;
    let (in_flight, calls) = t.outstanding().start(&mut outstanding, chosen);
    let subject = calls.subject(in_flight.host(), service, action, form);
    drop(outstanding);
    Some((in_flight, subject))
}

/// Whether `host` is still in the cluster: a heartbeat within three periods (not a
/// crash), and not withdrawn (not a shutdown).
fn live(t: &NatsTransport, host: &str) -> bool {
    let mut live = false;
    t.each_live_instance(|i| live |= i.host_id == host);
    live
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
///
/// One timer per call keeps both its deadline and the watch on its instance
/// (checked every heartbeat): the request itself is sent without the client's own
/// timeout, which was a second timer, registered and removed under tokio's timer
/// wheel lock on every call (B8's round trip: about 1,050 instructions fewer, by
/// callgrind).
///
/// `body` is the call's body for the `lead` subject ([`crate::wire::lead`]), with
/// where its parameters start: at 0 when its id is not plain, and then the call
/// goes to the `bare` subject with its id in a header. With `only` (a singleton's
/// lease holder, for a poke), the call goes to that instance or to the queue group.
pub(crate) async fn call_chosen(
    t: &NatsTransport,
    call: &RemoteCall,
    (body, params): (&bytes::Bytes, usize),
    timeout: Duration,
    what: &(dyn std::fmt::Display + Sync),
    only: Option<&str>,
) -> Option<Result<Value, Error>> {
    let heartbeat = t.inner.opts.heartbeat;
    let deadline = tokio::time::Instant::now() + timeout;
    // Its answer waited for a margin past the deadline when the call gives its
    // timeout to the instance (see `reply_margin`).
    let answered_by = deadline
        + call
            .timeout
            .map_or(Duration::ZERO, koan::transport::reply_margin);
    // The caller's own timeout, less what earlier attempts used.
    let mut call_timeout = call.timeout;
    // The call's id on its body's first line when it is plain: the call then
    // carries no header (B8, by callgrind: the one header cost about 7,900
    // instructions a round trip, building and writing it here, and the client
    // parsing, hashing and storing it on the serving side).
    let lead = params > 0;
    let form = if lead { Direct::Lead } else { Direct::Bare };
    loop {
        let (in_flight, subject) = pick(t, &call.service, &call.action, form, only)?;
        let host = in_flight.host();
        let now = tokio::time::Instant::now();
        let headers = call_headers(call, call_timeout, !lead);
        let send = t.send(subject.clone(), headers, body.clone(), None);
        tokio::pin!(send);
        let timer = tokio::time::sleep_until(answered_by.min(now + heartbeat));
        tokio::pin!(timer);
        let sent = loop {
            tokio::select! {
                biased;
                r = &mut send => break Some(r),
                () = &mut timer => {
                    let now = tokio::time::Instant::now();
                    if now >= answered_by {
                        break Some(Err(RequestErrorKind::TimedOut.into()));
                    }
                    if live(t, host) || t.view_behind() {
                        timer.as_mut().reset(answered_by.min(now + heartbeat));
                        continue;
                    }
                    let left = deadline.saturating_duration_since(now);
                    if !left.is_zero() && idempotent(t, call, left).await {
                        tracing::info!(host = %host, "{what}: instance left the cluster mid-call; the action is idempotent, sending it again");
                        if call.timeout.is_some() {
                            call_timeout = Some(left);
                        }
                        // Sent again, to an instance that remains.
                        break None;
                    }
                    return Some(Err(unavailable(format!(
                        "{what}: instance {host} left the cluster after the call was sent to it (no heartbeat for three periods); the outcome is unknown — the action may have run, or may run should the instance come back (a frozen process reads its calls when resumed; one given `timeout` is not run after its deadline); declare it idempotent to have such calls sent again. Calls made now go to the instances that remain"
                    ))));
                }
            }
        };
        let Some(sent) = sent else {
            continue;
        };
        if let Err(e) = &sent
            && e.kind() == RequestErrorKind::NoResponders
        {
            tracing::debug!(host = %host, subject = %subject, "chosen instance does not listen; the call goes to the queue group");
            return None;
        }
        // Said with the call's whole timeout, not what a re-send had left of it.
        return Some(crate::call::answer(sent, &subject, timeout, what));
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

#[cfg(test)]
mod tests {
    use super::*;

    /// One call counted (the table's lock is let go before the count is returned).
    fn start<'a>(t: &'a Outstanding, host: &str) -> InFlight<'a> {
        let mut m = t.0.lock().expect("not poisoned");
        t.start(&mut m, Arc::from(host)).0
    }

    fn count(t: &Outstanding, host: &str) -> Option<usize> {
        t.0.lock().expect("not poisoned").get(host).map(|c| c.n)
    }

    #[test]
    fn an_instance_keeps_its_last_subject_for_the_next_call_of_the_same_action() {
        let mut calls = Calls::default();
        let first = calls.subject("h-1", "Calc", "add", Direct::Lead);
        assert_eq!(first.as_str(), "koan.host.h-1.svc.calc.lead.add");
        // The same bytes, not a copy.
        let again = calls.subject("h-1", "Calc", "add", Direct::Lead);
        assert_eq!(again.as_str().as_ptr(), first.as_str().as_ptr());
        // Another action, or the same in another form, gets its own.
        let other = calls.subject("h-1", "Calc", "sub", Direct::Lead);
        assert_eq!(other.as_str(), "koan.host.h-1.svc.calc.lead.sub");
        let bare = calls.subject("h-1", "Calc", "sub", Direct::Bare);
        assert_eq!(bare.as_str(), "koan.host.h-1.svc.calc.bare.sub");
        let service = calls.subject("h-1", "Other", "sub", Direct::Bare);
        assert_eq!(service.as_str(), "koan.host.h-1.svc.other.bare.sub");
    }

    #[test]
    fn calls_in_flight_are_counted_per_instance_and_idle_entries_are_bounded() {
        let t = Outstanding::default();
        let a1 = start(&t, "a");
        let a2 = start(&t, "a");
        let b = start(&t, "b");
        assert_eq!((count(&t, "a"), count(&t, "b")), (Some(2), Some(1)));
        assert_eq!((a1.host(), b.host()), ("a", "b"));
        drop(a1);
        drop(b);
        assert_eq!((count(&t, "a"), count(&t, "b")), (Some(1), Some(0)));
        // Idle instances are forgotten once more than `KEPT` are listed; busy ones stay.
        for i in 0..KEPT {
            let h = start(&t, &format!("h{i}"));
            drop(h);
        }
        assert!(t.0.lock().expect("not poisoned").len() <= KEPT + 1);
        assert_eq!(count(&t, "a"), Some(1));
        drop(a2);
        assert_eq!(count(&t, "a"), Some(0));
    }
}
