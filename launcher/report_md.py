"""report.md: a run's attempts, the time accounting and the final metrics, as Markdown, from an
`accounting.Record` (docs/design.md, "The run record"). Pure text: no matplotlib."""

from __future__ import annotations

from datetime import datetime

from .accounting import MAP50, MAP50_95, Record, final_metrics, thrash_words
from .eta import TRIAL, versus
from .fmt import duration, percent
from .runlog import Ev
from .timeline import TIMELINE_NAME

REPORT_MD_NAME = "report.md"
EVIDENCE_CHARS = 100


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


def markdown(rec: Record) -> str:
    """report.md's text."""
    out = [f"# Run report: {rec.name}", ""]
    status = rec.status + (f": {rec.reason}" if rec.reason and rec.status != Ev.COMPLETE else "")
    out.append(f"- **Status:** {status}")
    if rec.delivered and rec.delivered.get("model"):
        out.append(f"- **Delivered:** `{rec.delivered['model']}` — best `{rec.delivered.get('best')}` "
                   f"(last `{rec.delivered.get('last')}`)")
    else:
        out.append("- **Delivered:** nothing yet")
    for key, e in rec.set_aside.items():
        out.append(f"- **Set aside:** `{e.get('model')}`, epochs done {e.get('epochs_done')}/{e.get('of')} "
                   f"(kept in `{e.get('save_dir')}`; its epochs do not count as kept)")
    end = rec.sessions[-1][1] if rec.sessions else None
    z = datetime.fromtimestamp(rec.start or 0).astimezone().strftime("%z")
    tz = f"UTC{z[:3]}:{z[3:]}"
    out.append(f"- **Run:** {local(rec.start)} to {local(end, rec.start)} (local time, {tz}); "
               f"{len(rec.attempts)} attempt{'s' if len(rec.attempts) != 1 else ''}, "
               f"{len(rec.sessions)} launcher session{'s' if len(rec.sessions) != 1 else ''}")
    out.append(f"- **Goodput:** {percent(rec.goodput)} of {duration(rec.wall_s)} wall time was training kept "
               f"in the model; {duration(rec.lost_s)} lost to failures"
               + (f"; {duration(rec.interrupted_s)} interrupted (the launcher was stopped)"
                  if any(a.interrupted for a in rec.attempts) else ""))
    if rec.first_eta:
        out.append(f"- **ETA:** {eta_words(rec)}")
    if rec.tracking:  # the night's one tracker run (launcher/track.py)
        from .track import describe
        out.append("- **Tracking:** " + "; ".join(describe(rec.tracking))
                   + (f" ({len(rec.track_failed)} tracker failure{'s' if len(rec.track_failed) != 1 else ''}, "
                      f"training went on: {rec.track_failed[-1].get('error')})" if rec.track_failed else ""))
    if rec.thrashes:
        out.append("- **Allocator thrashing** (alloc retries rose in two consecutive windows of batches): " + "; ".join(
            thrash_words(e) for e in rec.thrashes))
    if rec.slurm:
        sl = rec.slurm
        out.append(f"- **SLURM:** job{'s' if len(sl['jobs']) > 1 else ''} {', '.join(sl['jobs'])}; {sl['requeues']} "
                   f"requeue{'s' if sl['requeues'] != 1 else ''} (time limits and preemptions), "
                   f"{duration(sl['waiting_s'])} waiting to run again")
    out += ["", f"![timeline]({TIMELINE_NAME})", "", "## Attempts", ""]
    out.append("| # | rung | mode | model | start | end | duration | epochs trained | epochs kept | failure "
               "| evidence | then |")
    out.append("|---:|---|---|---|---|---|---:|---:|---:|---|---|---|")
    for a in rec.attempts:
        failure = a.kind + (f" ({a.phase})" if a.phase else "") if a.kind else ("-" if a.ended else "(no end)")
        trained = f"{a.epochs_saved}" + (f" ({a.epochs[0]}–{a.epochs[-1]})" if len(a.epochs) > 1 else
                                         f" ({a.epochs[0]})" if a.epochs else "")
        out.append("| " + " | ".join([
            str(a.n), cell(a.rung), cell(a.mode), cell(rec.label(a.model)), local(a.start),
            local(a.end, a.start) if a.ended else f"{local(a.end, a.start)} (last seen)",
            duration(a.seconds), trained, str(a.kept), cell(failure),
            cell(a.evidence, EVIDENCE_CHARS), cell(a.then)]) + " |")
    if not rec.attempts:
        out.append("| - | no attempt recorded | | | | | | | | | | |")

    other = max(0.0, rec.wall_s - rec.kept_s - rec.lost_s - rec.interrupted_s)
    share = (lambda s: percent(s / rec.wall_s) if rec.wall_s > 0 else "-")
    out += ["", "## Time", "", "| | time | share of wall time |", "|---|---:|---:|",
            f"| wall time (launcher running) | {duration(rec.wall_s)} | {share(rec.wall_s)} |",
            f"| training kept (goodput) | {duration(rec.kept_s)} | {share(rec.kept_s)} |",
            f"| lost to failures | {duration(rec.lost_s)} | {share(rec.lost_s)} |",
            f"| &nbsp;&nbsp;of which waiting before the next attempt | {duration(rec.wait_s)} | {share(rec.wait_s)} |",
            f"| interrupted (Ctrl-C, SIGTERM: stopped, not failed) | {duration(rec.interrupted_s)} "
            f"| {share(rec.interrupted_s)} |",
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
            "+1 if it failed or was interrupted).",
            "- *Goodput* = training kept ÷ wall time.",
            "- *Lost to failures*: for every attempt that ended in a failure (not an interruption), its duration "
            "less its training kept (start-up, the epoch it died in, epochs superseded or set aside), plus the wait "
            "before the next attempt (backoff, GPU release).",
            "- *Interrupted*: for every attempt that ended because the launcher received SIGINT or SIGTERM (stopped "
            "by a person or a scheduler, not a failure), its duration less its training kept. The time until the "
            "next `run` is not wall time."]

    key, last, best, what = final_metrics(rec)
    out += ["", "## Final metrics", ""]
    model = rec.models.get(key)
    label = rec.label(model.source) if model else key
    if last is None:
        out.append(f"No results.csv for the {what}" + (f" (`{label}`)." if label else "."))
    else:
        epochs = model.epochs if model else None
        of = f"/{epochs}" if epochs else ""
        out.append(f"From the {what} `{label}`'s results.csv, last row (epoch {int(last['epoch'])}{of}):")
        out.append("")
        out.append(f"- mAP50-95: **{_metric(last, MAP50_95)}**")
        out.append(f"- mAP50: {_metric(last, MAP50)}")
        if best is not None and best is not last:
            out.append(f"- best mAP50-95 over the epochs: {_metric(best, MAP50_95)} (epoch {int(best['epoch'])})")
    return "\n".join(out) + "\n"


def eta_words(rec: Record) -> str:
    """The night's first ETA against the real night: "expected at the start: 7 h 40 min of training
    (...); took 8 h 05 min of wall time (+5 %)". The real night is the wall time (start-up,
    validation and failures included); a night not finished says how far it got."""
    e = rec.first_eta
    if e["from"] == TRIAL:
        speed = f" at {e['images_per_s']:.1f} images/s" if isinstance(e.get("images_per_s"), (int, float)) else ""
        what = (f"expected at the start: {duration(e['seconds'])} of training (from the trial of {e['rung']}{speed}; "
                "training only, validation and start-up not counted)")
    else:
        what = (f"expected after the first epoch: {duration(e['seconds'])} ({e['epochs']} epochs × "
                f"{duration(e['epoch_s'])}, its training and validation, on {e['rung']})")
    if rec.status == Ev.COMPLETE:
        return f"{what}; took {duration(rec.wall_s)} of wall time ({versus(e['seconds'], rec.wall_s)})"
    return f"{what}; not finished ({rec.status}) after {duration(rec.wall_s)} of wall time"


def _metric(row: dict[str, float], key: str) -> str:
    return f"{row[key]:.4g}" if key in row else "-"

