//! Connections: a burst past the cap gets a fast 503 instead of silence (but a
//! request with the token, served from a reserve), and the
//! answers hyper writes itself (a malformed request, an oversized URI or head) carry
//! the same JSON error body as every other error.

use std::time::Duration;

use koan_http::HttpOptions;
use koan_test_support::http::{Api, error_message, loopback, serve_idle};
use koan_test_support::raw::{RawAnswer, exchange, head, read_answer};
use koan_test_support::{PATIENCE, within};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::task::JoinSet;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_burst_past_the_cap_is_answered_503_not_left_unanswered() -> anyhow::Result<()> {
    let options = HttpOptions {
        max_connections: 8,
        ..loopback()
    };
    let api = serve_idle(options).await?;
    let addr = api.server_addr();
    // Eight event streams hold every slot; their 200 proves they were taken in.
    let mut held = Vec::new();
    for _ in 0..8 {
        let mut c = TcpStream::connect(addr).await?;
        c.write_all(head("GET", "/api/events", &[]).as_bytes())
            .await?;
        let mut buf = [0u8; 12];
        within(
            "a stream's answer",
            tokio::io::AsyncReadExt::read_exact(&mut c, &mut buf),
        )
        .await??;
        assert_eq!(&buf, b"HTTP/1.1 200", "{}", String::from_utf8_lossy(&buf));
        held.push(c);
    }
    // A burst of 40: every one gets a quick 503 with a JSON body and `Connection: close`.
    let mut burst = JoinSet::new();
    for _ in 0..40 {
        let req = head("GET", "/health/live", &[]);
        burst.spawn(async move { exchange(addr, req.as_bytes(), Duration::from_secs(2)).await });
    }
    while let Some(r) = within("the burst's answers", burst.join_next()).await? {
        let a: RawAnswer = r??;
        assert_eq!(a.status, 503, "{a:?}");
        assert_eq!(a.header("connection"), Some("close"), "{a:?}");
        error_message(&a.json()?, "too_many_connections")?;
    }
    // Once the streams close, slots free and the server answers again.
    drop(held);
    within("a 200 after the streams closed", async {
        loop {
            let req = head("GET", "/health/live", &["Connection: close"]);
            let a = exchange(addr, req.as_bytes(), PATIENCE).await?;
            if a.status == 200 {
                return anyhow::Ok(());
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await??;
    api.stop().await
}

/// Sends `request` and expects hyper's refusal `status` with a JSON body of `kind`.
async fn refused(api: &Api, request: &[u8], status: u16, kind: &str) -> anyhow::Result<()> {
    let mut c = TcpStream::connect(api.server_addr()).await?;
    let _ = c.write_all(request).await;
    let a = read_answer(&mut c, PATIENCE).await?;
    assert_eq!(a.status, status, "{a:?}");
    assert_eq!(a.header("content-type"), Some("application/json"), "{a:?}");
    error_message(&a.json()?, kind)?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn errors_written_by_hyper_have_json_bodies() -> anyhow::Result<()> {
    let api = serve_idle(loopback()).await?;
    refused(&api, b"NOT HTTP AT ALL\r\n\r\n", 400, "bad_request").await?;
    refused(
        &api,
        b"GET /health HTTP/1.1\r\nHost: 127.0.0.1\r\nBad Header\r\n\r\n",
        400,
        "bad_request",
    )
    .await?;
    let long = format!(
        "GET /{} HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n",
        "a".repeat(70 * 1024)
    );
    refused(&api, long.as_bytes(), 414, "uri_too_long").await?;
    let big = format!(
        "GET /health/live HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Big: {}\r\n\r\n",
        "a".repeat(512 * 1024)
    );
    refused(&api, big.as_bytes(), 431, "request_header_fields_too_large").await?;
    let mut many = String::from("GET /health/live HTTP/1.1\r\nHost: 127.0.0.1\r\n");
    for i in 0..150 {
        many.push_str(&format!("X-H{i}: v\r\n"));
    }
    many.push_str("\r\n");
    refused(
        &api,
        many.as_bytes(),
        431,
        "request_header_fields_too_large",
    )
    .await?;
    // Ordinary answers are untouched, empty or not.
    let a = exchange(
        api.server_addr(),
        head("GET", "/health/live", &["Connection: close"]).as_bytes(),
        PATIENCE,
    )
    .await?;
    assert_eq!(a.status, 200, "{a:?}");
    let a = exchange(
        api.server_addr(),
        head("GET", "/nowhere", &["Connection: close"]).as_bytes(),
        PATIENCE,
    )
    .await?;
    assert_eq!(a.status, 404, "{a:?}");
    error_message(&a.json()?, "not_found")?;
    api.stop().await
}

/// Clients that ask and never read their answers (pipelined requests, a small
/// receive buffer) no longer hold their slots for ever: a write that makes no
/// progress for `write_timeout` ends the connection, and the server answers others
/// again. Before, with the cap taken so, every other client got 503 for as long as
/// the stalled ones stayed connected (a probe saw one still open after 300 s).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clients_that_never_read_their_answers_lose_their_slots() -> anyhow::Result<()> {
    let options = HttpOptions {
        max_connections: 2,
        write_timeout: Some(Duration::from_millis(500)),
        ..loopback()
    };
    let api = serve_idle(options).await?;
    let addr = api.server_addr();
    let req = head("GET", "/api/openapi.json", &["Connection: close"]);
    let one = exchange(addr, req.as_bytes(), PATIENCE).await?.body.len();
    let mut stalled = Vec::new();
    for _ in 0..2 {
        let socket = tokio::net::TcpSocket::new_v4()?;
        socket.set_recv_buffer_size(4096)?;
        let mut c = socket.connect(addr).await?;
        let one = head("GET", "/api/openapi.json", &[]);
        c.write_all(one.repeat(200).as_bytes()).await?;
        stalled.push(c);
    }
    // Each stalled client's write deadline frees its slot; nothing here reads them.
    within("a 200 while the stalled clients stay connected", async {
        loop {
            let req = head("GET", "/health/live", &["Connection: close"]);
            let a = exchange(addr, req.as_bytes(), PATIENCE).await?;
            if a.status == 200 {
                return anyhow::Ok(());
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    })
    .await??;
    // Read now, each stalled connection ends (closed by the server) before all of
    // its 200 answers came: kept open, it would give them all and then wait.
    for mut c in stalled {
        let mut got = Vec::new();
        let end = within("the stalled connection's end", c.read_to_end(&mut got)).await?;
        let reset = end.is_err();
        assert!(got.len() < 200 * one, "{} bytes, reset {reset}", got.len());
    }
    api.stop().await
}

/// With a token configured, connections that hold every slot without it do not
/// lock the operator out: past the cap, a request that carries the token is served
/// (in a small reserve), one without it is refused as before. Before, 1,030
/// keep-alive connections asking `/health/live` made every operator call a 503
/// (found by a probe).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn past_the_cap_a_request_with_the_token_is_still_served() -> anyhow::Result<()> {
    let options = HttpOptions {
        max_connections: 4,
        ..loopback().with_token("s3cret-token")
    };
    let api = serve_idle(options).await?;
    let addr = api.server_addr();
    // Four keep-alive connections, each answered once, hold every slot.
    let mut held = Vec::new();
    for _ in 0..4 {
        let mut c = TcpStream::connect(addr).await?;
        c.write_all(head("GET", "/health/live", &[]).as_bytes())
            .await?;
        let a = read_answer(&mut c, PATIENCE).await?;
        assert_eq!(a.status, 200, "{a:?}");
        held.push(c);
    }
    let without = head("GET", "/api/jobs", &["Connection: close"]);
    let a = exchange(addr, without.as_bytes(), PATIENCE).await?;
    assert_eq!(a.status, 503, "{a:?}");
    error_message(&a.json()?, "too_many_connections")?;
    let wrong = head(
        "GET",
        "/api/jobs",
        &["Authorization: Bearer not-it", "Connection: close"],
    );
    assert_eq!(
        exchange(addr, wrong.as_bytes(), PATIENCE).await?.status,
        503
    );
    // The token's holder gets in, on a keep-alive connection, twice.
    let mut c = TcpStream::connect(addr).await?;
    for _ in 0..2 {
        let with = head("GET", "/api/jobs", &["Authorization: Bearer s3cret-token"]);
        c.write_all(with.as_bytes()).await?;
        let a = read_answer(&mut c, PATIENCE).await?;
        assert_eq!(a.status, 200, "{a:?}");
    }
    drop(held);
    api.stop().await
}
