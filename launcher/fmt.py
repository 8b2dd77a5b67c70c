"""How the launcher writes amounts for people: one set of helpers for every command's output."""

from __future__ import annotations

from datetime import datetime

from .contract import GIB


def gib(n: int | float | None, digits: int = 2, none: str = "unknown") -> str:
    """Bytes as GiB: `gib(3 * 2**30)` is "3.00 GiB"."""
    return none if n is None else f"{n / GIB:.{digits}f} GiB"


def duration(seconds: float | None, none: str = "-") -> str:
    """A span for a person: "42 s", "7 min 05 s", "3 h 12 min"."""
    if seconds is None:
        return none
    s = int(round(seconds))
    if s < 60:
        return f"{s} s"
    if s < 3600:
        return f"{s // 60} min {s % 60:02d} s"
    return f"{s // 3600} h {s % 3600 // 60:02d} min"


def percent(x: float | None) -> str:
    return "-" if x is None else f"{100 * x:.1f} %"


def clock(t: float | None, now: float | None = None, none: str = "-") -> str:
    """A moment as local wall-clock time, "04:12"; with its date where it is not `now`'s day."""
    if t is None:
        return none
    d = datetime.fromtimestamp(t).astimezone()
    if now is not None and datetime.fromtimestamp(now).astimezone().date() == d.date():
        return d.strftime("%H:%M")
    return d.strftime("%Y-%m-%d %H:%M")
