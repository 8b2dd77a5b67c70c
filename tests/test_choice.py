"""The start rung from measurements (issue 21, item 2): choice.choose_start as a pure function over
scenario trials, plan.choose with them, the RAM cache from a measured RSS, and the store of trials
in logs/experience.json."""

from __future__ import annotations

import json
from dataclasses import replace
from datetime import datetime, timedelta, timezone

import pytest

from launcher import choice, experience, ladder as ladder_mod, plan
from launcher.contract import GIB, TRIAL_FAILED, TRIAL_FIT, TRIAL_OOM, TRIAL_RETRIES, TRIAL_TIMEOUT, Trial
from launcher.experience import OOM_EARLY, Experience
from launcher.probe import Gpu, Snapshot

from conftest import ROOT, all_available
from helpers import FIXED, run, snap


@pytest.fixture(scope="module")
def default():
    return all_available(ladder_mod.load(ROOT / "ladders" / "default.toml"))


def trial(rung: str, train: float, val: float, *, batch: int = 6, used: float | None = None, rss: float = 4.0,
          ended: str = TRIAL_FIT, retries: int = 0, val_batch: int | None = None, ips: float | None = 40.0,
          cache: str | None = None, free: float | None = None) -> Trial:
    """A trial's document, sizes in GiB; `used`: NVML's peak (None: not known); `free`: the free
    memory it began with (None: a trial from before Trial.free_bytes)."""
    b = lambda x: None if x is None else int(x * GIB)  # noqa: E731
    return Trial(rung=rung, model="rtdetr-l.pt", device="0", batch=batch, val_batch=val_batch or 2 * batch, imgsz=640,
                 ended=ended, warmup=5, iterations=25, val_batches=4, peak_reserved_bytes=b(train),
                 peak_allocated_bytes=b(train * 0.9), val_peak_reserved_bytes=b(val),
                 val_peak_allocated_bytes=b(val * 0.9), device_used_bytes=b(used), alloc_retries=retries, ooms=0,
                 peak_rss_bytes=b(rss), images_per_s=ips, first_batch_s=20.0, seconds=60.0, ts=1.7e9, cache=cache,
                 free_bytes=b(free))


def start(ladder, measured, free=24.0, ram=64.0, headroom=0.1, grow=False, gpus=None):
    rungs = ladder.rungs
    gpus = snap(free).gpus if gpus is None else gpus
    return choice.choose_start(rungs, measured, gpus, int(ram * GIB), headroom, grow=grow)


# ---- the choice, pure ---------------------------------------------------------------------------

def test_a_measured_rung_that_fits_starts_and_says_measured(default):
    c = start(default, {"optimal": trial("optimal", 8, 9, used=9.5)}, free=12)
    # the threshold alone (15 GiB) would have started optimal-b4 on 12 GiB free
    assert c.start.name == "optimal" and c.start.val_batch is None
    assert c.reason.startswith("start rung optimal: measured on GPU 0, needs 9.50 GiB (train 8.00 GiB, val 9.00 GiB "
                               "at batch 12, context 0.50 GiB) ≤ 12.00 GiB free × 0.9")
    assert [(v.rung, v.decided, v.fits) for v in c.verdicts][:2] == [("optimal", "measured", True),
                                                                     ("optimal-b4", "threshold", True)]


def test_the_headroom_and_the_context_count(default):
    # 10.6 GiB of torch: fits 12 GiB × 0.9 = 10.8 with NVML's context of 0.1, not with the guess of 0.5
    assert start(default, {"optimal": trial("optimal", 10.6, 10.6, used=10.7)}, free=12).start.name == "optimal"
    assert start(default, {"optimal": trial("optimal", 10.6, 10.6)}, free=12).start.name == "optimal-b4"
    # 9.7 GiB: fits 12 × 0.9, not 12 × 0.8
    t = {"optimal": trial("optimal", 9.65, 9.65, used=9.7)}
    assert start(default, t, free=12).start.name == "optimal"
    assert start(default, t, free=12, headroom=0.2).start.name == "optimal-b4"


def test_a_rung_that_fits_only_without_the_validation_spike_validates_at_a_smaller_batch(default):
    t = trial("optimal", 8, 11.5, used=12.0)  # validation at 12 (2 × 6): 12 GiB > 10.8; training 8.5 fits
    c = start(default, {"optimal": t}, free=12)
    assert c.start.name == "optimal" and c.start.batch == 6
    # slope (11.5 − 8) / 12 per image above training's 8 GiB; 10.8 − 0.5 context − 8 = 2.3 GiB → 7 images
    assert c.start.val_batch == 7
    assert "validation at batch 12 (12.00 GiB) does not: validates at batch 7 (estimated" in c.reason
    # conservative: the estimate at 7 is within the budget, at 8 it is not
    slope = (11.5 - 8) / 12
    assert 8 + 7 * slope <= 10.8 - 0.5 < 8 + 8 * slope
    # a spike that leaves no room for one image: the rung is out, not validated at 0
    c = start(default, {"optimal": trial("optimal", 10.29, 30, used=30.5)}, free=12)
    assert c.start.name == "optimal-b4" and "even at batch 1" in c.verdicts[0].reason


def test_the_val_batch_reaches_the_plan_and_the_spec(default):
    p = plan.choose(default, snap(12), dataset_images=100, measured={"optimal": trial("optimal", 8, 11.5, used=12)})
    assert p.start.name == "optimal" and p.start.val_batch == 7
    assert p.rungs[0].val_batch == 7 and p.rungs[1].val_batch is None  # the supervisor trains from `rungs`
    assert p.reasons[0].startswith("start rung optimal: measured")
    from launcher import spec
    from launcher.runlog import RunPaths
    s = spec.build(default.job, p.rungs[0], "0", RunPaths.for_run("x"), attempt=1)
    assert s.val_batch == 7 and s.to_json()["val_batch"] == 7


@pytest.mark.parametrize("ended, retries", [(TRIAL_FIT, 3), (TRIAL_RETRIES, 2), (TRIAL_OOM, 0)])
def test_alloc_retries_or_an_oom_rule_a_rung_out_that_fits(default, ended, retries):
    measured = {"optimal": trial("optimal", 8, 9, used=9.5, ended=ended, retries=retries),
                "optimal-b4": trial("optimal-b4", 6, 7, batch=4, used=7.5)}
    c = start(default, measured, free=24)
    assert c.start.name == "optimal-b4"
    assert c.verdicts[0].decided == "measured" and not c.verdicts[0].fits
    assert ("alloc retries" if ended != TRIAL_OOM else "ran out of memory") in c.reason


def test_an_unmeasured_rung_below_a_measured_one_keeps_its_threshold(default):
    measured = {"optimal": trial("optimal", 8, 9, ended=TRIAL_OOM)}
    c = start(default, measured, free=12)
    assert c.start.name == "optimal-b4" and c.reason.startswith("start rung optimal-b4: threshold on GPU 0, 12.00 GiB "
                                                                "free ≥ 11 GiB")
    assert "not optimal (measured: ran out of memory" in c.reason
    assert start(default, measured, free=10).start.name == "safe"  # 11 GiB thresholds do not fit 10


def test_a_trial_that_failed_says_nothing_and_the_threshold_decides(default):
    c = start(default, {"optimal": trial("optimal", 30, 30, ended=TRIAL_FAILED)}, free=16)
    assert c.start.name == "optimal" and c.verdicts[0].decided == "threshold"
    assert "its trial ended failed" in c.verdicts[0].reason


def test_a_trial_that_ended_in_a_way_the_launcher_does_not_know_says_nothing(default, tmp_path):
    # peaks that would fit 12 GiB, but "paused" is none of contract.TRIAL_ENDINGS: taken as failed
    odd = trial("optimal", 8, 9, used=9.5, ended="paused")
    assert choice.says_nothing(odd)
    c = start(default, {"optimal": odd}, free=12)
    assert c.start.name == "optimal-b4" and c.verdicts[0].decided == "threshold"  # 12 < optimal's 15 GiB
    assert "its trial ended paused: nothing measured" in c.verdicts[0].reason
    store = experience.for_job(default, snap(24).gpus, snap(24), tmp_path / "experience.json")
    assert experience.note_trials(store, [odd], "night-1") == 0  # nor is it stored


@pytest.mark.parametrize("ended, retries", [(TRIAL_OOM, 0), (TRIAL_RETRIES, 2), (TRIAL_FIT, 3)])
def test_an_oom_measured_with_less_free_memory_leaves_the_rung_to_its_threshold(default, ended, retries):
    # tune ran while another job held 14 of 24 GiB: optimal ran out with 10 GiB free
    measured = {"optimal": trial("optimal", 8, 9, used=9.5, ended=ended, retries=retries, free=10)}
    c = start(default, measured, free=24)
    assert c.start.name == "optimal" and c.verdicts[0].decided == "threshold" and c.verdicts[0].fits
    what = "ran out of memory" if ended == TRIAL_OOM else "saw alloc retries"
    assert f"(its trial {what} with 10.00 GiB free, less than the 24.00 GiB free now: it says the rung needs more " \
        "than that, not that it does not fit)" in c.reason
    # no more than 5 % more free than the trial had: it still rules the rung out
    assert start(default, measured, free=10.5).verdicts[0].decided == "measured"
    assert not start(default, measured, free=10.5).verdicts[0].fits
    # more free, but the threshold says no: the threshold decides
    assert start(default, {"optimal": trial("optimal", 8, 9, ended=ended, retries=retries, free=4)}, free=12
                 ).start.name == "optimal-b4"
    # a trial from before free_bytes: taken as measured with what is free now, so it rules the rung out
    old = start(default, {"optimal": trial("optimal", 8, 9, used=9.5, ended=ended, retries=retries)}, free=24)
    assert old.start.name == "optimal-b4" and old.verdicts[0].decided == "measured" and not old.verdicts[0].fits


def test_dry_run_says_the_oom_was_measured_with_less_free_memory(capsys, fixed_machine):
    asked = ladder_mod.load(ROOT / "ladders" / "default.toml", data="coco_indoor/data.yaml")
    store = experience.for_job(asked, FIXED.gpus, FIXED)
    store.note_trial(trial("optimal", 8, 9, ended=TRIAL_OOM, free=10), "night-1")
    store.note_trial(trial("optimal-b4", 6, 7, batch=4, used=7.5), "night-1")
    code, out, _ = run(capsys, "dry-run", "--data", "coco_indoor/data.yaml")
    assert code == 0 and "- start rung optimal: threshold on GPU 0, 23.41 GiB free ≥ 15 GiB" in out
    section = out.split("\nMeasured  ")[1].split("\n\n")[0].splitlines()
    assert section[1].startswith("  > optimal     its trial does not decide: the threshold decided, fits (23.41 GiB free ≥ 15 GiB")
    assert "(its trial ran out of memory with 10.00 GiB free, less than the 23.41 GiB free now: it says the rung " \
        "needs more than that, not that it does not fit)" in section[1]


def test_the_host_peak_must_fit_the_available_ram(default):
    measured = {"optimal": trial("optimal", 8, 9, used=9.5, rss=30), "optimal-b4": trial("optimal-b4", 6, 7, batch=4,
                                                                                          used=7.5, rss=10)}
    c = start(default, measured, free=24, ram=32)  # 30 > 32 × 0.9
    assert c.start.name == "optimal-b4" and "host peak 30.00 GiB > 32.00 GiB available RAM" in c.reason


def test_the_tightest_gpu_decides(default):
    gpus = (Gpu(0, "GPU", 24 * GIB, 24 * GIB), Gpu(1, "GPU", 24 * GIB, 9 * GIB))
    c = start(default, {"optimal": trial("optimal", 8, 9, used=9.5)}, gpus=gpus)
    assert c.start.name == "safe" and "GPU 1, the tightest of 2" in c.reason


def test_on_the_cpu_fit_is_host_ram_only(default):
    # on the CPU the peaks are the child tree's RSS; device memory means nothing
    # (a trial's training and validation peaks are RSS there too: the largest of the three counts)
    measured = {"optimal": trial("optimal", 20, 21, rss=5), "optimal-b4": trial("optimal-b4", 9, 10, batch=4, rss=10)}
    c = start(default, measured, ram=16, gpus=())
    assert c.start.name == "optimal-b4" and c.verdicts[0].decided == "measured"
    assert "host peak 21.00 GiB > 16.00 GiB available RAM" in c.reason and c.notes == ()
    assert start(default, measured, ram=64, gpus=()).start.name == "optimal"
    assert start(default, {}, ram=1, gpus=()).start.name == "optimal"  # unmeasured: no thresholds on the CPU


def test_free_memory_unknown_leaves_the_measurement_unjudged(default):
    gpus = (Gpu(0, "GPU", 24 * GIB, None),)
    c = start(default, {"optimal": trial("optimal", 1, 1, used=1.5)}, gpus=gpus)
    assert c.start.name == "safe" and "NVML does not report free memory" in c.reason
    assert "its measurement needs the free memory" in c.verdicts[0].reason


def test_a_card_with_room_to_grow_gets_a_note(default):
    c = start(default, {"optimal": trial("optimal", 8, 9, used=10)}, free=80)
    assert c.start.name == "optimal"
    # 6 × 80 × 0.9 / 10 = 43.2: linear from one measurement, all of the need taken as growing
    assert c.notes == ("note: rung optimal needs 10.00 GiB measured, under half of GPU 0's 80.00 GiB free: batch 43 "
                       "would fit (an estimate, linear in the batch from one measurement); [job] grow = true has "
                       "the trials measure 2× and 4× its batch and start on the largest that fits",)
    assert start(default, {"optimal": trial("optimal", 8, 9, used=10)}, free=19).notes == ()  # 10 ≥ 19 / 2
    p = plan.choose(default, snap(80), dataset_images=100, measured={"optimal": trial("optimal", 8, 9, used=10)})
    assert c.notes[0] in p.reasons and not any("over 2 ×" in r for r in p.reasons)  # the threshold's note gives way


def test_grow_starts_on_the_largest_grown_batch_that_fits(default):
    grown = replace(default, job=replace(default.job, grow=True))
    measured = {"optimal": trial("optimal", 8, 9, used=10),
                choice.grow_name("optimal", 2): trial("optimal@2x", 16, 18, batch=12, used=19),
                choice.grow_name("optimal", 4): trial("optimal@4x", 32, 40, batch=24, ended=TRIAL_OOM)}
    c = start(grown, measured, free=80, grow=True)
    assert c.start.name == "optimal@2x" and c.start.batch == 12 and c.start.model == default.rungs[0].model
    assert [v.rung for v in c.verdicts][:3] == ["optimal@4x", "optimal@2x", "optimal"]
    assert "not optimal@4x (measured: ran out of memory" in c.reason
    assert start(grown, measured, free=80, grow=False).start.name == "optimal"  # grow off: the ladder's own
    measured[choice.grow_name("optimal", 4)] = trial("optimal@4x", 32, 40, batch=24, used=41)
    assert start(grown, measured, free=80, grow=True).start.name == "optimal@4x"
    # the plan: the grown rung first, then the ladder, to step down to
    p = plan.choose(grown, snap(80), dataset_images=100, measured=measured)
    assert [r.name for r in p.rungs] == ["optimal@4x", "optimal", "optimal-b4", "mnv4", "safe"]
    assert [r.name for r in plan.grown_ladder(grown, p).rungs] == [r.name for r in p.rungs]
    assert plan.grown_ladder(grown, p).rungs[0].batch == 24


@pytest.mark.parametrize("ended", [TRIAL_TIMEOUT, TRIAL_FAILED, "paused"])
def test_a_grown_rung_whose_trial_measured_nothing_never_starts(default, ended):
    # 80 GiB free passes the top rung's 15 GiB threshold: a grown rung must not start on it
    grown = replace(default, job=replace(default.job, grow=True))
    measured = {"optimal": trial("optimal", 8, 9, used=10),
                choice.grow_name("optimal", 2): trial("optimal@2x", 16, 18, batch=12, used=19, ended=ended)}
    if ended == TRIAL_TIMEOUT:  # ran out of time before measuring anything
        measured["optimal@2x"] = replace(measured["optimal@2x"], peak_reserved_bytes=None, peak_allocated_bytes=None,
                                         val_peak_reserved_bytes=None, val_peak_allocated_bytes=None)
    c = start(grown, measured, free=80, grow=True)
    assert c.start.name == "optimal"
    v = c.verdicts[0]
    assert v.rung == "optimal@2x" and not v.fits and v.decided == "measured"
    assert v.reason == (f"its trial ended {ended}: nothing measured; a grown batch starts only where its trial "
                        "measured that it fits")
    assert plan.choose(grown, snap(80), dataset_images=100, measured=measured).start.name == "optimal"
    # nor on the CPU (no thresholds there) nor with the free memory unknown, whatever the top's threshold
    assert start(grown, measured, ram=64, grow=True, gpus=()).start.name == "optimal"
    unknown = (Gpu(0, "GPU", 80 * GIB, None),)
    lax = replace(grown, rungs=(replace(grown.rungs[0], min_free_vram_gib=0),) + grown.rungs[1:])
    assert start(lax, measured, grow=True, gpus=unknown).start.name == "optimal"


def test_a_grown_rung_that_ran_out_with_less_free_memory_does_not_start_on_a_threshold(default):
    grown = replace(default, job=replace(default.job, grow=True))
    measured = {"optimal": trial("optimal", 8, 9, used=10),
                choice.grow_name("optimal", 2): trial("optimal@2x", 16, 18, batch=12, ended=TRIAL_OOM, free=12)}
    c = start(grown, measured, free=80, grow=True)
    assert c.start.name == "optimal" and not c.verdicts[0].fits
    assert c.verdicts[0].reason.startswith("its trial ran out of memory with 12.00 GiB free, less than the 80.00 GiB "
                                           "free now")
    assert c.verdicts[0].reason.endswith("; a grown batch starts only where its trial measured that it fits")


def test_learned_rungs_still_apply_to_a_measured_start(default):
    measured = {"optimal": trial("optimal", 8, 9, used=10), "optimal-b4": trial("optimal-b4", 20, 30, batch=4,
                                                                                ended=TRIAL_OOM)}
    p = plan.choose(default, snap(24), dataset_images=100, measured=measured, avoid={"optimal": "rung optimal OOMed"})
    assert p.start.name == "mnv4"  # below the avoided one, past the one that measured an OOM
    assert p.reasons[0].startswith("start rung mnv4: learned, rung optimal OOMed (the measurements alone would start "
                                   "on optimal: measured")
    # --start-rung still wins
    assert plan.choose(default, snap(24), measured=measured, start_rung="optimal-b4").start.name == "optimal-b4"


def test_without_trials_the_plan_is_the_thresholds(default):
    assert plan.choose(default, snap(24), dataset_images=100, measured={}) == plan.choose(default, snap(24),
                                                                                         dataset_images=100)


# ---- the RAM cache from a measured RSS ---------------------------------------------------------------

def test_the_ram_cache_uses_the_measured_rss(default):
    s = snap(24, ram_gib=40)
    images = 4400  # estimate 5.04 GiB: 40 ≥ 2 × 5.04, the estimate alone turns it on
    assert plan.decide_cache(default, s, s.gpus, images).effective == "ram"
    cached = {"optimal": trial("optimal", 8, 9, rss=37, cache="ram")}  # 37 > 40 × 0.9
    d = plan.decide_cache(default, s, s.gpus, images, cached)
    assert d.effective == "off" and d.reason.startswith("RAM cache off: measured 37.00 GiB (optimal's trial peak RSS, "
                                                        "cache included) > 40.00 GiB available × 0.9")
    assert plan.decide_cache(default, s, s.gpus, images, {"optimal": trial("optimal", 8, 9, rss=30, cache="ram")}
                             ).effective == "ram"
    # a trial without the cache in its RSS gets the estimate added: 32 + 5.04 > 36
    uncached = plan.decide_cache(default, s, s.gpus, images, {"optimal": trial("optimal", 8, 9, rss=32)})
    assert uncached.effective == "off" and "+ 5.04 GiB cache estimate" in uncached.reason
    assert plan.choose(default, s, dataset_images=images, measured=cached).rungs[0].cache == "off"
    # a trial that ran out of memory stopped short of its peak: the estimate decides
    short = {"optimal": trial("optimal", 8, 9, rss=37, cache="ram", ended=TRIAL_OOM)}
    assert plan.decide_cache(default, s, s.gpus, images, short).reason.startswith(
        "RAM cache on: 40.00 GiB available ≥ 2")


@pytest.mark.parametrize("ran, need", [("ram", 30.0), ("disk", 30 + 5.04), ("off", 30 + 5.04), (None, 30 + 5.04)])
def test_the_ram_cache_by_the_cache_the_trial_really_ran_with(default, ran, need):
    # Trial.cache is what the trial child ran with: only "ram" has the cache in its RSS; "disk"
    # reads it from files and "off" does not cache, like a trial that does not say: the estimate is added
    s = snap(24, ram_gib=40)
    d = plan.decide_cache(default, s, s.gpus, 4400, {"optimal": trial("optimal", 8, 9, rss=30, cache=ran)})
    assert d.reason.startswith(f"RAM cache {'on' if need <= 36 else 'off'}: measured {need:.2f} GiB")
    assert d.effective == ("ram" if need <= 36 else "off")


def test_the_ram_cache_of_a_trial_on_one_of_several_gpus_adds_the_other_ranks_copies(default):
    s = snap(24, 24, ram_gib=40)  # two ranks: 2 × 5.04 GiB of cache; the trial ran one of them
    cached = plan.decide_cache(default, s, s.gpus, 4400, {"optimal": trial("optimal", 8, 9, rss=32, cache="ram")})
    assert cached.effective == "off" and cached.reason.startswith(  # 32 alone would fit 36
        "RAM cache off: measured 37.04 GiB (optimal's trial peak RSS 32.00 GiB, one copy of the cache included, + "
        "5.04 GiB for the other 1 GPUs' copies) > 40.00 GiB available × 0.9")
    assert plan.decide_cache(default, s, s.gpus, 4400, {"optimal": trial("optimal", 8, 9, rss=27, cache="ram")}
                             ).effective == "ram"  # 32.04 ≤ 36
    off = plan.decide_cache(default, s, s.gpus, 4400, {"optimal": trial("optimal", 8, 9, rss=27, cache="off")})
    assert off.effective == "off" and "27.00 GiB + 10.07 GiB cache estimate" in off.reason  # both copies added


# ---- the store -------------------------------------------------------------------------------------

@pytest.fixture
def store(tmp_path, default):
    return experience.for_job(default, snap(24).gpus, snap(24), tmp_path / "experience.json")


def test_a_trial_round_trips_through_the_store(store):
    t = trial("optimal", 8, 9, used=10, free=20)  # its free memory with it: an OOM's is read back
    store.note_trial(t, "night-1")
    got = store.trials()
    assert set(got) == {"optimal"} and got["optimal"][0] == t and got["optimal"][1][:4].isdigit()
    assert got["optimal"][0].free_bytes == 20 * GIB
    store.note_trial(replace(t, images_per_s=50.0), "night-2")  # the newest wins
    assert store.trials()["optimal"][0].images_per_s == 50.0
    store.note_trial(trial("optimal@2x", 16, 18, batch=12), "night-2")  # grown rungs are known by name
    assert set(store.trials()) == {"optimal", "optimal@2x"}
    with pytest.raises(ValueError, match="not a rung of this job"):
        store.note_trial(trial("turbo", 1, 1), "night-2")


def test_a_trial_for_another_dataset_ladder_rung_or_version_does_not_match(store, default, tmp_path):
    store.note_trial(trial("optimal", 8, 9), "night-1")
    other_data = replace(default, job=replace(default.job, dataset=tmp_path / "other" / "data.yaml"))
    assert experience.for_job(other_data, snap(24).gpus, snap(24), store.path).trials() == {}
    other_args = replace(default, job=replace(default.job, args={"mosaic": 0.5}))
    assert experience.for_job(other_args, snap(24).gpus, snap(24), store.path).trials() == {}
    bigger = replace(default, rungs=(replace(default.rungs[0], batch=8),) + default.rungs[1:])  # the rung changed
    assert experience.for_job(bigger, snap(24).gpus, snap(24), store.path).trials() == {}
    assert Experience(store.path, {**store.key, "ultralytics": "0.0.1"}, store.rungs).trials() == {}
    assert Experience(store.path, store.key, store.rungs).trials() != {}  # the same key and rungs: it matches


def test_trials_expire_like_verdicts(store):
    store.note_trial(trial("optimal", 8, 9), "night-1")
    assert store.trials(now=datetime.now(timezone.utc) + timedelta(days=29)) != {}
    assert store.trials(now=datetime.now(timezone.utc) + timedelta(days=31)) == {}


def test_verdicts_and_trials_share_the_file_and_an_old_file_loads(store):
    store.path.write_text(json.dumps({"about": "x", "entries": [
        {"ts": datetime.now(timezone.utc).isoformat(), "rung": "optimal", "verdict": OOM_EARLY, "run": "old",
         "key": store.key}]}))  # written before trials
    assert store.trials() == {} and set(store.avoid()) == {"optimal"}
    store.note_trial(trial("optimal-b4", 6, 7, batch=4), "night-1")
    store.note("optimal-b4", experience.HELD, "night-1")  # a verdict's note keeps the trials
    data = json.loads(store.path.read_text())
    assert len(data["entries"]) == 2 and len(data["trials"]) == 1
    assert set(store.trials()) == {"optimal-b4"} and set(store.avoid()) == {"optimal"}  # a trial is no verdict


def test_note_trials_stores_what_measured_and_nothing_without_a_store(store):
    done = [trial("optimal", 8, 9), trial("optimal-b4", 1, 1, batch=4, ended=TRIAL_FAILED)]
    assert experience.note_trials(None, done, "rehearsal") == 0  # --inject, --no-memory: no store
    assert not store.path.exists()
    assert experience.note_trials(store, done, "night-1") == 1 and set(store.trials()) == {"optimal"}


# ---- dry-run -----------------------------------------------------------------------------------------

def test_dry_run_shows_the_measured_rungs(capsys, fixed_machine):
    asked = ladder_mod.load(ROOT / "ladders" / "default.toml", data="coco_indoor/data.yaml")
    store = experience.for_job(asked, FIXED.gpus, FIXED)
    store.note_trial(trial("optimal", 8, 9, used=10, ips=30.0), "night-1")
    store.note_trial(trial("optimal-b4", 20, 30, batch=4, ended=TRIAL_OOM), "night-1")
    code, out, _ = run(capsys, "dry-run", "--data", "coco_indoor/data.yaml")
    assert code == 0
    section = out.split("\nMeasured  ")[1].split("\n\n")[0].splitlines()
    assert section[1].startswith("  > optimal     measured 20") and "ended fit: train 8.00 GiB, val 9.00 GiB at " \
        "batch 12, device 10.00 GiB, host 4.00 GiB, 30.0 images/s, night ≈ 3 h 37 min (100 epochs × 3912 images" in \
        section[1]  # 100 × 3912 / 30 s
    assert "fits (measured): needs 10.00 GiB" in section[2]
    assert "optimal-b4  measured" in section[3] and "does not fit (measured): ran out of memory" in section[4]
    assert "night" not in section[3]  # a rung that does not fit gives no night
    assert "RAM cache on: measured 9.04 GiB (optimal's trial peak RSS 4.00 GiB + 5.04 GiB cache estimate)" in out
    assert section[5].startswith("    mnv4        not measured: the threshold decided, fits")
    assert section[-1] == ("  the night: about 3 h 37 min of training on optimal at the measured 30.0 images/s "
                           "(100 epochs × 3912 train images), plus validation and start-up, which the trial did "
                           "not time")
    assert "- start rung optimal: measured on GPU 0" in out
    assert "- note: rung optimal needs 10.00 GiB measured, under half of GPU 0's 23.41 GiB free: batch 12 would fit " \
        "(an estimate" in out  # 6 × 23.41 × 0.9 / 10
    code, out, _ = run(capsys, "dry-run", "--data", "coco_indoor/data.yaml", "--json")
    rungs = {r["name"]: r for r in json.loads(out)["ladder"]["rungs"]}
    assert rungs["optimal"]["decided"] == "measured" and rungs["optimal"]["trial"]["images_per_s"] == 30.0
    assert rungs["optimal"]["night_s"] == pytest.approx(100 * 3912 / 30) and rungs["mnv4"]["decided"] == "threshold"
    assert json.loads(out)["eta"] == {"seconds": round(100 * 3912 / 30, 1), "from": "the trial",
                                      "epoch_s": round(3912 / 30, 2), "epochs": 100, "with_val": False}
    code, out, _ = run(capsys, "dry-run", "--data", "coco_indoor/data.yaml", "--no-memory")
    assert json.loads(run(capsys, "dry-run", "--data", "coco_indoor/data.yaml", "--no-memory", "--json")[1])["eta"] \
        is None
    assert "Measured" not in out and "measured" not in out and "the night" not in out


def test_run_records_the_start_rungs_eta_and_the_trials_speeds(fixed_machine):
    """The `start` event carries the night's first ETA from the stored trial that chose the start
    (status and report read it: they see no store), each measured rung's images/s, the train images."""
    from launcher import setup
    from launcher.runlog import read_events

    asked = ladder_mod.load(ROOT / "ladders" / "default.toml", data="coco_indoor/data.yaml")
    store = experience.for_job(asked, FIXED.gpus, FIXED)
    store.note_trial(trial("optimal", 20, 30, ended=TRIAL_OOM, ips=45.0), "night-1")
    store.note_trial(trial("optimal-b4", 8, 9, batch=4, used=10, ips=25.0), "night-1")
    prepared = setup.prepare(setup.Request(data="coco_indoor/data.yaml"), say=lambda line: None)
    prepared.lock.release()
    [start] = [e for e in read_events(prepared.paths.events) if e.kind == "start"]
    assert start.get("rung") == "optimal-b4" and start.get("train_images") == 3912
    assert start.get("eta_s") == round(asked.rung("optimal-b4").epochs * 3912 / 25.0, 1)
    assert start.get("speeds") == {"optimal": 45.0, "optimal-b4": 25.0}
