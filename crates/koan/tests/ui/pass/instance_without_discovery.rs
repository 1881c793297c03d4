//! A service with a field the host cannot fill: out of discovery, added built.

use koan::{BackgroundService, BoxError, ServiceContext};

#[koan::service(discover = false, critical)]
struct NeedsPool {
    pool: std::sync::Arc<String>,
}

impl BackgroundService for NeedsPool {
    async fn run(&self, cx: ServiceContext) -> Result<(), BoxError> {
        let _ = &self.pool;
        cx.cancelled().await;
        Ok(())
    }
}

fn main() {
    let pool = std::sync::Arc::new(String::from("postgres://"));
    let _builder = koan::Host::builder().instance(NeedsPool { pool }).discover();
}
