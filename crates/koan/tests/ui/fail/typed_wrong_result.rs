use koan::{ActionContext, BackgroundService, BoxError, ServiceContext};

#[derive(serde::Serialize, serde::Deserialize, schemars::JsonSchema)]
struct TranslationOptions {
    file_id: String,
    to: String,
}

#[koan::service]
#[derive(Default)]
struct TranslationService;

#[koan::actions]
impl TranslationService {
    #[action("translate")]
    async fn translate(&self, opts: TranslationOptions, _cx: &ActionContext) -> Result<String, BoxError> {
        Ok(format!("{}.{}", opts.file_id, opts.to))
    }
}

impl BackgroundService for TranslationService {
    async fn run(&self, cx: ServiceContext) -> Result<(), BoxError> {
        cx.cancelled().await;
        Ok(())
    }
}

fn opts() -> TranslationOptions {
    TranslationOptions { file_id: "file.txt".into(), to: "pt-BR".into() }
}

async fn call(host: koan::HostHandle) -> koan::Result<()> {
    let pages: u32 = host.services::<TranslationService>().translate(opts()).execute().await?;
    println!("{pages}");
    Ok(())
}

fn main() {
    let _ = call;
}