"""`status`: where a run stands, from its run record alone (no torch, no Ultralytics).

accounting is imported by `collect`, where status uses it: dry-run and run import this module for
`places` alone (docs/benchmarks.md)."""

from __future__ import annotations

import time
from dataclasses import asdict
from datetime import datetime, timezone
from pathlib import Path

from . import fmt, refusals
from .contract import Heartbeat
from .eta import Expected, epochs_left, pace_epoch_s, rest, run_epoch_s, training_s
from .errors import BadInput
from .runlog import (CHECKOUT_LOGS, LOGS_ENV, RUNNING, logs_dir, Ev, Event, JsonLines, RunLock, RunPaths, RunState,
                     read_events)

FRESH_S = 30.0  # a heartbeat older than this, while the launcher holds the run, is reported as stale


def places(logs: Path | None = None) -> list[Path]:
    """Where run records are looked for: the rule's folder (runlog.logs_dir), then the project's
    own logs/ when the command runs from elsewhere, and the current folder's with $RTDETR_LOGS set."""
    first = (logs or logs_dir()).resolve()
    more = [] if logs is not None else [CHECKOUT_LOGS, Path("logs").resolve()]
    return list(dict.fromkeys([first] + [p for p in more if p != first and p.is_dir()]))


def find_run(name: str | None, logs: Path | None = None) -> RunPaths:
    """A run by name, or the newest run, in the first place that has it."""
    folders = places(logs)
    for folder in folders:
        records = sorted(folder.glob("*/state.json"), key=lambda p: p.stat().st_mtime)
        if not name and records:
            return RunPaths(records[-1].parent.resolve())
        if name and (folder / name / "state.json").is_file():
            return RunPaths.for_run(name, folder)
    looked = " and ".join(str(f) for f in folders)
    known = sorted({p.parent.name for f in folders for p in f.glob("*/state.json")})
    if name:
        raise BadInput(f"run {name!r}", f"no run record in {looked}",
                       f"give one of: {', '.join(known)}" if known else
                       f"run this from the folder where `run` was started, or set {LOGS_ENV}=that/folder/logs")
    raise BadInput(looked, "no run record here", f"start one with `python -m launcher run`, run this from the folder "
                   f"where `run` was started, or set {LOGS_ENV}=that/folder/logs")


def look(name: str | None, logs: Path | None = None, now: float | None = None) -> dict:
    """What `status` shows. Without a run named, the newest run-less refusal (launcher-errors.log)
    comes with the newest run when nothing of that run happened after it (in the same second
    counts: `ts` has whole seconds) and no launcher holds it now, or alone when there is no run
    (docs/design.md, "Dry-run, status, report")."""
    try:
        paths = find_run(name, logs)
    except BadInput:
        refusal = None if name else refusals.newest(places(logs))
        if refusal is None:
            raise
        return {"run": None, "refusal": refusal}
    d = collect(paths, now)
    refusal = None if name else refusals.newest(places(logs))
    if refusal is not None and not d["active"] and (d["last_event_t"] is None
                                                    or refusals.when(refusal) >= d["last_event_t"]):
        d["refusal"] = refusal
    return d


def collect(paths: RunPaths, now: float | None = None) -> dict:
    """Everything `status` shows, as data. A state.json with wrong types or a newer version raises
    runlog's one-line BadInput; events.jsonl lines that are not event objects are skipped."""
    from .accounting import slurm_summary

    now = time.time() if now is None else now
    state = RunState.load(paths.state)
    events = read_events(paths.events)
    active = RunLock(paths.lock).is_held()
    attempt = state.attempts if state else 0
    beat = Heartbeat.read(paths.heartbeat(attempt)) if attempt else None
    samples = JsonLines(paths.telemetry).read()
    status = str(state.status) if state else "unknown"
    if status == RUNNING and not active:
        status, reason = "stopped", "the launcher is gone (killed?): run the same command again to continue"
    else:
        reason = state.reason if state else None
    ends = [e for e in events if e.kind == Ev.ATTEMPT_END]
    failure = next((e for e in reversed(ends) if e.get("kind")), None)
    history: list[dict] = []
    for e in events:
        if e.kind != Ev.ATTEMPT_START or e.get("attempt") is None:
            continue
        if history and history[-1]["rung"] == e.get("rung"):
            history[-1]["attempts"].append(e.get("attempt"))
        else:
            history.append({"rung": e.get("rung"), "attempts": [e.get("attempt")]})
    current = {}
    if beat and active:
        night = night_eta(paths, state, events, beat) if status == RUNNING else None
        current = dict(phase=beat.phase, epoch=beat.epoch, epochs=beat.epochs, batch=beat.batch,
                       batches=beat.batches, it_s=beat.it_s,
                       heartbeat_age_s=round(now - beat.ts, 1) if beat.ts is not None else None,
                       eta_s=None if night is None else round(night.seconds),
                       eta=None if night is None else {**night.to_json(), "end": iso(now + night.seconds)})
    return {
        "run": paths.root.name, "status": status, "active": active, "reason": reason,
        "rung": state.rung if state else None, "attempt": attempt, "mode": state.mode if state else None, **current,
        "last_failure": None if failure is None else {**{k: failure.get(k) for k in (
            "attempt", "rung", "kind", "phase", "evidence")}, "ts": failure.ts},
        "vram": now_and_peak(samples, "vram"), "ram_used": now_and_peak(samples, "ram_used"),
        "rss": now_and_peak(samples, "rss"),
        "slurm": slurm_summary(events, state) if state and state.slurm_jobs else None,
        "thrash": [{**{k: e.get(k) for k in ("attempt", "rung", "epoch", "retries", "action")}, "ts": e.ts}
                   for e in events if e.kind == Ev.THRASH],
        "history": history, "models": {k: asdict(m) for k, m in state.models.items()} if state else {},
        "delivered": state.delivered if state and isinstance(state.delivered, dict) else None,
        "tracking": state.tracking if state else {},  # the night's tracker run (launcher/track.py)
        "record": str(paths.root),
        "last_event_t": events[-1].time if events else None,
        "refusal": None if active else refusals.in_run(events, paths.events),  # a live run went on after it
    }


def _number(x: object) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool)


def night_eta(paths: RunPaths, state: RunState | None, events: list[Event], beat: Heartbeat) -> Expected | None:
    """The rest of the training of the model in training (docs/design.md, "Dry-run, status,
    report"): its epochs left at this attempt's epoch time, from its finished epochs in
    results.csv (training and validation), else this epoch's it/s (training only), else the
    trial's images/s for this rung that the `start` event recorded (training only). None for an
    attempt that only validates, and once training is over (the final validation)."""
    from .accounting import TRAIN, Model, read_results, results_csv

    if state is None or (state.mode or TRAIN) != TRAIN or beat.phase in ("final", "done"):
        return None
    started = next((e for e in reversed(events) if e.kind == Ev.ATTEMPT_START), None)
    source = (started.get("model") if started else None) or state.training_model
    model = state.models.get(source) if source else None
    epochs = beat.epochs or (model.epochs if model else None)
    left = epochs_left(epochs, beat.epoch, beat.batch, beat.batches, model.epochs_done if model else None)
    rows = read_results(results_csv(paths.root, Model(source, model.save_dir if model else None))) \
        if source and beat.epochs_saved else {}
    start = next((e for e in reversed(events) if e.kind == Ev.START), None)
    speeds = (start.get("speeds") if start else None) or {}
    speed = speeds.get(beat.rung or state.rung) if isinstance(speeds, dict) else None
    return rest(left, run_epoch=run_epoch_s(rows, beat.epochs_saved, beat.last_saved_epoch),
                pace_epoch=pace_epoch_s(beat.batches, beat.it_s),
                trial_epoch=training_s(speed if _number(speed) else None, 1,
                                       start.get("train_images") if start else None))


def eta(beat: Heartbeat) -> float | None:
    """Seconds to the end of training at this epoch's pace alone (the heartbeat's it/s)."""
    left = rest(epochs_left(beat.epochs, beat.epoch, beat.batch, beat.batches),
                pace_epoch=pace_epoch_s(beat.batches, beat.it_s))
    return None if left is None else round(left.seconds)


def iso(t: float) -> str:
    return datetime.fromtimestamp(t, timezone.utc).astimezone().isoformat(timespec="seconds")


def now_and_peak(samples: list[dict], key: str) -> dict:
    values = [s[key] for s in samples if _number(s.get(key))]
    return {"now": values[-1] if values else None, "peak": max(values) if values else None}


def refusal_text(r: dict) -> list[str]:
    return [f"last refusal, {r['ts']}: {r['command']}"] + [
        f"  {e}" for e in r["errors"]] + [f"  from {r['folder']}; recorded in {r['where']}"]


def text(d: dict) -> str:
    if d["run"] is None:
        return "\n".join(refusal_text(d["refusal"])) + "\n"
    head = {RUNNING: "training", Ev.COMPLETE: "finished"}.get(d["status"], d["status"])
    out = [f"run {d['run']!r}: {head}" + (f" — {d['reason']}" if d.get("reason") and d["status"] != Ev.COMPLETE
                                         else "")]
    if d["status"] == Ev.COMPLETE and d.get("delivered"):
        out.append(f"  delivered {Path(str(d['delivered'].get('model'))).name}: {d['delivered'].get('best')}")
    where = f"  rung {d['rung']}, attempt {d['attempt']}" + (f" ({d['mode']})" if d.get("mode") else "")
    if d.get("epoch"):
        where += f", epoch {d['epoch']}/{d['epochs']}, batch {d['batch']}/{d['batches']}"
        if d.get("it_s") and _number(d["it_s"]):
            where += f", {d['it_s']:.2f} it/s"
        if _number(d.get("heartbeat_age_s")) and d["heartbeat_age_s"] > FRESH_S:
            where += f" (heartbeat {d['heartbeat_age_s']:.0f} s old)"
    out.append(where)
    if d.get("eta"):
        e = d["eta"]
        end = datetime.fromisoformat(e["end"]).timestamp()
        out.append(f"  ETA {fmt.duration(e['seconds'])}, ends about {fmt.clock(end, time.time())} "
                   f"({e['epochs']:.1f} epochs left at {fmt.duration(e['epoch_s'])} each, from {e['from']}, "
                   + ("training and validation)" if e["with_val"] else "training only)"))
    if d["last_failure"]:
        f = d["last_failure"]
        out.append(f"  last failure: attempt {f['attempt']} on {f['rung']}, {f['kind']}"
                   + (f" in {f['phase']}" if f.get("phase") else "") + f" at {f['ts']}: {f['evidence']}")
    mem = {k: f"{fmt.gib(d[k]['now'], 1, '-')} (peak {fmt.gib(d[k]['peak'], 1, '-')})"
           for k in ("vram", "ram_used", "rss")}
    when = "now" if d["active"] else "at the end"  # a finished or stopped run's last sample is not now
    out.append(f"  VRAM {when} {mem['vram']}; RAM used {when} {mem['ram_used']}; child RSS {when} {mem['rss']}")
    if d.get("thrash"):
        from .accounting import thrash_words
        last = d["thrash"][-1]
        out.append(f"  allocator thrashing: {len(d['thrash'])} time{'s' if len(d['thrash']) != 1 else ''}; last: "
                   f"{thrash_words(last)} at {last['ts']}")
    if d.get("slurm"):
        sl = d["slurm"]
        out.append(f"  SLURM job{'s' if len(sl['jobs']) > 1 else ''} {', '.join(sl['jobs'])}: {sl['requeues']} "
                   f"requeue{'s' if sl['requeues'] != 1 else ''}, {fmt.duration(sl['waiting_s'])} waiting to run again")
    if d["history"]:
        out.append("  rungs: " + " → ".join(
            f"{h['rung']} (attempt{'s' if len(h['attempts']) > 1 else ''} "
            f"{', '.join(map(str, h['attempts']))})" for h in d["history"]))
    for source, m in d["models"].items():
        out.append(f"  model {Path(source).name}: epochs done {m['epochs_done']}/{m['epochs']}"
                   + (" (set aside)" if m.get("set_aside") else ""))
    if d.get("tracking"):
        from .track import describe
        out += [f"  tracking: {line}" for line in describe(d["tracking"])]
    out.append(f"  record: {d['record']}")
    if d.get("refusal"):
        out += refusal_text(d["refusal"])
    return "\n".join(out) + "\n"
