//! `/metrics` at a bounded cost, whatever the number of scrapers. The route is open
//! (scrapers have no token), and a scrape of a large host is large (10,000 services:
//! 3.18 MB): rendered for each request, and held by each until its client had read
//! it, 100 slow readers took a host to 1.14 GB, and 350 to its end (found by a
//! tester). So:
//!
//! - one render at a time, and every scrape that waited for it is sent the same
//!   bytes: a scrape is sent a render begun after it arrived (never one older than
//!   its request), and scrapes arriving together share one;
//! - at most [`MAX_SCRAPES`] scrapes in flight, from their arrival until their
//!   answer is sent (or its client gone); one beyond them is answered 503 with
//!   `Retry-After: 1`.
//!
//! A host then holds at most [`MAX_SCRAPES`] + 1 renders, however many scrapers.

use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use axum::body::{Body, Bytes};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use koan::HostHandle;
use tokio::sync::{Mutex, OwnedSemaphorePermit, Semaphore};

use crate::error::ApiError;

/// The most scrapes of `/metrics` in flight at once.
pub(crate) const MAX_SCRAPES: usize = 16;

// The route table (`lib.rs`) and docs/dashboard.md say how many.
const _: () = assert!(MAX_SCRAPES == 16);

/// How much of a render is handed to the connection at a time: a scrape's place
/// is given back once its client has taken the last.
const CHUNK: usize = 64 * 1024;

/// The scrapes of one plane: their places, and the renders they share.
pub(crate) struct Scrapes {
    places: Arc<Semaphore>,
    /// Held while a render is made: one at a time.
    turn: Mutex<()>,
    /// Renders begun so far.
    begun: AtomicU64,
    /// The last render made, by its number.
    last: std::sync::Mutex<Option<(u64, Bytes)>>,
}

impl Default for Scrapes {
    fn default() -> Self {
        Scrapes {
            places: Arc::new(Semaphore::new(MAX_SCRAPES)),
            turn: Mutex::new(()),
            begun: AtomicU64::new(0),
            last: std::sync::Mutex::new(None),
        }
    }
}

impl Scrapes {
    /// The answer to a scrape of `host`.
    pub(crate) async fn answer(&self, host: &HostHandle) -> Response {
        let arrived = self.begun.load(Ordering::Acquire);
        let Ok(place) = Arc::clone(&self.places).try_acquire_owned() else {
            return busy();
        };
        let text = self
            .shared(arrived, || async {
                Bytes::from(crate::metrics::render(host).await)
            })
            .await;
        (
            [
                (
                    header::CONTENT_TYPE,
                    HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8"),
                ),
                (header::CONTENT_LENGTH, HeaderValue::from(text.len())),
            ],
            sent_with(text, place),
        )
            .into_response()
    }

    /// A render begun after `arrived` renders had begun: the last one, when it
    /// was, or one made now with `render`, when it is this scrape's turn.
    async fn shared<F, Fut>(&self, arrived: u64, render: F) -> Bytes
    where
        F: FnOnce() -> Fut,
        Fut: Future<Output = Bytes>,
    {
        let _turn = self.turn.lock().await;
        if let Some((n, text)) = &*self.last()
            && *n > arrived
        {
            return text.clone();
        }
        let n = self.begun.fetch_add(1, Ordering::AcqRel) + 1;
        let text = render().await;
        *self.last() = Some((n, text.clone()));
        text
    }

    fn last(&self) -> std::sync::MutexGuard<'_, Option<(u64, Bytes)>> {
        self.last.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// How long a scrape may take to be sent: a client that reads a byte every 29 s
/// makes progress the connection's write timeout counts, and 16 such clients
/// held every place for good (a review). Past it, its place is given back, its
/// render let go, and its connection cut.
pub(crate) const SEND_LIMIT: std::time::Duration = std::time::Duration::from_secs(30);

/// What a scrape still has to send, and its place: taken when it is all sent, at
/// [`SEND_LIMIT`], or when the client goes (its body dropped).
type Sending = Arc<std::sync::Mutex<Option<(Bytes, OwnedSemaphorePermit)>>>;

/// The body's hold on its [`Sending`]: dropped with the body (all sent, or the
/// client gone), it gives the place back at once and stops the limit's timer.
struct Held {
    sending: Sending,
    limit: tokio::task::JoinHandle<()>,
}

impl Drop for Held {
    fn drop(&mut self) {
        take(&self.sending);
        self.limit.abort();
    }
}

/// `text` as a body sent a chunk at a time (a copy: a slice would keep the whole
/// render alive while the connection holds it), `place` held until the last
/// chunk is taken, the client goes, or [`SEND_LIMIT`] passes.
fn sent_with(text: Bytes, place: OwnedSemaphorePermit) -> Body {
    let sending: Sending = Arc::new(std::sync::Mutex::new(Some((text, place))));
    let at_limit = Arc::clone(&sending);
    let limit = tokio::spawn(async move {
        tokio::time::sleep(SEND_LIMIT).await;
        take(&at_limit);
    });
    let held = Held { sending, limit };
    let chunks = futures_util::stream::unfold((held, 0usize), |(held, at)| async move {
        let mut left = held.sending.lock().unwrap_or_else(|p| p.into_inner());
        let Some((text, _)) = left.as_ref() else {
            // Taken at the limit: the connection is cut (the body is shorter
            // than its length), never answered with part of a render as whole.
            drop(left);
            return (at != usize::MAX).then(|| {
                let late = std::io::Error::new(
                    std::io::ErrorKind::TimedOut,
                    "the scrape was not read within its limit",
                );
                (Err(late), (held, usize::MAX))
            });
        };
        if at >= text.len() {
            *left = None;
            return None;
        }
        let end = text.len().min(at + CHUNK);
        let chunk = Bytes::copy_from_slice(&text[at..end]);
        drop(left);
        Some((Ok::<_, std::io::Error>(chunk), (held, end)))
    });
    Body::from_stream(chunks)
}

fn take(sending: &Sending) {
    sending.lock().unwrap_or_else(|p| p.into_inner()).take();
}

fn busy() -> Response {
    let mut r = ApiError::new(
        StatusCode::SERVICE_UNAVAILABLE,
        "too_many_scrapes",
        format!("{MAX_SCRAPES} scrapes of /metrics are being answered; retry in a second"),
    )
    .into_response();
    r.headers_mut()
        .insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
    r
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A client that reads too slowly gives its place back at the limit, and its
    /// connection is cut rather than sent a part of the render as the whole.
    #[tokio::test(start_paused = true)]
    async fn a_scrape_not_read_within_its_limit_gives_its_place_back() {
        use http_body_util::BodyExt as _;
        let places = Arc::new(Semaphore::new(1));
        let place = Arc::clone(&places).try_acquire_owned().expect("a place");
        let mut body = sent_with(Bytes::from(vec![b'x'; 3 * CHUNK]), place);
        let first = body.frame().await.expect("a chunk").expect("read in time");
        assert_eq!(first.into_data().map(|d| d.len()).ok(), Some(CHUNK));
        assert_eq!(places.available_permits(), 0, "held while it is sent");
        tokio::time::sleep(SEND_LIMIT + std::time::Duration::from_millis(1)).await;
        assert_eq!(places.available_permits(), 1, "given back at the limit");
        assert!(body.frame().await.expect("an answer").is_err(), "cut");
    }

    /// Scrapes that arrive while a render is made share the next one: the same
    /// bytes, rendered once; a scrape is never sent a render begun before it came.
    #[tokio::test]
    async fn scrapes_that_arrive_during_a_render_share_the_next() {
        let scrapes = Arc::new(Scrapes::default());
        let (release, held) = tokio::sync::oneshot::channel::<()>();
        let (started, rendering) = tokio::sync::oneshot::channel::<()>();
        let renders = Arc::new(AtomicU64::new(0));
        let first = tokio::spawn({
            let scrapes = Arc::clone(&scrapes);
            async move {
                let arrived = scrapes.begun.load(Ordering::Acquire);
                scrapes
                    .shared(arrived, || async {
                        let _ = started.send(());
                        let _ = held.await;
                        Bytes::from_static(b"first")
                    })
                    .await
            }
        });
        let _ = rendering.await;
        // Both arrive while the first render is being made.
        let later = [0, 1].map(|_| {
            let arrived = scrapes.begun.load(Ordering::Acquire);
            let (scrapes, renders) = (Arc::clone(&scrapes), Arc::clone(&renders));
            async move {
                scrapes
                    .shared(arrived, || async {
                        renders.fetch_add(1, Ordering::Relaxed);
                        Bytes::from(format!("render {}", renders.load(Ordering::Relaxed)))
                    })
                    .await
            }
        });
        let [a, b] = later;
        let _ = release.send(());
        let (a, b) = tokio::join!(a, b);
        assert_eq!(first.await.ok(), Some(Bytes::from_static(b"first")));
        assert_eq!((&a[..], &b[..]), (&b"render 1"[..], &b"render 1"[..]));
        assert_eq!(a.as_ptr(), b.as_ptr(), "one render, its bytes shared");
        assert_eq!(renders.load(Ordering::Relaxed), 1);
        // A scrape after them is sent a new one.
        let arrived = scrapes.begun.load(Ordering::Acquire);
        let again = scrapes
            .shared(arrived, || async { Bytes::from_static(b"later") })
            .await;
        assert_eq!(&again[..], b"later");
    }
}
