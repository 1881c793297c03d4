//! The server side: serving a host's services to the cluster.

use std::sync::Arc;

use futures_util::StreamExt;
use koan::{Error, HostHandle};
use tokio::task::JoinHandle;

use crate::lease::{self, Lease};
use crate::registry;
use crate::serve::{Form, Serving, serve_calls};
use crate::subjects::{self, Direct};
use crate::transport::{NatsTransport, unavailable};
use crate::wire;

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
        let events = client
            .subscribe(subjects::ALL_EVENTS)
            .await
            .map_err(|e| unavailable(format!("cannot subscribe to events: {e}")))?;
        tasks.0.extend(crate::remote_events::follow(
            events,
            host.clone(),
            self.clone(),
        ));

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
        // (Its services' health follows from the first heartbeat's checks.)
        registry::announce(self, host, &Default::default()).await?;
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
            None => {
                let max = c.server_info().max_payload.saturating_sub(4 * 1024);
                registry::answer_within(&h, &name, &what, max).await
            }
        };
        let echo = wire::header(headers, wire::H_CORRELATION);
        let _ = c
            .publish_with_headers(to, wire::reply_headers(echo.as_deref()), reply.bytes())
            .await;
    }
}
