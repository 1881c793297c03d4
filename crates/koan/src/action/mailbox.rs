//! The bounded priority mailbox of a service: higher priority first, FIFO within a
//! priority, `Busy` when full, and every queued job answered at shutdown.

use std::any::Any;
use std::collections::VecDeque;
use std::future::Future;
use std::sync::Arc;

use tokio::sync::oneshot;
use tokio::time::Instant;

use crate::sync::{AtomicUsize, Mutex, MutexGuard, Notify, Ordering as AtomicOrdering};

use super::table::ActionEntry;
use crate::error::{Error, ErrorKind, Result};
use crate::payload::Payload;

/// One accepted action, waiting for a worker.
pub(crate) struct Job {
    pub(crate) entry: Arc<ActionEntry>,
    pub(crate) params: Box<dyn Any + Send>,
    pub(crate) priority: i32,
    /// The call's timeout is `deadline - enqueued_at` (a job is accepted at
    /// `enqueued_at`, its deadline set from then): not kept apart, which keeps a `Job`
    /// within 128 bytes, moved inline rather than by a call to `memcpy`.
    pub(crate) deadline: Option<Instant>,
    pub(crate) correlation: super::correlation::Correlation,
    /// Set when this is the run of a stored job.
    pub(crate) job: Option<super::context::JobMeta>,
    /// The caller's token that stops the run (`ActionRequest::cancel_on`).
    pub(crate) cancel_on: Option<tokio_util::sync::CancellationToken>,
    pub(crate) reply: Option<oneshot::Sender<Result<Payload>>>,
    pub(crate) enqueued_at: Instant,
    /// Set once the job's outcome went out; a job dropped without one (its worker
    /// aborted at the end of the grace period) is recorded as `ShuttingDown`.
    pub(crate) answered: bool,
}

impl Job {
    /// The answer when its deadline passes, queued or running.
    pub(crate) fn timeout_error(&self, service: &str) -> Error {
        let limit = self
            .deadline
            .map(|d| crate::util::fmt_duration(d.saturating_duration_since(self.enqueued_at)))
            .unwrap_or_default();
        Error::new(
            ErrorKind::Timeout,
            format!(
                "action `{}` of `{service}` did not finish within its timeout of {limit} (queue time included)",
                self.entry.name
            ),
        )
    }
}

impl Drop for Job {
    fn drop(&mut self) {
        if self.answered {
            return;
        }
        let what = match &self.job {
            Some(j) => format!("action `{}` of job {}", self.entry.name, j.info.id),
            None => format!("action `{}`", self.entry.name),
        };
        let e = Error::shutting_down(&what);
        // Its caller learns why, instead of finding the answer channel closed.
        if let Some(reply) = self.reply.take() {
            let _ = reply.send(Err(e));
        }
    }
}

/// Jobs by priority: one FIFO queue per priority, highest first, so a job is moved
/// in once and out once and equal priorities keep their order.
#[derive(Default)]
struct State {
    /// Sorted by priority, highest first.
    queues: Vec<(i32, VecDeque<Job>)>,
    len: usize,
    closed: bool,
}

/// Empty queues of rarer priorities are dropped once there are more than this many.
const KEEP_QUEUES: usize = 8;

impl State {
    fn push(&mut self, job: Job) {
        let p = job.priority;
        let i = match self.queues.binary_search_by(|(q, _)| p.cmp(q)) {
            Ok(i) => i,
            Err(i) => {
                self.queues.insert(i, (p, VecDeque::new()));
                i
            }
        };
        self.queues[i].1.push_back(job);
        self.len += 1;
    }

    fn pop(&mut self) -> Option<Job> {
        let i = self.queues.iter().position(|(_, q)| !q.is_empty())?;
        let job = self.queues[i].1.pop_front()?;
        self.len -= 1;
        if self.queues[i].1.is_empty() && self.queues.len() > KEEP_QUEUES {
            self.queues.remove(i);
        }
        Some(job)
    }
}

/// A bounded priority queue; workers take from it with [`Mailbox::next`].
pub(crate) struct Mailbox {
    service: Arc<str>,
    state: Mutex<State>,
    notify: Notify,
    capacity: usize,
    len: AtomicUsize,
    /// `koan_queue_depth{service}` through the `metrics` facade.
    depth: metrics::Gauge,
}

impl std::fmt::Debug for Mailbox {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Mailbox")
            .field("service", &self.service)
            .field("len", &self.len())
            .field("capacity", &self.capacity)
            .finish()
    }
}

impl Mailbox {
    pub(crate) fn new(service: Arc<str>, capacity: usize) -> Self {
        Mailbox {
            state: Mutex::new(State::default()),
            notify: Notify::new(),
            capacity: capacity.max(1),
            len: AtomicUsize::new(0),
            depth: metrics::gauge!("koan_queue_depth", "service" => service.to_string()),
            service,
        }
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Jobs waiting.
    pub(crate) fn len(&self) -> usize {
        self.len.load(AtomicOrdering::Relaxed)
    }

    /// Accepts `job`, or refuses it with `Busy` / `ShuttingDown` at once.
    /// A refusal is counted in `koan_actions_total` and returned for the caller to
    /// answer with (the job itself then stays silent).
    pub(crate) fn push(&self, mut job: Job) -> Result<()> {
        let mut st = self.lock();
        let refused = if st.closed {
            Some(Error::shutting_down(&format!(
                "action `{}` of `{}`",
                job.entry.name, self.service
            )))
        } else if st.len >= self.capacity {
            Some(Error::new(
                ErrorKind::Busy,
                format!(
                    "service `{}` is busy: its mailbox holds {} actions (its capacity); retry later",
                    self.service, self.capacity
                ),
            ))
        } else {
            None
        };
        if let Some(e) = refused {
            drop(st);
            job.answered = true;
            super::metrics::rejected(&self.service, &job.entry.name, e.kind());
            return Err(e);
        }
        st.push(job);
        let len = st.len;
        // Under the lock, as every write of `len`: stored after it, a push's count
        // could land after a worker's emptier one, leaving `len > 0` on an empty queue
        // (`ready` would then report work that is not there, even past `close`).
        self.len.store(len, AtomicOrdering::Relaxed);
        drop(st);
        self.depth.set(len as f64);
        self.notify.notify_one();
        Ok(())
    }

    /// Waits for a job and for the slot to run it in: `slot()` is awaited first, and
    /// the job taken only once it is held, so a job leaves the queue when it can run
    /// and a later, higher-priority job still goes first. `None` once the mailbox is
    /// closed and empty.
    ///
    /// A take that finds nothing (another worker was first) waits for the next push
    /// or the close, armed before the take, instead of asking [`ready`](Self::ready)
    /// again: a worker never loops without awaiting, whatever the count says.
    pub(crate) async fn next<S, F>(&self, mut slot: impl FnMut() -> F) -> Option<(Job, S)>
    where
        F: Future<Output = S>,
    {
        while self.ready().await {
            let held = slot().await;
            // Completes on a `notify_one` after it is polled (or on one left over),
            // and on any `close` after this line. Creating it costs one atomic load.
            let pushed_or_closed = self.notify.notified();
            let taken = {
                let st = self.lock();
                if st.closed {
                    // Closed (and so empty) while this worker waited for its slot, or
                    // seen late by `ready`'s lock-free look: no later close wakes it.
                    return None;
                }
                self.take(st)
            };
            match taken {
                Some(job) => return Some((job, held)),
                None => {
                    drop(held);
                    pushed_or_closed.await;
                }
            }
        }
        None
    }

    /// The next job for a worker that still holds the slot of the run it just ended:
    /// taken at once if one waits (as [`next`](Self::next) would after giving the
    /// slot back and taking it again), `None` if none does or the mailbox is closed.
    pub(crate) fn next_in_slot(&self) -> Option<Job> {
        if self.is_empty() {
            return None;
        }
        let st = self.lock();
        if st.closed {
            return None;
        }
        self.take(st)
    }

    /// Waits until a job is queued (`true`) or the mailbox is closed and empty
    /// (`false`). Takes nothing.
    async fn ready(&self) -> bool {
        // Work already waiting needs no wake-up registration.
        if !self.is_empty() {
            return true;
        }
        loop {
            let notified = self.notify.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            {
                let st = self.lock();
                if st.len > 0 {
                    return true;
                }
                if st.closed {
                    return false;
                }
            }
            notified.await;
        }
    }

    /// Whether nothing waits: a caller may then run an action itself (see
    /// `action::inline`) without overtaking queued work.
    pub(crate) fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The highest-priority job, if any, under the lock `st` (released here).
    fn take(&self, mut st: MutexGuard<'_, State>) -> Option<Job> {
        let Some(job) = st.pop() else {
            // The count and the queues agree. A count left above zero with nothing
            // queued would have `ready` report work forever, and callers queue behind
            // it instead of running their action themselves.
            debug_assert_eq!(
                st.len, 0,
                "the mailbox of `{}` counts jobs it does not hold",
                self.service
            );
            return None;
        };
        let len = st.len;
        // Under the lock, as in `push`.
        self.len.store(len, AtomicOrdering::Relaxed);
        drop(st);
        self.depth.set(len as f64);
        if len > 0 {
            // Let another worker pick up the rest.
            self.notify.notify_one();
        }
        Some(job)
    }

    /// Refuses new jobs and hands back every queued one, so each can be answered.
    /// Takes out the calls of waiting callers, leaving stored jobs' runs queued (the
    /// mailbox stays open for them while the host stops).
    pub(crate) fn take_callers(&self) -> Vec<Job> {
        let taken: Vec<Job> = {
            let mut st = self.lock();
            let mut taken = Vec::new();
            for (_, q) in st.queues.iter_mut() {
                let (calls, runs): (std::collections::VecDeque<Job>, _) =
                    std::mem::take(q).into_iter().partition(|j| j.job.is_none());
                *q = runs;
                taken.extend(calls);
            }
            st.len -= taken.len();
            let left = st.len;
            self.len.store(left, AtomicOrdering::Relaxed);
            self.depth.set(left as f64);
            taken
        };
        taken
    }

    pub(crate) fn close(&self) -> Vec<Job> {
        let drained: Vec<Job> = {
            let mut st = self.lock();
            st.closed = true;
            st.len = 0;
            self.len.store(0, AtomicOrdering::Relaxed);
            std::mem::take(&mut st.queues)
                .into_iter()
                .flat_map(|(_, q)| q)
                .collect()
        };
        self.depth.set(0.0);
        self.notify.notify_waiters();
        drained
    }
}

/// Loom models (`RUSTFLAGS="--cfg koan_loom" cargo test -p koan --lib loom`): the
/// hand-off between pushes, two workers taking with [`Mailbox::next`], and the close.
#[cfg(all(test, koan_loom))]
pub(crate) mod loom_model {
    use std::sync::Arc;

    use loom::sync::mpsc;

    use super::{Job, Mailbox};
    use crate::action::correlation::Correlation;
    use crate::action::table::ActionEntry;

    /// A job whose priority is its id (it never runs: the model only moves it).
    pub(crate) fn job(id: i32) -> Job {
        let entry = ActionEntry {
            name: Arc::from("noop"),
            index: 0,
            description: None,
            params_schema: serde_json::Value::Null,
            decode: |_, _| Ok(Box::new(())),
            call: Box::new(|_, _| Box::pin(async { unreachable!("the model runs no action") })),
            metrics: std::sync::OnceLock::new(),
            retry: crate::job::RetryPolicy::default(),
            idempotent: false,
        };
        Job {
            entry: Arc::new(entry),
            params: Box::new(()),
            priority: id,
            deadline: None,
            correlation: Correlation::Generated(0),
            job: None,
            cancel_on: None,
            reply: None,
            enqueued_at: tokio::time::Instant::now(),
            answered: true,
        }
    }

    /// A worker: reports the id of every job it takes, and returns once closed.
    fn worker(mailbox: &Arc<Mailbox>, taken: &mpsc::Sender<i32>) -> loom::thread::JoinHandle<()> {
        let (mailbox, taken) = (Arc::clone(mailbox), taken.clone());
        loom::thread::spawn(move || {
            loom::future::block_on(async {
                while let Some((job, ())) = mailbox.next(|| async {}).await {
                    taken.send(job.priority).expect("the model listens");
                }
            })
        })
    }

    /// A job pushed while two workers wait is taken once (a lost wake-up would
    /// leave both asleep on it: loom reports the deadlock), also when the second
    /// worker saw it queued and then finds nothing; the close then wakes both idle
    /// workers, whichever way they wait, and they return.
    #[test]
    fn loom_a_push_is_taken_once_and_close_wakes_both_workers() {
        // Three threads: at most two preemptions (it already finds a worker left
        // asleep past the close) keep it to seconds.
        let mut model = loom::model::Builder::new();
        model.preemption_bound = Some(model.preemption_bound.map_or(2, |b| b.min(2)));
        model.check(|| {
            let mailbox = Arc::new(Mailbox::new(Arc::from("svc"), 4));
            let (tx, rx) = mpsc::channel();
            let workers = [worker(&mailbox, &tx), worker(&mailbox, &tx)];
            mailbox.push(job(1)).expect("room for it");
            assert_eq!(rx.recv().expect("the job is taken"), 1);
            assert!(mailbox.close().is_empty());
            for w in workers {
                w.join().expect("a worker returns after the close");
            }
            assert!(rx.try_recv().is_err(), "no job taken twice");
        });
    }

    /// A close racing a push: the job is either taken by the worker or handed back
    /// by the close, never both and never lost, and the worker returns.
    #[test]
    fn loom_a_job_pushed_before_the_close_is_taken_or_handed_back() {
        loom::model(|| {
            let mailbox = Arc::new(Mailbox::new(Arc::from("svc"), 4));
            let (tx, rx) = mpsc::channel();
            let w = worker(&mailbox, &tx);
            mailbox.push(job(1)).expect("room for it");
            let handed_back = mailbox.close().len();
            w.join().expect("the worker returns after the close");
            let taken = usize::from(rx.try_recv().is_ok());
            assert_eq!(taken + handed_back, 1);
        });
    }
}

#[cfg(all(test, not(koan_loom)))]
mod size_tests {
    /// A `Job` is moved several times on its way to its run; within 128 bytes
    /// (eight 16-byte moves) those moves are inline, not calls to `memcpy`.
    #[test]
    fn a_job_fits_in_128_bytes() {
        assert!(std::mem::size_of::<super::Job>() <= 128);
    }
}
