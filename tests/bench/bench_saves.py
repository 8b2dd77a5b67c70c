"""What one checkpoint save costs: Ultralytics' own writes against the launcher's saves by rename.

    python tests/bench/bench_saves.py                  # 314 MiB (rtdetr-l with its optimizer), 2 rounds
    python tests/bench/bench_saves.py --mib 64 --rounds 3 --dir /mnt/checkpoints

A save here is what Ultralytics' save_model does at an epoch that is the best so far: the same bytes
written to last.pt and then to best.pt. Each scheme saves 6 times into a fresh folder, --gap seconds
apart (as epochs are), and the wall time of each save (both files) is printed:
  ultralytics       `Path.write_bytes` twice: truncate each file and rewrite it in place (a kill tears it)
  new files         each file written as a new file beside it and renamed into place
  launcher          `AtomicPath` (launcher/callbacks.py) as the child sets it up: last.pt by rename into
                    its spare, best.pt a hard link to it; after the first save the verified copy is
                    linked and fsynced, as the child does. So save 2 writes a new file (no spare yet),
                    save 3 too (the spare is the verified copy), later saves the spare in place
  launcher, cache kept   the same without dropping the linked spare's cached pages before save 3

The rounds alternate the order of the schemes. The steady column is the median of saves 4-6.
The numbers depend on the kernel and on what the machine does with freed memory: on a VM that
hands free pages back to its host (free page reporting, ~2 s after they are freed), a write that
needs new page-cache pages pays for faulting them back in.
"""

from __future__ import annotations

import argparse
import os
import platform
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from launcher import callbacks  # noqa: E402
from launcher.callbacks import AtomicPath, fsync_path  # noqa: E402

SAVES = 6


def ultralytics_save(folder: Path, data: bytes) -> None:
    (folder / "last.pt").write_bytes(data)
    (folder / "best.pt").write_bytes(data)


def new_files_save(folder: Path, data: bytes) -> None:
    for name in ("last.pt", "best.pt"):
        tmp = folder / f".{name}.new"
        tmp.write_bytes(data)
        os.replace(tmp, folder / name)


def launcher_save(folder: Path, data: bytes) -> None:
    last, best = AtomicPath(folder / "last.pt"), AtomicPath(folder / "best.pt")
    best.twin = last
    last.write_bytes(data)
    best.write_bytes(data)


def scheme(save, data: bytes, folder: Path, gap: float, verified: bool, keep_cache: bool = False) -> list[float]:
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True)
    drop = callbacks.drop_cache
    if keep_cache:
        callbacks.drop_cache = lambda path: None
    times = []
    try:
        for i in range(SAVES):
            time.sleep(gap)
            t0 = time.perf_counter()
            save(folder, data)
            times.append(time.perf_counter() - t0)
            if verified and i == 0:  # Watch.on_model_save at the first save: link, fsync, rename
                staged = folder / ".verified.link"
                os.link(folder / "last.pt", staged)
                fsync_path(staged)
                os.replace(staged, folder / "verified.pt")
    finally:
        callbacks.drop_cache = drop
        shutil.rmtree(folder, ignore_errors=True)
    return times


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--mib", type=int, default=314, help="checkpoint size (default 314: rtdetr-l's last.pt)")
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--gap", type=float, default=3.0, help="seconds between saves (default 3)")
    ap.add_argument("--dir", default=None, help="where to write (default: the system's temporary folder)")
    args = ap.parse_args()
    print(f"machine: {platform.machine()}, {os.cpu_count()} CPUs, Python {platform.python_version()}, "
          f"{platform.system()} {platform.release()}; {args.mib} MiB per save, {args.gap:g} s apart")
    data = os.urandom(args.mib << 20)
    schemes = [
        ("ultralytics", ultralytics_save, False, False),
        ("new files", new_files_save, False, False),
        ("launcher", launcher_save, True, False),
        ("launcher, cache kept", launcher_save, True, True),
    ]
    results: dict[str, list[list[float]]] = {name: [] for name, *_ in schemes}
    with tempfile.TemporaryDirectory(dir=args.dir) as tmp:
        for r in range(args.rounds):
            for name, save, verified, keep in (schemes if r % 2 == 0 else schemes[::-1]):
                results[name].append(scheme(save, data, Path(tmp) / "saves", args.gap, verified, keep))
    print(f"\n{'scheme':22s} " + " ".join(f"save {i + 1:d}" for i in range(SAVES)) + "   steady   all 6")
    for name, runs in results.items():
        for times in runs:
            print(f"{name:22s} " + " ".join(f"{t:6.2f}" for t in times)
                  + f"   {statistics.median(times[3:]):6.2f}   {sum(times):5.2f}")
    print("\nmedians over rounds (s):")
    for name, runs in results.items():
        per_save = [statistics.median(t[i] for t in runs) for i in range(SAVES)]
        print(f"  {name:22s} saves 1-3: " + " ".join(f"{t:.2f}" for t in per_save[:3])
              + f"; steady: {statistics.median(per_save[3:]):.2f}; all 6: {sum(per_save):.2f}")


if __name__ == "__main__":
    main()
