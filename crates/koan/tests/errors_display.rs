//! Errors print once, in plain words, with their causes: `Display` is the message and
//! each cause it does not already say; `Debug` is the kind, the message and those
//! causes; a failed startup is not wrapped in its own words again.

use koan::{
    BoxError, Error, Service, ServiceContext, ServiceOptions, Startup, StartupService,
    error::ErrorKind,
};

#[derive(Default)]
struct WarmUp;

impl Service for WarmUp {
    type Kind = Startup;
    fn options() -> ServiceOptions {
        ServiceOptions::named("WarmUp")
    }
}

impl StartupService for WarmUp {
    async fn run(&self, _cx: ServiceContext) -> Result<(), BoxError> {
        Err("the cache server refused the connection".into())
    }
}

fn count(text: &str, part: &str) -> usize {
    text.matches(part).count()
}

#[tokio::test(start_paused = true)]
async fn a_failed_startup_says_each_thing_once() -> anyhow::Result<()> {
    let host = koan::testing::host().service::<WarmUp>().build()?.start();
    let exit = koan::testing::within("the host to exit", host.wait()).await;
    let e = exit.into_result().expect_err("startup failed");
    assert_eq!(e.kind(), ErrorKind::Startup);
    assert_eq!(
        e.to_string(),
        "startup service `WarmUp` failed: the cache server refused the connection"
    );
    let debug = format!("{e:?}");
    assert_eq!(
        debug,
        "Error { kind: startup, message: \"startup service `WarmUp` failed: the cache server \
         refused the connection\" }"
    );
    // What `started()` answers reads the same.
    let started = host.started().await.expect_err("startup failed");
    assert_eq!(started.to_string(), e.to_string());
    // The service's own record says what happened to it, without its name again.
    let status = host.status("WarmUp")?;
    assert_eq!(
        status.last_error.as_deref(),
        Some("the cache server refused the connection")
    );
    Ok(())
}

#[test]
fn display_follows_the_cause_chain_and_says_each_part_once() {
    let disk = std::io::Error::other("disk full");
    let inner =
        Error::new(ErrorKind::StoreUnavailable, "the job store could not write").with_source(disk);
    let outer =
        Error::new(ErrorKind::Handler, "action `ingest` of `Ingest` failed").with_source(inner);
    assert_eq!(
        outer.to_string(),
        "action `ingest` of `Ingest` failed: the job store could not write: disk full"
    );
    assert_eq!(
        format!("{outer:?}"),
        "Error { kind: handler_error, message: \"action `ingest` of `Ingest` failed\", causes: \
         [\"the job store could not write\", \"disk full\"] }"
    );
    // A message that already says its cause does not say it again.
    let said = Error::new(
        ErrorKind::Build,
        "service `Ingest` failed to build: disk full",
    )
    .with_source(std::io::Error::other("disk full"));
    assert_eq!(count(&said.to_string(), "disk full"), 1);
    assert_eq!(count(&format!("{said:?}"), "disk full"), 1);
    // The chain stays reachable for code.
    let source = std::error::Error::source(&outer).expect("a source");
    assert_eq!(
        source.downcast_ref::<Error>().map(Error::kind),
        Some(ErrorKind::StoreUnavailable)
    );
}

/// A `thiserror`-style error: its own words, and its cause apart (`#[source]`).
#[derive(Debug)]
struct DbDown(std::io::Error);

impl std::fmt::Display for DbDown {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("could not reach the database")
    }
}

impl std::error::Error for DbDown {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        Some(&self.0)
    }
}

fn db_down() -> BoxError {
    DbDown(std::io::Error::new(
        std::io::ErrorKind::ConnectionRefused,
        "connection refused",
    ))
    .into()
}

#[koan::service(every = "1m", discover = false)]
#[derive(Default)]
struct Flaky;

impl koan::PeriodicService for Flaky {
    async fn tick(&self, _cx: ServiceContext) -> Result<(), BoxError> {
        Err(db_down())
    }
}

#[koan::actions]
impl Flaky {
    #[action("query")]
    async fn query(&self) -> Result<u32, BoxError> {
        Err(db_down())
    }
}

/// The cause under a handler's or a tick's error is said with it: the action's
/// error, a triggered run's error and the service's `last_error` all end with
/// "connection refused" (they said "could not reach the database" alone; found by
/// a probe).
#[tokio::test(start_paused = true)]
async fn a_handlers_and_a_ticks_error_keep_their_causes() -> anyhow::Result<()> {
    let host = koan::testing::host().service::<Flaky>().build()?.start();
    koan::testing::within("startup", host.started()).await?;
    let e = koan::testing::within(
        "a call",
        host.service("Flaky").action("query", ()).execute(),
    )
    .await
    .expect_err("it fails");
    assert_eq!(e.kind(), ErrorKind::Handler);
    assert!(
        e.message()
            .ends_with("could not reach the database: connection refused"),
        "{e}"
    );
    let _ = koan::testing::within("a run", host.service("Flaky").trigger()).await;
    let status = host.status("Flaky")?;
    let last = status.last_error.unwrap_or_default();
    assert_eq!(last, "could not reach the database: connection refused");
    koan::testing::stop(&host).await?;
    Ok(())
}
