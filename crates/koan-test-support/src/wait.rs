//! Bounded waits: each gives up after a limit and says what it waited for.

use std::future::Future;
use std::time::Duration;

/// The safety net of every wait: a test that gets here has failed.
pub const PATIENCE: Duration = Duration::from_secs(30);

/// Awaits `fut`, failing when it takes longer than [`PATIENCE`].
pub async fn within<T>(what: &str, fut: impl Future<Output = T>) -> anyhow::Result<T> {
    within_for(PATIENCE, what, fut).await
}

/// Awaits `fut`, failing when it takes longer than `limit`.
pub async fn within_for<T>(
    limit: Duration,
    what: &str,
    fut: impl Future<Output = T>,
) -> anyhow::Result<T> {
    tokio::time::timeout(limit, fut)
        .await
        .map_err(|_| anyhow::anyhow!("timed out after {limit:?} waiting for {what}"))
}

/// Polls `check` every 50 ms until it holds, failing after [`PATIENCE`].
pub async fn eventually<F, Fut>(what: &str, mut check: F) -> anyhow::Result<()>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    within(what, async {
        while !check().await {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    })
    .await
}

/// Polls `check` every 20 ms until it gives `Some` (or fails), within [`PATIENCE`].
pub async fn wait_for<T>(
    what: &str,
    check: impl AsyncFnMut() -> anyhow::Result<Option<T>>,
) -> anyhow::Result<T> {
    wait_for_within(PATIENCE, what, check).await
}

/// Polls `check` every 20 ms until it gives `Some` (or fails), within `limit`.
pub async fn wait_for_within<T>(
    limit: Duration,
    what: &str,
    mut check: impl AsyncFnMut() -> anyhow::Result<Option<T>>,
) -> anyhow::Result<T> {
    within_for(limit, what, async {
        loop {
            if let Some(v) = check().await? {
                return Ok(v);
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await?
}

/// Awaits `call` within [`PATIENCE`] and expects it to be refused with `kind`;
/// returns the error, for checks of its message.
pub async fn refused<T: std::fmt::Debug>(
    what: &str,
    call: impl Future<Output = koan::Result<T>>,
    kind: koan::error::ErrorKind,
) -> anyhow::Result<koan::Error> {
    refused_within(PATIENCE, what, call, kind).await
}

/// [`refused`] within `limit`.
pub async fn refused_within<T: std::fmt::Debug>(
    limit: Duration,
    what: &str,
    call: impl Future<Output = koan::Result<T>>,
    kind: koan::error::ErrorKind,
) -> anyhow::Result<koan::Error> {
    match within_for(limit, what, call).await? {
        Ok(v) => anyhow::bail!("{what}: expected a refusal ({kind:?}), got {v:?}"),
        Err(e) if e.kind() == kind => Ok(e),
        Err(e) => anyhow::bail!("{what}: expected {kind:?}, got {:?}: {e}", e.kind()),
    }
}
