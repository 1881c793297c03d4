//! The server side: serving a host's services to the cluster.

use koan::transport::HostLink as _;
use std::sync::Arc;

use futures_util::StreamExt;
use koan::{Error, HostHandle};
use tokio::task::JoinHandle;

use crate::lease::{self, Lease};
use crate::registry;
use crate::serve::{Form, Serving, serve_calls};
use crate::subjects::{self, Direct};
use crate::transport::{NatsTransport, unavailable};
use crate::wire::{self, WireEvent};

/// A host attached to the cluster. Dropping it stops serving; [`Node::detach`] also
/// gives up singleton leases and leaves the registry at once.
#[derive(Debug)]
pub struct Node {
    transport: NatsTransport,
    leases: Vec<(String, Arc<Lease>)>,
    tasks: Vec<JoinHandle<()>>,
    /// The services whose jobs this host consumes from the shared queue.
    consumed: Vec<String>,
    host: HostHandle,
}

impl Drop for Node {
    fn drop(&mut self) {
        for t in &self.tasks {
            t.abort();
        }
        self.transport.stop_sharing(&self.consumed);
        // Nothing renews the leases any more: stop running singleton ticks here at
        // once, before another host takes over.
        for (_, l) in &self.leases {
            l.abandon();
        }
    }
}

impl Node {
    /// Stops serving, releases singleton leases and withdraws from the registry.
    pub async fn detach(mut self) {
        for t in self.tasks.drain(..) {
            t.abort();
        }
        // A stopped host's jobs in hand end (its runs released: a publish, then the
        // old message's end) before the process may exit, which would otherwise
        // cut a release between the two and leave both copies to run (found by a
        // review). Bounded, should one hang in a broker's request.
        if self.host.exit().is_some() {
            self.transport
                .wait_for_handles(std::time::Duration::from_secs(10))
                .await;
        }
        self.transport.stop_sharing(&self.consumed);
        for (service, l) in &self.leases {
            lease::release(&self.transport, service, l).await;
        }
        registry::withdraw(&self.transport).await;
    }
}

/// The tasks `attach` started, aborted should it fail part-way: an error left them
/// running, so that a host whose attach failed went on serving calls and taking
/// jobs with no node to detach them (found by a probe).
struct Started(Vec<JoinHandle<()>>);

impl Drop for Started {
    fn drop(&mut self) {
        self.0.iter().for_each(JoinHandle::abort);
    }
}

impl NatsTransport {
    /// Serves `host`'s services to the cluster: action and query responders (queue
    /// group per service), durable work consumers, event bridging, registry
    /// heartbeats and singleton leases. Call it after `start()`.
    pub async fn attach(&self, host: &HostHandle) -> Result<Node, Error> {
        let mut tasks = Started(Vec::new());
        let mut consumed = Vec::new();
        let client = self.inner.client.clone();
        for service in host.service_names() {
            // Actions.
            // Through the service's queue group (any instance), or to this instance
            // by a caller that chose it.
            let shared = client
                .queue_subscribe(
                    subjects::actions_of(&service),
                    subjects::queue_group(&service),
                )
                .await
                .map_err(|e| unavailable(format!("cannot subscribe for `{service}`: {e}")))?;
            let own = client
                .subscribe(subjects::host_actions_of(&self.inner.host_id, &service))
                .await
                .map_err(|e| unavailable(format!("cannot subscribe for `{service}`: {e}")))?;
            // The same calls with bare replies: the Rust client's (see `Form`).
            let host_id = &self.inner.host_id;
            let bare_prefix = subjects::host_direct_prefix(host_id, &service, Direct::Bare);
            let bare = client
                .subscribe(format!("{bare_prefix}>"))
                .await
                .map_err(|e| unavailable(format!("cannot subscribe for `{service}`: {e}")))?;
            let lead_prefix = subjects::host_direct_prefix(host_id, &service, Direct::Lead);
            let lead = client
                .subscribe(format!("{lead_prefix}*"))
                .await
                .map_err(|e| unavailable(format!("cannot subscribe for `{service}`: {e}")))?;
            // One reference count per call rather than a copy of each (the client's
            // clone alone allocates).
            let serving = Arc::new(Serving {
                service: host.service(&service),
                client: client.clone(),
                bare_prefix: bare_prefix.len(),
                lead_prefix: lead_prefix.len(),
            });
            // A task for each subscription: a call wakes only its own, which polls
            // one subscription for the next (merged, each call polled all four).
            for (sub, form) in [
                (shared, Form::Full),
                (own, Form::Full),
                (bare, Form::Bare),
                (lead, Form::Lead),
            ] {
                tasks
                    .0
                    .push(tokio::spawn(serve_calls(Arc::clone(&serving), sub, form)));
            }
            // Queries: through the service's queue group (any instance), or to this
            // instance by a caller that chose it from the registry.
            let shared = client
                .queue_subscribe(
                    subjects::queries_of(&service),
                    subjects::queue_group(&service),
                )
                .await
                .map_err(|e| unavailable(format!("cannot subscribe for `{service}`: {e}")))?;
            let own = client
                .subscribe(subjects::host_queries_of(&self.inner.host_id, &service))
                .await
                .map_err(|e| unavailable(format!("cannot subscribe for `{service}`: {e}")))?;
            for sub in [shared, own] {
                tasks.0.push(tokio::spawn(serve_queries(
                    host.clone(),
                    client.clone(),
                    service.clone(),
                    sub,
                )));
            }
            // Durable work.
            tasks.0.push(tokio::spawn(crate::queue::consume(
                self.clone(),
                host.clone(),
                service.clone(),
            )));
            // Its delayed jobs, moved to the work queue when due.
            tasks.0.push(tokio::spawn(crate::delayed::consume(
                self.clone(),
                host.clone(),
                service.clone(),
            )));
            // The records of its jobs waiting long in the work queue.
            tasks.0.push(tokio::spawn(crate::keeper::keep(
                self.clone(),
                host.clone(),
                service.clone(),
            )));
            // From now on its jobs enqueued here go to the shared queue too.
            self.share(&service);
            consumed.push(service.clone());
        }

        // Events from other processes.
        let mut events = client
            .subscribe(subjects::ALL_EVENTS)
            .await
            .map_err(|e| unavailable(format!("cannot subscribe to events: {e}")))?;
        let (h, me, t) = (host.clone(), self.inner.host_id.clone(), self.clone());
        tasks.0.push(tokio::spawn(async move {
            // One count of each cause: a flood of one does not hide another
            // (all shared one, and a peer of a newer wire version went unsaid
            // after a burst of junk; found by a probe).
            let (refused, unreadable, other_version) = (
                koan::transport::Sparse::new(),
                koan::transport::Sparse::new(),
                koan::transport::Sparse::new(),
            );
            let mut names = UndeclaredNames::default();
            while let Some(msg) = events.next().await {
                if wire::header_str(msg.headers.as_ref(), wire::H_ORIGIN) == Some(me.as_str()) {
                    continue;
                }
                // An event has no one to answer: one in another version is logged
                // and skipped, never guessed at.
                // Each refusal is said in the log at the 1st, 2nd, 4th, … one, its
                // subject cut, so that a flood does not flood the log too (20,000
                // unreadable events on a long subject wrote 80 MB to each host's
                // log; found by a probe).
                let subject = logged(&msg.subject);
                if let Some(refusal) = wire::refuse_version(msg.headers.as_ref()) {
                    events_refused("other_version");
                    if let Some(n) = other_version.hit() {
                        tracing::warn!(subject, refused = n, reason = ?refusal.message, "event in another wire version skipped");
                    }
                    continue;
                }
                match serde_json::from_slice::<WireEvent>(&msg.payload) {
                    Ok(ev) => match refusal(&t, &msg.subject, &ev, &mut names) {
                        None => h.deliver_remote_event(&ev.into_envelope()).await,
                        Some(why) => {
                            events_refused("refused");
                            if let Some(n) = refused.hit() {
                                tracing::warn!(subject, refused = n, "event from NATS refused: {why}");
                            }
                        }
                    },
                    Err(e) => {
                        events_refused("unreadable");
                        if let Some(n) = unreadable.hit() {
                            tracing::warn!(error = %e, subject, refused = n, "unreadable event from NATS");
                        }
                    }
                }
            }
        }));

        // Jobs JetStream will not deliver again: ended as dead by one instance.
        tasks.0.push(tokio::spawn(crate::stranded::follow(
            self.clone(),
            host.clone(),
        )));
        // The records of the jobs of services no live instance runs.
        tasks.0.push(tokio::spawn(crate::keeper::keep_orphans(
            self.clone(),
            host.clone(),
        )));

        // Registry heartbeats.
        registry::announce(self, host).await?;
        tasks.0.push(tokio::spawn(registry::heartbeats(
            self.clone(),
            host.clone(),
        )));

        // Singleton leases: a first attempt now, so the first tick knows.
        let mut leases = Vec::new();
        for service in host.service_names() {
            let Ok(info) = host.service(&service).info().await else {
                continue;
            };
            if !info.singleton {
                continue;
            }
            let l = Arc::new(Lease::default());
            if let Ok(mut m) = self.inner.leases_held.lock() {
                m.insert(subjects::token(&service), Arc::clone(&l));
            }
            lease::step(self, &service, &l).await;
            tasks.0.push(tokio::spawn(lease::hold(
                self.clone(),
                host.clone(),
                service.clone(),
                Arc::clone(&l),
            )));
            leases.push((service, l));
        }
        tracing::info!(host_id = %self.inner.host_id, services = host.service_names().len(), "attached to NATS");
        Ok(Node {
            transport: self.clone(),
            leases,
            tasks: std::mem::take(&mut tasks.0),
            consumed,
            host: host.clone(),
        })
    }
}

/// Answers the queries (status, health, info) of `name` that come on `sub`.
async fn serve_queries(
    h: HostHandle,
    c: async_nats::Client,
    name: String,
    mut sub: async_nats::Subscriber,
) {
    while let Some(msg) = sub.next().await {
        let what = msg
            .subject
            .rsplit('.')
            .next()
            .unwrap_or_default()
            .to_owned();
        let Some(to) = msg.reply else { continue };
        let headers = msg.headers.as_ref();
        let reply = match wire::refuse_version(headers) {
            Some(refusal) => refusal,
            None => registry::answer(&h, &name, &what).await,
        };
        let echo = wire::header(headers, wire::H_CORRELATION);
        let _ = c
            .publish_with_headers(to, wire::reply_headers(echo.as_deref()), reply.bytes())
            .await;
    }
}

/// Why an event that came on `subject` is not delivered here, if it is not: its
/// body must name the service and event its subject does (the names a subscriber
/// and the metrics key it by), and a service the cluster announced. Before, a
/// publisher's made-up names were delivered and counted as given: 3,000 events
/// with random names made 15,000 metric series on every host (a probe).
fn refusal(
    t: &NatsTransport,
    subject: &str,
    ev: &WireEvent,
    names: &mut UndeclaredNames,
) -> Option<String> {
    if subjects::event(&ev.service, &ev.event) != subject {
        return Some(format!(
            "its body names event `{}` of `{}`, which is not the one its subject names",
            ev.event.escape_debug(),
            ev.service.escape_debug()
        ));
    }
    if t.view().knows(&ev.service) == Some(false) {
        return Some(format!(
            "no instance of the cluster announced service `{}`",
            ev.service.escape_debug()
        ));
    }
    // Its correlation id follows the rule a call's does: a 60 KB one with
    // terminal escapes went into every stream and page that shows events (found
    // by a probe).
    if let Some(id) = &ev.correlation_id
        && let Err(why) = koan::action::check_correlation_id(id)
    {
        return Some(format!("its correlation id {why}"));
    }
    // Nor an event its service's instances do not declare: a publisher's made-up
    // names of a known service still made metric series and kept memory on every
    // host, each slowing the next (50,000 names: 22 MB of metrics, 280 MB kept,
    // and real events waited 11 minutes behind them; found by a probe).
    match t.view().declares_event(&ev.service, &ev.event) {
        Some(false) => Some(format!(
            "no instance of service `{}` declares an event `{}` (declare it with `#[service(event(…))]` to have it delivered to other processes)",
            ev.service.escape_debug(),
            ev.event.escape_debug()
        )),
        Some(true) => None,
        // A service that declares none takes any name: at most so many of them.
        None => names.take(&ev.service, &ev.event),
    }
}

/// The names of the events delivered here of services that declare none (or
/// whose instances do not say), at most [`UndeclaredNames::MAX`] a service: a
/// publisher's made-up names made a metric key each on every host.
#[derive(Default)]
struct UndeclaredNames(std::collections::HashMap<String, std::collections::HashSet<String>>);

impl UndeclaredNames {
    const MAX: usize = 256;

    /// Why event `event` of `service` is refused, if it is: a new name past the
    /// service's [`MAX`](Self::MAX).
    fn take(&mut self, service: &str, event: &str) -> Option<String> {
        let seen = self.0.entry(service.to_ascii_lowercase()).or_default();
        if seen.contains(event) {
            return None;
        }
        if seen.len() >= Self::MAX {
            return Some(format!(
                "service `{}` declares no events, and {} names of its events were delivered here already: a new one (`{}`) is refused (declare the service's events)",
                service.escape_debug(),
                Self::MAX,
                event.escape_debug()
            ));
        }
        seen.insert(event.to_owned());
        None
    }
}

/// Counts an event from NATS not delivered, by why: `koan_nats_events_refused_total`.
fn events_refused(why: &'static str) {
    metrics::counter!("koan_nats_events_refused_total", "reason" => why).increment(1);
}

/// A subject as a log line shows it: its first 200 characters (a hostile one
/// may be near the broker's `max_payload`).
fn logged(subject: &str) -> &str {
    subject
        .char_indices()
        .nth(200)
        .map_or(subject, |(end, _)| &subject[..end])
}

#[cfg(test)]
mod tests {
    use super::UndeclaredNames;

    #[test]
    fn a_logged_subject_is_cut_at_200_characters() {
        let long = "é".repeat(5_000);
        assert_eq!(super::logged(&long).chars().count(), 200);
        assert_eq!(super::logged("koan.evt.s.e"), "koan.evt.s.e");
    }

    #[test]
    fn a_service_that_declares_no_events_is_delivered_so_many_names() {
        let mut names = UndeclaredNames::default();
        for n in 0..UndeclaredNames::MAX {
            assert_eq!(names.take("Plain", &format!("e{n}")), None);
        }
        assert_eq!(names.take("PLAIN", "e0"), None, "a name seen before");
        let refused = names.take("Plain", "new").unwrap_or_default();
        assert!(
            refused.contains("a new one (`new`) is refused"),
            "{refused}"
        );
        assert_eq!(names.take("Other", "new"), None, "another service's");
    }
}
