//! Typed events: emitted by services, delivered to subscribers in emission order on
//! their own tasks, through bounded buffers with an explicit overflow policy.

mod bus;
mod deliver;
mod envelope;
mod handler;
mod info;
mod misfit;
mod reader;
mod recent;
mod ring;
mod subscribe;
mod typed;
mod undeclared;

pub use envelope::EventEnvelope;
pub use info::EventInfo;
#[allow(deprecated)]
pub use recent::RECENT_REMOTE_BYTES;
pub use recent::{EventsSince, RECENT_BYTES, RECENT_EVENTS};
pub use subscribe::{HandlerOutput, Overflow, Subscription, SubscriptionBuilder};
pub use typed::{Emits, TypedSubscriptionBuilder};

pub(crate) use bus::EventBus;

/// An event payload type with its event name; `#[derive(koan::Event)]` implements it
/// (`#[event(name = "TranslationCompleted")]`, default: the type's name).
pub trait Event: serde::Serialize + Send + Sync + 'static {
    /// The event's name.
    const NAME: &'static str;
}
