"""Tuning before the night (issue 21): which rungs the trials measure and in what order
(tune.run_trials), when `run` measures first (setup.would_tune), and end to end on the CPU: `tune`
measures every rung with real Ultralytics training and stores it, dry-run says "measured", and
`run --tune` starts where its trials chose, recording them (docs/design.md, "Tuning: a measured
trial per rung")."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from helpers import TINY, events, of, write_ladder
from launcher import fmt, ladder as ladder_mod, setup, tune
from launcher.contract import GIB, TRIAL_FIT, TRIAL_OOM, Trial
from launcher.failures import ChildEnd
from launcher.plan import Plan
from launcher.probe import Gpu
from launcher.runlog import RunPaths


class Trials:
    """A launch that plays a trial child: it writes the trial.json the scenario gives its rung."""

    def __init__(self, needs_gib: dict[str, float | None]):
        self.needs, self.ran = needs_gib, []

    def __call__(self, cmd, env, log_path, watchdog) -> ChildEnd:
        spec = json.loads(Path(cmd[-1]).read_text())
        self.ran.append(spec["rung"])
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


def measured(tmp_path, needs, *, until_fit=True, grow=False, free_gib=12.0, budget_s=None, clock=None):
    ladder = ladder_of(tmp_path, grow)
    launch, said = Trials(needs), []
    gpus = (Gpu(0, "card", int(16 * GIB), int(free_gib * GIB)),)
    kw = {"clock": clock} if clock else {}
    trials = tune.run_trials(ladder, "0", gpus, 64 * GIB, RunPaths(tmp_path / "run"), until_fit=until_fit,
                             launch=launch, settings=tune.TrialPlan(), say=said.append, budget_s=budget_s, **kw)
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


def test_the_nights_budget_leaves_the_rest_to_their_thresholds(tmp_path):
    now = iter(range(0, 10_000, 150))  # each look at the clock is 150 s later
    rungs, _, said = measured(tmp_path, {"optimal": None, "optimal-b4": None, "small": None, "safe": 1.0},
                              budget_s=360, clock=lambda: next(now))
    assert rungs == ["optimal", "optimal-b4"]
    assert any("keep their thresholds" in line for line in said)


def test_free_memory_unknown_judges_nothing_and_measures_on(tmp_path):
    ladder = ladder_of(tmp_path)
    launch = Trials({"optimal": 1.0, "optimal-b4": 1.0, "small": 1.0, "safe": 1.0})
    trials = tune.run_trials(ladder, "0", (Gpu(0, "card", None, None),), None, RunPaths(tmp_path / "run"),
                             until_fit=True, launch=launch, settings=tune.TrialPlan(), say=lambda line: None)
    assert len(trials) == 4


def test_trial_json_gives_peaks_in_gib_with_peak_keys(tmp_path):
    t = Trial(rung="a", ended=TRIAL_FIT, peak_reserved_bytes=3 * GIB, device_used_bytes=GIB // 2,
              peak_rss_bytes=GIB, images_per_s=5.5, seconds=61.0)
    d = tune.trial_json(t)
    assert (d["rung"], d["ended"], d["images_per_s"], d["seconds"]) == ("a", TRIAL_FIT, 5.5, 61.0)
    assert {k: v for k, v in d.items() if k.startswith("peak_") and v is not None} == {
        "peak_reserved_gib": 3.0, "peak_device_used_gib": 0.5, "peak_rss_gib": 1.0}


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
