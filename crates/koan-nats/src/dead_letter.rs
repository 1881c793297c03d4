//! Dead letters: a durable job that will not run again (dead after its last
//! attempt, refused, or never ended within `max_deliver`) is published as it came
//! to `koan.dlq.<service>.<action>` (stream `KOAN_DLQ`), with why in headers.

use crate::subjects;
use crate::transport::NatsTransport;
use crate::wire;

/// Publishes the job as it came (`body` and the `Koan-*` of its `headers`) to the dead-letter
/// stream, with the job's id and the error (`why`: code, message) in headers.
pub(crate) async fn publish(
    t: &NatsTransport,
    headers: Option<&async_nats::HeaderMap>,
    body: &bytes::Bytes,
    service: &str,
    action: &str,
    id: Option<&str>,
    why: &(String, String),
) {
    // The job's own `Koan-*` headers, but none of `Nats-*`: the dead letter must not
    // carry the job's de-duplication id.
    let mut h = async_nats::HeaderMap::new();
    for (name, values) in headers.iter().flat_map(|h| h.iter()) {
        if AsRef::<str>::as_ref(name).starts_with("Koan-") {
            for v in values {
                h.append(name.clone(), v.clone());
            }
        }
    }
    h.insert(wire::H_ORIGIN, t.inner.host_id.as_str());
    if let Some(id) = id {
        h.insert(wire::H_ACTION_ID, wire::header_value(id));
    }
    h.insert(wire::H_ERROR, wire::header_value(&why.0));
    h.insert(wire::H_ERROR_MESSAGE, wire::header_value(&why.1));
    if let Ok(ack) = t
        .inner
        .js
        .publish_with_headers(subjects::dead_letter(service, action), h, body.clone())
        .await
    {
        let _ = ack.await;
    }
}
