//! Dev-only helpers shared by the integration tests of the koan crates (never
//! published): every wait bounded by [`PATIENCE`] and failing with what it waited for,
//! temporary directories and free ports, and behind features the pieces of one
//! area's harness that another crate's tests reuse:
//!
//! - `http`: a host served on a loopback port with a client for it (`http::Api`),
//!   the services the control-plane tests serve, and raw HTTP/1.1 over a socket
//!   (`raw`) for what a client library would hide;
//! - `nats`: a real `nats-server` with JetStream on a free port (`nats::NatsServer`)
//!   or three in a JetStream cluster (`nats::NatsCluster`), the fast options of the tests (`nats::test_options`), a host joined to it
//!   (`nats::Member`) and a wait for a service to be announced (`nats::announced`);
//! - [`services`]: the periodic service of the control-plane tests, which records
//!   what it was asked to run;
//! - [`ticks`]: periodic services that log which host ran each tick, for the
//!   singleton tests.
//!
//! ```no_run
//! # async fn demo() -> anyhow::Result<()> {
//! use koan_test_support::within;
//! let n = within("the answer", async { 42 }).await?;
//! assert_eq!(n, 42);
//! # Ok(())
//! # }
//! ```

pub mod logs;
mod temp;
mod wait;

#[cfg(feature = "http")]
pub mod http;
#[cfg(feature = "nats")]
pub mod nats;
#[cfg(feature = "http")]
pub mod raw;
pub mod services;
pub mod ticks;

pub use temp::{TempDir, free_port};
pub use wait::{
    PATIENCE, eventually, refused, refused_within, wait_for, wait_for_within, within, within_for,
};
