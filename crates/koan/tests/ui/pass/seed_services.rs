use koan::{ActionContext, BackgroundService, BoxError, PeriodicService, ServiceContext, StartupService};

#[derive(Clone, serde::Serialize, serde::Deserialize, schemars::JsonSchema)]
struct TranslationOptions {
    file_id: String,
    to: String,
}

#[koan::service(critical, restart = "always", max_concurrency = 4, event(name = "Done", payload = TranslationOptions))]
#[derive(Default)]
struct TranslationService;

#[koan::actions]
impl TranslationService {
    #[action("translate", description = "Translate a file")]
    async fn translate(&self, opts: TranslationOptions, _cx: &ActionContext) -> Result<String, BoxError> {
        Ok(opts.to)
    }

    #[action(koan::well_known::actions::translation::CHECK_QUEUE)]
    async fn check(&self) {}
}

impl BackgroundService for TranslationService {
    async fn run(&self, cx: ServiceContext) -> Result<(), BoxError> {
        cx.cancelled().await;
        Ok(())
    }
}

#[koan::service(cron = "0 */5 * * * *", initial_delay = "10s", missed_ticks = "catch-up-once", priority = -5)]
#[derive(Default)]
struct Cleanup;

impl PeriodicService for Cleanup {
    async fn tick(&self, _cx: ServiceContext) -> Result<(), BoxError> {
        Ok(())
    }
}

#[koan::service(order = 1, continue_on_failure, timeout = "1m 30s", run_in_testing = false)]
#[derive(Default)]
struct Migration;

impl StartupService for Migration {
    async fn run(&self, _cx: ServiceContext) -> Result<(), BoxError> {
        Ok(())
    }
}

fn main() {
    let _ = koan::Host::builder().discover();
}
