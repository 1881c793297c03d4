//! The peer's address on every request the server serves, as axum's
//! [`ConnectInfo`] (what an app mounting [`crate::router`] gets from
//! `into_make_service_with_connect_info`): a refusal's log line names who was refused.

use std::net::SocketAddr;
use std::task::{Context, Poll};

use axum::extract::ConnectInfo;
use axum::http::Request;

/// `inner`, with `peer` set on each request of one connection.
#[derive(Clone)]
pub(crate) struct WithPeer<S> {
    inner: S,
    peer: SocketAddr,
}

impl<S> WithPeer<S> {
    pub(crate) fn new(inner: S, peer: SocketAddr) -> Self {
        WithPeer { inner, peer }
    }
}

impl<S, B> tower_service::Service<Request<B>> for WithPeer<S>
where
    S: tower_service::Service<Request<B>>,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = S::Future;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut req: Request<B>) -> Self::Future {
        req.extensions_mut().insert(ConnectInfo(self.peer));
        self.inner.call(req)
    }
}

/// The peer of `req`, when known, for a log line.
pub(crate) fn of<B>(req: &Request<B>) -> Option<SocketAddr> {
    req.extensions()
        .get::<ConnectInfo<SocketAddr>>()
        .map(|c| c.0)
}
