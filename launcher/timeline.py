"""timeline.png: a run's attempts as bands coloured by rung, VRAM and host RAM over time, a red
line at each failure, epoch ticks, the gaps between launcher sessions (docs/design.md, "The run
record"). matplotlib is imported inside `draw()` with the headless Agg backend, so importing this
module stays cheap."""

from __future__ import annotations

import math
from pathlib import Path

from .accounting import VALIDATE, Record
from .contract import GIB
from .fmt import duration, gib, percent

TIMELINE_NAME = "timeline.png"
PLOT_POINTS = 20_000  # telemetry points drawn at most (a 100-hour run has ~70k samples)


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


def draw(rec: Record, path: Path) -> None:
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
        label = f"#{a.n} {a.rung}" + (" (val)" if a.mode == VALIDATE else "")
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
        totals = [s["ram_used"] + s["ram_available"] for s in rec.telemetry
                  if isinstance(s.get("ram_used"), (int, float)) and isinstance(s.get("ram_available"), (int, float))]
        if totals:
            total = max(totals)
            ax_r.axhline(total / GIB, color="0.4", lw=0.8, ls=":")
            ax_r.text(0.005, total / GIB, f" host RAM {gib(total, 0)}", transform=blended_transform_factory(
                ax_r.transAxes, ax_r.transData), va="bottom", ha="left", fontsize=8, color="0.35")
            ax_r.set_ylim(0, total / GIB * 1.12)
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
