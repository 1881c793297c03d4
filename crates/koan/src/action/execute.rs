//! The future of `ActionRequest::execute`: each step runs on the caller's task when
//! its service is idle, through the mailbox otherwise, or through the transport.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use serde_json::Value;

use super::context::JobMeta;
use super::correlation::Correlation;
use super::deadline::push_with_deadline;
use super::inline::InlineRun;
use super::mailbox::Job;
use super::reply::{self, ReplyRx};
use super::request::{ActionOutput, ActionRequest, Target};
use super::route::{
    Prepared, find_local, poke_cell, prepare, prepare_declared, remote_call, singleton_poke,
    wait_poke,
};
use super::step::{Step, StepAction};
use crate::error::{Error, ErrorKind, Result};
use crate::host::HostInner;
use crate::payload::Payload;
use crate::registry::ServiceCell;
use crate::transport::Transport;
use crate::util::{BoxFuture, fmt_duration};

impl ActionRequest {
    /// Runs the actions in order and waits for each; the first failure stops the
    /// chain, and its error names the step. Returns the last action's result.
    ///
    /// Like any future, it does nothing until polled.
    pub fn execute(self) -> Execute {
        Execute {
            state: ExecState::Start(self),
        }
    }
}

/// A chain of several actions (or none), step after step.
async fn run_chain(mut req: ActionRequest, correlation: Correlation) -> Result<ActionOutput> {
    let inner = &req.host.inner;
    let total = req.steps.len();
    if total == 0 {
        return Err(Error::new(
            ErrorKind::UnknownAction,
            format!(
                "no action given for `{}`; add one with `.action(name, params)`",
                req.target.name(inner)
            ),
        ));
    }
    let mut last = Payload::Unit;
    for (i, step) in std::mem::take(&mut req.steps).into_iter().enumerate() {
        let cell = find_local(inner, &req.target);
        let action = step.action.name(cell.map(|c| &**c)).to_owned();
        match start_step(
            inner,
            &req.target,
            step,
            &correlation,
            req.job(),
            req.served(),
        )
        .await
        {
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
        step: StepFut<Box<InlineRun>>,
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

    /// Its error marked the answer to a call (see `Error::of_a_call`).
    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        match self.poll_step(cx) {
            Poll::Ready(Err(e)) => Poll::Ready(Err(e.of_a_call())),
            other => other,
        }
    }
}

impl Execute {
    fn poll_step(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Result<ActionOutput>> {
        let this = &mut *self;
        loop {
            match &mut this.state {
                ExecState::Start(req) => {
                    let correlation = match req.take_correlation() {
                        Ok(given) => Correlation::given_or_current(given),
                        Err(e) => {
                            this.state = ExecState::Done;
                            return Poll::Ready(Err(e));
                        }
                    };
                    // A single step is started from the request where it lies (no
                    // move of the whole request); a chain takes the request along.
                    let Some(step) = req.steps.take_single() else {
                        let ExecState::Start(req) =
                            std::mem::replace(&mut this.state, ExecState::Done)
                        else {
                            unreachable!("matched above")
                        };
                        this.state = ExecState::Chain(Box::pin(run_chain(req, correlation)));
                        continue;
                    };
                    let mut step = start_step(
                        &req.host.inner,
                        &req.target,
                        step,
                        &correlation,
                        req.job(),
                        req.served(),
                    );
                    // The request is done with (dropped where it lies, before the run:
                    // its count on the host, a line every core calling writes, is given
                    // back at once rather than after the run). The step is polled where
                    // it was made: one that finishes at once (an action its caller ran
                    // itself, a refusal) is never moved into the state, and one that
                    // waits is moved in small (see `StepFut::park`).
                    this.state = ExecState::Done;
                    if let Poll::Ready(payload) = Pin::new(&mut step).poll(cx) {
                        return Poll::Ready(
                            payload.map(|payload| ActionOutput::new(payload, correlation)),
                        );
                    }
                    this.state = ExecState::Single {
                        step: step.park(),
                        correlation,
                    };
                    return Poll::Pending;
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
///
/// A run by the caller is held in line (`I` is [`InlineRun`]) while the step is
/// first polled, where it nearly always finishes; one whose handler awaits is then
/// boxed ([`park`](StepFut::park)) as `execute()`'s future keeps it, so that future
/// stays within 128 bytes, moved without a call to `memcpy`.
pub(super) enum StepFut<I = InlineRun> {
    /// Failed before it started.
    Ready(Option<Result<Payload>>),
    /// Run by the caller itself (the service was idle).
    Inline(I),
    /// Queued in the mailbox, no deadline.
    Queued(ReplyRx),
    /// Remote without a deadline of its own: the transport's future itself, not a
    /// box around it (one allocation a remote call fewer).
    Remote(BoxFuture<'static, Result<Value>>),
    /// Remote with a deadline, a built-in poke, or queued with a deadline.
    Boxed(BoxFuture<'static, Result<Payload>>),
}

/// A job dropped unanswered answers `ShuttingDown` itself (see `Job`'s `Drop`), so
/// a lost answer is an oddity, not the usual shutdown.
fn lost() -> Error {
    Error::shutting_down("an action whose answer was lost as the host stopped")
}

impl StepFut {
    /// The step as a future keeps it while it waits: a run by the caller boxed.
    fn park(self) -> StepFut<Box<InlineRun>> {
        match self {
            StepFut::Ready(r) => StepFut::Ready(r),
            StepFut::Inline(run) => StepFut::Inline(Box::new(run)),
            StepFut::Queued(rx) => StepFut::Queued(rx),
            StepFut::Remote(fut) => StepFut::Remote(fut),
            StepFut::Boxed(fut) => StepFut::Boxed(fut),
        }
    }
}

impl<I> Future for StepFut<I>
where
    I: Future<Output = Option<Result<Payload>>> + Unpin,
{
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
            StepFut::Remote(fut) => fut.as_mut().poll(cx).map_ok(Payload::Json),
            StepFut::Boxed(fut) => fut.as_mut().poll(cx),
        }
    }
}

/// Starts one step: locally (run by the caller when the service is idle, queued
/// otherwise), or through the transport when the service is elsewhere. `served`:
/// the step came from another process (a poke of a singleton is then not sent on).
fn start_step(
    host: &Arc<HostInner>,
    target: &Target,
    step: Step,
    correlation: &Correlation,
    job: Option<&JobMeta>,
    served: bool,
) -> StepFut {
    let Some(cell) = find_local(host, target) else {
        return match &host.transport {
            Some(t) => remote(t, target.shared_name(host), step, correlation),
            None => StepFut::Ready(Some(Err(host.registry.unknown(target.name(host))))),
        };
    };
    if cell.life.failed()
        && let Some(t) = elsewhere(host, cell, served, job)
    {
        // Sent by its name: a declared action's number is this host's table's.
        let mut step = step;
        let name = step.action.name(Some(cell)).to_owned();
        step.action = StepAction::Named(name);
        return remote(t, target.shared_name(host), step, correlation);
    }
    // A declared action (a typed handle's call) is never a built-in: its job comes
    // straight back, not inside a `Prepared` it would be moved out of.
    let job = if let StepAction::Declared(index) = step.action {
        match prepare_declared(host, cell, index, step, correlation, job.cloned()) {
            Ok(job) => job,
            Err(e) => return StepFut::Ready(Some(Err(e))),
        }
    } else {
        if let StepAction::Named(name) = &step.action
            && let Some(t) = singleton_poke(host, cell, name)
        {
            let how = (served, job.is_some());
            return super::singleton::poke(host, cell, t, step, correlation, how);
        }
        match prepare(host, cell, step, correlation, job.cloned()) {
            Ok(Prepared::Job(job)) => job,
            Ok(Prepared::Builtin(poke, timeout)) => {
                return match poke_cell(cell, poke, timeout) {
                    Ok((receipt, action)) => {
                        let name = Arc::clone(&cell.spec.name);
                        let wait = waited(timeout, job.is_some());
                        StepFut::Boxed(Box::pin(async move {
                            wait_poke(receipt, &name, action, wait).await
                        }))
                    }
                    Err(e) => StepFut::Ready(Some(Err(e))),
                };
            }
            Err(e) => return StepFut::Ready(Some(Err(e))),
        }
    };
    start_job(host, cell, job)
}

/// The transport to send a call to when this host's instance of `cell` failed for
/// good and another instance of the cluster serves it: a call made here (not one
/// another process sent: it chose this host), and not a stored job's run (its job
/// is this host's; its handler is here).
#[cold]
fn elsewhere<'h>(
    host: &'h HostInner,
    cell: &ServiceCell,
    served: bool,
    job: Option<&JobMeta>,
) -> Option<&'h Arc<dyn Transport>> {
    let t = host.transport.as_ref()?;
    (!served && job.is_none() && t.serves_elsewhere(&cell.spec.name)).then_some(t)
}

/// How long a caller waits for a poked run with `timeout`: that long, unless the
/// poke is a `stored` job's run, whose record must say what the run did. Its
/// deadline still stops the run (its token is cancelled then, and a run that
/// ignores it is dropped after the action grace); a run that ends well a moment
/// past it is a success, not a timeout that the job's retry would run a second
/// time (seen in a probe).
pub(super) fn waited(
    timeout: Option<std::time::Duration>,
    stored: bool,
) -> Option<std::time::Duration> {
    timeout.filter(|_| !stored)
}

/// Starts a local step's job: run by the caller when its service is idle, queued
/// otherwise.
#[inline(always)]
pub(super) fn start_job(host: &Arc<HostInner>, cell: &Arc<ServiceCell>, mut job: Job) -> StepFut {
    // An idle service: the caller runs the action itself (see `inline`).
    if super::inline::take_slot(cell) {
        return StepFut::Inline(super::inline::run(host, Arc::clone(cell), job));
    }
    // A service not started yet takes a startup service's calls all the same (its
    // workers start after the phase): before the caller waits in its mailbox.
    if crate::host::in_startup() && cell.queue.slots.take_while_closed() {
        return StepFut::Inline(super::inline::run(host, Arc::clone(cell), job));
    }
    // A stored job's run is answered by its worker alone: its record must say
    // what really happened, not what the caller saw at the deadline.
    let deadline = job.deadline.filter(|_| job.job.is_none());
    let Some(deadline) = deadline else {
        let (tx, rx) = reply::channel();
        job.reply = Some(tx);
        return match cell.queue.mailbox.push(job) {
            Ok(()) => StepFut::Queued(rx),
            Err(e) => StepFut::Ready(Some(Err(e))),
        };
    };
    match push_with_deadline(cell, job, deadline) {
        Ok(answer) => StepFut::Boxed(Box::pin(async move {
            answer.await.unwrap_or_else(|| Err(lost()))
        })),
        Err(e) => StepFut::Ready(Some(Err(e))),
    }
}

/// Starts a step of a service elsewhere: the call is made now, its future is the
/// transport's.
pub(super) fn remote(
    transport: &Arc<dyn Transport>,
    service: Arc<str>,
    step: Step,
    correlation: &Correlation,
) -> StepFut {
    let timeout = step.timeout();
    let call = match remote_call(Arc::clone(&service), step, correlation) {
        Ok(call) => call,
        Err(e) => return StepFut::Ready(Some(Err(e))),
    };
    let Some(t) = timeout else {
        return StepFut::Remote(Arc::clone(transport).call_shared(call));
    };
    // A backstop to the transport's own deadline, which it may lose the race to:
    // said in the transport's words (a re-probe saw 1 of 16 timeouts say "remote
    // action … did not answer within 500ms" beside the others' wording).
    let action = call.action.clone();
    let fut = Arc::clone(transport).call_shared(call);
    // Past the transport's own wait for the instance's answer (its timeout and a
    // reply margin): the instance's "did not start" comes back in it.
    let backstop = t + crate::transport::reply_margin(t) + std::time::Duration::from_millis(100);
    StepFut::Boxed(Box::pin(async move {
        let value = tokio::time::timeout(backstop, fut).await.map_err(|_| {
            Error::new(
                ErrorKind::Timeout,
                format!(
                    "action `{action}` of `{service}`: did not finish within its timeout of {} (no answer by then; it may have run, or may still run, on its instance)",
                    fmt_duration(t)
                ),
            )
        })??;
        Ok(Payload::Json(value))
    }))
}

#[cfg(all(test, not(koan_loom)))]
mod size_tests {
    use std::mem::size_of;

    /// A request, and the future of its `execute()`, are moved into the caller's
    /// future: within 128 bytes those moves are inline, not calls to `memcpy`.
    #[test]
    fn a_request_and_its_execute_future_fit_in_128_bytes() {
        assert!(size_of::<super::ActionRequest>() <= 128);
        assert!(size_of::<super::Execute>() <= 128);
    }
}
