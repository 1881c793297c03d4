//! A call served for another process
//! ([`ServiceRef::serve`](crate::service::ServiceRef::serve)): a transport's serving
//! side hands each call it receives to its action here, from the call's own parts,
//! rather than through a request built for it.
//!
//! B8's serving side (a call from another process, answered at once by an idle
//! service) went through a request built for the call (the host's handle counted
//! and given back, the action's step, the correlation id kept) and `execute()`'s
//! states. Straight from the call's parts to its job: about 400 instructions
//! fewer a call served (callgrind), and the serving side's excess over a raw
//! responder 4.81 → 4.22 µs (`koan-bench/b8_path.py`, medians of 12 alternated
//! sets of runs).

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use super::correlation::Correlation;
use super::execute::{Execute, StepFut, start_job};
use super::request::ActionOutput;
use super::route::{find_local, prepare_declared};
use super::step::{Step, StepAction};
use crate::error::Result;
use crate::payload::{JsonText, Payload};
use crate::service::ServiceRef;

/// The future of [`ServiceRef::serve`]: the action's output, as
/// [`ActionRequest::execute`](crate::action::ActionRequest::execute) gives it.
///
/// A transport may poll it where the call arrived and, when the action has to
/// wait, move it into a task of its own (it is `Unpin`).
#[must_use = "futures do nothing unless polled"]
pub struct Serve(State);

enum State {
    /// A declared action of a local service: its step, started.
    Step {
        step: StepFut,
        correlation: Correlation,
    },
    /// Anything else (a built-in, an action spelled otherwise, a service elsewhere):
    /// through a request, as any caller's.
    Request(Execute),
    Done,
}

impl std::fmt::Debug for Serve {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let state = match &self.0 {
            State::Step { .. } => "running",
            State::Request(_) => "running through a request",
            State::Done => "done",
        };
        f.debug_struct("Serve").field("state", &state).finish()
    }
}

impl Future for Serve {
    type Output = Result<ActionOutput>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = &mut self.0;
        match this {
            State::Step { step, .. } => {
                let payload = std::task::ready!(Pin::new(step).poll(cx));
                let State::Step { correlation, .. } = std::mem::replace(this, State::Done) else {
                    unreachable!("matched above")
                };
                Poll::Ready(payload.map(|p| ActionOutput::new(p, correlation)))
            }
            State::Request(run) => {
                let out = std::task::ready!(Pin::new(run).poll(cx));
                *this = State::Done;
                Poll::Ready(out)
            }
            State::Done => panic!("`Serve` polled after it completed"),
        }
    }
}

impl ServiceRef {
    /// Runs action `action` for a call that came from another process, as a
    /// transport's serving side receives it: its parameters as JSON text (read
    /// once, by the action, into its own type), the correlation id and priority it
    /// gave, and its deadline if it gave one.
    ///
    /// What `self.action(action, params).correlation_id(id).priority(p)` (and
    /// `.timeout(t)`) then `.execute()` does, without a request built for the call:
    /// a declared action of a local service starts straight from these parts
    /// (admitted, its parameters read, then run by the caller's task when the
    /// service is idle, queued otherwise); anything else goes through a request.
    ///
    /// ```
    /// use koan::action::JsonText;
    /// # use koan::{ActionContext, Actions, Background, BackgroundService, BoxError, Host};
    /// # use koan::{Service, ServiceContext, ServiceOptions};
    /// # use std::sync::Arc;
    /// # struct Calc;
    /// # impl Service for Calc {
    /// #     type Kind = Background;
    /// #     fn options() -> ServiceOptions { ServiceOptions::named("Calc") }
    /// #     fn actions(a: &mut Actions<Self>) {
    /// #         a.action("double", |_s: Arc<Self>, n: u64, _cx: ActionContext| async move {
    /// #             Ok::<_, BoxError>(n * 2)
    /// #         });
    /// #     }
    /// # }
    /// # impl BackgroundService for Calc {
    /// #     async fn run(&self, cx: ServiceContext) -> Result<(), BoxError> { cx.cancelled().await; Ok(()) }
    /// # }
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), koan::Error> {
    /// # let host = Host::builder().instance(Calc).build()?.start();
    /// # host.started().await?;
    /// let calc = host.service("Calc");
    /// let out = calc.serve("double", JsonText::from(&b"21"[..]), "call-7", 0, None).await?;
    /// assert_eq!(out.correlation_id(), "call-7");
    /// assert_eq!(out.value::<u64>()?, 42);
    /// # host.shutdown();
    /// # host.wait().await.into_result()
    /// # }
    /// ```
    pub fn serve(
        &self,
        action: &str,
        params: JsonText,
        correlation_id: &str,
        priority: i32,
        timeout: Option<Duration>,
    ) -> Serve {
        let inner = &self.host.inner;
        let declared = find_local(inner, &self.target)
            .and_then(|cell| Some((cell, cell.spec.actions.get(action)?.index)));
        let Some((cell, index)) = declared else {
            let mut req = self
                .action(action, params)
                .correlation_id(correlation_id)
                .priority(priority)
                .for_served_call();
            if let Some(t) = timeout {
                req = req.timeout(t);
            }
            return Serve(State::Request(req.execute()));
        };
        // As `execute()` starts a single declared step (`start_step`): admitted and its
        // parameters read first, then run by this task when the service is idle,
        // queued otherwise.
        let correlation = Correlation::Given(Arc::from(correlation_id));
        let mut step = Step::new(StepAction::Declared(index), Payload::of(params));
        step.priority = priority;
        if timeout.is_some() {
            step.limits_mut().timeout = timeout;
        }
        let step = match prepare_declared(inner, cell, index, step, &correlation, None) {
            Ok(job) => start_job(inner, cell, job),
            Err(e) => StepFut::Ready(Some(Err(e))),
        };
        Serve(State::Step { step, correlation })
    }
}
