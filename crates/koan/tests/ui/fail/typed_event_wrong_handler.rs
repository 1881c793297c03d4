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
    // The handler takes another type than the event's payload: it does not compile.
    let _sub = host
        .services::<Worker>()
        .on::<WorkCompleted>()
        .handle(|e: WorkFailed| async move { println!("{}", e.id) })
        .subscribe()
        .await?;
    Ok(())
}

fn main() {
    let _ = listen;
}
