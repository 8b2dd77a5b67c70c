"""Plain helpers shared by several test modules (fixtures live in conftest.py): the supervisor's
scripted child, the CLI runner and records, the end-to-end launch and its readers, a machine snapshot."""

from __future__ import annotations

import csv
import json
import subprocess
import sys
import tomllib
from pathlib import Path

from launcher import cli, ladder as ladder_mod, setup
from launcher.contract import GIB, HANG, Heartbeat, Report
from launcher.failures import ChildEnd
from launcher.probe import Gpu, Snapshot
from launcher.runlog import RunPaths, RunState

from conftest import FIXTURES, ROOT, all_available


# --- the supervisor's scripted child (from test_supervisor.py) ---

OOM = {"exc_type": "torch.OutOfMemoryError", "message": "CUDA out of memory. Tried to allocate 2.00 GiB"}
ILLEGAL = "RuntimeError: CUDA error: an illegal memory access was encountered\n"


class FakeChild:
    """Plays a script of attempts: each item is (ChildEnd or exit code, report or None, epochs
    saved, log text)."""

    def __init__(self, script):
        self.script = list(script)
        self.calls: list[dict] = []

    def __call__(self, cmd, env, log_path: Path, watchdog) -> ChildEnd:
        spec = json.loads(Path(cmd[-1]).read_text())
        self.calls.append(spec)
        end, report, saved, log = self.script.pop(0)
        end = end if isinstance(end, ChildEnd) else ChildEnd(end)
        log_path.write_text(log)
        # the child's documents as it writes them (contract.py): both count the attempt's saves
        beat = Heartbeat(epochs_saved=saved, last_saved_epoch=saved or None, phase="train")
        Path(spec["heartbeat"]).write_text(json.dumps(beat.to_json()))
        if report is not None:
            done = Report(ok=end.exit_code == 0, epochs_saved=saved, last_saved_epoch=saved or None, **report)
            Path(spec["report"]).write_text(json.dumps(done.to_json()))
        return end


def ok(saved=1):
    return (0, {"best": "b.pt", "last": "l.pt"}, saved, "")


def oom(saved=0, phase="train"):
    return (1, {**OOM, "phase": phase}, saved, "torch.OutOfMemoryError: CUDA out of memory\n")


def crash():
    return (1, None, 0, ILLEGAL)


def hung(saved=0):
    """What the watchdog reports after it ended a silent child's tree."""
    return (ChildEnd(-9, 3600.0, watchdog=HANG, evidence="heartbeat silent for 1801 s (limit 1800 s after the "
                     "first batch; phase train, epoch 3, batch 17)"), None, saved, "")


def ram_killed():
    """A SIGKILL with the kernel's OOM killer seen in the cgroup counter."""
    return (ChildEnd(-9, 40.0, memory_evidence="cgroup oom_kill 0 → 1 (the kernel's OOM killer)"), None, 0, "")


def with_job(**job):
    raw = tomllib.loads((ROOT / "ladders" / "default.toml").read_text())
    raw["job"].update(job)
    return all_available(ladder_mod.parse(raw, ROOT / "ladders" / "default.toml"))


def new_state(ladder, start=0) -> RunState:
    return RunState(run="t", ladder=str(ladder.path), data=str(ladder.job.dataset), device="0",
                    rung=ladder.rungs[start].name)


# --- the CLI (from test_cli.py) ---

FIXED = Snapshot(gpus=(Gpu(0, "NVIDIA GeForce RTX 4090", int(23.99 * GIB), int(23.41 * GIB)),),
                 ram_total=int(62.7 * GIB), ram_available=int(55.1 * GIB), cpus=16, nvml="ok", driver="550.54.15")


def run(capsys, *argv):
    code = cli.main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def prepare(**asked):
    """`run` up to the supervisor's loop: what setup hands the supervisor."""
    return setup.prepare(setup.Request(data="coco_indoor/data.yaml", device="cpu", **asked), say=print)


def a_record(root: Path, **fields) -> Path:
    """A state.json as an earlier run of coco_indoor on this machine left it."""
    root.mkdir(parents=True, exist_ok=True)
    data = str(Path("coco_indoor/data.yaml").resolve())
    state = {"run": root.name, "ladder": str(ROOT / "ladders" / "default.toml"), "data": data, "device": "cpu",
             "status": "interrupted", "rung": "optimal", "attempts": 3, "models": {}, **fields}
    (root / "state.json").write_text(json.dumps(state))
    return root / "state.json"


# --- end to end (from test_e2e.py) ---

TINY = FIXTURES / "models" / "rtdetr-tiny.yaml"


def model_dir(tmp_path: Path, run: str = "e2e", source: Path = TINY) -> Path:
    """Where the launcher keeps a model's checkpoints in a run (runlog.RunPaths.save_dir)."""
    return RunPaths((tmp_path / "logs" / run).resolve()).save_dir(str(source))


def verified_copy(tmp_path: Path, run: str = "e2e", source: Path = TINY) -> Path:
    paths = RunPaths((tmp_path / "logs" / run).resolve())
    return paths.verified(paths.save_dir(str(source)))


def write_ladder(tmp_path: Path, dataset: Path, rungs: list[tuple[str, str, int, str]], *, epochs: int = 2,
                 imgsz: int = 64, threads: int = 2, **job) -> Path:
    """A ladder file: `rungs` as (name, model, batch, cache); `job` adds [job] keys."""
    extra = "".join(f"{k} = {v}\n" for k, v in job.items())
    text = f'[job]\nname = "e2e"\ndataset = "{dataset}"\nimgsz = {imgsz}\n{extra}\n[job.args]\nplots = false\n'
    for name, model, batch, cache in rungs:
        text += (f'\n[[rung]]\nname = "{name}"\nmodel = "{model}"\nepochs = {epochs}\nbatch = {batch}\n'
                 f'workers = 0\ncache = "{cache}"\nthreads = {threads}\npretrained = false\n')
    path = tmp_path / "ladder.toml"
    path.write_text(text)
    return path


def tiny_ladder(tmp_path: Path, dataset: Path, with_mnv4: bool = False) -> Path:
    """The default ladder's shape with a tiny model standing in for rtdetr-l (the real mnv4 rung
    when asked): optimal b4 → optimal-b4 b2 → [mnv4 b4] → safe b1."""
    rungs = [("optimal", str(TINY), 4, "ram"), ("optimal-b4", str(TINY), 2, "ram")]
    rungs += [("mnv4", "rtdetr-mnv4", 4, "ram")] if with_mnv4 else []
    rungs += [("safe", str(TINY), 1, "off")]
    return write_ladder(tmp_path, dataset, rungs, retries=0)


def launch(tmp_path: Path, *argv: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "launcher", "run", "--device", "cpu", *argv], cwd=tmp_path,
                          capture_output=True, text=True, timeout=600)


def events(tmp_path: Path, run: str = "e2e") -> list[dict]:
    return [json.loads(line) for line in (tmp_path / "logs" / run / "events.jsonl").read_text().splitlines()]


def of(evs: list[dict], kind: str) -> list[dict]:
    return [e for e in evs if e["event"] == kind]


def trained_epochs(save_dir: Path) -> list[int]:
    with open(save_dir / "results.csv") as f:
        return [int(float(row["epoch"])) for row in csv.DictReader(f)]


# --- a machine snapshot (from test_plan.py) ---

def snap(*free_gib, ram_gib=64.0, total_gib=None) -> Snapshot:
    gpus = tuple(Gpu(i, "GPU", int((total_gib or f) * GIB), int(f * GIB)) for i, f in enumerate(free_gib))
    return Snapshot(gpus=gpus, ram_total=int(128 * GIB), ram_available=int(ram_gib * GIB), cpus=16, nvml="ok")
