//! B7: `POST /api/services/{name}/actions/{action}` under load, against a bare axum
//! route doing the same channel send.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, anyhow};
use axum::extract::{Path, State};
use axum::routing::post;
use axum::{Json, Router};
use bytes::Bytes;
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

use crate::actions::{raw_json_call, raw_json_server, start_calc_host, stop_host};
use crate::common::{Better, Opts, Row, median};

const PATH: &str = "/api/services/Calc/actions/add";
const BODY: &str = r#"{"a":41,"b":1}"#;

async fn baseline_handler(
    State(tx): State<tokio::sync::mpsc::Sender<(Value, tokio::sync::oneshot::Sender<Value>)>>,
    Path((name, action)): Path<(String, String)>,
    body: Bytes,
) -> Result<Json<Value>, (axum::http::StatusCode, String)> {
    let bad = |e: String| (axum::http::StatusCode::BAD_REQUEST, e);
    let params: Value = serde_json::from_slice(&body).map_err(|e| bad(e.to_string()))?;
    let out = raw_json_call(&tx, params)
        .await
        .map_err(|e| (axum::http::StatusCode::INTERNAL_SERVER_ERROR, e.to_string()))?;
    // The same envelope koan-http answers with.
    Ok(Json(
        json!({ "service": name, "action": action, "result": out }),
    ))
}

async fn serve_baseline() -> anyhow::Result<(SocketAddr, tokio::task::JoinHandle<()>)> {
    let tx = raw_json_server();
    let app = Router::new()
        .route(
            "/api/services/{name}/actions/{action}",
            post(baseline_handler),
        )
        .with_state(tx);
    let listener = TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    let task = tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    Ok((addr, task))
}

/// Reads one HTTP/1.1 response (Content-Length framing); returns the status code.
async fn read_response(s: &mut TcpStream, buf: &mut Vec<u8>) -> anyhow::Result<u16> {
    buf.clear();
    let mut chunk = [0u8; 4096];
    let head_end = loop {
        if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break i + 4;
        }
        let n = s.read(&mut chunk).await?;
        if n == 0 {
            return Err(anyhow!("connection closed by the server"));
        }
        buf.extend_from_slice(&chunk[..n]);
    };
    let head = std::str::from_utf8(&buf[..head_end])?;
    let status: u16 = head
        .split(' ')
        .nth(1)
        .and_then(|c| c.parse().ok())
        .context("no status code")?;
    let len: usize = head
        .lines()
        .find_map(|l| {
            let (k, v) = l.split_once(':')?;
            k.eq_ignore_ascii_case("content-length")
                .then(|| v.trim().parse().ok())
                .flatten()
        })
        .context("response without Content-Length")?;
    while buf.len() < head_end + len {
        let n = s.read(&mut chunk).await?;
        if n == 0 {
            return Err(anyhow!("connection closed mid-body"));
        }
        buf.extend_from_slice(&chunk[..n]);
    }
    Ok(status)
}

/// Requests/s of `conns` keep-alive connections sending `total` requests (or for at
/// most `limit`).
async fn load(addr: SocketAddr, conns: usize, total: i64, limit: Duration) -> anyhow::Result<f64> {
    let request = format!(
        "POST {PATH} HTTP/1.1\r\nHost: {addr}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{BODY}",
        BODY.len()
    );
    let request = Arc::new(request.into_bytes());
    let left = Arc::new(AtomicI64::new(total));
    let done = Arc::new(AtomicU64::new(0));
    let deadline = Instant::now() + limit;
    let t = Instant::now();
    let mut tasks = Vec::new();
    for _ in 0..conns {
        let (request, left, done) = (Arc::clone(&request), Arc::clone(&left), Arc::clone(&done));
        tasks.push(tokio::spawn(async move {
            let mut s = TcpStream::connect(addr).await?;
            s.set_nodelay(true)?;
            let mut buf = Vec::with_capacity(8192);
            while left.fetch_sub(1, Ordering::AcqRel) > 0 && Instant::now() < deadline {
                s.write_all(&request).await?;
                let status = read_response(&mut s, &mut buf).await?;
                if status != 200 {
                    return Err(anyhow!("HTTP {status}: {}", String::from_utf8_lossy(&buf)));
                }
                done.fetch_add(1, Ordering::Relaxed);
            }
            Ok::<(), anyhow::Error>(())
        }));
    }
    for task in tasks {
        task.await??;
    }
    Ok(done.load(Ordering::Acquire) as f64 / t.elapsed().as_secs_f64())
}

/// One request through reqwest, to check the answer before loading the server.
async fn check(addr: SocketAddr) -> anyhow::Result<()> {
    let v: Value = reqwest::Client::new()
        .post(format!("http://{addr}{PATH}"))
        .header("content-type", "application/json")
        .body(BODY)
        .send()
        .await?
        .error_for_status()?
        .json()
        .await?;
    if v["result"] != json!(42) {
        return Err(anyhow!("unexpected answer from {addr}: {v}"));
    }
    Ok(())
}

pub(crate) async fn b7(opts: Opts) -> anyhow::Result<Vec<Row>> {
    let host = start_calc_host().await?;
    let server = koan_http::serve(
        host.clone(),
        koan_http::HttpOptions {
            bind: SocketAddr::from(([127, 0, 0, 1], 0)),
            from_configuration: true,
            ..Default::default()
        },
    )
    .await?;
    let koan_addr = server.local_addr();
    let (base_addr, base_task) = serve_baseline().await?;
    check(koan_addr).await.context("koan-http")?;
    check(base_addr).await.context("axum baseline")?;

    let conns = 32;
    let total = opts.pick(40_000, 1_000);
    let limit = opts.pick(Duration::from_secs(20), Duration::from_secs(5));
    let rounds = opts.rounds(5);
    let (mut ks, mut bs) = (Vec::new(), Vec::new());
    for round in 0..=rounds {
        let k = load(koan_addr, conns, total, limit).await?;
        let b = load(base_addr, conns, total, limit).await?;
        if round > 0 {
            ks.push(k);
            bs.push(b);
        }
    }
    base_task.abort();
    stop_host(host).await;
    let _ = server.wait().await;

    let row = Row::new(
        "B7",
        "HTTP action, 32 keep-alive connections",
        "req/s",
        Better::Higher,
        median(&ks),
    )
    .baseline("bare axum + mpsc/oneshot", Some(median(&bs)));
    let met = row.ratio("bare axum + mpsc/oneshot").map(|r| r >= 0.9);
    Ok(vec![row.goal("≥ 0.9× axum", met).note(format!(
        "{total} requests/round × {rounds} rounds, raw HTTP/1.1 load generator in-process"
    ))])
}
