"""What tuning costs on the CPU demo: `python -m launcher tune --demo --json`, and the demo night beside it.

Runs, in a scratch folder, `tune --demo --json --no-memory` (a trial of each of ladders/demo.toml's
four rungs: rtdetr-l.yaml and rtdetr-mnv4 at 64 px on 48 images, CPU, TrialPlan.for_device("cpu"):
1 warm-up and 4 measured iterations, 1 validation batch) and prints per rung what its trial.json says:
the time from the child's start to its first batch, the trial's seconds, the median images/s after
the warm-up and the peak RSS of the child and its workers; then tune's whole wall time, the
launcher's own part of it (the wall time less the trials' seconds: start-up, probe, dataset, the
children's spawn and exit), and, unless --no-night, the demo night's wall time
(`run --demo --no-tune`, 2 epochs on optimal) for scale. Every number is read from the outside
(tune's JSON, wall clocks); nothing is added to the launcher.

On the CPU a trial's iterations are seconds each, so these figures say what the trial machinery
costs (child start-up, the model build, the measurement), not what a GPU trial takes: there the
budget is 90 s a rung and 6 minutes in all (tune.TrialPlan, tune.NIGHT_BUDGET_S), and
tests/gpu/tune.sh measures it on a real card.

Run: python tests/bench/bench_tune.py [--rounds N] [--no-night] [--root CHECKOUT]   (~4 min on 2 cores)
The launcher run is this script's checkout's (or --root's): its folder goes first on PYTHONPATH.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from bench_recovery import busy_seconds, tree_seconds  # the machine's load, measured one way

ROOT = Path(__file__).resolve().parents[2]
GIB = 2**30


def timed(cmd: list[str], cwd: str, env: dict) -> tuple[subprocess.CompletedProcess, float, float]:
    """Run `cmd`; (the process, its wall seconds, cores busy outside it on average meanwhile)."""
    busy0, tree0, t0 = busy_seconds(), tree_seconds(), time.perf_counter()
    proc = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True)
    wall = time.perf_counter() - t0
    others = max(0.0, (busy_seconds() - busy0) - (tree_seconds() - tree0)) / wall
    return proc, wall, others


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rounds", type=int, default=3, help="tune runs, each in a fresh scratch folder (default 3; "
                    "on a shared machine the quietest is the one to read)")
    ap.add_argument("--no-night", action="store_true", help="skip the demo night (`run --demo`, ~45 s)")
    ap.add_argument("--root", type=Path, default=ROOT, help="the checkout whose launcher runs (default: this one's)")
    args = ap.parse_args()
    root = args.root.resolve()
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(root), os.environ.get("PYTHONPATH")])),
           "YOLO_OFFLINE": "1"}
    print(f"machine: {platform.machine()}, {os.cpu_count()} CPUs, Python {platform.python_version()}; "
          f"load average {os.getloadavg()[0]:.2f}")
    walls, spent = [], []
    for n in range(args.rounds):
        with tempfile.TemporaryDirectory() as tmp:
            cmd = [sys.executable, "-m", "launcher", "tune", "--demo", "--json", "--no-memory", "--name", "bench-tune"]
            proc, wall, others = timed(cmd, tmp, env)
            if proc.returncode:
                sys.exit(f"tune exited {proc.returncode}:\n{proc.stderr[-2000:]}")
            tuned = json.loads(proc.stdout)
            trials = tuned["trials"]
            seconds = sum(t["seconds"] or 0 for t in trials)
            walls.append(wall)
            spent.append(wall - seconds)
            print(f"\nround {n + 1}: {' '.join(cmd[2:])}  (device {tuned['device']}; start {tuned['start']}; "
                  f"{others:.2f} cores busy outside it)")
            print(f"  {'rung':<11} {'batch':>5} {'ended':<6} {'first batch':>11} {'trial':>7} {'images/s':>8} "
                  f"{'peak RSS':>9}")
            for t in trials:
                print(f"  {t['rung']:<11} {t['batch']:>5} {t['ended']:<6} {t['first_batch_s'] or 0:>9.1f} s "
                      f"{t['seconds'] or 0:>5.1f} s {t['images_per_s'] or 0:>8.2f} {t['peak_rss_gib'] or 0:>5.2f} GiB")
            print(f"  tune --demo: {wall:.1f} s wall; the trials {seconds:.1f} s; the launcher's own "
                  f"{wall - seconds:.1f} s")
    if args.rounds > 1:
        print(f"\ntune --demo over {args.rounds} rounds: median {statistics.median(walls):.1f} s "
              f"(min {min(walls):.1f}); the launcher's own median {statistics.median(spent):.1f} s")
    if not args.no_night:
        with tempfile.TemporaryDirectory() as tmp:
            cmd = [sys.executable, "-m", "launcher", "run", "--demo", "--no-tune", "--no-memory", "--name", "bench-night"]
            proc, wall, others = timed(cmd, tmp, env)
            print(f"\n{' '.join(cmd[2:])}: {wall:.1f} s wall (exit {proc.returncode}; {others:.2f} cores busy outside "
                  f"it); the quietest tune --demo ({min(walls):.1f} s) is {min(walls) / wall:.0%} of it")


if __name__ == "__main__":
    main()
