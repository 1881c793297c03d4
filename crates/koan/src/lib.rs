//! # Koan: supervised, schedulable, observable background services for tokio
//!
//! Write a struct, pick its kind, and the host gives it a lifecycle, supervision,
//! scheduling, named actions, typed events, health and status — the Rust form of the
//! Koan Framework's background-services pillar.
//!
//! ```
//! use std::time::Duration;
//! use koan::{BoxError, Host, Periodic, PeriodicService, Service, ServiceContext, ServiceOptions};
//!
//! #[derive(Default)]
//! struct DataCleanupService;
//!
//! impl Service for DataCleanupService {
//!     type Kind = Periodic;
//!     fn options() -> ServiceOptions {
//!         ServiceOptions::default().every(Duration::from_secs(3600)).run_on_startup(true)
//!     }
//! }
//!
//! impl PeriodicService for DataCleanupService {
//!     async fn tick(&self, _cx: ServiceContext) -> Result<(), BoxError> {
//!         // delete old rows …
//!         Ok(())
//!     }
//! }
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), koan::Error> {
//! let host = Host::builder().service::<DataCleanupService>().build()?.start();
//! host.started().await?;
//! let outcome = host.services::<DataCleanupService>().trigger().await?; // run now
//! assert!(outcome.run.outcome.is_success());
//! host.shutdown();
//! host.wait().await.into_result()
//! # }
//! ```
//!
//! ## Concepts, by module
//! - [`Service`] and the kinds [`BackgroundService`], [`PeriodicService`],
//!   [`StartupService`]; [`ServiceOptions`] declares name, schedule, supervision.
//! - [`Host`] / [`HostBuilder`] / [`HostHandle`]: lifecycle, shutdown, health.
//! - Actions: [`Actions`] to declare, [`ActionRequest`] to call, with priority,
//!   enforced timeout and correlation id; [`Services`] is the fluent entry point.
//!   `#[koan::actions]` also generates a typed caller per action on [`Services`],
//!   whose [`TypedRequest`] takes the handler's parameter type and gives its result
//!   type, so the compiler checks the call.
//! - Events: [`ServiceContext::emit`] (of events the service declares), and
//!   [`SubscriptionBuilder`] to subscribe: keep the [`Subscription`] it gives (dropping
//!   it unsubscribes) or [`Subscription::detach`] it; each subscriber picks its
//!   [`Overflow`] policy.
//! - Jobs: [`ActionRequest::enqueue`] stores work in a [`JobStore`] before it
//!   answers; [`HostHandle::jobs`] lists, retries and cancels them.
//! - [`Transport`]: how calls reach services in other processes.
//! - `koan::testing` (feature `test-util`, e.g. `koan = { version = "0.1", features =
//!   ["test-util"] }` under `[dev-dependencies]`): paused-clock hosts and waiting helpers;
//!   [`Services::instance`] reaches the value of a service the host runs.
//! - [`Error`]: an [`ErrorKind`] to match on and a message that says what was asked
//!   and what exists; printed once, with its causes.

#![cfg_attr(docsrs, feature(doc_cfg))]

#[allow(unused_extern_crates)]
extern crate self as koan;

mod action;
mod client;
mod clock;
mod config;
mod discovery;
mod error;
mod event;
mod health;
mod host;
mod job;
mod registry;
mod schedule;
mod service;
mod transport;
mod util;
mod well_known;

#[cfg(doctest)]
#[doc = include_str!("../../../docs/seed-parity.md")]
mod seed_parity {}

#[cfg(feature = "test-util")]
#[cfg_attr(docsrs, doc(cfg(feature = "test-util")))]
pub mod testing;

pub use action::{
    ActionContext, ActionDecl, ActionInfo, ActionOutput, ActionRequest, ActionTicket, Actions,
    CallOptions, ErrorBody, EventInfo, Execute, TypedExecute, TypedJobTicket, TypedRequest,
};
pub use client::{ServiceInfo, ServiceRef, Services, services, try_services};
pub use config::{Config, ConfigBuilder};
pub use error::{BoxError, Error, ErrorKind, Result};
pub use event::{
    Event, EventEnvelope, HandlerOutput, Overflow, RECENT_EVENTS, Subscription, SubscriptionBuilder,
};
pub use health::{
    HealthReport, HealthStatus, HealthThresholds, HostHealth, Readiness, ServiceHealth,
};
pub use host::{Environment, Host, HostBuilder, HostExit, HostHandle};
pub use job::{
    Claim, ClaimRequest, Claimed, Finish, JobAttempt, JobCounts, JobInfo, JobPage, JobQuery,
    JobRecord, JobState, JobStep, JobStore, JobTicket, Jobs, MemoryJobStore, NewJob, Pushed,
    RetryPolicy, apply_cancel, apply_claim, apply_finish, apply_retry, cut_result, new_job_id,
    retryable, unknown_job, wrong_state,
};
pub use registry::{
    DEFAULT_HISTORY_SIZE, RunOutcome, RunRecord, ServiceHistory, ServiceState, ServiceStatus,
    ThroughputBucket, ThroughputSnapshot,
};
pub use schedule::{CronSchedule, MissedTickPolicy, Schedule, TriggerOutcome, parse_duration};
pub use service::{
    Background, BackgroundService, Backoff, BatchRequest, BuildContext, FromContext, Intensity,
    KindOf, Periodic, PeriodicService, RestartPolicy, RunReason, Service, ServiceContext,
    ServiceKind, ServiceOptions, Startup, StartupService,
};
pub use transport::{Instance, RemoteCall, RemoteQuery, Transport};
pub use util::BoxFuture;
pub use well_known::{actions, events};

/// Used by code that `koan-macros` generates. Not public API: it may change in any
/// release.
#[doc(hidden)]
pub mod __private {
    pub use crate::action::{HandlerResult, typed_request};
    pub use crate::discovery::{ActionsProbe, DeclaredActions, Discovered, ViaDeclared, ViaNone};
    pub use crate::service::{PeriodicRun, RunFn, Runner};
    pub use crate::util::BoxFuture;
    pub use inventory;
    pub use serde::Serialize;
}

#[cfg(feature = "macros")]
pub use koan_macros::{Event, actions, service};
