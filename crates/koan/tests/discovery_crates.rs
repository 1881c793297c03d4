//! Discovery across crates: a `#[service]` defined in another crate of the binary is
//! found by `discover()` without any registration, and runs.

use koan::{BoxError, service::ServiceKind, status::ServiceState};

// Linking the other crate is all it takes; nothing of it is named here.
use koan_discovery_fixture as _;

#[koan::service(startup, order = 1)]
#[derive(Default)]
struct LocalMigration;

impl koan::StartupService for LocalMigration {
    async fn run(&self, _cx: koan::ServiceContext) -> Result<(), BoxError> {
        Ok(())
    }
}

#[tokio::test(start_paused = true)]
async fn services_of_two_crates_are_discovered() -> anyhow::Result<()> {
    let host = koan::testing::host().discover().build()?.start();
    host.started().await?;
    let names = host.service_names();
    assert!(names.contains(&"LocalMigration".to_owned()), "{names:?}");
    assert!(names.contains(&"ReportService".to_owned()), "{names:?}");

    let info = host.service("ReportService").info().await?;
    assert_eq!(info.kind, ServiceKind::Periodic);
    assert_eq!(
        info.description.as_deref(),
        Some("Defined in another crate")
    );
    let outcome = host.service("reportservice").trigger().await?;
    assert!(outcome.run.outcome.is_success());
    assert_eq!(host.status("LocalMigration")?.state, ServiceState::Stopped);
    koan::testing::stop(&host).await?;
    Ok(())
}
