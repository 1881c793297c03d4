//! A service's settings are read as written: a field is found whatever the case
//! and separators of its key (the seed's PascalCase `appsettings.json`), while a
//! map's keys are data, kept as written. Before, every key was made snake_case
//! first: `"pt-BR"` arrived as `pt_br` and `"EN"` as `en`, and a struct renamed
//! `PascalCase` read none of its fields (a probe).

use std::collections::BTreeMap;

use koan::service::{BuildContext, FromContext};
use koan::{BackgroundService, BoxError, ServiceContext, config::Config};
use serde::Deserialize;

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct TranslationSettings {
    retention_days: u32,
    rates: BTreeMap<String, f64>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default, rename_all = "PascalCase")]
struct PascalSettings {
    retention_days: u32,
}

#[koan::service]
struct Translation {
    settings: TranslationSettings,
    pascal: PascalSettings,
}

impl FromContext for Translation {
    fn from_context(cx: &BuildContext<'_>) -> koan::Result<Self> {
        Ok(Translation {
            settings: cx.settings()?,
            pascal: cx.settings()?,
        })
    }
}

impl BackgroundService for Translation {
    async fn run(&self, cx: ServiceContext) -> Result<(), BoxError> {
        cx.cancelled().await;
        Ok(())
    }
}

#[tokio::test]
async fn settings_fields_match_any_spelling_and_map_keys_stay_as_written() -> anyhow::Result<()> {
    let seed = r#"{"Koan": {"BackgroundServices": {"Services": {"Translation": {"Settings": {
        "RetentionDays": 30,
        "Rates": {"pt-BR": 1.5, "EN": 2.0, "Foo_Bar": 3.0}
    }}}}}}"#;
    let config = Config::builder().json("appsettings.json", seed)?.build();
    let host = koan::testing::host()
        .config(config)
        .service::<Translation>()
        .build()?
        .start();
    host.started().await?;
    let t = host.services::<Translation>().instance()?;
    assert_eq!(t.settings.retention_days, 30);
    let keys: Vec<&str> = t.settings.rates.keys().map(String::as_str).collect();
    assert_eq!(keys, ["EN", "Foo_Bar", "pt-BR"]);
    assert_eq!(
        t.pascal.retention_days, 30,
        "a PascalCase struct reads its field"
    );
    koan::testing::stop(&host).await?;
    Ok(())
}
