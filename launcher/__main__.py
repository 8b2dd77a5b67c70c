"""`python -m launcher`, and the `rtdetr-launcher` script (pyproject's entry point is `entry`). A Ctrl-C
before the launcher's own handlers are in place (while it imports and sets up) or after they are
gone ends in one line and exit 130, never a traceback (docs/design.md, "The attempt loop and the
launch seam")."""

import signal
import sys


def entry() -> int:
    """Run the command line. cli is imported inside the handler's reach: its imports take longer than
    Python's own start-up, and this module, imported by the script, imports nothing heavy."""
    try:
        from .cli import main
        return main()
    except KeyboardInterrupt:
        signal.signal(signal.SIGINT, signal.SIG_IGN)  # a second Ctrl-C must not print one either
        from .contract import EXIT_SIGINT
        try:
            print("launcher: stopped by SIGINT", flush=True)
        except (OSError, ValueError):
            pass
        return EXIT_SIGINT


if __name__ == "__main__":
    sys.exit(entry())
