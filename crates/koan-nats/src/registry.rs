//! The cluster registry: heartbeats of every host in the KV bucket `koan_registry`,
//! and the query responders (status, health, info) of local services.

use chrono::Utc;
use koan::{Error, HostHandle, Instance, RemoteQuery};
use serde_json::Value;

use crate::subjects;
use crate::transport::{NatsTransport, unavailable};
use crate::wire::Reply;

/// Announces this host's services, now.
pub(crate) async fn announce(t: &NatsTransport, host: &HostHandle) -> Result<(), Error> {
    let instance = Instance {
        host_id: t.inner.host_id.clone(),
        seen_at: Utc::now(),
        services: host.statuses(),
        stale: false,
    };
    let body = serde_json::to_vec(&instance).unwrap_or_default();
    t.inner
        .registry
        .put(subjects::key(&t.inner.host_id), body.into())
        .await
        .map_err(|e| unavailable(format!("cannot announce to the registry: {e}")))?;
    Ok(())
}

/// Withdraws this host from the registry.
pub(crate) async fn withdraw(t: &NatsTransport) {
    let _ = t
        .inner
        .registry
        .delete(subjects::key(&t.inner.host_id))
        .await;
}

/// Answers one query about a local service.
pub(crate) async fn answer(host: &HostHandle, service: &str, what: &str) -> Reply {
    let svc = host.service(service);
    let result: Result<Value, Error> = match what {
        "status" => svc
            .status()
            .await
            .map(|s| serde_json::to_value(s).unwrap_or_default()),
        "health" => svc
            .health()
            .await
            .map(|s| serde_json::to_value(s).unwrap_or_default()),
        "info" => svc
            .info()
            .await
            .map(|s| serde_json::to_value(s).unwrap_or_default()),
        other => Err(Error::new(
            koan::ErrorKind::InvalidParameters,
            format!(
                "unknown query `{other}`; accepted: {}, {}, {}",
                RemoteQuery::Status.as_str(),
                RemoteQuery::Health.as_str(),
                RemoteQuery::Info.as_str()
            ),
        )),
    };
    Reply::of(result)
}
