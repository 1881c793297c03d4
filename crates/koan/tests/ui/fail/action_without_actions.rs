#[koan::service]
#[derive(Default)]
struct Worker;

impl koan::BackgroundService for Worker {
    async fn run(&self, cx: koan::ServiceContext) -> Result<(), koan::BoxError> {
        cx.cancelled().await;
        Ok(())
    }
}

// Without `#[koan::actions]` above the block: written `#[koan::action]` (or imported),
// the attribute says what is missing; written bare, the compiler finds no such
// attribute.
impl Worker {
    #[koan::action("go")]
    async fn go(&self, a: u32) -> u32 {
        a
    }

    #[action("stop")]
    async fn stop(&self, a: u32) -> u32 {
        a
    }
}

fn main() {}
