//! `koan_http::router()` mounted in a user's own axum server keeps the rules the
//! built-in server applies: the body read once and handed to the action, a foreign
//! page refused, a body that is not JSON refused, and axum's own errors as JSON.

use koan_http::HttpOptions;
use koan_test_support::PATIENCE;
use koan_test_support::http::{EchoService, error_message, loopback};
use koan_test_support::raw::exchange;

const ACT: &str = "/api/services/echo/actions/echo";

async fn send(
    addr: std::net::SocketAddr,
    method: &str,
    lines: &[&str],
    body: &str,
) -> anyhow::Result<(u16, serde_json::Value)> {
    let mut req = format!(
        "{method} {ACT} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: {}\r\nConnection: close\r\n",
        body.len()
    );
    for l in lines {
        req.push_str(l);
        req.push_str("\r\n");
    }
    req.push_str("\r\n");
    req.push_str(body);
    let a = exchange(addr, req.as_bytes(), PATIENCE).await?;
    Ok((a.status, a.json()?))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_router_mounted_elsewhere_keeps_the_admission_rules() -> anyhow::Result<()> {
    let host = koan::testing::host()
        .service::<EchoService>()
        .build()?
        .start();
    koan_test_support::within("startup", host.started()).await??;
    let options = HttpOptions {
        cors_origins: vec!["https://app.example".into()],
        ..loopback()
    };
    let app = axum::Router::new().merge(koan_http::router(host.clone(), options));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    let server = tokio::spawn(async move { axum::serve(listener, app).await });

    let json = "Content-Type: application/json";
    // The body reaches the action, read once by the admission rules.
    let (status, body) = send(addr, "POST", &[json], r#"{"say":"hi"}"#).await?;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["result"], serde_json::json!({ "say": "hi" }), "{body}");
    // No body: the action gets `null`.
    let (status, body) = send(addr, "POST", &[], "").await?;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["result"], serde_json::Value::Null, "{body}");
    // A body that does not parse: named as such.
    let (status, body) = send(addr, "POST", &[json], "{nope").await?;
    assert_eq!(status, 400, "{body}");
    assert!(error_message(&body, "invalid_json")?.contains("not valid JSON"));
    // A foreign page, without a token: refused before the action runs.
    let (status, body) = send(addr, "POST", &[json, "Origin: http://evil.example"], "{}").await?;
    assert_eq!(status, 403, "{body}");
    error_message(&body, "forbidden")?;
    // Not JSON.
    let (status, body) = send(addr, "POST", &["Content-Type: text/plain"], "hi").await?;
    assert_eq!(status, 415, "{body}");
    error_message(&body, "unsupported_media_type")?;
    // axum's own 405, as JSON.
    let (status, body) = send(addr, "GET", &[], "").await?;
    assert_eq!(status, 405, "{body}");
    error_message(&body, "method_not_allowed")?;
    // The listed origin is let through, with its CORS header.
    let req = format!(
        "POST {ACT} HTTP/1.1\r\nHost: 127.0.0.1\r\nOrigin: https://app.example\r\n{json}\r\nContent-Length: 2\r\nConnection: close\r\n\r\n{{}}"
    );
    let a = exchange(addr, req.as_bytes(), PATIENCE).await?;
    assert_eq!(a.status, 200, "{:?}", a.json());
    assert_eq!(
        a.header("access-control-allow-origin"),
        Some("https://app.example")
    );

    server.abort();
    host.shutdown();
    koan_test_support::within("the host to stop", host.wait()).await?;
    Ok(())
}
