//! The bounded priority mailbox of a service: higher priority first, FIFO within a
//! priority, `Busy` when full, and every queued job answered at shutdown.

use std::collections::VecDeque;
use std::future::Future;
use std::sync::{Arc, OnceLock};

use crate::sync::{
    AtomicBool, AtomicUsize, Mutex, MutexGuard, Notify, Ordering as AtomicOrdering, fence,
};

use crate::error::{Error, ErrorKind, Result};

mod claim;
mod job;
mod lane;
mod state;

pub(crate) use claim::Claim;
pub(crate) use job::{Job, Limit};
use lane::Lane;
use state::State;

/// A bounded priority queue; workers take from it with [`Mailbox::next`].
///
/// Jobs of priority 0, nearly every call, go through a lock-free ring whose ends
/// sit on lines of their own (the lane); the other priorities wait under the lock,
/// behind a count the worker reads first. With one locked queue, every queued call
/// had the callers' cores and the worker's pass the lock's line and the queue's head
/// back and forth (B3's profile: 70 % of `push`'s samples on the lock and that head).
/// With the lane, B3 went from 0.65–0.75× ractor to 0.72–0.86×
/// (docs/benchmarks/round-11.md).
///
/// The lane is a ring of [`LANE_SLOTS`](lane::LANE_SLOTS) made once, not a queue of
/// blocks: crossbeam's `SegQueue` allocated and zeroed a block of 4 KB every 31
/// jobs and freed it on the worker's thread (about 260 instructions a call, and
/// glibc consolidating its free chunks). A job of priority 0 finding the ring full,
/// or jobs waiting under the lock, queues under the lock; the lane's jobs, all
/// older, go first, so FIFO holds (B3: 0.82–0.90× ractor against 0.78–0.83× in
/// eight alternated runs; docs/benchmarks/round-16.md).
pub(crate) struct Mailbox {
    service: Arc<str>,
    /// The names of the service's declared actions, in its table's order: what a
    /// job's `action` names.
    actions: Box<[Arc<str>]>,
    /// The lane and the count of jobs waiting, made at the first push (10,000 idle
    /// services need neither).
    lane: OnceLock<Box<Lane>>,
    /// Jobs of every other priority, and the close.
    state: Mutex<State>,
    notify: Notify,
    capacity: usize,
    /// How many stored jobs' runs may wait past the capacity: the service's
    /// slots, the most its job runner holds at once (see `push`).
    stored_room: usize,
    /// Jobs under the lock: while none, a take looks at the lane alone, and a push of
    /// priority 0 may go to the lane.
    others: AtomicUsize,
    /// Set by `close`, under the lock: read there by pushes of other priorities, and
    /// without it by pushes to the lane and by takes.
    closed: AtomicBool,
    /// Calls still queued whose callers gave up on them at their deadlines and whose
    /// places were counted out then (see [`give_up`](Self::give_up)): at most the
    /// capacity, so that the jobs held beside the count stay bounded.
    freed: AtomicUsize,
    /// Workers waiting for a push, counted before their last look (see [`Asleep`]):
    /// a push or a take wakes one only while some wait. `Notify::notify_one` writes
    /// its line even when nobody waits, so under load, with the worker busy, every
    /// queued call had the callers' cores and the worker's pass that line back and
    /// forth for nothing; this count is written only as a worker falls asleep and
    /// wakes.
    sleepers: AtomicUsize,
}

/// A worker counted among the mailbox's sleepers while it lives: made before the
/// worker's last look for a job, dropped once it stops waiting (or its future is
/// dropped). Paired with the push's look at the count, after its job is in (both
/// sequentially consistent, with a fence on each side): either that look sees this
/// worker, and wakes it, or the worker's last look sees the job.
struct Asleep<'a>(&'a AtomicUsize);

impl<'a> Asleep<'a> {
    fn new(sleepers: &'a AtomicUsize) -> Self {
        sleepers.fetch_add(1, AtomicOrdering::SeqCst);
        fence(AtomicOrdering::SeqCst);
        Asleep(sleepers)
    }
}

impl Drop for Asleep<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, AtomicOrdering::SeqCst);
    }
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
    pub(crate) fn new(
        service: Arc<str>,
        actions: Box<[Arc<str>]>,
        capacity: usize,
        stored_room: usize,
    ) -> Self {
        let mailbox = Mailbox {
            actions,
            lane: OnceLock::new(),
            state: Mutex::new(State::default()),
            notify: Notify::new(),
            capacity: capacity.max(1),
            stored_room,
            others: AtomicUsize::new(0),
            closed: AtomicBool::new(false),
            freed: AtomicUsize::new(0),
            sleepers: AtomicUsize::new(0),
            service,
        };
        // Under loom, made at once: loom does not see the `OnceLock`'s own
        // synchronization, so a count made by one model thread's first push and read
        // by another's would look unordered to it.
        #[cfg(koan_loom)]
        mailbox.lane();
        mailbox
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Jobs waiting.
    pub(crate) fn len(&self) -> usize {
        self.lane
            .get()
            .map_or(0, |lane| lane.len.load(AtomicOrdering::SeqCst))
    }

    /// The lane, made at the first push.
    fn lane(&self) -> &Lane {
        self.lane.get_or_init(|| Box::new(Lane::new(self.capacity)))
    }

    /// Counts `n` jobs out (taken, refused or handed back; each was counted in by
    /// `reserve`, which made the lane).
    fn count_out(&self, n: usize) -> usize {
        match self.lane.get() {
            Some(lane) if n > 0 => lane.len.fetch_sub(n, AtomicOrdering::SeqCst) - n,
            _ => self.len(),
        }
    }

    fn is_closed(&self) -> bool {
        self.closed.load(AtomicOrdering::SeqCst)
    }

    /// Accepts `job`, or refuses it with `Busy` / `ShuttingDown` at once.
    /// A refusal is counted in `koan_actions_total` and returned for the caller to
    /// answer with (the job itself then stays silent).
    ///
    /// A stored job's run is not refused `Busy` while its runner's share of room
    /// past the capacity (`stored_room`, the service's slots: the most runs it
    /// holds at once) is not taken: its work was accepted already. Refused, a
    /// cluster job used up an attempt each time callers kept the mailbox full,
    /// and went dead without its handler ever running (a probe: answered 202,
    /// dead in 3 s). Bounded, so that no caller grows the mailbox through
    /// `ActionRequest::as_job` (a review).
    pub(crate) fn push(&self, job: Job) -> Result<()> {
        if self.is_closed() {
            let e = self.shutting_down(&job);
            return self.refuse(job, e);
        }
        let room = self.reserve() || (job.job.is_some() && self.reserve_past_capacity());
        if !room {
            let e = Error::new(
                ErrorKind::Busy,
                format!(
                    "service `{}` is busy: its mailbox holds {} actions (its capacity); retry later",
                    self.service, self.capacity
                ),
            );
            return self.refuse(job, e);
        }
        // Into the lane only while nothing waits under the lock: a job of priority 0
        // there (the lane was full) stays behind the lane's, and so must this one.
        let job = if job.priority == 0 && self.others.load(AtomicOrdering::SeqCst) == 0 {
            self.lane().jobs.push(job).err()
        } else {
            Some(job)
        };
        match job {
            None => {
                // Either the close, which sets the flag before it empties the lane, sees
                // this job, or this push sees the flag and empties the lane itself: a job
                // is never left behind in a closed mailbox. (The lane's own operations
                // are not sequentially consistent; these fences order them.)
                fence(AtomicOrdering::SeqCst);
                if self.is_closed() {
                    // Each one answers `ShuttingDown` as it is dropped.
                    drop(self.drain_lane());
                    return Ok(());
                }
            }
            Some(job) => {
                let mut st = self.lock();
                // Set under this lock by `close`.
                if self.is_closed() {
                    drop(st);
                    self.count_out(1);
                    let e = self.shutting_down(&job);
                    return self.refuse(job, e);
                }
                st.push(job);
                self.others.store(st.len, AtomicOrdering::SeqCst);
                drop(st);
                fence(AtomicOrdering::SeqCst);
            }
        }
        // After the job is in and the fence (above, or the lane's): see `Asleep`.
        self.wake_one();
        Ok(())
    }

    /// Wakes one waiting worker, if any waits (see `sleepers`).
    fn wake_one(&self) {
        if self.sleepers.load(AtomicOrdering::SeqCst) > 0 {
            self.notify.notify_one();
        }
    }

    /// Counts a refusal in `koan_actions_total` and returns it for the caller to
    /// answer with (the job itself then stays silent).
    fn refuse(&self, mut job: Job, e: Error) -> Result<()> {
        job.answered = true;
        super::metrics::rejected(&self.service, self.action_of(&job), e.kind());
        Err(e)
    }

    fn shutting_down(&self, job: &Job) -> Error {
        Error::shutting_down(&format!(
            "action `{}` of `{}`",
            self.action_of(job),
            self.service
        ))
    }

    /// The declared name of `job`'s action.
    fn action_of(&self, job: &Job) -> &str {
        self.actions
            .get(job.action)
            .map_or(super::metrics::UNKNOWN, |n| n)
    }

    /// Counts one more job in, unless the mailbox is full.
    fn reserve(&self) -> bool {
        self.lane()
            .len
            .fetch_update(AtomicOrdering::SeqCst, AtomicOrdering::SeqCst, |n| {
                (n < self.capacity).then_some(n + 1)
            })
            .is_ok()
    }

    /// Counts one job in past the capacity, within `stored_room` (a stored job's
    /// run: see `push`).
    #[cold]
    fn reserve_past_capacity(&self) -> bool {
        let most = self.capacity.saturating_add(self.stored_room);
        self.lane()
            .len
            .fetch_update(AtomicOrdering::SeqCst, AtomicOrdering::SeqCst, |n| {
                (n < most).then_some(n + 1)
            })
            .is_ok()
    }

    /// The lane's first job, if any.
    fn lane_pop(&self) -> Option<Job> {
        self.lane.get()?.jobs.pop()
    }

    /// Empties the lane, counting its jobs out.
    fn drain_lane(&self) -> Vec<Job> {
        let jobs: Vec<Job> = std::iter::from_fn(|| self.lane_pop()).collect();
        self.count_out(self.leaving_all(&jobs));
        jobs
    }

    /// Waits for a job and for the slot to run it in: `slot()` is awaited first, and
    /// the job taken only once it is held, so a job leaves the queue when it can run
    /// and a later, higher-priority job still goes first. `None` once the mailbox is
    /// closed and empty.
    ///
    /// A take that finds nothing (another worker was first, or a push counted its job
    /// in but has not put it in the lane yet) waits for the next push or the close,
    /// armed before the take, instead of asking [`ready`](Self::ready) again: a
    /// worker never loops without awaiting, whatever the count says.
    pub(crate) async fn next<S, F>(&self, mut slot: impl FnMut() -> F) -> Option<(Job, S)>
    where
        F: Future<Output = S>,
    {
        while self.ready().await {
            let held = slot().await;
            // Completes on a `notify_one` after it is polled (or on one left over),
            // and on any `close` after this line. Creating it costs one atomic load.
            let pushed_or_closed = self.notify.notified();
            if self.is_closed() {
                // Closed (and so empty) while this worker waited for its slot, or
                // seen late by `ready`'s look: no later close wakes it.
                return None;
            }
            if let Some(job) = self.take() {
                return Some((job, held));
            }
            // Counted asleep before the last look: a push whose job this look
            // misses (it counted the job in but had not put it in yet) sees this
            // worker and wakes it.
            let asleep = Asleep::new(&self.sleepers);
            if let Some(job) = self.take() {
                return Some((job, held));
            }
            drop(held);
            pushed_or_closed.await;
            drop(asleep);
        }
        None
    }

    /// The next job for a worker that still holds the slot of the run it just ended:
    /// taken at once if one waits (as [`next`](Self::next) would after giving the
    /// slot back and taking it again), `None` if none does or the mailbox is closed.
    pub(crate) fn next_in_slot(&self) -> Option<Job> {
        // No look at the count first: the take looks at the lane, and the count's
        // line is then written once (by the take) instead of read, then written.
        if self.is_closed() {
            return None;
        }
        self.take()
    }

    /// Waits until a job is queued (`true`) or the mailbox is closed and empty
    /// (`false`). Takes nothing.
    async fn ready(&self) -> bool {
        // Work already waiting needs no wake-up registration.
        if !self.is_empty() {
            return true;
        }
        let _asleep = Asleep::new(&self.sleepers);
        loop {
            let notified = self.notify.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            if !self.is_empty() {
                return true;
            }
            if self.is_closed() {
                return false;
            }
            notified.await;
        }
    }

    /// Whether nothing waits: a caller may then run an action itself (see
    /// `action::inline`) without overtaking queued work.
    pub(crate) fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The highest-priority job, if any: the lane's first unless a job of a higher
    /// priority waits under the lock.
    fn take(&self) -> Option<Job> {
        let job = if self.others.load(AtomicOrdering::SeqCst) == 0 {
            self.lane_pop()
        } else {
            let mut st = self.lock();
            let job = match st.top_priority() {
                Some(p) if p > 0 => st.pop(),
                _ => self.lane_pop().or_else(|| st.pop()),
            };
            self.others.store(st.len, AtomicOrdering::SeqCst);
            job
        }?;
        let left = self.count_out(self.leaving(&job));
        if left > 0 {
            // Let another worker, if one waits, pick up the rest.
            self.wake_one();
        }
        Some(job)
    }

    /// Hands back the calls of waiting callers so each can be answered, leaving
    /// stored jobs' runs queued (the mailbox stays open for them while the host
    /// stops; those of the lane go back behind any pushed meanwhile).
    pub(crate) fn take_callers(&self) -> Vec<Job> {
        let mut st = self.lock();
        let mut taken = Vec::new();
        for (_, q) in st.queues.iter_mut() {
            let (calls, runs): (VecDeque<Job>, _) =
                std::mem::take(q).into_iter().partition(|j| j.job.is_none());
            *q = runs;
            taken.extend(calls);
        }
        st.len -= taken.len();
        self.others.store(st.len, AtomicOrdering::SeqCst);
        if let Some(lane) = self.lane.get() {
            for job in std::iter::from_fn(|| lane.jobs.pop()).collect::<Vec<_>>() {
                if job.job.is_none() {
                    taken.push(job);
                } else if let Err(job) = lane.jobs.push(job) {
                    // Pushes filled the lane meanwhile: behind them, under the lock.
                    st.push(job);
                }
            }
            self.others.store(st.len, AtomicOrdering::SeqCst);
        }
        drop(st);
        self.count_out(self.leaving_all(&taken));
        taken
    }

    /// Refuses new jobs and hands back every queued one, so each can be answered.
    pub(crate) fn close(&self) -> Vec<Job> {
        let mut drained: Vec<Job> = {
            let mut st = self.lock();
            self.closed.store(true, AtomicOrdering::SeqCst);
            st.len = 0;
            self.others.store(0, AtomicOrdering::SeqCst);
            let jobs: Vec<Job> = std::mem::take(&mut st.queues)
                .into_iter()
                .flat_map(|(_, q)| q)
                .collect();
            self.count_out(self.leaving_all(&jobs));
            jobs
        };
        // After the flag (see `push`).
        fence(AtomicOrdering::SeqCst);
        drained.extend(self.drain_lane());
        self.notify.notify_waiters();
        drained
    }
}

impl Drop for Mailbox {
    /// Jobs still queued when the mailbox goes (its service dropped without a
    /// shutdown) each answer `ShuttingDown`, naming their action.
    fn drop(&mut self) {
        for mut job in self.close() {
            job.abandon(Some(self.action_of(&job)));
        }
    }
}

#[cfg(all(test, koan_loom))]
pub(crate) mod loom_model;

#[cfg(all(test, not(koan_loom)))]
mod size_tests {
    /// A `Job` is moved several times on its way to its run; within 128 bytes
    /// (eight 16-byte moves) those moves are inline, not calls to `memcpy`.
    #[test]
    fn a_job_fits_in_128_bytes() {
        assert!(std::mem::size_of::<super::Job>() <= 128);
    }
}
