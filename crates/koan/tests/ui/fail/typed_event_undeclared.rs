use koan::{BackgroundService, BoxError, ServiceContext};

#[derive(Clone, serde::Serialize, serde::Deserialize, schemars::JsonSchema, koan::Event)]
struct WorkCompleted {
    id: u32,
}

#[derive(Clone, serde::Serialize, serde::Deserialize, schemars::JsonSchema, koan::Event)]
struct WorkFailed {
    id: u32,
}

#[koan::service(event(WorkCompleted))]
#[derive(Default)]
struct Worker;

impl BackgroundService for Worker {
    async fn run(&self, cx: ServiceContext) -> Result<(), BoxError> {
        cx.cancelled().await;
        Ok(())
    }
}

async fn listen(host: koan::HostHandle) -> koan::Result<()> {
    // `Worker` never declared `WorkFailed`: subscribing to it does not compile.
    let _sub = host
        .services::<Worker>()
        .on::<WorkFailed>()
        .handle(|e: WorkFailed| async move { println!("{}", e.id) })
        .subscribe()
        .await?;
    Ok(())
}

fn main() {
    let _ = listen;
}
