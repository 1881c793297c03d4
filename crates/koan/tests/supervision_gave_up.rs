//! A service its supervisor gave up on (`Failed`) refuses calls — typed, by name
//! — with `ServiceUnavailable` naming why; a probe's call to a service whose
//! status said `Failed` answered `Ok(42)`. A stored job still runs: its work was
//! accepted and its handler is there.

use std::time::Duration;

use koan::testing;
use koan::{BackgroundService, BoxError, ServiceContext, error::ErrorKind, status::ServiceState};

#[koan::service(restart = "never", discover = false)]
#[derive(Default)]
struct Db;

#[koan::actions]
impl Db {
    #[action]
    async fn query(&self, n: u32) -> Result<u32, BoxError> {
        Ok(n * 2)
    }
}

impl BackgroundService for Db {
    async fn run(&self, _cx: ServiceContext) -> Result<(), BoxError> {
        Err("cannot connect to the database".into())
    }
}

#[tokio::test(start_paused = true)]
async fn a_service_failed_for_good_refuses_calls_but_runs_its_stored_jobs() -> anyhow::Result<()> {
    let host = testing::host().instance(Db).build()?.start();
    let status = testing::wait_state(&host, "Db", ServiceState::Failed).await;
    assert!(
        status
            .last_error
            .as_deref()
            .is_some_and(|e| e.contains("cannot connect")),
        "{status:?}"
    );
    let typed = host.services::<Db>().query(21).execute().await;
    let e = typed.expect_err("a failed service's call");
    assert_eq!(e.kind(), ErrorKind::ServiceUnavailable, "{e}");
    assert!(
        e.message().contains("service `Db` failed for good")
            && e.message().contains("action `query` was not run"),
        "{e}"
    );
    let by_name = host.service("Db").action("query", 21).execute().await;
    assert_eq!(
        by_name.expect_err("by name too").kind(),
        ErrorKind::ServiceUnavailable
    );
    let job = host.services::<Db>().query(21).enqueue().await?;
    let done = tokio::time::timeout(Duration::from_secs(30), job.outcome()).await??;
    assert_eq!(done, 42);
    Ok(())
}
