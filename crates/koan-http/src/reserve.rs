//! Connections kept for the token's holder when the cap is reached. With a token
//! configured, anyone could hold every connection slot (1,030 keep-alive
//! connections asking `/health/live` now and then) and the operator's calls were
//! all `503 too_many_connections` (found by a probe). Past the cap, a connection's
//! request head is read first (within the refusal's short wait): one that carries
//! the token is served in a slot of a small reserve, the rest are refused as
//! before. A client without the token cannot take a reserve slot at all.

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// Connections served past the cap for requests that carry the token.
pub(crate) const RESERVE: usize = 32;

/// Whether the request head `head` carries `token`: `Authorization: Bearer …`, or
/// (an event stream from a browser) a `token` query parameter.
pub(crate) fn carries_token(head: &[u8], token: &str) -> bool {
    let mut headers = [httparse::EMPTY_HEADER; 64];
    let mut req = httparse::Request::new(&mut headers);
    if !matches!(req.parse(head), Ok(httparse::Status::Complete(_))) {
        return false;
    }
    let matches = |given: &str| crate::auth::constant_time_eq(given.as_bytes(), token.as_bytes());
    let bearer = req
        .headers
        .iter()
        .filter(|h| h.name.eq_ignore_ascii_case("authorization"))
        .filter_map(|h| std::str::from_utf8(h.value).ok())
        .filter_map(|v| v.split_once(' '))
        .filter(|(scheme, _)| scheme.eq_ignore_ascii_case("bearer"))
        .any(|(_, t)| matches(t.trim()));
    let query = req
        .path
        .and_then(|p| p.split_once('?'))
        .is_some_and(|(_, q)| {
            form_urlencoded::parse(q.as_bytes()).any(|(k, v)| k == "token" && matches(&v))
        });
    bearer || query
}

/// A stream whose first bytes were read already: they are read again first.
pub(crate) struct Prefixed<S> {
    prefix: Vec<u8>,
    at: usize,
    inner: S,
}

impl<S> Prefixed<S> {
    pub(crate) fn new(prefix: Vec<u8>, inner: S) -> Self {
        Prefixed {
            prefix,
            at: 0,
            inner,
        }
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for Prefixed<S> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if this.at < this.prefix.len() {
            let n = (this.prefix.len() - this.at).min(buf.remaining());
            buf.put_slice(&this.prefix[this.at..this.at + n]);
            this.at += n;
            return Poll::Ready(Ok(()));
        }
        Pin::new(&mut this.inner).poll_read(cx, buf)
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Prefixed<S> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().inner).poll_write(cx, buf)
    }
    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_flush(cx)
    }
    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_token_is_found_in_the_header_or_the_query_only_when_right() {
        let t = "s3cret";
        assert!(carries_token(
            b"GET /api/jobs HTTP/1.1\r\nAuthorization: Bearer s3cret\r\n\r\n",
            t
        ));
        assert!(carries_token(
            b"GET /api/jobs HTTP/1.1\r\nauthorization: bearer  s3cret \r\n\r\n",
            t
        ));
        assert!(carries_token(
            b"GET /api/events?token=s3cret HTTP/1.1\r\n\r\n",
            t
        ));
        assert!(!carries_token(
            b"GET /api/jobs HTTP/1.1\r\nAuthorization: Bearer wrong\r\n\r\n",
            t
        ));
        assert!(!carries_token(b"GET /health/live HTTP/1.1\r\n\r\n", t));
        assert!(
            !carries_token(
                b"GET /api/jobs HTTP/1.1\r\nAuthorization: Bearer s3cret\r\n",
                t
            ),
            "a head not whole"
        );
        assert!(!carries_token(b"\x16\x03\x01 not http", t));
    }
}
