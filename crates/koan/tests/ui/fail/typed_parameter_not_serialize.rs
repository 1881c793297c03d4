use koan::{BackgroundService, BoxError, ServiceContext};

/// Deserialize only: callable by name from JSON, not from Rust.
#[derive(serde::Deserialize, schemars::JsonSchema)]
struct Upload {
    file_id: String,
}

#[koan::service]
#[derive(Default)]
struct Uploads;

#[koan::actions]
impl Uploads {
    #[action("upload")]
    async fn upload(&self, u: Upload) -> String {
        u.file_id
    }
}

impl BackgroundService for Uploads {
    async fn run(&self, cx: ServiceContext) -> Result<(), BoxError> {
        cx.cancelled().await;
        Ok(())
    }
}

async fn call(host: koan::HostHandle) -> koan::Result<String> {
    let upload = Upload { file_id: "a.txt".into() };
    host.services::<Uploads>().upload(upload).execute().await
}

fn main() {
    let _ = call;
}
