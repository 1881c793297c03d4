//! Binding the control plane's port, before the host starts: the options are
//! checked, the loopback-or-token rule applied and the port taken first, so a taken
//! port or an open bind fails fast, before any startup service (a database
//! migration, say) has run.

use std::net::SocketAddr;

use koan::HostHandle;
use tokio::net::{TcpListener, TcpSocket};

use crate::{HttpOptions, Server};

/// Why the server could not start.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
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
    /// A token is configured (`KOAN_HTTP_TOKEN`, `koan.http.token`) but the options
    /// carry none: built with `HttpOptions::default()`, which reads no configuration.
    #[error(
        "{0}, but the control plane's options carry no token (`HttpOptions::default()` reads no configuration): \
         build them with `HttpOptions::load()` or `HttpOptions::from_config(&config)` (or set `from_configuration` on options meant as they are), or unset the token"
    )]
    TokenNotApplied(&'static str),
    /// The options contradict themselves (see [`HttpOptions::validate`]).
    #[error("invalid HTTP options: {0}")]
    InvalidOptions(koan::Error),
}

/// The control plane's port, bound and not yet served. Bind it before starting the
/// host, then [`serve`](Listener::serve) the host on it.
#[derive(Debug)]
pub struct Listener {
    listener: TcpListener,
    addr: SocketAddr,
    options: HttpOptions,
}

/// Checks `options` and binds `options.bind`, with a listen backlog as long as the
/// connection cap. Binding to a non-loopback address without a token is refused,
/// and so are options without a token while one is configured
/// ([`ServeError::TokenNotApplied`]).
pub async fn bind(options: HttpOptions) -> Result<Listener, ServeError> {
    options.validate().map_err(ServeError::InvalidOptions)?;
    let bind = options.bind;
    if !bind.ip().is_loopback() && options.token.is_none() {
        return Err(ServeError::OpenToNetwork(bind));
    }
    if options.token.is_none()
        && !options.from_configuration
        && let Some(configured) = crate::options::configured_token()
    {
        return Err(ServeError::TokenNotApplied(configured));
    }
    let backlog = u32::try_from(options.max_connections.max(1)).unwrap_or(u32::MAX);
    let listener =
        listen(bind, backlog).map_err(|source| ServeError::Bind { addr: bind, source })?;
    let addr = listener
        .local_addr()
        .map_err(|source| ServeError::Bind { addr: bind, source })?;
    Ok(Listener {
        listener,
        addr,
        options,
    })
}

fn listen(addr: SocketAddr, backlog: u32) -> std::io::Result<TcpListener> {
    let socket = if addr.is_ipv4() {
        TcpSocket::new_v4()?
    } else {
        TcpSocket::new_v6()?
    };
    // As `TcpListener::bind` does: a restarted server can take its port back at once.
    #[cfg(unix)]
    socket.set_reuseaddr(true)?;
    socket.bind(addr)?;
    socket.listen(backlog)
}

impl Listener {
    /// The bound address (with the real port when port 0 was asked for).
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    /// Serves the control plane of `host` on this port, until the host stops.
    pub fn serve(self, host: HostHandle) -> Server {
        crate::server::start(self.listener, self.addr, host, self.options)
    }
}

/// Serves the control plane of `host` on `options.bind`, until the host stops: [`bind`]
/// then [`Listener::serve`]. A host with startup work should bind first, then start.
///
/// At most `options.max_connections` connections are served at once; one beyond
/// the cap is answered with a 503 and closed. A connection that has not sent a
/// complete request head within `options.header_read_timeout` — a new one, or an
/// idle keep-alive one — is closed, and a body not sent within
/// `options.body_read_timeout` is answered with a 408.
pub async fn serve(host: HostHandle, options: HttpOptions) -> Result<Server, ServeError> {
    Ok(bind(options).await?.serve(host))
}
