//! Shared helpers of the HTTP integration tests: serve a started host on a loopback
//! port, talk to it with `reqwest`, read Server-Sent Events, and bound every wait.

#![allow(dead_code)]

pub(crate) mod raw;

use std::future::Future;
use std::time::Duration;

use futures_util::StreamExt;
use koan::HostHandle;
use koan_http::{HttpOptions, Server};
use reqwest::StatusCode;
use serde_json::Value;

/// The safety net of every wait: a test that gets here has failed.
pub(crate) const PATIENCE: Duration = Duration::from_secs(30);

/// Awaits `fut`, failing the test when it takes longer than [`PATIENCE`].
pub(crate) async fn within<T>(what: &str, fut: impl Future<Output = T>) -> anyhow::Result<T> {
    tokio::time::timeout(PATIENCE, fut)
        .await
        .map_err(|_| anyhow::anyhow!("timed out waiting for {what}"))
}

/// A served host and a client for it.
pub(crate) struct Api {
    pub(crate) host: HostHandle,
    pub(crate) server: Option<Server>,
    pub(crate) base: String,
    pub(crate) client: reqwest::Client,
}

/// Loopback, port 0.
pub(crate) fn loopback() -> HttpOptions {
    HttpOptions::default().with_bind(std::net::SocketAddr::from(([127, 0, 0, 1], 0)))
}

impl Api {
    /// Waits for the host's startup, then serves it with `options`.
    pub(crate) async fn serve(host: HostHandle, options: HttpOptions) -> anyhow::Result<Api> {
        within("startup", host.started()).await??;
        let server = koan_http::serve(host.clone(), options).await?;
        let base = format!("http://{}", server.local_addr());
        let client = reqwest::Client::builder().build()?;
        Ok(Api {
            host,
            server: Some(server),
            base,
            client,
        })
    }

    /// Serves `host` on loopback without a token.
    pub(crate) async fn open(host: HostHandle) -> anyhow::Result<Api> {
        Api::serve(host, loopback()).await
    }

    /// The server's bound address.
    pub(crate) fn server_addr(&self) -> std::net::SocketAddr {
        self.server
            .as_ref()
            .map(|s| s.local_addr())
            .unwrap_or_else(|| std::net::SocketAddr::from(([127, 0, 0, 1], 0)))
    }

    pub(crate) fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    pub(crate) fn get(&self, path: &str) -> reqwest::RequestBuilder {
        self.client.get(self.url(path))
    }

    pub(crate) fn post(&self, path: &str) -> reqwest::RequestBuilder {
        self.client.post(self.url(path))
    }

    /// Stops the host, and checks that the server ends with it.
    pub(crate) async fn stop(mut self) -> anyhow::Result<()> {
        self.host.shutdown();
        within("the host to stop", self.host.wait())
            .await?
            .into_result()?;
        if let Some(server) = self.server.take() {
            within("the server to end", server.wait()).await??;
        }
        Ok(())
    }
}

/// Sends `req` and returns the status, the headers and the body as JSON (`Null` when
/// the body is empty).
pub(crate) async fn send(
    req: reqwest::RequestBuilder,
) -> anyhow::Result<(StatusCode, reqwest::header::HeaderMap, Value)> {
    let resp = within("a response", req.send()).await??;
    let status = resp.status();
    let headers = resp.headers().clone();
    let bytes = within("a response body", resp.bytes()).await??;
    let body = if bytes.is_empty() {
        Value::Null
    } else {
        serde_json::from_slice(&bytes).map_err(|e| {
            anyhow::anyhow!(
                "body of a {status} answer is not JSON ({e}): {}",
                String::from_utf8_lossy(&bytes)
            )
        })?
    };
    Ok((status, headers, body))
}

/// Sends `req` and returns the status and the JSON body.
pub(crate) async fn call(req: reqwest::RequestBuilder) -> anyhow::Result<(StatusCode, Value)> {
    let (status, _, body) = send(req).await?;
    Ok((status, body))
}

/// Asserts the error shape `{ "error": kind, "message": … }` and returns the message.
pub(crate) fn error_message(body: &Value, kind: &str) -> anyhow::Result<String> {
    assert_eq!(body["error"], kind, "error kind in {body}");
    let message = body["message"]
        .as_str()
        .ok_or_else(|| anyhow::anyhow!("no message in {body}"))?;
    assert!(!message.is_empty(), "empty message in {body}");
    Ok(message.to_owned())
}

/// The value of a header, as text.
pub(crate) fn header<'a>(headers: &'a reqwest::header::HeaderMap, name: &str) -> Option<&'a str> {
    headers.get(name).and_then(|v| v.to_str().ok())
}

/// An open event stream, read line by line.
pub(crate) struct SseReader {
    stream: std::pin::Pin<
        Box<dyn futures_util::Stream<Item = reqwest::Result<axum::body::Bytes>> + Send>,
    >,
    buf: String,
}

impl SseReader {
    /// Wraps a `200 text/event-stream` answer.
    pub(crate) fn new(resp: reqwest::Response) -> anyhow::Result<SseReader> {
        anyhow::ensure!(
            resp.status() == StatusCode::OK,
            "event stream answered {}",
            resp.status()
        );
        let ct = header(resp.headers(), "content-type")
            .unwrap_or_default()
            .to_owned();
        anyhow::ensure!(ct.starts_with("text/event-stream"), "content type `{ct}`");
        Ok(SseReader {
            stream: Box::pin(resp.bytes_stream()),
            buf: String::new(),
        })
    }

    /// The next complete line.
    async fn line(&mut self) -> anyhow::Result<String> {
        loop {
            if let Some(i) = self.buf.find('\n') {
                let line: String = self.buf.drain(..=i).collect();
                return Ok(line.trim_end_matches(['\r', '\n']).to_owned());
            }
            match self.stream.next().await {
                Some(chunk) => self.buf.push_str(&String::from_utf8_lossy(&chunk?)),
                None => anyhow::bail!("the event stream ended"),
            }
        }
    }

    /// The payload of the next `data:` line, parsed as JSON (keep-alive comments and
    /// `event:`/`id:` lines are skipped).
    pub(crate) async fn next_data(&mut self) -> anyhow::Result<Value> {
        within("an event", async {
            loop {
                let line = self.line().await?;
                if let Some(data) = line.strip_prefix("data:") {
                    return Ok(serde_json::from_str(data.trim())?);
                }
            }
        })
        .await?
    }

    /// Reads events until one named `name` arrives, and returns every event read.
    pub(crate) async fn until_event(&mut self, name: &str) -> anyhow::Result<Vec<Value>> {
        let mut seen = Vec::new();
        loop {
            let data = self.next_data().await?;
            let done = data["event"] == name;
            seen.push(data);
            if done {
                return Ok(seen);
            }
        }
    }
}
