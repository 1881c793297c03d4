//! `run_in`: a service runs only in the environments it names, each read as
//! `KOAN_ENV` is. Before, the list was compared word for word: `run_in =
//! ["prod"]` never ran in production (`KOAN_ENV=prod` is production), and the
//! reason named an option the user never wrote (`run_in_production = false`;
//! found by a probe).

mod common;

use koan::error::ErrorKind;
use koan::host::Environment;
use koan::status::ServiceState;

common::waiting_service!(ProdOnly, run_in = ["prod"], discover = false);
common::waiting_service!(Staging, run_in = ["Staging", "dev"], discover = false);
common::waiting_service!(NotInProduction, run_in_production = false, discover = false);

/// Each service's state and reason for being disabled, in `environment`.
async fn states(environment: &str) -> anyhow::Result<Vec<(String, ServiceState, Option<String>)>> {
    let host = koan::testing::host()
        .environment(Environment::new(environment)?)
        .service::<ProdOnly>()
        .service::<Staging>()
        .service::<NotInProduction>()
        .build()?
        .start();
    host.started().await?;
    let out = host
        .statuses()
        .into_iter()
        .map(|s| (s.name, s.state, s.disabled_reason))
        .collect();
    koan::testing::stop(&host).await?;
    Ok(out)
}

fn running(states: &[(String, ServiceState, Option<String>)]) -> Vec<&str> {
    states
        .iter()
        .filter(|(_, state, _)| *state != ServiceState::Disabled)
        .map(|(name, _, _)| name.as_str())
        .collect()
}

#[tokio::test]
async fn run_in_names_are_read_as_koan_env_is() -> anyhow::Result<()> {
    for env in ["production", "prod", "PRODUCTION"] {
        assert_eq!(running(&states(env).await?), ["ProdOnly"], "{env}");
    }
    for env in ["staging", "development", "DEV"] {
        let s = states(env).await?;
        assert_eq!(running(&s), ["Staging", "NotInProduction"], "{env}: {s:?}");
    }
    // The reason names what the user wrote.
    let s = states("staging").await?;
    let reason = s[0].2.as_deref().unwrap_or_default();
    assert_eq!(
        reason, "not run in the staging environment (run_in = [\"prod\"])",
        "{s:?}"
    );
    let s = states("production").await?;
    let reason = s[2].2.as_deref().unwrap_or_default();
    assert_eq!(
        reason, "not run in the production environment (run_in_production = false)",
        "{s:?}"
    );
    Ok(())
}

common::waiting_service!(Spaced, run_in = ["prod uction"], discover = false);

#[test]
fn a_run_in_name_that_is_no_environment_name_is_refused() {
    let e = koan::testing::host()
        .service::<Spaced>()
        .build()
        .expect_err("no environment name");
    assert_eq!(e.kind(), ErrorKind::Config);
    assert!(
        e.message().contains("Spaced") && e.message().contains("`prod uction`"),
        "{e}"
    );
}
