//! B8's durable rows: koan's durable enqueue → done against raw JetStream, which
//! is measured keeping more and more of koan's promise:
//!
//! - the job alone: stored (the publish awaits its ack), pulled, run, acknowledged.
//!   The producer learns nothing of how it ended. The goal is read against this.
//! - with its outcome: as koan does, the job carries its id (`Nats-Msg-Id`, the
//!   broker's de-duplication), the worker stores the outcome in a KV bucket
//!   (create-if-absent) before the ack, and the producer hears it through a watch
//!   of the bucket.
//! - with its outcome and a record: the producer also creates the job's record
//!   (as koan's enqueuer does, alongside the publish) and the worker writes it
//!   whole at the end (as koan's worker does for a short first run).
//!
//! The last is the request pattern of koan's own design (five requests a job to
//! the broker), done by hand: koan against it is koan's own work; the first
//! against it, the design's.

use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, anyhow};
use async_nats::jetstream::{self, consumer::pull, kv, stream};
use futures_util::{StreamExt, TryStreamExt};
use koan::{
    ActionContext, Actions, Background, BackgroundService, BoxError, HostHandle, Service,
    ServiceContext, ServiceOptions,
};
use koan_nats::{NatsOptions, NatsTransport};
use serde_json::json;

use crate::actions::AddReq;
use crate::common::{Better, Opts, Row, median, paired_ratio};
use crate::nats::{NatsServer, Spent, answer};

const PRODUCERS: u64 = 32;

/// The runs at once of the raw workers that store an outcome: `WideCalc`'s
/// `max_concurrency` (each waits for its outcome's store ack).
const RAW_AT_ONCE: usize = 64;

/// How much of koan's promise a raw round keeps (the module's doc).
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Raw {
    Ack,
    Outcome,
    Record,
}

impl Raw {
    const ALL: [Raw; 3] = [Raw::Ack, Raw::Outcome, Raw::Record];

    fn name(self) -> &'static str {
        match self {
            Raw::Ack => "raw JetStream publish + pull/ack",
            Raw::Outcome => "raw JetStream + outcome",
            Raw::Record => "raw JetStream + outcome + record",
        }
    }
}

/// The raw rounds' KV buckets, made as koan-nats makes its own.
#[derive(Clone)]
struct RawKv {
    outcomes: kv::Store,
    records: kv::Store,
}

async fn raw_kv(js: &jetstream::Context) -> anyhow::Result<RawKv> {
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

/// B8's durable rows, on the hosts and broker of its round trip: `host` enqueues
/// on the cluster whose options are `o`.
pub(crate) async fn rows(
    opts: Opts,
    server: &NatsServer,
    host: &HostHandle,
    o: &NatsOptions,
    client: &async_nats::Client,
) -> anyhow::Result<Vec<Row>> {
    let mut rows = Vec::new();
    let jobs = opts.pick(2_000, 100);
    let rounds = opts.rounds(3);
    let js = jetstream::new(client.clone());
    js.get_or_create_stream(stream::Config {
        name: "BENCH_WORK".to_owned(),
        subjects: vec!["bench.work.>".to_owned()],
        retention: stream::RetentionPolicy::WorkQueue,
        storage: stream::StorageType::File,
        ..Default::default()
    })
    .await?;
    let kv = raw_kv(&js).await?;
    let (mut ks, mut ws) = (Vec::new(), Vec::new());
    let mut rs: [Vec<f64>; 3] = Default::default();
    // What each side asked of this process's CPU and of the broker, a job, over the
    // measured rounds (koan `WideCalc`, each raw kind): the CPU clock ticks every
    // 10 ms, 5 µs a job in one round of 2,000, a third of that over three.
    let mut koan_work = Spent::default();
    let mut raw_work = [Spent::default(); 3];
    let mut round_no = 0;
    for round in 0..=rounds {
        let k = koan_durable(host, "Calc", jobs).await?;
        let mut before = Spent::now(server).await;
        let w = koan_durable(host, "WideCalc", jobs).await?;
        let mut after = Spent::now(server).await;
        if round > 0 {
            ks.push(k);
            ws.push(w);
            koan_work = koan_work.plus(before.until(after));
        }
        for (i, how) in Raw::ALL.into_iter().enumerate() {
            before = after;
            let r = raw_durable(&js, &kv, how, jobs, round_no).await?;
            round_no += 1;
            after = Spent::now(server).await;
            if round > 0 {
                rs[i].push(r);
                raw_work[i] = raw_work[i].plus(before.until(after));
            }
        }
    }
    let measured = jobs * rounds as u64;
    let spent = Raw::ALL
        .into_iter()
        .zip(raw_work)
        .map(|(how, s)| format!("{} {}", how.name(), s.per_call(measured)))
        .collect::<Vec<_>>()
        .join("; ");
    let broker = format!(
        "; per job ({rounds} rounds): koan {}; {spent}",
        koan_work.per_call(measured)
    );
    // koan claims only what a service can run (its `max_concurrency`), where the raw
    // consumer prefetches a batch: with one at a time, each job waits for its own
    // pull. Both are measured; the goal is read on the service that may run as many
    // jobs at once as the raw consumer holds.
    rows.push(
        Row::new(
            "B8",
            "durable enqueue → done, max_concurrency 1",
            "jobs/s",
            Better::Higher,
            median(&ks),
        )
        .baseline_paired(Raw::Ack.name(), median(&rs[0]), paired_ratio(&ks, &rs[0]))
        .note(format!(
            "{jobs} jobs/round from 32 producers, file storage; raw: one consumer, default prefetch"
        )),
    );
    let mut row = Row::new(
        "B8",
        "durable enqueue → done, max_concurrency 64",
        "jobs/s",
        Better::Higher,
        median(&ws),
    );
    for (i, how) in Raw::ALL.into_iter().enumerate() {
        row = row.baseline_paired(how.name(), median(&rs[i]), paired_ratio(&ws, &rs[i]));
    }
    let met = row.ratio(Raw::Ack.name()).map(|r| r >= 0.7);
    rows.push(row.goal("≥ 0.7× raw", met).note(format!(
        "{jobs} jobs/round from 32 producers, file storage; ratios: median of each round's; \
         raw: one consumer, default prefetch; with an outcome, {RAW_AT_ONCE} runs at once{broker}"
    )));

    // The same with more hosts on the cluster that neither enqueue, list nor run
    // jobs (each connected, as a host's transport is): a job's cost should not grow
    // with the cluster.
    let more = opts.pick(6, 1);
    let mut others = Vec::with_capacity(more);
    for _ in 0..more {
        others.push(NatsTransport::connect(o.clone()).await?);
    }
    let (mut cs, mut crs) = (Vec::new(), Vec::new());
    let mut crowd = Spent::default();
    for round in 0..=rounds {
        let before = Spent::now(server).await;
        let w = koan_durable(host, "WideCalc", jobs).await?;
        let after = Spent::now(server).await;
        let r = raw_durable(&js, &kv, Raw::Ack, jobs, round_no).await?;
        round_no += 1;
        if round > 0 {
            cs.push(w);
            crs.push(r);
            crowd = crowd.plus(before.until(after));
        }
    }
    rows.push(
        Row::new(
            "B8",
            &format!("durable enqueue → done, max_concurrency 64, {} hosts", more + 2),
            "jobs/s",
            Better::Higher,
            median(&cs),
        )
        .baseline_paired(Raw::Ack.name(), median(&crs), paired_ratio(&cs, &crs))
        .note(format!(
            "{more} more hosts connected that neither enqueue, list nor run jobs; per job ({rounds} rounds): koan {}",
            crowd.per_call(measured)
        )),
    );
    drop(others);
    Ok(rows)
}

/// Jobs/s from the first enqueue to the last outcome.
async fn koan_durable(host: &HostHandle, service: &'static str, jobs: u64) -> anyhow::Result<f64> {
    let per = jobs / PRODUCERS;
    let t = Instant::now();
    let mut tasks = Vec::new();
    for p in 0..PRODUCERS {
        let host = host.clone();
        tasks.push(tokio::spawn(async move {
            let mut tickets = Vec::with_capacity(per as usize);
            for i in 0..per {
                tickets.push(
                    host.service(service)
                        .action("add", json!({ "a": p * per + i, "b": 1 }))
                        .enqueue()
                        .await?,
                );
            }
            for ticket in tickets {
                ticket.outcome().await?;
            }
            Ok::<(), anyhow::Error>(())
        }));
    }
    for task in tasks {
        task.await??;
    }
    Ok((per * PRODUCERS) as f64 / t.elapsed().as_secs_f64())
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
async fn raw_durable(
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
                    kv.outcomes
                        .create(&id, outcome.into())
                        .await
                        .map_err(|e| anyhow!("outcome: {e}"))?;
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
                    recorded.map_err(|e| anyhow!("record: {e}"))?;
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

/// `Calc`'s action on a service that may run 64 jobs at once (B8 durable).
#[derive(Debug, Default)]
pub(crate) struct WideCalc;

impl Service for WideCalc {
    type Kind = Background;

    fn options() -> ServiceOptions {
        ServiceOptions::named("WideCalc").max_concurrency(64)
    }

    fn actions(a: &mut Actions<Self>) {
        a.action(
            "add",
            |_svc: Arc<Self>, p: AddReq, _cx: ActionContext| async move {
                Ok::<u64, BoxError>(p.a + p.b)
            },
        );
    }
}

impl BackgroundService for WideCalc {
    async fn run(&self, cx: ServiceContext) -> Result<(), BoxError> {
        cx.cancelled().await;
        Ok(())
    }
}
