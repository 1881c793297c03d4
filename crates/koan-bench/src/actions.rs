//! B1–B3: in-process actions against raw tokio, ractor and kameo.

use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, anyhow};
use koan::{
    ActionContext, Actions, Background, BackgroundService, BoxError, Host, HostHandle, Service,
    ServiceContext, ServiceOptions, Services,
};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use tokio::sync::{mpsc, oneshot};

use crate::common::{Better, Opts, Row, cpu_seconds, median, micros, paired_ratio, round_ratios};

/// The parameters of the benchmark action.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
pub(crate) struct AddReq {
    pub(crate) a: u64,
    pub(crate) b: u64,
}

/// Mailbox capacity of every contender (≥ the 64 callers of B3).
pub(crate) const MAILBOX: usize = 4096;

/// The koan service under test: one action, `add`.
#[derive(Debug, Default)]
pub(crate) struct Calc;

impl Service for Calc {
    type Kind = Background;

    fn options() -> ServiceOptions {
        // One action at a time, like an actor; room for every caller of B3.
        ServiceOptions::named("Calc")
            .mailbox_capacity(MAILBOX)
            .max_concurrency(1)
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

impl BackgroundService for Calc {
    async fn run(&self, cx: ServiceContext) -> Result<(), BoxError> {
        cx.cancelled().await;
        Ok(())
    }
}

pub(crate) async fn start_calc_host() -> anyhow::Result<HostHandle> {
    let host = Host::builder()
        .instance(Calc)
        .shutdown_grace(Duration::from_secs(5))
        .build()?
        .start();
    host.started().await?;
    Ok(host)
}

pub(crate) async fn stop_host(host: HostHandle) {
    host.shutdown();
    let _ = host.wait().await;
}

// ---------------------------------------------------------------- raw tokio

type RawTx = mpsc::Sender<(AddReq, oneshot::Sender<u64>)>;
type RawJsonTx = mpsc::Sender<(Value, oneshot::Sender<Value>)>;

fn raw_server() -> RawTx {
    let (tx, mut rx) = mpsc::channel::<(AddReq, oneshot::Sender<u64>)>(MAILBOX);
    tokio::spawn(async move {
        while let Some((r, reply)) = rx.recv().await {
            let _ = reply.send(r.a + r.b);
        }
    });
    tx
}

/// The raw task of B2 and B7: decodes the JSON parameters, answers JSON.
pub(crate) fn raw_json_server() -> RawJsonTx {
    let (tx, mut rx) = mpsc::channel::<(Value, oneshot::Sender<Value>)>(MAILBOX);
    tokio::spawn(async move {
        while let Some((v, reply)) = rx.recv().await {
            let out = match serde_json::from_value::<AddReq>(v) {
                Ok(r) => serde_json::to_value(r.a + r.b).unwrap_or(Value::Null),
                Err(e) => json!({ "error": e.to_string() }),
            };
            let _ = reply.send(out);
        }
    });
    tx
}

async fn raw_call(tx: &RawTx, req: AddReq) -> anyhow::Result<u64> {
    let (otx, orx) = oneshot::channel();
    tx.send((req, otx))
        .await
        .map_err(|_| anyhow!("raw server gone"))?;
    Ok(orx.await?)
}

pub(crate) async fn raw_json_call(tx: &RawJsonTx, v: Value) -> anyhow::Result<Value> {
    let (otx, orx) = oneshot::channel();
    tx.send((v, otx))
        .await
        .map_err(|_| anyhow!("raw server gone"))?;
    Ok(orx.await?)
}

// ---------------------------------------------------------------- ractor

struct RCalc;

enum RMsg {
    Add(AddReq, ractor::RpcReplyPort<u64>),
}

impl ractor::Actor for RCalc {
    type Msg = RMsg;
    type State = ();
    type Arguments = ();

    async fn pre_start(
        &self,
        _myself: ractor::ActorRef<RMsg>,
        _args: (),
    ) -> Result<(), ractor::ActorProcessingErr> {
        Ok(())
    }

    async fn handle(
        &self,
        _myself: ractor::ActorRef<RMsg>,
        msg: RMsg,
        _state: &mut (),
    ) -> Result<(), ractor::ActorProcessingErr> {
        match msg {
            RMsg::Add(r, port) => {
                let _ = port.send(r.a + r.b);
            }
        }
        Ok(())
    }
}

async fn ractor_start() -> anyhow::Result<(ractor::ActorRef<RMsg>, tokio::task::JoinHandle<()>)> {
    let (actor, handle) = ractor::Actor::spawn(None, RCalc, ())
        .await
        .map_err(|e| anyhow!("ractor spawn: {e}"))?;
    Ok((actor, handle))
}

async fn ractor_call(actor: &ractor::ActorRef<RMsg>, req: AddReq) -> anyhow::Result<u64> {
    ractor::call!(actor, RMsg::Add, req).map_err(|e| anyhow!("ractor call: {e}"))
}

// ---------------------------------------------------------------- kameo

struct KCalc;

impl kameo::Actor for KCalc {
    type Args = Self;
    type Error = kameo::error::Infallible;

    async fn on_start(
        state: Self,
        _actor_ref: kameo::actor::ActorRef<Self>,
    ) -> Result<Self, Self::Error> {
        Ok(state)
    }
}

impl kameo::message::Message<AddReq> for KCalc {
    type Reply = u64;

    async fn handle(&mut self, msg: AddReq, _ctx: &mut kameo::message::Context<Self, u64>) -> u64 {
        msg.a + msg.b
    }
}

fn kameo_start() -> kameo::actor::ActorRef<KCalc> {
    <KCalc as kameo::actor::Spawn>::spawn_with_mailbox(KCalc, kameo::mailbox::bounded(MAILBOX))
}

async fn kameo_call(actor: &kameo::actor::ActorRef<KCalc>, req: AddReq) -> anyhow::Result<u64> {
    actor
        .ask(req)
        .await
        .map_err(|e| anyhow!("kameo ask: {e:?}"))
}

// ---------------------------------------------------------------- contenders

/// One way of calling `add`, cloneable into caller tasks.
#[derive(Clone)]
enum Caller {
    Koan(Services<Calc>),
    KoanJson(HostHandle),
    Raw(RawTx),
    RawJson(RawJsonTx),
    Ractor(ractor::ActorRef<RMsg>),
    Kameo(kameo::actor::ActorRef<KCalc>),
}

impl Caller {
    async fn call(&self, i: u64) -> anyhow::Result<u64> {
        let req = AddReq { a: i, b: 1 };
        let got = match self {
            Caller::Koan(s) => s.action("add", req).execute().await?.value::<u64>()?,
            Caller::KoanJson(h) => {
                let v = h
                    .service("Calc")
                    .action("add", json!({ "a": i, "b": 1 }))
                    .execute()
                    .await?
                    .json()?;
                v.as_u64().context("koan JSON result is not a number")?
            }
            Caller::Raw(tx) => raw_call(tx, req).await?,
            Caller::RawJson(tx) => {
                let v = raw_json_call(tx, json!({ "a": i, "b": 1 })).await?;
                v.as_u64().context("raw JSON result is not a number")?
            }
            Caller::Ractor(a) => ractor_call(a, req).await?,
            Caller::Kameo(a) => kameo_call(a, req).await?,
        };
        if got != i + 1 {
            return Err(anyhow!("wrong answer {got} for {i} + 1"));
        }
        Ok(got)
    }
}

/// Mean latency (µs) of `n` sequential calls from one caller task.
async fn latency_round(caller: &Caller, n: u64) -> anyhow::Result<f64> {
    let c = caller.clone();
    tokio::spawn(async move {
        let t = Instant::now();
        for i in 0..n {
            c.call(i).await?;
        }
        Ok::<f64, anyhow::Error>(micros(t.elapsed()) / n as f64)
    })
    .await?
}

/// Throughput (actions/s) of `callers` concurrent callers doing `total` calls (as
/// many as divide evenly among them: the second figure).
async fn throughput_round(caller: &Caller, callers: u64, total: u64) -> anyhow::Result<(f64, u64)> {
    let per = total / callers;
    let t = Instant::now();
    let mut tasks = Vec::new();
    for c in 0..callers {
        let caller = caller.clone();
        tasks.push(tokio::spawn(async move {
            for i in 0..per {
                caller.call(c * per + i).await?;
            }
            Ok::<(), anyhow::Error>(())
        }));
    }
    for t in tasks {
        t.await??;
    }
    let done = per * callers;
    Ok((done as f64 / t.elapsed().as_secs_f64(), done))
}

/// Each contender's figure in each measured round (the warm-up left out).
struct Rounds(Vec<Vec<f64>>);

impl Rounds {
    /// Contender `i`'s median.
    fn median(&self, i: usize) -> f64 {
        median(&self.0[i])
    }

    /// The median over the rounds of koan's figure ÷ contender `i`'s in the same
    /// round ([`paired_ratio`]).
    fn paired(&self, i: usize) -> f64 {
        paired_ratio(&self.0[0], &self.0[i])
    }

    /// Each round's koan ÷ contender `i`, for the row's note.
    fn each(&self, i: usize) -> String {
        let ratios: Vec<String> = round_ratios(&self.0[0], &self.0[i])
            .iter()
            .map(|r| format!("{r:.2}"))
            .collect();
        ratios.join(", ")
    }
}

/// Runs every contender in turn, round after round (one warm-up round first), and
/// returns each one's figures. `round` gets the contender's place and its caller.
async fn alternate<F, Fut>(
    contenders: &[(&str, Caller)],
    rounds: usize,
    round: F,
) -> anyhow::Result<Rounds>
where
    F: Fn(usize, Caller) -> Fut,
    Fut: std::future::Future<Output = anyhow::Result<f64>>,
{
    let mut samples: Vec<Vec<f64>> = vec![Vec::new(); contenders.len()];
    let solo = crate::common::solo();
    let n = contenders.len();
    for r in 0..=rounds {
        // Each round starts with the next contender: none always runs first, after
        // the machine sat idle, or always after the same other one.
        for i in (0..n).map(|k| (r + k) % n) {
            if solo.is_some_and(|s| s != i) {
                samples[i].push(f64::NAN);
                continue;
            }
            let v = round(i, contenders[i].1.clone()).await?;
            if r > 0 {
                samples[i].push(v);
            }
        }
    }
    Ok(Rounds(samples))
}

pub(crate) async fn b1_b2_b3(opts: Opts, which: &[&str]) -> anyhow::Result<Vec<Row>> {
    let host = start_calc_host().await?;
    let raw = raw_server();
    let raw_json = raw_json_server();
    let (ractor, ractor_handle) = ractor_start().await?;
    let kameo = kameo_start();
    let koan = Caller::Koan(host.services::<Calc>());
    let mut rows = Vec::new();

    if which.contains(&"B1") {
        let n = opts.pick(20_000, 500);
        let contenders = [
            ("koan", koan.clone()),
            ("raw mpsc+oneshot", Caller::Raw(raw.clone())),
            ("ractor call!", Caller::Ractor(ractor.clone())),
            ("kameo ask", Caller::Kameo(kameo.clone())),
        ];
        let m = alternate(&contenders, opts.rounds(7), |_, c| async move {
            latency_round(&c, n).await
        })
        .await?;
        let mut row = Row::new(
            "B1",
            "typed action, 1 caller, mean latency",
            "µs",
            Better::Lower,
            m.median(0),
        )
        .baseline_paired("raw mpsc+oneshot", m.median(1), m.paired(1))
        .baseline_paired("ractor", m.median(2), m.paired(2))
        .baseline_paired("kameo", m.median(3), m.paired(3));
        let met = row
            .ratio("raw mpsc+oneshot")
            .map(|r| r <= 1.25)
            .zip(row.ratio("ractor").map(|r| r < 1.0))
            .zip(row.ratio("kameo").map(|r| r < 1.0))
            .map(|((a, b), c)| a && b && c);
        row = row
            .goal("≤ 1.25× raw; < 1× ractor and kameo", met)
            .note(format!(
                "{n} calls/round, median of rounds; ratios: median of each round's"
            ));
        rows.push(row);
    }

    if which.contains(&"B2") {
        let n = opts.pick(20_000, 500);
        let contenders = [
            ("koan", Caller::KoanJson(host.clone())),
            ("raw+serde_json", Caller::RawJson(raw_json.clone())),
        ];
        let m = alternate(&contenders, opts.rounds(7), |_, c| async move {
            latency_round(&c, n).await
        })
        .await?;
        let row = Row::new(
            "B2",
            "by-name action, JSON params, mean latency",
            "µs",
            Better::Lower,
            m.median(0),
        )
        .baseline_paired("raw mpsc+oneshot + serde_json", m.median(1), m.paired(1));
        let met = row
            .ratio("raw mpsc+oneshot + serde_json")
            .map(|r| r <= 1.25);
        rows.push(
            row.goal("≤ 1.25× raw+serde_json", met)
                .note(format!("{n} calls/round; ratio: median of each round's")),
        );
    }

    if which.contains(&"B3") {
        let callers = 64;
        let rounds = opts.rounds(5);
        // 1,000,000 actions per contender over the measured rounds.
        let per_round = opts.pick(1_000_000 / rounds as u64, 6_400);
        let contenders = [
            ("koan", koan.clone()),
            ("ractor", Caller::Ractor(ractor.clone())),
            ("kameo", Caller::Kameo(kameo.clone())),
            ("raw", Caller::Raw(raw.clone())),
        ];
        // The process's CPU time over each contender's rounds (the warm-up
        // included), against the actions they did: what a call costs on whichever
        // core it ran, which bounds B3 once both cores are busy.
        let cpu = std::sync::Mutex::new(vec![(0.0_f64, 0_u64); contenders.len()]);
        let m = alternate(&contenders, rounds, |i, c| {
            let cpu = &cpu;
            async move {
                let before = cpu_seconds(std::process::id());
                let (rate, done) = throughput_round(&c, callers, per_round).await?;
                let used = cpu_seconds(std::process::id()) - before;
                if let Ok(mut cpu) = cpu.lock() {
                    let slot = &mut cpu[i];
                    slot.0 += used;
                    slot.1 += done;
                }
                Ok(rate)
            }
        })
        .await?;
        let cpu_per_action = cpu
            .into_inner()
            .unwrap_or_default()
            .iter()
            .zip(&contenders)
            .filter(|((_, n), _)| *n > 0)
            .map(|((s, n), (name, _))| format!("{name} {:.2} µs", s * 1e6 / *n as f64))
            .collect::<Vec<_>>()
            .join(", ");
        let row = Row::new(
            "B3",
            "throughput, 64 callers",
            "actions/s",
            Better::Higher,
            m.median(0),
        )
        .baseline_paired("ractor", m.median(1), m.paired(1))
        .baseline_paired("kameo", m.median(2), m.paired(2))
        .baseline_paired("raw mpsc+oneshot (info)", m.median(3), m.paired(3));
        let met = row
            .ratio("ractor")
            .zip(row.ratio("kameo"))
            .map(|(a, b)| a >= 1.0 && b >= 1.0);
        rows.push(row.goal("≥ 1.0× ractor and kameo", met).note(format!(
            "{} actions/round × {rounds} rounds, ratios: median of each round's (ractor: \
             {}); mailbox {MAILBOX}, max_concurrency 1; process CPU per action: {cpu_per_action}",
            per_round,
            m.each(1)
        )));
    }

    ractor.stop(None);
    let _ = ractor_handle.await;
    let _ = kameo.stop_gracefully().await;
    stop_host(host).await;
    Ok(rows)
}
