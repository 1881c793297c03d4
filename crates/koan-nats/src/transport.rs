//! The client side: `koan::transport::Transport` over NATS.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_nats::Client;
use async_nats::jetstream::{self, kv};
use koan::job::{JobCounts, JobPage, JobQuery, JobRecord, RetryFrom};
use koan::{
    Error, error::ErrorKind, event::EventEnvelope, health::HealthReport, transport::BoxFuture,
    transport::DurableJob, transport::Instance, transport::RemoteCall, transport::RemoteQuery,
    transport::Transport,
};
use serde_json::Value;
use tokio_util::sync::CancellationToken;

use crate::connection::{ConnectionState, ConnectionWatch};
use crate::options::NatsOptions;
use crate::subjects;

/// `NatsTransport` as koan's `Transport`: what a host asks of the cluster.
mod as_transport;
mod outbox;

/// A connection to NATS that carries koan's calls, events and queries.
/// Cheap to clone.
#[derive(Clone)]
pub struct NatsTransport {
    pub(crate) inner: Arc<Inner>,
}

pub(crate) struct Inner {
    pub(crate) client: Client,
    pub(crate) js: jetstream::Context,
    pub(crate) opts: NatsOptions,
    pub(crate) host_id: String,
    pub(crate) registry: kv::Store,
    pub(crate) outcomes: kv::Store,
    pub(crate) leases: kv::Store,
    /// The cluster's job records (`records.rs`).
    pub(crate) records: kv::Store,
    /// Operators' cancels of cluster jobs, and what this host knows of them
    /// (`cancels.rs`).
    pub(crate) cancels: kv::Store,
    pub(crate) cancel_watch: Arc<crate::cancels::CancelWatch>,
    pub(crate) jobs_view: Arc<crate::jobs_view::JobsView>,
    pub(crate) leases_held: Mutex<HashMap<String, Arc<crate::lease::Lease>>>,
    /// Local services whose durable jobs this host consumes from `KOAN_WORK`.
    shared_jobs: Mutex<HashSet<String>>,
    /// This host's events on their way to the broker.
    outbox: outbox::Outbox,
    /// The last write the broker refused for want of room (`/health` says it).
    pub(crate) refusals: crate::storage::Refusals,
    /// Whether the cluster's outcomes and records have room for a new job's.
    pub(crate) room: crate::storage::Room,
    /// Why this host's last heartbeat failed, while its heartbeats fail
    /// (`/health` says it: the cluster takes the host for gone).
    pub(crate) heartbeat_failing: Mutex<Option<String>>,
    /// The job records reads looked up against their outcomes lately.
    pub(crate) looked: crate::record_outcome::Looked,
    /// Told once this host's first registry entry is written: its events wait
    /// for it (up to 5 s), so that no host refuses them for a service it has not
    /// heard of yet.
    pub(crate) announced: Arc<tokio::sync::Notify>,
    pub(crate) waiters: Arc<crate::outcomes::OutcomeWaiters>,
    connection: ConnectionWatch,
    view: Arc<crate::view::RegistryView>,
    outstanding: crate::routing::Outstanding,
    /// The durable jobs this host's workers are handling, waited for (bounded) when
    /// the node detaches: a release's publish, then its old message's end, must not
    /// be cut by the process's exit in between (both copies would run; found by a
    /// review).
    handles: tokio_util::task::TaskTracker,
    /// Cancelled with the last handle: the buckets' followers end, and the connection.
    pub(crate) dropped: CancellationToken,
}

impl Drop for Inner {
    fn drop(&mut self) {
        self.dropped.cancel();
    }
}

impl std::fmt::Debug for NatsTransport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NatsTransport")
            .field("host_id", &self.inner.host_id)
            .field("options", &self.inner.opts)
            .finish()
    }
}

pub(crate) fn unavailable(what: impl std::fmt::Display) -> Error {
    Error::new(ErrorKind::ServiceUnavailable, what.to_string())
}

impl NatsTransport {
    /// Connects to one of the servers `opts.url` lists and makes sure the streams
    /// and buckets exist. An unreachable server or wrong credentials are a
    /// `ServiceUnavailable` error naming the URL; an entry that is no address, a
    /// `Config` error naming it.
    pub async fn connect(opts: NatsOptions) -> Result<Self, Error> {
        let servers = crate::connection::server_addrs(&opts.url)?;
        // Shown from the start at 0, so that an alert on its increase sees the
        // first (a re-probe).
        metrics::counter!("koan_jobs_ran_again_total").increment(0);
        // The machine first, so that an operator reading an instance or a job's
        // attempt knows where it ran (it was `pid-random` alone; a probe).
        let host_id = format!(
            "{}-{}-{:08x}",
            koan::host::machine_name(),
            std::process::id(),
            fastrand::u32(..)
        );
        let connection = ConnectionWatch::new();
        let co = crate::connection::connect_options(&opts, &host_id, connection.clone());
        let client = co
            .connect(servers)
            .await
            .map_err(|e| unavailable(format!("cannot connect to NATS at {}: {e}", opts.url)))?;
        let js = jetstream::new(client.clone());
        let replicas = crate::replicas::Replicas::choose(&opts, &client.server_info());
        let [registry, outcomes, leases, records, cancels] =
            crate::streams::all(&js, &opts, replicas).await?;
        let cancel_watch = Arc::new(crate::cancels::CancelWatch::new(&cancels));
        let jobs_view = Arc::new(crate::jobs_view::JobsView::new(&opts, &records));

        // Forgotten with the bucket's entries, but kept past a lease: a new holder
        // reads what the dead one announced last.
        let forget = (opts.heartbeat * 5).max(opts.lease * 2);
        let view = Arc::new(crate::view::RegistryView::new(forget));
        let dropped = CancellationToken::new();
        tokio::spawn(dropped.clone().run_until_cancelled_owned(
            crate::streams::recreate_on_reconnect(
                js.clone(),
                opts.clone(),
                replicas,
                connection.subscribe(),
            ),
        ));
        let follower = crate::view::follow(registry.clone(), Arc::clone(&view));
        tokio::spawn(dropped.clone().run_until_cancelled_owned(follower));
        let waiters = Arc::new(crate::outcomes::OutcomeWaiters::default());
        let follower =
            crate::outcomes::follow(outcomes.clone(), Arc::clone(&waiters), opts.watch_idle);
        tokio::spawn(dropped.clone().run_until_cancelled_owned(follower));

        // One publisher task keeps events in emission order.
        let announced = Arc::new(tokio::sync::Notify::new());
        let outbox = outbox::Outbox::start(client.clone(), &host_id, Arc::clone(&announced));

        Ok(NatsTransport {
            inner: Arc::new(Inner {
                client,
                js,
                opts,
                host_id,
                registry,
                outcomes,
                leases,
                records,
                cancels,
                cancel_watch,
                jobs_view,
                leases_held: Mutex::new(HashMap::new()),
                shared_jobs: Mutex::new(HashSet::new()),
                outbox,
                refusals: crate::storage::Refusals::default(),
                room: crate::storage::Room::default(),
                heartbeat_failing: Mutex::default(),
                looked: crate::record_outcome::Looked::default(),
                announced,
                waiters,
                connection,
                view,
                outstanding: crate::routing::Outstanding::default(),
                handles: tokio_util::task::TaskTracker::new(),
                dropped,
            }),
        })
    }

    /// How many times the connection came back after it was lost: a consumer
    /// made before the last time may have been lost with the broker's storage.
    pub(crate) fn reconnects(&self) -> u64 {
        self.inner.connection.reconnects()
    }

    /// Spawns a worker's handling of one delivered job, tracked for
    /// [`wait_for_handles`](Self::wait_for_handles).
    pub(crate) fn spawn_handle(&self, job: impl std::future::Future<Output = ()> + Send + 'static) {
        self.inner.handles.spawn(job);
    }

    /// Waits (up to `limit`) until the jobs being handled here have ended.
    pub(crate) async fn wait_for_handles(&self, limit: Duration) {
        let handles = &self.inner.handles;
        handles.close();
        let _ = tokio::time::timeout(limit, handles.wait()).await;
        handles.reopen();
    }

    /// This host's id in the cluster.
    pub fn host_id(&self) -> &str {
        &self.inner.host_id
    }

    /// The underlying NATS client.
    pub fn client(&self) -> &Client {
        &self.inner.client
    }

    /// The URL (or comma-separated URLs) this transport was given.
    pub fn url(&self) -> &str {
        &self.inner.opts.url
    }

    /// The server this transport is connected to (or was last), for messages:
    /// the URL when it names one server; of a list, the one the client is on.
    pub fn server(&self) -> String {
        crate::connection::server_named(&self.inner.opts.url, &self.inner.client.server_info())
    }

    /// Whether the connection to the server is up now.
    pub fn connection_state(&self) -> ConnectionState {
        self.inner.connection.get()
    }

    /// Follows the connection: the receiver sees every change between connected and
    /// disconnected (the client reconnects on its own, with backoff).
    ///
    /// ```no_run
    /// # async fn demo(nats: koan_nats::NatsTransport) {
    /// let mut conn = nats.watch_connection();
    /// while conn.changed().await.is_ok() {
    ///     println!("NATS is {}", *conn.borrow());
    /// }
    /// # }
    /// ```
    pub fn watch_connection(&self) -> tokio::sync::watch::Receiver<ConnectionState> {
        self.inner.connection.subscribe()
    }

    /// Jobs of `service` enqueued on this host go to `KOAN_WORK` from now on: this
    /// host consumes them there (with every other instance of the service).
    pub(crate) fn share(&self, service: &str) {
        if let Ok(mut s) = self.inner.shared_jobs.lock() {
            s.insert(service.to_owned());
        }
    }

    /// No longer: this host stopped consuming the jobs of `services`.
    pub(crate) fn stop_sharing(&self, services: &[String]) {
        if let Ok(mut s) = self.inner.shared_jobs.lock() {
            for name in services {
                s.remove(name);
            }
        }
    }

    pub(crate) fn view(&self) -> &crate::view::RegistryView {
        &self.inner.view
    }

    pub(crate) fn outstanding(&self) -> &crate::routing::Outstanding {
        &self.inner.outstanding
    }

    /// Calls `f` with each instance heard from within three heartbeats (none while
    /// disconnected), without copying them.
    pub(crate) fn each_live_instance(&self, f: impl FnMut(&Instance)) {
        if self.connected() {
            self.inner.view.each_live(self.stale_after(), f);
        }
    }

    /// Calls `f` with each live instance of `service` that takes new calls (none
    /// while disconnected).
    pub(crate) fn each_route(&self, service: &str, f: impl FnMut(&crate::routes::Route)) {
        if self.connected() {
            self.inner.view.each_route(self.stale_after(), service, f);
        }
    }

    /// Whether this host keeps the records of `service`'s jobs waiting in the
    /// work queue (`keeper.rs`): the live instance running it with the lowest id.
    pub(crate) fn first_of(&self, service: &str) -> bool {
        let me = self.inner.host_id.as_str();
        self.inner
            .view
            .first_running(self.stale_after(), service, me)
    }

    /// When this host keeps the records of services no live instance runs
    /// (`keeper.rs`): the services live instances run, by subject token.
    pub(crate) fn first_host(&self) -> Option<HashSet<String>> {
        let me = self.inner.host_id.as_str();
        self.inner.view.first_host(self.stale_after(), me)
    }

    pub(crate) fn connected(&self) -> bool {
        self.connection_state() == ConnectionState::Connected
    }

    /// Whether this host's view of the registry is behind: its own announcement,
    /// which it heard before, is not live in it. A process that was paused (SIGSTOP,
    /// a stalled VM) has read none of the heartbeats that came meanwhile — nor the
    /// answers to its calls, waiting in its socket: every instance looks gone to it
    /// for a moment, and a call looks again a heartbeat later rather than answering
    /// "left the cluster" for done work (`routing.rs`; a probe saw that for 3 of 3
    /// calls whose caller was paused for 10 s). A host whose heartbeats fail while
    /// its connection stays up (a link that drops everything) stays behind: the
    /// cluster sees it as gone, and its health says so.
    pub(crate) fn view_behind(&self) -> bool {
        let me = self.host_id();
        let mut live = false;
        self.each_live_instance(|i| live |= i.host_id == me);
        !live && self.inner.view.last_of(me).is_some()
    }

    /// This host's lease of the singleton `service`, while attached.
    fn lease_of(&self, service: &str) -> Option<Arc<crate::lease::Lease>> {
        self.inner
            .leases_held
            .lock()
            .ok()
            .and_then(|m| m.get(&subjects::token(service)).cloned())
    }

    /// An instance whose heartbeat is older than three periods is gone.
    pub(crate) fn stale_after(&self) -> Duration {
        self.inner.opts.heartbeat * 3
    }

    /// As a `koan::transport::Transport` for `HostBuilder::transport`.
    pub fn into_transport(self) -> Arc<dyn Transport> {
        Arc::new(self)
    }
}
