//! A payload type that does not fit the events a filter or handler receives: said
//! once per filter or handler, counted every time, instead of passing in silence.

use std::sync::atomic::{AtomicBool, Ordering};

use super::envelope::EventEnvelope;
use crate::error::Error;

/// The warning state of one filter or handler.
#[derive(Debug)]
pub(crate) struct Misfit {
    /// `"filter"` or `"handler"`.
    what: &'static str,
    /// The payload type it asks for.
    ty: &'static str,
    warned: AtomicBool,
}

impl Misfit {
    pub(crate) fn new<E>(what: &'static str) -> Self {
        Misfit {
            what,
            ty: std::any::type_name::<E>(),
            warned: AtomicBool::new(false),
        }
    }

    /// Counts a payload of `env` that did not convert to the type (`error`), and
    /// warns the first time.
    pub(crate) fn note(&self, env: &EventEnvelope, error: &Error) {
        metrics::counter!(
            "koan_event_payload_mismatches_total",
            "service" => env.service.to_string(),
            "event" => env.name.to_string()
        )
        .increment(1);
        if !self.warned.swap(true, Ordering::Relaxed) {
            tracing::warn!(
                service = %env.service,
                event = %env.name,
                payload_type = self.ty,
                "an event {} takes `{}`, which does not fit event `{}` of `{}`, so the event \
                 was skipped: {}; counted in koan_event_payload_mismatches_total, logged only \
                 the first time",
                self.what,
                self.ty,
                env.name,
                env.service,
                error.message(),
            );
        }
    }
}

/// What a handler whose payload type did not fit returns: counted as a failed
/// delivery, not logged again (its [`Misfit`] said it already).
#[derive(Debug)]
pub(crate) struct Skipped;

impl std::fmt::Display for Skipped {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("the payload did not fit the handler's type")
    }
}

impl std::error::Error for Skipped {}
