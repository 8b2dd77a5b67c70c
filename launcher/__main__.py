"""`python -m launcher`. A Ctrl-C before the launcher's own handlers are in place (while it imports
and sets up) or after they are gone ends in one line and exit 130, never a traceback
(docs/design.md, "The attempt loop and the launch seam")."""

import signal
import sys

try:
    from .cli import main
    code = main()
except KeyboardInterrupt:
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # a second Ctrl-C must not print one either
    from .contract import EXIT_SIGINT
    try:
        print("launcher: stopped by SIGINT", flush=True)
    except (OSError, ValueError):
        pass
    code = EXIT_SIGINT
sys.exit(code)
