//! `OutboxProcessor`: drains the outbox table in batches into a real sink and emits
//! `Outbox.Processed`; a sink that refuses leaves the message pending and emits
//! `Outbox.Failed`. A message the sink can never take (larger than the NATS
//! server's `max_payload`) is set aside in `outbox_set_aside`, with why, and the
//! rest go on.
//!
//! The sink: with `--nats`, the NATS subject `demo.outbox.<topic>` (accepted once the
//! server has it: a flush under a timeout); else a webhook, when `webhook_url` is
//! set (accepted on a 2xx answer); else the `delivered_messages` table. A message is
//! marked processed only after the sink accepted it. Delivery is at-least-once: a
//! message whose acceptance was not confirmed is sent again, so every delivery
//! carries the outbox id for the receiver to drop duplicates.

use std::sync::Mutex;
use std::time::Duration;

use koan::well_known::events::outbox::{FAILED, PROCESSED};
use koan::{
    BackgroundService, BoxError, ServiceContext, health::HealthReport, service::BuildContext,
    service::FromContext,
};
use koan_nats::NatsTransport;
use serde::{Deserialize, Serialize};

use super::Emitter;
use crate::db::{Db, now_secs};

/// Payload of `Outbox.Processed`: a batch delivered at least one message.
#[derive(Debug, Clone, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct OutboxProcessed {
    /// Messages delivered in the batch.
    pub processed_count: u64,
}

/// Payload of `Outbox.Failed`: the sink refused a message, which stays pending.
#[derive(Debug, Clone, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct OutboxFailed {
    /// What went wrong.
    pub error: String,
    /// The message the sink refused (it stays pending).
    pub message_id: Option<i64>,
}

/// What a delivery carries: the outbox row, with its id for de-duplication.
#[derive(Debug, Clone, Serialize, Deserialize, schemars::JsonSchema)]
pub struct OutboxMessage {
    /// The outbox row id.
    pub id: i64,
    /// Its topic (`translation.completed`, `flow.entity.processed`, …).
    pub topic: String,
    /// Its payload (JSON).
    pub payload: serde_json::Value,
}

/// `Settings` of the processor.
#[derive(Debug, Clone, Deserialize)]
#[serde(default)]
pub struct OutboxSettings {
    /// Messages per batch.
    pub batch_size: u32,
    /// Milliseconds between looks at an empty outbox.
    pub poll_interval_ms: u64,
    /// Milliseconds to wait after a failed delivery.
    pub retry_delay_ms: u64,
    /// Without NATS: POST each message here (JSON) instead of into
    /// `delivered_messages`.
    pub webhook_url: Option<String>,
    /// With NATS: messages go to `<subject_prefix>.<topic>`.
    pub subject_prefix: String,
    /// How long the sink has to accept a message, in milliseconds.
    pub timeout_ms: u64,
}

impl Default for OutboxSettings {
    fn default() -> Self {
        OutboxSettings {
            batch_size: 100,
            poll_interval_ms: 500,
            retry_delay_ms: 5_000,
            webhook_url: None,
            subject_prefix: "demo.outbox".to_owned(),
            timeout_ms: 5_000,
        }
    }
}

/// Where messages go.
#[derive(Debug)]
enum Sink {
    Nats(NatsTransport),
    Webhook(reqwest::Client, String),
    Table,
}

impl Sink {
    fn describe(&self, prefix: &str) -> String {
        match self {
            Sink::Nats(n) => format!("NATS subject {prefix}.<topic> at {}", n.url()),
            Sink::Webhook(_, url) => format!("webhook {url}"),
            Sink::Table => "table delivered_messages".to_owned(),
        }
    }
}

/// The NATS subject of `topic`: its characters that NATS reserves become `_`.
pub fn subject(prefix: &str, topic: &str) -> String {
    let topic: String = topic
        .chars()
        .map(|c| match c {
            '*' | '>' => '_',
            c if c.is_whitespace() => '_',
            c => c,
        })
        .collect();
    let topic = topic.trim_matches('.');
    format!("{prefix}.{}", if topic.is_empty() { "_" } else { topic })
}

/// What one batch did.
struct Batch {
    delivered: u64,
    /// The message the sink refused, and why.
    refused: Option<(i64, String)>,
}

/// Drains the outbox.
#[koan::service(description = "Delivers outbox messages to NATS, a webhook or a table",
    run_in_production = true,
    event(name = PROCESSED, payload = OutboxProcessed),
    event(name = FAILED, payload = OutboxFailed),
    health = Self::report)]
#[derive(Debug)]
pub struct OutboxProcessor {
    db: Db,
    settings: OutboxSettings,
    sink: Sink,
    /// The last refusal, until a delivery succeeds.
    failing: Mutex<Option<String>>,
}

impl FromContext for OutboxProcessor {
    fn from_context(cx: &BuildContext<'_>) -> koan::Result<Self> {
        let settings: OutboxSettings = cx.settings()?;
        let timeout = Duration::from_millis(settings.timeout_ms.max(1));
        // The demo registers the transport as a resource only when run with `--nats`.
        let sink = match (cx.resource::<NatsTransport>(), &settings.webhook_url) {
            (Ok(n), _) => Sink::Nats(n.as_ref().clone()),
            (Err(_), Some(url)) => {
                let client = reqwest::Client::builder()
                    .timeout(timeout)
                    .build()
                    .map_err(|e| {
                        koan::Error::new(
                            koan::error::ErrorKind::Build,
                            format!("the webhook client: {e}"),
                        )
                    })?;
                Sink::Webhook(client, url.clone())
            }
            (Err(_), None) => Sink::Table,
        };
        Ok(OutboxProcessor {
            db: cx.resource::<Db>()?.as_ref().clone(),
            settings,
            sink,
            failing: Mutex::new(None),
        })
    }
}

#[koan::actions]
impl OutboxProcessor {
    /// Delivers one batch now (`batch_size` messages at most, the configured size by
    /// default) and answers how many went through; fails when the sink refuses one.
    #[action(
        koan::well_known::actions::outbox::PROCESS_BATCH,
        description = "Deliver one batch now"
    )]
    async fn process_batch_now(
        &self,
        batch_size: Option<u32>,
        cx: &koan::ActionContext,
    ) -> Result<u64, BoxError> {
        let batch = self
            .batch(batch_size.unwrap_or(self.settings.batch_size), cx)
            .await?;
        match batch.refused {
            None => Ok(batch.delivered),
            Some((id, e)) => Err(format!(
                "delivered {}, then message {id} was refused: {e}",
                batch.delivered
            )
            .into()),
        }
    }
}

impl OutboxProcessor {
    async fn report(&self) -> HealthReport {
        let sink = self.sink.describe(&self.settings.subject_prefix);
        let failing = self.failing.lock().ok().and_then(|g| g.clone());
        let report = match failing {
            None => HealthReport::healthy(format!("delivering to {sink}")),
            Some(e) => HealthReport::degraded(format!("the sink refuses messages: {e}")),
        };
        report.with_data("sink", sink)
    }

    /// Delivers up to `size` pending messages, in order, stopping at the first the
    /// sink refuses; emits `Processed` for what went through and `Failed` for a
    /// refusal.
    async fn batch(&self, size: u32, out: &impl Emitter) -> Result<Batch, BoxError> {
        let size = size.max(1);
        let pending: Vec<(i64, String, String)> = self
            .db
            .run(move |c| {
                let mut st = c.prepare(
                    "SELECT id, topic, payload FROM outbox WHERE processed_at IS NULL ORDER BY id LIMIT ?1",
                )?;
                let rows = st
                    .query_map([size], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))?
                    .collect::<Result<Vec<_>, _>>()?;
                Ok(rows)
            })
            .await?;
        let mut batch = Batch {
            delivered: 0,
            refused: None,
        };
        for (id, topic, payload) in pending {
            let message = OutboxMessage {
                id,
                topic,
                payload: serde_json::from_str(&payload)
                    .unwrap_or(serde_json::Value::String(payload)),
            };
            // One the sink can never take (larger than the broker takes, or a
            // webhook's 413) is set aside, not sent again for ever: it held up every
            // message after it (a 1 MB message stopped the outbox for good; found
            // by a probe).
            let never = match self.never_fits(&message) {
                Some(why) => why,
                None => match self.send(&message).await {
                    Ok(()) => {
                        batch.delivered += 1;
                        continue;
                    }
                    Err(Refusal::Never(why)) => why,
                    Err(Refusal::Again(e)) => {
                        batch.refused = Some((id, e));
                        break;
                    }
                },
            };
            tracing::error!(message = id, error = %never, "outbox message set aside: the sink can never take it (see table outbox_set_aside)");
            self.set_aside(&message, never.clone()).await?;
            if let Ok(mut f) = self.failing.lock() {
                *f = Some(format!("message {id} was set aside: {never}"));
            }
            out.emit(
                FAILED,
                OutboxFailed {
                    error: never,
                    message_id: Some(id),
                },
            )
            .await;
        }
        if batch.delivered > 0 {
            out.emit(
                PROCESSED,
                OutboxProcessed {
                    processed_count: batch.delivered,
                },
            )
            .await;
        }
        match &batch.refused {
            Some((id, e)) => {
                tracing::error!(message = id, error = %e, "outbox sink refused a message");
                if let Ok(mut f) = self.failing.lock() {
                    *f = Some(e.clone());
                }
                out.emit(
                    FAILED,
                    OutboxFailed {
                        error: e.clone(),
                        message_id: Some(*id),
                    },
                )
                .await;
            }
            None if batch.delivered > 0 => {
                if let Ok(mut f) = self.failing.lock() {
                    *f = None;
                }
            }
            None => {}
        }
        Ok(batch)
    }

    /// Why the sink can never take `m`, if it cannot: with NATS, a message larger
    /// than the server's `max_payload`.
    fn never_fits(&self, m: &OutboxMessage) -> Option<String> {
        let Sink::Nats(n) = &self.sink else {
            return None;
        };
        let len = serde_json::to_vec(m).map_or(0, |b| b.len());
        let max = n.client().server_info().max_payload;
        (len > max).then(|| {
            format!(
                "the message is {len} bytes, more than the NATS server takes (max_payload {max})"
            )
        })
    }

    /// Moves `m` to `outbox_set_aside`, with why, and marks it processed there.
    async fn set_aside(&self, m: &OutboxMessage, why: String) -> Result<(), BoxError> {
        let (id, topic, payload) = (m.id, m.topic.clone(), m.payload.to_string());
        self.db
            .run(move |c| {
                let tx = c.transaction()?;
                let now = now_secs();
                tx.execute(
                    "INSERT OR IGNORE INTO outbox_set_aside (outbox_id, topic, payload, error, set_aside_at) VALUES (?1, ?2, ?3, ?4, ?5)",
                    (id, &topic, &payload, &why, now),
                )?;
                processed(&tx, id, now)?;
                tx.commit()
            })
            .await?;
        Ok(())
    }

    /// Hands one message to the sink and marks it processed once accepted.
    async fn send(&self, m: &OutboxMessage) -> Result<(), Refusal> {
        let id = m.id;
        let timeout = Duration::from_millis(self.settings.timeout_ms.max(1));
        match &self.sink {
            Sink::Nats(n) => {
                let body = serde_json::to_vec(m).map_err(|e| e.to_string())?;
                let subject = subject(&self.settings.subject_prefix, &m.topic);
                n.client()
                    .publish(subject.clone(), body.into())
                    .await
                    .map_err(|e| format!("publishing to {subject}: {e}"))?;
                // The server has it once a flush (a round trip) comes back.
                match tokio::time::timeout(timeout, n.client().flush()).await {
                    Ok(Ok(())) => {}
                    Ok(Err(e)) => return Err(format!("NATS did not take {subject}: {e}").into()),
                    Err(_) => {
                        return Err(format!(
                            "NATS did not confirm {subject} within {} ms",
                            timeout.as_millis()
                        )
                        .into());
                    }
                }
                Ok(self.mark(id, None).await?)
            }
            Sink::Webhook(client, url) => {
                let resp = client
                    .post(url)
                    .json(m)
                    .send()
                    .await
                    .map_err(|e| format!("POST {url}: {e}"))?;
                if resp.status() == reqwest::StatusCode::PAYLOAD_TOO_LARGE {
                    // Sent again, it would be refused again, for ever.
                    return Err(Refusal::Never(format!(
                        "POST {url} answered {}: the webhook takes no message this large",
                        resp.status()
                    )));
                }
                if !resp.status().is_success() {
                    return Err(format!("POST {url} answered {}", resp.status()).into());
                }
                Ok(self.mark(id, None).await?)
            }
            Sink::Table => Ok(self.mark(id, Some(m.clone())).await?),
        }
    }

    /// Marks the message processed; for the table sink, inserts it in
    /// `delivered_messages` in the same commit.
    async fn mark(&self, id: i64, into_table: Option<OutboxMessage>) -> Result<(), String> {
        self.db
            .run(move |c| {
                let tx = c.transaction()?;
                let now = now_secs();
                if let Some(m) = into_table {
                    tx.execute(
                        "INSERT OR IGNORE INTO delivered_messages (outbox_id, topic, payload, delivered_at) VALUES (?1, ?2, ?3, ?4)",
                        (m.id, &m.topic, m.payload.to_string(), now),
                    )?;
                }
                processed(&tx, id, now)?;
                tx.commit()
            })
            .await
            .map_err(|e| e.to_string())
    }
}

impl BackgroundService for OutboxProcessor {
    async fn run(&self, cx: ServiceContext) -> Result<(), BoxError> {
        tracing::info!(
            sink = %self.sink.describe(&self.settings.subject_prefix),
            "outbox processor started"
        );
        let idle = Duration::from_millis(self.settings.poll_interval_ms.max(10));
        let retry = Duration::from_millis(self.settings.retry_delay_ms.max(10));
        while !cx.is_cancelled() {
            let pause = match self.batch(self.settings.batch_size, &cx).await {
                Ok(b) if b.refused.is_some() => retry,
                Ok(b) if b.delivered == 0 => idle,
                Ok(_) => Duration::ZERO,
                Err(e) => {
                    // The outbox itself could not be read.
                    tracing::error!(error = %e, "error processing outbox batch");
                    cx.emit(
                        FAILED,
                        OutboxFailed {
                            error: e.to_string(),
                            message_id: None,
                        },
                    )
                    .await;
                    retry
                }
            };
            if !pause.is_zero() && !cx.sleep(pause).await {
                break;
            }
        }
        Ok(())
    }
}

/// Why the sink did not take a message.
enum Refusal {
    /// Not now: sent again at the next pass (a sink down, a timeout).
    Again(String),
    /// Never: set aside (a message larger than the sink takes).
    Never(String),
}

impl From<String> for Refusal {
    fn from(e: String) -> Self {
        Refusal::Again(e)
    }
}

/// Marks outbox message `id` processed at `now`, in `tx` (delivered or set aside,
/// with the row that says which).
fn processed(tx: &rusqlite::Transaction<'_>, id: i64, now: i64) -> rusqlite::Result<usize> {
    tx.execute(
        "UPDATE outbox SET processed_at = ?2 WHERE id = ?1 AND processed_at IS NULL",
        (id, now),
    )
}
