"""Launcher overhead while training goes well: the demo job through the launcher (A) versus the same
Ultralytics training called directly in a plain subprocess (B), alternated on one machine.

    python tests/bench/bench_overhead.py              # 12 pairs, 5 epochs, 24 train / 8 val images (~25 min)
    python tests/bench/bench_overhead.py --pairs 6 --epochs 4

A: `python -m launcher run --demo --data D --name N --epochs E` in a scratch folder (ladders/demo.toml's
   first rung: rtdetr-l.yaml, 64 px, batch 6, 2 workers, RAM cache, 2 threads, CPU).
B: `RTDETR("rtdetr-l.yaml").train(...)` in a plain `python -c` with the same data, imgsz, batch,
   workers, cache, epochs, device, plots=False and thread count (OMP/MKL/OpenBLAS variables, and
   torch.set_num_threads(2) after Ultralytics' select_device resets it, as the launcher's child does).
Both: YOLO_OFFLINE=1 and one YOLO_CONFIG_DIR holding matplotlib's DejaVuSans.ttf as Arial.ttf (no network).

Each pair runs A then B, the next B then A (so a drift of the machine's load cancels out). The epoch
time of a run is its mean steady epoch: Ultralytics' results.csv "time" column is cumulative
seconds, so epoch k's time is time[k] - time[k-1]; the first epoch (setup, warm-up) is left out. It
includes each epoch's training, validation and the previous epoch's checkpoint save (through the
launcher's rename and spare, and its verified copy when one is due). Per pair: speed ratio = direct epoch time / launcher epoch time (≥ 1: the
launcher is as fast). Target (issue 6, benchmark 2): median ≥ 0.98.

On this 2-core machine the position in a pair can matter as much as the launcher: in one 9-pair run
the run that went first was the slower one (AB pairs 0.76–0.98, BA pairs 0.99–1.11). A median over
an odd number of pairs, or over unequal numbers of AB and BA pairs, leans with the majority order,
so the script also prints an order-balanced ratio: the geometric mean of the AB pairs' ratios and
of the BA pairs' ratios, weighted equally. Use an even number of pairs, and enough of them: with 6
the median moved by several per cent between runs of the same code (the default is 12).

Also per run: wall time (start to exit), CPU seconds of the whole process tree (wait4's rusage:
every descendant reaped), and "others": cores busy outside the run meanwhile (a neighbour's job on a
shared machine; a pair above 0.25 is flagged, its ratio measures the neighbour too).
"""

from __future__ import annotations

import argparse
import csv
import json
import math
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import psutil

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

THREADS = 2  # ladders/demo.toml, rung "optimal"
TRAIN_ARGS = {"imgsz": 64, "batch": 6, "workers": 2, "cache": "ram", "device": "cpu", "plots": False,
              "exist_ok": True, "rect": False}

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


def steady_epochs(results_csv: Path) -> list[float]:
    """Seconds per epoch from the cumulative "time" column, the first epoch left out."""
    with open(results_csv, newline="") as f:
        rows = [{k.strip(): v for k, v in row.items()} for row in csv.DictReader(f)]
    t = [float(r["time"]) for r in rows]
    return [b - a for a, b in zip(t, t[1:])]


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


@dataclass
class Run:
    wall: float  # seconds, start to exit
    epochs: list[float]  # steady epoch seconds
    cpu: float  # CPU seconds of the run's whole process tree (wait4: every descendant it reaped)
    others: float  # cores used by everything else on the machine meanwhile (noise: another job)


def run(cmd: list[str], cwd: Path, env: dict[str, str], log: Path) -> tuple[float, float, float]:
    """(wall seconds, the tree's CPU seconds, cores busy outside the tree); raises on a failed run."""
    me0, busy0 = psutil.Process().cpu_times(), busy_seconds()
    t0 = time.perf_counter()
    with open(log, "wb") as out:
        proc = subprocess.Popen(cmd, cwd=cwd, env=env, stdout=out, stderr=subprocess.STDOUT)
        while True:  # wait4 rather than Popen.wait: its rusage covers the descendants the run reaped
            pid, status, usage = os.wait4(proc.pid, os.WNOHANG)
            if pid:
                break
            time.sleep(0.5)
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


def launcher_run(tmp: Path, data: Path, epochs: int, name: str, env: dict) -> Run:
    cmd = [sys.executable, "-m", "launcher", "run", "--demo", "--data", str(data), "--name", name,
           "--epochs", str(epochs)]
    wall, cpu, others = run(cmd, tmp, env, tmp / f"{name}.out")
    return Run(wall, steady_epochs(tmp / "logs" / name / "models" / "rtdetr-l" / "results.csv"), cpu, others)


def direct_run(tmp: Path, data: Path, epochs: int, name: str, env: dict) -> Run:
    save_dir = tmp / "direct" / name
    args = {**TRAIN_ARGS, "data": str(data), "epochs": epochs, "save_dir": str(save_dir), "threads": THREADS}
    env = {**env, "YOLO_OFFLINE": "1", "YOLO_AUTOINSTALL": "False",
           **{v: str(THREADS) for v in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS")}}
    wall, cpu, others = run([sys.executable, "-c", DIRECT, json.dumps(args)], tmp, env, tmp / f"{name}.out")
    return Run(wall, steady_epochs(save_dir / "results.csv"), cpu, others)


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
          f"cache {TRAIN_ARGS['cache']}, {THREADS} threads, CPU; {args.pairs} pairs, A/B order alternating",
          flush=True)
    tmp_ctx = tempfile.TemporaryDirectory(prefix="bench-overhead-") if not args.keep else None
    tmp = Path(args.keep or tmp_ctx.name).resolve()
    tmp.mkdir(parents=True, exist_ok=True)
    try:
        data = make_dataset(tmp / "data", train=args.train, val=args.val)
        env = {**os.environ, "YOLO_CONFIG_DIR": str(config_dir(tmp))}
        env.pop("RTDETR_LAUNCHER_PRETRAINED", None)
        stamp = time.strftime("%H%M%S")
        pairs: list[tuple[str, Run, Run, float]] = []
        print(f"{'pair':>4} {'order':>5}  {'s/epoch A':>9} {'B':>6}  {'ratio':>6}  {'wall A':>7} {'B':>6}  "
              f"{'CPU-s A':>7} {'B':>6}  {'others A':>8} {'B':>5}   (A launcher, B direct; others: cores "
              f"busy outside the run)", flush=True)
        for i in range(1, args.pairs + 1):
            order = "AB" if i % 2 else "BA"
            res: dict[str, Run] = {}
            for which in order:
                name = f"{'launcher' if which == 'A' else 'direct'}-{stamp}-{i}"
                fn = launcher_run if which == "A" else direct_run
                res[which] = fn(tmp, data, args.epochs, name, env)
            a, b = res["A"], res["B"]
            ta, tb = statistics.fmean(a.epochs), statistics.fmean(b.epochs)
            pairs.append((order, a, b, tb / ta))
            print(f"{i:>4} {order:>5}  {ta:9.2f} {tb:6.2f}  {tb / ta:6.3f}  {a.wall:6.1f}s {b.wall:5.1f}s  "
                  f"{a.cpu:7.1f} {b.cpu:6.1f}  {a.others:8.2f} {b.others:5.2f}", flush=True)
        ratios = [p[3] for p in pairs]
        med = statistics.median(ratios)
        q1, _, q3 = statistics.quantiles(ratios, n=4, method="inclusive") if len(ratios) > 1 else (med, med, med)
        print(f"speed ratio (direct epoch time / launcher epoch time), {len(ratios)} pairs: median {med:.3f}, "
              f"min–max {min(ratios):.3f}–{max(ratios):.3f}, IQR {q1:.3f}–{q3:.3f}  "
              f"(target: median ≥ 0.98: {'met' if med >= 0.98 else 'NOT met'})")
        fastest = [min(p[2].epochs) / min(p[1].epochs) for p in pairs]
        print(f"speed ratio of each run's fastest steady epoch (noise only ever adds time): median "
              f"{statistics.median(fastest):.3f}, min–max {min(fastest):.3f}–{max(fastest):.3f}")
        orders = [p[0] for p in pairs]
        if len(set(orders)) == 2:
            for what, values in (("epoch time", ratios), ("fastest epoch", fastest)):
                print(f"order-balanced speed ratio ({what}; AB and BA pairs weighted equally): "
                      f"{balanced(values, orders):.3f}  (AB pairs {group(values, orders, 'AB'):.3f}, "
                      f"BA pairs {group(values, orders, 'BA'):.3f}, geometric means)")
        if orders.count("AB") != orders.count("BA"):
            print(f"note: {orders.count('AB')} AB and {orders.count('BA')} BA pairs: the median leans with the "
                  "majority order; use an even --pairs")
        med_of = lambda f: statistics.median(f(p) for p in pairs)  # noqa: E731
        print(f"per run (median): wall launcher {med_of(lambda p: p[1].wall):.1f} s, direct "
              f"{med_of(lambda p: p[2].wall):.1f} s; CPU of the whole process tree launcher "
              f"{med_of(lambda p: p[1].cpu):.1f} s, direct {med_of(lambda p: p[2].cpu):.1f} s")
        noisy = [i for i, p in enumerate(pairs, 1) if max(p[1].others, p[2].others) > 0.25]
        if noisy:
            print(f"note: pairs {noisy} ran beside other work (> 0.25 cores busy outside the run): their ratio "
                  "measures the neighbour as much as the launcher; rerun on a quiet machine")
        print("steady epoch times (s): " + "; ".join(
            f"pair {i}: A {[round(x, 2) for x in p[1].epochs]} B {[round(x, 2) for x in p[2].epochs]}"
            for i, p in enumerate(pairs, 1)))
    finally:
        if tmp_ctx:
            tmp_ctx.cleanup()


if __name__ == "__main__":
    main()
