//! `koanctl history`, `koanctl instances` and `koanctl jobs list --correlation-id`
//! against a live control plane: a small koan host served on a loopback port, and the
//! compiled binary run against it.

use std::process::{Command, Stdio};

use koan::{ActionContext, BackgroundService, BoxError, PeriodicService, ServiceContext};
use koan_test_support::http::Api;
use koan_test_support::within;
use serde_json::Value;

#[koan::service(every = "1h", name = "Cleanup")]
#[derive(Default)]
struct Cleanup;

impl PeriodicService for Cleanup {
    async fn tick(&self, cx: ServiceContext) -> Result<(), BoxError> {
        if cx.reason() == koan::service::RunReason::ProcessBatch {
            return Err("the batch was refused".into());
        }
        Ok(())
    }

    async fn process_batch(
        &self,
        _batch: koan::service::BatchRequest,
        cx: ServiceContext,
    ) -> Result<(), BoxError> {
        self.tick(cx).await
    }
}

#[koan::service]
#[derive(Default)]
struct Echo;

#[koan::actions]
impl Echo {
    #[action("echo")]
    async fn echo(&self, text: String, _cx: &ActionContext) -> Result<String, BoxError> {
        Ok(text)
    }
}

impl BackgroundService for Echo {
    async fn run(&self, cx: ServiceContext) -> Result<(), BoxError> {
        cx.cancelled().await;
        Ok(())
    }
}

/// A served host.
struct Live {
    api: Api,
}

impl Live {
    async fn start() -> anyhow::Result<Live> {
        let host = koan::testing::host()
            .service::<Cleanup>()
            .service::<Echo>()
            .build()?
            .start();
        Ok(Live {
            api: Api::open(host).await?,
        })
    }

    /// Runs `koanctl --url <this host> ARGS…` off the async threads; returns the exit
    /// code, stdout and stderr.
    async fn run(&self, args: &[&str]) -> anyhow::Result<(Option<i32>, String, String)> {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_koanctl"));
        cmd.arg("--url")
            .arg(&self.api.base)
            .args(args)
            .env_remove("KOAN_URL")
            .env_remove("KOAN_TOKEN")
            .stdin(Stdio::null());
        let out = within("koanctl", tokio::task::spawn_blocking(move || cmd.output())).await???;
        Ok((
            out.status.code(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        ))
    }

    async fn ok(&self, args: &[&str]) -> anyhow::Result<String> {
        let (code, out, err) = self.run(args).await?;
        assert_eq!(code, Some(0), "koanctl {args:?} failed: {err}");
        Ok(out)
    }

    async fn json(&self, args: &[&str]) -> anyhow::Result<Value> {
        let out = self.ok(args).await?;
        serde_json::from_str(&out).map_err(|e| anyhow::anyhow!("not JSON ({e}): {out}"))
    }

    async fn stop(self) -> anyhow::Result<()> {
        self.api.stop().await
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn history_lists_the_last_runs_newest_first() -> anyhow::Result<()> {
    let live = Live::start().await?;
    assert!(
        live.ok(&["history", "cleanup"])
            .await?
            .contains("no finished runs")
    );
    live.ok(&["trigger", "Cleanup"]).await?;
    let (code, _, _) = live.run(&["process-batch", "Cleanup"]).await?;
    assert_eq!(code, Some(3), "the batch fails on purpose");

    let text = live.ok(&["history", "Cleanup"]).await?;
    let lines: Vec<&str> = text.lines().collect();
    assert!(
        lines[0].contains("STARTED") && lines[0].contains("OUTCOME"),
        "{text}"
    );
    // Newest first: the failed batch, then the trigger.
    assert!(
        lines[1].contains("process-batch") && lines[1].contains("failed"),
        "{text}"
    );
    assert!(lines[1].contains("the batch was refused"), "{text}");
    assert!(
        lines[2].contains("trigger") && lines[2].contains("success"),
        "{text}"
    );
    assert!(text.contains("2 run(s) shown (keeps 50)"), "{text}");

    let one = live
        .json(&["--json", "history", "Cleanup", "--limit", "1"])
        .await?;
    assert_eq!(one["runs"].as_array().map(Vec::len), Some(1), "{one}");
    assert_eq!(one["runs"][0]["outcome"], "failed");

    let (code, out, err) = live.run(&["history", "Nope"]).await?;
    assert_eq!(code, Some(3), "an unknown service is the API's error");
    assert!(out.is_empty() && err.contains("Nope"), "{err}");
    live.stop().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn instances_show_this_host_its_load_and_services() -> anyhow::Result<()> {
    let live = Live::start().await?;
    let text = live.ok(&["instances"]).await?;
    let name = live.api.host.instance_name();
    assert!(
        text.contains("INSTANCE") && text.contains("HEARTBEAT"),
        "{text}"
    );
    assert!(text.contains(&format!("{name} (this host)")), "{text}");
    assert!(text.contains("live"), "{text}");
    assert!(text.contains("Cleanup, Echo"), "{text}");
    let body = live.json(&["--json", "instances"]).await?;
    assert_eq!(body["instances"][0]["name"], name.as_str());
    assert_eq!(body["instances"][0]["stale"], false);
    live.stop().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn jobs_are_found_by_correlation_id() -> anyhow::Result<()> {
    let live = Live::start().await?;
    let job = live
        .json(&[
            "--json",
            "act",
            "Echo",
            "echo",
            "--params",
            "\"hi\"",
            "--no-wait",
            "--correlation-id",
            "order-7",
        ])
        .await?;
    live.json(&[
        "--json",
        "act",
        "Echo",
        "echo",
        "--params",
        "\"other\"",
        "--no-wait",
    ])
    .await?;
    let found = live
        .json(&["--json", "jobs", "list", "--correlation-id", "order-7"])
        .await?;
    let ids: Vec<&Value> = found["jobs"]
        .as_array()
        .map(|j| j.iter().map(|x| &x["id"]).collect())
        .unwrap_or_default();
    assert_eq!(ids, [&job["id"]], "{found}");
    live.stop().await
}
