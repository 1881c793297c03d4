//! Services more than one crate's tests run.

use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};

use koan::{
    ActionContext, BackgroundService, BoxError, PeriodicService, ServiceContext,
    service::BatchRequest,
};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

/// The parameters of `Greeter.greet`.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
pub struct GreetParams {
    /// Who to greet.
    pub name: String,
    /// How many times.
    pub times: u32,
}

/// The event `Greeter.greet` emits.
#[derive(Debug, Clone, Default, Serialize, Deserialize, JsonSchema, koan::Event)]
#[event(name = "Greeted")]
pub struct Greeted {
    /// Who was greeted.
    pub name: String,
}

/// `Greeter`: a background service with two actions. `greet` emits `Greeted` and
/// answers `Hello <name>!` `times` times; `whoami` answers what its context says
/// (service, action, priority, correlation id, deadline, whether it was enqueued).
#[koan::service(description = "Says hello", event(Greeted), discover = false)]
#[derive(Debug, Default)]
pub struct Greeter;

#[koan::actions]
impl Greeter {
    #[action("greet", description = "Greets someone")]
    async fn greet(&self, p: GreetParams, cx: &ActionContext) -> Result<String, BoxError> {
        cx.emit_event(Greeted {
            name: p.name.clone(),
        })
        .await;
        Ok(vec![format!("Hello {}!", p.name); p.times as usize].join(" "))
    }

    #[action("whoami")]
    async fn whoami(&self, _p: (), cx: &ActionContext) -> Result<Value, BoxError> {
        Ok(json!({
            "service": cx.service(),
            "action": cx.action(),
            "priority": cx.priority(),
            "correlation_id": cx.correlation_id(),
            "has_deadline": cx.remaining().is_some(),
            "remaining_ms": cx.remaining().map(|d| d.as_millis() as u64),
            "enqueued": cx.id().is_some(),
        }))
    }
}

impl BackgroundService for Greeter {
    async fn run(&self, cx: ServiceContext) -> Result<(), BoxError> {
        cx.cancelled().await;
        Ok(())
    }
}

/// `Echo`: a background service whose `echo` emits `Echoed` with its text and
/// answers it, and whose `fail` fails (once: one attempt).
#[koan::service(description = "Echoes, and fails on request", discover = false)]
#[derive(Debug, Default)]
pub struct Echo;

#[koan::actions]
impl Echo {
    #[action("echo")]
    async fn echo(&self, text: String, cx: &ActionContext) -> Result<String, BoxError> {
        cx.emit("Echoed", text.clone()).await;
        Ok(text)
    }

    #[action("fail", max_attempts = 1)]
    async fn fail(&self, _p: (), _cx: &ActionContext) -> Result<(), BoxError> {
        Err("failing on request".into())
    }
}

impl BackgroundService for Echo {
    async fn run(&self, cx: ServiceContext) -> Result<(), BoxError> {
        cx.cancelled().await;
        Ok(())
    }
}

/// What [`DataCleanupService`] was asked to run.
#[derive(Debug, Default)]
pub struct Seen {
    /// Scheduled and triggered ticks.
    pub ticks: AtomicU32,
    /// Queue checks.
    pub queue_checks: AtomicU32,
    batches: Mutex<Vec<BatchRequest>>,
}

impl Seen {
    /// The batches it was given, in order.
    pub fn batches(&self) -> Vec<BatchRequest> {
        self.batches
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }
}

/// `Cleanup`: the seed's periodic service, every hour, recording each run in
/// [`Seen`]. Add it with `HostBuilder::instance`, keeping a clone of `seen`.
#[koan::service(every = "1h", name = "Cleanup", discover = false)]
#[derive(Debug, Default)]
pub struct DataCleanupService {
    /// Shared with the test.
    pub seen: Arc<Seen>,
}

impl PeriodicService for DataCleanupService {
    async fn tick(&self, _cx: ServiceContext) -> Result<(), BoxError> {
        self.seen.ticks.fetch_add(1, Ordering::SeqCst);
        Ok(())
    }

    async fn check_queue(&self, _cx: ServiceContext) -> Result<(), BoxError> {
        self.seen.queue_checks.fetch_add(1, Ordering::SeqCst);
        Ok(())
    }

    async fn process_batch(
        &self,
        batch: BatchRequest,
        _cx: ServiceContext,
    ) -> Result<(), BoxError> {
        self.seen
            .batches
            .lock()
            .map_err(|_| "poisoned")?
            .push(batch);
        Ok(())
    }
}
