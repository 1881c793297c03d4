//! Settings a service cannot do without: `BuildContext::required_settings` refuses
//! to build the service when the configuration gives none, naming the section to
//! write; `settings` took `S::default()` then, and a service of an upgrade whose new
//! field (a currency) had no sensible default started with an empty one (found by a
//! probe). Given, they are read as `settings` reads them.

use koan::service::{BuildContext, FromContext};
use koan::{BackgroundService, BoxError, ServiceContext, config::Config, error::ErrorKind};
use serde::Deserialize;

#[derive(Debug, Deserialize)]
struct BillingSettings {
    currency: String,
}

#[koan::service]
struct Billing {
    settings: BillingSettings,
}

impl FromContext for Billing {
    fn from_context(cx: &BuildContext<'_>) -> koan::Result<Self> {
        Ok(Billing {
            settings: cx.required_settings()?,
        })
    }
}

impl BackgroundService for Billing {
    async fn run(&self, cx: ServiceContext) -> Result<(), BoxError> {
        cx.cancelled().await;
        Ok(())
    }
}

fn toml(text: &str) -> anyhow::Result<Config> {
    Ok(Config::builder().toml("koan.toml", text)?.build())
}

#[tokio::test]
async fn required_settings_absent_are_refused_and_given_are_read() -> anyhow::Result<()> {
    let refused = koan::testing::host()
        .config(toml("")?)
        .service::<Billing>()
        .build()
        .expect_err("no settings");
    assert_eq!(refused.kind(), ErrorKind::Config, "{refused}");
    let said = refused.message();
    assert!(
        said.contains("service `Billing` needs its settings")
            && said.contains("[koan.background_services.services.Billing.settings]"),
        "{said}"
    );

    let missing = koan::testing::host()
        .config(toml(
            "[koan.background_services.services.Billing.settings]\nother = 1\n",
        )?)
        .service::<Billing>()
        .build()
        .expect_err("no currency");
    assert!(missing.message().contains("currency"), "{missing}");

    let host = koan::testing::host()
        .config(toml(
            "[koan.background_services.services.Billing.settings]\ncurrency = \"EUR\"\n",
        )?)
        .service::<Billing>()
        .build()?
        .start();
    host.started().await?;
    let billing = host.services::<Billing>().instance()?;
    assert_eq!(billing.settings.currency, "EUR");
    koan::testing::stop(&host).await?;
    Ok(())
}
