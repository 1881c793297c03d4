//! Serving a bound listener: the connection cap (a connection beyond it gets a fast
//! 503), hyper's header-read deadline, JSON bodies on hyper's own error answers, and
//! graceful shutdown.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use hyper::server::conn::http1;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use koan::HostHandle;
use tokio::net::TcpListener;
use tokio::sync::{Semaphore, watch};
use tokio::task::JoinSet;
use tower_layer::Layer as _;

use crate::admit::Admitted;
use crate::parse_errors::JsonParseErrors;
use crate::peer::WithPeer;
use crate::{AppState, HttpOptions};

/// A running HTTP server.
#[derive(Debug)]
pub struct Server {
    addr: SocketAddr,
    task: tokio::task::JoinHandle<std::io::Result<()>>,
}

impl Server {
    /// The bound address (with the real port when port 0 was asked for).
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    /// Waits for the server to end (it ends when the host stops).
    pub async fn wait(self) -> std::io::Result<()> {
        match self.task.await {
            Ok(r) => r,
            Err(e) => Err(std::io::Error::other(e)),
        }
    }
}

pub(crate) fn start(
    listener: TcpListener,
    addr: SocketAddr,
    host: HostHandle,
    options: HttpOptions,
) -> Server {
    let cap = options.max_connections.max(1);
    let limits = Limits {
        header_read_timeout: options.header_read_timeout,
        write_timeout: options.write_timeout,
        slots: Arc::new(Semaphore::new(cap)),
        // Refusals are cheap, but they are sockets too: a bounded number at once.
        refusals: Arc::new(Semaphore::new(cap.max(MAX_REFUSALS))),
        token: options.token.as_deref().map(Arc::from),
        reserve: Arc::new(Semaphore::new(crate::reserve::RESERVE)),
    };
    say_access(addr, &host, options.token.as_deref());
    let cors = crate::routes::cors(&options.cors_origins);
    let app = Admitted::new(AppState::new(host.clone(), options));
    let task = match cors {
        Some(cors) => tokio::spawn(accept_loop(listener, cors.layer(app), host, limits)),
        None => tokio::spawn(accept_loop(listener, app, host, limits)),
    };
    Server { addr, task }
}

/// A token shorter than this is warned of (a guessable password, not a key).
const SHORT_TOKEN: usize = 16;

/// Says once, at start, who may use the plane: an operator could not tell from the
/// log whether a token was in force (found by a probe). A plane without a token on a
/// host in a cluster reaches every service and job of the cluster: said as a warning.
fn say_access(addr: SocketAddr, host: &HostHandle, token: Option<&str>) {
    match token {
        Some(t) => {
            tracing::info!(%addr, "control plane: every change and every `/api` read but `/api/openapi.json` needs the token; the page and its assets, `/health*` (without details) and `/metrics` are open");
            if t.len() < SHORT_TOKEN {
                tracing::warn!(
                    "the HTTP token has {} characters: fewer than {SHORT_TOKEN} is guessable; use e.g. the output of `openssl rand -hex 32`",
                    t.len()
                );
            }
        }
        None if host.host_id().is_some() => tracing::warn!(
            %addr,
            "control plane without a token, for loopback clients only: any process of this machine can call every service of the cluster and read its jobs through it; set `koan.http.token` (or KOAN_HTTP_TOKEN) to close it"
        ),
        None => {
            tracing::info!(%addr, "control plane without a token: loopback clients only, cross-site requests refused")
        }
    }
}

/// Connections beyond the cap being answered 503 at once (each for at most a second);
/// past that, a connection is closed without an answer.
const MAX_REFUSALS: usize = 1024;

struct Limits {
    header_read_timeout: Option<Duration>,
    write_timeout: Option<Duration>,
    slots: Arc<Semaphore>,
    refusals: Arc<Semaphore>,
    /// The configured token: past the cap, a request carrying it is served in a
    /// slot of `reserve` (`reserve.rs`).
    token: Option<Arc<str>>,
    reserve: Arc<Semaphore>,
}

async fn accept_loop<S>(
    listener: TcpListener,
    app: S,
    host: HostHandle,
    limits: Limits,
) -> std::io::Result<()>
where
    S: tower_service::Service<
            axum::http::Request<hyper::body::Incoming>,
            Response = axum::response::Response,
            Error = Infallible,
        > + Clone
        + Send
        + 'static,
    S::Future: Send + 'static,
{
    let stop = host.wait();
    tokio::pin!(stop);
    // Dropping the sender asks every connection to finish gracefully.
    let (close_tx, close_rx) = watch::channel(());
    let mut conns = JoinSet::new();
    loop {
        let (stream, peer) = tokio::select! {
            _ = &mut stop => break,
            r = listener.accept() => match r {
                Ok(accepted) => accepted,
                Err(e) => {
                    if !is_connection_error(&e) {
                        // E.g. too many open files: back off instead of spinning.
                        tracing::warn!(error = %e, "accepting a connection failed");
                        tokio::time::sleep(Duration::from_millis(200)).await;
                    }
                    continue;
                }
            },
        };
        while conns.try_join_next().is_some() {}
        let conn = Conn {
            service: TowerToHyperService::new(WithPeer::new(app.clone(), peer)),
            close_rx: close_rx.clone(),
            header_read_timeout: limits.header_read_timeout,
            write_timeout: limits.write_timeout,
        };
        let Ok(permit) = Arc::clone(&limits.slots).try_acquire_owned() else {
            // Beyond the cap: a fast 503 rather than silence in the backlog, but for
            // a request that carries the token (`reserve.rs`).
            if let Ok(refusal) = Arc::clone(&limits.refusals).try_acquire_owned() {
                let (token, reserve) = (limits.token.clone(), Arc::clone(&limits.reserve));
                conns.spawn(async move {
                    let Some(token) = token else {
                        let _refusal = refusal;
                        return crate::overflow::refuse(stream).await;
                    };
                    let mut stream = stream;
                    let (head, whole) = crate::overflow::read_head(&mut stream).await;
                    let kept = whole && crate::reserve::carries_token(&head, &token);
                    match kept.then(|| reserve.try_acquire_owned().ok()).flatten() {
                        Some(kept) => {
                            drop(refusal);
                            let _kept = kept;
                            conn.serve(crate::reserve::Prefixed::new(head, stream))
                                .await;
                        }
                        None => {
                            let _refusal = refusal;
                            crate::overflow::refuse_after_head(stream).await;
                        }
                    }
                });
            }
            continue;
        };
        conns.spawn(async move {
            let _permit = permit;
            conn.serve(stream).await;
        });
    }
    drop(listener);
    drop(close_tx);
    while conns.join_next().await.is_some() {}
    Ok(())
}

/// What serving one connection needs.
struct Conn<S> {
    service: TowerToHyperService<WithPeer<S>>,
    close_rx: watch::Receiver<()>,
    header_read_timeout: Option<Duration>,
    write_timeout: Option<Duration>,
}

impl<S> Conn<S>
where
    S: tower_service::Service<
            axum::http::Request<hyper::body::Incoming>,
            Response = axum::response::Response,
            Error = Infallible,
        > + Clone
        + Send
        + 'static,
    S::Future: Send + 'static,
{
    /// Serves `stream` until it ends, or gracefully once the server stops.
    async fn serve<I>(mut self, stream: I)
    where
        I: tokio::io::AsyncRead + tokio::io::AsyncWrite + Send + 'static,
    {
        let mut builder = http1::Builder::new();
        builder
            .timer(TokioTimer::new())
            .header_read_timeout(self.header_read_timeout);
        // A client that stops taking its answers (a full socket buffer) would hold
        // its slot for ever: a write that makes no progress for this long ends it.
        let mut stream = tokio_io_timeout::TimeoutStream::new(stream);
        stream.set_write_timeout(self.write_timeout);
        let io = TokioIo::new(JsonParseErrors::new(Box::pin(stream)));
        let conn = builder.serve_connection(io, self.service);
        tokio::pin!(conn);
        tokio::select! {
            r = conn.as_mut() => {
                if let Err(e) = r {
                    tracing::debug!(error = %e, "connection ended with an error");
                }
                return;
            }
            _ = self.close_rx.changed() => conn.as_mut().graceful_shutdown(),
        }
        if let Err(e) = conn.await {
            tracing::debug!(error = %e, "connection ended with an error");
        }
    }
}

fn is_connection_error(e: &std::io::Error) -> bool {
    matches!(
        e.kind(),
        std::io::ErrorKind::ConnectionRefused
            | std::io::ErrorKind::ConnectionAborted
            | std::io::ErrorKind::ConnectionReset
    )
}
