//! B8's raw JetStream rounds, keeping more and more of koan's promise by hand
//! (`mod.rs`): the job alone, with its outcome, with its outcome and a record.

use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, anyhow};
use async_nats::jetstream::{self, consumer::pull, kv, stream};
use futures_util::{StreamExt, TryStreamExt};
use serde_json::json;

use super::PRODUCERS;
use crate::nats::answer;

/// The runs at once of the raw workers that store an outcome: `WideCalc`'s
/// `max_concurrency` (each waits for its outcome's store ack).
pub(super) const RAW_AT_ONCE: usize = 64;

/// How much of koan's promise a raw round keeps (the module's doc).
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub(super) enum Raw {
    Ack,
    Outcome,
    Record,
}

impl Raw {
    pub(super) const ALL: [Raw; 3] = [Raw::Ack, Raw::Outcome, Raw::Record];

    pub(super) fn name(self) -> &'static str {
        match self {
            Raw::Ack => "raw JetStream publish + pull/ack",
            Raw::Outcome => "raw JetStream + outcome",
            Raw::Record => "raw JetStream + outcome + record",
        }
    }
}

/// The raw rounds' KV buckets, made as koan-nats makes its own.
#[derive(Clone)]
pub(super) struct RawKv {
    outcomes: kv::Store,
    records: kv::Store,
}

pub(super) async fn raw_kv(js: &jetstream::Context) -> anyhow::Result<RawKv> {
    let bucket = |name: &'static str| async move {
        js.get_or_create_stream(stream::Config {
            name: format!("KV_{name}"),
            subjects: vec![format!("$KV.{name}.>")],
            max_messages_per_subject: 1,
            max_age: Duration::from_secs(3600),
            storage: stream::StorageType::File,
            allow_rollup: true,
            deny_delete: true,
            allow_direct: true,
            discard: stream::DiscardPolicy::New,
            ..Default::default()
        })
        .await
        .map_err(|e| anyhow!("bucket {name}: {e}"))?;
        js.get_key_value(name)
            .await
            .map_err(|e| anyhow!("bucket {name}: {e}"))
    };
    Ok(RawKv {
        outcomes: bucket("bench_outcomes").await?,
        records: bucket("bench_records").await?,
    })
}

/// A job record as koan's (`docs/wire/job.schema.json`) of the raw rounds that
/// keep one: queued, or succeeded with its one run.
fn record(id: &str, params: &serde_json::Value, result: Option<&[u8]>) -> bytes::Bytes {
    let now = chrono::Utc::now().to_rfc3339();
    let done = result.is_some();
    let result: Option<serde_json::Value> = result.and_then(|r| serde_json::from_slice(r).ok());
    let history = if done {
        json!([{ "attempt": 1, "started_at": now, "finished_at": now, "instance": "bench", "error": null }])
    } else {
        json!([])
    };
    let r = json!({
        "id": id, "service": "WideCalc", "action": "add", "params": params,
        "state": if done { "succeeded" } else { "queued" }, "priority": 0,
        "correlation_id": id, "idempotency_key": null, "attempts": u32::from(done),
        "max_attempts": 5, "created_at": now, "run_at": now,
        "finished_at": if done { json!(now) } else { json!(null) },
        "history": history, "result": result, "result_truncated": false, "error": null,
        "instance": if done { json!("bench") } else { json!(null) }, "lease_until": null,
    });
    serde_json::to_vec(&r).unwrap_or_default().into()
}

/// Jobs/s of raw JetStream keeping `how` much of the promise (the module's doc):
/// publish (awaiting the store ack) from 32 producers, one pull consumer that runs
/// the same work, and for `Outcome`/`Record` the producers' watch of the outcomes,
/// until the last is heard.
pub(super) async fn raw_durable(
    js: &jetstream::Context,
    kv: &RawKv,
    how: Raw,
    jobs: u64,
    round: usize,
) -> anyhow::Result<f64> {
    let per = jobs / PRODUCERS;
    let total = per * PRODUCERS;
    let stream = js.get_stream("BENCH_WORK").await?;
    let name = format!("bench-{round}");
    let consumer = stream
        .get_or_create_consumer(
            &name,
            pull::Config {
                durable_name: Some(name.clone()),
                ack_policy: jetstream::consumer::AckPolicy::Explicit,
                ..Default::default()
            },
        )
        .await?;
    // Ids of this round alone: the outcome watch counts only those.
    let prefix = Arc::<str>::from(format!("r{round}-"));
    let heard = if how == Raw::Ack {
        None
    } else {
        let mut watch = kv.outcomes.watch_all().await?;
        let prefix = Arc::clone(&prefix);
        Some(tokio::spawn(async move {
            let mut n = 0;
            while n < total {
                let e = watch
                    .next()
                    .await
                    .context("outcome watch ended")?
                    .map_err(|e| anyhow!("outcome watch: {e}"))?;
                if e.key.starts_with(&*prefix) {
                    n += 1;
                }
            }
            Ok::<(), anyhow::Error>(())
        }))
    };
    let t = Instant::now();
    let work = kv.clone();
    // The records' last writes (`Record`), awaited after the clock stops: koan's
    // worker writes them after the outcome and the ack, and its producers do not
    // wait for them either.
    let ends = Arc::new(std::sync::Mutex::new(Vec::new()));
    let ends_of = Arc::clone(&ends);
    let consume = tokio::spawn(async move {
        let messages = consumer.messages().await?;
        if how == Raw::Ack {
            let mut messages = messages.take(total as usize);
            while let Some(msg) = messages.next().await {
                let msg = msg.map_err(|e| anyhow!("pull: {e}"))?;
                let _out = answer(&msg.payload);
                msg.ack().await.map_err(|e| anyhow!("ack: {e}"))?;
            }
            return Ok::<(), anyhow::Error>(());
        }
        messages
            .take(total as usize)
            .map_err(|e| anyhow!("pull: {e}"))
            .try_for_each_concurrent(RAW_AT_ONCE, |msg| {
                let (kv, ends) = (work.clone(), Arc::clone(&ends_of));
                async move {
                    let id = msg
                        .headers
                        .as_ref()
                        .and_then(|h| h.get("Nats-Msg-Id"))
                        .map(|v| v.as_str().to_owned())
                        .context("a job without its id")?;
                    let out = answer(&msg.payload);
                    let outcome = serde_json::to_vec(&json!({
                        "id": id, "host": "bench", "attempts": 1,
                        "ok": serde_json::from_slice::<serde_json::Value>(&out)?,
                    }))?;
                    match kv.outcomes.create(&id, outcome.into()).await {
                        // A redelivery of a job that ended: the first outcome
                        // stands (create-if-absent), as in koan.
                        Err(e) if e.kind() == kv::CreateErrorKind::AlreadyExists => {}
                        r => {
                            r.map_err(|e| anyhow!("outcome: {e}"))?;
                        }
                    }
                    msg.ack().await.map_err(|e| anyhow!("ack: {e}"))?;
                    if how == Raw::Record {
                        // Written once the slot is free, as koan's worker does.
                        let params: serde_json::Value = serde_json::from_slice(&msg.payload)?;
                        let end = record(&id, &params, Some(&out));
                        let write = tokio::spawn(async move {
                            kv.records
                                .put(&id, end)
                                .await
                                .map(drop)
                                .map_err(|e| anyhow!("record: {e}"))
                        });
                        ends.lock().map_err(|_| anyhow!("poisoned"))?.push(write);
                    }
                    Ok(())
                }
            })
            .await
    });
    let mut tasks = Vec::new();
    for p in 0..PRODUCERS {
        let (js, kv, prefix) = (js.clone(), kv.clone(), Arc::clone(&prefix));
        tasks.push(tokio::spawn(async move {
            for i in 0..per {
                let params = json!({ "a": p * per + i, "b": 1 });
                let body = serde_json::to_vec(&params)?;
                let subject = format!("bench.work.{p}");
                if how == Raw::Ack {
                    js.publish(subject, body.into()).await?.await?;
                    continue;
                }
                let id = format!("{prefix}{p}-{i}");
                let mut h = async_nats::HeaderMap::new();
                h.insert("Nats-Msg-Id", id.as_str());
                let publish = async {
                    js.publish_with_headers(subject, h, body.into())
                        .await?
                        .await?;
                    Ok::<(), anyhow::Error>(())
                };
                if how == Raw::Record {
                    let create = kv.records.create(&id, record(&id, &params, None));
                    let (stored, recorded) = tokio::join!(publish, create);
                    stored?;
                    match recorded {
                        // The worker was quicker: its whole record stands (as
                        // koan's enqueuer lets it).
                        Err(e) if e.kind() == kv::CreateErrorKind::AlreadyExists => {}
                        r => {
                            r.map_err(|e| anyhow!("record: {e}"))?;
                        }
                    }
                } else {
                    publish.await?;
                }
            }
            Ok::<(), anyhow::Error>(())
        }));
    }
    for task in tasks {
        task.await??;
    }
    let within = |what: &'static str| move |_| anyhow!("{what} did not finish within 120 s");
    tokio::time::timeout(Duration::from_secs(120), consume)
        .await
        .map_err(within("the raw consumer"))???;
    if let Some(heard) = heard {
        tokio::time::timeout(Duration::from_secs(120), heard)
            .await
            .map_err(within("the outcome watch"))???;
    }
    let rate = total as f64 / t.elapsed().as_secs_f64();
    let ends = std::mem::take(&mut *ends.lock().map_err(|_| anyhow!("poisoned"))?);
    for end in ends {
        end.await??;
    }
    // The last acks may still be on their way: the consumer is deleted once the
    // stream holds none of this round's jobs, which a deleted consumer's lost acks
    // would hand to the next round (raw counting them as its own).
    let drained = async {
        let mut stream = stream.clone();
        while stream.info().await.map_or(true, |i| i.state.messages > 0) {
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
    };
    tokio::time::timeout(Duration::from_secs(10), drained)
        .await
        .map_err(within("the acks of the raw round"))?;
    let _ = stream.delete_consumer(&name).await;
    Ok(rate)
}
