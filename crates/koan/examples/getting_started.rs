//! Run with: `cargo run -p koan --example getting_started` (Ctrl-C stops it), then
//! `curl -s localhost:8090/api/services` or
//! `curl -s -X POST localhost:8090/api/services/Orders/actions/place -H 'content-type: application/json' -d '{"item":"tea","total":120}'`.
//! Its test: `cargo test -p koan --example getting_started`.
//!
//! The program of docs/guide.md, whole: a startup gate, a periodic service, a
//! service with two actions and an event, a subscriber that takes one filtered
//! event, typed calls, the HTTP control plane and Ctrl-C. With `--once` it makes its
//! calls, asks its own HTTP server for `/health`, and stops.

use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use koan::{
    ActionContext, BackgroundService, BoxError, Host, HostHandle, PeriodicService, ServiceContext,
    StartupService,
};
use serde::{Deserialize, Serialize};

/// Runs before every other service; the host starts nothing else until it is done.
#[koan::service(startup, order = 1, timeout = "10s")]
#[derive(Default)]
struct WarmUp;

impl StartupService for WarmUp {
    async fn run(&self, _cx: ServiceContext) -> Result<(), BoxError> {
        tracing::info!("caches warmed");
        Ok(())
    }
}

/// Runs every 30 seconds, and once at start.
#[koan::service(every = "30s", run_on_startup)]
#[derive(Default)]
struct Cleanup {
    runs: AtomicU32,
}

impl PeriodicService for Cleanup {
    async fn tick(&self, _cx: ServiceContext) -> Result<(), BoxError> {
        let n = self.runs.fetch_add(1, Ordering::Relaxed) + 1;
        tracing::info!(run = n, "old rows deleted");
        Ok(())
    }
}

/// What `place` takes (its JSON schema is in `/api/services/Orders`).
#[derive(Debug, Clone, Serialize, Deserialize, schemars::JsonSchema)]
struct NewOrder {
    item: String,
    total: u32,
}

/// The event `place` emits; its name is the type's (`OrderPlaced`).
#[derive(Debug, Clone, Serialize, Deserialize, schemars::JsonSchema, koan::Event)]
struct OrderPlaced {
    id: u32,
    item: String,
    total: u32,
}

#[koan::service(event(OrderPlaced))]
#[derive(Default)]
struct Orders {
    next_id: AtomicU32,
}

#[koan::actions]
impl Orders {
    /// Places an order and announces it.
    #[action("place", description = "Place an order")]
    async fn place(&self, order: NewOrder, cx: &ActionContext) -> Result<u32, BoxError> {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed) + 1;
        cx.emit_event(OrderPlaced {
            id,
            item: order.item,
            total: order.total,
        })
        .await;
        Ok(id)
    }

    /// Cancels an order by id.
    #[action("cancel", description = "Cancel an order")]
    async fn cancel(&self, id: u32, _cx: &ActionContext) -> Result<String, BoxError> {
        if id > self.next_id.load(Ordering::Relaxed) {
            return Err(format!("no order {id}").into());
        }
        Ok(format!("order {id} cancelled"))
    }
}

impl BackgroundService for Orders {
    async fn run(&self, cx: ServiceContext) -> Result<(), BoxError> {
        cx.cancelled().await;
        Ok(())
    }
}

/// The calls the program makes: typed, so a misspelled action or a wrong parameter
/// or result type does not compile. Returns the first big order's id, as seen by a
/// subscriber that takes one event whose total is at least 100.
async fn place_orders(host: &HostHandle) -> Result<u32, BoxError> {
    let orders = host.services::<Orders>();
    let (big_tx, big_rx) = tokio::sync::oneshot::channel();
    let big_tx = std::sync::Mutex::new(Some(big_tx));
    let _big_orders = orders
        .on::<OrderPlaced>()
        .filter(|o: &OrderPlaced| o.total >= 100)
        .once()
        .handle(move |o: OrderPlaced| {
            if let Some(tx) = big_tx.lock().ok().and_then(|mut t| t.take()) {
                let _ = tx.send(o.id);
            }
            async {}
        })
        .subscribe()
        .await?;

    for (item, total) in [("tea", 12), ("teapot", 140), ("cups", 180)] {
        let id: u32 = orders
            .place(NewOrder {
                item: item.into(),
                total,
            })
            .priority(5)
            .timeout(Duration::from_secs(5))
            .execute()
            .await?;
        println!("placed order {id}: {item} for {total}");
    }
    let said: String = orders.cancel(1).execute().await?;
    println!("{said}");
    Ok(big_rx.await?)
}

#[tokio::main]
async fn main() -> Result<(), BoxError> {
    tracing_subscriber::fmt().with_target(false).init();
    let once = std::env::args().any(|a| a == "--once");

    let host = Host::builder().discover().build()?.start();
    let bind = if once {
        "127.0.0.1:0"
    } else {
        "127.0.0.1:8090"
    };
    let http = koan_http::serve(
        host.clone(),
        koan_http::HttpOptions::load()?.with_bind(bind.parse()?),
    )
    .await?;
    println!("control plane on http://{}", http.local_addr());
    host.started().await?;

    let big = place_orders(&host).await?;
    println!("first order of 100 or more: {big}");

    if once {
        println!("GET /health: {}", get(http.local_addr(), "/health").await?);
        host.shutdown();
        host.wait().await.into_result()?;
    } else {
        // Ctrl-C (or SIGTERM) stops the host within its grace; so does the
        // control plane's shutdown.
        host.run_until_signal().await?;
    }
    http.wait().await?;
    Ok(())
}

/// A one-request HTTP/1.1 client (enough for the example; use a real one in code).
async fn get(addr: std::net::SocketAddr, path: &str) -> std::io::Result<String> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut stream = tokio::net::TcpStream::connect(addr).await?;
    let request = format!("GET {path} HTTP/1.1\r\nhost: {addr}\r\nconnection: close\r\n\r\n");
    stream.write_all(request.as_bytes()).await?;
    let mut answer = String::new();
    stream.read_to_string(&mut answer).await?;
    Ok(answer.lines().next().unwrap_or_default().to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// On tokio's paused clock: an hour of schedule passes at once, and nothing sleeps.
    #[tokio::test(start_paused = true)]
    async fn cleanup_runs_on_schedule_and_orders_announce_big_ones() -> Result<(), BoxError> {
        let host = koan::testing::host()
            .service::<WarmUp>()
            .service::<Cleanup>()
            .service::<Orders>()
            .build()?
            .start();
        host.started().await?;

        // Once at start, then every 30 s: 1 + 120 runs in an hour.
        koan::testing::advance(Duration::from_secs(3600)).await;
        let status = koan::testing::wait_runs(&host, "Cleanup", 121).await;
        assert_eq!(status.runs, 121);
        assert_eq!(
            host.services::<Cleanup>()
                .instance()?
                .runs
                .load(Ordering::Relaxed),
            121
        );

        assert_eq!(
            place_orders(&host).await?,
            2,
            "the teapot is the first big order"
        );

        koan::testing::stop(&host).await?;
        Ok(())
    }
}
