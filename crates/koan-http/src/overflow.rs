//! The answer to a connection beyond the cap: a 503 with a JSON body and
//! `Connection: close`, sent as soon as the request head is in (or after a short
//! wait for it), without touching the router.

use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// How long a connection beyond the cap may take to send its request head. The
/// answer goes after the head, because an HTTP client may reject an answer that
/// comes before its request was written.
const HEAD_WAIT: Duration = Duration::from_millis(500);
/// How long the client then has to take the answer and go.
const LINGER: Duration = Duration::from_secs(1);
/// The most read from a refused connection.
const MAX_READ: usize = 16 * 1024;

const BODY: &str = "{\"error\":\"too_many_connections\",\"message\":\"the server is at its connection cap (`koan.http.max_connections`); retry shortly (with a token configured, a request that carries it is still served)\"}";

/// Reads what the client sends of its request head within [`HEAD_WAIT`]: the bytes
/// read (at most about [`MAX_READ`]), and whether the head is whole.
pub(crate) async fn read_head(stream: &mut TcpStream) -> (Vec<u8>, bool) {
    let mut buf = [0u8; 4096];
    let mut seen = Vec::new();
    let whole = tokio::time::timeout(HEAD_WAIT, async {
        while let Ok(n) = stream.read(&mut buf).await {
            if n == 0 {
                return false;
            }
            seen.extend_from_slice(&buf[..n]);
            if seen.windows(4).any(|w| w == b"\r\n\r\n") {
                return true;
            }
            if seen.len() > MAX_READ {
                return false;
            }
        }
        false
    })
    .await
    .unwrap_or(false);
    (seen, whole)
}

/// Waits briefly for the request head, writes the 503, then reads (and drops) what
/// the client still sends for a short while, so closing does not reset the
/// connection before the client has read the answer.
pub(crate) async fn refuse(mut stream: TcpStream) {
    let _ = read_head(&mut stream).await;
    refuse_after_head(stream).await;
}

/// [`refuse`], the head already read.
pub(crate) async fn refuse_after_head(mut stream: TcpStream) {
    let mut buf = [0u8; 4096];
    let answer = format!(
        "HTTP/1.1 503 Service Unavailable\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\nretry-after: 1\r\n\r\n{BODY}",
        BODY.len()
    );
    let _ = tokio::time::timeout(LINGER, async {
        if stream.write_all(answer.as_bytes()).await.is_err() {
            return;
        }
        let _ = stream.shutdown().await;
        let mut total = 0usize;
        while let Ok(n) = stream.read(&mut buf).await {
            total += n;
            if n == 0 || total > MAX_READ {
                break;
            }
        }
    })
    .await;
}
