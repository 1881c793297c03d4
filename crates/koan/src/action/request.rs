//! The fluent `ActionRequest`: which actions, with which options; and its outcome.

use std::sync::Arc;
use std::time::Duration;

use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::Value;
use tokio::sync::oneshot;

use super::context::JobMeta;
use super::correlation::{Correlation, CorrelationText};
use super::route::find_local;
use crate::error::{Error, ErrorKind, Result};
use crate::host::{CallerHost, HostInner};
use crate::payload::Payload;
use crate::registry::ServiceCell;

/// Which service a request goes to.
#[derive(Debug, Clone)]
pub(crate) enum Target {
    Type(std::any::TypeId, Arc<str>),
    Name(Arc<str>),
    /// The service at this index of the registry of the request's own host, found
    /// when the request was made (the registry does not change once the host is
    /// built): the call neither looks it up again nor takes a count on its name.
    Local(usize),
}

impl Target {
    /// The service's name; `host` is the request's own.
    pub(crate) fn name<'a>(&'a self, host: &'a HostInner) -> &'a str {
        match self {
            Target::Type(_, n) | Target::Name(n) => n,
            Target::Local(i) => host.registry.all().get(*i).map_or("", |c| &c.spec.name),
        }
    }

    /// The service's name, shared (no copy).
    pub(crate) fn shared_name(&self, host: &HostInner) -> Arc<str> {
        match self {
            Target::Type(_, n) | Target::Name(n) => Arc::clone(n),
            Target::Local(i) => host
                .registry
                .all()
                .get(*i)
                .map_or_else(|| Arc::from(""), |c| Arc::clone(&c.spec.name)),
        }
    }
}

/// Options of one action call.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CallOptions {
    /// Higher runs first (default 0).
    pub priority: i32,
    /// Deadline from the moment of sending, queue time included.
    pub timeout: Option<Duration>,
    /// The correlation id; generated when absent.
    pub correlation_id: Option<String>,
}

pub(super) struct Step {
    pub(super) action: StepAction,
    pub(super) params: Option<Payload>,
    pub(super) priority: i32,
    pub(super) timeout: Option<Duration>,
    /// Cancelling it cancels the run's token (see [`ActionRequest::cancel_on`]).
    pub(super) cancel: Option<tokio_util::sync::CancellationToken>,
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
#[derive(Default)]
pub(super) struct Steps {
    first: Option<Step>,
    more: Vec<Step>,
}

impl Steps {
    #[inline]
    pub(super) fn push(&mut self, step: Step) {
        if self.first.is_none() {
            self.first = Some(step);
        } else {
            self.more.push(step);
        }
    }

    pub(super) fn last_mut(&mut self) -> Option<&mut Step> {
        match self.more.last_mut() {
            Some(s) => Some(s),
            None => self.first.as_mut(),
        }
    }

    pub(super) fn len(&self) -> usize {
        usize::from(self.first.is_some()) + self.more.len()
    }

    pub(super) fn iter(&self) -> impl Iterator<Item = &Step> {
        self.first.iter().chain(&self.more)
    }

    /// The only step, when there is exactly one.
    pub(super) fn take_single(&mut self) -> Option<Step> {
        if self.more.is_empty() {
            self.first.take()
        } else {
            None
        }
    }
}

impl IntoIterator for Steps {
    type Item = Step;
    type IntoIter = std::iter::Chain<std::option::IntoIter<Step>, std::vec::IntoIter<Step>>;

    fn into_iter(self) -> Self::IntoIter {
        self.first.into_iter().chain(self.more)
    }
}

/// One or more actions to run on a service, in order, built by chaining
/// `.action(…)` calls.
///
/// `.priority()` and `.timeout()` apply to the action just added; `.correlation_id()`
/// to the whole chain.
#[must_use = "an action request does nothing until `.execute()`, `.enqueue()` or `.spawn()`"]
pub struct ActionRequest {
    pub(super) host: CallerHost,
    pub(super) target: Target,
    pub(super) steps: Steps,
    pub(super) correlation: Option<Arc<str>>,
    /// Set when the job runner runs a stored job through this request.
    pub(super) job: Option<JobMeta>,
    /// `enqueue()` options: when to run, and the idempotency key.
    pub(super) when: Option<When>,
    pub(super) idempotency_key: Option<String>,
}

/// When an enqueued job may run.
#[derive(Debug, Clone, Copy)]
pub(super) enum When {
    After(Duration),
    At(chrono::DateTime<chrono::Utc>),
}

impl When {
    /// When the job may run, `now` being the time of its enqueue (a time in the
    /// past is now).
    pub(super) fn run_at(
        &self,
        now: chrono::DateTime<chrono::Utc>,
    ) -> Result<chrono::DateTime<chrono::Utc>> {
        match self {
            When::After(d) => chrono::Duration::from_std(*d)
                .ok()
                .and_then(|d| now.checked_add_signed(d))
                .ok_or_else(|| {
                    Error::new(
                        ErrorKind::InvalidParameters,
                        format!("the delay ({d:?}) is too long: give one of less than 100 years"),
                    )
                }),
            When::At(at) => Ok((*at).max(now)),
        }
    }
}

impl std::fmt::Debug for ActionRequest {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ActionRequest")
            .field("service", &self.target.name(&self.host.inner))
            .field(
                "actions",
                &self
                    .steps
                    .iter()
                    .map(|s| {
                        let cell = find_local(&self.host.inner, &self.target);
                        s.action.name(cell.map(|c| &**c))
                    })
                    .collect::<Vec<_>>(),
            )
            .field("correlation_id", &self.correlation)
            .finish()
    }
}

/// The result of an action.
pub struct ActionOutput {
    pub(super) payload: Payload,
    correlation: CorrelationText,
}

impl std::fmt::Debug for ActionOutput {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ActionOutput")
            .field("payload", &self.payload)
            .field("correlation_id", &self.correlation_id())
            .finish()
    }
}

impl ActionOutput {
    /// The correlation id the action ran under.
    pub fn correlation_id(&self) -> &str {
        self.correlation.as_str()
    }

    pub(crate) fn new(payload: Payload, correlation: Correlation) -> Self {
        ActionOutput {
            payload,
            correlation: CorrelationText::new(correlation),
        }
    }

    pub(crate) fn into_payload(self) -> Payload {
        self.payload
    }

    /// The result as JSON (`null` for `()`).
    pub fn json(&self) -> Result<Value> {
        self.payload.to_json()
    }

    /// The result as `R`: the handler's own value when it is an `R`, converted through
    /// serde otherwise.
    pub fn value<R: DeserializeOwned + 'static>(self) -> Result<R> {
        self.payload.decode::<R>(&|| "action result".to_owned())
    }
}

/// An action handed to its service with [`ActionRequest::spawn`]: held in this
/// process only, so its outcome is lost if the process stops (use
/// [`ActionRequest::enqueue`] for work that must survive).
#[derive(Debug)]
pub struct ActionTicket {
    pub(super) correlation_id: Arc<str>,
    pub(super) rx: oneshot::Receiver<Result<Payload>>,
}

impl ActionTicket {
    /// The correlation id.
    pub fn correlation_id(&self) -> &str {
        &self.correlation_id
    }

    /// Waits for the outcome.
    pub async fn outcome(self) -> Result<ActionOutput> {
        let payload = self
            .rx
            .await
            .map_err(|_| Error::shutting_down("a spawned action"))??;
        Ok(ActionOutput::new(
            payload,
            Correlation::Given(self.correlation_id),
        ))
    }
}

impl ActionRequest {
    pub(crate) fn new(host: impl Into<CallerHost>, target: Target) -> Self {
        ActionRequest {
            host: host.into(),
            target,
            steps: Steps::default(),
            correlation: None,
            job: None,
            when: None,
            idempotency_key: None,
        }
    }

    /// Runs the request as (a run of) a stored job.
    pub(crate) fn for_job(mut self, job: JobMeta) -> Self {
        self.job = Some(job);
        self
    }

    /// For `enqueue()`: the job runs no sooner than `delay` from now (kept through
    /// restarts).
    pub fn delay(mut self, delay: Duration) -> Self {
        self.when = Some(When::After(delay));
        self
    }

    /// For `enqueue()`: the job runs no sooner than `at` (kept through restarts).
    pub fn at(mut self, at: chrono::DateTime<chrono::Utc>) -> Self {
        self.when = Some(When::At(at));
        self
    }

    /// For `enqueue()`: a second enqueue with the same key (while the first job is
    /// kept) stores nothing new and returns the first job, so a caller may retry an
    /// enqueue whose answer it did not get.
    pub fn idempotency_key(mut self, key: impl Into<String>) -> Self {
        self.idempotency_key = Some(key.into());
        self
    }

    /// Adds action `name` with `params` (any `Serialize` value; `()` for none).
    pub fn action<P: Serialize + Send + 'static>(self, name: impl Into<String>, params: P) -> Self {
        self.push_step(StepAction::Named(name.into()), params)
    }

    /// A request of one declared action already found (see `Services::action`),
    /// built whole where it is returned: adding the step to a request made first
    /// would copy the request (larger than 128 bytes, so by a call to `memcpy`) in
    /// and out of each builder call.
    #[inline(always)]
    pub(crate) fn with_declared<P: Serialize + Send + 'static>(
        host: impl Into<CallerHost>,
        target: Target,
        action: usize,
        params: P,
    ) -> Self {
        ActionRequest {
            host: host.into(),
            target,
            steps: Steps {
                first: Some(Step {
                    action: StepAction::Declared(action),
                    params: Some(Payload::of(params)),
                    priority: 0,
                    timeout: None,
                    cancel: None,
                }),
                more: Vec::new(),
            },
            correlation: None,
            job: None,
            when: None,
            idempotency_key: None,
        }
    }

    // A hint: a request returned by value through a call is copied (by `memcpy`, it
    // is larger than 128 bytes) on its way in and out. (Not honoured as of this
    // writing: the copy is still there.)
    #[inline]
    fn push_step<P: Serialize + Send + 'static>(mut self, action: StepAction, params: P) -> Self {
        self.steps.push(Step {
            action,
            params: Some(Payload::of(params)),
            priority: 0,
            timeout: None,
            cancel: None,
        });
        self
    }

    /// Priority of the last added action: higher runs first.
    pub fn priority(mut self, priority: i32) -> Self {
        if let Some(s) = self.steps.last_mut() {
            s.priority = priority;
        }
        self
    }

    /// Deadline of the last added action, counted from sending (queue time included).
    /// At the deadline the handler's token is cancelled; after a short grace its
    /// future is dropped. The caller gets `Timeout`.
    pub fn timeout(mut self, timeout: Duration) -> Self {
        if let Some(s) = self.steps.last_mut() {
            s.timeout = Some(timeout);
        }
        self
    }

    /// Runs the request as a run of the durable job `job`, delivered by a transport:
    /// the handler sees it in [`ActionContext::job`](crate::ActionContext::job) (to
    /// key its side effects by the job's id), and the run is treated as a stored
    /// job's — the host lets it through while stopping (within the shutdown grace),
    /// and its worker alone answers it at its deadline. Stop it with
    /// [`cancel_on`](Self::cancel_on) when the claim on the job is lost.
    pub fn as_job(self, job: crate::job::JobInfo) -> Self {
        // As the host's own runner does: the run's token is a child of its service's,
        // so that the service stopping cancels it.
        let token = super::route::find_local(&self.host.inner, &self.target)
            .map_or_else(tokio_util::sync::CancellationToken::new, |cell| {
                cell.life.token.child_token()
            });
        self.for_job(JobMeta {
            info: Arc::new(job),
            token,
        })
    }

    /// Stops the run of the last added action when `token` is cancelled: its
    /// handler's token fires (`cx.cancelled()`), as at a deadline. A transport that
    /// delivers durable jobs uses it when it loses its claim on one, so that a run
    /// another instance now owns stops.
    pub fn cancel_on(mut self, token: tokio_util::sync::CancellationToken) -> Self {
        if let Some(s) = self.steps.last_mut() {
            s.cancel = Some(token);
        }
        self
    }

    /// The correlation id of the whole chain (generated when not given).
    pub fn correlation_id(mut self, id: impl Into<String>) -> Self {
        self.correlation = Some(Arc::from(id.into()));
        self
    }

    /// Subscribes to an event of the same service and runs these actions once the
    /// subscription is in place, so no event they cause is missed; finish with
    /// `.handle(…)` and `.subscribe()`.
    pub fn on(self, event: &str) -> crate::event::SubscriptionBuilder {
        let service = match find_local(&self.host.inner, &self.target) {
            Some(cell) => Arc::clone(&cell.spec.name),
            None => Arc::from(self.target.name(&self.host.inner)),
        };
        let host = self.host.handle();
        let run = Box::pin(async move { self.execute().await.map(drop) });
        crate::event::SubscriptionBuilder::new(host, Some(service))
            .then_run(run)
            .on(event)
    }

    /// Applies [`CallOptions`] to the last added action.
    pub fn options(mut self, options: CallOptions) -> Self {
        if let Some(s) = self.steps.last_mut() {
            s.priority = options.priority;
            s.timeout = options.timeout;
        }
        if let Some(c) = options.correlation_id {
            self.correlation = Some(Arc::from(c));
        }
        self
    }
}
