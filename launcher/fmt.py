"""How the launcher writes amounts for people: one set of helpers for every command's output."""

from __future__ import annotations

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
