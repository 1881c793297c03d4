//! Raw HTTP/1.1 over a `TcpStream`, for what a client library would hide: a body
//! sent slowly, a request head hyper refuses, the exact headers of an answer.

use std::net::SocketAddr;
use std::time::Duration;

use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// An answer read off the wire.
#[derive(Debug)]
pub struct RawAnswer {
    /// The status code.
    pub status: u16,
    /// Header names in lower case.
    pub headers: Vec<(String, String)>,
    /// The body as received (not decoded).
    pub body: Vec<u8>,
}

impl RawAnswer {
    /// The value of the header `name` (in lower case).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }

    /// The body as JSON, failing with the body's text when it is not.
    pub fn json(&self) -> anyhow::Result<Value> {
        serde_json::from_slice(&self.body).map_err(|e| {
            anyhow::anyhow!(
                "a {} answer with a body that is not JSON ({e}): {:?}",
                self.status,
                String::from_utf8_lossy(&self.body)
            )
        })
    }
}

/// Reads one answer from `stream`: the head, then `content-length` bytes of body, or
/// everything until the server closes. Fails after `limit`.
pub async fn read_answer(stream: &mut TcpStream, limit: Duration) -> anyhow::Result<RawAnswer> {
    tokio::time::timeout(limit, read_answer_inner(stream))
        .await
        .map_err(|_| anyhow::anyhow!("no answer within {limit:?}"))?
}

async fn read_answer_inner(stream: &mut TcpStream) -> anyhow::Result<RawAnswer> {
    let mut got = Vec::new();
    let mut buf = [0u8; 8192];
    let head_end = loop {
        if let Some(i) = find(&got, b"\r\n\r\n") {
            break i;
        }
        let n = stream.read(&mut buf).await?;
        anyhow::ensure!(
            n > 0,
            "the connection closed before a complete answer: {:?}",
            String::from_utf8_lossy(&got)
        );
        got.extend_from_slice(&buf[..n]);
    };
    let head = String::from_utf8_lossy(&got[..head_end]).into_owned();
    let mut lines = head.split("\r\n");
    let status_line = lines.next().unwrap_or_default();
    let status: u16 = status_line
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| anyhow::anyhow!("not a status line: {status_line:?}"))?;
    let headers: Vec<(String, String)> = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(n, v)| (n.trim().to_ascii_lowercase(), v.trim().to_owned()))
        .collect();
    let mut body = got[head_end + 4..].to_vec();
    let length = headers
        .iter()
        .find(|(n, _)| n == "content-length")
        .and_then(|(_, v)| v.parse::<usize>().ok());
    loop {
        if length.is_some_and(|l| body.len() >= l) {
            break;
        }
        match stream.read(&mut buf).await {
            Ok(0) | Err(_) => break,
            Ok(n) => body.extend_from_slice(&buf[..n]),
        }
    }
    Ok(RawAnswer {
        status,
        headers,
        body,
    })
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

/// Connects, sends `request` as is, and reads one answer within `limit`.
pub async fn exchange(
    addr: SocketAddr,
    request: &[u8],
    limit: Duration,
) -> anyhow::Result<RawAnswer> {
    let mut stream = TcpStream::connect(addr).await?;
    // A server may answer (and close) before taking all of a request it refuses.
    let _ = stream.write_all(request).await;
    read_answer(&mut stream, limit).await
}

/// A request head with `Host: 127.0.0.1` and the given extra header lines.
pub fn head(method: &str, path: &str, extra: &[&str]) -> String {
    let mut h = format!("{method} {path} HTTP/1.1\r\nHost: 127.0.0.1\r\n");
    for line in extra {
        h.push_str(line);
        h.push_str("\r\n");
    }
    h.push_str("\r\n");
    h
}
