//! A key created in a KV bucket, answered as soon as the broker says the bucket's
//! stream is gone.
//!
//! async-nats' `kv::Store::create` follows any refused write with a read of the
//! key (a direct get), to tell a key that exists from one deleted; with the
//! bucket's stream gone (deleted, or on a server that is down), nothing answers
//! that read, and the create waited out the connection's request timeout (10 s)
//! before failing "timed out", though the broker had said at once that it had no
//! stream for the write: every enqueue waited 10 s (found by a probe).

use async_nats::jetstream::context::{PublishError, PublishErrorKind};
use async_nats::jetstream::kv::{self, CreateError, CreateErrorKind, Entry, Operation};
use bytes::Bytes;

/// Creates `key` with `value` in `store` unless it holds a value (as
/// [`kv::Store::create`]): its revision, `AlreadyExists` when it holds one. When
/// the broker answers that it has no stream for the write, the error says so at
/// once ([`no_stream`]).
pub(crate) async fn create(store: &kv::Store, key: &str, value: Bytes) -> Result<u64, CreateError> {
    let refused = match store.update(key, value.clone(), 0).await {
        Ok(revision) => return Ok(revision),
        Err(e) if no_stream(&e).is_some() => {
            return Err(CreateError::with_source(CreateErrorKind::Other, e));
        }
        Err(e) => e,
    };
    match store.entry(key).await? {
        // Deleted or purged: created again over its marker.
        Some(Entry {
            operation: Operation::Delete | Operation::Purge,
            revision,
            ..
        }) => Ok(store.update(key, value, revision).await?),
        Some(_) => Err(CreateError::new(CreateErrorKind::AlreadyExists)),
        None => Err(refused.into()),
    }
}

/// When `error` (or an error it carries) is the broker answering that no stream
/// takes the write's subject — the bucket's stream was deleted, or the server
/// holding it is down, or the server runs no JetStream —, the broker's words.
pub(crate) fn no_stream(error: &(dyn std::error::Error + 'static)) -> Option<String> {
    let mut at = Some(error);
    while let Some(e) = at {
        if let Some(p) = e.downcast_ref::<PublishError>()
            && p.kind() == PublishErrorKind::StreamNotFound
        {
            return Some(p.to_string());
        }
        at = e.source();
    }
    None
}
