#[koan::service]
#[derive(Default)]
struct Worker;

impl koan::BackgroundService for Worker {
    async fn run(&self, _cx: koan::ServiceContext) -> Result<(), koan::BoxError> {
        Ok(())
    }
}

#[koan::actions]
impl Worker {
    #[action("", description = "nameless")]
    async fn go(&self) {}

    #[action("stop", name = "halt")]
    async fn stop(&self) {}
}

fn main() {}
