//! B6's recorder: each run's lateness, kept without a lock or a line shared by the
//! workers, so that it weighs the same on every contender and does not order them.

use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use crate::common::cpu_seconds;

use super::PERIOD;

/// A slot not yet written.
const EMPTY: u64 = u64::MAX;
/// Worker threads with a shard of their own; more share them (the bench runtime has
/// one worker a core).
const SHARDS: usize = 4;

/// The runs one thread recorded, on lines of its own.
///
/// An earlier recorder pushed into one `Mutex<Vec>`: every run of every contender
/// took it, and a worker that lost it slept in the kernel. A single shared counter
/// would be a line both workers write at every run once they run side by side.
#[repr(align(128))]
struct Shard {
    count: AtomicUsize,
    /// Each run's lateness in ns, at the index the shard's count gave it.
    slots: Box<[AtomicU64]>,
    /// With `KOAN_B6_TRACE=<path>`: each run's instant (ns since the recorder's base)
    /// and thread, for a timeline of the bursts (written to `<path>.<window>`).
    trace: Option<Box<[AtomicU64]>>,
}

/// Lateness samples and run counts, shared by every periodic job of a round.
pub(super) struct Lateness {
    measuring: AtomicBool,
    shards: Box<[Shard]>,
    base: Instant,
}

/// What one round's measuring window saw.
pub(super) struct Window {
    /// Each run's lateness, in µs.
    pub(super) samples: Vec<f64>,
    pub(super) ticks: usize,
    /// The process's CPU time over the window, in seconds (10 ms ticks: summed over
    /// the rounds before it is divided by their runs).
    pub(super) cpu: f64,
}

impl Lateness {
    /// Room for `runs` recorded runs on each thread; runs beyond it are counted, not
    /// sampled. (Each shard can hold a whole window: the kernel may run every run of
    /// a burst on one worker; see docs/benchmarks/round-19.md.)
    pub(super) fn new(runs: usize) -> Self {
        let slots = |n: usize| (0..n).map(|_| AtomicU64::new(EMPTY)).collect();
        let traced = std::env::var_os("KOAN_B6_TRACE").is_some();
        Lateness {
            measuring: AtomicBool::new(false),
            shards: (0..SHARDS)
                .map(|_| Shard {
                    count: AtomicUsize::new(0),
                    slots: slots(runs),
                    trace: traced.then(|| slots(runs)),
                })
                .collect(),
            base: Instant::now(),
        }
    }

    /// Records a run at `now` of a job whose grid starts at `anchor`: the lateness is
    /// the distance to the latest grid point at or before `now`.
    pub(super) fn record(&self, anchor: Instant, now: Instant) {
        if !self.measuring.load(Ordering::Acquire) || now < anchor {
            return;
        }
        let late = ((now - anchor).as_nanos() % PERIOD.as_nanos()) as u64;
        let thread = thread_index();
        let shard = &self.shards[thread % SHARDS];
        let i = shard.count.fetch_add(1, Ordering::Relaxed);
        if let Some(slot) = shard.slots.get(i) {
            slot.store(late, Ordering::Relaxed);
        }
        if let Some(slot) = shard.trace.as_ref().and_then(|t| t.get(i)) {
            let at = (now - self.base).as_nanos() as u64;
            slot.store(at << 8 | (thread as u64 & 0xff), Ordering::Relaxed);
        }
    }

    pub(super) fn reset(&self) {
        self.measuring.store(false, Ordering::Release);
        for shard in &*self.shards {
            let used = shard.count.swap(0, Ordering::AcqRel).min(shard.slots.len());
            let trace = shard.trace.as_deref().map_or(&[][..], |t| &t[..used]);
            for slot in shard.slots[..used].iter().chain(trace) {
                slot.store(EMPTY, Ordering::Relaxed);
            }
        }
    }

    /// Lets every job run once (and learn its grid) and settle for three periods,
    /// then records the runs of `window`.
    pub(super) async fn measure(&self, window: Duration) -> Window {
        tokio::time::sleep(PERIOD * 3).await;
        let cpu = cpu_seconds(std::process::id());
        self.measuring.store(true, Ordering::Release);
        tokio::time::sleep(window).await;
        self.measuring.store(false, Ordering::Release);
        let cpu = cpu_seconds(std::process::id()) - cpu;
        let (samples, ticks, trace) = self.collect();
        if let Some(path) = std::env::var_os("KOAN_B6_TRACE") {
            // One file a window, numbered from 1: `<path>.1`, `<path>.2`, …
            static WINDOWS: AtomicUsize = AtomicUsize::new(0);
            let mut path = path;
            path.push(format!(".{}", WINDOWS.fetch_add(1, Ordering::Relaxed) + 1));
            if let Err(e) = std::fs::write(&path, trace) {
                eprintln!("KOAN_B6_TRACE: {e}");
            }
        }
        Window {
            samples,
            ticks,
            cpu,
        }
    }

    /// Every shard's recorded lateness (µs), the runs counted (sampled or not), and
    /// the trace's lines (one a run: its instant in ns, its lateness in ns, its thread).
    fn collect(&self) -> (Vec<f64>, usize, String) {
        let (mut samples, mut ticks, mut trace) = (Vec::new(), 0, String::new());
        let set = |s: &AtomicU64| Some(s.load(Ordering::Relaxed)).filter(|&v| v != EMPTY);
        for shard in &*self.shards {
            let count = shard.count.load(Ordering::Acquire);
            ticks += count;
            let used = &shard.slots[..count.min(shard.slots.len())];
            // A run that took its slot just before the window closed may not have
            // stored yet: its slot is left out.
            samples.extend(used.iter().filter_map(set).map(|ns| ns as f64 / 1e3));
            for (t, s) in shard.trace.iter().flat_map(|t| t.iter().zip(used)) {
                if let (Some(t), Some(late)) = (set(t), set(s)) {
                    trace.push_str(&format!("{}\t{late}\t{}\n", t >> 8, t & 0xff));
                }
            }
        }
        (samples, ticks, trace)
    }
}

/// A small number for the calling thread, the same for its life.
fn thread_index() -> usize {
    static NEXT: AtomicUsize = AtomicUsize::new(0);
    thread_local!(static INDEX: usize = NEXT.fetch_add(1, Ordering::Relaxed));
    INDEX.with(|i| *i)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn measuring(runs: usize) -> Lateness {
        let l = Lateness::new(runs);
        l.measuring.store(true, Ordering::Release);
        l
    }

    /// Runs recorded on several threads are all collected, each with its lateness.
    #[test]
    fn collects_every_thread_s_runs() {
        let l = measuring(16);
        let anchor = Instant::now();
        std::thread::scope(|s| {
            for late_ms in 1..=3u64 {
                let l = &l;
                s.spawn(move || {
                    for k in 0..5u32 {
                        let now = anchor + PERIOD * k + Duration::from_millis(late_ms);
                        l.record(anchor, now);
                    }
                });
            }
        });
        let (mut samples, ticks, _) = l.collect();
        assert_eq!(ticks, 15);
        samples.sort_by(f64::total_cmp);
        let want: Vec<f64> = [1000.0, 2000.0, 3000.0]
            .iter()
            .flat_map(|&us| [us; 5])
            .collect();
        assert_eq!(samples, want);
    }

    /// Runs past a shard's room are counted, not sampled; nothing is recorded
    /// outside a window; a reset forgets the last window.
    #[test]
    fn counts_past_its_room_and_resets() {
        let l = measuring(4);
        let anchor = Instant::now();
        for k in 0..10u32 {
            l.record(anchor, anchor + PERIOD * k);
        }
        let (samples, ticks, _) = l.collect();
        assert_eq!((samples.len(), ticks), (4, 10));

        l.reset();
        l.record(anchor, anchor + PERIOD);
        let (samples, ticks, _) = l.collect();
        assert_eq!(
            (samples.len(), ticks),
            (0, 0),
            "not measuring after a reset"
        );

        l.measuring.store(true, Ordering::Release);
        l.record(anchor, anchor + PERIOD + Duration::from_micros(250));
        let (samples, ticks, _) = l.collect();
        assert_eq!((samples, ticks), (vec![250.0], 1));
    }
}
