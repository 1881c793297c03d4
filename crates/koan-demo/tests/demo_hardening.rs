//! The demo binary, hardened: a taken port is found before any startup service (the
//! database migration) runs, and a caller's string cannot forge a log line.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

/// The safety net of every wait: a test that gets here has failed.
const PATIENCE: Duration = Duration::from_secs(60);

/// A fresh directory for one run (no `koan.toml` there, a database of its own).
fn scratch(name: &str) -> anyhow::Result<PathBuf> {
    let dir = std::env::temp_dir().join(format!("koan-demo-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir)?;
    Ok(dir)
}

fn demo(dir: &PathBuf, http: &str) -> anyhow::Result<Child> {
    Ok(Command::new(env!("CARGO_BIN_EXE_koan-demo"))
        .current_dir(dir)
        .args(["--http", http, "--db"])
        .arg(dir.join("demo.db"))
        .env("RUST_LOG", "info")
        .env_remove("KOAN_CONFIG")
        .env_remove("KOAN_HTTP_TOKEN")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()?)
}

/// Every line the child writes, on either stream, as it comes.
fn lines(child: &mut Child) -> mpsc::Receiver<String> {
    let (tx, rx) = mpsc::channel();
    let out: Vec<Box<dyn Read + Send>> = [
        child
            .stdout
            .take()
            .map(|s| Box::new(s) as Box<dyn Read + Send>),
        child
            .stderr
            .take()
            .map(|s| Box::new(s) as Box<dyn Read + Send>),
    ]
    .into_iter()
    .flatten()
    .collect();
    for stream in out {
        let tx = tx.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stream).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    return;
                }
            }
        });
    }
    rx
}

/// Reads lines until one satisfies `done`; returns every line read.
fn until(
    rx: &mpsc::Receiver<String>,
    what: &str,
    done: impl Fn(&str) -> bool,
) -> anyhow::Result<Vec<String>> {
    let end = Instant::now() + PATIENCE;
    let mut seen = Vec::new();
    loop {
        let left = end.saturating_duration_since(Instant::now());
        match rx.recv_timeout(left) {
            Ok(line) => {
                let stop = done(&line);
                seen.push(line);
                if stop {
                    return Ok(seen);
                }
            }
            Err(_) => anyhow::bail!(
                "timed out waiting for {what}; output so far:\n{}",
                seen.join("\n")
            ),
        }
    }
}

#[test]
fn a_taken_port_stops_the_demo_before_its_migration_runs() -> anyhow::Result<()> {
    let dir = scratch("taken")?;
    let taken = TcpListener::bind("127.0.0.1:0")?;
    let mut child = demo(&dir, &taken.local_addr()?.to_string())?;
    let end = Instant::now() + PATIENCE;
    let status = loop {
        if let Some(s) = child.try_wait()? {
            break s;
        }
        if Instant::now() > end {
            let _ = child.kill();
            anyhow::bail!("the demo kept running on a taken port");
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let mut err = String::new();
    if let Some(mut e) = child.stderr.take() {
        e.read_to_string(&mut err)?;
    }
    let mut out = String::new();
    if let Some(mut o) = child.stdout.take() {
        o.read_to_string(&mut out)?;
    }
    assert!(!status.success(), "{status}");
    assert!(err.contains("cannot listen on"), "{err}");
    assert!(
        !out.contains("migration completed"),
        "the migration ran:\n{out}"
    );
    assert!(!dir.join("demo.db").exists(), "the database was created");
    let _ = std::fs::remove_dir_all(&dir);
    Ok(())
}

#[test]
fn a_callers_string_cannot_forge_a_log_line() -> anyhow::Result<()> {
    let dir = scratch("logs")?;
    let mut child = demo(&dir, "127.0.0.1:0")?;
    let rx = lines(&mut child);
    let result = (|| {
        let seen = until(&rx, "the listening address", |l| {
            l.starts_with("listening on http://")
        })?;
        let addr = seen
            .last()
            .and_then(|l| l.strip_prefix("listening on http://"))
            .unwrap_or_default()
            .to_owned();
        let filter = "x\n2099-01-01T00:00:00.000000Z  INFO forged: admin logged in\u{1b}[2K";
        let body = serde_json::json!({ "filter": filter }).to_string();
        let mut c = TcpStream::connect(&addr)?;
        c.set_read_timeout(Some(PATIENCE))?;
        write!(
            c,
            "POST /api/services/DataCleanupService/process-batch?wait=true HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
            body.len()
        )?;
        let mut answer = String::new();
        c.read_to_string(&mut answer)?;
        assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
        let logged = until(&rx, "the filter's log line", |l| {
            l.contains("process-batch filter")
        })?;
        anyhow::Ok(logged)
    })();
    let _ = child.kill();
    let _ = child.wait();
    let _ = std::fs::remove_dir_all(&dir);
    let logged = result?;
    // The whole filter stays on the line that logs it, escaped: nothing it carries
    // starts a line of its own.
    let line = logged.last().map(String::as_str).unwrap_or_default();
    assert!(
        line.contains("forged: admin logged in"),
        "the filter was split off its line: {line:?}"
    );
    assert!(
        !line.contains("\u{1b}[2K"),
        "the caller's escape sequence, raw: {line:?}"
    );
    Ok(())
}
