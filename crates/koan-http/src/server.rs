//! Serving the router on its own: the loopback-or-token rule, the bound address,
//! limits that keep slow or idle clients from holding the server, and graceful
//! shutdown.

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

use crate::{HttpOptions, router};

/// Why the server could not start.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    /// A non-loopback address without a token.
    #[error(
        "refusing to serve the control plane on {0} without a token: anyone who can reach it could run actions; \
         set `koan.http.token` (or KOAN_HTTP_TOKEN), or bind to 127.0.0.1"
    )]
    OpenToNetwork(SocketAddr),
    /// The address could not be bound.
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        /// The address.
        addr: SocketAddr,
        /// The cause.
        source: std::io::Error,
    },
}

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

/// Serves the control plane of `host` on `options.bind`, until the host stops.
///
/// Binding to a non-loopback address without a token is refused. At most
/// `options.max_connections` connections are served at once (further ones wait in
/// the listen backlog), and a connection that has not sent a complete request head
/// within `options.header_read_timeout` — a new one, or an idle keep-alive one — is
/// closed.
pub async fn serve(host: HostHandle, options: HttpOptions) -> Result<Server, ServeError> {
    let bind = options.bind;
    if !bind.ip().is_loopback() && options.token.is_none() {
        return Err(ServeError::OpenToNetwork(bind));
    }
    let listener = TcpListener::bind(bind)
        .await
        .map_err(|source| ServeError::Bind { addr: bind, source })?;
    let addr = listener
        .local_addr()
        .map_err(|source| ServeError::Bind { addr: bind, source })?;
    let limits = Limits {
        header_read_timeout: options.header_read_timeout,
        slots: Arc::new(Semaphore::new(options.max_connections.max(1))),
    };
    let app = router(host.clone(), options);
    let task = tokio::spawn(accept_loop(listener, app, host, limits));
    Ok(Server { addr, task })
}

struct Limits {
    header_read_timeout: Option<Duration>,
    slots: Arc<Semaphore>,
}

async fn accept_loop(
    listener: TcpListener,
    app: axum::Router,
    host: HostHandle,
    limits: Limits,
) -> std::io::Result<()> {
    let stop = host.wait();
    tokio::pin!(stop);
    // Dropping the sender asks every connection to finish gracefully.
    let (close_tx, close_rx) = watch::channel(());
    let mut conns = JoinSet::new();
    loop {
        // A free slot first: beyond the cap, new connections wait in the backlog.
        let permit = tokio::select! {
            _ = &mut stop => break,
            p = Arc::clone(&limits.slots).acquire_owned() => match p {
                Ok(p) => p,
                Err(_) => break,
            },
        };
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
        let service = TowerToHyperService::new(app.clone());
        let mut close_rx = close_rx.clone();
        let header_read_timeout = limits.header_read_timeout;
        conns.spawn(async move {
            let _permit = permit;
            let mut builder = http1::Builder::new();
            builder
                .timer(TokioTimer::new())
                .header_read_timeout(header_read_timeout);
            let conn = builder.serve_connection(TokioIo::new(stream), service);
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
