//! The fluent `ActionRequest`: which actions, with which options; and its outcome.

use std::sync::Arc;
use std::time::Duration;

use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::Value;

use super::context::JobMeta;
use super::correlation::{Correlation, CorrelationText};
use super::route::find_local;
use super::step::{Step, StepAction, Steps};
use crate::error::{Error, ErrorKind, Result};
use crate::host::{CallerHost, HostInner};
use crate::payload::Payload;

/// Which service a request goes to.
#[derive(Debug, Clone)]
pub(crate) enum Target {
    /// A typed handle's service that this host does not run, by its type and name:
    /// boxed, the rare case, so that a request fits in 128 bytes (see
    /// [`ActionRequest`]).
    Type(Box<(std::any::TypeId, Arc<str>)>),
    Name(Arc<str>),
    /// The service at this index of the registry of the request's own host, found
    /// when the request was made (the registry does not change once the host is
    /// built): the call neither looks it up again nor takes a count on its name.
    Local(usize),
}

impl Target {
    /// The service of type `id`, named `name`.
    pub(crate) fn of_type(id: std::any::TypeId, name: Arc<str>) -> Self {
        Target::Type(Box::new((id, name)))
    }

    /// The service's name; `host` is the request's own.
    pub(crate) fn name<'a>(&'a self, host: &'a HostInner) -> &'a str {
        match self {
            Target::Type(t) => &t.1,
            Target::Name(n) => n,
            Target::Local(i) => host.registry.all().get(*i).map_or("", |c| &c.spec.name),
        }
    }

    /// The service's name, shared (no copy).
    pub(crate) fn shared_name(&self, host: &HostInner) -> Arc<str> {
        match self {
            Target::Type(t) => Arc::clone(&t.1),
            Target::Name(n) => Arc::clone(n),
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
    /// What few requests carry, boxed: within 128 bytes a request (and the future of
    /// its `execute()`) is moved inline, not by a call to `memcpy` (B3: 4 % of the
    /// samples were those calls, at 248 bytes).
    extra: Option<Box<Extra>>,
}

/// The rarer parts of a request, read and written through its accessors only.
#[derive(Default)]
struct Extra {
    /// The correlation id given.
    correlation: Option<Arc<str>>,
    /// Set when the job runner runs a stored job through this request.
    job: Option<JobMeta>,
    /// `enqueue()` options: when to run, and the idempotency key.
    when: Option<When>,
    idempotency_key: Option<String>,
    /// Made for a call from another process ([`ServiceRef::serve`](crate::service::ServiceRef::serve)).
    served: bool,
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
            .field("correlation_id", &self.given_correlation())
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

    /// The result as JSON (`null` for `()`), taken out of the output: what
    /// [`json`](Self::json) gives, without copying a result that is JSON already
    /// (a remote action's, or a stored job's), which `json` clones whole.
    pub fn into_json(self) -> Result<Value> {
        self.payload.into_json()
    }

    /// The result as `R`: the handler's own value when it is an `R`, converted through
    /// serde otherwise.
    pub fn value<R: DeserializeOwned + 'static>(self) -> Result<R> {
        self.payload
            .decode::<R>(&|| "action result".to_owned())
            // The action ran: what does not fit is the type asked for, not the
            // parameters the message and kind would otherwise blame (a job's
            // `outcome()` after an upgrade changed the result type said
            // `invalid_parameters`; found by a probe).
            .map_err(|e| {
                Error::new(
                    ErrorKind::InvalidResult,
                    e.message().replacen(
                        "action result: invalid parameters",
                        "the action ran, but its result does not read as the type asked for (its result type changed between builds?)",
                        1,
                    ),
                )
                .of_a_call()
            })
    }
}

/// An action handed to its service with [`ActionRequest::spawn`]: held in this
/// process only, so its outcome is lost if the process stops (use
/// [`ActionRequest::enqueue`] for work that must survive). Dropping the ticket does
/// not withdraw the work: it runs all the same, its outcome unread.
#[derive(Debug)]
pub struct ActionTicket {
    pub(super) correlation_id: Arc<str>,
    pub(super) rx: super::reply::ReplyRx,
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
            extra: None,
        }
    }

    /// The rarer parts, made when first set.
    fn extra_mut(&mut self) -> &mut Extra {
        self.extra.get_or_insert_with(Box::default)
    }

    /// The correlation id given, if any.
    pub(super) fn given_correlation(&self) -> Option<&Arc<str>> {
        self.extra.as_ref()?.correlation.as_ref()
    }

    /// Gives the chain correlation id `id`.
    pub(super) fn set_correlation(&mut self, id: Arc<str>) {
        self.extra_mut().correlation = Some(id);
    }

    /// Takes the correlation id given, if any.
    /// The correlation id given, checked as one from another process is
    /// ([`check_correlation_id`](super::check_correlation_id)): an id a host would
    /// refuse over NATS, or that a tab in it made another id in the remote's
    /// events, was taken here and failed only when the service was remote
    /// (found by a probe).
    /// A zero timeout is refused first (see [`Steps::check_timeouts`]).
    pub(super) fn take_correlation(&mut self) -> Result<Option<Arc<str>>> {
        self.steps.check_timeouts()?;
        let Some(id) = self.extra.as_mut().and_then(|e| e.correlation.take()) else {
            return Ok(None);
        };
        super::check_correlation_id(&id).map_err(|why| {
            let shown: String = id.chars().take(60).collect();
            Error::new(
                ErrorKind::InvalidParameters,
                format!("the correlation id {shown:?} {why}"),
            )
        })?;
        Ok(Some(id))
    }

    /// The stored job this request runs, if it does.
    pub(super) fn job(&self) -> Option<&JobMeta> {
        self.extra.as_ref()?.job.as_ref()
    }

    /// Whether the request was made for a call from another process.
    pub(super) fn served(&self) -> bool {
        self.extra.as_ref().is_some_and(|e| e.served)
    }

    /// Marks the request as made for a call from another process.
    pub(super) fn for_served_call(mut self) -> Self {
        self.extra_mut().served = true;
        self
    }

    /// When an enqueued job may run, if asked.
    pub(super) fn when(&self) -> Option<&When> {
        self.extra.as_ref()?.when.as_ref()
    }

    /// Takes the idempotency key, if any.
    pub(super) fn take_idempotency_key(&mut self) -> Option<String> {
        self.extra.as_mut()?.idempotency_key.take()
    }

    /// Runs the request as (a run of) a stored job.
    pub(crate) fn for_job(mut self, job: JobMeta) -> Self {
        self.extra_mut().job = Some(job);
        self
    }

    /// For `enqueue()`: the job runs no sooner than `delay` from now (kept through
    /// restarts).
    pub fn delay(mut self, delay: Duration) -> Self {
        self.extra_mut().when = Some(When::After(delay));
        self
    }

    /// For `enqueue()`: the job runs no sooner than `at` (kept through restarts).
    pub fn at(mut self, at: chrono::DateTime<chrono::Utc>) -> Self {
        self.extra_mut().when = Some(When::At(at));
        self
    }

    /// For `enqueue()`: a second enqueue with the same key (while the first job is
    /// kept) stores nothing new and returns the first job, so a caller may retry an
    /// enqueue whose answer it did not get.
    pub fn idempotency_key(mut self, key: impl Into<String>) -> Self {
        self.extra_mut().idempotency_key = Some(key.into());
        self
    }

    /// Adds action `name` with `params` (any `Serialize` value; `()` for none). JSON
    /// text given as a [`JsonText`](crate::action::JsonText) (as a transport
    /// receives it) or a `Box<serde_json::value::RawValue>` is read straight into the
    /// handler's parameter type.
    pub fn action<P: Serialize + Send + 'static>(self, name: impl Into<String>, params: P) -> Self {
        self.push_step(StepAction::Named(name.into()), params)
    }

    /// A request of one declared action already found (see `Services::action`),
    /// built whole where it is returned, not by adding the step to a request made
    /// first (a copy of the request in and out of each builder call).
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
            steps: Steps::One(Step::new(StepAction::Declared(action), Payload::of(params))),
            extra: None,
        }
    }

    #[inline]
    fn push_step<P: Serialize + Send + 'static>(mut self, action: StepAction, params: P) -> Self {
        self.steps.push(Step::new(action, Payload::of(params)));
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
            s.limits_mut().timeout = Some(timeout);
        }
        self
    }

    /// Runs the request as a run of the durable job `job`, delivered by a transport:
    /// the handler sees it in [`ActionContext::job`](crate::ActionContext::job) (to
    /// key its side effects by the job's id), and the run is treated as a stored
    /// job's — the host lets it through while stopping (within the shutdown grace),
    /// a full mailbox takes it past its capacity (by at most the service's
    /// `max_concurrency` such runs: a transport holds no more at once), and its
    /// worker alone answers it at its deadline. Stop it with
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
            s.limits_mut().cancel = Some(token);
        }
        self
    }

    /// The correlation id of the whole chain (generated when not given).
    ///
    /// Taken as `AsRef<str>`: the id is kept shared, and from a `&str` that is one
    /// allocation, where a `String` made of it first was two (a remote call served
    /// over NATS gives its id so, B8).
    pub fn correlation_id(mut self, id: impl AsRef<str>) -> Self {
        self.set_correlation(Arc::from(id.as_ref()));
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
            if options.timeout.is_some() || s.timeout().is_some() {
                s.limits_mut().timeout = options.timeout;
            }
        }
        if let Some(c) = options.correlation_id {
            self.set_correlation(Arc::from(c));
        }
        self
    }
}

#[cfg(all(test, not(koan_loom)))]
mod tests {
    use super::*;

    #[test]
    fn into_json_gives_what_json_gives_and_moves_a_json_result_out() {
        let correlation = || Correlation::generate();
        let result = serde_json::json!({ "rows": "x".repeat(1_000) });
        let expected = result.clone();
        let bytes_at = result["rows"].as_str().map(str::as_ptr);
        let out = ActionOutput::new(Payload::Json(result), correlation());
        assert_eq!(out.json().ok().as_ref(), Some(&expected));
        let taken = out.into_json().ok();
        assert_eq!(taken.as_ref(), Some(&expected));
        // The same string, not a copy of it.
        let taken_at = taken
            .as_ref()
            .and_then(|v| v["rows"].as_str())
            .map(str::as_ptr);
        assert_eq!(taken_at, bytes_at);
        // `()` is `null` either way.
        let unit = ActionOutput::new(Payload::Unit, correlation());
        assert_eq!(unit.json().ok(), Some(Value::Null));
        assert_eq!(unit.into_json().ok(), Some(Value::Null));
    }
}
