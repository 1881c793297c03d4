//! A service's last runs: a ring of slots, each a run's words, that a periodic
//! service fills from its first run on. The slots are reachable without the
//! history's lock, so that the periodic driver's warm-up can load the next one
//! before its turn's first locked instruction (B6: the slot's store, cold since the
//! ring last came round, was the largest stall a run of koan's own still paid).
//! Written and read under the lock; [`History::touch`] only loads.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicI64, AtomicU32, AtomicU64, AtomicUsize, Ordering::Relaxed};
use std::sync::{Mutex, OnceLock};

use super::status::{RunStamp, RunText, StampWords};

/// A service's runs, the newest `capacity` kept.
#[derive(Debug)]
pub(crate) struct History {
    capacity: usize,
    kept: Mutex<Kept>,
    /// The ring, made at a periodic run (the first one, all at once: grown as runs
    /// came, each growth copied the history and cost a run ten cache misses). Not
    /// for every service: a background service records a run when it stops, and
    /// 100,000 of them reserving a whole history made 280 MB (B6's shutdown took
    /// 25 % longer); theirs are kept in [`Kept::Early`] until a periodic run comes.
    ring: OnceLock<Box<[Slot]>>,
    /// The slot the next run goes to: written under the lock, loaded without it
    /// only by `touch`.
    next: AtomicUsize,
}

/// What the lock keeps: the runs themselves before the ring is made, and what the
/// ring's slots do not hold after.
#[derive(Debug)]
enum Kept {
    /// The runs kept before the ring was made, oldest first.
    Early(VecDeque<RunStamp>),
    /// The ring is made.
    Ring {
        /// Runs written to the ring so far (the number of the next one).
        written: usize,
        /// The messages of the failed runs it keeps, by run number, oldest first.
        texts: VecDeque<(usize, RunText)>,
    },
}

/// One run's words, a stamp without its text. Half a line, aligned to it, so no
/// slot straddles two lines.
#[derive(Debug, Default)]
#[repr(align(32))]
struct Slot {
    tag: AtomicU32,
    started: AtomicI64,
    duration_ms: AtomicU64,
}

impl Slot {
    fn store(&self, w: StampWords) {
        self.tag.store(w.tag, Relaxed);
        self.started.store(w.started, Relaxed);
        self.duration_ms.store(w.duration_ms, Relaxed);
    }

    fn load(&self) -> StampWords {
        StampWords {
            tag: self.tag.load(Relaxed),
            started: self.started.load(Relaxed),
            duration_ms: self.duration_ms.load(Relaxed),
        }
    }
}

impl History {
    pub(crate) fn new(capacity: usize) -> Self {
        History {
            capacity,
            kept: Mutex::new(Kept::Early(VecDeque::new())),
            ring: OnceLock::new(),
            next: AtomicUsize::new(0),
        }
    }

    /// How many runs it keeps.
    pub(crate) fn capacity(&self) -> usize {
        self.capacity
    }

    /// Keeps a finished run (forgetting the oldest past the capacity); says whether
    /// it kept it (a history of capacity 0 keeps none). `periodic`: a periodic run,
    /// whose service will fill its history soon, so it makes the ring.
    pub(crate) fn push(&self, stamp: &RunStamp, periodic: bool) -> bool {
        if self.capacity == 0 {
            return false;
        }
        let Ok(mut kept) = self.kept.lock() else {
            return false;
        };
        if let Kept::Early(early) = &mut *kept {
            if !periodic {
                if early.len() >= self.capacity {
                    early.pop_front();
                }
                early.push_back(stamp.clone());
                return true;
            }
            *kept = self.make_ring(std::mem::take(early));
        }
        let (Some(ring), Kept::Ring { written, texts }) = (self.ring.get(), &mut *kept) else {
            return false;
        };
        let n = *written;
        let slot = self.next.load(Relaxed);
        let (words, text) = stamp.words();
        if let Some(s) = ring.get(slot) {
            s.store(words);
        }
        // The slot's previous run's message, if it had one, goes with it.
        while texts.front().is_some_and(|(k, _)| k + self.capacity <= n) {
            texts.pop_front();
        }
        if let Some(text) = text {
            texts.push_back((n, text.clone()));
        }
        *written = n + 1;
        self.next.store(
            if slot + 1 == self.capacity {
                0
            } else {
                slot + 1
            },
            Relaxed,
        );
        true
    }

    /// Makes the ring, with the runs kept so far in its first slots; what the lock
    /// keeps from then on.
    fn make_ring(&self, early: VecDeque<RunStamp>) -> Kept {
        let ring: Box<[Slot]> = (0..self.capacity).map(|_| Slot::default()).collect();
        let mut texts = VecDeque::new();
        let written = early.len();
        for (n, (stamp, slot)) in early.iter().zip(ring.iter()).enumerate() {
            let (words, text) = stamp.words();
            slot.store(words);
            if let Some(text) = text {
                texts.push_back((n, text.clone()));
            }
        }
        self.next.store(written % self.capacity, Relaxed);
        // Under the lock, the only place it is set.
        let _ = self.ring.set(ring);
        Kept::Ring { written, texts }
    }

    /// Loads the word of its lock and of the slot the next run goes to, and nothing
    /// else (see [`StatusBoard::touch`](super::board::StatusBoard::touch)). Not
    /// redundant with the slot the driver keeps ([`History::next_word`]): reaching
    /// the slot here loads the ring's pointer and index, which the push reads too
    /// (without this load, B6's CPU per run was 7 % higher: 1.33 against 1.25 µs,
    /// higher in 11 of 12 alternated windows).
    #[inline]
    pub(crate) fn touch(&self) -> (bool, u32) {
        let slot = self
            .ring
            .get()
            .and_then(|ring| ring.get(self.next.load(Relaxed)))
            .map_or(0, |s| s.tag.load(Relaxed));
        (self.kept.is_poisoned(), slot)
    }

    /// The first word of the slot the next run goes to, once the ring is made: what
    /// the periodic driver keeps after a run, to load on its next wake-up without
    /// the two loads (the ring's and its index's) this word is found behind. Wrong
    /// only if another run comes first (a caller's), and then a wasted load.
    pub(crate) fn next_word(&self) -> Option<&AtomicU32> {
        let ring = self.ring.get()?;
        ring.get(self.next.load(Relaxed)).map(|s| &s.tag)
    }

    /// The runs kept, newest first.
    pub(crate) fn newest_first(&self) -> Vec<RunStamp> {
        let Ok(kept) = self.kept.lock() else {
            return Vec::new();
        };
        match &*kept {
            Kept::Early(early) => early.iter().rev().cloned().collect(),
            Kept::Ring { written, texts } => {
                let from = written.saturating_sub(self.capacity);
                (from..*written)
                    .rev()
                    .map(|n| self.stamp(texts, n))
                    .collect()
            }
        }
    }

    /// The newest run kept.
    pub(crate) fn newest(&self) -> Option<RunStamp> {
        let kept = self.kept.lock().ok()?;
        match &*kept {
            Kept::Early(early) => early.back().cloned(),
            Kept::Ring { written, texts } => Some(self.stamp(texts, written.checked_sub(1)?)),
        }
    }

    /// Run `n` of the ring, with its message (`texts`: the lock's).
    fn stamp(&self, texts: &VecDeque<(usize, RunText)>, n: usize) -> RunStamp {
        let words = self
            .ring
            .get()
            .and_then(|ring| ring.get(n % self.capacity))
            .map(Slot::load)
            .unwrap_or_default();
        let text = texts
            .binary_search_by_key(&n, |(k, _)| *k)
            .ok()
            .and_then(|i| texts.get(i))
            .map(|(_, t)| t.clone());
        RunStamp::from_words(words, text)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::clock::WallNanos;
    use crate::registry::status::RunOutcome;
    use crate::service::RunReason;

    fn run(duration_ms: u64, outcome: RunOutcome) -> RunStamp {
        RunStamp::new(
            RunReason::Scheduled,
            WallNanos::from(chrono::Utc::now()),
            duration_ms,
            outcome,
        )
    }

    fn ok(duration_ms: u64) -> RunStamp {
        run(duration_ms, RunOutcome::Success)
    }

    fn failed(duration_ms: u64, error: &str) -> RunStamp {
        run(
            duration_ms,
            RunOutcome::Failed {
                error: error.into(),
            },
        )
    }

    fn texts_kept(kept: &Kept) -> usize {
        match kept {
            Kept::Early(_) => 0,
            Kept::Ring { texts, .. } => texts.len(),
        }
    }

    /// What a reader sees: each run's duration and outcome, newest first.
    fn seen(h: &History) -> Vec<(u64, RunOutcome)> {
        h.newest_first()
            .iter()
            .map(|s| (s.duration_ms, s.outcome()))
            .collect()
    }

    /// A periodic run makes the ring, all of it at once; a background service's
    /// runs do not (fails if every service reserves a whole history).
    #[test]
    fn only_a_periodic_run_makes_the_ring() {
        let periodic = History::new(50);
        assert!(periodic.push(&ok(1), true));
        assert_eq!(periodic.ring.get().map(|r| r.len()), Some(50));

        let background = History::new(50);
        assert!(background.push(&ok(1), false));
        assert!(background.ring.get().is_none());
        assert_eq!(seen(&background), [(1, RunOutcome::Success)]);

        let none = History::new(0);
        assert!(!none.push(&ok(1), true));
        assert!(none.newest().is_none());
        assert!(none.ring.get().is_none());
    }

    /// Round and round: the newest `capacity` runs, newest first, each as it was
    /// recorded, its message too; a forgotten run's message goes with it.
    #[test]
    fn the_ring_keeps_the_newest_runs_and_their_messages() {
        let h = History::new(3);
        for n in 1..=8 {
            let stamp = if n % 3 == 0 {
                failed(n, &format!("failure {n}"))
            } else {
                ok(n)
            };
            assert!(h.push(&stamp, true));
            let newest = h.newest().map(|s| (s.duration_ms, s.outcome()));
            assert_eq!(newest, Some((n, stamp.outcome())));
        }
        assert_eq!(
            seen(&h),
            [
                (8, RunOutcome::Success),
                (7, RunOutcome::Success),
                (
                    6,
                    RunOutcome::Failed {
                        error: "failure 6".into()
                    }
                ),
            ]
        );
        let texts = h.kept.lock().map(|k| texts_kept(&k)).unwrap_or(usize::MAX);
        assert_eq!(texts, 1, "failure 3's message left with its run");
    }

    /// A history of failures keeps no more messages than runs.
    #[test]
    fn no_more_messages_than_runs_are_kept() {
        let h = History::new(2);
        for n in 1..=5 {
            assert!(h.push(&failed(n, "again"), true));
            let texts = h.kept.lock().map(|k| texts_kept(&k)).unwrap_or(usize::MAX);
            assert!(texts <= 2, "{texts} messages after run {n}");
        }
        assert_eq!(h.newest_first().len(), 2);
    }

    /// A background service's runs, kept before a periodic run made the ring, are
    /// carried into it in order, and forgotten in turn.
    #[test]
    fn runs_kept_before_the_ring_carry_into_it() {
        let h = History::new(3);
        assert!(h.push(&failed(1, "early"), false));
        assert!(h.push(&ok(2), false));
        assert!(h.push(&ok(3), true));
        let early = RunOutcome::Failed {
            error: "early".into(),
        };
        assert_eq!(
            seen(&h),
            [
                (3, RunOutcome::Success),
                (2, RunOutcome::Success),
                (1, early)
            ]
        );
        // Once made, the ring keeps every run, periodic or not.
        assert!(h.push(&ok(4), false));
        assert!(h.push(&ok(5), true));
        assert_eq!(
            seen(&h),
            [
                (5, RunOutcome::Success),
                (4, RunOutcome::Success),
                (3, RunOutcome::Success)
            ]
        );
    }

    /// The word the driver keeps after a run is the one the next run writes, round
    /// the ring too; before the ring there is none.
    #[test]
    fn the_next_word_is_the_next_runs_slot() {
        let h = History::new(2);
        assert!(h.push(&ok(1), false));
        assert!(h.next_word().is_none(), "no ring yet");
        assert!(h.push(&ok(2), true));
        for n in 3..=7 {
            let word = h.next_word();
            assert!(h.push(&ok(n), true));
            // Run `n` is the ring's run `n - 1` (run 1 was carried into slot 0).
            let written = h.ring.get().and_then(|ring| ring.get((n as usize - 1) % 2));
            let same = word
                .zip(written)
                .is_some_and(|(w, s)| std::ptr::eq(w, &s.tag));
            assert!(same, "run {n} went to the slot the word was in");
        }
    }

    /// Past its capacity, a history without a ring forgets its oldest run.
    #[test]
    fn runs_before_the_ring_are_bounded_too() {
        let h = History::new(2);
        for n in 1..=4 {
            assert!(h.push(&ok(n), false));
        }
        assert_eq!(
            seen(&h),
            [(4, RunOutcome::Success), (3, RunOutcome::Success)]
        );
    }
}
