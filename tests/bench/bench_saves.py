"""What one checkpoint save costs: Ultralytics' own writes, the launcher's saves by rename, and the
verified copy (docs/design.md, "Checkpoints").

    python tests/bench/bench_saves.py                  # 314 MiB (rtdetr-l with its optimizer), 2 rounds
    python tests/bench/bench_saves.py --mib 64 --rounds 1 --saves 3 --dir /mnt/checkpoints

A save here is what Ultralytics' save_model does at an epoch that is the best so far: the same bytes
written to last.pt and then to best.pt. Each scheme saves --saves times into a fresh folder, --gap
seconds apart (as epochs are), and the wall time of each save (both files) is printed:
  ultralytics   `Path.write_bytes` twice: truncate each file and rewrite it in place (a kill tears it)
  launcher      `AtomicPath` (launcher/callbacks.py): each file written as a new file beside it and
                renamed into place
Then the verified copy, refreshed at each save here (in a night: the first save, at most every 10
minutes, the last epoch), after a launcher save:
  callback      what the training thread spends in Watch.on_model_save: read last.pt, start the thread
  thread        the copy thread's own time: check every CRC, write a new file, fsync, rename, fsync
                the folder (it runs while training goes on)
  wait          what the training thread then waits for it (finish_copy) when the next save comes
                at once: in a night the next refresh is 10 minutes later and waits for nothing

The rounds alternate the order of the schemes. Numbers print only; nothing is asserted. They depend
on the kernel, the disk, and what the machine does with freed memory (a VM handing free pages back
to its host makes a write that needs new page-cache pages pay for faulting them back in).
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
from types import SimpleNamespace

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from launcher import callbacks  # noqa: E402
from launcher.callbacks import AtomicPath, Watch  # noqa: E402
from launcher.contract import Spec  # noqa: E402


def ultralytics_save(folder: Path, data: bytes) -> None:
    (folder / "last.pt").write_bytes(data)
    (folder / "best.pt").write_bytes(data)


def launcher_save(folder: Path, data: bytes) -> None:
    AtomicPath(folder / "last.pt").write_bytes(data)
    AtomicPath(folder / "best.pt").write_bytes(data)


def fake_checkpoint(mib: int) -> bytes:
    """`mib` MiB of random bytes in a torch.save zip container (the verified copy checks its CRCs)."""
    import io
    import zipfile
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_STORED) as z:
        z.writestr("archive/data.pkl", b"\x80\x02}q\x00.")
        z.writestr("archive/data/0", os.urandom(mib << 20))
    return buf.getvalue()


def saves(scheme, data: bytes, folder: Path, n: int, gap: float) -> list[float]:
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True)
    times = []
    try:
        for _ in range(n):
            time.sleep(gap)
            t0 = time.perf_counter()
            scheme(folder, data)
            times.append(time.perf_counter() - t0)
    finally:
        shutil.rmtree(folder, ignore_errors=True)
    return times


def verified_copies(data: bytes, folder: Path, n: int, gap: float) -> dict[str, list[float]]:
    """Launcher saves with the verified copy refreshed after each: the callback's part, the
    thread's, and the wait for the thread when the next refresh comes at once."""
    shutil.rmtree(folder, ignore_errors=True)
    (folder / "weights").mkdir(parents=True)
    w = Watch(Spec(heartbeat=str(folder / "hb.json"), verified=str(folder / "checkpoints" / "last.pt"),
                   rung="bench", attempt=1, train_args={"epochs": n + 1}, verified_every_s=0))
    weights = folder / "weights"
    t = SimpleNamespace(last=AtomicPath(weights / "last.pt"), best=AtomicPath(weights / "best.pt"), epoch=0,
                        epochs=n + 1, stop=False)
    thread_times: list[float] = []
    keep = callbacks.keep_verified_copy

    def timed(*args):
        t0 = time.perf_counter()
        try:
            return keep(*args)
        finally:
            thread_times.append(time.perf_counter() - t0)
    out: dict[str, list[float]] = {"save": [], "callback": [], "wait": []}
    callbacks.keep_verified_copy = timed
    try:
        for epoch in range(n):
            time.sleep(gap)
            t.epoch = epoch
            t0 = time.perf_counter()
            t.last.write_bytes(data)
            t.best.write_bytes(data)
            t1 = time.perf_counter()
            w.on_model_save(t)
            t2 = time.perf_counter()
            w.finish_copy()
            out["save"].append(t1 - t0)
            out["callback"].append(t2 - t1)
            out["wait"].append(time.perf_counter() - t2)
    finally:
        callbacks.keep_verified_copy = keep
        shutil.rmtree(folder, ignore_errors=True)
    out["thread"] = thread_times
    return out


def row(name: str, times: list[float]) -> str:
    return f"  {name:26s} " + " ".join(f"{x:6.2f}" for x in times) + f"   median {statistics.median(times):.2f}"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--mib", type=int, default=314, help="checkpoint size (default 314: rtdetr-l's last.pt)")
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--saves", type=int, default=4, help="saves per scheme and round (default 4)")
    ap.add_argument("--gap", type=float, default=3.0, help="seconds between saves (default 3)")
    ap.add_argument("--dir", default=None, help="where to write (default: the system's temporary folder)")
    args = ap.parse_args()
    print(f"machine: {platform.machine()}, {os.cpu_count()} CPUs, Python {platform.python_version()}, "
          f"{platform.system()} {platform.release()}; {args.mib} MiB per save, {args.gap:g} s apart, "
          f"{args.saves} saves per scheme and round")
    data = fake_checkpoint(args.mib)
    results: dict[str, list[float]] = {}
    plans = [("ultralytics", ultralytics_save), ("launcher", launcher_save), ("verified", None)]
    with tempfile.TemporaryDirectory(dir=args.dir) as tmp:
        for r in range(args.rounds):
            for name, scheme in (plans if r % 2 == 0 else plans[::-1]):
                if scheme is not None:
                    results.setdefault(name, []).extend(saves(scheme, data, Path(tmp) / "saves", args.saves,
                                                              args.gap))
                    continue
                for part, times in verified_copies(data, Path(tmp) / "saves", args.saves, args.gap).items():
                    results.setdefault(f"{name}: {part}", []).extend(times)
    print("\nseconds per save (last.pt + best.pt), all rounds:")
    print(row("(a) ultralytics", results["ultralytics"]))
    print(row("(b) launcher", results["launcher"]))
    print(row("    launcher (with copy)", results["verified: save"]))
    print("the verified copy, refreshed at each save:")
    print(row("(c) callback", results["verified: callback"]))
    print(row("    thread", results["verified: thread"]))
    print(row("    wait, next at once", results["verified: wait"]))


if __name__ == "__main__":
    main()
