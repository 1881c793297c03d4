//! Run with: `cargo run -p koan --example my_first_service`
//!
//! The seed's "Create Your First Service": a background service with a heartbeat on a
//! timer, discovered without registration (`Host::builder().discover()`, the seed's
//! `AddKoan()`). The example stops the host after three heartbeats.

use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use koan::{BackgroundService, BoxError, Host, ServiceContext};

/// `[KoanBackgroundService] public class MyFirstService : KoanBackgroundServiceBase`
#[koan::service]
#[derive(Default)]
struct MyFirstService {
    heartbeats: AtomicU32,
}

impl BackgroundService for MyFirstService {
    async fn run(&self, cx: ServiceContext) -> Result<(), BoxError> {
        tracing::info!("My first Koan background service is running!");
        // The seed's `PeriodicTimer` loop (one minute there, 200 ms here).
        while cx.sleep(Duration::from_millis(200)).await {
            let n = self.heartbeats.fetch_add(1, Ordering::Relaxed) + 1;
            tracing::info!(heartbeat = n, time = %chrono_free_now(), "service heartbeat");
        }
        Ok(())
    }
}

fn chrono_free_now() -> String {
    let secs = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    format!("{secs}s since the epoch")
}

#[tokio::main]
async fn main() -> Result<(), koan::Error> {
    tracing_subscriber::fmt().with_target(false).init();
    let host = Host::builder().discover().build()?.start();
    host.started().await?;
    // Let it beat a few times.
    tokio::time::sleep(Duration::from_millis(700)).await;
    println!("MyFirstService: {}", host.status("MyFirstService")?.state);
    host.shutdown();
    host.wait().await.into_result()
}
