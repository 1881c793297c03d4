#!/usr/bin/env python3
"""Where B8's round trip spends its CPU time, by thread and by function, koan's
against raw async-nats's.

Run by hand (needs `perf` and the release bench):

    cargo build --release -p koan-bench && python3 crates/koan-bench/b8_threads.py [RUNS]

It samples the bench's threads (`perf record -e cpu-clock`, a sample every
50 µs of CPU: this works without the CPU's counters, which a VM may not offer)
while B8's round trips run alone, koan's and raw's in turn (`KOAN_BENCH_SOLO=0`,
then `=1`; RUNS times each, 3 by default), and prints, in µs of user-space CPU a
round trip:

- for the calling thread (the bench's `block_on`) and the runtime's workers
  (both connections' tasks, and the serving side): the median over runs of
  koan's, raw's, and each run's difference (the two run back to back);
- for each of the two, the functions that account for koan's excess (summed over
  the runs), and the ones where raw spends more.

Kernel samples are left out: without the CPU's counters, time spent with
interrupts off is charged to whichever kernel function turns them back on,
differently from run to run. A function's figure moves by up to a µs from one
set of runs to the next (`__vdso_clock_gettime`'s most of all, 0.4–4.7 µs on a
VM): read the threads' totals first, and a function only when it stands out in
several sets. `b8_path.py` times the same round trip from its socket calls,
stretch by stretch.
"""

import os
import re
import statistics
import subprocess
import sys
import tempfile

BENCH = os.environ.get("KOAN_BENCH", "target/release/koan-bench")
HZ = 20_000
# B8 runs its round trips in five measured rounds after one to warm up
# (`koan-bench/src/nats.rs`); the bench prints the calls in a round.
ROUNDS = 6
ROW = re.compile(r"^\s*[\d.]+%\s+(\d+)\s+(\S+)\s+(\S+)\s+\[(.)\]\s+(.*?)\s*$")
THREADS = {"calling thread": None, "workers": "tokio-rt-worker"}


def sample(solo, out):
    """µs of user-space CPU a round trip, by (thread, function)."""
    env = dict(os.environ, KOAN_BENCH_SOLO=str(solo))
    run = subprocess.run(
        ["perf", "record", "-q", "-e", "cpu-clock", "-F", str(HZ), "-o", out, BENCH, "B8"],
        env=env, check=True, capture_output=True, text=True,
    )
    calls = int(re.search(r"\((\d+) sequential calls/round", run.stdout).group(1))
    per_sample = 1e6 / HZ / (calls * ROUNDS)
    text = subprocess.run(
        ["perf", "report", "-i", out, "-n", "--sort", "comm,dso,sym", "--stdio"],
        check=True, capture_output=True, text=True,
    ).stdout
    bench = os.path.basename(BENCH)[:15]  # the kernel keeps 15 characters of a name
    spent = {}
    for line in text.splitlines():
        m = ROW.match(line)
        if not m or m.group(4) != ".":  # user space only
            continue
        samples, comm, _dso, _, sym = m.groups()
        thread = "calling thread" if comm == bench else "workers" if comm == THREADS["workers"] else None
        if thread:
            key = (thread, sym)
            spent[key] = spent.get(key, 0.0) + int(samples) * per_sample
    return spent


def main():
    runs = int(sys.argv[1]) if len(sys.argv) > 1 else 3
    totals = {name: {t: [] for t in THREADS} for name in ("koan", "raw")}
    by_fn = {"koan": {}, "raw": {}}
    with tempfile.TemporaryDirectory() as tmp:
        for _ in range(runs):
            for name, solo in (("koan", 0), ("raw", 1)):
                spent = sample(solo, os.path.join(tmp, f"{name}.data"))
                for t in THREADS:
                    totals[name][t].append(sum(v for (th, _), v in spent.items() if th == t))
                for key, v in spent.items():
                    by_fn[name][key] = by_fn[name].get(key, 0.0) + v / runs
    print(f"{runs} runs of each; µs of user-space CPU a round trip, median (range)")
    print(f"{'thread':16} {'koan':>18} {'raw':>18} {'koan − raw, per run':>20}")
    for t in THREADS:
        k, r = totals["koan"][t], totals["raw"][t]
        d = [a - b for a, b in zip(k, r)]
        print(f"{t:16} {cell(k):>18} {cell(r):>18} {cell(d):>20}")
    for t in THREADS:
        keys = {key for name in by_fn for key in by_fn[name] if key[0] == t}
        diff = sorted(
            ((by_fn["koan"].get(k, 0.0) - by_fn["raw"].get(k, 0.0), k[1]) for k in keys),
            reverse=True,
        )
        print(f"\n{t}: koan's excess by function (µs a round trip, mean of the runs)")
        for d, sym in diff[:12]:
            print(f"  {d:+6.2f}  {sym[:100]}")
        print("  where raw spends more:")
        for d, sym in diff[-4:]:
            print(f"  {d:+6.2f}  {sym[:100]}")


def cell(values):
    """A median and the range it was taken over."""
    return f"{statistics.median(values):5.2f} ({min(values):.1f}–{max(values):.1f})"


if __name__ == "__main__":
    sys.exit(main())
