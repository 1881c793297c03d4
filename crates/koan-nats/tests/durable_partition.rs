//! Fencing when the broker cannot hear a worker: a worker cut off from NATS (its
//! connection open, nothing getting through — a partition, or a broker too slow to
//! read) past `ack_wait` has lost its claim, as JetStream hands the job to another
//! instance; its run is cancelled, though its progress acks were written to the
//! socket without error.

mod common;

use std::time::Duration;

use common::{Holder, Runs, Stopped, enqueue, holder_and_client, job_reaches, stream_holds};
use koan::job::JobState;
use koan::job::JobTicket;
use koan_nats::NatsOptions;
use koan_test_support::nats::{
    Member, NatsServer, announced, pull_until_out_of_deliveries, test_options,
};
use koan_test_support::{eventually, within};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;

/// A TCP proxy to the server that can be frozen: nothing passes either way while
/// it is, and the connections stay open.
struct Proxy {
    url: String,
    frozen: watch::Sender<bool>,
    task: tokio::task::JoinHandle<()>,
}

impl Proxy {
    async fn start(server: &str) -> anyhow::Result<Proxy> {
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let url = format!("nats://{}", listener.local_addr()?);
        let to = server.trim_start_matches("nats://").to_owned();
        let (frozen, rx) = watch::channel(false);
        let task = tokio::spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                let Ok(upstream) = TcpStream::connect(&to).await else {
                    continue;
                };
                let (cr, cw) = client.into_split();
                let (ur, uw) = upstream.into_split();
                tokio::spawn(pipe(cr, uw, rx.clone()));
                tokio::spawn(pipe(ur, cw, rx.clone()));
            }
        });
        Ok(Proxy { url, frozen, task })
    }

    fn freeze(&self, on: bool) {
        self.frozen.send_replace(on);
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn pipe(
    mut from: tokio::net::tcp::OwnedReadHalf,
    mut to: tokio::net::tcp::OwnedWriteHalf,
    mut frozen: watch::Receiver<bool>,
) {
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        if frozen.wait_for(|f| !*f).await.is_err() {
            return;
        }
        let n = match from.read(&mut buf).await {
            Ok(0) | Err(_) => return,
            Ok(n) => n,
        };
        // Bytes read as the freeze began are held until it ends.
        if frozen.wait_for(|f| !*f).await.is_err() || to.write_all(&buf[..n]).await.is_err() {
            return;
        }
    }
}

/// Options under which a job is delivered once, its claim lapsing after 2 s.
fn one_short_delivery(url: &str) -> NatsOptions {
    let mut o = test_options(url);
    o.ack_wait = Duration::from_secs(2);
    o.max_deliver = 1;
    o
}

/// A job running on a worker behind the proxy, the proxy frozen mid-run, and a
/// second worker joined straight to the server: where the fencing tests start.
struct CutOff {
    _first: Member,
    client: Member,
    _second: Member,
    runs: Runs,
    ticket: JobTicket,
}

async fn cut_off_mid_run(
    server: &NatsServer,
    proxy: &Proxy,
    options: impl Fn(&str) -> NatsOptions,
) -> anyhow::Result<CutOff> {
    let (cut_off, runs) = Holder::new(Stopped::Succeeds);
    let first = Member::join(options(&proxy.url), |b| b.instance(cut_off)).await?;
    let client = Member::join(options(&server.url()), |b| b).await?;
    announced(&client.host, "Holder", 1).await?;
    let ticket = enqueue(&client.host, "hold", ()).await?;
    eventually("the job to run on the first worker", || async {
        runs.started() == 1
    })
    .await?;
    proxy.freeze(true);
    let second = Holder {
        holds: false,
        on_stop: Stopped::Succeeds,
        runs: runs.own_stop(),
    };
    let second = Member::join(options(&server.url()), |b| b.instance(second)).await?;
    Ok(CutOff {
        _first: first,
        client,
        _second: second,
        runs,
        ticket,
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_the_broker_cannot_hear_past_ack_wait_is_fenced() -> anyhow::Result<()> {
    let server = NatsServer::start()?;
    let proxy = Proxy::start(&server.url()).await?;
    let options = |url: &str| {
        let mut o = test_options(url);
        o.ack_wait = Duration::from_secs(3);
        o
    };
    // Its run succeeds when stopped: only its being stopped tells it was fenced.
    // The first worker is cut off; the second gets the job once its claim lapsed.
    // (Its members are kept to the end: dropping one stops its host.)
    let cut = cut_off_mid_run(&server, &proxy, options).await?;
    let runs = &cut.runs;
    within(
        "the job to complete on the second worker",
        cut.ticket.outcome(),
    )
    .await??;
    assert_eq!(runs.started(), 2);

    // The cut-off run heard nothing from the broker for ack_wait: it is cancelled.
    eventually("the cut-off run to be cancelled", || async {
        runs.stopped()
    })
    .await?;
    proxy.freeze(false);
    Ok(())
}

/// JetStream delivers a job at most `max_deliver` times (1 here): a job whose every
/// delivery went to a worker that then fell silent (cut off, frozen or crashed) is
/// never delivered again, yet its message stays. It must end dead, its waiters
/// told why, not stay `queued` for ever.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_job_whose_deliveries_all_went_silent_is_dead_not_stranded() -> anyhow::Result<()> {
    let server = NatsServer::start()?;
    let proxy = Proxy::start(&server.url()).await?;
    let options = one_short_delivery;
    // Its one delivery goes silent; a second worker pulls.
    let cut = cut_off_mid_run(&server, &proxy, options).await?;
    let (member, client, runs, ticket) = (&cut.client, &cut.client.host, &cut.runs, cut.ticket);
    let id = ticket.id().to_owned();

    let err = within("the job's outcome", ticket.outcome())
        .await?
        .expect_err("a job none of whose runs ended has no result");
    assert!(
        err.to_string().contains("max_deliver"),
        "the error says why: {err}"
    );
    assert_eq!(runs.started(), 1, "not delivered again");
    // The record follows the outcome a moment behind.
    job_reaches(client, &id, JobState::Dead).await?;
    // its message is removed from the work stream.
    stream_holds(member, "KOAN_WORK", 0).await?;
    // it is dead-lettered.
    stream_holds(member, "KOAN_DLQ", 1).await?;
    proxy.freeze(false);
    Ok(())
}

/// The other side: a worker the broker hears keeps its claim on a job that runs for
/// longer than `ack_wait` (its progress acks are answered).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_job_longer_than_ack_wait_keeps_its_claim() -> anyhow::Result<()> {
    let server = NatsServer::start()?;
    let (_w, member, runs) = holder_and_client(&server, Stopped::Fails).await?;
    let client = &member.host;
    // The job's own work lasts three claims.
    let ticket = enqueue(client, "busy", 3_000u64).await?;
    within("the job", ticket.outcome()).await??;
    assert!(!runs.stopped(), "a heard worker is not fenced");
    assert_eq!(runs.started(), 1, "run once, not handed over");
    Ok(())
}

/// The same, while no instance is attached to hear the server's advisory (the
/// only worker cut off, and every other host gone: a one-process deployment in a
/// crash loop): an instance attached later still ends the job dead.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_job_whose_advisory_no_instance_heard_is_dead_once_one_attaches() -> anyhow::Result<()> {
    let server = NatsServer::start()?;
    let proxy = Proxy::start(&server.url()).await?;
    let options = one_short_delivery;
    let (cut_off, runs) = Holder::new(Stopped::Succeeds);
    let _first = Member::join(options(&proxy.url), |b| b.instance(cut_off)).await?;
    let mut client = Member::join(options(&server.url()), |b| b).await?;
    announced(&client.host, "Holder", 1).await?;
    let id = enqueue(&client.host, "hold", ()).await?.id().to_owned();
    eventually("the job to run on the first worker", || async {
        runs.started() == 1
    })
    .await?;
    drop(client.node.take());
    proxy.freeze(true);
    // The server finds the job out of deliveries when next asked for one once
    // its claim lapsed: here by the test, heard by no instance.
    pull_until_out_of_deliveries(&server.url(), "koan-work-holder").await?;

    let late = Member::join(options(&server.url()), |b| b).await?;
    let dead = job_reaches(&late.host, &id, JobState::Dead).await?;
    let error = dead.error.map(|e| e.message).unwrap_or_default();
    assert!(
        error.contains("max_deliver"),
        "the record says why: {error}"
    );
    stream_holds(&late, "KOAN_WORK", 0).await?;
    stream_holds(&late, "KOAN_DLQ", 1).await?;
    proxy.freeze(false);
    Ok(())
}
