//! The shared ring of `Overflow::Wait` subscribers.
//!
//! With one channel per subscriber, an event to 100 subscribers is 100 channel
//! sends, 100 wake-ups and 100 reference counts on the envelope. Here the emitter
//! writes each event once; every waiting subscriber reads it with its own cursor,
//! runs its handlers on the borrowed envelope, and moves on. The emitter waits while
//! some subscriber is its buffer's length behind, so nothing is dropped and each
//! subscriber keeps the backpressure it asked for.
//!
//! Events are kept in blocks of [`BLOCK`] positions, each position set once: a
//! reader takes a block's reference count once per block and reads its events with
//! a plain load, where a lock per slot cost an atomic read-modify-write per delivery
//! on a line all readers share (B5's profile: 50 instructions of 257 per delivery).

use std::sync::{Arc, OnceLock};
use std::task::{Context, Poll, Waker};

use crate::sync::{AtomicU64, Mutex, MutexGuard, Notify, Ordering, RwLock, seqcst_fence};

use super::envelope::EventEnvelope;

/// One subscriber's place in the ring, on cache lines of its own: each reader
/// writes its cursor once per batch, and 100 of them side by side in 32-byte
/// allocations put two or more readers' cursors on one line (aligned to 128:
/// the adjacent-line prefetch pairs lines).
#[derive(Debug)]
#[repr(align(128))]
pub(crate) struct Cursor {
    /// The next position it will read.
    next: AtomicU64,
    /// How far the emitter may run ahead of it: the event in hand and its buffer.
    capacity: u64,
}

impl Cursor {
    /// The next position to read.
    pub(crate) fn next(&self) -> u64 {
        self.next.load(Ordering::Acquire)
    }
}

struct State {
    /// The block being written.
    block: Option<Arc<Block>>,
    cursors: Vec<Arc<Cursor>>,
    /// Readers waiting for the next event (swapped with `Ring::waking`'s empty list
    /// when woken, so neither list is allocated again).
    parked: Vec<Waker>,
    /// The emitter may write while the position is below this (a lower bound of
    /// every cursor's `next + capacity`, recomputed only when reached).
    limit: u64,
    closed: bool,
}

/// Positions per block (two in the loom models, so that they replace blocks).
const BLOCK: u64 = if cfg!(koan_loom) { 2 } else { 64 };

/// The events of `BLOCK` consecutive positions from `start`, each set once by the
/// emitter (under `state`); shared by reference count with the readers in it.
struct Block {
    start: u64,
    events: [OnceLock<Arc<EventEnvelope>>; BLOCK as usize],
}

/// One place in the ring of blocks: a block, until replaced by the one `blocks.len()`
/// blocks later.
type Slot = RwLock<Option<Arc<Block>>>;

/// A reader's block in hand: fetched once per block, then read without a lock.
#[derive(Default)]
pub(crate) struct Hold(Option<Arc<Block>>);

impl std::fmt::Debug for Hold {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_tuple("Hold")
            .field(&self.0.as_ref().map(|b| b.start))
            .finish()
    }
}

/// A bounded ring read by many subscribers, each at its own pace.
pub(crate) struct Ring {
    /// The positions a cursor's capacity may span.
    size: usize,
    /// The blocks of the last `size` positions, and one more: the emitter replaces a
    /// block only once every cursor has passed all of it (a cursor's capacity is at
    /// most `size`), so a reader finds the block of any position it has not passed.
    blocks: Box<[Slot]>,
    /// The position of the next event; written under `state`, read without it.
    tail: AtomicU64,
    state: Mutex<State>,
    /// The position waiting emitters want to write: the tail when they found no
    /// room (set under `state`; all waiting emitters want the same position, since
    /// nothing is written while one waits).
    wanted: AtomicU64,
    room: Notify,
    /// The list of parked readers an emitter is waking, outside `state`; its
    /// capacity goes back to `parked` on the next wake. (Taking the list out of
    /// `state` left `parked` without capacity: the readers that parked next grew it
    /// again, 1 to 128 wakers, and the emitter freed it — allocations on one core
    /// freed on another.)
    waking: Mutex<Vec<Waker>>,
}

impl std::fmt::Debug for Ring {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Ring")
            .field("size", &self.size)
            .field("tail", &self.tail.load(Ordering::Relaxed))
            .finish()
    }
}

impl Ring {
    /// A ring of at least `size` slots (a power of two).
    pub(crate) fn new(size: usize) -> Self {
        let size = size.max(2).next_power_of_two();
        Ring {
            size,
            blocks: (0..size.div_ceil(BLOCK as usize) + 1)
                .map(|_| RwLock::new(None))
                .collect(),
            tail: AtomicU64::new(0),
            state: Mutex::new(State {
                block: None,
                cursors: Vec::new(),
                parked: Vec::new(),
                limit: 0,
                closed: false,
            }),
            wanted: AtomicU64::new(u64::MAX),
            room: Notify::new(),
            waking: Mutex::new(Vec::new()),
        }
    }

    /// The number of slots: the largest buffer a cursor can have.
    pub(crate) fn size(&self) -> usize {
        self.size
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// A new reader with room for `buffer` events besides the one it handles (at
    /// most `size() - 1`): it sees every event written from now on.
    pub(crate) fn join(&self, buffer: usize) -> Arc<Cursor> {
        let mut st = self.lock();
        let cursor = Arc::new(Cursor {
            next: AtomicU64::new(self.tail.load(Ordering::Acquire)),
            capacity: (buffer.clamp(1, self.size() - 1) + 1) as u64,
        });
        st.cursors.push(Arc::clone(&cursor));
        // The new reader may be the tightest; recompute on the next write.
        st.limit = 0;
        cursor
    }

    /// A reader leaves: it no longer holds the emitter back.
    pub(crate) fn leave(&self, cursor: &Arc<Cursor>) {
        let mut st = self.lock();
        st.cursors.retain(|c| !Arc::ptr_eq(c, cursor));
        st.limit = 0;
        drop(st);
        self.room.notify_waiters();
    }

    /// No more events: readers finish what is written, then stop; waiting
    /// emitters give up.
    pub(crate) fn close(&self) {
        let parked = {
            let mut st = self.lock();
            st.closed = true;
            std::mem::take(&mut st.parked)
        };
        parked.into_iter().for_each(Waker::wake);
        self.room.notify_waiters();
    }

    /// Writes `env`, waiting while a reader is its buffer's length behind. `false`
    /// when the ring is closed.
    ///
    /// Each turn of the loop awaits `room` (a reader moving on, leaving, or the
    /// close): no slip in the comparisons below can make it spin without awaiting.
    pub(crate) async fn push(&self, env: Arc<EventEnvelope>) -> bool {
        loop {
            let room = self.room.notified();
            tokio::pin!(room);
            {
                let mut st = self.lock();
                if st.closed {
                    return false;
                }
                let pos = self.tail.load(Ordering::Relaxed);
                if pos >= st.limit {
                    st.limit = limit(&st.cursors, pos);
                }
                if pos >= st.limit {
                    // Full for some reader: wait until one moves on. Announced before
                    // the last look at the cursors, so a reader that moves now sees us.
                    self.wanted.store(pos, Ordering::SeqCst);
                    seqcst_fence();
                    room.as_mut().enable();
                    st.limit = limit(&st.cursors, pos);
                }
                if pos < st.limit {
                    self.write(&mut st, pos, env);
                    self.tail.store(pos + 1, Ordering::SeqCst);
                    self.wake(st);
                    return true;
                }
            }
            room.await;
        }
    }

    /// Wakes the parked readers, after `st` is released. Their list is swapped with
    /// the empty one kept in `waking` (both keep their capacity); another emitter
    /// waking at the same time takes the list out instead.
    fn wake(&self, mut st: MutexGuard<'_, State>) {
        if st.parked.is_empty() {
            return;
        }
        match self.waking.try_lock() {
            Ok(mut waking) => {
                std::mem::swap(&mut *waking, &mut st.parked);
                drop(st);
                waking.drain(..).for_each(Waker::wake);
            }
            Err(_) => {
                let parked = std::mem::take(&mut st.parked);
                drop(st);
                parked.into_iter().for_each(Waker::wake);
            }
        }
    }

    /// `Ready(Some(tail))` once an event at `pos` or later is written, `Ready(None)`
    /// once the ring is closed and `pos` is its end.
    pub(crate) fn poll_ready(&self, pos: u64, cx: &mut Context<'_>) -> Poll<Option<u64>> {
        let tail = self.tail.load(Ordering::Acquire);
        if tail > pos {
            return Poll::Ready(Some(tail));
        }
        let mut st = self.lock();
        let tail = self.tail.load(Ordering::Acquire);
        if tail > pos {
            return Poll::Ready(Some(tail));
        }
        if st.closed {
            return Poll::Ready(None);
        }
        // The reader task polls only when woken, and every write wakes and clears
        // the whole list: no duplicates worth a scan.
        st.parked.push(cx.waker().clone());
        Poll::Pending
    }

    /// Sets the event at `pos` (under `state`), in a new block at a block's start.
    fn write(&self, st: &mut State, pos: u64, env: Arc<EventEnvelope>) {
        let start = pos - pos % BLOCK;
        let block = match &st.block {
            Some(b) if b.start == start => b,
            _ => {
                let block = Arc::new(Block {
                    start,
                    events: std::array::from_fn(|_| OnceLock::new()),
                });
                // The block it replaces ended before every cursor (see `blocks`).
                *self.slot(start).write().unwrap_or_else(|p| p.into_inner()) =
                    Some(Arc::clone(&block));
                st.block.insert(block)
            }
        };
        let _ = block.events[(pos - start) as usize].set(env);
    }

    fn slot(&self, start: u64) -> &Slot {
        &self.blocks[((start / BLOCK) % self.blocks.len() as u64) as usize]
    }

    /// Runs `f` on the event at `pos` (borrowed: no reference count taken), from
    /// the block in `hold`, fetched when `pos` is past it (one reference count per
    /// block). `None` for a position not written or no longer kept.
    #[inline]
    pub(crate) fn with<R>(
        &self,
        hold: &mut Hold,
        pos: u64,
        f: impl FnOnce(&Arc<EventEnvelope>) -> R,
    ) -> Option<R> {
        let start = pos - pos % BLOCK;
        if hold.0.as_ref().is_none_or(|b| b.start != start) {
            self.fetch(hold, start);
        }
        let env = hold.0.as_ref()?.events[(pos - start) as usize].get()?;
        Some(f(env))
    }

    #[cold]
    #[inline(never)]
    fn fetch(&self, hold: &mut Hold, start: u64) {
        let block = self.slot(start).read().unwrap_or_else(|p| p.into_inner());
        hold.0 = block.as_ref().filter(|b| b.start == start).map(Arc::clone);
    }

    /// `cursor` has read everything before `next`. Wakes a waiting emitter only when
    /// this move is what it waited for from this reader (its limit passed the
    /// wanted position just now), not on every step of every reader.
    pub(crate) fn advance(&self, cursor: &Cursor, next: u64) {
        let before = cursor.next.swap(next, Ordering::SeqCst) + cursor.capacity;
        seqcst_fence();
        let wanted = self.wanted.load(Ordering::SeqCst);
        if before <= wanted && wanted < next + cursor.capacity {
            self.room.notify_waiters();
        }
    }
}

/// How far the emitter may write: the tightest `next + capacity` of the readers.
fn limit(cursors: &[Arc<Cursor>], pos: u64) -> u64 {
    cursors
        .iter()
        .map(|c| c.next.load(Ordering::SeqCst) + c.capacity)
        .min()
        .unwrap_or(pos + 1)
}

/// Loom models (`RUSTFLAGS="--cfg koan_loom" cargo test -p koan --lib --release loom`).
/// An event numbered `seq`, for the tests and the loom model.
#[cfg(test)]
fn envelope(seq: u64) -> Arc<EventEnvelope> {
    Arc::new(EventEnvelope::remote(
        "svc",
        "evt",
        None,
        chrono::DateTime::UNIX_EPOCH,
        seq,
        serde_json::Value::Null,
    ))
}

#[cfg(all(test, koan_loom))]
mod loom_model {
    use std::future::poll_fn;

    use super::*;

    /// A reader one event of buffer behind an emitter of five events into a ring of
    /// two (blocks of two: the first is replaced): it reads every event, in order,
    /// none overwritten before it was read, and the emitter (which must wait for it)
    /// is always woken.
    #[test]
    fn loom_a_slow_reader_gets_every_event_and_the_emitter_never_hangs() {
        loom::model(|| {
            let ring = Arc::new(Ring::new(2));
            let cursor = ring.join(1);
            let emitter = {
                let ring = Arc::clone(&ring);
                loom::thread::spawn(move || {
                    loom::future::block_on(async {
                        for seq in 0..5 {
                            assert!(ring.push(envelope(seq)).await);
                        }
                    })
                })
            };
            let mut seen = Vec::new();
            let mut hold = Hold::default();
            loom::future::block_on(async {
                while seen.len() < 5 {
                    let pos = cursor.next();
                    let tail = poll_fn(|cx| ring.poll_ready(pos, cx))
                        .await
                        .expect("the ring is open");
                    for p in pos..tail {
                        let seq = ring.with(&mut hold, p, |e| e.seq());
                        seen.push(seq.expect("an event is not overwritten before it is read"));
                        ring.advance(&cursor, p + 1);
                    }
                }
            });
            emitter.join().expect("the emitter ends");
            assert_eq!(seen, [0, 1, 2, 3, 4]);
        });
    }
}

#[cfg(all(test, not(koan_loom)))]
mod tests {
    use std::future::poll_fn;

    use super::*;

    /// Two readers' cursors never share a cache line (nor an adjacent pair).
    #[test]
    fn a_cursor_has_its_cache_lines_to_itself() {
        assert!(std::mem::align_of::<Cursor>() >= 128);
        let ring = Ring::new(64);
        let (a, b) = (ring.join(1), ring.join(1));
        let (a, b) = (Arc::as_ptr(&a) as usize, Arc::as_ptr(&b) as usize);
        assert!(a.abs_diff(b) >= 128, "cursors at {a:#x} and {b:#x}");
    }

    /// A ring of one block (and the spare) read by a reader that keeps up at its
    /// own pace: 1,000 events go through, every block replaced many times, each
    /// read once, in order, none missing.
    #[tokio::test]
    async fn events_go_through_many_blocks_in_order() {
        let ring = Arc::new(Ring::new(64));
        let cursor = ring.join(63);
        let emitter = {
            let ring = Arc::clone(&ring);
            tokio::spawn(async move {
                for seq in 0..1000u64 {
                    assert!(ring.push(envelope(seq)).await);
                }
            })
        };
        let (mut seen, mut hold) = (Vec::new(), Hold::default());
        while seen.len() < 1000 {
            let pos = cursor.next();
            let tail = poll_fn(|cx| ring.poll_ready(pos, cx))
                .await
                .expect("the ring is open");
            for p in pos..tail {
                seen.push(
                    ring.with(&mut hold, p, |e| e.seq())
                        .expect("kept until read"),
                );
            }
            // A reader moves on by the batch, and takes its time between batches.
            ring.advance(&cursor, tail);
            tokio::task::yield_now().await;
        }
        emitter.await.expect("the emitter ends");
        assert_eq!(seen, (0..1000).collect::<Vec<_>>());
    }
}
