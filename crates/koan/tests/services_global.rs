//! `koan::services::<T>()`, the accessor without a host, when several hosts run in
//! one process (tests, a multi-tenant app): it reaches the one running host that
//! has `T`, and refuses, naming the way out, when it cannot tell which is meant.
//! It reached the host started last, whatever it held: a call for a service of
//! the first host went to the second (a probe).
//!
//! One test: the hosts of this process are all it sees.

use koan::service::try_services;
use koan::status::ServiceState;
use koan::{Background, BackgroundService, BoxError, Service, ServiceContext, testing};

/// Runs until stopped.
macro_rules! idle {
    ($ty:ident) => {
        struct $ty;

        impl Service for $ty {
            type Kind = Background;
        }

        impl BackgroundService for $ty {
            async fn run(&self, cx: ServiceContext) -> Result<(), BoxError> {
                cx.cancelled().await;
                Ok(())
            }
        }
    };
}

idle!(Alpha);
idle!(Beta);
idle!(Gamma);

#[tokio::test(start_paused = true)]
async fn the_global_accessor_reaches_the_one_host_that_has_the_service() -> anyhow::Result<()> {
    let first = testing::host().instance(Alpha).build()?.start();
    first.started().await?;
    let state = try_services::<Alpha>()?.status().await?.state;
    assert_eq!(state, ServiceState::Running);

    // A second host, started last, without `Alpha`: `Alpha` is still the first's.
    let second = testing::host().instance(Beta).build()?.start();
    second.started().await?;
    let status = try_services::<Alpha>()?.status().await?;
    assert_eq!(status.state, ServiceState::Running, "{status:?}");
    let status = try_services::<Beta>()?.status().await?;
    assert_eq!(status.state, ServiceState::Running, "{status:?}");

    // A third with `Alpha` too: which is meant cannot be told, and the answer
    // says so and what to call instead.
    let third = testing::host().instance(Alpha).build()?.start();
    third.started().await?;
    let refused = try_services::<Alpha>()
        .err()
        .ok_or_else(|| anyhow::anyhow!("a host was picked for `Alpha` of two"))?;
    let said = refused.to_string();
    assert!(
        said.contains("2 running koan hosts in this process have service `Alpha`")
            && said.contains("host.services::<T>()"),
        "{said}"
    );
    // `services` panics with the same words.
    let panicked = std::panic::catch_unwind(koan::services::<Alpha>)
        .err()
        .and_then(|p| p.downcast_ref::<String>().cloned())
        .unwrap_or_default();
    assert!(panicked.contains("have service `Alpha`"), "{panicked:?}");

    // A service none of the running hosts has: refused, not sent to one of them.
    let said = try_services::<Gamma>()
        .err()
        .map(|e| e.to_string())
        .unwrap_or_default();
    assert!(
        said.contains("none of the 3 running koan hosts in this process has service `Gamma`"),
        "{said:?}"
    );

    // The third stops: `Alpha` is the first's again (not the stopped one's).
    third.shutdown();
    third.wait().await;
    let status = try_services::<Alpha>()?.status().await?;
    assert_eq!(status.state, ServiceState::Running, "{status:?}");

    first.shutdown();
    second.shutdown();
    first.wait().await;
    second.wait().await;
    Ok(())
}
