//! What the host keeps of its events, and what a reconnecting event stream costs:
//! the kept events' payloads are bounded by bytes, the host's own as well as other
//! hosts', and the kept events a stream replays are made into frames one at a
//! time, as its client reads them (16 clients resuming after 256 events of 1 MB,
//! reading nothing, took the host to its end; found by a tester). A stream that
//! lost events for a slow client tells it so once it has read what it holds,
//! without waiting for a next event.

use std::sync::atomic::{AtomicUsize, Ordering};

use koan_test_support::http::{Api, EchoService, SseReader, call, loopback};
use koan_test_support::raw::head;
use koan_test_support::within;
use reqwest::StatusCode;
use serde::{Serialize, Serializer};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};

async fn start(max_streams: usize) -> anyhow::Result<Api> {
    let host = koan::testing::host()
        .service::<EchoService>()
        .build()?
        .start();
    let mut options = loopback();
    options.max_sse_connections = max_streams;
    Api::serve(host, options).await
}

/// The host's own large events: the kept ones hold about `RECENT_BYTES` of
/// payloads, the newest whole, the oldest let go (they were kept whole, not
/// weighed: 256 events of 1 MB, 256 MB).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hosts_own_large_events_are_kept_within_the_byte_budget() -> anyhow::Result<()> {
    let api = start(4).await?;
    let large = 512 * 1024;
    for i in 0..24 {
        api.host
            .emit("Echo", "big", format!("{i:02}{}", "b".repeat(large)))
            .await?;
    }
    let (status, recent) = call(api.get("/api/events/recent")).await?;
    assert_eq!(status, StatusCode::OK);
    let events = recent
        .as_array()
        .ok_or_else(|| anyhow::anyhow!("not a list: {recent}"))?;
    assert_eq!(events.len(), 24, "every event is kept");
    let whole = |e: &serde_json::Value| e["payload"].is_string();
    assert!(whole(&events[0]), "the newest whole");
    assert!(
        events[23]["payload"]["payload_dropped"].is_string(),
        "the oldest let go: {:.100}",
        events[23]
    );
    let held: usize = events
        .iter()
        .filter(|e| whole(e))
        .map(|e| e["payload"].as_str().map_or(0, str::len))
        .sum();
    assert!(
        held <= koan::event::RECENT_BYTES,
        "{held} bytes of payloads kept, past {}",
        koan::event::RECENT_BYTES
    );
    api.stop().await
}

/// Times any [`Counted`] payload was written as JSON.
static WRITTEN: AtomicUsize = AtomicUsize::new(0);

/// A payload that counts its serializations: each frame of it a stream makes is one.
struct Counted(String);

impl Serialize for Counted {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        WRITTEN.fetch_add(1, Ordering::Relaxed);
        s.serialize_str(&self.0)
    }
}

/// Opens `/api/events` as a browser resuming with an id of another boot would, on
/// a socket with a small receive buffer, reads the answer's status line and
/// nothing more.
async fn stuck_reconnect(api: &Api) -> anyhow::Result<TcpStream> {
    let socket = TcpSocket::new_v4()?;
    socket.set_recv_buffer_size(4096)?;
    let mut stream = socket.connect(api.server_addr()).await?;
    let request = head("GET", "/api/events", &["Last-Event-ID: 0badf00d.1"]);
    stream.write_all(request.as_bytes()).await?;
    let mut status = [0u8; 12];
    within("the stream's answer", stream.read_exact(&mut status)).await??;
    anyhow::ensure!(&status == b"HTTP/1.1 200", "{status:?}");
    Ok(stream)
}

/// Streams that resume and read nothing are not each made a frame of every kept
/// event: a frame is made when the socket takes the one before (each stream made
/// them all before it sent one, a copy of every kept event per stream, and went on
/// after its client left). A client that reads gets them all, in order; one that
/// leaves gives its place back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replay_is_made_as_the_client_reads_it() -> anyhow::Result<()> {
    const STREAMS: usize = 4;
    // 28 of 256 KiB: all kept whole (7 MiB), more than the sockets hold.
    const KEPT: usize = 28;
    let api = start(STREAMS).await?;
    for i in 0..KEPT {
        let text = format!("{i:02}{}", "r".repeat(256 * 1024));
        api.host.emit("Echo", "big", Counted(text)).await?;
    }
    let before = WRITTEN.load(Ordering::Relaxed);
    let mut stuck = Vec::new();
    for _ in 0..STREAMS {
        stuck.push(stuck_reconnect(&api).await?);
    }
    let made = WRITTEN.load(Ordering::Relaxed) - before;
    assert!(
        made < STREAMS * KEPT,
        "{made} frames made for {STREAMS} streams that read nothing, of {KEPT} kept events"
    );

    // The clients leave: their streams end, and their places come back.
    drop(stuck);
    let reader = within("a place among the streams", async {
        loop {
            let resp = api
                .get("/api/events")
                .header("Last-Event-ID", "0badf00d.1")
                .send()
                .await?;
            if resp.status() == StatusCode::OK {
                return SseReader::new(resp);
            }
            tokio::time::sleep(std::time::Duration::from_millis(5)).await;
        }
    })
    .await??;
    let mut reader = reader;
    let first = reader.next_data().await?;
    assert!(first["message"].is_string(), "`missed` first: {first}");
    for i in 0..KEPT {
        let event = reader.next_data().await?;
        let text = event["payload"].as_str().unwrap_or_default();
        assert!(
            text.starts_with(&format!("{i:02}r")),
            "event {i}: {:.40}",
            text
        );
    }
    api.stop().await
}

/// Payloads alive now (made, not yet dropped).
static ALIVE: AtomicUsize = AtomicUsize::new(0);

/// A payload of a megabyte that counts how many of it are alive.
struct Alive(String);

impl Alive {
    fn new(i: usize) -> Self {
        ALIVE.fetch_add(1, Ordering::SeqCst);
        Alive(format!("{i:03}{}", "a".repeat(1024 * 1024)))
    }
}

impl Drop for Alive {
    fn drop(&mut self) {
        ALIVE.fetch_sub(1, Ordering::SeqCst);
    }
}

impl Serialize for Alive {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.0)
    }
}

/// A live stream whose client reads nothing holds at most about the host's kept
/// events' bytes of live events, not 256 of them whatever their size: the others
/// are dropped (a miss it is told of), their payloads let go. 64 stuck clients of
/// 1 MB events took a host to 1.16 GB (a re-probe).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stuck_live_stream_holds_its_events_by_bytes() -> anyhow::Result<()> {
    // No write timeout: the stuck client stays (a cut one lets all go anyway).
    let host = koan::testing::host()
        .service::<EchoService>()
        .build()?
        .start();
    let mut options = loopback();
    options.write_timeout = None;
    let api = Api::serve(host, options).await?;
    let socket = TcpSocket::new_v4()?;
    socket.set_recv_buffer_size(4096)?;
    let mut stream = socket.connect(api.server_addr()).await?;
    stream
        .write_all(head("GET", "/api/events", &[]).as_bytes())
        .await?;
    let mut status = [0u8; 12];
    within("the stream's answer", stream.read_exact(&mut status)).await??;
    anyhow::ensure!(&status == b"HTTP/1.1 200", "{status:?}");
    for i in 0..64 {
        api.host.emit("Echo", "big", Alive::new(i)).await?;
    }
    // The kept events hold about 8 MiB of them, the stream as much again (and the
    // one being written): far fewer than the 64 its 256 places would hold.
    koan_test_support::wait_for("the stuck stream to let payloads go", async || {
        Ok((ALIVE.load(Ordering::SeqCst) <= 20).then_some(()))
    })
    .await?;
    drop(stream);
    api.stop().await
}

/// A client too slow for a burst, the burst over and nothing emitted after it:
/// once it has read what its stream held, it is told that events were missed
/// (then sent the kept ones). It was told only at the next live event, and
/// with none it never learnt of its loss (a probe).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stream_that_lost_events_says_so_without_a_next_event() -> anyhow::Result<()> {
    // No write timeout: the client stays while it reads nothing.
    let host = koan::testing::host()
        .service::<EchoService>()
        .build()?
        .start();
    let mut options = loopback();
    options.write_timeout = None;
    let api = Api::serve(host, options).await?;
    let socket = TcpSocket::new_v4()?;
    socket.set_recv_buffer_size(4096)?;
    let mut stream = socket.connect(api.server_addr()).await?;
    stream
        .write_all(head("GET", "/api/events", &[]).as_bytes())
        .await?;
    let mut status = [0u8; 12];
    within("the stream's answer", stream.read_exact(&mut status)).await??;
    anyhow::ensure!(&status == b"HTTP/1.1 200", "{status:?}");
    // Far more than the stream holds (8 MiB of them) and the sockets do, and
    // than the host keeps (256), while the client reads nothing: once the stream
    // is full every later one is dropped for it, the burst's end too, and the
    // first dropped are gone from the kept ones.
    const BURST: usize = 1000;
    for i in 0..BURST {
        api.host
            .emit("Echo", "burst", format!("{i:04}{}", "x".repeat(64 * 1024)))
            .await?;
    }
    // Then it reads, and nothing more is emitted.
    within(
        "a `missed` frame after the held events",
        read_until(
            &mut stream,
            "no longer kept when this stream could send them",
        ),
    )
    .await??;
    // The last of the burst, kept, comes after it.
    let last = format!("{:04}x", BURST - 1);
    within(
        "the burst's last event after the notice",
        read_until(&mut stream, &last),
    )
    .await??;
    drop(stream);
    api.stop().await
}

/// Reads `stream` until `text` comes.
async fn read_until(stream: &mut TcpStream, text: &str) -> anyhow::Result<()> {
    let mut tail: Vec<u8> = Vec::new();
    let mut chunk = vec![0u8; 64 * 1024];
    loop {
        let n = stream.read(&mut chunk).await?;
        anyhow::ensure!(n > 0, "the stream ended before {text:?}");
        tail.extend_from_slice(&chunk[..n]);
        if String::from_utf8_lossy(&tail).contains(text) {
            return Ok(());
        }
        // Only what could hold the start of `text` is kept for the next read.
        let keep = tail.len().min(text.len() + 4);
        tail.drain(..tail.len() - keep);
    }
}
