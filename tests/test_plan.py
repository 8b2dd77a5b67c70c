"""The starting rung and the RAM-cache decision over a matrix of cards and RAM sizes."""

from dataclasses import replace

import pytest

from launcher import ladder, plan, probe
from launcher.contract import GIB
from launcher.errors import BadInput
from launcher.probe import Gpu, Snapshot
from launcher.runlog import Ev

from conftest import ROOT, all_available
from helpers import snap


@pytest.fixture(scope="module")
def default():
    return all_available(ladder.load(ROOT / "ladders" / "default.toml"))


# Free VRAM as such cards report it (a "16 GB" card has ~15.9 GiB total and a little less free).
@pytest.mark.parametrize("free_gib, start", [
    (7.6, "safe"),          # 8 GB card
    (11.0, "optimal-b4"),   # exactly the threshold
    (10.9, "safe"),         # a "12 GB" card with a desktop on it
    (11.7, "optimal-b4"),   # 12 GB card
    (12.0, "optimal-b4"),
    (15.9, "optimal"),      # 16 GB card, idle
    (14.8, "optimal-b4"),   # 16 GB card with 1.1 GiB used elsewhere
    (16.0, "optimal"),
    (24.0, "optimal"),
    (80.0, "optimal"),
])
def test_start_rung_by_free_vram(default, free_gib, start):
    p = plan.choose(default, snap(free_gib), dataset_images=4400)
    assert p.start.name == start
    assert p.reasons[0].startswith(f"start rung {start}: GPU 0 has {free_gib:.2f} GiB free")
    assert p.problems == ()


def test_mnv4_is_never_the_start_rung(default):
    for free in [x / 10 for x in range(0, 900, 7)]:
        assert plan.choose(default, snap(free), dataset_images=10).start.name != "mnv4"


def test_ddp_uses_the_tightest_gpu(default):
    p = plan.choose(default, snap(23.5, 11.8), device="0,1", dataset_images=100)
    assert p.start.name == "optimal-b4" and p.device == "0,1"
    assert "GPU 1, the tightest of 2" in p.reasons[0]
    assert "too little for optimal (≥ 15 GiB)" in p.reasons[0]


@pytest.mark.parametrize("images, imgsz, ram_gib, gpus, cache", [
    (4400, 640, 64.0, 1, "ram"),     # 5.03 GiB estimate, 64 available
    (4400, 640, 10.0, 1, "off"),     # 10 < 2 × 5.03
    (4400, 640, 10.08, 1, "ram"),    # just above 2 × 5.035 GiB
    (4400, 640, 16.0, 2, "off"),     # two DDP ranks each cache a copy: 10.07 GiB, needs 20.14
    (4400, 640, 24.0, 2, "ram"),
    (4400, 320, 2.5, 1, "off"),      # 1.26 GiB estimate at 320 px
    (4400, 320, 2.6, 1, "ram"),
])
def test_ram_cache_needs_twice_the_estimate(images, imgsz, ram_gib, gpus, cache):
    lad = ladder.load(ROOT / "ladders" / "default.toml")
    lad = replace(lad, job=replace(lad.job, imgsz=imgsz))
    device = ",".join(str(i) for i in range(gpus))
    p = plan.choose(lad, snap(*[24.0] * gpus, ram_gib=ram_gib), device=device, dataset_images=images)
    estimate = images * imgsz * imgsz * 3 * gpus
    assert p.cache.estimate == estimate and p.cache.copies == gpus
    assert p.cache.effective == cache
    assert p.start.cache == cache
    assert all(r.cache == cache for r in p.rungs if r.name != "safe") and p.rungs[-1].cache == "off"
    assert any(r.startswith(f"RAM cache {'on' if cache == 'ram' else 'off'}") for r in p.reasons)


def test_cache_off_when_dataset_unknown(default):
    p = plan.choose(default, snap(24), dataset_images=None, dataset_problem="x.yaml: not found")
    assert p.start.cache == "off" and "x.yaml: not found" in p.problems
    assert any("size is unknown" in r for r in p.reasons)


def test_no_gpu_plans_for_cpu_but_is_a_problem(default):
    no_gpu = Snapshot((), 10, 10, 2, nvml="NVML unavailable")
    p = plan.choose(default, no_gpu, dataset_images=10)
    assert p.device == "cpu" and p.start.name == "optimal"
    assert any("--device cpu" in x for x in p.problems)
    p = plan.choose(default, no_gpu, device="cpu", dataset_images=10)
    assert p.problems == () and p.start.name == "optimal"


def test_vram_pretend_on_a_machine_without_gpus(default):
    pretend = probe.pretend(Snapshot((), 10, 10, 2, nvml="no"), vram_gib=11.7)
    p = plan.choose(default, pretend, dataset_images=10)
    assert p.start.name == "optimal-b4" and p.device == "0" and p.problems == ()
    two = probe.pretend(Snapshot((), 10, 10, 2, nvml="no"), vram_gib=16, indices=(0, 1))
    assert plan.choose(default, two, device="0,1", dataset_images=10).start.name == "optimal"


def test_pretend_caps_real_gpus_and_ram():
    s = probe.pretend(snap(80, ram_gib=200), vram_gib=8, ram_gib=6)
    assert s.gpus[0].free == 8 * GIB and s.gpus[0].total == 80 * GIB
    assert s.ram_available == 6 * GIB and s.pretend_vram == 8 and s.pretend_ram == 6


def test_unknown_free_memory_starts_at_the_first_rung_needing_none(default):
    s = Snapshot((Gpu(0, "odd", None, None),), GIB, GIB, 2, nvml="ok")
    p = plan.choose(default, s, dataset_images=1)
    assert p.start.name == "safe" and "does not report free memory" in p.reasons[0]


def test_forced_start_rung(default):
    p = plan.choose(default, snap(4.0), start_rung="optimal", dataset_images=1)
    assert p.start.name == "optimal" and "forced" in p.reasons[0]
    with pytest.raises(BadInput, match="no rung named 'fast'"):
        plan.choose(default, snap(4.0), start_rung="fast")


def test_unavailable_rungs_are_stepped_over(default):
    gone = replace(default.rungs[0], model=replace(default.rungs[0].model, available=False, weights="not built"))
    lad = replace(default, rungs=(gone,) + default.rungs[1:])
    p = plan.choose(lad, snap(24), dataset_images=1)
    assert p.start.name == "optimal-b4"
    assert any(r.startswith("rung optimal unavailable (not built)") for r in p.reasons)
    with pytest.raises(BadInput, match="unavailable"):
        plan.choose(lad, snap(24), start_rung="optimal")


def test_nothing_fits_is_a_problem(default):
    lad = replace(default, rungs=tuple(replace(r, min_free_vram_gib=4) for r in default.rungs))
    p = plan.choose(lad, snap(2.0), dataset_images=1)
    assert p.start is None and "no rung fits" in p.problems[0]


def test_device_not_on_this_machine(default):
    with pytest.raises(BadInput, match=r"GPU 3 not on this machine \(GPUs: 0\)"):
        plan.choose(default, snap(24), device="3")


def test_epochs_override_applies_to_every_rung(default):
    assert {r.epochs for r in plan.override_epochs(default, 2).rungs} == {2}
    assert plan.override_epochs(default, None) is default


def test_weights_reasons_name_each_model_once(default):
    reasons = plan.weights_reasons(default.rungs)
    assert len(reasons) == 2
    assert reasons[0].startswith("weights of rtdetr-l.pt (optimal, optimal-b4, safe):")


# ---- the policy after a failure ----------------------------------------------------------------

@pytest.fixture(scope="module")
def policy(default):
    return plan.Policy.of(default.job)  # retries 2, first wait 10 s


# (rung, kind, phase, epochs saved, transient streak) -> (action, next rung)
@pytest.mark.parametrize("i, kind, phase, saved, streak, action, to", [
    (0, "cuda_oom", "train", 1, 0, Ev.RETRY, 0),        # late OOM: the same rung, fresh process
    (0, "cuda_oom", "val", 3, 0, Ev.RETRY, 0),
    (0, "cuda_oom", "train", 0, 0, Ev.STEP_DOWN, 1),    # early OOM: the next rung
    (1, "cuda_oom", "val", 0, 0, Ev.STEP_DOWN, 2),
    (3, "cuda_oom", "train", 0, 0, Ev.EXHAUSTED, None),  # bottom of the ladder
    (0, "cuda_oom", "final", 0, 0, Ev.VALIDATE, 1),     # only the final validation is owed
    (3, "cuda_oom", "final", 0, 0, Ev.EXHAUSTED, None),
    (1, "unknown", "final", 0, 3, Ev.VALIDATE, 2),      # any failure of the owed validation: never retrain
    (0, "fatal", "train", 5, 0, Ev.FATAL, None),
    (2, "unknown", "train", 0, 1, Ev.RETRY, 2),         # transient: retried on its rung...
    (2, "unknown", "train", 0, 2, Ev.RETRY, 2),
    (2, "unknown", "train", 0, 3, Ev.STEP_DOWN, 3),     # ...until its retries are spent
    (0, "nccl", "train", 2, 3, Ev.STEP_DOWN, 1),
    (0, "hang", "train", 0, 1, Ev.RETRY, 0),            # a hang: once
    (0, "hang", "train", 0, 2, Ev.STEP_DOWN, 1),
    (0, "interrupted", "train", 0, 0, Ev.INTERRUPTED, None),
])
def test_decide(default, policy, i, kind, phase, saved, streak, action, to):
    step = plan.decide(default.rungs, i, kind, phase, saved, streak=streak, policy=policy)
    assert (step.action, step.rung) == (action, to), step.reason


def test_transient_waits_grow_exponentially_to_a_cap(default):
    policy = plan.Policy.of(replace(default.job, retries=8))
    waits = [plan.decide(default.rungs, 0, "nccl", "train", 0, streak=n, policy=policy).wait_s for n in range(1, 9)]
    assert waits == [10.0, 20.0, 40.0, 80.0, 160.0, 300.0, 300.0, 300.0]
    assert plan.decide(default.rungs, 0, "cuda_oom", "train", 2, streak=0, policy=policy).wait_s == 0.0


def test_decide_skips_unavailable_rungs(default, policy):
    gone = replace(default.rungs[1], model=replace(default.rungs[1].model, available=False))
    rungs = (default.rungs[0], gone) + default.rungs[2:]
    assert plan.decide(rungs, 0, "cuda_oom", "train", 0, streak=0, policy=policy).rung == 2


def test_host_oom_remedies_in_order(default, policy):
    optimal = default.rungs[0]
    step = plan.decide(default.rungs, 0, "host_oom", "train", 0, streak=0, policy=policy)
    assert (step.action, step.rung, step.changes) == (Ev.RETRY, 0, (("cache", "off"),))
    no_cache = (replace(optimal, cache="off"),) + default.rungs[1:]
    step = plan.decide(no_cache, 0, "host_oom", "train", 0, streak=0, policy=policy)
    assert step.changes == (("workers", 4),)
    bare = (replace(optimal, cache="off", workers=0),) + default.rungs[1:]
    assert plan.decide(bare, 0, "host_oom", "train", 0, streak=0, policy=policy).action == Ev.STEP_DOWN


def test_the_policy_table_is_what_decide_applies(default, policy):
    """Every failure kind has one row (plan.POLICY); a kind's retries, its transience and how it
    ends come from that row, not from a second copy in decide, diagnose or the help."""
    from launcher.contract import CUDA_OOM, FATAL, HANG, HOST_OOM, INTERRUPTED, NCCL, THRASH, UNKNOWN
    assert set(plan.POLICY) == {CUDA_OOM, HOST_OOM, NCCL, UNKNOWN, HANG, THRASH, FATAL, INTERRUPTED}
    assert plan.TRANSIENT == {NCCL, UNKNOWN, HANG}
    assert [policy.retries_for(k) for k in (NCCL, UNKNOWN, HANG)] == [default.job.retries, default.job.retries, 1]
    for kind, rule in plan.POLICY.items():
        if rule.ends is not None:  # in any phase, however many epochs were saved
            assert {plan.decide(default.rungs, 1, kind, phase, 3, streak=0, policy=policy).action
                    for phase in ("train", "final")} == {rule.ends}
    assert [row[0] for row in plan.policy_rows()] == list(plan.POLICY)


# ---- machine sanity and offline weights (issue 13) ---------------------------------------------

def test_threads_and_workers_are_capped_at_the_cpus_this_process_may_use(default):
    few = replace(snap(24), cpus=4)
    p = plan.choose(default, few, dataset_images=1)
    assert {(r.threads, r.workers) for r in p.rungs} == {(4, 4), (2, 2)}
    assert "rung optimal: threads 8 → 4 and workers 8 → 4 (this process may use 4 CPUs)" in p.reasons
    assert not any("safe:" in r for r in p.reasons)  # 2 threads, 2 workers: nothing to cap
    assert all("CPUs" not in r for r in plan.choose(default, snap(24), dataset_images=1).reasons)  # 16 CPUs


def test_a_card_with_far_more_room_than_the_ladder_gets_a_note(default):
    p = plan.choose(default, snap(79.0, total_gib=80), dataset_images=1)
    assert p.start.name == "optimal" and any(r.startswith("note: GPU 0 has 79.00 GiB free, over 2 × the 15 GiB")
                                             for r in p.reasons)
    assert not any(r.startswith("note:") for r in plan.choose(default, snap(23.4), dataset_images=1).reasons)


def test_offline_the_plan_says_where_it_would_start_once_the_weights_are_there(default):
    offline = replace(default, rungs=tuple(
        replace(r, model=replace(r.model, available=False, weights="needs rtdetr-l.pt, but YOLO_OFFLINE is set"))
        if r.model.spec == "rtdetr-l.pt" else r for r in default.rungs))
    p = plan.choose(offline, snap(11.7), dataset_images=1)
    assert p.start.name == "mnv4"  # the only rung with its weights here
    said = [r for r in p.reasons if r.startswith("once its weights are on this machine")]
    assert said and "would start on rung optimal-b4: GPU 0 has 11.70 GiB free" in said[0]
    assert not any("steps over" in r for r in plan.choose(replace(offline, rungs=tuple(
        replace(r, model=replace(r.model, available=False)) for r in offline.rungs)), snap(11.7)).reasons)
