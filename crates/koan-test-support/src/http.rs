//! A started host served on a loopback port, a `reqwest` client for it, Server-Sent
//! Events read line by line, and the small services the control-plane tests serve.

use std::sync::Arc;

use futures_util::StreamExt;
use koan::{
    ActionContext, BackgroundService, BoxError, HostHandle, ServiceContext, status::ServiceState,
};
use koan_http::{HttpOptions, Server};
use reqwest::StatusCode;
use serde_json::Value;

use crate::services::{DataCleanupService, Greeter, Seen};
use crate::within;

/// A served host and a client for it.
#[derive(Debug)]
pub struct Api {
    /// The host being served.
    pub host: HostHandle,
    /// The server, until [`Api::stop`] waits for it to end.
    pub server: Option<Server>,
    /// `http://<address>`, without a trailing slash.
    pub base: String,
    /// A client with no default timeout: every wait is bounded by [`within`].
    pub client: reqwest::Client,
}

/// Loopback, port 0.
pub fn loopback() -> HttpOptions {
    // A test's options are meant as they are: a token exported in the shell that
    // runs the tests is not theirs.
    HttpOptions {
        from_configuration: true,
        ..HttpOptions::default()
    }
    .with_bind(std::net::SocketAddr::from(([127, 0, 0, 1], 0)))
}

impl Api {
    /// Waits for the host's startup, then serves it with `options`.
    pub async fn serve(host: HostHandle, options: HttpOptions) -> anyhow::Result<Api> {
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
    pub async fn open(host: HostHandle) -> anyhow::Result<Api> {
        Api::serve(host, loopback()).await
    }

    /// Waits until the service `name` is in `state`, within [`PATIENCE`](crate::PATIENCE).
    pub async fn wait_state(&self, name: &str, state: ServiceState) -> anyhow::Result<()> {
        within(
            &format!("{name} to be {state:?}"),
            koan::testing::wait_state(&self.host, name, state),
        )
        .await?;
        Ok(())
    }

    /// The server's bound address.
    pub fn server_addr(&self) -> std::net::SocketAddr {
        self.server
            .as_ref()
            .map(|s| s.local_addr())
            .unwrap_or_else(|| std::net::SocketAddr::from(([127, 0, 0, 1], 0)))
    }

    /// The absolute URL of `path` (which starts with `/`).
    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    /// A `GET` of `path`.
    pub fn get(&self, path: &str) -> reqwest::RequestBuilder {
        self.client.get(self.url(path))
    }

    /// A `POST` to `path`.
    pub fn post(&self, path: &str) -> reqwest::RequestBuilder {
        self.client.post(self.url(path))
    }

    /// Stops the host, and checks that the server ends with it.
    pub async fn stop(mut self) -> anyhow::Result<()> {
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
pub async fn send(
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
pub async fn call(req: reqwest::RequestBuilder) -> anyhow::Result<(StatusCode, Value)> {
    let (status, _, body) = send(req).await?;
    Ok((status, body))
}

/// Asserts the error shape `{ "error": kind, "message": … }` and returns the message.
pub fn error_message(body: &Value, kind: &str) -> anyhow::Result<String> {
    assert_eq!(body["error"], kind, "error kind in {body}");
    let message = body["message"]
        .as_str()
        .ok_or_else(|| anyhow::anyhow!("no message in {body}"))?;
    assert!(!message.is_empty(), "empty message in {body}");
    Ok(message.to_owned())
}

/// The value of a header, as text.
pub fn header<'a>(headers: &'a reqwest::header::HeaderMap, name: &str) -> Option<&'a str> {
    headers.get(name).and_then(|v| v.to_str().ok())
}

/// An open event stream, read line by line.
#[allow(missing_debug_implementations)]
pub struct SseReader {
    stream:
        std::pin::Pin<Box<dyn futures_util::Stream<Item = reqwest::Result<bytes::Bytes>> + Send>>,
    buf: String,
}

impl SseReader {
    /// Wraps a `200 text/event-stream` answer.
    pub fn new(resp: reqwest::Response) -> anyhow::Result<SseReader> {
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
    pub async fn next_data(&mut self) -> anyhow::Result<Value> {
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
    pub async fn until_event(&mut self, name: &str) -> anyhow::Result<Vec<Value>> {
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

/// `Echo`: its action `echo` answers the JSON it was given.
#[koan::service(name = "Echo", discover = false)]
#[derive(Debug, Default)]
pub struct EchoService;

#[koan::actions]
impl EchoService {
    #[action("echo")]
    async fn echo(&self, v: Value, _cx: &ActionContext) -> Result<Value, BoxError> {
        Ok(v)
    }
}

impl BackgroundService for EchoService {
    async fn run(&self, cx: ServiceContext) -> Result<(), BoxError> {
        cx.cancelled().await;
        Ok(())
    }
}

/// `Idle`: runs until it is stopped, with no action.
#[koan::service(name = "Idle", discover = false)]
#[derive(Debug, Default)]
pub struct IdleService;

impl BackgroundService for IdleService {
    async fn run(&self, cx: ServiceContext) -> Result<(), BoxError> {
        cx.cancelled().await;
        Ok(())
    }
}

/// A test host running only [`EchoService`], served with `options`.
pub async fn serve_echo(options: HttpOptions) -> anyhow::Result<Api> {
    let host = koan::testing::host()
        .service::<EchoService>()
        .build()?
        .start();
    Api::serve(host, options).await
}

/// A test host running only [`IdleService`], served with `options`.
pub async fn serve_idle(options: HttpOptions) -> anyhow::Result<Api> {
    let host = koan::testing::host()
        .service::<IdleService>()
        .build()?
        .start();
    Api::serve(host, options).await
}

/// A test host running [`Greeter`] and [`DataCleanupService`], served with `options`
/// once `Greeter` runs and `Cleanup` is idle; with what `Cleanup` is asked to run.
pub async fn serve_greeter_and_cleanup(options: HttpOptions) -> anyhow::Result<(Api, Arc<Seen>)> {
    let seen = Arc::new(Seen::default());
    let host = koan::testing::host()
        .service::<Greeter>()
        .instance(DataCleanupService {
            seen: Arc::clone(&seen),
        })
        .build()?
        .start();
    let api = Api::serve(host, options).await?;
    api.wait_state("Greeter", ServiceState::Running).await?;
    api.wait_state("Cleanup", ServiceState::Idle).await?;
    Ok((api, seen))
}
