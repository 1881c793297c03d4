//! Typed callers compile under strict lints, for a private service with a private
//! parameter type, a public one, a name given as `Self::` constant, and a handler
//! marked `#[koan::action]`.
#![deny(warnings, missing_docs, unreachable_pub, rust_2018_idioms)]

mod private {
    use koan::{BackgroundService, BoxError, ServiceContext};

    #[derive(serde::Serialize, serde::Deserialize, schemars::JsonSchema)]
    struct Secret {
        value: u32,
    }

    #[koan::service]
    #[derive(Default)]
    struct Hidden;

    impl Hidden {
        const DOUBLE: &'static str = "double";
    }

    #[koan::actions]
    impl Hidden {
        #[action(Self::DOUBLE)]
        async fn double(&self, s: Secret) -> u32 {
            s.value * 2
        }

        // The attribute written with its crate's path reads the same.
        #[koan::action("triple")]
        async fn triple(&self, s: Secret) -> u32 {
            s.value * 3
        }
    }

    impl BackgroundService for Hidden {
        async fn run(&self, cx: ServiceContext) -> Result<(), BoxError> {
            cx.cancelled().await;
            Ok(())
        }
    }

    pub(crate) async fn call(host: &koan::HostHandle) -> koan::Result<u32> {
        host.services::<Hidden>().double(Secret { value: 2 }).execute().await
    }
}

/// A public service.
pub mod public {
    use koan::{BackgroundService, BoxError, ServiceContext};

    /// A public service.
    #[koan::service]
    #[derive(Default)]
    pub struct Open;

    #[koan::actions]
    impl Open {
        #[action]
        async fn ping(&self) -> String {
            "pong".to_owned()
        }
    }

    impl BackgroundService for Open {
        async fn run(&self, cx: ServiceContext) -> Result<(), BoxError> {
            cx.cancelled().await;
            Ok(())
        }
    }
}

use public::OpenActions as _;

async fn calls(host: koan::HostHandle) -> koan::Result<(u32, String)> {
    let doubled = private::call(&host).await?;
    let pong = host.services::<public::Open>().ping().execute().await?;
    Ok((doubled, pong))
}

fn main() {
    let _ = calls;
}
