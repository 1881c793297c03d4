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
//! The root holds what a service's author types; everything else is in a module:
//!
//! | module | what is in it |
//! | --- | --- |
//! | [`service`](mod@service) | [`Service`], its kinds ([`BackgroundService`], [`PeriodicService`], [`StartupService`]), [`ServiceOptions`] (name, schedule, supervision), [`Services`], the typed handle of a running service |
//! | [`host`] | [`Host`], its builder, [`HostHandle`]: lifecycle, shutdown, health |
//! | [`mod@action`] | [`Actions`] to declare, [`action::ActionRequest`] to call (priority, enforced timeout, correlation id); `#[koan::actions]` also generates a typed caller per action, whose [`action::TypedRequest`] takes the handler's parameter type and gives its result type |
//! | [`event`] | [`Event`] payloads; `Services::<T>::on::<E>()` subscribes to an event the service declares; keep the [`event::Subscription`] (dropping it unsubscribes) or [`event::Subscription::detach`] it; each subscriber picks its [`event::Overflow`] policy |
//! | [`job`] | accepted work: [`action::ActionRequest::enqueue`] stores a job in a [`job::JobStore`] before it answers; [`HostHandle::jobs`] lists, retries and cancels them |
//! | [`schedule`] | intervals, cron, missed-tick policy |
//! | [`health`], [`status`] | health reports, readiness; state, run history, throughput |
//! | [`config`] | layered configuration (files, environment, code) |
//! | [`transport`] | how calls and events reach services in other processes (`koan-nats`) |
//! | [`error`] | [`Error`] with an [`error::ErrorKind`] to match on; printed once, with its causes |
//! | `testing` | (feature `test-util`) paused-clock hosts and bounded waiting helpers |
//!
//! The getting-started guide (`docs/guide.md` in the repository; every code block in
//! it is compiled and run as a test) shows a whole program: `Cargo.toml`, a service
//! with an action and an event, HTTP, Ctrl-C and a paused-clock test.

#![cfg_attr(docsrs, feature(doc_cfg))]

#[allow(unused_extern_crates)]
extern crate self as koan;

pub mod action;
mod client;
mod clock;
pub mod config;
mod discovery;
pub mod error;
pub mod event;
pub mod health;
pub mod host;
pub mod job;
mod payload;
mod registry;
pub mod schedule;
pub mod service;
mod sync;
pub mod transport;
mod util;
pub mod well_known;

/// What a service is doing and has done: its state, runs, history and throughput.
pub mod status {
    pub use crate::registry::{
        DEFAULT_HISTORY_SIZE, RunOutcome, RunRecord, ServiceHistory, ServiceState, ServiceStatus,
        ThroughputBucket, ThroughputSnapshot,
    };
}

#[cfg(doctest)]
#[doc = include_str!("../../../docs/seed-parity.md")]
mod seed_parity {}

#[cfg(doctest)]
#[doc = include_str!("../../../docs/guide.md")]
mod guide {}

#[cfg(doctest)]
#[doc = include_str!("../../../README.md")]
mod readme {}

#[cfg(feature = "test-util")]
#[cfg_attr(docsrs, doc(cfg(feature = "test-util")))]
pub mod testing;

pub use action::{ActionContext, Actions};
pub use error::{BoxError, Error, Result};
pub use event::Event;
pub use host::{Host, HostHandle};
pub use service::{
    Background, BackgroundService, Periodic, PeriodicService, Service, ServiceContext,
    ServiceOptions, Services, Startup, StartupService, services,
};

/// Used by code that `koan-macros` generates. Not public API: it may change in any
/// release.
#[doc(hidden)]
pub mod __private {
    pub use crate::action::{
        HandlerResult, PlainValue, ResultKind, ReturnsResult, ReturnsValue, ValueKind, plain_value,
        typed_request,
    };
    pub use crate::discovery::{ActionsProbe, DeclaredActions, Discovered, ViaDeclared, ViaNone};
    pub use crate::service::{PeriodicRun, RunFn, Runner};
    pub use crate::util::BoxFuture;
    pub use inventory;
    pub use serde::Serialize;
}

#[cfg(feature = "macros")]
pub use koan_macros::{Event, action, actions, service};
