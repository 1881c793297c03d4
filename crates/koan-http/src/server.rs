//! Serving the router on its own: the loopback-or-token rule, the bound address, and
//! graceful shutdown.

use std::net::SocketAddr;

use koan::HostHandle;
use tokio::net::TcpListener;

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
/// Binding to a non-loopback address without a token is refused.
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
    let app = router(host.clone(), options);
    let task = tokio::spawn(async move {
        axum::serve(listener, app)
            .with_graceful_shutdown(async move {
                host.wait().await;
            })
            .await
    });
    Ok(Server { addr, task })
}
