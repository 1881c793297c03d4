mod translation {
    use koan::{BackgroundService, BoxError, ServiceContext};

    #[koan::service]
    #[derive(Default)]
    pub struct TranslationService;

    #[koan::actions]
    impl TranslationService {
        #[action("check-queue")]
        async fn pending(&self) -> u32 {
            0
        }
    }

    impl BackgroundService for TranslationService {
        async fn run(&self, cx: ServiceContext) -> Result<(), BoxError> {
            cx.cancelled().await;
            Ok(())
        }
    }
}

async fn call(host: koan::HostHandle) -> koan::Result<u32> {
    host.services::<translation::TranslationService>().pending().execute().await
}

fn main() {
    let _ = call;
}
