//! Durable work over JetStream: enqueued remote actions and their outcomes,
//! de-duplication by id, dead letters after `max_deliver` attempts, and a NATS server
//! restarted while jobs are pending.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures_util::StreamExt;
use koan::action::ActionRequest;
use koan::job::JobTicket;
use koan::{
    ActionContext, Actions, Background, BackgroundService, BoxError, Service, ServiceContext,
    ServiceOptions, error::ErrorKind, transport::DurableJob, transport::RemoteCall,
    transport::Transport,
};
use koan_nats::NatsOptions;
use koan_test_support::nats::{Member, NatsServer, announced, test_options};
use koan_test_support::{eventually, within};
use serde_json::{Value, json};
use tokio::sync::watch;

/// Counts, per job number, how often each action's handler ran to the end.
#[derive(Default)]
struct Tally {
    done: Mutex<BTreeMap<(String, u32), u32>>,
    started: AtomicU32,
}

impl Tally {
    fn add(&self, action: &str, n: u32) {
        if let Ok(mut m) = self.done.lock() {
            *m.entry((action.to_owned(), n)).or_default() += 1;
        }
    }

    fn count(&self, action: &str, n: u32) -> u32 {
        self.done
            .lock()
            .map(|m| m.get(&(action.to_owned(), n)).copied().unwrap_or(0))
            .unwrap_or(0)
    }

    fn total(&self, action: &str) -> u32 {
        self.done
            .lock()
            .map(|m| {
                m.iter()
                    .filter(|((a, _), _)| a == action)
                    .map(|(_, c)| *c)
                    .sum()
            })
            .unwrap_or(0)
    }
}

/// The service that does the durable work.
struct Worker {
    tally: Arc<Tally>,
    gate: watch::Receiver<bool>,
}

impl Service for Worker {
    type Kind = Background;

    fn options() -> ServiceOptions {
        ServiceOptions::named("Worker").max_concurrency(32)
    }

    fn actions(a: &mut Actions<Self>) {
        a.action(
            "work",
            |svc: Arc<Self>, n: u32, cx: ActionContext| async move {
                svc.tally.add("work", n);
                Ok::<_, BoxError>(json!({ "n": n, "correlation_id": cx.correlation_id() }))
            },
        );
        a.action(
            "doomed",
            |svc: Arc<Self>, n: u32, _cx: ActionContext| async move {
                svc.tally.add("doomed", n);
                Err::<(), BoxError>(format!("job {n} cannot be done").into())
            },
        );
        // Waits for the gate to open, then completes.
        a.action(
            "gated",
            |svc: Arc<Self>, n: u32, _cx: ActionContext| async move {
                svc.tally.started.fetch_add(1, Ordering::SeqCst);
                let mut gate = svc.gate.clone();
                gate.wait_for(|open| *open).await?;
                svc.tally.add("gated", n);
                Ok::<_, BoxError>(n)
            },
        );
    }
}

impl BackgroundService for Worker {
    async fn run(&self, cx: ServiceContext) -> Result<(), BoxError> {
        cx.cancelled().await;
        Ok(())
    }
}

/// A second service, hosted only after the restart.
struct Archiver {
    tally: Arc<Tally>,
}

impl Service for Archiver {
    type Kind = Background;

    fn options() -> ServiceOptions {
        ServiceOptions::named("Archiver").max_concurrency(8)
    }

    fn actions(a: &mut Actions<Self>) {
        a.action(
            "archive",
            |svc: Arc<Self>, n: u32, _cx: ActionContext| async move {
                svc.tally.add("archive", n);
                Ok::<_, BoxError>(n)
            },
        );
    }
}

impl BackgroundService for Archiver {
    async fn run(&self, cx: ServiceContext) -> Result<(), BoxError> {
        cx.cancelled().await;
        Ok(())
    }
}

fn worker() -> (Worker, Arc<Tally>, watch::Sender<bool>) {
    let tally = Arc::new(Tally::default());
    let (tx, rx) = watch::channel(false);
    (
        Worker {
            tally: Arc::clone(&tally),
            gate: rx,
        },
        tally,
        tx,
    )
}

/// A member `a` running a new `Worker` and a member `b` that calls it, joined with
/// `opts`; the worker's tally and the gate of its `gated` runs.
struct Joined {
    a: Member,
    b: Member,
    tally: Arc<Tally>,
    gate: watch::Sender<bool>,
}

impl Joined {
    async fn start(opts: NatsOptions) -> anyhow::Result<Joined> {
        let (w, tally, gate) = worker();
        let a = Member::join(opts.clone(), |b| b.instance(w)).await?;
        let b = Member::join(opts, |b| b).await?;
        Ok(Joined { a, b, tally, gate })
    }

    /// Stops `b`, then `a`.
    async fn stop(self) -> anyhow::Result<()> {
        self.b.stop().await?;
        self.a.stop().await
    }
}

/// Enqueues `req` as a durable job; its ticket.
async fn enqueue(req: ActionRequest) -> anyhow::Result<JobTicket> {
    Ok(within("enqueue", req.enqueue()).await??)
}

fn call(action: &str, n: u32) -> RemoteCall {
    RemoteCall {
        service: "Worker".into(),
        action: action.into(),
        params: json!(n),
        priority: 0,
        timeout: None,
        correlation_id: format!("corr-{action}-{n}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn enqueued_remote_actions_complete_and_their_outcome_reaches_the_ticket()
-> anyhow::Result<()> {
    let server = NatsServer::start()?;
    let joined = Joined::start(test_options(&server.url())).await?;
    let (b, tally) = (&joined.b, &joined.tally);

    let mut tickets = Vec::new();
    for n in 0..10u32 {
        let work = b.host.service("Worker").action("work", n);
        let t = enqueue(work.correlation_id(format!("batch-{n}"))).await?;
        tickets.push((n, t));
    }
    for (n, t) in tickets {
        assert_eq!(t.correlation_id(), format!("batch-{n}"));
        let out = within("an outcome", t.outcome()).await??;
        let v = out.json()?;
        assert_eq!(v["n"], json!(n));
        assert_eq!(v["correlation_id"], json!(format!("batch-{n}")));
    }
    for n in 0..10 {
        assert_eq!(tally.count("work", n), 1, "job {n} ran once");
    }

    // A remote rejection comes back as the outcome, with its kind.
    let t = enqueue(b.host.service("Worker").action("work", "not a number")).await?;
    let e = within("a failed outcome", t.outcome())
        .await?
        .expect_err("u32 expected");
    assert_eq!(e.kind(), ErrorKind::InvalidParameters, "{e}");
    joined.stop().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_same_job_id_is_handled_once() -> anyhow::Result<()> {
    let server = NatsServer::start()?;
    let joined = Joined::start(test_options(&server.url())).await?;
    let (t, tally): (&dyn Transport, _) = (&joined.b.nats, &joined.tally);

    // The same id twice (a client retrying after a lost acknowledgement, say).
    within(
        "enqueue",
        t.enqueue(call("work", 1), DurableJob::new("dup-job-1")),
    )
    .await??;
    within(
        "enqueue again",
        t.enqueue(call("work", 1), DurableJob::new("dup-job-1")),
    )
    .await??;
    let v = within("the outcome", t.outcome("dup-job-1")).await??;
    assert_eq!(v["n"], json!(1));
    // Jobs enqueued after the duplicate are done, and still the duplicate was not.
    within(
        "enqueue",
        t.enqueue(call("work", 2), DurableJob::new("dup-job-2")),
    )
    .await??;
    within(
        "enqueue",
        t.enqueue(call("work", 3), DurableJob::new("dup-job-3")),
    )
    .await??;
    within("the outcome", t.outcome("dup-job-2")).await??;
    within("the outcome", t.outcome("dup-job-3")).await??;
    assert_eq!(tally.count("work", 1), 1, "handled once");
    assert_eq!(tally.total("work"), 3);

    // The outcome stays readable by anyone.
    let again = within("the outcome again", t.outcome("dup-job-1")).await??;
    assert_eq!(again, v);
    joined.stop().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_job_that_always_fails_goes_to_the_dead_letter_subject() -> anyhow::Result<()> {
    let server = NatsServer::start()?;
    let mut opts = test_options(&server.url());
    opts.max_deliver = 2;
    let joined = Joined::start(opts).await?;
    let (b, tally) = (&joined.b, &joined.tally);

    let mut dead = b.nats.client().subscribe("koan.dlq.worker.doomed").await?;
    b.nats.client().flush().await?;

    let ticket = enqueue(b.host.services::<Worker>().action("doomed", 7u32)).await?;
    let id = ticket.id().to_owned();
    let e = within("the outcome", ticket.outcome())
        .await?
        .expect_err("it never succeeds");
    assert_eq!(e.kind(), ErrorKind::Handler, "{e}");
    assert!(e.message().contains("job 7 cannot be done"), "{e}");

    let letter = within("the dead letter", dead.next())
        .await?
        .expect("a dead letter");
    let header = |name: &str| {
        letter
            .headers
            .as_ref()
            .and_then(|h| h.get(name))
            .map(|v| v.as_str().to_owned())
    };
    assert_eq!(
        header("Koan-Action-Id").as_deref(),
        Some(id.as_str()),
        "names the job id"
    );
    // The job as it was published: parameters as the body, the rest in headers,
    // and why it died.
    assert_eq!(header("Koan-Action").as_deref(), Some("doomed"));
    assert_eq!(header("Koan-Service").as_deref(), Some("Worker"));
    assert_eq!(header("Koan-Error").as_deref(), Some("handler_error"));
    assert!(
        header("Koan-Error-Message").is_some_and(|m| m.contains("job 7 cannot be done")),
        "{:?}",
        header("Koan-Error-Message")
    );
    assert_eq!(header("Nats-Msg-Id"), None, "no de-duplication id");
    let params: Value = serde_json::from_slice(&letter.payload)?;
    assert_eq!(params, json!(7));
    assert_eq!(tally.count("doomed", 7), 2, "tried max_deliver = 2 times");

    // Kept in the dead-letter stream as well.
    let js = async_nats::jetstream::new(b.nats.client().clone());
    let mut dlq = js.get_stream("KOAN_DLQ").await?;
    assert_eq!(dlq.info().await?.state.messages, 1);
    joined.stop().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn jobs_survive_a_restart_of_the_nats_server() -> anyhow::Result<()> {
    const N: u32 = 10;
    let mut server = NatsServer::start()?;
    let mut opts = test_options(&server.url());
    opts.memory_storage = false;
    opts.ack_wait = Duration::from_secs(3);
    let joined = Joined::start(opts.clone()).await?;
    let (b, tally, gate) = (&joined.b, &joined.tally, &joined.gate);

    // Work that is running (held at the gate) when the server goes away…
    let mut running = Vec::new();
    for n in 0..N {
        running.push(enqueue(b.host.service("Worker").action("gated", n)).await?);
    }
    // …and work that nobody consumes yet: the archiver was in the cluster, and left.
    let early = Member::join(opts.clone(), |b| {
        b.instance(Archiver {
            tally: Arc::new(Tally::default()),
        })
    })
    .await?;
    announced(&b.host, "Archiver", 1).await?;
    early.stop().await?;
    let mut waiting = Vec::new();
    for n in 0..N {
        waiting.push(enqueue(b.host.service("Archiver").action("archive", n)).await?);
    }
    eventually("the gated jobs to start", || async {
        tally.started.load(Ordering::SeqCst) >= N
    })
    .await?;

    server.restart()?;
    gate.send_replace(true);

    // The archiver arrives only now.
    let archived = Arc::new(Tally::default());
    let c = Member::join(opts, |b| {
        b.instance(Archiver {
            tally: Arc::clone(&archived),
        })
    })
    .await?;

    for (n, t) in running.into_iter().enumerate() {
        let out = within("a job held across the restart", t.outcome()).await??;
        assert_eq!(out.value::<u32>()?, n as u32);
    }
    for (n, t) in waiting.into_iter().enumerate() {
        let out = within("a job stored across the restart", t.outcome()).await??;
        assert_eq!(out.value::<u32>()?, n as u32);
    }
    for n in 0..N {
        assert!(tally.count("gated", n) >= 1, "gated job {n} done");
        assert_eq!(archived.count("archive", n), 1, "archive job {n} done once");
    }

    c.stop().await?;
    joined.stop().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_idempotency_key_names_one_job_across_hosts_and_through_an_unconfirmed_publish()
-> anyhow::Result<()> {
    let mut server = NatsServer::start()?;
    let mut opts = test_options(&server.url());
    // The stream outlives the server's restart below.
    opts.memory_storage = false;
    let archived = Arc::new(Tally::default());
    let a = Member::join(opts.clone(), |b| {
        b.instance(Archiver {
            tally: Arc::clone(&archived),
        })
    })
    .await?;
    let b = Member::join(opts.clone(), |b| b).await?;
    let c = Member::join(opts.clone(), |b| b).await?;
    let enqueue = |m: &Member, n: u32, key: &str| {
        m.host
            .service("Archiver")
            .action("archive", n)
            .idempotency_key(key.to_owned())
            .enqueue()
    };

    // The same key from two hosts: one job, one run; the repeat says it was not created.
    let first = within("enqueue", enqueue(&b, 1, "order-1")).await??;
    let again = within("enqueue", enqueue(&c, 1, "order-1")).await??;
    assert!(first.created());
    assert!(!again.created(), "the repeat is the first job");
    assert_eq!(first.id(), again.id());
    within("the job", first.outcome()).await??;
    within("the repeat's answer", again.outcome()).await??;
    assert_eq!(archived.count("archive", 1), 1);

    // The broker goes away during an enqueue: the answer says the outcome is unknown
    // (not "not stored"). The publish either waits in the client and is delivered
    // once the broker is back, or went into the dying connection and is lost —
    // which, depends on whether the client saw the kill first. Either way a repeat
    // with the key names one job, and it runs once.
    // A host that already saw the link down refuses it at once, nothing sent.
    server.kill();
    let unknown = within("an unconfirmed enqueue", enqueue(&b, 2, "order-2"))
        .await?
        .expect_err("no broker to confirm");
    if unknown.kind() == ErrorKind::ServiceUnavailable {
        assert!(unknown.message().contains("nothing was sent"), "{unknown}");
    } else {
        assert_eq!(unknown.kind(), ErrorKind::Timeout, "{unknown}");
        assert!(
            unknown.message().contains("outcome is unknown"),
            "{unknown}"
        );
        assert!(unknown.message().contains("order-2"), "{unknown}");
    }
    server.restart()?;
    let repeat = within("the repeat", async {
        loop {
            match enqueue(&b, 2, "order-2").await {
                Ok(t) => return t,
                // Still reconnecting.
                Err(_) => tokio::time::sleep(Duration::from_millis(50)).await,
            }
        }
    })
    .await?;
    let created = repeat.created();
    within("the repeat's answer", repeat.outcome()).await??;
    assert_eq!(
        archived.count("archive", 2),
        1,
        "ran once (the repeat created it: {created})"
    );

    c.stop().await?;
    b.stop().await?;
    a.stop().await?;
    Ok(())
}
