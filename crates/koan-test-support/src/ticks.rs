//! Periodic services that record which host ran each tick, when and why: the
//! singleton tests run one on several hosts and read the shared [`TickLog`].
//!
//! A test declares each such service with the `#[koan::service]` options it needs:
//!
//! ```ignore
//! koan_test_support::recording_service!(
//!     /// Runs on one host of the cluster.
//!     Ticker, singleton, every = "1s"
//! );
//! ```
//! and gives each host the resources `Label("h1".into())` and a clone of the log.

use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use koan::service::{BuildContext, FromContext, RunReason};
use koan::{BoxError, ServiceContext};

use crate::within;

/// This host's name (a host resource).
#[derive(Debug)]
pub struct Label(pub String);

/// One tick: which host ran it, in which wall-clock second, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TickRecord {
    /// The [`Label`] of the host.
    pub host: String,
    /// Seconds since the Unix epoch when the tick started.
    pub second: u64,
    /// Why it ran.
    pub reason: RunReason,
}

/// The ticks of every host, shared by the test (a host resource).
#[derive(Debug, Clone, Default)]
pub struct TickLog(Arc<Mutex<Vec<TickRecord>>>);

impl TickLog {
    /// Every tick so far, in the order they started.
    pub fn all(&self) -> Vec<TickRecord> {
        self.0.lock().map(|v| v.clone()).unwrap_or_default()
    }

    /// How many ticks ran so far.
    pub fn len(&self) -> usize {
        self.0.lock().map(|v| v.len()).unwrap_or(0)
    }

    /// Whether no tick ran yet.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Waits until `n` ticks ran, within [`PATIENCE`](crate::PATIENCE).
    pub async fn wait_len(&self, n: usize) -> anyhow::Result<()> {
        self.wait_until(&format!("{n} ticks"), |all| all.len() >= n)
            .await
    }

    /// Waits until some tick satisfies `f`, within [`PATIENCE`](crate::PATIENCE).
    pub async fn wait_for(
        &self,
        what: &str,
        f: impl Fn(&TickRecord) -> bool,
    ) -> anyhow::Result<()> {
        self.wait_until(what, |all| all.iter().any(&f)).await
    }

    async fn wait_until(
        &self,
        what: &str,
        done: impl Fn(&[TickRecord]) -> bool,
    ) -> anyhow::Result<()> {
        within(what, async {
            while !done(&self.all()) {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        })
        .await
    }
}

/// What a recording service holds: its host's [`Label`] and the shared [`TickLog`],
/// both taken from the host's resources.
#[derive(Debug)]
pub struct Recorder {
    host: String,
    log: TickLog,
}

impl FromContext for Recorder {
    fn from_context(cx: &BuildContext<'_>) -> koan::Result<Self> {
        Ok(Recorder {
            host: cx.resource::<Label>()?.0.clone(),
            log: cx.resource::<TickLog>()?.as_ref().clone(),
        })
    }
}

impl Recorder {
    /// Logs the tick `cx` runs.
    pub fn record(&self, cx: &ServiceContext) -> Result<(), BoxError> {
        let second = SystemTime::now().duration_since(UNIX_EPOCH)?.as_secs();
        self.log.0.lock().map_err(|_| "poisoned")?.push(TickRecord {
            host: self.host.clone(),
            second,
            reason: cx.reason(),
        });
        Ok(())
    }
}

/// Declares `struct $name(Recorder)`, a periodic service with the given
/// `#[koan::service]` options whose every tick is logged by its [`Recorder`].
#[macro_export]
macro_rules! recording_service {
    ($(#[$attr:meta])* $name:ident, $($options:tt)*) => {
        $(#[$attr])*
        #[koan::service($($options)*)]
        #[derive(Debug)]
        struct $name($crate::ticks::Recorder);

        impl ::koan::service::FromContext for $name {
            fn from_context(cx: &::koan::service::BuildContext<'_>) -> ::koan::Result<Self> {
                <$crate::ticks::Recorder as ::koan::service::FromContext>::from_context(cx)
                    .map($name)
            }
        }

        impl ::koan::PeriodicService for $name {
            async fn tick(
                &self,
                cx: ::koan::ServiceContext,
            ) -> ::std::result::Result<(), ::koan::BoxError> {
                self.0.record(&cx)
            }
        }
    };
}
