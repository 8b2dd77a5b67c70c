"""Launcher overhead while training goes well: the demo job through the launcher (A) versus the same
Ultralytics training called directly in a plain subprocess (B), alternated on one machine.

    python tests/bench/bench_overhead.py              # 5 pairs, 4 epochs, 24 train / 8 val images
    python tests/bench/bench_overhead.py --pairs 7 --epochs 5

A: `python -m launcher run --demo --data D --name N --epochs E` in a scratch folder (ladders/demo.toml's
   first rung: rtdetr-l.yaml, 64 px, batch 6, 2 workers, RAM cache, 2 threads, CPU).
B: `RTDETR("rtdetr-l.yaml").train(...)` in a plain `python -c` with the same data, imgsz, batch,
   workers, cache, epochs, device, plots=False and thread count (OMP/MKL/OpenBLAS variables, and
   torch.set_num_threads(2) after Ultralytics' select_device resets it, as the launcher's child does).
Both: YOLO_OFFLINE=1 and one YOLO_CONFIG_DIR holding matplotlib's DejaVuSans.ttf as Arial.ttf (no network).

Each pair runs A then B, the next B then A (so a drift of the machine's load cancels out). The epoch
time of a run is its mean steady epoch: Ultralytics' results.csv "time" column is cumulative
seconds, so epoch k's time is time[k] - time[k-1]; the first epoch (setup, warm-up) is left out. It
includes each epoch's training, validation and the previous epoch's checkpoint save (with the
launcher's verified copy). Per pair: speed ratio = direct epoch time / launcher epoch time (≥ 1: the
launcher is as fast). Target (issue 6, benchmark 2): median ≥ 0.98.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

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


def run(cmd: list[str], cwd: Path, env: dict[str, str], log: Path) -> tuple[float, float]:
    """(wall seconds, mean 1-min load average seen during the run); raises on a failed run."""
    loads = []
    t0 = time.perf_counter()
    with open(log, "wb") as out:
        proc = subprocess.Popen(cmd, cwd=cwd, env=env, stdout=out, stderr=subprocess.STDOUT)
        while proc.poll() is None:
            loads.append(os.getloadavg()[0])
            time.sleep(1.0)
    wall = time.perf_counter() - t0
    if proc.returncode:
        tail = log.read_text(errors="replace")[-3000:]
        raise SystemExit(f"{' '.join(cmd[:6])} ... exited {proc.returncode}; log {log}:\n{tail}")
    return wall, statistics.fmean(loads) if loads else os.getloadavg()[0]


def launcher_run(tmp: Path, data: Path, epochs: int, name: str, env: dict) -> tuple[float, list[float], float]:
    cmd = [sys.executable, "-m", "launcher", "run", "--demo", "--data", str(data), "--name", name,
           "--epochs", str(epochs)]
    wall, load = run(cmd, tmp, env, tmp / f"{name}.out")
    return wall, steady_epochs(tmp / "logs" / name / "models" / "rtdetr-l" / "results.csv"), load


def direct_run(tmp: Path, data: Path, epochs: int, name: str, env: dict) -> tuple[float, list[float], float]:
    save_dir = tmp / "direct" / name
    args = {**TRAIN_ARGS, "data": str(data), "epochs": epochs, "save_dir": str(save_dir), "threads": THREADS}
    env = {**env, "YOLO_OFFLINE": "1", "YOLO_AUTOINSTALL": "False",
           **{v: str(THREADS) for v in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS")}}
    wall, load = run([sys.executable, "-c", DIRECT, json.dumps(args)], tmp, env, tmp / f"{name}.out")
    return wall, steady_epochs(save_dir / "results.csv"), load


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--pairs", type=int, default=5, help="A/B pairs (default 5; at least 5 for the README number)")
    ap.add_argument("--epochs", type=int, default=4, help="epochs per run, ≥ 3 (default 4: 3 steady epochs)")
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
        ratios, rows = [], []
        print(f"{'pair':>4} {'order':>5}  {'launcher s/epoch':>16} {'direct s/epoch':>15} {'ratio':>6}  "
              f"{'wall A':>7} {'wall B':>7}  {'load A':>6} {'load B':>6}", flush=True)
        for i in range(1, args.pairs + 1):
            order = ("A", "B") if i % 2 else ("B", "A")
            res = {}
            for which in order:
                name = f"{'launcher' if which == 'A' else 'direct'}-{stamp}-{i}"
                fn = launcher_run if which == "A" else direct_run
                res[which] = fn(tmp, data, args.epochs, name, env)
            (wa, ea, la), (wb, eb, lb) = res["A"], res["B"]
            ta, tb = statistics.fmean(ea), statistics.fmean(eb)
            ratio = tb / ta
            ratios.append(ratio)
            rows.append({"pair": i, "order": "".join(order), "launcher_epochs_s": ea, "direct_epochs_s": eb,
                         "ratio": ratio, "wall_launcher_s": wa, "wall_direct_s": wb})
            print(f"{i:>4} {''.join(order):>5}  {ta:16.2f} {tb:15.2f} {ratio:6.3f}  {wa:6.1f}s {wb:6.1f}s  "
                  f"{la:6.2f} {lb:6.2f}", flush=True)
        med = statistics.median(ratios)
        q1, _, q3 = statistics.quantiles(ratios, n=4, method="inclusive") if len(ratios) > 1 else (med, med, med)
        walls_a = [r["wall_launcher_s"] for r in rows]
        walls_b = [r["wall_direct_s"] for r in rows]
        print(f"speed ratio (direct epoch time / launcher epoch time), {len(ratios)} pairs: median {med:.3f}, "
              f"min–max {min(ratios):.3f}–{max(ratios):.3f}, IQR {q1:.3f}–{q3:.3f}  "
              f"(target: median ≥ 0.98: {'met' if med >= 0.98 else 'NOT met'})")
        print(f"wall time per run (median): launcher {statistics.median(walls_a):.1f} s, direct "
              f"{statistics.median(walls_b):.1f} s (both include start-up and the final validation; the launcher's "
              f"also its own start-up, probe and run record)")
        print("per-run steady epoch times (s): " + "; ".join(
            f"pair {r['pair']}: A {[round(x, 2) for x in r['launcher_epochs_s']]} "
            f"B {[round(x, 2) for x in r['direct_epochs_s']]}" for r in rows))
    finally:
        if tmp_ctx:
            tmp_ctx.cleanup()


if __name__ == "__main__":
    main()
