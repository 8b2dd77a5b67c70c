"""Wall time of dry-run, status and diagnose (median of 5 fresh processes) next to `import ultralytics`.

Targets: each under 0.25 s and under a tenth of the Ultralytics import (issue 2); status under 0.5 s
and a quarter of it (issue 6); dry-run back under a tenth (issue 19). The launcher's bytecode is
compiled first, as an installed package has it (Ultralytics' is): with PYTHONDONTWRITEBYTECODE set,
every process would otherwise compile the launcher's source again (about 50 ms).
Run: python tests/bench/bench_cli.py
"""

from __future__ import annotations

import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
RUNS = 5


def wall(argv: list[str], cwd: Path) -> float:
    times = []
    for _ in range(RUNS):
        t = time.perf_counter()
        subprocess.run(argv, cwd=cwd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, check=False)
        times.append(time.perf_counter() - t)
    return statistics.median(times)


def main() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        for split, n in (("train", 4000), ("val", 400)):  # the user's ~4k-image dataset, as empty files
            d = tmp / "ds" / "images" / split
            d.mkdir(parents=True)
            for i in range(n):
                (d / f"{i}.jpg").touch()
        (tmp / "ds" / "data.yaml").write_text(f"path: {tmp / 'ds'}\ntrain: images/train\nval: images/val\nnames: [a]\n")
        py = sys.executable
        subprocess.run([py, "-m", "compileall", "-q", str(ROOT / "launcher")], check=True)
        record = tmp / "logs" / "bench"  # a finished run's record: 3 attempts, 1000 telemetry lines
        record.mkdir(parents=True)
        (record / "state.json").write_text('{"status": "complete", "attempts": 3, "rung": "optimal-b4", "models": {}}')
        (record / "events.jsonl").write_text("".join(
            f'{{"ts": "2026-11-26T02:00:00+00:00", "event": "attempt_start", "attempt": {n}, "rung": "optimal"}}\n'
            for n in (1, 2, 3)))
        (record / "telemetry.jsonl").write_text("".join(
            f'{{"t": {i}, "vram": {i * 1000}, "ram_used": {i * 2000}, "rss": {i}}}\n' for i in range(1000)))
        log = ROOT / "tests" / "fixtures" / "logs" / "ddp_torchrun_oom.log"
        rows = {
            "python -c pass": wall([py, "-c", "pass"], tmp),
            "dry-run (4,400-image dataset)": wall([py, "-m", "launcher", "dry-run", "--vram", "24", "--ram", "64",
                                                   "--data", str(tmp / "ds" / "data.yaml")], ROOT),
            "dry-run --json": wall([py, "-m", "launcher", "dry-run", "--vram", "24", "--json",
                                    "--data", str(tmp / "ds" / "data.yaml")], ROOT),
            "diagnose (torchrun log)": wall([py, "-m", "launcher", "diagnose", str(log)], ROOT),
            "status (a run record)": wall([py, "-m", "launcher", "status", "bench"], tmp),
            'python -c "import ultralytics"': wall([py, "-c", "import ultralytics"], tmp),
        }
    ul = rows['python -c "import ultralytics"']
    load = ", ".join(f"{x:.2f}" for x in os.getloadavg())
    print(f"machine: {platform.machine()}, {os.cpu_count()} CPUs, Python {platform.python_version()}, load average "
          f"{load} at the end; median of {RUNS} fresh processes")
    for name, t in rows.items():
        share = f"{t / ul:6.1%} of the ultralytics import" if "ultralytics" not in name else ""
        print(f"  {name:34s} {t:6.3f} s  {share}")


if __name__ == "__main__":
    main()
