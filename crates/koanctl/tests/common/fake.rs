//! A tiny HTTP/1.1 server that answers as it is told, to meet `koanctl` with hosts that
//! misbehave: one that never answers, one that stalls mid-body, one whose answer never
//! ends, one whose text steers the terminal, one that redirects elsewhere.

use std::sync::Arc;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinHandle;

/// How the fake server answers one request.
pub(crate) enum Reply {
    /// Takes the request and never answers.
    Silent,
    /// Sends the head and the first bytes of a 100-byte JSON body, then nothing.
    StallMidBody,
    /// `200` of `content_type`: `prefix`, then `filler` again and again until the
    /// client goes away.
    Endless {
        content_type: &'static str,
        prefix: &'static [u8],
        filler: Vec<u8>,
    },
    /// `status` with `body` of `content_type`, then the connection closes.
    Body {
        status: u16,
        content_type: &'static str,
        body: Vec<u8>,
    },
    /// `200 text/event-stream` with `body`; then the server closes the stream, or
    /// keeps it open and sends nothing more.
    Stream { body: Vec<u8>, close: bool },
    /// `status` (a 3xx) sending the client to `location`, with a short body.
    Redirect { status: u16, location: String },
    /// These bytes as they are (not HTTP), then the connection closes.
    Raw(Vec<u8>),
}

impl Reply {
    /// `200` with `body` as JSON.
    pub(crate) fn json(body: &serde_json::Value) -> Reply {
        Reply::Body {
            status: 200,
            content_type: "application/json",
            body: body.to_string().into_bytes(),
        }
    }
}

/// A fake control plane on a loopback port; it stops accepting when dropped.
pub(crate) struct Fake {
    /// Its base URL, `http://127.0.0.1:PORT`.
    pub(crate) url: String,
    accept: JoinHandle<()>,
}

type Route = dyn Fn(&str) -> Reply + Send + Sync;

impl Fake {
    /// Serves `route`, which maps a request line's `METHOD /target` to its reply.
    pub(crate) async fn start(
        route: impl Fn(&str) -> Reply + Send + Sync + 'static,
    ) -> anyhow::Result<Fake> {
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let url = format!("http://{}", listener.local_addr()?);
        let route: Arc<Route> = Arc::new(route);
        let accept = tokio::spawn(async move {
            while let Ok((conn, _)) = listener.accept().await {
                tokio::spawn(serve(conn, Arc::clone(&route)));
            }
        });
        Ok(Fake { url, accept })
    }

    /// A fake that answers every request with what `reply` makes.
    pub(crate) async fn always(
        reply: impl Fn() -> Reply + Send + Sync + 'static,
    ) -> anyhow::Result<Fake> {
        Fake::start(move |_| reply()).await
    }
}

impl Drop for Fake {
    fn drop(&mut self) {
        self.accept.abort();
    }
}

/// Reads one request (its head, and a body of `Content-Length`), answers it, and
/// holds the connection until the client lets go.
async fn serve(mut conn: TcpStream, route: Arc<Route>) {
    let Some(request_line) = read_request(&mut conn).await else {
        return;
    };
    let reply = route(&request_line);
    // Errors writing mean the client left: nothing more to do either way.
    let _ = answer(&mut conn, reply).await;
    // Read until the client closes, so that it never sees a reset.
    let mut sink = [0u8; 4096];
    while matches!(conn.read(&mut sink).await, Ok(n) if n > 0) {}
}

/// The request line (`GET /api/services`) of the request on `conn`, its head and body
/// read.
async fn read_request(conn: &mut TcpStream) -> Option<String> {
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        if head.len() > 64 * 1024 || conn.read(&mut byte).await.ok()? == 0 {
            return None;
        }
        head.push(byte[0]);
    }
    let head = String::from_utf8_lossy(&head).into_owned();
    let length: usize = head
        .lines()
        .filter_map(|l| l.split_once(':'))
        .find(|(k, _)| k.eq_ignore_ascii_case("content-length"))
        .and_then(|(_, v)| v.trim().parse().ok())
        .unwrap_or(0);
    let mut body = vec![0u8; length];
    conn.read_exact(&mut body).await.ok()?;
    let line = head.lines().next()?;
    let mut words = line.split(' ');
    Some(format!("{} {}", words.next()?, words.next()?))
}

async fn answer(conn: &mut TcpStream, reply: Reply) -> std::io::Result<()> {
    match reply {
        Reply::Silent => Ok(()),
        Reply::Raw(bytes) => {
            conn.write_all(&bytes).await?;
            conn.shutdown().await
        }
        Reply::StallMidBody => {
            conn.write_all(
                b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: 100\r\n\r\n[1,",
            )
            .await
        }
        Reply::Endless {
            content_type,
            prefix,
            filler,
        } => {
            let head = format!(
                "HTTP/1.1 200 OK\r\ncontent-type: {content_type}\r\nconnection: close\r\n\r\n"
            );
            conn.write_all(head.as_bytes()).await?;
            conn.write_all(prefix).await?;
            loop {
                conn.write_all(&filler).await?;
            }
        }
        Reply::Body {
            status,
            content_type,
            body,
        } => {
            let head = format!(
                "HTTP/1.1 {status} Whatever\r\ncontent-type: {content_type}\r\n\
                 content-length: {}\r\nconnection: close\r\n\r\n",
                body.len()
            );
            conn.write_all(head.as_bytes()).await?;
            conn.write_all(&body).await?;
            conn.shutdown().await
        }
        Reply::Redirect { status, location } => {
            let body = format!("moved to {location}");
            let head = format!(
                "HTTP/1.1 {status} Moved\r\nlocation: {location}\r\ncontent-type: text/plain\r\n\
                 content-length: {}\r\nconnection: close\r\n\r\n",
                body.len()
            );
            conn.write_all(head.as_bytes()).await?;
            conn.write_all(body.as_bytes()).await?;
            conn.shutdown().await
        }
        Reply::Stream { body, close } => {
            conn.write_all(
                b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\nconnection: close\r\n\r\n",
            )
            .await?;
            conn.write_all(&body).await?;
            if close {
                conn.shutdown().await?;
            }
            Ok(())
        }
    }
}
