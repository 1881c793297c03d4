//! A trigger from a thread with a tokio runtime of its own: the tick runs on the
//! host's driver, not on the caller's runtime. Run there, it was that runtime's:
//! a caller that gave up and dropped its runtime left the service `running` for
//! good, no tick ran again and every later trigger waited (found by a probe).

use std::sync::{Arc, Mutex};
use std::time::Duration;

use koan::status::ServiceState;
use koan::testing::within;
use koan::{BoxError, ServiceContext};
use tokio::sync::Semaphore;

/// Hourly; each run waits for a permit and notes the runtime it ran on.
#[koan::service(every = "1h", discover = false)]
struct Gate {
    gate: Arc<Semaphore>,
    ran_on: Arc<Mutex<Vec<tokio::runtime::Id>>>,
}

impl koan::PeriodicService for Gate {
    async fn tick(&self, _cx: ServiceContext) -> Result<(), BoxError> {
        self.gate.acquire().await?.forget();
        let id = tokio::runtime::Handle::current().id();
        self.ran_on.lock().map_err(|e| e.to_string())?.push(id);
        Ok(())
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_trigger_from_another_runtime_runs_on_the_hosts_driver() -> anyhow::Result<()> {
    let gate = Arc::new(Semaphore::new(0));
    let ran_on = Arc::new(Mutex::new(Vec::new()));
    let host = koan::testing::host()
        .instance(Gate {
            gate: Arc::clone(&gate),
            ran_on: Arc::clone(&ran_on),
        })
        .build()?
        .start();
    within("startup", host.started()).await?;
    let ours = tokio::runtime::Handle::current().id();

    // A caller on its own runtime gives up after 50 ms, then its runtime ends.
    let h = host.clone();
    let gave_up = tokio::task::spawn_blocking(move || {
        let other = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?;
        let r = other.block_on(tokio::time::timeout(
            Duration::from_millis(50),
            h.service("Gate").trigger(),
        ));
        drop(other);
        anyhow::Ok(r.is_err())
    })
    .await??;
    assert!(gave_up, "the run waits for its permit");

    // The run goes on, on the host's runtime, and ends once let through.
    koan::testing::wait_state(&host, "Gate", ServiceState::Running).await;
    gate.add_permits(1);
    koan::testing::wait_runs(&host, "Gate", 1).await;
    // Later triggers run.
    gate.add_permits(1);
    within("a later trigger", host.service("Gate").trigger()).await?;
    let seen = ran_on.lock().map_err(|e| anyhow::anyhow!("{e}"))?.clone();
    assert_eq!(seen, [ours, ours], "both runs on the host's runtime");
    koan::testing::stop(&host).await?;
    Ok(())
}
