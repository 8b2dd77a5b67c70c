"""A trial per rung (issue 21; docs/design.md, "Tuning: a measured trial per rung"): the measuring
logic with stand-in stats (the CUDA path on a CPU), the trial's callbacks against a stand-in trainer,
the launcher's side (the spec, the outcome of a child that wrote no trial.json), and, slow, a real
CPU trial of the demo's first rung through `tune.measure`."""

from __future__ import annotations

import json
import os
import signal
import time
from dataclasses import replace
from pathlib import Path
from types import SimpleNamespace

import psutil
import pytest
import torch

from launcher import dataset, ladder as ladder_mod, memory, memstats, tune
from launcher.callbacks import use_val_batch
from launcher.child import NONE, checkpoint_state
from launcher.contract import (CUDA_OOM, TRIAL_FAILED, TRIAL_FIT, TRIAL_NAME, TRIAL_OOM, TRIAL_RETRIES,
                               TRIAL_TIMEOUT, Heartbeat, Report, Spec, Trial)
from launcher.demo import make_dataset
from launcher.failures import ChildEnd
from launcher.launch import ChildProcess
from launcher.runlog import RunPaths
from launcher.trial import Callbacks, Measure, _Stop, ending, ran_cache, trial_args

from conftest import ROOT

DEMO = ROOT / "ladders" / "demo.toml"


# ---- stand-ins ----------------------------------------------------------------------------------

class FakeAllocator:
    """torch.cuda.memory_stats as a script: the test sets what the allocator holds; peaks follow
    it until reset, as torch's do."""

    def __init__(self):
        self.reserved = self.allocated = 0
        self.peak_reserved = self.peak_allocated = 0
        self.retries = self.ooms = 0
        self.used = 500

    def hold(self, reserved: int, allocated: int | None = None) -> None:
        self.reserved, self.allocated = reserved, reserved if allocated is None else allocated
        self.peak_reserved = max(self.peak_reserved, self.reserved)
        self.peak_allocated = max(self.peak_allocated, self.allocated)

    def memory_stats(self) -> dict:
        return {memstats.RESERVED: self.reserved, memstats.RESERVED_PEAK: self.peak_reserved,
                memstats.ALLOCATED: self.allocated, memstats.ALLOCATED_PEAK: self.peak_allocated,
                memstats.ALLOC_RETRIES: self.retries, memstats.OOMS: self.ooms}

    def reset(self) -> None:
        self.peak_reserved, self.peak_allocated = self.reserved, self.allocated

    def stats(self, rss=lambda: 7000) -> memstats.CudaStats:
        return memstats.CudaStats(0, memory_stats=self.memory_stats, reset=self.reset, device_used=lambda: self.used,
                                  rss=rss)


class Clock:
    def __init__(self, t: float = 1000.0):
        self.t = t

    def __call__(self) -> float:
        return self.t


def measuring(stats, clock=None, **plan) -> Measure:
    clock = clock or Clock()
    settings = dict(warmup=2, iterations=4, val_batches=2, window=3, budget_s=90.0, batch=8)
    settings.update(plan)
    return Measure(stats, started=clock.t - 10.0, clock=clock, **settings)


# ---- the measurement: the CUDA path on a CPU ------------------------------------------------------

def test_training_and_validation_peaks_are_measured_apart_with_the_counters_rise():
    gpu = FakeAllocator()
    gpu.retries, gpu.ooms = 4, 1  # earlier in the process: not the trial's
    clock = Clock()
    m = measuring(gpu.stats(), clock)
    gpu.hold(1000)
    m.start()
    done = []
    for reserved in (3000, 5000, 4000, 4500, 4200, 4100):
        gpu.hold(reserved, reserved - 500)
        gpu.used = reserved + 800
        clock.t += 1.0
        done.append(m.train_batch())
    assert done == [False] * 5 + [True]  # 2 warm-up + 4 measured
    gpu.hold(2000)  # memory cleared before validation
    m.begin_val()
    for reserved in (3500, 3900):
        gpu.hold(reserved)
        m.val_batch()
    gpu.retries, gpu.ooms = 6, 1
    m.failed()  # one more look: the counters' last value
    t = m.trial(TRIAL_FIT)
    assert (t.peak_reserved_bytes, t.peak_allocated_bytes) == (5000, 4500)  # training only
    assert (t.val_peak_reserved_bytes, t.val_peak_allocated_bytes) == (3900, 3900)  # after reset_peaks
    assert t.device_used_bytes == 5800 and t.peak_rss_bytes == 7000
    assert (t.alloc_retries, t.ooms) == (2, 0)  # the rise during the trial, not the process's count
    assert (t.warmup, t.iterations, t.val_batches, t.batch) == (2, 4, 2, 8)
    assert t.first_batch_s == 11.0 and t.seconds == 16.0


def test_the_validation_peak_is_its_own_even_when_training_went_higher():
    gpu = FakeAllocator()
    m = measuring(gpu.stats(), warmup=0, iterations=1, val_batches=1)
    m.start()
    gpu.hold(9000)
    assert m.train_batch()
    gpu.hold(1000)
    m.begin_val()
    gpu.hold(2000)
    assert m.val_batch()
    t = m.trial(TRIAL_FIT)
    assert t.peak_reserved_bytes == 9000 and t.val_peak_reserved_bytes == 2000


def test_alloc_retries_rising_in_two_consecutive_windows_end_the_trial():
    gpu = FakeAllocator()
    m = measuring(gpu.stats(), warmup=0, iterations=50, window=3)
    m.start()
    for batch in range(1, 6):  # window 1 (batches 1-3) rises at batch 2, window 2 (4-6) at batch 5
        gpu.retries += batch in (2, 5)
        assert not m.train_batch()
    with pytest.raises(_Stop) as stop:
        m.train_batch()  # the end of window 2
    assert stop.value.ended == TRIAL_RETRIES and "two consecutive windows of 3" in stop.value.why
    assert m.trial(*ending(stop.value)).alloc_retries == 2


def test_retries_in_one_window_only_do_not_end_the_trial():
    gpu = FakeAllocator()
    m = measuring(gpu.stats(), warmup=0, iterations=9, window=3)
    m.start()
    for i in range(9):
        gpu.retries += 1 if i == 1 else 0  # window 1 rose, windows 2 and 3 did not
        m.train_batch()
    assert m.trial(TRIAL_FIT).alloc_retries == 1


def test_the_median_images_per_s_counts_the_measured_iterations_only():
    clock = Clock()
    m = measuring(memstats.HostStats(rss=lambda: 100), clock, warmup=2, iterations=5, batch=4, budget_s=600.0)
    m.start()
    for seconds in (0.5, 0.5, 2.0, 2.0, 1.0, 1.0, 100.0):  # the warm-up's (8 img/s) do not count; 100 s: an outlier
        clock.t += seconds
        m.train_batch()
    assert m.trial(TRIAL_FIT).images_per_s == 2.0  # 4 images / 2 s: the median of 2, 2, 4, 4, 0.04 (with the warm-up: 4)


def test_images_per_s_counts_the_images_each_batch_held():
    clock = Clock()
    m = measuring(memstats.HostStats(rss=lambda: 100), clock, warmup=0, iterations=3, batch=6)
    m.start()
    for images in (4, 4, 2):  # a loader capped at a 4-image dataset, an epoch's short last batch
        clock.t += 2.0
        m.train_batch(images)
    assert m.trial(TRIAL_FIT).images_per_s == 2.0  # median of 2, 2, 1


def test_the_budget_counts_from_the_first_batch_and_ends_the_trial_in_training_and_in_validation():
    """The start-up (a RAM cache built, here 500 s) is no part of the budget: the watchdog's
    start-up rule bounds it; first_batch_s still says it."""
    clock = Clock()
    m = measuring(memstats.HostStats(rss=lambda: 100), clock, budget_s=15.0, warmup=0, iterations=3)
    m.started = clock.t - 500.0
    m.start()
    m.train_batch()  # the first batch ends: 500 s after the child started
    clock.t += 14.0
    m.train_batch()
    clock.t += 2.0  # 16 s since the first batch
    with pytest.raises(_Stop) as stop:
        m.train_batch()
    assert stop.value.ended == TRIAL_TIMEOUT and "budget of 15 s spent (16 s since the first batch)" in stop.value.why
    assert m.trial(TRIAL_TIMEOUT).first_batch_s == 500.0

    clock = Clock()
    m = measuring(memstats.HostStats(rss=lambda: 100), clock, budget_s=15.0, warmup=0, iterations=1)
    m.start()
    assert m.train_batch()
    m.begin_val()
    clock.t += 16.0
    with pytest.raises(_Stop, match="budget"):
        m.val_batch()


class SlowStats:
    """A Stats whose every sample takes `cost` seconds on the clock (PSS on a big tree)."""

    def __init__(self, clock: Clock, cost: float):
        self.clock, self.cost = clock, cost

    def sample(self) -> memstats.Sample:
        self.clock.t += self.cost
        return memstats.Sample(rss=100)

    def reset_peaks(self) -> None:
        pass


def test_the_time_a_sample_takes_is_no_part_of_the_measured_iterations():
    """images/s is the night's speed: the night samples no process tree."""
    clock = Clock()
    m = measuring(SlowStats(clock, cost=0.5), clock, warmup=0, iterations=3, batch=4)
    m.start()
    for _ in range(3):
        clock.t += 2.0  # the batch itself
        m.train_batch()
    assert m.trial(TRIAL_FIT).images_per_s == 2.0  # 4 images / 2 s, not / 2.5 s


def test_a_paced_tree_read_is_read_afresh_at_the_end_of_training_and_of_validation():
    """memstats.Paced reads a big tree seldom; the last training and the last validation batch
    read it afresh (HostStats.read_now), so a late rise is in the peaks."""
    now, reads = Clock(), iter([100, 400, 900])
    tree = memstats.Paced(lambda: next(reads), every_s=1000.0, clock=now)
    m = measuring(memstats.HostStats(rss=tree), warmup=0, iterations=3, val_batches=2)
    m.start()  # the first read: 100
    m.train_batch(), m.train_batch()
    assert m.last.rss == 100  # paced: the last reading
    assert m.train_batch()  # the last training batch: read afresh
    m.begin_val()
    m.val_batch()
    assert m.val[-1].rss == 400
    m.val_batch()  # the last validation batch: read afresh
    t = m.trial(TRIAL_FIT)
    assert (t.peak_reserved_bytes, t.val_peak_reserved_bytes, t.peak_rss_bytes) == (400, 900, 900)


def test_on_the_cpu_the_peaks_are_the_child_trees_rss():
    rss = iter([100, 300, 250, 200, 150, 120, 180])
    m = measuring(memstats.HostStats(rss=lambda: next(rss)), warmup=0, iterations=3, val_batches=2)
    m.start()
    for _ in range(3):
        m.train_batch()
    m.begin_val()
    m.val_batch()
    t = m.trial(TRIAL_FIT)
    assert t.peak_reserved_bytes == 300 and t.peak_rss_bytes == 300
    assert t.val_peak_reserved_bytes == 180 and t.alloc_retries is None and t.device_used_bytes is None


def test_an_oom_ends_the_trial_oom_and_other_failures_failed():
    assert ending(torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB"))[0] == TRIAL_OOM
    assert ending(RuntimeError("CUDA error: out of memory"))[0] == TRIAL_OOM
    assert ending(MemoryError())[0] == TRIAL_OOM  # the host
    assert ending(RuntimeError("DefaultCPUAllocator: can't allocate memory: you tried to allocate 9 bytes"))[0] \
        == TRIAL_OOM
    ended, why = ending(FileNotFoundError("images not found"))
    assert ended == TRIAL_FAILED and why == "FileNotFoundError: images not found"
    assert ending(_Stop(TRIAL_RETRIES, "rose")) == (TRIAL_RETRIES, "rose")


def test_after_an_oom_the_last_look_counts_it():
    gpu = FakeAllocator()
    m = measuring(gpu.stats())
    m.start()
    gpu.hold(7000)
    gpu.ooms += 1  # the allocator counted the OOM it raised
    m.failed()
    t = m.trial(*ending(torch.OutOfMemoryError("CUDA out of memory")))
    assert t.ended == TRIAL_OOM and t.ooms == 1 and t.peak_reserved_bytes == 7000 and t.why.startswith("torch.")


# ---- the trial's callbacks against a stand-in trainer -----------------------------------------

class StandInTrainer:
    """What the trial's callbacks touch of Ultralytics' BaseTrainer."""

    def __init__(self, callbacks: Callbacks, batches: int = 3, epochs: int = 2):
        self.callbacks, self.epochs, self.batches = callbacks, epochs, batches
        self.accumulate, self._oom_retries, self.device = 8, 0, SimpleNamespace(type="cuda")
        self.steps = self.cleared = 0
        self.val_seen = 0
        self.train_loader = [0] * batches

    def get_dataloader(self, dataset_path, batch_size=16, rank=0, mode="train"):
        return SimpleNamespace(batch_size=batch_size, mode=mode)

    def optimizer_step(self):
        self.steps += 1

    def preprocess_batch(self, batch):
        return batch

    def _clear_memory(self, threshold=None):
        self.cleared += 1

    def validate(self):
        for _ in range(10):  # the validator's loop, on_val_batch_end after each batch
            self.val_seen += 1
            self.callbacks.on_val_batch_end(None)
        return {}, 0.0

    def train(self, step_every: int = 1) -> str:
        """_do_train in short: returns how the private exception ended it."""
        cb = self.callbacks
        cb.on_pretrain_routine_start(self)
        self.test_loader = self.get_dataloader("val", batch_size=8 * 2, mode="val")
        cb.on_pretrain_routine_end(self)
        cb.on_train_start(self)
        ni = 0
        for epoch in range(self.epochs):
            cb.on_train_epoch_start(self)
            for _ in range(self.batches):
                self.preprocess_batch({"img": [0] * 8})
                if (ni + 1) % step_every == 0:
                    self.optimizer_step()
                ni += 1
                try:
                    cb.on_train_batch_end(self)
                except _Stop as e:
                    return e.ended
        return "ran out of epochs"


def callbacks_for(tmp_path, val_batch=None, **plan) -> tuple[Callbacks, Measure]:
    m = measuring(memstats.HostStats(rss=lambda: 100), **{"warmup": 2, "iterations": 3, "val_batches": 2, **plan})
    watch = SimpleNamespace(phase="train", beat=lambda force=False: None)
    return Callbacks(m, watch, val_batch), m


def test_the_callbacks_train_then_validate_a_few_batches_then_stop_training(tmp_path):
    cb, m = callbacks_for(tmp_path)
    trainer = StandInTrainer(cb, batches=2, epochs=2)  # 2 batches an epoch: too few for 5
    assert trainer.train() == TRIAL_FIT
    assert trainer.epochs == 4  # ceil(5 / 2) + 1: the trial stops inside an epoch that is not the last
    assert (m.trained, m.validated, trainer.val_seen) == (5, 2, 2)  # validation cut after val_batches
    assert trainer.cleared == 1 and trainer._oom_retries == 3 and cb.watch.phase == "val"
    assert cb.steps == 5 and trainer.test_loader.batch_size == 16  # Ultralytics' 2 × batch by default
    assert m.images_per_batch == [8, 8, 8]  # what each measured batch held


def test_a_trial_with_no_optimizer_step_takes_one_before_validating(tmp_path, capsys):
    cb, m = callbacks_for(tmp_path)
    trainer = StandInTrainer(cb, batches=10, epochs=5)
    assert trainer.train(step_every=100) == TRIAL_FIT  # accumulate never reached
    assert trainer.steps == 1 and cb.steps == 1 and trainer.epochs == 5
    assert "no optimizer step in 5 batches" in capsys.readouterr().out


def test_val_batch_replaces_ultralytics_double_batch_for_the_val_loader_only(tmp_path):
    cb, m = callbacks_for(tmp_path, val_batch=3)
    trainer = StandInTrainer(cb)
    trainer.train()
    assert trainer.test_loader.batch_size == 3
    assert trainer.get_dataloader("train", batch_size=8, mode="train").batch_size == 8
    wrapped = trainer.get_dataloader
    use_val_batch(trainer, 3)  # again: the same wrapper, not one around it
    assert trainer.get_dataloader is wrapped
    use_val_batch(trainer, 5)  # another batch: wraps Ultralytics' own, not the wrapper
    assert trainer.get_dataloader("val", batch_size=16, mode="val").batch_size == 5
    assert trainer.get_dataloader.wrapped == wrapped.wrapped
    plain = StandInTrainer(cb)
    use_val_batch(plain, None)
    assert "get_dataloader" not in vars(plain)


def test_trial_args_save_nothing_plot_nothing_and_validate_only_at_the_end():
    spec = Spec(train_args={"model": "m.yaml", "batch": 8, "device": "0,1", "save_dir": "/t"},
                extra_args={"plots": True, "lr0": 0.01})
    args = trial_args(spec)
    assert (args["save"], args["plots"], args["val"], args["lr0"]) == (False, False, False, 0.01)
    assert "model" not in args and (args["device"], args["batch"]) == ("0", 4)  # one rank's share, on the first GPU
    assert trial_args(replace(spec, train_args={**spec.train_args, "device": "cpu"}))["batch"] == 8


# ---- the launcher's side --------------------------------------------------------------------------

@pytest.fixture
def demo_ladder(shapes):
    return ladder_mod.load(DEMO, data=shapes)


def test_a_trial_spec_puts_every_file_of_the_child_in_the_rungs_trial_folder(tmp_path, demo_ladder):
    paths = RunPaths(tmp_path / "logs" / "demo")
    rung = replace(demo_ladder.rungs[0], val_batch=3)
    plan = tune.TrialPlan(warmup=1, iterations=2, val_batches=1, window=2, budget_s=30)
    spec = tune.trial_spec(demo_ladder.job, rung, "cpu", paths, plan, inject=({"kind": CUDA_OOM, "rung": "optimal",
                                                                              "epoch": 1},))
    folder = tmp_path / "logs" / "demo" / "trials" / "optimal"
    assert paths.trial_dir("optimal") == folder and paths.trial("optimal") == folder / TRIAL_NAME
    assert spec.mode == "trial" and spec.val_batch == 3 and spec.inject[0]["kind"] == CUDA_OOM
    assert spec.trial == {"warmup": 1, "iterations": 2, "val_batches": 1, "window": 2, "budget_s": 30,
                          "path": str(folder / TRIAL_NAME)}
    for where in (spec.save_dir, spec.report, spec.heartbeat, spec.verified):
        assert Path(where).is_relative_to(folder), where
    assert spec.train_args["batch"] == rung.batch and spec.train_args["data"] == str(paths.dataset)
    assert spec.unusable() is None
    assert paths.trial_dir("a b/../c") != paths.trial_dir("a b/./c")  # no plain name: a safe one, a hash apart
    assert paths.trial_dir("a b/../c").parent == paths.trials


class ScriptedTrialChild:
    """A launch that writes what a trial child would have, and ends as told."""

    def __init__(self, end: ChildEnd, trial: Trial | None = None, report: Report | None = None, log: str = "",
                 ticks: int = 0, first_batch: bool = True):
        self.end, self.trial, self.report, self.log, self.ticks = end, trial, report, log, ticks
        self.first_batch = first_batch  # its heartbeat says the first batch ended
        self.spec: Spec | None = None

    def __call__(self, cmd, env, log_path, watchdog):
        self.spec = Spec.read(Path(cmd[-1]))
        assert env["RTDETR_SPEC"] == cmd[-1]
        assert not Path(self.spec.trial["path"]).exists()  # a previous trial's is gone
        log_path.write_text(self.log)
        if self.trial:
            Path(self.spec.trial["path"]).write_text(json.dumps(self.trial.to_json()))
        if self.report:
            Path(self.spec.report).write_text(json.dumps(self.report.to_json()))
        if self.first_batch:
            beat = Heartbeat(phase="train", first_batch_ts=time.time())
            Path(self.spec.heartbeat).write_text(json.dumps(beat.to_json()))
        watchdog.start()
        self.watchdog = watchdog
        for _ in range(self.ticks):
            watchdog.tick(999_999_999)
        return watchdog.end(self.end.exit_code, self.end.seconds) if self.ticks else self.end


def measure_with(tmp_path, ladder, child, budget_s=30.0, deadline_s=None) -> Trial:
    paths = RunPaths(tmp_path / "logs" / "demo")
    stale = paths.trial("optimal")
    stale.parent.mkdir(parents=True)
    stale.write_text(json.dumps(Trial(rung="optimal", ended=TRIAL_FIT).to_json()))
    plan = tune.TrialPlan(warmup=1, iterations=2, val_batches=1, window=2, budget_s=budget_s)
    return tune.measure(ladder.job, ladder.rungs[0], "cpu", paths, child, plan, deadline_s=deadline_s)


def test_measure_returns_the_trial_the_child_wrote(tmp_path, demo_ladder):
    wrote = Trial(rung="optimal", ended=TRIAL_FIT, peak_rss_bytes=123, images_per_s=4.5)
    got = measure_with(tmp_path, demo_ladder, ScriptedTrialChild(ChildEnd(0, 12.0), wrote))
    assert got == wrote


def test_a_child_that_died_of_an_oom_without_a_trial_is_an_oom_trial(tmp_path, demo_ladder):
    report = Report(ok=False, exc_type="torch.OutOfMemoryError", message="CUDA out of memory. Tried to allocate 2 GiB",
                    phase="setup")
    got = measure_with(tmp_path, demo_ladder, ScriptedTrialChild(ChildEnd(1, 5.0, peak_rss=77), report=report))
    assert (got.ended, got.rung, got.batch, got.peak_rss_bytes, got.seconds) == (TRIAL_OOM, "optimal", 6, 77, 5.0)
    assert got.cache == "ram" and got.free_bytes is None  # the demo rung's cache, as its spec asked; the CPU
    assert got.why.startswith("cuda_oom: torch.OutOfMemoryError")


def test_a_child_killed_by_the_kernels_oom_killer_is_an_oom_trial(tmp_path, demo_ladder):
    end = ChildEnd(-signal.SIGKILL, 9.0, memory_evidence="cgroup oom_kill 0 → 1 (the kernel's OOM killer)")
    got = measure_with(tmp_path, demo_ladder, ScriptedTrialChild(end))
    assert got.ended == TRIAL_OOM and "oom_kill" in got.why


def test_a_child_that_crashed_without_a_trial_is_a_failed_one(tmp_path, demo_ladder):
    got = measure_with(tmp_path, demo_ladder, ScriptedTrialChild(
        ChildEnd(1), log="Traceback (most recent call last):\nValueError: bad label\n"))
    assert got.ended == TRIAL_FAILED and "bad label" in got.why


def test_a_trial_past_its_budget_is_ended_from_outside_as_a_timeout(tmp_path, demo_ladder, monkeypatch):
    monkeypatch.setattr(tune, "OVERRUN_S", 0.0)
    child = ScriptedTrialChild(ChildEnd(-signal.SIGTERM, 1.0), ticks=3)
    got = measure_with(tmp_path, demo_ladder, child, budget_s=0.0)
    assert got.ended == TRIAL_TIMEOUT and "past its budget" in got.why
    # what it measured before the kill stands
    wrote = Trial(rung="optimal", ended=TRIAL_FAILED, why="interrupted", peak_rss_bytes=5)
    got = measure_with(tmp_path / "again", demo_ladder, ScriptedTrialChild(ChildEnd(-15), wrote, ticks=3),
                       budget_s=0.0)
    assert (got.ended, got.peak_rss_bytes) == (TRIAL_TIMEOUT, 5)


def test_the_outside_limit_counts_from_the_first_batch_and_the_nights_deadline_from_the_start(tmp_path,
                                                                                              demo_ladder):
    """Before its first batch a trial is bound by the watchdog's start-up rule only (a RAM cache
    of a big dataset is built then), not by its budget; a night's deadline counts it all."""
    child = ScriptedTrialChild(ChildEnd(0), Trial(rung="optimal", ended=TRIAL_FIT), ticks=3, first_batch=False)
    assert measure_with(tmp_path, demo_ladder, child, budget_s=-100.0).ended == TRIAL_FIT
    assert child.watchdog.limit_s == -40.0 and not child.watchdog.over_budget
    child = ScriptedTrialChild(ChildEnd(-signal.SIGTERM), ticks=3, first_batch=False)
    got = measure_with(tmp_path / "night", demo_ladder, child, deadline_s=0.0)
    assert got.ended == TRIAL_TIMEOUT and "the night's time for trials ran out" in got.why


def test_the_start_up_rule_is_the_watchdogs_before_the_first_batch(demo_ladder, tmp_path):
    """TrialWatchdog on a clock: silent past startup_timeout_s before the first batch, a hang."""
    now = Clock(0.0)
    job = replace(demo_ladder.job, startup_timeout_s=100)
    dog = tune.TrialWatchdog(job, 0, "optimal", tmp_path / "heartbeat.json", (), memory.RamWatch(), limit_s=10.0,
                             clock=now)
    dog.start()
    now.t = 90.0
    assert dog.tick(999_999_999) is None  # 90 s of start-up: far past the 10 s limit, within the rule
    now.t = 101.0
    assert "before the first batch" in dog.tick(999_999_999) and not dog.over_budget


def test_a_trial_within_its_budget_is_not_ended(tmp_path, demo_ladder):
    child = ScriptedTrialChild(ChildEnd(0), Trial(rung="optimal", ended=TRIAL_FIT), ticks=2)
    assert measure_with(tmp_path, demo_ladder, child, budget_s=600.0).ended == TRIAL_FIT


def test_the_trial_says_the_cache_it_ran_with():
    """Ultralytics turns a RAM cache off when RAM is short (BaseDataset.check_cache_ram): the
    dataset's own, where the loader was built; the argument's before."""
    built = SimpleNamespace(train_loader=SimpleNamespace(dataset=SimpleNamespace(cache=None)))
    assert ran_cache(built, {"cache": "ram"}) == "off"
    built.train_loader.dataset.cache = "ram"
    assert ran_cache(built, {"cache": "ram"}) == "ram"
    assert ran_cache(None, {"cache": "disk"}) == "disk" and ran_cache(None, {"cache": False}) == "off"


# ---- memstats: the tree's memory ------------------------------------------------------------------

class FakeProc:
    def __init__(self, pid, rss, pss=None, kids=(), denied=False):
        self.pid, self.rss, self.pss, self.kids, self.denied = pid, rss, pss, list(kids), denied

    def children(self, recursive=False):
        return self.kids

    def memory_info(self):
        return SimpleNamespace(rss=self.rss)

    def memory_full_info(self):
        if self.denied:
            raise psutil.AccessDenied(self.pid)
        return SimpleNamespace(rss=self.rss, pss=self.pss)


def test_the_tree_sums_pss_where_readable_and_rss_where_not():
    workers = [FakeProc(2, rss=900, pss=150), FakeProc(3, rss=900, pss=150), FakeProc(4, rss=700, denied=True)]
    root = FakeProc(1, rss=1000, pss=400, kids=workers)
    ps = SimpleNamespace(Process=lambda pid: root, Error=psutil.Error, AccessDenied=psutil.AccessDenied)
    assert memstats.tree_rss(1, ps) == 400 + 150 + 150 + 700


def test_pages_a_forked_worker_shares_count_once():
    """A real fork: 200 MiB touched before it, shared copy-on-write. RSS summed counts it twice;
    the tree's PSS once."""
    import numpy as np
    held = np.ones(200 * 2**20 // 8)
    pid = os.fork()
    if pid == 0:  # the worker: holds the shared pages, touches nothing
        time.sleep(30)
        os._exit(0)
    try:
        time.sleep(0.3)
        me = psutil.Process()
        rss = sum(p.memory_info().rss for p in [me, *me.children(recursive=True)])
        tree = memstats.tree_rss()
        assert rss - tree > 150 * 2**20, (rss, tree)
        assert tree > held.nbytes
    finally:
        os.kill(pid, signal.SIGKILL)
        os.waitpid(pid, 0)


def test_a_paced_reader_reads_at_most_once_per_its_pace_and_afresh_when_forced():
    now, reads = Clock(0.0), []

    def read():
        reads.append(now.t)
        now.t += 0.2  # a read of a big tree takes time: the pace is 10 × it, at least every_s
        return len(reads)
    paced = memstats.Paced(read, every_s=0.5, clock=now)
    assert paced() == 1
    now.t = 1.0
    assert paced() == 1  # due at 0 + 10 × 0.2 = 2 s
    now.t = 2.0
    assert paced() == 2
    paced.force()
    assert paced() == 3 and reads == [0.0, 2.0, 2.2]


# ---- slow: a real trial child on the CPU ----------------------------------------------------------

@pytest.fixture(scope="module")
def shapes_for_trials(tmp_path_factory) -> Path:
    """One training batch an epoch (4 images, the loader's batch capped at them), so a trial of 3
    iterations outlasts the demo's 2 epochs; enough validation images that the val loader holds
    2 × the demo's batch 6 (Ultralytics caps a loader's batch at its dataset's size)."""
    return make_dataset(tmp_path_factory.mktemp("shapes12"), train=4, val=12, size=64, max_boxes=2)


def real_trial(tmp_path: Path, data: Path, rung_changes: dict | None = None, inject=(),
               plan: tune.TrialPlan | None = None) -> tuple[Trial, RunPaths, Spec]:
    ladder = ladder_mod.load(DEMO, data=data)
    paths = RunPaths((tmp_path / "logs" / "demo").resolve())
    dataset.write_resolved(dataset.inspect(data), paths.dataset)
    rung = replace(ladder.rungs[0], **(rung_changes or {}))
    plan = plan or tune.TrialPlan(warmup=0, iterations=3, val_batches=1, window=2, budget_s=300.0)
    t0 = time.monotonic()
    trial = tune.measure(ladder.job, rung, "cpu", paths, ChildProcess(out=lambda b: None), plan, inject=inject,
                         child_env={"YOLO_OFFLINE": "1"})
    print(f"trial of {rung.name}: {time.monotonic() - t0:.1f} s; {json.dumps(trial.to_json())}")
    return trial, paths, Spec.read(paths.trial_dir(rung.name) / "spec.json")


def no_checkpoint_anywhere(paths: RunPaths, model: str) -> None:
    assert sorted(paths.root.rglob("*.pt")) == []
    assert checkpoint_state(paths.model(model).last)[0] == NONE  # a later run's resume finds nothing
    assert not paths.models.exists()


@pytest.mark.slow
def test_a_real_trial_of_the_demos_first_rung_fits_and_leaves_no_checkpoint(tmp_path, shapes_for_trials):
    trial, paths, spec = real_trial(tmp_path, shapes_for_trials)
    assert trial.ended == TRIAL_FIT, trial.why
    assert (trial.rung, trial.batch, trial.device, trial.imgsz) == ("optimal", 6, "cpu", 64)
    assert trial.val_batch == 2 * trial.batch and spec.val_batch is None
    # 3 batches of one-batch epochs past the rung's 2 epochs: more epochs, none of them the last
    # (whose end would have validated and saved last.pt)
    assert trial.iterations == 3 and trial.val_batches == 1 and spec.epochs == 2
    assert trial.peak_rss_bytes > 0 and trial.peak_reserved_bytes > 0 and trial.val_peak_reserved_bytes > 0
    assert trial.images_per_s > 0 and 0 < trial.first_batch_s < trial.seconds
    assert trial.cache == "ram"  # the demo rung's: the dataset was cached in RAM (in the peak RSS)
    assert Report.read(Path(spec.report)).ok  # the child's normal report too
    no_checkpoint_anywhere(paths, spec.model)


@pytest.mark.slow
def test_an_injected_oom_in_a_real_trial_ends_it_oom_at_the_rungs_val_batch(tmp_path, shapes_for_trials):
    trial, paths, spec = real_trial(tmp_path, shapes_for_trials, {"val_batch": 5},
                                    inject=({"kind": CUDA_OOM, "rung": "optimal", "epoch": 1, "phase": "train"},))
    assert trial.ended == TRIAL_OOM and "injected by the launcher" in trial.why
    assert trial.iterations == 0 and trial.images_per_s is None
    assert trial.val_batch == spec.val_batch == 5  # the val loader was built at the rung's val_batch
    report = Report.read(Path(spec.report))
    assert not report.ok and report.exc_type == "torch.OutOfMemoryError"  # the child reports it as any child
    no_checkpoint_anywhere(paths, spec.model)
