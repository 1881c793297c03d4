//! Retention at work in a host: its log says what it forgot and why, by age and
//! by size apart (it called jobs forgotten seconds after they ended "old", found by
//! a probe when the size budget forgot every finished job each minute).

mod common;

use std::sync::Arc;
use std::time::Duration;

use common::logs::Logs;
use koan::config::Config;
use koan::job::{ClaimRequest, Finish, JobState, JobStep, JobStore, MemoryJobStore, NewJob};
use koan::{ActionContext, Actions, Background, BackgroundService, BoxError, Service};

/// Takes jobs (of no one here): its host runs the job runner, and so retention.
#[derive(Default)]
struct Mailer;

impl Service for Mailer {
    type Kind = Background;
    fn actions(a: &mut Actions<Self>) {
        a.action("send", |_: Arc<Self>, (): (), _: ActionContext| async {
            Ok::<_, BoxError>(())
        });
    }
}

impl BackgroundService for Mailer {
    async fn run(&self, cx: koan::ServiceContext) -> Result<(), BoxError> {
        cx.cancelled().await;
        Ok(())
    }
}

/// A job of `Old` that ended `ago` before now with a result of `bytes` bytes, as
/// an earlier run of the host left it in the store.
async fn ended(store: &MemoryJobStore, ago: chrono::Duration, bytes: usize) -> anyhow::Result<()> {
    let then = chrono::Utc::now() - ago;
    let id = koan::job::new_job_id();
    store
        .push(NewJob {
            id: id.clone(),
            service: "Old".to_owned(),
            steps: vec![JobStep {
                action: "send".into(),
                params: serde_json::Value::Null,
                timeout_ms: None,
            }],
            priority: 0,
            correlation_id: id.clone(),
            idempotency_key: None,
            created_at: then,
            run_at: then,
            max_attempts: 1,
        })
        .await?;
    let held = store
        .claim(ClaimRequest {
            service: "Old".to_owned(),
            limit: 1,
            now: then,
            lease_until: then + chrono::Duration::seconds(30),
            instance: "earlier".to_owned(),
        })
        .await?;
    let how = Finish::Succeeded {
        result: serde_json::json!("x".repeat(bytes)),
        truncated: false,
    };
    assert!(store.finish(&held[0].claim, how, then).await?);
    Ok(())
}

#[tokio::test(start_paused = true)]
async fn retention_says_what_it_forgot_by_age_and_by_size() -> anyhow::Result<()> {
    let logs = Logs::default();
    let _logs = logs.capture();
    let store = Arc::new(MemoryJobStore::new());
    ended(&store, chrono::Duration::days(8), 10).await?;
    for minutes in [30, 20, 10] {
        ended(&store, chrono::Duration::minutes(minutes), 400 * 1024).await?;
    }
    let config = Config::builder()
        .toml(
            "test.toml",
            "[koan.background_services.jobs]\nretention_max_mb = 1",
        )?
        .build();
    let host = koan::testing::host()
        .config(config)
        .job_store(Arc::clone(&store) as Arc<dyn JobStore>)
        .service::<Mailer>()
        .build()?
        .start();
    host.started().await?;
    tokio::time::sleep(Duration::from_millis(50)).await;
    logs.assert_lines(
        "(retention)",
        1,
        "forgot 1 finished job that ended over 168 h ago, and 1 more, the oldest, past the finished jobs' budget of 1 MB (retention)",
    );
    assert_eq!(host.jobs().counts(None).await?.get(JobState::Succeeded), 2);
    koan::testing::stop(&host).await?;
    Ok(())
}

/// A pass that forgot by one rule alone says that one: by size alone it said
/// "forgot 0 finished jobs that ended over 168 h ago, and 1 more, …", by age alone
/// "…, and 0 more, the oldest, past the finished jobs' budget …" (a probe).
#[tokio::test(start_paused = true)]
async fn retention_by_one_rule_alone_says_that_one() -> anyhow::Result<()> {
    for (old, recent, expected) in [
        (
            0,
            3,
            "forgot 1 finished job, the oldest, past the finished jobs' budget of 1 MB (retention)",
        ),
        (
            2,
            0,
            "forgot 2 finished jobs that ended over 168 h ago (retention)",
        ),
    ] {
        let logs = Logs::default();
        let _logs = logs.capture();
        let store = Arc::new(MemoryJobStore::new());
        for _ in 0..old {
            ended(&store, chrono::Duration::days(8), 10).await?;
        }
        for minutes in (0..recent).map(|n| 30 - 10 * n) {
            ended(&store, chrono::Duration::minutes(minutes), 400 * 1024).await?;
        }
        let config = Config::builder()
            .toml(
                "test.toml",
                "[koan.background_services.jobs]\nretention_max_mb = 1",
            )?
            .build();
        let host = koan::testing::host()
            .config(config)
            .job_store(Arc::clone(&store) as Arc<dyn JobStore>)
            .service::<Mailer>()
            .build()?
            .start();
        host.started().await?;
        tokio::time::sleep(Duration::from_millis(50)).await;
        logs.assert_lines("(retention)", 1, expected);
        koan::testing::stop(&host).await?;
    }
    Ok(())
}
