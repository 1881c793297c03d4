use koan::{BackgroundService, BoxError, ServiceContext};

#[koan::service]
struct NeedsPool {
    _pool: std::sync::Arc<String>,
}

impl BackgroundService for NeedsPool {
    async fn run(&self, _cx: ServiceContext) -> Result<(), BoxError> {
        Ok(())
    }
}

fn main() {}
