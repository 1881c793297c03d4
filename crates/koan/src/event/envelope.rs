use std::any::Any;
use std::sync::Arc;

use chrono::{DateTime, Utc};
use serde::de::DeserializeOwned;
use serde::{Serialize, Serializer};
use serde_json::Value;

use crate::error::Result;
use crate::payload::from_json;

/// An event payload: any serializable value, shared by every subscriber.
pub(crate) trait AnyEvent: Any + Send + Sync {
    fn to_json(&self) -> Value;
    /// The length of its JSON, counted as it is written (nothing is kept).
    fn json_len(&self) -> usize;
}

impl<T: Serialize + Send + Sync + 'static> AnyEvent for T {
    fn to_json(&self) -> Value {
        serde_json::to_value(self).unwrap_or(Value::Null)
    }

    fn json_len(&self) -> usize {
        struct Count(usize);
        impl std::io::Write for Count {
            fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
                self.0 += buf.len();
                Ok(buf.len())
            }
            fn flush(&mut self) -> std::io::Result<()> {
                Ok(())
            }
        }
        let mut count = Count(0);
        // A value that fails to serialize is sent as `null`: what was written counts.
        let _ = serde_json::to_writer(&mut count, self);
        count.0
    }
}

/// One emitted event as subscribers see it.
#[derive(Clone)]
pub struct EventEnvelope {
    pub(crate) service: Arc<str>,
    pub(crate) name: Arc<str>,
    pub(crate) correlation_id: Option<Arc<str>>,
    pub(crate) time: DateTime<Utc>,
    pub(crate) seq: u64,
    /// This host's number for it, given as it is kept (`recent.rs`); 0 before.
    pub(crate) arrival: u64,
    /// About the bytes its payload holds, weighed as it is kept (`recent.rs`); 0
    /// before.
    pub(crate) weight: usize,
    pub(crate) payload: Arc<dyn AnyEvent>,
    /// Interned names and metric handles of local events (none for remote ones).
    pub(crate) key: Option<Arc<super::bus::EventKey>>,
}

impl std::fmt::Debug for EventEnvelope {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EventEnvelope")
            .field("service", &self.service)
            .field("name", &self.name)
            .field("correlation_id", &self.correlation_id)
            .field("seq", &self.seq)
            .finish_non_exhaustive()
    }
}

impl EventEnvelope {
    /// An envelope that arrived from another process (the payload is its JSON).
    pub fn remote(
        service: &str,
        name: &str,
        correlation_id: Option<&str>,
        time: DateTime<Utc>,
        seq: u64,
        payload: Value,
    ) -> Self {
        EventEnvelope {
            service: Arc::from(service),
            name: Arc::from(name),
            correlation_id: correlation_id.map(Arc::from),
            time,
            seq,
            arrival: 0,
            weight: 0,
            payload: Arc::new(payload),
            key: None,
        }
    }

    /// The emitting service.
    pub fn service(&self) -> &str {
        &self.service
    }
    /// The event's name.
    pub fn name(&self) -> &str {
        &self.name
    }
    /// The correlation id of the action during which it was emitted.
    pub fn correlation_id(&self) -> Option<&str> {
        self.correlation_id.as_deref()
    }
    /// When it was emitted.
    pub fn time(&self) -> DateTime<Utc> {
        self.time
    }
    /// The host-wide sequence number, taken when the event is emitted: increasing in
    /// the order each task emits. Events emitted at the same time from several tasks
    /// can reach a subscriber in another order than their numbers.
    pub fn seq(&self) -> u64 {
        self.seq
    }
    /// This host's number for the event: its count of the events it saw (its own
    /// and, in a cluster, other hosts'), increasing in the order they came here and
    /// unique on this host until it restarts; 0 for an event not delivered here.
    /// An event stream's `id` is this number (`Last-Event-ID` on a reconnect).
    pub fn arrival(&self) -> u64 {
        self.arrival
    }
    /// About the bytes its payload holds, or takes as JSON, as the host weighed it
    /// when it kept it (its JSON's length for a service's own type); 0 for an
    /// event not delivered here. What a consumer holding events may bound itself by.
    pub fn weight(&self) -> usize {
        self.weight
    }
    /// The payload as JSON.
    pub fn payload_json(&self) -> Value {
        self.payload.to_json()
    }
    /// The payload as `E`: cloned when it is an `E`, converted through serde otherwise.
    pub fn payload<E: DeserializeOwned + Clone + 'static>(&self) -> Result<E> {
        // Upcast (no call), then one virtual call for the type id.
        let any: &(dyn Any + Send + Sync) = &*self.payload;
        if let Some(e) = any.downcast_ref::<E>() {
            return Ok(e.clone());
        }
        from_json::<E>(self.payload.to_json(), &|| {
            format!("payload of event `{}` from `{}`", self.name, self.service)
        })
    }
}

impl Serialize for EventEnvelope {
    fn serialize<S: Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        use serde::ser::SerializeStruct;
        let mut st = s.serialize_struct("EventEnvelope", 7)?;
        st.serialize_field("service", &*self.service)?;
        st.serialize_field("event", &*self.name)?;
        st.serialize_field("correlation_id", &self.correlation_id.as_deref())?;
        st.serialize_field("time", &self.time)?;
        st.serialize_field("seq", &self.seq)?;
        st.serialize_field("arrival", &self.arrival)?;
        st.serialize_field("payload", &self.payload.to_json())?;
        st.end()
    }
}
