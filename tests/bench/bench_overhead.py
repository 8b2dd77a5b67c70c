"""Launcher overhead while training goes well: the demo job through the launcher (A) versus the same
Ultralytics training called directly in a plain subprocess (B), alternated on one machine.

    python tests/bench/bench_overhead.py              # 12 pairs, 5 epochs, 24 train / 8 val images
    python tests/bench/bench_overhead.py --pairs 4 --epochs 5 --train 72   # ~10 min on 2 quiet cores

A: `python -m launcher run --demo --data D --name N --epochs E` in a scratch folder (ladders/demo.toml's
   first rung: rtdetr-l.yaml, 64 px, batch 6, 2 workers, RAM cache, 2 threads, CPU).
B: `RTDETR("rtdetr-l.yaml").train(...)` in a plain `python -c` with the same data, imgsz, batch,
   workers, cache, epochs, device, plots=False and thread count (OMP/MKL/OpenBLAS variables, and
   torch.set_num_threads(2) after Ultralytics' select_device resets it, as the launcher's child does).
Both: YOLO_OFFLINE=1 and one YOLO_CONFIG_DIR holding matplotlib's DejaVuSans.ttf as Arial.ttf (no network).

Everything is read from the outside, the same way in both arms (no code added to either):
- Training speed (the goal: A/B ≥ 0.99): batches per second of the training loop, saves and
  validation excluded. Ultralytics' own progress bar prints, at each epoch's last training batch,
  a frame "N/N <rate> <elapsed>", elapsed from the bar's creation (just before the first batch is
  fetched) to the end of batch N, the callbacks included (A: attempt-1/train.log; B: its stdout).
  A run's speed is N x (epochs 2..E) / the sum of those elapsed times; epoch 1 (warm-up) is left out.
  Elapsed is printed to 0.1 s: more --train images make longer epochs and a finer measure.
  In A the first save (epoch 1) also starts the verified copy, a thread that checks and writes the
  checkpoint while epoch 2 trains, so the speed of epochs 3..E is printed too.
- Outside training batches: each epoch's wall time (results.csv "time" deltas: the previous epoch's
  save, this epoch's batches, its validation) minus its batch time. Less the validation loop's own
  elapsed (its progress bar's last frame) that leaves "between epochs": the previous epoch's save
  (A: by rename, then the launcher's on_model_save; the first also reads the checkpoint for the
  verified copy) and the epoch changeover. A minus B is the launcher's extra per epoch.
- Save: results.csv is appended just before save_model, and last.pt (best.pt on a best epoch) is
  written at its end: from their modification times, polled every 50 ms while the run goes, save k
  lasted mtime(last.pt or best.pt, whichever is later) - mtime(results.csv row k). Saves 2..E-1
  (the first is a warm-up, the last is followed by the final strip). It covers Ultralytics'
  save_model (EMA copy, serialisation, the writes: A new files renamed, B truncating), not the
  launcher's callback after it nor the verified copy (tests/bench/bench_saves.py times those).

Each pair runs A then B, the next B then A: on this 2-core machine the run that goes first in a pair
is often the slower, so the script prints an order-balanced ratio (the geometric mean of the AB
pairs' ratios and of the BA pairs', weighted equally); use an even --pairs. The whole-epoch ratio of
earlier versions (B's epoch time / A's, saves and validation included) is printed as context.

Also per run: wall time (start to exit), CPU seconds of the whole process tree (wait4's rusage:
every descendant reaped), and "others": cores busy outside the run meanwhile (a neighbour's job on a
shared machine; a pair above 0.25 is flagged, its ratio measures the neighbour too, and the ratios
are printed again without the flagged pairs; the medians after them leave those pairs out).
"""

from __future__ import annotations

import argparse
import csv
import json
import math
import os
import platform
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import psutil

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

THREADS = 2  # ladders/demo.toml, rung "optimal"
TRAIN_ARGS = {"imgsz": 64, "batch": 6, "workers": 2, "cache": "ram", "device": "cpu", "plots": False,
              "exist_ok": True, "rect": False}
POLL_S = 0.05  # how often results.csv, last.pt and best.pt are looked at while a run goes
NOISY = 0.25  # a pair whose runs had more cores busy outside them than this is flagged

# B: the plain Ultralytics call. The two callbacks only restore the thread count that Ultralytics'
# select_device resets to min(8, CPUs - 1) on the CPU (the launcher's child does the same).
DIRECT = r"""
import json, sys
import torch
from ultralytics import RTDETR
args = json.loads(sys.argv[1])
threads = args.pop("threads")
def set_threads(_):
    torch.set_num_threads(threads)
model = RTDETR("rtdetr-l.yaml")
model.add_callback("on_pretrain_routine_start", set_threads)
model.add_callback("on_train_start", set_threads)
model.train(**args)
"""

ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")
# the end of a progress-bar frame at 100%: "N/N [rate] elapsed", elapsed "7.0s", "1:05" or "1:02:03"
DONE = re.compile(r": 100% \S+ (\d+)/(\d+)(?: +\S+/\S+)? +(\d+(?:\.\d+)?s|\d+:\d\d(?::\d\d)?)\s*$")
TRAIN_FRAME = re.compile(r"^\s*(\d+)/(\d+)\s+\S+G\s")  # "        2/4         0G      1.734 ..."


def machine() -> str:
    import torch
    import ultralytics
    return (f"machine: {platform.machine()}, {os.cpu_count()} CPUs ({platform.processor() or 'cpu'}), "
            f"Python {platform.python_version()}, torch {torch.__version__}, ultralytics {ultralytics.__version__}")


def config_dir(tmp: Path) -> Path:
    """A YOLO_CONFIG_DIR with a local Arial.ttf, so Ultralytics' font check does not download."""
    import matplotlib
    d = tmp / "yolo-config"
    d.mkdir(parents=True, exist_ok=True)
    font = Path(matplotlib.get_data_path()) / "fonts" / "ttf" / "DejaVuSans.ttf"
    for name in ("Arial.ttf", "Arial.Unicode.ttf"):
        shutil.copyfile(font, d / name)
    return d


def seconds(text: str) -> float:
    """Ultralytics' TQDM elapsed: "7.0s", or "m:ss" / "h:mm:ss" from 59.95 s on."""
    if text.endswith("s"):
        return float(text[:-1])
    n = 0
    for part in text.split(":"):
        n = n * 60 + int(part)
    return float(n)


def progress(log: str) -> tuple[dict[int, tuple[int, float]], dict[int, float]]:
    """From a run's output: {epoch: (batches, seconds)} of each epoch's training loop (its last
    frame) and {epoch: seconds} of the validation loop that follows it (the first validation bar
    after the epoch's training bar; the final validation of best.pt comes after the last epoch's)."""
    train: dict[int, tuple[int, float]] = {}
    val: dict[int, float] = {}
    epoch = None
    for frame in re.split(r"[\r\n]", ANSI.sub("", log)):
        done = DONE.search(frame)
        if not done or done[1] != done[2]:
            continue
        if m := TRAIN_FRAME.match(frame):
            epoch = int(m[1])
            train[epoch] = (int(done[2]), seconds(done[3]))
        elif "mAP50" in frame and epoch is not None and epoch not in val:
            val[epoch] = seconds(done[3])
    return train, val


def csv_times(results_csv: Path) -> list[float]:
    """results.csv's cumulative "time" column: seconds from the start of training to each epoch's row."""
    with open(results_csv, newline="") as f:
        rows = [{k.strip(): v for k, v in row.items()} for row in csv.DictReader(f)]
    return [float(r["time"]) for r in rows]


def group(values: list[float], orders: list[str], order: str) -> float:
    """Geometric mean of the ratios of the pairs run in `order`."""
    return math.exp(statistics.fmean(math.log(v) for v, o in zip(values, orders) if o == order))


def balanced(values: list[float], orders: list[str]) -> float:
    """The ratio with the pair-position effect cancelled: AB and BA pairs weighted equally."""
    return math.sqrt(group(values, orders, "AB") * group(values, orders, "BA"))


def busy_seconds() -> float:
    """CPU seconds the whole machine has spent busy (all cores, everything but idle and iowait)."""
    t = psutil.cpu_times()
    return sum(t) - t.idle - getattr(t, "iowait", 0.0)


class Mtimes:
    """The distinct modification times results.csv, last.pt and best.pt take while a run goes."""

    NAMES = ("results.csv", "weights/last.pt", "weights/best.pt")

    def __init__(self, save_dir: Callable[[], Path | None]):
        self.save_dir = save_dir
        self.seen: dict[str, list[float]] = {n: [] for n in self.NAMES}

    def poll(self) -> None:
        d = self.save_dir()
        if d is None:
            return
        for name in self.NAMES:
            try:
                t = os.stat(d / name).st_mtime
            except OSError:
                continue
            if not self.seen[name] or self.seen[name][-1] != t:
                self.seen[name].append(t)

    def saves(self) -> dict[int, tuple[float, bool]]:
        """{epoch k: (seconds of save k, whether it wrote best.pt too)} for k < the last epoch:
        from results.csv's row k to the last write of last.pt/best.pt before row k + 1."""
        rows, out = self.seen["results.csv"], {}
        for k, (r0, r1) in enumerate(zip(rows, rows[1:]), 1):
            last = [t for t in self.seen["weights/last.pt"] if r0 < t < r1]
            best = [t for t in self.seen["weights/best.pt"] if r0 < t < r1]
            if last:
                out[k] = (max(last + best) - r0, bool(best))
        return out


@dataclass
class Run:
    wall: float  # seconds, start to exit
    cpu: float  # CPU seconds of the run's whole process tree (wait4: every descendant it reaped)
    others: float  # cores used by everything else on the machine meanwhile (noise: another job)
    train: dict[int, tuple[int, float]]  # epoch: (batches, seconds of its training loop)
    val: dict[int, float]  # epoch: seconds of its validation loop
    epoch: dict[int, float]  # epoch k ≥ 2: results.csv time[k] - time[k-1]
    saves: dict[int, tuple[float, bool]] = field(default_factory=dict)  # epoch: (save seconds, best.pt too)

    def it_s(self, first: int = 2, last: int | None = None) -> float:
        """Training batches per second over epochs first..last (default: to the last)."""
        ks = [k for k in self.train if k >= first and (last is None or k <= last)]
        return sum(self.train[k][0] for k in ks) / sum(self.train[k][1] for k in ks)

    def median_epoch(self) -> float:
        """The median of epochs 2..E's batches per second (one slow epoch does not move it)."""
        return statistics.median(n / s for k, (n, s) in self.train.items() if k >= 2)

    def fastest(self) -> float:
        return max(n / s for k, (n, s) in self.train.items() if k >= 2)

    def outside(self) -> dict[int, float]:
        """Per steady epoch: wall time minus the training loop's (validation, previous save, changeover)."""
        return {k: t - self.train[k][1] for k, t in self.epoch.items() if k in self.train}

    def between(self) -> dict[int, float]:
        """Per steady epoch: wall time minus the training and validation loops' (save k-1, changeover)."""
        return {k: t - self.val[k] for k, t in self.outside().items() if k in self.val}

    def steady_saves(self) -> list[float]:
        return [s for k, (s, _) in self.saves.items() if k >= 2]


def run(cmd: list[str], cwd: Path, env: dict[str, str], log: Path, mtimes: Mtimes) -> tuple[float, float, float]:
    """(wall seconds, the tree's CPU seconds, cores busy outside the tree); raises on a failed run."""
    me0, busy0 = psutil.Process().cpu_times(), busy_seconds()
    t0 = time.perf_counter()
    with open(log, "wb") as out:
        proc = subprocess.Popen(cmd, cwd=cwd, env=env, stdout=out, stderr=subprocess.STDOUT)
        while True:  # wait4 rather than Popen.wait: its rusage covers the descendants the run reaped
            pid, status, usage = os.wait4(proc.pid, os.WNOHANG)
            if pid:
                break
            mtimes.poll()
            time.sleep(POLL_S)
    wall = time.perf_counter() - t0
    proc.returncode = os.waitstatus_to_exitcode(status)
    me1, busy1 = psutil.Process().cpu_times(), busy_seconds()
    cpu = usage.ru_utime + usage.ru_stime
    mine = (me1.user + me1.system) - (me0.user + me0.system)
    others = max(0.0, (busy1 - busy0) - cpu - mine) / wall
    if proc.returncode:
        tail = log.read_text(errors="replace")[-3000:]
        raise SystemExit(f"{' '.join(cmd[:6])} ... exited {proc.returncode}; log {log}:\n{tail}")
    return wall, cpu, others


def measured(wall: float, cpu: float, others: float, log: Path, save_dir: Path, mtimes: Mtimes, epochs: int) -> Run:
    train, val = progress(log.read_text(encoding="utf-8", errors="replace"))
    t = csv_times(save_dir / "results.csv")
    if sorted(train) != list(range(1, epochs + 1)) or len(t) != epochs:
        raise SystemExit(f"{log}: {len(train)} training bars and {len(t)} results.csv rows for {epochs} epochs")
    return Run(wall, cpu, others, train, val, {k + 1: b - a for k, (a, b) in enumerate(zip(t, t[1:]), 1)},
               mtimes.saves())


def launcher_run(tmp: Path, data: Path, epochs: int, name: str, env: dict) -> Run:
    cmd = [sys.executable, "-m", "launcher", "run", "--demo", "--data", str(data), "--name", name,
           "--epochs", str(epochs)]
    models = tmp / "logs" / name / "models"  # models/<stem>-<hash>/: found once the child makes it

    def save_dir() -> Path | None:
        return next(models.glob("rtdetr-l*/"), None) if models.is_dir() else None

    mtimes = Mtimes(save_dir)
    wall, cpu, others = run(cmd, tmp, env, tmp / f"{name}.out", mtimes)
    return measured(wall, cpu, others, tmp / "logs" / name / "attempt-1" / "train.log", save_dir(), mtimes, epochs)


def direct_run(tmp: Path, data: Path, epochs: int, name: str, env: dict) -> Run:
    save_dir = tmp / "direct" / name
    args = {**TRAIN_ARGS, "data": str(data), "epochs": epochs, "save_dir": str(save_dir), "threads": THREADS}
    env = {**env, "YOLO_OFFLINE": "1", "YOLO_AUTOINSTALL": "False",
           **{v: str(THREADS) for v in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS")}}
    mtimes = Mtimes(lambda: save_dir)
    wall, cpu, others = run([sys.executable, "-c", DIRECT, json.dumps(args)], tmp, env, tmp / f"{name}.out", mtimes)
    return measured(wall, cpu, others, tmp / f"{name}.out", save_dir, mtimes, epochs)


def spread(values: list[float], fmt: str = ".3f") -> str:
    med = statistics.median(values)
    q1, _, q3 = statistics.quantiles(values, n=4, method="inclusive") if len(values) > 1 else (med, med, med)
    return f"median {med:{fmt}}, min–max {min(values):{fmt}}–{max(values):{fmt}}, IQR {q1:{fmt}}–{q3:{fmt}}"


def median_or_nan(values: list[float]) -> float:
    return statistics.median(values) if values else math.nan


def print_ratios(pairs: list[tuple[str, Run, Run]], epochs: int, which: str) -> None:
    """The A/B speed ratios of these pairs: median and spread, and order-balanced."""
    orders = [p[0] for p in pairs]
    both = len(set(orders)) == 2
    print(f"{which}:")

    def ratio_line(what: str, values: list[float]) -> str:
        line = f"  {what}, {len(values)} pairs: {spread(values)}"
        if both:
            line += (f"; order-balanced {balanced(values, orders):.3f} (AB pairs {group(values, orders, 'AB'):.3f}, "
                     f"BA pairs {group(values, orders, 'BA'):.3f})")
        return line

    speed = [a.it_s() / b.it_s() for _, a, b in pairs]
    headline = balanced(speed, orders) if both else statistics.median(speed)
    print(ratio_line("training speed A/B (it/s, epochs 2..E)", speed)
          + f"  (goal ≥ 0.99: {'met' if headline >= 0.99 else 'NOT met'})")
    if epochs >= 4:
        print(ratio_line("training speed A/B, epochs 3..E (after A's first verified copy)",
                         [a.it_s(3) / b.it_s(3) for _, a, b in pairs]))
        print(ratio_line("training speed A/B, epoch 2 alone (A's first verified copy runs beside it)",
                         [a.it_s(2, 2) / b.it_s(2, 2) for _, a, b in pairs]))
    print(ratio_line("median steady epoch's speed A/B", [a.median_epoch() / b.median_epoch() for _, a, b in pairs]))
    print(ratio_line("fastest steady epoch's speed A/B", [a.fastest() / b.fastest() for _, a, b in pairs]))
    print(ratio_line("context, whole steady epochs (B s/epoch / A s/epoch, saves and validation included)",
                     [statistics.fmean(b.epoch.values()) / statistics.fmean(a.epoch.values()) for _, a, b in pairs]))
    if orders.count("AB") != orders.count("BA"):
        print(f"  note: {orders.count('AB')} AB and {orders.count('BA')} BA pairs: the median leans with the "
              "majority order; use an even --pairs")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--pairs", type=int, default=12, help="A/B pairs (default 12; even, so AB and BA balance)")
    ap.add_argument("--epochs", type=int, default=5, help="epochs per run, ≥ 3 (default 5: 4 steady epochs)")
    ap.add_argument("--train", type=int, default=24, help="generated train images (default 24: 4 batches of 6)")
    ap.add_argument("--val", type=int, default=8, help="generated val images (default 8)")
    ap.add_argument("--keep", metavar="DIR", help="work in DIR and keep it (default: a temporary folder)")
    args = ap.parse_args()
    if args.epochs < 3:
        ap.error("--epochs must be at least 3 (two steady epochs after the first)")

    from launcher.demo import make_dataset

    print(machine())
    print(f"data: {args.train} train / {args.val} val generated images; {args.epochs} epochs a run, "
          f"{TRAIN_ARGS['imgsz']} px, batch {TRAIN_ARGS['batch']}, workers {TRAIN_ARGS['workers']}, "
          f"cache {TRAIN_ARGS['cache']}, {THREADS} threads, CPU; {args.pairs} pairs, A/B order alternating; "
          f"load average {' '.join(f'{x:.2f}' for x in os.getloadavg())}", flush=True)
    tmp_ctx = tempfile.TemporaryDirectory(prefix="bench-overhead-") if not args.keep else None
    tmp = Path(args.keep or tmp_ctx.name).resolve()
    tmp.mkdir(parents=True, exist_ok=True)
    try:
        data = make_dataset(tmp / "data", train=args.train, val=args.val)
        env = {**os.environ, "YOLO_CONFIG_DIR": str(config_dir(tmp))}
        env.pop("RTDETR_LAUNCHER_PRETRAINED", None)
        stamp = time.strftime("%H%M%S")
        pairs: list[tuple[str, Run, Run]] = []
        print("A launcher, B direct. it/s: training batches per second, epochs 2..E; between: s per epoch outside "
              "the training and validation loops (the previous save, the changeover); save: s of save_model, "
              "saves 2..E-1; others: cores busy outside the run")
        print(f"{'pair':>4} {'order':>5}  {'it/s A':>6} {'B':>6} {'A/B':>6}  {'between A':>9} {'B':>5}  "
              f"{'save A':>6} {'B':>5}  {'wall A':>7} {'B':>6}  {'CPU-s A':>7} {'B':>6}  {'others A':>8} {'B':>5}",
              flush=True)
        for i in range(1, args.pairs + 1):
            order = "AB" if i % 2 else "BA"
            res: dict[str, Run] = {}
            for which in order:
                name = f"{'launcher' if which == 'A' else 'direct'}-{stamp}-{i}"
                fn = launcher_run if which == "A" else direct_run
                res[which] = fn(tmp, data, args.epochs, name, env)
            a, b = res["A"], res["B"]
            pairs.append((order, a, b))
            print(f"{i:>4} {order:>5}  {a.it_s():6.3f} {b.it_s():6.3f} {a.it_s() / b.it_s():6.3f}  "
                  f"{median_or_nan(list(a.between().values())):9.2f} {median_or_nan(list(b.between().values())):5.2f}  "
                  f"{median_or_nan(a.steady_saves()):6.2f} {median_or_nan(b.steady_saves()):5.2f}  "
                  f"{a.wall:6.1f}s {b.wall:5.1f}s  {a.cpu:7.1f} {b.cpu:6.1f}  {a.others:8.2f} {b.others:5.2f}",
                  flush=True)
        noisy = [i for i, p in enumerate(pairs, 1) if max(p[1].others, p[2].others) > NOISY]
        print_ratios(pairs, args.epochs, "all pairs")
        quiet = [p for i, p in enumerate(pairs, 1) if i not in noisy]
        if noisy and quiet:
            print_ratios(quiet, args.epochs, f"quiet pairs only (without pairs {noisy})")

        basis = quiet or pairs  # the medians below leave noisy pairs out when there are quiet ones

        def per_run(f: Callable[[Run], float], fmt: str = ".2f") -> str:
            return (f"A {statistics.median(f(p[1]) for p in basis):{fmt}}, "
                    f"B {statistics.median(f(p[2]) for p in basis):{fmt}}")

        n_steady = args.epochs - 1
        print(f"below: medians over {'the quiet pairs' if noisy and quiet else 'all pairs'}")
        print(f"per run (median of runs): wall {per_run(lambda r: r.wall, '.1f')} s; CPU-s of the process tree "
              f"{per_run(lambda r: r.cpu, '.1f')}; it/s {per_run(lambda r: r.it_s(), '.3f')}")
        print(f"per run, {n_steady} steady epochs (median of runs): epoch wall total "
              f"{per_run(lambda r: sum(r.epoch.values()))} s, in training batches "
              f"{per_run(lambda r: sum(r.train[k][1] for k in r.epoch))} s, outside training batches "
              f"{per_run(lambda r: sum(r.outside().values()))} s (of which validation loops "
              f"{per_run(lambda r: sum(r.val[k] for k in r.epoch if k in r.val))} s, between "
              f"{per_run(lambda r: sum(r.between().values()))} s)")
        diff = [median_or_nan(list(a.between().values())) - median_or_nan(list(b.between().values()))
                for _, a, b in basis]
        print(f"between epochs, A - B per epoch (each run's median over epochs 2..E): {spread(diff, '+.2f')} s")
        for k in range(2, args.epochs + 1):
            what = "save 1 + A's first verified copy read" if k == 2 else f"save {k - 1}"
            print(f"  epoch {k} ({what}): A {median_or_nan([a.between().get(k, math.nan) for _, a, _ in basis]):.2f} s, "
                  f"B {median_or_nan([b.between().get(k, math.nan) for _, _, b in basis]):.2f} s (medians)")
        sa = [s for _, a, _ in basis for s in a.steady_saves()]
        sb = [s for _, _, b in basis for s in b.steady_saves()]
        best = lambda r: sum(1 for k, (_, w) in r.saves.items() if k >= 2 and w)  # noqa: E731
        if sa and sb:
            print(f"save_model from the outside (results.csv row → last write of last.pt/best.pt), saves 2..E-1: "
                  f"A {spread(sa, '.2f')} s ({len(sa)} saves, {sum(best(p[1]) for p in basis)} with best.pt); "
                  f"B {spread(sb, '.2f')} s ({len(sb)} saves, {sum(best(p[2]) for p in basis)} with best.pt)")
            for w, what in ((False, "last.pt only"), (True, "last.pt and best.pt")):
                xa = [x for _, a, _ in basis for k, (x, b) in a.saves.items() if k >= 2 and b == w]
                xb = [x for _, _, b in basis for k, (x, bb) in b.saves.items() if k >= 2 and bb == w]
                print(f"  saves writing {what}: A median {median_or_nan(xa):.2f} s ({len(xa)}), "
                      f"B {median_or_nan(xb):.2f} s ({len(xb)})")
            s1a = [a.saves[1][0] for _, a, _ in basis if 1 in a.saves]
            s1b = [b.saves[1][0] for _, _, b in basis if 1 in b.saves]
            if s1a and s1b:
                print(f"  save 1 (warm-up): A median {statistics.median(s1a):.2f} s, B {statistics.median(s1b):.2f} s")
        if noisy:
            print(f"note: pairs {noisy} ran beside other work (> {NOISY} cores busy outside the run): their ratio "
                  "measures the neighbour as much as the launcher; rerun on a quiet machine")
        print(f"load average at the end: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
        print("per epoch k=1..E, training loop s (batches N): " + "; ".join(
            f"pair {i}: A {[r[1] for _, r in sorted(p[1].train.items())]} B {[r[1] for _, r in sorted(p[2].train.items())]}"
            for i, p in enumerate(pairs, 1)) + f" (N = {pairs[0][1].train[1][0]})")
        print("per epoch k=2..E, between s: " + "; ".join(
            f"pair {i}: A {[round(v, 2) for _, v in sorted(p[1].between().items())]} "
            f"B {[round(v, 2) for _, v in sorted(p[2].between().items())]}" for i, p in enumerate(pairs, 1)))
    finally:
        if tmp_ctx:
            tmp_ctx.cleanup()


if __name__ == "__main__":
    main()
