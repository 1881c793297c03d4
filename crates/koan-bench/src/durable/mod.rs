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
//! against it, the design's. The raw rounds are in `raw.rs`.

use std::sync::Arc;
use std::time::Instant;

use async_nats::jetstream::{self, stream};
use koan::{
    ActionContext, Actions, Background, BackgroundService, BoxError, HostHandle, Service,
    ServiceContext, ServiceOptions,
};
use koan_nats::{NatsOptions, NatsTransport};
use serde_json::json;

use crate::actions::{AddReq, stop_host};
use crate::common::{Better, Opts, Row, median, paired_ratio};
use crate::nats::{NatsServer, Spent};

mod raw;
use raw::{RAW_AT_ONCE, Raw, raw_durable, raw_kv};

const PRODUCERS: u64 = 32;

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
    if let Some(n) = goal_row_only() {
        return goal_row_alone(server, host, &js, &kv, n)
            .await
            .map(|()| rows);
    }
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
    // The same jobs enqueued and awaited from four hosts of that cluster, a
    // quarter from each: a host awaiting outcomes watches the whole bucket
    // while it awaits, so each outcome goes to every host awaiting one then.
    let awaiting = opts.pick(4, 2);
    let mut hosts = vec![host.clone()];
    for t in others.iter().take(awaiting - 1) {
        let h = koan::Host::builder()
            .transport(t.clone().into_transport())
            .build()?
            .start();
        h.started().await?;
        hosts.push(h);
    }
    let share = jobs / awaiting as u64 / PRODUCERS * PRODUCERS;
    let (mut spread, mut srs) = (Vec::new(), Vec::new());
    let mut spread_spent = Spent::default();
    for round in 0..=rounds {
        let before = Spent::now(server).await;
        let t = Instant::now();
        let runs: Vec<_> = hosts
            .iter()
            .map(|h| {
                let h = h.clone();
                tokio::spawn(async move { koan_durable(&h, "WideCalc", share).await })
            })
            .collect();
        for run in runs {
            run.await??;
        }
        let w = (share * awaiting as u64) as f64 / t.elapsed().as_secs_f64();
        let after = Spent::now(server).await;
        let r = raw_durable(&js, &kv, Raw::Ack, jobs, round_no).await?;
        round_no += 1;
        if round > 0 {
            spread.push(w);
            srs.push(r);
            spread_spent = spread_spent.plus(before.until(after));
        }
    }
    rows.push(
        Row::new(
            "B8",
            &format!("durable enqueue → done, max_concurrency 64, awaited from {awaiting} hosts"),
            "jobs/s",
            Better::Higher,
            median(&spread),
        )
        .baseline_paired(Raw::Ack.name(), median(&srs), paired_ratio(&spread, &srs))
        .note(format!(
            "{} jobs/round, a share enqueued and awaited from each; per job ({rounds} rounds): koan {}",
            share * awaiting as u64,
            spread_spent.per_call(share * awaiting as u64 * rounds as u64)
        )),
    );
    for h in hosts.into_iter().skip(1) {
        stop_host(h).await;
    }
    drop(others);
    Ok(rows)
}

/// `KOAN_BENCH_GOAL_ROW=N`: B8's goal row alone, for comparing builds (after
/// B8's round trip; the other durable rows are skipped and no row is reported);
/// with `KOAN_BENCH_SOLO=0`, koan's rounds alone.
pub(crate) fn goal_row_only() -> Option<usize> {
    std::env::var("KOAN_BENCH_GOAL_ROW").ok()?.parse().ok()
}

/// `n` rounds of the goal row, each koan's then raw JetStream's (the first a
/// warm-up): the median of the rounds' own ratios, and what each side spent a
/// job, printed.
async fn goal_row_alone(
    server: &NatsServer,
    host: &HostHandle,
    js: &jetstream::Context,
    kv: &raw::RawKv,
    n: usize,
) -> anyhow::Result<()> {
    let jobs = 2_000;
    let (mut ks, mut rs) = (Vec::new(), Vec::new());
    let (mut koan, mut bare) = (Spent::default(), Spent::default());
    for round in 0..=n {
        let before = Spent::now(server).await;
        let k = koan_durable(host, "WideCalc", jobs).await?;
        let mid = Spent::now(server).await;
        // `KOAN_BENCH_SOLO=0`: koan's rounds alone (a profile of koan's side).
        let r = if crate::common::solo() == Some(0) {
            f64::NAN
        } else {
            raw_durable(js, kv, Raw::Ack, jobs, round).await?
        };
        let after = Spent::now(server).await;
        if round > 0 {
            ks.push(k);
            rs.push(r);
            koan = koan.plus(before.until(mid));
            bare = bare.plus(mid.until(after));
        }
    }
    let measured = jobs * n as u64;
    eprintln!(
        "B8 goal row, {n} rounds: koan {:.0} jobs/s, raw {:.0}; ratio {:.3} (median of the rounds'); \
         per job: koan {}; raw {}",
        median(&ks),
        median(&rs),
        paired_ratio(&ks, &rs),
        koan.per_call(measured),
        bare.per_call(measured)
    );
    Ok(())
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
