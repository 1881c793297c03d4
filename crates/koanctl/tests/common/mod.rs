//! What the `koanctl` tests share: a small koan host served on a loopback port, the
//! compiled binary run against it, and a running `koanctl events` read line by line.

// Each test file uses its own part of this module.
#![allow(dead_code)]

pub(crate) mod fake;

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Output, Stdio};
use std::sync::{Arc, mpsc};

use koan_test_support::http::{Api, loopback, serve_greeter_and_cleanup};
use koan_test_support::services::Seen;
use koan_test_support::{PATIENCE, within};
use serde_json::Value;

/// A served host, and what its periodic service saw.
pub(crate) struct Live {
    pub(crate) api: Api,
    pub(crate) seen: Arc<Seen>,
}

impl Live {
    /// Starts the host and serves it on loopback, with `token` when given.
    pub(crate) async fn start(token: Option<&str>) -> anyhow::Result<Live> {
        let mut options = loopback();
        if let Some(t) = token {
            options = options.with_token(t);
        }
        let (api, seen) = serve_greeter_and_cleanup(options).await?;
        Ok(Live { api, seen })
    }

    /// Runs `koanctl --url <this host> ARGS…`.
    pub(crate) async fn run(&self, args: &[&str]) -> anyhow::Result<Run> {
        let mut all = vec!["--url", self.api.base.as_str()];
        all.extend_from_slice(args);
        koanctl(&all, &[]).await
    }

    /// Runs `koanctl --url <this host> --json ARGS…`, which must succeed, and parses
    /// its output.
    pub(crate) async fn json(&self, args: &[&str]) -> anyhow::Result<Value> {
        let mut all = vec!["--json"];
        all.extend_from_slice(args);
        self.run(&all).await?.json()
    }

    /// Runs `koanctl act greeter whoami OPTIONS…` (its answer: how the call arrived).
    pub(crate) async fn whoami(&self, options: &[&str]) -> anyhow::Result<Run> {
        let mut all = vec!["act", "greeter", "whoami"];
        all.extend_from_slice(options);
        self.run(&all).await
    }

    /// Enqueues `Greeter`'s `whoami` as a job (`--no-wait`) with `options`, and returns
    /// the JSON answer.
    pub(crate) async fn enqueue_whoami(&self, options: &[&str]) -> anyhow::Result<Value> {
        let mut all = vec!["act", "greeter", "whoami", "--no-wait"];
        all.extend_from_slice(options);
        self.json(&all).await
    }

    /// Stops the host; the server ends with it.
    pub(crate) async fn stop(self) -> anyhow::Result<()> {
        self.api.stop().await
    }
}

/// How a run of `koanctl` ended.
#[derive(Debug)]
pub(crate) struct Run {
    pub(crate) code: Option<i32>,
    pub(crate) stdout: String,
    pub(crate) stderr: String,
}

impl Run {
    pub(crate) fn from(out: Output) -> Run {
        Run {
            code: out.status.code(),
            stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        }
    }

    /// Asserts exit code 0 and returns stdout.
    pub(crate) fn ok(&self) -> &str {
        assert_eq!(self.code, Some(0), "koanctl failed: {self:#?}");
        &self.stdout
    }

    /// Asserts exit code 0 and parses stdout as JSON.
    pub(crate) fn json(&self) -> anyhow::Result<Value> {
        let out = self.ok();
        serde_json::from_str(out).map_err(|e| anyhow::anyhow!("not JSON ({e}): {out}"))
    }

    /// Asserts the exit code, an empty stdout, and returns stderr.
    pub(crate) fn failed(&self, code: i32) -> &str {
        assert_eq!(self.code, Some(code), "exit code: {self:#?}");
        assert!(self.stdout.is_empty(), "stdout of a failure: {self:#?}");
        &self.stderr
    }

    /// Asserts an error the API answered (exit code 3) of `kind`, and returns stderr.
    pub(crate) fn api_error(&self, kind: &str) -> &str {
        let err = self.failed(3);
        assert!(err.starts_with(&format!("error: {kind}: ")), "{self:#?}");
        err
    }
}

/// A `koanctl` command with a clean environment.
pub(crate) fn command(args: &[&str], env: &[(&str, &str)]) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_koanctl"));
    cmd.args(args)
        .env_remove("KOAN_URL")
        .env_remove("KOAN_TOKEN")
        .envs(env.iter().copied())
        .stdin(Stdio::null());
    cmd
}

/// Runs `koanctl ARGS…`; one still running after [`PATIENCE`] is killed and the
/// test fails.
pub(crate) async fn koanctl(args: &[&str], env: &[(&str, &str)]) -> anyhow::Result<Run> {
    let mut cmd = tokio::process::Command::from(command(args, env));
    cmd.kill_on_drop(true);
    let what = format!("koanctl {}", args.join(" "));
    let out = within(&what, cmd.output()).await??;
    Ok(Run::from(out))
}

/// A running `koanctl events`, its output read line by line.
pub(crate) struct Follower {
    child: Child,
    stdout: mpsc::Receiver<String>,
    stderr: mpsc::Receiver<String>,
}

pub(crate) fn lines(r: impl std::io::Read + Send + 'static) -> mpsc::Receiver<String> {
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(r).lines() {
            let Ok(line) = line else { break };
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    rx
}

impl Follower {
    pub(crate) fn spawn(args: &[&str], env: &[(&str, &str)]) -> anyhow::Result<Follower> {
        let mut child = command(args, env)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()?;
        let stdout = lines(
            child
                .stdout
                .take()
                .ok_or_else(|| anyhow::anyhow!("no stdout"))?,
        );
        let stderr = lines(
            child
                .stderr
                .take()
                .ok_or_else(|| anyhow::anyhow!("no stderr"))?,
        );
        Ok(Follower {
            child,
            stdout,
            stderr,
        })
    }

    /// Waits for a line of `rx` satisfying `pred`, returning it.
    pub(crate) async fn line_of(
        rx: &mpsc::Receiver<String>,
        what: &str,
        pred: impl Fn(&str) -> bool,
    ) -> anyhow::Result<String> {
        let mut skipped = Vec::new();
        loop {
            let got = tokio::task::block_in_place(|| rx.recv_timeout(PATIENCE));
            match got {
                Ok(line) if pred(&line) => return Ok(line),
                Ok(line) => skipped.push(line),
                Err(e) => anyhow::bail!("no line with {what} ({e}); saw {skipped:?}"),
            }
        }
    }

    /// Waits until the stream is open: the server has subscribed before it answers,
    /// so no event emitted after this is missed.
    pub(crate) async fn connected(&self) -> anyhow::Result<()> {
        Follower::line_of(&self.stderr, "the stream open", |l| {
            l.starts_with("following events from")
        })
        .await
        .map(drop)
    }

    pub(crate) async fn stdout_line(&self, pred: impl Fn(&str) -> bool) -> anyhow::Result<String> {
        Follower::line_of(&self.stdout, "the event", pred).await
    }

    pub(crate) fn kill(mut self) -> anyhow::Result<()> {
        self.child.kill()?;
        self.child.wait()?;
        Ok(())
    }
}

/// The words of a command line (none of them holds a space).
pub(crate) fn words(line: &str) -> Vec<&str> {
    line.split_whitespace().collect()
}

/// Whether a line of `out` starts with `start` and ends with `end`.
pub(crate) fn line_ending(out: &str, start: &str, end: &str) -> bool {
    out.lines()
        .any(|l| l.starts_with(start) && l.ends_with(end))
}

/// Whether a line of `out` starts with `start` and holds `part`.
pub(crate) fn line_holding(out: &str, start: &str, part: &str) -> bool {
    out.lines()
        .any(|l| l.starts_with(start) && l.contains(part))
}
