//! Request bodies cannot hold the server: the token is checked before a body is
//! read, a body must arrive within the read deadline, and it must be JSON.

use std::time::Duration;

use koan_http::HttpOptions;
use koan_test_support::http::{error_message, loopback, serve_echo};
use koan_test_support::raw::{exchange, head, read_answer};
use koan_test_support::{PATIENCE, within};
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;
use tokio::task::JoinSet;

/// The head of a POST announcing a JSON body of `length` bytes.
fn slow_post(length: usize, extra: &[&str]) -> String {
    let cl = format!("Content-Length: {length}");
    let mut lines = vec!["Content-Type: application/json", cl.as_str()];
    lines.extend_from_slice(extra);
    head("POST", "/api/services/echo/actions/echo", &lines)
}

/// Opens a connection that sends `head` and then one body byte every 200 ms, until
/// the server answers (returned) or closes.
async fn trickle(addr: std::net::SocketAddr, head: String) -> anyhow::Result<u16> {
    let mut stream = TcpStream::connect(addr).await?;
    stream.write_all(head.as_bytes()).await?;
    let (mut rd, mut wr) = stream.split();
    let writer = async {
        loop {
            if wr.write_all(b" ").await.is_err() {
                return;
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    };
    let reader = async {
        let mut buf = [0u8; 64];
        let n = match tokio::io::AsyncReadExt::read(&mut rd, &mut buf).await {
            Ok(n) => n,
            // The server answered and closed while this client was still sending its
            // body: the kernel may then reset the connection before the answer is read.
            // Either way the body was not waited for.
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => return Ok(0),
            Err(e) => return Err(e.into()),
        };
        let text = String::from_utf8_lossy(&buf[..n]).into_owned();
        text.split(' ')
            .nth(1)
            .and_then(|s| s.parse::<u16>().ok())
            .ok_or_else(|| anyhow::anyhow!("no status line in {text:?}"))
    };
    tokio::select! {
        () = writer => anyhow::bail!("the connection closed without an answer"),
        r = reader => r,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_bodies_without_the_token_do_not_keep_health_probes_out() -> anyhow::Result<()> {
    let options = HttpOptions {
        max_connections: 64,
        ..loopback().with_token("s3cret")
    };
    let api = serve_echo(options).await?;
    let addr = api.server_addr();
    // Three times the cap of clients sending a 1,000-byte body one byte at a time.
    let mut slow = JoinSet::new();
    for _ in 0..200 {
        slow.spawn(trickle(addr, slow_post(1000, &[])));
    }
    // Every probe is answered (a 503 while the cap is momentarily full is an
    // answer), and a 200 comes. A probe held behind the slow bodies would wait for
    // their read deadline (10 s): half of it tells the two apart, with room for a
    // loaded machine (a one-second bound failed once under a load average of 10).
    let probe = head("GET", "/health/live", &["Connection: close"]);
    within("a 200 from /health/live", async {
        loop {
            let a = exchange(addr, probe.as_bytes(), Duration::from_secs(5))
                .await
                .map_err(|e| anyhow::anyhow!("/health/live: {e}"))?;
            if a.status == 200 {
                return anyhow::Ok(());
            }
            assert_eq!(a.status, 503, "{a:?}");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await??;
    // The slow clients were refused without their bodies being waited for.
    while let Some(r) = within("the slow clients' answers", slow.join_next()).await? {
        let status = r??;
        // 0: reset after the server's answer (see `trickle`).
        assert!(
            matches!(status, 0 | 401 | 503),
            "a slow client got {status}"
        );
    }
    api.stop().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_token_is_checked_before_the_body_is_read() -> anyhow::Result<()> {
    let api = serve_echo(loopback().with_token("s3cret")).await?;
    // The head announces a body that never comes.
    let mut c = TcpStream::connect(api.server_addr()).await?;
    c.write_all(slow_post(1000, &[]).as_bytes()).await?;
    let a = read_answer(&mut c, Duration::from_secs(2)).await?;
    assert_eq!(a.status, 401, "{a:?}");
    error_message(&a.json()?, "unauthorized")?;
    assert_eq!(a.header("connection"), Some("close"));
    api.stop().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_body_that_stalls_is_cut_off_at_the_read_deadline() -> anyhow::Result<()> {
    // The default deadline (10 s): a body that stops halfway is answered 408.
    let api = serve_echo(loopback()).await?;
    let mut c = TcpStream::connect(api.server_addr()).await?;
    c.write_all(slow_post(20, &[]).as_bytes()).await?;
    c.write_all(b"{\"a\":").await?;
    let a = read_answer(&mut c, PATIENCE).await?;
    assert_eq!(a.status, 408, "{a:?}");
    let message = error_message(&a.json()?, "request_timeout")?;
    assert!(message.contains("body_read_timeout"), "{message}");
    // Others were served all along.
    let a = exchange(
        api.server_addr(),
        head("GET", "/health/live", &["Connection: close"]).as_bytes(),
        Duration::from_secs(1),
    )
    .await?;
    assert_eq!(a.status, 200);
    api.stop().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_body_that_is_not_declared_json_is_415() -> anyhow::Result<()> {
    let api = serve_echo(loopback()).await?;
    for ct in [
        Some("text/plain"),
        Some("application/x-www-form-urlencoded"),
        None,
    ] {
        let mut req = api
            .post("/api/services/echo/actions/echo")
            .body("{\"a\":1}");
        if let Some(ct) = ct {
            req = req.header("content-type", ct);
        }
        let (status, body) = koan_test_support::http::call(req).await?;
        assert_eq!(status.as_u16(), 415, "{ct:?}: {body}");
        error_message(&body, "unsupported_media_type")?;
    }
    // JSON, with or without parameters, and an empty body are accepted.
    for ct in [
        "application/json",
        "application/json; charset=utf-8",
        "application/merge-patch+json",
    ] {
        let req = api
            .post("/api/services/echo/actions/echo")
            .header("content-type", ct)
            .body("{\"a\":1}");
        let (status, body) = koan_test_support::http::call(req).await?;
        assert_eq!(status.as_u16(), 200, "{ct}: {body}");
        assert_eq!(body["result"]["a"], 1);
    }
    let (status, body) =
        koan_test_support::http::call(api.post("/api/services/echo/actions/echo")).await?;
    assert_eq!(status.as_u16(), 200, "{body}");
    api.stop().await
}

/// A JSON body that is compressed or in another charset is refused, saying so,
/// rather than read as UTF-8 JSON: a gzip body was "not valid JSON at line 1
/// column 1", and `charset=utf-16` was read as UTF-8 (found by a probe).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_compressed_or_other_charset_body_is_refused_saying_why() -> anyhow::Result<()> {
    let api = serve_echo(loopback()).await?;
    for (content_type, extra, why) in [
        (
            "application/json",
            Some("Content-Encoding: gzip"),
            "`Content-Encoding: gzip` is not accepted",
        ),
        (
            "application/json; charset=utf-16",
            None,
            "`charset=utf-16` is not accepted",
        ),
        (
            "application/json; charset=\"latin1\"",
            None,
            "`charset=latin1` is not accepted",
        ),
    ] {
        let ct = format!("Content-Type: {content_type}");
        let mut lines = vec![ct.as_str(), "Content-Length: 2", "Connection: close"];
        lines.extend(extra);
        let req = head("POST", "/api/services/echo/actions/echo", &lines) + "{}";
        let a = exchange(api.server_addr(), req.as_bytes(), PATIENCE).await?;
        assert_eq!(a.status, 415, "{content_type} {extra:?}: {a:?}");
        let message = error_message(&a.json()?, "unsupported_media_type")?;
        assert!(message.contains(why), "{message}");
    }
    // UTF-8, said or not, and `identity` are read as before.
    for (content_type, extra) in [
        ("application/json; charset=UTF-8", None),
        ("application/json", Some("Content-Encoding: identity")),
    ] {
        let ct = format!("Content-Type: {content_type}");
        let mut lines = vec![ct.as_str(), "Content-Length: 2", "Connection: close"];
        lines.extend(extra);
        let req = head("POST", "/api/services/echo/actions/echo", &lines) + "{}";
        let a = exchange(api.server_addr(), req.as_bytes(), PATIENCE).await?;
        assert_eq!(a.status, 200, "{content_type} {extra:?}: {a:?}");
    }
    api.stop().await
}
