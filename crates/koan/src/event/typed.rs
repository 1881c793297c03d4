//! Typed subscriptions: `services::<S>().on::<E>()` names the event by its payload
//! type, so a subscription to an event `S` does not declare, or a handler of the
//! wrong payload type, is a compile error.

use std::future::Future;
use std::marker::PhantomData;

use serde::de::DeserializeOwned;

use super::envelope::EventEnvelope;
use super::subscribe::{HandlerOutput, Overflow, Subscription, SubscriptionBuilder};
use crate::error::Result;
use crate::service::Service;

/// Service `Self` emits events whose payload is `E`, under the name [`Emits::EVENT`].
///
/// `#[koan::service(event(E))]` and `#[koan::service(event(name = …, payload = E))]`
/// implement it (unless two of the service's events share the payload type `E`:
/// then the type does not say which one is meant); a service that implements [`Service`] by hand implements it next to
/// the event's declaration in `Service::actions`. It is what lets
/// `services::<S>().on::<E>()` compile only for events `S` declares.
#[diagnostic::on_unimplemented(
    message = "`{Self}` declares no event with payload `{E}`",
    label = "`{Self}` does not emit `{E}`",
    note = "declare it on the service: `#[koan::service(event({E}))]` (or `event(name = \"…\", payload = {E})`); a payload type that two events of one service share names neither: give each its own type (a newtype), or subscribe by name with `host.service(\"…\").on(\"…\")`"
)]
pub trait Emits<E>: Service {
    /// The event's name, as the service declares it.
    const EVENT: &'static str;
}

/// A subscription to events of service `S` whose payload is `E`; built by
/// `services::<S>().on::<E>()`. Handlers and filters take `E` itself.
#[must_use = "nothing is subscribed until `.subscribe().await`"]
pub struct TypedSubscriptionBuilder<S, E> {
    inner: SubscriptionBuilder,
    /// Whether a route for `E` is open (`once`/`filter` apply to it); a handler
    /// closes it, and the next `once`/`filter`/`handle` opens another for `E`.
    open: bool,
    _types: PhantomData<fn() -> (S, E)>,
}

impl<S, E> std::fmt::Debug for TypedSubscriptionBuilder<S, E> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TypedSubscriptionBuilder")
            .field("event", &std::any::type_name::<E>())
            .field("inner", &self.inner)
            .finish()
    }
}

impl<S, E> TypedSubscriptionBuilder<S, E>
where
    S: Emits<E>,
    E: DeserializeOwned + Clone + Send + 'static,
{
    pub(crate) fn new(inner: SubscriptionBuilder) -> Self {
        TypedSubscriptionBuilder {
            inner: inner.on(S::EVENT),
            open: true,
            _types: PhantomData,
        }
    }

    fn opened(mut self) -> Self {
        if !self.open {
            self.inner = self.inner.on(S::EVENT);
            self.open = true;
        }
        self
    }

    /// Goes on with another event of the same service, in the same subscription
    /// (one task, one buffer, emission order kept across both).
    pub fn on<E2>(self) -> TypedSubscriptionBuilder<S, E2>
    where
        S: Emits<E2>,
        E2: DeserializeOwned + Clone + Send + 'static,
    {
        TypedSubscriptionBuilder {
            inner: self.inner.on(<S as Emits<E2>>::EVENT),
            open: true,
            _types: PhantomData,
        }
    }

    /// Delivers the event at most once — exactly once, even under concurrent
    /// emits — then stops.
    pub fn once(self) -> Self {
        let mut this = self.opened();
        this.inner = this.inner.once();
        this
    }

    /// Only events whose payload passes `filter` reach the handler (and count for
    /// `once`).
    pub fn filter<F>(self, filter: F) -> Self
    where
        F: Fn(&E) -> bool + Send + Sync + 'static,
    {
        let mut this = self.opened();
        this.inner = this.inner.filter::<E, F>(filter);
        this
    }

    /// Handles the event with its payload (the emitter's own value is passed
    /// through in-process; a remote event is read from JSON).
    pub fn handle<F, Fut>(self, handler: F) -> Self
    where
        F: Fn(E) -> Fut + Send + Sync + 'static,
        Fut: Future + Send + 'static,
        Fut::Output: HandlerOutput,
    {
        let mut this = self.opened();
        this.inner = this.inner.handle::<E, F, Fut>(handler);
        this.open = false;
        this
    }

    /// Handles the event with the whole envelope (name, correlation id, time,
    /// sequence number, JSON payload).
    pub fn handle_envelope<F, Fut>(self, handler: F) -> Self
    where
        F: Fn(EventEnvelope) -> Fut + Send + Sync + 'static,
        Fut: Future + Send + 'static,
        Fut::Output: HandlerOutput,
    {
        let mut this = self.opened();
        this.inner = this.inner.handle_envelope(handler);
        this.open = false;
        this
    }

    /// Size of this subscriber's buffer (default 1024).
    pub fn buffer(mut self, capacity: usize) -> Self {
        self.inner = self.inner.buffer(capacity);
        self
    }

    /// What happens when the buffer is full; see [`Overflow`].
    pub fn overflow(mut self, overflow: Overflow) -> Self {
        self.inner = self.inner.overflow(overflow);
        self
    }

    /// Registers every handler; delivery starts now and stops when the returned
    /// [`Subscription`] is dropped.
    pub async fn subscribe(self) -> Result<Subscription> {
        self.inner.subscribe().await
    }
}
