//! The JetStream streams and KV buckets koan uses (their names and subjects are in
//! `subjects.rs`, their contents in `docs/wire.md`), made when a transport connects.

use std::time::Duration;

use async_nats::jetstream::{self, kv, stream};
use koan::Error;

use crate::options::NatsOptions;
use crate::subjects;
use crate::transport::unavailable;

/// The durable work queue, the delayed jobs waiting for it, and the dead letters.
pub(crate) async fn work_streams(js: &jetstream::Context, opts: &NatsOptions) -> Result<(), Error> {
    for (name, subject) in [
        (subjects::WORK_STREAM, subjects::WORK_SUBJECTS),
        (subjects::DELAYED_STREAM, subjects::DELAYED_SUBJECTS),
        (subjects::DLQ_STREAM, subjects::DLQ_SUBJECTS),
    ] {
        let retention = if name == subjects::DLQ_STREAM {
            stream::RetentionPolicy::Limits
        } else {
            stream::RetentionPolicy::WorkQueue
        };
        js.get_or_create_stream(stream::Config {
            name: name.to_owned(),
            subjects: vec![subject.to_owned()],
            retention,
            storage: storage(opts),
            duplicate_window: Duration::from_secs(120),
            ..Default::default()
        })
        .await
        .map_err(|e| {
            unavailable(format!(
                "cannot create the JetStream stream `{name}` (is the server started with -js?): {e}"
            ))
        })?;
    }
    Ok(())
}

/// What a pull consumer's loop ends with: an error to log before it starts again.
pub(crate) type ConsumerResult = Result<(), Box<dyn std::error::Error + Send + Sync>>;

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
    loop {
        let result = tokio::select! {
            _ = host.stopping() => return,
            r = once() => r,
        };
        if let Err(e) = result {
            tracing::warn!(service = %service, error = %e, "{what} consumer interrupted; retrying");
        }
        tokio::select! {
            _ = host.stopping() => return,
            _ = tokio::time::sleep(Duration::from_millis(500)) => {}
        }
    }
}

fn storage(opts: &NatsOptions) -> stream::StorageType {
    if opts.memory_storage {
        stream::StorageType::Memory
    } else {
        stream::StorageType::File
    }
}

/// A KV bucket, created through its stream so that servers from 2.9 on accept it
/// (the client's own `create_key_value` first asks for account details that older
/// servers answer in a shape it cannot read).
pub(crate) async fn bucket(
    js: &jetstream::Context,
    name: &str,
    max_age: Duration,
    opts: &NatsOptions,
) -> Result<kv::Store, Error> {
    js.get_or_create_stream(stream::Config {
        name: format!("KV_{name}"),
        subjects: vec![format!("$KV.{name}.>")],
        max_messages_per_subject: 1,
        max_age,
        storage: storage(opts),
        allow_rollup: true,
        deny_delete: true,
        allow_direct: true,
        discard: stream::DiscardPolicy::New,
        num_replicas: 1,
        ..Default::default()
    })
    .await
    .map_err(|e| unavailable(format!("cannot create the KV bucket `{name}`: {e}")))?;
    js.get_key_value(name)
        .await
        .map_err(|e| unavailable(format!("cannot open the KV bucket `{name}`: {e}")))
}
