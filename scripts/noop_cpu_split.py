#!/usr/bin/env python3
"""CPU work by thread on tinygrad-only's `--device noop`, as docs/benchmarks/ records it.

perf samples (`perf record -F 2000`, Debian `linux-perf`) are split by thread: our main thread,
burn-fusion's stream thread (`DSU-…`) and cubecl's server and poll threads (`DSD-…`). Samples in
cubecl's spin and idle loops and the scheduler are set apart, as are the kernel's page clearing
and faults (load time). Each figure is the difference between a long and a short run of the
same command, so start-up and loading cancel.

  noop_cpu_split.py model BIN [GEN]   ms per decoded token: 1B f16 benchmark, GEN (1024) vs 2 tokens
  noop_cpu_split.py floor BIN         µs per empty launch and per read (BIN: examples/launch_floor)
  noop_cpu_split.py shaped BIN        ms per decode-shaped chain of empty launches + a read
"""
import collections
import json
import re
import subprocess
import sys
import tempfile
from pathlib import Path

SPIN = re.compile(
    r"submit_inner|do_empty|Server::start|sched_yield|__schedule|finish_task_switch|schedule\b|pick_next"
    r"|_raw_spin_unlock_irqrestore|do_syscall_64|entry_SYSCALL|syscall_exit|irqentry_exit_to_user_mode"
    r"|yield_task|update_curr|futex|clear_page|page_fault|do_anonymous_page"
)
MS_PER_SAMPLE = 1000.0 / 2000
WORK = Path(tempfile.mkdtemp(prefix="noop-cpu-split-"))


def record(name, command):
    """Runs `command` under perf; returns its stdout and the perf data file."""
    data = WORK / f"{name}.data"
    out = subprocess.run(["perf", "record", "-q", "-F", "2000", "-o", str(data), "--", *command],
                         capture_output=True, text=True, check=True).stdout
    return out, data


def work_by_thread(data, skip_first_s=0.0):
    """Non-spin CPU milliseconds per thread name, from `skip_first_s` after the first sample."""
    lines = subprocess.run(["perf", "script", "-i", str(data), "-F", "comm,time,ip,sym"],
                           capture_output=True, text=True, check=True).stdout.splitlines()
    work, start = collections.Counter(), None
    for line in lines:
        m = re.match(r"\s*(\S+)\s+([\d.]+):\s*(.*)", line)
        if not m:
            continue
        t = float(m.group(2))
        start = t if start is None else start
        symbol = m.group(3).split(None, 1)[-1]
        if t >= start + skip_first_s and not SPIN.search(symbol):
            thread = re.sub(r"-\d+-\d+$", "", m.group(1))
            work["main" if not thread.startswith(("DSU", "DSD")) else thread] += MS_PER_SAMPLE
    return work


def model(binary, gen=1024):
    runs = {}
    for g in (gen, 2):
        out, data = record(f"model_{g}", [binary, "--device", "noop", "--benchmark", "--size", "1B", "--dtype", "f16",
                                          "--prompt-tokens", "16", "--gen-tokens", str(g), "--iterations", "1",
                                          "--json"])
        # Only after loading: generating random weights clears pages for seconds, unevenly.
        runs[g] = work_by_thread(data, json.loads(out)["load_s"] + 1.0)
    steps = 3 * (gen - 2)  # warm-up, measured run and counted run each decode gen - 1 tokens
    for thread in sorted(runs[gen]):
        print(f"{thread:6s} {(runs[gen][thread] - runs[2][thread]) / steps:.3f} ms/token")
    print(f"all    {(sum(runs[gen].values()) - sum(runs[2].values())) / steps:.3f} ms/token")


def floor(binary):
    w = {(n, r): work_by_thread(record(f"floor_{n}_{r}", [binary, "noop", str(n), str(r)])[1])
         for n in (100, 1) for r in (2000, 200)}
    total_launch = total_read = 0.0
    for thread in sorted(w[(100, 2000)]):
        chains = {n: (w[(n, 2000)][thread] - w[(n, 200)][thread]) / 1800 for n in (100, 1)}  # ms per read + chain
        launch = (chains[100] - chains[1]) / 99 * 1000
        read = (chains[1] * 1000 - launch) / 2  # each round is a read alone plus a chain of one launch and a read
        total_launch, total_read = total_launch + launch, total_read + read
        print(f"{thread:6s} per launch {launch:6.2f} us, per read {read:6.1f} us, 100 + read {(100 * launch + read) / 1000:.3f} ms")
    print(f"all    per launch {total_launch:6.2f} us, per read {total_read:6.1f} us, "
          f"100 + read {(100 * total_launch + total_read) / 1000:.3f} ms")


def shaped(binary):
    w = {r: work_by_thread(record(f"shaped_{r}", [binary, "noop", "0", str(r), "decode"])[1]) for r in (600, 100)}
    for thread in sorted(w[600]):
        print(f"{thread:6s} {(w[600][thread] - w[100][thread]) / 500:.3f} ms per round (read alone + shaped chain)")
    print(f"all    {(sum(w[600].values()) - sum(w[100].values())) / 500:.3f} ms per round (read alone + shaped chain)")


if __name__ == "__main__":
    if len(sys.argv) < 3 or sys.argv[1] not in ("model", "floor", "shaped"):
        sys.exit(__doc__)
    mode, binary = sys.argv[1], sys.argv[2]
    {"model": lambda: model(binary, int(sys.argv[3]) if len(sys.argv) > 3 else 1024),
     "floor": lambda: floor(binary), "shaped": lambda: shaped(binary)}[mode]()
