"""Tuning before the night (issue 21): which rungs the trials measure and in what order
(tune.run_trials), when `run` measures first (setup.would_tune), and end to end on the CPU: `tune`
measures every rung with real Ultralytics training and stores it, dry-run says "measured", and
`run --tune` starts where its trials chose, recording them (docs/design.md, "Tuning: a measured
trial per rung")."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
from dataclasses import replace
from pathlib import Path

import pytest

from helpers import TINY, events, of, write_ladder
from launcher import cli, experience, fmt, ladder as ladder_mod, plan as plan_mod, probe, setup, tune
from launcher.contract import GIB, TRIAL_FIT, TRIAL_OOM, Trial
from launcher.failures import ChildEnd
from launcher.plan import Plan
from launcher.probe import Gpu, Snapshot
from launcher.runlog import RunPaths


class Trials:
    """A launch that plays a trial child: it writes the trial.json the scenario gives its rung.
    `takes`: the seconds each trial takes on `clock` (a list the test reads as its clock)."""

    def __init__(self, needs_gib: dict[str, float | None], takes: float = 0.0, clock: list | None = None):
        self.needs, self.ran, self.specs, self.watchdogs = needs_gib, [], [], []
        self.takes, self.clock = takes, clock

    def __call__(self, cmd, env, log_path, watchdog) -> ChildEnd:
        spec = json.loads(Path(cmd[-1]).read_text())
        self.ran.append(spec["rung"])
        self.specs.append(spec)
        self.watchdogs.append(watchdog)
        watchdog.tree = [{"pid": 4000 + len(self.ran)}]  # as its ticks saw the child's processes
        if self.clock is not None:
            self.clock[0] += self.takes
        need = self.needs[spec["rung"]]
        trial = Trial(rung=spec["rung"], model=spec["train_args"]["model"], device=spec["train_args"]["device"],
                      batch=spec["train_args"]["batch"], val_batch=2 * spec["train_args"]["batch"],
                      ended=TRIAL_FIT if need is not None else TRIAL_OOM,
                      peak_reserved_bytes=None if need is None else int(need * GIB * 0.8),
                      val_peak_reserved_bytes=None if need is None else int(need * GIB * 0.9),
                      device_used_bytes=None if need is None else int(need * GIB), alloc_retries=0,
                      peak_rss_bytes=2 * GIB, images_per_s=10.0, seconds=60.0)
        Path(spec["trial"]["path"]).write_text(json.dumps(trial.to_json()))
        return ChildEnd(0 if need is not None else 1)


def ladder_of(tmp_path: Path, grow: bool = False) -> ladder_mod.Ladder:
    data = tmp_path / "d.yaml"
    data.write_text("path: .\ntrain: images\nval: images\nnames: {0: a}\n")
    rungs = [("optimal", str(TINY), 6, "off"), ("optimal-b4", str(TINY), 4, "off"), ("small", str(TINY), 2, "off"),
             ("safe", str(TINY), 1, "off")]
    return ladder_mod.load(write_ladder(tmp_path, data, rungs, **({"grow": "true"} if grow else {})))


class Released:
    """probe.wait_gpu_released as a script: what it was asked to wait for."""

    def __init__(self):
        self.waits: list[tuple] = []

    def __call__(self, indices, pids, before) -> str:
        self.waits.append((indices, pids, before))
        return "no process of the attempt holds GPU memory (after 0.0 s)"


def no_nvml(indices):
    return None


def measured(tmp_path, needs, *, until_fit=True, grow=False, free_gib=12.0, budget_s=None, clock=None,
             launch=None, release=None, usage=no_nvml):
    ladder = ladder_of(tmp_path, grow)
    launch, said = launch or Trials(needs), []
    gpus = (Gpu(0, "card", int(16 * GIB), int(free_gib * GIB)),)
    kw = {"clock": clock} if clock else {}
    trials = tune.run_trials(ladder, "0", gpus, 64 * GIB, RunPaths(tmp_path / "run"), until_fit=until_fit,
                             launch=launch, settings=tune.TrialPlan(), say=said.append, budget_s=budget_s,
                             release=release or Released(), usage=usage, **kw)
    return [t.rung for t in trials], launch.ran, said


def test_a_nights_trials_stop_at_the_first_rung_that_fits(tmp_path):
    # 12 GiB free, headroom 0.1: 10.8 GiB budget; optimal needs 14, optimal-b4 9
    rungs, ran, said = measured(tmp_path, {"optimal": 14.0, "optimal-b4": 9.0, "small": 5.0, "safe": 3.0})
    assert rungs == ran == ["optimal", "optimal-b4"]  # small and safe can never be the start
    assert any(line.startswith("trial of rung optimal: fit") for line in said)


def test_an_oom_trial_goes_on_down_and_tune_measures_every_rung(tmp_path):
    rungs, _, _ = measured(tmp_path, {"optimal": None, "optimal-b4": None, "small": 5.0, "safe": 3.0})
    assert rungs == ["optimal", "optimal-b4", "small"]
    rungs, _, _ = measured(tmp_path, {"optimal": 4.0, "optimal-b4": 3.0, "small": 2.0, "safe": 1.0}, until_fit=False)
    assert rungs == ["optimal", "optimal-b4", "small", "safe"]


def test_grown_batches_are_measured_only_while_the_smaller_one_fits(tmp_path):
    # 12 GiB free, headroom 0.1: 10.8 GiB; a need of 14 GiB does not fit even with a smaller val_batch
    needs = {"optimal": 3.0, "optimal@2x": 5.5, "optimal@4x": 14.0, "optimal-b4": 2.0, "small": 1.0, "safe": 1.0}
    rungs, _, _ = measured(tmp_path, needs, grow=True)
    assert rungs == ["optimal", "optimal@2x", "optimal@4x"]  # @4x does not fit: the night starts on @2x
    rungs, _, _ = measured(tmp_path, {**needs, "optimal@2x": 14.0}, grow=True)
    assert rungs == ["optimal", "optimal@2x"]  # @2x does not fit: @4x is not tried
    rungs, _, _ = measured(tmp_path, {**needs, "optimal": 14.0}, grow=True)
    assert rungs == ["optimal", "optimal-b4"]  # the top does not fit: nothing grown, on down the ladder


def test_a_trial_starts_only_where_its_own_limit_fits_in_what_is_left_of_the_nights_budget(tmp_path):
    """Each trial takes 100 s; a GPU trial's limit is 90 s + 60 s past its first batch (150 s).
    With 360 s: trials at 0, 100 and 200 s (260 and 160 s left), none at 300 s (60 s left), where
    the old rule, "budget not yet spent", started a fourth that could run to 450 s. Each is ended
    from outside when the budget runs out, start-up included (TrialWatchdog's deadline)."""
    clock = [0.0]
    launch = Trials({"optimal": None, "optimal-b4": None, "small": None, "safe": 1.0}, takes=100.0, clock=clock)
    rungs, _, said = measured(tmp_path, launch.needs, budget_s=360, clock=lambda: clock[0], launch=launch)
    assert rungs == ["optimal", "optimal-b4", "small"]
    assert [w.deadline_s for w in launch.watchdogs] == [360, 260, 160]
    assert [w.limit_s for w in launch.watchdogs] == [150.0] * 3
    assert any("rung safe and those after it keep their thresholds" in line for line in said), said
    # `tune` (no budget): no deadline
    launch = Trials({"optimal": 1.0, "optimal-b4": 1.0, "small": 1.0, "safe": 1.0})
    (tmp_path / "tune").mkdir()
    measured(tmp_path / "tune", launch.needs, until_fit=False, launch=launch)
    assert [w.deadline_s for w in launch.watchdogs] == [None] * 4


def test_free_memory_unknown_judges_nothing_and_measures_on(tmp_path):
    ladder = ladder_of(tmp_path)
    launch = Trials({"optimal": 1.0, "optimal-b4": 1.0, "small": 1.0, "safe": 1.0})
    trials = tune.run_trials(ladder, "0", (Gpu(0, "card", None, None),), None, RunPaths(tmp_path / "run"),
                             until_fit=True, launch=launch, settings=tune.TrialPlan(), say=lambda line: None,
                             release=Released(), usage=no_nvml)
    assert len(trials) == 4


def test_trial_json_gives_peaks_in_gib_with_peak_keys(tmp_path):
    t = Trial(rung="a", ended=TRIAL_FIT, peak_reserved_bytes=3 * GIB, device_used_bytes=GIB // 2,
              peak_rss_bytes=GIB, images_per_s=5.5, seconds=61.0)
    d = tune.trial_json(t)
    assert (d["rung"], d["ended"], d["images_per_s"], d["seconds"]) == ("a", TRIAL_FIT, 5.5, 61.0)
    assert {k: v for k, v in d.items() if k.startswith("peak_") and v is not None} == {
        "peak_reserved_gib": 3.0, "peak_device_used_gib": 0.5, "peak_rss_gib": 1.0}


def test_the_gpu_is_waited_on_after_a_trial_that_died_and_after_the_last(tmp_path):
    """As the supervisor after a failed attempt (probe.wait_gpu_released with the processes its
    watchdog saw and each GPU's free memory before it): after the OOM trial (the child exited 1)
    at once, after the clean ones only once, after the last, before the night's first attempt."""
    release = Released()
    usage = lambda indices: {0: (int(11 * GIB), set())}  # noqa: E731 - NVML's read before each trial
    rungs, _, said = measured(tmp_path, {"optimal": None, "optimal-b4": 3.0, "small": 2.0, "safe": 1.0},
                              until_fit=False, release=release, usage=usage)
    assert rungs == ["optimal", "optimal-b4", "small", "safe"]
    assert release.waits == [((0,), {4001}, {0: int(11 * GIB)}), ((0,), {4004}, {0: int(11 * GIB)})]
    assert sum(line.startswith("GPU memory: ") for line in said) == 2


def test_each_trial_records_the_free_memory_it_began_with(tmp_path):
    """Trial.free_bytes: the tightest selected GPU's free memory read as the child starts (NVML),
    the probe's snapshot where NVML says nothing, None on the CPU."""
    ladder = ladder_of(tmp_path)
    paths, plan = RunPaths(tmp_path / "run"), tune.TrialPlan()
    gpus = (Gpu(0, "a", 16 * GIB, 12 * GIB), Gpu(1, "b", 16 * GIB, 9 * GIB))
    fresh = lambda indices: {0: (7 * GIB, set()), 1: (8 * GIB, set())}  # noqa: E731
    launch = Trials({"optimal": None})
    assert tune.measure(ladder.job, ladder.rungs[0], "0,1", paths, launch, plan, gpus=gpus,
                        usage=fresh).free_bytes == 7 * GIB
    assert tune.measure(ladder.job, ladder.rungs[0], "0,1", paths, launch, plan, gpus=gpus,
                        usage=no_nvml).free_bytes == 9 * GIB
    assert tune.measure(ladder.job, ladder.rungs[0], "cpu", paths, launch, plan, gpus=(),
                        usage=fresh).free_bytes is None


def test_trials_run_the_rungs_as_the_plan_does_its_ram_cache_decided(tmp_path):
    """plan.Plan.rungs has the RAM cache off when RAM is short: the trials measure that, grown
    rungs too, each at the ladder's own val_batch (not one a stored trial gave the plan's start)."""
    ladder = ladder_of(tmp_path, grow=True)
    ladder = replace(ladder, rungs=tuple(replace(r, cache="ram") for r in ladder.rungs))
    short = Snapshot(gpus=(Gpu(0, "card", 16 * GIB, 12 * GIB),), ram_total=8 * GIB, ram_available=GIB, cpus=16,
                     nvml="ok")
    plan = plan_mod.choose(ladder, short, dataset_images=1_000_000)
    assert plan.cache.effective == "off"
    rungs = (replace(plan.rungs[0], val_batch=3),) + plan.rungs[1:]
    launch = Trials({"optimal": 3.0, "optimal@2x": 4.0, "optimal@4x": 5.0, "optimal-b4": 1.0, "small": 1.0,
                     "safe": 1.0})
    tune.run_trials(ladder, "0", short.gpus, short.ram_available, RunPaths(tmp_path / "run"), until_fit=False,
                    launch=launch, settings=tune.TrialPlan(), say=lambda line: None, rungs=rungs,
                    release=Released(), usage=no_nvml)
    assert launch.ran[:3] == ["optimal", "optimal@2x", "optimal@4x"]
    assert [s["train_args"]["cache"] for s in launch.specs] == [False] * 6  # Ultralytics' cache=False: off
    assert launch.specs[0].get("val_batch") is None
    launch = Trials(launch.needs)  # without the plan's rungs: the ladder's own, cache "ram"
    tune.run_trials(ladder, "0", short.gpus, None, RunPaths(tmp_path / "run"), until_fit=False, launch=launch,
                    settings=tune.TrialPlan(), say=lambda line: None, release=Released(), usage=no_nvml)
    assert launch.specs[0]["train_args"]["cache"] == "ram"


class Signalled(Trials):
    """A launch that carries the seam's `signal` and `stop` (launch.Stoppable): the launcher gets
    `sig` during the `at`-th trial, whose child ignores it until the grace kill ends it."""

    def __init__(self, needs, sig: int, at: int = 2):
        super().__init__(needs)
        self.sig, self.at = sig, at
        self.told: list[tuple[str, float]] = []
        self.stopped = threading.Event()

    def __call__(self, cmd, env, log_path, watchdog) -> ChildEnd:
        if len(self.ran) + 1 < self.at:
            return super().__call__(cmd, env, log_path, watchdog)
        self.ran.append(json.loads(Path(cmd[-1]).read_text())["rung"])
        os.kill(os.getpid(), self.sig)
        self.stopped.wait(timeout=10)  # it ignores the signal: only the tree kill ends it
        return ChildEnd(-signal.SIGKILL)

    def signal(self, sig: int) -> None:
        self.told.append(("signal", sig))

    def stop(self, grace: float) -> None:
        self.told.append(("stop", grace))
        self.stopped.set()


@pytest.mark.parametrize("sig, code", [(signal.SIGTERM, 143), (signal.SIGINT, 130)])
def test_a_signal_during_the_trials_stops_the_child_after_the_grace_and_ends_them(tmp_path, sig, code):
    """As in the supervisor's loop (launch.Signals, installed around the trials): the signal passed
    on, the tree ended after the grace (30 s; 0.2 s here), nothing more measured, tune.Stopped with
    the trials that ended before it; the launcher's own handlers come back after."""
    ladder = ladder_of(tmp_path)
    launch = Signalled({"optimal": None, "optimal-b4": None, "small": 2.0, "safe": 1.0}, sig)
    kept = signal.getsignal(sig)
    with pytest.raises(tune.Stopped) as stopped:
        tune.run_trials(ladder, "0", (Gpu(0, "card", 16 * GIB, 12 * GIB),), None, RunPaths(tmp_path / "run"),
                        until_fit=False, launch=launch, settings=tune.TrialPlan(), say=lambda line: None,
                        grace=0.2, release=Released(), usage=no_nvml)
    assert stopped.value.exit_code == code and [t.rung for t in stopped.value.trials] == ["optimal"]
    assert launch.ran == ["optimal", "optimal-b4"] and launch.told == [("signal", sig), ("stop", 0)]
    assert signal.getsignal(sig) == kept


# ---- when run measures first ---------------------------------------------------------------------

def plan_on(device: str) -> Plan:
    rung = ladder_mod.Rung("optimal", None, 1, 1)
    return Plan(device=device, gpus=(), start=rung, rungs=(rung,), cache=None, reasons=(), problems=())


@pytest.mark.parametrize("asked, device, stored, record, start_rung, no_memory, tunes", [
    (None, "0", False, False, None, False, True),     # a new run on a GPU, nothing stored: trials first
    (None, "0", True, False, None, False, False),     # a stored measurement decides
    (None, "0", False, True, None, False, False),     # a continued run keeps its rung
    (None, "0", False, False, "safe", False, False),  # --start-rung forces the start
    (None, "0", False, False, None, True, False),     # --no-memory: nothing stored found or kept
    (None, "cpu", False, False, None, False, False),  # the CPU: only when asked
    (True, "cpu", True, False, None, True, True),     # --tune
    (False, "0", False, False, None, False, False),   # --no-tune
])
def test_run_measures_first_only_where_it_decides_something(asked, device, stored, record, start_rung, no_memory,
                                                            tunes):
    req = setup.Request(tune=asked, start_rung=start_rung, no_memory=no_memory)
    assert setup.would_tune(req, plan_on(device), {"optimal": object()} if stored else {}, record) is tunes


# ---- the night's start and `tune`, through setup with a scripted trial child --------------------------

CPU = Snapshot((), 64 * GIB, 32 * GIB, 2, nvml="NVML unavailable")


@pytest.fixture
def cpu_job(tmp_path, shapes, monkeypatch):
    """A CPU machine (probe.take), run from tmp_path, and a ladder of two tiny rungs asking for RAM cache."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(probe, "take", lambda: CPU)
    return write_ladder(tmp_path, shapes, [("optimal", str(TINY), 2, "ram"), ("safe", str(TINY), 1, "ram")],
                        epochs=1, grow="true")


def child_is(monkeypatch, launch) -> None:
    """setup's trials start `launch` where they would start a launch.ChildProcess."""
    monkeypatch.setattr("launcher.launch.ChildProcess", lambda *a, **kw: launch)


def test_the_trials_of_run_and_tune_run_the_cache_the_plan_decided(cpu_job, monkeypatch):
    """RAM short for the cache (plan.decide_cache: off): run's trials and tune's run with cache off,
    as the night would, not the ladder's raw "ram"."""
    monkeypatch.setattr(probe, "take", lambda: replace(CPU, ram_available=1000))
    launch = Trials({"optimal": 1.0, "optimal@2x": 1.0, "optimal@4x": 1.0, "safe": 1.0})
    child_is(monkeypatch, launch)
    setup.tune_request(setup.Request(ladder=str(cpu_job), device="cpu", no_memory=True), say=lambda line: None)
    assert launch.ran == ["optimal", "optimal@2x", "optimal@4x", "safe"]
    assert {s["train_args"]["cache"] for s in launch.specs} == {False}
    launch.ran.clear(), launch.specs.clear()
    with pytest.raises(setup.Refused):  # 2 GiB of RSS measured, 1000 bytes available: nothing fits
        setup.prepare(setup.Request(ladder=str(cpu_job), device="cpu", tune=True), say=lambda line: None)
    assert launch.ran and {s["train_args"]["cache"] for s in launch.specs} == {False}


def test_run_tune_with_a_stored_grown_start_measures_the_ladders_own_rungs(cpu_job, monkeypatch):
    """[job] grow and stored trials that start the night on optimal@4x: `run --tune` measures the
    ladder as its file gives it (optimal, optimal@2x, ...), never the grown ladder grown again."""
    req = setup.Request(ladder=str(cpu_job), device="cpu", tune=True)
    ladder = setup.load_job(req)
    stored = [Trial(rung=name, device="cpu", batch=batch, ended=TRIAL_FIT, peak_rss_bytes=GIB, alloc_retries=0)
              for name, batch in (("optimal", 2), ("optimal@2x", 4), ("optimal@4x", 8))]
    result = setup.make_plan(req, ladder, CPU, dry=False, measured=stored)
    assert result.plan.start.name == "optimal@4x"
    seen = []

    def tune_first(req, ladder, *rest):
        seen.append([r.name for r in tune.to_measure(ladder)])
        raise setup.Refused(("enough",))
    monkeypatch.setattr(setup, "tune_first", tune_first)
    with pytest.raises(setup.Refused):
        setup._prepare(req, ladder, CPU, {}, result, lambda line: None)
    assert seen == [["optimal", "optimal@2x", "optimal@4x", "safe"]]


def test_a_signal_while_run_measures_first_ends_it_before_any_record(cpu_job, monkeypatch):
    """SIGTERM during run's trials: the child stopped, `run` exits 143, the new run has no record
    and its lock is free; the trials that ended before it are stored."""
    launch = Signalled({"optimal": 1.0, "optimal@2x": 1.0, "optimal@4x": 1.0, "safe": 1.0}, signal.SIGTERM)
    child_is(monkeypatch, launch)
    monkeypatch.setattr(tune.Signals, "__init__", grace_of(0.2))
    assert cli.main(["run", "--ladder", str(cpu_job), "--device", "cpu", "--tune"]) == 143
    assert launch.ran == ["optimal", "optimal@2x"] and launch.told == [("signal", signal.SIGTERM), ("stop", 0)]
    run = RunPaths.for_run("e2e")
    assert not run.state.exists() and not run.events.exists() and not setup.has_run(run)
    lock = setup.RunLock(run.lock)
    assert lock.acquire()  # released: the next try is not refused as "already running"
    lock.release()
    stored = experience.store_path().read_text()
    assert '"optimal"' in stored and '"optimal@2x"' not in stored  # the trial cut short says nothing


def test_a_signal_during_tune_ends_it_130(cpu_job, monkeypatch):
    launch = Signalled({"optimal": 1.0, "optimal@2x": 1.0, "optimal@4x": 1.0, "safe": 1.0}, signal.SIGINT, at=1)
    child_is(monkeypatch, launch)
    monkeypatch.setattr(tune.Signals, "__init__", grace_of(0.2))
    assert cli.main(["tune", "--ladder", str(cpu_job), "--device", "cpu"]) == 130
    assert launch.ran == ["optimal"] and launch.told == [("signal", signal.SIGINT), ("stop", 0)]


def grace_of(seconds: float):
    """launch.Signals.__init__ with a test's grace (30 s in a run)."""
    real = tune.Signals.__init__

    def init(self, child, say, extra=(), grace=30.0):
        real(self, child, say, extra, seconds)
    return init


# ---- end to end, real Ultralytics on the CPU ---------------------------------------------------------

def tune_cmd(tmp_path: Path, *argv: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "launcher", *argv], cwd=tmp_path, capture_output=True, text=True,
                          timeout=600)


@pytest.mark.slow
def test_tune_measures_every_rung_stores_it_and_dry_run_says_measured(tmp_path, shapes):
    ladder = write_ladder(tmp_path, shapes, [("optimal", str(TINY), 2, "off"), ("safe", str(TINY), 1, "off")],
                          epochs=1)
    p = tune_cmd(tmp_path, "tune", "--ladder", str(ladder), "--device", "cpu", "--json")
    assert p.returncode == 0, p.stdout[-3000:] + p.stderr[-3000:]
    out = json.loads(p.stdout)
    assert [t["rung"] for t in out["trials"]] == ["optimal", "safe"] and out["stored"] == 2
    for t in out["trials"]:
        assert t["ended"] == TRIAL_FIT and t["peak_rss_gib"] > 0 and t["images_per_s"] > 0 and t["seconds"] > 0
        assert t["val_batch"] == 2 * t["batch"]  # Ultralytics' 2 × batch
    assert "trial of rung optimal: fit" in p.stderr
    run = tmp_path / "logs" / "e2e"
    assert not list(run.rglob("*.pt")) and not (run / "state.json").exists()  # nothing a resume could take up
    assert (run / "trials" / "optimal" / "trial.json").exists()

    p = tune_cmd(tmp_path, "dry-run", "--ladder", str(ladder), "--device", "cpu")
    assert p.returncode == 0, p.stdout[-3000:] + p.stderr[-3000:]
    assert "measured" in p.stdout
    assert "run would first measure" not in p.stdout  # stored: run starts from it
    speed = out["trials"][0]["images_per_s"]
    assert f"  the night: about {fmt.duration(8 / speed)} of training on optimal at the measured " \
        f"{speed:.1f} images/s (1 epoch × 8 train images), plus validation and start-up, which the trial did not " \
        "time" in p.stdout


@pytest.mark.slow
def test_run_tune_measures_until_a_rung_fits_records_it_and_trains(tmp_path, shapes):
    ladder = write_ladder(tmp_path, shapes, [("optimal", str(TINY), 2, "off"), ("safe", str(TINY), 1, "off")],
                          epochs=1)
    p = tune_cmd(tmp_path, "run", "--ladder", str(ladder), "--device", "cpu", "--tune")
    assert p.returncode == 0, p.stdout[-3000:] + p.stderr[-3000:]
    evs = events(tmp_path)
    [tuned] = of(evs, "tuned")
    assert [t["rung"] for t in tuned["trials"]] == ["optimal"]  # it fits: safe is never the start
    assert tuned["stored"] is True and tuned["start"] == "optimal"
    assert [e["event"] for e in evs][:3] == ["probe", "tuned", "start"]
    assert of(evs, "attempt_start")[0]["rung"] == "optimal" and of(evs, "complete")
    assert "trial of rung optimal: fit" in p.stdout
    [start], speed = of(evs, "start"), tuned["trials"][0]["images_per_s"]  # the night's first ETA, in the record
    assert start["speeds"] == {"optimal": speed} and start["train_images"] == 8
    assert start["eta_s"] == pytest.approx(8 / speed, abs=0.06)  # 1 epoch × 8 images
    p = tune_cmd(tmp_path, "report")
    assert p.returncode == 0, p.stdout[-3000:] + p.stderr[-3000:]
    md = (tmp_path / "logs" / "e2e" / "report.md").read_text()
    assert f"- **ETA:** expected at the start: {fmt.duration(start['eta_s'])} of training (from the trial of optimal " \
           f"at {speed:.1f} images/s; training only" in md and "); took " in md
