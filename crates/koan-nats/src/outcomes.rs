//! Waiting for outcomes of durable jobs: one watch of the whole `koan_outcomes`
//! bucket per connection, and a table of waiters by key — not a server-side watch
//! per job. A sweep reads the keys still awaited once a second, so an outcome written
//! while the watch was broken (a NATS restart) is not missed.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_nats::jetstream::kv;
use futures_util::StreamExt;
use koan::Error;
use serde_json::Value;
use tokio::sync::oneshot;

use crate::transport::unavailable;
use crate::wire::Outcome;

type Waiters = Mutex<HashMap<String, Vec<oneshot::Sender<Result<Value, Error>>>>>;

/// The waiters of one connection.
#[derive(Default)]
pub(crate) struct OutcomeWaiters {
    waiting: Waiters,
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

/// Follows the bucket for as long as the connection lives.
pub(crate) async fn follow(store: kv::Store, waiters: Arc<OutcomeWaiters>) {
    let mut sweep = tokio::time::interval(Duration::from_secs(1));
    sweep.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        let watch = tokio::time::timeout(Duration::from_secs(2), store.watch_all()).await;
        let mut watch = match watch {
            Ok(Ok(w)) => Some(w),
            _ => None,
        };
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
                    // The transport is gone: only this task still holds the table.
                    if Arc::strong_count(&waiters) == 1 {
                        return;
                    }
                    for key in waiters.pending() {
                        if let Ok(Ok(Some(bytes))) = tokio::time::timeout(Duration::from_secs(1), store.get(key.clone())).await {
                            waiters.resolve(&key, &bytes);
                        }
                    }
                    if watch.is_none() {
                        break;
                    }
                }
            }
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}
