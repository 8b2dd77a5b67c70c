"""Benchmark rtdetr-l against rtdetr-mnv4: size, training memory and speed.

    python tests/bench/bench_models.py            # CPU numbers; GPU numbers too when CUDA is available
    python tests/bench/bench_models.py --quick    # CPU memory at 320 px instead of 640 (slow CPUs)

Prints, per model: parameters and GFLOPs at 640 px; peak RSS of one CPU training step (forward +
RT-DETR loss + backward + optimizer step) at batch 2, 4 and 6; seconds per CPU iteration at 64 px;
and, on CUDA, `torch.cuda.max_memory_allocated` and it/s at 640 px for batch 6 and 2 (with AMP, as
the Ultralytics trainer trains on GPU). Every memory/speed measurement runs in a fresh subprocess so
that peaks do not leak from one into the next. Random init throughout: no network needed.

The step mirrors RTDETRTrainer: the model is built the way `get_model` builds it
(RTDETRDetectionModel from the YAML), the batch dict has the keys `RTDETRDetectionModel.loss` reads
(img in [0, 1], cls (N, 1), bboxes (N, 4) normalised xywh, batch_idx (N,)). It leaves out what the
trainer adds on top: the EMA copy of the weights (one model's worth of parameters) and the dataloader.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
MODELS = {
    "rtdetr-l": "rtdetr-l.yaml",  # Ultralytics' own YAML: random init, no download
    "rtdetr-mnv4": str(ROOT / "launcher" / "models" / "rtdetr-mnv4.yaml"),
}
BOXES_PER_IMAGE = 8


def _setup():
    sys.path.insert(0, str(ROOT))
    os.environ.setdefault("YOLO_OFFLINE", "1")
    os.environ.pop("RTDETR_LAUNCHER_PRETRAINED", None)
    import torch

    import launcher.models.mnv4  # noqa: F401  (registers the backbone with Ultralytics)

    torch.set_num_threads(os.cpu_count() or 1)
    return torch


def _build(torch, name: str, device: str):
    from ultralytics.nn.tasks import RTDETRDetectionModel

    model = RTDETRDetectionModel(MODELS[name], nc=80, verbose=False).to(device)
    model.nc, model.names = 80, {i: str(i) for i in range(80)}  # what the trainer's set_model_attributes adds
    model.train()
    return model


def _fake_batch(torch, batch: int, imgsz: int, device: str, seed: int = 0) -> dict:
    g = torch.Generator().manual_seed(seed)
    n = batch * BOXES_PER_IMAGE
    wh = 0.05 + 0.3 * torch.rand(n, 2, generator=g)
    xy = wh / 2 + (1 - wh) * torch.rand(n, 2, generator=g)
    return {
        "img": torch.rand(batch, 3, imgsz, imgsz, generator=g).to(device),
        "cls": torch.randint(0, 80, (n, 1), generator=g).float().to(device),
        "bboxes": torch.cat([xy, wh], 1).to(device),
        "batch_idx": torch.arange(batch).repeat_interleave(BOXES_PER_IMAGE).float().to(device),
    }


def _rss_mib() -> float:
    import psutil

    return psutil.Process().memory_info().rss / 2**20


def _peak_rss_mib() -> float:
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux: KiB


def measure(name: str, batch: int, imgsz: int, device: str, steps: int, warmup: int) -> dict:
    """One measurement, in this (fresh) process: build, then `warmup` + `steps` training steps."""
    torch = _setup()
    model = _build(torch, name, device)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4)
    cuda = device.startswith("cuda")
    scaler = torch.amp.GradScaler("cuda", enabled=cuda)
    data = _fake_batch(torch, batch, imgsz, device)
    rss_before = _rss_mib()
    if cuda:
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()

    def step():
        with torch.autocast("cuda", enabled=cuda):
            loss, _ = model.loss(data)
        scaler.scale(loss.sum()).backward()
        scaler.step(opt)
        scaler.update()
        opt.zero_grad(set_to_none=True)

    for _ in range(warmup):
        step()
    if cuda:
        torch.cuda.synchronize()
    times = []
    for _ in range(steps):
        t0 = time.perf_counter()
        step()
        if cuda:
            torch.cuda.synchronize()
        times.append(time.perf_counter() - t0)
    times.sort()
    out = {
        "model": name,
        "batch": batch,
        "imgsz": imgsz,
        "device": device,
        "s_per_it": sum(times) / len(times),
        "s_per_it_median": times[len(times) // 2],
        "s_per_it_min": times[0],
        "rss_before_step_mib": rss_before,
        "peak_rss_mib": _peak_rss_mib(),
    }
    if cuda:
        out["cuda_max_allocated_mib"] = torch.cuda.max_memory_allocated() / 2**20
        out["cuda_max_reserved_mib"] = torch.cuda.max_memory_reserved() / 2**20
        out["gpu"] = torch.cuda.get_device_name()
    return out


def run_child(name: str, batch: int, imgsz: int, device: str, steps: int, warmup: int, timeout: float) -> dict:
    cmd = [sys.executable, __file__, "--child", name, str(batch), str(imgsz), device, str(steps), str(warmup)]
    try:
        p = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        return {"model": name, "batch": batch, "imgsz": imgsz, "device": device, "error": f"timeout {timeout}s"}
    lines = [ln for ln in p.stdout.splitlines() if ln.startswith("{")]
    if p.returncode or not lines:
        tail = (p.stderr or p.stdout).strip().splitlines()[-3:]
        return {"model": name, "batch": batch, "imgsz": imgsz, "device": device, "error": " | ".join(tail)}
    return json.loads(lines[-1])


def size_table() -> list[dict]:
    torch = _setup()
    from ultralytics.utils.torch_utils import get_flops

    rows = []
    for name in MODELS:
        model = _build(torch, name, "cpu")
        rows.append(
            {
                "model": name,
                "params_M": sum(p.numel() for p in model.parameters()) / 1e6,
                "gflops_640": get_flops(model, 640),
            }
        )
    return rows


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--child", nargs=6, metavar=("MODEL", "BATCH", "IMGSZ", "DEVICE", "STEPS", "WARMUP"))
    ap.add_argument("--quick", action="store_true", help="CPU memory at 320 px instead of 640")
    ap.add_argument("--mem-imgsz", type=int, default=None, help="image size for CPU peak-RSS (default 640)")
    ap.add_argument("--batches", default="2,4,6")
    ap.add_argument("--no-gpu", action="store_true")
    ap.add_argument("--only-gpu", action="store_true")
    ap.add_argument("--timeout", type=float, default=900)
    a = ap.parse_args(argv)
    if a.child:
        name, batch, imgsz, device, steps, warmup = a.child
        print(json.dumps(measure(name, int(batch), int(imgsz), device, int(steps), int(warmup))), flush=True)
        return 0

    mem_imgsz = a.mem_imgsz or (320 if a.quick else 640)
    batches = [int(b) for b in a.batches.split(",")]
    print(f"python {sys.version.split()[0]}, {os.cpu_count()} CPUs", flush=True)
    if not a.only_gpu:
        print("\n== size ==")
        for r in size_table():
            print(f"{r['model']:<12} params {r['params_M']:7.2f} M   GFLOPs@640 {r['gflops_640']:7.1f}", flush=True)

        print(f"\n== CPU peak RSS of one training step at {mem_imgsz} px (fresh process each) ==")
        for name in MODELS:
            for b in batches:
                r = run_child(name, b, mem_imgsz, "cpu", steps=1, warmup=0, timeout=a.timeout)
                if "error" in r:
                    print(f"{name:<12} batch {b}: ERROR {r['error']}", flush=True)
                    continue
                print(
                    f"{name:<12} batch {b}: peak RSS {r['peak_rss_mib']:7.0f} MiB "
                    f"(after build {r['rss_before_step_mib']:5.0f} MiB, step +{r['peak_rss_mib'] - r['rss_before_step_mib']:6.0f}) "
                    f"{r['s_per_it']:6.1f} s/step",
                    flush=True,
                )

        print("\n== CPU seconds per iteration at 64 px (3 warmup, 20 timed; median, min: min resists a busy host) ==")
        for name in MODELS:
            for b in (2, 6):
                r = run_child(name, b, 64, "cpu", steps=20, warmup=3, timeout=a.timeout)
                msg = (
                    f"ERROR {r['error']}"
                    if "error" in r
                    else f"{r['s_per_it_median']:.3f} s/it median, {r['s_per_it_min']:.3f} min"
                )
                print(f"{name:<12} batch {b}: {msg}", flush=True)

    if a.no_gpu:
        return 0
    import torch

    if not torch.cuda.is_available():
        print("\n(no CUDA device: GPU numbers skipped)")
        return 0
    print("\n== GPU at 640 px, AMP (fresh process each; 3 warmup, 10 timed) ==")
    for b in (6, 2):
        for name in MODELS:
            r = run_child(name, b, 640, "cuda:0", steps=10, warmup=3, timeout=a.timeout)
            if "error" in r:
                print(f"{name:<12} batch {b}: ERROR {r['error']}", flush=True)
                continue
            print(
                f"{name:<12} batch {b}: max_allocated {r['cuda_max_allocated_mib']:7.0f} MiB  "
                f"max_reserved {r['cuda_max_reserved_mib']:7.0f} MiB  {1 / r['s_per_it_median']:6.2f} it/s  ({r['gpu']})",
                flush=True,
            )
    return 0


if __name__ == "__main__":
    sys.exit(main())
