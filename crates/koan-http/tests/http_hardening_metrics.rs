//! Metrics a caller cannot inflate, and losses that are counted: labels of
//! `koan_actions_total` come only from declared names (a made-up action is
//! `<unknown>`), and events dropped for a slow event-stream client are counted in
//! `koan_sse_dropped_total`.

use std::time::Duration;

use koan_test_support::http::{Api, EchoService, call, loopback};
use koan_test_support::raw::head;
use koan_test_support::within;
use reqwest::StatusCode;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

async fn start() -> anyhow::Result<Api> {
    koan_http::install_metrics();
    let host = koan::testing::host()
        .service::<EchoService>()
        .build()?
        .start();
    Api::serve(host, loopback()).await
}

async fn scrape(api: &Api) -> anyhow::Result<String> {
    let resp = within("/metrics", api.get("/metrics").send()).await??;
    assert_eq!(resp.status(), StatusCode::OK);
    Ok(within("/metrics body", resp.text()).await??)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn made_up_action_names_do_not_become_metric_labels() -> anyhow::Result<()> {
    let api = start().await?;
    let before = scrape(&api).await?.len();
    for i in 0..50 {
        let name = format!("made-up-{i}-{}", "x".repeat(2000));
        let (status, body) = call(
            api.post(&format!("/api/services/echo/actions/{name}"))
                .json(&serde_json::json!({})),
        )
        .await?;
        assert_eq!(status, StatusCode::NOT_FOUND, "{body}");
        let (status, body) = call(
            api.post(&format!("/api/services/made-up-{i}/actions/{name}"))
                .json(&serde_json::json!({})),
        )
        .await?;
        assert_eq!(status, StatusCode::NOT_FOUND, "{body}");
    }
    let text = scrape(&api).await?;
    assert!(!text.contains("made-up-"), "a caller's name became a label");
    let unknown = text
        .lines()
        .find(|l| {
            l.starts_with("koan_actions_total{")
                && l.contains("action=\"<unknown>\"")
                && l.contains("service=\"Echo\"")
                && l.contains("outcome=\"unknown_action\"")
        })
        .ok_or_else(|| anyhow::anyhow!("no <unknown> series in:\n{text}"))?;
    assert!(unknown.ends_with(" 50"), "{unknown}");
    // 100 calls with 2 KB names grew the scrape by a few lines at most.
    assert!(
        text.len() < before + 4096,
        "{} → {} bytes",
        before,
        text.len()
    );
    api.stop().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn events_dropped_for_a_slow_stream_client_are_counted() -> anyhow::Result<()> {
    let api = start().await?;
    let text = scrape(&api).await?;
    assert!(
        text.contains("koan_sse_dropped_total 0"),
        "not shown at 0:\n{text}"
    );
    // A client that opens a stream and never reads it.
    let mut stuck = TcpStream::connect(api.server_addr()).await?;
    stuck
        .write_all(head("GET", "/api/events", &[]).as_bytes())
        .await?;
    let mut status = [0u8; 12];
    within("the stream's answer", stuck.read_exact(&mut status)).await??;
    assert_eq!(&status, b"HTTP/1.1 200");
    // Large events until the socket buffers and the stream's queue are full.
    let payload = "e".repeat(16 * 1024);
    let dropped = within("a dropped event to be counted", async {
        loop {
            for _ in 0..200 {
                api.host.emit("Echo", "big", payload.clone()).await?;
            }
            let text = scrape(&api).await?;
            let n = text
                .lines()
                .find_map(|l| l.strip_prefix("koan_sse_dropped_total "))
                .and_then(|v| v.trim().parse::<f64>().ok())
                .unwrap_or(0.0);
            if n > 0.0 {
                return anyhow::Ok(n);
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await??;
    assert!(dropped >= 1.0);
    drop(stuck);
    api.stop().await
}
