//! Limits that keep slow, idle or oversized clients from holding the server: the
//! header-read timeout, the connection cap, hyper's header limits, and the token kept
//! out of `Debug`. (A burst past the cap: `http_hardening_conn.rs`.)

use std::time::Duration;

use koan::config::Config;
use koan_http::HttpOptions;
use koan_test_support::http::{Api, call, loopback, serve_idle};
use koan_test_support::within;
use reqwest::StatusCode;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// Serves an idle host whose header-read timeout is `ms` milliseconds.
async fn serve_with_header_timeout(ms: u64) -> anyhow::Result<Api> {
    let options = HttpOptions {
        header_read_timeout: Some(Duration::from_millis(ms)),
        ..loopback()
    };
    serve_idle(options).await
}

/// Reads until the server closes the connection; returns what it sent.
async fn read_until_closed(stream: &mut TcpStream) -> anyhow::Result<Vec<u8>> {
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        match within("the server to close the connection", stream.read(&mut buf)).await? {
            Ok(0) | Err(_) => return Ok(got),
            Ok(n) => got.extend_from_slice(&buf[..n]),
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_connection_that_sends_nothing_is_closed_without_an_answer() -> anyhow::Result<()> {
    let api = serve_with_header_timeout(200).await?;
    let mut silent = TcpStream::connect(api.server_addr()).await?;
    let got = read_until_closed(&mut silent).await?;
    // hyper closes a connection that never started a request without writing.
    assert!(got.is_empty(), "{}", String::from_utf8_lossy(&got));
    api.stop().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_sending_its_headers_byte_by_byte_is_cut_off() -> anyhow::Result<()> {
    let api = serve_with_header_timeout(300).await?;
    let stream = TcpStream::connect(api.server_addr()).await?;
    let (mut rd, mut wr) = stream.into_split();
    // A request head that never ends, one byte at a time.
    let trickle = tokio::spawn(async move {
        let head = b"GET /health HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Slow: ";
        for b in head.iter().copied().chain(std::iter::repeat(b'a')) {
            if wr.write_all(&[b]).await.is_err() {
                return;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    });
    let mut got = Vec::new();
    let mut buf = [0u8; 1024];
    loop {
        match within("the server to cut the slow client off", rd.read(&mut buf)).await? {
            Ok(0) | Err(_) => break,
            Ok(n) => got.extend_from_slice(&buf[..n]),
        }
    }
    trickle.abort();
    let text = String::from_utf8_lossy(&got);
    assert!(
        !text.contains("200 OK"),
        "the slow request was served: {text}"
    );
    // The server still answers others.
    let (status, _) = call(api.get("/health/live")).await?;
    assert_eq!(status, StatusCode::OK);
    api.stop().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_idle_keep_alive_connection_is_closed_after_the_timeout() -> anyhow::Result<()> {
    let api = serve_with_header_timeout(200).await?;
    let mut conn = TcpStream::connect(api.server_addr()).await?;
    conn.write_all(b"GET /health/live HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
        .await?;
    // The answer comes, then the connection idles and the server closes it.
    let got = read_until_closed(&mut conn).await?;
    let text = String::from_utf8_lossy(&got);
    assert!(text.starts_with("HTTP/1.1 200"), "{text}");
    assert_eq!(text.matches("HTTP/1.1").count(), 1, "{text}");
    api.stop().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_connections_filling_the_cap_time_out_and_new_clients_get_in() -> anyhow::Result<()> {
    let options = HttpOptions {
        header_read_timeout: Some(Duration::from_millis(200)),
        max_connections: 4,
        ..loopback()
    };
    let api = serve_idle(options).await?;
    let addr = api.server_addr();
    // Twice the cap of silent connections.
    let mut silent = Vec::new();
    for _ in 0..8 {
        silent.push(TcpStream::connect(addr).await?);
    }
    // A real client still gets in once the silent ones are timed out (meanwhile,
    // beyond the cap, it is told 503 rather than kept waiting).
    within("a 200 once the silent connections timed out", async {
        loop {
            let (status, _) = call(api.get("/health/live")).await?;
            if status == StatusCode::OK {
                return anyhow::Ok(());
            }
            assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await??;
    for mut s in silent {
        read_until_closed(&mut s).await?;
    }
    api.stop().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_oversized_request_head_is_431() -> anyhow::Result<()> {
    let api = serve_idle(loopback()).await?;
    // One header larger than hyper's read buffer (~400 KiB).
    let big = "a".repeat(512 * 1024);
    let mut c = TcpStream::connect(api.server_addr()).await?;
    let req = format!("GET /health/live HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Big: {big}\r\n\r\n");
    let _ = c.write_all(req.as_bytes()).await;
    let text = String::from_utf8_lossy(&read_until_closed(&mut c).await?).into_owned();
    assert!(
        text.starts_with("HTTP/1.1 431"),
        "expected 431, got: {}",
        &text[..text.len().min(200)]
    );

    // More headers than hyper's default of 100.
    let mut c = TcpStream::connect(api.server_addr()).await?;
    let mut req = String::from("GET /health/live HTTP/1.1\r\nHost: 127.0.0.1\r\n");
    for i in 0..150 {
        req.push_str(&format!("X-H{i}: v\r\n"));
    }
    req.push_str("\r\n");
    c.write_all(req.as_bytes()).await?;
    let text = String::from_utf8_lossy(&read_until_closed(&mut c).await?).into_owned();
    assert!(
        text.starts_with("HTTP/1.1 431"),
        "expected 431, got: {text}"
    );

    // The server goes on.
    let (status, _) = call(api.get("/health/live")).await?;
    assert_eq!(status, StatusCode::OK);
    api.stop().await
}

#[test]
fn debug_of_the_options_hides_the_token() {
    let o = HttpOptions::default().with_token("very-s3cret-token");
    let shown = format!("{o:?} {o:#?}");
    assert!(!shown.contains("very-s3cret-token"), "{shown}");
    assert!(shown.contains("redacted"), "{shown}");
}

/// An empty token is refused, naming where it came from: `KOAN__HTTP__TOKEN=` laid
/// over a file's token meant "no token" and opened the plane without a word (found
/// by a probe).
#[test]
fn an_empty_token_is_refused_naming_its_source() -> anyhow::Result<()> {
    let config = Config::builder()
        .toml(
            "koan.toml",
            "[koan.http]\ntoken = \"file-token-0123456789\"\n",
        )?
        .env_vars([("KOAN__HTTP__TOKEN", "")])
        .build();
    let e = HttpOptions::from_config(&config).expect_err("an empty token");
    assert!(
        e.message().contains("KOAN__HTTP__TOKEN") && e.message().contains("is empty"),
        "{e}"
    );
    let config = Config::builder()
        .toml("koan.toml", "[koan.http]\ntoken = \"\"\n")?
        .build();
    let e = HttpOptions::from_config(&config).expect_err("an empty token");
    assert!(e.message().contains("koan.toml"), "{e}");
    let config = Config::builder()
        .toml(
            "koan.toml",
            "[koan.http]\ntoken = \"file-token-0123456789\"\n",
        )?
        .build();
    assert_eq!(
        HttpOptions::from_config(&config)?.token.as_deref(),
        Some("file-token-0123456789")
    );
    Ok(())
}

#[test]
fn limits_are_read_from_configuration() -> anyhow::Result<()> {
    let config = Config::builder()
        .toml(
            "test",
            "[koan.http]\nheader_read_timeout = \"3s\"\nmax_connections = 7\n",
        )?
        .build();
    let o = HttpOptions::from_config(&config)?;
    assert_eq!(o.header_read_timeout, Some(Duration::from_secs(3)));
    assert_eq!(o.max_connections, 7);

    let config = Config::builder()
        .toml("test", "[koan.http]\nheader_read_timeout = \"0s\"\n")?
        .build();
    assert_eq!(HttpOptions::from_config(&config)?.header_read_timeout, None);

    // Zero refused every connection; past a million the counting semaphore
    // panicked at start (found by a probe).
    for line in [
        "max_connections = 0",
        "max_sse_connections = 0",
        "max_connections = 2305843009213693952",
        "max_sse_connections = 1000001",
    ] {
        let config = Config::builder()
            .toml("test", &format!("[koan.http]\n{line}\n"))?
            .build();
        let e = HttpOptions::from_config(&config).expect_err(line);
        let key = line.split(' ').next().unwrap_or_default();
        assert!(
            e.message().contains(&format!("`koan.http.{key}`"))
                && e.message().contains("1 to 1000000"),
            "{e}"
        );
    }
    let defaults = HttpOptions::default();
    assert_eq!(defaults.header_read_timeout, Some(Duration::from_secs(10)));
    assert_eq!(defaults.max_connections, 1024);
    assert_eq!(defaults.body_read_timeout, Some(Duration::from_secs(10)));

    let config = Config::builder()
        .toml("test", "[koan.http]\nbody_read_timeout = \"3s\"\n")?
        .build();
    let o = HttpOptions::from_config(&config)?;
    assert_eq!(o.body_read_timeout, Some(Duration::from_secs(3)));
    let config = Config::builder()
        .toml("test", "[koan.http]\nbody_read_timeout = \"0s\"\n")?
        .build();
    assert_eq!(HttpOptions::from_config(&config)?.body_read_timeout, None);
    assert_eq!(defaults.write_timeout, Some(Duration::from_secs(30)));
    let config = Config::builder()
        .toml("test", "[koan.http]\nwrite_timeout = \"5s\"\n")?
        .build();
    assert_eq!(
        HttpOptions::from_config(&config)?.write_timeout,
        Some(Duration::from_secs(5))
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_correlation_id_with_control_characters_is_400() -> anyhow::Result<()> {
    let api = serve_idle(loopback()).await?;
    let (status, body) = call(
        api.post("/api/services/idle/trigger")
            .header("X-Correlation-Id", "a\tb"),
    )
    .await?;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    koan_test_support::http::error_message(&body, "invalid_parameters")?;
    // Given twice, which one is meant is not known: refused, not the first taken.
    for (name, path) in [
        ("X-Correlation-Id", "/api/services/idle/trigger"),
        ("Idempotency-Key", "/api/services/idle/trigger?wait=false"),
    ] {
        let twice = api.post(path).header(name, "one").header(name, "two");
        let (status, body) = call(twice).await?;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
        let message = koan_test_support::http::error_message(&body, "invalid_parameters")?;
        assert!(
            message.contains(name) && message.contains("more than once"),
            "{message}"
        );
    }
    api.stop().await
}

/// A path longer than any route takes is refused before a route could echo it (a
/// 60 KB service name came back in a 61 KB 404); a job id past the bound of ids
/// is named as the path's, not as a query parameter.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_path_longer_than_any_route_is_414_and_a_long_job_id_400() -> anyhow::Result<()> {
    let api = serve_idle(loopback()).await?;
    let long = "n".repeat(60_000);
    for path in [
        format!("/api/services/{long}"),
        format!("/api/services/{long}/actions/a"),
        format!("/api/jobs/{long}"),
    ] {
        let resp = api.get(&path).send().await?;
        assert_eq!(resp.status(), StatusCode::URI_TOO_LONG);
        let body = resp.text().await?;
        assert!(body.len() < 500, "{} bytes", body.len());
        assert!(
            body.contains("uri_too_long") && body.contains("60"),
            "{body}"
        );
    }
    let (status, body) = call(api.get(&format!("/api/jobs/{}", "j".repeat(201)))).await?;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    let message = body["message"].as_str().unwrap_or_default();
    assert!(message.contains("in the path has 201"), "{body}");
    api.stop().await
}
