"""`report`: what happened in one run, from its record alone — `timeline.png` and `report.md`
written into `logs/<run>/`.

Reads only the run record (events.jsonl, telemetry.jsonl, state.json and each model's
Ultralytics results.csv): no torch, no Ultralytics, no network. matplotlib is imported inside
`timeline()` with the headless Agg backend, so `import launcher.report` stays cheap.

Definitions (the report states them too):
- epochs kept: the epochs an attempt saved that the delivered model still stands on (for a run
  that has not delivered yet: the model it would continue). An attempt that resumes from epoch
  k supersedes every later epoch saved before it; a model set aside and never taken up again
  keeps nothing.
- kept training time: the duration of each kept epoch from the `time` column of the model's
  results.csv (seconds since that attempt's training started, so an epoch's time is the step
  from the row before it in the same attempt, or the row's own value for an attempt's first
  epoch). Where results.csv lacks an epoch: the attempt's duration × kept / (epochs trained,
  +1 for an attempt that failed mid-epoch).
- wall time: the time a launcher was running for this run (from `start`/`continue` to its
  ending event); the gaps between a stop and the next `run` are not counted.
- goodput: kept training time / wall time.
- time lost to failures: for every attempt that ended in a failure, its duration less its kept
  training time (start-up, the epoch it died in, epochs later superseded or set aside), plus the
  wait before the next attempt (backoff, GPU release).
"""

from __future__ import annotations

import csv
import json
import math
import os
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

from .runlog import RunPaths, read_json, write_text_atomic

TIMELINE_NAME = "timeline.png"
REPORT_MD_NAME = "report.md"
EVIDENCE_CHARS = 100
GIB = 1024 ** 3
SESSION_START = ("start", "continue")
ENDINGS = ("complete", "fatal", "exhausted", "interrupted")
NEXT_STEPS = ("retry", "step_down", "validate")
MAP50_95 = "metrics/mAP50-95(B)"
MAP50 = "metrics/mAP50(B)"
PLOT_POINTS = 20_000  # telemetry points drawn at most (a 100-hour run has ~70k samples)


# ---- reading the record -----------------------------------------------------------------------

def read_jsonl(path: Path) -> list[dict]:
    """Every whole JSON object line; torn or garbled lines (a power cut mid-write) are skipped."""
    try:
        data = path.read_bytes()
    except OSError:
        return []
    out = []
    for line in data.decode("utf-8", errors="replace").splitlines():
        try:
            obj = json.loads(line)
        except ValueError:
            continue
        if isinstance(obj, dict):
            out.append(obj)
    return out


def _ts(event: dict) -> float | None:
    """An event's unix time: its float `t` where it has one, else its ISO `ts`."""
    t = event.get("t")
    if isinstance(t, (int, float)) and math.isfinite(t):
        return float(t)
    try:
        return datetime.fromisoformat(str(event["ts"])).timestamp()
    except (KeyError, ValueError, TypeError):
        return None


def model_key(source: str | None) -> str:
    """Models are named by source in attempts and state, by ladder spec in `model_set_aside`; the
    stem is what both share (and what names the model's save_dir)."""
    return Path(source).stem if source else ""


def read_results(path: Path) -> dict[int, dict[str, float]]:
    """Ultralytics' results.csv as {epoch: row}; the last row of a repeated epoch wins (a redo
    after a failure between the row and the checkpoint)."""
    rows: dict[int, dict[str, float]] = {}
    try:
        text = path.read_text(errors="replace")
    except OSError:
        return rows
    reader = csv.reader(text.splitlines())
    header = None
    for cells in reader:
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

    @property
    def failed(self) -> bool:
        return self.kind is not None

    @property
    def seconds(self) -> float:
        if self.start is None or self.end is None:
            return 0.0
        return max(0.0, self.end - self.start)


@dataclass
class Record:
    root: Path
    name: str
    status: str
    reason: str | None
    delivered: dict | None
    attempts: list[Attempt]
    sessions: list[tuple[float, float]]
    telemetry: list[dict]
    set_aside: dict[str, dict]  # model key -> the model_set_aside event (not taken up again)
    models: dict[str, dict]  # model key -> {"source", "save_dir", "epochs", "epochs_done"}
    counting: set[str]  # model keys whose epochs count as kept
    results: dict[str, dict[int, dict[str, float]]]  # model key -> results.csv rows
    wall_s: float = 0.0
    kept_s: float = 0.0
    lost_s: float = 0.0
    wait_s: float = 0.0

    @property
    def start(self) -> float | None:
        return self.sessions[0][0] if self.sessions else None

    @property
    def goodput(self) -> float | None:
        return self.kept_s / self.wall_s if self.wall_s > 0 else None


def load(root: Path) -> Record:
    """The run record at `root` (logs/<run>), read and reduced to what the report shows."""
    root = Path(root)
    paths = RunPaths(root)
    events = read_jsonl(paths.events)
    state = read_json(paths.state) or {}
    telemetry = [s for s in read_jsonl(paths.telemetry) if isinstance(s.get("t"), (int, float))]
    telemetry.sort(key=lambda s: s["t"])

    attempts: dict[int, Attempt] = {}
    order: list[Attempt] = []
    set_aside: dict[str, dict] = {}
    status, reason, delivered = None, None, None
    sessions: list[list[float]] = []
    last_attempt: Attempt | None = None
    for e in events:
        kind, t = e.get("event"), _ts(e)
        if kind in SESSION_START and t is not None:
            sessions.append([t, t])
        elif t is not None and sessions:  # every event is a sign the launcher was running
            sessions[-1][1] = max(sessions[-1][1], t)
        if kind == "attempt_start" and isinstance(e.get("attempt"), int):
            if t is not None and not sessions:  # a record without its start event
                sessions.append([t, t])
            a = Attempt(e["attempt"], str(e.get("rung", "?")), str(e.get("mode", "train")), str(e.get("model", "")),
                        t, batch=e.get("batch"))
            attempts[a.n] = a
            order.append(a)
            last_attempt = a
            if a.mode == "train":
                set_aside.pop(model_key(a.model), None)  # taken up again
        elif kind == "attempt_end" and isinstance(e.get("attempt"), int):
            a = attempts.get(e["attempt"])
            if a is None:
                continue
            a.ended, a.end = True, t
            if a.end is None and a.start is not None and isinstance(e.get("seconds"), (int, float)):
                a.end = a.start + e["seconds"]
            a.kind, a.evidence, a.phase = e.get("kind"), e.get("evidence"), e.get("phase")
            a.exit_code = e.get("exit_code")
            a.epochs_saved = e.get("epochs_saved") if isinstance(e.get("epochs_saved"), int) else 0
            a.last_saved_epoch = e.get("last_saved_epoch") if isinstance(e.get("last_saved_epoch"), int) else None
        elif kind in NEXT_STEPS and last_attempt is not None and not last_attempt.then:
            to, wait = e.get("to"), e.get("wait_s")
            last_attempt.then = {"retry": f"retry after {wait:g} s" if isinstance(wait, (int, float)) else "retry",
                                 "step_down": f"step down → {to}", "validate": f"validate at {to}"}[kind]
        elif kind == "model_set_aside":
            set_aside[model_key(e.get("model"))] = e
        elif kind in ENDINGS:
            status, reason = kind, e.get("reason")
            if kind == "complete":
                delivered = {"model": e.get("model"), "best": e.get("best"), "last": e.get("last")}
            if last_attempt is not None and not last_attempt.then:
                last_attempt.then = kind

    # an attempt with no end (still running, or the launcher was killed): its last sign of life
    for a in order:
        if a.end is None:
            seen = [s["t"] for s in telemetry if s.get("attempt") == a.n]
            a.end = max(seen) if seen else a.start
    for s in telemetry:  # telemetry after the last event (a running or killed launcher)
        if sessions and s["t"] > sessions[-1][1]:
            sessions[-1][1] = s["t"]
    if not sessions and telemetry:
        sessions.append([telemetry[0]["t"], telemetry[-1]["t"]])

    if status is None:
        status = state.get("status") or ("running" if order else "not started")
        reason = reason or state.get("reason")
    if delivered is None and "complete" in (status, state.get("status")):
        delivered = state.get("delivered")

    models: dict[str, dict] = {}
    for source, m in (state.get("models") or {}).items():
        models[model_key(source)] = {"source": source, **m}
        if m.get("set_aside") and model_key(source) not in set_aside:
            set_aside[model_key(source)] = {"model": source, "epochs_done": m.get("epochs_done"),
                                            "of": m.get("epochs"), "save_dir": m.get("save_dir")}
    for a in order:
        models.setdefault(model_key(a.model), {"source": a.model})
    if delivered and delivered.get("model"):
        counting = {model_key(delivered["model"])}
    else:
        counting = {k for k in models if k not in set_aside}

    results = {k: read_results(results_csv(root, m)) for k, m in models.items()}
    rec = Record(root=root, name=str(state.get("run") or root.name), status=status, reason=reason,
                 delivered=delivered, attempts=order, sessions=[(a, b) for a, b in sessions],
                 telemetry=telemetry, set_aside=set_aside, models=models, counting=counting, results=results)
    _account(rec)
    return rec


def results_csv(root: Path, model: dict) -> Path:
    """A model's results.csv: in its recorded save_dir, or where the launcher puts it under this
    record (a record copied elsewhere still reports)."""
    save_dir = model.get("save_dir")
    if save_dir and (Path(save_dir) / "results.csv").is_file():
        return Path(save_dir) / "results.csv"
    return RunPaths(root).save_dir(model.get("source") or "") / "results.csv"


def _account(rec: Record) -> None:
    """Epochs kept per attempt, kept training time, time lost to failures, wall time."""
    owners: dict[str, dict[int, int]] = {}  # model -> epoch -> the attempt whose save stands
    by_n = {a.n: a for a in rec.attempts}
    for a in rec.attempts:
        if a.mode != "train" or a.epochs_saved <= 0:
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
    if running and running.mode == "train":  # its saves so far: the model's results.csv rows past the others'
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
        if not a.failed:
            continue
        rec.lost_s += max(0.0, a.seconds - a.kept_s)
        nxt = rec.attempts[i + 1] if i + 1 < len(rec.attempts) else None
        if nxt and a.end is not None and nxt.start is not None and _same_session(rec, a.end, nxt.start):
            rec.wait_s += max(0.0, nxt.start - a.end)
    rec.lost_s += rec.wait_s


def _same_session(rec: Record, t0: float, t1: float) -> bool:
    return any(a - 1 <= t0 and t1 <= b + 1 for a, b in rec.sessions)  # ISO ts are whole seconds


# ---- report.md --------------------------------------------------------------------------------

def duration(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    s = int(round(seconds))
    if s < 60:
        return f"{s} s"
    if s < 3600:
        return f"{s // 60} min {s % 60:02d} s"
    return f"{s // 3600} h {s % 3600 // 60:02d} min"


def local(t: float | None, day_of: float | None = None) -> str:
    """Local wall-clock time; the date only where it differs from `day_of`'s."""
    if t is None:
        return "-"
    d = datetime.fromtimestamp(t).astimezone()
    if day_of is not None and datetime.fromtimestamp(day_of).astimezone().date() == d.date():
        return d.strftime("%H:%M:%S")
    return d.strftime("%Y-%m-%d %H:%M:%S")


def cell(text: object, limit: int | None = None) -> str:
    """One Markdown table cell: one line, pipes escaped, long text cut."""
    s = " ".join(str(text if text is not None else "").split())
    if limit and len(s) > limit:
        s = s[: limit - 1].rstrip() + "…"
    return s.replace("|", "\\|") or "-"


def percent(x: float | None) -> str:
    return "-" if x is None else f"{100 * x:.1f} %"


def final_metrics(rec: Record) -> tuple[str, dict[str, float] | None, dict[str, float] | None, str]:
    """(model key, last row, best mAP50-95 row, what it is) for the delivered model or, before
    delivery, the model in training."""
    key = model_key((rec.delivered or {}).get("model"))
    what = "delivered model"
    if not key:
        training = [a for a in rec.attempts if a.mode == "train" and model_key(a.model) in rec.counting]
        key = model_key(training[-1].model) if training else ""
        what = "model in training (not delivered yet)"
    rows = rec.results.get(key) or {}
    if not rows:
        return key, None, None, what
    last = rows[max(rows)]
    scored = [r for r in rows.values() if MAP50_95 in r]
    best = max(scored, key=lambda r: r[MAP50_95]) if scored else None
    return key, last, best, what


def markdown(rec: Record) -> str:
    out = [f"# Run report: {rec.name}", ""]
    status = rec.status + (f": {rec.reason}" if rec.reason and rec.status != "complete" else "")
    out.append(f"- **Status:** {status}")
    if rec.delivered and rec.delivered.get("model"):
        out.append(f"- **Delivered:** `{rec.delivered['model']}` — best `{rec.delivered.get('best')}` "
                   f"(last `{rec.delivered.get('last')}`)")
    else:
        out.append("- **Delivered:** nothing yet")
    for key, e in rec.set_aside.items():
        out.append(f"- **Set aside:** `{e.get('model')}` after {e.get('epochs_done')}/{e.get('of')} epochs "
                   f"(kept in `{e.get('save_dir')}`; its epochs do not count as kept)")
    end = rec.sessions[-1][1] if rec.sessions else None
    z = datetime.fromtimestamp(rec.start or 0).astimezone().strftime("%z")
    tz = f"UTC{z[:3]}:{z[3:]}"
    out.append(f"- **Run:** {local(rec.start)} to {local(end, rec.start)} (local time, {tz}); "
               f"{len(rec.attempts)} attempt{'s' if len(rec.attempts) != 1 else ''}, "
               f"{len(rec.sessions)} launcher session{'s' if len(rec.sessions) != 1 else ''}")
    out.append(f"- **Goodput:** {percent(rec.goodput)} of {duration(rec.wall_s)} wall time was training kept "
               f"in the model; {duration(rec.lost_s)} lost to failures")
    out += ["", f"![timeline]({TIMELINE_NAME})", "", "## Attempts", ""]
    out.append("| # | rung | mode | model | start | end | duration | epochs trained | epochs kept | failure "
               "| evidence | then |")
    out.append("|---:|---|---|---|---|---|---:|---:|---:|---|---|---|")
    for a in rec.attempts:
        failure = a.kind + (f" ({a.phase})" if a.phase else "") if a.kind else ("-" if a.ended else "(no end)")
        trained = f"{a.epochs_saved}" + (f" ({a.epochs[0]}–{a.epochs[-1]})" if len(a.epochs) > 1 else
                                         f" ({a.epochs[0]})" if a.epochs else "")
        out.append("| " + " | ".join([
            str(a.n), cell(a.rung), cell(a.mode), cell(Path(a.model).name), local(a.start),
            local(a.end, a.start) if a.ended else f"{local(a.end, a.start)} (last seen)",
            duration(a.seconds), trained, str(a.kept), cell(failure),
            cell(a.evidence, EVIDENCE_CHARS), cell(a.then)]) + " |")
    if not rec.attempts:
        out.append("| - | no attempt recorded | | | | | | | | | | |")

    other = max(0.0, rec.wall_s - rec.kept_s - rec.lost_s)
    share = (lambda s: percent(s / rec.wall_s) if rec.wall_s > 0 else "-")
    out += ["", "## Time", "", "| | time | share of wall time |", "|---|---:|---:|",
            f"| wall time (launcher running) | {duration(rec.wall_s)} | {share(rec.wall_s)} |",
            f"| training kept (goodput) | {duration(rec.kept_s)} | {share(rec.kept_s)} |",
            f"| lost to failures | {duration(rec.lost_s)} | {share(rec.lost_s)} |",
            f"| &nbsp;&nbsp;of which waiting before the next attempt | {duration(rec.wait_s)} | {share(rec.wait_s)} |",
            f"| other (start-up, dataset caching, final validation of good attempts) | {duration(other)} "
            f"| {share(other)} |"]
    if any(a.kept_estimated for a in rec.attempts):
        out.append("")
        out.append("Some kept epochs are missing from results.csv: their time is estimated from their attempt's "
                   "duration (see below).")
    out += ["", "How these are counted:", "",
            "- *Epochs trained*: epochs the attempt saved a checkpoint for (epoch numbers in brackets).",
            "- *Epochs kept*: of those, the ones the delivered model (before delivery: the model in training) "
            "still stands on. An attempt that resumes from epoch k supersedes every later epoch saved before it; "
            "a model set aside and never taken up again keeps nothing.",
            "- *Wall time*: from each launcher start (`run`, or a `run` continuing a stopped run) to its ending; "
            "time between a stop and the next `run` is not counted.",
            "- *Training kept*: the sum of the kept epochs' durations from the `time` column of the model's "
            "results.csv (training and validation of the epoch; an attempt's first epoch is timed from its "
            "training start). Where results.csv lacks an epoch: the attempt's duration × kept ÷ (epochs trained, "
            "+1 if it failed).",
            "- *Goodput* = training kept ÷ wall time.",
            "- *Lost to failures*: for every attempt that ended in a failure, its duration less its training kept "
            "(start-up, the epoch it died in, epochs superseded or set aside), plus the wait before the next "
            "attempt (backoff, GPU release)."]

    key, last, best, what = final_metrics(rec)
    out += ["", "## Final metrics", ""]
    if last is None:
        out.append(f"No results.csv for the {what}" + (f" (`{key}`)." if key else "."))
    else:
        epochs = (rec.models.get(key) or {}).get("epochs")
        of = f"/{epochs}" if epochs else ""
        out.append(f"From the {what} `{key}`'s results.csv, last row (epoch {int(last['epoch'])}{of}):")
        out.append("")
        out.append(f"- mAP50-95: **{_metric(last, MAP50_95)}**")
        out.append(f"- mAP50: {_metric(last, MAP50)}")
        if best is not None and best is not last:
            out.append(f"- best mAP50-95 over the epochs: {_metric(best, MAP50_95)} (epoch {int(best['epoch'])})")
    return "\n".join(out) + "\n"


def _metric(row: dict[str, float], key: str) -> str:
    return f"{row[key]:.4g}" if key in row else "-"


# ---- timeline.png -----------------------------------------------------------------------------

def _unit(span_s: float) -> tuple[float, str]:
    if span_s >= 3 * 3600:
        return 3600.0, "hours"
    if span_s >= 180:
        return 60.0, "minutes"
    return 1.0, "seconds"


def _series(rec: Record, key: str, t0: float, scale: float) -> tuple[list[float], list[float]]:
    """One telemetry field in GiB over time, broken (NaN) between attempts and across gaps."""
    samples = rec.telemetry
    stride = max(1, len(samples) // PLOT_POINTS)
    xs, ys = [], []
    prev = None
    for s in samples[::stride]:
        v = s.get(key)
        if prev is not None and (s.get("attempt") != prev.get("attempt") or s["t"] - prev["t"] > 600 * stride):
            xs.append(math.nan)
            ys.append(math.nan)
        xs.append((s["t"] - t0) / scale)
        ys.append(v / GIB if isinstance(v, (int, float)) else math.nan)
        prev = s
    return xs, ys


def timeline(rec: Record, path: Path) -> None:
    """Draw the run's timeline to `path` (PNG, 12×6 in at 100 dpi)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.lines import Line2D
    from matplotlib.patches import Patch
    from matplotlib.transforms import blended_transform_factory

    t0 = rec.start if rec.start is not None else (rec.attempts[0].start if rec.attempts else 0.0) or 0.0
    ends = [b for _, b in rec.sessions] + [a.end for a in rec.attempts if a.end is not None]
    span = max([e - t0 for e in ends] + [1.0])
    scale, unit = _unit(span)

    has_vram = any(isinstance(s.get("vram"), (int, float)) for s in rec.telemetry)
    fig, (ax_v, ax_r) = plt.subplots(2, 1, sharex=True, figsize=(12, 6), dpi=100,
                                     gridspec_kw={"height_ratios": [3, 2] if has_vram else [1, 2], "hspace": 0.08})
    colours = plt.get_cmap("Set2").colors  # light bands, so the dark memory lines stay readable
    rungs: dict[str, tuple] = {}
    for a in rec.attempts:
        rungs.setdefault(a.rung, colours[len(rungs) % len(colours)])

    # attempt bands, coloured by rung, named at the top
    top = blended_transform_factory(ax_v.transData, ax_v.transAxes)
    for a in rec.attempts:
        if a.start is None:
            continue
        x0, x1 = (a.start - t0) / scale, (max(a.end or a.start, a.start) - t0) / scale
        for ax in (ax_v, ax_r):
            ax.axvspan(x0, x1, color=rungs[a.rung], alpha=0.3, lw=0)
        label = f"#{a.n} {a.rung}" + (" (val)" if a.mode == "validate" else "")
        narrow = (x1 - x0) < span / scale * 0.09
        ax_v.text((x0 + x1) / 2, 0.98, label, transform=top, ha="center", va="top", fontsize=9,
                  rotation=90 if narrow else 0, color="0.15", clip_on=True,
                  bbox={"boxstyle": "round,pad=0.2", "fc": "white", "ec": rungs[a.rung], "alpha": 0.85})
    # gaps between launcher sessions: nothing ran
    for (_, b), (c, _) in zip(rec.sessions, rec.sessions[1:]):
        if c - b > 1:
            for ax in (ax_v, ax_r):
                ax.axvspan((b - t0) / scale, (c - t0) / scale, color="0.85", alpha=0.5, hatch="//", lw=0)
            ax_r.text(((b + c) / 2 - t0) / scale, 0.5, "launcher stopped", transform=blended_transform_factory(
                ax_r.transData, ax_r.transAxes), ha="center", va="center", fontsize=8, color="0.35")

    # memory lines
    have = {k: False for k in ("vram", "ram_used", "rss")}
    if rec.telemetry:
        xs, vram = _series(rec, "vram", t0, scale)
        have["vram"] = any(not math.isnan(v) for v in vram)
        if have["vram"]:
            ax_v.plot(xs, vram, color="#4b1d7a", lw=1.6, label="VRAM (child's processes)")
        xs, used = _series(rec, "ram_used", t0, scale)
        have["ram_used"] = any(not math.isnan(v) for v in used)
        if have["ram_used"]:
            ax_r.plot(xs, used, color="black", lw=1.4, label="host RAM used")
        xs, rss = _series(rec, "rss", t0, scale)
        have["rss"] = any(not math.isnan(v) for v in rss)
        if have["rss"]:
            ax_r.plot(xs, rss, color="0.35", lw=1.0, ls="--", label="child's RSS")
        totals = [(s["ram_used"] + s["ram_available"]) / GIB for s in rec.telemetry
                  if isinstance(s.get("ram_used"), (int, float)) and isinstance(s.get("ram_available"), (int, float))]
        if totals:
            ax_r.axhline(max(totals), color="0.4", lw=0.8, ls=":")
            ax_r.text(0.005, max(totals), f" host RAM {max(totals):.0f} GiB", transform=blended_transform_factory(
                ax_r.transAxes, ax_r.transData), va="bottom", ha="left", fontsize=8, color="0.35")
            ax_r.set_ylim(0, max(totals) * 1.12)
    if not have["vram"]:
        why = "no telemetry in this run record" if not rec.telemetry else "no GPU memory samples (CPU run?)"
        ax_v.text(0.5, 0.4, why, transform=ax_v.transAxes, ha="center", va="center", fontsize=10, color="0.3", zorder=5,
                  bbox={"boxstyle": "round,pad=0.3", "fc": "white", "ec": "none", "alpha": 0.85})
        ax_v.set_ylim(0, 1)
        ax_v.set_yticks([])
    else:
        peak = max(v for v in vram if not math.isnan(v))
        ax_v.set_ylim(0, peak * 1.3 if peak > 0 else 1)

    # epoch ticks: where the epoch in training changes
    bottom = blended_transform_factory(ax_v.transData, ax_v.transAxes)
    ticks: list[tuple[float, int]] = []
    prev = None
    for s in rec.telemetry:
        e = s.get("epoch")
        if isinstance(e, int) and (prev is None or e != prev.get("epoch") or s.get("attempt") != prev.get("attempt")):
            ticks.append(((s["t"] - t0) / scale, e))
        prev = s if isinstance(e, int) else prev
    if ticks:
        every = max(1, math.ceil(len(ticks) / 30))
        ax_v.plot([x for x, _ in ticks], [0.0] * len(ticks), transform=bottom, ls="none", marker="|",
                  markersize=12, mew=1.5, color="0.2", clip_on=False)
        for i, (x, e) in enumerate(ticks):
            if i % every == 0 or i == len(ticks) - 1:
                ax_v.text(x, 0.045, str(e), transform=bottom, ha="center", va="bottom", fontsize=7, color="0.2")

    # failures: a red line where each failed attempt ended, its kind named; labels of failures
    # close together take the next free slot (lower, then the line's other side)
    slots = ((0.97, "right"), (0.5, "right"), (0.97, "left"), (0.5, "left"))
    last_x = [-math.inf] * len(slots)
    gap = span / scale * 0.025
    for a in rec.attempts:
        if not a.failed or a.end is None:
            continue
        x = (a.end - t0) / scale
        for ax in (ax_v, ax_r):
            ax.axvline(x, color="tab:red", lw=1.6, ls="--")
        free = [i for i, lx in enumerate(last_x) if x - lx >= gap]
        slot = free[0] if free else min(range(len(slots)), key=lambda i: last_x[i])
        last_x[slot] = x
        y, ha = slots[slot]
        ax_r.text(x, y, f" {a.kind} ", transform=blended_transform_factory(ax_r.transData, ax_r.transAxes),
                  rotation=90, ha=ha, va="top", fontsize=9, color="tab:red", fontweight="bold",
                  bbox={"boxstyle": "round,pad=0.15", "fc": "white", "ec": "none", "alpha": 0.8})

    ax_v.set_ylabel("VRAM (GiB)")
    ax_r.set_ylabel("RAM (GiB)")
    ax_r.set_xlabel(f"time since the run started ({unit})")
    ax_v.set_xlim(0, span / scale * 1.01)
    if not rec.telemetry or not have["ram_used"]:
        ax_r.set_ylim(0, 1)
        ax_r.set_yticks([])
    for ax in (ax_v, ax_r):
        ax.grid(True, axis="y", alpha=0.3)
        ax.set_axisbelow(True)
    handles = [Patch(color=c, alpha=0.5, label=f"rung {r}") for r, c in rungs.items()]
    handles += [h for ax in (ax_v, ax_r) for h in ax.get_legend_handles_labels()[0]]
    if any(a.failed for a in rec.attempts):
        handles.append(Line2D([], [], color="tab:red", ls="--", label="failure (attempt end)"))
    if ticks:
        handles.append(Line2D([], [], color="0.2", ls="none", marker="|", markersize=10, label="epoch start"))
    if handles:
        fig.legend(handles=handles, loc="lower center", ncol=min(len(handles), 6), fontsize=8, frameon=False,
                   bbox_to_anchor=(0.5, 0.0))
    title = f"{rec.name} — {rec.status}"
    if rec.delivered and rec.delivered.get("model"):
        title += f": {Path(rec.delivered['model']).name} delivered"
    fig.suptitle(f"{title}   (wall {duration(rec.wall_s)}, goodput {percent(rec.goodput)})", fontsize=12)
    fig.subplots_adjust(left=0.06, right=0.99, top=0.92, bottom=0.17)
    try:
        fig.savefig(path, format="png", dpi=100)
    finally:
        plt.close(fig)


# ---- the command's work -----------------------------------------------------------------------

def write_report(root: Path) -> tuple[Path, Path]:
    """Write `timeline.png` and `report.md` into the run record at `root` (logs/<run>), each
    replaced atomically; returns their paths."""
    root = Path(root)
    rec = load(root)
    png, md = root / TIMELINE_NAME, root / REPORT_MD_NAME
    tmp = root / f".{TIMELINE_NAME}.{os.getpid()}.tmp"
    try:
        timeline(rec, tmp)
        os.replace(tmp, png)
    finally:
        tmp.unlink(missing_ok=True)
    write_text_atomic(md, markdown(rec), fsync=False)
    return png, md
