"""The launcher's own output, made safe for an unattended night.

Output is a courtesy: train.log and the run record keep everything. A reader that goes away (`run
... | grep -m1 x`), a terminal that is closed or an SSH session that drops must never stop
training or retries, and a stdout that cannot encode "≥" must not crash a command. Once stdout
fails, it is pointed at /dev/null, so later writes and the interpreter's final flush succeed.
"""

from __future__ import annotations

import os
import signal
import sys


def harden() -> None:
    """Characters the terminal's encoding lacks are escaped, not raised (PYTHONIOENCODING=ascii). A
    stream that was closed before the launcher started (`<&- >&- 2>&-`: Python then has None) is
    /dev/null, on its own descriptor: opened anywhere else, the next file opened (the run's lock,
    events.jsonl) would become fd 2 and take C-level stderr writes (the child inherits 0-2 too)."""
    for fd in (0, 1, 2):
        try:
            os.fstat(fd)
        except OSError:  # closed: /dev/null takes its place
            try:
                null = os.open(os.devnull, os.O_RDWR)
                if null != fd:
                    os.dup2(null, fd)
                    os.close(null)
            except OSError:
                pass
    for fd, name in ((1, "stdout"), (2, "stderr")):
        if getattr(sys, name) is None:
            try:
                setattr(sys, name, open(fd, "w", encoding="utf-8", closefd=False))
            except OSError:
                pass
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.reconfigure(errors="backslashreplace")
        except (AttributeError, ValueError):  # replaced by a test harness
            pass


def unattended() -> None:
    """A hang-up (the terminal closed, SSH dropped) does not end the night: `run` ignores SIGHUP,
    and so does the child it starts (an inherited disposition); output to the dead terminal is
    dropped by `write`."""
    if hasattr(signal, "SIGHUP"):
        signal.signal(signal.SIGHUP, signal.SIG_IGN)


def lost() -> None:
    """stdout failed (EPIPE, EIO on a hung-up terminal): send the rest of this process's output to
    /dev/null (later writes then succeed, so this happens once per stream)."""
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        os.close(devnull)
    except (OSError, ValueError, AttributeError):
        pass


def write(text: str) -> None:
    try:
        sys.stdout.write(text)
        sys.stdout.flush()
    except (OSError, ValueError):
        lost()
    except RuntimeError:  # a signal handler's line while the main thread was writing: dropped
        pass


def write_bytes(data: bytes) -> None:
    """For the child's output, teed as it comes."""
    try:
        sys.stdout.buffer.write(data)
        sys.stdout.buffer.flush()
    except (OSError, ValueError, AttributeError):
        lost()


def say(line: str) -> None:
    write(f"launcher: {line}\n")
