"""Thrashing seen before the crash (issue 21, docs/design.md "Tuning: a measured trial per rung"):
the child's heartbeat carries torch's alloc retries and reserved memory, the thrash rule
(memstats.RisingWindows) fires in an epoch, and with `[job] on_thrash = "restart"` the child ends
itself after the epoch's save; plan.POLICY restarts the rung once, then steps down. Also a rung's
`val_batch` honoured by the training child (callbacks.use_val_batch). Fast: stand-in stats and
scripted children; the slow end-to-end drills are at the bottom."""

from __future__ import annotations

import argparse
import json
import re
from pathlib import Path
from types import SimpleNamespace

import pytest

from launcher import cli, experience, ladder as ladder_mod, plan, status
from launcher.accounting import load as load_record
from launcher.callbacks import ThrashDrill, ThrashRestart, Watch, use_val_batch
from launcher.contract import EXIT_EXHAUSTED, EXIT_OK, THRASH, Heartbeat, Report, Spec
from launcher.failures import ChildEnd, classify, judge
from launcher.memstats import ALLOC_RETRIES, RESERVED, CudaStats
from launcher.report_md import markdown
from launcher.runlog import Ev, Events, RunPaths
from launcher.supervisor import Supervisor

from conftest import ROOT, all_available
from helpers import TINY, events, launch, model_dir, new_state, of, ok, trained_epochs, with_job, write_ladder


@pytest.fixture
def default():
    return all_available(ladder_mod.load(ROOT / "ladders" / "default.toml"))


def spec(tmp_path: Path, **kw) -> Spec:
    return Spec(heartbeat=str(tmp_path / "hb.json"), verified=str(tmp_path / "v" / "last.pt"), rung="optimal",
                attempt=1, train_args={"epochs": 3}, **kw)


def trainer(epoch=0, epochs=3, tmp_path: Path | None = None):
    last = Path(tmp_path or "/nonexistent") / "last.pt"
    return SimpleNamespace(epoch=epoch, start_epoch=0, epochs=epochs, train_loader=[0] * 4, stop=False,
                           _oom_retries=0, last=last, best=last.with_name("best.pt"),
                           device=SimpleNamespace(type="cpu", index=None))


class Allocator:
    """A stand-in for torch.cuda.memory_stats: the retries count a test sets."""

    def __init__(self):
        self.retries, self.reserved = 0, 3 << 30

    def stats(self) -> dict:
        return {ALLOC_RETRIES: self.retries, RESERVED: self.reserved}


def watching(tmp_path: Path, window: int = 2, **kw) -> tuple[Watch, Allocator]:
    """A Watch whose memory statistics come from a stand-in allocator through the CUDA path."""
    w = Watch(spec(tmp_path, **kw))
    alloc = Allocator()
    w.stats = CudaStats(0, memory_stats=alloc.stats, reset=lambda: None, device_used=lambda: None, rss=lambda: None)
    w.windows.window = window
    return w, alloc


def epoch(w: Watch, alloc: Allocator, n: int, batches: int = 4, rise: bool = False, tmp_path=None) -> None:
    t = trainer(epoch=n - 1, tmp_path=tmp_path)
    w.on_train_epoch_start(t)
    for _ in range(batches):
        alloc.retries += 2 if rise else 0
        w.on_train_batch_end(t)


def beat(tmp_path: Path) -> dict:
    return json.loads((tmp_path / "hb.json").read_text())


# ---- the child: heartbeat fields, the rule, restart or warn -------------------------------------

def test_the_heartbeat_carries_alloc_retries_reserved_memory_and_the_thrash_epoch(tmp_path):
    w, alloc = watching(tmp_path)
    epoch(w, alloc, 1)  # retries flat: no thrash
    hb = beat(tmp_path)
    assert (hb["alloc_retries"], hb["reserved_bytes"]) == (0, 3 << 30) and "thrash_epoch" not in hb
    epoch(w, alloc, 2, rise=True)  # rose in two consecutive windows of 2 batches
    hb = beat(tmp_path)
    assert hb["thrash_epoch"] == 2 and hb["alloc_retries"] == 8
    assert Heartbeat.from_json(hb).thrash_epoch == 2


def test_on_the_cpu_the_memory_fields_stay_unknown(tmp_path):
    w = Watch(spec(tmp_path))
    t = trainer()
    w.watch_memory(t)
    assert w.stats is None  # no allocator to thrash: nothing is sampled
    w.on_train_epoch_start(t)
    w.on_train_batch_end(t)
    assert not {"alloc_retries", "reserved_bytes", "thrash_epoch"} & set(beat(tmp_path))


def save(w: Watch, tmp_path: Path, n: int, epochs: int = 3) -> None:
    t = trainer(epoch=n - 1, epochs=epochs, tmp_path=tmp_path)
    t.last.write_bytes(b"not a checkpoint")  # the verified copy refuses it: no matter here
    w.on_model_save(t)


def test_restart_ends_the_child_after_the_thrash_epochs_save_and_is_classified_thrash(tmp_path):
    w, alloc = watching(tmp_path)
    epoch(w, alloc, 1, rise=True, tmp_path=tmp_path)
    with pytest.raises(ThrashRestart, match="epoch 1 is saved") as e:
        save(w, tmp_path, 1)
    w.finish_copy()
    assert w.last_saved_epoch == 1  # the save came first
    report = Report(ok=False, exc_type="launcher.callbacks.ThrashRestart", message=str(e.value), phase="val",
                    epochs_saved=1)
    assert classify(report=report).kind == THRASH
    assert judge(ChildEnd(1), report, "").kind == THRASH


def test_warn_never_ends_the_child_nor_does_restart_after_the_last_epoch(tmp_path):
    w, alloc = watching(tmp_path, on_thrash="warn")
    for n in (1, 2, 3):
        epoch(w, alloc, n, rise=True, tmp_path=tmp_path)
        save(w, tmp_path, n)  # no exception: warn records and goes on
        w.finish_copy()
    assert w.thrash_epoch == 3
    (tmp_path / "b").mkdir()
    last = Watch(spec(tmp_path / "b"))
    last.stats, last.windows.window = w.stats, 2
    epoch(last, alloc, 3, rise=True, tmp_path=tmp_path)
    save(last, tmp_path, 3)  # restart, but the last epoch: the final validation follows here
    last.finish_copy()
    assert last.thrash_epoch == 3


def test_a_log_line_about_thrashing_is_no_thrash_ending():
    log = ("launcher: the allocator is thrashing in epoch 2: alloc retries rose in two consecutive windows of 10 "
           "batches (5 so far); training goes on (on_thrash = warn)\nRuntimeError: something else\n")
    assert classify(log, exit_code=1).kind == "unknown"


# ---- the drill ----------------------------------------------------------------------------------

def test_the_thrash_injection_parses_and_its_stand_in_rises_from_its_epoch_on(tmp_path):
    assert cli._injection("thrash:optimal:1") == {"kind": THRASH, "rung": "optimal", "epoch": 1, "phase": "train"}
    for bad in ("thrash:optimal:1:val", "thrash:optimal:0", "thrash::1"):
        with pytest.raises(argparse.ArgumentTypeError):
            cli._injection(bad)
    now = {"epoch": 1}
    drill = ThrashDrill(2, lambda: now["epoch"])
    assert [drill.sample().alloc_retries for _ in range(2)] == [0, 0]
    now["epoch"] = 3  # and later epochs: a restarted attempt thrashes again
    assert [drill.sample().alloc_retries for _ in range(3)] == [1, 2, 3]
    # the Watch uses it with a window of one batch, and it fails nothing in the forward pass
    w = Watch(spec(tmp_path, inject=[{"kind": THRASH, "rung": "optimal", "epoch": 2}]))
    assert w.injections == [] and w.windows.window == 1
    w.watch_memory(trainer())
    fired = []
    for n in (1, 2):
        t = trainer(epoch=n - 1)
        w.on_train_epoch_start(t)
        for _ in range(3):
            w.on_train_batch_end(t)
            fired.append(w.thrash_epoch)
    # epoch 1's batches set the first window's count; epoch 2's second batch makes two windows risen
    # (in an attempt's first epoch the first batch only sets the count: the third batch fires)
    assert fired == [None, None, None, None, 2, 2]


# ---- the policy ---------------------------------------------------------------------------------

def test_thrash_restarts_the_rung_once_without_a_wait_then_steps_down(default):
    policy = plan.Policy.of(default.job)
    first = plan.decide(default.rungs, 0, THRASH, "val", 1, streak=0, policy=policy, thrashes=1)
    assert (first.action, first.rung, first.wait_s) == (Ev.RETRY, 0, 0.0)
    second = plan.decide(default.rungs, 0, THRASH, "val", 1, streak=0, policy=policy, thrashes=2)
    assert (second.action, second.rung) == (Ev.STEP_DOWN, 1)
    bottom = len(default.rungs) - 1
    again = plan.decide(default.rungs, bottom, THRASH, "val", 1, streak=0, policy=policy, thrashes=2)
    assert (again.action, again.rung, again.wait_s) == (Ev.RETRY, bottom, 0.0)  # the bottom: restart again
    assert THRASH not in plan.TRANSIENT  # no backoff: a fresh process is the remedy


def test_a_thrash_is_no_oom_early_verdict():
    assert experience.verdict(THRASH, "val", 1) == experience.HELD
    assert experience.verdict(THRASH, "train", 0) is None


THRASHED = {"exc_type": "launcher.callbacks.ThrashRestart", "message": "alloc retries rose in two consecutive "
            "windows of 10 batches in epoch 1; epoch 1 is saved (on_thrash = restart)", "phase": "val"}


class ThrashingChild:
    """A scripted child: each item is "thrash" (ends itself after a save, its heartbeat's
    thrash_epoch set), "warn" (thrashes and completes) or "ok"."""

    def __init__(self, script):
        self.script, self.calls, self.epoch = list(script), [], 0

    def __call__(self, cmd, env, log_path: Path, watchdog) -> ChildEnd:
        spec = json.loads(Path(cmd[-1]).read_text())
        self.calls.append(spec)
        what = self.script.pop(0)
        self.epoch += 1
        log_path.write_text("")
        thrash = None if what == "ok" else self.epoch
        hb = Heartbeat(phase="val", epoch=self.epoch, epochs=9, epochs_saved=1, last_saved_epoch=self.epoch,
                       alloc_retries=None if thrash is None else 7, thrash_epoch=thrash)
        Path(spec["heartbeat"]).write_text(json.dumps(hb.to_json()))
        if what == "thrash":
            report = Report(ok=False, epochs_saved=1, last_saved_epoch=self.epoch, **THRASHED)
            Path(spec["report"]).write_text(json.dumps(report.to_json()))
            return ChildEnd(1)
        Path(spec["report"]).write_text(json.dumps(Report(ok=True, phase="done", epochs_saved=1, best="b.pt",
                                                          last="l.pt").to_json()))
        return ChildEnd(0)


def supervise(ladder, tmp_path, script):
    child, lines = ThrashingChild(script), []
    sup = Supervisor(ladder=ladder, planned=ladder.rungs, start=0, device="0", paths=RunPaths(tmp_path / "run"),
                     launch=child, sleep=lambda s: None, say=lines.append)
    code = sup.run(new_state(ladder))
    return code, child, lines, Events(tmp_path / "run" / "events.jsonl").read()


def test_the_night_restarts_the_thrashing_rung_then_steps_down_and_records_each(default, tmp_path):
    code, child, lines, evs = supervise(default, tmp_path, ["thrash", "thrash", "ok"])
    assert code == EXIT_OK
    assert [c["rung"] for c in child.calls] == ["optimal", "optimal", "optimal-b4"]
    assert all(c["on_thrash"] == "restart" for c in child.calls)
    thrash = [(e["attempt"], e["rung"], e["epoch"], e["retries"], e["action"]) for e in evs if e["event"] == "thrash"]
    assert thrash == [(1, "optimal", 1, 7, "restart"), (2, "optimal", 2, 7, "step_down")]
    steps = [e["event"] for e in evs if e["event"] in ("thrash", "retry", "step_down", "complete")]
    assert steps == ["thrash", "retry", "thrash", "step_down", "complete"]
    assert [e["kind"] for e in evs if e["event"] == "attempt_end"] == [THRASH, THRASH, None]

    # status and the report show it
    d = status.collect(RunPaths(tmp_path / "run"))
    assert [t["action"] for t in d["thrash"]] == ["restart", "step_down"]
    assert "allocator thrashing: 2 times; last: attempt 2 on optimal, epoch 2, 7 alloc retries: stepped down" \
        in status.text(d)
    md = markdown(load_record(tmp_path / "run"))
    assert re.search(r"Allocator thrashing.*attempt 1 on optimal, epoch 1, 7 alloc retries: restarted the rung from "
                     r"its checkpoint; attempt 2 on optimal, epoch 2.*stepped down", md)


def test_a_thrash_at_the_bottom_rung_restarts_it_again_within_the_attempt_budget(tmp_path):
    """The bottom rung has no lighter one below, and a thrash ends an attempt after its save:
    ending the night there would throw the night away. It restarts again; the budget bounds it."""
    ladder = with_job(max_attempts=4)
    bottom = ladder_mod.Ladder(path=ladder.path, job=ladder.job, rungs=ladder.rungs[-1:])
    code, child, _, evs = supervise(bottom, tmp_path, ["thrash", "thrash", "ok"])
    assert code == EXIT_OK and len(child.calls) == 3
    assert [e["action"] for e in evs if e["event"] == "thrash"] == ["restart", "restart"]
    code, child, _, evs = supervise(bottom, tmp_path / "spent", ["thrash"] * 4)
    assert code == EXIT_EXHAUSTED and len(child.calls) == 4  # max_attempts


def test_warn_records_the_thrash_and_the_night_goes_on(tmp_path):
    ladder = with_job(on_thrash="warn")
    code, child, lines, evs = supervise(ladder, tmp_path, ["warn"])
    assert code == EXIT_OK and len(child.calls) == 1 and child.calls[0]["on_thrash"] == "warn"
    assert [(e["attempt"], e["epoch"], e["action"]) for e in evs if e["event"] == "thrash"] == [(1, 1, "warn")]
    assert any("thrashing on rung optimal in epoch 1" in line for line in lines)


# ---- val_batch ----------------------------------------------------------------------------------

def test_use_val_batch_builds_the_validation_loader_at_it_and_leaves_training_alone():
    calls = []
    t = SimpleNamespace(get_dataloader=lambda path, batch_size=16, rank=0, mode="train": calls.append(
        (mode, batch_size)))
    use_val_batch(t, None)
    t.get_dataloader("d", batch_size=4, rank=-1, mode="train")
    t.get_dataloader("d", batch_size=8, rank=-1, mode="val")
    assert calls == [("train", 4), ("val", 8)]  # None: Ultralytics' 2 × batch stays
    calls.clear()
    use_val_batch(t, 2)
    use_val_batch(t, 2)  # installed again (a second routine start): never wrapped twice
    t.get_dataloader("d", batch_size=4, rank=-1, mode="train")
    t.get_dataloader("d", batch_size=8, rank=-1, mode="val")
    t.get_dataloader("d", batch_size=4, rank=-1, mode="val")  # after Ultralytics' OOM halving
    assert calls == [("train", 4), ("val", 2), ("val", 2)]


# ---- end to end, real Ultralytics on the CPU ----------------------------------------------------

@pytest.mark.slow
def test_thrash_drill_restarts_the_rung_from_its_checkpoint_then_steps_down_and_completes(tmp_path, shapes):
    """--inject thrash:optimal:1: alloc retries rise in every batch from epoch 1 on. Attempt 1
    thrashes in epoch 1, saves it and ends itself; attempt 2 restarts optimal from that checkpoint
    (epoch 2), thrashes again, saves and ends; the launcher steps down, and safe trains epoch 3."""
    ladder = write_ladder(tmp_path, shapes, [("optimal", str(TINY), 2, "off"), ("safe", str(TINY), 2, "off")],
                          epochs=3, retries=0)
    p = launch(tmp_path, "--ladder", str(ladder), "--inject", "thrash:optimal:1")
    assert p.returncode == 0, p.stdout[-3000:] + p.stderr[-3000:]
    evs = events(tmp_path)
    ends = of(evs, "attempt_end")
    assert [(e["rung"], e["kind"], e["last_saved_epoch"]) for e in ends] == [
        ("optimal", THRASH, 1), ("optimal", THRASH, 2), ("safe", None, 3)]
    assert [(e["attempt"], e["rung"], e["epoch"], e["action"]) for e in of(evs, "thrash")] == [
        (1, "optimal", 1, "restart"), (2, "optimal", 2, "step_down")]
    assert all(e["retries"] >= 2 for e in of(evs, "thrash"))
    assert [e["event"] for e in evs if e["event"] in ("retry", "step_down", "complete")] == [
        "retry", "step_down", "complete"]
    # nothing trained was lost: each attempt resumed where the last one saved
    starts = [json.loads((tmp_path / "logs" / "e2e" / f"attempt-{n}" / "heartbeat.json").read_text())["start_epoch"]
              for n in (1, 2, 3)]
    assert starts == [1, 2, 3]
    assert trained_epochs(model_dir(tmp_path)) == [1, 2, 3]
    assert "ThrashRestart" in (tmp_path / "logs" / "e2e" / "attempt-1" / "train.log").read_text()


@pytest.mark.slow
def test_the_training_child_validates_at_the_rungs_val_batch(tmp_path, shapes):
    """A rung with val_batch = 2 validates with a loader of batch 2; without it, Ultralytics' 2 × batch."""
    ladder = write_ladder(tmp_path, shapes, [("optimal", str(TINY), 2, "off")], epochs=1)
    text = ladder.read_text().replace('cache = "off"\n', 'cache = "off"\nval_batch = 2\n', 1)
    ladder.write_text(text)
    p = launch(tmp_path, "--ladder", str(ladder))
    assert p.returncode == 0, p.stdout[-3000:] + p.stderr[-3000:]
    spec = json.loads((tmp_path / "logs" / "e2e" / "attempt-1" / "spec.json").read_text())
    assert spec["val_batch"] == 2
    assert "launcher: validation runs at batch 2 (the rung's val_batch)" in p.stdout

    plain = write_ladder(tmp_path, shapes, [("optimal", str(TINY), 2, "off")], epochs=1)
    p = launch(tmp_path, "--ladder", str(plain), "--fresh")
    assert p.returncode == 0, p.stdout[-3000:] + p.stderr[-3000:]
    assert "launcher: validation runs at batch 4 (Ultralytics' 2 × batch)" in p.stdout
