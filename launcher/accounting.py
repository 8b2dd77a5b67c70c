"""A run record read and reduced to what `report` shows: the attempts, the launcher's sessions and
the time accounting (docs/design.md, "The run record"). Pure: no matplotlib, no torch, no
Ultralytics; it reads files and returns a `Record`.

Definitions (report.md states them too):
- epochs kept: the epochs an attempt saved that the delivered model still stands on (for a run
  that has not delivered yet: the model it would continue). An attempt that resumes from epoch
  k supersedes every later epoch saved before it; a model set aside and never taken up again
  keeps nothing.
- kept training time: the duration of each kept epoch from the `time` column of the model's
  results.csv (seconds since that attempt's training started, so an epoch's time is the step
  from the row before it in the same attempt, or the row's own value for an attempt's first
  epoch). Where results.csv lacks an epoch: the attempt's duration × kept / (epochs trained,
  +1 for an attempt that failed or was interrupted mid-epoch).
- wall time: the time a launcher was running for this run (from `start`/`continue` to its
  ending event); the gaps between a stop and the next `run` are not counted.
- goodput: kept training time / wall time.
- time lost to failures: for every attempt that ended in a failure (any attempt_end `kind` but
  `interrupted`), its duration less its kept training time (start-up, the epoch it died in, epochs
  later superseded or set aside), plus the wait before the next attempt (backoff, GPU release).
- interrupted time: for every attempt that ended because the launcher received SIGINT or SIGTERM
  (attempt_end `kind` `interrupted`: the run was stopped by a person or a scheduler, not by a
  failure), its duration less its kept training time. Not lost to failures; the time until the
  next `run` is not wall time either.
"""

from __future__ import annotations

import csv
import math
from dataclasses import dataclass, field
from pathlib import Path

from .contract import INTERRUPTED
from .eta import TRIAL
from .runlog import EVENTS_VERSION, RUNNING, Ev, Event, ModelPaths, RunPaths, RunState, read_events, read_jsonl

NOT_STARTED = "not started"  # the status of a record with no attempt and no state.json
# an attempt's mode (RunState.mode, attempt_start's `mode`): training, or only the final validation
TRAIN, VALIDATE = "train", "validate"
MAP50_95 = "metrics/mAP50-95(B)"
MAP50 = "metrics/mAP50(B)"
FIRST_EPOCH = "the first epoch"  # where the night's first ETA came from, when no trial measured its start


# ---- reading the record -----------------------------------------------------------------------

def model_key(source: object) -> str:
    """A model's key in the report, as runlog.ModelPaths owns it: its folder's name (its file's stem
    and a hash of its source), so two models whose files share a stem (v1/best.pt, v2/best.pt) are two."""
    return ModelPaths.key_of(source)


def _aside_key(e: Event, sources: set[str]) -> str:
    """The key of the model a `model_set_aside` event names: by its `source`, or, in an event an
    earlier launcher wrote with only the ladder's spec, the known source of that stem (that
    launcher kept each model in models/<stem>)."""
    if e.get("source"):
        return model_key(e.get("source"))
    spec = e.get("model")
    stem = Path(str(spec)).stem if spec else ""
    same = sorted(s for s in sources if Path(s).stem == stem)
    return model_key(same[0] if same else spec)


def read_results(path: Path) -> dict[int, dict[str, float]]:
    """Ultralytics' results.csv as {epoch: row}; the last row of a repeated epoch wins (a redo
    after a failure between the row and the checkpoint)."""
    rows: dict[int, dict[str, float]] = {}
    try:
        text = path.read_text(errors="replace")
    except OSError:
        return rows
    header = None
    for cells in csv.reader(text.splitlines()):
        cells = [c.strip() for c in cells]
        if header is None:
            header = cells
            continue
        if len(cells) != len(header):  # a torn last line
            continue
        row = {}
        for k, v in zip(header, cells):
            try:
                row[k] = float(v)
            except ValueError:
                pass
        if "epoch" in row and math.isfinite(row["epoch"]):
            rows[int(row["epoch"])] = row
    return rows


@dataclass
class Attempt:
    n: int
    rung: str
    mode: str
    model: str
    start: float | None
    end: float | None = None
    ended: bool = False
    kind: str | None = None
    evidence: str | None = None
    phase: str | None = None
    exit_code: int | None = None
    epochs_saved: int = 0
    last_saved_epoch: int | None = None
    batch: int | None = None
    then: str = ""
    kept: int = 0
    kept_s: float = 0.0
    kept_estimated: bool = False  # kept_s from the duration, not results.csv
    epochs: tuple[int, ...] = ()  # the epoch numbers this attempt saved
    resume_from: str | None = None  # the checkpoint it started from (attempt_start's `resume_from`)
    # the epoch a resumed training attempt started in: its `resume` event's epochs_done + 1, else the
    # first epoch its telemetry (the heartbeat) names, else the first epoch it saved
    resumed_at: int | None = None

    @property
    def failed(self) -> bool:
        """It ended in a failure or was interrupted (any attempt_end `kind`)."""
        return self.kind is not None

    @property
    def interrupted(self) -> bool:
        """The launcher received SIGINT/SIGTERM while it ran: stopped, not failed."""
        return self.kind == INTERRUPTED

    @property
    def lost(self) -> bool:
        """It ended in a failure that was not an interruption: its time not kept counts as lost."""
        return self.failed and not self.interrupted

    @property
    def seconds(self) -> float:
        if self.start is None or self.end is None:
            return 0.0
        return max(0.0, self.end - self.start)


@dataclass
class Model:
    """A model the run trained, by its source: where its results.csv was, and its epoch target."""

    source: str
    save_dir: str | None = None
    epochs: int | None = None


@dataclass
class Record:
    root: Path
    name: str
    status: str
    reason: str | None
    delivered: dict | None  # {"model", "best", "last"}
    attempts: list[Attempt]
    sessions: list[tuple[float, float]]
    telemetry: list[dict]
    set_aside: dict[str, Event]  # model key -> the model_set_aside event (not taken up again)
    models: dict[str, Model]  # model key -> the model
    counting: set[str]  # model keys whose epochs count as kept
    results: dict[str, dict[int, dict[str, float]]]  # model key -> results.csv rows
    wall_s: float = 0.0
    kept_s: float = 0.0
    lost_s: float = 0.0  # time lost to failures, waits included (interrupted attempts excluded)
    wait_s: float = 0.0  # of lost_s: the waits after failures before the next attempt
    interrupted_s: float = 0.0  # interrupted attempts' time not kept
    slurm: dict | None = None  # {"jobs", "requeues", "waiting_s"} of a run on a SLURM cluster
    thrashes: list[Event] = field(default_factory=list)  # the `thrash` events: the allocator's retries rising
    first_eta: dict | None = None  # the night's first ETA: first_eta's
    tracking: dict = field(default_factory=dict)  # the night's tracker run, state.json's (launcher/track.py)
    track_failed: list[Event] = field(default_factory=list)  # the `track_failed` events

    @property
    def start(self) -> float | None:
        return self.sessions[0][0] if self.sessions else None

    @property
    def goodput(self) -> float | None:
        return self.kept_s / self.wall_s if self.wall_s > 0 else None

    def label(self, source: object) -> str:
        """A model's name in report.md: its file's name, with its key (its folder) where another
        model of the run has a file of that name too (v1/best.pt and v2/best.pt)."""
        name = Path(str(source)).name
        twins = {k for k, m in self.models.items() if Path(m.source).name == name}
        return f"{name} ({model_key(source)})" if len(twins) > 1 else name


def _next_step(e: Event) -> str:
    """What followed a failed attempt, in a few words."""
    to, wait = e.get("to"), e.get("wait_s")
    if e.kind == Ev.RETRY:
        return Ev.RETRY + (f" after {wait:g} s" if wait is not None else "")
    if e.kind == Ev.STEP_DOWN:
        return f"step down → {to}"
    return f"validate at {to}"


def thrash_words(e: Event | dict) -> str:
    """One `thrash` event (or status's dict of one) in a few words: where, how many retries, what the launcher did."""
    did = {"restart": "restarted the rung from its checkpoint", "step_down": "stepped down",
           "warn": "went on (on_thrash = warn)"}.get(e.get("action"), e.get("action") or "?")
    retries = f", {e.get('retries')} alloc retries" if e.get("retries") is not None else ""
    return f"attempt {e.get('attempt')} on {e.get('rung')}, epoch {e.get('epoch')}{retries}: {did}"


def load(root: Path) -> Record:
    """The run record at `root` (logs/<run>), read and reduced to what the report shows. A
    state.json with wrong types or a newer version raises runlog's one-line BadInput."""
    root = Path(root)
    paths = RunPaths(root)
    state = RunState.load(paths.state)
    events = read_events(paths.events)
    telemetry = [s for s in read_jsonl(paths.telemetry)
                 if isinstance(s.get("t"), (int, float)) and not isinstance(s.get("t"), bool)]
    telemetry.sort(key=lambda s: s["t"])

    attempts: dict[int, Attempt] = {}
    order: list[Attempt] = []
    set_aside: dict[str, Event] = {}
    status, reason, delivered = None, None, None
    sessions: list[list[float]] = []
    last_attempt: Attempt | None = None
    resumes: dict[int, Event] = {}  # attempt -> its `resume` event (logged just before its start)
    thrashes: list[Event] = []
    start: Event | None = None  # the night's `start`: its ETA from the start rung's trial
    for e in events:
        kind, t = e.kind, e.time
        if kind == Ev.REFUSED:  # a later `run` that was refused: no launcher ran this run then
            continue
        if kind == Ev.START and start is None:
            start = e
        if kind in Ev.SESSION_STARTS and t is not None:
            sessions.append([t, t])
        elif t is not None and sessions:  # every event is a sign the launcher was running
            sessions[-1][1] = max(sessions[-1][1], t)
        if kind == Ev.ATTEMPT_START and e.get("attempt") is not None:
            if t is not None and not sessions:  # a record without its start event
                sessions.append([t, t])
            a = Attempt(e.get("attempt"), e.get("rung") or "?", e.get("mode") or TRAIN, e.get("model") or "",
                        t, batch=e.get("batch"))
            resume = resumes.get(a.n)
            a.resume_from = e.get("resume_from") or (resume and resume.get("checkpoint")) or None
            done = resume.get("epochs_done") if resume else None
            if a.mode == TRAIN and a.resume_from and done is not None and done >= 0:
                a.resumed_at = done + 1
            attempts[a.n] = a
            order.append(a)
            last_attempt = a
            if a.mode == TRAIN:
                set_aside.pop(model_key(a.model), None)  # taken up again
        elif kind == Ev.ATTEMPT_END and e.get("attempt") is not None:
            a = attempts.get(e.get("attempt"))
            if a is None:
                continue
            a.ended, a.end = True, t
            if a.end is None and a.start is not None and e.get("seconds") is not None:
                a.end = a.start + e.get("seconds")
            a.kind, a.evidence, a.phase = e.get("kind"), e.get("evidence"), e.get("phase")
            a.exit_code = e.get("exit_code")
            a.epochs_saved = e.get("epochs_saved") or 0
            a.last_saved_epoch = e.get("last_saved_epoch")
        elif kind == Ev.RESUME and e.get("attempt") is not None:
            resumes[e.get("attempt")] = e
        elif kind in Ev.NEXT_STEPS and last_attempt is not None and not last_attempt.then:
            last_attempt.then = _next_step(e)
        elif kind == Ev.THRASH:
            thrashes.append(e)
        elif kind == Ev.MODEL_SET_ASIDE:
            set_aside[_aside_key(e, {a.model for a in order} | set(state.models if state else ()))] = e
        elif kind in Ev.ENDINGS:
            status, reason = kind, e.get("reason") if kind != Ev.COMPLETE else None
            if kind == Ev.COMPLETE:
                delivered = {"model": e.get("model"), "best": e.get("best"), "last": e.get("last")}
            if last_attempt is not None and not last_attempt.then:
                last_attempt.then = kind

    # an attempt with no end (still running, or the launcher was killed): its last sign of life
    for a in order:
        if a.end is None:
            seen = [s["t"] for s in telemetry if s.get("attempt") == a.n]
            a.end = max(seen) if seen else a.start
        if a.mode == TRAIN and a.resume_from and a.resumed_at is None:  # no epochs_done: the heartbeat's epoch
            a.resumed_at = next((s["epoch"] for s in telemetry if s.get("attempt") == a.n
                                 and isinstance(s.get("epoch"), int) and not isinstance(s.get("epoch"), bool)), None)
    for s in telemetry:  # telemetry after the last event (a running or killed launcher)
        if sessions and s["t"] > sessions[-1][1]:
            sessions[-1][1] = s["t"]
    if not sessions and telemetry:
        sessions.append([telemetry[0]["t"], telemetry[-1]["t"]])

    if status is None:
        status = str(state.status) if state and state.status else (RUNNING if order else NOT_STARTED)
        reason = reason or (state.reason if state else None)
    if delivered is None and state and Ev.COMPLETE in (status, state.status) and isinstance(state.delivered, dict):
        delivered = state.delivered

    models: dict[str, Model] = {}
    for source, m in (state.models if state else {}).items():
        models[model_key(source)] = Model(source, m.save_dir, m.epochs)
        if m.set_aside and model_key(source) not in set_aside:
            set_aside[model_key(source)] = Event(Ev.MODEL_SET_ASIDE, None, EVENTS_VERSION, {
                "model": source, "epochs_done": m.epochs_done, "of": m.epochs, "save_dir": m.save_dir})
    for a in order:
        models.setdefault(model_key(a.model), Model(a.model))
    if delivered and delivered.get("model"):
        counting = {model_key(delivered["model"])}
    else:
        counting = {k for k in models if k not in set_aside}

    results = {k: read_results(results_csv(root, m)) for k, m in models.items()}
    rec = Record(root=root, name=str(state.run if state and state.run else root.name), status=status,
                 reason=reason, delivered=delivered, attempts=order, sessions=[(a, b) for a, b in sessions],
                 telemetry=telemetry, set_aside=set_aside, models=models, counting=counting, results=results,
                 slurm=slurm_summary(events, state) if state and state.slurm_jobs else None, thrashes=thrashes)
    account(rec)
    rec.first_eta = first_eta(rec, start)
    rec.tracking = dict(state.tracking) if state else {}
    rec.track_failed = [e for e in events if e.kind == Ev.TRACK_FAILED]
    for a in order:
        if a.mode == TRAIN and a.resume_from and a.resumed_at is None and a.epochs:
            a.resumed_at = a.epochs[0]
    return rec


def first_eta(rec: Record, start: Event | None) -> dict | None:
    """The night's first ETA (docs/design.md, "Dry-run, status, report"): the `start` event's, from
    the start rung's trial (training only), else the first training attempt's first epoch (its
    results.csv `time`: training and validation, from the attempt's training start) × its model's
    epochs. None where neither was known: no trial measured the start and no epoch finished."""
    expected = start.get("eta_s") if start is not None else None
    if isinstance(expected, (int, float)) and not isinstance(expected, bool) and expected > 0:
        speeds = start.get("speeds") if isinstance(start.get("speeds"), dict) else {}
        return {"seconds": float(expected), "from": TRIAL, "rung": start.get("rung"),
                "images_per_s": speeds.get(start.get("rung")), "with_val": False}
    for a in rec.attempts:
        if a.mode != TRAIN or not a.epochs:
            continue
        model = rec.models.get(model_key(a.model))
        row = rec.results.get(model_key(a.model), {}).get(a.epochs[0]) or {}
        t = row.get("time")
        if model is None or not model.epochs or not t or t <= 0:
            return None
        return {"seconds": model.epochs * t, "from": FIRST_EPOCH, "rung": a.rung, "epoch_s": t,
                "epochs": model.epochs, "with_val": True}
    return None


def slurm_summary(events: list[Event], state: RunState) -> dict:
    """The SLURM jobs a run ran in, its requeues, and the time they cost: from each cut (a time
    limit or a preemption) to the requeued job's start, and the cut attempt's unsaved part."""
    lost, cut_at = 0.0, None
    for e in events:
        kind, t = e.kind, e.time
        if kind in (Ev.TIME_LIMIT, Ev.PREEMPTED):
            cut_at = t
        elif kind == Ev.SLURM and cut_at is not None and t is not None:
            lost, cut_at = lost + max(0.0, t - cut_at), None
    return {"jobs": list(state.slurm_jobs), "requeues": state.requeues, "waiting_s": round(lost, 1)}


def results_csv(root: Path, model: Model) -> Path:
    """A model's results.csv: in its recorded save_dir, else the folder of that name under this
    record (a record copied elsewhere still reports), else where this launcher or an earlier one
    (models/<stem>) puts it."""
    recorded = Path(model.save_dir) if isinstance(model.save_dir, str) and model.save_dir else None
    paths = RunPaths(root)
    own = paths.model(model.source or "")
    candidates = ([recorded, paths.models / recorded.name] if recorded else []) + [own.save_dir] + (
        [own.legacy.save_dir] if model.source else [])
    tables = [paths.model_at(d).results for d in candidates]
    return next((t for t in tables if t.is_file()), tables[0])


# ---- time accounting --------------------------------------------------------------------------

def account(rec: Record) -> None:
    """Epochs kept per attempt, kept training time, time lost to failures, interrupted time, wall
    time: filled in on `rec` and its attempts."""
    owners: dict[str, dict[int, int]] = {}  # model -> epoch -> the attempt whose save stands
    by_n = {a.n: a for a in rec.attempts}
    for a in rec.attempts:
        if a.mode != TRAIN or a.epochs_saved <= 0:
            continue
        own = owners.setdefault(model_key(a.model), {})
        last = a.last_saved_epoch or (max(own, default=0) + a.epochs_saved)
        first = max(1, last - a.epochs_saved + 1)
        for e in [e for e in own if e >= first]:  # resumed from epoch first-1: later saves are superseded
            del own[e]
        a.epochs = tuple(range(first, last + 1))
        for e in a.epochs:
            own[e] = a.n
    running = rec.attempts[-1] if rec.attempts and not rec.attempts[-1].ended else None
    if running and running.mode == TRAIN:  # its saves so far: the model's results.csv rows past the others'
        own = owners.setdefault(model_key(running.model), {})
        done = max(own, default=0)
        running.epochs = tuple(e for e in sorted(rec.results.get(model_key(running.model), {})) if e > done)
        running.epochs_saved = len(running.epochs)
        for e in running.epochs:
            own[e] = running.n
    for key, own in owners.items():
        if key not in rec.counting:
            continue
        rows = rec.results.get(key, {})
        for e, n in own.items():
            a = by_n[n]
            a.kept += 1
            row = rows.get(e)
            if row is None or "time" not in row:
                a.kept_estimated = True
                continue
            prev = rows.get(e - 1)
            if own.get(e - 1) == n and prev and "time" in prev and row["time"] >= prev["time"]:
                a.kept_s += row["time"] - prev["time"]
            else:  # the attempt's first epoch: time counts from its training start
                a.kept_s += row["time"]
    for a in rec.attempts:
        if a.kept_estimated:  # results.csv lacks epochs: the attempt's time, shared by its epochs
            a.kept_s = a.seconds * a.kept / (a.epochs_saved + (1 if a.failed else 0))
        a.kept_s = min(a.kept_s, a.seconds) if a.ended else a.kept_s

    rec.wall_s = sum(max(0.0, b - a) for a, b in rec.sessions)
    rec.kept_s = sum(a.kept_s for a in rec.attempts)
    for i, a in enumerate(rec.attempts):
        if a.interrupted:  # stopped by a person or a scheduler: not a failure
            rec.interrupted_s += max(0.0, a.seconds - a.kept_s)
            continue
        if not a.lost:
            continue
        rec.lost_s += max(0.0, a.seconds - a.kept_s)
        nxt = rec.attempts[i + 1] if i + 1 < len(rec.attempts) else None
        if nxt and a.end is not None and nxt.start is not None and _same_session(rec, a.end, nxt.start):
            rec.wait_s += max(0.0, nxt.start - a.end)
    rec.lost_s += rec.wait_s


def _same_session(rec: Record, t0: float, t1: float) -> bool:
    return any(a - 1 <= t0 and t1 <= b + 1 for a, b in rec.sessions)  # ISO ts are whole seconds


def final_metrics(rec: Record) -> tuple[str, dict[str, float] | None, dict[str, float] | None, str]:
    """(model key, last row, best mAP50-95 row, what it is) for the delivered model or, before
    delivery, the model in training."""
    key = model_key((rec.delivered or {}).get("model"))
    what = "delivered model"
    if not key:
        training = [a for a in rec.attempts if a.mode == TRAIN and model_key(a.model) in rec.counting]
        key = model_key(training[-1].model) if training else ""
        what = "model in training (not delivered yet)"
    rows = rec.results.get(key) or {}
    if not rows:
        return key, None, None, what
    last = rows[max(rows)]
    scored = [r for r in rows.values() if MAP50_95 in r]
    best = max(scored, key=lambda r: r[MAP50_95]) if scored else None
    return key, last, best, what
