"""A refused `run` is written down where the person will look in the morning (docs/design.md,
"Dry-run, status, report"): a `tmux new '… run …'` window that closes with the error takes the
error with it otherwise.

A run that has a record gets a `refused` event in its events.jsonl, unless a launcher holds that
run now ("already running"): a live run's record is the live run's alone. Any other refusal is an
entry of launcher-errors.log in the logs folder. `status` shows the newest one when nothing ran
after it, and never one under a run a launcher holds.
Writing it down never fails the command, nor adds to its one line: a folder that cannot be
written (often what the refusal itself is about) is skipped.
"""

from __future__ import annotations

import os
from datetime import datetime
from pathlib import Path

from .runlog import ERRORS_LOG_NAME as LOG_NAME, Event, Events, Ev, RunLock, RunPaths, now_iso  # run-less refusals
FOLDER, ERROR = "  folder: ", "  "  # an entry's lines after its "TIME COMMAND" line
MAX_BYTES = 1 << 20  # about 1 MB: the log is then moved to launcher-errors.log.1 (one kept) and begun anew


def note(command: str, errors: list[str], logs: Path, events: Path | None = None) -> Path | None:
    """Record one refusal: in the run's events when `events` (an existing events.jsonl) is given and
    no launcher holds that run now, else in `logs`/launcher-errors.log. Returns where it went; None
    when it could not be written."""
    if events is not None and RunLock(RunPaths(events.parent).lock).is_held():
        events = None  # a second `run` of a live run: not the live run's event
    where = events if events is not None else logs / LOG_NAME
    try:
        if events is not None:
            Events(events).append(Ev.REFUSED, command=command, folder=os.getcwd(), errors=errors)
        else:
            logs.mkdir(parents=True, exist_ok=True)
            if where.is_file() and where.stat().st_size >= MAX_BYTES:
                os.replace(where, where.with_name(LOG_NAME + ".1"))
            text = f"{now_iso()} {one_line(command)}\n{FOLDER}{one_line(os.getcwd())}\n" + "".join(
                f"{ERROR}{line}\n" for e in errors for line in e.splitlines())
            with open(where, "a", encoding="utf-8") as f:
                f.write(text)
        return where
    except (OSError, ValueError):
        return None


def one_line(text: str) -> str:
    """`text` as it is when it is all printable, else as its repr: a newline in a command's argument
    or a folder's name must not end the entry's line (ast.literal_eval gives it back)."""
    return text if text.isprintable() else repr(text)


def read_log(path: Path) -> list[dict]:
    """The entries of a launcher-errors.log, oldest first: {ts, command, folder, errors, where}."""
    try:
        text = path.read_text(encoding="utf-8", errors="replace")
    except OSError:
        return []
    entries: list[dict] = []
    for line in text.splitlines():
        if line.startswith(FOLDER) and entries:
            entries[-1]["folder"] = line[len(FOLDER):]
        elif line.startswith(ERROR) and entries:
            entries[-1]["errors"].append(line[len(ERROR):])
        elif line.strip():
            ts, _, command = line.partition(" ")
            entries.append({"ts": ts, "command": command, "folder": None, "errors": [], "where": str(path)})
    return [e for e in entries if when(e) is not None]


def newest(folders: list[Path]) -> dict | None:
    """The newest run-less refusal in these logs folders."""
    entries = [e for f in folders for e in read_log(f / LOG_NAME)]
    return max(reversed(entries), key=when) if entries else None  # of two in one second, the later


def in_run(events: list[Event], path: Path) -> dict | None:
    """The run's refusal when its last event is one (nothing ran after it)."""
    last = events[-1] if events else None
    if last is None or last.kind != Ev.REFUSED:
        return None
    return {"ts": last.ts, "command": last.get("command"), "folder": last.get("folder"),
            "errors": [str(x) for x in last.get("errors") or []], "where": str(path)}


def when(entry: dict) -> float | None:
    """An entry's unix time (None for a line that is not an entry's head)."""
    try:
        return datetime.fromisoformat(str(entry.get("ts"))).timestamp()
    except ValueError:
        return None
