"""timeline.png: a run's attempts as bands coloured by rung, VRAM and host RAM over time, a red
line at each failure (a grey one where the launcher was interrupted), epoch ticks along the top,
a mark where a resumed attempt picked training up, the gaps between launcher sessions
(docs/design.md, "The run record").

Only the panels that have data are drawn: VRAM (GPU runs) and host RAM; a CPU run has the RAM
panel alone. The RAM axis fits the run's own RAM (host RAM used, the child's RSS); the machine's
total is a line where it is within reach of the data, else named in the axis label.

matplotlib is imported inside `figure()` and the parts it draws with (a `matplotlib.figure.Figure`
on the headless Agg canvas, no pyplot), so importing this module stays cheap."""

from __future__ import annotations

import math
from pathlib import Path

from .accounting import TRAIN, VALIDATE, Record
from .contract import GIB
from .fmt import gib, percent

TIMELINE_NAME = "timeline.png"
PLOT_POINTS = 20_000  # telemetry points drawn at most (a 100-hour run has ~70k samples)
WIDTH_IN, HEIGHT_IN, DPI = 12, 6, 100
LEFT, RIGHT, TOP, BOTTOM = 0.065, 0.99, 0.86, 0.16  # the panels' place in the figure
EPOCH_LABELS = 20  # epoch numbers written along the top at most
EPOCH_MARKS = 150  # epoch start ticks drawn at most (more: only the labelled ones)
TOTAL_IN_REACH = 1.6  # the host's total RAM is drawn as a line up to this × the data's peak
FAILURE_RED, INTERRUPT_GREY, RESUME_TEAL = "tab:red", "0.3", "#00796b"
# gids of the texts, so a test (or a reader of the SVG) can tell them apart
GID_RUNG, GID_EPOCH, GID_RESUME, GID_FAILURE = "rung", "epoch", "resume", "failure"


def _unit(span_s: float) -> tuple[float, str]:
    if span_s >= 3 * 3600:
        return 3600.0, "hours"
    if span_s >= 180:
        return 60.0, "minutes"
    return 1.0, "seconds"


def _amount(seconds: float, scale: float, unit: str) -> str:
    """A time in the x axis's own unit, so the title reads against the axis."""
    return f"{seconds / scale:.{0 if unit == 'seconds' else 1}f} {unit}"


def _number(v: object) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


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
        ys.append(v / GIB if _number(v) else math.nan)
        prev = s
    return xs, ys


def _epoch_starts(rec: Record, t0: float, scale: float) -> list[tuple[float, int, bool]]:
    """(x, epoch, first of its attempt) where the epoch in training changes, from the telemetry."""
    ticks: list[tuple[float, int, bool]] = []
    prev = None
    for s in rec.telemetry:
        e = s.get("epoch")
        if not isinstance(e, int) or isinstance(e, bool):
            continue
        new_attempt = prev is None or s.get("attempt") != prev.get("attempt")
        if new_attempt or e != prev.get("epoch"):
            ticks.append(((s["t"] - t0) / scale, e, new_attempt))
        prev = s
    return ticks


def _step(epochs: list[int], room: int) -> int:
    """The smallest round step (1, 2, 5, 10, 20, 25, 50, ...) that labels at most `room` epochs."""
    for magnitude in (1, 10, 100, 1000, 10_000):
        for m in (1, 2, 5) if magnitude == 1 else (1, 2, 2.5, 5):
            step = int(m * magnitude)
            if sum(1 for e in epochs if e % step == 0) <= room:
                return step
    return 100_000


def _epoch_labels(ticks: list[tuple[float, int, bool]], px_per_x: float) -> list[int]:
    """Indices of the ticks to label: attempts' first epochs first, then round epoch numbers, each
    only where it does not touch a label already placed; at most EPOCH_LABELS."""
    def width(e: int) -> float:  # 8-point digits are ~6.7 px wide at 100 dpi, plus a margin
        return len(str(e)) * 6.7 + 8

    firsts = [i for i, (_, _, first) in enumerate(ticks) if first]
    step = _step([e for _, e, first in ticks if not first], max(1, EPOCH_LABELS - len(firsts)))
    rest = [i for i, (_, e, first) in enumerate(ticks) if not first and e % step == 0]
    placed: list[tuple[float, float]] = []  # (left, right) in pixels
    chosen: list[int] = []
    for i in firsts + rest:
        if len(chosen) >= EPOCH_LABELS:
            break
        x, e, _ = ticks[i]
        left, right = x * px_per_x - width(e) / 2, x * px_per_x + width(e) / 2
        if all(right <= a or left >= b for a, b in placed):
            placed.append((left, right))
            chosen.append(i)
    return sorted(chosen)


class _Canvas:
    """One timeline being drawn: the figure and its panels, the run's time axis (`x` of a unix
    time, in `unit`s) and the labels placed inside the panels so far, so that none overlaps another."""

    def __init__(self, rec: Record):
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure

        self.t0 = rec.start if rec.start is not None else (rec.attempts[0].start if rec.attempts else 0.0) or 0.0
        ends = [b for _, b in rec.sessions] + [a.end for a in rec.attempts if a.end is not None]
        self.span = max([e - self.t0 for e in ends] + [1.0])
        self.scale, self.unit = _unit(self.span)
        x_max = self.span / self.scale * 1.01
        self.px_per_x = WIDTH_IN * DPI * (RIGHT - LEFT) / x_max

        self.xs, self.series = [], {}
        for key in ("vram", "ram_used", "rss"):
            self.xs, ys = _series(rec, key, self.t0, self.scale) if rec.telemetry else ([], [])
            if any(not math.isnan(v) for v in ys):
                self.series[key] = ys
        self.has_ram = bool({"ram_used", "rss"} & self.series.keys())
        self.panels = (["vram"] if "vram" in self.series else []) + (["ram"] if self.has_ram else []) or ["none"]

        self.fig = Figure(figsize=(WIDTH_IN, HEIGHT_IN), dpi=DPI)
        FigureCanvasAgg(self.fig)  # headless: a canvas that renders (and measures text) without pyplot
        grid = self.fig.add_gridspec(len(self.panels), 1, height_ratios=[3, 2] if len(self.panels) == 2 else [1],
                                     hspace=0.08, left=LEFT, right=RIGHT, top=TOP, bottom=BOTTOM)
        self.axes: list = []
        for i in range(len(self.panels)):
            self.axes.append(self.fig.add_subplot(grid[i], sharex=self.axes[0] if self.axes else None))
        self.ax_of = dict(zip(self.panels, self.axes))
        self.first, self.last = self.axes[0], self.axes[-1]
        self.first.set_xlim(0, x_max)  # before any label is placed: placing measures them where they land
        self.renderer = self.fig.canvas.get_renderer()
        self.placed: list = []  # [label, its display box] of the labels inside the panels, so far

    def x(self, t: float) -> float:
        """A unix time on the x axis."""
        return (t - self.t0) / self.scale

    def place(self, ax, x: float, text: str, where, fits=None, **style):
        """`text` at data x in `ax`, at the first of `where` ((y in the panel's height, ha, va,
        rotation)) where it touches no label placed before (and `fits` its box); else nothing."""
        from matplotlib.transforms import blended_transform_factory as blend

        for y, ha, va, rotation in where:
            t = ax.text(x, y, text, transform=blend(ax.transData, ax.transAxes), ha=ha, va=va, rotation=rotation,
                        clip_on=True, zorder=6, **style)
            box = t.get_window_extent(self.renderer).padded(3)
            if (fits is None or fits(box)) and not any(box.overlaps(b) for _, b in self.placed):
                self.placed.append([t, box])
                return t
            t.remove()
        return None

    def grow(self, t, text: str, fits=None) -> bool:
        """A placed label's text made longer, where the longer one still touches no other label
        (and `fits`); else it stays as it was."""
        old = t.get_text()
        t.set_text(text)
        box = t.get_window_extent(self.renderer).padded(3)
        if (fits is None or fits(box)) and not any(box.overlaps(b) for o, b in self.placed if o is not t):
            next(p for p in self.placed if p[0] is t)[1] = box
            return True
        t.set_text(old)
        return False

    def inside(self, ax):
        """Whether a label's box stays within the panel's height (clipped, it would be cut short)."""
        panel = ax.get_window_extent(self.renderer)
        return lambda box: panel.y0 <= box.y0 and box.y1 <= panel.y1


def figure(rec: Record):
    """The run's timeline as a matplotlib Figure (12×6 in at 100 dpi), not saved: one panel per
    kind of memory data the record has (VRAM, host RAM; a single blank one where it has none).
    Drawn in this order (later labels make room for earlier ones): attempt bands, session gaps,
    memory, epoch ticks, resumes, failures, then axes, legend and title."""
    c = _Canvas(rec)
    rungs = _attempt_bands(c, rec)
    _session_gaps(c, rec)
    _memory(c, rec)
    ticks = _epoch_ticks(c, rec)
    resumed = _resumes(c, rec)
    _failures(c, rec)
    _axes(c)
    _legend(c, rec, rungs, bool(ticks), bool(resumed))
    _title(c, rec)
    return c.fig


def _attempt_bands(c: _Canvas, rec: Record) -> dict[str, tuple]:
    """Attempt bands, coloured by rung, named at the top of the first panel: in full where the band
    is wide enough, else by number, else not at all (the legend and the table name them). Returns
    each rung's colour."""
    from matplotlib import colormaps

    colours = colormaps["Set2"].colors  # light bands, so the dark memory lines stay readable
    rungs: dict[str, tuple] = {}
    for a in rec.attempts:
        rungs.setdefault(a.rung, colours[len(rungs) % len(colours)])
    for a in rec.attempts:
        if a.start is None:
            continue
        x0, x1 = c.x(a.start), c.x(max(a.end or a.start, a.start))
        for ax in c.axes:
            ax.axvspan(x0, x1, color=rungs[a.rung], alpha=0.3, lw=0)
        room = (x1 - x0) * c.px_per_x
        style = {"fontsize": 9, "color": "0.15", "gid": GID_RUNG,
                 "bbox": {"boxstyle": "round,pad=0.2", "fc": "white", "ec": rungs[a.rung], "alpha": 0.85}}
        full = f"#{a.n} {a.rung}" + (" (val)" if a.mode == VALIDATE else "")
        if c.place(c.first, (x0 + x1) / 2, full, [(0.98, "center", "top", 0)], lambda b: b.width <= room, **style):
            continue
        c.place(c.first, (x0 + x1) / 2, f"#{a.n}", [(0.98, "center", "top", 0), (0.98, "center", "top", 90)],
                **style)
    return rungs


def _session_gaps(c: _Canvas, rec: Record) -> None:
    """Gaps between launcher sessions: nothing ran (named where the gap is wide enough)."""
    for (_, b), (start, _) in zip(rec.sessions, rec.sessions[1:]):
        if start - b > 1:
            for ax in c.axes:
                ax.axvspan(c.x(b), c.x(start), color="0.85", alpha=0.5, hatch="//", lw=0)
            room = (start - b) / c.scale * c.px_per_x
            c.place(c.last, c.x((b + start) / 2), "launcher\nstopped", [(0.5, "center", "center", 0)],
                    lambda box: box.width <= room, fontsize=8, color="0.35")


def _memory(c: _Canvas, rec: Record) -> None:
    """The memory lines: VRAM, host RAM used and the child's RSS (the host's total where in reach);
    a panel with neither says why."""
    from matplotlib.transforms import blended_transform_factory as blend

    series = c.series
    if "vram" in series:
        ax = c.ax_of["vram"]
        ax.plot(c.xs, series["vram"], color="#4b1d7a", lw=1.6, label="VRAM (child's processes)")
        peak = max(v for v in series["vram"] if not math.isnan(v))
        ax.set_ylim(0, peak * 1.3 if peak > 0 else 1)
        ax.set_ylabel("VRAM (GiB)")
    if c.has_ram:
        ax = c.ax_of["ram"]
        if "ram_used" in series:
            ax.plot(c.xs, series["ram_used"], color="black", lw=1.4, label="host RAM used")
        if "rss" in series:
            ax.plot(c.xs, series["rss"], color="0.35", lw=1.0, ls="--", label="child's RSS")
        peak = max(v for k in ("ram_used", "rss") for v in series.get(k, []) if not math.isnan(v))
        high = peak * 1.25 if peak > 0 else 1.0
        totals = [s["ram_used"] + s["ram_available"] for s in rec.telemetry
                  if _number(s.get("ram_used")) and _number(s.get("ram_available"))]
        label = "RAM (GiB)"
        if totals:
            total = max(totals) / GIB
            if total <= peak * TOTAL_IN_REACH:  # within reach: a line, the axis stretched to show it
                high = max(high, total * 1.1)
                ax.axhline(total, color="0.4", lw=0.8, ls=":")
                ax.text(0.005, total, f" host RAM {gib(total * GIB, 1)}", transform=blend(ax.transAxes, ax.transData),
                        va="bottom", ha="left", fontsize=8, color="0.35")
            else:  # far above the run's use: named, not drawn (it would squash the data)
                label = f"RAM (GiB)\nhost total {gib(total * GIB, 1)}"
        ax.set_ylim(0, high)
        ax.set_ylabel(label)
    if c.panels == ["none"]:
        first = c.first
        why = ("no attempt in this run record" if not rec.attempts and not rec.telemetry else
               "no telemetry in this run record" if not rec.telemetry else "no memory samples in the telemetry")
        first.text(0.5, 0.4, why, transform=first.transAxes, ha="center", va="center", fontsize=10, color="0.3",
                   zorder=5, bbox={"boxstyle": "round,pad=0.3", "fc": "white", "ec": "none", "alpha": 0.85})
        first.set_ylim(0, 1)
        first.set_yticks([])


def _above(c: _Canvas):
    """The first panel's x in data, y in its height: the epoch row at y 1.0."""
    from matplotlib.transforms import blended_transform_factory as blend

    return blend(c.first.transData, c.first.transAxes)


def _epoch_ticks(c: _Canvas, rec: Record) -> list[tuple[float, int, bool]]:
    """Epoch ticks along the top of the first panel (above it: clear of the rung names inside),
    labelled sparsely; attempts' first epochs are labelled before round numbers. Returns them."""
    ticks = _epoch_starts(rec, c.t0, c.scale)
    first, above = c.first, _above(c)
    if ticks:
        labelled = _epoch_labels(ticks, c.px_per_x)
        marks = range(len(ticks)) if len(ticks) <= EPOCH_MARKS else labelled
        first.plot([ticks[i][0] for i in marks], [1.0] * len(marks), transform=above, ls="none", marker="|",
                   markersize=7, mew=1.0, color="0.2", clip_on=False)
        for i in labelled:
            x, e, _ = ticks[i]
            first.text(x, 1.035, str(e), transform=above, ha="center", va="bottom", fontsize=8, color="0.2",
                       clip_on=False, gid=GID_EPOCH)
        first.text(-0.008, 1.035, "epoch", transform=first.transAxes, ha="right",
                   va="bottom", fontsize=8, color="0.2", style="italic")
    return ticks


def _resumes(c: _Canvas, rec: Record) -> list:
    """Resumed attempts: a mark on the epoch row where each picked training up again, and upright at
    the foot of the first panel, beside its start, the epoch; a resume too close to the one before
    to name (an attempt that died in its start-up) is named on that one's label. Returns them."""
    first, above = c.first, _above(c)
    resumed = [a for a in rec.attempts if a.mode == TRAIN and a.resume_from and a.start is not None]
    named: list[tuple[object, list]] = []  # (label, the epochs it names)
    for a in resumed:
        x = c.x(a.start)
        first.plot([x], [1.0], transform=above, marker="v", markersize=7, color=RESUME_TEAL, clip_on=False,
                   zorder=7)
        epoch = a.resumed_at
        t = c.place(first, x, f" resumes at epoch {epoch} " if epoch is not None else " resumes ",
                    [(0.03, "left", "bottom", 90), (0.03, "right", "bottom", 90)], c.inside(first), fontsize=8,
                    color=RESUME_TEAL, gid=GID_RESUME,
                    bbox={"boxstyle": "round,pad=0.1", "fc": "white", "ec": "none", "alpha": 0.8})
        if t is not None:
            named.append((t, [epoch] if epoch is not None else []))
        elif named and epoch is not None and epoch not in named[-1][1][-1:]:
            label, epochs = named[-1]  # named there while it fits; else only the mark (the table names it)
            if c.grow(label, f" resumes at epoch {', then '.join(str(e) for e in [*epochs, epoch])} ",
                      c.inside(first)):
                epochs.append(epoch)
    return resumed


def _failures(c: _Canvas, rec: Record) -> None:
    """Failures: a red line where each failed attempt ended, its kind named (grey where the launcher
    was interrupted: stopped, not failed) at the top of the last panel, beside the line (before it,
    else after it), else at its foot; where every place is taken, the label before counts it if it
    names the same kind ("cuda_oom ×2"), else the line goes unnamed (the table names it). A count
    is never below the truth: where the true one does not fit, "×2+", else "cuda_oom+", else no
    count at all (shorter than what was there, so it fits)."""
    upper = 0.97 if len(c.axes) > 1 else 0.9  # one panel: below the rung names
    told: list = []  # [label, kind, failures it stands for, the count its text shows] of the last one placed
    for a in rec.attempts:
        if not a.failed or a.end is None:
            continue
        x = c.x(a.end)
        colour, style = (INTERRUPT_GREY, "-.") if a.interrupted else (FAILURE_RED, "--")
        for ax in c.axes:
            ax.axvline(x, color=colour, lw=1.6, ls=style)
        t = c.place(c.last, x, f" {a.kind} ", [(upper, "right", "top", 90), (upper, "left", "top", 90),
                                               (0.03, "right", "bottom", 90), (0.03, "left", "bottom", 90)],
                    fontsize=9, color=colour, fontweight="bold", gid=GID_FAILURE,
                    bbox={"boxstyle": "round,pad=0.15", "fc": "white", "ec": "none", "alpha": 0.8})
        if t is not None:
            told = [t, a.kind, 1, 1]
        elif told and told[1] == a.kind:
            told[2] += 1
            label, n, shown = told[0], told[2], told[3]
            fallbacks = ([f" {a.kind} ×{shown}+ "] if shown > 1 else []) + [f" {a.kind}+ "]
            if c.grow(label, f" {a.kind} ×{n} "):
                told[3] = n
            elif not any(c.grow(label, text) for text in fallbacks):
                label.set_text(f" {a.kind} ")  # no count rather than a low one


def _axes(c: _Canvas) -> None:
    """The time axis named under the last panel; a light grid on each."""
    c.last.set_xlabel(f"time since the run started ({c.unit})")
    for ax in c.axes:
        ax.grid(True, axis="y", alpha=0.3)
        ax.set_axisbelow(True)
        if ax is not c.last:
            ax.tick_params(labelbottom=False)


def _legend(c: _Canvas, rec: Record, rungs: dict[str, tuple], ticks: bool, resumed: bool) -> None:
    """One legend under the panels: the rungs, the memory lines, and the marks the figure has."""
    from matplotlib.lines import Line2D
    from matplotlib.patches import Patch

    handles = [Patch(color=colour, alpha=0.5, label=f"rung {r}") for r, colour in rungs.items()]
    handles += [h for ax in c.axes for h in ax.get_legend_handles_labels()[0]]
    if any(a.lost for a in rec.attempts):
        handles.append(Line2D([], [], color=FAILURE_RED, ls="--", label="failure (attempt end)"))
    if any(a.interrupted for a in rec.attempts):
        handles.append(Line2D([], [], color=INTERRUPT_GREY, ls="-.", label="interrupted (launcher stopped)"))
    if ticks:
        handles.append(Line2D([], [], color="0.2", ls="none", marker="|", markersize=8, label="epoch start"))
    if resumed:
        handles.append(Line2D([], [], color=RESUME_TEAL, ls="none", marker="v", markersize=7,
                              label="resumed from a checkpoint"))
    if handles:
        c.fig.legend(handles=handles, loc="lower center", ncol=min(len(handles), 7), fontsize=8, frameon=False,
                     bbox_to_anchor=(0.5, 0.0))


def _title(c: _Canvas, rec: Record) -> None:
    """The run, its status and delivered model, the time shown and goodput."""
    title = f"{rec.name} — {rec.status}"
    if rec.delivered and rec.delivered.get("model"):
        title += f": {Path(rec.delivered['model']).name} delivered"
    # in the axis's unit (docs/design.md, "Dry-run, status, report")
    shown, wall = _amount(c.span, c.scale, c.unit), _amount(rec.wall_s, c.scale, c.unit)
    when = f"wall {wall}" if wall == shown else f"{shown} shown, wall {wall}"
    c.fig.suptitle(f"{title}   ({when}, goodput {percent(rec.goodput)})", fontsize=12, y=0.975)


def draw(rec: Record, path: Path) -> None:
    """Draw the run's timeline to `path` (PNG, 12×6 in at 100 dpi)."""
    figure(rec).savefig(path, format="png", dpi=DPI)
