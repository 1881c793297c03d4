//! `/metrics` costs the host the same however many scrape it (the route is open):
//! at most 16 scrapes in flight, from their request until their answer is sent,
//! and one more is told to retry. Each scrape had its own render, held until its
//! client had read it: 100 slow readers of a host of 10,000 services took it to
//! 1.14 GB, and 350 to its end (found by a tester).

use koan_test_support::http::{Api, EchoService, header};
use koan_test_support::raw::head;
use koan_test_support::within;
use reqwest::StatusCode;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};

/// The scrapes in flight at most (the route table in koan-http's docs).
const MAX_SCRAPES: usize = 16;

async fn start() -> anyhow::Result<Api> {
    assert!(
        koan_http::install_metrics(),
        "another recorder was installed first"
    );
    // 8 MB of series: a scrape larger than a socket holds, so that a client that
    // reads nothing keeps its scrape in flight.
    for i in 0..2000 {
        let pad = format!("{i}-{}", "p".repeat(4000));
        metrics::counter!("koan_test_padding", "pad" => pad).increment(1);
    }
    let host = koan::testing::host()
        .service::<EchoService>()
        .build()?
        .start();
    Api::open(host).await
}

/// A scrape whose client reads the answer's status line, then nothing.
async fn stuck_scrape(api: &Api) -> anyhow::Result<TcpStream> {
    let socket = TcpSocket::new_v4()?;
    socket.set_recv_buffer_size(4096)?;
    let mut stream = socket.connect(api.server_addr()).await?;
    stream
        .write_all(head("GET", "/metrics", &[]).as_bytes())
        .await?;
    let mut status = [0u8; 12];
    within("the scrape's answer", stream.read_exact(&mut status)).await??;
    anyhow::ensure!(&status == b"HTTP/1.1 200", "{status:?}");
    Ok(stream)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scrapes_beyond_the_cap_are_told_to_retry() -> anyhow::Result<()> {
    let api = start().await?;
    let mut stuck = Vec::new();
    for _ in 0..MAX_SCRAPES {
        stuck.push(stuck_scrape(&api).await?);
    }
    let resp = within("one scrape more", api.get("/metrics").send()).await??;
    assert_eq!(resp.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(header(resp.headers(), "retry-after"), Some("1"));
    let body: serde_json::Value = resp.json().await?;
    assert_eq!(body["error"], "too_many_scrapes", "{body}");

    // Their clients leave: their places come back, and a scrape is sent the
    // whole text.
    drop(stuck);
    let text = within("a place among the scrapes", async {
        loop {
            let (status, text) = {
                let resp = api.get("/metrics").send().await?;
                (resp.status(), resp.text().await?)
            };
            if status == StatusCode::OK {
                return anyhow::Ok(text);
            }
            tokio::time::sleep(std::time::Duration::from_millis(5)).await;
        }
    })
    .await??;
    assert!(text.contains("koan_test_padding{pad=\"1999-pp"));
    assert!(
        text.contains("koan_service_up{service=\"Echo\"} 1"),
        "{:.200}",
        text
    );
    api.stop().await
}
