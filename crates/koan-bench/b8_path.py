#!/usr/bin/env python3
"""Where B8's round trip spends its time, side by side for koan and raw async-nats.

Run by hand (needs `perf` and the release bench):

    cargo build --release -p koan-bench && python3 crates/koan-bench/b8_path.py [RUNS]

It records the bench process's and the broker's socket system calls (`perf record`
of their tracepoints, with timestamps) while B8's round trips run alone, koan's
and raw's in turn (`KOAN_BENCH_SOLO=0`, then `=1`; RUNS times each, 3 by
default), and prints for each stretch of a round trip the median over the runs of
each run's median (µs, from perf's timestamps in ns), and their range, and the
median of each run's difference (koan's median less raw's, run back to back):

- serving side: the broker's write of a call to the serving connection, to that
  connection's write of the reply (the message read, the action run, the reply
  queued and written);
- caller side: the broker's write of the reply, to the caller's write of its next
  request (the reply read and handed to the calling task, the next call made and
  queued, the connection's task woken to write it);
- broker: a write of the bench, to the broker's read of it (its wake-up), and that
  read to the broker's write onward.

The connection with the larger writes is the caller's (a request carries its
subject, its reply inbox and its parameters; a reply only its inbox and result).
"""

import os
import re
import statistics
import subprocess
import sys
import tempfile

BENCH = os.environ.get("KOAN_BENCH", "target/release/koan-bench")
EVENTS = [
    "syscalls:sys_enter_read",
    "syscalls:sys_exit_read",
    "syscalls:sys_enter_writev",
    "syscalls:sys_exit_writev",
]
LINE = re.compile(r"^\s*(\S+)\s+(\d+)\s+([\d.]+):\s+(\S+):\s*(.*)$")


def record(solo, out):
    env = dict(os.environ, KOAN_BENCH_SOLO=str(solo))
    cmd = ["perf", "record", "-q", "-o", out]
    for e in EVENTS:
        cmd += ["-e", e]
    subprocess.run(
        cmd + [BENCH, "B8"], env=env, check=True,
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    text = subprocess.run(
        ["perf", "script", "--ns", "-i", out, "-F", "comm,tid,time,event,trace"],
        check=True, capture_output=True, text=True,
    ).stdout
    for line in text.splitlines():
        m = LINE.match(line)
        if m:
            comm, tid, t, event, rest = m.groups()
            yield comm == "nats-server", tid, float(t) * 1e6, event.split(":")[1], rest


def stretches(events):
    out = {}
    sizes = {}
    last_broker_write = broker_read = bench_write = None
    writing = {}  # the fd each bench thread is writing to
    for broker, tid, t, event, rest in events:
        if event == "sys_enter_writev" and not broker:
            fd = writing[tid] = re.search(r"fd: (0x[0-9a-f]+)", rest).group(1)
            if last_broker_write is not None:
                out.setdefault(fd, []).append(t - last_broker_write)
        elif event == "sys_exit_writev" and not broker and tid in writing:
            sizes.setdefault(writing.pop(tid), []).append(int(rest, 16))
            bench_write = t
        elif event == "sys_exit_read" and broker and bench_write is not None:
            if int(rest, 16) < 1 << 63:  # data, not EAGAIN
                out.setdefault("wake", []).append(t - bench_write)
                broker_read, bench_write = t, None
        elif event == "sys_exit_writev" and broker:
            if broker_read is not None:
                out.setdefault("onward", []).append(t - broker_read)
                broker_read = None
            last_broker_write = t
    fds = sorted((k for k in out if k.startswith("0x")), key=lambda k: -len(out[k]))[:2]
    fds.sort(key=lambda k: statistics.mean(sizes.get(k, [0])))
    return {
        "serving side": out.get(fds[0], []) if fds else [],
        "caller side": out.get(fds[1], []) if len(fds) > 1 else [],
        "broker wake-up": out.get("wake", []),
        "broker read to write": out.get("onward", []),
    }


def main():
    runs = int(sys.argv[1]) if len(sys.argv) > 1 else 3
    medians = {"koan": {}, "raw": {}}
    with tempfile.TemporaryDirectory() as tmp:
        for _ in range(runs):
            for name, solo in (("koan", 0), ("raw", 1)):
                data = os.path.join(tmp, f"{name}.data")
                for stretch, values in stretches(record(solo, data)).items():
                    if values:
                        medians[name].setdefault(stretch, []).append(statistics.median(values))
    print(f"{runs} runs of each; median of the runs' medians (their range), µs")
    print(f"{'stretch':22} {'koan':>18} {'raw':>18} {'koan − raw, per run':>18}")
    for stretch in ("serving side", "caller side", "broker wake-up", "broker read to write"):
        k, r = medians["koan"].get(stretch), medians["raw"].get(stretch)
        if not k or not r:
            print(f"{stretch:22} (not seen)")
            continue
        km, rm = statistics.median(k), statistics.median(r)
        # Each run's koan and raw ran back to back, in the same mode of the machine:
        # their difference moves less from run to run than either.
        d = [a - b for a, b in zip(k, r)]
        print(f"{stretch:22} {cell(km, k):>18} {cell(rm, r):>18} {cell(statistics.median(d), d):>18}")


def cell(median, values):
    """A median and the range it was taken over."""
    return f"{median:5.2f} ({min(values):.1f}–{max(values):.1f})"


if __name__ == "__main__":
    sys.exit(main())
