"""The launcher's error hierarchy: raised anywhere, turned into a message and exit code only in cli."""

from __future__ import annotations

from .contract import EXIT_BAD_INPUT


class LauncherError(Exception):
    """An expected failure with a one-line message that says what to do next."""

    exit_code = 1


class BadInput(LauncherError):
    """A file, field or option the user gave is wrong; nothing was started."""

    exit_code = EXIT_BAD_INPUT

    def __init__(self, where: str, problem: str, fix: str):
        self.where, self.problem, self.fix = where, problem, fix
        super().__init__(f"{where}: {problem} — fix: {fix}")
