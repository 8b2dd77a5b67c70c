"""Recovery time in the demo with an injected OOM, and the demo's total time.

Runs `python -m launcher run --demo --inject cuda_oom:optimal:2` in a scratch folder (a late OOM
in epoch 2, then an early one on the retry, then a step down to optimal-b4), and for each recovery
splits the time from the OOM to the resumed child's first training batch into
  child exit: the OOM (the child's report) → the supervisor sees the child gone
  supervisor: → the next child started (classify, decide, write the record, spawn)
  child start-up: → the new child's first training batch (its heartbeat).
Run: python tests/bench/bench_recovery.py [--inject SPEC ...] [--root CHECKOUT]

The launcher run is this script's checkout's (or --root's, e.g. a worktree of an older commit):
its folder goes first on PYTHONPATH, since an editable install would otherwise import the installed
checkout's package from the scratch folder; the package actually imported is printed.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import psutil

ROOT = Path(__file__).resolve().parents[2]


def busy_seconds() -> float:
    """CPU seconds the whole machine has spent busy (all cores, everything but idle and iowait)."""
    t = psutil.cpu_times()
    return sum(t) - t.idle - getattr(t, "iowait", 0.0)


def tree_seconds() -> float:
    """CPU seconds of this process and every descendant it (or they) reaped."""
    return sum(r.ru_utime + r.ru_stime for r in (resource.getrusage(resource.RUSAGE_SELF),
                                                  resource.getrusage(resource.RUSAGE_CHILDREN)))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--inject", action="append", default=None, help="default: cuda_oom:optimal:2")
    ap.add_argument("--root", type=Path, default=ROOT, help="the checkout whose launcher runs (default: this one's)")
    args = ap.parse_args()
    inject = args.inject or ["cuda_oom:optimal:2"]
    root = args.root.resolve()
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(root), os.environ.get("PYTHONPATH")]))}
    with tempfile.TemporaryDirectory() as tmp:
        package = subprocess.run([sys.executable, "-c", "import launcher; print(launcher.__file__)"], cwd=tmp, env=env,
                                 capture_output=True, text=True).stdout.strip()
        cmd = [sys.executable, "-m", "launcher", "run", "--demo", "--name", "bench-recovery"]
        for spec in inject:
            cmd += ["--inject", spec]
        load0, busy0, tree0, t0 = os.getloadavg()[0], busy_seconds(), tree_seconds(), time.perf_counter()
        proc = subprocess.run(cmd, cwd=tmp, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        total = time.perf_counter() - t0
        others = max(0.0, (busy_seconds() - busy0) - (tree_seconds() - tree0)) / total
        run = Path(tmp) / "logs" / "bench-recovery"
        events = [json.loads(line) for line in (run / "events.jsonl").read_text().splitlines()]
        starts = {e["attempt"]: e for e in events if e["event"] == "attempt_start"}
        ends = {e["attempt"]: e for e in events if e["event"] == "attempt_end"}
        print(f"machine: {platform.machine()}, {os.cpu_count()} CPUs, Python {platform.python_version()}")
        print(f"command: {' '.join(cmd[1:])}  (exit {proc.returncode}; package {package})")
        for n in sorted(ends):
            if ends[n]["kind"] is None or n + 1 not in starts:
                continue
            report = json.loads((run / f"attempt-{n}" / "report.json").read_text())
            beat = json.loads((run / f"attempt-{n + 1}" / "heartbeat.json").read_text())
            oom, gone, spawn = report["ts"], ends[n]["t"], starts[n + 1]["t"]
            first = beat.get("first_batch_ts")
            child = f"{first - spawn:6.2f} s" if first else "   n/a (no batch)"
            print(f"  attempt {n} ({ends[n]['rung']}, {ends[n]['kind']}) → attempt {n + 1} ({starts[n + 1]['rung']}):"
                  f"  child exit {gone - oom:5.2f} s  supervisor {spawn - gone:5.3f} s  child start-up {child}")
        print(f"  demo total: {total:.1f} s, {len(ends)} attempts; others: {others:.2f} cores busy outside the run "
              f"(load average {load0:.2f} before, {os.getloadavg()[0]:.2f} after)")
    if proc.returncode:
        print(proc.stderr[-2000:], file=sys.stderr)


if __name__ == "__main__":
    main()
