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
    };
    let cors = crate::routes::cors(&options.cors_origins);
    let app = Admitted::new(AppState::new(host.clone(), options));
    let task = match cors {
        Some(cors) => tokio::spawn(accept_loop(listener, cors.layer(app), host, limits)),
        None => tokio::spawn(accept_loop(listener, app, host, limits)),
    };
    Server { addr, task }
}

/// Connections beyond the cap being answered 503 at once (each for at most a second);
/// past that, a connection is closed without an answer.
const MAX_REFUSALS: usize = 1024;

struct Limits {
    header_read_timeout: Option<Duration>,
    write_timeout: Option<Duration>,
    slots: Arc<Semaphore>,
    refusals: Arc<Semaphore>,
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
        let stream = tokio::select! {
            _ = &mut stop => break,
            r = listener.accept() => match r {
                Ok((stream, _)) => stream,
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
        let Ok(permit) = Arc::clone(&limits.slots).try_acquire_owned() else {
            // Beyond the cap: a fast 503 rather than silence in the backlog.
            if let Ok(refusal) = Arc::clone(&limits.refusals).try_acquire_owned() {
                conns.spawn(async move {
                    let _refusal = refusal;
                    crate::overflow::refuse(stream).await;
                });
            }
            continue;
        };
        let service = TowerToHyperService::new(app.clone());
        let mut close_rx = close_rx.clone();
        let header_read_timeout = limits.header_read_timeout;
        let write_timeout = limits.write_timeout;
        conns.spawn(async move {
            let _permit = permit;
            let mut builder = http1::Builder::new();
            builder
                .timer(TokioTimer::new())
                .header_read_timeout(header_read_timeout);
            // A client that stops taking its answers (a full socket buffer) would hold
            // its slot for ever: a write that makes no progress for this long ends it.
            let mut stream = tokio_io_timeout::TimeoutStream::new(stream);
            stream.set_write_timeout(write_timeout);
            let io = TokioIo::new(JsonParseErrors::new(Box::pin(stream)));
            let conn = builder.serve_connection(io, service);
            tokio::pin!(conn);
            tokio::select! {
                r = conn.as_mut() => {
                    if let Err(e) = r {
                        tracing::debug!(error = %e, "connection ended with an error");
                    }
                    return;
                }
                _ = close_rx.changed() => conn.as_mut().graceful_shutdown(),
            }
            if let Err(e) = conn.await {
                tracing::debug!(error = %e, "connection ended with an error");
            }
        });
    }
    drop(listener);
    drop(close_tx);
    while conns.join_next().await.is_some() {}
    Ok(())
}

fn is_connection_error(e: &std::io::Error) -> bool {
    matches!(
        e.kind(),
        std::io::ErrorKind::ConnectionRefused
            | std::io::ErrorKind::ConnectionAborted
            | std::io::ErrorKind::ConnectionReset
    )
}
