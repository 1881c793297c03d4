//! The steps of a request: each action to run, with its parameters and options.

use std::time::Duration;

use crate::error::{Error, ErrorKind, Result};
use crate::payload::Payload;
use crate::registry::ServiceCell;

/// One action of a request, with its parameters and options.
pub(super) struct Step {
    pub(super) action: StepAction,
    pub(super) params: Option<Payload>,
    pub(super) priority: i32,
    /// Its timeout and cancel token, boxed: few calls set them, and without them in
    /// line a request fits in 128 bytes (see [`ActionRequest`](super::request::ActionRequest)).
    limits: Option<Box<Limits>>,
}

/// The rarer options of a step.
#[derive(Default)]
pub(super) struct Limits {
    pub(super) timeout: Option<Duration>,
    /// Cancelling it cancels the run's token (see [`ActionRequest::cancel_on`](super::request::ActionRequest::cancel_on)).
    pub(super) cancel: Option<tokio_util::sync::CancellationToken>,
}

impl Step {
    /// Action `action` with `params`, at priority 0, with no timeout or token.
    #[inline(always)]
    pub(super) fn new(action: StepAction, params: Payload) -> Self {
        Step {
            action,
            params: Some(params),
            priority: 0,
            limits: None,
        }
    }

    /// Its deadline from the moment of sending, if it has one.
    pub(super) fn timeout(&self) -> Option<Duration> {
        self.limits.as_ref().and_then(|l| l.timeout)
    }

    /// Its timeout and cancel token, made when first set.
    pub(super) fn limits_mut(&mut self) -> &mut Limits {
        self.limits.get_or_insert_with(Box::default)
    }

    /// Its timeout and cancel token, taken out.
    pub(super) fn take_limits(&mut self) -> Limits {
        self.limits.take().map(|l| *l).unwrap_or_default()
    }
}

/// The action of a step: a name, or (from a handle to a local service) the declared
/// action already found, by its place in the service's table, so the call needs
/// neither a copy of the name, nor a second look-up, nor a count on the action's
/// entry (a line every core calling it would write).
pub(super) enum StepAction {
    Named(String),
    /// Only in a request whose target is a local service.
    Declared(usize),
}

impl StepAction {
    /// The name as given, or as declared by `cell`, the service of the request.
    pub(super) fn name<'a>(&'a self, cell: Option<&'a ServiceCell>) -> &'a str {
        match self {
            StepAction::Named(n) => n,
            StepAction::Declared(i) => cell
                .and_then(|c| c.spec.actions.entries.get(*i))
                .map_or(super::metrics::UNKNOWN, |e| &e.name),
        }
    }

    pub(super) fn into_string(self, cell: Option<&ServiceCell>) -> String {
        match self {
            StepAction::Named(n) => n,
            declared => declared.name(cell).to_owned(),
        }
    }
}

/// The steps of a request: a single action (the common case) needs no allocation.
pub(super) enum Steps {
    One(Step),
    /// None, or more than one.
    Many(Vec<Step>),
}

impl Default for Steps {
    fn default() -> Self {
        Steps::Many(Vec::new())
    }
}

impl Steps {
    #[inline]
    pub(super) fn push(&mut self, step: Step) {
        match self {
            Steps::Many(v) if v.is_empty() => *self = Steps::One(step),
            Steps::Many(v) => v.push(step),
            Steps::One(_) => {
                let Steps::One(first) = std::mem::take(self) else {
                    unreachable!("matched above")
                };
                *self = Steps::Many(vec![first, step]);
            }
        }
    }

    pub(super) fn last_mut(&mut self) -> Option<&mut Step> {
        match self {
            Steps::One(s) => Some(s),
            Steps::Many(v) => v.last_mut(),
        }
    }

    /// Refuses a zero timeout on any step, as HTTP refuses `timeout=0`: such a
    /// call was answered that it had waited behind other work in its mailbox,
    /// which was empty (a probe).
    #[inline]
    pub(super) fn check_timeouts(&self) -> Result<()> {
        match self
            .iter()
            .position(|s| s.timeout() == Some(Duration::ZERO))
        {
            None => Ok(()),
            Some(at) => Err(Error::new(
                ErrorKind::InvalidParameters,
                format!(
                    "step {} of the request has a timeout of zero, within which nothing finishes: give a timeout longer than zero, or none",
                    at + 1
                ),
            )),
        }
    }

    pub(super) fn len(&self) -> usize {
        self.as_slice().len()
    }

    fn as_slice(&self) -> &[Step] {
        match self {
            Steps::One(s) => std::slice::from_ref(s),
            Steps::Many(v) => v,
        }
    }

    pub(super) fn iter(&self) -> impl Iterator<Item = &Step> {
        self.as_slice().iter()
    }

    /// The only step, when there is exactly one.
    pub(super) fn take_single(&mut self) -> Option<Step> {
        match std::mem::take(self) {
            Steps::One(step) => Some(step),
            many => {
                *self = many;
                None
            }
        }
    }
}

impl IntoIterator for Steps {
    type Item = Step;
    type IntoIter = std::iter::Chain<std::option::IntoIter<Step>, std::vec::IntoIter<Step>>;

    fn into_iter(self) -> Self::IntoIter {
        match self {
            Steps::One(step) => Some(step).into_iter().chain(Vec::new()),
            Steps::Many(v) => None.into_iter().chain(v),
        }
    }
}
