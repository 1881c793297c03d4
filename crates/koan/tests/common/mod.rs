//! A gated test service shared by the action tests: its handlers wait on a gate,
//! record the order they ran in, and count how many run at once. [`events`] holds
//! what the event tests share.

// Each test file uses its own part of this module.
#![allow(dead_code)]

pub(crate) mod events;
pub(crate) mod logs;
pub(crate) mod store;

use std::future::Future;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use koan::schedule::MissedTickPolicy;
use koan::{
    ActionContext, Actions, Background, BackgroundService, BoxError, HostHandle, Service,
    ServiceContext, ServiceOptions,
};
use tokio::sync::{Semaphore, mpsc};

/// A background service `$name` declared with `#[koan::service(options…)]`, whose
/// `run` waits for its token: for tests of what its declaration or configuration
/// does, not of its work.
#[allow(unused_macros)] // each test file uses its own part of this module
macro_rules! waiting_service {
    ($name:ident, $($options:tt)*) => {
        #[koan::service($($options)*)]
        #[derive(Default)]
        struct $name;

        impl koan::BackgroundService for $name {
            async fn run(&self, cx: koan::ServiceContext) -> Result<(), koan::BoxError> {
                cx.cancelled().await;
                Ok(())
            }
        }
    };
}
#[allow(unused_imports)]
pub(crate) use waiting_service;

/// A started test host running `service`.
pub(crate) async fn started<T: Service>(service: T) -> anyhow::Result<HostHandle> {
    let host = koan::testing::host().instance(service).build()?.start();
    host.started().await?;
    Ok(host)
}

/// `name`, every 10 s, under the missed-tick policy numbered `policy`: 0 skips,
/// 1 catches up once, any other delays.
pub(crate) fn every_10s_missing_ticks(name: &'static str, policy: u8) -> ServiceOptions {
    let policy = match policy {
        0 => MissedTickPolicy::Skip,
        1 => MissedTickPolicy::CatchUpOnce,
        _ => MissedTickPolicy::Delay,
    };
    ServiceOptions::named(name)
        .every(std::time::Duration::from_secs(10))
        .missed_ticks(policy)
}

/// Polls `f` exactly once: `Some(output)` when it finished without waiting.
pub(crate) async fn poll_once<F: Future>(f: F) -> Option<F::Output> {
    let mut f = std::pin::pin!(f);
    std::future::poll_fn(|cx| {
        std::task::Poll::Ready(match f.as_mut().poll(cx) {
            std::task::Poll::Ready(v) => Some(v),
            std::task::Poll::Pending => None,
        })
    })
    .await
}

/// A service whose mailbox capacity and concurrency are type parameters, so each test
/// can pick its own options.
pub(crate) struct Queue<const CAPACITY: usize, const CONCURRENCY: usize> {
    /// `block` and `hold` wait for a permit of this gate.
    gate: Arc<Semaphore>,
    /// `block` and `hold` say here that they are running.
    started: mpsc::UnboundedSender<()>,
    /// `record` appends its tag here, in the order handlers run.
    log: Arc<Mutex<Vec<String>>>,
    running: AtomicUsize,
    peak: Arc<AtomicUsize>,
    finished: Arc<AtomicUsize>,
}

/// What a test sees of its `Queue`.
pub(crate) struct Probe {
    /// Each permit lets one waiting `block` or `hold` finish.
    pub(crate) gate: Arc<Semaphore>,
    /// One message per `block` or `hold` that started.
    pub(crate) started: mpsc::UnboundedReceiver<()>,
    pub(crate) log: Arc<Mutex<Vec<String>>>,
    /// The most `hold` and `record` handlers that ran at once.
    pub(crate) peak: Arc<AtomicUsize>,
    /// `hold` handlers that ran to their end.
    pub(crate) finished: Arc<AtomicUsize>,
}

impl Probe {
    /// Waits until one more `block` or `hold` handler started, for at most
    /// [`koan::testing::WAIT_LIMIT`] of tokio's clock.
    pub(crate) async fn wait_started(&mut self, what: &str) {
        koan::testing::within(what, self.started.recv())
            .await
            .expect("the service is gone");
    }

    pub(crate) fn log(&self) -> Vec<String> {
        self.log.lock().expect("log lock").clone()
    }
}

impl<const C: usize, const N: usize> Queue<C, N> {
    /// A started test host running a new `Queue`, and the queue's probe.
    pub(crate) async fn start() -> anyhow::Result<(HostHandle, Probe)> {
        let (svc, probe) = Self::new();
        Ok((started(svc).await?, probe))
    }

    pub(crate) fn new() -> (Self, Probe) {
        let gate = Arc::new(Semaphore::new(0));
        let (tx, rx) = mpsc::unbounded_channel();
        let log = Arc::new(Mutex::new(Vec::new()));
        let peak = Arc::new(AtomicUsize::new(0));
        let finished = Arc::new(AtomicUsize::new(0));
        let svc = Queue {
            gate: Arc::clone(&gate),
            started: tx,
            log: Arc::clone(&log),
            running: AtomicUsize::new(0),
            peak: Arc::clone(&peak),
            finished: Arc::clone(&finished),
        };
        let probe = Probe {
            gate,
            started: rx,
            log,
            peak,
            finished,
        };
        (svc, probe)
    }

    /// Counts one more handler running; returns how many run now.
    fn enter(&self) -> usize {
        let now = self.running.fetch_add(1, Ordering::SeqCst) + 1;
        self.peak.fetch_max(now, Ordering::SeqCst);
        now
    }
}

impl<const C: usize, const N: usize> Service for Queue<C, N> {
    type Kind = Background;

    fn options() -> ServiceOptions {
        ServiceOptions::named("Queue")
            .mailbox_capacity(C)
            .max_concurrency(N)
    }

    fn actions(a: &mut Actions<Self>) {
        a.action(
            "block",
            |svc: Arc<Self>, (): (), _cx: ActionContext| async move {
                let _ = svc.started.send(());
                svc.gate.acquire().await?.forget();
                Ok::<_, BoxError>(())
            },
        );
        // Appends its tag, yielding once while counted as running.
        a.action(
            "record",
            |svc: Arc<Self>, tag: String, _cx: ActionContext| async move {
                svc.enter();
                svc.log.lock().expect("log lock").push(tag.clone());
                tokio::task::yield_now().await;
                svc.running.fetch_sub(1, Ordering::SeqCst);
                Ok::<_, BoxError>(tag)
            },
        );
        a.action(
            "hold",
            |svc: Arc<Self>, (): (), _cx: ActionContext| async move {
                let now = svc.enter();
                let _ = svc.started.send(());
                let permit = svc.gate.acquire().await;
                svc.running.fetch_sub(1, Ordering::SeqCst);
                permit?.forget();
                svc.finished.fetch_add(1, Ordering::SeqCst);
                Ok::<_, BoxError>(now)
            },
        );
    }
}

impl<const C: usize, const N: usize> BackgroundService for Queue<C, N> {
    async fn run(&self, cx: ServiceContext) -> Result<(), BoxError> {
        cx.cancelled().await;
        Ok(())
    }
}
