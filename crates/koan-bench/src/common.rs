//! Shared pieces: run options, statistics, the result row and the table.

use std::time::Duration;

use serde::Serialize;

/// How big a run is.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Opts {
    /// A short smoke run: tiny sizes, one or two rounds.
    pub(crate) quick: bool,
}

impl Opts {
    /// `full` normally, `quick` for the smoke run.
    pub(crate) fn pick<T>(&self, full: T, quick: T) -> T {
        if self.quick { quick } else { full }
    }

    /// Measured rounds per contender (after one warm-up round).
    pub(crate) fn rounds(&self, full: usize) -> usize {
        self.pick(full, 1)
    }
}

/// Which direction of the figure is better.
#[derive(Debug, Clone, Copy, Serialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub(crate) enum Better {
    /// Latencies, times, bytes.
    Lower,
    /// Throughputs.
    Higher,
}

/// One baseline's figure.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct Baseline {
    pub(crate) name: String,
    /// `None` when the baseline could not be measured.
    pub(crate) value: Option<f64>,
    /// koan / baseline.
    pub(crate) ratio: Option<f64>,
}

/// One line of the result table.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct Row {
    pub(crate) scenario: String,
    pub(crate) metric: String,
    pub(crate) unit: String,
    pub(crate) better: Better,
    pub(crate) koan: Option<f64>,
    pub(crate) baselines: Vec<Baseline>,
    pub(crate) goal: String,
    /// `None`: no goal on this line (informational) or not measurable.
    pub(crate) met: Option<bool>,
    pub(crate) note: String,
}

impl Row {
    pub(crate) fn new(scenario: &str, metric: &str, unit: &str, better: Better, koan: f64) -> Self {
        Row {
            scenario: scenario.to_owned(),
            metric: metric.to_owned(),
            unit: unit.to_owned(),
            better,
            koan: Some(koan),
            baselines: Vec::new(),
            goal: String::new(),
            met: None,
            note: String::new(),
        }
    }

    /// Adds a baseline; the ratio is koan / baseline.
    pub(crate) fn baseline(mut self, name: &str, value: Option<f64>) -> Self {
        let ratio = match (self.koan, value) {
            (Some(k), Some(b)) if b > 0.0 => Some(k / b),
            _ => None,
        };
        self.baselines.push(Baseline {
            name: name.to_owned(),
            value,
            ratio,
        });
        self
    }

    /// Adds a baseline whose ratio to koan was measured round by round
    /// ([`paired_ratio`]), not taken from the two figures shown.
    pub(crate) fn baseline_paired(mut self, name: &str, value: f64, ratio: f64) -> Self {
        self.baselines.push(Baseline {
            name: name.to_owned(),
            value: Some(value),
            ratio: (ratio.is_finite() && ratio > 0.0).then_some(ratio),
        });
        self
    }

    pub(crate) fn ratio(&self, name: &str) -> Option<f64> {
        self.baselines
            .iter()
            .find(|b| b.name == name)
            .and_then(|b| b.ratio)
    }

    pub(crate) fn goal(mut self, goal: &str, met: Option<bool>) -> Self {
        self.goal = goal.to_owned();
        self.met = met;
        self
    }

    pub(crate) fn note(mut self, note: impl Into<String>) -> Self {
        self.note = note.into();
        self
    }
}

/// The median (of a copy).
/// The median over the rounds of koan's figure ÷ another's in the same round: the
/// two ran back to back, so when the machine's pace changes (this VM has a slower
/// and a faster mode, and has switched within a run) it moves both. A ratio of
/// the two medians can set koan's slow rounds against another's fast ones (B3
/// once at 0.46× ractor, the two at 0.94 and 0.98 µs of CPU an action over the
/// run; B8's round trip once at 1.14×: `docs/benchmarks/round-39.md`).
pub(crate) fn paired_ratio(koan: &[f64], other: &[f64]) -> f64 {
    median(&round_ratios(koan, other))
}

/// Each round's koan figure ÷ the other's, in round order.
pub(crate) fn round_ratios(koan: &[f64], other: &[f64]) -> Vec<f64> {
    koan.iter().zip(other).map(|(k, b)| k / b).collect()
}

pub(crate) fn median(v: &[f64]) -> f64 {
    percentile(v, 50.0)
}

/// The `p`th percentile (nearest rank) of a copy of `v`; 0 when empty.
pub(crate) fn percentile(v: &[f64], p: f64) -> f64 {
    if v.is_empty() {
        return 0.0;
    }
    let mut s = v.to_vec();
    s.sort_by(f64::total_cmp);
    let rank = ((p / 100.0) * s.len() as f64).ceil() as usize;
    s[rank.clamp(1, s.len()) - 1]
}

pub(crate) fn micros(d: Duration) -> f64 {
    d.as_secs_f64() * 1e6
}

/// Current resident set size of this process, in KiB (Linux `/proc/self/status`).
pub(crate) fn vm_rss_kib() -> Option<u64> {
    let s = std::fs::read_to_string("/proc/self/status").ok()?;
    s.lines()
        .find(|l| l.starts_with("VmRSS:"))?
        .split_whitespace()
        .nth(1)?
        .parse()
        .ok()
}

fn fmt_value(v: Option<f64>, unit: &str) -> String {
    match v {
        None => "n/a".to_owned(),
        Some(v) => {
            let n = if v.abs() >= 1000.0 {
                format!("{v:.0}")
            } else if v.abs() >= 10.0 {
                format!("{v:.1}")
            } else {
                format!("{v:.2}")
            };
            format!("{n} {unit}")
        }
    }
}

/// The table, as Markdown.
pub(crate) fn table(rows: &[Row]) -> String {
    let mut out = String::new();
    out.push_str("| scenario | metric | better | koan | baselines: figure (koan ÷ baseline) | goal | met |\n");
    out.push_str("|---|---|---|---|---|---|---|\n");
    for r in rows {
        let baselines = if r.baselines.is_empty() {
            "—".to_owned()
        } else {
            r.baselines
                .iter()
                .map(|b| {
                    let ratio = b.ratio.map_or("n/a".to_owned(), |x| format!("{x:.2}×"));
                    format!("{}: {} ({ratio})", b.name, fmt_value(b.value, &r.unit))
                })
                .collect::<Vec<_>>()
                .join("<br>")
        };
        let better = match r.better {
            Better::Lower => "lower",
            Better::Higher => "higher",
        };
        let met = match r.met {
            Some(true) => "met",
            Some(false) => "NOT met",
            None => "—",
        };
        // A note is free text (an error's, say): its `|` and line breaks would
        // split the row.
        let metric = if r.note.is_empty() {
            r.metric.clone()
        } else {
            format!("{} ({})", r.metric, r.note.replace(['\n', '|'], " "))
        };
        out.push_str(&format!(
            "| {} | {} | {} | {} | {} | {} | {} |\n",
            r.scenario,
            metric,
            better,
            fmt_value(r.koan, &r.unit),
            baselines,
            if r.goal.is_empty() { "—" } else { &r.goal },
            met
        ));
    }
    out
}

/// `KOAN_BENCH_SOLO=i`: run only contender `i` (0 = koan), for profiling one side
/// with `perf record`; the other contenders' figures print as `NaN`. B1–B3 honour
/// any index, B8 its round trip's (0 koan, 1 raw; the durable rows are skipped); B6 runs only koan's lateness rounds when it is set; B9 runs only
/// koan (0) or only apalis (1), each still in its own child process.
pub(crate) fn solo() -> Option<usize> {
    std::env::var("KOAN_BENCH_SOLO").ok()?.parse().ok()
}

/// `KOAN_BENCH_METRICS=1`: koan records its metrics into the Prometheus recorder, as
/// the demo host does (installed before any host is built). Without it, the
/// `metrics` facade has no recorder and an action's counts and timings go nowhere:
/// every scenario then measures koan with its metrics off.
pub(crate) fn metrics_on() -> bool {
    std::env::var("KOAN_BENCH_METRICS").is_ok_and(|v| v == "1")
}

/// `KOAN_BENCH_PIN=1`: the bench runtime's worker threads are each bound to a core
/// of their own (the first threads its pool starts; later blocking threads are left
/// free). Without it the kernel places them: this sandbox's kernel packs threads on
/// one vCPU while the load is light, so two workers may take turns on one core
/// (docs/benchmarks/round-19.md). Every contender shares the runtime, so the
/// knob moves them all; the verdicts are read without it, as a user runs.
pub(crate) fn pinning() -> Option<impl Fn() + Send + Sync + 'static> {
    if !std::env::var("KOAN_BENCH_PIN").is_ok_and(|v| v == "1") {
        return None;
    }
    let cores = core_affinity::get_core_ids().unwrap_or_default();
    if cores.is_empty() {
        eprintln!("KOAN_BENCH_PIN: the cores could not be read; the workers stay free");
    }
    let started = std::sync::atomic::AtomicUsize::new(0);
    Some(move || {
        let i = started.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        if let Some(&core) = cores.get(i)
            && !core_affinity::set_for_current(core)
        {
            eprintln!(
                "KOAN_BENCH_PIN: could not bind a worker to core {}",
                core.id
            );
        }
    })
}

/// utime + stime of process `pid`, in seconds (0 where `/proc` cannot tell). In
/// clock ticks of 10 ms: read it around a whole scenario, not one short round.
pub(crate) fn cpu_seconds(pid: u32) -> f64 {
    let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
        return 0.0;
    };
    // Fields after the command name (which may hold spaces) — utime and stime are
    // the 14th and 15th of the line, the 12th and 13th after `)`.
    let Some(rest) = stat.rsplit_once(')').map(|(_, r)| r) else {
        return 0.0;
    };
    let f: Vec<&str> = rest.split_whitespace().collect();
    let ticks = |i: usize| f.get(i).and_then(|x| x.parse::<f64>().ok()).unwrap_or(0.0);
    // Clock ticks per second: 100 on Linux (USER_HZ).
    (ticks(11) + ticks(12)) / 100.0
}
