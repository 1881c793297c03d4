//! Invoking actions: the fluent `ActionRequest`, its outcome and tickets.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::task::{Context, Poll};
use std::time::Duration;

use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::Value;
use tokio::sync::oneshot;
use tokio::time::Instant;

use super::correlation::{Correlation, CorrelationText, new_id};
use super::declare::{ActionEntry, Resolved};
use super::ledger::{ActionRecord, ActionState};
use super::mailbox::Job;
use super::metrics::rejected;
use super::payload::Payload;
use crate::error::{Error, ErrorKind, Result};
use crate::host::{HostHandle, HostInner};
use crate::registry::ServiceCell;
use crate::transport::{RemoteCall, Transport};
use crate::util::{BoxFuture, fmt_duration};

/// Which service a request goes to.
#[derive(Debug, Clone)]
pub(crate) enum Target {
    Type(std::any::TypeId, Arc<str>),
    Name(Arc<str>),
}

impl Target {
    pub(crate) fn name(&self) -> &str {
        match self {
            Target::Type(_, n) | Target::Name(n) => n,
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

struct Step {
    action: StepAction,
    params: Option<Payload>,
    priority: i32,
    timeout: Option<Duration>,
}

/// The action of a step: a name, or (from a typed handle to a local service) the
/// declared action already found, so the call needs neither a copy of the name nor
/// a second look-up.
enum StepAction {
    Named(String),
    Resolved(Arc<ActionEntry>),
}

impl StepAction {
    fn as_str(&self) -> &str {
        match self {
            StepAction::Named(n) => n,
            StepAction::Resolved(e) => &e.name,
        }
    }

    fn into_string(self) -> String {
        match self {
            StepAction::Named(n) => n,
            StepAction::Resolved(e) => e.name.to_string(),
        }
    }
}

/// The steps of a request: a single action (the common case) needs no allocation.
#[derive(Default)]
struct Steps {
    first: Option<Step>,
    more: Vec<Step>,
}

impl Steps {
    fn push(&mut self, step: Step) {
        if self.first.is_none() {
            self.first = Some(step);
        } else {
            self.more.push(step);
        }
    }

    fn last_mut(&mut self) -> Option<&mut Step> {
        match self.more.last_mut() {
            Some(s) => Some(s),
            None => self.first.as_mut(),
        }
    }

    fn len(&self) -> usize {
        usize::from(self.first.is_some()) + self.more.len()
    }

    fn iter(&self) -> impl Iterator<Item = &Step> {
        self.first.iter().chain(&self.more)
    }

    /// The only step, when there is exactly one.
    fn take_single(&mut self) -> Option<Step> {
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

/// One or more actions to run on a service, in order (the seed's `Do(…)` chain).
///
/// `.priority()` and `.timeout()` apply to the action just added; `.correlation_id()`
/// to the whole chain.
#[must_use = "an action request does nothing until `.execute()` or `.enqueue()`"]
pub struct ActionRequest {
    host: HostHandle,
    target: Target,
    steps: Steps,
    correlation: Option<Arc<str>>,
}

impl std::fmt::Debug for ActionRequest {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ActionRequest")
            .field("service", &self.target.name())
            .field(
                "actions",
                &self
                    .steps
                    .iter()
                    .map(|s| s.action.as_str())
                    .collect::<Vec<_>>(),
            )
            .field("correlation_id", &self.correlation)
            .finish()
    }
}

/// The result of an action.
pub struct ActionOutput {
    payload: Payload,
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

    fn new(payload: Payload, correlation: Correlation) -> Self {
        ActionOutput {
            payload,
            correlation: CorrelationText::new(correlation),
        }
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

/// An accepted, enqueued action: its id, and its outcome when awaited.
#[derive(Debug)]
pub struct ActionTicket {
    id: Arc<str>,
    correlation_id: Arc<str>,
    rx: oneshot::Receiver<Result<Payload>>,
}

impl ActionTicket {
    /// The id to query the outcome by ([`HostHandle::action_record`]).
    pub fn id(&self) -> &str {
        &self.id
    }

    /// The correlation id.
    pub fn correlation_id(&self) -> &str {
        &self.correlation_id
    }

    /// Waits for the outcome.
    pub async fn outcome(self) -> Result<ActionOutput> {
        let payload = self
            .rx
            .await
            .map_err(|_| Error::shutting_down(&format!("enqueued action {}", self.id)))??;
        Ok(ActionOutput::new(
            payload,
            Correlation::Given(self.correlation_id),
        ))
    }
}

impl ActionRequest {
    pub(crate) fn new(host: HostHandle, target: Target) -> Self {
        ActionRequest {
            host,
            target,
            steps: Steps::default(),
            correlation: None,
        }
    }

    /// Adds action `name` with `params` (any `Serialize` value; `()` for none).
    pub fn action<P: Serialize + Send + 'static>(self, name: impl Into<String>, params: P) -> Self {
        self.push_step(StepAction::Named(name.into()), params)
    }

    /// Adds a declared action already found (see `Services::action`).
    pub(crate) fn action_entry<P: Serialize + Send + 'static>(
        self,
        entry: Arc<ActionEntry>,
        params: P,
    ) -> Self {
        self.push_step(StepAction::Resolved(entry), params)
    }

    fn push_step<P: Serialize + Send + 'static>(mut self, action: StepAction, params: P) -> Self {
        self.steps.push(Step {
            action,
            params: Some(Payload::of(params)),
            priority: 0,
            timeout: None,
        });
        self
    }

    /// Adds action `name` with JSON parameters (the by-name path of HTTP and NATS).
    pub fn action_json(self, name: impl Into<String>, params: Value) -> Self {
        self.action(name, params)
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

    /// The correlation id of the whole chain (generated when not given).
    pub fn correlation_id(mut self, id: impl Into<String>) -> Self {
        self.correlation = Some(Arc::from(id.into()));
        self
    }

    /// Subscribes to an event of the same service and runs these actions once the
    /// subscription is in place (the seed's mixed chain
    /// `Do(…).On(…).Do(…).SubscribeAsync()`); finish with `.handle(…)` and
    /// `.subscribe()`.
    pub fn on(self, event: &str) -> crate::event::SubscriptionBuilder {
        let service = match find_local(&self.host.inner, &self.target) {
            Some(cell) => Arc::clone(&cell.name),
            None => Arc::from(self.target.name()),
        };
        crate::event::SubscriptionBuilder::new(self.host.clone(), Some(service))
            .then_run(self)
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

    /// Runs the actions in order and waits for each; the first failure stops the
    /// chain, and its error names the step. Returns the last action's result.
    ///
    /// Like any future, it does nothing until polled.
    pub fn execute(self) -> Execute {
        Execute {
            state: ExecState::Start(self),
        }
    }

    /// A chain of several actions (or none), step after step.
    async fn run_chain(self, correlation: Correlation) -> Result<ActionOutput> {
        let inner = &self.host.inner;
        let total = self.steps.len();
        if total == 0 {
            return Err(Error::new(
                ErrorKind::UnknownAction,
                format!(
                    "no action given for `{}`; add one with `.action(name, params)`",
                    self.target.name()
                ),
            ));
        }
        let mut last = Payload::Unit;
        for (i, step) in self.steps.into_iter().enumerate() {
            let action = step.action.as_str().to_owned();
            match start_step(inner, &self.target, step, &correlation).await {
                Ok(p) => last = p,
                Err(e) => {
                    return Err(Error::new(
                        e.kind(),
                        format!("step {} of {total} (`{action}`) failed: {}", i + 1, e),
                    ));
                }
            }
        }
        Ok(ActionOutput::new(last, correlation))
    }

    /// Returns once the work is accepted, with a ticket whose outcome can be awaited
    /// or queried by id. Rejections (unknown, disabled, busy, bad parameters) come
    /// back at once.
    pub async fn enqueue(mut self) -> Result<ActionTicket> {
        // A ticket shows its correlation id at once: formatted now.
        let correlation = self.correlation.clone().unwrap_or_else(new_id);
        let given = Correlation::Given(Arc::clone(&correlation));
        let id = new_id();
        let inner = Arc::clone(&self.host.inner);
        let names: Vec<&str> = self.steps.iter().map(|s| s.action.as_str()).collect();
        inner.ledger.insert(ActionRecord {
            id: id.to_string(),
            service: self.target.name().to_owned(),
            action: names.join(","),
            correlation_id: correlation.to_string(),
            state: ActionState::Queued,
            accepted_at: inner.config.clock.now(),
            finished_at: None,
            result: None,
            error: None,
        });
        let (tx, rx) = oneshot::channel();
        if self.steps.len() == 1
            && let Ok(cell) = local_cell(&inner, &self.target)
            && let Some(step) = self.steps.take_single()
        {
            // Local single actions are accepted (or refused) right here.
            let accepted = accept_local(&inner, &cell, step, &given, &id, tx);
            if let Err(e) = &accepted {
                inner.ledger.finish(&id, inner.config.clock.now(), Err(e));
            }
            accepted?;
            return Ok(ActionTicket {
                id,
                correlation_id: correlation,
                rx,
            });
        }
        // A single remote action goes into the transport's durable queue.
        if self.steps.len() == 1
            && find_local(&inner, &self.target).is_none()
            && let Some(transport) = inner.transport.clone()
            && let Some(step) = self.steps.take_single()
        {
            let call = remote_call(&self.target, step, &given)?;
            let deadline = call.timeout.map(|t| crate::util::after(Instant::now(), t));
            let what = format!("durable action `{}` of `{}`", call.action, call.service);
            // Waiting starts before the job exists, so its outcome cannot slip by.
            let wait = transport.outcome(&id);
            if let Err(e) = transport.enqueue(call, &id).await {
                inner.ledger.finish(&id, inner.config.clock.now(), Err(&e));
                return Err(e);
            }
            let (host, id2) = (Arc::clone(&inner), Arc::clone(&id));
            tokio::spawn(async move {
                // Queue time counts: the ticket is answered at the deadline at the latest.
                let r = match deadline {
                    None => wait.await,
                    Some(d) => tokio::time::timeout_at(d, wait).await.unwrap_or_else(|_| {
                        Err(Error::new(
                            ErrorKind::Timeout,
                            format!(
                                "{what} did not finish within its timeout (queue time included)"
                            ),
                        ))
                    }),
                };
                finish_ticket(&host, &id2, r.map(Payload::Json), tx);
            });
            return Ok(ActionTicket {
                id,
                correlation_id: correlation,
                rx,
            });
        }
        // Unknown here and no transport to look elsewhere: refuse now, not later.
        if inner.transport.is_none() && find_local(&inner, &self.target).is_none() {
            let e = inner.registry.unknown(self.target.name());
            inner.ledger.finish(&id, inner.config.clock.now(), Err(&e));
            return Err(e);
        }
        // Chains and remote calls run on a task of their own.
        let host = self.host.clone();
        let (id2, corr2) = (Arc::clone(&id), Arc::clone(&correlation));
        self.correlation = Some(corr2);
        tokio::spawn(async move {
            let r = self.execute().await.map(|o| o.payload);
            finish_ticket(&host.inner, &id2, r, tx);
        });
        Ok(ActionTicket {
            id,
            correlation_id: correlation,
            rx,
        })
    }
}

fn accept_local(
    inner: &Arc<HostInner>,
    cell: &Arc<ServiceCell>,
    step: Step,
    correlation: &Correlation,
    id: &Arc<str>,
    tx: oneshot::Sender<Result<Payload>>,
) -> Result<()> {
    match prepare(inner, cell, step, correlation, Some(Arc::clone(id)))? {
        Prepared::Job(mut job) => {
            let Some(deadline) = job.deadline else {
                job.reply = Some(tx);
                return cell.mailbox.push(job);
            };
            // The deadline counts queue time: answer the ticket (and the ledger) at
            // the deadline even while the job still waits behind others, not only
            // once a worker picks it up.
            let (job_tx, job_rx) = oneshot::channel();
            job.reply = Some(job_tx);
            let late = job.timeout_error(&cell.name);
            cell.mailbox.push(job)?;
            let (host, id) = (Arc::clone(inner), Arc::clone(id));
            tokio::spawn(async move {
                match tokio::time::timeout_at(deadline, job_rx).await {
                    Ok(Ok(r)) => {
                        let _ = tx.send(r);
                    }
                    // The job was dropped unanswered: so is the ticket.
                    Ok(Err(_)) => {}
                    Err(_) => finish_ticket(&host, &id, Err(late), tx),
                }
            });
            Ok(())
        }
        Prepared::Builtin(poke, timeout) => {
            let (receipt, action) = poke_cell(cell, poke)?;
            let host = Arc::clone(inner);
            let (id, name) = (Arc::clone(id), Arc::clone(&cell.name));
            tokio::spawn(async move {
                let r = wait_poke(receipt, &name, action, timeout).await;
                finish_ticket(&host, &id, r, tx);
            });
            Ok(())
        }
    }
}

/// Hands a built-in poke to a periodic service's driver.
fn poke_cell(
    cell: &ServiceCell,
    poke: crate::schedule::Poke,
) -> Result<(crate::schedule::PokeReceipt, &'static str)> {
    let control = cell.control.as_ref().ok_or_else(|| {
        Error::new(
            ErrorKind::UnknownAction,
            format!("`{}` is not periodic", cell.name),
        )
    })?;
    let action = poke.action_name();
    Ok((control.poke(&cell.name, poke)?, action))
}

fn finish_ticket(
    host: &HostInner,
    id: &str,
    r: Result<Payload>,
    tx: oneshot::Sender<Result<Payload>>,
) {
    let at = host.config.clock.now();
    match &r {
        Ok(p) => host
            .ledger
            .finish(id, at, Ok(p.to_json().unwrap_or_default())),
        Err(e) => host.ledger.finish(id, at, Err(e)),
    }
    let _ = tx.send(r);
}

pub(crate) fn local_cell(host: &HostInner, target: &Target) -> Result<Arc<ServiceCell>> {
    find_local(host, target)
        .cloned()
        .ok_or_else(|| host.registry.unknown(target.name()))
}

/// The local cell behind a target, without building an error when there is none
/// (a remote call must not pay for listing the local services). Borrowed: the hot
/// path takes a count on the cell (shared by every caller) only when it keeps it.
fn find_local<'h>(host: &'h HostInner, target: &Target) -> Option<&'h Arc<ServiceCell>> {
    match target {
        Target::Type(id, name) => host
            .registry
            .by_type(*id)
            .or_else(|| host.registry.by_name(name)),
        Target::Name(name) => host.registry.by_name(name),
    }
}

enum Prepared {
    Job(Job),
    Builtin(crate::schedule::Poke, Option<Duration>),
}

/// Counts a refusal of `action` and passes the error on.
fn reject(cell: &ServiceCell, action: &str, e: Error) -> Error {
    rejected(&cell.name, action, e.kind());
    e
}

fn prepare(
    host: &HostInner,
    cell: &Arc<ServiceCell>,
    step: Step,
    correlation: &Correlation,
    id: Option<Arc<str>>,
) -> Result<Prepared> {
    let Step {
        action,
        mut params,
        priority,
        timeout,
    } = step;
    if let Some(reason) = &cell.disabled {
        let e = Error::new(
            ErrorKind::Disabled,
            format!(
                "service `{}` is disabled ({reason}); action `{}` was not run",
                cell.name,
                action.as_str()
            ),
        );
        return Err(reject(cell, action.as_str(), e));
    }
    if host.stopping.load(Ordering::Acquire) {
        let e = Error::shutting_down(&format!("action `{}` of `{}`", action.as_str(), cell.name));
        return Err(reject(cell, action.as_str(), e));
    }
    let entry = match action {
        StepAction::Resolved(entry) => entry,
        StepAction::Named(name) => {
            match cell
                .actions
                .resolve(&cell.name, &name, &mut params)
                .map_err(|e| reject(cell, &name, e))?
            {
                Resolved::Builtin(poke) => return Ok(Prepared::Builtin(poke, timeout)),
                Resolved::Declared(entry) => Arc::clone(entry),
            }
        }
    };
    let what = || format!("action `{}` of `{}`", entry.name, cell.name);
    let params = (entry.decode)(params.unwrap_or(Payload::Unit), &what)
        .map_err(|e| reject(cell, &entry.name, e))?;
    let now = Instant::now();
    let ledgered = id.is_some();
    Ok(Prepared::Job(Job {
        entry,
        params,
        priority,
        timeout,
        deadline: timeout.map(|t| crate::util::after(now, t)),
        correlation: correlation.clone(),
        id,
        reply: None,
        enqueued_at: now,
        host: ledgered.then(|| host.me.clone()),
        answered: false,
    }))
}

async fn wait_poke(
    receipt: crate::schedule::PokeReceipt,
    service: &str,
    action: &str,
    timeout: Option<Duration>,
) -> Result<Payload> {
    let fut = receipt.outcome(service);
    let outcome = wait_poke_inner(fut, service, timeout).await;
    let label = match &outcome {
        Ok(_) => "ok",
        Err(e) => e.kind().as_str(),
    };
    metrics::counter!("koan_actions_total", "service" => service.to_owned(), "action" => action.to_owned(), "outcome" => label).increment(1);
    Ok(Payload::of(outcome?))
}

async fn wait_poke_inner(
    fut: impl std::future::Future<Output = Result<crate::schedule::TriggerOutcome>>,
    service: &str,
    timeout: Option<Duration>,
) -> Result<crate::schedule::TriggerOutcome> {
    Ok(match timeout {
        None => fut.await?,
        Some(t) => tokio::time::timeout(t, fut).await.map_err(|_| {
            Error::new(
                ErrorKind::Timeout,
                format!(
                    "the run of `{service}` did not finish within {}",
                    fmt_duration(t)
                ),
            )
        })??,
    })
}

/// The future of [`ActionRequest::execute`]: the result of the last action.
///
/// A single action (the common case) is a small state machine: it holds the request
/// until first polled, then nothing bigger than its run or a oneshot receiver. Chains
/// and the paths that hold timers or transport futures are boxed.
#[must_use = "futures do nothing unless polled"]
pub struct Execute {
    state: ExecState,
}

enum ExecState {
    Start(ActionRequest),
    Single {
        step: StepFut,
        correlation: Correlation,
    },
    Chain(BoxFuture<'static, Result<ActionOutput>>),
    Done,
}

impl std::fmt::Debug for Execute {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let state = match &self.state {
            ExecState::Start(_) => "not started",
            ExecState::Single { .. } | ExecState::Chain(_) => "running",
            ExecState::Done => "done",
        };
        f.debug_struct("Execute").field("state", &state).finish()
    }
}

impl Future for Execute {
    type Output = Result<ActionOutput>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = &mut *self;
        loop {
            match &mut this.state {
                ExecState::Start(req) => {
                    let correlation = Correlation::given_or_new(req.correlation.take());
                    // A single step is started from the request where it lies (no
                    // move of the whole request); a chain takes the request along.
                    this.state = match req.steps.take_single() {
                        Some(step) => ExecState::Single {
                            step: start_step(&req.host.inner, &req.target, step, &correlation),
                            correlation,
                        },
                        None => {
                            let ExecState::Start(req) =
                                std::mem::replace(&mut this.state, ExecState::Done)
                            else {
                                unreachable!("matched above")
                            };
                            ExecState::Chain(Box::pin(req.run_chain(correlation)))
                        }
                    };
                }
                ExecState::Single { step, correlation } => {
                    let payload = std::task::ready!(Pin::new(step).poll(cx));
                    let correlation = correlation.clone();
                    this.state = ExecState::Done;
                    return Poll::Ready(
                        payload.map(|payload| ActionOutput::new(payload, correlation)),
                    );
                }
                ExecState::Chain(fut) => {
                    let out = std::task::ready!(fut.as_mut().poll(cx));
                    this.state = ExecState::Done;
                    return Poll::Ready(out);
                }
                ExecState::Done => panic!("`Execute` polled after it completed"),
            }
        }
    }
}

/// One step on its way: run by the caller, queued, or on a boxed slow path.
enum StepFut {
    /// Failed before it started.
    Ready(Option<Result<Payload>>),
    /// Run by the caller itself (the service was idle).
    Inline(super::inline::InlineRun),
    /// Queued in the mailbox, no deadline.
    Queued(oneshot::Receiver<Result<Payload>>),
    /// Remote, a built-in poke, or queued with a deadline.
    Boxed(BoxFuture<'static, Result<Payload>>),
}

/// A job dropped unanswered answers `ShuttingDown` itself (see `Job`'s `Drop`), so
/// a lost answer is an oddity, not the usual shutdown.
fn lost() -> Error {
    Error::shutting_down("an action whose answer was lost as the host stopped")
}

impl Future for StepFut {
    type Output = Result<Payload>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        match &mut *self {
            StepFut::Ready(r) => Poll::Ready(r.take().expect("a step polled after it completed")),
            StepFut::Inline(run) => Pin::new(run)
                .poll(cx)
                .map(|r| r.unwrap_or_else(|| Err(lost()))),
            StepFut::Queued(rx) => Pin::new(rx)
                .poll(cx)
                .map(|r| r.unwrap_or_else(|_| Err(lost()))),
            StepFut::Boxed(fut) => fut.as_mut().poll(cx),
        }
    }
}

/// Starts one step: locally (run by the caller when the service is idle, queued
/// otherwise), or through the transport when the service is elsewhere.
fn start_step(
    host: &Arc<HostInner>,
    target: &Target,
    step: Step,
    correlation: &Correlation,
) -> StepFut {
    let Some(cell) = find_local(host, target) else {
        return match &host.transport {
            Some(t) => {
                let (t, target, correlation) = (Arc::clone(t), target.clone(), correlation.clone());
                StepFut::Boxed(Box::pin(async move {
                    remote(t.as_ref(), &target, step, &correlation).await
                }))
            }
            None => StepFut::Ready(Some(Err(host.registry.unknown(target.name())))),
        };
    };
    let prepared = match prepare(host, cell, step, correlation, None) {
        Ok(p) => p,
        Err(e) => return StepFut::Ready(Some(Err(e))),
    };
    match prepared {
        Prepared::Builtin(poke, timeout) => match poke_cell(cell, poke) {
            Ok((receipt, action)) => {
                let name = Arc::clone(&cell.name);
                StepFut::Boxed(Box::pin(async move {
                    wait_poke(receipt, &name, action, timeout).await
                }))
            }
            Err(e) => StepFut::Ready(Some(Err(e))),
        },
        Prepared::Job(mut job) => {
            // An idle service: the caller runs the action itself (see `inline`).
            if super::inline::take_slot(cell) {
                return StepFut::Inline(super::inline::run(host, Arc::clone(cell), job));
            }
            let (tx, rx) = oneshot::channel();
            job.reply = Some(tx);
            let Some(deadline) = job.deadline else {
                return match cell.mailbox.push(job) {
                    Ok(()) => StepFut::Queued(rx),
                    Err(e) => StepFut::Ready(Some(Err(e))),
                };
            };
            // The deadline counts queue time: the caller is answered at the deadline
            // even while the job still waits behind others.
            let late = job.timeout_error(&cell.name);
            if let Err(e) = cell.mailbox.push(job) {
                return StepFut::Ready(Some(Err(e)));
            }
            StepFut::Boxed(Box::pin(async move {
                match tokio::time::timeout_at(deadline, rx).await {
                    Ok(r) => r.unwrap_or_else(|_| Err(lost())),
                    Err(_) => Err(late),
                }
            }))
        }
    }
}

async fn remote(
    transport: &dyn Transport,
    target: &Target,
    step: Step,
    correlation: &Correlation,
) -> Result<Payload> {
    let timeout = step.timeout;
    let call = remote_call(target, step, correlation)?;
    let fut = transport.call(call);
    let value = match timeout {
        Some(t) => tokio::time::timeout(t, fut).await.map_err(|_| {
            Error::new(
                ErrorKind::Timeout,
                format!(
                    "remote action of `{}` did not answer within {}",
                    target.name(),
                    fmt_duration(t)
                ),
            )
        })??,
        None => fut.await?,
    };
    Ok(Payload::Json(value))
}

/// The local cell behind a target, if this host runs it.
pub(crate) fn local_cell_pub(host: &HostHandle, target: &Target) -> Option<Arc<ServiceCell>> {
    find_local(&host.inner, target).cloned()
}

fn remote_call(target: &Target, step: Step, correlation: &Correlation) -> Result<RemoteCall> {
    let params = match step.params {
        Some(p) => p.into_json()?,
        None => Value::Null,
    };
    Ok(RemoteCall {
        service: target.name().to_owned(),
        action: step.action.into_string(),
        params,
        priority: step.priority,
        timeout: step.timeout,
        correlation_id: correlation.to_string(),
    })
}

/// A built-in poke of a local periodic service, straight to its driver (the by-name
/// action path costs more than the wake-up itself). `None` when the regular path must
/// answer: not local, not periodic, overridden by a declared action, disabled, or the
/// host is stopping (that path says why).
pub(crate) async fn poke_direct(
    host: &HostHandle,
    target: &Target,
    poke: crate::schedule::Poke,
) -> Option<Result<crate::schedule::TriggerOutcome>> {
    let cell = find_local(&host.inner, target)?;
    let control = cell.control.as_ref()?;
    let action = poke.action_name();
    if cell.disabled.is_some()
        || host.inner.stopping.load(Ordering::Acquire)
        || cell.actions.declares(action)
    {
        return None;
    }
    let outcome = match control.poke(&cell.name, poke) {
        Ok(receipt) => receipt.outcome(&cell.name).await,
        Err(e) => Err(e),
    };
    let label = match &outcome {
        Ok(_) => "ok",
        Err(e) => e.kind().as_str(),
    };
    metrics::counter!("koan_actions_total", "service" => cell.name.to_string(), "action" => action, "outcome" => label).increment(1);
    Some(outcome)
}
