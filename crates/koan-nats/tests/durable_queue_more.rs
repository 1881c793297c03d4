//! More edges of the durable queue (`queue.rs`) that mutation testing found open
//! (issue 22, round 5): a failed job's record says when its next run is due, after
//! its backoff; a run that finds its outcome already recorded by another delivery
//! ends its job all the same; a run whose result cannot be stored ends dead, once,
//! rather than acknowledged unanswered or run again; and a worker whose progress acks the broker never
//! answers loses its claim and is fenced, though its connection is open and fine.

mod common;

use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use async_nats::HeaderMap;
use async_nats::jetstream::stream;
use common::{Holder, Stopped, enqueue, job_reaches, stream_holds};
use koan::{
    ActionContext, Actions, Background, BackgroundService, BoxError, Service, ServiceContext,
    ServiceOptions, job::JobState, transport::Transport,
};
use koan_test_support::nats::{Member, NatsServer, announced, nats_server_bin, test_options};
use koan_test_support::{TempDir, eventually, free_port, wait_for, within};

/// Counts the runs of its actions.
#[derive(Default)]
struct Edges {
    runs: Arc<AtomicU32>,
}

/// A result larger than the outcomes bucket of `an_outcome_that_cannot_be_stored…`
/// takes.
const BIG: usize = 8 * 1024;

impl Service for Edges {
    type Kind = Background;

    fn options() -> ServiceOptions {
        ServiceOptions::named("Edges")
    }

    fn actions(a: &mut Actions<Self>) {
        a.action(
            "add",
            |svc: Arc<Self>, n: u32, _cx: ActionContext| async move {
                svc.runs.fetch_add(1, Ordering::SeqCst);
                Ok::<_, BoxError>(n + 1)
            },
        );
        a.action(
            "big",
            |svc: Arc<Self>, (): (), _cx: ActionContext| async move {
                svc.runs.fetch_add(1, Ordering::SeqCst);
                Ok::<_, BoxError>("x".repeat(BIG))
            },
        );
        // Two runs, the second two minutes (± the default 20 % jitter) after the
        // first failed.
        a.action(
            "fails",
            |svc: Arc<Self>, (): (), _cx: ActionContext| async move {
                svc.runs.fetch_add(1, Ordering::SeqCst);
                Err::<(), BoxError>("broken".into())
            },
        )
        .max_attempts(2)
        .backoff(Duration::from_secs(120));
    }
}

impl BackgroundService for Edges {
    async fn run(&self, cx: ServiceContext) -> Result<(), BoxError> {
        cx.cancelled().await;
        Ok(())
    }
}

/// Publishes a job of `Edges` as a foreign client would: its id (`Nats-Msg-Id`) and
/// its parameters, nothing more.
async fn publish(
    js: &async_nats::jetstream::Context,
    id: &str,
    action: &str,
    params: &str,
) -> anyhow::Result<()> {
    let mut h = HeaderMap::new();
    h.insert("Nats-Msg-Id", id);
    let ack = within(
        "the publish",
        js.publish_with_headers(
            format!("koan.work.edges.{action}"),
            h,
            params.to_owned().into(),
        ),
    )
    .await??;
    within("the PubAck", ack.into_future()).await??;
    Ok(())
}

/// The record of a failed job that will run again says when: its backoff after the
/// run that failed (not before it).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_cluster_job_is_due_again_after_its_backoff() -> anyhow::Result<()> {
    let server = NatsServer::start()?;
    let (worker, client) = Member::worker_and_client(test_options(&server.url()), "Edges", |b| {
        b.instance(Edges::default())
    })
    .await?;

    let ticket = within(
        "enqueue",
        client.host.service("Edges").action("fails", ()).enqueue(),
    )
    .await??;
    let id = ticket.id().to_owned();
    let record = wait_for("the job to wait for its second run", async || {
        let r = client.host.jobs().get(&id).await.ok();
        Ok(r.filter(|r| r.state == JobState::Retrying))
    })
    .await?;
    let run = record
        .history
        .last()
        .ok_or_else(|| anyhow::anyhow!("no attempt in {record:?}"))?;
    // 120 s less the jitter is at least 96 s.
    let wait = (record.run_at - run.started_at).num_seconds();
    assert!(
        wait >= 90,
        "the second run is due {wait} s after the first started: {record:?}"
    );

    client.stop().await?;
    worker.stop().await?;
    Ok(())
}

/// A run that finds its job's outcome already recorded (by another delivery of the
/// same job) leaves that outcome, and its job's record ends all the same — here for
/// an id a host made up, whose first delivery does not look the outcome up.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_run_whose_outcome_was_recorded_first_ends_its_job() -> anyhow::Result<()> {
    let server = NatsServer::start()?;
    let runs = Arc::new(AtomicU32::new(0));
    let edges = Edges {
        runs: Arc::clone(&runs),
    };
    let (worker, client) =
        Member::worker_and_client(test_options(&server.url()), "Edges", |b| b.instance(edges))
            .await?;
    let js = async_nats::jetstream::new(client.nats.client().clone());

    let id = koan::job::new_job_id();
    let outcomes = within("the outcomes bucket", js.get_key_value("koan_outcomes")).await??;
    let first = serde_json::json!({"id": id, "host": "another", "attempts": 1, "ok": 100});
    within(
        "the first outcome",
        outcomes.create(&id, serde_json::to_vec(&first)?.into()),
    )
    .await??;
    publish(&js, &id, "add", "1").await?;

    let record = wait_for("the job's record to be final", async || {
        let r = client.host.jobs().get(&id).await.ok();
        Ok(r.filter(|r| r.state.is_final()))
    })
    .await?;
    assert_eq!(record.state, JobState::Succeeded, "{record:?}");
    assert_eq!(runs.load(Ordering::SeqCst), 1, "run once");
    let t: &dyn Transport = &client.nats;
    let out = within("the outcome", t.outcome(&id)).await??;
    assert_eq!(out, serde_json::json!(100), "the first outcome stands");

    client.stop().await?;
    worker.stop().await?;
    Ok(())
}

/// A run whose result the outcomes bucket refuses for good (here: larger than the
/// bucket takes; in production, larger than the broker's `max_payload`) is neither
/// acknowledged as done with no answer nor run again and again: the job ends dead,
/// once, its enqueuer told why. (Before: naked and run again on every delivery, its
/// side effects repeated, and never answered.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_run_whose_result_cannot_be_stored_ends_dead_once() -> anyhow::Result<()> {
    let server = NatsServer::start()?;
    let opts = test_options(&server.url());
    // The outcomes bucket, made before any member as the members make it, but with
    // room for small outcomes only.
    let raw = within("connect", async_nats::connect(server.url())).await??;
    let js = async_nats::jetstream::new(raw);
    within(
        "the outcomes bucket",
        js.create_stream(stream::Config {
            name: "KV_koan_outcomes".to_owned(),
            subjects: vec!["$KV.koan_outcomes.>".to_owned()],
            max_messages_per_subject: 1,
            max_age: opts.outcome_ttl,
            max_message_size: 1024,
            storage: stream::StorageType::Memory,
            allow_rollup: true,
            deny_delete: true,
            allow_direct: true,
            discard: stream::DiscardPolicy::New,
            num_replicas: 1,
            ..Default::default()
        }),
    )
    .await??;
    let runs = Arc::new(AtomicU32::new(0));
    let edges = Edges {
        runs: Arc::clone(&runs),
    };
    let (worker, client) = Member::worker_and_client(opts, "Edges", |b| b.instance(edges)).await?;

    // A small outcome is stored.
    let ticket = within(
        "enqueue",
        client.host.service("Edges").action("add", 1u32).enqueue(),
    )
    .await??;
    let out = within("the small outcome", ticket.outcome()).await??;
    assert_eq!(out.value::<u32>()?, 2);

    // A big one is not: the job ends dead after one run, its enqueuer told why.
    runs.store(0, Ordering::SeqCst);
    let ticket = within(
        "enqueue",
        client.host.service("Edges").action("big", ()).enqueue(),
    )
    .await??;
    let id = ticket.id().to_owned();
    let err = within("the big job's outcome", ticket.outcome())
        .await?
        .expect_err("a result that cannot be stored is not a success");
    assert!(
        err.to_string().contains("could not be stored"),
        "the error says why: {err}"
    );
    assert_eq!(runs.load(Ordering::SeqCst), 1, "run once, not again");
    job_reaches(&client.host, &id, JobState::Dead).await?;
    // its message to be ended.
    stream_holds(&client, "KOAN_WORK", 0).await?;

    client.stop().await?;
    worker.stop().await?;
    Ok(())
}

/// A `nats-server` with JetStream and two users: `deaf`, who may not acknowledge
/// JetStream messages (so no progress ack of it is ever answered), and `all`.
struct AuthServer {
    child: Child,
    port: u16,
    _dir: TempDir,
}

impl AuthServer {
    fn start() -> anyhow::Result<AuthServer> {
        let dir = TempDir::new("koan-nats-auth");
        let port = free_port();
        let conf = dir.path().join("server.conf");
        std::fs::write(
            &conf,
            format!(
                r#"listen: "127.0.0.1:{port}"
jetstream {{ store_dir: "{}" }}
authorization {{
  users = [
    {{ user: deaf, password: deaf, permissions: {{ publish: {{ deny: ["$JS.ACK.>"] }} }} }}
    {{ user: all, password: all }}
  ]
}}
"#,
                dir.path().join("store").display()
            ),
        )?;
        let log = std::fs::File::create(dir.path().join("server.log"))?;
        let child = Command::new(nats_server_bin())
            .arg("-c")
            .arg(&conf)
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()?;
        let server = AuthServer {
            child,
            port,
            _dir: dir,
        };
        // Ready once it accepts connections (bounded).
        let addr = std::net::SocketAddr::from(([127, 0, 0, 1], port));
        for _ in 0..750 {
            if std::net::TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_ok() {
                return Ok(server);
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        anyhow::bail!("nats-server with users is not ready on {addr}")
    }

    fn url(&self) -> String {
        format!("nats://127.0.0.1:{}", self.port)
    }
}

impl Drop for AuthServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A worker whose progress acks are never answered (its connection fine otherwise)
/// has lost its claim once `ack_wait` passed without one: its run is cancelled,
/// as JetStream may hand the job to another instance.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_whose_progress_acks_go_unanswered_is_fenced() -> anyhow::Result<()> {
    let server = AuthServer::start()?;
    let options = |user: &str| {
        let mut o = test_options(&server.url());
        o.user_password = Some((user.to_owned(), user.to_owned()));
        o.ack_wait = Duration::from_secs(1);
        o
    };
    let (holder, runs) = Holder::new(Stopped::Succeeds);
    let worker = Member::join(options("deaf"), |b| b.instance(holder)).await?;
    let client = Member::join(options("all"), |b| b).await?;
    announced(&client.host, "Holder", 1).await?;

    let _ticket = enqueue(&client.host, "hold", ()).await?;
    eventually("the job to run", || async { runs.started() == 1 }).await?;
    eventually("the unheard run to be cancelled", || async {
        runs.stopped()
    })
    .await?;

    client.stop().await?;
    worker.stop().await?;
    Ok(())
}
