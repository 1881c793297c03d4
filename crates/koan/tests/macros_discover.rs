//! `#[koan::service(discover = false)]`: a service the host cannot construct (its
//! fields need values from the caller) is left out of discovery and added, built,
//! with `HostBuilder::instance`.

use std::sync::Arc;

use koan::{BackgroundService, BoxError, ServiceContext};

/// Not `Default`: only the caller can make one.
struct Pool {
    url: String,
}

#[koan::service(discover = false)]
struct Ingest {
    pool: Arc<Pool>,
}

#[koan::actions]
impl Ingest {
    #[action]
    async fn url(&self) -> String {
        self.pool.url.clone()
    }
}

impl BackgroundService for Ingest {
    async fn run(&self, cx: ServiceContext) -> Result<(), BoxError> {
        cx.cancelled().await;
        Ok(())
    }
}

/// Discovered as usual, next to the one that is not.
#[koan::service]
#[derive(Default)]
struct Beacon;

impl BackgroundService for Beacon {
    async fn run(&self, cx: ServiceContext) -> Result<(), BoxError> {
        cx.cancelled().await;
        Ok(())
    }
}

#[tokio::test(start_paused = true)]
async fn a_service_out_of_discovery_is_added_as_a_built_instance() -> anyhow::Result<()> {
    let discovered = koan::testing::host().discover().build()?;
    let names = discovered.handle().service_names();
    assert!(names.iter().any(|n| n == "Beacon"), "{names:?}");
    assert!(!names.iter().any(|n| n == "Ingest"), "{names:?}");

    let pool = Arc::new(Pool {
        url: "sqlite://jobs.db".to_owned(),
    });
    let host = koan::testing::host()
        .instance(Ingest { pool })
        .discover()
        .build()?
        .start();
    host.started().await?;
    let url = host
        .services::<Ingest>()
        .action("url", ())
        .execute()
        .await?;
    assert_eq!(url.value::<String>()?, "sqlite://jobs.db");
    assert_eq!(
        host.service_names()
            .iter()
            .filter(|n| *n == "Ingest")
            .count(),
        1
    );
    koan::testing::stop(&host).await?;
    Ok(())
}
