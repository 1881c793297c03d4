use koan::BackgroundService;

#[koan::service]
#[derive(Default)]
struct Worker;

impl BackgroundService for Worker {
    async fn run(&self, cx: koan::ServiceContext) -> Result<(), koan::BoxError> {
        cx.cancelled().await;
        Ok(())
    }
}

#[koan::actions]
impl Worker {
    #[action("go")]
    async fn go(&self, a: u32) -> u32 {
        a
    }
}

#[koan::actions]
impl Worker {
    #[action("stop")]
    async fn stop(&self, a: u32) -> u32 {
        a
    }
}

fn main() {}
