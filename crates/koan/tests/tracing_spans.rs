//! Every action runs in a tracing span carrying its service, action and correlation
//! id, on the caller-run path and on a worker alike.

use std::io::Write;
use std::sync::{Arc, Mutex};

use koan::{
    ActionContext, Actions, Background, BackgroundService, BoxError, Service, ServiceContext,
};
use tokio::sync::Semaphore;

struct Logger {
    gate: Arc<Semaphore>,
}

impl Default for Logger {
    fn default() -> Self {
        Logger {
            gate: Arc::new(Semaphore::new(0)),
        }
    }
}

impl Service for Logger {
    type Kind = Background;
    fn actions(a: &mut Actions<Self>) {
        a.action(
            "log",
            |_svc: Arc<Self>, n: u32, _cx: ActionContext| async move {
                tracing::info!(n, "inside the handler");
                Ok::<_, BoxError>(n)
            },
        );
        a.action(
            "hold",
            |svc: Arc<Self>, (): (), _cx: ActionContext| async move {
                let _permit = svc.gate.acquire().await?;
                Ok::<_, BoxError>(())
            },
        );
    }
}

impl BackgroundService for Logger {
    async fn run(&self, cx: ServiceContext) -> Result<(), BoxError> {
        cx.cancelled().await;
        Ok(())
    }
}

#[derive(Clone, Default)]
struct Buffer(Arc<Mutex<Vec<u8>>>);

impl Write for Buffer {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().expect("buffer").extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl Buffer {
    /// A buffer that this thread's log lines go to while the guard lives.
    fn capture() -> (Buffer, tracing::subscriber::DefaultGuard) {
        let buffer = Buffer::default();
        let writer = buffer.clone();
        let subscriber = tracing_subscriber::fmt()
            .with_ansi(false)
            .with_writer(move || writer.clone())
            .finish();
        (buffer, tracing::subscriber::set_default(subscriber))
    }

    fn lines_with(&self, needle: &str) -> Vec<String> {
        let text = String::from_utf8_lossy(&self.0.lock().expect("buffer")).into_owned();
        text.lines()
            .filter(|l| l.contains(needle))
            .map(str::to_owned)
            .collect()
    }
}

#[tokio::test(start_paused = true)]
async fn a_handlers_logs_carry_its_service_action_and_correlation_id() -> anyhow::Result<()> {
    let (buffer, _guard) = Buffer::capture();

    let svc = Logger::default();
    let gate = Arc::clone(&svc.gate);
    let host = koan::testing::host().instance(svc).build()?.start();
    host.started().await?;
    let logger = host.service("Logger");

    // Idle: run by the caller itself.
    logger
        .clone()
        .action("log", 1u32)
        .correlation_id("inline-1")
        .execute()
        .await?;
    // Busy: queued, run by a worker.
    let held = logger.clone().action("hold", ()).spawn()?;
    koan::testing::settle().await;
    let queued = logger
        .clone()
        .action("log", 2u32)
        .correlation_id("queued-2")
        .spawn()?;
    gate.add_permits(1);
    held.outcome().await?;
    queued.outcome().await?;

    for (id, n) in [("inline-1", 1), ("queued-2", 2)] {
        let lines = buffer.lines_with("inside the handler");
        let line = lines
            .iter()
            .find(|l| l.contains(&format!("n={n}")))
            .ok_or_else(|| anyhow::anyhow!("no log line for {n}: {lines:?}"))?;
        assert!(line.contains("action{"), "in the action span: {line}");
        assert!(line.contains("service=Logger"), "{line}");
        assert!(line.contains("action=log"), "{line}");
        assert!(line.contains(&format!("correlation_id={id}")), "{line}");
    }
    koan::testing::stop(&host).await?;
    Ok(())
}

/// An action that timed out leaves a line naming it and its correlation id: its
/// caller's error says to look for the id in the logs, which had nothing before.
#[tokio::test(start_paused = true)]
async fn a_timed_out_action_is_logged_with_its_correlation_id() -> anyhow::Result<()> {
    let (buffer, _guard) = Buffer::capture();
    let host = koan::testing::host()
        .instance(Logger::default())
        .build()?
        .start();
    host.started().await?;
    let late = host
        .service("Logger")
        .action("hold", ())
        .correlation_id("late-3")
        .timeout(std::time::Duration::from_secs(1))
        .execute()
        .await;
    assert_eq!(
        late.expect_err("timed out").kind(),
        koan::error::ErrorKind::Timeout
    );
    let lines = buffer.lines_with("action timed out");
    assert!(
        lines.iter().any(|l| l.contains("correlation_id=late-3")
            && l.contains("action=hold")
            && l.contains("service=Logger")),
        "{lines:?}"
    );
    koan::testing::stop(&host).await?;
    Ok(())
}
