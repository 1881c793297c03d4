//! The JetStream streams and KV buckets koan uses (their names and subjects are in
//! `subjects.rs`, their contents in `docs/wire.md`), made when a transport connects.

use std::time::Duration;

use async_nats::jetstream::{self, kv, stream};
use koan::Error;

use crate::options::NatsOptions;
use crate::replicas::Replicas;
use crate::subjects;
use crate::transport::{NatsTransport, unavailable};

/// The durable work queue, the delayed jobs waiting for it, the dead letters
/// (kept for `dead_letter_retention` and up to `dead_letter_max_bytes`, the
/// oldest dropped first: a poison source cannot fill the server's storage, which
/// the work queue shares), and the server's advisories of work it will deliver
/// no more, until answered (one a stranded job). Each kept on `replicas` servers.
pub(crate) async fn work_streams(
    js: &jetstream::Context,
    opts: &NatsOptions,
    replicas: Replicas,
) -> Result<(), Error> {
    for (name, subject) in [
        (subjects::WORK_STREAM, subjects::WORK_SUBJECTS),
        (subjects::DELAYED_STREAM, subjects::DELAYED_SUBJECTS),
        (subjects::DLQ_STREAM, subjects::DLQ_SUBJECTS),
        (subjects::STRANDED_STREAM, subjects::STRANDED_SUBJECTS),
    ] {
        let retention = if name == subjects::DLQ_STREAM {
            stream::RetentionPolicy::Limits
        } else {
            stream::RetentionPolicy::WorkQueue
        };
        let mut config = stream::Config {
            name: name.to_owned(),
            subjects: vec![subject.to_owned()],
            retention,
            storage: storage(opts),
            duplicate_window: Duration::from_secs(120),
            num_replicas: replicas.count(),
            ..Default::default()
        };
        // Its share of `storage_budget_mb`, if any (see `storage.rs`). Full, it
        // refuses new messages: JetStream's default drops the oldest, which for a
        // work queue is accepted jobs lost.
        config.max_bytes = crate::storage::max_bytes(opts, name);
        config.discard = stream::DiscardPolicy::New;
        if name == subjects::DLQ_STREAM {
            config.max_age = opts.dead_letter_retention;
            let own = i64::try_from(opts.dead_letter_max_bytes).unwrap_or(i64::MAX);
            config.max_bytes = match config.max_bytes {
                -1 => own,
                share => share.min(own),
            };
            config.discard = stream::DiscardPolicy::Old;
        }
        // Made by another host meanwhile: nats-server 2.9 refuses a create of an
        // existing stream whose limit would not fit twice (hosts started together
        // failed so; found by a probe), so it is read again.
        let made = match js.get_or_create_stream(config.clone()).await {
            Ok(made) => Ok(made),
            Err(e) => js.get_stream(name).await.map_err(|_| e),
        };
        let made = made.map_err(|e| {
            let text = e.to_string();
            // The server's storage (or memory) is smaller than the stream's limit
            // (a `max_file_store` under the dead letters' 256 MiB): the hint that
            // helps then is the limit, not `-js`.
            let short = text.contains("insufficient storage") || text.contains("insufficient memory");
            let hint = if short && name == subjects::DLQ_STREAM {
                format!(
                    "the server's JetStream storage cannot reserve the dead letters' {} MiB: lower `koan.nats.dead_letter_max_mb` (KOAN__NATS__DEAD_LETTER_MAX_MB) or raise the server's `max_file_store` (`max_memory_store`)",
                    opts.dead_letter_max_bytes >> 20
                )
            } else if short && opts.storage_budget_bytes.is_some() {
                "the server's JetStream storage cannot reserve this stream's share of `koan.nats.storage_budget_mb`: set the budget under the server's `max_file_store` (`max_memory_store`), less what other streams reserve".to_owned()
            } else if short {
                "the server's JetStream storage is full or too small (see its `max_file_store` / `max_memory_store`)".to_owned()
            } else if let Some(copies) = replicas.refused(&text) {
                copies
            } else {
                "is the server started with -js?".to_owned()
            };
            unavailable(format!(
                "cannot create the JetStream stream `{name}` ({hint}): {text}"
            ))
        })?;
        // Made by a host with other limits: this host's apply (the latest to
        // start sets them, as for the consumers' settings). The dead letters'
        // always; the others' when a budget is set.
        // Boxed, as in `bucket`.
        let had = Box::pin(crate::replicas::keep(
            js,
            made.cached_info().config.clone(),
            replicas,
        ))
        .await;
        if name != subjects::DLQ_STREAM {
            config.max_bytes =
                not_below_held(config.max_bytes, made.cached_info().state.bytes, name);
        }
        let limited = name == subjects::DLQ_STREAM || opts.storage_budget_bytes.is_some();
        let limits_of = |c: &stream::Config| (c.max_age, c.max_bytes, c.discard);
        if limited && limits_of(&had) != limits_of(&config) {
            let limits = stream::Config {
                max_age: config.max_age,
                max_bytes: config.max_bytes,
                discard: config.discard,
                ..had.clone()
            };
            update_limits(js, name, &had, limits).await;
        }
    }
    Ok(())
}

/// A stream's new size limit, never below what it holds (`held` bytes): the
/// server drops a stream's first messages to fit a lower limit, whatever its
/// discard policy — accepted jobs, outcomes, cancel markers (found by a review).
/// Such a stream is left at what it holds, said in the log, and refuses new
/// messages until the next start finds it under its share.
fn not_below_held(limit: i64, held: u64, name: &str) -> i64 {
    let held = i64::try_from(held).unwrap_or(i64::MAX);
    if limit == -1 || held <= limit {
        return limit;
    }
    tracing::warn!(
        stream = name,
        held,
        share = limit,
        "the stream holds more than its share of `koan.nats.storage_budget_mb`: its limit is set to what it holds, so that nothing it holds is dropped; it takes no new message until it is under its share"
    );
    held
}

/// Sets a stream's age and size limits to this host's (`limits`, the rest as it
/// `had`), saying so.
async fn update_limits(
    js: &jetstream::Context,
    name: &str,
    had: &stream::Config,
    limits: stream::Config,
) {
    match js.update_stream(&limits).await {
        Ok(_) => {
            tracing::info!(stream = name, max_age = ?had.max_age, max_bytes = had.max_bytes, new_max_age = ?limits.max_age, new_max_bytes = limits.max_bytes, "stream's limits updated to this host's configuration")
        }
        Err(e) => {
            tracing::warn!(stream = name, error = %e, "could not update the stream's limits to this host's configuration")
        }
    }
}

/// The durable pull consumer `config` names on `stream`, made if missing. One made
/// by another instance with another `ack_wait` or `max_deliver` (this host's
/// configuration changed since) is updated to this host's: the latest host to
/// start sets them, and says so in the log, rather than the first one for ever.
pub(crate) async fn pull_consumer(
    stream: &jetstream::stream::Stream,
    config: jetstream::consumer::pull::Config,
) -> Result<jetstream::consumer::PullConsumer, ConsumerError> {
    let name = config.durable_name.clone().unwrap_or_default();
    let mut consumer = stream.get_or_create_consumer(&name, config.clone()).await?;
    let (ack_wait, max_deliver) = {
        let had = &consumer.cached_info().config;
        (had.ack_wait, had.max_deliver)
    };
    if (ack_wait, max_deliver) != (config.ack_wait, config.max_deliver) {
        match stream.create_consumer(config.clone()).await {
            Ok(updated) => {
                tracing::info!(consumer = %name, ?ack_wait, max_deliver, new_ack_wait = ?config.ack_wait, new_max_deliver = config.max_deliver, "durable consumer's settings updated to this host's configuration");
                consumer = updated;
            }
            Err(e) => {
                tracing::warn!(consumer = %name, ?ack_wait, max_deliver, wanted_ack_wait = ?config.ack_wait, wanted_max_deliver = config.max_deliver, error = %e, "durable consumer keeps the settings it was made with; delete it (`nats consumer rm`) while no instance runs for this host's to apply");
            }
        }
    }
    Ok(consumer)
}

/// The error of [`pull_consumer`].
pub(crate) type ConsumerError = Box<dyn std::error::Error + Send + Sync>;

/// The work stream, made again (with the other work streams) if it is gone while
/// the connection stays up: deleted, or its server's store wiped and the server
/// back before the client noticed. Only a reconnect made it again, so every
/// enqueue was refused for good, and each consumer warned twice a second (a
/// re-probe).
pub(crate) async fn work_stream_made_again(
    t: &NatsTransport,
) -> Result<stream::Stream, ConsumerError> {
    let js = &t.inner.js;
    match js.get_stream(subjects::WORK_STREAM).await {
        Ok(s) => Ok(s),
        Err(e) if crate::storage::no_stream(&e.to_string()) => {
            tracing::warn!(stream = subjects::WORK_STREAM, error = %e, "the work stream is gone though the connection is up (deleted, or its server's store lost): made again");
            let replicas =
                crate::replicas::Replicas::choose(&t.inner.opts, &t.inner.client.server_info());
            work_streams(js, &t.inner.opts, replicas).await?;
            Ok(js.get_stream(subjects::WORK_STREAM).await?)
        }
        Err(e) => Err(e.into()),
    }
}

/// What a pull consumer's loop ends with: an error to log before it starts again.
pub(crate) type ConsumerResult = Result<(), ConsumerError>;

/// Runs a pull consumer's loop (`once`) for `service` until `host` stops, again
/// half a second after each error (a NATS restart, say); `what` names it in the
/// log. A stopping host takes no more messages: they stay in the stream for
/// another instance (or this one after its restart).
pub(crate) async fn consume_until_stopped<F, Fut>(
    host: &koan::HostHandle,
    service: &str,
    what: &str,
    mut once: F,
) where
    F: FnMut() -> Fut,
    Fut: Future<Output = ConsumerResult>,
{
    // Half a second after an error, doubled while they follow one another, up to
    // 8 s: a consumer failing for good warned twice a second (a re-probe).
    const FIRST: Duration = Duration::from_millis(500);
    let mut pause = FIRST;
    loop {
        let began = tokio::time::Instant::now();
        let result = tokio::select! {
            _ = host.stopping() => return,
            r = once() => r,
        };
        // A loop that ran a while before it ended starts again at once's pause.
        if began.elapsed() > Duration::from_secs(10) {
            pause = FIRST;
        }
        if let Err(e) = result {
            tracing::warn!(service = %service, error = %e, retry_in = ?pause, "{what} consumer interrupted; retrying");
        }
        tokio::select! {
            _ = host.stopping() => return,
            _ = tokio::time::sleep(pause) => {}
        }
        pause = (pause * 2).min(Duration::from_secs(8));
    }
}

fn storage(opts: &NatsOptions) -> stream::StorageType {
    if opts.memory_storage {
        stream::StorageType::Memory
    } else {
        stream::StorageType::File
    }
}

/// Every stream and bucket the transport uses, made if missing, each kept on
/// `replicas` servers: the work streams, then the buckets of the registry,
/// outcomes, leases, job records and cancels.
pub(crate) async fn all(
    js: &jetstream::Context,
    opts: &NatsOptions,
    replicas: Replicas,
) -> Result<[kv::Store; 5], Error> {
    work_streams(js, opts, replicas).await?;
    let made = async |name, max_age| bucket(js, name, max_age, opts, replicas).await;
    Ok([
        made(subjects::REGISTRY_BUCKET, opts.heartbeat * 5).await?,
        made(subjects::OUTCOMES_BUCKET, opts.outcome_ttl).await?,
        made(subjects::LEASES_BUCKET, opts.lease).await?,
        // Records are kept as long as outcomes.
        made(subjects::JOBS_BUCKET, opts.outcome_ttl).await?,
        made(subjects::CANCELS_BUCKET, opts.outcome_ttl).await?,
    ])
}

/// Makes the streams and buckets again each time the connection comes back: a
/// broker that returned without its storage (its store wiped, or a stream not yet
/// written when it was killed) answered every enqueue and heartbeat "no stream
/// found" until every host restarted (found by a probe). Those that exist are
/// left as they are; a failure is tried again a few times, then at the next
/// reconnect.
pub(crate) async fn recreate_on_reconnect(
    js: jetstream::Context,
    opts: NatsOptions,
    replicas: Replicas,
    mut state: tokio::sync::watch::Receiver<crate::ConnectionState>,
) {
    while state.changed().await.is_ok() {
        if *state.borrow_and_update() != crate::ConnectionState::Connected {
            continue;
        }
        for wait in [1, 2, 4, 8] {
            match all(&js, &opts, replicas).await {
                Ok(_) => break,
                Err(e) => {
                    tracing::warn!(error = %e, "could not make the streams again after reconnecting; trying again");
                    tokio::time::sleep(Duration::from_secs(wait)).await;
                }
            }
        }
    }
}

/// A KV bucket, created through its stream so that servers from 2.9 on accept it
/// (the client's own `create_key_value` first asks for account details that older
/// servers answer in a shape it cannot read). Kept on `replicas` servers.
async fn bucket(
    js: &jetstream::Context,
    name: &str,
    max_age: Duration,
    opts: &NatsOptions,
    replicas: Replicas,
) -> Result<kv::Store, Error> {
    let made = js
        .get_or_create_stream(stream::Config {
            name: format!("KV_{name}"),
            subjects: vec![format!("$KV.{name}.>")],
            max_messages_per_subject: 1,
            max_age,
            storage: storage(opts),
            allow_rollup: true,
            deny_delete: true,
            allow_direct: true,
            discard: stream::DiscardPolicy::New,
            num_replicas: replicas.count(),
            max_bytes: crate::storage::max_bytes(opts, name),
            ..Default::default()
        })
        .await;
    // Made by another host meanwhile (see `work_streams`): read again.
    let made = match made {
        Ok(made) => Ok(made),
        Err(e) => js.get_stream(format!("KV_{name}")).await.map_err(|_| e),
    };
    let made = made.map_err(|e| {
            let text = e.to_string();
            let hint = if text.contains("insufficient storage") && opts.storage_budget_bytes.is_some() {
                " (the server cannot reserve its share of `koan.nats.storage_budget_mb`: set the budget under the server's `max_file_store`, less what other streams reserve)".to_owned()
            } else if let Some(copies) = replicas.refused(&text) {
                format!(" ({copies})")
            } else {
                String::new()
            };
            unavailable(format!("cannot create the KV bucket `{name}`{hint}: {text}"))
        })?;
    // Its share of a budget set since it was made (its age stays, below).
    // Boxed: a change of copies (rare) waits for the stream to settle, and that
    // future inline made every connect's larger (a test's stack overflowed).
    let had = Box::pin(crate::replicas::keep(
        js,
        made.cached_info().config.clone(),
        replicas,
    ))
    .await;
    let share = not_below_held(
        crate::storage::max_bytes(opts, name),
        made.cached_info().state.bytes,
        &had.name,
    );
    if opts.storage_budget_bytes.is_some() && had.max_bytes != share {
        let limits = stream::Config {
            max_bytes: share,
            ..had.clone()
        };
        update_limits(js, &had.name, &had, limits).await;
    }
    // A bucket keeps the age it was made with: every host reads it from the
    // bucket (how often to write a waiting job's record again, how long a
    // cancel's marker lasts), so a host that changed it there would leave the
    // others writing too seldom. One configured otherwise says so.
    let had = made.cached_info().config.max_age;
    if had != max_age {
        tracing::warn!(bucket = name, kept_for = ?had, configured = ?max_age, "this KV bucket keeps the age it was made with, not this host's configuration (for `koan.nats.outcome_ttl_seconds`: delete the buckets while no host runs to change it)");
    }
    js.get_key_value(name)
        .await
        .map_err(|e| unavailable(format!("cannot open the KV bucket `{name}`: {e}")))
}

/// Whether a KV bucket holds no entry (`false` when that cannot be read): a
/// watch of an empty bucket delivers nothing, so its follower is caught up as
/// soon as it begins.
pub(crate) async fn bucket_is_empty(store: &kv::Store) -> bool {
    bucket_end(store).await == Some(0)
}

/// The revision of a KV bucket's newest entry, read before a watch of it with its
/// history begins: the watch has caught up once it delivers it ([`caught_up`]).
/// `Some(0)` when the bucket holds nothing, `None` when it cannot be read.
pub(crate) async fn bucket_end(store: &kv::Store) -> Option<u64> {
    let state = store.stream.get_info().await.ok()?.state;
    Some(if state.messages == 0 {
        0
    } else {
        state.last_sequence
    })
}

/// Whether a watch begun after [`bucket_end`] answered `end` has caught up with
/// the bucket at `entry`. async-nats's `seen_current` alone derives it from the
/// server's count of messages still pending, which nats-server 2.9 sometimes
/// gives one too many in a delivery of each key's last entry (seen: 3, 2, 1 for
/// three entries, the last the bucket's newest), so that it never says so: a
/// scan then waited for more and gave up. Entries come in the order they were
/// written, so one at or past the newest when the watch began is the last of
/// those (or newer).
pub(crate) fn caught_up(entry: &kv::Entry, end: Option<u64>) -> bool {
    entry.seen_current || end.is_some_and(|end| entry.revision >= end)
}
