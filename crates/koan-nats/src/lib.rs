//! # koan-nats: the same koan API across processes, on NATS
//!
//! Actions, events and queries reach a service in another process as they reach a
//! local one: the caller's code does not change. This crate carries them on NATS
//! (core, JetStream, KV):
//!
//! - **Remote actions**: request/reply on `koan.svc.<service>.act.<action>` with a queue
//!   group per service, so instances share the load; priority, timeout and
//!   correlation id travel as headers; remote errors come back as the same
//!   [`koan::error::ErrorKind`]; no instance is `ServiceUnavailable`, at once.
//! - **Durable enqueue**: `enqueue()` goes into the JetStream work-queue stream
//!   `KOAN_WORK` — of a remote action, and of a local one too once the host is
//!   attached (so any live instance runs it, should this one die; delayed jobs wait
//!   in `KOAN_DELAYED` until due, a chain of actions is one message) —
//!   acknowledged after the handler succeeds, redelivered after a crash,
//!   de-duplicated by action id, retried as the action's retry policy says and
//!   dead-lettered to `koan.dlq.<service>.<action>` after the last attempt, retried
//!   by hand from any instance; outcomes are kept in
//!   the KV bucket `koan_outcomes`, and the jobs' records in `koan_jobs`, so that
//!   `/api/jobs` on any instance lists, shows and cancels the jobs every instance
//!   accepted (a job's record is written again while it waits or runs, however
//!   long); cancels are also marked in `koan_cancels`, which workers follow.
//! - **Events** are published on `koan.evt.<service>.<event>`; every process delivers
//!   the others' events to its own subscribers.
//! - **Registry**: each host announces its services with heartbeats in the KV bucket
//!   `koan_registry`; every host follows the bucket, so listings answer at once from
//!   memory — during a broker outage from the last view, marked stale — and a durable
//!   job for a service no instance announces is refused; status, health and info
//!   queries reach remote instances. `/health` reports the connection (`warn` while
//!   it is down).
//! - **Cluster singletons**: a periodic service marked `singleton` runs its scheduled
//!   ticks only on the holder of a lease in the KV bucket `koan_leases`
//!   (compare-and-set), taken over within one lease period when the holder dies.
//!
//! What travels — subjects, headers, bodies, replies — is a versioned contract
//! (`Koan-Wire: 1`) written down in `docs/wire.md`, so clients in other languages can
//! call, enqueue durable jobs and read their outcomes, and follow events with plain
//! NATS.
//!
//! ```no_run
//! # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
//! let nats = koan_nats::NatsTransport::connect(koan_nats::NatsOptions::new("nats://127.0.0.1:4222")).await?;
//! let host = koan::Host::builder()
//!     .discover()
//!     .transport(nats.clone().into_transport())
//!     .build()?
//!     .start();
//! let node = nats.attach(&host).await?; // serve this host's services to the cluster
//! # drop(node);
//! # Ok(())
//! # }
//! ```

mod announced;
mod call;
mod cancels;
mod connection;
mod dead_letter;
mod delayed;
mod enqueue;
mod handback;
mod health_report;
mod jobs_view;
mod keeper;
mod kv_create;
mod lease;
mod node;
mod options;
mod outcomes;
mod queue;
mod record_outcome;
mod records;
mod registry;
mod remote_events;
mod replicas;
mod routes;
mod routing;
mod run_record;
mod serve;
mod storage;
mod stranded;
mod streams;
mod subjects;
mod transport;
mod view;
mod wire;

pub use connection::ConnectionState;
pub use node::Node;
pub use options::NatsOptions;
pub use transport::NatsTransport;
