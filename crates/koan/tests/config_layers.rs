//! Configuration through the public API: the seed's appsettings.json loads as written,
//! layers override in order (env > appsettings.json > koan.toml > attribute), typed
//! settings reach the service, bad values name their key and source, and the
//! environment gates services.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use koan::{
    BackgroundService, BoxError, PeriodicService, ServiceContext, config::Config, error::ErrorKind,
    host::Environment, service::BuildContext, service::FromContext, status::ServiceState,
};
use serde::Deserialize;

const SEED_APPSETTINGS: &str = include_str!("fixtures/appsettings.json");

#[derive(Debug, Default, Deserialize, PartialEq)]
struct CleanupSettings {
    retention_days: u32,
    batch_size: u32,
}

#[koan::service(every = "1h")]
struct DataCleanupService {
    settings: CleanupSettings,
    ticks: AtomicUsize,
}

impl FromContext for DataCleanupService {
    fn from_context(cx: &BuildContext<'_>) -> koan::Result<Self> {
        Ok(DataCleanupService {
            settings: cx.settings()?,
            ticks: AtomicUsize::new(0),
        })
    }
}

impl PeriodicService for DataCleanupService {
    async fn tick(&self, _cx: ServiceContext) -> Result<(), BoxError> {
        // Real code would delete `batch_size` rows older than `retention_days`.
        let _ = (self.settings.retention_days, self.settings.batch_size);
        // A runaway schedule (a tick at every instant, under a broken `next_due`) stalls
        // here instead of spinning the driver, so the test is not held forever.
        if self.ticks.fetch_add(1, Ordering::SeqCst) >= 100 {
            std::future::pending::<()>().await;
        }
        Ok(())
    }
}

#[derive(Debug, Default, Deserialize, PartialEq)]
struct Thresholds {
    cpu_percent: u32,
    memory_percent: u32,
}

#[derive(Debug, Default, Deserialize, PartialEq)]
struct MonitorSettings {
    check_interval_minutes: u32,
    alert_thresholds: Thresholds,
}

#[koan::service(run_in_testing = false)]
struct SystemHealthMonitor {
    settings: MonitorSettings,
}

impl FromContext for SystemHealthMonitor {
    fn from_context(cx: &BuildContext<'_>) -> koan::Result<Self> {
        Ok(SystemHealthMonitor {
            settings: cx.settings()?,
        })
    }
}

impl BackgroundService for SystemHealthMonitor {
    async fn run(&self, cx: ServiceContext) -> Result<(), BoxError> {
        let _ = self.settings.check_interval_minutes;
        cx.cancelled().await;
        Ok(())
    }
}

#[koan::service]
#[derive(Default)]
struct TranslationService;

impl BackgroundService for TranslationService {
    async fn run(&self, cx: ServiceContext) -> Result<(), BoxError> {
        cx.cancelled().await;
        Ok(())
    }
}

/// A configuration of one file, `koan.toml`, holding `text`.
fn from_toml(text: &str) -> anyhow::Result<Config> {
    Ok(Config::builder().toml("koan.toml", text)?.build())
}

/// A configuration of one file, `appsettings.json`, holding `text`.
fn from_json(text: &str) -> anyhow::Result<Config> {
    Ok(Config::builder().json("appsettings.json", text)?.build())
}

/// The error of building a host with `config` and the service `S`, which must fail
/// (`why` says why it should).
fn refused<S: koan::Service + FromContext>(config: Config, why: &str) -> koan::Error {
    koan::Host::builder()
        .config(config)
        .service::<S>()
        .build()
        .expect_err(why)
}

/// Asserts that `service` of `host` is disabled, for a reason that names `cause`.
fn assert_disabled_by(host: &koan::Host, service: &str, cause: &str) -> anyhow::Result<()> {
    let status = host.handle().status(service)?;
    assert_eq!(status.state, ServiceState::Disabled, "{service}");
    let reason = status.disabled_reason.unwrap_or_default();
    assert!(reason.contains(cause), "{service}: {reason}");
    Ok(())
}

fn seed_config() -> Config {
    Config::builder()
        .json("appsettings.json", SEED_APPSETTINGS)
        .expect("the seed's appsettings.json parses")
        .build()
}

#[tokio::test]
async fn the_seeds_appsettings_loads_as_written() -> anyhow::Result<()> {
    let config = seed_config();
    let host = koan::testing::host()
        .environment(Environment::DEVELOPMENT)
        .config(config)
        .service::<DataCleanupService>()
        .service::<SystemHealthMonitor>()
        .service::<TranslationService>()
        .build()?;
    let handle = host.handle();
    let info = handle.services::<DataCleanupService>().info().await?;
    // IntervalSeconds = 7200 overrides the attribute's `every = "1h"`.
    assert_eq!(info.schedule.as_deref(), Some("every 2h"));
    Ok(())
}

#[test]
fn typed_settings_reach_the_service() -> anyhow::Result<()> {
    let seen = std::sync::Arc::new(std::sync::Mutex::new(None));
    struct Probe;
    impl koan::Service for Probe {
        type Kind = koan::Background;
        fn options() -> koan::ServiceOptions {
            koan::ServiceOptions::named("SystemHealthMonitor")
        }
    }
    impl BackgroundService for Probe {
        async fn run(&self, cx: ServiceContext) -> Result<(), BoxError> {
            cx.cancelled().await;
            Ok(())
        }
    }
    let slot = std::sync::Arc::clone(&seen);
    struct Capture(std::sync::Arc<std::sync::Mutex<Option<MonitorSettings>>>);
    impl FromContext for Probe {
        fn from_context(cx: &BuildContext<'_>) -> koan::Result<Self> {
            let settings: MonitorSettings = cx.settings()?;
            let capture = cx.resource::<Capture>()?;
            *capture
                .0
                .lock()
                .map_err(|_| koan::Error::new(ErrorKind::Build, "poisoned"))? = Some(settings);
            Ok(Probe)
        }
    }
    koan::Host::builder()
        .environment(Environment::DEVELOPMENT)
        .config(seed_config())
        .resource(Capture(slot))
        .service::<Probe>()
        .build()?;
    let got = seen.lock().map_err(|_| anyhow::anyhow!("poisoned"))?.take();
    assert_eq!(
        got,
        Some(MonitorSettings {
            check_interval_minutes: 5,
            alert_thresholds: Thresholds {
                cpu_percent: 80,
                memory_percent: 85
            },
        })
    );
    Ok(())
}

#[test]
fn precedence_is_env_over_json_over_toml_over_attribute() -> anyhow::Result<()> {
    let toml = r#"
        [background_services.services.DataCleanupService]
        interval_seconds = 60
        settings = { retention_days = 7, batch_size = 10 }
    "#;
    let json = r#"{ "Koan": { "BackgroundServices": { "Services": {
        "DataCleanupService": { "IntervalSeconds": 120, "Settings": { "RetentionDays": 14 } } } } } }"#;
    let interval_of = |config: Config| -> anyhow::Result<Option<String>> {
        let host = koan::Host::builder()
            .environment(Environment::DEVELOPMENT)
            .config(config)
            .service::<DataCleanupService>()
            .build()?;
        let cell = host.handle().status("DataCleanupService")?;
        assert_eq!(cell.name, "DataCleanupService");
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?;
        let info = rt.block_on(host.handle().service("DataCleanupService").info())?;
        Ok(info.schedule)
    };
    // attribute only
    assert_eq!(interval_of(Config::default())?.as_deref(), Some("every 1h"));
    // toml over attribute
    let c = from_toml(toml)?;
    assert_eq!(interval_of(c)?.as_deref(), Some("every 1m"));
    // json over toml
    let c = Config::builder()
        .toml("koan.toml", toml)?
        .json("appsettings.json", json)?
        .build();
    assert_eq!(interval_of(c)?.as_deref(), Some("every 2m"));
    // env over json, with the seed's short service key
    let c = Config::builder()
        .toml("koan.toml", toml)?
        .json("appsettings.json", json)?
        .env_vars([(
            "KOAN__BACKGROUND_SERVICES__SERVICES__DATA_CLEANUP__INTERVAL_SECONDS",
            "180",
        )])
        .build();
    assert_eq!(interval_of(c)?.as_deref(), Some("every 3m"));

    // Settings merge key by key across layers: retention from json, batch size from toml.
    let c = Config::builder()
        .toml("koan.toml", toml)?
        .json("appsettings.json", json)?
        .build();
    assert_eq!(
        c.get("koan.background_services.services.data_cleanup_service.settings"),
        Some(serde_json::json!({"retention_days": 14, "batch_size": 10}))
    );
    Ok(())
}

#[test]
fn env_disables_a_service_and_says_why() -> anyhow::Result<()> {
    let config = Config::builder()
        .json("appsettings.json", SEED_APPSETTINGS)?
        .env_vars([(
            "KOAN__BACKGROUND_SERVICES__SERVICES__TRANSLATION__ENABLED",
            "false",
        )])
        .build();
    let host = koan::Host::builder()
        .environment(Environment::DEVELOPMENT)
        .config(config)
        .service::<TranslationService>()
        .build()?;
    let variable = "KOAN__BACKGROUND_SERVICES__SERVICES__TRANSLATION__ENABLED";
    assert_disabled_by(&host, "TranslationService", variable)?;
    Ok(())
}

#[test]
fn a_bad_value_names_its_key_and_source() -> anyhow::Result<()> {
    let json = r#"{ "Koan": { "BackgroundServices": { "Services": {
        "DataCleanupService": { "IntervalSeconds": "soon" } } } } }"#;
    let err = refused::<DataCleanupService>(from_json(json)?, "bad interval");
    assert_eq!(err.kind(), ErrorKind::Config);
    let msg = err.to_string();
    assert!(
        msg.contains("Koan:BackgroundServices:Services:DataCleanupService:IntervalSeconds"),
        "{msg}"
    );
    assert!(msg.contains("appsettings.json"), "{msg}");
    assert!(msg.contains("whole number of seconds"), "{msg}");

    let env = Config::builder()
        .env_vars([("KOAN__BACKGROUND_SERVICES__STARTUP_TIMEOUT_SECONDS", "-3")])
        .build();
    let err = koan::Host::builder()
        .config(env)
        .build()
        .expect_err("bad timeout");
    assert!(
        err.to_string()
            .contains("environment variable KOAN__BACKGROUND_SERVICES__STARTUP_TIMEOUT_SECONDS"),
        "{err}"
    );

    let typo =
        from_toml("[background_services.services.DataCleanupService]\nintervall_seconds = 5\n")?;
    let err = refused::<DataCleanupService>(typo, "typo");
    assert!(
        err.to_string().contains("unknown configuration key"),
        "{err}"
    );
    assert!(err.to_string().contains("interval_seconds"), "{err}");

    let bad_settings = from_json(
        r#"{"Koan":{"BackgroundServices":{"Services":{"DataCleanupService":{"Settings":{"RetentionDays":"thirty"}}}}}}"#,
    )?;
    let err = refused::<DataCleanupService>(bad_settings, "bad settings");
    assert_eq!(err.kind(), ErrorKind::Config);
    // Named as the file wrote it, not as the field it matched.
    assert!(err.to_string().contains("at `RetentionDays`"), "{err}");
    assert!(err.to_string().contains("appsettings.json"), "{err}");
    Ok(())
}

#[test]
fn environment_gates_services() -> anyhow::Result<()> {
    // SystemHealthMonitor says run_in_testing = false.
    let host = koan::Host::builder()
        .environment(Environment::TESTING)
        .service::<SystemHealthMonitor>()
        .service::<TranslationService>()
        .build()?;
    assert_disabled_by(&host, "SystemHealthMonitor", "testing")?;
    assert_eq!(
        host.handle().status("TranslationService")?.state,
        ServiceState::Pending
    );

    let host = koan::Host::builder()
        .environment(Environment::PRODUCTION)
        .service::<SystemHealthMonitor>()
        .build()?;
    assert_eq!(
        host.handle().status("SystemHealthMonitor")?.state,
        ServiceState::Pending
    );
    assert_eq!("prod".parse::<Environment>()?, Environment::PRODUCTION);
    assert_eq!(
        "no way!".parse::<Environment>().map_err(|e| e.kind()),
        Err(ErrorKind::Config)
    );
    Ok(())
}

#[test]
fn global_switches_apply() -> anyhow::Result<()> {
    let config = from_toml("[background_services]\nenabled = false\n")?;
    let host = koan::Host::builder()
        .environment(Environment::DEVELOPMENT)
        .config(config)
        .service::<TranslationService>()
        .shutdown_grace(Duration::from_secs(1))
        .build()?;
    assert_disabled_by(&host, "TranslationService", "koan.toml")?;
    Ok(())
}

#[test]
fn environments_default_to_production_and_take_any_name() -> anyhow::Result<()> {
    assert_eq!(Environment::default(), Environment::PRODUCTION);
    let staging: Environment = "Staging".parse()?;
    assert_eq!(staging.as_str(), "staging");

    // Only in staging and production: not in development, yes in staging.
    let only = |env: Environment| -> anyhow::Result<ServiceState> {
        let host = koan::testing::host()
            .environment(env)
            .service::<StagingOnly>()
            .build()?;
        Ok(host.handle().status("StagingOnly")?.state)
    };
    assert_eq!(only(Environment::DEVELOPMENT)?, ServiceState::Disabled);
    assert_eq!(only(staging)?, ServiceState::Pending);
    assert_eq!(only(Environment::PRODUCTION)?, ServiceState::Pending);
    Ok(())
}

#[test]
fn the_dotnet_spelling_of_variables_is_read_and_unknown_sections_are_refused() -> anyhow::Result<()>
{
    let config = Config::builder()
        .env_vars([("Koan__BackgroundServices__Enabled", "false")])
        .build();
    let host = koan::testing::host()
        .config(config)
        .service::<StagingOnly>()
        .build()?;
    assert_eq!(
        host.handle().status("StagingOnly")?.state,
        ServiceState::Disabled,
        "Koan__ is read as KOAN__"
    );

    let typo = from_toml("[background_service]\nenabled = false\n")?;
    let e = koan::testing::host()
        .config(typo)
        .service::<StagingOnly>()
        .build()
        .expect_err("a section nothing reads");
    assert_eq!(e.kind(), ErrorKind::Config);
    assert!(
        e.message().contains("koan.background_service") && e.message().contains("koan.toml"),
        "{e}"
    );
    // An application's own section is declared.
    let own = from_toml("[my_app]\nanswer = 42\n")?;
    koan::testing::host()
        .config(own)
        .config_section("my_app")
        .service::<StagingOnly>()
        .build()?;
    Ok(())
}

#[koan::service(run_in = ["staging", "production"])]
#[derive(Default)]
struct StagingOnly;

impl koan::BackgroundService for StagingOnly {
    async fn run(&self, cx: koan::ServiceContext) -> Result<(), koan::BoxError> {
        cx.cancelled().await;
        Ok(())
    }
}

#[tokio::test]
async fn singleton_is_set_from_configuration_and_refused_where_it_means_nothing()
-> anyhow::Result<()> {
    let config =
        from_toml("[background_services.services.DataCleanupService]\nsingleton = true\n")?;
    let host = koan::testing::host()
        .config(config)
        .service::<DataCleanupService>()
        .build()?
        .start();
    let info = host.service("DataCleanupService").info().await?;
    assert!(info.singleton, "{info:?}");
    koan::testing::stop(&host).await?;

    let config = from_toml("[background_services.services.StagingOnly]\nsingleton = true\n")?;
    let e = koan::testing::host()
        .environment(Environment::new("staging")?)
        .config(config)
        .service::<StagingOnly>()
        .build()
        .expect_err("a background service cannot be a singleton");
    assert_eq!(e.kind(), ErrorKind::Config);
    assert!(
        e.message().contains("singleton") && e.message().contains("StagingOnly"),
        "{e}"
    );
    Ok(())
}
