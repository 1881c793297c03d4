//! Waiting for outcomes of durable jobs: one watch of the whole `koan_outcomes`
//! bucket per connection, and a table of waiters by key — not a server-side watch
//! per job. The watch is held only while outcomes are awaited (and `watch_idle`
//! after the last), so a host that awaits none (a worker) receives none of the
//! cluster's outcomes. When a watch begins, the keys awaited are read once (an
//! outcome written before it began); while one lives, a sweep reads the keys still
//! awaited once a second (an outcome written before its waiter, say a keyed
//! repeat's; or while the watch was broken by a NATS restart).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use async_nats::jetstream::kv;
use futures_util::StreamExt;
use koan::Error;
use serde_json::Value;
use tokio::sync::{Notify, oneshot};

use crate::transport::unavailable;
use crate::wire::Outcome;

type Waiters = Mutex<HashMap<String, Vec<oneshot::Sender<Result<Value, Error>>>>>;

/// The waiters of one connection.
#[derive(Default)]
pub(crate) struct OutcomeWaiters {
    waiting: Waiters,
    /// Told of each new waiter: the watch begins when the first comes.
    wanted: Notify,
}

impl std::fmt::Debug for OutcomeWaiters {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let n = self.waiting.lock().map(|w| w.len()).unwrap_or(0);
        f.debug_struct("OutcomeWaiters")
            .field("waiting", &n)
            .finish()
    }
}

fn read(key: &str, bytes: &[u8]) -> Result<Value, Error> {
    match serde_json::from_slice::<Outcome>(bytes) {
        Ok(outcome) => outcome.reply.into_result(),
        Err(e) => Err(unavailable(format!("outcome of {key} is unreadable: {e}"))),
    }
}

impl OutcomeWaiters {
    /// Registers a waiter for `key`.
    pub(crate) fn wait(&self, key: &str) -> oneshot::Receiver<Result<Value, Error>> {
        let (tx, rx) = oneshot::channel();
        if let Ok(mut w) = self.waiting.lock() {
            w.entry(key.to_owned()).or_default().push(tx);
        }
        self.wanted.notify_one();
        rx
    }

    /// Answers every waiter of `key` with the stored outcome.
    pub(crate) fn resolve(&self, key: &str, bytes: &[u8]) {
        let waiters = self.waiting.lock().ok().and_then(|mut w| w.remove(key));
        for tx in waiters.into_iter().flatten() {
            let _ = tx.send(read(key, bytes));
        }
    }

    fn pending(&self) -> Vec<String> {
        self.waiting
            .lock()
            .map(|mut w| {
                w.retain(|_, txs| {
                    txs.retain(|tx| !tx.is_closed());
                    !txs.is_empty()
                });
                w.keys().cloned().collect()
            })
            .unwrap_or_default()
    }
}

/// Watches the bucket while outcomes are awaited, for as long as the connection
/// lives.
pub(crate) async fn follow(store: kv::Store, waiters: Arc<OutcomeWaiters>, idle: Duration) {
    let mut sweep = tokio::time::interval(Duration::from_secs(1));
    sweep.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        // No one waits: no watch.
        while waiters.pending().is_empty() {
            // The transport is gone: only this task still holds the table.
            if Arc::strong_count(&waiters) == 1 {
                return;
            }
            let _ = tokio::time::timeout(Duration::from_secs(1), waiters.wanted.notified()).await;
        }
        let watch = tokio::time::timeout(Duration::from_secs(2), store.watch_all()).await;
        let mut watch = match watch {
            Ok(Ok(w)) => Some(w),
            _ => None,
        };
        // What was written before this watch began.
        read_awaited(&store, &waiters).await;
        sweep.reset();
        let mut unwaited_since = None;
        let mut unwaited = false;
        loop {
            tokio::select! {
                entry = async {
                    match watch.as_mut() {
                        Some(w) => w.next().await,
                        None => std::future::pending().await,
                    }
                } => match entry {
                    Some(Ok(e)) if e.operation == kv::Operation::Put => waiters.resolve(&e.key, &e.value),
                    Some(Ok(_)) => {}
                    // The watch broke (a NATS restart, say): make a new one.
                    Some(Err(_)) | None => break,
                },
                _ = sweep.tick() => {
                    if Arc::strong_count(&waiters) == 1 {
                        return;
                    }
                    read_awaited(&store, &waiters).await;
                    if watch.is_none() {
                        break;
                    }
                    // Awaited by no one for `idle`: the watch ends.
                    if waiters.pending().is_empty() {
                        if unwaited_since.get_or_insert_with(Instant::now).elapsed() >= idle {
                            unwaited = true;
                            break;
                        }
                    } else {
                        unwaited_since = None;
                    }
                }
            }
        }
        if !unwaited {
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
    }
}

/// Reads each key still awaited, answering the waiters of those with an outcome.
async fn read_awaited(store: &kv::Store, waiters: &OutcomeWaiters) {
    for key in waiters.pending() {
        if let Ok(Ok(Some(bytes))) =
            tokio::time::timeout(Duration::from_secs(1), store.get(key.clone())).await
        {
            waiters.resolve(&key, &bytes);
        }
    }
}
